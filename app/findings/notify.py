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
from app.outbox.models import OutboxAction
from app.rules.config import RulesDocument
from app.rules.registry import RULES

from .models import Finding

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


def _rules_where(doc: RulesDocument, wants: Any) -> dict[Any, list[str]]:
    """The rules grouped by what `wants(notify settings)` gives, leaving out those it gives a
    falsy value: one statement per group serves every rule in it."""
    groups: dict[Any, list[str]] = {}
    for name in RULES:
        value = wants(doc.notify(name))
        if value:
            groups.setdefault(value, []).append(name)
    return groups


async def enqueue(s: AsyncSession, account_id: int, now: datetime, doc: RulesDocument,
                  calendar: BusinessCalendar) -> int:
    """Outbox rows for what this evaluation changed; returns how many were added.

    Each kind of action is one statement for all the rules that ask for it (grouped by their
    setting where it has a value, such as the escalation delay): an evaluation that changed a
    finding runs a handful of statements, not a handful per rule."""
    at = literal(now, UtcDateTime())
    added = 0

    def mine(names: list[str]) -> list[Any]:
        return [Finding.account_id == account_id, Finding.rule.in_(names), Finding.deal_id.is_not(None)]

    def speaking(names: list[str]) -> list[Any]:
        return [*mine(names), Finding.status == "open", Finding.suppressed.is_(False)]

    def row(kind: str, purpose: str, key: Any, user: Any = Finding.manager_id, ref: Any = None) -> Any:
        return select(literal(account_id), Finding.id, literal(kind), literal(purpose), key, Finding.deal_id,
                      user, ref if ref is not None else literal(None), literal("pending"), literal(0), at, at)

    # Opened in this evaluation (first time, after the grace period, after a regression), or
    # allowed to speak again in it (its suppression lifted). The dedup key keeps it to once.
    # (Every such change stamps updated_at with this evaluation's time, which an index finds.)
    for names in _rules_where(doc, lambda n: n.task).values():
        added += await _insert(s, row("create_task", "open", _key("f", Finding.id, ":open:",
                                                                   Finding.times_opened, ":task"))
                               .where(*speaking(names), Finding.updated_at == at))
    for names in _rules_where(doc, lambda n: n.note).values():
        added += await _insert(s, row("add_note", "open", _key("f", Finding.id, ":open:",
                                                                Finding.times_opened, ":note"))
                               .where(*speaking(names), Finding.updated_at == at))

    # Escalation: still open (not acknowledged, snoozed or suppressed) past the limit.
    supervisor = _supervisor(doc)
    if supervisor is not None:
        for hours, names in _rules_where(doc, lambda n: n.escalate_after_hours).items():
            late = literal(calendar.cutoff(now, hours * 3600), UtcDateTime())
            added += await _insert(s, row("create_task", "escalate",
                                          _key("f", Finding.id, ":escalate:", Finding.times_opened),
                                          user=supervisor).where(*speaking(names), Finding.opened_at <= late,
                                                                 supervisor.is_not(None)))

    # Reminder on the card, only in working hours, spaced by the repeat interval.
    if calendar.is_working_time(now):
        for hours, names in _rules_where(doc, lambda n: n.repeat_hours).items():
            since = literal(calendar.cutoff(now, hours * 3600), UtcDateTime())
            recent = exists().where(OutboxAction.finding_id == Finding.id, OutboxAction.created_at > since,
                                    OutboxAction.purpose.in_(("open", "repeat")))
            added += await _insert(s, row("add_note", "repeat", _key("f", Finding.id, ":repeat:",
                                                                      literal(now.isoformat())))
                                   .where(*speaking(names), Finding.opened_at <= since, ~recent))

    # Resolved in this evaluation: close what was opened for it.
    def resolved(names: list[str]) -> list[Any]:
        return [*mine(names), Finding.updated_at == at, Finding.status == "resolved", Finding.resolved_at == at]

    for names in _rules_where(doc, lambda n: n.close_on_resolve).values():
        added += await _close_tasks(s, account_id, resolved(names), at)
    for names in _rules_where(doc, lambda n: n.note_on_resolve).values():
        added += await _insert(s, row("add_note", "resolve", _key("f", Finding.id, ":resolve:",
                                                                   Finding.times_opened))
                               .where(*resolved(names)))
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
