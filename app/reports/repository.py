"""Every query of the reports: set-based SQL over the mirror, the calls and the findings.

Each function returns rows grouped in the database (per manager, per local day, per stage); the
service only adds them up and names them. `managers` is the scope: None for the whole team, else
the only manager ids a caller may see.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import (
    Select,
    String,
    and_,
    case,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.calls.models import Call
from app.calls.service import SUCCESSFUL_TALK_SECONDS
from app.db import UtcDateTime, epoch, local_day, local_day_within, local_month
from app.findings.models import Finding, FindingEvent
from app.mirror.models import Company, Contact, ContactPhone, Deal, DealContact, Note, Stage, StageHistory, Task, User
from app.mirror.repository import closed_between, deal_stage
from app.rules.lead_not_contacted import contact_at, own_note

# Beyond any open stage's sort: where "won" lies in the pipeline for stage-to-stage conversion.
WON_DEPTH = 2**31 - 1
# A finding a person should see: opened (past its grace period) and not yet resolved.
OPEN_FINDING = ("open", "acknowledged", "snoozed")


def _zone(timezone: str) -> Any:
    return literal(timezone, String())


def _scope(col: Any, managers: Sequence[str] | None) -> Any:
    if managers is None:
        return col.is_not(None)
    return col.in_(list(managers)) if managers else false()


def _count(condition: Any) -> Any:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


# --- people ------------------------------------------------------------------------------------


async def users(s: AsyncSession, account_id: int) -> dict[str, tuple[str | None, bool]]:
    rows = await s.execute(select(User.id, User.name, User.is_active).where(User.account_id == account_id))
    return {r.id: (r.name, r.is_active) for r in rows}


# --- telephony and card changes, per manager per local day ---------------------------------------


def _period_calls(
    account_id: int, timezone: str | None, start: datetime, end: datetime, managers: Sequence[str] | None
) -> Any:
    """The period's final calls (manager, local day when `timezone` is given, direction, answered,
    talk). Every final call counts, whichever way it arrived (live hook, backfill, CRM telephony)."""
    day = [] if timezone is None else [local_day_within(Call.started_at, timezone, start, end).label("day")]
    return (
        select(
            Call.manager_id.label("manager_id"),
            *day,
            Call.direction.label("direction"),
            (Call.status == "answered").label("answered"),
            func.coalesce(Call.talk_seconds, 0).label("talk"),
        )
        .where(
            Call.account_id == account_id,
            _scope(Call.manager_id, managers),
            Call.is_final.is_(True),
            Call.direction.is_distinct_from("internal"),
            Call.started_at >= start,
            Call.started_at < end,
        )
        .subquery()
    )


def _call_figures(c: Any) -> list[Any]:
    return [
        func.count().label("calls"),
        func.coalesce(func.sum(case((c.answered, c.talk), else_=0)), 0).label("talk_seconds"),
        _count(and_(c.answered, c.talk >= SUCCESSFUL_TALK_SECONDS)).label("successful_calls"),
        _count(c.direction == "in").label("incoming"),
        _count(c.direction == "out").label("outgoing"),
        _count(and_(c.direction == "in", c.answered.is_(False))).label("missed"),
    ]


async def call_days(
    s: AsyncSession, account_id: int, timezone: str, start: datetime, end: datetime, managers: Sequence[str] | None
) -> list[Any]:
    """Calls, talk seconds, successful, incoming, outgoing and missed per (manager, local day)."""
    c = _period_calls(account_id, timezone, start, end, managers).c
    return list(await s.execute(select(c.manager_id, c.day, *_call_figures(c)).group_by(c.manager_id, c.day)))


async def call_totals(
    s: AsyncSession, account_id: int, start: datetime, end: datetime, managers: Sequence[str] | None
) -> list[Any]:
    """The same figures per manager over the whole period: the team table's. The period already
    runs from one local midnight to another, so no call's local day is worked out (a time zone
    conversion per call, and thirty times the rows to add up)."""
    c = _period_calls(account_id, None, start, end, managers).c
    return list(await s.execute(select(c.manager_id, *_call_figures(c)).group_by(c.manager_id)))


def _touches(account_id: int, start: datetime, end: datetime, managers: Sequence[str] | None) -> Any:
    """(manager, deal, at) for each thing a manager did on a deal card: a note written, a stage
    moved, a task set, a task closed (the CRM does not say who closed it: its responsible)."""
    return union_all(
        select(Note.created_by.label("manager_id"), Note.deal_id.label("deal_id"), Note.created_at.label("at")).where(
            Note.account_id == account_id,
            _scope(Note.created_by, managers),
            Note.kind == "common",
            Note.deal_id.is_not(None),
            Note.created_at >= start,
            Note.created_at < end,
        ),
        select(StageHistory.by_user_id, StageHistory.deal_id, StageHistory.entered_at).where(
            StageHistory.account_id == account_id,
            _scope(StageHistory.by_user_id, managers),
            StageHistory.entered_at >= start,
            StageHistory.entered_at < end,
        ),
        select(Task.created_by, Task.deal_id, Task.created_at).where(
            Task.account_id == account_id,
            _scope(Task.created_by, managers),
            Task.deal_id.is_not(None),
            Task.created_at >= start,
            Task.created_at < end,
        ),
        select(Task.responsible_user_id, Task.deal_id, Task.completed_at).where(
            Task.account_id == account_id,
            _scope(Task.responsible_user_id, managers),
            Task.deal_id.is_not(None),
            Task.completed_at >= start,
            Task.completed_at < end,
        ),
    ).subquery()


def _cards_per_day(
    account_id: int, timezone: str, start: datetime, end: datetime, managers: Sequence[str] | None
) -> Any:
    """(manager, local day, deal) once for each deal a manager changed that day."""
    t = _touches(account_id, start, end, managers)
    # Every branch of the touches is bounded to [start, end).
    day = local_day_within(t.c.at, timezone, start, end)
    per_day = select(t.c.manager_id, day.label("day"), t.c.deal_id).subquery()
    return select(per_day.c.manager_id, per_day.c.day, per_day.c.deal_id).distinct().subquery()


async def cards_changed_days(
    s: AsyncSession, account_id: int, timezone: str, start: datetime, end: datetime, managers: Sequence[str] | None
) -> list[Any]:
    """Distinct deals each manager changed, per local day."""
    d = _cards_per_day(account_id, timezone, start, end, managers).c
    return list(
        await s.execute(select(d.manager_id, d.day, func.count().label("cards_changed")).group_by(d.manager_id, d.day))
    )


async def cards_changed_totals(
    s: AsyncSession, account_id: int, timezone: str, start: datetime, end: datetime, managers: Sequence[str] | None
) -> list[Any]:
    """Per manager, the sum over the period's days of the deals changed that day (a card changed on
    two days counts twice, as in the daily table): added up in the database, not in Python."""
    d = _cards_per_day(account_id, timezone, start, end, managers).c
    return list(await s.execute(select(d.manager_id, func.count().label("cards_changed")).group_by(d.manager_id)))


# --- the state right now ---------------------------------------------------------------------------


async def open_findings(s: AsyncSession, account_id: int, managers: Sequence[str] | None) -> list[Any]:
    stmt = (
        select(Finding.manager_id, Finding.rule, func.count().label("n"))
        .where(
            Finding.account_id == account_id,
            Finding.status.in_(OPEN_FINDING),
            _scope(Finding.manager_id, managers),
        )
        .group_by(Finding.manager_id, Finding.rule)
    )
    return list(await s.execute(stmt))


# `= false`, not `IS false`: PostgreSQL reads `x = false` as `NOT x`, which is what the partial
# indexes on open deals and open tasks say (ix_deals_open_by_manager, ix_tasks_open_by_deal), so
# it may use them; `IS false` never matches them. Both mean the same here (the flags are never NULL).
def _open_task() -> Any:
    return and_(Task.is_completed == false(), Task.is_deleted == false())


def _open_deal(alias: Any = Deal) -> Any:
    return and_(alias.is_closed == false(), alias.is_deleted == false())


async def hygiene(s: AsyncSession, account_id: int, now: datetime, managers: Sequence[str] | None) -> dict[str, Any]:
    """Open deals, deals without an open task, open tasks and overdue open tasks per manager."""
    # "Has an open task" as an uncorrelated IN: PostgreSQL reads the open tasks' deal ids once
    # (index-only, ix_tasks_open_by_deal) into a hash table that each open deal probes (the deals
    # index-only too, ix_deals_open_by_manager). It was a DISTINCT of those ids hash-joined to a
    # sequential scan of all deals: three times slower on the bench.
    with_task = select(Task.deal_id).where(Task.account_id == account_id, Task.deal_id.is_not(None), _open_task())
    deals = await s.execute(
        select(
            Deal.responsible_user_id.label("manager_id"),
            func.count().label("open_deals"),
            _count(Deal.id.not_in(with_task)).label("deals_without_task"),
        )
        .where(Deal.account_id == account_id, _open_deal(), _scope(Deal.responsible_user_id, managers))
        .group_by(Deal.responsible_user_id)
    )
    tasks = await s.execute(
        select(
            Task.responsible_user_id.label("manager_id"),
            func.count().label("open_tasks"),
            _count(Task.due_at < now).label("overdue_tasks"),
        )
        .where(Task.account_id == account_id, _open_task(), _scope(Task.responsible_user_id, managers))
        .group_by(Task.responsible_user_id)
    )
    out: dict[str, dict[str, int]] = {}
    for r in deals:
        out.setdefault(r.manager_id, {}).update(
            open_deals=int(r.open_deals), deals_without_task=int(r.deals_without_task)
        )
    for r in tasks:
        out.setdefault(r.manager_id, {}).update(open_tasks=int(r.open_tasks), overdue_tasks=int(r.overdue_tasks))
    return out


# --- findings over time ----------------------------------------------------------------------------


def _finding_deltas(account_id: int, managers: Sequence[str] | None) -> Select[Any]:
    """Each finding transition that changes how many findings are open: +1 when one opens (first
    time, after its grace period, or again after resolving or expiring), -1 when an opened one
    resolves or expires. Expired (past the rule's look-back window, unfixed) is never a fix: it
    is counted apart from resolved."""
    opened = and_(
        FindingEvent.to_status == "open",
        or_(FindingEvent.from_status.is_(None), FindingEvent.from_status.in_(("pending", "resolved", "expired"))),
    )
    resolved = and_(FindingEvent.to_status == "resolved", FindingEvent.from_status.in_(OPEN_FINDING))
    expired = and_(FindingEvent.to_status == "expired", FindingEvent.from_status.in_(OPEN_FINDING))
    return (
        select(
            Finding.rule.label("rule"),
            FindingEvent.at.label("at"),
            case((opened, 1), else_=0).label("opened"),
            case((resolved, 1), else_=0).label("resolved"),
            case((expired, 1), else_=0).label("expired"),
        )
        .join(Finding, Finding.id == FindingEvent.finding_id)
        .where(Finding.account_id == account_id, _scope(Finding.manager_id, managers), or_(opened, resolved, expired))
    )


async def finding_days(
    s: AsyncSession, account_id: int, timezone: str, start: datetime, end: datetime, managers: Sequence[str] | None
) -> list[Any]:
    d = _finding_deltas(account_id, managers).where(FindingEvent.at >= start, FindingEvent.at < end).subquery()
    per = select(
        d.c.rule, local_day(d.c.at, _zone(timezone)).label("day"), d.c.opened, d.c.resolved, d.c.expired
    ).subquery()
    return list(
        await s.execute(
            select(
                per.c.rule,
                per.c.day,
                func.sum(per.c.opened).label("opened"),
                func.sum(per.c.resolved).label("resolved"),
                func.sum(per.c.expired).label("expired"),
            ).group_by(per.c.rule, per.c.day)
        )
    )


async def findings_open_before(
    s: AsyncSession, account_id: int, start: datetime, managers: Sequence[str] | None
) -> dict[str, int]:
    d = _finding_deltas(account_id, managers).where(FindingEvent.at < start).subquery()
    rows = await s.execute(select(d.c.rule, func.sum(d.c.opened - d.c.resolved - d.c.expired)).group_by(d.c.rule))
    return {r[0]: int(r[1] or 0) for r in rows}


# --- drill-down ------------------------------------------------------------------------------------


async def finding_deals(
    s: AsyncSession,
    account_id: int,
    managers: Sequence[str] | None,
    rule: str | None,
    manager_id: str | None,
    limit: int,
) -> list[Any]:
    """The deals behind open findings, each with its open rules, largest problem first."""
    where = [
        Finding.account_id == account_id,
        Finding.status.in_(OPEN_FINDING),
        Finding.deal_id.is_not(None),
        _scope(Finding.manager_id, managers),
    ]
    if rule is not None:
        where.append(Finding.rule == rule)
    if manager_id is not None:
        where.append(Finding.manager_id == manager_id)
    stmt = (
        select(
            Finding.deal_id,
            Finding.manager_id,
            Finding.rule,
            Finding.opened_at,
            Deal.name,
            Deal.price,
            Deal.pipeline_id,
            Deal.stage_id,
            Stage.name.label("stage_name"),
        )
        .outerjoin(Deal, and_(Deal.account_id == Finding.account_id, Deal.id == Finding.deal_id))
        .outerjoin(Stage, deal_stage())
        .where(*where)
        .order_by(Finding.opened_at, Finding.deal_id)
        .limit(limit)
    )
    return list(await s.execute(stmt))


# --- the funnel --------------------------------------------------------------------------------------


async def stages(s: AsyncSession, account_id: int, pipeline_id: str) -> list[Stage]:
    return list(
        await s.scalars(
            select(Stage)
            .where(Stage.account_id == account_id, Stage.pipeline_id == pipeline_id)
            .order_by(Stage.sort, Stage.id)
        )
    )


async def open_by_stage(
    s: AsyncSession, account_id: int, pipeline_id: str, managers: Sequence[str] | None
) -> list[Any]:
    """Open deals and their amount per (manager, stage): the stage table and the bottleneck."""
    stmt = (
        select(
            Deal.responsible_user_id.label("manager_id"),
            Deal.stage_id,
            func.count().label("n"),
            func.coalesce(func.sum(Deal.price), 0).label("amount"),
        )
        .where(
            Deal.account_id == account_id,
            Deal.pipeline_id == pipeline_id,
            _open_deal(),
            *([] if managers is None else [_scope(Deal.responsible_user_id, managers)]),
        )
        .group_by(Deal.responsible_user_id, Deal.stage_id)
    )
    return list(await s.execute(stmt))


def _returning() -> Any:
    """The deal's client (any of its contacts) has an earlier deal."""
    mine, theirs, earlier = aliased(DealContact), aliased(DealContact), aliased(Deal)
    return exists().where(
        mine.account_id == Deal.account_id,
        mine.deal_id == Deal.id,
        theirs.account_id == mine.account_id,
        theirs.contact_id == mine.contact_id,
        theirs.deal_id != Deal.id,
        earlier.account_id == theirs.account_id,
        earlier.id == theirs.deal_id,
        earlier.is_deleted.is_(False),
        earlier.created_at < Deal.created_at,
    )


def _closed_in(
    account_id: int, pipeline_id: str, start: datetime, end: datetime, managers: Sequence[str] | None
) -> list[Any]:
    return [
        Deal.account_id == account_id,
        Deal.pipeline_id == pipeline_id,
        *closed_between(start, end),
        *([] if managers is None else [_scope(Deal.responsible_user_id, managers)]),
    ]


async def closed(
    s: AsyncSession, account_id: int, pipeline_id: str, start: datetime, end: datetime, managers: Sequence[str] | None
) -> list[Any]:
    """Deals closed in the period per (manager, won|lost, new|returning client): count and amount."""
    inner = (
        select(
            Deal.responsible_user_id.label("manager_id"),
            Stage.kind.label("kind"),
            _returning().label("is_returning"),
            func.coalesce(Deal.price, 0).label("price"),
        )
        .join(Stage, deal_stage())
        .where(*_closed_in(account_id, pipeline_id, start, end, managers), Stage.kind.in_(("won", "lost")))
        .subquery()
    )
    c = inner.c
    return list(
        await s.execute(
            select(
                c.manager_id, c.kind, c.is_returning, func.count().label("n"), func.sum(c.price).label("amount")
            ).group_by(c.manager_id, c.kind, c.is_returning)
        )
    )


async def earliest_created(
    s: AsyncSession, account_id: int, pipeline_id: str, start: datetime, end: datetime, managers: Sequence[str] | None
) -> datetime | None:
    # Grouped by the account (one group, or none): without a GROUP BY PostgreSQL answers min() by
    # walking ix_deals_created from the oldest deal until one closed in the period turns up, which
    # is most of the deals (75 ms on the bench); grouped, it reads the period's closed deals only.
    return await s.scalar(
        select(func.min(Deal.created_at))
        .where(*_closed_in(account_id, pipeline_id, start, end, managers))
        .group_by(Deal.account_id)
    )


def _worked(at: Any, timezone: str, table: Any) -> tuple[Any, Any]:
    """(alias of the working table joined on the date of `at`, working seconds up to `at`)."""
    w = table.alias()
    offset = epoch(at) - w.c.ws
    clamp = case((offset < 0, 0.0), (offset > w.c.len, w.c.len), else_=offset)
    return w, w.c.cum + clamp


async def stage_figures(
    s: AsyncSession,
    account_id: int,
    pipeline_id: str,
    start: datetime,
    end: datetime,
    now: datetime,
    timezone: str,
    table: Any,
    managers: Sequence[str] | None,
) -> list[Any]:
    """Per open stage of the pipeline, over the deals that entered it in the period:

    - `seconds`: the average working seconds a deal spent in it (its visits to one stage added
      up, so a deal that came back counts once, with both stays). A stay ends at the deal's next
      entry, or now while it is still there; a deal the history knows nothing of stays in its
      current stage since stage_entered_at;
    - `entered` and `moved_on`: the deals whose history shows them entering it, and how many of
      them later entered a stage after it (an open stage further down the pipeline, or won).

    One statement, one window over the period's stage entries and one join to the deals for both
    figures (they were two statements reading the same entries twice)."""
    # How far down the pipeline each entry is: an open stage by its sort, won beyond them all, lost
    # nowhere. Both the stay's end (the next entry) and how deep the deal went afterwards are windows
    # over the deal's entries from the period's start on, not its whole history.
    stage, here = aliased(Stage), aliased(Stage)
    depth = case((stage.kind == "won", WON_DEPTH), (stage.kind == "open", stage.sort), else_=None)
    order = (StageHistory.entered_at, StageHistory.id)
    entries = (
        select(
            StageHistory.deal_id.label("deal_id"),
            StageHistory.stage_id.label("stage_id"),
            StageHistory.entered_at.label("entered"),
            func.lead(StageHistory.entered_at).over(partition_by=StageHistory.deal_id, order_by=order).label("next_at"),
            func.max(depth)
            .over(partition_by=StageHistory.deal_id, order_by=order, rows=(1, None))
            .label("deepest_after"),
        )
        .outerjoin(
            stage,
            and_(stage.account_id == account_id, stage.pipeline_id == pipeline_id, stage.id == StageHistory.stage_id),
        )
        .where(StageHistory.account_id == account_id, StageHistory.entered_at >= start)
        .subquery()
    )
    deal_scope = [
        Deal.account_id == account_id,
        Deal.pipeline_id == pipeline_id,
        Deal.is_deleted.is_(False),
        *([] if managers is None else [_scope(Deal.responsible_user_id, managers)]),
    ]
    open_here = and_(here.account_id == account_id, here.pipeline_id == pipeline_id, here.kind == "open")
    from_history = (
        select(
            entries.c.deal_id,
            entries.c.stage_id,
            entries.c.entered,
            func.coalesce(entries.c.next_at, literal(now, UtcDateTime())).label("left_at"),
            case((entries.c.deepest_after > here.sort, 1), else_=0).label("moved_on"),
            literal(1).label("seen"),
        )
        .join(Deal, Deal.id == entries.c.deal_id)
        .join(here, and_(open_here, here.id == entries.c.stage_id))
        .where(entries.c.entered < end, *deal_scope)
    )
    no_history = (
        select(Deal.id, Deal.stage_id, Deal.stage_entered_at, literal(now, UtcDateTime()), literal(0), literal(0))
        .join(here, and_(open_here, here.id == Deal.stage_id))
        .where(
            *deal_scope,
            _open_deal(),
            Deal.stage_entered_at >= start,
            Deal.stage_entered_at < end,
            ~exists().where(StageHistory.account_id == Deal.account_id, StageHistory.deal_id == Deal.id),
        )
    )
    st = union_all(from_history, no_history).subquery()
    w1, w_in = _worked(st.c.entered, timezone, table)
    w2, w_out = _worked(st.c.left_at, timezone, table)
    # Outer joins: an instant the working table does not cover (a clock ahead of ours) leaves the
    # stay out of the average but not its deal out of the conversion.
    per_deal = (
        select(
            st.c.stage_id,
            st.c.deal_id,
            func.sum(w_out - w_in).label("seconds"),
            func.max(st.c.moved_on).label("moved_on"),
            func.max(st.c.seen).label("seen"),
        )
        .select_from(st)
        .outerjoin(w1, w1.c.day == local_day(st.c.entered, _zone(timezone)))
        .outerjoin(w2, w2.c.day == local_day(st.c.left_at, _zone(timezone)))
        .group_by(st.c.stage_id, st.c.deal_id)
        .subquery()
    )
    return list(
        await s.execute(
            select(
                per_deal.c.stage_id,
                func.avg(per_deal.c.seconds).label("seconds"),
                func.sum(per_deal.c.seen).label("entered"),
                func.sum(per_deal.c.moved_on).label("moved_on"),
            ).group_by(per_deal.c.stage_id)
        )
    )


async def funnel_time(
    s: AsyncSession,
    account_id: int,
    pipeline_id: str,
    start: datetime,
    end: datetime,
    timezone: str,
    table: Any,
    managers: Sequence[str] | None,
) -> float | None:
    """Average working seconds from creation to closing of the deals closed in the period."""
    inner = (
        select(Deal.created_at.label("a"), Deal.closed_at.label("b"))
        .where(*_closed_in(account_id, pipeline_id, start, end, managers), Deal.created_at.is_not(None))
        .subquery()
    )
    w1, w_in = _worked(inner.c.a, timezone, table)
    w2, w_out = _worked(inner.c.b, timezone, table)
    value = await s.scalar(
        select(func.avg(w_out - w_in))
        .select_from(inner)
        .join(w1, w1.c.day == local_day(inner.c.a, _zone(timezone)))
        .join(w2, w2.c.day == local_day(inner.c.b, _zone(timezone)))
    )
    return float(value) if value is not None else None


async def first_contact_medians(
    s: AsyncSession,
    account_id: int,
    start: datetime,
    end: datetime,
    timezone: str,
    table: Any,
    managers: Sequence[str] | None,
) -> list[Any]:
    """Per manager (`team` 0), and for them all as one row (`team` 1, manager_id ""): the median
    working seconds from a deal's creation to its first contact, over the deals created in the
    period that have had one. The waits are worked out once (a CTE) for both medians: they were two
    statements doing the same joins. A contact is what lead_not_contacted
    counts: an outgoing or answered call bound to the deal or with a number of its contacts, or a
    note (crmwatch's own aside). The median is the middle row, or the mean of the two middle rows,
    of each manager's deals ranked by that time: window functions both databases have."""
    deals = (
        select(Deal.id.label("id"), Deal.responsible_user_id.label("manager_id"), Deal.created_at.label("created"))
        .where(
            Deal.account_id == account_id,
            Deal.is_deleted.is_(False),
            Deal.created_at >= start,
            Deal.created_at < end,
            _scope(Deal.responsible_user_id, managers),
        )
        # A CTE: read once for the four places below (PostgreSQL materializes a CTE used twice),
        # not once per place.
        .cte("d")
    )
    d = deals.c
    counts, at = contact_at(Call, d.created)
    bound = (
        select(d.id.label("deal_id"), at.label("at"))
        .select_from(deals)
        .join(Call, and_(Call.account_id == account_id, Call.deal_id == d.id))
        .where(counts)
    )
    numbered = (
        select(d.id, at)
        .select_from(deals)
        .join(DealContact, and_(DealContact.account_id == account_id, DealContact.deal_id == d.id))
        .join(
            ContactPhone, and_(ContactPhone.account_id == account_id, ContactPhone.contact_id == DealContact.contact_id)
        )
        .join(Call, and_(Call.account_id == account_id, Call.client_number == ContactPhone.phone))
        .where(counts)
    )
    noted = (
        select(d.id, Note.created_at)
        .select_from(deals)
        .join(Note, and_(Note.account_id == account_id, Note.deal_id == d.id))
        # Implied by the deal's creation in the period, and said so that only the period's notes
        # are read (ix_notes_created), not every note of the account to hash-join them.
        .where(Note.kind == "common", Note.created_at >= d.created, Note.created_at >= start, ~own_note(Note))
    )
    touches = union_all(bound, numbered, noted).subquery("t")
    first = (
        select(touches.c.deal_id, func.min(touches.c.at).label("first_at")).group_by(touches.c.deal_id).subquery("f")
    )
    pairs = (
        select(d.manager_id, d.created, first.c.first_at)
        .select_from(deals)
        .join(first, first.c.deal_id == d.id)
        .subquery("p")
    )
    w1, w_in = _worked(pairs.c.created, timezone, table)
    w2, w_out = _worked(pairs.c.first_at, timezone, table)
    waits = (
        select(pairs.c.manager_id, (w_out - w_in).label("seconds"))
        .select_from(pairs)
        .join(w1, w1.c.day == local_day(pairs.c.created, _zone(timezone)))
        .join(w2, w2.c.day == local_day(pairs.c.first_at, _zone(timezone)))
        .cte("w")
    )
    both = union_all(
        select(literal(0).label("team"), waits.c.manager_id, waits.c.seconds),
        select(literal(1), literal("", String()), waits.c.seconds),
    ).subquery("b")
    group = (both.c.team, both.c.manager_id)
    ranked = select(
        both.c.team,
        both.c.manager_id,
        both.c.seconds,
        func.row_number().over(partition_by=group, order_by=both.c.seconds).label("rn"),
        func.count().over(partition_by=group).label("n"),
    ).subquery("r")
    r = ranked.c
    middle = or_(r.rn == (r.n + 1) // 2, r.rn == (r.n + 2) // 2)
    return list(
        await s.execute(
            select(r.team, r.manager_id, func.avg(r.seconds).label("seconds"), func.max(r.n).label("deals"))
            .where(middle)
            .group_by(r.team, r.manager_id)
        )
    )


# --- ABC/XYZ of clients --------------------------------------------------------------------------------


def _deal_client_contact(account_id: int) -> Any:
    """(deal, client): a deal's client is its contact, the lowest contact id when it has several (the
    mirror does not know which one the CRM calls main), so no deal's revenue counts twice."""
    return (
        select(DealContact.deal_id.label("deal_id"), func.min(DealContact.contact_id).label("client_id"))
        .where(DealContact.account_id == account_id)
        .group_by(DealContact.deal_id)
        .subquery()
    )


async def client_months(
    s: AsyncSession, account_id: int, timezone: str, start: datetime, split: datetime, end: datetime, by: str
) -> list[Any]:
    """Won deals closed in [start, end) per (half, client, local month, responsible manager): revenue
    and the number of deals, with the client's name and responsible manager as the mirror knows them.
    `half` is 0 for deals closed before `split` (the previous period), 1 from it on (the period).
    `by`: "contact" (the deal's contact) or "company" (the deal's company); a deal without one is
    nobody's client and is left out."""
    cards: Any = Contact if by == "contact" else Company
    client_id: Any = Deal.company_id
    if by == "contact":
        contact = _deal_client_contact(account_id)
        client_id = contact.c.client_id
    query = select(
        case((Deal.closed_at >= split, 1), else_=0).label("half"),
        client_id.label("client_id"),
        local_month(Deal.closed_at, _zone(timezone)).label("month"),
        Deal.responsible_user_id.label("manager_id"),
        func.coalesce(Deal.price, 0).label("price"),
    )
    if by == "contact":
        query = query.join(contact, contact.c.deal_id == Deal.id)
    else:
        query = query.where(Deal.company_id.is_not(None))
    inner = (
        query.join(Stage, deal_stage())
        .where(
            Deal.account_id == account_id,
            *closed_between(start, end),
            Stage.kind == "won",
        )
        .subquery()
    )
    c = inner.c
    grouped = (
        select(
            c.half,
            c.client_id,
            c.month,
            c.manager_id,
            func.sum(c.price).label("revenue"),
            func.count().label("purchases"),
        )
        .group_by(c.half, c.client_id, c.month, c.manager_id)
        .subquery()
    )
    g = grouped.c
    stmt = select(
        g.half, g.client_id, g.month, g.manager_id, g.revenue, g.purchases, cards.name, cards.responsible_user_id
    ).outerjoin(cards, and_(cards.account_id == account_id, cards.id == g.client_id))
    return list(await s.execute(stmt))


def card_url(crm: str, base_url: str, deal_id: str) -> str:
    """The deal's card in the CRM (amoCRM: /leads/detail/ID; Bitrix24: /crm/deal/details/ID/)."""
    parts = urlsplit(base_url)
    origin = f"{parts.scheme}://{parts.netloc}"
    if crm == "bitrix24":
        return f"{origin}/crm/deal/details/{deal_id}/"
    return f"{origin}/leads/detail/{deal_id}"


def day_key(value: Any) -> date:
    """SQLite hands dates back as text from a union or a function; PostgreSQL as dates."""
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


__all__ = [
    "OPEN_FINDING",
    "call_days",
    "call_totals",
    "card_url",
    "cards_changed_days",
    "cards_changed_totals",
    "client_months",
    "closed",
    "day_key",
    "earliest_created",
    "finding_days",
    "finding_deals",
    "findings_open_before",
    "first_contact_medians",
    "funnel_time",
    "hygiene",
    "open_by_stage",
    "open_findings",
    "stage_figures",
    "stages",
    "users",
]
