"""The finding lifecycle: every automatic transition, and inhibition, set-based, in the caller's
transaction. (A person's transitions, acknowledge and snooze, are in service.py.)

One statement compares what the rules find now (app/rules/engine.py) with the findings recorded
so far: the rules' queries (a UNION ALL, each row tagged with its rule) FULL JOINed with the
account's findings on the dedup key (rule, entity). Only the differences are kept, in a temporary
table: a violation with no finding, a finding whose violation is gone, a pending finding whose
grace has passed, a snooze that ended, a resolved finding whose condition is back, facts that
moved. A steady sweep over a million deals writes a handful of rows there instead of
materializing every violation.

Then a few INSERT/UPDATE statements, joined to the differences by finding id, move findings
between states for all rules at once: new → pending or open; pending → open; snoozed → open;
resolved or expired → open again on a regression; anything active → resolved when its entity no
longer violates, or expired when it only dropped out of its rule's look-back window (the rule is
asked again about those entities with the window off: app/rules/base.py). Each transition is
written to finding_events by an INSERT … SELECT with the same predicate just before the UPDATE,
so no finding is ever pulled into Python. Re-evaluating a deal where nothing changed is one
statement after the account's settings are read.

The same code serves a sweep (the whole account) and incremental evaluation (the deals an
event touched): the scope is a WHERE clause. Running it twice, or from two processes, is
harmless: the dedup key (account, rule, entity) makes every step idempotent, and every UPDATE
re-checks the state it expects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    any_,
    bindparam,
    case,
    cast,
    delete,
    event,
    false,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    text,
    true,
    union,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import CreateTable
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.elements import ClauseElement

from app.db import (
    CONNECTION_SETUP,
    CONNECTION_SETUP_DONE,
    MANY_DEALS,
    BigId,
    UtcDateTime,
    among,
    dialect_insert,
    dialect_of,
    execute_kept,
    is_postgres,
)
from app.mirror.models import Deal
from app.rules.base import RuleContext, one_of
from app.rules.engine import Template

from .models import ACTIVE, ENDED, Finding, FindingEvent

INHIBITING = ("open", "acknowledged", "snoozed")

_temp = MetaData()
# The differences between the rules' violations and the findings, for one evaluation. Empty
# between evaluations: each one deletes what it wrote (a rollback does too).
diff_table = Table(
    "crmwatch_rule_diff",
    _temp,
    Column("rule", String(64)),
    Column("entity_id", String(64)),
    Column("entity_type", String(16)),
    Column("present", Boolean()),  # false: the finding's violation is gone
    Column("rule_version", Integer()),
    Column("severity", String(16)),
    Column("deal_id", String(64)),
    Column("old_deal_id", String(64)),  # the finding's deal before this evaluation
    Column("manager_id", String(64)),
    Column("started_at", UtcDateTime()),
    Column("opens", Boolean()),
    Column("finding_id", BigId),  # null: no finding yet
    Column("finding_status", String(16)),
    # Gone only because it is past its rule's look-back window: the rule's past_window.
    Column("past_window", String(8)),
    prefixes=["TEMPORARY"],
)
_d = diff_table.c
# What a tagged rule query yields (see app/rules/base.py and app/rules/engine.tagged).
_TAGGED_COLUMNS = [
    "entity_id",
    "deal_id",
    "manager_id",
    "started_at",
    "opens",
    "rule",
    "entity_type",
    "rule_version",
    "severity",
]
_DIFF_COLUMNS = [
    "rule",
    "entity_id",
    "entity_type",
    "present",
    "rule_version",
    "severity",
    "deal_id",
    "old_deal_id",
    "manager_id",
    "started_at",
    "opens",
    "finding_id",
    "finding_status",
    "past_window",
]
# Above this many differences PostgreSQL gets fresh statistics on them (temporary tables get no
# autovacuum) and they are emptied by TRUNCATE, which leaves no dead rows behind.
_MANY = 10_000
# Above this many differences PostgreSQL is told how many there are (ANALYZE): a tick's thousand
# deals planned with the statistics of an earlier evaluation's handful join them with the findings
# in ways that cost a hundred milliseconds.
_ANALYZE_ABOVE = 200
# connection.info: how many differences the connection's table held when last analyzed.
_ANALYZED_ROWS = "crmwatch_diff_analyzed_rows"
# Entities per re-check of findings past their window (an IN-list each).
_RECHECK_CHUNK = 1000


@dataclass
class EvaluationResult:
    opened: int = 0
    resolved: int = 0
    expired: int = 0  # past their rule's look-back window, not fixed (never counted as resolved)
    open: int = 0
    enqueued: int = 0
    changed: int = 0  # findings whose state or facts this evaluation touched


def _create_diff_table(dialect: Any) -> list[str]:
    return [str(CreateTable(diff_table, if_not_exists=True).compile(dialect=dialect))]


CONNECTION_SETUP.append(_create_diff_table)


def compare(t: Template, account_id: int, queries: list[Any]) -> Any:
    """INSERT INTO the differences: the violations FULL JOIN the findings they would be, keeping
    the rows where something has to change."""
    names = [rule.name for rule in t.rules]
    if not queries:  # every rule disabled: nothing violates, and every active finding resolves
        queries = [
            select(*(cast(null(), diff_table.c[name].type).label(name) for name in _TAGGED_COLUMNS)).where(false())
        ]
    cte = union_all(*queries).cte("v") if len(queries) > 1 else queries[0].cte("v")
    v = cte.c
    found = [Finding.account_id == account_id, one_of(Finding.rule, names)]
    columns = [
        Finding.id,
        Finding.rule,
        Finding.entity_type,
        Finding.entity_id,
        Finding.status,
        Finding.deal_id,
        Finding.manager_id,
        Finding.started_at,
        Finding.rule_version,
        Finding.snoozed_until,
    ]
    if t.whole:
        findings = select(*columns).where(*found).subquery("f")
    else:
        # The findings on the touched deals (to see what is gone), and those the violations
        # name wherever the findings say they are (a task moved to another deal keeps its finding).
        named = and_(Finding.rule == v.rule, Finding.entity_type == v.entity_type, Finding.entity_id == v.entity_id)
        in_scope = t.own.where_in_deal_scope(select(*columns).where(*found), Finding.deal_id)
        if t.dialect == "postgresql":
            # One probe of the dedup key per violation. As a plain join, a tick's two thousand
            # violations were hashed against a scan of every finding of the account (170 ms at
            # 100k deals); LIMIT 1 (the key is unique) keeps the lookup a nested loop. Only the
            # violations that no finding on the touched deals answers are probed (the others'
            # finding is known already), so the two sets cannot overlap: no de-duplication of
            # every finding read, only of the probes' few (two violations of one key).
            scoped = in_scope.cte("scoped_findings")
            sc = scoped.c
            answered = (
                select(sc.id)
                .where(sc.rule == v.rule, sc.entity_type == v.entity_type, sc.entity_id == v.entity_id)
                .exists()
            )
            probe = select(*columns).where(*found, named).limit(1).lateral("named")
            by_key = select(*probe.c).select_from(cte.join(probe, true())).where(~answered).distinct()
            findings = union_all(select(*sc), by_key).subquery("f")
        else:
            by_key = select(*columns).join(cte, named).where(*found)
            findings = union(in_scope, by_key).subquery("f")
    f = findings.c
    now = t.own.now_param()
    facts_differ = or_(
        f.manager_id.is_distinct_from(v.manager_id),
        f.deal_id.is_distinct_from(v.deal_id),
        f.started_at != v.started_at,
        f.rule_version != v.rule_version,
    )
    changes = or_(
        f.id.is_(None),
        and_(v.rule.is_(None), one_of(f.status, ACTIVE)),
        and_(
            v.rule.is_not(None),
            or_(
                one_of(f.status, ENDED),
                and_(f.status == "pending", v.opens == true()),
                and_(f.status == "snoozed", f.snoozed_until <= now),
                and_(one_of(f.status, ACTIVE), facts_differ),
            ),
        ),
    )
    values = [
        func.coalesce(v.rule, f.rule),
        func.coalesce(v.entity_id, f.entity_id),
        func.coalesce(v.entity_type, f.entity_type),
        v.rule.is_not(None),
        v.rule_version,
        v.severity,
        v.deal_id,
        f.deal_id,
        v.manager_id,
        v.started_at,
        v.opens,
        f.id,
        f.status,
        cast(null(), String(8)),
    ]
    if t.dialect == "postgresql":
        # Named and typed exactly as the table: a sweep re-creates it from this SELECT (see
        # compare_whole), and statements prepared on this connection must find the same columns.
        values = [
            cast(value, diff_table.c[name].type).label(name) for name, value in zip(_DIFF_COLUMNS, values, strict=True)
        ]
    compared = (
        select(*values)
        .select_from(
            cte.join(
                findings, and_(f.rule == v.rule, f.entity_type == v.entity_type, f.entity_id == v.entity_id), full=True
            )
        )
        .where(changes)
    )
    statement = insert(diff_table).from_select(_DIFF_COLUMNS, compared)
    if t.one and t.dialect == "postgresql":
        # An event's deal: the few differences say what kinds they are as they are written, which
        # spares apply_differences() a round trip to count them by kind (kinds_of()).
        statement = statement.returning(_d.finding_status, _d.present, _d.opens)
    return statement


Kinds = dict[tuple[str | None, bool, bool], int]


def kinds_of(rows: Any) -> Kinds:
    """The differences counted by kind (finding status, present, opens) from the rows the
    comparison returned (see compare())."""
    kinds: Kinds = {}
    for status, present, opens in rows:
        key = (status, bool(present), bool(opens))
        kinds[key] = kinds.get(key, 0) + 1
    return kinds


async def prepare(s: AsyncSession, whole_account: bool, many_deals: bool = False) -> None:
    """The temporary table of differences (made once per connection where the engine was made by
    app.db.make_engine); on PostgreSQL, settings for a big sweep, or for a tick's many deals."""
    conn = await s.connection()
    if not conn.info.get(CONNECTION_SETUP_DONE):
        await s.execute(CreateTable(diff_table, if_not_exists=True))
    if is_postgres(s) and whole_account:
        # A sweep joins a million violations with as many findings: let the hash joins stay in
        # memory, and skip JIT compilation, which costs more than it saves on these plans.
        await s.execute(text("SET LOCAL work_mem = '128MB'"))
        await s.execute(text("SET LOCAL jit = off"))
    elif is_postgres(s) and many_deals:
        # A tick's thousand deals are a thousand index probes per rule. With parallel workers the
        # planner prices a parallel scan of every deal of the account below them (30 ms each, three
        # times, at 100k deals), and JIT would compile plans that run for milliseconds.
        await s.execute(
            text("SELECT set_config('max_parallel_workers_per_gather', '0', true), set_config('jit', 'off', true)")
        )


