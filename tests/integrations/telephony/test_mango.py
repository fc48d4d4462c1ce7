"""Mango Office VPBX: the sign check and the normalization of its events, on the shared fixtures."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pytest

from integrations.base import CallDirection, CallStatus, WebhookMalformed, WebhookRejected
from integrations.phones import to_e164
from integrations.telephony.base import HookRequest, StoredHook
from integrations.telephony.mango import MangoAdapter, call_summary, sign, signed_form

FIXTURES = Path(__file__).parents[2] / "fixtures" / "telephony"
CREDS = {"api_key": "fx-mango-api-key", "api_salt": "fx-mango-api-salt"}
NOW = datetime(2025, 11, 24, 16, 0, tzinfo=UTC)
mango = MangoAdapter()


def fixture(name: str) -> bytes:
    return (FIXTURES / f"{name}.form").read_bytes().strip()


def signed(payload: dict, key: str = CREDS["api_key"], salt: str = CREDS["api_salt"]) -> bytes:
    text = json.dumps(payload, separators=(",", ":"))
    return f"vpbx_api_key={quote(key)}&sign={sign(key, text, salt)}&json={quote(text)}".encode()


def request(body: bytes, path: str = "events/summary") -> HookRequest:
    return HookRequest(
        method="POST", path=path, query={}, headers={}, body=body, content_type="application/x-www-form-urlencoded"
    )


def parse(body: bytes, path: str = "events/summary"):
    mango.verify(request(body, path), CREDS, NOW)
    return mango.parse(StoredHook(path=path, body=body.decode()), region="RU", received_at=NOW)


@pytest.mark.parametrize(
    "name", ["mango_summary_outbound_answered", "mango_summary_inbound_missed", "mango_summary_ivr_only"]
)
def test_fixture_signatures_verify(name: str) -> None:
    verdict = mango.verify(request(fixture(name)), CREDS, NOW)
    assert verdict.store and len(verdict.dedup_key) == 64


def test_a_tampered_json_is_rejected() -> None:
    body = fixture("mango_summary_inbound_missed").replace(b"1764000330", b"1764000930")
    with pytest.raises(WebhookRejected, match="sign"):
        mango.verify(request(body), CREDS, NOW)


def test_another_salt_or_key_is_rejected() -> None:
    with pytest.raises(WebhookRejected):
        mango.verify(request(fixture("mango_summary_ivr_only")), {**CREDS, "api_salt": "other"}, NOW)
    with pytest.raises(WebhookRejected, match="vpbx_api_key"):
        mango.verify(request(fixture("mango_summary_ivr_only")), {**CREDS, "api_key": "other"}, NOW)


@pytest.mark.parametrize("body", [b"", b"json=%7B%7D", b"%%%&&&==", b"vpbx_api_key=a&sign=b"])
def test_a_malformed_body_is_refused(body: bytes) -> None:
    with pytest.raises(WebhookMalformed):
        mango.verify(request(body), CREDS, NOW)


def test_summary_outbound_answered_counts_talk_from_timestamps() -> None:
    [ev] = parse(fixture("mango_summary_outbound_answered"))
    assert ev.call_id == "MzM0NTY3ODk6MTAx" and ev.direction is CallDirection.OUT
    assert ev.client_number == "+79991234567" and ev.line_number == "+74951234567"
    assert ev.manager_ref == "101" and ev.is_final and ev.status is CallStatus.ANSWERED
    assert ev.talk_seconds == 95 and ev.duration_seconds == 104
    assert ev.started_at == datetime.fromtimestamp(1764000000, UTC)
    assert ev.answered_at == datetime.fromtimestamp(1764000009, UTC)


def test_summary_inbound_missed() -> None:
    [ev] = parse(fixture("mango_summary_inbound_missed"))
    assert ev.direction is CallDirection.IN and ev.client_number == "+74957654321"
    assert ev.manager_ref == "102" and ev.status is CallStatus.MISSED and ev.talk_seconds == 0


def test_a_call_that_ended_in_the_voice_menu_is_not_answered_despite_entry_result() -> None:
    [ev] = parse(fixture("mango_summary_ivr_only"))
    assert json.loads((FIXTURES / "mango_summary_ivr_only.json").read_text())["entry_result"] == 1
    assert ev.status is CallStatus.MISSED and ev.talk_seconds == 0 and ev.answered_at is None


def test_call_events_carry_seq_and_state_times() -> None:
    base = {
        "entry_id": "E1",
        "call_id": "C1",
        "timestamp": 1764000000,
        "seq": 1,
        "call_state": "Appeared",
        "location": "abonent",
        "from": {"number": "89161112233"},
        "to": {"extension": "102", "number": "74951234567", "line_number": "74951234567"},
    }
    [appeared] = parse(signed(base), "events/call")
    [connected] = parse(signed({**base, "seq": 2, "call_state": "Connected", "timestamp": 1764000005}), "events/call")
    assert appeared.seq == 1 and appeared.direction is CallDirection.IN and not appeared.is_final
    assert appeared.client_number == "+79161112233" and appeared.manager_ref == "102"
    assert appeared.started_at == datetime.fromtimestamp(1764000000, UTC) and appeared.answered_at is None
    assert connected.answered_at == datetime.fromtimestamp(1764000005, UTC) and connected.status is None


def test_recording_events_name_the_recording() -> None:
    [ev] = parse(
        signed({"entry_id": "E1", "recording_id": "R-77", "recording_state": "Completed"}), "events/record/added"
    )
    assert ev.call_id == "E1" and ev.recording_url == "mango:R-77"


def test_an_event_kind_we_do_not_model_is_kept_but_ignored() -> None:
    [ev] = parse(signed({"entry_id": "E1", "dtmf": "1"}), "events/dtmf")
    assert type(ev).__name__ == "UnknownEntity"


# The normalization table: every way a number reaches us from a PBX or a card.
@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("+7 (912) 345-67-01", "+79123456701"),
        ("8 912 345 67 01", "+79123456701"),
        ("79123456701", "+79123456701"),
        ("89123456701", "+79123456701"),
        ("+7-912-345-67-01", "+79123456701"),
        ("7 (495) 123-45-67", "+74951234567"),
        ("8 (912) 345-67-01 доб. 12", "+79123456701"),  # an extension belongs to the office, not the number
        ("+7 912 345 67 01 ext. 5", "+79123456701"),
        ("+44 20 7946 0958", "+442079460958"),
        ("810 44 20 7946 0958", "+442079460958"),  # the Russian international prefix
        ("+375 29 123-45-67", "+375291234567"),
        ("+1 (212) 555-0123", "+12125550123"),
        ("101", None),  # an internal extension is nobody's phone
        ("sip:ivanov@demoshop.mangosip.ru", None),
    ],
)
def test_normalization_table(raw: str, e164: str | None) -> None:
    assert to_e164(raw, "RU") == e164


@pytest.mark.parametrize(("inbound", "talk"), [(False, 95), (True, 0)])
def test_the_built_summary_verifies_and_reads_as_the_call_it_describes(inbound: bool, talk: int) -> None:
    """call_summary/signed_form: what the demo and the benches post."""
    start = int(NOW.timestamp()) - 600
    summary = call_summary(
        "YnVpbHQ=",
        inbound=inbound,
        extension="102",
        domain="x.mangosip.ru",
        client="79123456704",
        line="74951234567",
        start=start,
        talk=talk,
    )
    (event,) = parse(signed_form(CREDS["api_key"], CREDS["api_salt"], summary).encode())

    assert event.call_id == "YnVpbHQ="
    assert event.direction == (CallDirection.IN if inbound else CallDirection.OUT)
    assert event.client_number == to_e164("79123456704")
    assert event.status == (CallStatus.MISSED if inbound else CallStatus.ANSWERED)
    assert event.talk_seconds == talk
    assert event.is_final
