"""The inbox worker: raw deliveries → domain events → mirror.

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
from collections import defaultdict
from datetime import timedelta

from sqlalchemy import func, select

from app.accounts.models import Account
from app.calls import followup as calls_followup
from app.db import is_postgres, utcnow
from app.metrics import INBOX_PENDING, INBOX_PROCESSED
from app.mirror.service import MirrorWriter
from app.rules import engine
from app.runtime import Runtime
from integrations.base import CrmError, DomainEvent
from integrations.registry import TELEPHONY_SOURCE, telephony_adapter
from integrations.telephony.base import StoredHook

from .models import InboxEvent

log = logging.getLogger(__name__)


async def process_batch(rt: Runtime, limit: int | None = None) -> int:
    """Processes up to `limit` (default inbox_batch_size) due rows; returns how many it took."""
    thin: dict[int, set[str]] = defaultdict(set)
    touched: dict[int, set[str]] = defaultdict(set)
    calls: dict[int, set[int]] = defaultdict(set)
    now = utcnow()
    async with rt.sessions() as s, s.begin():
        query = (select(InboxEvent).where(InboxEvent.status == "pending", InboxEvent.next_attempt_at <= now)
                 .order_by(InboxEvent.id).limit(limit or rt.settings.inbox_batch_size))
        if is_postgres(s):
            query = query.with_for_update(skip_locked=True)
        rows = list(await s.scalars(query))
        regions: dict[int, str] = {}
        for row in rows:
            if row.account_id not in regions:
                regions[row.account_id] = await s.scalar(
                    select(Account.region).where(Account.id == row.account_id)) or "RU"
            try:
                async with s.begin_nested():
                    events = _parse(rt, row, regions[row.account_id])
                    result = await MirrorWriter(s, row.account_id).apply(events)
            except Exception as exc:
                row.attempts += 1
                row.last_error = f"{type(exc).__name__}: {exc}"[:2000]
                if row.attempts >= rt.settings.inbox_max_attempts:
                    row.status = "failed"
                    INBOX_PROCESSED.labels(row.source, "failed").inc()
                    log.error("inbox.parked", extra={"inbox_id": row.id, "error": row.last_error})
                else:
                    row.next_attempt_at = now + timedelta(seconds=min(3600, 2 ** row.attempts))
                    INBOX_PROCESSED.labels(row.source, "retry").inc()
                    log.warning("inbox.retry", extra={"inbox_id": row.id, "error": row.last_error})
                continue
            row.status, row.processed_at = "done", utcnow()
            row.events, row.ignored = len(events), result.ignored
            if result.thin_deals:
                thin[row.account_id] |= result.thin_deals
            if result.touched_deals:
                touched[row.account_id] |= result.touched_deals
            if result.calls:
                calls[row.account_id] |= result.calls
            INBOX_PROCESSED.labels(row.source, "done").inc()
    for account_id, deal_ids in thin.items():
        await complete_thin_deals(rt, account_id, sorted(deal_ids))
    for account_id, call_ids in calls.items():
        touched[account_id] |= await calls_followup.after_calls(rt, account_id, sorted(call_ids))
    for account_id, deal_ids in touched.items():
        await reevaluate(rt, account_id, sorted(deal_ids))
    return len(rows)


def _parse(rt: Runtime, row: InboxEvent, region: str) -> list[DomainEvent]:
    if row.source.startswith(TELEPHONY_SOURCE):
        adapter = telephony_adapter(row.source[len(TELEPHONY_SOURCE):])
        return adapter.parse(StoredHook.loads(row.payload), region=region, received_at=row.received_at)
    return rt.crm_adapter(row.source).parse_webhook(row.payload.encode("utf-8"), region=region,
                                                    received_at=row.received_at)


async def reevaluate(rt: Runtime, account_id: int, deal_ids: list[str]) -> None:
    """Runs the rules over just the deals these events touched. If this fails or the process dies
    first, nothing is lost: the next scheduled sweep evaluates the whole account anyway."""
    try:
        async with rt.sessions() as s, s.begin():
            result = await engine.evaluate(s, account_id, deal_ids=deal_ids, actor="incremental")
        if result.enqueued:
            rt.outbox_wakeup.set()
    except Exception:
        log.exception("inbox.reevaluate_failed", extra={"account_id": account_id})


async def complete_thin_deals(rt: Runtime, account_id: int, deal_ids: list[str]) -> None:
    """Reads the full record of deals a thin webhook named. Best effort: the next sync fills
    whatever this misses, and the thin event's own facts (the stage) are already applied."""
    async with rt.reads() as s:
        account = await s.get(Account, account_id)
    if account is None or account.status != "active":
        return
    client = rt.crm_client(account.id, account.crm, account.base_url)
    try:
        events = await client.fetch_deals(deal_ids, region=account.region)
    except CrmError as exc:
        log.warning("inbox.thin_fetch_failed", extra={"account_id": account_id, "error": str(exc)})
        return
    finally:
        await client.aclose()
    async with rt.sessions() as s, s.begin():
        await MirrorWriter(s, account_id).apply(events)


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
# webhooks keep arriving the worker stands back and the inbox absorbs the burst, unless its
# oldest row has waited MAX_DEFER_S: then it takes small batches, resting between them.
BUSY_WINDOW_S = 0.5
MAX_DEFER_S = 30.0
BUSY_BATCH = 5
BUSY_REST_FACTOR = 3.0


def intake_busy(rt: Runtime) -> bool:
    return time.monotonic() - rt.last_intake < BUSY_WINDOW_S


async def _oldest_pending_age(rt: Runtime) -> float:
    async with rt.reads() as s:
        oldest = await s.scalar(select(func.min(InboxEvent.received_at)).where(InboxEvent.status == "pending"))
    return (utcnow() - oldest).total_seconds() if oldest else 0.0


async def run_forever(rt: Runtime, stop: asyncio.Event) -> None:
    while not stop.is_set():
        busy = intake_busy(rt)
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
