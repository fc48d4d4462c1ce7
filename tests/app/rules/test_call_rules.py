"""The three call rules on hand-built mirrors, at fixed instants (Moscow time, RU calendar):
their windows are counted in working time."""

from __future__ import annotations

from datetime import datetime

from app.accounts.models import Account
from app.calls.models import Call
from app.findings import service as findings_service
from tests.app.rules.mirror_builder import (
    MANAGER,
    OTHER_MANAGER,
    add_deal,
    add_note,
    add_task,
    evaluate,
    finding,
    findings,
    msk,
    new_account,
    save_rules,
)

# Monday 2025-12-08: an ordinary working week in Russia (09:00-18:00).
CLIENT = "+79991234567"
_ids = iter(range(1, 10_000))


def add_call(
    s,
    account_id: int,
    *,
    started: datetime,
    talk: int = 95,
    status: str = "answered",
    direction: str | None = "out",
    number: str | None = CLIENT,
    deal_id: str | None = "D1",
    contact_id: str | None = "C1",
    manager: str | None = MANAGER,
    final: bool = True,
) -> Call:
    from datetime import timedelta

    answered = started + timedelta(seconds=5) if status == "answered" else None
    ended = (answered or started) + timedelta(seconds=talk if status == "answered" else 30)
    call = Call(
        account_id=account_id,
        provider="mango",
        provider_call_id=f"E{next(_ids)}",
        direction=direction,
        client_number=number,
        manager_id=manager,
        manager_ref="101",
        started_at=started,
        answered_at=answered,
        ended_at=ended,
        talk_seconds=talk if status == "answered" else 0,
        duration_seconds=int((ended - started).total_seconds()),
        status=status,
        is_final=final,
        recording_url="https://records.example.test/1.mp3",
        deal_id=deal_id,
        contact_id=contact_id,
        match_source="mirror" if deal_id or contact_id else None,
    )
    s.add(call)
    return call


async def one_call(rt, **kw) -> tuple[int, str]:
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=msk(2025, 12, 1, 10))
        call = add_call(s, aid, **kw)
        await s.flush()
        cid = str(call.id)
    return aid, cid


# -- call_not_logged ----------------------------------------------------------------------------------


async def test_a_talk_nobody_wrote_down_opens_after_30_working_minutes(rt):
    aid, cid = await one_call(rt, started=msk(2025, 12, 8, 12, 0))  # ends 12:01:40
    await evaluate(rt, aid, msk(2025, 12, 8, 12, 20))
    f = await finding(rt, aid, "call_not_logged", cid)
    assert f.status == "pending" and f.deal_id == "D1" and f.manager_id == MANAGER
    await evaluate(rt, aid, msk(2025, 12, 8, 12, 35))
    assert (await finding(rt, aid, "call_not_logged", cid)).status == "open"


async def test_the_window_runs_in_working_time_over_the_evening(rt):
    aid, cid = await one_call(rt, started=msk(2025, 12, 8, 17, 50))  # ends 17:51:40, 8 working minutes left
    await evaluate(rt, aid, msk(2025, 12, 8, 23, 0))
    assert (await finding(rt, aid, "call_not_logged", cid)).status == "pending"
    await evaluate(rt, aid, msk(2025, 12, 9, 9, 20))
    assert (await finding(rt, aid, "call_not_logged", cid)).status == "pending"
    await evaluate(rt, aid, msk(2025, 12, 9, 9, 23))
    assert (await finding(rt, aid, "call_not_logged", cid)).status == "open"


async def test_a_note_by_that_manager_logs_the_call_even_late(rt):
    aid, cid = await one_call(rt, started=msk(2025, 12, 8, 12, 0))
    await evaluate(rt, aid, msk(2025, 12, 8, 13, 0))
    assert (await finding(rt, aid, "call_not_logged", cid)).status == "open"
    async with rt.sessions() as s, s.begin():
        add_note(
            s,
            aid,
            "N-other",
            "D1",
            "Обсудили поставку, ждём счёт",
            created_at=msk(2025, 12, 8, 13, 5),
            created_by=OTHER_MANAGER,
        )
        add_note(s, aid, "N-own", "D1", "Напоминание #cw12", created_at=msk(2025, 12, 8, 13, 5), created_by=MANAGER)
    await evaluate(rt, aid, msk(2025, 12, 8, 13, 10))
    assert (await finding(rt, aid, "call_not_logged", cid)).status == "open"  # another's note, our own marker
    async with rt.sessions() as s, s.begin():
        add_note(s, aid, "N1", "D1", "Клиент согласен на поставку", created_at=msk(2025, 12, 8, 13, 15))
    await evaluate(rt, aid, msk(2025, 12, 8, 13, 20))
    assert (await finding(rt, aid, "call_not_logged", cid)).status == "resolved"


