"""Reading findings for people, and the transitions people make (acknowledge, snooze)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.calls.models import Call
from app.db import utcnow
from app.mirror.models import Deal, Note, Stage, Task, User
from app.rules import config as rules_config
from app.rules.base import RenderContext
from app.rules.models import ManagerPace
from app.rules.registry import RULES

from . import due
from .models import Finding, FindingEvent
from .schemas import FindingOut, HistoryOut


class TransitionError(Exception):
    """The finding is not in a state that allows this."""


def _by_id(rows: Any) -> dict[str, Any]:
    return {r.id: r for r in rows}


async def _calls(s: AsyncSession, account_id: int, findings: list[Finding]) -> dict[str, Any]:
    """The calls that call and phone findings speak of, by the finding's entity id."""
    ids = [
        int(f.entity_id)
        for f in findings
        if f.entity_type == "call" and f.entity_id.isascii() and f.entity_id.isdigit()
    ]
    numbers = [f.entity_id for f in findings if f.entity_type == "phone"]
    out: dict[str, Any] = {}
    if ids:
        out |= {
            str(c.id): c for c in await s.scalars(select(Call).where(Call.account_id == account_id, Call.id.in_(ids)))
        }
    for number in numbers:
        latest = await s.scalar(
            select(Call)
            .where(Call.account_id == account_id, Call.client_number == number)
            .order_by(Call.started_at.desc(), Call.id.desc())
            .limit(1)
        )
        if latest is not None:
            out[number] = latest
    return out


async def render(
    s: AsyncSession,
    account: Account,
    findings: list[Finding],
    public_url: str,
    lang: str | None = None,
    now: datetime | None = None,
) -> list[FindingOut]:
    """Phrases a page of findings in the account's language, loading what the messages need in a few queries."""
    if not findings:
        return []
    now = now or utcnow()
    lang = lang or account.language
    doc = await rules_config.load(s, account.id)
    deal_ids = {f.deal_id for f in findings if f.deal_id}
    task_ids = [f.entity_id for f in findings if f.entity_type == "task"]
    note_ids = [f.entity_id for f in findings if f.entity_type == "note"]
    aid = account.id
    deals = _by_id(await s.scalars(select(Deal).where(Deal.account_id == aid, Deal.id.in_(deal_ids))))
    pairs = {(d.pipeline_id, d.stage_id) for d in deals.values() if d.pipeline_id and d.stage_id}
    rc = RenderContext(
        now=now,
        calendar=doc.business_calendar(account.timezone),
        lang=lang,
        deals=deals,
        tasks=_by_id(await s.scalars(select(Task).where(Task.account_id == aid, Task.id.in_(task_ids)))),
        notes=_by_id(await s.scalars(select(Note).where(Note.account_id == aid, Note.id.in_(note_ids)))),
        stages={
            (st.pipeline_id, st.id): st
            for st in await s.scalars(
                select(Stage).where(Stage.account_id == aid, tuple_(Stage.pipeline_id, Stage.id).in_(pairs))
            )
        }
        if pairs
        else {},
        users=_by_id(
            await s.scalars(
                select(User).where(
                    User.account_id == aid, User.id.in_({f.manager_id for f in findings if f.manager_id})
                )
            )
        ),
    )
    rc.calls = await _calls(s, aid, findings)
    managers = {f.entity_id for f in findings if f.entity_type == "manager"}
    if managers:
        rows = await s.scalars(
            select(ManagerPace).where(ManagerPace.account_id == aid, ManagerPace.manager_id.in_(managers))
        )
        for row in rows:
            rc.pace.setdefault(row.manager_id, []).append(row)
        # The manager's own name, whoever the finding's manager_id names.
        rc.users |= _by_id(await s.scalars(select(User).where(User.account_id == aid, User.id.in_(managers))))
    out = []
    for f in findings:
        rule = RULES.get(f.rule)
        message, details = rule.render(f, rc) if rule else (f.rule, {})
        manager = rc.users.get(f.manager_id) if f.manager_id else None
        if manager is not None and manager.name:
            details = {**details, "manager_name": manager.name}
        out.append(
            FindingOut(
                id=f.id,
                rule=f.rule,
                title=rule.title.get(lang, f.rule) if rule else f.rule,
                deal_id=f.deal_id,
                manager_id=f.manager_id,
                entity_type=f.entity_type,
                entity_id=f.entity_id,
                severity=f.severity,
                message=message,
                details=details,
                status=f.status,
                suppressed=f.suppressed,
                started_at=f.started_at,
                opened_at=f.opened_at,
                resolved_at=f.resolved_at,
                resolution=f.resolution,
                acknowledged_at=f.acknowledged_at,
                acknowledged_by=f.acknowledged_by,
                snoozed_until=f.snoozed_until,
                snoozed_by=f.snoozed_by,
                snooze_reason=f.snooze_reason,
                times_opened=f.times_opened,
                backlog=f.backlog_opening is not None and f.backlog_opening == f.times_opened,
                link=f"{public_url.rstrip('/')}/api/findings/{f.id}",
            )
        )
    return out


