"""Evaluation, the flow: what the rules find (app/rules/engine.py) → the findings' transitions
(lifecycle.py) → what the outbox must do about them (notify.py), in the caller's transaction.

The rules only compute; the lifecycle only moves findings; this module is the one place that
asks the outbox to act, once the transitions are made.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.db import MANY_DEALS, execute_kept, is_postgres, utcnow
from app.rules import engine as rules_engine
from app.rules.models import RuleConfig

from . import due, lifecycle, notify
from .lifecycle import EvaluationResult, diff_table

__all__ = ["EvaluationResult", "diff_table", "evaluate", "remind"]


async def remind(s: AsyncSession, account_id: int, now: datetime) -> tuple[int, int]:
    """Escalations and reminders that came due on the account's open findings (a sweep asks for
    them too). Returns how many outbox rows were queued, and in how many minutes to look again."""
    row = (
        await s.execute(
            select(Account.timezone, Account.paused, RuleConfig.document)
            .outerjoin(RuleConfig, RuleConfig.account_id == Account.id)
            .where(Account.id == account_id)
        )
    ).first()
    if row is None or row.paused:
        return 0, 5
    settings = rules_engine.account_rules(account_id, row.document)
    doc = settings.document
    added = await notify.enqueue(s, account_id, now, doc, settings.calendar(row.timezone), None)
    return added, doc.sweep_interval_minutes


# The account's state and rules document, built once: every evaluation starts with it, and
# building it cost an event's re-evaluation a good part of what executing it does.
_ACCOUNT = (
    select(Account.timezone, Account.paused, Account.backlog_since, Account.sync_state, RuleConfig.document)
    .outerjoin(RuleConfig, RuleConfig.account_id == Account.id)
    .where(Account.id == bindparam("evaluated_account"))
)


async def evaluate(
    s: AsyncSession,
    account_id: int,
    *,
    deal_ids: list[str] | None = None,
    now: datetime | None = None,
    actor: str = "sweep",
) -> EvaluationResult:
    """Brings the account's findings in line with its mirror, and the moments at which they can
    next change with time alone (due.py). The caller commits.

    `deal_ids`: only these deals ("" for the account's entities without a deal, such as calls
    nobody matched); None: the whole account (a sweep).

    `open` (the account's open findings) is counted for sweeps only: re-evaluating a few deals
    must not scan the whole account."""
    now = now or utcnow()
    whole = deal_ids is None
    if not whole and not deal_ids:
        return EvaluationResult()
    row = (await s.execute(_ACCOUNT, {"evaluated_account": account_id})).first()
    if row is None or row.paused:
        return EvaluationResult()  # a paused account is left as it is until resumed
    settings = rules_engine.account_rules(account_id, row.document)
    calendar = settings.calendar(row.timezone)
    many = deal_ids is not None and len(deal_ids) > MANY_DEALS
    one = deal_ids is not None and len(deal_ids) == 1
    template = rules_engine.template(
        account_id, settings, row.timezone, whole, s.bind.dialect, lifecycle.compare, many, one
    )
    # No await between setting the moment and scope and computing the parameters from them: the
    # template is shared by every evaluation of this account in this process.
    params: dict[str, Any] = {}
    for ctx in template.contexts():
        ctx.now, ctx.deal_ids = now, deal_ids
        params.update(ctx.values())
    statement = template.statement(account_id, now, deal_ids)
    await lifecycle.prepare(s, whole, many)
    total = EvaluationResult()
    kinds = None
    moments: list[Any] | None = None
    if is_postgres(s) and whole:
        differences = await lifecycle.compare_whole(s, statement, params)
    elif is_postgres(s) and template.one:
        # An event's deal: the template's statement is compiled once (db.Prepared); one rebuilt at
        # each evaluation goes the usual way. The differences come back as their kinds (RETURNING).
        if statement is template.insert:
            rows = await execute_kept(s, statement, params)
        else:
            rows = await s.execute(statement, params)
        kinds = lifecycle.kinds_of(rows)
        differences = sum(kinds.values())
    elif template.arrays and deal_ids is not None:
        # A tick's many deals: the moments come with the comparison (due.with_moments).
        combined, more = due.with_moments(template, statement, account_id, row.timezone, now, deal_ids)
        moments, differences = [], 0
        for *moment, written in await s.execute(combined, {**params, **more}):
            if written is None:
                moments.append(moment)
            else:
                differences = written
    else:
        differences = (await s.execute(statement, params)).rowcount or 0
    if differences:
        await lifecycle.apply_differences(s, account_id, template, differences, now, actor, total, kinds)
    doc = settings.document
    # Inhibition follows the findings' states and deals, so it can only change on the deals
    # whose findings changed, or anywhere when the settings did (seen by the next sweep).
    emptied = False
    if whole and lifecycle.suppressed_with.get(account_id) is not doc:
        total.changed += await lifecycle.suppress(s, account_id, doc.suppress, None, now)
        lifecycle.remember_on_commit(s, account_id, doc)
    elif total.changed:
        # Only the deals where a target or an inhibitor changed: a tick's thousand overdue tasks
        # cannot change a stuck deal's voice (and re-reading every finding of its deals cost 15 ms).
        changed, emptied = await lifecycle.drain_changed_deals(s, differences, lifecycle.inhibition_rules(doc.suppress))
        if not isinstance(changed, list) or changed:
            total.changed += await lifecycle.suppress(s, account_id, doc.suppress, changed, now)
    if differences and not emptied:
        await lifecycle.empty_differences(s, differences)
    # Until the sweep after the backfill, whatever opens was there before crmwatch came: the
    # backlog, which is announced as a whole (or not at all), never finding by finding.
    backlog = row.backlog_since is not None and doc.announce_backlog != "all"
    if backlog and total.changed:
        await notify.mark_backlog(s, account_id, now)
    if whole or total.changed:
        # The outbox is asked to act on what changed, in this same transaction. (A sweep also
        # asks when nothing changed: escalations and reminders come due with time alone.)
        total.enqueued = await notify.enqueue(s, account_id, now, doc, calendar, None if whole else deal_ids)
    if whole and row.backlog_since is not None and row.sync_state == "done":
        # The first sweep over a complete mirror: the backlog is known, and from now on every
        # finding that opens is news.
        if doc.announce_backlog == "summary":
            total.enqueued += await notify.enqueue_backlog_summary(s, account_id, now, doc, row.backlog_since)
        # (A re-sync asked for meanwhile keeps the account quiet until it has run.)
        await s.execute(
            update(Account)
            .where(Account.id == account_id, Account.backlog_since == row.backlog_since, Account.sync_state == "done")
            .values(backlog_since=None)
        )
    # When the verdict on what was evaluated can next change with no event: the tick's index.
    await due.refresh(s, account_id, settings, row.timezone, now, deal_ids, moments)
    if whole:
        total.open = await lifecycle.count_open(s, account_id)
    return total