async def test_a_task_set_after_the_call_logs_it(rt):
    aid, cid = await one_call(rt, started=msk(2025, 12, 8, 12, 0))
    async with rt.sessions() as s, s.begin():
        add_task(s, aid, "T1", "D1", due_at=msk(2025, 12, 9, 12), created_at=msk(2025, 12, 8, 12, 10))
    await evaluate(rt, aid, msk(2025, 12, 8, 13, 0))
    assert await finding(rt, aid, "call_not_logged", cid) is None


async def test_short_missed_or_unmatched_calls_are_not_judged(rt):
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=msk(2025, 12, 1, 10))
        add_call(s, aid, started=msk(2025, 12, 8, 11), talk=39)
        add_call(s, aid, started=msk(2025, 12, 8, 11), status="missed", direction="in")
        add_call(s, aid, started=msk(2025, 12, 8, 11), deal_id=None)
        add_call(s, aid, started=msk(2025, 12, 8, 11), final=False)
    await evaluate(rt, aid, msk(2025, 12, 8, 15))
    assert await findings(rt, aid, "call_not_logged") == []


async def test_the_finding_reads_the_call_facts(rt):
    aid, cid = await one_call(rt, started=msk(2025, 12, 8, 12, 0))
    await evaluate(rt, aid, msk(2025, 12, 8, 13, 0))
    f = await finding(rt, aid, "call_not_logged", cid)
    async with rt.sessions() as s:
        [out] = await findings_service.render(
            s, await s.get(Account, aid), [f], "http://x", now=msk(2025, 12, 8, 13, 0)
        )
    assert "+7 999 123-45-67" in out.message and "08.12 12:00" in out.message and "1 мин 35 с" in out.message
    assert out.details["number"] == CLIENT and out.details["talk_seconds"] == 95
    assert out.details["recording_url"] == "https://records.example.test/1.mp3" and out.deal_id == "D1"


# -- unknown_number -----------------------------------------------------------------------------------


async def test_calls_from_a_number_nobody_knows_are_one_lost_lead(rt):
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_call(
            s,
            aid,
            started=msk(2025, 12, 8, 11),
            status="missed",
            direction="in",
            deal_id=None,
            contact_id=None,
            number="+79160000001",
            manager=None,
        )
        add_call(
            s,
            aid,
            started=msk(2025, 12, 8, 11, 30),
            direction="in",
            deal_id=None,
            contact_id=None,
            number="+79160000001",
        )
    await evaluate(rt, aid, msk(2025, 12, 8, 11, 40))
    [f] = await findings(rt, aid, "unknown_number")
    assert f.entity_id == "+79160000001" and f.status == "open" and f.manager_id == MANAGER
    assert f.entity_type == "phone" and f.deal_id is None


async def test_unknown_number_waits_its_grace_in_working_time_and_resolves_on_a_match(rt):
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        call = add_call(s, aid, started=msk(2025, 12, 8, 17, 55), direction="in", deal_id=None, contact_id=None)
    await evaluate(rt, aid, msk(2025, 12, 8, 20))
    assert (await finding(rt, aid, "unknown_number", CLIENT)).status == "pending"
    await evaluate(rt, aid, msk(2025, 12, 9, 9, 11))
    assert (await finding(rt, aid, "unknown_number", CLIENT)).status == "open"
    async with rt.sessions() as s, s.begin():
        (await s.get(Call, call.id)).contact_id = "C7"
    await evaluate(rt, aid, msk(2025, 12, 9, 9, 30))
    assert (await finding(rt, aid, "unknown_number", CLIENT)).status == "resolved"


# -- missed_call_not_returned --------------------------------------------------------------------------


