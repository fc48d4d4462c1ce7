"""lead_not_contacted (speed to lead) on hand-built mirrors, at fixed instants (Moscow time, RU
calendar, 09:00-18:00): Monday 2025-12-08 is an ordinary working week."""

from __future__ import annotations

from datetime import datetime

from app.accounts.models import Account
from app.findings import service as findings_service
from app.mirror.models import ContactPhone, Deal, DealContact
from tests.app.rules.mirror_builder import (
    MANAGER,
    add_deal,
    add_note,
    add_pipeline,
    change,
    evaluate,
    finding,
    findings,
    history,
    msk,
    new_account,
    save_rules,
)
from tests.app.rules.test_call_rules import CLIENT, add_call

RULE = "lead_not_contacted"
CREATED = msk(2025, 12, 8, 10, 0)


async def _lead(rt, created: datetime = CREATED, *, deal_id: str = "D1", **deal) -> int:
    """A new deal whose contact has the client's number; the calls bind to no deal (matched by number)."""
    aid = await new_account(rt)
    await _add_lead(rt, aid, created, deal_id=deal_id, **deal)
    return aid


async def _add_lead(rt, aid: int, created: datetime, *, deal_id: str = "D1", **deal) -> None:
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, deal_id, created_at=created, **deal)
        s.add(DealContact(account_id=aid, deal_id=deal_id, contact_id=f"C-{deal_id}"))
        s.add(ContactPhone(account_id=aid, contact_id=f"C-{deal_id}", phone=CLIENT))


async def _status(rt, aid: int, at: datetime, deal_id: str = "D1") -> str | None:
    await evaluate(rt, aid, at)
    f = await finding(rt, aid, RULE, deal_id)
    return f.status if f else None


async def _call(rt, aid: int, **kw) -> None:
    async with rt.sessions() as s, s.begin():
        add_call(s, aid, **{"deal_id": None, "contact_id": None, **kw})


async def test_a_lead_nobody_contacted_opens_after_15_working_minutes(rt):
    aid = await _lead(rt)
    assert await _status(rt, aid, msk(2025, 12, 8, 10, 14)) == "pending"
    assert await _status(rt, aid, msk(2025, 12, 8, 10, 15)) == "open"
    f = await finding(rt, aid, RULE, "D1")
    assert (f.deal_id, f.manager_id, f.started_at, f.entity_type) == ("D1", MANAGER, CREATED, "deal")


async def test_an_outgoing_call_to_a_contacts_number_is_a_contact_even_unanswered(rt):
    aid = await _lead(rt)
    await _call(rt, aid, started=msk(2025, 12, 8, 10, 5), direction="out", status="missed")
    assert await _status(rt, aid, msk(2025, 12, 8, 11)) is None


async def test_an_answered_incoming_call_bound_to_the_deal_is_a_contact(rt):
    aid = await _lead(rt)
    await _call(rt, aid, started=msk(2025, 12, 8, 10, 5), direction="in", number="+79990000000", deal_id="D1")
    assert await _status(rt, aid, msk(2025, 12, 8, 11)) is None


async def test_a_missed_incoming_call_an_internal_call_or_a_call_before_are_not(rt):
    aid = await _lead(rt)
    await _call(rt, aid, started=msk(2025, 12, 8, 10, 5), direction="in", status="missed")
    await _call(rt, aid, started=msk(2025, 12, 8, 10, 6), direction="internal")
    await _call(rt, aid, started=msk(2025, 12, 8, 9, 30))  # ended long before the deal was created
    assert await _status(rt, aid, msk(2025, 12, 8, 11)) == "open"


async def test_the_call_the_lead_came_from_is_a_contact(rt):
    aid = await _lead(rt)
    # Answered at 09:59:05, still talking when the deal was created at 10:00.
    await _call(rt, aid, started=msk(2025, 12, 8, 9, 59), direction="in", talk=120)
    assert await _status(rt, aid, msk(2025, 12, 8, 11)) is None


async def test_a_note_is_a_contact_but_not_crmwatchs_own(rt):
    aid = await _lead(rt)
    async with rt.sessions() as s, s.begin():
        add_note(s, aid, "N1", "D1", "crmwatch: нарушение #cw5", created_at=msk(2025, 12, 8, 10, 1))
    assert await _status(rt, aid, msk(2025, 12, 8, 11)) == "open"
    async with rt.sessions() as s, s.begin():
        add_note(s, aid, "N2", "D1", "Написал клиенту в мессенджер", created_at=msk(2025, 12, 8, 11, 5))
    assert await _status(rt, aid, msk(2025, 12, 8, 11, 10)) == "resolved"
    f = await finding(rt, aid, RULE, "D1")
    assert f.resolution == "condition_cleared"


