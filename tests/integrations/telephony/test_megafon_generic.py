"""MegaFon's CRM API and the generic Standard Webhooks form."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from integrations.base import CallDirection, CallStatus, WebhookMalformed, WebhookRejected
from integrations.telephony.base import HookRequest, StoredHook
from integrations.telephony.generic import GenericAdapter, sign
from integrations.telephony.megafon import MegafonAdapter

FIXTURES = Path(__file__).parents[2] / "fixtures" / "telephony"
NOW = datetime(2025, 11, 24, 16, 2, tzinfo=UTC)
megafon = MegafonAdapter()
generic = GenericAdapter()


def req(body: bytes, headers: dict[str, str] | None = None) -> HookRequest:
    return HookRequest(method="POST", path="", query={}, headers=headers or {}, body=body)


# -- MegaFon -------------------------------------------------------------------------------------------


def test_megafon_history_is_a_finished_call() -> None:
    body = (FIXTURES / "megafon_history.form").read_bytes().strip()
    verdict = megafon.verify(req(body), {"crm_token": "fx-megafon-crm-token"}, NOW)
    [ev] = megafon.parse(StoredHook(path="", body=body.decode()), region="RU", received_at=NOW)
    assert verdict.store and ev.call_id == "c7e1f0a2-11b3" and ev.direction is CallDirection.OUT
    assert ev.client_number == "+79991234567" and ev.manager_ref == "ivanov" and ev.status is CallStatus.ANSWERED
    assert ev.started_at == datetime(2025, 11, 24, 16, 0, tzinfo=UTC) and ev.duration_seconds == 104
    assert ev.recording_url == "https://records.example.test/c7e1f0a2.mp3" and ev.is_final


def test_megafon_refuses_another_token_and_unknown_commands() -> None:
    body = (FIXTURES / "megafon_history.form").read_bytes().strip()
    with pytest.raises(WebhookRejected):
        megafon.verify(req(body), {"crm_token": "other"}, NOW)
    with pytest.raises(WebhookMalformed):
        megafon.verify(req(b"cmd=rating&crm_token=t&callid=1"), {"crm_token": "t"}, NOW)


def test_megafon_contact_is_a_lookup_that_stores_nothing() -> None:
    verdict = megafon.verify(req(b"cmd=contact&phone=79991234567&callid=1&crm_token=t"), {"crm_token": "t"}, NOW)
    assert not verdict.store and verdict.lookup_number == "79991234567"


@pytest.mark.parametrize(
    ("status", "expected"),
    [("missed", CallStatus.MISSED), ("Busy", CallStatus.BUSY), ("NotAvailable", CallStatus.FAILED)],
)
def test_megafon_statuses(status: str, expected: CallStatus) -> None:
    body = f"cmd=history&type=in&phone=79991234567&callid=x&start=20251124T160000Z&duration=20&status={status}"
    [ev] = megafon.parse(StoredHook(path="", body=body), region="RU", received_at=NOW)
    assert ev.status is expected and ev.talk_seconds == 0 and ev.direction is CallDirection.IN


# -- Standard Webhooks -----------------------------------------------------------------------------------

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BODY = json.dumps(
    {
        "call_id": "g-1",
        "event": "end",
        "direction": "in",
        "client_number": "8 999 123-45-67",
        "manager": "101",
        "started_at": "2025-11-24T16:00:00Z",
        "answered_at": "2025-11-24T16:00:05Z",
        "ended_at": "2025-11-24T16:01:05Z",
        "recording_url": "https://pbx.example.test/r/1.mp3",
    }
).encode()


def signed_headers(msg_id: str = "msg_1", at: datetime = NOW, secret: str = SECRET, body: bytes = BODY) -> dict:
    stamp = str(int(at.timestamp()))
    return {"webhook-id": msg_id, "webhook-timestamp": stamp, "webhook-signature": sign(secret, msg_id, stamp, body)}


def test_a_signed_generic_call_verifies_and_parses() -> None:
    verdict = generic.verify(req(BODY, signed_headers()), {"secret": SECRET}, NOW)
    [ev] = generic.parse(StoredHook(path="", body=BODY.decode()), region="RU", received_at=NOW)
    assert verdict.store and ev.client_number == "+79991234567" and ev.talk_seconds == 60
    assert ev.status is CallStatus.ANSWERED and ev.is_final and ev.manager_ref == "101"


def test_the_webhook_id_is_the_dedup_key_so_a_replay_is_stored_once() -> None:
    first = generic.verify(req(BODY, signed_headers()), {"secret": SECRET}, NOW)
    later = NOW + timedelta(seconds=30)
    again = generic.verify(req(BODY, signed_headers(at=later)), {"secret": SECRET}, later)
    other = generic.verify(req(BODY, signed_headers("msg_2")), {"secret": SECRET}, NOW)
    assert first.dedup_key == again.dedup_key != other.dedup_key


@pytest.mark.parametrize("skew", [timedelta(minutes=-6), timedelta(minutes=6)])
def test_a_timestamp_outside_five_minutes_is_refused(skew: timedelta) -> None:
    with pytest.raises(WebhookRejected, match="5 minutes"):
        generic.verify(req(BODY, signed_headers(at=NOW + skew)), {"secret": SECRET}, NOW)


def test_one_of_several_signatures_is_enough_and_rotation_is_accepted() -> None:
    headers = signed_headers()
    old = signed_headers(secret="whsec_b2xkLXNlY3JldA==")["webhook-signature"]
    headers["webhook-signature"] = f"v1,bm90LWl0 {old} {headers['webhook-signature']}"
    assert generic.verify(req(BODY, headers), {"secret": SECRET}, NOW).store
    rotated = signed_headers(secret="whsec_b2xkLXNlY3JldA==")
    assert generic.verify(
        req(BODY, rotated), {"secret": SECRET, "secondary_secret": "whsec_b2xkLXNlY3JldA=="}, NOW
    ).store


def test_tampering_or_missing_headers_is_refused() -> None:
    with pytest.raises(WebhookRejected):
        generic.verify(req(BODY.replace(b"g-1", b"g-2"), signed_headers()), {"secret": SECRET}, NOW)
    with pytest.raises(WebhookRejected):
        generic.verify(req(BODY, {}), {"secret": SECRET}, NOW)
    with pytest.raises(WebhookRejected):
        generic.verify(req(BODY, signed_headers()), {"secret": "whsec_b3RoZXI="}, NOW)


def test_a_signed_body_outside_the_schema_is_malformed() -> None:
    body = b'{"event": "end"}'
    with pytest.raises(WebhookMalformed, match="call_id"):
        generic.verify(req(body, signed_headers(body=body)), {"secret": SECRET}, NOW)
