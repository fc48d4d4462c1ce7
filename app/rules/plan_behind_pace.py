"""plan_behind_pace: a manager more than `percent` % behind the month's plan, pro-rated over the
working time gone, once `after_working_days` working days of the month have passed. A finding on
the MANAGER (entity type "manager", no deal), off by default.

The pace itself (targets walked back from the plan, facts, the business calendar) is computed by
app/plans, which imports the rules and so cannot be imported here: a periodic job there
(app/plans/behind.py) writes each manager's pace per figure into `manager_pace`, and this rule
reads that table, set-based like every rule. Only the current local month's rows count, so a new
month starts clean before the job has run. Sweeps only (a manager belongs to no deal).

What it does in the CRM (app/findings/notify.py): a task for the manager on no card, an escalation
to the head of sales, the task closed when the manager catches up; no notes (there is no card).
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator
from sqlalchemy import Select, String, cast, false, func, null, select, true

from app import wording

from .base import RenderContext, Rule, RuleContext, RuleSettings, one_of
from .models import ManagerPace

FIGURES = ("revenue", "won_deals", "first_contact", "meeting_held", "proposal_sent")


class Settings(RuleSettings):
    percent: float = Field(default=20, gt=0, le=100, description="behind the pro-rated plan by more than this %")
    after_working_days: int = Field(
        default=5, ge=0, le=23, description="judged once this many working days of the month have passed"
    )
    measure: list[str] = Field(
        default_factory=lambda: ["revenue", "won_deals"],
        description=f"the plan's figures judged (any behind counts): {', '.join(FIGURES)}",
    )

    @field_validator("measure")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = [v for v in value if v not in FIGURES]
        if unknown or not value:
            raise ValueError(f"measure names figures of {', '.join(FIGURES)}; got {value!r}")
        return sorted(set(value))


def violations(ctx: RuleContext) -> Select[Any]:
    st = ctx.settings
    tz = ZoneInfo(ctx.calendar.config.timezone)
    p = ManagerPace
    query = (
        select(
            p.manager_id.label("entity_id"),
            cast(null(), String(64)).label("deal_id"),
            p.manager_id.label("manager_id"),
            func.min(func.coalesce(p.behind_since, p.computed_at)).label("started_at"),
            true().label("opens"),
        )
        .where(
            p.account_id == ctx.account_id,
            p.month == ctx.bind(lambda: ctx.now.astimezone(tz).strftime("%Y-%m"), String()),
            one_of(p.milestone, st.measure),
            p.behind_percent > st.percent,
            p.elapsed_days >= st.after_working_days,
            *ctx.entity_scope(p.manager_id),
        )
        .group_by(p.manager_id)
    )
    if ctx.deal_ids is not None:
        return query.where(false())
    if ctx.config.exclude.users:
        query = query.where(p.manager_id.not_in(sorted(ctx.config.exclude.users)))
    return query


def _num(x: float) -> str:
    return f"{round(x):,}".replace(",", " ")


def render(finding: Any, rc: RenderContext) -> tuple[str, dict[str, Any]]:
    words = wording.of(rc.lang)
    rows = rc.pace.get(finding.entity_id) or []
    user = rc.users.get(finding.entity_id)
    name = (user.name if user is not None else None) or finding.entity_id
    if not rows:
        return words.RULE_TITLES["plan_behind_pace"] + f": {name}", {}
    worst = max(rows, key=lambda r: r.behind_percent)
    message = words.RULE_MESSAGES["plan_behind_pace"].format(
        name=name,
        percent=round(worst.behind_percent),
        milestone=words.PACE_FIGURES.get(worst.milestone, worst.milestone),
        fact=_num(worst.fact),
        expected=_num(worst.expected),
        target=_num(worst.target),
    )
    figures = {
        r.milestone: {"target": r.target, "fact": r.fact, "expected": r.expected, "behind_percent": r.behind_percent}
        for r in rows
    }
    return message, {"month": worst.month, "figures": figures, "working_days_elapsed": worst.elapsed_days}


RULE = Rule(
    name="plan_behind_pace",
    version=1,
    entity_type="manager",
    severity="warning",
    title=wording.titles("plan_behind_pace"),
    settings=Settings,
    violations=violations,
    render=render,
    enabled_by_default=False,
)
