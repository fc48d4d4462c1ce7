"""Rules sweep benchmark: evaluate every rule over a million-deal account on PostgreSQL.

    python bench/sweep.py [--deals 1000000] [--tasks-per-deal 3] [--notes-per-deal 1]
                          [--database-url postgresql+asyncpg://postgres@127.0.0.1:5432/test]
                          [--incremental 200] [--changed 100] [--profile] [--keep-database NAME]

One run:

1. creates a throwaway database next to the one in --database-url, runs the migrations, and
   fills one account's mirror on the server side (INSERT … SELECT … FROM generate_series):
   one pipeline with six open stages plus won/lost, 50 users, the open deals, their tasks
   and notes; then VACUUM ANALYZE;
2. times a bare full read of deals, tasks and notes (best of 3): the sweep's lower bound;
3. times two full sweeps, engine.evaluate(session, account_id) in one transaction each,
   commit included: the first creates the findings, the second is the steady state (with
   a VACUUM ANALYZE in between, as autovacuum would do after such a bulk insert);
4. reads the process's peak RSS: the mirror must never be loaded into Python;
   and times the comparison floor: the findings matched with themselves on their dedup key,
   what any full sweep pays on top of reading the mirror;
5. times incremental evaluation of one touched deal, for random deals, each in its own
   transaction (median and p95): first where nothing changed, then right after an
   event changed the deal (its first task completed or reopened, so findings open, resolve,
   change their voice and enqueue CRM writes); and the same deals again, alternately with the
   statements compiled once (app.db.Prepared, as in production) and in SQLAlchemy's usual way,
   for the ratio of the two in CPU per evaluation;
6. prints the figures, the findings by rule and status, and whether each goal holds;
7. drops the database, whatever happened.

8. ticks (issue 13): first the catch-up after the sweep (a sweep stores earlier bounds of the
   deals' moments; the ticks that reach them early store the exact ones), then a tick with
   --due deals whose moment has come (their first open task fell due a second ago), timed
   --tick-rounds times with fresh deals, on the big account and on a --small-deals account built
   in the same database: the ratio of the two says whether a tick's cost follows the due deals or
   the account; then the detection latency on a simulated clock: --due tasks fall due over the
   next --latency-span seconds, each an event re-evaluated as the inbox does, and the clock moves
   by the tick interval (15 s) or by the tick's own duration when it took longer; each finding's
   opened_at is compared with its deadline (in working time: the next working minute); last, the
   tick's write floor on each account: one open finding on each of --due deals rewritten with its
   history, two outbox actions and its deal's moment, and the commit, with no rule run (what
   storing a tick's verdicts costs by itself; the tick is printed as a multiple of it).

--keep-database NAME (for iterating on the sweep's statements): the database NAME, beside the one
in --database-url, is created and filled the first time and then kept; a later run with the same
NAME migrates it and reuses its accounts (the newest is the big one; with ticks, the one before it
the small one) instead of generating them again. The findings of earlier runs are still there, so
its "first sweep" is a steady one. Drop it yourself when done (DROP DATABASE NAME).

--profile also prints the slowest statements of the steady-state sweep, of incremental
re-evaluations and of one tick per account (time per statement as seen by the client), to show
where the time goes. The exit code is 0 whatever the
figures: this is a measurement, not a test. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import resource
import secrets
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import app.models_all  # noqa: F401  (registers every table)
from app import db
from app.accounts.models import Account
from app.db import make_engine, make_sessionmaker, scratch_database, utcnow
from app.findings import evaluation as rules_engine
from app.findings import scheduler
from app.migrate import upgrade
from app.rules import config as rules_config
from app.rules import engine as engine_rules

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
GOAL_SWEEP_S = 10.0
GOAL_RSS_MB = 300.0
GOAL_INCREMENTAL_MS = 5.0
GOAL_CHANGED_MS = 20.0
GOAL_TICK_MS = 100.0
GOAL_TICK_RATIO = 2.0
GOAL_LATENCY_P99_S = 60.0
TICK_ROUNDS = 3
TICK_SECONDS = 15.0  # the scheduler's due_tick_seconds
BARE_RUNS = 3

# CRM ids are text; these bases keep the kinds of ids apart and amoCRM-looking.
USER_BASE = 9_000_000
PIPELINE_ID = "7000000"
DEAL_BASE = 30_000_000
TASK_BASE = 50_000_000
NOTE_BASE = 80_000_000
USERS = 50
STAGES = [  # (id, name, kind); amoCRM's won/lost ids are 142/143 in every pipeline
    ("7000001", "Первичный контакт", "open"),
    ("7000002", "Квалификация", "open"),
    ("7000003", "Переговоры", "open"),
    ("7000004", "Коммерческое предложение", "open"),
    ("7000005", "Согласование договора", "open"),
    ("7000006", "Счёт выставлен", "open"),
    ("142", "Успешно реализовано", "won"),
    ("143", "Закрыто и не реализовано", "lost"),
]
OPEN_STAGES = [s for s in STAGES if s[2] == "open"]

# Generation, all on the server. Each random draw is made once per row in an inner query that
# OFFSET 0 keeps from being flattened, so the outer CASEs see the same value in every column.
SQL_USERS = """
INSERT INTO users (account_id, id, name, email, is_active, synced_at)
SELECT :account, (:user_base + u)::text, 'Менеджер ' || u, 'manager' || u || '@example.com', true, now()
FROM generate_series(1, :users) AS u
"""

# ~90 % of deals sit in the first three stages; stage_entered_at is spread over 60 days.
SQL_DEALS = """
INSERT INTO deals (account_id, id, name, pipeline_id, stage_id, stage_entered_at, stage_entered_source, price,
                   responsible_user_id, is_closed, is_deleted, created_at, closed_at, deleted_at, source_updated_at,
                   mirrored_at)
SELECT :account, (:deal_base + g)::text, 'Сделка #' || g, :pipeline,
       (:first_stage + floor(r_stage * r_stage * :open_stages)::int)::text,
       now() - r_entered * interval '60 days', 'event', round((r_price * 500000)::numeric, -2)::float8,
       (:user_base + 1 + floor(r_user * :users)::int)::text, false, false,
       now() - r_entered * interval '60 days' - r_created * interval '30 days', NULL, NULL,
       now() - r_entered * r_updated * interval '60 days', now()
FROM (SELECT g, random() AS r_stage, random() AS r_entered, random() AS r_price, random() AS r_user,
             random() AS r_created, random() AS r_updated
      FROM generate_series(1, :deals) AS g OFFSET 0) AS s
