"""What runs after an inbox batch commits, in order, each step outside the batch's transaction.

A batch leaves behind what it touched (Touched: per account, the deals, the thin deals, the
calls, the rows that only name records, the accounts just installed). Each step below takes
what the batch and the steps before it touched and returns what it touched itself, which the
next steps see. Every step is best effort: what one misses, a later batch, sync or sweep does.

    subscribe      a freshly installed app's event subscriptions and placements
    named records  read the records the rows named (CRM API), apply them with the rows' other events
    thin deals     read the full record of deals a thin webhook named
    calls          look up in the CRM the numbers the mirror does not know; the managers' figures
    re-evaluate    run the rules over just the deals touched (app/findings/evaluation.py)
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy import select

from app.accounts.models import Account
from app.calls import followup as calls_followup
from app.calls.service import mirror_writer
from app.db import utcnow
from app.findings import evaluation
from app.runtime import Runtime
from integrations.base import CrmAuthError, CrmError, CrmUnavailable, DomainEvent, RecordNamed

from . import inbox
from .models import InboxEvent

log = logging.getLogger(__name__)


@dataclass
class Named:
    """Rows whose events only name records, with their parsed events (parsed once, by the worker)."""

    rows: dict[int, list[DomainEvent]] = field(default_factory=dict)  # row id → all its events
    region: str = "RU"

    @property
    def refs(self) -> list[RecordNamed]:
        return [ev for events in self.rows.values() for ev in events if isinstance(ev, RecordNamed)]


@dataclass
class Touched:
    """What a batch and the steps after it touched, per account."""

    deals: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))
    thin: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))
    calls: dict[int, set[int]] = field(default_factory=lambda: defaultdict(set))
    named: dict[int, Named] = field(default_factory=lambda: defaultdict(Named))
    installed: set[int] = field(default_factory=set)

    def follow_ups(self) -> Touched | None:
        """What the steps that need the CRM have to do (the deals already evaluated left out);
        None when nothing."""
        if not (any(self.thin.values()) or any(self.calls.values()) or self.named or self.installed):
            return None
        out = Touched()
        out.merge(self)
        out.deals.clear()
        return out

    def merge(self, other: Touched) -> None:
        """add(), keeping the named rows of both (add() takes the latest step's)."""
        named = {account_id: batch for account_id, batch in other.named.items() if account_id in self.named}
        for account_id, batch in named.items():
            self.named[account_id].rows.update(batch.rows)
        self.add(Touched(deals=other.deals, thin=other.thin, calls=other.calls, installed=other.installed))
        for account_id, batch in other.named.items():
            if account_id not in named:
                self.named[account_id] = batch

    def add(self, other: Touched) -> None:
        for mine, theirs in ((self.deals, other.deals), (self.thin, other.thin), (self.calls, other.calls)):
            for account_id, ids in theirs.items():
                if ids:
                    mine[account_id] |= ids
        self.named.update(other.named)
        self.installed |= other.installed


Step = Callable[[Runtime, Touched], Awaitable[Touched]]


async def subscribe(rt: Runtime, touched: Touched) -> Touched:
    for account_id in touched.installed:
        await subscribe_after_install(rt, account_id)
    return Touched()


async def named_records(rt: Runtime, touched: Touched) -> Touched:
    out = Touched()
    for account_id, batch in touched.named.items():
        deals, calls = await apply_named(rt, account_id, batch)
        out.deals[account_id] |= deals
        out.calls[account_id] |= calls
    return out


async def thin_deals(rt: Runtime, touched: Touched) -> Touched:
    out = Touched()
    for account_id, deal_ids in touched.thin.items():
        # Evaluated once already with what the thin event said; again with the full record.
        out.deals[account_id] |= await complete_thin_deals(rt, account_id, sorted(deal_ids))
    return out


async def calls(rt: Runtime, touched: Touched) -> Touched:
    out = Touched()
    for account_id, call_ids in touched.calls.items():
        if call_ids:
            out.deals[account_id] |= await calls_followup.after_calls(rt, account_id, sorted(call_ids))
    return out


async def reevaluate_touched(rt: Runtime, touched: Touched) -> Touched:
    for account_id, deal_ids in touched.deals.items():
        await reevaluate(rt, account_id, sorted(deal_ids))
    return Touched()


STEPS: list[tuple[str, Step]] = [
    ("subscribe", subscribe),
    ("named records", named_records),
    ("thin deals", thin_deals),
    ("calls", calls),
    ("re-evaluate", reevaluate_touched),
]


async def run(rt: Runtime, touched: Touched, evaluate: Callable[[dict[int, set[str]]], None] | None = None) -> None:
    """The steps in order. With `evaluate`, the re-evaluation is handed to it (the worker's
    Evaluations, which coalesces it with the batches' own) instead of run here."""
    for _name, step in STEPS:
        if evaluate is not None and step is reevaluate_touched:
            evaluate(touched.deals)
            continue
        touched.add(await step(rt, touched))


# -- the steps' work, per account ---------------------------------------------------------------


async def subscribe_after_install(rt: Runtime, account_id: int) -> None:
    """Event subscriptions and placements of a freshly installed app. Best effort: a failure is
    logged and the next install event (or `crmwatch` restart drain) tries again."""
    async with rt.reads() as s:
        account = await s.get(Account, account_id)
    if account is None:
        return
    client = rt.crm_client(account.id, account.crm, account.base_url)
    try:
        hook = rt.crm_adapter(account.crm).hook_urls(rt.settings.public_url, account.key)[account.crm]
        await client.subscribe(hook, rt.settings.public_url)
    except CrmError as exc:
        log.warning("account.subscribe_failed", extra={"account_id": account_id, "error": str(exc)})
    finally:
        await client.aclose()


async def apply_named(rt: Runtime, account_id: int, batch: Named) -> tuple[set[str], set[int]]:
    """Reads the records the rows named and applies them with the rows' other events. Returns the
    deals touched and the calls changed, for the same follow-ups as rows applied directly."""
    async with rt.reads() as s:
        account = await s.get(Account, account_id)
    if account is None:
        return set(), set()
    client = rt.crm_client(account.id, account.crm, account.base_url)
    try:
        fetched = await client.fetch_named(list(dict.fromkeys(batch.refs)), region=batch.region)
        error: Exception | None = None
    except CrmError as exc:
        fetched, error = [], exc
    finally:
        await client.aclose()
    now = utcnow()
    touched: set[str] = set()
    calls: set[int] = set()
    async with rt.sessions() as s, s.begin():
        rows = list(
            await s.scalars(
                select(InboxEvent)
                .where(InboxEvent.id.in_(list(batch.rows)), InboxEvent.status == "pending")
                .with_for_update()
            )
        )
        if error is not None:
            log.warning("inbox.fetch_failed", extra={"account_id": account_id, "error": str(error)})
            # The CRM being down or refusing our credentials says nothing about the event: it waits
            # (backoff up to an hour) for as long as that lasts, instead of being parked.
            outage = isinstance(error, CrmUnavailable | CrmAuthError)
            for row in rows:
                inbox.failed(rt, row, error, now, may_park=not outage)
            return touched, calls
        adapter = rt.crm_adapter(account.crm)
        live = await s.get(Account, account_id)
        if live is not None and rows:
            await inbox.account_facts(rt, s, live, adapter, rows[0], [])
        result = await mirror_writer(s, account_id).apply(fetched)
        for row in rows:
            events = batch.rows[row.id]
            rest = [ev for ev in events if not isinstance(ev, RecordNamed)]
            if rest:
                result_rest = await mirror_writer(s, account_id).apply(rest)
                touched |= result_rest.touched_deals
                calls |= result_rest.calls
            inbox.done(row, events, 0)
        touched |= result.touched_deals
        calls |= result.calls
    return touched, calls


async def complete_thin_deals(rt: Runtime, account_id: int, deal_ids: list[str]) -> set[str]:
    """Reads the full record of deals a thin webhook named; returns the deals it changed. Best
    effort: the next sync fills whatever this misses, and the thin event's own facts (the stage)
    are already applied."""
    async with rt.reads() as s:
        account = await s.get(Account, account_id)
    if account is None or account.status != "active":
        return set()
    client = rt.crm_client(account.id, account.crm, account.base_url)
    try:
        events = await client.fetch_deals(deal_ids, region=account.region)
    except CrmError as exc:
        log.warning("inbox.thin_fetch_failed", extra={"account_id": account_id, "error": str(exc)})
        return set()
    finally:
        await client.aclose()
    async with rt.sessions() as s, s.begin():
        return (await mirror_writer(s, account_id).apply(events)).touched_deals


async def reevaluate(rt: Runtime, account_id: int, deal_ids: list[str]) -> None:
    """Runs the rules over just the deals these events touched. If this fails or the process dies
    first, nothing is lost: an inbox batch marks its deals due (worker.EVALUATION_FALLBACK), so
    the tick evaluates them, and the next full sweep covers the rest (follow-ups' deals)."""
    try:
        async with rt.sessions() as s, s.begin():
            result = await evaluation.evaluate(s, account_id, deal_ids=deal_ids, actor="incremental")
        if result.enqueued:
            rt.outbox_wakeup.set()
    except Exception:
        log.exception("inbox.reevaluate_failed", extra={"account_id": account_id})