class _CreateTempTableAs(Executable, ClauseElement):
    """CREATE TEMPORARY TABLE name AS SELECT …"""

    inherit_cache = False  # built once per sweep; not worth a cache key

    def __init__(self, name: str, query: Any) -> None:
        self.name, self.query = name, query


CreateTempTableAs = _CreateTempTableAs


@compiles(_CreateTempTableAs)
def _create_temp_table_as(element: _CreateTempTableAs, compiler: Any, **kw: Any) -> str:
    return f"CREATE TEMPORARY TABLE {element.name} AS {compiler.process(element.query, **kw)}"


async def compare_whole(s: AsyncSession, statement: Any, params: dict[str, Any]) -> int:
    """A sweep's comparison on PostgreSQL, run in parallel: the database never runs an INSERT …
    SELECT in parallel, but it does run CREATE TABLE … AS SELECT (about a sixth faster on a
    million deals, on two cores). The connection's table of differences is re-created from the
    SELECT, with the same columns; a rollback brings the old one back."""
    await s.execute(text(f"DROP TABLE IF EXISTS {diff_table.name}"))
    await s.execute(_CreateTempTableAs(diff_table.name, statement.select), params)
    (await s.connection()).info.pop(_ANALYZED_ROWS, None)  # a new table: no statistics yet
    return await s.scalar(select(func.count()).select_from(diff_table)) or 0