"""

# Every tenth deal has only completed tasks (no open task). Elsewhere the first task of a deal
# is open and the others are open 30 % of the time. 15 % of open tasks are overdue; 4 % of open
# tasks were moved (mostly by an hour or more, a few by 20 minutes: below the rule's threshold).
SQL_TASKS = """
INSERT INTO tasks (account_id, id, deal_id, entity_type, entity_id, text, type_id, responsible_user_id, due_at,
                   previous_due_at, due_moved_at, is_completed, completed_at, result_text, is_deleted, created_at,
                   created_by, source_updated_at)
SELECT :account, id, deal_id, 'leads', deal_id, task_text, type_id, responsible, due_at,
       CASE WHEN moved THEN due_at - CASE WHEN r_shift < 0.1 THEN interval '20 minutes'
                                          ELSE interval '1 hour' + r_shift * interval '71 hours' END END,
       CASE WHEN moved THEN created_at + r_moved * (now() - created_at) END,
       done, completed_at, CASE WHEN done THEN 'Выполнено' END, false, created_at, responsible,
       coalesce(completed_at, CASE WHEN moved THEN created_at + r_moved * (now() - created_at) END, created_at)
FROM (
    SELECT *, least(due_at, now()) - r_created * interval '20 days' AS created_at,
           CASE WHEN done THEN least(now(), due_at + r_created * interval '1 day') END AS completed_at
    FROM (
        SELECT (:task_base + (d - 1) * :per_deal + k)::text AS id, (:deal_base + d)::text AS deal_id,
               (ARRAY['Позвонить клиенту', 'Отправить КП', 'Назначить встречу', 'Уточнить потребность',
                      'Выставить счёт', 'Проконтролировать оплату'])[1 + floor(r_text * 6)::int] AS task_text,
               CASE WHEN r_text < 0.5 THEN '1' ELSE '2' END AS type_id,
               CASE WHEN r_user < 0.1 THEN NULL ELSE (:user_base + 1 + floor(r_user * :users)::int)::text END
                   AS responsible,
               done, NOT done AND r_moved < 0.04 AS moved, r_shift, r_moved / 0.04 AS r_moved, r_created,
               CASE WHEN done THEN now() - r_due * interval '30 days'
                    WHEN r_overdue < 0.15 THEN now() - interval '1 minute' - r_due * interval '10 days'
                    ELSE now() + interval '1 hour' + r_due * interval '14 days' END AS due_at
        FROM (SELECT d, k, d % 10 = 0 OR (k > 1 AND random() < 0.7) AS done, random() AS r_text,
                     random() AS r_user, random() AS r_overdue, random() AS r_due, random() AS r_moved,
                     random() AS r_shift, random() AS r_created
              FROM generate_series(1, :deals) AS d CROSS JOIN generate_series(1, :per_deal) AS k OFFSET 0) AS r
    ) AS t
) AS u
"""

# Notes land on random deals (some deals get none, some several), written in the last 14 days.
# Text: 12 % stock phrases ("Ок", "Перезвонить"), 8 % short remarks, the rest longer and of varied
# length. text_norm is what app.mirror.text.fold() makes of text.
NOTE_STOCK = [
    ("Ок", "ок"),
    ("ок!", "ок"),
    ("Перезвонить", "перезвонить"),
    ("Не дозвонился", "не дозвонился"),
    ("Нет ответа", "нет ответа"),
    ("Связался.", "связался"),
    ("+", "+"),
    ("Недозвон", "недозвон"),
]
NOTE_SHORT = [
    ("Отправил КП", "отправил кп"),
    ("Клиент думает", "клиент думает"),
    ("Ждём оплату", "ждем оплату"),
    ("Счёт отправлен", "счет отправлен"),
]
NOTE_LONG = [
    (
        "Обсудили условия поставки, клиент ждёт счёт до пятницы",
        "обсудили условия поставки, клиент ждет счет до пятницы",
    ),
    ("Клиент попросил перенести встречу на следующую неделю", "клиент попросил перенести встречу на следующую неделю"),
    (
        "Созвонились, согласовали скидку 5% при оплате до конца месяца",
        "созвонились, согласовали скидку 5% при оплате до конца месяца",
    ),
    (
        "Отправил коммерческое предложение на почту, перезвонить в четверг",
        "отправил коммерческое предложение на почту, перезвонить в четверг",
    ),
]
NOTE_SUFFIX = (" Детали в письме", " детали в письме")

SQL_NOTES = """
INSERT INTO notes (account_id, id, entity_type, entity_id, deal_id, kind, text, text_norm, created_by, created_at,
                   params)
SELECT :account, (:note_base + i)::text, 'leads', deal_id, deal_id, 'common',
       CASE WHEN r_kind < 0.12 THEN (CAST(:stock_text AS text[]))[1 + floor(r_pick * :n_stock)::int]
            WHEN r_kind < 0.20 THEN (CAST(:short_text AS text[]))[1 + floor(r_pick * :n_short)::int]
            ELSE (CAST(:long_text AS text[]))[1 + floor(r_pick * :n_long)::int]
                 || repeat(:suffix_text, floor(r_len * 6)::int) END,
       CASE WHEN r_kind < 0.12 THEN (CAST(:stock_norm AS text[]))[1 + floor(r_pick * :n_stock)::int]
            WHEN r_kind < 0.20 THEN (CAST(:short_norm AS text[]))[1 + floor(r_pick * :n_short)::int]
            ELSE (CAST(:long_norm AS text[]))[1 + floor(r_pick * :n_long)::int]
                 || repeat(:suffix_norm, floor(r_len * 6)::int) END,
       (:user_base + 1 + floor(r_user * :users)::int)::text, now() - r_at * interval '14 days', '{}'::json
FROM (SELECT i, (:deal_base + 1 + floor(random() * :deals)::int)::text AS deal_id, random() AS r_kind,
             random() AS r_pick, random() AS r_len, random() AS r_user, random() AS r_at
      FROM generate_series(1, :notes) AS i OFFSET 0) AS s
"""

# The floor of any full comparison: the account's findings matched on their dedup key with a set
# as large as themselves (here, themselves), under the sweep's own settings. Whatever the rules
# compute, a sweep that compares it with the findings pays at least this on top of reading the mirror.
COMPARISON_FLOOR = """
SELECT count(*) FROM findings a JOIN findings b
  ON b.account_id = a.account_id AND b.rule = a.rule AND b.entity_type = a.entity_type AND b.entity_id = a.entity_id
