"""One inbox row's fate, shared by the worker (worker.py) and the steps after its commit
(pipeline.py): parsed into domain events, done, or failed with backoff; and what a delivery
teaches about its account."""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.db import utcnow
from app.metrics import INBOX_PROCESSED
from app.runtime import Runtime
from app.security import webhook_secret_hash
from integrations.base import CredentialsIssued, DomainEvent, WebhookMalformed
from integrations.http import backoff_delay
from integrations.registry import TELEPHONY_SOURCE, telephony_adapter
from integrations.telephony.base import StoredHook

from .intake import unsealed
from .models import InboxEvent

log = logging.getLogger(__name__)

_TABLE = InboxEvent.__table__


class Claimed:
    """An inbox row a batch has claimed, read as plain values: an ORM entity per row cost a
    batch of thousands about ten times as much to load and to flush back. It has the entity's
    attributes, so parse, done, failed and account_facts take either; what a batch changes in
    it is written back by write_back, in a few statements."""

    __slots__ = (
        "_was",
        "account_id",
        "attempts",
        "content_type",
        "events",
        "id",
        "ignored",
        "last_error",
        "next_attempt_at",
        "payload",
        "processed_at",
        "received_at",
        "source",
        "status",
    )
    COLUMNS = (
        InboxEvent.id,
        InboxEvent.account_id,
        InboxEvent.source,
        InboxEvent.content_type,
        InboxEvent.payload,
        InboxEvent.received_at,
        InboxEvent.status,
        InboxEvent.attempts,
        InboxEvent.next_attempt_at,
        InboxEvent.last_error,
    )

    def __init__(self, row: tuple) -> None:
        (
            self.id,
            self.account_id,
            self.source,
            self.content_type,
            self.payload,
            self.received_at,
            self.status,
            self.attempts,
            self.next_attempt_at,
            self.last_error,
        ) = row
        self.processed_at = self.events = self.ignored = None
        self._was = self._state()

    def _state(self) -> tuple:
        return (self.status, self.attempts, self.next_attempt_at, self.last_error)

    def changed(self) -> bool:
        return self._state() != self._was


async def write_back(s: AsyncSession, rows: list[Claimed]) -> None:
    """Writes what a batch changed in its rows: the done ones in one UPDATE per (events, ignored)
    (a batch has a handful), the others (a lease, a retry, a parked row) one by one."""
    done: dict[tuple[int | None, int | None], list[int]] = {}
    other: list[dict[str, Any]] = []
    for row in rows:
        if row.status == "done":
            done.setdefault((row.events, row.ignored), []).append(row.id)
        elif row.changed():
            other.append(
                {
                    "row_id": row.id,
                    "status": row.status,
                    "attempts": row.attempts,
                    "next_attempt_at": row.next_attempt_at,
                    "last_error": row.last_error,
                }
            )
    now = utcnow()
    for (events, ignored), ids in done.items():
        await s.execute(
            update(_TABLE)
            .where(_TABLE.c.id.in_(ids))
            .values(status="done", processed_at=now, events=events, ignored=ignored)
        )
    if other:
        await s.execute(update(_TABLE).where(_TABLE.c.id == bindparam("row_id")), other)


def parse(rt: Runtime, row: InboxEvent | Claimed, region: str) -> list[DomainEvent]:
    """The row's domain events, by its source: a PBX's callback or a CRM's webhook."""
    if row.source.startswith(TELEPHONY_SOURCE):
        pbx = telephony_adapter(row.source[len(TELEPHONY_SOURCE) :])
        return pbx.parse(StoredHook.loads(row.payload), region=region, received_at=row.received_at)
    return rt.crm_adapter(row.source).parse_webhook(
        unsealed(rt.box, row.payload).encode("utf-8"), region=region, received_at=row.received_at
    )


def failed(rt: Runtime, row: InboxEvent | Claimed, exc: BaseException, now: datetime, *, may_park: bool = True) -> None:
    row.attempts += 1
    row.last_error = f"{type(exc).__name__}: {exc}"[:2000]
    if may_park and row.attempts >= rt.settings.inbox_max_attempts:
        row.status = "failed"
        INBOX_PROCESSED.labels(row.source, "failed").inc()
        log.error("inbox.parked", extra={"inbox_id": row.id, "error": row.last_error})
    else:
        # 2 s, 4 s, 8 s … capped at an hour.
        row.next_attempt_at = now + timedelta(seconds=backoff_delay(row.attempts, 2.0, 3600.0, jitter=(1.0, 1.0)))
        INBOX_PROCESSED.labels(row.source, "retry").inc()
        log.warning("inbox.retry", extra={"inbox_id": row.id, "error": row.last_error})


def done(row: InboxEvent | Claimed, events: list[DomainEvent], ignored: int) -> None:
    row.status, row.processed_at = "done", utcnow()
    row.events, row.ignored = len(events), ignored
    INBOX_PROCESSED.labels(row.source, "done").inc()


async def account_facts(
    rt: Runtime, s: AsyncSession, account: Account, adapter: Any, row: InboxEvent | Claimed, events: list[DomainEvent]
) -> None:
    """What a delivery teaches about its account: the CRM's own account id (when the delivery is
    signed), and the credentials an app install hands over."""
    parsed = None
    # Only a delivery signed with the account's secret (checked at intake) may say whose it is;
    # an unsigned one (amoCRM) leaves that to the CRM's API. Without a secret there is nothing
    # to learn, so the body is not parsed a second time (a tenth of a batch's apply time).
    if account.external_id is None and account.webhook_secret_hash:
        # A row drained from the CRM's own queue is no webhook: it says nothing of its account.
        with contextlib.suppress(WebhookMalformed):
            parsed = adapter.check_webhook(row.payload.encode("utf-8"), row.content_type)
        signed = parsed is not None and (parsed.secret or parsed.secret_sha256)
        if parsed and parsed.external_account_id and signed:
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
        if account.webhook_secret_hash is None and (ev.webhook_secret or ev.webhook_secret_sha256):
            account.webhook_secret_hash = ev.webhook_secret_sha256 or webhook_secret_hash(ev.webhook_secret)
        # A fresh install has data the backfill has not read yet.
        account.sync_state, account.sync_requested_at = "queued", utcnow()
        log.info("account.installed", extra={"account_id": account.id})
        rt.sync_wakeup.set()
