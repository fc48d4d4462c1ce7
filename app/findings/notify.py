"""What findings ask of the outbox: the rows for finding changes (enqueue), and the senders of
their kinds (create_task, add_note, close_task), registered with app/outbox/senders.py.

Rows are written set-based, inside the evaluation's own transaction. What a finding does is
recorded as a fact keyed by `dedup_key` ("notify opening 2 of finding 17 with a task"), so
however many sweeps see the same state, and from however many processes, the CRM is written
once. Wording happens later, at delivery (_words).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BigInteger,
    String,
    and_,
    any_,
    bindparam,
    case,
    cast,
    exists,
    func,
    literal,
    literal_column,
    null,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app import wording
from app.accounts.models import Account
from app.calendar.business import BusinessCalendar
from app.db import MANY_DEALS, UtcDateTime, dialect_insert, dialect_of
from app.mirror.models import User
from app.outbox.models import OutboxAction
from app.outbox.senders import Batch, Outcome, marker, page_marker, register
from app.rules import config as rules_config
from app.rules.config import RulesDocument
from app.rules.registry import RULES
from app.runtime import Runtime
from app.security import load_secret
from integrations.base import NewNote, NewTask, TaskClosure

from . import pagelink
from . import service as findings_service
from .models import Finding

COLUMNS = [
    "account_id",
    "finding_id",
    "kind",
    "purpose",
    "dedup_key",
    "deal_id",
    "user_id",
    "ref_id",
    "status",
    "attempts",
    "next_attempt_at",
    "created_at",
]


def _key(*parts: Any) -> Any:
    out = literal("")
    for part in parts:
        out = out + (cast(part, String) if not isinstance(part, str) else literal(part))
    return out


def _rules_where(doc: RulesDocument, wants: Any) -> dict[Any, list[str]]:
    """The rules grouped by what `wants(notify settings)` gives, leaving out those it gives a
    falsy value: one statement per group serves every rule in it."""
    groups: dict[Any, list[str]] = {}
    for name in RULES:
        value = wants(doc.notify(name))
        if value:
            groups.setdefault(value, []).append(name)
    return groups


@dataclass(frozen=True)
class _Plan:
    """enqueue()'s statements for one account, rules document and kind of scope, built once: each
    evaluation only computes their parameters (the moment, the cutoffs, the deals). Built afresh,
    the expressions, their cache keys and the column collections of their subqueries cost an
    event's re-evaluation more in Python than the database spent on all of its statements."""

    doc: RulesDocument
    # In order: ("insert", rows added by it), ("exec", its count ignored), ("guarded", two counts).
    steps: list[tuple[str, Any]]
    escalations: list[int]  # the hours of the cutoffs `late_<hours>`
    repeats: list[int]  # the hours of the cutoffs `since_<hours>`


_plans: dict[tuple[int, str, str, bool], _Plan] = {}


def _scope_kind(dialect: str, deal_ids: Sequence[str] | None) -> str:
    if deal_ids is None:
        return "all"
    if dialect == "postgresql" and len(deal_ids) > MANY_DEALS:
        return "array"
    return "one" if len(deal_ids) == 1 else "list"


def _plan(account_id: int, dialect: str, doc: RulesDocument, scope: str, working: bool) -> _Plan:
    key = (account_id, dialect, scope, working)
    cached = _plans.get(key)
    if cached is not None and cached.doc is doc:
        return cached
    plan = _build(account_id, dialect, doc, scope, working)
    if len(_plans) > 10_000:
        _plans.clear()
    _plans[key] = plan
    return plan


