"""What a rule is, and the context it is evaluated in.

A rule is a module in app/rules/ with a module-level `RULE`. Its `violations(ctx)` returns one
SELECT over the mirror, streamed by the database and never loaded into Python, with exactly
these labelled columns, one row per entity:

    entity_id   the CRM id of what is wrong (the deal, the task, the note)
    deal_id     the deal it belongs to
    manager_id  who should act (the responsible manager)
    started_at  when the condition began, by the CRM's own timestamps
    opens       true once the grace period has passed (else the finding is "pending")

A look-back window (`lookback_days`) bounds what OPENS, not what resolves: the rule takes its
start from `ctx.lookback()` (or `ctx.lookback_per_stage()`) and names its entity with
`ctx.entity_scope()`. When a finding of such a rule drops out of the violations, the lifecycle
asks the rule again for that entity alone with the window off (`ctx.unbounded`): if it still
violates, it was the window and not a fix, and the rule's `past_window` decides: "expire" (the
finding becomes `expired`) or "keep" (it stays as it is).

Durations are in working time: a setting such as "3 working days" becomes a cutoff instant
(BusinessCalendar.cutoff), and the SQL compares a timestamp with it, per pipeline and stage.

A time-based rule also says when its verdict can next change with no event (`timing`: rows of
`moment()`, such as "the grace after the task's due time, in working time"); the engine keeps the
earliest per deal and the scheduler's tick re-evaluates a deal when it comes (app/findings/due.py).

A rule's statement is built once per account and settings and then re-executed: every value
that depends on the moment or the scope must come from the context's helpers (`now_param`,
`ago`, `lookback`, `lookback_working`, `cutoff`, `account_cutoff`, `per_stage`, `deal_scope`,
`deals_param`, `entity_scope`), which bind it as a parameter computed afresh at each
execution. A value computed from `ctx.now` in the rule's own code would be frozen at the
first evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import (
    Boolean,
    ColumnElement,
    Float,
    Select,
    String,
    and_,
    any_,
    bindparam,
    case,
    cast,
    false,
    literal,
    not_,
    or_,
    select,
    type_coerce,
    union_all,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql import util as sql_util

from app.calendar.business import BusinessCalendar
from app.db import UtcDateTime
from app.mirror.models import Deal

# Where a look-back window starts when it is off (the re-check of findings past their window).
BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)


def one_of(column: Any, values: Any) -> ColumnElement[bool]:
    """`column IN (…)` for a list fixed by the settings, one plain parameter per value. The
    list in_() binds is an "expanding" parameter, rendered into the SQL text again at every
    execution: a cost a statement re-run for every touched deal can do without."""
    items = list(values)
    return column.in_([literal(v, column.type) for v in items]) if items else false()


class RuleSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True, slots=True)
class Exclusions:
    pipelines: frozenset[str] = frozenset()
    stages: frozenset[tuple[str, str]] = frozenset()
    users: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ResolvedRuleConfig:
    """A rule's settings for one account: the account level, and overrides by pipeline and stage."""

    enabled: bool
    settings: RuleSettings
    pipelines: dict[str, RuleSettings] = field(default_factory=dict)
    stages: dict[tuple[str, str], RuleSettings] = field(default_factory=dict)
    exclude: Exclusions = field(default_factory=Exclusions)


