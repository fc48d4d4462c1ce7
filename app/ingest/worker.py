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
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.calls import followup as calls_followup
from app.calls.service import mirror_writer
from app.db import is_postgres, utcnow
from app.findings import evaluation
from app.metrics import INBOX_PENDING, INBOX_PROCESSED
from app.runtime import BUSY_WINDOW_S, Runtime
from app.security import webhook_secret_hash
from integrations.base import (
    CredentialsIssued,
    CrmAuthError,
    CrmError,
    CrmUnavailable,
    DomainEvent,
    RecordNamed,
    WebhookMalformed,
)
from integrations.registry import TELEPHONY_SOURCE, telephony_adapter
from integrations.telephony.base import StoredHook

from .models import InboxEvent

log = logging.getLogger(__name__)

# How long a row waits for the records it names to be read before another pass takes it again.
FETCH_LEASE = timedelta(minutes=2)


def _failed(rt: Runtime, row: InboxEvent, exc: BaseException, now: datetime, *, may_park: bool = True) -> None:
    row.attempts += 1
    row.last_error = f"{type(exc).__name__}: {exc}"[:2000]
    if may_park and row.attempts >= rt.settings.inbox_max_attempts:
        row.status = "failed"
        INBOX_PROCESSED.labels(row.source, "failed").inc()
        log.error("inbox.parked", extra={"inbox_id": row.id, "error": row.last_error})
    else:
        row.next_attempt_at = now + timedelta(seconds=min(3600, 2 ** row.attempts))
        INBOX_PROCESSED.labels(row.source, "retry").inc()
        log.warning("inbox.retry", extra={"inbox_id": row.id, "error": row.last_error})


def _done(row: InboxEvent, events: list[DomainEvent], ignored: int) -> None:
    row.status, row.processed_at = "done", utcnow()
    row.events, row.ignored = len(events), ignored
    INBOX_PROCESSED.labels(row.source, "done").inc()


@dataclass
class _Named:
    """Rows whose events only name records: fetched from the CRM outside any transaction."""

    rows: list[int] = field(default_factory=list)
    refs: list[RecordNamed] = field(default_factory=list)
    region: str = "RU"


async def process_batch(rt: Runtime, limit: int | None = None) -> int:
    """Processes up to `limit` (default inbox_batch_size) due rows; returns how many it took.

    A row whose events only name records (RecordNamed) is applied in a second step: the records
    are read through the CRM API with no transaction open, while the row stays pending under a
    lease (next_attempt_at moved ahead). If the read fails or the process dies, the lease runs
    out and the row is taken again: nothing is lost, and applying it twice changes nothing."""
    thin: dict[int, set[str]] = defaultdict(set)
    touched: dict[int, set[str]] = defaultdict(set)
    calls: dict[int, set[int]] = defaultdict(set)
    named: dict[int, _Named] = defaultdict(_Named)
    installed: set[int] = set()
    now = utcnow()
    async with rt.sessions() as s, s.begin():
        query = (select(InboxEvent).where(InboxEvent.status == "pending", InboxEvent.next_attempt_at <= now)
                 .order_by(InboxEvent.id).limit(limit or rt.settings.inbox_batch_size))
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
                    if row.source.startswith(TELEPHONY_SOURCE):
                        pbx = telephony_adapter(row.source[len(TELEPHONY_SOURCE):])
                        events = pbx.parse(StoredHook.loads(row.payload), region=region, received_at=row.received_at)
                    else:
                        adapter = rt.crm_adapter(row.source)
                        events = adapter.parse_webhook(row.payload.encode("utf-8"), region=region,
                                                       received_at=row.received_at)
                        refs = [ev for ev in events if isinstance(ev, RecordNamed)]
                        if refs:
                            named[row.account_id].rows.append(row.id)
                            named[row.account_id].refs.extend(refs)
                            named[row.account_id].region = region
                            row.next_attempt_at = now + FETCH_LEASE
                            continue
                        if account is not None:
                            if any(isinstance(ev, CredentialsIssued) for ev in events):
                                installed.add(account.id)
                            await _account_facts(rt, s, account, adapter, row, events)
                    result = await mirror_writer(s, row.account_id).apply(events)
            except Exception as exc:
                _failed(rt, row, exc, now)
                continue
            _done(row, events, result.ignored)
            if result.thin_deals:
                thin[row.account_id] |= result.thin_deals
            if result.touched_deals:
                touched[row.account_id] |= result.touched_deals
            if result.calls:
                calls[row.account_id] |= result.calls
    for account_id in installed:
        await subscribe_after_install(rt, account_id)
    for account_id, batch in named.items():
        named_touched, named_calls = await apply_named(rt, account_id, batch)
        touched[account_id] |= named_touched
        if named_calls:
            calls[account_id] |= named_calls
    for account_id, deal_ids in thin.items():
        await complete_thin_deals(rt, account_id, sorted(deal_ids))
    for account_id, call_ids in calls.items():
        touched[account_id] |= await calls_followup.after_calls(rt, account_id, sorted(call_ids))
    for account_id, deal_ids in touched.items():
        await reevaluate(rt, account_id, sorted(deal_ids))
    return len(rows)