def _build(account_id: int, dialect: str, doc: RulesDocument, scope: str, working: bool) -> _Plan:
    at = bindparam("nq_at", type_=UtcDateTime())
    if scope == "all":
        in_scope: list[Any] = []
    elif scope == "array":
        in_scope = [Finding.deal_id == any_(bindparam("nq_deals", type_=postgresql.ARRAY(String())))]
    elif scope == "one":
        # A plain parameter: an IN-list is rendered into the statement's text at every execution.
        in_scope = [Finding.deal_id == bindparam("nq_deal", type_=String())]
    else:
        in_scope = [Finding.deal_id.in_(bindparam("nq_deals", expanding=True, type_=String()))]
    steps: list[tuple[str, Any]] = []
    escalations: list[int] = []
    repeats: list[int] = []

    def mine(names: list[str], on_card: bool = True) -> list[Any]:
        # Notes live on a deal's card; a task may also go to a manager on no card, for a finding on
        # the manager (plan_behind_pace). Findings on a number (unknown_number) stay in crmwatch.
        where = Finding.deal_id.is_not(None) if on_card else or_(Finding.deal_id.is_not(None), ABOUT_MANAGER)
        return [Finding.account_id == account_id, Finding.rule.in_(names), where]

    def speaking(names: list[str], on_card: bool = True) -> list[Any]:
        return [*mine(names, on_card), *SPEAKS]

    # On PostgreSQL, an evaluation of a few deals (an event's, a tick's) writes all its rows in one
    # INSERT (with the cancellation of unsent tasks as a CTE) instead of one per kind and group:
    # every statement is a round trip, and an event's re-evaluation is made of round trips.
    merge = scope != "all" and dialect == "postgresql"
    # Many deals (a tick's): the flood guard is decided inside that INSERT (_insert_guarded). An
    # event's few deals keep the plain INSERT, which plans faster: the guard then runs only
    # when more rows than the limit were added, nearly never.
    guarded = scope == "array"

    def row(kind: str, purpose: str, key: Any, user: Any = Finding.manager_id, ref: Any = None) -> Any:
        return select(
            literal(account_id),
            Finding.id,
            literal(kind),
            literal(purpose),
            key,
            Finding.deal_id,
            user,
            # (A typed NULL: the rows of several kinds go through one UNION on PostgreSQL.)
            ref if ref is not None else cast(null(), BigInteger()),
            literal("pending"),
            literal(0),
            at,
            at,
            # Guarded, each row says its finding's rule: the flood guard's digest counts by rule.
            *([Finding.rule] if guarded else []),
        )

    sources: list[Any] = []
    cancels: list[Any] = []

    def add(source: Any) -> None:
        if merge:
            sources.append(source)
        else:
            steps.append(("insert", _insert_statement(dialect, source)))

    # Opened in this evaluation (first time, after the grace period, after a regression), or
    # allowed to speak again in it (its suppression lifted). The dedup key keeps it to once.
    # (Every such change stamps updated_at with this evaluation's time, which an index finds.)
    for names in _rules_where(doc, lambda n: n.task).values():
        add(
            row("create_task", "open", _key("f", Finding.id, ":open:", Finding.times_opened, ":task")).where(
                *speaking(names, on_card=False), Finding.updated_at == at
            ),
        )
    for names in _rules_where(doc, lambda n: n.note).values():
        add(
            row("add_note", "open", _key("f", Finding.id, ":open:", Finding.times_opened, ":note")).where(
                *speaking(names), Finding.updated_at == at
            ),
        )

    # Escalation: still open (not acknowledged, snoozed or suppressed) past the limit.
    supervisor = _supervisor(doc)
    if supervisor is not None:
        for hours, names in _rules_where(doc, lambda n: n.escalate_after_hours).items():
            escalations.append(hours)
            late = bindparam(f"nq_late_{hours}", type_=UtcDateTime())
            add(
                row(
                    "create_task",
                    "escalate",
                    _key("f", Finding.id, ":escalate:", Finding.times_opened),
                    user=supervisor,
                ).where(*speaking(names, on_card=False), *in_scope, Finding.opened_at <= late, supervisor.is_not(None)),
            )

    def reminders() -> list[Any]:
        # Reminder on the card, only in working hours, spaced by the repeat interval. (After the
        # openings: a note written for an opening just now counts as recent.)
        if not working:
            return []
        out = []
        for hours, names in _rules_where(doc, lambda n: n.repeat_hours).items():
            repeats.append(hours)
            since = bindparam(f"nq_since_{hours}", type_=UtcDateTime())
            recent = exists().where(
                OutboxAction.finding_id == Finding.id,
                OutboxAction.created_at > since,
                OutboxAction.purpose.in_(("open", "repeat")),
            )
            stamp = bindparam("nq_stamp", type_=String())
            source = row("add_note", "repeat", _key("f", Finding.id, ":repeat:", stamp)).where(
                *speaking(names), *in_scope, Finding.opened_at <= since, ~recent
            )
            out.append(source)
        return out

    if not merge:
        for source in reminders():
            steps.append(("insert", _insert_statement(dialect, source)))

    # Resolved in this evaluation: close what was opened for it.
    def resolved(names: list[str], on_card: bool = True) -> list[Any]:
        return [
            *mine(names, on_card),
            Finding.updated_at == at,
            Finding.status == "resolved",
            Finding.resolved_at == at,
        ]

    for names in _rules_where(doc, lambda n: n.close_on_resolve).values():
        cancel, close = _close_tasks(account_id, resolved(names, on_card=False), at)
        if guarded:
            close = close.add_columns(cast(null(), String()))  # (closures are never grouped)
        if merge:
            cancels.append(cancel)
        else:
            steps.append(("exec", cancel))
        add(close)
    for names in _rules_where(doc, lambda n: n.note_on_resolve).values():
        add(
            row("add_note", "resolve", _key("f", Finding.id, ":resolve:", Finding.times_opened)).where(
                *resolved(names), NOT_BACKLOG
            ),
        )
    if guarded:
        stmt = _insert_guarded(account_id, doc.flood_limit, sources, cancels, reminders())
        if stmt is not None:
            steps.append(("guarded", stmt))
        return _Plan(doc, steps, escalations, repeats)
    if sources:
        merged = (
            postgresql.insert(OutboxAction.__table__)
            .from_select(COLUMNS, union_all(*sources) if len(sources) > 1 else sources[0])
            .on_conflict_do_nothing()
        )
        for i, cancel in enumerate(cancels):
            merged = merged.add_cte(cancel.cte(f"cancelled_{i}"))
        steps.append(("insert", merged))
    if merge:
        for source in reminders():
            steps.append(("insert", _insert_statement(dialect, source)))
    return _Plan(doc, steps, escalations, repeats)


