"""What the rules find: each account's rules, resolved, and the statement of their violations.

Every enabled rule's query (base.py) is tagged with the rule (its name, entity type, version,
severity) and the tagged queries become one UNION ALL. app/findings/ compares that with the
findings recorded so far and moves the findings (app/findings/lifecycle.py, evaluation.py): the
rules compute, the findings keep the record.

Statements are built once per account, settings and scope kind, and then only re-executed with
fresh parameters (the moment, the deals): a Template. Whether a rule's query may be reused is
found out by building it twice, for two moments and two scopes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, String, literal, union_all

from app.calendar.business import BusinessCalendar
from app.db import utcnow

from . import config as rules_config
from .base import ResolvedRuleConfig, Rule, RuleContext, RuleSettings, on_scope, scoped_deals
from .registry import RULES

log = logging.getLogger(__name__)

# (template, account id, the tagged queries of the enabled rules) → the statement to execute.
Compare = Callable[["Template", int, list[Any]], Any]


@dataclass(frozen=True)
class AccountRules:
    """An account's rules document, validated and resolved per rule, with its calendar."""

    document: rules_config.RulesDocument
    resolved: dict[str, ResolvedRuleConfig]

    def calendar(self, timezone: str) -> BusinessCalendar:
        return self.document.business_calendar(timezone)


# Validating and resolving the rules document costs more than the query that reads it; it
# changes rarely, so each process keeps the last one it parsed per account, keyed by its
# content (a change made by any process is seen on the next evaluation).
_rules_cache: dict[int, tuple[dict[str, Any] | None, AccountRules]] = {}


def account_rules(account_id: int, raw: dict[str, Any] | None) -> AccountRules:
    cached = _rules_cache.get(account_id)
    if cached is not None and cached[0] == raw:
        return cached[1]
    doc = rules_config.RulesDocument.model_validate(raw) if raw else rules_config.RulesDocument()
    settings = AccountRules(doc, {name: doc.resolved(name) for name in RULES})
    _rules_cache[account_id] = (raw, settings)
    return settings


@dataclass(frozen=True)
class Template:
    """The comparison statement for one account, settings and scope kind, built once where that
    is safe; each evaluation then only computes the parameters (the moment, the deals).

    A rule whose query is not a pure function of its parameters (it computed a value from
    `ctx.now` or `ctx.deal_ids` in its own code) is rebuilt at every evaluation instead: the
    template finds out by building each query twice, for two moments and two scopes."""

    settings: AccountRules
    rules: tuple[Rule, ...]
    timezone: str
    whole: bool
    own: RuleContext  # the engine's own parameters: the moment and the deals
    cached: dict[str, tuple[RuleContext, Any]]  # rule → its context and tagged query, reused
    enabled: list[Rule]
    disabled: list[str]
    insert: Any  # the whole statement when every enabled rule is cached, else None
    dialect: str
    compare: Compare
    arrays: bool = False  # the deals in scope as one array parameter (many deals, PostgreSQL)
    one: bool = False  # exactly one deal in scope, as a plain parameter

    def contexts(self) -> list[RuleContext]:
        return [self.own, *(ctx for ctx, _ in self.cached.values())]

    def statement(self, account_id: int, now: datetime, deal_ids: list[str] | None) -> Any:
        if self.insert is not None:
            return self.insert
        queries = []
        for i, rule in enumerate(self.enabled):
            if rule.name in self.cached:
                queries.append(self.cached[rule.name][1])
            else:
                ctx = _context(self, account_id, rule, i, now, deal_ids)
                queries.append(tagged(rule, ctx))
        return self.compare(self, account_id, queries)


