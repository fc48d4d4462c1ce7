"""lead_not_contacted: speed to lead. A new deal nobody contacted within N working minutes of its
creation: no outgoing call and no answered call with the client (a call bound to the deal, or
with a number of any of the deal's contacts), and no note on the deal.

A deal created outside working hours is counted from the next working minute (working time, as
every duration here). A call still going when the deal was created counts: the lead often comes
from that very call.

Only deals created within the look-back window (`lookback_days` working days, 1, on top of the
`minutes`) are judged, so connecting an account does not flag its whole history. Past the window a lead still not
contacted is KEPT open: it is the very lead the rule is about, and only a contact, the deal
closing or a person ends it.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from pydantic import Field
from sqlalchemy import ColumnElement, Select, and_, case, func, or_, select

from app import wording
from app.calendar.business import humanize
from app.calls.models import Call
from app.mirror.models import ContactPhone, Deal, DealContact, Note

from .base import RenderContext, Rule, RuleContext, RuleSettings, moment

# Notes crmwatch itself writes carry one of call_not_logged's OWN_MARKERS (app/outbox): they are not a contact.
from .call_not_logged import OWN_MARKERS


class Settings(RuleSettings):
    minutes: int = Field(default=15, ge=1, le=43200, description="working minutes from the deal's creation")
    lookback_days: int = Field(default=1, ge=1, le=30, description="working days: deals created earlier are not judged")


def is_contact(call: Any) -> ColumnElement[bool]:
    """A call that is a contact with the client: outgoing (an attempt counts), or answered."""
    return and_(call.direction.is_distinct_from("internal"), or_(call.direction == "out", call.status == "answered"))


def contact_at(call: Any, created: Any) -> tuple[ColumnElement[bool], ColumnElement[Any]]:
    """(the call counts for a deal created at `created`, the moment of that contact): a call that
    had not ended when the deal was created counts, from the deal's creation."""
    counts = and_(is_contact(call), func.coalesce(call.ended_at, call.started_at) >= created)
    return counts, case((call.started_at < created, created), else_=call.started_at)


def by_number(deal_id: Any, account_id: Any) -> Any:
    """Calls with a number of one of the deal's contacts (FROM calls JOIN phones JOIN deal contacts)."""
    return (
        select(Call)
        .join(ContactPhone, and_(ContactPhone.account_id == Call.account_id, ContactPhone.phone == Call.client_number))
        .join(
            DealContact,
            and_(DealContact.account_id == ContactPhone.account_id, DealContact.contact_id == ContactPhone.contact_id),
        )
        .where(DealContact.account_id == account_id, DealContact.deal_id == deal_id)
    )


def own_note(note: Any) -> ColumnElement[bool]:
    return and_(note.text.is_not(None), or_(*(note.text.contains(m) for m in OWN_MARKERS)))


def violations(ctx: RuleContext) -> Select[Any]:
    counts, _ = contact_at(Call, Deal.created_at)
    bound = select(Call.id).where(Call.account_id == Deal.account_id, Call.deal_id == Deal.id, counts).exists()
    numbered = by_number(Deal.id, Deal.account_id).with_only_columns(Call.id).where(counts).exists()
    noted = (
        select(Note.id)
        .where(
            Note.account_id == Deal.account_id,
            Note.deal_id == Deal.id,
            Note.kind == "common",
            Note.created_at >= Deal.created_at,
            ~own_note(Note),
        )
        .exists()
    )
    # The window runs on past the deadline, so a long `minutes` still gets its chance to open.
    since = ctx.lookback_working(lambda st: st.lookback_days * ctx.calendar.day_seconds + st.minutes * 60)
    deadline = ctx.cutoff(lambda st: st.minutes * 60)
    return select(
        Deal.id.label("entity_id"),
        Deal.id.label("deal_id"),
        Deal.responsible_user_id.label("manager_id"),
        Deal.created_at.label("started_at"),
        (Deal.created_at <= deadline).label("opens"),
    ).where(
        *ctx.open_deal(),
        Deal.created_at.is_not(None),
        Deal.created_at >= since,
        *ctx.entity_scope(Deal.id),
        ~bound,
        ~numbered,
        ~noted,
    )


def timing(ctx: RuleContext) -> list[Select[Any]]:
    """A lead nobody contacted yet opens `minutes` working minutes after the deal was created.
    (Leaving the look-back window changes nothing: such a finding is kept.)"""
    deadline = ctx.cutoff(lambda st: st.minutes * 60)
    seconds = ctx.per_stage(lambda st: st.minutes * 60.0)
    return [
        violations(ctx)
        .with_only_columns(*moment(Deal.id, Deal.created_at, seconds, True))
        .where(Deal.created_at > deadline)
    ]


def render(finding: Any, rc: RenderContext) -> tuple[str, dict[str, Any]]:
    waited = rc.calendar.working_seconds(finding.started_at, rc.now)
    local = finding.started_at.astimezone(ZoneInfo(rc.calendar.config.timezone))
    message = (
        wording.of(rc.lang)
        .RULE_MESSAGES["lead_not_contacted"]
        .format(when=local.strftime("%d.%m %H:%M"), waited=humanize(waited, rc.calendar.day_seconds, rc.lang))
    )
    return message, {"created_at": finding.started_at.isoformat(), "waited_working_seconds": int(waited)}


RULE = Rule(
    name="lead_not_contacted",
    version=1,
    entity_type="deal",
    severity="critical",
    title=wording.titles("lead_not_contacted"),
    settings=Settings,
    violations=violations,
    render=render,
    timing=timing,
    past_window="keep",
)