async def test_a_missed_call_nobody_returned_opens_after_30_working_minutes(rt):
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=msk(2025, 12, 1, 10), responsible_user_id=OTHER_MANAGER)
        first = add_call(s, aid, started=msk(2025, 12, 8, 17, 40), status="missed", direction="in", manager=None)
        add_call(s, aid, started=msk(2025, 12, 8, 17, 45), status="missed", direction="in", manager=None)
        await s.flush()
        first_id = str(first.id)
    await evaluate(rt, aid, msk(2025, 12, 8, 22))
    [f] = await findings(rt, aid, "missed_call_not_returned")  # two misses before a talk: one problem
    assert f.entity_id == first_id and f.status == "pending" and f.manager_id == OTHER_MANAGER
    await evaluate(rt, aid, msk(2025, 12, 9, 9, 15))
    assert (await finding(rt, aid, "missed_call_not_returned", first_id)).status == "open"
    async with rt.sessions() as s, s.begin():
        add_call(s, aid, started=msk(2025, 12, 9, 9, 20), direction="out", talk=12)
    await evaluate(rt, aid, msk(2025, 12, 9, 9, 30))
    assert (await finding(rt, aid, "missed_call_not_returned", first_id)).status == "resolved"


async def test_a_talk_with_another_number_does_not_split_a_clients_misses(rt):
    """The last talk before a miss is the last talk with that number, not with anybody."""
    other = "+79990000001"
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=msk(2025, 12, 1, 10))
        first = add_call(s, aid, started=msk(2025, 12, 8, 17, 40), status="missed", direction="in", manager=None)
        add_call(s, aid, started=msk(2025, 12, 8, 17, 45), status="missed", direction="in", manager=None)
        add_call(s, aid, started=msk(2025, 12, 8, 17, 42), number=other, deal_id=None, contact_id=None)
        theirs = add_call(
            s,
            aid,
            started=msk(2025, 12, 8, 17, 50),
            status="missed",
            direction="in",
            manager=None,
            number=other,
            deal_id=None,
            contact_id=None,
        )
        await s.flush()
        expected = {str(first.id), str(theirs.id)}
    await evaluate(rt, aid, msk(2025, 12, 9, 12))
    assert {f.entity_id for f in await findings(rt, aid, "missed_call_not_returned")} == expected


async def test_an_unanswered_call_back_does_not_return_the_call(rt):
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        missed = add_call(s, aid, started=msk(2025, 12, 8, 11), status="missed", direction="in")
        add_call(s, aid, started=msk(2025, 12, 8, 11, 10), status="missed", direction="out")
        await s.flush()
        mid = str(missed.id)
    await evaluate(rt, aid, msk(2025, 12, 8, 12))
    assert (await finding(rt, aid, "missed_call_not_returned", mid)).status == "open"


async def test_rules_settings_change_the_windows(rt):
    aid, cid = await one_call(rt, started=msk(2025, 12, 8, 12, 0))
    await save_rules(rt, aid, {"rules": {"call_not_logged": {"settings": {"minutes": 90}}}})
    await evaluate(rt, aid, msk(2025, 12, 8, 13, 0))
    assert (await finding(rt, aid, "call_not_logged", cid)).status == "pending"


async def test_a_call_whose_direction_the_pbx_did_not_say_is_still_judged(rt):
    aid, cid = await one_call(rt, started=msk(2025, 12, 8, 12, 0), direction=None)
    await evaluate(rt, aid, msk(2025, 12, 8, 13, 0))
    assert (await finding(rt, aid, "call_not_logged", cid)).status == "open"


async def test_the_missed_call_finding_says_how_long_the_client_has_waited(rt):
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        missed = add_call(s, aid, started=msk(2025, 12, 8, 11), status="missed", direction="in")
        await s.flush()
        mid = str(missed.id)
    await evaluate(rt, aid, msk(2025, 12, 8, 13, 0, 30))
    f = await finding(rt, aid, "missed_call_not_returned", mid)
    async with rt.sessions() as s:
        account = await s.get(Account, aid)
        [ru] = await findings_service.render(s, account, [f], "http://x", now=msk(2025, 12, 8, 13, 0, 30))
        [en] = await findings_service.render(s, account, [f], "http://x", lang="en", now=msk(2025, 12, 8, 13, 0, 30))
    assert ru.message == (
        "Пропущенный звонок с +7 999 123-45-67 в 08.12 11:00: клиенту не перезвонили уже 2 рабочих часа"
    )
    assert en.message == (
        "Missed call from +7 999 123-45-67 at 08.12 11:00: nobody has called back for 2 working hours"
    )
    assert ru.details["number"] == CLIENT and ru.details["status"] == "missed"