async def empty_differences(s: AsyncSession, rows: int) -> None:
    # PostgreSQL never vacuums temporary tables: after a first sweep's million rows, DELETE would
    # leave every later evaluation on this pooled connection reading through them. TRUNCATE does
    # not (but costs a millisecond or two, too much for one deal's re-evaluation).
    if is_postgres(s) and rows > _MANY:
        await s.execute(text(f"TRUNCATE {diff_table.name}"))
    else:
        await s.execute(delete(diff_table))


# The rules documents each process last ran inhibition with, per account: a sweep re-applies
# inhibition when a finding changed or when the settings did.
suppressed_with: dict[int, Any] = {}


def remember_on_commit(s: AsyncSession, account_id: int, doc: Any) -> None:
    """Records that the account's inhibition follows `doc` once the caller commits; a rollback
    takes the work back, so the next sweep does it again."""
    outcome: list[str] = []

    def committed(_session: Any) -> None:
        if not outcome:
            outcome.append("commit")
            suppressed_with[account_id] = doc

    def rolled_back(_session: Any) -> None:
        outcome.append("rollback")

    event.listen(s.sync_session, "after_commit", committed, once=True)
    event.listen(s.sync_session, "after_rollback", rolled_back, once=True)


async def count_open(s: AsyncSession, account_id: int) -> int:
    return (
        await s.scalar(
            select(func.count()).select_from(Finding).where(Finding.account_id == account_id, Finding.status == "open")
        )
        or 0
    )


_HISTORY_COLUMNS = ["finding_id", "at", "from_status", "to_status", "actor", "reason"]


def _history_insert(source: Any) -> Any:
    """The INSERT of one finding_events row per finding that `source` selects: (id, at,
    from_status, to_status, actor, reason[, resolution])."""
    columns = _HISTORY_COLUMNS + ["resolution"] * (len(source.selected_columns) > len(_HISTORY_COLUMNS))
    return insert(FindingEvent.__table__).from_select(columns, source)


# apply_differences()'s statements, per template and dialect (the template is kept to tell a new
# one that reuses a freed object's id).
_built_steps: dict[tuple[int, str], tuple[Template, dict[str, Any]]] = {}
_UNSYNCHRONIZED = {"synchronize_session": False}