def _insert_statement(dialect: str, source: Any) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(OutboxAction.__table__).from_select(COLUMNS, source).on_conflict_do_nothing()


async def enqueue(
    s: AsyncSession,
    account_id: int,
    now: datetime,
    doc: RulesDocument,
    calendar: BusinessCalendar,
    deal_ids: Sequence[str] | None = None,
) -> int:
    """Outbox rows for what this evaluation changed; returns how many were added.

    Each kind of action is one statement for all the rules that ask for it (grouped by their
    setting where it has a value, such as the escalation delay): an evaluation that changed a
    finding runs a handful of statements, not a handful per rule.

    `deal_ids` is the scope of an incremental evaluation. Escalations and reminders come due
    with time alone, so a sweep finds them for the whole account; an evaluation of a few deals
    looks only at those deals' findings. Scanning every open finding of the account there made
    the re-evaluation right after a change cost 10x more in working hours, when reminders run
    (bench/sweep.py `--changed`: 200 ms against 20 ms at 1M deals)."""
    dialect = dialect_of(s)
    scope = _scope_kind(dialect, deal_ids)
    plan = _plan(account_id, dialect, doc, scope, calendar.is_working_time(now))
    params: dict[str, Any] = {"nq_at": now}
    for hours in plan.escalations:
        params[f"nq_late_{hours}"] = calendar.cutoff(now, hours * 3600)
    for hours in plan.repeats:
        params[f"nq_since_{hours}"] = calendar.cutoff(now, hours * 3600)
    if plan.repeats:
        params["nq_stamp"] = now.isoformat()
    if scope == "one":
        params["nq_deal"] = deal_ids[0]  # type: ignore[index]
    elif scope != "all":
        params["nq_deals"] = list(deal_ids or [])
    added = 0
    for kind, stmt in plan.steps:
        if kind == "guarded":
            params["nq_flood"] = f"flood:{now.isoformat()}:"
            sent, digested = (await s.execute(stmt, params)).one()
            return (sent or 0) + (digested or 0)
        result = await s.execute(stmt, params)
        if kind == "insert":
            added += result.rowcount or 0
    # Nobody can get more than the limit from an evaluation that added no more rows than that in
    # all (an event's, nearly always): the guard's grouped count would be a round trip for nothing.
    if added > doc.flood_limit:
        added += await _flood_guard(s, account_id, now, doc.flood_limit)
    return added


# What the flood guard counts and groups: the tasks and notes for a person.
_FLOODING = ("create_task", "add_note")
_GROUPED = "grouped into one task (flood_limit)"