_templates: dict[tuple[int, str, bool, str, bool, bool], Template] = {}
_warned: set[str] = set()
# Whether a rule's query is a pure function of its parameters depends on the rule's code, its
# settings, the calendar and the scope kind, never on the account: the probes' verdict is kept
# per those. Compiling the probes cost about 0.1 s per template, which a worker meeting ten
# accounts with the same settings paid thirty times over at start-up (three scope kinds each).
_verdicts: dict[tuple[Any, ...], tuple[Rule, bool]] = {}
# Two probes far apart in working time and with different deals: a value frozen at build time
# differs between them, a parameter does not.
_PROBE_SHIFT = timedelta(days=9, hours=3, minutes=17)


def _context(
    t: Template, account_id: int, rule: Rule, i: int, now: datetime, deal_ids: list[str] | None
) -> RuleContext:
    return RuleContext(
        account_id=account_id,
        now=now,
        calendar=t.settings.calendar(t.timezone),
        config=t.settings.resolved[rule.name],
        deal_ids=deal_ids,
        prefix=f"r{i}",
        arrays=t.arrays,
        one=t.one,
        scope=t.own.scope,
    )


def template(
    account_id: int,
    settings: AccountRules,
    timezone: str,
    whole: bool,
    dialect: Any,
    compare: Compare,
    many: bool = False,
    one: bool = False,
) -> Template:
    """The account's template for this kind of scope. `compare` turns the rules' tagged queries
    into the whole statement (app/findings/lifecycle.compare: what differs from the findings).
    `many`: more than a few deals in scope; `one`: exactly one."""
    arrays = many and not whole and dialect.name == "postgresql"
    one = one and not whole and not arrays
    key = (account_id, timezone, whole, dialect.name, arrays, one)
    cached = _templates.get(key)
    rules = tuple(RULES.values())
    if cached is not None and cached.settings is settings and cached.rules == rules:
        return cached
    enabled = [rule for rule in rules if settings.resolved[rule.name].enabled]
    disabled = [rule.name for rule in rules if not settings.resolved[rule.name].enabled]
    now = utcnow()
    own = RuleContext(
        account_id=account_id,
        now=now,
        calendar=settings.calendar(timezone),
        config=ResolvedRuleConfig(enabled=True, settings=RuleSettings()),
        deal_ids=None if whole else ["probe-a"],
        prefix="eval",
        arrays=arrays,
        one=one,
    )
    if arrays:
        own.scope = scoped_deals(own)
    template = Template(
        settings, rules, timezone, whole, own, {}, enabled, disabled, None, dialect.name, compare, arrays, one
    )
    calendar_key = settings.document.calendar.model_dump_json()
    for i, rule in enumerate(enabled):
        verdict_key = (
            rule.name,
            repr(settings.resolved[rule.name]),
            calendar_key,
            timezone,
            whole,
            dialect.name,
            arrays,
            one,
        )
        known = _verdicts.get(verdict_key)
        if known is not None and known[0] is rule:  # (the same rule object: a test may swap one in)
            if known[1]:
                ctx = _context(template, account_id, rule, i, now, None if whole else ["probe-a"])
                template.cached[rule.name] = (ctx, tagged(rule, ctx))
            continue
        probes = []
        for moment, deals in (
            (now, None if whole else ["probe-a"]),
            (now - _PROBE_SHIFT, None if whole else ["probe-b", "probe-c"]),
        ):
            ctx = _context(template, account_id, rule, i, moment, deals)
            query = tagged(rule, ctx)
            compiled = query.compile(dialect=dialect)
            fixed = {name: value for name, value in compiled.params.items() if name not in ctx.params}
            probes.append((ctx, query, str(compiled), fixed))
        (ctx, query, sql_a, fixed_a), (_, _, sql_b, fixed_b) = probes
        pure = sql_a == sql_b and fixed_a == fixed_b
        _verdicts[verdict_key] = (rule, pure)
        if pure:
            template.cached[rule.name] = (ctx, query)
        elif rule.name not in _warned:
            _warned.add(rule.name)
            log.warning(
                "rules.query_not_parametrized",
                extra={
                    "rule": rule.name,
                    "hint": (
                        "the rule computes a value from ctx.now or ctx.deal_ids itself; use ctx.now_param(), "
                        "ctx.cutoff(), ctx.per_stage() or ctx.bind() so its query can be reused"
                    ),
                },
            )
    if enabled and len(template.cached) == len(enabled):
        object.__setattr__(
            template, "insert", compare(template, account_id, [template.cached[rule.name][1] for rule in enabled])
        )
    if len(_templates) > 10_000:
        _templates.clear()
        _verdicts.clear()
    _templates[key] = template
    return template