WHERE a.account_id = :account
"""

BARE_SCAN = [
    "SELECT count(*), max(stage_entered_at) FROM deals WHERE account_id = :account",
    "SELECT count(*), max(due_at) FROM tasks WHERE account_id = :account",
    "SELECT count(*), max(created_at) FROM notes WHERE account_id = :account",
]


# The simulated clock: the real one, or moved into the account's working hours (--clock working).
# Reminders only run in working hours, so an evaluation's cost depends on the hour.
_clock_offset = timedelta(0)


def sim_now() -> datetime:
    return utcnow() + _clock_offset


def pin_clock(mode: str) -> None:
    """--clock working: when run outside the account's working hours, every evaluation, tick and
    generated deadline of the run happens an hour into the next working day (local 10:00 on a
    9-18 calendar); inside them the clock is the real one."""
    global _clock_offset
    if mode != "working":
        return
    calendar = rules_config.RulesDocument().business_calendar(Account.__table__.c.timezone.default.arg)
    now = utcnow()
    if not calendar.is_working_time(now):
        _clock_offset = calendar.next_working_start(now) + timedelta(hours=1) - now


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Rules sweep benchmark on PostgreSQL (see bench/README.md).")
    p.add_argument("--deals", type=int, default=1_000_000, help="open deals (default 1,000,000)")
    p.add_argument("--tasks-per-deal", type=int, default=3, help="tasks per deal (default 3)")
    p.add_argument("--notes-per-deal", type=float, default=1.0, help="notes per deal on average (default 1)")
    p.add_argument(
        "--database-url",
        default=DEFAULT_URL,
        help="an existing PostgreSQL database; the benchmark creates and drops its own next to it",
    )
    p.add_argument("--incremental", type=int, default=200, help="deals re-evaluated one by one (default 200)")
    p.add_argument(
        "--changed",
        type=int,
        default=100,
        help="deals re-evaluated one by one right after a change to one of their tasks (default 100)",
    )
    p.add_argument(
        "--incremental-budget",
        type=float,
        default=300.0,
        help="stop re-evaluating single deals after this many seconds (default 300)",
    )
    p.add_argument(
        "--no-analyze",
        action="store_true",
        help="no VACUUM ANALYZE between the sweeps (as if autovacuum had not run yet)",
    )
    p.add_argument(
        "--clock",
        choices=("real", "working"),
        default="real",
        help="real: the wall clock; working: moved into the account's working hours when outside them",
    )
    p.add_argument("--profile", action="store_true", help="print the slowest statements of the steady sweep")
    p.add_argument("--small-deals", type=int, default=10_000, help="deals of the account the tick is compared with")
    p.add_argument("--due", type=int, default=1000, help="deals due at the timed tick (default 1000)")
    p.add_argument("--tick-rounds", type=int, default=TICK_ROUNDS, help="timed ticks per account (default 3)")
    p.add_argument("--latency-span", type=float, default=1200.0, help="seconds the simulated deadlines spread over")
    p.add_argument("--no-ticks", action="store_true", help="skip the tick measurements")
    p.add_argument("--seed", type=int, default=42, help="seed of the generated data and the sampled deals")
    p.add_argument(
        "--keep-database",
        metavar="NAME",
        help="create and fill this database once, keep it, and reuse it on later runs (see the docstring)",
    )
    args = p.parse_args(argv)
    if args.deals < 10 or args.tasks_per_deal < 1 or args.notes_per_deal < 0:
        p.error("need --deals >= 10, --tasks-per-deal >= 1, --notes-per-deal >= 0")
    if args.keep_database is not None and not args.keep_database.replace("_", "").isalnum():
        p.error("--keep-database: letters, digits and underscores only")
    return args


def async_url(raw: str) -> URL:
    url = make_url(raw)
    if url.get_backend_name() != "postgresql":
        raise SystemExit("this benchmark needs PostgreSQL (generate_series, VACUUM, CREATE DATABASE)")
    return url.set(drivername="postgresql+asyncpg")


def url_text(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def generate(engine: AsyncEngine, args: argparse.Namespace) -> tuple[int, dict[str, float]]:
    """Creates the account and fills its mirror; returns the account id and the seconds per step."""
    notes = round(args.deals * args.notes_per_deal)
    common = {"account": 0, "user_base": USER_BASE, "users": USERS, "deal_base": DEAL_BASE, "deals": args.deals}
    timings: dict[str, float] = {}
    maker = make_sessionmaker(engine)
    async with maker() as s, s.begin():
        account = Account(
            name="sweep benchmark",
            crm="amocrm",
            base_url="https://bench.amocrm.ru",
            key=secrets.token_hex(16),
            auth_kind="token",
            credentials=b"x",
            sync_counts={},
            # Just connected and backfilled: the first sweep finds the account's backlog.
            sync_state="done",
            backlog_since=sim_now(),
        )
        s.add(account)
        await s.flush()
        common["account"] = account.id
        # A head of sales, so the connection's summaries include theirs (the default announce_backlog).
        await rules_config.save(s, account.id, rules_config.RulesDocument(supervisor_user_id=str(USER_BASE + 1)))
        await s.execute(text("SELECT setseed(:seed)"), {"seed": (args.seed % 1000) / 1000})
        await s.execute(text(SQL_USERS), common)
        await s.execute(
            text(
                "INSERT INTO pipelines (account_id, id, name, sort, is_archived) "
                "VALUES (:account, :pipeline, 'Продажи', 0, false)"
            ),
            {"account": account.id, "pipeline": PIPELINE_ID},
        )
        await s.execute(
            text(
                "INSERT INTO stages (account_id, pipeline_id, id, name, sort, kind) "
                "VALUES (:account, :pipeline, :id, :name, :sort, :kind)"
            ),
            [
                {
                    "account": account.id,
                    "pipeline": PIPELINE_ID,
                    "id": sid,
                    "name": name,
                    "sort": 10 * (i + 1),
                    "kind": kind,
                }
                for i, (sid, name, kind) in enumerate(STAGES)
            ],
        )
        # Secondary indexes are built once at the end, not maintained row by row: much faster. The
        # definitions are read back from the catalog, so the tables end up exactly as migrated.
        indexes = (
            await s.execute(
                text(
                    "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = current_schema() "
                    "AND i.tablename IN ('deals', 'tasks', 'notes') AND NOT EXISTS (SELECT 1 FROM pg_constraint c "
                    "WHERE c.conname = i.indexname AND c.contype IN ('p', 'u'))"
                )
            )
        ).all()
        for name, _ in indexes:
            await s.execute(text(f'DROP INDEX "{name}"'))
        started = time.perf_counter()
        await s.execute(
            text(SQL_DEALS),
            {**common, "pipeline": PIPELINE_ID, "first_stage": int(OPEN_STAGES[0][0]), "open_stages": len(OPEN_STAGES)},
        )
        timings["deals"] = time.perf_counter() - started
        started = time.perf_counter()
        await s.execute(text(SQL_TASKS), {**common, "task_base": TASK_BASE, "per_deal": args.tasks_per_deal})
        timings["tasks"] = time.perf_counter() - started
        started = time.perf_counter()
        if notes:
            await s.execute(
                text(SQL_NOTES),
                {
                    **common,
                    "note_base": NOTE_BASE,
                    "notes": notes,
                    "stock_text": [t for t, _ in NOTE_STOCK],
                    "stock_norm": [n for _, n in NOTE_STOCK],
                    "short_text": [t for t, _ in NOTE_SHORT],
                    "short_norm": [n for _, n in NOTE_SHORT],
                    "long_text": [t for t, _ in NOTE_LONG],
                    "long_norm": [n for _, n in NOTE_LONG],
                    "n_stock": len(NOTE_STOCK),
                    "n_short": len(NOTE_SHORT),
                    "n_long": len(NOTE_LONG),
                    "suffix_text": NOTE_SUFFIX[0],
                    "suffix_norm": NOTE_SUFFIX[1],
                },
            )
        timings["notes"] = time.perf_counter() - started
        started = time.perf_counter()
        for _, definition in indexes:
            await s.execute(text(definition))
        timings["indexes"] = time.perf_counter() - started
        started = time.perf_counter()
    timings["commit"] = time.perf_counter() - started
    started = time.perf_counter()
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE users, pipelines, stages, deals, tasks, notes"))
    timings["vacuum analyze"] = time.perf_counter() - started
    return common["account"], timings


async def data_profile(engine: AsyncEngine, account_id: int) -> dict[str, Any]:
    """What was generated, as the rules see it."""
    queries = {
        "deals": "SELECT count(*) FROM deals WHERE account_id = :a",
        "deals without an open task": """
            SELECT count(*) FROM deals d WHERE d.account_id = :a AND NOT EXISTS (
                SELECT 1 FROM tasks t WHERE t.account_id = d.account_id AND t.deal_id = d.id
                AND NOT t.is_completed AND NOT t.is_deleted)""",
        "tasks": "SELECT count(*) FROM tasks WHERE account_id = :a",
        "open tasks": "SELECT count(*) FROM tasks WHERE account_id = :a AND NOT is_completed",
        "overdue open tasks": """SELECT count(*) FROM tasks WHERE account_id = :a AND NOT is_completed
                                 AND due_at <= now()""",
        "rescheduled open tasks": """SELECT count(*) FROM tasks WHERE account_id = :a AND NOT is_completed
                                     AND due_moved_at IS NOT NULL""",
        "notes": "SELECT count(*) FROM notes WHERE account_id = :a",
        "notes shorter than 20 chars": "SELECT count(*) FROM notes WHERE account_id = :a AND length(text_norm) < 20",
        "database size MB": "SELECT pg_database_size(current_database()) / 1048576",
    }
    out: dict[str, Any] = {}
    async with engine.connect() as conn:
        for label, sql in queries.items():
            out[label] = (await conn.execute(text(sql), {"a": account_id})).scalar_one()
    return out


async def bare_scan(engine: AsyncEngine, account_id: int, parallel: bool = True) -> float:
    best = float("inf")
    async with engine.connect() as conn:
        if not parallel:
            await conn.execute(text("SET max_parallel_workers_per_gather = 0"))
        for _ in range(BARE_RUNS):
            started = time.perf_counter()
            for sql in BARE_SCAN:
                (await conn.execute(text(sql), {"account": account_id})).all()
            best = min(best, time.perf_counter() - started)
        if not parallel:
            await conn.execute(text("RESET max_parallel_workers_per_gather"))
    return best


async def comparison_floor(engine: AsyncEngine, account_id: int) -> float:
    best = float("inf")
    async with engine.connect() as conn:
        await conn.execute(text("SET work_mem = '128MB'"))
        await conn.execute(text("SET jit = off"))
        for _ in range(BARE_RUNS):
            started = time.perf_counter()
            (await conn.execute(text(COMPARISON_FLOOR), {"account": account_id})).all()
            best = min(best, time.perf_counter() - started)
    return best


async def sweep(engine: AsyncEngine, account_id: int) -> tuple[float, rules_engine.EvaluationResult]:
    maker = make_sessionmaker(engine)
    started = time.perf_counter()
    async with maker() as s, s.begin():
        result = await rules_engine.evaluate(s, account_id, now=sim_now())
    return time.perf_counter() - started, result


async def incremental(engine: AsyncEngine, account_id: int, deal_ids: list[str], budget: float) -> list[float]:
    maker = make_sessionmaker(engine)
    deadline = time.perf_counter() + budget
    # One untimed call first: the connection's temporary table and the statement caches.
    async with maker() as s, s.begin():
        await rules_engine.evaluate(s, account_id, deal_ids=[deal_ids[0]], now=sim_now(), actor="incremental")
    times = []
    for deal_id in deal_ids:
        started = time.perf_counter()
        async with maker() as s, s.begin():
            await rules_engine.evaluate(s, account_id, deal_ids=[deal_id], now=sim_now(), actor="incremental")
        times.append((time.perf_counter() - started) * 1000)
        if time.perf_counter() > deadline:
            break
    return times


async def compiled_once_ab(
    engine: AsyncEngine, account_id: int, deal_ids: list[str]
) -> dict[bool, tuple[float, float]]:
    """One deal's re-evaluation with its kept statements compiled once (app.db.Prepared, as in
    production) and SQLAlchemy's usual execution, interleaved deal by deal so that both see the
    same machine: a drift of the machine's speed over the run weighs on both alike. Returns, per
    mode, the median ms and the CPU ms per evaluation."""
    maker = make_sessionmaker(engine)
    real = db.prepared
    times: dict[bool, list[float]] = {True: [], False: []}
    cpu = {True: 0.0, False: 0.0}
    try:
        for i, deal_id in enumerate([deal_ids[0], deal_ids[0], *deal_ids]):
            compiled = i % 2 == 0
            db.prepared = real if compiled else (lambda statement, dialect: None)  # type: ignore[assignment]
            started, cpu_started = time.perf_counter(), time.process_time()
            async with maker() as s, s.begin():
                await rules_engine.evaluate(s, account_id, deal_ids=[deal_id], now=sim_now(), actor="incremental")
            if i >= 2:  # the first of each: statement caches
                times[compiled].append((time.perf_counter() - started) * 1000)
                cpu[compiled] += time.process_time() - cpu_started
    finally:
        db.prepared = real
    return {mode: (statistics.median(t), cpu[mode] * 1000 / len(t)) for mode, t in times.items()}


# The deal's first task flips: completed now, or open again. Either way some finding changes
# (overdue resolves or comes back, the deal gains or loses its open task), as after a real event.
SQL_FLIP_TASK = """
UPDATE tasks SET is_completed = NOT is_completed,
                 completed_at = CASE WHEN is_completed THEN NULL ELSE now() END, source_updated_at = now()
