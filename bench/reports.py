"""Reports benchmark: every JSON report of the dashboard over a 30-day period on PostgreSQL.

    python bench/reports.py [--deals 100000] [--calls 1000000] [--moves 300000] [--runs 40]
                            [--database-url postgresql+asyncpg://postgres@127.0.0.1:5432/test]

One run:

1. creates a throwaway database next to the one in --database-url, runs the migrations, and
   fills one account on the server side (INSERT … SELECT … FROM generate_series): 50 managers, one
   pipeline with six open stages plus won/lost, the deals (half of them closed over two years),
   their calls and stage moves over two years, open tasks, notes, and findings with their history;
   then VACUUM ANALYZE;
2. times each JSON report for the last 30 days (the service call and its JSON encoding, each in a
   fresh read transaction, `--runs` times): the team table, the same per day, the charts' trend,
   the funnel, the drill-down of one rule, ABC/XYZ of clients (the period and the previous one of
   equal length) and the plan report (this month, a plan for every manager, milestones on a stage
   and on calls);
3. times, in the same run and the same way, a bare count(*) over the rows each report reads (its
   period of calls, stage moves, notes, tasks, findings and deals), and prints each report's p50
   and p99 with its ratio to that count;
4. drops the database, whatever happened.

Goals (issues 12 and 16): p50 <= 300 ms and p99 <= 1 s for every report of a 30-day period. The exit code
is 0 whatever the figures: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from fastapi.encoders import jsonable_encoder
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url

import app.models_all  # noqa: F401  (registers every table)
from app.accounts.models import Account
from app.db import make_engine, make_sessionmaker, scratch_database, utcnow
from app.migrate import upgrade
from app.plans import service as plans_service
from app.reports import abcxyz, service
from app.reports.periods import Period, today
from app.rules import config as rules_config

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
GOAL_P50_MS = 300.0
GOAL_P99_MS = 1000.0
USERS = 50
USER_BASE = 9_000_000
DEAL_BASE = 30_000_000
PIPELINE_ID = "7000000"
STAGES = [
    ("7000001", "Первичный контакт", "open"),
    ("7000002", "Квалификация", "open"),
    ("7000003", "Переговоры", "open"),
    ("7000004", "Коммерческое предложение", "open"),
    ("7000005", "Согласование договора", "open"),
    ("7000006", "Счёт выставлен", "open"),
    ("142", "Успешно реализовано", "won"),
    ("143", "Закрыто и не реализовано", "lost"),
]
RULES = ["overdue_task", "deal_without_task", "stuck_stage", "empty_comment", "task_rescheduled_without_contact"]

# Each random draw is made once per row in an inner query that OFFSET 0 keeps from being flattened.
SQL = {
    "users": """
INSERT INTO users (account_id, id, name, email, is_active)
SELECT :account, (:user_base + u)::text, 'Менеджер ' || u, 'm' || u || '@example.com', true
FROM generate_series(1, :users) AS u""",
    # Odd deals are closed (won 40 %, lost 60 %) at a time spread over two years; even deals are open.
    "deals": """
INSERT INTO deals (account_id, id, name, pipeline_id, stage_id, stage_entered_at, stage_entered_source, price,
                   responsible_user_id, is_closed, is_deleted, created_at, closed_at, source_updated_at,
                   mirrored_at)
SELECT :account, (:deal_base + g)::text, 'Сделка #' || g, :pipeline,
       CASE WHEN closed THEN CASE WHEN r_won < 0.4 THEN '142' ELSE '143' END
            ELSE (7000001 + floor(r_stage * r_stage * 6)::int)::text END,
       CASE WHEN closed THEN closed_at ELSE now() - r_entered * interval '60 days' END, 'event',
       round((r_price * 500000)::numeric, -2)::float8, (:user_base + 1 + floor(r_user * :users)::int)::text,
       closed, false, created_at, CASE WHEN closed THEN closed_at END, now(), now()
FROM (SELECT g, closed, r_won, r_stage, r_entered, r_price, r_user,
             now() - r_closed * interval '730 days' AS closed_at,
             now() - r_closed * interval '730 days' - r_age * interval '45 days' AS created_at
      FROM (SELECT g, g % 2 = 1 AS closed, random() AS r_won, random() AS r_stage, random() AS r_entered,
                   random() AS r_price, random() AS r_user, random() AS r_closed, random() AS r_age
            FROM generate_series(1, :deals) AS g OFFSET 0) AS r) AS s""",
    "deal_contacts": """
