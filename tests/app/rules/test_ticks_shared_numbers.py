"""The property of test_ticks.py (ticks and events leave nothing for the sweep) where one event
can change other deals' verdicts: numbers shared between deals and calls on no deal, contacts
linked to several deals, phones added, changed and removed. After each event the deals
re-evaluated are its own plus those app/calls/reach.py says it reaches, as the inbox does."""

from __future__ import annotations

import os
from datetime import timedelta

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from app.calls import reach
from app.findings import evaluation, scheduler
from app.findings.models import Finding
from app.mirror.models import ContactPhone, Deal, DealContact
from tests.app.rules.mirror_builder import add_deal, add_note, add_task, evaluate, new_account, save_rules
from tests.app.rules.test_ticks import RULES, STARTS, STEPS, _call, _snapshot, assert_reconciled

NUMBERS = ["+79993000001", "+79993000002", "+79993000003"]
CONTACTS = ["C0", "C1", "C2"]

op = st.one_of(
    st.tuples(st.just("step"), st.sampled_from(STEPS) | st.integers(1, 4000)),
    st.tuples(st.just("deal"), st.integers(-1, 2)),  # -1: a deal with no contact
    st.tuples(st.just("link"), st.integers(0, 9), st.integers(0, 2)),
    st.tuples(st.just("phone"), st.integers(0, 2), st.integers(-1, 2)),  # -1: the contact's phones removed
    st.tuples(
        st.just("call"),
        st.integers(-1, 9),  # -1: a call nobody matched to a deal
        st.sampled_from(["answered in", "answered out", "missed in", "missed out", "short in"]),
        st.integers(0, 2),
        st.integers(0, 90),  # minutes before now it started (a call read late)
    ),
    st.tuples(st.just("note"), st.integers(0, 9)),
    st.tuples(st.just("close"), st.integers(0, 9)),
    st.tuples(st.just("task"), st.integers(0, 9), st.integers(-60, 600)),
)


async def _sweep_changes_nothing(rt, aid: int, now, program) -> None:
    """A full sweep right now would change nothing (run, compared, and rolled back)."""
    async with rt.sessions() as s:
        before = _snapshot(list(await s.scalars(select(Finding).where(Finding.account_id == aid))))
        result = await evaluation.evaluate(s, aid, now=now)
        after = _snapshot(list(await s.scalars(select(Finding).where(Finding.account_id == aid))))
        await s.rollback()
    assert (result.opened, result.resolved, result.expired, result.changed) == (0, 0, 0, 0), program
    assert after == before, program


async def _run(rt, start, program) -> None:
    aid = await new_account(rt)
    await save_rules(rt, aid, RULES)
    now = start
    deals: list[str] = []
    notes = tasks = 0

    async with rt.sessions() as s, s.begin():
        for i, contact in enumerate(CONTACTS[:2]):
            add_deal(s, aid, f"D{i}", created_at=start - timedelta(minutes=10 * i + 5))
            s.add(DealContact(account_id=aid, deal_id=f"D{i}", contact_id=contact))
            s.add(ContactPhone(account_id=aid, contact_id=contact, phone=NUMBERS[i]))
            deals.append(f"D{i}")
    await evaluate(rt, aid, now)  # the first sweep after connecting

    for step in program:
        kind = step[0]
        if kind == "step":
            now += timedelta(minutes=step[1])
            await scheduler.tick_account(rt, aid, now)
            await _sweep_changes_nothing(rt, aid, now, program)
            continue
        async with rt.sessions() as s, s.begin():
            touched: set[str] = set()
            if kind == "deal":
                deal_id = f"D{len(deals)}"
                add_deal(s, aid, deal_id, created_at=now)
                if step[1] >= 0:
                    s.add(DealContact(account_id=aid, deal_id=deal_id, contact_id=CONTACTS[step[1]]))
                deals.append(deal_id)
                touched.add(deal_id)
            elif kind == "link":
                deal_id = deals[step[1] % len(deals)]
                contact = CONTACTS[step[2]]
                if await s.get(DealContact, (aid, deal_id, contact)) is None:
                    s.add(DealContact(account_id=aid, deal_id=deal_id, contact_id=contact))
                else:
                    await s.execute(
                        delete(DealContact).where(
                            DealContact.account_id == aid,
                            DealContact.deal_id == deal_id,
                            DealContact.contact_id == contact,
                        )
                    )
                touched.add(deal_id)
            elif kind == "phone":
                contact = CONTACTS[step[1]]
                await s.execute(
                    delete(ContactPhone).where(ContactPhone.account_id == aid, ContactPhone.contact_id == contact)
                )
                if step[2] >= 0:
                    s.add(ContactPhone(account_id=aid, contact_id=contact, phone=NUMBERS[step[2]]))
                await s.flush()
                touched |= await reach.deals_of_contacts(s, aid, [contact])
            elif kind == "call":
                deal_id = deals[step[1] % len(deals)] if step[1] >= 0 else None
                status, direction = step[2].split()
                call = _call(
                    aid,
                    0 if status == "short" else 1,
                    now - timedelta(minutes=step[4]),
                    "answered" if status != "missed" else "missed",
                    direction,
                    NUMBERS[step[3]],
                    deal_id,
                )
                s.add(call)
                await s.flush()
                touched.add(deal_id or "")
                touched |= await reach.deals_of_calls(s, aid, [call.id])
            elif kind == "note":
                deal_id = deals[step[1] % len(deals)]
                notes += 1
                add_note(s, aid, f"N{notes}", deal_id, "Обсудили условия поставки, клиент ждёт счёт", created_at=now)
                touched.add(deal_id)
            elif kind == "close":
                deal = await s.get(Deal, (aid, deals[step[1] % len(deals)]))
                deal.is_closed, deal.closed_at = True, now
                touched.add(deal.id)
            elif kind == "task":
                deal_id = deals[step[1] % len(deals)]
                tasks += 1
                add_task(s, aid, f"T{tasks}", deal_id, due_at=now + timedelta(minutes=step[2]), created_at=now)
                touched.add(deal_id)
        # What the inbox does after the event: the rules over the deals it touched and reached.
        await evaluate(rt, aid, now, deal_ids=sorted(touched), actor="incremental")
        await _sweep_changes_nothing(rt, aid, now, program)

    await assert_reconciled(rt, aid, now, program)


@settings(
    # More in a long run: CRMWATCH_TICK_EXAMPLES=500 python -m pytest tests/app/rules/test_ticks_shared_numbers.py
    # Fewer by default than test_ticks.py: each example is slower (three contacts, phone changes),
    # and the examples below pin the paths this file is for on every run.
    max_examples=int(os.environ.get("CRMWATCH_TICK_EXAMPLES", "12")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
# A missed call from D1's number, returned from D0's card: D1's finding resolves at once.
@example(start=STARTS[0], program=[("call", -1, "missed in", 1, 0), ("step", 5), ("call", 0, "answered out", 1, 0)])
# A call from a number nobody had, which a contact then gets: its deals see the call at once.
@example(start=STARTS[0], program=[("call", -1, "missed in", 2, 0), ("step", 5), ("phone", 0, 2)])
@given(start=st.sampled_from(STARTS), program=st.lists(op, min_size=1, max_size=30))
async def test_events_reaching_other_deals_leave_nothing_for_the_sweep(rt, start, program):
    await _run(rt, start, program)
