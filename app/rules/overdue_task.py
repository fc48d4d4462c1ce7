"""overdue_task: an open task on an open deal whose due time has passed."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from sqlalchemy import Select, and_, case, false, func, select

from app import wording
from app.calendar.business import humanize
from app.mirror.models import Deal, Task

from .base import RenderContext, Rule, RuleContext, RuleSettings, moment, one_of


class Settings(RuleSettings):
    grace_minutes: int = Field(default=0, ge=0, le=43200, description="working minutes after the due time")
    task_types: list[str] | None = Field(
        default=None,
        max_length=50,
        description="which of the CRM's task types count (amoCRM: task type ids; Bitrix24: 'activity' for "
        "дела, 'task' for tasks bound to the deal); null: every type. Account level only",
    )


def violations(ctx: RuleContext) -> Select[Any]:
    grace = ctx.cutoff(lambda st: st.grace_minutes * 60)
    types = ctx.settings.task_types
    return (
        select(
            Task.id.label("entity_id"),
            Task.deal_id.label("deal_id"),
            func.coalesce(Task.responsible_user_id, Deal.responsible_user_id).label("manager_id"),
            Task.due_at.label("started_at"),
            (Task.due_at <= grace).label("opens"),
        )
        .join(Deal, and_(Deal.account_id == Task.account_id, Deal.id == Task.deal_id))
        .where(
            *ctx.open_deal(),
            Task.account_id == ctx.account_id,
            Task.is_completed == false(),
            Task.is_deleted == false(),
            Task.due_at <= ctx.now_param(),
            *([one_of(Task.type_id, types)] if types is not None else []),
        )
    )


def timing(ctx: RuleContext) -> list[Select[Any]]:
    """An open task not yet due appears (pending) at its due time; one past it opens when its
    grace has run out in working time. One row per task: the earlier of the two still to come."""
    grace = ctx.cutoff(lambda st: st.grace_minutes * 60)
    grace_seconds = ctx.per_stage(lambda st: st.grace_minutes * 60.0)
    types = ctx.settings.task_types
    not_due = Task.due_at > ctx.now_param()
    return [
        select(*moment(Task.deal_id, Task.due_at, case((not_due, 0.0), else_=grace_seconds), ~not_due))
        .join(Deal, and_(Deal.account_id == Task.account_id, Deal.id == Task.deal_id))
        .where(
            *ctx.open_deal(),
            Task.account_id == ctx.account_id,
            Task.is_completed == false(),
            Task.is_deleted == false(),
            Task.due_at > grace,
            *([one_of(Task.type_id, types)] if types is not None else []),
        )
    ]


def render(finding: Any, rc: RenderContext) -> tuple[str, dict[str, Any]]:
    task = rc.tasks.get(finding.entity_id)
    words = wording.of(rc.lang)
    text = (task.text if task and task.text else "").strip() or words.UNTITLED_TASK
    overdue = rc.calendar.working_seconds(finding.started_at, rc.now)
    late = humanize(overdue, rc.calendar.day_seconds, rc.lang)
    message = words.RULE_MESSAGES["overdue_task"].format(text=text, late=late)
    return message, {
        "task_id": finding.entity_id,
        "task_text": text,
        "due_at": finding.started_at.isoformat(),
        "overdue_working_seconds": int(overdue),
    }


RULE = Rule(
    name="overdue_task",
    version=1,
    entity_type="task",
    severity="warning",
    title=wording.titles("overdue_task"),
    settings=Settings,
    violations=violations,
    render=render,
    timing=timing,
)