WHERE account_id = :account AND id = (SELECT min(id) FROM tasks WHERE account_id = :account AND deal_id = :deal)
"""


async def incremental_after_change(
    engine: AsyncEngine, account_id: int, deal_ids: list[str], budget: float
) -> tuple[list[float], int]:
    """Times the re-evaluation of each deal right after one of its tasks changed; returns the
    times and how many of the evaluations changed a finding."""
    maker = make_sessionmaker(engine)
    deadline = time.perf_counter() + budget
    times, changed = [], 0
    for deal_id in deal_ids:
        async with maker() as s, s.begin():
            await s.execute(text(SQL_FLIP_TASK), {"account": account_id, "deal": deal_id})
        started = time.perf_counter()
        async with maker() as s, s.begin():
            result = await rules_engine.evaluate(s, account_id, deal_ids=[deal_id], now=sim_now(), actor="incremental")
        times.append((time.perf_counter() - started) * 1000)
        changed += result.changed > 0
        if time.perf_counter() > deadline:
            break
    return times, changed


async def outbox_after_connecting(engine: AsyncEngine, account_id: int) -> tuple[int, int]:
    """What the first sweep asked the outbox to write, and how many managers have open findings."""
    async with engine.connect() as conn:
        actions = (
            await conn.execute(text("SELECT count(*) FROM outbox WHERE account_id = :a"), {"a": account_id})
        ).scalar_one()
        people = (
            await conn.execute(
                text(
                    "SELECT count(DISTINCT manager_id) FROM findings WHERE account_id = :a AND status = 'open' "
                    "AND manager_id IS NOT NULL"
                ),
                {"a": account_id},
            )
        ).scalar_one()
    return actions, people


async def findings_by_rule(engine: AsyncEngine, account_id: int) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = defaultdict(dict)
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT rule, CASE WHEN suppressed AND status = 'open' THEN 'open (suppressed)' ELSE status END, "
                "count(*) FROM findings WHERE account_id = :a GROUP BY 1, 2 ORDER BY 1, 2"
            ),
            {"a": account_id},
        )
        for rule, status, count in rows:
            out[rule][status] = count
    return out


class BenchRuntime:
    """What the scheduler's tick needs of app.runtime.Runtime: sessions and the outbox's wake-up."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.sessions = self.reads = make_sessionmaker(engine)
        self.outbox_wakeup = asyncio.Event()


