"""Applies CallEvents: every event of one call merges into one row, in the caller's transaction.

Calls are one more handler of the mirror (CallsInMirror): the mirror writer hands them the
CallEvents, and after each batch they match waiting calls to contacts that gained phones or
deals and queue the finished ones for the call log. `mirror_writer` is the writer with calls in.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from sqlalchemy import and_, false, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import dialect_insert, utcnow
from app.mirror.models import Contact, ContactPhone, Deal, DealContact
from app.mirror.service import PREFETCH_CHUNK, ApplyResult, Handler, MirrorWriter, update_together
from integrations.base import (
    CallEvent,
    ContactDeleted,
    ContactUpserted,
    DealDeleted,
    DealRestored,
    DealUpserted,
    DomainEvent,
    StageEntered,
)

from . import calllog, reach
from .matching import best_matches, match_call, rematch_contacts, settle
from .models import Call, TelephonyConfig

# The articles' "successful contact": a conversation of at least this many seconds.
SUCCESSFUL_TALK_SECONDS = 40

# Calls a CRM reports itself (its call notes, its own telephony). When a PBX is connected to
# crmwatch directly, its widget usually writes the same calls into the CRM: count them once.
CRM_SOURCES = frozenset({"amocrm", "bitrix24"})

_FIELDS = (
    "client_number",
    "line_number",
    "manager_ref",
    "started_at",
    "answered_at",
    "ended_at",
    "talk_seconds",
    "duration_seconds",
    "recording_url",
)


class CallWriter:
    def __init__(self, session: AsyncSession, account_id: int) -> None:
        self.s = session
        self.account_id = account_id
        self._extensions: dict[str, dict[str, Any]] = {}
        self._pbx: bool | None = None
        self._rows: dict[tuple[str, str], Call] = {}  # read ahead by prefetch()
        # Calls whose match nothing else in the batch can change, and the matches of their
        # numbers as the mirror has them (CallsInMirror.arrange): no query per call.
        self.settled: set[tuple[str, str]] = set()
        self.matches: dict[str, tuple[str | None, str | None]] = {}
        # Calls whose match only the batch's changes to deals' fields can change (not to who has
        # the number): matched at their place in the batch from the deals as the session holds
        # them then, by rank() below, without a query (CallsInMirror.arrange).
        self.ranked: set[tuple[str, str]] = set()
        self.links: dict[str, list[tuple[str, str | None]]] = {}  # number → (contact, deal), by contact
        self.deals: dict[str, Deal] = {}

    async def extension_map(self, provider: str) -> dict[str, Any]:
        if provider not in self._extensions:
            self._extensions[provider] = (
                await self.s.scalar(
                    select(TelephonyConfig.extensions).where(
                        TelephonyConfig.account_id == self.account_id, TelephonyConfig.provider == provider
                    )
                )
            ) or {}
        return self._extensions[provider]

    async def _kept(self, ev: CallEvent) -> bool:
        """False for a CRM's copy of calls a connected PBX reports itself."""
        return not (ev.provider in CRM_SOURCES and await self.pbx_connected())

    async def prefetch(self, events: list[CallEvent]) -> None:
        """Creates (when new) and reads, locked, the rows of every call the events name, one
        statement each per chunk, so that apply() finds them in memory."""
        kept = [ev for ev in events if await self._kept(ev)]
        keys = [k for k in dict.fromkeys((ev.provider, ev.call_id) for ev in kept) if k not in self._rows]
        now = utcnow()
        for start in range(0, len(keys), PREFETCH_CHUNK):
            chunk = keys[start : start + PREFETCH_CHUNK]
            values = [
                {
                    "account_id": self.account_id,
                    "provider": provider,
                    "provider_call_id": call_id,
                    "is_final": False,
                    "created_at": now,
                    "updated_at": now,
                }
                for provider, call_id in chunk
            ]
            await self.s.execute(dialect_insert(self.s, Call.__table__).values(values).on_conflict_do_nothing())
            rows = await self.s.scalars(
                select(Call)
                .where(Call.account_id == self.account_id, Call.provider_call_id.in_({c for _, c in chunk}))
                .with_for_update()
            )
            wanted = set(chunk)
            self._rows.update(
                ((r.provider, r.provider_call_id), r) for r in rows if (r.provider, r.provider_call_id) in wanted
            )

    async def _row(self, ev: CallEvent) -> Call:
        if (ev.provider, ev.call_id) in self._rows:
            return self._rows[(ev.provider, ev.call_id)]
        key = (Call.account_id == self.account_id, Call.provider == ev.provider, Call.provider_call_id == ev.call_id)
        row = await self.s.scalar(select(Call).where(*key).with_for_update())
        if row is not None:
            return row
        now = utcnow()
        await self.s.execute(
            dialect_insert(self.s, Call.__table__)
            .values(
                account_id=self.account_id,
                provider=ev.provider,
                provider_call_id=ev.call_id,
                is_final=False,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing()
        )
        return await self.s.scalar(select(Call).where(*key).with_for_update().execution_options(populate_existing=True))

    def rank(self, number: str) -> tuple[str | None, str | None] | None:
        """best_match() of a number whose contacts and their deal links the batch does not change,
        from the deals' fields as they are now in the session: the most recently active open deal
        of a contact with the number (by its CRM time, then id). None when memory cannot tell the
        same as the query would (a time unknown until flush, a tie, a deal on two such contacts):
        then the query runs."""
        links = self.links.get(number)
        if links is None:
            return None
        contacts = list(dict.fromkeys(contact for contact, _ in links))
        best: list[tuple[Any, str, str]] = []
        for contact, deal_id in links:
            if deal_id is None:
                continue
            deal = self.deals.get(deal_id)
            if deal is None:
                continue  # no such deal: the query's join leaves the link out too
            if deal.is_deleted is None or deal.is_closed is None or deal.source_updated_at is None:
                return None
            if not deal.is_deleted and not deal.is_closed:
                best.append((deal.source_updated_at, deal.id, contact))
        if not best:
            return (contacts[0] if contacts else None), None
        best.sort(reverse=True)
        if len(best) > 1 and (best[1][0] == best[0][0]):
            return None  # the same time: the query orders by id in the database's collation
        return best[0][2], best[0][1]

    async def pbx_connected(self) -> bool:
        if self._pbx is None:
            self._pbx = (
                await self.s.scalar(
                    select(TelephonyConfig.provider).where(TelephonyConfig.account_id == self.account_id).limit(1)
                )
                is not None
            )
        return self._pbx

    async def apply(self, ev: CallEvent) -> Call | None:
        """The merged call, or None when the event was stale (a lower seq than one already seen)
        or is a CRM's copy of calls a connected PBX reports itself."""
        if not await self._kept(ev):
            return None
        row = await self._row(ev)
        if ev.seq is not None and row.last_seq is not None and ev.seq < row.last_seq:
            return None
        if ev.seq is not None:
            row.last_seq = ev.seq
        # After the final event, a late progress event may only fill what is still unknown.
        late = row.is_final and not ev.is_final
        for name in _FIELDS:
            value = getattr(ev, name)
            if value is not None and not (late and getattr(row, name) is not None):
                setattr(row, name, value)
        if ev.direction is not None and not (late and row.direction is not None):
            row.direction = ev.direction.value
        if ev.is_final:
            row.is_final = True
            if ev.status is not None:
                row.status = ev.status.value
        manager = ev.manager_id
        if manager is None and row.manager_ref:
            mapped = (await self.extension_map(ev.provider)).get(row.manager_ref)
            manager = str(mapped) if mapped not in (None, "") else None
        if manager is not None and not (late and row.manager_id is not None):
            row.manager_id = manager
        if ev.deal_id is not None:
            row.deal_id, row.match_source, row.matched_at = ev.deal_id, "source", utcnow()
        elif row.deal_id is None and row.client_number and row.direction != "internal":
            if (ev.provider, ev.call_id) in self.settled and row.client_number in self.matches:
                settle(row, *self.matches[row.client_number])
            elif (ev.provider, ev.call_id) in self.ranked and (found := self.rank(row.client_number)) is not None:
                settle(row, *found)
            else:
                await match_call(self.s, row)
        row.updated_at = utcnow()
        return row


class CallsInMirror:
    """The calls extension of the mirror writer (app.mirror.service.MirrorExtension)."""

    def __init__(self, session: AsyncSession, account_id: int) -> None:
        self.s = session
        self.account_id = account_id
        self.writer = CallWriter(session, account_id)
        # Calls rematched after a batch are read without a lock, and the CRM search (followup.py)
        # stamps crm_searched_at in a transaction of its own meanwhile.
        update_together(session, (Call,), apart=("crm_searched_at",))

    def handlers(self) -> Mapping[type, Handler]:
        return {CallEvent: self.on_call}

    async def arrange(self, events: list[DomainEvent]) -> list[DomainEvent]:
        """The batch's events in the order to apply them (MirrorWriter.apply_batch).

        A call is matched to a card by what the mirror says then, so each call stays where it
        came among the CRM's events when those events may change its match. The others (no deal
        linked to a contact with its number changes in the batch, and no contact the batch
        changes, deletes or links to a deal has that number, before or after) are moved first:
        applied before or after, they match the same, and
        together they cost no flush of the batch's other changes each."""
        calls = [ev for ev in events if isinstance(ev, CallEvent)]
        if not calls:
            return events
        await self.writer.prefetch(calls)
        changed = set()
        # Contacts whose numbers or deal links the batch may change: a call with one of their
        # numbers (before or after) stays in place; the batch's other contacts change no match.
        contacts: set[str] = set()
        renumbered: set[str] = set()
        for ev in events:
            if isinstance(ev, DealUpserted | DealDeleted | DealRestored):
                changed.add(ev.id)
                if isinstance(ev, DealUpserted) and ev.contact_ids is not None:
                    contacts.update(ev.contact_ids)
            elif isinstance(ev, StageEntered):
                changed.add(ev.deal_id)
            elif isinstance(ev, ContactUpserted):
                contacts.add(ev.id)
                renumbered.update(ev.phones or ())
            elif isinstance(ev, ContactDeleted):
                contacts.add(ev.id)
        named = sorted(contacts)
        for start in range(0, len(named), PREFETCH_CHUNK):
            renumbered.update(
                await self.s.scalars(
                    select(ContactPhone.phone).where(
                        ContactPhone.account_id == self.account_id,
                        ContactPhone.contact_id.in_(named[start : start + PREFETCH_CHUNK]),
                    )
                )
            )
        numbers = sorted({ev.client_number for ev in calls if ev.client_number})
        candidates: dict[str, set[str]] = defaultdict(set)
        for start in range(0, len(numbers), PREFETCH_CHUNK):
            rows = await self.s.execute(
                select(ContactPhone.phone, DealContact.deal_id)
                .join(
                    DealContact,
                    and_(
                        DealContact.account_id == ContactPhone.account_id,
                        DealContact.contact_id == ContactPhone.contact_id,
                    ),
                )
                .where(
                    ContactPhone.account_id == self.account_id,
                    ContactPhone.phone.in_(numbers[start : start + PREFETCH_CHUNK]),
                )
            )
            for phone, deal_id in rows:
                candidates[phone].add(deal_id)
        held: set[tuple[str, str]] = set()
        ranked: dict[tuple[str, str], str] = {}
        for ev in calls:
            row = self.writer._rows.get((ev.provider, ev.call_id))
            number = ev.client_number or (row.client_number if row is not None else None)
            if number is None or number in renumbered:
                held.add((ev.provider, ev.call_id))
            elif candidates[number] & changed:
                held.add((ev.provider, ev.call_id))
                ranked[(ev.provider, ev.call_id)] = number
        await self._rank_ahead(ranked, changed)
        free = [ev for ev in calls if (ev.provider, ev.call_id) not in held]
        self.writer.settled = {(ev.provider, ev.call_id) for ev in free}
        free_numbers = sorted({ev.client_number for ev in free if ev.client_number})
        for start in range(0, len(free_numbers), PREFETCH_CHUNK):
            chunk = free_numbers[start : start + PREFETCH_CHUNK]
            self.writer.matches.update(await best_matches(self.s, self.account_id, chunk))
        moved = {id(ev) for ev in free}
        return free + [ev for ev in events if id(ev) not in moved]

    async def _rank_ahead(self, ranked: dict[tuple[str, str], str], changed: set[str]) -> None:
        """For calls held in place only because the batch changes fields of deals their number
        leads to: reads who has each number and those deals once, so that CallWriter.rank()
        matches each call where it comes, in memory. The deals the batch names are the objects
        its handlers change (read ahead by MirrorWriter.prefetch), so rank() sees each change as
        it is applied."""
        numbers = sorted(set(ranked.values()))
        links: dict[str, list[tuple[str, str | None]]] = {}
        for start in range(0, len(numbers), PREFETCH_CHUNK):
            rows = await self.s.execute(
                select(ContactPhone.phone, ContactPhone.contact_id, DealContact.deal_id)
                .join(
                    Contact,
                    and_(Contact.account_id == ContactPhone.account_id, Contact.id == ContactPhone.contact_id),
                )
                .outerjoin(
                    DealContact,
                    and_(
                        DealContact.account_id == ContactPhone.account_id,
                        DealContact.contact_id == ContactPhone.contact_id,
                    ),
                )
                .where(
                    ContactPhone.account_id == self.account_id,
                    ContactPhone.phone.in_(numbers[start : start + PREFETCH_CHUNK]),
                    Contact.is_deleted == false(),
                )
                .order_by(ContactPhone.phone, ContactPhone.contact_id)
            )
            for phone, contact_id, deal_id in rows:
                links.setdefault(phone, []).append((contact_id, deal_id))
        wanted = sorted({d for pairs in links.values() for _, d in pairs if d is not None})
        deals: dict[str, Deal] = {}
        for start in range(0, len(wanted), PREFETCH_CHUNK):
            deals.update(
                (d.id, d)
                for d in await self.s.scalars(
                    select(Deal).where(
                        Deal.account_id == self.account_id, Deal.id.in_(wanted[start : start + PREFETCH_CHUNK])
                    )
                )
            )
        # A linked deal the batch creates is not read here: those numbers keep the query.
        unsure = {n for n, pairs in links.items() if any(d not in deals and d in changed for _, d in pairs if d)}
        self.writer.links = {n: pairs for n, pairs in links.items() if n not in unsure}
        for number in numbers:
            if number not in links:
                self.writer.links[number] = []  # nobody has it (as the mirror stands)
        self.writer.deals = deals
        self.writer.ranked = {key for key, number in ranked.items() if number not in unsure}

    async def on_call(self, ev: CallEvent, r: ApplyResult) -> bool:
        call = await self.writer.apply(ev)
        if call is None:
            return False
        r.calls.add(call.id)
        if call.deal_id:
            r.touched_deals.add(call.deal_id)
        return True

    async def after_apply(self, result: ApplyResult) -> None:
        if result.linked_contacts:
            deals, calls = await rematch_contacts(self.s, self.account_id, result.linked_contacts)
            result.touched_deals |= deals
            result.calls |= calls
        # The deals these calls and phones reach beyond their own card (a number on another deal).
        if result.calls:
            result.touched_deals |= await reach.deals_of_calls(self.s, self.account_id, result.calls)
        if result.rephoned_contacts:
            result.touched_deals |= await reach.deals_of_contacts(self.s, self.account_id, result.rephoned_contacts)
        if result.calls:
            # In this same transaction: a call applied is a call that will be written to the card.
            await calllog.enqueue(self.s, self.account_id, sorted(result.calls))


def mirror_writer(session: AsyncSession, account_id: int) -> MirrorWriter:
    """The mirror writer with calls handled: what every path that applies CRM or PBX events uses."""
    return MirrorWriter(session, account_id, [CallsInMirror(session, account_id)])