async def search(
    s: AsyncSession,
    account_id: int,
    *,
    status: str,
    rule: str | None,
    deal_id: str | None,
    manager_id: str | None,
    limit: int,
    offset: int,
) -> tuple[list[Finding], int]:
    where = [Finding.account_id == account_id]
    if status != "all":
        where.append(Finding.status == status)
    if rule:
        where.append(Finding.rule == rule)
    if deal_id:
        where.append(Finding.deal_id == deal_id)
    if manager_id:
        where.append(Finding.manager_id == manager_id)
    total = await s.scalar(select(func.count()).select_from(Finding).where(*where)) or 0
    rows = await s.scalars(
        select(Finding).where(*where).order_by(Finding.started_at, Finding.id).limit(limit).offset(offset)
    )
    return list(rows), total


async def history(s: AsyncSession, finding_id: int) -> list[HistoryOut]:
    rows = await s.scalars(select(FindingEvent).where(FindingEvent.finding_id == finding_id).order_by(FindingEvent.id))
    return [
        HistoryOut(
            at=r.at,
            from_status=r.from_status,
            to_status=r.to_status,
            actor=r.actor,
            reason=r.reason,
            resolution=r.resolution,
        )
        for r in rows
    ]


def _record(
    s: AsyncSession,
    finding: Finding,
    to_status: str,
    actor: str,
    reason: str | None,
    details: dict[str, Any] | None = None,
) -> None:
    """Records a person's transition; leaving the open list for acknowledged or snoozed is a
    resolution by a person's action, and says so."""
    s.add(
        FindingEvent(
            finding_id=finding.id,
            at=utcnow(),
            from_status=finding.status,
            to_status=to_status,
            actor=actor,
            reason=reason,
            resolution=to_status if to_status in ("acknowledged", "snoozed") else None,
            details=details,
        )
    )


def _with_article(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


async def acknowledge(s: AsyncSession, finding: Finding, actor: str, reason: str | None) -> Finding:
    if finding.status == "acknowledged":
        return finding  # idempotent: a second click, or a retried request, changes nothing
    if finding.status not in ("pending", "open", "snoozed"):
        raise TransitionError(f"{_with_article(finding.status)} finding cannot be acknowledged")
    _record(s, finding, "acknowledged", actor, reason)
    now = utcnow()
    finding.status, finding.acknowledged_at, finding.acknowledged_by = "acknowledged", now, actor
    finding.resolution = "acknowledged"
    finding.snoozed_until = finding.snoozed_by = finding.snooze_reason = None
    finding.updated_at = now
    return finding


async def snooze(s: AsyncSession, finding: Finding, until: datetime, actor: str, reason: str | None) -> Finding:
    if finding.status not in ("pending", "open", "acknowledged", "snoozed"):
        raise TransitionError(f"{_with_article(finding.status)} finding cannot be snoozed")
    if finding.status == "snoozed" and finding.snoozed_until == until:
        return finding  # idempotent: the same snooze again changes nothing
    if until <= utcnow():
        raise TransitionError("a finding can only be snoozed until a moment in the future")
    _record(s, finding, "snoozed", actor, reason, {"until": until.isoformat()})
    finding.status, finding.snoozed_until, finding.snoozed_by, finding.snooze_reason = "snoozed", until, actor, reason
    finding.resolution = "snoozed"
    finding.updated_at = utcnow()
    await due.schedule(s, finding.account_id, [finding.deal_id], until)  # the tick wakes it then
    return finding


async def reopen(s: AsyncSession, finding: Finding, actor: str, reason: str | None) -> Finding:
    """Undoes an acknowledgement or a snooze (the card's "undo" and "bring back"): the finding is open
    again. Idempotent; a resolved or expired finding stays so."""
    if finding.status == "open":
        return finding
    if finding.status not in ("acknowledged", "snoozed"):
        raise TransitionError(f"{_with_article(finding.status)} finding cannot be reopened")
    _record(s, finding, "open", actor, reason)
    finding.status, finding.resolution = "open", None
    finding.acknowledged_at = finding.acknowledged_by = None
    finding.snoozed_until = finding.snoozed_by = finding.snooze_reason = None
    finding.updated_at = utcnow()
    return finding
