"""Events that change the verdict on other deals than their own: the call rules match calls by
number across deals (app/calls/reach.py). Each scenario applies its events through the mirror
writer, as the inbox does, re-evaluates the deals the writer says they touched, and must leave
nothing for a full sweep to change: the findings are right at once, not at the nightly sweep."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from app.calls.models import Call
from app.calls.service import mirror_writer
from app.findings import scheduler
from app.mirror.models import ContactPhone, DealContact
from integrations.base import CallDirection, CallEvent, CallStatus, ContactDeleted, ContactUpserted, DomainEvent
from tests.app.rules.mirror_builder import MANAGER, add_deal, evaluate, finding, findings, msk, new_account
from tests.app.rules.test_ticks import _snapshot

NUMBER = "+79995550011"
MONDAY = msk(2025, 12, 8, 10, 0)
_ids = iter(range(1, 10**9))


def _call(started: datetime, *, status: str, direction: str, deal_id: str | None, number: str = NUMBER) -> CallEvent:
    answered = status == "answered"
    return CallEvent(
        provider="mango",
        call_id=f"X{next(_ids)}",
        direction=CallDirection(direction),
        client_number=number,
        manager_id=MANAGER,
        started_at=started,
        answered_at=started + timedelta(seconds=5) if answered else None,
        ended_at=started + timedelta(seconds=100 if answered else 20),
        talk_seconds=95 if answered else 0,
        duration_seconds=100 if answered else 20,
        status=CallStatus(status),
        is_final=True,
        deal_id=deal_id,
    )


async def _event(rt, aid: int, now: datetime, *events: DomainEvent) -> set[str]:
    """What the inbox does: apply the events, then evaluate the deals they touched (after the
    ticks up to `now` did what time alone does)."""
    await scheduler.tick_account(rt, aid, now)
    async with rt.sessions() as s, s.begin():
        touched = (await mirror_writer(s, aid).apply(list(events))).touched_deals
    await evaluate(rt, aid, now, deal_ids=sorted(touched), actor="incremental")
    return touched


async def _nothing_left_for_the_sweep(rt, aid: int, now: datetime) -> None:
    before = _snapshot(await findings(rt, aid))
    result = await evaluate(rt, aid, now)
    assert _snapshot(await findings(rt, aid)) == before
    assert (result.opened, result.resolved, result.expired, result.changed) == (0, 0, 0, 0)
    assert _snapshot(await findings(rt, aid)) == before


async def _deals(rt, aid: int, *deal_ids: str, contact: str | None = "C1", phone: str | None = NUMBER) -> None:
    async with rt.sessions() as s, s.begin():
        for deal_id in deal_ids:
            add_deal(s, aid, deal_id, created_at=MONDAY)
            if contact:
                s.add(DealContact(account_id=aid, deal_id=deal_id, contact_id=contact))
        if contact and phone:
            s.add(ContactPhone(account_id=aid, contact_id=contact, phone=phone))
    await evaluate(rt, aid, MONDAY, deal_ids=list(deal_ids), actor="incremental")  # the deals' own events


def _status(f: Any) -> str | None:
    return f.status if f is not None else None


async def _missed_call_id(rt, aid: int) -> str:
    return str(next(f.entity_id for f in await findings(rt, aid, "missed_call_not_returned")))


async def test_a_call_returned_on_another_deal_resolves_the_miss_at_once(rt):
    aid = await new_account(rt)
    await _deals(rt, aid, "D1", "D2", contact=None)
    await _event(rt, aid, MONDAY, _call(MONDAY, status="missed", direction="in", deal_id="D1"))
    later = MONDAY + timedelta(hours=1)
    await scheduler.tick_account(rt, aid, later)
    miss = await _missed_call_id(rt, aid)
    assert _status(await finding(rt, aid, "missed_call_not_returned", miss)) == "open"

    touched = await _event(rt, aid, later, _call(later, status="answered", direction="out", deal_id="D2"))
    assert "D1" in touched
    assert _status(await finding(rt, aid, "missed_call_not_returned", miss)) == "resolved"
    await _nothing_left_for_the_sweep(rt, aid, later)


async def test_a_call_returned_on_a_deal_resolves_a_miss_on_no_deal(rt):
    aid = await new_account(rt)
    await _deals(rt, aid, "D2", contact=None)
    await _event(rt, aid, MONDAY, _call(MONDAY, status="missed", direction="in", deal_id=None))
    later = MONDAY + timedelta(hours=1)
    await scheduler.tick_account(rt, aid, later)
    miss = await _missed_call_id(rt, aid)
    assert _status(await finding(rt, aid, "missed_call_not_returned", miss)) == "open"

    await _event(rt, aid, later, _call(later, status="answered", direction="out", deal_id="D2"))
    assert _status(await finding(rt, aid, "missed_call_not_returned", miss)) == "resolved"
    await _nothing_left_for_the_sweep(rt, aid, later)


async def test_a_call_to_a_contact_shared_by_two_leads_contacts_both(rt):
    aid = await new_account(rt)
    await _deals(rt, aid, "D1", "D2")  # both new leads of one contact
    at = MONDAY + timedelta(minutes=30)
    await evaluate(rt, aid, at)
    assert {f.entity_id for f in await findings(rt, aid, "lead_not_contacted") if f.status == "open"} == {"D1", "D2"}

    # The call is matched to one of them (the most recent); the other lead was contacted too.
    await _event(rt, aid, at, _call(at, status="answered", direction="out", deal_id=None))
    assert {_status(await finding(rt, aid, "lead_not_contacted", d)) for d in ("D1", "D2")} == {"resolved"}
    await _nothing_left_for_the_sweep(rt, aid, at)


async def test_a_phone_added_to_a_contact_later_counts_the_call_made_before(rt):
    aid = await new_account(rt)
    await _deals(rt, aid, "D1", phone=None)  # a lead whose contact has no number yet
    await _deals(rt, aid, "D2", contact="C2", phone=None)
    at = MONDAY + timedelta(minutes=5)
    # The manager called the client from another card before the number was on the lead's contact.
    await _event(rt, aid, at, _call(at, status="answered", direction="out", deal_id="D2"))
    later = MONDAY + timedelta(minutes=30)
    await scheduler.tick_account(rt, aid, later)
    assert _status(await finding(rt, aid, "lead_not_contacted", "D1")) == "open"

    touched = await _event(rt, aid, later, ContactUpserted(id="C1", updated_at=later, phones=(NUMBER,)))
    assert "D1" in touched
    assert _status(await finding(rt, aid, "lead_not_contacted", "D1")) == "resolved"
    await _nothing_left_for_the_sweep(rt, aid, later)

    # The number taken off the contact again: the lead was never contacted after all.
    await _event(rt, aid, later, ContactUpserted(id="C1", updated_at=later + timedelta(seconds=1), phones=()))
    assert _status(await finding(rt, aid, "lead_not_contacted", "D1")) == "open"
    await _nothing_left_for_the_sweep(rt, aid, later)


async def test_a_deleted_contact_takes_its_calls_from_its_leads(rt):
    aid = await new_account(rt)
    await _deals(rt, aid, "D1")
    await _deals(rt, aid, "D2", contact="C2", phone=None)
    at = MONDAY + timedelta(minutes=5)
    await _event(rt, aid, at, _call(at, status="answered", direction="out", deal_id="D2"))
    later = MONDAY + timedelta(minutes=30)
    await evaluate(rt, aid, later)
    assert _status(await finding(rt, aid, "lead_not_contacted", "D1")) == "resolved"

    await _event(rt, aid, later, ContactDeleted(id="C1"))
    assert _status(await finding(rt, aid, "lead_not_contacted", "D1")) == "open"
    await _nothing_left_for_the_sweep(rt, aid, later)


async def test_a_contact_created_with_an_old_unknown_number_ends_it_at_once(rt):
    aid = await new_account(rt)
    at = MONDAY
    async with rt.sessions() as s, s.begin():
        # A call long enough ago (by the server's clock) that contacts are no longer matched to it.
        s.add(
            Call(
                account_id=aid,
                provider="mango",
                provider_call_id="OLD",
                direction="in",
                client_number=NUMBER,
                manager_id=MANAGER,
                started_at=at,
                answered_at=at + timedelta(seconds=5),
                ended_at=at + timedelta(seconds=100),
                talk_seconds=95,
                status="answered",
                is_final=True,
                created_at=at,
                updated_at=at,
            )
        )
    await evaluate(rt, aid, at, deal_ids=[""], actor="incremental")
    later = at + timedelta(hours=1)
    await scheduler.tick_account(rt, aid, later)
    assert _status(await finding(rt, aid, "unknown_number", NUMBER)) == "open"

    await _event(rt, aid, later, ContactUpserted(id="C9", updated_at=later, phones=(NUMBER,)))
    assert _status(await finding(rt, aid, "unknown_number", NUMBER)) == "resolved"
    await _nothing_left_for_the_sweep(rt, aid, later)


async def test_an_earlier_miss_arriving_late_makes_a_later_one_a_repeat(rt):
    """Calls can arrive out of order (a CRM's own call log read later): a miss on another deal
    before this one makes this one a repeat of the same problem, not a finding of its own."""
    aid = await new_account(rt)
    await _deals(rt, aid, "D1", "D2", contact=None)
    later = MONDAY + timedelta(hours=1)
    await _event(rt, aid, later, _call(MONDAY + timedelta(minutes=20), status="missed", direction="in", deal_id="D1"))
    assert len(await findings(rt, aid, "missed_call_not_returned")) == 1

    await _event(rt, aid, later, _call(MONDAY, status="missed", direction="in", deal_id="D2"))
    active = [f for f in await findings(rt, aid, "missed_call_not_returned") if f.status in ("pending", "open")]
    assert [f.deal_id for f in active] == ["D2"]
    await _nothing_left_for_the_sweep(rt, aid, later)
