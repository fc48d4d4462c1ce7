"""Bitrix24's own telephony through the whole service, against the emulator on both databases:
ONVOXIMPLANTCALLEND → a call bound to its deal (read from the call's activity outside the inbox
transaction) → the call rules; the CRM search for a number the mirror does not know; and an
outside PBX's calls logged into the portal once, even after a lost answer."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select

from app.calendar.business import BusinessCalendar, CalendarConfig
from app.calls.models import Call, CallStatsDaily
from app.findings import evaluation as engine
from app.ingest import worker
from app.outbox import delivery
from app.outbox.models import OutboxAction
from tests.app.bitrix24.support import deals, inbox, seed
from tests.app.bitrix24.test_b24_app_mode import install
from tests.conftest import B24_FORM, create_b24_account


def _next_working_morning() -> datetime:
    # After the seeded portal's history (stamped around now), at 10:00 in Moscow on a working day,
    # so the rules' working-time windows have run by the evaluation three hours later.
    moscow = ZoneInfo("Europe/Moscow")
    tomorrow = datetime.combine((datetime.now(moscow) + timedelta(days=1)).date(), time(0, 0), moscow)
    return BusinessCalendar(CalendarConfig()).next_working_start(tomorrow) + timedelta(hours=1)


CALL_AT = _next_working_morning()
MANGO = Path(__file__).parents[2] / "fixtures" / "telephony" / "mango_summary_outbound_answered.form"


async def post(client, key: str, body: str):
    return await client.post(f"/hooks/bitrix24/{key}", content=body, headers=B24_FORM)


async def calls(rt) -> list[Call]:
    async with rt.sessions() as s:
        return list(await s.scalars(select(Call).order_by(Call.id)))


async def open_findings(client, rt, account_id: int, now: datetime) -> dict[str, dict]:
    async with rt.sessions() as s, s.begin():
        await engine.evaluate(s, account_id, now=now)
    resp = await client.get(f"/api/accounts/{account_id}/findings", params={"status": "open"})
    assert resp.status_code == 200
    body = resp.json()
    return {f["rule"]: f for f in (body["items"] if isinstance(body, dict) else body)}


async def portal_with_deal(client, rt, b24) -> dict:
    seed(b24)
    acc = await create_b24_account(client)
    assert (await post(client, acc["key"], b24.event_form("ONCRMDEALUPDATE", 4521))).status_code == 200
    await worker.drain(rt)
    return acc


async def test_a_finished_call_is_bound_to_its_deal_and_opens_call_not_logged(client, rt, b24):
    acc = await portal_with_deal(client, rt, b24)
    b24.add_call(
        "externalCall.t1.1764000400",
        user=7,
        phone="+79123456789",
        call_type=1,
        duration=95,
        start=CALL_AT.timestamp(),
        contact_id=311,
        deal_id=4521,
        record_url="https://rec.example/t1.mp3",
    )
    b24.request_log.clear()
    resp = await post(client, acc["key"], b24.call_end_form("externalCall.t1.1764000400"))
    assert resp.status_code == 200 and b24.request_log == []  # the portal is read later, by the worker
    await worker.drain(rt)
    assert b24.request_log == ["1/abc123secret/batch.json"]  # statistics and bindings in one request
    [call] = await calls(rt)
    assert (call.provider, call.direction, call.status, call.talk_seconds, call.manager_id) == (
        "bitrix24",
        "out",
        "answered",
        95,
        "7",
    )
    assert (call.deal_id, call.match_source, call.client_number) == ("4521", "source", "+79123456789")
    assert call.ended_at == CALL_AT + timedelta(seconds=95) and call.recording_url == "https://rec.example/t1.mp3"
    assert (await inbox(rt))[-1].status == "done"
    # The worker's call follow-up ran for this row too: the manager's day is counted.
    async with rt.sessions() as s:
        [day] = await s.scalars(select(CallStatsDaily).where(CallStatsDaily.account_id == acc["id"]))
    assert (day.manager_id, day.calls, day.successful, day.outgoing) == ("7", 1, 1, 1)
    found = await open_findings(client, rt, acc["id"], CALL_AT + timedelta(hours=3))
    assert found["call_not_logged"]["deal_id"] == "4521"
    assert found["call_not_logged"]["details"]["talk_seconds"] == 95


async def test_an_event_without_its_activity_id_finds_it_through_the_call_statistics(client, rt, b24):
    acc = await portal_with_deal(client, rt, b24)
    row = b24.add_call(
        "externalCall.t5.1",
        user=7,
        phone="+79123456789",
        duration=40,
        start=CALL_AT.timestamp(),
        contact_id=311,
        deal_id=4521,
    )
    form = b24.call_end_form("externalCall.t5.1").replace(
        f"data%5BCRM_ACTIVITY_ID%5D={row['CRM_ACTIVITY_ID']}", "data%5BCRM_ACTIVITY_ID%5D="
    )
    assert "CRM_ACTIVITY_ID%5D=&" in form
    await post(client, acc["key"], form)
    await worker.drain(rt)
    [call] = await calls(rt)
    assert (call.deal_id, call.match_source) == ("4521", "source")


async def test_a_missed_incoming_call_nobody_returned_is_flagged(client, rt, b24):
    acc = await portal_with_deal(client, rt, b24)
    b24.add_call(
        "externalCall.t2.1764000500",
        user=7,
        phone="+79123456789",
        call_type=2,
        duration=0,
        code="304",
        start=CALL_AT.timestamp(),
        contact_id=311,
        deal_id=4521,
    )
    assert (await post(client, acc["key"], b24.call_end_form("externalCall.t2.1764000500"))).status_code == 200
    await worker.drain(rt)
    [call] = await calls(rt)
    assert (call.direction, call.status, call.talk_seconds, call.deal_id) == ("in", "missed", 0, "4521")
    found = await open_findings(client, rt, acc["id"], CALL_AT + timedelta(hours=3))
    assert found["missed_call_not_returned"]["details"]["number"] == "+79123456789"
    assert "call_not_logged" not in found


async def test_a_forged_call_end_event_is_refused_and_stores_nothing(client, rt, b24):
    acc = await portal_with_deal(client, rt, b24)
    b24.add_call("externalCall.t3.1", user=7, phone="+79123456789", duration=95, contact_id=311, deal_id=4521)
    before = len(await inbox(rt))
    resp = await post(client, acc["key"], b24.call_end_form("externalCall.t3.1", token="0" * 32))
    assert resp.status_code == 401
    await worker.drain(rt)
    assert len(await inbox(rt)) == before and await calls(rt) == []


async def test_a_call_bound_to_a_contact_only_finds_the_deal_through_the_crm_search(client, rt, b24):
    seed(b24)
    acc = await create_b24_account(client)  # the mirror knows neither the contact nor the deal
    b24.add_call(
        "externalCall.t4.1",
        user=7,
        phone="+79123456789",
        call_type=2,
        duration=60,
        start=CALL_AT.timestamp(),
        contact_id=311,
    )
    await post(client, acc["key"], b24.call_end_form("externalCall.t4.1"))
    await worker.drain(rt)
    [call] = await calls(rt)
    # The search's contact and deal land in the mirror, and the call matches through them.
    assert (call.contact_id, call.deal_id) == ("311", "4521") and call.crm_searched_at is not None
    assert "4521" in await deals(rt, acc["id"])
    searched = [p for m, p in b24.calls if m == "batch" and "crm.duplicate.findbycomm" in str(p)]
    assert len(searched) == 1


async def mango_call_into_the_portal(client, rt, b24, acc: dict) -> OutboxAction:
    b24.add_contact(320, "Пётр Петров", ["+7 (999) 123-45-67"], assigned_by=7)
    b24.add_deal(4600, "Поставка", "NEW", assigned_by=7, contact_id=320)
    for body in (b24.event_form("ONCRMCONTACTADD", 320), b24.event_form("ONCRMDEALADD", 4600)):
        assert (await post(client, acc["key"], body)).status_code == 200
    await worker.drain(rt)
    resp = await client.put(
        f"/api/accounts/{acc['id']}/telephony/mango",
        json={
            "api_key": "fx-mango-api-key",
            "api_salt": "fx-mango-api-salt",
            "extensions": {"101": "7"},
            "log_calls": True,
        },
    )
    assert resp.status_code == 200, resp.text
    await client.post(
        f"/hooks/telephony/mango/{acc['key']}/events/summary",
        content=MANGO.read_bytes().strip(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    await worker.drain(rt)
    await delivery.deliver_pending(rt)
    async with rt.sessions() as s:
        [row] = await s.scalars(select(OutboxAction).where(OutboxAction.kind == "log_call"))
    return row


async def test_an_outside_call_is_registered_and_finished_once_even_after_a_lost_answer(client, rt, b24, monkeypatch):
    acc = await install(client, rt, b24)
    seed(b24)
    finish = b24.m_telephony_externalcall_finish
    lost: list[bool] = []

    def finish_then_lose_the_answer(params: dict) -> dict:
        if not lost:
            lost.append(True)
            b24.lose_answers = 1  # the portal does the work; the answer never reaches us
        return finish(params)

    monkeypatch.setattr(b24, "m_telephony_externalcall_finish", finish_then_lose_the_answer)
    row = await mango_call_into_the_portal(client, rt, b24, acc)
    assert row.status == "pending" and lost and len(b24.call_stats) == 1
    async with rt.sessions() as s, s.begin():
        (await s.get(OutboxAction, row.id)).next_attempt_at = row.created_at
    await delivery.deliver_pending(rt)
    async with rt.sessions() as s:
        row = await s.get(OutboxAction, row.id)
    [stat] = b24.call_stats
    assert row.status == "sent" and row.external_id == stat["ID"]
    assert (stat["EXTERNAL_CALL_ID"], stat["CALL_TYPE"], stat["CALL_DURATION"], stat["CRM_ENTITY_ID"]) == (
        "crmwatch:mango:MzM0NTY3ODk6MTAx",
        "1",
        "95",
        "320",
    )
    assert len(b24.registered) == 1
    assert b24.bindings[int(stat["CRM_ACTIVITY_ID"])] == [
        {"entityTypeId": 3, "entityId": 320},
        {"entityTypeId": 2, "entityId": 4600},
    ]
    await delivery.deliver_pending(rt)
    assert len(b24.call_stats) == 1


async def test_an_inbound_webhook_gives_the_call_up_with_a_clear_reason(client, rt, b24):
    seed(b24)
    acc = await create_b24_account(client)
    row = await mango_call_into_the_portal(client, rt, b24, acc)
    assert row.status == "dead" and "only for an app" in row.last_error
    assert b24.call_stats == [] and not any("telephony" in str(p) for _, p in b24.calls)
