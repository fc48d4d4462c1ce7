"""unknown_number: calls with a number the CRM knows nothing about, no contact and no deal.
That is a lost lead. One finding per number (however often it called), from its first call;
it resolves when a contact with the number appears (the calls are re-matched then).

Unmatched calls belong to no deal, so this rule runs in sweeps only.

Past the look-back window (no call from the number for that long) the finding is KEPT: the
number is still a lead nobody recorded, and only a contact with it (or a person) ends it. The
window only keeps numbers that called long ago from opening findings.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import Field
from sqlalchemy import Select, String, and_, cast, func, null, select, true

from app import wording
from app.calls import facts
from app.calls.models import Call
from app.mirror.models import ContactPhone

from .base import RenderContext, Rule, RuleContext, RuleSettings, moment


class Settings(RuleSettings):
    grace_minutes: int = Field(
        default=15, ge=0, le=43200, description="working minutes for the manager to create the contact after the call"
    )
    lookback_days: int = Field(default=7, ge=1, le=90, description="older calls are not judged")


def _unknown(ctx: RuleContext) -> Any:
    st = ctx.settings
    return (
        select(
            Call.client_number.label("number"),
            func.min(Call.started_at).label("first_at"),
            func.max(Call.id).label("last_id"),
        )
        .where(
            Call.account_id == ctx.account_id,
            Call.is_final == true(),
            Call.direction.is_distinct_from("internal"),
            Call.client_number.is_not(None),
            Call.contact_id.is_(None),
            Call.deal_id.is_(None),
            Call.started_at >= ctx.lookback(timedelta(days=st.lookback_days)),
            *ctx.entity_scope(Call.client_number),
            ~select(ContactPhone.phone)
            .where(ContactPhone.account_id == Call.account_id, ContactPhone.phone == Call.client_number)
            .exists(),
        )
        .group_by(Call.client_number)
        .subquery()
    )


def violations(ctx: RuleContext) -> Select[Any]:
    st = ctx.settings
    unknown = _unknown(ctx)
    last = Call.__table__.alias("last_call")
    grace = ctx.account_cutoff(st.grace_minutes * 60)
    query = select(
        unknown.c.number.label("entity_id"),
        cast(null(), String(64)).label("deal_id"),
        last.c.manager_id.label("manager_id"),
        unknown.c.first_at.label("started_at"),
        (unknown.c.first_at <= grace).label("opens"),
    ).join(last, and_(last.c.id == unknown.c.last_id))
    # Calls without a deal: only a sweep, or an evaluation that asks about them (deal id "").
    query = query.where(ctx.dealless())
    if ctx.config.exclude.users:
        query = query.where(func.coalesce(last.c.manager_id, "").not_in(sorted(ctx.config.exclude.users)))
    return query


def timing(ctx: RuleContext) -> list[Select[Any]]:
    """An unknown number opens once the grace after its first call has run out; its first call
    inside the look-back window moves on when that call leaves the window."""
    st = ctx.settings
    unknown = _unknown(ctx)
    grace = ctx.account_cutoff(st.grace_minutes * 60)
    days = float(st.lookback_days * 86400)
    no_deal = cast(null(), String(64))
    return [
        select(*moment(no_deal, unknown.c.first_at, float(st.grace_minutes * 60), True)).where(
            unknown.c.first_at > grace, ctx.dealless()
        ),
        select(*moment(no_deal, unknown.c.first_at, days, False)).where(ctx.dealless()),
    ]


def render(finding: Any, rc: RenderContext) -> tuple[str, dict[str, Any]]:
    call = rc.calls.get(finding.entity_id)
    number = facts.pretty_number(finding.entity_id)
    when = facts.local_time(call, rc.calendar.config.timezone) if call else "?"
    message = wording.of(rc.lang).RULE_MESSAGES["unknown_number"].format(number=number, when=when)
    return message, {**facts.details(call), "number": finding.entity_id}


RULE = Rule(
    name="unknown_number",
    version=1,
    entity_type="phone",
    severity="critical",
    title=wording.titles("unknown_number"),
    settings=Settings,
    violations=violations,
    render=render,
    timing=timing,
    past_window="keep",
)
