"""The inbox worker: raw deliveries → domain events → mirror, then the steps of pipeline.py.

A batch is claimed by account (claim below): on PostgreSQL a worker holds a transaction-scoped
advisory lock on each account it takes, so several workers (in one process or several) share
the inbox without ever applying events of the same account, hence of the same deal, at once;
the rows themselves are claimed with SKIP LOCKED. Accounts with the fewest waiting rows are taken
first and rows are interleaved account by account, so one busy account never starves another.

The batch is applied set-based: all its rows are parsed, and each account's events go through
one mirror writer that reads every record they name in one statement per entity type and writes
them back in the session's flush (multi-row statements). If that fails, the batch is applied
again row by row, each row in its own savepoint: a row that fails is retried later with backoff
and, after inbox_max_attempts, parked as "failed" for inspection while the rest goes on.
Nothing is deleted, so a bug fix can replay a parked row.

Once the batch commits, the rules run once per account over the deals it touched, beside the
next batch's apply (Evaluations: one evaluation at a time per account, deals merged). What needs
the CRM (records a webhook only named, thin deals, phone searches) follows asynchronously
(FollowUps), so a slow or dead CRM never holds the next batch back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.calls.service import mirror_writer
from app.db import is_postgres, utcnow
from app.findings import due
from app.metrics import INBOX_APPLY_SECONDS, INBOX_PENDING
from app.runtime import BUSY_WINDOW_S, Runtime
from integrations.base import CredentialsIssued, DomainEvent, RecordNamed
from integrations.registry import TELEPHONY_SOURCE

from . import inbox, pipeline
from .models import InboxEvent

log = logging.getLogger(__name__)

# How long a row waits for the records it names to be read before another pass takes it again.
FETCH_LEASE = timedelta(minutes=2)
# pg_try_advisory_xact_lock(ACCOUNT_LOCK_CLASS, account id): "this worker applies this account".
ACCOUNT_LOCK_CLASS = 0x1B0C
# A batch spreads over at least this many accounts when that many have rows waiting, so that
# every busy account moves on, not only the one with the fewest rows.
MIN_ACCOUNTS_PER_BATCH = 4
# SQLite has one writer: a webhook arriving mid-batch waits for the batch to commit.
SQLITE_BATCH = 500
# Accounts evaluated at the same time beside the batches (Evaluations). bench/apply.py with two
# apply loops, findings current after a 20k burst: 1 slot 23-24 s (the apply starves nothing, the
# evaluation trails by 10 s), 2 slots 19-20.5 s, 4 slots 21-23 s (the evaluations slow the apply).
EVALUATION_SLOTS = 2
# A batch's deals are marked due this long after it commits (app/findings/due.py), in its own
# transaction: if the process dies before their evaluation, the tick evaluates them then. The
# evaluation, seconds after the batch, replaces the mark with the deal's real moment.
EVALUATION_FALLBACK = timedelta(minutes=2)


# -- claiming ---------------------------------------------------------------------------------


async def claim(s: AsyncSession, limit: int, now: datetime) -> list[inbox.Claimed]:
    """Up to `limit` due rows of accounts no other worker holds, in arrival order per account.

    Accounts are taken fewest waiting rows first, until their rows fill the batch (and at least
    MIN_ACCOUNTS_PER_BATCH accounts when there are); the rows are then taken round-robin across
    them (each account's 1st row, then each one's 2nd, …), so a burst of 20,000 events of one
    account leaves room in the very next batch for the 10 of another. The rows come as plain
    values (inbox.Claimed); inbox.write_back stores what the batch changed in them."""
    due = and_(InboxEvent.status == "pending", InboxEvent.next_attempt_at <= now)
    waiting = (
        await s.execute(select(InboxEvent.account_id, func.count()).where(due).group_by(InboxEvent.account_id))
    ).all()
    postgres = is_postgres(s)
    chosen: list[int] = []
    total = 0
    for account_id, n in sorted(waiting, key=lambda r: (r[1], r[0])):
        if total >= limit and len(chosen) >= MIN_ACCOUNTS_PER_BATCH:
            break
        if postgres and not await s.scalar(select(func.pg_try_advisory_xact_lock(ACCOUNT_LOCK_CLASS, account_id))):
            continue  # another worker is applying this account
        chosen.append(account_id)
        total += n
    if not chosen:
        return []
    turn = func.row_number().over(partition_by=InboxEvent.account_id, order_by=InboxEvent.id).label("turn")
    ranked = select(InboxEvent.id, turn).where(due, InboxEvent.account_id.in_(chosen)).subquery()
    ids = select(ranked.c.id).where(ranked.c.turn <= limit).order_by(ranked.c.turn, ranked.c.id).limit(limit)
    query = select(*inbox.Claimed.COLUMNS).where(InboxEvent.id.in_(ids.scalar_subquery())).order_by(InboxEvent.id)
    if postgres:
        # Rows a follow-up holds (apply_named) are left alone.
        query = query.with_for_update(skip_locked=True)
    return [inbox.Claimed(row) for row in await s.execute(query)]


# -- applying ---------------------------------------------------------------------------------


@dataclass
class _Batch:
    """A claimed batch: its rows parsed, and what applying them left to do."""

    rows: list[inbox.Claimed]
    accounts: dict[int, Account | None]
    events: dict[int, list[DomainEvent]] = field(default_factory=dict)  # row id → events (parsed)
    done: list[tuple[inbox.Claimed, int]] = field(default_factory=list)  # (row, ignored events)

    def region(self, row: inbox.Claimed) -> str:
        account = self.accounts.get(row.account_id)
        return account.region if account is not None else "RU"


async def _defer_or_learn(
    rt: Runtime, s: AsyncSession, batch: _Batch, row: inbox.Claimed, touched: pipeline.Touched, now: datetime
) -> bool:
    """A CRM row's part before the mirror: True when its events only name records (it waits for
    the named-records step under a lease); otherwise what it teaches about its account."""
    events = batch.events[row.id]
    if row.source.startswith(TELEPHONY_SOURCE):
        return False
    if any(isinstance(ev, RecordNamed) for ev in events):
        named = touched.named[row.account_id]
        named.rows[row.id] = events
        named.region = batch.region(row)
        row.next_attempt_at = now + FETCH_LEASE
        return True
    account = batch.accounts.get(row.account_id)
    if account is not None:
        if any(isinstance(ev, CredentialsIssued) for ev in events):
            touched.installed.add(account.id)
        await inbox.account_facts(rt, s, account, rt.crm_adapter(row.source), row, events)
    return False


def _collect(touched: pipeline.Touched, account_id: int, result) -> None:
    if result.thin_deals:
        touched.thin[account_id] |= result.thin_deals
    if result.touched_deals:
        touched.deals[account_id] |= result.touched_deals
    if result.calls:
        touched.calls[account_id] |= result.calls


async def _apply_set(rt: Runtime, s: AsyncSession, batch: _Batch, now: datetime) -> pipeline.Touched:
    """Every parsed row at once: per account, one writer over all its events in row order."""
    touched = pipeline.Touched()
    by_account: dict[int, list[inbox.Claimed]] = defaultdict(list)
    for row in batch.rows:
        if row.id in batch.events:
            by_account[row.account_id].append(row)
    for account_id, rows in by_account.items():
        writer = mirror_writer(s, account_id)
        events: list[DomainEvent] = []
        applied: list[inbox.Claimed] = []
        for row in rows:
            if not await _defer_or_learn(rt, s, batch, row, touched, now):
                events.extend(batch.events[row.id])
                applied.append(row)
        _collect(touched, account_id, await writer.apply_batch(events))
        batch.done.extend((row, writer.unhandled(batch.events[row.id])) for row in applied)
    await s.flush()  # here, so that a failing write falls back to row by row
    return touched


async def _apply_each(rt: Runtime, s: AsyncSession, batch: _Batch, now: datetime) -> pipeline.Touched:
    """Row by row, each in its own savepoint: the fallback that isolates a failing row."""
    touched = pipeline.Touched()
    batch.done.clear()
    for row in batch.rows:
        if row.id not in batch.events:
            continue
        try:
            async with s.begin_nested():
                if await _defer_or_learn(rt, s, batch, row, touched, now):
                    continue
                result = await mirror_writer(s, row.account_id).apply(batch.events[row.id])
        except Exception as exc:
            inbox.failed(rt, row, exc, now)
            continue
        batch.done.append((row, result.ignored))
        _collect(touched, row.account_id, result)
    return touched


async def process_batch(
    rt: Runtime,
    limit: int | None = None,
    followups: FollowUps | None = None,
    evaluations: Evaluations | None = None,
) -> int:
    """Processes up to `limit` (default inbox_batch_size) due rows; returns how many it took.

    The rows are applied in one transaction; then the rules run over the deals they touched.
    The other steps of pipeline.py (what needs the CRM) run next, inline, or handed to
    `followups` to run beside the next batches; the re-evaluation likewise, inline or handed to
    `evaluations` (only once the batch has committed, so it sees the batch's writes). A row
    whose events only name records (RecordNamed) is applied in such a step: the records are
    read through the CRM API with no transaction open, while the row stays pending under a
    lease (next_attempt_at moved ahead). If the read fails or the process dies, the lease runs
    out and the row is taken again: nothing is lost, and applying it twice changes nothing."""
    now = utcnow()
    started = time.perf_counter()
    async with rt.sessions() as s, s.begin():
        size = limit or rt.settings.inbox_batch_size
        if not is_postgres(s):
            size = min(size, SQLITE_BATCH)
        rows = await claim(s, size, now)
        if not rows:
            return 0
        ids = sorted({row.account_id for row in rows})
        found = {a.id: a for a in await s.scalars(select(Account).where(Account.id.in_(ids)))}
        batch = _Batch(rows, {i: found.get(i) for i in ids})
        for row in rows:
            try:
                batch.events[row.id] = inbox.parse(rt, row, batch.region(row))
            except Exception as exc:  # a body no parser takes: this row alone
                inbox.failed(rt, row, exc, now)
        try:
            async with s.begin_nested():
                touched = await _apply_set(rt, s, batch, now)
        except Exception as exc:
            log.warning(
                "inbox.batch_fallback",
                extra={"rows": len(rows), "error": f"{type(exc).__name__}: {exc}"},
                exc_info=True,
            )
            touched = await _apply_each(rt, s, batch, now)
        for account_id, deal_ids in touched.deals.items():
            await due.schedule(s, account_id, deal_ids, now + EVALUATION_FALLBACK)
        for row, ignored in batch.done:
            inbox.done(row, batch.events[row.id], ignored)
        await inbox.write_back(s, rows)
    INBOX_APPLY_SECONDS.observe(time.perf_counter() - started)
    # The batch's own deals are evaluated at once; what needs the CRM comes after.
    if evaluations is None:
        await pipeline.reevaluate_touched(rt, touched)
    else:
        evaluations.submit(touched.deals)
    rest = touched.follow_ups()
    if rest is not None:
        if followups is None:
            await pipeline.run(rt, rest)
        else:
            followups.submit(rest)
    return len(rows)


class Evaluations:
    """The rules re-evaluation of committed batches, run beside the next batches' apply.

    Per account, the deals waiting are one set: what batches and follow-ups submit while the
    account waits or is being evaluated is merged, and evaluated once, next. An account has at
    most one evaluation running (its own task), so the same deals are never evaluated twice at
    once, and at most `slots` accounts are evaluated at the same time (PostgreSQL has the same
    few cores as the worker). Accounts take the slots in turn (the semaphore is FIFO): a busy
    account's next evaluation queues behind the others', so it never starves a small one.

    If the process dies with deals waiting, nothing is lost: each batch marked its deals due in
    its own transaction (EVALUATION_FALLBACK), so the scheduler's tick evaluates them."""

    def __init__(self, rt: Runtime, slots: int | None = None) -> None:
        self.rt = rt
        self.waiting: dict[int, set[str]] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.slots = asyncio.Semaphore(slots or EVALUATION_SLOTS)

    def submit(self, deals: dict[int, set[str]]) -> None:
        for account_id, ids in deals.items():
            if not ids:
                continue
            self.waiting.setdefault(account_id, set()).update(ids)
            if account_id not in self.tasks:
                self.tasks[account_id] = asyncio.create_task(self._run(account_id), name=f"evaluate-{account_id}")

    async def _run(self, account_id: int) -> None:
        try:
            while True:
                async with self.slots:
                    # Taken only once a slot is free: what arrived meanwhile is evaluated with it.
                    ids = self.waiting.pop(account_id, None)
                    if not ids:
                        return
                    await pipeline.reevaluate(self.rt, account_id, sorted(ids))
        finally:
            # In the same step as the last pop: a submit after it starts a new task.
            self.tasks.pop(account_id, None)

    def busy(self) -> bool:
        return bool(self.tasks)

    async def idle(self) -> None:
        """Until nothing waits or runs (what is submitted meanwhile included)."""
        while self.tasks:
            await asyncio.wait(set(self.tasks.values()))

    async def close(self, grace: float) -> None:
        """Lets what waits be evaluated for up to `grace` seconds, then gives it up (the next
        sweep evaluates those accounts)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.idle(), grace)
        for task in list(self.tasks.values()):
            task.cancel()
        for task in list(self.tasks.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class FollowUps:
    """The pipeline's CRM steps of past batches, run one after another beside the batches.
    What is submitted while one runs is merged and runs next (a backlog never grows per batch).
    With `evaluations`, the deals they touch are evaluated there, merged with the batches' own."""

    def __init__(self, rt: Runtime, evaluations: Evaluations | None = None) -> None:
        self.rt = rt
        self.evaluations = evaluations
        self.waiting: pipeline.Touched | None = None
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def submit(self, touched: pipeline.Touched) -> None:
        if self.waiting is None:
            self.waiting = touched
        else:
            self.waiting.merge(touched)
        self.wakeup.set()
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run(), name="inbox-followups")

    async def _run(self) -> None:
        while self.waiting is not None:
            touched, self.waiting = self.waiting, None
            try:
                await pipeline.run(self.rt, touched, self.evaluations.submit if self.evaluations is not None else None)
            except Exception:
                log.exception("inbox.followup_error")

    async def close(self, grace: float) -> None:
        """Lets the running step end (its CRM waits end at stop), then gives up on the rest:
        leased rows come back by themselves, thin deals with the next sync."""
        if self.task is None:
            return
        await asyncio.wait({self.task}, timeout=grace)
        if not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task


