"""Retention: what crmwatch deletes, and when (README, "Retention and secrets at rest").

Only what has served its purpose goes: applied inbox rows, sent or cancelled outbox rows of
findings that are resolved (an open finding's rows are the facts that keep it from being
escalated twice), findings resolved long ago with their history, and burned widget-token ids
whose tokens have expired. A failed inbox row and a dead outbox row stay until someone deals
with them. Deletes go in small batches, each its own transaction, so intake (on SQLite, the one
write lock) never waits long.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, exists, func, select
from sqlalchemy.orm import aliased

from app.db import utcnow
from app.findings.models import Finding, FindingEvent
from app.ingest.models import InboxEvent
from app.outbox.models import OutboxAction
from app.runtime import Runtime
from app.widget.models import WidgetTokenUse

log = logging.getLogger(__name__)

BATCH = 2000
DONE_OUTBOX = ("sent", "cancelled")


@dataclass
class Purged:
    inbox_events: int = 0
    outbox: int = 0
    findings: int = 0
    finding_events: int = 0
    widget_token_uses: int = 0

    def total(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))


async def _in_batches(rt: Runtime, model: Any, where: list[Any]) -> int:
    """Deletes the rows of `model` matching `where`, BATCH at a time, oldest id first."""
    total = 0
    while True:
        async with rt.sessions() as s, s.begin():
            ids = list(await s.scalars(select(model.id).where(*where).order_by(model.id).limit(BATCH)))
            if not ids:
                return total
            await s.execute(delete(model).where(model.id.in_(ids)))
        total += len(ids)
        if len(ids) < BATCH:
            return total


def _outbox_done(cutoff: datetime) -> list[Any]:
    active = exists().where(Finding.id == OutboxAction.finding_id, Finding.status != "resolved")
    waiting = aliased(OutboxAction)
    # A close_task still to be sent reads the create_task row it closes.
    needed = exists().where(waiting.ref_id == OutboxAction.id, waiting.status.not_in(DONE_OUTBOX))
    return [
        OutboxAction.status.in_(DONE_OUTBOX),
        func.coalesce(OutboxAction.sent_at, OutboxAction.created_at) < cutoff,
        ~active,
        ~needed,
    ]


async def purge(rt: Runtime, now: datetime | None = None) -> Purged:
    """One pass over every table with a retention; a setting of 0 days keeps that table's rows."""
    now = now or utcnow()
    cfg = rt.settings
    out = Purged()
    if cfg.retention_inbox_days:
        cutoff = now - timedelta(days=cfg.retention_inbox_days)
        out.inbox_events = await _in_batches(
            rt, InboxEvent, [InboxEvent.status == "done", InboxEvent.processed_at < cutoff]
        )
    if cfg.retention_outbox_days:
        out.outbox = await _in_batches(rt, OutboxAction, _outbox_done(now - timedelta(days=cfg.retention_outbox_days)))
    if cfg.retention_findings_days:
        cutoff = now - timedelta(days=cfg.retention_findings_days)
        old = select(Finding.id).where(Finding.status == "resolved", Finding.resolved_at < cutoff)
        # The history first, explicitly (the foreign key would cascade, but counting it is the point).
        out.finding_events = await _in_batches(rt, FindingEvent, [FindingEvent.finding_id.in_(old)])
        out.findings = await _in_batches(rt, Finding, [Finding.status == "resolved", Finding.resolved_at < cutoff])
    # A burned jti matters only while its token could still be accepted.
    async with rt.sessions() as s, s.begin():
        result = await s.execute(delete(WidgetTokenUse).where(WidgetTokenUse.expires_at < now))
        out.widget_token_uses = result.rowcount or 0
    if out.total():
        log.info("retention.purged", extra={f.name: getattr(out, f.name) for f in fields(out)})
    return out