async def _past_window(s: AsyncSession, account_id: int, template: Template, now: datetime) -> int:
    """Marks the differences whose finding is gone only because it is past its rule's look-back
    window: each such rule is asked again about those entities alone, with the window off; what
    it still finds was not fixed. (A handful of entities by their ids, so the re-check is cheap
    however long the history.) Returns how many are marked to expire."""
    rules = {rule.name: rule for rule in template.enabled if rule.past_window}
    expiring = 0
    if not rules:
        return 0
    gone: dict[str, list[str]] = {}
    for rule, entity_id in await s.execute(
        select(_d.rule, _d.entity_id).where(
            _d.present == false(), one_of(_d.finding_status, ACTIVE), one_of(_d.rule, sorted(rules))
        )
    ):
        gone.setdefault(rule, []).append(entity_id)
    for name, ids in sorted(gone.items()):
        rule = rules[name]
        ids.sort()
        for i in range(0, len(ids), _RECHECK_CHUNK):
            ctx = RuleContext(
                account_id=account_id,
                now=now,
                calendar=template.settings.calendar(template.timezone),
                config=template.settings.resolved[name],
                entity_ids=ids[i : i + _RECHECK_CHUNK],
                unbounded=True,
                prefix="past",
            )
            found = rule.violations(ctx).subquery()
            still = list(await s.scalars(select(found.c.entity_id)))
            if still:
                marked = await s.execute(
                    update(diff_table)
                    .where(_d.rule == name, _d.present == false(), _d.entity_id.in_(still))
                    .values(past_window=rule.past_window)
                )
                if rule.past_window == "expire":
                    expiring += marked.rowcount or 0
    return expiring


def inhibition_rules(suppress: dict[str, list[str]]) -> list[str]:
    """The rules whose findings' changes can change a voice: the targets that have inhibitors,
    and those inhibitors. (A change of settings is applied by the next sweep, everywhere.)"""
    return sorted({rule for target, inhibitors in suppress.items() if inhibitors for rule in (target, *inhibitors)})


async def changed_deals(s: AsyncSession, differences: int, rules: list[str] | None = None) -> Any:
    """The deals this evaluation's differences name, before and after (only the differences of
    `rules`, when given): as a list when there are a few (the planner then looks them up by
    index; handed the subquery instead, it cannot know how few rows a temporary table holds and
    scans a big account's findings), else as a SELECT."""
    of_rules = [] if rules is None else [one_of(_d.rule, rules)]
    deals = union(
        select(_d.deal_id).where(_d.deal_id.is_not(None), *of_rules),
        select(_d.old_deal_id).where(_d.old_deal_id.is_not(None), *of_rules),
    )
    if differences > _MANY:
        return deals
    return sorted(await s.scalars(deals))


_DRAIN = delete(diff_table).returning(_d.deal_id, _d.old_deal_id, _d.rule)


async def drain_changed_deals(s: AsyncSession, differences: int, rules: list[str] | None = None) -> tuple[Any, bool]:
    """changed_deals(), and whether the differences are emptied already: on PostgreSQL a few are
    read and deleted in one statement (an event's re-evaluation saves a round trip)."""
    if not is_postgres(s) or differences > _MANY:
        return await changed_deals(s, differences, rules), False
    wanted = None if rules is None else set(rules)
    deals: set[str] = set()
    for deal_id, old_deal_id, rule in await s.execute(_DRAIN):
        if wanted is None or rule in wanted:
            deals.update(d for d in (deal_id, old_deal_id) if d is not None)
    return sorted(deals), True


def _finding_ids(s: AsyncSession) -> Any:
    """`Finding.id` among the parameter lc_ids: one array on PostgreSQL, whatever their number."""
    if is_postgres(s):
        return Finding.id == any_(bindparam("lc_ids", type_=postgresql.ARRAY(BigInteger())))
    return Finding.id.in_(bindparam("lc_ids", expanding=True))


