"""missed_call_not_returned: an incoming call nobody answered, and no answered call with that
number (either direction) followed within N working minutes.

Several missed calls from one number before anyone talks to it are one problem: the finding is
on the first of them, and an answered call with the number resolves it.

Past the look-back window a finding nobody returned EXPIRES: it is not fixed, and keeping it open
would count one client twice, since the next miss from the number, no longer a repeat of one
inside the window, opens a finding of its own.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import Field
from sqlalchemy import Select, String, and_, cast, func, select, true

from app import wording
from app.calendar.business import humanize
from app.calls import facts
from app.calls.models import Call
from app.mirror.models import Deal

from .base import RenderContext, Rule, RuleContext, RuleSettings, moment


class Settings(RuleSettings):
    minutes: int = Field(default=30, ge=1, le=43200, description="working minutes to call back")
    lookback_days: int = Field(default=3, ge=1, le=30, description="older missed calls are not judged")


def violations(ctx: RuleContext) -> Select[Any]:
    st = ctx.settings
    missed = Call.__table__.alias("missed")
    other = Call.__table__.alias("other")
    answered = Call.__table__.alias("answered")
    same = [other.c.account_id == missed.c.account_id, other.c.client_number == missed.c.client_number]
    returned = (
        select(answered.c.id)
        .where(
            answered.c.account_id == missed.c.account_id,
            answered.c.client_number == missed.c.client_number,
            answered.c.status == "answered",
            answered.c.started_at > missed.c.started_at,
        )
        .exists()
    )
    # The last conversation with the number before this missed call: earlier misses after it
    # make this one a repeat of the same problem. It sits two levels below `missed` (inside the
    # `repeat` EXISTS), where SQLAlchemy would not correlate it by itself: it would read every
    # call's last talk instead of this number's.
    last_talk = (
        select(func.max(answered.c.started_at))
        .where(
            answered.c.account_id == missed.c.account_id,
            answered.c.client_number == missed.c.client_number,
            answered.c.status == "answered",
            answered.c.started_at < missed.c.started_at,
        )
        .correlate_except(answered)
        .scalar_subquery()
    )
    since = ctx.lookback(timedelta(days=st.lookback_days))
    repeat = (
        select(other.c.id)
        .where(
            *same,
            other.c.direction == "in",
            other.c.is_final == true(),
            other.c.status != "answered",
            other.c.started_at < missed.c.started_at,
            other.c.started_at >= since,
            other.c.started_at > func.coalesce(last_talk, since),
        )
        .exists()
    )
    owner = (
        select(Deal.responsible_user_id)
        .where(Deal.account_id == missed.c.account_id, Deal.id == missed.c.deal_id)
        .scalar_subquery()
    )
    ended = func.coalesce(missed.c.ended_at, missed.c.started_at)
    window = ctx.account_cutoff(st.minutes * 60)
    query = select(
        cast(missed.c.id, String(64)).label("entity_id"),
        missed.c.deal_id.label("deal_id"),
        func.coalesce(missed.c.manager_id, owner).label("manager_id"),
        ended.label("started_at"),
        (ended <= window).label("opens"),
    ).where(
        missed.c.account_id == ctx.account_id,
        missed.c.direction == "in",
        missed.c.is_final == true(),
        missed.c.status != "answered",
        missed.c.client_number.is_not(None),
        missed.c.started_at >= since,
        *ctx.entity_scope(missed.c.id, int),
        ~returned,
    )
    if not ctx.unbounded:
        # (The re-check past the window asks only whether this miss was returned: it opened
        # as the first of its misses inside the window, whatever came before that.)
        query = query.where(~repeat)
    return query.where(*ctx.in_deal_scope(missed.c.deal_id))


def timing(ctx: RuleContext) -> list[Select[Any]]:
    """A missed call not returned opens once its window has passed and expires when it leaves the
    look-back window; and a repeat miss counts on its own once the misses before it have left
    the window (a moment of each earlier miss, on the later one's deal)."""
    st = ctx.settings
    days = float(st.lookback_days * 86400)
    window = ctx.account_cutoff(st.minutes * 60)
    pending = violations(ctx).subquery()
    missed = Call.__table__.alias("missed")
    earlier = Call.__table__.alias("earlier")
    since = ctx.lookback(timedelta(days=st.lookback_days))
    unreturned = [
        missed.c.account_id == ctx.account_id,
        missed.c.direction == "in",
        missed.c.is_final == true(),
        missed.c.status != "answered",
        missed.c.client_number.is_not(None),
        missed.c.started_at >= since,
        *ctx.in_deal_scope(missed.c.deal_id),
    ]
    return [
        select(*moment(pending.c.deal_id, pending.c.started_at, float(st.minutes * 60), True)).where(
            pending.c.started_at > window
        ),
        select(*moment(missed.c.deal_id, missed.c.started_at, days, False)).where(*unreturned),
        select(*moment(missed.c.deal_id, earlier.c.started_at, days, False))
        .select_from(missed)
        .join(
            earlier,
            and_(
                earlier.c.account_id == missed.c.account_id,
                earlier.c.client_number == missed.c.client_number,
                earlier.c.direction == "in",
                earlier.c.is_final == true(),
                earlier.c.status != "answered",
                earlier.c.started_at < missed.c.started_at,
                earlier.c.started_at >= since,
            ),
        )
        .where(*unreturned),
    ]


def render(finding: Any, rc: RenderContext) -> tuple[str, dict[str, Any]]:
    call = rc.calls.get(finding.entity_id)
    number = facts.pretty_number(call.client_number if call else None)
    when = facts.local_time(call, rc.calendar.config.timezone) if call else "?"
    waited = humanize(rc.calendar.working_seconds(finding.started_at, rc.now), rc.calendar.day_seconds, rc.lang)
    message = (
        wording.of(rc.lang).RULE_MESSAGES["missed_call_not_returned"].format(number=number, when=when, waited=waited)
    )
    return message, facts.details(call)


RULE = Rule(
    name="missed_call_not_returned",
    version=1,
    entity_type="call",
    severity="critical",
    title=wording.titles("missed_call_not_returned"),
    settings=Settings,
    violations=violations,
    render=render,
    timing=timing,
    past_window="expire",
)