@dataclass(frozen=True)
class Timing:
    """The statement of when each deal's verdict can next change (the enabled rules' `timing`
    queries, one UNION ALL), built once per account, settings and scope kind like a Template."""

    settings: AccountRules
    contexts: list[RuleContext]
    statement: Any
    scope: Any = None  # a Template's deals in scope, when shared with it


_timings: dict[tuple[int, str, bool, str, bool, bool, int | None], Timing] = {}


def timing(
    account_id: int,
    settings: AccountRules,
    timezone: str,
    whole: bool,
    dialect: str,
    extra: Callable[[RuleContext], list[Any]],
    many: bool = False,
    one: bool = False,
    active: Callable[[str], Any] | None = None,
    scope: Any = None,
) -> Timing:
    """The account's timing statement; `extra(ctx)` adds the findings' own moments (a snooze ending).
    `active(rule)`: a rule's active findings, which a sweep's statement reads instead of the
    rule's violations where the rule has a `sweep_timing` (the findings agree with them by then).
    `scope`: the deals in scope as a Template's (its `own.scope`), for a statement that reads
    them once for both the violations and the moments (many deals on PostgreSQL)."""
    arrays = many and not whole and dialect == "postgresql"
    one = one and not whole and not arrays
    shared = scope if arrays else None
    key = (account_id, timezone, whole, dialect, arrays, one, id(shared) if shared is not None else None)
    cached = _timings.get(key)
    if cached is not None and cached.settings is settings and cached.scope is shared:
        return cached
    now = utcnow()
    contexts: list[RuleContext] = []
    queries: list[Any] = []
    rules = [rule for rule in RULES.values() if settings.resolved[rule.name].enabled and rule.timing is not None]
    scope = shared
    for i, rule in enumerate([None, *rules]):
        ctx = RuleContext(
            account_id=account_id,
            now=now,
            calendar=settings.calendar(timezone),
            config=settings.resolved[rule.name] if rule else ResolvedRuleConfig(enabled=True, settings=RuleSettings()),
            deal_ids=None if whole else ["probe"],
            prefix=f"t{i}",
            arrays=arrays,
            one=one,
            scope=scope,
        )
        if arrays and scope is None:
            # The deals in scope, read once for every rule's timing (the first context binds them).
            scope = ctx.scope = scoped_deals(ctx)
        contexts.append(ctx)
        if rule is None:
            queries.extend(extra(ctx))
        elif whole and active is not None and rule.sweep_timing is not None:
            queries.extend(rule.sweep_timing(ctx, active(rule.name)))
        elif rule.timing is not None:
            queries.extend(on_scope(query, ctx) for query in rule.timing(ctx))
    statement = union_all(*queries) if len(queries) > 1 else queries[0]
    built = Timing(settings, contexts, statement, shared)
    if len(_timings) > 10_000:
        _timings.clear()
    _timings[key] = built
    return built


def tagged(rule: Rule, ctx: RuleContext) -> Any:
    """The rule's violations, each row tagged with the rule (its name, entity type, version, severity)."""
    return on_scope(rule.violations(ctx), ctx).add_columns(
        literal(rule.name, String()).label("rule"),
        literal(rule.entity_type, String()).label("entity_type"),
        literal(rule.version, Integer()).label("rule_version"),
        literal(rule.severity, String()).label("severity"),
    )