def _insert_guarded(account_id: int, limit: int, sources: list[Any], cancels: list[Any], repeats: list[Any]) -> Any:
    """An evaluation of a few deals on PostgreSQL: every outbox row in one statement, the flood
    guard decided before anything is written. The rows not sent before (their dedup key is new)
    are counted per person; whoever would get more than `limit` tasks and notes gets a digest,
    inserted by the same statement, and their rows go in `grouped` under it at once (inserting
    them pending and then updating a thousand of them cost as much as the insert). The
    reminders come last, as before: a note for an opening written by this statement counts as
    recent. The statement's two counts are the change in rows to send, as enqueue() then
    _flood_guard() gave; None when there is nothing to insert."""
    if not sources and not repeats:
        return None
    table = OutboxAction.__table__
    o = table.c
    at = bindparam("nq_at", type_=UtcDateTime())

    def unsent(query: Any, name: str) -> Any:
        # Only the rows whose dedup key is new (ON CONFLICT still settles a race with another
        # process), named as the outbox's columns (the sources' are positional).
        rows = query.subquery(f"{name}_all")
        named = [column.label(label) for column, label in zip(rows.c, [*COLUMNS, "rule"], strict=True)]
        taken = (
            select(literal(1))
            .select_from(table)
            .where(o.account_id == account_id, o.dedup_key == named[COLUMNS.index("dedup_key")].element)
            .exists()
        )
        return select(*named).where(~taken).cte(name)

    def union(parts: list[Any]) -> Any:
        return union_all(*parts) if len(parts) > 1 else parts[0]

    parts: list[Any] = []
    opened = None
    if sources:
        opened = unsent(union(sources), "fresh_rows")
        parts.append(select(*opened.c))
    if repeats:
        query = union(repeats)
        if opened is not None:
            query = query.subquery("repeats_all")
            finding_id = query.c[COLUMNS.index("finding_id")]
            just_written = (
                select(literal(1))
                .select_from(opened)
                .where(opened.c.finding_id == finding_id, opened.c.purpose == "open")
                .exists()
            )
            query = select(*query.c).where(~just_written)
        parts.append(select(*unsent(query, "fresh_repeats").c))
    new = union(parts).cte("new_rows")
    n = new.c
    flooding = and_(n.kind.in_(_FLOODING), n.user_id.is_not(None))
    flood = (
        select(
            n.user_id,
            func.count().label("actions"),
            func.sum(case((n.purpose == "escalate", 1), else_=0)).label("escalations"),
        )
        .where(flooding)
        .group_by(n.user_id)
        .having(func.count() > limit)
        .cte("flooded")
    )
    per_rule = (
        select(n.user_id, n.rule, func.count(func.distinct(n.finding_id)).label("findings"))
        .where(flooding, n.rule.is_not(None))
        .group_by(n.user_id, n.rule)
        .cte("flooded_rules")
    )
    # Each person's findings by rule, as one object, joined with the people flooded (as a
    # correlated subquery, the rows were read again for every person; joined with them before
    # grouping, the rows were read again for every person too: the planner expects one).
    by_person = (
        select(per_rule.c.user_id, func.json_object_agg(per_rule.c.rule, per_rule.c.findings).label("rules"))
        .group_by(per_rule.c.user_id)
        .subquery("flooded_by_rule")
    )
    details = func.json_build_object(
        "rules",
        func.coalesce(by_person.c.rules, text("'{}'::json")),
        "actions",
        flood.c.actions,
        "escalations",
        flood.c.escalations,
    )
    digest = postgresql.insert(table).from_select(
        [*COLUMNS, "details"],
        select(
            literal(account_id),
            cast(null(), BigInteger()),
            literal("digest"),
            literal("flood"),
            func.left(bindparam("nq_flood", type_=String()) + flood.c.user_id, 120),
            cast(null(), String()),
            flood.c.user_id,
            cast(null(), BigInteger()),
            literal("pending"),
            literal(0),
            at,
            at,
            details,
        )
        .select_from(flood.outerjoin(by_person, by_person.c.user_id == flood.c.user_id))
        .order_by(flood.c.user_id),
    )
    digests = digest.on_conflict_do_nothing().returning(o.id, o.user_id).cte("digests")
    d = digests.c
    grouped = and_(d.id.is_not(None), n.kind.in_(_FLOODING))
    rows = select(
        *(n[name] for name in COLUMNS if name not in ("ref_id", "status")),
        case((grouped, d.id), else_=n.ref_id),
        case((grouped, literal("grouped")), else_=n.status),
        case((grouped, literal(_GROUPED)), else_=cast(null(), String())),
    ).select_from(new.outerjoin(digests, d.user_id == n.user_id))
    order = [name for name in COLUMNS if name not in ("ref_id", "status")] + ["ref_id", "status", "last_error"]
    inserted = (
        postgresql.insert(table).from_select(order, rows).on_conflict_do_nothing().returning(o.status).cte("inserted")
    )
    stmt = select(
        select(func.count()).select_from(inserted).where(inserted.c.status != "grouped").scalar_subquery(),
        select(func.count()).select_from(digests).scalar_subquery(),
    )
    for i, cancel in enumerate(cancels):
        stmt = stmt.add_cte(cancel.cte(f"cancelled_{i}"))
    return stmt


