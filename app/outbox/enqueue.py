"""Turns finding changes into outbox rows, set-based, inside the evaluation's own transaction.

What a finding does is recorded as a fact keyed by `dedup_key` ("notify opening 2 of finding
17 with a task"), so however many sweeps see the same state, and from however many processes,
the CRM is written once. Wording happens later, at delivery.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String, and_, case, cast, exists, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.calendar.business import BusinessCalendar
from app.db import UtcDateTime, dialect_insert
from app.findings.models import Finding
from app.rules.config import RulesDocument
from app.rules.registry import RULES

from .models import OutboxAction

COLUMNS = ["account_id", "finding_id", "kind", "purpose", "dedup_key", "deal_id", "user_id", "ref_id", "status",
           "attempts", "next_attempt_at", "created_at"]


def _key(*parts: Any) -> Any:
    out = literal("")
    for part in parts:
        out = out + (cast(part, String) if not isinstance(part, str) else literal(part))
    return out


async def _insert(s: AsyncSession, source: Any) -> int:
    stmt = dialect_insert(s, OutboxAction.__table__).from_select(COLUMNS, source).on_conflict_do_nothing()
    return (await s.execute(stmt)).rowcount or 0


async def enqueue(s: AsyncSession, account_id: int, now: datetime, doc: RulesDocument,
                  calendar: BusinessCalendar) -> int:
    """Outbox rows for what this evaluation changed; returns how many were added."""
    at = literal(now, UtcDateTime())
    added = 0
    for name in RULES:
        notify = doc.notify(name)
        mine = [Finding.account_id == account_id, Finding.rule == name, Finding.deal_id.is_not(None)]
        speaking = [*mine, Finding.status == "open", Finding.suppressed.is_(False)]

        def row(kind: str, purpose: str, key: Any, user: Any = Finding.manager_id, ref: Any = None) -> Any:
            return select(literal(account_id), Finding.id, literal(kind), literal(purpose), key, Finding.deal_id,
                          user, ref if ref is not None else literal(None), literal("pending"), literal(0), at, at)

        # Opened in this evaluation (first time, after the grace period, after a regression), or
        # allowed to speak again in it (its suppression lifted). The dedup key keeps it to once.
        # (Every such change stamps updated_at with this evaluation's time, which an index finds.)
        opened = [*speaking, Finding.updated_at == at]
        if notify.task:
            added += await _insert(s, row("create_task", "open", _key("f", Finding.id, ":open:",
                                                                       Finding.times_opened, ":task"))
                                   .where(*opened))
        if notify.note:
            added += await _insert(s, row("add_note", "open", _key("f", Finding.id, ":open:",
                                                                    Finding.times_opened, ":note"))
                                   .where(*opened))

        # Escalation: still open (not acknowledged, snoozed or suppressed) past the limit.
        supervisor = _supervisor(doc)
        if notify.escalate_after_hours and supervisor is not None:
            late = literal(calendar.cutoff(now, notify.escalate_after_hours * 3600), UtcDateTime())
            added += await _insert(s, row("create_task", "escalate",
                                          _key("f", Finding.id, ":escalate:", Finding.times_opened),
                                          user=supervisor).where(*speaking, Finding.opened_at <= late,
                                                                 supervisor.is_not(None)))

        # Reminder on the card, only in working hours, spaced by the repeat interval.
        if notify.repeat_hours and calendar.is_working_time(now):
            since = literal(calendar.cutoff(now, notify.repeat_hours * 3600), UtcDateTime())
            recent = exists().where(OutboxAction.finding_id == Finding.id, OutboxAction.created_at > since,
                                    OutboxAction.purpose.in_(("open", "repeat")))
            added += await _insert(s, row("add_note", "repeat", _key("f", Finding.id, ":repeat:",
                                                                      literal(now.isoformat())))
                                   .where(*speaking, Finding.opened_at <= since, ~recent))

        # Resolved in this evaluation: close what was opened for it.
        resolved = [*mine, Finding.updated_at == at, Finding.status == "resolved", Finding.resolved_at == at]
        if notify.close_on_resolve:
            added += await _close_tasks(s, account_id, resolved, at)
        if notify.note_on_resolve:
            added += await _insert(s, row("add_note", "resolve", _key("f", Finding.id, ":resolve:",
                                                                       Finding.times_opened))
                                   .where(*resolved))
    return added


def _supervisor(doc: RulesDocument) -> Any:
    if doc.team_supervisors:
        by_team = case(*((Finding.manager_id == manager, literal(head))
                         for manager, head in sorted(doc.team_supervisors.items())),
                       else_=literal(doc.supervisor_user_id))
        return by_team
    return literal(doc.supervisor_user_id) if doc.supervisor_user_id else None


async def _close_tasks(s: AsyncSession, account_id: int, resolved: list[Any], at: Any) -> int:
    task = OutboxAction.__table__.alias("task")
    of_resolved = and_(task.c.account_id == account_id, task.c.kind == "create_task",
                       task.c.finding_id.in_(select(Finding.id).where(*resolved)))
    # Never tried: nothing to close in the CRM, just do not send it. A row tried before may
    # already be there (its answer was lost): it gets a close, which waits for the read-back.
    await s.execute(update(OutboxAction).where(
        OutboxAction.id.in_(select(task.c.id).where(of_resolved, task.c.status == "pending", task.c.attempts == 0)))
        .values(status="cancelled", last_error="the finding resolved before delivery"))
    source = (select(literal(account_id), task.c.finding_id, literal("close_task"), literal("resolve"),
                     _key("close:", task.c.id), task.c.deal_id, task.c.user_id, task.c.id, literal("pending"),
                     literal(0), at, at)
              .where(of_resolved, or_(task.c.status.in_(("sent", "sending")),
                                      and_(task.c.status == "pending", task.c.attempts > 0))))
    return await _insert(s, source)