@dataclass(slots=True)
class RuleContext:
    account_id: int
    now: datetime
    calendar: BusinessCalendar
    config: ResolvedRuleConfig
    deal_ids: list[str] | None = None  # None: the whole account (a sweep); else only these deals
    # The re-check of findings gone from the violations: only these entities, look-back windows off.
    entity_ids: list[str] | None = None
    unbounded: bool = False
    # Bound parameters of the rule's statement: name → how to compute its value for this evaluation.
    prefix: str = "rule"
    params: dict[str, Callable[[], Any]] = field(default_factory=dict)
    # The deals in scope as one array parameter (PostgreSQL, for a scope of many deals).
    arrays: bool = False
    # Exactly one deal in scope (an event's re-evaluation): `column = :deal`, a plain parameter.
    one: bool = False
    # With `arrays`: the deals in scope read once (scoped_deals), shared by every rule of the
    # statement; each rule's query reads them in place of the deals table (on_scope).
    scope: Any = None

    @property
    def settings(self) -> Any:
        return self.config.settings

    def bind(self, compute: Callable[[], Any], type_: Any = None, *, expanding: bool = False) -> Any:
        """A parameter whose value `compute()` gives at each execution of the statement."""
        name = f"{self.prefix}_{len(self.params)}"
        self.params[name] = compute
        # Built with its current value too, so that its SQL type follows the value when none is given.
        return bindparam(name, compute(), type_=type_, expanding=expanding)

    def values(self) -> dict[str, Any]:
        return {name: compute() for name, compute in self.params.items()}

    def now_param(self) -> ColumnElement[datetime]:
        return self.bind(lambda: self.now, UtcDateTime())

    def ago(self, delta: timedelta) -> ColumnElement[datetime]:
        """The instant `delta` (calendar time) before now: a look-back horizon."""
        return self.bind(lambda: self.now - delta, UtcDateTime())

    def lookback(self, delta: timedelta) -> ColumnElement[datetime]:
        """Where a look-back window starts: only what began after it opens a finding."""
        return self.bind(lambda: BEGINNING if self.unbounded else self.now - delta, UtcDateTime())

    def lookback_per_stage(self, delta_of: Callable[[Any], timedelta]) -> ColumnElement[datetime]:
        """lookback(), with the window's length from pipeline and stage overrides."""
        return self.per_stage(lambda st: BEGINNING if self.unbounded else self.now - delta_of(st), UtcDateTime())

    def lookback_working(self, seconds_of: Callable[[Any], float]) -> ColumnElement[datetime]:
        """lookback() in working time, per deal (pipeline and stage overrides): what began less
        than `seconds_of(settings)` working seconds ago is inside the window."""
        return self.per_stage(
            lambda st: BEGINNING if self.unbounded else self.calendar.cutoff(self.now, seconds_of(st)), UtcDateTime()
        )

    def entity_scope(self, column: Any, convert: Callable[[str], Any] = str) -> list[ColumnElement[bool]]:
        """In a re-check, only the entities asked about (`convert` turns a finding's entity id
        into the column's type), as WHERE clauses; else none."""
        if self.entity_ids is None:
            return []
        return [column.in_(self.bind(lambda: [convert(e) for e in self.entity_ids or []], column.type, expanding=True))]

    def account_cutoff(self, seconds: float) -> ColumnElement[datetime]:
        """Like cutoff(), for rules over entities without a deal's pipeline and stage (calls)."""
        return self.bind(lambda: self.calendar.deadline_cutoff(self.now, seconds), UtcDateTime())

    def deals_param(self) -> Any:
        """The deals in scope of an incremental evaluation, as an IN-list parameter."""
        return self.bind(lambda: self.deal_ids, String(), expanding=True)

    def in_deals(self, column: Any) -> ColumnElement[bool]:
        """`column` is one of the deals in scope: `= ANY(array)` on PostgreSQL (a tick's thousand
        deals are one parameter, not a thousand rendered into the SQL at each execution)."""
        if self.arrays:
            return column == any_(self.bind(lambda: self.deal_ids, postgresql.ARRAY(String())))
        if self.one:
            # Same plan as an IN-list of one, but the statement's text is fixed: an IN-list is
            # rendered into it again at every execution, which costs an event's re-evaluation
            # more than some of its queries.
            return column == self.bind(lambda: (self.deal_ids or [""])[0], String())
        return column.in_(self.deals_param())

    def dealless(self) -> ColumnElement[bool]:
        """True when the scope asks about the account's entities without a deal (the deal id ""
        in `deal_ids`: calls nobody matched), always in a sweep."""
        return self.bind(lambda: self.deal_ids is None or "" in self.deal_ids, Boolean())

    def in_deal_scope(self, column: Any) -> list[ColumnElement[bool]]:
        """WHERE clauses keeping an entity's deal (`column`, null for none) in the incremental
        scope: the deals asked about, and no deal at all when "" is asked about. None in a sweep."""
        if self.deal_ids is None:
            return []
        return [or_(self.in_deals(column), and_(column.is_(None), self.dealless()))]

    def where_in_deal_scope(self, query: Select[Any], column: Any) -> Any:
        """`query` kept to the incremental scope (in_deal_scope) on `column`. With `arrays`, as
        two queries UNION ALL-ed rather than one OR: PostgreSQL cannot drop the OR's dealless
        branch from a generic plan, so it re-tests every row read against the whole array, a
        linear search (a tick's 2,000 findings against its 1,000 deals: 10-20 ms). Apart, the
        array is the index condition only, and the dealless branch is a one-time filter."""
        if not self.arrays or self.deal_ids is None:
            return query.where(*self.in_deal_scope(column))
        return union_all(query.where(self.in_deals(column)), query.where(column.is_(None), self.dealless()))

    def deal_scope(self) -> list[ColumnElement[bool]]:
        """The account, the incremental scope, and the rule's exclusions, as WHERE clauses on Deal."""
        clauses: list[ColumnElement[bool]] = [Deal.account_id == self.account_id]
        if self.deal_ids is not None and self.scope is None:
            # (With a scope, Deal is read from it, which holds only the deals in scope.)
            clauses.append(self.in_deals(Deal.id))
        ex = self.config.exclude
        if ex.pipelines:
            clauses.append(or_(Deal.pipeline_id.is_(None), Deal.pipeline_id.not_in(sorted(ex.pipelines))))
        if ex.stages:
            clauses.append(not_(or_(*(and_(Deal.pipeline_id == p, Deal.stage_id == s) for p, s in sorted(ex.stages)))))
        if ex.users:
            clauses.append(or_(Deal.responsible_user_id.is_(None), Deal.responsible_user_id.not_in(sorted(ex.users))))
        return clauses

    def open_deal(self) -> list[ColumnElement[bool]]:
        return [*self.deal_scope(), Deal.is_deleted == false(), Deal.is_closed == false()]

    def per_stage(self, value_of: Callable[[Any], Any], type_: Any = None) -> ColumnElement[Any]:
        """A setting's value for each deal, honouring overrides: the stage's, else the pipeline's,
        else the account's. `value_of(settings)` picks (or derives) the value from a settings object."""

        def value(settings: RuleSettings) -> ColumnElement[Any]:
            return self.bind(lambda: value_of(settings), type_)

        whens: list[tuple[ColumnElement[bool], ColumnElement[Any]]] = []
        for (pipeline, stage), st in sorted(self.config.stages.items()):
            whens.append((and_(Deal.pipeline_id == pipeline, Deal.stage_id == stage), value(st)))
        for pipeline, st in sorted(self.config.pipelines.items()):
            whens.append((Deal.pipeline_id == pipeline, value(st)))
        default = value(self.config.settings)
        return case(*whens, else_=default) if whens else default

    def with_stage(self, query: Select[Any], deal_id: Any) -> Select[Any]:
        """`query` joined with the deal `deal_id` names when a setting has pipeline or stage
        overrides (per_stage() then reads the deal's pipeline and stage); as it is when none has."""
        if not (self.config.pipelines or self.config.stages):
            return query
        return query.join(Deal, and_(Deal.account_id == self.account_id, Deal.id == deal_id))

    def cutoff(self, seconds_of: Callable[[Any], float]) -> ColumnElement[datetime]:
        """The instant before which a condition has lasted long enough (working time), per deal:
        started_at <= cutoff exactly when add_working(started_at, seconds) <= now, so even a
        deadline with no grace falls on a working minute (BusinessCalendar.deadline_cutoff)."""
        return self.per_stage(lambda st: self.calendar.deadline_cutoff(self.now, seconds_of(st)), UtcDateTime())