# A finding on a manager, not on a deal (plan_behind_pace): its task goes to the manager on no card.
ABOUT_MANAGER = Finding.entity_type == "manager"
# A finding's opening that belonged to a new connection's backlog speaks only through its summary.
NOT_BACKLOG = Finding.backlog_opening.is_distinct_from(Finding.times_opened)
# Open, not suppressed, not backlog: the terms of the partial index ix_findings_speaking, with
# 'open' inline (as a parameter, PostgreSQL cannot prove a generic plan's rows are in the index).
SPEAKS = (Finding.status == literal_column("'open'"), Finding.suppressed.is_(False), NOT_BACKLOG)
ACTIVE_FOR_SUMMARY = ("open",)


async def mark_backlog(s: AsyncSession, account_id: int, now: datetime) -> None:
    """The findings this evaluation opened belong to the backlog (see evaluation.evaluate)."""
    at = literal(now, UtcDateTime())
    await s.execute(
        update(Finding)
        .where(
            Finding.account_id == account_id,
            Finding.rule.in_(list(RULES)),  # the (account, rule, updated_at) index
            Finding.updated_at == at,
            Finding.opened_at == at,
            Finding.status == "open",
        )
        .values(backlog_opening=Finding.times_opened)
    )


def _digest(account_id: int, purpose: str, key: str, user: str, details: dict[str, Any], at: datetime) -> Any:
    return {
        "account_id": account_id,
        "finding_id": None,
        "kind": "digest",
        "purpose": purpose,
        "dedup_key": key[:120],
        "deal_id": None,
        "user_id": user,
        "ref_id": None,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": at,
        "created_at": at,
        "details": details,
    }


async def _insert_digests(s: AsyncSession, account_id: int, rows: list[dict[str, Any]], at: datetime) -> dict[str, int]:
    """Inserts digest rows (`_digest`, all made at `at`); returns dedup key -> id of those inserted
    here, leaving out a key another process took first. One statement executed for many rows, not
    a VALUES list of them all: that one is compiled afresh at every call, which cost more than the
    insert (a tick floods most of a team)."""
    if not rows:
        return {}
    await s.execute(dialect_insert(s, OutboxAction.__table__).on_conflict_do_nothing(), rows)
    found = await s.execute(
        select(OutboxAction.dedup_key, OutboxAction.id).where(
            OutboxAction.account_id == account_id,
            OutboxAction.dedup_key.in_([row["dedup_key"] for row in rows]),
            OutboxAction.created_at == literal(at, UtcDateTime()),
        )
    )
    return dict(found.all())


async def enqueue_backlog_summary(
    s: AsyncSession, account_id: int, now: datetime, doc: RulesDocument, since: datetime
) -> int:
    """One task per manager with their backlog counted by rule, and one per head of sales with
    their team's (`team_supervisors`, else `supervisor_user_id`); returns how many rows."""
    counts = (
        await s.execute(
            select(Finding.manager_id, Finding.rule, func.count())
            .where(
                Finding.account_id == account_id,
                Finding.status.in_(ACTIVE_FOR_SUMMARY),
                Finding.suppressed.is_(False),
                Finding.deal_id.is_not(None),
                Finding.backlog_opening == Finding.times_opened,
                Finding.opened_at >= literal(since, UtcDateTime()),
            )
            .group_by(Finding.manager_id, Finding.rule)
        )
    ).all()
    managers: dict[str, dict[str, int]] = {}
    heads: dict[str, dict[str, Any]] = {}
    for manager, rule, count in counts:
        if manager is not None:
            managers.setdefault(manager, {})[rule] = count
        head = doc.team_supervisors.get(manager, doc.supervisor_user_id) if manager else doc.supervisor_user_id
        if head is not None:
            team = heads.setdefault(head, {"rules": {}, "managers": {}})
            team["rules"][rule] = team["rules"].get(rule, 0) + count
            if manager is not None:
                team["managers"][manager] = team["managers"].get(manager, 0) + count
    stamp = since.isoformat()
    rows = [
        *(
            _digest(account_id, "backlog", f"backlog:{stamp}:{manager}", manager, {"rules": rules}, now)
            for manager, rules in sorted(managers.items())
        ),
        *(
            _digest(account_id, "backlog_team", f"backlog_team:{stamp}:{head}", head, team, now)
            for head, team in sorted(heads.items())
        ),
    ]
    return len(await _insert_digests(s, account_id, rows, now))


