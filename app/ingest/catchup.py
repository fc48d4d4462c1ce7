"""Catch-up: deliveries a CRM queued for us instead of (or besides) posting them.

Bitrix24 never retries a failed delivery, so a portal also queues every change as an offline
event, and this drains the queue into the same inbox as the webhooks: after start-up (changes
made while crmwatch was down) and on a schedule. A batch is acknowledged to the CRM only once
its rows are committed, so a crash in between leaves it queued, to be stored again (the
inbox's unique key makes that a no-op) by the next drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy import select

from app.accounts.models import Account
from app.db import utcnow
from app.runtime import Runtime
from integrations.base import CrmError

from .intake import inbox_row
from .writer import InboxWriter

log = logging.getLogger(__name__)


async def drain_account(rt: Runtime, account_id: int) -> int:
    """Stores what the CRM queued for one account; returns how many deliveries it stored."""
    async with rt.reads() as s:
        account = await s.get(Account, account_id)
    if account is None or account.status != "active":
        return 0
    client = rt.crm_client(account.id, account.crm, account.base_url)
    writer = InboxWriter(rt.engine)  # not started: each write is its own committed insert
    stored = 0
    try:
        async for batch in client.queued_deliveries():
            now = utcnow()
            good = [d for d in batch.deliveries if "\x00" not in d.payload]
            bad = [d.dedup_key for d in batch.deliveries if "\x00" in d.payload]
            if good:
                await writer.write_many(
                    [inbox_row(account.id, account.crm, d.dedup_key, d.content_type, d.payload, now) for d in good]
                )
                stored += len(good)
                rt.inbox_wakeup.set()
            if bad:
                await batch.reject(bad)
            await batch.ack([d.dedup_key for d in good])
    except CrmError as exc:
        log.warning("catchup.failed", extra={"account_id": account_id, "error": str(exc)})
    finally:
        await client.aclose()
    if stored:
        log.info("catchup.stored", extra={"account_id": account_id, "count": stored})
    return stored


async def drain_all(rt: Runtime) -> int:
    async with rt.reads() as s:
        ids = list(await s.scalars(select(Account.id).where(Account.status == "active").order_by(Account.id)))
    total = 0
    for account_id in ids:
        try:
            total += await drain_account(rt, account_id)
        except Exception:
            log.exception("catchup.crashed", extra={"account_id": account_id})
    return total


async def run_forever(rt: Runtime, stop: asyncio.Event) -> None:
    # First right after start-up: whatever changed while we were down.
    while not stop.is_set():
        await drain_all(rt)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), rt.settings.queued_drain_seconds)