async def _account_facts(rt: Runtime, s: AsyncSession, account: Account, adapter: Any, row: InboxEvent,
                         events: list[DomainEvent]) -> None:
    """What a delivery teaches about its account: the CRM's own account id (when the delivery is
    signed), and the credentials an app install hands over."""
    parsed = None
    if account.external_id is None:
        # A row drained from the CRM's own queue is no webhook: it says nothing of its account.
        with contextlib.suppress(WebhookMalformed):
            parsed = adapter.check_webhook(row.payload.encode("utf-8"), row.content_type)
        # Only a delivery signed with the account's secret (checked at intake) may say whose it is;
        # an unsigned one (amoCRM) leaves that to the CRM's API.
        if parsed and parsed.external_account_id and parsed.secret and account.webhook_secret_hash:
            account.external_id = parsed.external_account_id
    for ev in events:
        if not isinstance(ev, CredentialsIssued):
            continue
        creds = rt.box.open(account.credentials) | dict(ev.credentials)
        account.credentials = rt.box.seal(creds)
        account.credentials_version += 1
        account.status, account.status_reason = "active", None
        if ev.external_id and account.external_id in (None, ev.external_id):
            account.external_id = ev.external_id
        if ev.webhook_secret and account.webhook_secret_hash is None:
            account.webhook_secret_hash = webhook_secret_hash(ev.webhook_secret)
        # A fresh install has data the backfill has not read yet.
        account.sync_state, account.sync_requested_at = "queued", utcnow()
        log.info("account.installed", extra={"account_id": account.id})
        rt.sync_wakeup.set()


async def subscribe_after_install(rt: Runtime, account_id: int) -> None:
    """Event subscriptions and placements of a freshly installed app. Best effort: a failure is
    logged and the next install event (or `crmwatch` restart drain) tries again."""
    async with rt.reads() as s:
        account = await s.get(Account, account_id)
    if account is None:
        return
    client = rt.crm_client(account.id, account.crm, account.base_url)
    try:
        hook = rt.crm_adapter(account.crm).hook_urls(rt.settings.public_url, account.key)[account.crm]
        await client.subscribe(hook, rt.settings.public_url)
    except CrmError as exc:
        log.warning("account.subscribe_failed", extra={"account_id": account_id, "error": str(exc)})
    finally:
        await client.aclose()


async def apply_named(rt: Runtime, account_id: int, batch: _Named) -> tuple[set[str], set[int]]:
    """Reads the records the rows named and applies them with the rows' other events. Returns the
    deals touched and the calls changed, for the same follow-ups as rows applied directly."""
    async with rt.reads() as s:
        account = await s.get(Account, account_id)
    if account is None:
        return set(), set()
    client = rt.crm_client(account.id, account.crm, account.base_url)
    try:
        fetched = await client.fetch_named(list(dict.fromkeys(batch.refs)), region=batch.region)
        error: Exception | None = None
    except CrmError as exc:
        fetched, error = [], exc
    finally:
        await client.aclose()
    now = utcnow()
    touched: set[str] = set()
    calls: set[int] = set()
    async with rt.sessions() as s, s.begin():
        rows = list(await s.scalars(select(InboxEvent).where(InboxEvent.id.in_(batch.rows),
                                                             InboxEvent.status == "pending")
                                    .with_for_update()))
        if error is not None:
            log.warning("inbox.fetch_failed", extra={"account_id": account_id, "error": str(error)})
            # The CRM being down or refusing our credentials says nothing about the event: it waits
            # (backoff up to an hour) for as long as that lasts, instead of being parked.
            outage = isinstance(error, CrmUnavailable | CrmAuthError)
            for row in rows:
                _failed(rt, row, error, now, may_park=not outage)
            return touched, calls
        adapter = rt.crm_adapter(account.crm)
        live = await s.get(Account, account_id)
        if live is not None and rows:
            await _account_facts(rt, s, live, adapter, rows[0], [])
        result = await mirror_writer(s, account_id).apply(fetched)
        for row in rows:
            events = adapter.parse_webhook(row.payload.encode("utf-8"), region=batch.region,
                                           received_at=row.received_at)
            rest = [ev for ev in events if not isinstance(ev, RecordNamed)]
            if rest:
                result_rest = await mirror_writer(s, account_id).apply(rest)
                touched |= result_rest.touched_deals
                calls |= result_rest.calls
            _done(row, events, 0)
        touched |= result.touched_deals
        calls |= result.calls
    return touched, calls


async def reevaluate(rt: Runtime, account_id: int, deal_ids: list[str]) -> None:
    """Runs the rules over just the deals these events touched. If this fails or the process dies
    first, nothing is lost: the next scheduled sweep evaluates the whole account anyway."""
    try:
        async with rt.sessions() as s, s.begin():
            result = await evaluation.evaluate(s, account_id, deal_ids=deal_ids, actor="incremental")
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
        await mirror_writer(s, account_id).apply(events)


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
