"""Evaluation: every rule's violations against the findings, set-based, in the caller's transaction.

Per rule, the violations are computed once into a temporary table, then a handful of
INSERT/UPDATE statements move findings between states: new → pending or open; pending → open
once the grace has passed; snoozed → open when the snooze ends; resolved → open again on a
regression; anything active → resolved when its entity no longer violates. Each transition is
written to finding_events by an INSERT … SELECT with the same predicate just before the UPDATE,
so a sweep over a million deals never pulls a row into Python.

The same code serves a sweep (the whole account) and incremental evaluation (the deals an
event touched): the scope is a WHERE clause. Running it twice, or from two processes, is
harmless: the dedup key (account, rule, entity) makes every step idempotent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    MetaData,
    String,
    Table,
    and_,
    case,
    delete,
    exists,
    false,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.schema import CreateTable

from app.accounts.models import Account
from app.db import UtcDateTime, dialect_insert, is_postgres, utcnow
from app.findings.models import ACTIVE, Finding, FindingEvent
from app.mirror.models import Deal
from app.outbox.enqueue import enqueue

from . import config as rules_config
from .base import Rule, RuleContext
from .registry import RULES

log = logging.getLogger(__name__)

INHIBITING = ("open", "acknowledged", "snoozed")

_temp = MetaData()
violations_table = Table(
    "crmwatch_violations", _temp,
    Column("entity_id", String(64), primary_key=True),
    Column("deal_id", String(64)),
    Column("manager_id", String(64)),
    Column("started_at", UtcDateTime()),
    Column("opens", Boolean()),
    prefixes=["TEMPORARY"],
)
_v = violations_table.c


@dataclass
class EvaluationResult:
    opened: int = 0
    resolved: int = 0
    open: int = 0
    enqueued: int = 0
    changed: int = 0  # findings whose state or facts this evaluation touched

    def add(self, other: EvaluationResult) -> None:
        self.opened += other.opened
        self.resolved += other.resolved
        self.changed += other.changed


async def _prepare(s: AsyncSession, whole_account: bool) -> None:
    """The temporary table of violations, empty; on PostgreSQL, settings for a big sweep."""
    await s.execute(CreateTable(violations_table, if_not_exists=True))
    if is_postgres(s) and whole_account:
        # A sweep joins against up to a million violations: let the hash joins stay in memory,
        # and skip JIT compilation, which costs more than it saves on these short plans.
        await s.execute(text("SET LOCAL work_mem = '64MB'"))
        await s.execute(text("SET LOCAL jit = off"))
    await _empty_violations(s, whole_account)


async def _empty_violations(s: AsyncSession, whole_account: bool) -> None:
    # PostgreSQL never vacuums temporary tables: after a sweep's million rows, DELETE would leave
    # every later evaluation on this pooled connection reading through them. TRUNCATE does not
    # (but costs a millisecond or two, too much for one deal's re-evaluation).
    if is_postgres(s) and whole_account:
        await s.execute(text(f"TRUNCATE {violations_table.name}"))
    else:
        await s.execute(delete(violations_table))


async def evaluate(s: AsyncSession, account_id: int, *, deal_ids: list[str] | None = None,
                   now: datetime | None = None, actor: str = "sweep") -> EvaluationResult:
    """Brings the account's findings in line with its mirror. The caller commits.

    `open` (the account's open findings) is counted for sweeps only: re-evaluating a few deals
    must not scan the whole account."""
    now = now or utcnow()
    whole = deal_ids is None
    if not whole and not deal_ids:
        return EvaluationResult()
    account = await s.get(Account, account_id)
    if account is None:
        return EvaluationResult()
    doc = await rules_config.load(s, account_id)
    calendar = doc.business_calendar(account.timezone)
    total = EvaluationResult()
    await _prepare(s, whole)
    for rule in RULES.values():
        ctx = RuleContext(account_id=account_id, now=now, calendar=calendar, config=doc.resolved(rule.name),
                          deal_ids=deal_ids)
        total.add(await _evaluate_rule(s, rule, ctx, actor))
    total.changed += await _suppress(s, account_id, doc.suppress, deal_ids, now)
    if whole or total.changed:
        # What the CRM must hear about this, written in this same transaction. (A sweep also
        # runs it unchanged: escalations and reminders come due with time alone.)
        total.enqueued = await enqueue(s, account_id, now, doc, calendar)
    if whole:
        await _empty_violations(s, whole)
        total.open = await count_open(s, account_id)
    return total


async def count_open(s: AsyncSession, account_id: int) -> int:
    return await s.scalar(select(func.count()).select_from(Finding)
                          .where(Finding.account_id == account_id, Finding.status == "open")) or 0


def _key(rule: Rule, account_id: int) -> list[Any]:
    return [Finding.account_id == account_id, Finding.rule == rule.name, Finding.entity_type == rule.entity_type]


async def _history(s: AsyncSession, source: Any) -> None:
    """Writes one finding_events row per finding that `source` selects: (id, from_status, to_status)."""
    await s.execute(insert(FindingEvent).from_select(
        ["finding_id", "at", "from_status", "to_status", "actor", "reason"], source))


async def _evaluate_rule(s: AsyncSession, rule: Rule, ctx: RuleContext, actor: str) -> EvaluationResult:
    now = ctx.at(ctx.now)
    result = EvaluationResult()
    await _empty_violations(s, ctx.deal_ids is None)
    violating = 0
    if ctx.config.enabled:
        violating = (await s.execute(insert(violations_table).from_select(
            ["entity_id", "deal_id", "manager_id", "started_at", "opens"], rule.violations(ctx)))).rowcount or 0
        if violating > 10_000 and is_postgres(s):
            await s.execute(text(f"ANALYZE {violations_table.name}"))  # temporary tables get no autovacuum
    key = _key(rule, ctx.account_id)
    matched = and_(*key, Finding.entity_id == _v.entity_id)
    new_status = case((_v.opens == true(), literal("open")), else_=literal("pending"))

    # Which steps can change anything? One cheap look saves most statements, which matters for
    # incremental evaluation (a few deals, after every inbox batch) far more than for sweeps.
    statuses: dict[str, int] = {}
    if violating:
        statuses = dict((await s.execute(select(Finding.status, func.count()).select_from(Finding)
                                         .join(violations_table, matched).group_by(Finding.status))).all())
    in_scope = [*key, Finding.status.in_(ACTIVE)]
    if ctx.deal_ids is not None:
        in_scope.append(Finding.deal_id.in_(ctx.deal_ids))
    active = await s.scalar(select(func.count()).select_from(Finding).where(*in_scope)) or 0

    # 1. Findings seen for the first time.
    if violating > sum(statuses.values()):
        fresh = (select(literal(ctx.account_id), literal(rule.name), literal(rule.version),
                        literal(rule.entity_type), _v.entity_id, _v.deal_id, _v.manager_id, literal(rule.severity),
                        new_status, _v.started_at, case((_v.opens == true(), now), else_=None),
                        case((_v.opens == true(), 1), else_=0), false(), now, now)
                 .where(~exists().where(matched)))
        inserted = await s.execute(
            dialect_insert(s, Finding.__table__).from_select(
                ["account_id", "rule", "rule_version", "entity_type", "entity_id", "deal_id", "manager_id",
                 "severity", "status", "started_at", "opened_at", "times_opened", "suppressed", "created_at",
                 "updated_at"], fresh)
            .on_conflict_do_nothing())
        result.changed += inserted.rowcount or 0
        if (inserted.rowcount or 0) > 10_000 and is_postgres(s):
            # A first sweep of a big account inserts most of the table in this transaction;
            # without fresh statistics the next statements are planned for an empty table.
            await s.execute(text("ANALYZE findings"))
        if inserted.rowcount:
            # The rows just inserted are the ones with no history yet.
            new = [*key, Finding.created_at == now,
                   ~exists().where(FindingEvent.finding_id == Finding.id)]
            result.opened += await s.scalar(select(func.count()).select_from(Finding).where(
                *new, Finding.status == "open")) or 0
            await _history(s, select(Finding.id, now, literal(None), Finding.status, literal(actor),
                                     literal("condition began")).where(*new))

    # 2. Regressions: a resolved finding whose condition is back opens again, history kept.
    if statuses.get("resolved"):
        regressed = and_(matched, Finding.status == "resolved")
        result.opened += await s.scalar(select(func.count()).select_from(Finding).join(
            violations_table, and_(regressed, _v.opens == true()))) or 0
        await _history(s, select(Finding.id, now, Finding.status, new_status, literal(actor),
                                 literal("regression")).select_from(Finding).join(violations_table, regressed))
        result.changed += statuses["resolved"]
        await s.execute(update(Finding).where(regressed).values(
            status=new_status, opened_at=case((_v.opens == true(), now), else_=None), resolved_at=None,
            acknowledged_at=None, acknowledged_by=None, snoozed_until=None, snoozed_by=None, snooze_reason=None,
            times_opened=Finding.times_opened + case((_v.opens == true(), 1), else_=0), started_at=_v.started_at,
            deal_id=_v.deal_id, manager_id=_v.manager_id, rule_version=rule.version, updated_at=now))

    # 3. The grace period has passed.
    if statuses.get("pending"):
        due = and_(matched, Finding.status == "pending", _v.opens == true())
        await _history(s, select(Finding.id, now, Finding.status, literal("open"), literal(actor),
                                 literal("grace period over")).select_from(Finding).join(violations_table, due))
        promoted = await s.execute(update(Finding).where(due).values(
            status="open", opened_at=now, times_opened=Finding.times_opened + 1, updated_at=now))
        result.opened += promoted.rowcount or 0
        result.changed += promoted.rowcount or 0

    # 4. A snooze ended and the problem is still there.
    if statuses.get("snoozed"):
        # Back to where it would be without the snooze: open, or still pending if snoozed in its grace.
        woke = and_(matched, Finding.status == "snoozed", Finding.snoozed_until <= now)
        first_open = and_(_v.opens == true(), Finding.opened_at.is_(None))
        result.opened += await s.scalar(select(func.count()).select_from(Finding).join(
            violations_table, and_(woke, _v.opens == true()))) or 0
        await _history(s, select(Finding.id, now, Finding.status, new_status, literal(actor),
                                 literal("snooze ended")).select_from(Finding).join(violations_table, woke))
        result.changed += (await s.execute(update(Finding).where(woke).values(
            status=new_status, snoozed_until=None, updated_at=now,
            opened_at=case((first_open, now), else_=Finding.opened_at),
            times_opened=Finding.times_opened + case((first_open, 1), else_=0)))).rowcount or 0

    # 5. Still violating: keep the facts current (a new manager, a moved due time, a new rule version).
    still = sum(statuses.get(st, 0) for st in ACTIVE)
    if still:
        stale_facts = and_(matched, Finding.status.in_(ACTIVE), or_(
            Finding.manager_id.is_distinct_from(_v.manager_id), Finding.deal_id.is_distinct_from(_v.deal_id),
            Finding.started_at != _v.started_at, Finding.rule_version != rule.version))
        result.changed += (await s.execute(update(Finding).where(stale_facts).values(
            manager_id=_v.manager_id, deal_id=_v.deal_id, started_at=_v.started_at, rule_version=rule.version,
            updated_at=now))).rowcount or 0

    # 6. Whatever no longer violates resolves, saying why.
    if active > still:
        gone = [*in_scope, ~exists().where(_v.entity_id == Finding.entity_id)]
        deal = select(Deal).where(Deal.account_id == Finding.account_id, Deal.id == Finding.deal_id)
        why = case(
            (literal(not ctx.config.enabled), literal("rule disabled")),
            (deal.where(Deal.is_deleted == true()).exists(), literal("deal deleted")),
            (deal.where(Deal.is_closed == true()).exists(), literal("deal closed")),
            else_=literal("condition cleared"))
        await _history(s, select(Finding.id, now, Finding.status, literal("resolved"), literal(actor), why)
                       .where(*gone))
        resolved = await s.execute(update(Finding).where(*gone).values(
            status="resolved", resolved_at=now, snoozed_until=None, updated_at=now))
        result.resolved += resolved.rowcount or 0
        result.changed += resolved.rowcount or 0
    return result


async def _suppress(s: AsyncSession, account_id: int, suppress: dict[str, list[str]],
                    deal_ids: list[str] | None, now: datetime) -> int:
    """Alertmanager-style inhibition: a finding stays quiet while an inhibiting one is open on its deal.
    Returns how many findings changed their voice."""
    at = literal(now, UtcDateTime())
    scope = [Finding.account_id == account_id, Finding.status.in_(ACTIVE)]
    if deal_ids is not None:
        scope.append(Finding.deal_id.in_(deal_ids))
    targets = {target: inhibitors for target, inhibitors in suppress.items() if inhibitors}
    changed = 0
    for target, inhibitors in targets.items():
        inhibitor = Finding.__table__.alias("inhibitor")
        # The deals with an inhibiting finding, as one set (the database hashes it once) rather
        # than a lookup per finding.
        loud_deals = select(inhibitor.c.deal_id).where(
            inhibitor.c.account_id == account_id, inhibitor.c.rule.in_(inhibitors),
            inhibitor.c.status.in_(INHIBITING), inhibitor.c.deal_id.is_not(None))
        mine = [*scope, Finding.rule == target]
        changed += (await s.execute(update(Finding).where(
            *mine, Finding.suppressed.is_(False), Finding.deal_id.in_(loud_deals))
            .values(suppressed=True, updated_at=at))).rowcount or 0
        changed += (await s.execute(update(Finding).where(
            *mine, Finding.suppressed.is_(True), or_(Finding.deal_id.is_(None), Finding.deal_id.not_in(loud_deals)))
            .values(suppressed=False, updated_at=at))).rowcount or 0
    # Rules no longer suppressed by the settings speak again.
    changed += (await s.execute(update(Finding).where(*scope, Finding.rule.not_in(list(targets)),
                                                      Finding.suppressed.is_(True))
                                .values(suppressed=False, updated_at=at))).rowcount or 0
    return changed