INSERT INTO deal_contacts (account_id, deal_id, contact_id)
SELECT :account, (:deal_base + g)::text, (1 + floor(random() * (:deals / 3)))::int::text
FROM generate_series(1, :deals) AS g""",
    # Stage moves over two years on random deals, by their managers.
    "moves": """
INSERT INTO stage_history (account_id, deal_id, pipeline_id, stage_id, from_stage_id, entered_at, by_user_id)
SELECT :account, (:deal_base + d)::text, :pipeline,
       CASE WHEN r_stage < 0.92 THEN (7000001 + floor(r_stage / 0.92 * 6)::int)::text
       WHEN r_stage < 0.96 THEN '142' ELSE '143' END, NULL, now() - r_at * interval '730 days',
       (:user_base + 1 + floor(r_user * :users)::int)::text
FROM (SELECT 1 + floor(random() * :deals)::int AS d, random() AS r_stage, random() AS r_at, random() AS r_user
      FROM generate_series(1, :moves) OFFSET 0) AS s""",
    # A million calls over two years: 60 % outgoing, 20 % of incoming missed.
    "calls": """
INSERT INTO calls (account_id, provider, provider_call_id, direction, client_number, manager_id, started_at,
                   talk_seconds, duration_seconds, status, is_final, created_at, updated_at)
SELECT :account, 'bench', 'c' || i, CASE WHEN r_dir < 0.6 THEN 'out' ELSE 'in' END,
       '+7916' || lpad((floor(random() * 10000000))::int::text, 7, '0'),
       (:user_base + 1 + floor(r_user * :users)::int)::text, now() - r_at * interval '730 days',
       CASE WHEN r_ans < 0.8 THEN floor(r_talk * 400)::int ELSE 0 END, 0,
       CASE WHEN r_ans < 0.8 THEN 'answered' ELSE 'missed' END, true, now(), now()
FROM (SELECT i, random() AS r_dir, random() AS r_user, random() AS r_at, random() AS r_ans, random() AS r_talk
      FROM generate_series(1, :calls) AS i OFFSET 0) AS s""",
    "tasks": """
INSERT INTO tasks (account_id, id, deal_id, responsible_user_id, due_at, is_completed, completed_at, is_deleted,
                   created_at, created_by)
SELECT :account, 't' || g, (:deal_base + 2 * g)::text, (:user_base + 1 + floor(random() * :users)::int)::text,
       now() + (random() - 0.3) * interval '20 days', g % 3 = 0,
       CASE WHEN g % 3 = 0 THEN now() - random() * interval '60 days' END, false,
       now() - random() * interval '60 days', (:user_base + 1 + floor(random() * :users)::int)::text
FROM generate_series(1, :deals / 2) AS g""",
    "notes": """
INSERT INTO notes (account_id, id, entity_type, entity_id, deal_id, kind, text, text_norm, created_by, created_at,
                   params)
SELECT :account, 'n' || g, 'leads', (:deal_base + 1 + floor(random() * :deals)::int)::text,
       (:deal_base + 1 + floor(random() * :deals)::int)::text, 'common', 'Созвонились, обсудили условия',
       'созвонились, обсудили условия', (:user_base + 1 + floor(random() * :users)::int)::text,
       now() - random() * interval '730 days', '{}'::json
FROM generate_series(1, :deals) AS g""",
    # Findings: one per deal for a fifth of the deals, a third still open; each opened and (if so) resolved.
    "findings": """
INSERT INTO findings (account_id, rule, rule_version, entity_type, entity_id, deal_id, manager_id, severity, status,
                      started_at, opened_at, resolved_at, suppressed, times_opened, created_at, updated_at)
SELECT :account, (CAST(:rules AS text[]))[1 + (g % 5)], 1, 'deal', (:deal_base + g)::text, (:deal_base + g)::text,
       (:user_base + 1 + floor(random() * :users)::int)::text, 'warning',
       CASE WHEN g % 3 = 0 THEN 'open' ELSE 'resolved' END, opened, opened,
       CASE WHEN g % 3 = 0 THEN NULL ELSE opened + random() * interval '5 days' END, false, 1, opened, opened
FROM (SELECT g, now() - random() * interval '365 days' AS opened FROM generate_series(1, :deals / 5) AS g) AS s""",
    "finding_events": """