async def apply_differences(
    s: AsyncSession,
    account_id: int,
    template: Template,
    differences: int,
    now_: datetime,
    actor: str,
    result: EvaluationResult,
    kinds: Kinds | None = None,
) -> None:
    """Moves the findings the differences name, step by step, each step for all rules at once.
    `kinds`: the differences counted by kind, when the comparison returned them (kinds_of())."""
    if is_postgres(s):
        # Temporary tables get no autovacuum, and a sweep's table is new: without statistics the
        # planner guesses its size and may join a handful of differences with a million findings
        # by scanning them all. (A few rows analyze in a millisecond.) The statistics stay with
        # the connection: a few differences after a tick's thousands or a sweep's million are
        # planned as that many (15 s for one regression at 1M deals), so they are analyzed too.
        info = (await s.connection()).info
        analyzed = info.get(_ANALYZED_ROWS)
        stale = analyzed is None or analyzed > 10 * differences + _ANALYZE_ABOVE
        if differences > _ANALYZE_ABOVE or template.whole or stale:
            await s.execute(text(f"ANALYZE {diff_table.name}"))
            info[_ANALYZED_ROWS] = differences
    # The statements are built once per template (account, settings, scope kind) and re-executed
    # with the moment and the actor as parameters: built afresh at every evaluation, they cost an
    # event's re-evaluation more in Python than the database spent executing them.
    now = bindparam("lc_now", type_=UtcDateTime())
    actor_ = bindparam("lc_actor", type_=String())
    params = {"lc_now": now_, "lc_actor": actor}
    key = (id(template), dialect_of(s))
    built = _built_steps.get(key)
    if built is None or built[0] is not template:
        if len(_built_steps) > 10_000:
            _built_steps.clear()
        built = _built_steps[key] = (template, {})
    statements = built[1]

    def cached(name: str, build: Callable[[], Any]) -> Any:
        statement = statements.get(name)
        if statement is None:
            statement = statements[name] = build()
        return statement

    async def run(name: str, build: Callable[[], Any]) -> Any:
        # (Only Core INSERTs and UPDATEs here: given parameters, the ORM's would be bulk ones. The
        # session holds no findings to synchronize with what they change.) Kept per template, so
        # compiled once on PostgreSQL (db.Prepared): they return only counts and ids.
        return await execute_kept(s, cached(name, build), params, execution_options=_UNSYNCHRONIZED)

    async def run_scalar(name: str, build: Callable[[], Any]) -> Any:
        return (await run(name, build)).scalar()

    async def run_scalars(name: str, build: Callable[[], Any]) -> Any:
        return (await run(name, build)).scalars()

    async def history(name: str, build: Callable[[], Any]) -> None:
        await run(name, lambda: _history_insert(build()))

    names, disabled = [rule.name for rule in template.rules], template.disabled
    # What kinds of difference there are says which steps can change anything.
    if kinds is None:
        kinds = {}
        for status, present, opens, count in (
            await run(
                "kinds",
                lambda: select(_d.finding_status, _d.present, _d.opens, func.count()).group_by(
                    _d.finding_status, _d.present, _d.opens
                ),
            )
        ).all():
            kinds[(status, bool(present), bool(opens))] = count

    def have(status: str | None, present: bool = True) -> int:
        return sum(n for (st, pr, _), n in kinds.items() if st == status and pr == present)

    new_status = case((_d.opens == true(), literal("open")), else_=literal("pending"))
    by_id = Finding.id == _d.finding_id
    # Steps 2 to 4 start from the findings the differences name, by id. Joined on the id alone
    # with a test of the finding's status, the planner starts from that status instead (the
    # index on status and resolved_at, every account's) and reads the whole differences table
    # for each finding: 57 ms per statement for five regressions among a tick's thousand
    # differences, three statements in a row, growing with every finding ever resolved. (The
    # ids are a parameter, lc_ids: the statements are built once per template.)
    named: list[Any] = []
    if sum(have(status) for status in (*ENDED, "pending", "snoozed")):
        params["lc_ids"] = sorted(
            await run_scalars(
                "ids",
                lambda: select(_d.finding_id).where(
                    _d.present == true(), one_of(_d.finding_status, (*ENDED, "pending", "snoozed"))
                ),
            )
        )
        named = [_finding_ids(s)]

    # 1. Findings seen for the first time.
    def build_adding() -> Any:
        fresh = select(
            literal(account_id),
            _d.rule,
            _d.rule_version,
            _d.entity_type,
            _d.entity_id,
            _d.deal_id,
            _d.manager_id,
            _d.severity,
            new_status,
            _d.started_at,
            case((_d.opens == true(), now), else_=None),
            case((_d.opens == true(), 1), else_=0),
            false(),
            now,
            now,
        ).where(_d.finding_id.is_(None))
        columns = [
            "account_id",
            "rule",
            "rule_version",
            "entity_type",
            "entity_id",
            "deal_id",
            "manager_id",
            "severity",
            "status",
            "started_at",
            "opened_at",
            "times_opened",
            "suppressed",
            "created_at",
            "updated_at",
        ]
        return dialect_insert(s, Finding.__table__).from_select(columns, fresh).on_conflict_do_nothing()

    def build_added() -> Any:
        # One statement: the rows inserted (not those another process inserted first) go
        # straight to their history, and come back only as two counts.
        added = build_adding().returning(Finding.id, Finding.status).cte("added")
        began = (
            insert(FindingEvent.__table__)
            .from_select(
                _HISTORY_COLUMNS,
                select(added.c.id, now, literal(None), added.c.status, actor_, literal("condition began")),
            )
            .cte("began")
        )
        return select(func.count(), func.count().filter(added.c.status == "open")).select_from(added).add_cte(began)

    if have(None):
        if is_postgres(s):
            count, opened = (await run("added", build_added)).one()
            result.changed += count
            result.opened += opened
            if count > _MANY:
                # A first sweep of a big account inserts most of the table in this transaction;
                # without fresh statistics the next statements are planned for an empty table.
                await s.execute(text("ANALYZE findings"))
        else:
            count = (await run("adding", build_adding)).rowcount or 0
            result.changed += count
            if count:
                # The rows just inserted: created at this moment by this statement (a conflicting
                # row another process inserted keeps its own history).
                new = and_(
                    Finding.account_id == account_id,
                    Finding.rule == _d.rule,
                    Finding.entity_type == _d.entity_type,
                    Finding.entity_id == _d.entity_id,
                    _d.finding_id.is_(None),
                    Finding.created_at == now,
                    Finding.updated_at == now,
                )
                result.opened += (
                    await run_scalar(
                        "s1",
                        lambda: (
                            select(func.count())
                            .select_from(Finding)
                            .join(diff_table, and_(new, Finding.status == "open"))
                        ),
                    )
                    or 0
                )
                await history(
                    "h11",
                    lambda: (
                        select(Finding.id, now, literal(None), Finding.status, actor_, literal("condition began"))
                        .select_from(Finding)
                        .join(diff_table, new)
                    ),
                )

    # 2. Regressions: a resolved or expired finding whose condition is back opens again, history kept.
    if sum(have(status) for status in ENDED):
        regressed = and_(
            *named, by_id, one_of(_d.finding_status, ENDED), _d.present == true(), one_of(Finding.status, ENDED)
        )
        result.opened += (
            await run_scalar(
                "s2",
                lambda: select(func.count()).select_from(Finding).join(diff_table, and_(regressed, _d.opens == true())),
            )
            or 0
        )
        await history(
            "h12",
            lambda: (
                select(Finding.id, now, Finding.status, new_status, actor_, literal("regression"))
                .select_from(Finding)
                .join(diff_table, regressed)
            ),
        )
        result.changed += (
            await run(
                "e5",
                lambda: (
                    update(Finding.__table__)
                    .where(regressed)
                    .values(
                        status=new_status,
                        opened_at=case((_d.opens == true(), now), else_=None),
                        resolved_at=None,
                        resolution=None,
                        acknowledged_at=None,
                        acknowledged_by=None,
                        snoozed_until=None,
                        snoozed_by=None,
                        snooze_reason=None,
                        times_opened=Finding.times_opened + case((_d.opens == true(), 1), else_=0),
                        started_at=_d.started_at,
                        deal_id=_d.deal_id,
                        manager_id=_d.manager_id,
                        rule_version=_d.rule_version,
                        updated_at=now,
                    )
                ),
            )
        ).rowcount or 0

    # 3. The grace period has passed.
    if kinds.get(("pending", True, True)):
        due = and_(*named, by_id, _d.present == true(), _d.opens == true(), Finding.status == "pending")
        await history(
            "h13",
            lambda: (
                select(Finding.id, now, Finding.status, literal("open"), actor_, literal("grace period over"))
                .select_from(Finding)
                .join(diff_table, due)
            ),
        )
        promoted = (
            await run(
                "e6",
                lambda: (
                    update(Finding.__table__)
                    .where(due)
                    .values(status="open", opened_at=now, times_opened=Finding.times_opened + 1, updated_at=now)
                ),
            )
        ).rowcount or 0
        result.opened += promoted
        result.changed += promoted

    # 4. A snooze ended and the problem is still there.
    if have("snoozed"):
        # Back to where it would be without the snooze: open, or still pending if snoozed in its grace.
        woke = and_(*named, by_id, _d.present == true(), Finding.status == "snoozed", Finding.snoozed_until <= now)
        first_open = and_(_d.opens == true(), Finding.opened_at.is_(None))
        result.opened += (
            await run_scalar(
                "s3", lambda: select(func.count()).select_from(Finding).join(diff_table, and_(woke, _d.opens == true()))
            )
            or 0
        )
        await history(
            "h14",
            lambda: (
                select(Finding.id, now, Finding.status, new_status, actor_, literal("snooze ended"))
                .select_from(Finding)
                .join(diff_table, woke)
            ),
        )
        result.changed += (
            await run(
                "e7",
                lambda: (
                    update(Finding.__table__)
                    .where(woke)
                    .values(
                        status=new_status,
                        snoozed_until=None,
                        resolution=None,
                        updated_at=now,
                        opened_at=case((first_open, now), else_=Finding.opened_at),
                        times_opened=Finding.times_opened + case((first_open, 1), else_=0),
                    )
                ),
            )
        ).rowcount or 0

    # 5. Still violating: keep the facts current (a new manager, a moved due time, a new rule version).
    if sum(have(status) for status in ACTIVE):
        facts_differ = or_(
            Finding.manager_id.is_distinct_from(_d.manager_id),
            Finding.deal_id.is_distinct_from(_d.deal_id),
            Finding.started_at != _d.started_at,
            Finding.rule_version != _d.rule_version,
        )
        result.changed += (
            await run(
                "e8",
                lambda: (
                    update(Finding.__table__)
                    .where(by_id, _d.present == true(), Finding.status.in_(ACTIVE), facts_differ)
                    .values(
                        manager_id=_d.manager_id,
                        deal_id=_d.deal_id,
                        started_at=_d.started_at,
                        rule_version=_d.rule_version,
                        updated_at=now,
                    )
                ),
            )
        ).rowcount or 0

    # 6. Whatever no longer violates resolves, saying why; what is only past its rule's
    # look-back window expires (or, for a rule that keeps such findings, stays as it is).
    if sum(have(status, present=False) for status in ACTIVE):
        marked = await _past_window(s, account_id, template, now_)

        def parts() -> tuple[list[Any], Any, Any, Any]:
            # (Built only when a statement of this step is, once per template.)
            gone = [
                Finding.id.in_(
                    select(_d.finding_id).where(
                        _d.present == false(), or_(_d.past_window.is_(None), _d.past_window != "keep")
                    )
                ),
                Finding.account_id == account_id,
                Finding.rule.in_(names),
                Finding.status.in_(ACTIVE),
            ]
            expired = Finding.id.in_(select(_d.finding_id).where(_d.present == false(), _d.past_window == "expire"))
            deal = select(Deal).where(Deal.account_id == Finding.account_id, Deal.id == Finding.deal_id)
            # The first that applies: a rule switched off, the rule still seeing the problem past
            # its window, the deal gone or finished, and only then a fix.
            code = case(
                *([(Finding.rule.in_(disabled), literal("rule_disabled"))] if disabled else []),
                (expired, literal("expired")),
                (deal.where(Deal.is_deleted == true()).exists(), literal("deal_deleted")),
                (deal.where(Deal.is_closed == true()).exists(), literal("deal_closed")),
                else_=literal("condition_cleared"),
            )
            to_status = case((expired, literal("expired")), else_=literal("resolved"))
            return gone, expired, code, to_status

        expiring = 0
        if marked:

            def expiring_count() -> Any:
                gone, expired, _, _ = parts()
                return select(func.count()).select_from(Finding).where(*gone, expired)

            expiring = await run_scalar("s4", expiring_count) or 0
        if is_postgres(s):

            def resolving() -> Any:
                # One pass instead of two: the UPDATE hands the rows it moved, with their previous
                # state, straight to the history INSERT.
                gone, _, code, to_status = parts()
                old = (
                    select(Finding.id, Finding.status, code.label("code"), to_status.label("to_status"))
                    .where(*gone)
                    .cte("gone")
                )
                moved = (
                    update(Finding.__table__)
                    .where(Finding.id == old.c.id)
                    .values(
                        status=old.c.to_status,
                        resolution=old.c.code,
                        resolved_at=now,
                        snoozed_until=None,
                        updated_at=now,
                    )
                    .returning(Finding.id, old.c.status, old.c.to_status, old.c.code)
                    .cte("moved")
                )
                return (
                    insert(FindingEvent.__table__)
                    .from_select(
                        [*_HISTORY_COLUMNS, "resolution"],
                        select(
                            moved.c.id,
                            now,
                            moved.c.status,
                            moved.c.to_status,
                            actor_,
                            func.replace(moved.c.code, "_", " "),
                            moved.c.code,
                        ),
                    )
                    .add_cte(moved)
                )

            count = (await run("resolving", resolving)).rowcount or 0
        else:

            def resolved_history() -> Any:
                gone, _, code, to_status = parts()
                return select(
                    Finding.id, now, Finding.status, to_status, actor_, func.replace(code, "_", " "), code
                ).where(*gone)

            def resolve() -> Any:
                gone, _, code, to_status = parts()
                return (
                    update(Finding.__table__)
                    .where(*gone)
                    .values(status=to_status, resolution=code, resolved_at=now, snoozed_until=None, updated_at=now)
                )

            await history("resolved_history", resolved_history)
            count = (await run("resolve", resolve)).rowcount or 0
        result.changed += count
        result.resolved += count - expiring
        result.expired += expiring