async def pending_count(rt: Runtime) -> int:
    async with rt.reads() as s:
        return await s.scalar(select(func.count()).select_from(InboxEvent).where(InboxEvent.status == "pending")) or 0


async def drain(rt: Runtime, max_batches: int = 1000, loops: int = 1) -> int:
    """Processes until nothing is due (tests, demo, shutdown); with `loops` batches at once."""

    async def one_loop() -> int:
        total = 0
        for _ in range(max_batches):
            n = await process_batch(rt)
            total += n
            if n == 0:
                break
        return total

    return sum(await asyncio.gather(*(one_loop() for _ in range(loops))))


def apply_loops(rt: Runtime) -> int:
    """How many batches one worker process applies at once: on PostgreSQL settings.inbox_loops,
    each on accounts the others do not hold (claim's advisory locks); SQLite has one writer."""
    return rt.settings.inbox_loops if rt.engine.dialect.name == "postgresql" else 1


# A burst of webhooks must be answered fast (amoCRM gives up on a hook that answers slowly),
# and on SQLite every worker transaction makes intake wait for the one write lock. So while
# webhooks keep arriving (Runtime.intake_busy) the worker stands back and the inbox absorbs the
# burst, unless its oldest row has waited MAX_DEFER_S: then it takes small batches, resting between them.
MAX_DEFER_S = 30.0
BUSY_BATCH = 5
BUSY_REST_FACTOR = 3.0
# After stop, how long the follow-up running may take to end its step.
FOLLOWUP_STOP_S = 1.0
# After stop, how long the re-evaluations waiting may take (database work only, no CRM wait).
EVALUATION_STOP_S = 3.0