INSERT INTO finding_events (finding_id, at, from_status, to_status, actor)
SELECT id, opened_at, NULL, 'open', 'sweep' FROM findings WHERE account_id = :account
UNION ALL
SELECT id, resolved_at, 'open', 'resolved', 'sweep' FROM findings
WHERE account_id = :account AND resolved_at IS NOT NULL""",
}

# What each report reads, counted bare over the same period: the floor of any query that reads it.
BARE = {
    "calls": "SELECT count(*) FROM calls WHERE account_id = :account AND started_at >= :start AND started_at < :end",
    "moves": "SELECT count(*) FROM stage_history WHERE account_id = :account AND entered_at >= :start "
    "AND entered_at < :end",
    "notes": "SELECT count(*) FROM notes WHERE account_id = :account AND created_at >= :start AND created_at < :end",
    "tasks": "SELECT count(*) FROM tasks WHERE account_id = :account",
    "open_deals": "SELECT count(*) FROM deals WHERE account_id = :account AND NOT is_closed",
    "closed": "SELECT count(*) FROM deals WHERE account_id = :account AND pipeline_id = :pipeline "
    "AND closed_at >= :start AND closed_at < :end",
    "findings": "SELECT count(*) FROM findings WHERE account_id = :account AND status = 'open'",
    # ABC/XYZ reads the deals closed in the period and in the previous one of equal length.
    "closed_twice": "SELECT count(*) FROM deals WHERE account_id = :account "
    "AND closed_at >= CAST(:start AS timestamptz) - (CAST(:end AS timestamptz) - CAST(:start AS timestamptz)) "
    "AND closed_at < :end",
    "events": "SELECT count(*) FROM finding_events e JOIN findings f ON f.id = e.finding_id "
    "WHERE f.account_id = :account AND e.at >= :start AND e.at < :end",
}
READS = {
    "managers": ["calls", "moves", "notes", "tasks", "open_deals", "findings"],
    "daily": ["calls", "moves", "notes"],
    "trend": ["calls", "events"],
    "funnel": ["open_deals", "moves", "closed"],
    "deals": ["findings"],
    "abcxyz": ["closed_twice"],
    "plan": ["calls", "moves"],
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--deals", type=int, default=100_000)
    p.add_argument("--calls", type=int, default=1_000_000)
    p.add_argument("--moves", type=int, default=300_000)
    p.add_argument("--runs", type=int, default=40)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--database-url", default=DEFAULT_URL)
    return p.parse_args(argv)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def generate(engine: Any, args: argparse.Namespace) -> int:
    sessions = make_sessionmaker(engine)
    async with sessions() as s, s.begin():
        account = Account(
            name="Bench",
            crm="amocrm",
            base_url="https://bench.amocrm.ru",
            key="bench-reports",
            timezone="Europe/Moscow",
            auth_kind="token",
            credentials=b"x",
            sync_counts={},
        )
        s.add(account)
        await s.flush()
        aid = account.id
        await s.execute(
            text(
                "INSERT INTO pipelines (account_id, id, name, sort, is_archived) VALUES (:a, :p, 'Продажи', 1, false)"
            ),
            {"a": aid, "p": PIPELINE_ID},
        )
        for sort, (sid, name, kind) in enumerate(STAGES):
            await s.execute(
                text(
                    "INSERT INTO stages (account_id, pipeline_id, id, name, sort, kind) VALUES (:a, :p, :i, :n, :s, :k)"
                ),
                {"a": aid, "p": PIPELINE_ID, "i": sid, "n": name, "s": (sort + 1) * 10, "k": kind},
            )
    params = {
        "account": aid,
        "users": USERS,
        "user_base": USER_BASE,
        "deal_base": DEAL_BASE,
        "deals": args.deals,
        "pipeline": PIPELINE_ID,
        "moves": args.moves,
        "calls": args.calls,
        "rules": RULES,
    }
    sessions_ = make_sessionmaker(engine)
    async with sessions_() as s, s.begin():
        # The plan report's month: a plan for every manager, proposals on a stage, first contacts on calls.
        month = plans_service.current_month(utcnow(), "Europe/Moscow")
        await s.execute(
            text(
                "INSERT INTO plans (account_id, month, manager_id, revenue, won_deals, updated_at) "
                "SELECT :a, :m, (:user_base + u)::text, 3000000, 8, now() FROM generate_series(1, :users) AS u"
            ),
            {"a": aid, "m": month, "user_base": USER_BASE, "users": USERS},
        )
        doc = {
            "plans": {
                "milestones": {
                    "first_contact": {"calls": True},
                    "meeting_held": {"stages": [f"{PIPELINE_ID}/7000003"]},
                    "proposal_sent": {"stages": [f"{PIPELINE_ID}/7000004"]},
                }
            }
        }
        await rules_config.save(s, aid, rules_config.RulesDocument.model_validate(doc))
    for name, sql in SQL.items():
        started = time.perf_counter()
        async with engine.begin() as conn:
            await conn.execute(text(sql), {k: v for k, v in params.items() if f":{k}" in sql})
        print(f"  {name:<15} {time.perf_counter() - started:6.1f} s")
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE"))
    return aid


async def timed(runs: int, act: Callable[[], Awaitable[Any]]) -> list[float]:
    await act()  # warm the pool, the plan cache and the page cache
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        await act()
        out.append((time.perf_counter() - started) * 1000)
    return out


async def run(url: URL, args: argparse.Namespace) -> None:
    engine = make_engine(url.render_as_string(hide_password=False))
    try:
        started = time.perf_counter()
        aid = await generate(engine, args)
        print(f"generated in {time.perf_counter() - started:.1f} s")
        sessions = make_sessionmaker(engine)
        async with sessions() as s:
            account = await s.get(Account, aid)
            counts = {
                t: (await s.execute(text(f"SELECT count(*) FROM {t}"))).scalar_one()
                for t in ("deals", "calls", "stage_history", "tasks", "notes", "findings", "finding_events")
            }
        print("  " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
        now = utcnow()
        last = today(now, account.timezone)
        period = Period(last - timedelta(days=args.days - 1), last, account.timezone)
        scope = service.TEAM

        async def report(name: str) -> Any:
            async with sessions() as s:
                if name == "managers":
                    out = await service.managers(s, account, period, scope, utcnow())
                elif name == "daily":
                    out = await service.daily(s, account, period, scope)
                elif name == "trend":
                    out = await service.trend(s, account, period, scope)
                elif name == "funnel":
                    out = await service.funnel(s, account, PIPELINE_ID, period, scope, utcnow())
                elif name == "abcxyz":
                    out = await abcxyz.report(s, account, period, scope, "contact", 200)
                elif name == "plan":
                    now = utcnow()
                    out = await plans_service.pace(s, account, plans_service.current_month(now, account.timezone), now)
                else:
                    out = await service.deals(s, account, scope, "overdue_task", None)
                return jsonable_encoder(out)

        async def bare(name: str) -> None:
            async with sessions() as s:
                for key in READS[name]:
                    await s.execute(
                        text(BARE[key]),
                        {"account": aid, "start": period.start, "end": period.end, "pipeline": PIPELINE_ID},
                    )

        rows = []
        for name in READS:
            times = await timed(args.runs, lambda n=name: report(n))
            floor = await timed(args.runs, lambda n=name: bare(n))
            rows.append((name, statistics.median(times), pct(times, 0.99), statistics.median(floor), pct(floor, 0.99)))
        print(f"\n{args.days}-day period {period.day_from}..{period.day_to}, {args.runs} runs each (ms):")
        print(
            f"  {'report':<10} {'p50':>8} {'p99':>8}   {'bare p50':>8} {'bare p99':>8}   {'p50 ratio':>9} "
            f"{'p99 ratio':>9}"
        )
        for name, p50, p99, b50, b99 in rows:
            print(f"  {name:<10} {p50:8.1f} {p99:8.1f}   {b50:8.1f} {b99:8.1f}   {p50 / b50:8.1f}x {p99 / b99:8.1f}x")
        print("\ngoals:")
        for name, p50, p99, _, _ in rows:
            ok = p50 <= GOAL_P50_MS and p99 <= GOAL_P99_MS
            verdict = "MET    " if ok else "NOT MET"
            print(f"  {verdict}  {name}: p50 <= {GOAL_P50_MS:g} ms and p99 <= {GOAL_P99_MS:g} ms")
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = make_url(args.database_url)
    if not base.drivername.startswith("postgresql"):
        raise SystemExit("this benchmark needs PostgreSQL (generate_series, VACUUM, CREATE DATABASE)")
    with scratch_database(base.render_as_string(hide_password=False), "crmwatch_bench_reports") as scratch:
        url = make_url(scratch)
        print(f"database {url.database}: {args.deals:,} deals, {args.calls:,} calls, {args.moves:,} stage moves")
        upgrade(scratch)
        asyncio.run(run(url, args))
    print(f"dropped database {url.database}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