async def suppress(s: AsyncSession, account_id: int, suppress: dict[str, list[str]], deals: Any, now: datetime) -> int:
    """Alertmanager-style inhibition: a finding stays quiet while an inhibiting one is open on its deal.
    `deals` (deal ids, or a SELECT of them) limits it to those deals; None: the whole account.
    Returns how many findings changed their voice."""
    at = literal(now, UtcDateTime())
    scope = [Finding.account_id == account_id, Finding.status.in_(ACTIVE)]
    listed = isinstance(deals, list)
    if deals is not None:
        scope.append(among(s, Finding.deal_id, deals) if listed else Finding.deal_id.in_(deals))
    targets = {target: inhibitors for target, inhibitors in suppress.items() if inhibitors}
    if listed:
        return await _suppress_deals(s, account_id, targets, deals, now)
    changed = 0
    for target, inhibitors in targets.items():
        inhibitor = Finding.__table__.alias("inhibitor")
        # The deals with an inhibiting finding, as one set (the database hashes it once) rather
        # than a lookup per finding.
        loud_deals = select(inhibitor.c.deal_id).where(
            inhibitor.c.account_id == account_id,
            inhibitor.c.rule.in_(inhibitors),
            inhibitor.c.status.in_(INHIBITING),
            inhibitor.c.deal_id.is_not(None),
        )
        if deals is not None:
            loud_deals = loud_deals.where(
                among(s, inhibitor.c.deal_id, deals) if listed else inhibitor.c.deal_id.in_(deals)
            )
        mine = [*scope, Finding.rule == target]
        changed += (
            await s.execute(
                update(Finding)
                .where(*mine, Finding.suppressed.is_(False), Finding.deal_id.in_(loud_deals))
                .values(suppressed=True, updated_at=at)
            )
        ).rowcount or 0
        changed += (
            await s.execute(
                update(Finding)
                .where(
                    *mine,
                    Finding.suppressed.is_(True),
                    or_(Finding.deal_id.is_(None), Finding.deal_id.not_in(loud_deals)),
                )
                .values(suppressed=False, updated_at=at)
            )
        ).rowcount or 0
    # Rules no longer suppressed by the settings speak again.
    changed += (
        await s.execute(
            update(Finding)
            .where(*scope, Finding.rule.not_in(list(targets)), Finding.suppressed.is_(True))
            .values(suppressed=False, updated_at=at)
        )
    ).rowcount or 0
    return changed


