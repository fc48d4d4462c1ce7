"""What runs with time alone, on the scheduler's leader.

- The tick (tick_due, every `due_tick_seconds`, 15 by default): the deals whose moment has come
  (app/findings/due.py: a task fell due, a grace period or a stage's limit ran out, a look-back
  window or a snooze ended) are re-evaluated, found through an index, so a finding opens within
  seconds of its deadline and the tick's cost follows how many deals are due, not the account.
- The sweep (sweep_due): the whole account, as a reconciliation, nightly at the rules document's
  `sweep_at` (local time), and at the next scheduler round after the settings change, the
  account is resumed or re-synced (next_sweep_at cleared), or on POST /api/accounts/{id}/sweep.
  It finds nothing the ticks missed (tests/app/rules/test_ticks.py).
- Escalations and reminders (remind_due, every `sweep_interval_minutes`): they come due on open
  findings, not on the mirror, so they are looked for over the account's open findings.

APScheduler drives these every few seconds; the sweep schedule lives in the database, so a
restart neither loses nor doubles it. On PostgreSQL several instances may run: only the one
holding an advisory lock schedules, and the others take over when its connection drops. A double
sweep or tick would be harmless anyway (dedup key).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.accounts.models import Account
from app.calls import stats as call_stats
from app.db import utcnow
from app.rules import config as rules_config
from app.runtime import Runtime

from . import due, evaluation

log = logging.getLogger(__name__)

# pg_advisory_lock takes a bigint; any constant works as long as every instance uses the same.
SCHEDULER_LOCK_KEY = 0x6372_6D77_6174_6368 & 0x7FFF_FFFF_FFFF_FFFF  # "crmwatch"


async def sweep_account(
    rt: Runtime, account_id: int, now: datetime | None = None, actor: str = "sweep"
) -> evaluation.EvaluationResult:
    now = now or utcnow()
    async with rt.sessions() as s, s.begin():
        result = await evaluation.evaluate(s, account_id, now=now, actor=actor)
        doc = await rules_config.load(s, account_id)
        timezone = await s.scalar(select(Account.timezone).where(Account.id == account_id))
        await s.execute(
            update(Account)
            .where(Account.id == account_id)
            .values(last_sweep_at=now, next_sweep_at=next_nightly(now, doc.sweep_at, timezone or "UTC"))
        )
    _next_remind[account_id] = now + timedelta(minutes=doc.sweep_interval_minutes)  # the sweep reminded
    if result.enqueued:
        rt.outbox_wakeup.set()
    try:
        async with rt.sessions() as s, s.begin():
            await call_stats.refresh_day(s, account_id, now)
    except Exception:
        # Derived figures: the next sweep recomputes them.
        log.exception("sweep.call_stats_failed", extra={"account_id": account_id})
    log.info(
        "sweep.done",
        extra={
            "account_id": account_id,
            "opened": result.opened,
            "resolved": result.resolved,
            "expired": result.expired,
            "open": result.open,
        },
    )
    return result


async def sweep_due(rt: Runtime, now: datetime | None = None) -> int:
    """Sweeps every account whose turn has come; returns how many."""
    now = now or utcnow()
    async with rt.reads() as s:
        due = list(
            await s.scalars(
                select(Account.id)
                .where(Account.paused.is_(False), or_(Account.next_sweep_at.is_(None), Account.next_sweep_at <= now))
                .order_by(Account.id)
            )
        )
    for account_id in due:
        try:
            await sweep_account(rt, account_id, now)
        except Exception:
            # One account's bad data must not stop the others' sweeps.
            log.exception("sweep.failed", extra={"account_id": account_id})
    return len(due)


def next_nightly(now: datetime, at: time, timezone: str) -> datetime:
    """The next local `at` strictly after `now`, in UTC (a DST gap moves it, never skips a night)."""
    zone = ZoneInfo(timezone)
    local = now.astimezone(zone)
    for days in range(3):
        candidate = datetime.combine(local.date() + timedelta(days=days), at, tzinfo=zone).astimezone(UTC)
        if candidate > now:
            return candidate
    return now + timedelta(days=1)


# Deals re-evaluated per statement batch in a tick, and batches per account per tick: a backlog
# of due deals (after a sweep's earlier bounds, or a long stop) is worked off over a few ticks.
TICK_BATCH = 1000
TICK_ROUNDS = 20
# A batch also takes a few more deals (a tenth of it) rather than leave them to a round of
# their own: each round pays an evaluation's fixed cost, some fifteen statements, whatever its
# deals (a thousand and four due deals at 1M made a round of four that cost tens of ms).
TICK_SLACK = 0.1


async def tick_account(rt: Runtime, account_id: int, now: datetime, batch: int = TICK_BATCH) -> int:
    """Re-evaluates the account's deals whose moment has come; returns how many."""
    done = 0
    most = batch + int(batch * TICK_SLACK)
    for _ in range(TICK_ROUNDS):
        async with rt.sessions() as s, s.begin():
            # One deal more than a round may take says whether another round has work: without
            # it, a tick with exactly a batch due opened a transaction more to find nothing.
            deal_ids = await due.due_deals(s, account_id, now, most + 1)
            more = len(deal_ids) > most
            if more:
                deal_ids = deal_ids[:batch]
            if not deal_ids:
                break
            result = await evaluation.evaluate(s, account_id, deal_ids=deal_ids, now=now, actor="tick")
        done += len(deal_ids)
        if result.enqueued:
            rt.outbox_wakeup.set()
        if not more:
            break
    return done