async def test_a_lead_created_in_the_evening_is_counted_from_the_next_working_minute(rt):
    aid = await _lead(rt, msk(2025, 12, 12, 19, 30))  # Friday evening
    assert await _status(rt, aid, msk(2025, 12, 13, 12)) == "pending"  # Saturday
    assert await _status(rt, aid, msk(2025, 12, 15, 9, 14)) == "pending"  # Monday
    assert await _status(rt, aid, msk(2025, 12, 15, 9, 15)) == "open"


async def test_per_pipeline_minutes(rt):
    aid = await _lead(rt)
    async with rt.sessions() as s, s.begin():
        add_pipeline(s, aid, "P2", "Опт", {"W1": "Новая заявка"})
    await _add_lead(rt, aid, CREATED, deal_id="D2", pipeline_id="P2", stage_id="W1")
    await save_rules(rt, aid, {"rules": {RULE: {"pipelines": {"P2": {"minutes": 60}}}}})
    await evaluate(rt, aid, msk(2025, 12, 8, 10, 30))
    states = {f.entity_id: f.status for f in await findings(rt, aid, RULE)}
    assert states == {"D1": "open", "D2": "pending"}
    assert await _status(rt, aid, msk(2025, 12, 8, 11), "D2") == "open"


async def test_only_deals_created_within_a_working_day_are_judged(rt):
    # At Tuesday 12:00: created Monday 10:00 is 11 working hours ago (not judged: the history of
    # a newly connected account), Monday 16:00 is 5 working hours ago (judged).
    aid = await _lead(rt, msk(2025, 12, 8, 10))
    await _add_lead(rt, aid, msk(2025, 12, 8, 16), deal_id="D2")
    await evaluate(rt, aid, msk(2025, 12, 9, 12))
    assert [f.entity_id for f in await findings(rt, aid, RULE)] == ["D2"]


async def test_past_its_window_an_uncontacted_lead_stays_open(rt):
    aid = await _lead(rt)
    assert await _status(rt, aid, msk(2025, 12, 8, 11)) == "open"
    result = await evaluate(rt, aid, msk(2025, 12, 10, 12))  # two working days later
    assert (result.resolved, result.expired) == (0, 0)
    f = await finding(rt, aid, RULE, "D1")
    assert (f.status, f.resolution) == ("open", None)
    await _call(rt, aid, started=msk(2025, 12, 10, 12, 5), direction="out")
    assert await _status(rt, aid, msk(2025, 12, 10, 12, 10)) == "resolved"
    assert [e.to_status for e in await history(rt, f.id)] == ["open", "resolved"]


async def test_closed_or_excluded_deals_are_not_judged(rt):
    aid = await _lead(rt)
    await _add_lead(rt, aid, CREATED, deal_id="D2", responsible_user_id="u2")
    await _add_lead(rt, aid, CREATED, deal_id="D3", is_closed=True)
    await save_rules(rt, aid, {"rules": {RULE: {"exclude": {"users": ["u2"]}}}})
    await evaluate(rt, aid, msk(2025, 12, 8, 11))
    assert [f.entity_id for f in await findings(rt, aid, RULE)] == ["D1"]
    await change(rt, Deal, aid, "D1", is_closed=True)
    assert await _status(rt, aid, msk(2025, 12, 8, 11, 5)) == "resolved"
    assert (await finding(rt, aid, RULE, "D1")).resolution == "deal_closed"


async def test_incremental_evaluation_sees_the_call(rt):
    aid = await _lead(rt)
    await evaluate(rt, aid, msk(2025, 12, 8, 11))
    await _call(rt, aid, started=msk(2025, 12, 8, 11, 1), direction="out", deal_id="D1")
    await evaluate(rt, aid, msk(2025, 12, 8, 11, 5), deal_ids=["D1"])
    assert (await finding(rt, aid, RULE, "D1")).status == "resolved"


async def test_the_message_in_russian_and_english(rt):
    aid = await _lead(rt)
    now = msk(2025, 12, 8, 10, 40)
    await evaluate(rt, aid, now)
    f = await finding(rt, aid, RULE, "D1")
    async with rt.sessions() as s:
        account = await s.get(Account, aid)
        [ru] = await findings_service.render(s, account, [f], "http://x", now=now)
        [en] = await findings_service.render(s, account, [f], "http://x", lang="en", now=now)
    assert ru.title == "Новый лид без контакта" and en.title == "New lead not contacted"
    assert ru.message == "Новая сделка от 08.12 10:00: с клиентом не связались уже 40 рабочих минут"
    assert en.message == "New deal of 08.12 10:00: nobody has contacted the client for 40 working minutes"
    assert ru.details["waited_working_seconds"] == 2400


async def test_a_deadline_longer_than_the_window_still_opens(rt):
    aid = await _lead(rt)
    await save_rules(rt, aid, {"rules": {RULE: {"settings": {"minutes": 1200}}}})  # 20 working hours
    assert await _status(rt, aid, msk(2025, 12, 10, 11, 59)) == "pending"  # Mon 8 h + Tue 9 h + Wed 2 h 59
    assert await _status(rt, aid, msk(2025, 12, 10, 12)) == "open"
