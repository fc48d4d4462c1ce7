"""The inbox worker: raw deliveries → domain events → mirror, then the steps of pipeline.py.

Rows are claimed in arrival order (with SKIP LOCKED on PostgreSQL, so several workers can
share the inbox). Each row is applied in its own savepoint: a row that fails is retried
later with backoff and, after inbox_max_attempts, parked as "failed" for inspection while
the rest of the batch goes on. Nothing is deleted, so a bug fix can replay a parked row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta

from sqlalchemy import func, select

from app.accounts.models import Account
from app.calls.service import mirror_writer
from app.db import is_postgres, utcnow
from app.metrics import INBOX_PENDING
from app.runtime import BUSY_WINDOW_S, Runtime
from integrations.base import CredentialsIssued, RecordNamed
from integrations.registry import TELEPHONY_SOURCE

from . import inbox, pipeline
from .models import InboxEvent

log = logging.getLogger(__name__)

# How long a row waits for the records it names to be read before another pass takes it again.
FETCH_LEASE = timedelta(minutes=2)


async def process_batch(rt: Runtime, limit: int | None = None) -> int:
    """Processes up to `limit` (default inbox_batch_size) due rows; returns how many it took.

    The rows are applied in one transaction; then the steps of pipeline.py run on what they
    touched. A row whose events only name records (RecordNamed) is applied in such a step: the
    records are read through the CRM API with no transaction open, while the row stays pending
    under a lease (next_attempt_at moved ahead). If the read fails or the process dies, the lease
    runs out and the row is taken again: nothing is lost, and applying it twice changes nothing."""
    touched = pipeline.Touched()
    now = utcnow()
    async with rt.sessions() as s, s.begin():
        query = (
            select(InboxEvent)
            .where(InboxEvent.status == "pending", InboxEvent.next_attempt_at <= now)
            .order_by(InboxEvent.id)
            .limit(limit or rt.settings.inbox_batch_size)
        )
        if is_postgres(s):
            query = query.with_for_update(skip_locked=True)
        rows = list(await s.scalars(query))
        accounts: dict[int, Account | None] = {}
        for row in rows:
            if row.account_id not in accounts:
                accounts[row.account_id] = await s.get(Account, row.account_id)
            account = accounts[row.account_id]
            region = account.region if account is not None else "RU"
            try:
                async with s.begin_nested():
                    events = inbox.parse(rt, row, region)
                    if not row.source.startswith(TELEPHONY_SOURCE):
                        if any(isinstance(ev, RecordNamed) for ev in events):
                            named = touched.named[row.account_id]
                            named.rows[row.id] = events
                            named.region = region
                            row.next_attempt_at = now + FETCH_LEASE
                            continue
                        if account is not None:
                            if any(isinstance(ev, CredentialsIssued) for ev in events):
                                touched.installed.add(account.id)
                            await inbox.account_facts(rt, s, account, rt.crm_adapter(row.source), row, events)
                    result = await mirror_writer(s, row.account_id).apply(events)
            except Exception as exc:
                inbox.failed(rt, row, exc, now)
                continue
            inbox.done(row, events, result.ignored)
            if result.thin_deals:
                touched.thin[row.account_id] |= result.thin_deals
            if result.touched_deals:
                touched.deals[row.account_id] |= result.touched_deals
            if result.calls:
                touched.calls[row.account_id] |= result.calls
    await pipeline.run(rt, touched)
    return len(rows)


async def pending_count(rt: Runtime) -> int:
    async with rt.reads() as s:
        return await s.scalar(select(func.count()).select_from(InboxEvent).where(InboxEvent.status == "pending")) or 0


async def drain(rt: Runtime, max_batches: int = 1000) -> int:
    """Processes until nothing is due (tests, demo, shutdown)."""
    total = 0
    for _ in range(max_batches):
        n = await process_batch(rt)
        total += n
        if n == 0:
            break
    return total


# A burst of webhooks must be answered fast (amoCRM gives up on a hook that answers slowly),
# and on SQLite every worker transaction makes intake wait for the one write lock. So while
# webhooks keep arriving (Runtime.intake_busy) the worker stands back and the inbox absorbs the
# burst, unless its oldest row has waited MAX_DEFER_S: then it takes small batches, resting between them.
MAX_DEFER_S = 30.0
BUSY_BATCH = 5
BUSY_REST_FACTOR = 3.0


async def _oldest_pending_age(rt: Runtime) -> float:
    async with rt.reads() as s:
        oldest = await s.scalar(select(func.min(InboxEvent.received_at)).where(InboxEvent.status == "pending"))
    return (utcnow() - oldest).total_seconds() if oldest else 0.0


async def run_forever(rt: Runtime, stop: asyncio.Event) -> None:
    while not stop.is_set():
        busy = rt.intake_busy()
        if busy and await _oldest_pending_age(rt) < MAX_DEFER_S:
            await asyncio.sleep(BUSY_WINDOW_S)
            continue
        started = time.monotonic()
        try:
            n = await process_batch(rt, BUSY_BATCH if busy else None)
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