async def tick_due(rt: Runtime, now: datetime | None = None) -> int:
    """One tick over every active account; returns how many deals were re-evaluated."""
    now = now or utcnow()
    async with rt.reads() as s:
        accounts = list(await s.scalars(select(Account.id).where(Account.paused.is_(False)).order_by(Account.id)))
    done = 0
    for account_id in accounts:
        try:
            done += await tick_account(rt, account_id, now)
        except Exception:
            log.exception("tick.failed", extra={"account_id": account_id})
    return done


# Per account, when this process (the leader) next looks for escalations and reminders; a new
# leader looks at once.
_next_remind: dict[int, datetime] = {}


async def remind_due(rt: Runtime, now: datetime | None = None) -> int:
    """Escalations and reminders of the accounts whose turn has come; returns how many were queued."""
    now = now or utcnow()
    async with rt.reads() as s:
        accounts = list(await s.scalars(select(Account.id).where(Account.paused.is_(False)).order_by(Account.id)))
    queued = 0
    for account_id in accounts:
        if _next_remind.get(account_id, now) > now:
            continue
        try:
            async with rt.sessions() as s, s.begin():
                added, every = await evaluation.remind(s, account_id, now)
            _next_remind[account_id] = now + timedelta(minutes=every)
            queued += added
        except Exception:
            log.exception("remind.failed", extra={"account_id": account_id})
    if queued:
        rt.outbox_wakeup.set()
    return queued


# Another periodic job the leader runs (app/workers.py lists them): (name, every N seconds, job).
PeriodicJob = tuple[str, float, Callable[[Runtime], Awaitable[Any]]]


class SweepScheduler:
    def __init__(self, rt: Runtime, tick_seconds: float = 15.0, periodic: Sequence[PeriodicJob] = ()) -> None:
        self.rt = rt
        self.tick_seconds = tick_seconds
        self.periodic = list(periodic)
        self._scheduler = AsyncIOScheduler(timezone="UTC")
        self._lock_conn: AsyncConnection | None = None
        self._leading = asyncio.Lock()  # jobs run concurrently; one of them takes the lock

    async def _lead(self) -> bool:
        async with self._leading:
            return await self._take_lead()

    async def _take_lead(self) -> bool:
        """Holds (or tries to take) the PostgreSQL advisory lock; SQLite is one process, always leader."""
        if self.rt.engine.dialect.name != "postgresql":
            return True
        if self._lock_conn is not None:
            try:
                await self._lock_conn.execute(text("SELECT 1"))
                return True
            except Exception:
                log.warning("scheduler.lost_lock")
                await self._drop_lock_conn()
        conn = await self.rt.engine.connect()
        got = (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": SCHEDULER_LOCK_KEY})).scalar()
        await conn.commit()  # the lock is session-level: it outlives this transaction
        if got:
            self._lock_conn = conn
            log.info("scheduler.leader")
            return True
        await conn.close()
        return False

    async def _drop_lock_conn(self) -> None:
        """Gives the leadership up. The lock belongs to the database session, and a closed pooled
        connection keeps its session alive: unlock, then discard the connection from the pool."""
        conn, self._lock_conn = self._lock_conn, None
        if conn is None:
            return
        try:
            await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": SCHEDULER_LOCK_KEY})
        except Exception:
            log.debug("scheduler.unlock_failed")
        try:
            await conn.invalidate()
            await conn.close()
        except Exception:
            log.debug("scheduler.lock_close_failed")

    async def tick(self) -> None:
        if self.rt.intake_busy():
            return  # a webhook burst has the database; the next tick sweeps
        try:
            if await self._lead():
                await sweep_due(self.rt)
                await remind_due(self.rt)
        except Exception:
            log.exception("scheduler.tick_failed")

    async def run_job(self, name: str, job: Callable[[Runtime], Awaitable[Any]]) -> None:
        if self.rt.intake_busy():
            return  # as for the sweeps: the next run does it
        try:
            if await self._lead():
                await job(self.rt)
        except Exception:
            log.exception("scheduler.job_failed", extra={"job": name})

    def start(self) -> None:
        self._scheduler.add_job(
            self.tick,
            "interval",
            seconds=self.tick_seconds,
            id="sweeps",
            max_instances=1,
            coalesce=True,
            next_run_time=utcnow(),
        )
        for name, every, job in self.periodic:
            self._scheduler.add_job(
                self.run_job,
                "interval",
                args=(name, job),
                seconds=every,
                id=name,
                max_instances=1,
                coalesce=True,
                # Not in the first busy seconds after a start: the sweeps and the catch-up go first.
                next_run_time=utcnow() + timedelta(seconds=min(every, 60.0)),
            )
        self._scheduler.start()

    async def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        await self._drop_lock_conn()
