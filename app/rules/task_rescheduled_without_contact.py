"""task_rescheduled_without_contact: an open task's due time was moved forward, and there has been
no call or note on the deal since the task was set."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from pydantic import Field
from sqlalchemy import Select, and_, false, func, select, true

from app import wording
from app.db import epoch
from app.mirror.models import Deal, Note, Task

from .base import RenderContext, Rule, RuleContext, RuleSettings, one_of

CONTACT_KINDS = ("common", "call_in", "call_out")


class Settings(RuleSettings):
    min_shift_minutes: int = Field(
        default=60, ge=1, le=525600, description="smaller moves (a time fix within the hour) are not rescheduling"
    )


def violations(ctx: RuleContext) -> Select[Any]:
    shift = ctx.per_stage(lambda st: st.min_shift_minutes * 60.0)
    # Portable "due_at - previous_due_at >= shift" in epoch seconds; SQLite's julianday arithmetic
    # is floating point, so exactly one hour can come out a hair short: allow half a second.
    moved_enough = epoch(Task.due_at) - epoch(Task.previous_due_at) >= shift - 0.5
    contact = (
        select(Note.id)
        .where(
            Note.account_id == Task.account_id,
            Note.deal_id == Task.deal_id,
            one_of(Note.kind, CONTACT_KINDS),
            Note.created_at >= func.coalesce(Task.created_at, Task.previous_due_at),
        )
        .exists()
    )
    return (
        select(
            Task.id.label("entity_id"),
            Task.deal_id.label("deal_id"),
            func.coalesce(Task.responsible_user_id, Deal.responsible_user_id).label("manager_id"),
            Task.due_moved_at.label("started_at"),
            true().label("opens"),
        )
        .join(Deal, and_(Deal.account_id == Task.account_id, Deal.id == Task.deal_id))
        .where(
            *ctx.open_deal(),
            Task.account_id == ctx.account_id,
            Task.is_completed == false(),
            Task.is_deleted == false(),
            Task.due_moved_at.is_not(None),
            Task.previous_due_at.is_not(None),
            moved_enough,
            ~contact,
        )
    )


def render(finding: Any, rc: RenderContext) -> tuple[str, dict[str, Any]]:
    task = rc.tasks.get(finding.entity_id)
    text = (task.text if task and task.text else "").strip()
    tz = ZoneInfo(rc.calendar.config.timezone)
    old = task.previous_due_at.astimezone(tz).strftime("%d.%m %H:%M") if task and task.previous_due_at else "?"
    new = task.due_at.astimezone(tz).strftime("%d.%m %H:%M") if task and task.due_at else "?"
    message = wording.of(rc.lang).RULE_MESSAGES["task_rescheduled_without_contact"].format(text=text, old=old, new=new)
    return message, {
        "task_id": finding.entity_id,
        "task_text": text,
        "moved_at": finding.started_at.isoformat(),
        "previous_due_at": task.previous_due_at.isoformat() if task and task.previous_due_at else None,
        "due_at": task.due_at.isoformat() if task and task.due_at else None,
    }


RULE = Rule(
    name="task_rescheduled_without_contact",
    version=1,
    entity_type="task",
    severity="info",
    title=wording.titles("task_rescheduled_without_contact"),
    settings=Settings,
    violations=violations,
    render=render,
)