async def _flood_guard(s: AsyncSession, account_id: int, now: datetime, limit: int) -> int:
    """Whoever would get more than `limit` tasks and notes from this one evaluation gets one task
    summing them up instead: the rows stay, `grouped` under it, so their dedup keys still hold
    and a later sweep does not send them. Returns the change in rows to send."""
    at = literal(now, UtcDateTime())
    fresh = [
        OutboxAction.status == "pending",
        OutboxAction.next_attempt_at == at,  # the (status, next_attempt_at) index
        OutboxAction.account_id == account_id,
        OutboxAction.created_at == at,
        OutboxAction.kind.in_(("create_task", "add_note")),
        OutboxAction.user_id.is_not(None),
    ]
    # A handful of statements whatever the number of people flooded: in working hours a tick's
    # reminders can flood most of the team at once, and per person this was five round trips.
    # The first one is cheap and nearly always the only one: nobody is flooded.
    over = list(
        await s.scalars(
            select(OutboxAction.user_id).where(*fresh).group_by(OutboxAction.user_id).having(func.count() > limit)
        )
    )
    if not over:
        return 0
    counts = (
        await s.execute(
            select(
                OutboxAction.user_id,
                Finding.rule,
                func.count(),
                func.count(func.distinct(OutboxAction.finding_id)),
                func.sum(case((OutboxAction.purpose == "escalate", 1), else_=0)),
            )
            .select_from(OutboxAction)
            .outerjoin(Finding, Finding.id == OutboxAction.finding_id)
            .where(*fresh, OutboxAction.user_id.in_(over))
            .group_by(OutboxAction.user_id, Finding.rule)
        )
    ).all()
    people: dict[str, dict[str, Any]] = {}
    for user, rule, actions, findings, escalations in counts:
        details = people.setdefault(user, {"rules": {}, "actions": 0, "escalations": 0})
        details["actions"] += actions
        details["escalations"] += int(escalations or 0)
        if rule is not None:
            details["rules"][rule] = findings
    flooded = {user: details for user, details in sorted(people.items()) if details["actions"] > limit}
    if not flooded:
        return 0
    rows = [
        _digest(account_id, "flood", f"flood:{now.isoformat()}:{user}", user, flooded[user], now) for user in flooded
    ]
    ids = await _insert_digests(s, account_id, rows, now)
    digests = {row["user_id"]: digest_id for row in rows if (digest_id := ids.get(row["dedup_key"])) is not None}
    if not digests:  # another process took every key
        return 0
    await s.execute(
        update(OutboxAction)
        .where(*fresh, OutboxAction.user_id.in_(sorted(digests)))
        .values(
            status="grouped",
            ref_id=case(*((OutboxAction.user_id == user, digest_id) for user, digest_id in sorted(digests.items()))),
            last_error="grouped into one task (flood_limit)",
        )
    )
    return sum(1 - flooded[user]["actions"] for user in digests)


def _supervisor(doc: RulesDocument) -> Any:
    if doc.team_supervisors:
        by_team = case(
            *((Finding.manager_id == manager, literal(head)) for manager, head in sorted(doc.team_supervisors.items())),
            else_=literal(doc.supervisor_user_id),
        )
        return by_team
    return literal(doc.supervisor_user_id) if doc.supervisor_user_id else None


def _close_tasks(account_id: int, resolved: list[Any], at: Any) -> tuple[Any, Any]:
    """For the findings `resolved` selects: the UPDATE that cancels their tasks never tried, and
    the SELECT of the close_task rows for their tasks that may be in the CRM."""
    task = OutboxAction.__table__.alias("task")
    of_resolved = and_(
        task.c.account_id == account_id,
        task.c.kind == "create_task",
        task.c.finding_id.in_(select(Finding.id).where(*resolved)),
    )
    # Never tried: nothing to close in the CRM, just do not send it. A row tried before may
    # already be there (its answer was lost): it gets a close, which waits for the read-back.
    # (The two sets are apart, so the order of the two statements does not matter.)
    cancel = (
        update(OutboxAction)
        .where(
            OutboxAction.id.in_(select(task.c.id).where(of_resolved, task.c.status == "pending", task.c.attempts == 0))
        )
        .values(status="cancelled", last_error="the finding resolved before delivery")
    )
    close = select(
        literal(account_id),
        task.c.finding_id,
        literal("close_task"),
        literal("resolve"),
        _key("close:", task.c.id),
        task.c.deal_id,
        task.c.user_id,
        task.c.id,
        literal("pending"),
        literal(0),
        at,
        at,
    ).where(
        of_resolved, or_(task.c.status.in_(("sent", "sending")), and_(task.c.status == "pending", task.c.attempts > 0))
    )
    return cancel, close


# -- sending: the outbox hands each claimed batch of these kinds to the senders below --------------


@dataclass(frozen=True, slots=True)
class Wording:
    text: str
    due_at: datetime
    task_type_id: str | None
    finding_resolved: bool


