"""Zadarma: the per-event Signature, the zd_echo URL check, and its events as calls."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import pytest

from integrations.base import CallDirection, CallStatus, WebhookMalformed, WebhookRejected
from integrations.telephony.base import HookRequest, StoredHook
from integrations.telephony.zadarma import ZadarmaAdapter, signature

FIXTURES = Path(__file__).parents[2] / "fixtures" / "telephony"
CREDS = {"api_secret": "fx-zadarma-secret"}
RECEIVED = datetime(2025, 11, 24, 16, 1, 10, tzinfo=UTC)
zadarma = ZadarmaAdapter()


def fixture(name: str) -> tuple[dict[str, str], bytes]:
    head, _, body = (FIXTURES / f"{name}.http").read_text().partition("\n\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in head.splitlines())}
    return headers, body.strip().encode()


def request(headers: dict[str, str], body: bytes, method: str = "POST", query: dict | None = None) -> HookRequest:
    return HookRequest(method=method, path="", query=query or {}, headers=headers, body=body)


def parse(name: str):
    headers, body = fixture(name)
    verdict = zadarma.verify(request(headers, body), CREDS, RECEIVED)
    return zadarma.parse(StoredHook(path="", body=body.decode(), meta=verdict.meta), region="RU", received_at=RECEIVED)


@pytest.mark.parametrize("name", ["zadarma_notify_end", "zadarma_notify_out_end"])
def test_fixture_signatures_verify_and_a_tampered_body_does_not(name: str) -> None:
    headers, body = fixture(name)
    assert zadarma.verify(request(headers, body), CREDS, RECEIVED).store
    with pytest.raises(WebhookRejected):
        zadarma.verify(request(headers, body.replace(b"2025-11-24", b"2025-11-25")), CREDS, RECEIVED)
    with pytest.raises(WebhookRejected):
        zadarma.verify(request(headers, body), {"api_secret": "another"}, RECEIVED)
    with pytest.raises(WebhookRejected):
        zadarma.verify(request({}, body), CREDS, RECEIVED)


def test_the_signature_covers_the_fields_of_each_event() -> None:
    start = {
        "event": "NOTIFY_START",
        "call_start": "2025-11-24 19:00:00",
        "pbx_call_id": "in_1",
        "caller_id": "79991234567",
        "called_did": "74951234567",
    }
    answer = {**start, "event": "NOTIFY_ANSWER", "destination": "100"}
    record = {"event": "NOTIFY_RECORD", "pbx_call_id": "in_1", "call_id_with_rec": "1764000000.1234"}
    for fields in (start, answer, record):
        body = urlencode(fields).encode()
        assert zadarma.verify(
            request({"signature": signature(fields, "fx-zadarma-secret")}, body), CREDS, RECEIVED
        ).store
    # ANSWER is signed over destination, not called_did.
    wrong = signature({**answer, "event": "NOTIFY_START"}, "fx-zadarma-secret")
    with pytest.raises(WebhookRejected):
        zadarma.verify(request({"signature": wrong}, urlencode(answer).encode()), CREDS, RECEIVED)


def test_the_url_check_echoes_and_stores_nothing() -> None:
    verdict = zadarma.verify(request({}, b"", "GET", {"zd_echo": "abc123"}), CREDS, RECEIVED)
    assert not verdict.store and verdict.response == "abc123" and verdict.media_type == "text/plain"
    with pytest.raises(WebhookMalformed):
        zadarma.verify(request({}, b"", "GET"), CREDS, RECEIVED)


def test_an_unknown_event_is_malformed() -> None:
    with pytest.raises(WebhookMalformed):
        zadarma.verify(request({"signature": "x"}, b"event=NOTIFY_NOTHING"), CREDS, RECEIVED)


def test_notify_end_is_an_answered_incoming_call_in_moscow_time() -> None:
    [ev] = parse("zadarma_notify_end")
    assert ev.call_id == "in_4f1d2c3b4a" and ev.direction is CallDirection.IN and ev.is_final
    assert ev.client_number == "+79991234567" and ev.line_number == "+74951234567" and ev.manager_ref == "100"
    assert ev.started_at == datetime(2025, 11, 24, 16, 0, tzinfo=UTC)  # 19:00 in Moscow
    assert ev.status is CallStatus.ANSWERED and ev.talk_seconds == 62 and ev.ended_at == RECEIVED


def test_notify_out_end_no_answer_is_a_missed_outgoing_call() -> None:
    [ev] = parse("zadarma_notify_out_end")
    assert ev.direction is CallDirection.OUT and ev.client_number == "+79161112233"
    assert ev.status is CallStatus.MISSED and ev.talk_seconds == 0 and ev.manager_ref == "100"
