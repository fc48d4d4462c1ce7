"""Zadarma, MegaFon and the generic form through the real routes: what is answered, what is stored."""

from __future__ import annotations

import json
import time
from pathlib import Path

from sqlalchemy import select

from app.calls.models import Call
from app.calls.service import mirror_writer as MirrorWriter
from app.ingest import worker
from app.ingest.models import InboxEvent
from integrations.base import ContactUpserted
from integrations.telephony.generic import sign
from tests.conftest import create_account

FIXTURES = Path(__file__).parents[2] / "fixtures" / "telephony"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def inbox(rt) -> list[InboxEvent]:
    async with rt.sessions() as s:
        return list(await s.scalars(select(InboxEvent).order_by(InboxEvent.id)))


async def calls(rt) -> list[Call]:
    async with rt.sessions() as s:
        return list(await s.scalars(select(Call).order_by(Call.id)))


async def test_zadarma_url_check_then_a_signed_end_event(client, rt):
    acc = await create_account(client)
    resp = await client.put(
        f"/api/accounts/{acc['id']}/telephony/zadarma",
        json={"api_secret": "fx-zadarma-secret", "timezone": "Europe/Moscow", "extensions": {"100": "5512345"}},
    )
    assert resp.status_code == 200 and resp.json()["options"] == {"timezone": "Europe/Moscow"}
    assert "fx-zadarma-secret" not in resp.text
    url = f"/hooks/telephony/zadarma/{acc['key']}"
    echo = await client.get(url, params={"zd_echo": "f8a1"})
    assert echo.status_code == 200 and echo.text == "f8a1"
    head, _, body = (FIXTURES / "zadarma_notify_end.http").read_text().partition("\n\n")
    signature = head.splitlines()[0].split(": ", 1)[1]
    bad = await client.post(url, content=body.strip(), headers={**FORM, "Signature": "AAAA"})
    assert bad.status_code == 401 and await inbox(rt) == []
    ok = await client.post(url, content=body.strip(), headers={**FORM, "Signature": signature})
    assert ok.status_code == 200 and len(await inbox(rt)) == 1
    await worker.drain(rt)
    [call] = await calls(rt)
    assert (call.provider, call.status, call.talk_seconds, call.manager_id) == ("zadarma", "answered", 62, "5512345")


async def test_megafon_history_is_stored_and_contact_is_answered_from_the_mirror(client, rt):
    acc = await create_account(client)
    await client.put(
        f"/api/accounts/{acc['id']}/telephony/megafon",
        json={"crm_token": "fx-megafon-crm-token", "extensions": {"ivanov": "5512345"}},
    )
    async with rt.sessions() as s, s.begin():
        from datetime import UTC, datetime

        await MirrorWriter(s, acc["id"]).apply(
            [
                ContactUpserted(
                    id="C1",
                    updated_at=datetime(2025, 11, 1, tzinfo=UTC),
                    name="Пётр Петров",
                    responsible_user_id="5512345",
                    phones=("+79991234567",),
                )
            ]
        )
    url = f"/hooks/telephony/megafon/{acc['key']}"
    resp = await client.post(
        url, content="cmd=contact&phone=79991234567&callid=q1&crm_token=fx-megafon-crm-token", headers=FORM
    )
    assert resp.status_code == 200 and resp.json() == {"contact_name": "Пётр Петров", "responsible": "ivanov"}
    unknown = await client.post(
        url, content="cmd=contact&phone=79160000000&callid=q2&crm_token=fx-megafon-crm-token", headers=FORM
    )
    assert unknown.json() == {}
    assert (await client.post(url, content="cmd=contact&phone=1&crm_token=wrong", headers=FORM)).status_code == 401
    assert await inbox(rt) == []
    body = (FIXTURES / "megafon_history.form").read_text().strip()
    assert (await client.post(url, content=body, headers=FORM)).status_code == 200
    await worker.drain(rt)
    [call] = await calls(rt)
    assert call.manager_id == "5512345" and call.contact_id == "C1" and call.status == "answered"


async def test_generic_replays_are_stored_once_and_stale_ones_refused(client, rt):
    acc = await create_account(client)
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    await client.put(f"/api/accounts/{acc['id']}/telephony/generic", json={"secret": secret, "extensions": {}})
    body = json.dumps(
        {
            "call_id": "g-1",
            "event": "end",
            "direction": "in",
            "client_number": "+79991234567",
            "status": "missed",
            "started_at": "2025-11-24T16:00:00Z",
        }
    ).encode()
    url = f"/hooks/telephony/generic/{acc['key']}"

    def headers(stamp: int, msg_id: str = "msg_1") -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": sign(secret, msg_id, str(stamp), body),
        }

    now = int(time.time())
    assert (await client.post(url, content=body, headers=headers(now))).status_code == 200
    assert (await client.post(url, content=body, headers=headers(now + 1))).status_code == 200  # a replay
    assert (await client.post(url, content=body, headers=headers(now - 3600, "msg_9"))).status_code == 401
    assert len(await inbox(rt)) == 1
    await worker.drain(rt)
    [call] = await calls(rt)
    assert call.provider == "generic" and call.status == "missed" and call.is_final


async def test_sipuni_events_by_get_and_post_are_one_call_answered_with_success(client, rt):
    acc = await create_account(client)
    await client.put(
        f"/api/accounts/{acc['id']}/telephony/sipuni", json={"token": "sip-secret", "extensions": {"201": "5512345"}}
    )
    url = f"/hooks/telephony/sipuni/{acc['key']}"
    start = {
        "event": "1",
        "call_id": "1774372584.533596",
        "src_type": "1",
        "src_num": "79991234567",
        "dst_type": "2",
        "dst_num": "070196201",
        "short_dst_num": "201",
        "timestamp": "1764000000",
    }
    resp = await client.get(url, params={**start, "token": "sip-secret"})
    assert resp.status_code == 200 and resp.json() == {"success": True}
    end = {
        **start,
        "event": "2",
        "status": "ANSWER",
        "call_start_timestamp": "1764000000",
        "call_answer_timestamp": "1764000005",
        "timestamp": "1764000125",
        "call_record_link": "https://sipuni.example.test/r/1.mp3",
    }
    from urllib.parse import urlencode

    resp = await client.post(url, params={"token": "sip-secret"}, content=urlencode(end), headers=FORM)
    assert resp.status_code == 200 and resp.json() == {"success": True}
    assert (await client.get(url, params={**start, "token": "wrong"})).status_code == 401
    assert (await client.get(url, params={"event": "9", "call_id": "x", "token": "sip-secret"})).status_code == 400
    rows = await inbox(rt)
    assert len(rows) == 2 and all("sip-secret" not in r.payload for r in rows)
    await worker.drain(rt)
    [call] = await calls(rt)
    assert (call.direction, call.client_number, call.manager_id) == ("in", "+79991234567", "5512345")
    assert (call.status, call.talk_seconds, call.duration_seconds) == ("answered", 120, 125)
    assert call.recording_url == "https://sipuni.example.test/r/1.mp3"
