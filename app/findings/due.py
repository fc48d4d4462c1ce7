"""When each deal's findings can next change with no new event, kept per deal (rule_due) so that
the scheduler's tick re-evaluates only the deals whose moment has come.

Every time-based rule says, in its `timing` queries (app/rules/base.py), when its verdict on a
deal will change if nothing happens: a task falls due, a grace period or a stage's limit runs out
in working time, a look-back window ends. The findings add their own: a snooze ends. Each
evaluation brings the moments of what it evaluated up to date, in the caller's transaction:

- an evaluation of a few deals (an event, a tick) reads their moments and computes each in
  Python with the account's business calendar, exactly (BusinessCalendar.add_working);
- a sweep cannot run the calendar over a million rows, so it stores for every deal an earlier
  bound computed in SQL: `seconds` of wall time after `at` (working time never runs faster than
  the wall clock), less a second for the databases' rounding. A tick that reaches a deal early
  re-evaluates it, changes nothing, and stores the exact moment. The sweep runs after the
  lifecycle has brought the findings in line with the violations, so a rule whose moments follow
  from its violations reads its active findings instead of running its query again
  (Rule.sweep_timing), and only the bounds that differ from the stored ones are written.

The deal id "" stands for the account's entities without a deal (calls nobody matched): the
evaluation of deal "" asks the rules about those.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    and_,
    any_,
    bindparam,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    literal_column,
    null,
    select,
    text,
    type_coerce,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import MANY_DEALS, UtcDateTime, among, dialect_insert, dialect_of, execute_kept, float_epoch, is_postgres
from app.rules import engine as rules_engine
from app.rules.base import RuleContext, moment, one_of
from app.rules.engine import AccountRules, Template

from .lifecycle import CreateTempTableAs
from .models import ACTIVE, DueMoment, Finding

# A sweep's moments before they are compared with the stored ones (made and dropped by the sweep).
_new = Table(
    "crmwatch_due_new", MetaData(), Column("deal_id", String(64)), Column("due_epoch", Float()), prefixes=["TEMPORARY"]
)
# The rounding a sweep's bound allows for (SQLite computes epoch seconds through julianday).
_EARLY_SECONDS = 1.0
# Float epoch seconds: what two computations of the same moment may differ by.
_ROUNDING = 0.001


def _findings_moments(ctx: RuleContext) -> list[Select[Any]]:
    """A snoozed finding wakes up when its snooze ends. In an evaluation of a few deals, their
    moments stored so far come along too (rows with no `at`): only the moments that changed are
    written, so re-evaluating a deal where nothing changed writes nothing at all."""
    moments = [
        select(*moment(Finding.deal_id, Finding.snoozed_until, 0.0, False)).where(
            Finding.account_id == ctx.account_id,
            # Inline, not a parameter, so that a generic plan can use the partial index.
            Finding.status == literal_column("'snoozed'"),
            Finding.snoozed_until > ctx.now_param(),
            *ctx.in_deal_scope(Finding.deal_id),
        )
    ]
    # Not for a tick's many deals on PostgreSQL (`arrays`): their moments have come, so nearly all
    # change anyway, and reading them back cost more (8 ms for 1,000) than it saved.
    if ctx.deal_ids is not None and not ctx.arrays:
        moments.append(
            select(*moment(DueMoment.deal_id, null(), DueMoment.due_epoch, null())).where(
                DueMoment.account_id == ctx.account_id, ctx.in_deals(DueMoment.deal_id)
            )
        )
    return moments


def _active(account_id: int) -> Any:
    def active(rule: str) -> Any:
        """A rule's active findings: what a sweep's moments read instead of its violations."""
        return (
            select(Finding.deal_id, Finding.started_at)
            .where(Finding.account_id == account_id, Finding.rule == rule, one_of(Finding.status, ACTIVE))
            .subquery(f"active_{rule}")
        )

    return active


# The comparison and the moments in one statement, per template (see with_moments).
_combined: dict[int, tuple[Template, rules_engine.Timing, Any]] = {}


def with_moments(
    template: Template, statement: Any, account_id: int, timezone: str, now: datetime, deal_ids: list[str]
) -> tuple[Any, dict[str, Any]]:
    """A tick's comparison (`statement`, the INSERT of the differences) and its moments' query as
    one statement on PostgreSQL, reading the deals in scope once: the INSERT becomes a
    data-modifying CTE, the moments are the rows returned, and one more row (its `differences`
    column set) says how many differences were written. Returns it and the moments' parameters.

    The moments are read before the lifecycle moves any finding: the mirror does not change in
    the meantime, and the only findings they read (snoozes still running) can only end in this
    evaluation, never begin, so at worst a deal is looked at again early, and then changes
    nothing and stores its exact moment. (Run apart, the moments' query read the thousand deals
    again and cost a round trip.)"""
    timing = rules_engine.timing(
        account_id,
        template.settings,
        timezone,
        False,
        template.dialect,
        _findings_moments,
        True,
        False,
        None,
        template.own.scope,
    )
    params: dict[str, Any] = {}
    for ctx in timing.contexts:
        ctx.now, ctx.deal_ids = now, deal_ids
        params.update(ctx.values())
    # Kept only for a template's own statement: one rebuilt at each evaluation (a rule whose
    # query is not parametrized, see rules.engine.Template) is combined afresh.
    reusable = statement is template.insert
    cached = _combined.get(id(template)) if reusable else None
    if cached is not None and cached[0] is template and cached[1] is timing:
        return cached[2], params
    written = statement.returning(literal(1).label("one")).cte("written_differences")
    moments = timing.statement.subquery("moments")
    combined = union_all(
        select(*moments.c, cast(null(), Integer()).label("differences")),
        select(
            cast(null(), String(64)),
            type_coerce(null(), UtcDateTime()),
            cast(null(), Float()),
            cast(null(), Boolean()),
            cast(func.count(), Integer()),
        ).select_from(written),
    )
    if reusable:
        if len(_combined) > 10_000:
            _combined.clear()
        _combined[id(template)] = (template, timing, combined)
    return combined, params


async def refresh(
    s: AsyncSession,
    account_id: int,
    settings: AccountRules,
    timezone: str,
    now: datetime,
    deal_ids: list[str] | None,
    rows: Any = None,
) -> int:
    """Recomputes the moments of the deals evaluated (None: the whole account); returns how many
    deals have one (a sweep: how many moments it wrote or deleted). `rows`: the moments' rows,
    read already with the comparison (with_moments)."""
    many = deal_ids is not None and len(deal_ids) > MANY_DEALS
    one = deal_ids is not None and len(deal_ids) == 1
    if rows is None:
        timing = rules_engine.timing(
            account_id,
            settings,
            timezone,
            deal_ids is None,
            dialect_of(s),
            _findings_moments,
            many,
            one,
            # A sweep runs after the lifecycle brought the findings in line with the violations.
            _active(account_id) if deal_ids is None else None,
        )
        params: dict[str, Any] = {}
        for ctx in timing.contexts:
            ctx.now, ctx.deal_ids = now, deal_ids
            params.update(ctx.values())
        if deal_ids is None:
            return await _refresh_whole(s, account_id, timing.statement, params)
        # Kept with the timing: on PostgreSQL compiled once (db.Prepared; `at` comes back as the
        # driver's aware datetime).
        rows = await execute_kept(s, timing.statement, params)
    assert deal_ids is not None
    calendar = settings.calendar(timezone)
    due: dict[str, float] = {}
    stored: dict[str, float] = {}
    for deal_id, at, seconds, working in rows:
        key = deal_id or ""
        if at is None:  # the moment stored so far (_findings_moments)
            stored[key] = seconds
            continue
        when = calendar.add_working(at, seconds) if working else at + timedelta(seconds=seconds)
        stamp = when.timestamp()
        if key not in due or stamp < due[key]:
            due[key] = stamp
    scope = set(deal_ids)
    kept = sorted((deal_id, stamp) for deal_id, stamp in due.items() if deal_id in scope)
    if many and is_postgres(s):
        # The stored moments were not read (_findings_moments): every one is written.
        await _store_many(s, account_id, sorted(scope - set(due)), kept)
        return len(kept)
    gone = sorted(d for d in scope - set(due) if d in stored)
    changed = [(deal_id, stamp) for deal_id, stamp in kept if stored.get(deal_id) != stamp]
    if one:
        # An event's deal whose stored moment is a sweep's bound (the exact one less its rounding
        # second) and still ahead keeps it: the tick then re-evaluates the deal a second early and
        # stores the exact moment, as for every deal no event touched. Written here, it made the
        # event's transaction a write (its flush at commit) at the first event after each sweep.
        ahead = now.timestamp()
        changed = [
            (deal_id, stamp)
            for deal_id, stamp in changed
            if not (
                (bound := stored.get(deal_id)) is not None
                and bound > ahead
                and 0 < stamp - bound <= _EARLY_SECONDS + _ROUNDING
            )
        ]
    if len(gone) == 1:
        # An event's deal whose last moment passed: a statement built once, the deal a parameter.
        await s.execute(_DROP_ONE, {"due_account": account_id, "due_deal": gone[0]})
    elif gone:
        await s.execute(
            delete(DueMoment.__table__).where(
                DueMoment.account_id == account_id, among(s, DueMoment.__table__.c.deal_id, gone)
            )
        )
    values = [{"account_id": account_id, "deal_id": deal_id, "due_epoch": stamp} for deal_id, stamp in changed]
    if values:
        # One row (an event's deal) as a plain execution: a list of one goes the executemany way.
        await s.execute(_upsert(s), values[0] if len(values) == 1 else values)
    return len(kept)


_DROP_ONE = delete(DueMoment.__table__).where(
    DueMoment.__table__.c.account_id == bindparam("due_account"),
    DueMoment.__table__.c.deal_id == bindparam("due_deal", type_=String()),
)
_upserts: dict[str, Any] = {}


def _upsert(s: AsyncSession) -> Any:
    """The upsert of moments, built once per dialect: building it (its `excluded` columns) cost
    more in Python than executing it, at every evaluation of a deal whose moment changed."""
    name = dialect_of(s)
    stmt = _upserts.get(name)
    if stmt is None:
        upsert = dialect_insert(s, DueMoment.__table__)
        stmt = _upserts[name] = upsert.on_conflict_do_update(
            index_elements=["account_id", "deal_id"], set_={"due_epoch": upsert.excluded.due_epoch}
        )
    return stmt


async def _store_many(s: AsyncSession, account_id: int, gone: list[str], kept: list[tuple[str, float]]) -> None:
    """A tick's moments on PostgreSQL in one statement: the deals with none left are deleted and
    the others upserted from two array parameters (row by row, a thousand deals cost 60 ms)."""
    table = DueMoment.__table__
    upsert = postgresql.insert(table).from_select(
        ["account_id", "deal_id", "due_epoch"],
        select(
            literal(account_id),
            func.unnest(bindparam("due_deals", [d for d, _ in kept], type_=postgresql.ARRAY(String()))),
            func.unnest(bindparam("due_epochs", [e for _, e in kept], type_=postgresql.ARRAY(Float()))),
        ),
    )
    upsert = upsert.on_conflict_do_update(
        index_elements=["account_id", "deal_id"], set_={"due_epoch": upsert.excluded.due_epoch}
    )
    if gone:
        dropped = (
            delete(table)
            .where(
                table.c.account_id == account_id,
                table.c.deal_id == any_(bindparam("due_gone", gone, type_=postgresql.ARRAY(String()))),
            )
            .cte("dropped")
        )
        upsert = upsert.add_cte(dropped)
    await s.execute(upsert)


async def _refresh_whole(s: AsyncSession, account_id: int, statement: Any, params: dict[str, Any]) -> int:
    """A sweep's moments: every deal's earlier bound, compared with the stored ones; only the rows
    that differ are written, so a steady sweep of a million deals rewrites a handful. Returns how
    many moments it wrote or deleted."""
    rows = statement.subquery("moments")
    deal = func.coalesce(rows.c.deal_id, "")
    bound = select(
        deal.label("deal_id"), (func.min(float_epoch(rows.c.at) + rows.c.seconds) - _EARLY_SECONDS).label("due_epoch")
    ).group_by(deal)
    if is_postgres(s):
        return await _refresh_whole_postgres(s, account_id, bound, params)
    # SQLite has no data-modifying CTE: the bounds go into a temporary table first.
    await s.execute(text(f"DROP TABLE IF EXISTS {_new.name}"))
    await s.execute(CreateTempTableAs(_new.name, bound), params)
    due = DueMoment.__table__.c
    mine = due.account_id == account_id
    same_deal = and_(mine, due.deal_id == _new.c.deal_id)
    written = (
        await s.execute(
            update(DueMoment.__table__)
            .where(same_deal, due.due_epoch != _new.c.due_epoch)
            .values(due_epoch=_new.c.due_epoch)
        )
    ).rowcount or 0
    written += (
        await s.execute(
            insert(DueMoment.__table__).from_select(
                ["account_id", "deal_id", "due_epoch"],
                select(literal(account_id), _new.c.deal_id, _new.c.due_epoch).where(
                    ~select(due.deal_id).where(same_deal).exists()
                ),
            )
        )
    ).rowcount or 0
    written += (
        await s.execute(
            delete(DueMoment.__table__).where(
                mine, ~select(_new.c.deal_id).where(_new.c.deal_id == due.deal_id).exists()
            )
        )
    ).rowcount or 0
    await s.execute(text(f"DROP TABLE {_new.name}"))
    return written


async def _refresh_whole_postgres(s: AsyncSession, account_id: int, bound: Select[Any], params: dict[str, Any]) -> int:
    """One statement: the bounds FULL JOIN the stored moments, keeping the rows that differ, which
    data-modifying CTEs upsert or delete. A temporary table of every deal's bound (CREATE TABLE
    AS, ANALYZE, then an UPDATE, an INSERT and a DELETE joined with it) cost 1.4 s at 100k deals
    where this costs the bounds' query and one hash join."""
    table = DueMoment.__table__
    new = bound.subquery("new")
    old = select(table.c.deal_id, table.c.due_epoch).where(table.c.account_id == account_id).subquery("old")
    differ = (
        select(func.coalesce(new.c.deal_id, old.c.deal_id).label("deal_id"), new.c.due_epoch)
        .select_from(new.join(old, new.c.deal_id == old.c.deal_id, full=True))
        .where(new.c.due_epoch.is_distinct_from(old.c.due_epoch))
        .cte("differ")
    )
    upsert = postgresql.insert(table).from_select(
        ["account_id", "deal_id", "due_epoch"],
        select(literal(account_id), differ.c.deal_id, differ.c.due_epoch).where(differ.c.due_epoch.is_not(None)),
    )
    written = (
        upsert.on_conflict_do_update(
            index_elements=["account_id", "deal_id"], set_={"due_epoch": upsert.excluded.due_epoch}
        )
        .returning(table.c.deal_id)
        .cte("written")
    )
    gone = (
        delete(table)
        .where(table.c.account_id == account_id, table.c.deal_id == differ.c.deal_id, differ.c.due_epoch.is_(None))
        .returning(table.c.deal_id)
        .cte("gone")
    )
    counted = (
        select(func.count()).select_from(written).scalar_subquery()
        + select(func.count()).select_from(gone).scalar_subquery()
    )
    return await s.scalar(select(counted), params) or 0