async def _oldest_pending_age(rt: Runtime) -> float:
    async with rt.reads() as s:
        oldest = await s.scalar(select(func.min(InboxEvent.received_at)).where(InboxEvent.status == "pending"))
    return (utcnow() - oldest).total_seconds() if oldest else 0.0


async def run_forever(rt: Runtime, stop: asyncio.Event) -> None:
    evaluations = Evaluations(rt)
    followups = FollowUps(rt, evaluations)
    try:
        # A batch spends most of its time waiting for the database: while one loop waits, another
        # applies other accounts' rows (the evaluations and follow-ups are shared, per account).
        await asyncio.gather(*(_apply_loop(rt, stop, followups, evaluations) for _ in range(apply_loops(rt))))
    finally:
        await followups.close(FOLLOWUP_STOP_S)
        await evaluations.close(EVALUATION_STOP_S)


async def _apply_loop(rt: Runtime, stop: asyncio.Event, followups: FollowUps, evaluations: Evaluations) -> None:
    while not stop.is_set():
        busy = rt.intake_busy()
        if busy and await _oldest_pending_age(rt) < MAX_DEFER_S:
            await asyncio.sleep(BUSY_WINDOW_S)
            continue
        started = time.monotonic()
        try:
            n = await process_batch(rt, BUSY_BATCH if busy else None, followups, evaluations)
            if n == 0:
                INBOX_PENDING.set(await pending_count(rt))
        except Exception:
            log.exception("inbox.worker_error")
            n = 0
        if n and busy:
            await asyncio.sleep((time.monotonic() - started) * BUSY_REST_FACTOR)
        if n == 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(rt.inbox_wakeup.wait(), rt.settings.inbox_poll_seconds)
            rt.inbox_wakeup.clear()