def scoped_deals(ctx: RuleContext) -> Any:
    """The deals in scope of a tick (`ctx.arrays`), read once by id as a CTE that every rule's
    query in the statement reads instead of the deals table (on_scope). Looked up by each rule on
    its own, a thousand deals cost each rule a scan or a thousand index probes."""
    deals = Deal.__table__
    ids = ctx.bind(lambda: ctx.deal_ids, postgresql.ARRAY(String()))
    return select(deals).where(deals.c.account_id == ctx.account_id, deals.c.id == any_(ids)).cte("scoped_deals")


def on_scope(query: Any, ctx: RuleContext) -> Any:
    """`query` (a rule's) reading the deals from `ctx.scope` instead of the deals table, when
    there is a scope. Every reference to a deal in a rule is to a deal in scope (the deal a
    violation is on, or the deal of a call in scope), so the CTE, which holds every column of
    those deals unfiltered, gives the same rows."""
    if ctx.scope is None:
        return query
    return sql_util.ClauseAdapter(ctx.scope).traverse(query)


def moment(deal_id: Any, at: Any, seconds: Any, working: Any) -> list[ColumnElement[Any]]:
    """The columns of a rule's `timing` query: the deal (null: none), and when the verdict on
    that deal can next change with no event: `seconds` of working time after `at` when
    `working` is true (BusinessCalendar.add_working), else `seconds` of wall time after it."""
    return [
        cast(deal_id, String(64)).label("deal_id"),
        # (Not CAST: SQLite would turn a timestamp's text into a number.)
        type_coerce(at, UtcDateTime()).label("at"),
        cast(seconds, Float()).label("seconds"),
        cast(working if not isinstance(working, bool) else literal(working), Boolean()).label("working"),
    ]