async def _words(rt: Runtime, account: Account, rows: Sequence[OutboxAction], now: datetime) -> dict[int, Wording]:
    """Text (and, for tasks, due time and type) of each row, in the account's language."""
    async with rt.reads() as s:
        ids = {r.finding_id for r in rows if r.finding_id is not None}
        findings = {f.id: f for f in await s.scalars(select(Finding).where(Finding.id.in_(ids)))}
        rendered = {
            item.id: item
            for item in await findings_service.render(
                s, account, list(findings.values()), rt.settings.public_url, now=now
            )
        }
        doc = await rules_config.load(s, account.id)
    calendar = doc.business_calendar(account.timezone)
    tz = ZoneInfo(account.timezone)
    secret = load_secret(rt.settings)
    words = wording.of(account.language)
    out: dict[int, Wording] = {}
    for row in rows:
        item = rendered.get(row.finding_id or -1)
        finding = findings.get(row.finding_id or -1)
        message = item.message if item else words.A_PROBLEM
        since = finding.started_at.astimezone(tz).strftime("%d.%m %H:%M") if finding else "?"
        who = (item.details.get("manager_name") or item.manager_id) if item else None
        template = words.CRM_TEXTS.get((row.kind, row.purpose))
        text = template.format(message=message, who=who, since=since) if template else message
        link = words.PAGE_LINK.format(url=pagelink.url(rt.settings.public_url, secret, row.id))
        notify = doc.notify(finding.rule) if finding else rules_config.NotifyIn()
        due = calendar.add_working(now, notify.task_due_hours * 3600)
        if row.kind != "close_task":
            # The link opens the finding's page; it is also the mark a read-back finds (page_marker).
            text = f"{text}\n{link}"
        out[row.id] = Wording(
            text=text,
            due_at=due,
            task_type_id=notify.task_type_id,
            finding_resolved=finding is not None and finding.status == "resolved",
        )
    return out


def _marks(rows: Sequence[OutboxAction]) -> list[str]:
    # A row written before its text carried its page's link bears the old mark.
    return [m for r in rows for m in (page_marker(r.id), marker(r.id))]


def _found(found: dict[str, str], row_id: int) -> str | None:
    return found.get(page_marker(row_id)) or found.get(marker(row_id))


async def _send_created(batch: Batch) -> Outcome:
    """create_task and add_note rows: tasks and notes on the finding's deal."""
    words = await _words(batch.rt, batch.account, batch.rows, batch.now)
    batch.outcome.texts.update({row_id: w.text for row_id, w in words.items()})
    await _create(batch.client, batch.rows[0].kind, batch.rows, words, batch.outcome)
    return batch.outcome


async def _send_closures(batch: Batch) -> Outcome:
    """close_task rows: complete the task opened for a finding that resolved."""
    words = await _words(batch.rt, batch.account, batch.rows, batch.now)
    batch.outcome.texts.update({row_id: w.text for row_id, w in words.items()})
    await _close(batch.rt, batch.client, batch.rows, words, batch.outcome)
    return batch.outcome


async def _create(client: Any, kind: str, rows: list[OutboxAction], words: dict[int, Wording], out: Outcome) -> None:
    # Tried before and the answer was lost? Then it may already be in the CRM: look first.
    retried = [r for r in rows if r.attempts > 1]
    if retried:
        on_card = [r for r in retried if r.deal_id is not None]
        found = (
            await client.find_marked(
                "task" if kind == "create_task" else "note", [r.deal_id for r in on_card], _marks(on_card)
            )
            if on_card
            else {}
        )
        off_card = [r for r in retried if r.deal_id is None and r.user_id]
        if off_card:  # a manager's task on no card: read back among the person's tasks
            found |= await client.find_marked_tasks_of(sorted({r.user_id for r in off_card}), _marks(off_card))
        for r in retried:
            if _found(found, r.id) is not None:
                out.sent[r.id] = _found(found, r.id)
            elif words[r.id].finding_resolved:
                out.cancelled.add(r.id)  # not in the CRM, and nothing left to say: do not send it now
    todo = [r for r in rows if r.id not in out.sent and r.id not in out.cancelled]
    if not todo:
        return
    if kind == "create_task":
        created = await client.create_tasks(
            [
                NewTask(
                    request_id=str(r.id),
                    deal_id=r.deal_id,
                    responsible_user_id=r.user_id,
                    text=words[r.id].text,
                    due_at=words[r.id].due_at,
                    type_id=words[r.id].task_type_id,
                )
                for r in todo
            ]
        )
    else:
        created = await client.add_notes(
            [NewNote(request_id=str(r.id), deal_id=r.deal_id, text=words[r.id].text) for r in todo]
        )
    for r in todo:
        if str(r.id) in created:
            out.sent[r.id] = created[str(r.id)]


