"""Backfill: read an account's current state through the CRM API into the mirror.

A sync is requested by setting the account's sync_state to "queued" (on creation and by
POST /api/accounts/{id}/sync). A worker claims it, so a sync survives a restart: a
"running" sync whose heartbeat stopped is queued again. Each page is applied and committed
on its own, with progress counts, so a large account shows how far it got.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta

from sqlalchemy import or_, select, update

from app.accounts.models import Account
from app.accounts.service import learn_identity
from app.calls.service import mirror_writer
from app.db import is_postgres, utcnow
from app.findings.scheduler import sweep_account
from app.metrics import SYNC_ITEMS
from app.mirror import fields
from app.runtime import Runtime
from integrations.base import CrmAuthError, CrmError, CrmStopping

log = logging.getLogger(__name__)

STALE_AFTER = timedelta(minutes=3)


async def claim_next(rt: Runtime) -> int | None:
    now = utcnow()
    async with rt.sessions() as s, s.begin():
        # A sync whose worker died (no heartbeat) goes back to the queue.
        await s.execute(
            update(Account)
            .where(
                Account.sync_state == "running",
                or_(Account.sync_heartbeat_at.is_(None), Account.sync_heartbeat_at < now - STALE_AFTER),
            )
            .values(sync_state="queued")
        )
        query = select(Account.id).where(Account.sync_state == "queued").order_by(Account.sync_requested_at).limit(1)
        if is_postgres(s):
            query = query.with_for_update(skip_locked=True)
        account_id = await s.scalar(query)
        if account_id is None:
            return None
        claimed = await s.execute(
            update(Account)
            .where(Account.id == account_id, Account.sync_state == "queued")
            .values(
                sync_state="running",
                sync_started_at=now,
                sync_heartbeat_at=now,
                sync_finished_at=None,
                sync_error=None,
                sync_section=None,
                sync_counts={},
            )
        )
        return account_id if claimed.rowcount == 1 else None


async def run_sync(rt: Runtime, account_id: int) -> None:
    async with rt.reads() as s:
        account = await s.get(Account, account_id)
    if account is None:
        return
    started = time.monotonic()
    counts: dict[str, int] = {}
    client = rt.crm_client(account.id, account.crm, account.base_url)
    log.info("sync.started", extra={"account_id": account_id, "crm": account.crm})
    try:
        identity = await client.identity()
        async with rt.sessions() as s, s.begin():
            await learn_identity(s, account_id, identity.external_id or None, identity.subdomain)
        sections = client.backfill(
            history_days=rt.settings.backfill_history_days,
            region=account.region,
            deal_fields=tuple(sorted(fields.kept(account.deal_fields))),
        )
        for section in sections:
            counts[section.name] = 0
            async for page in section.pages:
                async with rt.sessions() as s, s.begin():
                    await mirror_writer(s, account_id).apply(page)
                    counts[section.name] += len(page)
                    await s.execute(
                        update(Account)
                        .where(Account.id == account_id)
                        .values(sync_section=section.name, sync_counts=dict(counts), sync_heartbeat_at=utcnow())
                    )
                SYNC_ITEMS.labels(account.crm, section.name).inc(len(page))
                log.info(
                    "sync.progress",
                    extra={"account_id": account_id, "section": section.name, "count": counts[section.name]},
                )
    except (CrmStopping, asyncio.CancelledError) as exc:
        # The process is stopping: the sync goes back to the queue for the next one (it starts
        # over; every page applied so far is committed and applying it again changes nothing).
        async with rt.sessions() as s, s.begin():
            await s.execute(
                update(Account)
                .where(Account.id == account_id, Account.sync_state == "running")
                .values(sync_state="queued", sync_section=None)
            )
        log.info("sync.requeued", extra={"account_id": account_id})
        if isinstance(exc, asyncio.CancelledError):
            raise
        return
    except Exception as exc:
        needs_attention = isinstance(exc, CrmAuthError)
        if not isinstance(exc, CrmError):
            log.exception("sync.crashed", extra={"account_id": account_id})
        else:
            log.warning("sync.failed", extra={"account_id": account_id, "error": str(exc)})
        values = {
            "sync_state": "failed",
            "sync_error": str(exc)[:2000],
            "sync_finished_at": utcnow(),
            "sync_counts": dict(counts),
        }
        if needs_attention:
            values |= {"status": "needs_attention", "status_reason": str(exc)[:2000]}
        async with rt.sessions() as s, s.begin():
            await s.execute(update(Account).where(Account.id == account_id).values(**values))
        return
    finally:
        await client.aclose()
    async with rt.sessions() as s, s.begin():
        account = await s.get(Account, account_id, with_for_update=True)
        if account is None:
            return
        again = (
            account.sync_requested_at is not None
            and account.sync_started_at is not None
            and account.sync_requested_at > account.sync_started_at
        )
        account.sync_state = "queued" if again else "done"
        account.sync_section = None
        account.sync_finished_at = utcnow()
        account.sync_counts = dict(counts)
    log.info(
        "sync.finished",
        extra={"account_id": account_id, "counts": counts, "seconds": round(time.monotonic() - started, 2)},
    )
    # A newly connected account shows its existing problems at once, not at the next tick.
    await sweep_account(rt, account_id, actor="sync")


async def run_pending(rt: Runtime, stop: asyncio.Event | None = None) -> int:
    """Runs queued syncs one after another until none is left, or until `stop`."""
    done = 0
    while not (stop is not None and stop.is_set()) and (account_id := await claim_next(rt)) is not None:
        await run_sync(rt, account_id)
        done += 1
    return done


async def run_forever(rt: Runtime, stop: asyncio.Event, poll_seconds: float = 5.0) -> None:
    while not stop.is_set():
        try:
            await run_pending(rt, stop)
        except Exception:
            log.exception("sync.worker_error")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(rt.sync_wakeup.wait(), poll_seconds)
        rt.sync_wakeup.clear()