@dataclass(slots=True)
class RenderContext:
    """What a rule needs to phrase a finding for a person, preloaded for a page of findings."""

    now: datetime
    calendar: BusinessCalendar
    lang: str
    deals: dict[str, Any]
    tasks: dict[str, Any]
    notes: dict[str, Any]
    stages: dict[tuple[str, str], Any]
    users: dict[str, Any]
    # Calls by finding entity id: the call itself ("call" findings) or a number's latest call ("phone").
    calls: dict[str, Any] = field(default_factory=dict)
    # A manager's pace against the month's plan ("manager" findings): their ManagerPace rows.
    pace: dict[str, list[Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    version: int  # bump when the meaning changes: open findings are re-evaluated under the new one
    entity_type: str  # deal | task | note | call | phone | manager
    severity: str  # info | warning | critical
    title: dict[str, str]
    settings: type[RuleSettings]
    violations: Callable[[RuleContext], Select[Any]]
    render: Callable[[Any, RenderContext], tuple[str, dict[str, Any]]]
    # A rule with a look-back window: what its findings do once they are past it unfixed,
    # "expire" or "keep" (see the module's docstring). None: the rule has no window.
    past_window: str | None = None
    # Whether the rule runs when the rules document does not say (`enabled` null or absent).
    enabled_by_default: bool = True
    # When the rule's verdict can next change with no new event: SELECTs of `moment()` rows,
    # only for what has not changed yet at ctx.now (a grace not yet over, a window not yet
    # ended). The tick re-evaluates a deal once its earliest moment has come. None: the rule
    # changes only with events.
    timing: Callable[[RuleContext], list[Select[Any]]] | None = None
    # A sweep's `timing`, for a rule whose moments follow from its violations: a sweep asks for
    # the moments once the findings agree with the violations, so the rule's active findings
    # (`active`: a subquery of their deal_id and started_at) stand for its violations and its
    # query need not run a second time. It must give every moment `timing` gives (an extra or
    # earlier one only costs a tick a look). None: the sweep runs `timing`.
    sweep_timing: Callable[[RuleContext, Any], list[Select[Any]]] | None = None
