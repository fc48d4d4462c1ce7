"""deal_without_task: an open deal with no open task, counted from when its last task closed."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from sqlalchemy import Select, false, func, select

from app import wording
from app.calendar.business import humanize
from app.mirror.models import Deal, Task

from .base import RenderContext, Rule, RuleContext, RuleSettings, moment, one_of


class Settings(RuleSettings):
    grace_minutes: int = Field(default=15, ge=0, le=43200, description="working minutes after the last task closed")
    task_types: list[str] | None = Field(
        default=None,
        max_length=50,
        description="which of the CRM's task types count (amoCRM: task type ids; Bitrix24: 'activity' for "
        "дела, 'task' for tasks bound to the deal); null: every type. Account level only",
    )


def _deals(ctx: RuleContext) -> Any:
    types = ctx.settings.task_types
    counted = [one_of(Task.type_id, types)] if types is not None else []
    open_task = (
        select(Task.id)
        .where(
            Task.account_id == Deal.account_id,
            Task.deal_id == Deal.id,
            Task.is_completed == false(),
            Task.is_deleted == false(),
            *counted,
        )
        .exists()
    )
    # When the deal lost its last task; a deal that never had one has lacked it since it was created.
    last_closed = (
        select(func.max(func.coalesce(Task.completed_at, Task.source_updated_at)))
        .where(Task.account_id == Deal.account_id, Task.deal_id == Deal.id, *counted)
        .scalar_subquery()
    )
    started = func.coalesce(last_closed, Deal.created_at, Deal.stage_entered_at, Deal.mirrored_at)
    grace = ctx.cutoff(lambda st: st.grace_minutes * 60)
    # Computed once per deal in a subquery: written twice in one SELECT, the correlated
    # max() would run twice. OFFSET 0 keeps PostgreSQL from pulling the subquery up into the
    # outer SELECT, which would bring the second run back.
    seconds = ctx.per_stage(lambda st: st.grace_minutes * 60.0)
    return (
        select(
            Deal.id, Deal.responsible_user_id, started.label("started"), grace.label("grace"), seconds.label("seconds")
        )
        .where(*ctx.open_deal(), ~open_task)
        .offset(0)
        .subquery()
    )


def violations(ctx: RuleContext) -> Select[Any]:
    deals = _deals(ctx)
    return select(
        deals.c.id.label("entity_id"),
        deals.c.id.label("deal_id"),
        deals.c.responsible_user_id.label("manager_id"),
        deals.c.started.label("started_at"),
        (deals.c.started <= deals.c.grace).label("opens"),
    )


def timing(ctx: RuleContext) -> list[Select[Any]]:
    """A deal without an open task opens a finding once the grace after its last task has run out."""
    deals = _deals(ctx)
    return [select(*moment(deals.c.id, deals.c.started, deals.c.seconds, True)).where(deals.c.started > deals.c.grace)]


def sweep_timing(ctx: RuleContext, active: Any) -> list[Select[Any]]:
    """timing() for a sweep: the deals without an open task are this rule's active findings, and
    when the last task closed is their started_at (no second run of the correlated max())."""
    grace = ctx.cutoff(lambda st: st.grace_minutes * 60)
    seconds = ctx.per_stage(lambda st: st.grace_minutes * 60.0)
    query = select(*moment(active.c.deal_id, active.c.started_at, seconds, True)).select_from(active)
    return [ctx.with_stage(query, active.c.deal_id).where(active.c.started_at > grace)]


def render(finding: Any, rc: RenderContext) -> tuple[str, dict[str, Any]]:
    idle = rc.calendar.working_seconds(finding.started_at, rc.now)
    span = humanize(idle, rc.calendar.day_seconds, rc.lang)
    message = wording.of(rc.lang).RULE_MESSAGES["deal_without_task"].format(span=span)
    return message, {"since": finding.started_at.isoformat(), "idle_working_seconds": int(idle)}


RULE = Rule(
    name="deal_without_task",
    version=1,
    entity_type="deal",
    severity="warning",
    title=wording.titles("deal_without_task"),
    settings=Settings,
    violations=violations,
    render=render,
    timing=timing,
    sweep_timing=sweep_timing,
)
