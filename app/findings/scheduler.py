"""Periodic sweeps. Every account is swept every `sweep_interval_minutes` (its rules document,
5 by default), so time-based rules (overdue, stuck) fire without any new event arriving.

APScheduler ticks every few seconds and sweeps the accounts whose next_sweep_at has passed;
the schedule lives in the database, so a restart neither loses nor doubles it. On PostgreSQL
several instances may run: only the one holding an advisory lock schedules, and the others
take over when its connection drops. A double sweep would be harmless anyway (dedup key).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.accounts.models import Account
from app.calls import stats as call_stats
from app.db import utcnow
from app.rules import config as rules_config
from app.runtime import Runtime

from . import evaluation

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
        await s.execute(
            update(Account)
            .where(Account.id == account_id)
            .values(last_sweep_at=now, next_sweep_at=now + timedelta(minutes=doc.sweep_interval_minutes))
        )
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
