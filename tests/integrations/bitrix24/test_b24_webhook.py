"""Bitrix24 event bodies → what ingest checks on the request path, and the domain events."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from integrations.base import (
    CompanyDeleted,
    ContactDeleted,
    CredentialsIssued,
    RecordNamed,
    TaskDeleted,
    WebhookMalformed,
)
from integrations.bitrix24 import webhook
from integrations.bitrix24.emulator import Bitrix24Emulator
from tests.conftest import b24_form

NOW = datetime(2025, 11, 24, 16, 0, tzinfo=UTC)


def parse(body: str) -> list:
    return webhook.parse(body.encode(), region="RU", received_at=NOW)


def test_check_reads_the_portal_and_its_token_without_building_the_tree():
    parsed = webhook.check(b24_form("ONCRMDEALUPDATE").encode())
    assert parsed.external_account_id == "a1b2c3d4e5f60718293a4b5c6d7e8f90"
    assert parsed.secret == "f0e1d2c3b4a5968778695a4b3c2d1e0f" and not parsed.issues_secret


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ONCRMDEALADD", [RecordNamed("deal", "4522")]),
        ("ONCRMDEALUPDATE", [RecordNamed("deal", "4521")]),
        ("ONTASKUPDATE", [RecordNamed("task", "881")]),
        ("ONCRMACTIVITYADD", [RecordNamed("activity", "10233")]),
        ("ONCRMCOMPANYUPDATE", [RecordNamed("company", "2917")]),
        ("ONCRMCOMPANYDELETE", [CompanyDeleted("2917")]),
    ],
)
def test_fixtures_name_their_records(name, expected):
    assert parse(b24_form(name)) == expected


def test_the_call_end_fixture_names_the_calls_activity():
    # The call's own facts are covered in test_b24_calls; here: the record it names for the worker.
    assert parse(b24_form("ONVOXIMPLANTCALLEND"))[-1] == RecordNamed("call", "10240:externalCall.7c1e0f2a.1764000400")


def test_deletions_need_no_read():
    b24 = Bitrix24Emulator()
    body = b24.event_form("ONTASKDELETE", 881).replace("FIELDS_AFTER", "FIELDS_BEFORE")
    assert parse(body) == [TaskDeleted("task:881")]
    assert parse(b24.event_form("ONCRMACTIVITYDELETE", 5)) == [TaskDeleted("act:5")]
    assert parse(b24.event_form("ONCRMCONTACTDELETE", 9)) == [ContactDeleted("9")]
    assert parse(b24.event_form("ONCRMCOMPANYDELETE", 31)) == [CompanyDeleted("31")]
    assert parse(b24.event_form("ONCRMCOMPANYADD", 31)) == [RecordNamed("company", "31")]


def test_company_events_are_subscribed_online_and_offline():
    # App mode binds SUBSCRIBED both ways (Bitrix24 keeps offline copies of CRM events).
    assert {"ONCRMCOMPANYADD", "ONCRMCOMPANYUPDATE", "ONCRMCOMPANYDELETE"} <= set(webhook.SUBSCRIBED)


def test_an_offline_record_parses_like_the_online_event():
    body = json.dumps(
        {
            "event": "ONCRMDEALUPDATE",
            "data": {"FIELDS": {"ID": 4521}},
            "offline": {"id": "7", "message_id": "m", "ts": "2025-11-24T19:00:00+03:00"},
        }
    )
    assert parse(body) == [RecordNamed("deal", "4521")]


def test_the_install_event_hands_over_tokens_member_id_and_application_token():
    b24 = Bitrix24Emulator()
    body = b24.install_form("app.1")
    assert webhook.check(body.encode()).issues_secret
    [issued] = parse(body)
    assert isinstance(issued, CredentialsIssued)
    assert issued.external_id == b24.member_id and issued.webhook_secret == b24.application_token
    assert issued.credentials["access_token"] in b24.access_tokens
    assert issued.credentials["refresh_token"] in b24.refresh_tokens
    assert datetime.fromisoformat(issued.credentials["expires_at"]) > NOW


@pytest.mark.parametrize(
    "body", [b'{"event": "ONCRMDEALADD"}', b"event=ONCRMDEALADD", b"a=%ZZ", b"auth[x]=1", b"event=&auth[member_id]=1"]
)
def test_garbage_is_malformed(body):
    with pytest.raises(WebhookMalformed):
        webhook.check(body)