async def schedule(s: AsyncSession, account_id: int, deal_ids: Iterable[str | None], at: datetime) -> None:
    """Makes sure the tick looks at these deals (None: the account's entities without a deal) by
    `at`: a person's snooze ends then, or an inbox batch's deals are due for re-evaluation. A deal
    whose moment is earlier keeps it. One statement however many deals."""
    rows = [
        {"account_id": account_id, "deal_id": d, "due_epoch": at.timestamp()}
        for d in sorted({d or "" for d in deal_ids})
    ]
    if not rows:
        return
    table = DueMoment.__table__
    stmt = dialect_insert(s, table)
    stmt = stmt.on_conflict_do_update(
        index_elements=["account_id", "deal_id"],
        set_={
            "due_epoch": case(
                (stmt.excluded.due_epoch < table.c.due_epoch, stmt.excluded.due_epoch), else_=table.c.due_epoch
            )
        },
    )
    await s.execute(stmt, rows)


async def due_deals(s: AsyncSession, account_id: int, now: datetime, limit: int) -> list[str]:
    """The deals whose moment has come, earliest first, through the index."""
    return list(
        await s.scalars(
            select(DueMoment.deal_id)
            .where(DueMoment.account_id == account_id, DueMoment.due_epoch <= now.timestamp())
            .order_by(DueMoment.due_epoch)
            .limit(limit)
        )
    )
