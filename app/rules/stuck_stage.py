"""stuck_stage: an open deal has sat in one stage longer than that stage's limit (working days)."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from sqlalchemy import Select, select, true

from app import wording
from app.calendar.business import humanize
from app.mirror.models import Deal

from .base import RenderContext, Rule, RuleContext, RuleSettings, moment


class Settings(RuleSettings):
    limit_days: float = Field(default=3, gt=0, le=365, description="working days a deal may stay in a stage")


def violations(ctx: RuleContext) -> Select[Any]:
    limit = ctx.cutoff(lambda st: st.limit_days * ctx.calendar.day_seconds)
    return select(
        Deal.id.label("entity_id"),
        Deal.id.label("deal_id"),
        Deal.responsible_user_id.label("manager_id"),
        Deal.stage_entered_at.label("started_at"),
        true().label("opens"),
    ).where(*ctx.open_deal(), Deal.stage_entered_at <= limit)


def timing(ctx: RuleContext) -> list[Select[Any]]:
    """A deal not stuck yet is at its stage's limit, in working time, after it entered the stage."""
    limit = ctx.cutoff(lambda st: st.limit_days * ctx.calendar.day_seconds)
    seconds = ctx.per_stage(lambda st: float(st.limit_days * ctx.calendar.day_seconds))
    return [
        select(*moment(Deal.id, Deal.stage_entered_at, seconds, True)).where(
            *ctx.open_deal(), Deal.stage_entered_at > limit
        )
    ]


def render(finding: Any, rc: RenderContext) -> tuple[str, dict[str, Any]]:
    deal = rc.deals.get(finding.deal_id)
    stage = rc.stages.get((deal.pipeline_id, deal.stage_id)) if deal else None
    stage_name = stage.name if stage else (deal.stage_id if deal else "?")
    spent = rc.calendar.working_seconds(finding.started_at, rc.now)
    span = humanize(spent, rc.calendar.day_seconds, rc.lang)
    message = wording.of(rc.lang).RULE_MESSAGES["stuck_stage"].format(span=span, stage=stage_name)
    return message, {
        "stage_id": deal.stage_id if deal else None,
        "stage_name": stage_name,
        "entered_at": finding.started_at.isoformat(),
        "working_seconds_in_stage": int(spent),
    }


RULE = Rule(
    name="stuck_stage",
    version=1,
    entity_type="deal",
    severity="warning",
    title=wording.titles("stuck_stage"),
    settings=Settings,
    violations=violations,
    render=render,
    timing=timing,
)