async def catch_up(engine: AsyncEngine, account_id: int) -> tuple[int, float, int]:
    """Ticks until nothing is due: the deals a sweep's earlier bounds made due early. Returns the
    deals re-evaluated, the seconds it took, and the ticks."""
    rt = BenchRuntime(engine)
    started, done, ticks = time.perf_counter(), 0, 0
    while True:
        now = sim_now()
        count = await scheduler.tick_account(rt, account_id, now)  # type: ignore[arg-type]
        ticks += 1
        done += count
        if count == 0 or ticks > 1000:
            return done, time.perf_counter() - started, ticks


SQL_DUE_TASKS = """
UPDATE tasks SET due_at = :at, source_updated_at = :at
WHERE account_id = :account AND id IN (
    SELECT min(id) FROM tasks WHERE account_id = :account AND deal_id = ANY(:deals) AND NOT is_completed
    GROUP BY deal_id)
"""
# As the task's event would have left it: the deal's moment is the task's due time.
SQL_DUE_MOMENTS = """
INSERT INTO rule_due (account_id, deal_id, due_epoch)
SELECT :account, d, :epoch FROM unnest(CAST(:deals AS text[])) AS d
ON CONFLICT (account_id, deal_id) DO UPDATE SET due_epoch = excluded.due_epoch
"""


def deals_with_open_tasks(total: int, count: int, rng: random.Random) -> list[str]:
    # Every tenth deal has only completed tasks (SQL_TASKS); the others have an open first task.
    return [str(DEAL_BASE + d) for d in rng.sample([d for d in range(1, total + 1) if d % 10], count)]


