"""Mango end to end: settings API, signed callbacks into the inbox, the worker merging events
into one call, the manager mapped from the extension, and the call matched to a card."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import select

from app.calls.models import Call, CallStatsDaily, TelephonyConfig
from app.calls.service import mirror_writer as MirrorWriter
from app.ingest import worker
from app.ingest.models import InboxEvent
from integrations.base import ContactUpserted, DealUpserted
from integrations.telephony.mango import sign
from tests.conftest import create_account

FIXTURES = Path(__file__).parents[2] / "fixtures" / "telephony"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
KEY, SALT = "fx-mango-api-key", "fx-mango-api-salt"
T0 = datetime(2025, 11, 24, 16, 0, tzinfo=UTC)


def fixture(name: str) -> bytes:
    return (FIXTURES / f"{name}.form").read_bytes().strip()


def signed(payload: dict) -> bytes:
    text = json.dumps(payload, separators=(",", ":"))
    return f"vpbx_api_key={KEY}&sign={sign(KEY, text, SALT)}&json={quote(text)}".encode()


async def connect(client, **extra) -> dict:
    acc = await create_account(client)
    resp = await client.put(
        f"/api/accounts/{acc['id']}/telephony/mango",
        json={"api_key": KEY, "api_salt": SALT, "extensions": {"101": 5512345, "102": "5512346"}, **extra},
    )
    assert resp.status_code == 200, resp.text
    return acc


async def calls(rt) -> list[Call]:
    async with rt.sessions() as s:
        return list(await s.scalars(select(Call).order_by(Call.id)))


async def inbox(rt) -> list[InboxEvent]:
    async with rt.sessions() as s:
        return list(await s.scalars(select(InboxEvent).order_by(InboxEvent.id)))


async def test_settings_are_sealed_and_never_echoed(client, rt):
    acc = await connect(client)
    resp = await client.get(f"/api/accounts/{acc['id']}/telephony/mango")
    assert resp.status_code == 200
    body = resp.json()
    assert KEY not in resp.text and SALT not in resp.text
    assert body["secrets_set"] == ["api_key", "api_salt"]
    assert body["extensions"] == {"101": "5512345", "102": "5512346"}
    assert body["hook_url"] == f"http://crmwatch.test/hooks/telephony/mango/{acc['key']}/events/"
    async with rt.sessions() as s:
        sealed = await s.scalar(select(TelephonyConfig.credentials))
    assert SALT.encode() not in sealed and rt.box.open(sealed) == {"api_key": KEY, "api_salt": SALT}


async def test_settings_without_the_secrets_or_with_unknown_fields_are_refused(client, rt):
    acc = await create_account(client)
    url = f"/api/accounts/{acc['id']}/telephony/mango"
    assert (await client.put(url, json={"api_key": KEY, "extensions": {}})).status_code == 422
    assert (await client.put(url, json={"api_key": KEY, "api_salt": SALT, "token": "x"})).status_code == 422
    assert (await client.put(url, json={"api_key": KEY, "api_salt": "", "extensions": {}})).status_code == 422
    assert (await client.put(f"/api/accounts/{acc['id']}/telephony/nosuchpbx", json={})).status_code == 404
    assert (await client.get(url)).status_code == 404
    async with rt.sessions() as s:
        assert await s.scalar(select(TelephonyConfig)) is None


async def test_a_put_without_secrets_keeps_the_stored_ones(client, rt):
    acc = await connect(client)
    resp = await client.put(f"/api/accounts/{acc['id']}/telephony/mango", json={"extensions": {"103": "7"}})
    assert resp.status_code == 200 and resp.json()["extensions"] == {"103": "7"}
    async with rt.sessions() as s:
        assert rt.box.open(await s.scalar(select(TelephonyConfig.credentials)))["api_salt"] == SALT


async def test_summary_is_stored_raw_then_applied_as_one_call(client, rt):
    acc = await connect(client)
    url = f"/hooks/telephony/mango/{acc['key']}/events/summary"
    for _ in range(2):  # a redelivery is a no-op
        resp = await client.post(url, content=fixture("mango_summary_outbound_answered"), headers=FORM)
        assert resp.status_code == 200
    rows = await inbox(rt)
    assert len(rows) == 1 and rows[0].source == "telephony.mango"
    await worker.drain(rt)
    [call] = await calls(rt)
    assert (call.provider, call.provider_call_id, call.direction) == ("mango", "MzM0NTY3ODk6MTAx", "out")
    assert call.client_number == "+79991234567" and call.status == "answered" and call.talk_seconds == 95
    assert call.manager_ref == "101" and call.manager_id == "5512345" and call.is_final


async def test_a_wrong_sign_is_refused_and_stores_nothing(client, rt):
    acc = await connect(client)
    url = f"/hooks/telephony/mango/{acc['key']}/events/summary"
    tampered = fixture("mango_summary_inbound_missed").replace(b"1764000330", b"1764000331")
    assert (await client.post(url, content=tampered, headers=FORM)).status_code == 401
    assert (
        await client.post(
            "/hooks/telephony/mango/not-a-key/events/summary",
            content=fixture("mango_summary_inbound_missed"),
            headers=FORM,
        )
    ).status_code == 404
    assert (await client.post(url, content=b"%%%&&&==", headers=FORM)).status_code == 400
    assert await inbox(rt) == []


async def test_an_account_without_mango_settings_stores_nothing(client, rt):
    acc = await create_account(client)
    resp = await client.post(
        f"/hooks/telephony/mango/{acc['key']}/events/summary",
        content=fixture("mango_summary_inbound_missed"),
        headers=FORM,
    )
    assert resp.status_code == 404 and await inbox(rt) == []


async def test_call_events_merge_with_the_summary_and_a_lower_seq_is_dropped(client, rt):
    acc = await connect(client)
    base = {
        "entry_id": "MzM0NTY3ODk6MTAy",
        "call_id": "leg1",
        "from": {"number": "74957654321"},
        "to": {"extension": "102", "number": "74951234567", "line_number": "74951234567"},
    }
    hook = f"/hooks/telephony/mango/{acc['key']}/events/"
    # Connected (seq 2) arrives before Appeared (seq 1): the late, older one is stale.
    await client.post(
        hook + "call",
        content=signed({**base, "seq": 2, "call_state": "Connected", "timestamp": 1764000305}),
        headers=FORM,
    )
    await client.post(
        hook + "call",
        content=signed({**base, "seq": 1, "call_state": "Appeared", "timestamp": 1764000300}),
        headers=FORM,
    )
    await worker.drain(rt)
    [call] = await calls(rt)
    assert call.last_seq == 2 and call.started_at is None and not call.is_final
    assert call.answered_at == datetime.fromtimestamp(1764000305, UTC) and call.status is None
    await client.post(hook + "summary", content=fixture("mango_summary_inbound_missed"), headers=FORM)
    await client.post(
        hook + "record/added", content=signed({"entry_id": "MzM0NTY3ODk6MTAy", "recording_id": "R1"}), headers=FORM
    )
    await worker.drain(rt)
    [call] = await calls(rt)
    assert call.is_final and call.status == "missed" and call.started_at == datetime.fromtimestamp(1764000300, UTC)
    assert call.manager_id == "5512346" and call.recording_url == "mango:R1"


async def seed(rt, account_id: int, *events) -> None:
    async with rt.sessions() as s, s.begin():
        await MirrorWriter(s, account_id).apply(list(events))


def contact(cid: str, *phones: str) -> ContactUpserted:
    return ContactUpserted(id=cid, updated_at=T0, name=f"Клиент {cid}", responsible_user_id="5512345", phones=phones)


def deal(did: str, contacts: tuple[str, ...], *, at: datetime = T0, closed: bool = False) -> DealUpserted:
    from integrations.base import StageKind

    return DealUpserted(
        id=did,
        updated_at=at,
        name=did,
        pipeline_id="P",
        stage_id="142" if closed else "S",
        stage_kind=StageKind.WON if closed else StageKind.OPEN,
        contact_ids=contacts,
    )


async def test_the_most_recently_active_open_deal_of_the_contact_is_matched(client, rt):
    acc = await connect(client)
    later = datetime(2025, 11, 24, 17, 0, tzinfo=UTC)
    await seed(
        rt,
        acc["id"],
        contact("C1", "+79991234567"),
        deal("D-old", ("C1",)),
        deal("D-new", ("C1",), at=later),
        deal("D-closed", ("C1",), at=datetime(2025, 11, 25, tzinfo=UTC), closed=True),
    )
    await client.post(
        f"/hooks/telephony/mango/{acc['key']}/events/summary",
        content=fixture("mango_summary_outbound_answered"),
        headers=FORM,
    )
    await worker.drain(rt)
    [call] = await calls(rt)
    assert (call.contact_id, call.deal_id, call.match_source) == ("C1", "D-new", "mirror")


async def test_a_call_is_rematched_when_its_contact_and_deal_appear_later(client, rt, amo):
    acc = await connect(client)
    await client.post(
        f"/hooks/telephony/mango/{acc['key']}/events/summary",
        content=fixture("mango_summary_outbound_answered"),
        headers=FORM,
    )
    await worker.drain(rt)
    [call] = await calls(rt)
    assert call.deal_id is None and call.contact_id is None and call.crm_searched_at is not None
    await seed(rt, acc["id"], contact("C9", "8 (999) 123-45-67"))
    [call] = await calls(rt)
    assert call.contact_id is None  # the phone was not normalized by this hand-made event
    await seed(rt, acc["id"], contact("C9", "+79991234567"))
    [call] = await calls(rt)
    assert call.contact_id == "C9" and call.deal_id is None
    await seed(rt, acc["id"], deal("D9", ("C9",)))
    [call] = await calls(rt)
    assert call.deal_id == "D9"


async def test_a_deal_closed_since_stays_on_the_call(client, rt):
    acc = await connect(client)
    await seed(rt, acc["id"], contact("C1", "+79991234567"), deal("D1", ("C1",)))
    await client.post(
        f"/hooks/telephony/mango/{acc['key']}/events/summary",
        content=fixture("mango_summary_outbound_answered"),
        headers=FORM,
    )
    await worker.drain(rt)
    await seed(
        rt,
        acc["id"],
        deal("D1", ("C1",), at=datetime(2025, 11, 25, tzinfo=UTC), closed=True),
        deal("D2", ("C1",), at=datetime(2025, 11, 25, tzinfo=UTC)),
    )
    [call] = await calls(rt)
    assert call.deal_id == "D1"


async def test_unknown_to_the_mirror_the_crm_is_searched_by_phone(client, rt, amo):
    amo.add_user(5512345, "Иван Волков", "ivan@example.test")
    amo.add_pipeline(7001, "Продажи", [(70011, "Первичный контакт", 10)])
    amo.add_contact(9001, "Пётр Петров", phones=["+7 (999) 123-45-67"])
    amo.add_contact(9002, "Однофамилец", phones=["+7 (999) 123-45-00"])
    amo.add_lead(8001, "Поставка", 7001, 70011, contact_ids=[9001])
    acc = await connect(client)
    await client.post(
        f"/hooks/telephony/mango/{acc['key']}/events/summary",
        content=fixture("mango_summary_outbound_answered"),
        headers=FORM,
    )
    await worker.drain(rt)
    [call] = await calls(rt)
    assert (call.contact_id, call.deal_id, call.match_source) == ("9001", "8001", "crm_search")
    # The national digits are searched; the contact whose number only shares a prefix is no match.
    searches = [q for _, p, q in amo.request_log if p == "/api/v4/contacts"]
    assert searches == ["query=9991234567&with=leads&limit=250&page=1"]


async def test_a_number_on_a_company_matches_the_company_deal(client, rt, amo):
    amo.add_pipeline(7001, "Продажи", [(70011, "Первичный контакт", 10)])
    amo.add_lead(8002, "Опт", 7001, 70011)
    amo.add_company(9500, "ООО Ромашка", phones=["8 999 123 45 67"], lead_ids=[8002])
    acc = await connect(client)
    await client.post(
        f"/hooks/telephony/mango/{acc['key']}/events/summary",
        content=fixture("mango_summary_outbound_answered"),
        headers=FORM,
    )
    await worker.drain(rt)
    [call] = await calls(rt)
    assert (call.contact_id, call.deal_id, call.match_source) == (None, "8002", "crm_search")


async def test_daily_stats_per_manager(client, rt):
    acc = await connect(client)
    hook = f"/hooks/telephony/mango/{acc['key']}/events/summary"
    for name in ("mango_summary_outbound_answered", "mango_summary_inbound_missed", "mango_summary_ivr_only"):
        await client.post(hook, content=fixture(name), headers=FORM)
    await worker.drain(rt)
    async with rt.sessions() as s:
        rows = {r.manager_id: r for r in await s.scalars(select(CallStatsDaily))}
    assert set(rows) == {"5512345", "5512346"}  # the voice-menu call reached nobody
    ivanov, other = rows["5512345"], rows["5512346"]
    assert (ivanov.calls, ivanov.talk_seconds, ivanov.successful, ivanov.outgoing, ivanov.missed) == (1, 95, 1, 1, 0)
    assert (other.calls, other.incoming, other.missed, other.successful) == (1, 1, 1, 0)
    resp = await client.get(f"/api/accounts/{acc['id']}/call-stats", params={"from": "2025-11-24", "to": "2025-11-24"})
    assert resp.status_code == 200
    assert {(r["manager_id"], r["calls"], r["talk_seconds"]) for r in resp.json()} == {
        ("5512345", 1, 95),
        ("5512346", 1, 0),
    }


async def test_findings_from_mango_calls_carry_the_deal_and_the_number(client, rt):
    from app.findings import evaluation as engine

    acc = await connect(client)
    await seed(rt, acc["id"], contact("C1", "+79991234567"), deal("D1", ("C1",)))
    hook = f"/hooks/telephony/mango/{acc['key']}/events/summary"
    for name in ("mango_summary_outbound_answered", "mango_summary_inbound_missed"):
        await client.post(hook, content=fixture(name), headers=FORM)
    await worker.drain(rt)
    # The calls came at 19:00 Moscow time on a Monday: the windows run from 09:00 on Tuesday.
    async with rt.sessions() as s, s.begin():
        await engine.evaluate(s, acc["id"], now=datetime(2025, 11, 25, 7, 0, tzinfo=UTC))
    resp = await client.get(f"/api/accounts/{acc['id']}/findings", params={"status": "open"})
    assert resp.status_code == 200
    items = resp.json()["items"] if isinstance(resp.json(), dict) else resp.json()
    by_rule = {f["rule"]: f for f in items}
    assert by_rule["call_not_logged"]["deal_id"] == "D1"
    assert by_rule["call_not_logged"]["details"]["talk_seconds"] == 95
    assert "+74957654321" in json.dumps(by_rule["unknown_number"], ensure_ascii=False)
    assert by_rule["missed_call_not_returned"]["details"]["number"] == "+74957654321"


async def test_changed_or_removed_settings_take_effect_at_once(client, rt):
    acc = await connect(client)
    url = f"/hooks/telephony/mango/{acc['key']}/events/summary"
    assert (await client.post(url, content=fixture("mango_summary_ivr_only"), headers=FORM)).status_code == 200
    await client.put(f"/api/accounts/{acc['id']}/telephony/mango", json={"api_salt": "a-new-salt"})
    assert (await client.post(url, content=fixture("mango_summary_inbound_missed"), headers=FORM)).status_code == 401
    assert (await client.delete(f"/api/accounts/{acc['id']}/telephony/mango")).status_code == 204
    assert (await client.post(url, content=fixture("mango_summary_inbound_missed"), headers=FORM)).status_code == 404
    assert len(await inbox(rt)) == 1


async def test_cards_changed_counts_what_the_manager_did_that_day_and_a_sweep_refreshes_it(client, rt):
    from app.calls import stats
    from app.findings.scheduler import sweep_account
    from integrations.base import NoteAdded, NoteKind

    acc = await connect(client)
    await seed(rt, acc["id"], contact("C1", "+79991234567"), deal("D1", ("C1",)))
    await client.post(
        f"/hooks/telephony/mango/{acc['key']}/events/summary",
        content=fixture("mango_summary_outbound_answered"),
        headers=FORM,
    )
    await worker.drain(rt)

    async def row():
        async with rt.sessions() as s:
            return await s.scalar(select(CallStatsDaily).where(CallStatsDaily.manager_id == "5512345"))

    assert (await row()).cards_changed == 0
    # Written after the call (19:05 Moscow time, the same local day), by that manager.
    await seed(
        rt,
        acc["id"],
        NoteAdded(
            id="N1",
            entity_type="deal",
            entity_id="D1",
            deal_id="D1",
            kind=NoteKind.COMMON,
            text="Договорились о поставке в декабре",
            created_by="5512345",
            created_at=datetime(2025, 11, 24, 16, 5, tzinfo=UTC),
        ),
    )
    await sweep_account(rt, acc["id"], now=datetime(2025, 11, 24, 20, 0, tzinfo=UTC))
    assert (await row()).cards_changed == 1 and stats.local_day(T0, "Europe/Moscow").isoformat() == "2025-11-24"
