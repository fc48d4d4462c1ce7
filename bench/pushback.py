"""Push-back benchmark: how close the outbox delivery worker gets to amoCRM's write ceiling.

    python bench/pushback.py [--actions 10000] [--database sqlite|postgresql+asyncpg://user@host:port/db]

One run:

1. starts the amoCRM emulator as a real HTTP server (uvicorn on its own port, in a thread of this
   process with its own event loop) with amoCRM's limit of 7 requests/s per token enforced; it is
   seeded with the demo pipeline and users and enough leads for the actions to target;
2. creates a throwaway crmwatch database (a temporary SQLite file, or a database created next to
   the --database URL on PostgreSQL and dropped at the end), migrates it, and fills it with Core
   bulk inserts: one account pointing at the emulator with a long-lived token, the mirror of the
   leads, two open findings per lead (stuck_stage, deal_without_task) and one pending "open"
   create_task and one add_note outbox row per finding, in the order the enqueue step writes them;
3. runs the real delivery worker, app.outbox.delivery.run_forever, with the production settings
   (7 requests/s, log level WARNING) until every row is sent, timing from its start to the
   `sent_at` of the last row;
4. prints the throughput against the ceiling (7 requests/s x 50 items = 350 actions/s), the
   emulator's count of 429 answers, a duplicates check (the emulator holds exactly one task or
   note per outbox row, found by the #cw<row id> marker each one carries) and where the time went.

The phase timings wrap the worker's functions (claim, wording, sending, recording) and the rate
limiter with timers that only call through; the code under test is not changed.

It is a measurement, not a test: the exit code is 0 whatever the figures, 2 only when the run
cannot be set up or the worker does not send every row (stalled or --timeout). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import math
import os
import re
import resource
import secrets
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import create_async_engine

import app.models_all  # noqa: F401  (registers every table)
from app.accounts.models import Account
from app.accounts.tokens import AccountTokens
from app.db import utcnow
from app.findings import notify
from app.findings.models import Finding
from app.migrate import upgrade
from app.mirror.models import Deal, Pipeline, Stage, User
from app.outbox import delivery
from app.outbox.models import OutboxAction
from app.runtime import Runtime
from app.settings import Settings
from integrations.amocrm.client import AmoCrmClient
from integrations.amocrm.demo_data import DEMO_PIPELINE_ID, DEMO_TOKEN, STAGES, USERS, seed_demo
from integrations.amocrm.emulator import EmulatorState, create_emulator_app
from integrations.ratelimit import SlidingWindowLimiter

HOST = "127.0.0.1"
DEFAULT_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
RATE = 7  # amoCRM's documented limit, requests per second per token
CEILING = RATE * delivery.BATCH  # actions/s if every request carried a full batch
GOAL_RATIO = 0.9
LEAD_BASE = 32_000_001  # after the demo's own leads
RULES = ("stuck_stage", "deal_without_task")
MARKER = re.compile(r"#cw(\d+)")
POLL_S = 0.25
STALL_S = 30.0  # at 7 req/s something is sent every fraction of a second; this long without is a failure
STARTUP_TIMEOUT = 15.0
EMULATOR_THREAD = "amocrm-emulator"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Outbox push-back benchmark against the amoCRM emulator (see bench/README.md)."
    )
    p.add_argument("--actions", type=int, default=10_000, help="pending outbox rows to deliver (default 10,000)")
    p.add_argument(
        "--database",
        default="sqlite",
        help=f"'sqlite' (a temporary file, the default) or a PostgreSQL URL such as {DEFAULT_POSTGRES}; "
        "the benchmark creates and drops its own database next to it",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="give up if the rows are not all sent after this many seconds (default 300)",
    )
    args = p.parse_args(argv)
    if args.actions < 1:
        p.error("--actions must be at least 1")
    return args


# --------------------------------------------------------------------------- the emulator


def seed_emulator(leads: int, now: int) -> tuple[EmulatorState, list[dict[str, Any]]]:
    """The demo account (users, pipeline, token) plus `leads` open leads spread over stages and managers."""
    state = EmulatorState()
    seed_demo(state, now)
    managers = [user_id for user_id, *_ in USERS]
    added = []
    for i in range(leads):
        stage_id = STAGES[i % len(STAGES)][0]
        created = now - (10 + i % 30) * 86400
        added.append(
            state.add_lead(
                LEAD_BASE + i,
                f"Заказ #{i + 1}",
                DEMO_PIPELINE_ID,
                stage_id,
                price=10_000 + 500 * (i % 200),
                responsible_user_id=managers[i % len(managers)],
                created_at=created,
                updated_at=created + (i % 9) * 86400,
            )
        )
    return state, added


class EmulatorServer:
    """uvicorn serving the emulator app on a free port, in a thread with its own event loop.

    Running in this process keeps the EmulatorState readable (the 429 count, what was created);
    its own loop keeps the emulator's work off the worker's loop, as a remote CRM would be."""

    def __init__(self, state: EmulatorState) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(
            create_emulator_app(state, rate_limit_per_s=RATE),
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name=EMULATOR_THREAD, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self.server.serve(sockets=[self.sock]))
        except BaseException as exc:  # reported by start()
            self.error = exc

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self.server.started:
            if self.error is not None or not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the emulator did not start: {self.error!r}")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


# --------------------------------------------------------------------------- the database


def database_url(option: str, workdir: Path) -> tuple[str, URL | None]:
    """The crmwatch URL, and for PostgreSQL the admin URL the throwaway database is created through."""
    if option == "sqlite":
        return f"sqlite+aiosqlite:///{workdir / 'crmwatch.db'}", None
    url = make_url(option)
    if url.get_backend_name() != "postgresql":
        raise SystemExit("--database is 'sqlite' or a postgresql:// URL")
    admin = url.set(drivername="postgresql+asyncpg")
    name = f"crmwatch_bench_{secrets.token_hex(4)}"
    return admin.set(database=name).render_as_string(hide_password=False), admin


async def admin_execute(admin: URL, statement: str) -> None:
    engine = create_async_engine(admin.render_as_string(hide_password=False), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def fill(rt: Runtime, base_url: str, leads: list[dict[str, Any]], actions: int) -> int:
    """The account, its mirror, the findings and `actions` pending outbox rows; returns the account id."""
    now = utcnow()
    ts = functools.partial(datetime.fromtimestamp, tz=now.tzinfo)
    async with rt.sessions() as s, s.begin():
        account = Account(
            name="push-back benchmark",
            crm="amocrm",
            base_url=base_url,
            key=secrets.token_hex(16),
            timezone="Europe/Moscow",
            region="RU",
            language="ru",
            auth_kind="token",
            credentials=rt.box.seal({"access_token": DEMO_TOKEN}),
            status="active",
            sync_state="done",
            sync_counts={},
            sync_finished_at=now,
        )
        s.add(account)
        await s.flush()
        aid = account.id
        await s.execute(
            insert(User.__table__),
            [
                {"account_id": aid, "id": str(uid), "name": name, "email": email, "is_active": True, "synced_at": now}
                for uid, name, email, _ in USERS
            ],
        )
        await s.execute(
            insert(Pipeline.__table__),
            [{"account_id": aid, "id": str(DEMO_PIPELINE_ID), "name": "Продажи", "sort": 1, "is_archived": False}],
        )
        await s.execute(
            insert(Stage.__table__),
            [
                {
                    "account_id": aid,
                    "pipeline_id": str(DEMO_PIPELINE_ID),
                    "id": str(sid),
                    "name": name,
                    "sort": sort,
                    "kind": "open",
                }
                for sid, name, sort in STAGES
            ],
        )
        await s.execute(
            insert(Deal.__table__),
            [
                {
                    "account_id": aid,
                    "id": str(lead["id"]),
                    "name": lead["name"],
                    "pipeline_id": str(lead["pipeline_id"]),
                    "stage_id": str(lead["status_id"]),
                    "stage_entered_at": ts(lead["updated_at"]),
                    "stage_entered_source": "event",
                    "price": float(lead["price"]),
                    "responsible_user_id": str(lead["responsible_user_id"]),
                    "is_closed": False,
                    "is_deleted": False,
                    "created_at": ts(lead["created_at"]),
                    "source_updated_at": ts(lead["updated_at"]),
                    "mirrored_at": now,
                }
                for lead in leads
            ],
        )
        opened = now - timedelta(hours=1)
        await s.execute(
            insert(Finding.__table__),
            [
                {
                    "account_id": aid,
                    "rule": rule,
                    "rule_version": 1,
                    "entity_type": "deal",
                    "entity_id": str(lead["id"]),
                    "deal_id": str(lead["id"]),
                    "manager_id": str(lead["responsible_user_id"]),
                    "severity": "warning",
                    "status": "open",
                    "suppressed": False,
                    "times_opened": 1,
                    "opened_at": opened,
                    "started_at": ts(lead["updated_at"] if rule == "stuck_stage" else lead["created_at"]),
                    "created_at": opened,
                    "updated_at": opened,
                }
                for rule in RULES
                for lead in leads
            ],
        )
        findings = (
            await s.execute(
                select(Finding.id, Finding.rule, Finding.deal_id, Finding.manager_id)
                .where(Finding.account_id == aid)
                .order_by(Finding.id)
            )
        ).all()
        # As app.findings.notify writes them: per rule, the tasks of every finding, then the notes.
        rows = [
            {
                "account_id": aid,
                "finding_id": f.id,
                "kind": kind,
                "purpose": "open",
                "dedup_key": f"f{f.id}:open:1:{suffix}",
                "deal_id": f.deal_id,
                "user_id": f.manager_id,
                "ref_id": None,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for rule in RULES
            for kind, suffix in (("create_task", "task"), ("add_note", "note"))
            for f in findings
            if f.rule == rule
        ]
        await s.execute(insert(OutboxAction.__table__), rows[:actions])
    if rt.engine.dialect.name == "postgresql":
        async with rt.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("ANALYZE"))  # what autovacuum would have done by then
    return aid


async def outbox_counts(rt: Runtime, account_id: int) -> dict[str, int]:
    async with rt.reads() as s:
        rows = await s.execute(
            select(OutboxAction.status, func.count())
            .where(OutboxAction.account_id == account_id)
            .group_by(OutboxAction.status)
        )
        return {status: n for status, n in rows}


# --------------------------------------------------------------------------- observation


class Phases:
    """Call-through timers around the worker's steps, and the moment every request left the limiter."""

    TARGETS: tuple[tuple[Any, str, str], ...] = (
        (delivery, "claim", "claim"),
        (delivery, "deliver", "deliver"),
        (notify, "_words", "render"),
        (notify, "_create", "send"),
        (delivery, "_record", "record"),
        (AmoCrmClient, "request", "request"),
        (AccountTokens, "access_token", "token read"),
        (SlidingWindowLimiter, "acquire", "limiter wait"),
    )

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = defaultdict(list)
        self.stamps: list[float] = []  # limiter clock (time.monotonic) of each admitted request
        self.batch_sizes: list[int] = []

    def _timed(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                result = await fn(*args, **kwargs)
            finally:
                self.times[label].append(time.perf_counter() - started)
            if label == "limiter wait":
                self.stamps.append(time.monotonic())  # the limiter's own clock
            elif label == "claim" and result:
                self.batch_sizes.append(len(result))
            return result

        return timed

    @contextlib.contextmanager
    def installed(self) -> Iterator[Phases]:
        originals = [(owner, name, getattr(owner, name)) for owner, name, _ in self.TARGETS]
        try:
            for owner, name, label in self.TARGETS:
                setattr(owner, name, self._timed(label, getattr(owner, name)))
            yield self
        finally:
            for owner, name, fn in originals:
                setattr(owner, name, fn)


def thread_cpu() -> dict[str, float]:
    """CPU seconds used so far by the process and by its threads, grouped (Linux only; else just the process)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out: dict[str, float] = defaultdict(float, {"process": usage.ru_utime + usage.ru_stime})
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    with contextlib.suppress(OSError):
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
                seconds = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
                if int(tid) == os.getpid():
                    out["worker event loop"] += seconds
                elif names.get(int(tid)) == EMULATOR_THREAD:
                    out["emulator thread"] += seconds
                else:
                    out["other threads"] += seconds
    return out


class LogCounter(logging.Handler):
    """Counts WARNING-and-up records by event name (the worker's and the CRM client's)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()
        self.first_error: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[str(record.msg)] += 1
        if record.levelno >= logging.ERROR and self.first_error is None:
            self.first_error = self.format(record)


# --------------------------------------------------------------------------- the run


async def deliver_all(rt: Runtime, account_id: int, limit_s: float, phases: Phases) -> dict[str, Any]:
    stop = asyncio.Event()
    with phases.installed():
        started_at, started = utcnow(), time.monotonic()
        worker = asyncio.create_task(delivery.run_forever(rt, stop))
        stopped, last_sent_count, progressed = "every row left the queue", -1, started
        while True:
            await asyncio.sleep(POLL_S)
            counts = await outbox_counts(rt, account_id)
            now = time.monotonic()
            if counts.get("pending", 0) + counts.get("sending", 0) == 0:
                break
            if counts.get("sent", 0) != last_sent_count:
                last_sent_count, progressed = counts.get("sent", 0), now
            if worker.done():
                stopped = "the worker exited"
                break
            if now - started > limit_s:
                stopped = f"gave up after --timeout {limit_s:g} s"
                break
            if now - progressed > STALL_S:
                stopped = f"gave up: nothing sent for {STALL_S:g} s"
                break
        stop.set()
        rt.outbox_wakeup.set()
        try:
            await asyncio.wait_for(worker, 30)
        except TimeoutError:
            worker.cancel()
    async with rt.reads() as s:
        last_sent = await s.scalar(select(func.max(OutboxAction.sent_at)).where(OutboxAction.account_id == account_id))
        retried = await s.scalar(
            select(func.count()).where(OutboxAction.account_id == account_id, OutboxAction.attempts > 1)
        )
    counts = await outbox_counts(rt, account_id)
    return {
        "counts": counts,
        "retried": retried or 0,
        "started": started,
        "stopped": stopped,
        "seconds": (last_sent - started_at).total_seconds() if last_sent else None,
        "last_sent_mono": started + (last_sent - started_at).total_seconds() if last_sent else None,
    }


async def run(
    url: str, args: argparse.Namespace, state: EmulatorState, base_url: str, leads: list[dict[str, Any]]
) -> dict[str, Any]:
    settings = Settings(
        database_url=url,
        secret_key="bench-secret-key",
        amocrm_rate_per_second=RATE,
        log_level="WARNING",
        log_json=False,
        run_workers=False,
    )
    rt = Runtime.build(settings)
    try:
        started = time.perf_counter()
        account_id = await fill(rt, base_url, leads, args.actions)
        filled = time.perf_counter() - started
        print(
            f"  database filled in {filled:.1f} s: {len(leads):,} deals, {2 * len(leads):,} findings, "
            f"{args.actions:,} pending outbox rows",
            flush=True,
        )
        print("  delivering ...", flush=True)
        phases = Phases()
        cpu_before = thread_cpu()
        result = await deliver_all(rt, account_id, args.timeout, phases)
        result["cpu"] = {name: thread_cpu().get(name, 0.0) - cpu_before.get(name, 0.0) for name in cpu_before}
        limiter = rt.limiters.get("amocrm", account_id, settings.amocrm_rate_per_second)
        result.update(phases=phases, capacity=limiter.capacity, window=limiter.window, account_id=account_id)
        return result
    finally:
        await rt.dispose()


def created_in_emulator(state: EmulatorState) -> tuple[int, int, Counter[int]]:
    """Tasks and notes carrying a crmwatch marker, and how often each row id appears."""
    markers: Counter[int] = Counter()
    tasks = notes = 0
    for task in list(state.tasks.values()):
        found = MARKER.findall(task.get("text") or "")
        tasks += bool(found)
        markers.update(int(m) for m in found)
    for note in list(state.notes.values()):
        found = MARKER.findall((note.get("params") or {}).get("text") or "")
        notes += bool(found)
        markers.update(int(m) for m in found)
    return tasks, notes, markers


# --------------------------------------------------------------------------- the report


def pacing(stamps: list[float], capacity: int, window: float) -> tuple[float, float, int]:
    """How long the requests took against a limiter that is never kept waiting, and the difference.

    A limiter that always has a batch waiting lets `capacity` requests go at once, then each one
    exactly when the request `capacity` places before it leaves the window. Returns that ideal span
    from the first request to the last, the time lost beyond it, and how many requests left later
    than their slot allowed (the pipe stood partly idle: no batch was ready)."""
    ideal = max(0, math.ceil(len(stamps) / capacity) - 1) * window
    late = sum(1 for i, s in enumerate(stamps) if i >= capacity and s - (stamps[i - capacity] + window) > 0.005)
    return ideal, (stamps[-1] - stamps[0]) - ideal, late


def report(args: argparse.Namespace, result: dict[str, Any], state: EmulatorState, log_counter: LogCounter) -> bool:
    """Prints the figures; False when not every row was sent (then there is no throughput to speak of)."""
    counts, seconds = result["counts"], result["seconds"]
    sent = counts.get("sent", 0)
    rate = sent / seconds if seconds else 0.0
    ratio = rate / CEILING
    tasks, notes, markers = created_in_emulator(state)
    created = sum(markers.values())
    duplicates = sum(n - 1 for n in markers.values() if n > 1)
    all_sent = sent == args.actions
    no_duplicates = created == args.actions and duplicates == 0 and len(markers) == args.actions

    print("\nresults")
    print(
        f"  actions sent                    {sent:>10,} of {args.actions:,}"
        + ("" if all_sent else f"   ! {result['stopped']}; outbox by status: {counts}")
    )
    print(f"  seconds (start to last sent)    {seconds or float('nan'):>10.2f}")
    print(f"  actions/s achieved              {rate:>10.1f}")
    print(f"  ceiling (7 req/s x 50 items)    {CEILING:>10.1f}")
    print(f"  achieved / ceiling              {ratio:>10.3f}")
    print(f"  emulator 429 answers            {state.rejected_429:>10,}")
    print(
        f"  created in the emulator         {created:>10,}   (tasks {tasks:,}, notes {notes:,}; "
        f"distinct rows {len(markers):,}, duplicates {duplicates:,}): {'OK' if no_duplicates else 'MISMATCH'}"
    )
    print(f"  outbox rows tried more than once {result['retried']:>9,}")
    if log_counter.counts:
        print(f"  crmwatch log (WARNING and up)   {dict(log_counter.counts)}")
    if log_counter.first_error:
        print(f"  first error: {log_counter.first_error}")

    phases: Phases = result["phases"]
    times = phases.times
    stamps = sorted(phases.stamps)
    print("\nwhere the time went")
    if len(stamps) > result["capacity"]:
        n = len(stamps)
        per_request = sent / n if n else 0.0
        capacity, window = result["capacity"], result["window"]
        ideal, lost, late = pacing(stamps, capacity, window)
        tail = result["last_sent_mono"] - stamps[-1] if result["last_sent_mono"] else float("nan")
        sizes = phases.batch_sizes
        print(
            f"  requests                        {n:>10,}   ({per_request:.1f} items each; {len(sizes)} batches "
            f"claimed, {statistics.mean(sizes) if sizes else 0:.1f} rows on average)"
        )
        print(
            f"  limiter                         {capacity} per {window:.2f} s = {capacity / window:.2f} req/s "
            f"= {capacity / window * delivery.BATCH:.0f} actions/s at most "
            f"({capacity / window / RATE:.3f} of the ceiling)"
        )
        print(f"  first request after start       {stamps[0] - result['started']:>10.3f} s")
        print(
            f"  first to last request           {stamps[-1] - stamps[0]:>10.2f} s   "
            f"(a limiter never kept waiting: {ideal:.2f} s for {n} requests)"
        )
        print(
            f"  pipe idle (no batch ready)      {lost:>10.2f} s   ({late} of {max(0, n - capacity)} requests "
            f"left after their slot had freed)"
        )
        print(f"  last request to last sent       {tail:>10.3f} s")
    print(f"  {'per call, ms':<30}{'calls':>7}{'mean':>9}{'p50':>9}{'p95':>9}{'max':>9}{'total s':>9}")
    for label in ("claim", "render", "send", "token read", "limiter wait", "request", "record", "deliver"):
        values = times.get(label) or []
        if not values:
            continue
        ordered = sorted(values)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        print(
            f"  {label:<30}{len(values):>7}{statistics.mean(values) * 1000:>9.1f}"
            f"{statistics.median(values) * 1000:>9.1f}{p95 * 1000:>9.1f}{max(values) * 1000:>9.1f}"
            f"{sum(values):>9.2f}"
        )
    if times.get("request"):
        http = sum(times["request"]) - sum(times.get("limiter wait", [])) - sum(times.get("token read", []))
        print(f"  {'HTTP round trips (request - wait - token)':<44}{http / len(times['request']) * 1000:>9.1f} ms mean")
    print(f"  lanes per round (IN_FLIGHT)     {delivery.IN_FLIGHT:>10}")
    cpu = result.get("cpu") or {}
    if seconds and cpu:
        parts = ", ".join(
            f"{name} {cpu[name]:.1f} s"
            for name in ("worker event loop", "emulator thread", "other threads")
            if name in cpu
        )
        print(
            f"  CPU while delivering            {cpu['process']:>10.1f} s   ({cpu['process'] / seconds:.0%} of one "
            f"core{'; ' + parts if parts else ''})"
        )

    print("\ngoal")
    print(
        f"  achieved / ceiling >= {GOAL_RATIO}: {'MET' if ratio >= GOAL_RATIO and all_sent else 'NOT MET'} "
        f"({ratio:.3f}); every row sent once: {'yes' if all_sent and no_duplicates else 'NO'}"
    )
    return all_sent


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    leads_needed = math.ceil(args.actions / (2 * len(RULES)))  # each lead: two findings, a task and a note each
    log_counter = LogCounter()
    root = logging.getLogger()
    root.handlers[:] = [log_counter]
    root.setLevel(logging.WARNING)

    shown = args.database if args.database == "sqlite" else make_url(args.database).render_as_string()
    print(
        f"crmwatch push-back benchmark: {args.actions:,} actions, database {shown}, "
        f"emulator limit {RATE} req/s enforced"
    )
    with contextlib.suppress(OSError):
        print(f"  load average before the run: {os.getloadavg()[0]:.2f}")
    state, leads = seed_emulator(leads_needed, int(time.time()))
    emulator = EmulatorServer(state)
    with tempfile.TemporaryDirectory(prefix="crmwatch-pushback-") as tmp:
        url, admin = database_url(args.database, Path(tmp))
        try:
            emulator.start()
            print(f"  emulator listening on port {emulator.port}: {len(state.leads):,} leads, {len(state.users)} users")
            if admin is not None:
                asyncio.run(admin_execute(admin, f'CREATE DATABASE "{make_url(url).database}"'))
            started = time.perf_counter()
            upgrade(url)  # outside any event loop: Alembic's env.py runs its own
            print(f"  migrated in {time.perf_counter() - started:.1f} s")
            result = asyncio.run(run(url, args, state, emulator.base_url, leads))
        except Exception as exc:
            print(f"benchmark failed: {exc!r}", file=sys.stderr)
            return 2
        finally:
            emulator.stop()
            if admin is not None:
                asyncio.run(admin_execute(admin, f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
                print(f"  dropped database {make_url(url).database}")
    return 0 if report(args, result, state, log_counter) else 2


if __name__ == "__main__":
    sys.exit(main())