_suppressions: dict[tuple[int, str, str], tuple[dict[str, list[str]], Any]] = {}


def _suppress_statement(account_id: int, dialect: str, targets: dict[str, list[str]], scope: str) -> Any:
    """_suppress_deals()'s UPDATE, built once per account, inhibition settings and kind of scope
    (the moment and the deals are parameters): built afresh it cost an event's re-evaluation
    more in Python than its execution."""
    key = (account_id, dialect, scope)
    cached = _suppressions.get(key)
    if cached is not None and cached[0] == targets:
        return cached[1]
    if scope == "array":
        deals = bindparam("sp_deals", type_=postgresql.ARRAY(String()))

        def among_deals(column: Any) -> Any:
            return column == any_(deals)
    elif scope == "one":
        deal = bindparam("sp_deal", type_=String())

        def among_deals(column: Any) -> Any:
            return column == deal
    else:
        listed = bindparam("sp_deals", expanding=True, type_=String())

        def among_deals(column: Any) -> Any:
            return column.in_(listed)

    inhibitor = Finding.__table__.alias("inhibitor")
    whens = []
    for target, inhibitors in sorted(targets.items()):
        loud_deals = select(inhibitor.c.deal_id).where(
            inhibitor.c.account_id == account_id,
            one_of(inhibitor.c.rule, inhibitors),
            one_of(inhibitor.c.status, INHIBITING),
            inhibitor.c.deal_id.is_not(None),
            among_deals(inhibitor.c.deal_id),
        )
        whens.append((Finding.rule == target, and_(Finding.deal_id.is_not(None), Finding.deal_id.in_(loud_deals))))
    quiet = case(*whens, else_=false()) if whens else false()
    statement = (
        update(Finding.__table__)
        .where(
            Finding.account_id == account_id,
            one_of(Finding.status, ACTIVE),
            among_deals(Finding.deal_id),
            Finding.suppressed != quiet,
        )
        .values(suppressed=quiet, updated_at=bindparam("sp_at", type_=UtcDateTime()))
    )
    if len(_suppressions) > 10_000:
        _suppressions.clear()
    _suppressions[key] = (targets, statement)
    return statement


async def _suppress_deals(
    s: AsyncSession, account_id: int, targets: dict[str, list[str]], deals: list[str], now: datetime
) -> int:
    """suppress() on a few deals (an event's, a tick's) in one statement: each finding's voice is
    what the settings and the inhibiting findings on its deal say it should be, and only those
    that differ are written. (Whether a deal is loud depends on the inhibitors' states, never on
    their `suppressed`, so computing every target at once gives what target by target does.)"""
    dialect = dialect_of(s)
    if dialect == "postgresql" and len(deals) > MANY_DEALS:
        scope, params = "array", {"sp_deals": list(deals)}
    elif len(deals) == 1:
        scope, params = "one", {"sp_deal": deals[0]}
    else:
        scope, params = "list", {"sp_deals": list(deals)}
    statement = _suppress_statement(account_id, dialect, targets, scope)
    # The session holds no findings: synchronizing it with the UPDATE (evaluating its criteria in
    # Python) cost more than the UPDATE.
    result = await s.execute(statement, {**params, "sp_at": now}, execution_options=_UNSYNCHRONIZED)
    return result.rowcount or 0