async def _close(rt: Runtime, client: Any, rows: list[OutboxAction], words: dict[int, Wording], out: Outcome) -> None:
    async with rt.reads() as s:
        refs = {
            t.id: t
            for t in await s.scalars(
                select(OutboxAction).where(OutboxAction.id.in_([r.ref_id for r in rows if r.ref_id]))
            )
        }
    closures = []
    for row in rows:
        task = refs.get(row.ref_id or -1)
        if task is None or task.status in ("dead", "cancelled"):
            out.cancelled.add(row.id)
        elif task.status != "sent" or not task.external_id:
            out.postponed.add(row.id)  # the task itself is still on its way
        else:
            closures.append((row, TaskClosure(task_id=task.external_id, result_text=words[row.id].text)))
    # Tried before: the close may have landed with its answer lost. A task already completed is
    # not written again (each write would record the result once more).
    retried = [c.task_id for row, c in closures if row.attempts > 1]
    if retried:
        completed = await client.completed_tasks(retried)
        for row, c in closures:
            if row.attempts > 1 and c.task_id in completed:
                out.sent[row.id] = None
        closures = [(row, c) for row, c in closures if row.id not in out.sent]
    if closures:
        await client.close_tasks([c for _, c in closures])
        for row, _ in closures:
            out.sent[row.id] = None


async def _digest_texts(rt: Runtime, account: Account, rows: Sequence[OutboxAction]) -> dict[int, str]:
    """A digest's text: what it sums up, by rule (and, for a head of sales, by manager)."""
    words = wording.of(account.language)
    secret = load_secret(rt.settings)
    people = {m for r in rows for m in ((r.details or {}).get("managers") or {})}
    async with rt.reads() as s:
        names = dict(
            (
                await s.execute(
                    select(User.id, User.name).where(User.account_id == account.id, User.id.in_(sorted(people)))
                )
            ).all()
        )
    out: dict[int, str] = {}
    for row in rows:
        details = row.details or {}
        rules: dict[str, int] = details.get("rules") or {}
        total = sum(rules.values())
        heading = {
            "backlog": words.DIGEST_BACKLOG,
            "backlog_team": words.DIGEST_BACKLOG_TEAM,
        }.get(row.purpose, words.DIGEST_FLOOD)
        lines = [heading.format(total=total, actions=details.get("actions", total))]
        for rule, count in sorted(rules.items(), key=lambda item: (-item[1], item[0])):
            lines.append(words.DIGEST_RULE_LINE.format(title=words.RULE_TITLES.get(rule, rule), count=count))
        if details.get("escalations"):
            lines.append(words.DIGEST_ESCALATIONS.format(count=details["escalations"]))
        managers: dict[str, int] = details.get("managers") or {}
        if managers:
            ranked = sorted(managers.items(), key=lambda item: (-item[1], item[0]))
            lines.append(
                words.DIGEST_BY_MANAGER.format(managers=", ".join(f"{names.get(m) or m} — {n}" for m, n in ranked))
            )
        lines.append(words.DIGEST_WHERE)
        lines.append(words.PAGE_LINK.format(url=pagelink.url(rt.settings.public_url, secret, row.id)))
        out[row.id] = "\n".join(lines)
    return out


async def _send_digests(batch: Batch) -> Outcome:
    """digest rows: one task on no deal, for the person it sums things up for."""
    texts = await _digest_texts(batch.rt, batch.account, batch.rows)
    batch.outcome.texts.update(texts)
    retried = [r for r in batch.rows if r.attempts > 1]
    if retried:
        found = await batch.client.find_marked_tasks_of(
            sorted({r.user_id for r in retried if r.user_id}), _marks(retried)
        )
        for r in retried:
            if _found(found, r.id) is not None:
                batch.outcome.sent[r.id] = _found(found, r.id)
    todo = [r for r in batch.rows if r.id not in batch.outcome.sent]
    if not todo:
        return batch.outcome
    async with batch.rt.reads() as s:
        doc = await rules_config.load(s, batch.account.id)
    due = doc.business_calendar(batch.account.timezone).add_working(
        batch.now, rules_config.NotifyIn().task_due_hours * 3600
    )
    created = await batch.client.create_tasks(
        [
            NewTask(request_id=str(r.id), deal_id=None, responsible_user_id=r.user_id, text=texts[r.id], due_at=due)
            for r in todo
        ]
    )
    for r in todo:
        if str(r.id) in created:
            batch.outcome.sent[r.id] = created[str(r.id)]
    return batch.outcome


register("create_task", _send_created)
register("add_note", _send_created)
register("close_task", _send_closures)
register("digest", _send_digests)
