"""Sipuni: the URL token, and its numbered events as calls."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from integrations.base import CallDirection, CallStatus, WebhookRejected
from integrations.telephony.base import HookRequest, StoredHook
from integrations.telephony.sipuni import SipuniAdapter

NOW = datetime(2025, 11, 24, 16, 5, tzinfo=UTC)
sipuni = SipuniAdapter()


def parse(fields: dict[str, str]):
    verdict = sipuni.verify(
        HookRequest(method="GET", path="", query={**fields, "token": "t"}, headers={}, body=b""), {"token": "t"}, NOW
    )
    assert "token" not in (verdict.stored_body or "")
    return sipuni.parse(StoredHook(path="", body=verdict.stored_body or ""), region="RU", received_at=NOW)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("NOANSWER", CallStatus.MISSED),
        ("CANCEL", CallStatus.MISSED),
        ("BUSY", CallStatus.BUSY),
        ("CHANUNAVAIL", CallStatus.FAILED),
        ("ANSWER", CallStatus.ANSWERED),
    ],
)
def test_end_statuses(status: str, expected: CallStatus) -> None:
    [ev] = parse(
        {
            "event": "2",
            "call_id": "c1",
            "src_type": "2",
            "src_num": "070196201",
            "short_src_num": "201",
            "dst_type": "1",
            "dst_num": "8 (999) 123-45-67",
            "status": status,
            "call_start_timestamp": "1764000000",
            "call_answer_timestamp": "1764000010",
            "timestamp": "1764000070",
        }
    )
    assert ev.status is expected and ev.is_final and ev.direction is CallDirection.OUT
    assert ev.client_number == "+79991234567" and ev.manager_ref == "201"
    assert ev.talk_seconds == (60 if expected is CallStatus.ANSWERED else 0) and ev.duration_seconds == 70


def test_a_leg_of_a_transfer_is_not_the_end_of_the_call() -> None:
    [ev] = parse({"event": "4", "call_id": "c1", "status": "ANSWER"})
    assert type(ev).__name__ == "UnknownEntity"


def test_no_token_no_entry() -> None:
    with pytest.raises(WebhookRejected):
        sipuni.verify(
            HookRequest(method="GET", path="", query={"event": "1", "call_id": "c"}, headers={}, body=b""),
            {"token": "t"},
            NOW,
        )
