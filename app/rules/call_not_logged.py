"""call_not_logged: an answered call with a client (talk ≥ 40 s, the articles' "successful
contact") that the manager did not write down on the matched card within N working minutes:
no note, no stage move, no task set or closed by them on that deal since the call ended.

Something written later still counts: the finding opens when the window has passed with
nothing, and resolves as soon as the card says something.

Past the look-back window a call still not written down EXPIRES: days later nobody writes down
a conversation from memory, and the finding stays on record as not fixed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import Field
from sqlalchemy import Select, String, and_, cast, false, or_, select, true

from app import wording
from app.calls import facts
from app.calls.models import Call
from app.mirror.models import Deal, Note, StageHistory, Task

from .base import RenderContext, Rule, RuleContext, RuleSettings, moment

# Notes crmwatch itself writes carry one of these marks (app/outbox/senders.py: the call log's
# "#cw<id>", a finding note's link to its page ".../f/<id>-…"): they are not the manager's words.
OWN_MARKERS = ("#cw", "/f/")


class Settings(RuleSettings):
    minutes: int = Field(default=30, ge=1, le=43200, description="working minutes after the call ended")
    min_talk_seconds: int = Field(default=40, ge=1, le=3600, description="a shorter call is not a conversation")
    lookback_days: int = Field(default=3, ge=1, le=30, description="older calls are not judged")


def _by_manager(author: Any) -> Any:
    # An author the CRM did not name is given the benefit of the doubt.
    return or_(author == Call.manager_id, author.is_(None))


def violations(ctx: RuleContext) -> Select[Any]:
    st = ctx.settings
    since = Call.ended_at
    note = (
        select(Note.id)
        .where(
            Note.account_id == Call.account_id,
            Note.deal_id == Call.deal_id,
            Note.kind == "common",
            Note.created_at >= since,
            _by_manager(Note.created_by),
            or_(Note.text.is_(None), and_(*(~Note.text.contains(m) for m in OWN_MARKERS))),
        )
        .exists()
    )
    moved = (
        select(StageHistory.id)
        .where(
            StageHistory.account_id == Call.account_id,
            StageHistory.deal_id == Call.deal_id,
            StageHistory.entered_at >= since,
            _by_manager(StageHistory.by_user_id),
        )
        .exists()
    )
    task = (
        select(Task.id)
        .where(
            Task.account_id == Call.account_id,
            Task.deal_id == Call.deal_id,
            Task.is_deleted == false(),
            or_(
                and_(Task.created_at >= since, _by_manager(Task.created_by)),
                and_(Task.is_completed == true(), Task.completed_at >= since, _by_manager(Task.responsible_user_id)),
            ),
        )
        .exists()
    )
    window = ctx.cutoff(lambda s: s.minutes * 60)
    return (
        select(
            cast(Call.id, String(64)).label("entity_id"),
            Call.deal_id.label("deal_id"),
            Call.manager_id.label("manager_id"),
            Call.ended_at.label("started_at"),
            (Call.ended_at <= window).label("opens"),
        )
        .join(Deal, and_(Deal.account_id == Call.account_id, Deal.id == Call.deal_id))
        .where(
            *ctx.deal_scope(),
            Deal.is_deleted == false(),
            Call.account_id == ctx.account_id,
            Call.is_final == true(),
            Call.status == "answered",
            Call.direction.is_distinct_from("internal"),
            Call.talk_seconds >= st.min_talk_seconds,
            Call.manager_id.is_not(None),
            Call.ended_at >= ctx.lookback(timedelta(days=st.lookback_days)),
            *ctx.entity_scope(Call.id, int),
            ~note,
            ~moved,
            ~task,
        )
    )


def timing(ctx: RuleContext) -> list[Select[Any]]:
    """A call not written down opens once its window has passed, and leaves the look-back
    window (and expires) `lookback_days` after it ended."""
    window = ctx.cutoff(lambda s: s.minutes * 60)
    seconds = ctx.per_stage(lambda s: s.minutes * 60.0)
    days = float(ctx.settings.lookback_days * 86400)
    return [
        violations(ctx)
        .with_only_columns(*moment(Call.deal_id, Call.ended_at, seconds, True))
        .where(Call.ended_at > window),
        violations(ctx).with_only_columns(*moment(Call.deal_id, Call.ended_at, days, False)),
    ]


def sweep_timing(ctx: RuleContext, active: Any) -> list[Select[Any]]:
    """timing() for a sweep: the calls not written down are this rule's active findings, ended at
    their started_at (no second run of the searches for a note, a stage move or a task)."""
    window = ctx.cutoff(lambda s: s.minutes * 60)
    seconds = ctx.per_stage(lambda s: s.minutes * 60.0)
    days = float(ctx.settings.lookback_days * 86400)
    since = ctx.lookback(timedelta(days=ctx.settings.lookback_days))

    def rows(after: Any, working: bool) -> Select[Any]:
        query = select(*moment(active.c.deal_id, active.c.started_at, after, working)).select_from(active)
        return ctx.with_stage(query, active.c.deal_id).where(active.c.started_at >= since)

    return [rows(seconds, True).where(active.c.started_at > window), rows(days, False)]


def render(finding: Any, rc: RenderContext) -> tuple[str, dict[str, Any]]:
    call = rc.calls.get(finding.entity_id)
    number = facts.pretty_number(call.client_number if call else None)
    when = facts.local_time(call, rc.calendar.config.timezone) if call else "?"
    talk = facts.duration(call.talk_seconds if call else 0, rc.lang)
    message = wording.of(rc.lang).RULE_MESSAGES["call_not_logged"].format(number=number, when=when, talk=talk)
    return message, facts.details(call)


RULE = Rule(
    name="call_not_logged",
    version=1,
    entity_type="call",
    severity="warning",
    title=wording.titles("call_not_logged"),
    settings=Settings,
    violations=violations,
    render=render,
    timing=timing,
    sweep_timing=sweep_timing,
    past_window="expire",
)