async def timed_tick(
    engine: AsyncEngine, account_id: int, total: int, due: int, rng: random.Random
) -> tuple[float, int]:
    """One tick with `due` deals whose moment has just come; returns its ms and the deals it evaluated."""
    deals = deals_with_open_tasks(total, min(due, total * 9 // 10), rng)
    at = sim_now() - timedelta(seconds=1)
    async with engine.begin() as conn:
        await conn.execute(text(SQL_DUE_TASKS), {"account": account_id, "deals": deals, "at": at})
        await conn.execute(text(SQL_DUE_MOMENTS), {"account": account_id, "deals": deals, "epoch": at.timestamp()})
    rt = BenchRuntime(engine)
    now = sim_now()
    started = time.perf_counter()
    count = await scheduler.tick_account(rt, account_id, now, batch=max(due, 1))  # type: ignore[arg-type]
    return (time.perf_counter() - started) * 1000, count


# The write floor of a tick: what storing a tick's verdicts costs with no rule run at all.
# One open finding on each of the due deals is rewritten as the lifecycle rewrites a finding that
# changed (its row, with this evaluation's updated_at), gets a line of history and two outbox
# actions (a task and a note), and its deal's moment is upserted; then the commit. The rows are
# picked first and the additions deleted afterwards, both untimed; the findings keep their facts.
SQL_FLOOR_PICK = """
CREATE TEMPORARY TABLE bench_floor AS
SELECT DISTINCT ON (deal_id) id, deal_id, manager_id FROM findings
WHERE account_id = :account AND status = 'open' AND deal_id = ANY(:deals)
ORDER BY deal_id, id
"""
SQL_FLOOR_WRITES = (
    "UPDATE findings f SET updated_at = :at FROM bench_floor p WHERE f.id = p.id",
    """INSERT INTO finding_events (finding_id, at, from_status, to_status, actor)
    SELECT id, :at, 'open', 'open', 'bench-floor' FROM bench_floor""",
    """INSERT INTO outbox (account_id, finding_id, kind, purpose, dedup_key, deal_id, user_id, status, attempts,
                        next_attempt_at, created_at)
    SELECT :account, p.id, k.kind, 'open', 'bench-floor:' || k.kind || ':' || p.id, p.deal_id, p.manager_id,
           'cancelled', 0, :at, :at
    FROM bench_floor p CROSS JOIN (VALUES ('create_task'), ('add_note')) AS k(kind)""",
    """INSERT INTO rule_due (account_id, deal_id, due_epoch)
    SELECT :account, p.deal_id, coalesce(d.due_epoch, :epoch) FROM bench_floor p
    LEFT JOIN rule_due d ON d.account_id = :account AND d.deal_id = p.deal_id
    ON CONFLICT (account_id, deal_id) DO UPDATE SET due_epoch = excluded.due_epoch""",
)
SQL_FLOOR_CLEANUP = (
    "DELETE FROM outbox WHERE account_id = :account AND dedup_key LIKE 'bench-floor:%'",
    "DELETE FROM finding_events WHERE actor = 'bench-floor'",
    "DROP TABLE bench_floor",
)


async def write_floor(
    engine: AsyncEngine, account_id: int, total: int, due: int, rng: random.Random
) -> tuple[float, int]:
    """The writes of a tick whose `due` deals each changed one finding, and the commit, with no
    rule evaluated: the storage's share of a tick's cost. Returns its ms and the findings written."""
    deals = deals_with_open_tasks(total, min(due, total * 9 // 10), rng)
    at = sim_now()
    params = {"account": account_id, "at": at, "epoch": at.timestamp()}
    async with engine.connect() as conn:
        await conn.execute(text(SQL_FLOOR_PICK), {"account": account_id, "deals": deals})
        count = (await conn.execute(text("SELECT count(*) FROM bench_floor"))).scalar_one()
        await conn.commit()
        started = time.perf_counter()
        for statement in SQL_FLOOR_WRITES:
            await conn.execute(text(statement), params)
        await conn.commit()
        took = (time.perf_counter() - started) * 1000
        for statement in SQL_FLOOR_CLEANUP:
            await conn.execute(text(statement), params)
        await conn.commit()
    return took, count


async def detection_latency(
    engine: AsyncEngine, account_id: int, total: int, count: int, span: float, rng: random.Random
) -> tuple[list[float], int, float]:
    """Deadlines spread over the next `span` seconds, ticks on a simulated clock. Returns each
    finding's delay after its deadline (seconds), the ticks, and the longest tick (ms)."""
    deals = deals_with_open_tasks(total, min(count, total * 9 // 10), rng)
    maker = make_sessionmaker(engine)
    async with maker() as s:
        timezone, document = (
            await s.execute(
                text(
                    "SELECT a.timezone, r.document FROM accounts a LEFT JOIN rule_configs r ON r.account_id = a.id "
                    "WHERE a.id = :a"
                ),
                {"a": account_id},
            )
        ).one()
    settings = engine_rules.account_rules(account_id, document)
    calendar = settings.calendar(timezone)
    # The simulated clock starts at the account's next working minute (now, in working hours),
    # after the ticks have worked off what falls due until then (a weekend's worth on a Saturday).
    start = calendar.next_working_start(sim_now())
    rt = BenchRuntime(engine)
    started, backlog = time.perf_counter(), 0
    while count_due := await scheduler.tick_account(rt, account_id, start):  # type: ignore[arg-type]
        backlog += count_due
    print(
        f"simulated clock starts at {start:%a %H:%M} UTC: {backlog:,} deals due by then, worked off in "
        f"{time.perf_counter() - started:.1f} s"
    )
    due_at: dict[str, datetime] = {}
    async with maker() as s, s.begin():
        rows = (
            await s.execute(
                text(
                    "SELECT deal_id, min(id) FROM tasks WHERE account_id = :a AND deal_id = ANY(:deals) "
                    "AND NOT is_completed GROUP BY deal_id"
                ),
                {"a": account_id, "deals": deals},
            )
        ).all()
        tasks = {deal: task for deal, task in rows}
        for task in tasks.values():
            due_at[task] = start + timedelta(seconds=rng.uniform(30, span))
        await s.execute(
            text("UPDATE tasks SET due_at = :due, source_updated_at = :now WHERE account_id = :a AND id = :id"),
            [{"due": due, "now": start, "a": account_id, "id": task} for task, due in due_at.items()],
        )
    # Each change is an event: the inbox re-evaluates its deal (here in batches of 100), which
    # stores the deal's exact moment.
    ordered = sorted(tasks)
    for i in range(0, len(ordered), 100):
        async with maker() as s, s.begin():
            await rules_engine.evaluate(s, account_id, deal_ids=ordered[i : i + 100], now=start, actor="incremental")
    grace = settings.resolved["overdue_task"].settings.grace_minutes * 60
    deadline = {task: calendar.add_working(due, grace) for task, due in due_at.items()}
    last = max(deadline.values()) + timedelta(seconds=120)
    clock, ticks, longest = start, 0, 0.0
    while clock <= last:
        started = time.perf_counter()
        await scheduler.tick_account(rt, account_id, clock)  # type: ignore[arg-type]
        took = time.perf_counter() - started
        longest, ticks = max(longest, took * 1000), ticks + 1
        # The next tick comes an interval later, or when this one is done if it took longer.
        clock += timedelta(seconds=max(TICK_SECONDS, took))
    async with maker() as s:
        opened = dict(
            (
                await s.execute(
                    text(
                        "SELECT entity_id, opened_at FROM findings WHERE account_id = :a AND rule = 'overdue_task' "
                        "AND entity_id = ANY(:ids) AND status = 'open'"
                    ),
                    {"a": account_id, "ids": list(deadline)},
                )
            ).all()
        )
    delays = [(opened[task] - deadline[task]).total_seconds() for task in deadline if task in opened]
    missing = len(deadline) - len(delays)
    if missing:
        print(f"  ! {missing} tasks past their deadline have no open finding")
    return delays, ticks, longest


class StatementProfile:
    """Client-side time of every statement, keyed by its SQL text, while attached."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine.sync_engine
        self.totals: dict[str, list[float]] = defaultdict(list)

    def _before(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        conn.info.setdefault("bench_started", []).append(time.perf_counter())

    def _after(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.totals[statement].append(time.perf_counter() - conn.info["bench_started"].pop())

    def __enter__(self) -> StatementProfile:
        event.listen(self.engine, "before_cursor_execute", self._before)
        event.listen(self.engine, "after_cursor_execute", self._after)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._before)
        event.remove(self.engine, "after_cursor_execute", self._after)

    def report(self, what: str, top: int = 10) -> None:
        ranked = sorted(self.totals.items(), key=lambda item: -sum(item[1]))
        total = sum(sum(t) for t in self.totals.values())
        print(f"\nslowest statements of {what} ({len(self.totals)} distinct, {total:.2f} s in all):")
        for statement, times in ranked[:top]:
            flat = " ".join(statement.split())
            print(f"  {sum(times):7.3f} s  x{len(times):<3} {flat[:220]}{'…' if len(flat) > 220 else ''}")


async def kept_accounts(engine: AsyncEngine) -> list[int]:
    """The benchmark accounts of a kept database (--keep-database), oldest first."""
    async with engine.connect() as conn:
        return list(
            (await conn.execute(text("SELECT id FROM accounts WHERE name = 'sweep benchmark' ORDER BY id"))).scalars()
        )


async def run(url: URL, args: argparse.Namespace) -> None:
    engine = make_engine(url_text(url))
    try:
        small_id = None
        kept = await kept_accounts(engine) if args.keep_database else []
        if kept:
            print(f"reusing the accounts of database {url.database}: {kept}")
            small_id = kept[-2] if len(kept) > 1 and not args.no_ticks else None
        elif not args.no_ticks:
            # The account the tick is compared with, built first (the big one rebuilds the indexes).
            started = time.perf_counter()
            small_id, _ = await generate(engine, argparse.Namespace(**{**vars(args), "deals": args.small_deals}))
            await sweep(engine, small_id)
            await sweep(engine, small_id)
            print(
                f"small account: {args.small_deals:,} deals, generated and swept in "
                f"{time.perf_counter() - started:.1f} s"
            )
        if kept:
            account_id = kept[-1]
            async with engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(text("VACUUM ANALYZE"))
        else:
            started = time.perf_counter()
            account_id, timings = await generate(engine, args)
            total = time.perf_counter() - started
            steps = ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
            print(f"generated in {total:.1f} s ({steps})")
        for label, value in (await data_profile(engine, account_id)).items():
            print(f"  {label:<30} {value:>12,}")

        async with engine.connect() as conn:
            settings = {
                name: (await conn.execute(text(f"SHOW {name}"))).scalar_one()
                for name in (
                    "server_version",
                    "autovacuum",
                    "shared_buffers",
                    "work_mem",
                    "jit",
                    "max_parallel_workers_per_gather",
                )
            }
        print("server: " + ", ".join(f"{k} {v}" for k, v in settings.items()))

        bare = await bare_scan(engine, account_id)
        serial = await bare_scan(engine, account_id, parallel=False)
        print(
            f"\nbare scan of deals+tasks+notes (best of {BARE_RUNS}): {bare:.2f} s "
            f"({serial:.2f} s without parallel workers)"
        )
        first, first_result = await sweep(engine, account_id)
        print(f"first sweep:  {first:.2f} s  (opened {first_result.opened:,}, open {first_result.open:,})")
        connect_actions, connect_people = await outbox_after_connecting(engine, account_id)
        print(
            f"outbox after connecting: {connect_actions:,} actions for {connect_people:,} managers with findings "
            f"+ 1 head of sales (goal: at most one each)"
        )
        if not args.no_analyze:
            # What autovacuum does after the first sweep's bulk insert in production. Without it the
            # planner still believes the findings table empty (see --no-analyze).
            started = time.perf_counter()
            async with engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(text("VACUUM ANALYZE"))
            print(f"VACUUM ANALYZE after the first sweep: {time.perf_counter() - started:.2f} s")
        if args.profile:
            with StatementProfile(engine) as profile:
                steady, steady_result = await sweep(engine, account_id)
        else:
            steady, steady_result = await sweep(engine, account_id)
        print(
            f"steady sweep: {steady:.2f} s  (opened {steady_result.opened:,}, resolved {steady_result.resolved:,}, "
            f"open {steady_result.open:,})"
        )
        peak = rss_mb()
        floor = await comparison_floor(engine, account_id)

        sample = random.Random(args.seed).sample(range(1, args.deals + 1), min(args.incremental, args.deals))
        deal_ids = [str(DEAL_BASE + d) for d in sample]
        times = await incremental(engine, account_id, deal_ids, args.incremental_budget)
        if args.profile:
            # Separately from the timed run: the statements one re-evaluation issues, and their cost.
            with StatementProfile(engine) as incremental_profile:
                await incremental(engine, account_id, deal_ids[:50], args.incremental_budget)
        median, p95 = statistics.median(times), pct(times, 0.95)
        compiled_ab = await compiled_once_ab(engine, account_id, deal_ids)
        changed_times, changed_count = [], 0
        if args.changed:
            flipped = [
                str(DEAL_BASE + d)
                for d in random.Random(args.seed + 1).sample(range(1, args.deals + 1), min(args.changed, args.deals))
            ]
            changed_times, changed_count = await incremental_after_change(
                engine, account_id, flipped, args.incremental_budget
            )

        ticks: dict[str, Any] = {}
        floors: dict[str, list[tuple[float, int]]] = {}
        if not args.no_ticks and small_id is not None:
            rng = random.Random(args.seed + 2)
            for label, acc, total in (("small", small_id, args.small_deals), ("large", account_id, args.deals)):
                done, seconds, rounds = await catch_up(engine, acc)
                print(f"catch-up after the sweep ({label}): {done:,} deals due early, {rounds} ticks, {seconds:.2f} s")
                ticks[label] = [(await timed_tick(engine, acc, total, args.due, rng)) for _ in range(args.tick_rounds)]
                for ms, count in ticks[label]:
                    print(f"  tick, {label} account: {ms:8.1f} ms for {count:,} due deals")
                if args.profile:
                    # One more tick, untimed, for the statements a tick issues and their cost.
                    with StatementProfile(engine) as tick_profile:
                        await timed_tick(engine, acc, total, args.due, rng)
                    tick_profile.report(f"a tick with {args.due:,} due on the {label} account", top=15)
            delays, sim_ticks, longest = await detection_latency(
                engine, account_id, args.deals, args.due, args.latency_span, rng
            )
            ticks["latency"] = (delays, sim_ticks, longest)
            # Last, so that its rewrites do not weigh on the ticks timed above.
            for label, acc, total in (("small", small_id, args.small_deals), ("large", account_id, args.deals)):
                floors[label] = [
                    (await write_floor(engine, acc, total, args.due, rng)) for _ in range(args.tick_rounds)
                ]
                for ms, count in floors[label]:
                    print(f"  write floor, {label} account: {ms:8.1f} ms for {count:,} findings")
        peak = max(peak, rss_mb())

        ratio = steady / bare if bare > 0 else float("inf")
        print("\nfindings by rule:")
        for rule, counts in (await findings_by_rule(engine, account_id)).items():
            print(f"  {rule:<34} " + ", ".join(f"{status} {n:,}" for status, n in counts.items()))
        print("\nresults:")
        print(f"  bare scan                 {bare:8.2f} s   ({serial:.2f} s without parallel workers)")
        print(f"  sweep, first              {first:8.2f} s")
        print(f"  outbox after connecting   {connect_actions:8,d}     ({connect_people} managers + 1 head of sales)")
        print(f"  sweep, steady             {steady:8.2f} s")
        print(f"  steady sweep / bare scan  {ratio:8.2f} x   ({steady / serial:.2f} x the serial scan)")
        print(
            f"  comparison floor          {floor:8.2f} s   (findings matched with as many rows on their key, "
            f"best of {BARE_RUNS}: {(bare + floor) / bare:.2f} x the bare scan with it)"
        )
        print(f"  peak RSS after sweeps     {peak:8.1f} MB")
        print(f"  incremental, one deal     {median:8.2f} ms median, {p95:.2f} ms p95 ({len(times)} deals)")
        (kept_ms, kept_cpu), (usual_ms, usual_cpu) = compiled_ab[True], compiled_ab[False]
        print(
            f"  … compiled once / usual   {kept_ms:8.2f} ms / {usual_ms:.2f} ms median, CPU {kept_cpu:.2f} / "
            f"{usual_cpu:.2f} ms per evaluation ({kept_cpu / usual_cpu:.2f} x; interleaved, "
            f"{len(deal_ids)} deals taken alternately)"
        )
        if changed_times:
            print(
                f"  … right after a change    {statistics.median(changed_times):8.2f} ms median, "
                f"{pct(changed_times, 0.95):.2f} ms p95 ({len(changed_times)} deals, {changed_count} "
                f"with a finding changed)"
            )
        goals_ticks: list[tuple[str, bool]] = []
        if ticks:
            small_ms = statistics.median(ms for ms, _ in ticks["small"])
            large_ms = statistics.median(ms for ms, _ in ticks["large"])
            delays, sim_ticks, longest = ticks["latency"]
            print(
                f"  tick, {args.due:,} due deals   {large_ms:8.1f} ms median at {args.deals:,} deals, "
                f"{small_ms:.1f} ms at {args.small_deals:,} (ratio {large_ms / small_ms:.2f})"
            )
            if floors:
                small_floor = statistics.median(ms for ms, _ in floors["small"])
                large_floor = statistics.median(ms for ms, _ in floors["large"])
                print(
                    f"  its write floor           {large_floor:8.1f} ms median at {args.deals:,} deals, "
                    f"{small_floor:.1f} ms at {args.small_deals:,} (the tick: {large_ms / large_floor:.2f} x "
                    f"and {small_ms / small_floor:.2f} x its floor)"
                )
            if delays:
                print(
                    f"  detection latency         {pct(delays, 0.99):8.1f} s p99, "
                    f"{statistics.median(delays):.1f} s median, "
                    f"{max(delays):.1f} s max ({len(delays):,} deadlines, {sim_ticks} simulated ticks, "
                    f"longest {longest:.0f} ms)"
                )
            goals_ticks = [
                (f"tick with {args.due:,} due <= {GOAL_TICK_MS:g} ms", large_ms <= GOAL_TICK_MS),
                (f"tick large / small <= {GOAL_TICK_RATIO:g}", large_ms / small_ms <= GOAL_TICK_RATIO),
                (
                    f"detection latency p99 <= {GOAL_LATENCY_P99_S:g} s",
                    bool(delays) and pct(delays, 0.99) <= GOAL_LATENCY_P99_S,
                ),
            ]
        if changed_times:
            goals_ticks.append(
                (
                    f"re-evaluation after a change <= {GOAL_CHANGED_MS:g} ms median",
                    statistics.median(changed_times) <= GOAL_CHANGED_MS,
                )
            )
        print("\ngoals:")
        for label, ok in (
            *goals_ticks,
            (f"steady sweep <= {GOAL_SWEEP_S:g} s", steady <= GOAL_SWEEP_S),
            (f"peak RSS <= {GOAL_RSS_MB:g} MB", peak <= GOAL_RSS_MB),
            ("connecting: <= 1 outbox action per manager + 1 for the head", connect_actions <= connect_people + 1),
            (f"incremental median <= {GOAL_INCREMENTAL_MS:g} ms", median <= GOAL_INCREMENTAL_MS),
        ):
            print(f"  {'MET    ' if ok else 'NOT MET'}  {label}")
        if args.profile:
            profile.report("the steady sweep")
            incremental_profile.report("50 incremental re-evaluations", top=20)
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pin_clock(args.clock)
    print(f"simulated clock: {sim_now():%a %H:%M} UTC ({args.clock})")
    base = async_url(args.database_url)
    database = kept_database(base, args.keep_database) if args.keep_database else None
    with database or scratch_database(url_text(base), "crmwatch_bench") as scratch:
        url = make_url(scratch)
        print(
            f"database {url.database}: {args.deals:,} deals, {args.tasks_per_deal} tasks and "
            f"{args.notes_per_deal:g} notes per deal"
        )
        started = time.perf_counter()
        upgrade(scratch)  # outside any event loop: Alembic's env.py runs its own
        print(f"migrated in {time.perf_counter() - started:.1f} s")
        asyncio.run(run(url, args))
    print(f"kept database {url.database}" if args.keep_database else f"dropped database {url.database}")
    return 0


@contextlib.contextmanager
def kept_database(base: URL, name: str) -> Iterator[str]:
    """--keep-database: the database `name` beside `base`, created when missing, never dropped."""

    async def ensure() -> None:
        engine = create_async_engine(url_text(base), isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                found = await conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
                if not found:
                    await conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            await engine.dispose()

    asyncio.run(ensure())
    yield url_text(base.set(database=name))


if __name__ == "__main__":
    sys.exit(main())
