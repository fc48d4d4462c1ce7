"""amoCRM call notes (note_type 10/11) feed the same call model: through a backfill, matched to the
note's deal, and not counted twice when a PBX is connected to crmwatch directly."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from sqlalchemy import select

from app.calls.models import Call
from app.sync import service as sync
from integrations.amocrm.mapping import call_from_note
from integrations.base import CallDirection, CallStatus, NoteAdded, NoteKind
from tests.conftest import create_account

AT = int(time.time()) - 7200  # within the backfill's history window


def seed(amo) -> None:
    amo.add_user(5512345, "Иван Волков", "ivan@example.test")
    amo.add_pipeline(7001, "Продажи", [(70011, "Первичный контакт", 10)])
    amo.add_contact(9001, "Пётр Петров", phones=["+7 (999) 123-45-67"])
    amo.add_lead(8001, "Поставка", 7001, 70011, contact_ids=[9001], created_at=AT - 86400)
    amo.add_note(
        6001,
        8001,
        "call_out",
        params={
            "uniq": "pbx-77",
            "duration": 95,
            "source": "Mango",
            "link": "https://records.example.test/77.mp3",
            "phone": "+7 999 123-45-67",
            "call_status": 4,
        },
        created_by=5512345,
        created_at=AT,
    )
    amo.add_note(
        6002,
        8001,
        "call_in",
        params={"uniq": "pbx-78", "duration": 0, "phone": "89991234567", "call_status": 6},
        created_at=AT + 600,
    )
    amo.add_note(
        6003,
        8001,
        "call_out",
        params={"uniq": "crmwatch:mango:E1", "duration": 95, "phone": "+79991234567"},
        created_at=AT + 900,
    )


async def calls(rt) -> list[Call]:
    async with rt.sessions() as s:
        return list(await s.scalars(select(Call).order_by(Call.provider_call_id)))


async def test_call_notes_become_calls_on_their_deal(client, rt, amo):
    seed(amo)
    acc = await create_account(client)
    await sync.run_sync(rt, acc["id"])
    talk, missed = await calls(rt)  # crmwatch's own logged call is not a new one
    assert (talk.provider, talk.provider_call_id, talk.direction, talk.status) == (
        "amocrm",
        "pbx-77",
        "out",
        "answered",
    )
    assert talk.talk_seconds == 95 and talk.manager_id == "5512345" and talk.deal_id == "8001"
    assert talk.ended_at == datetime.fromtimestamp(AT, UTC) and talk.client_number == "+79991234567"
    assert talk.recording_url == "https://records.example.test/77.mp3" and talk.match_source == "source"
    assert (missed.direction, missed.status, missed.talk_seconds) == ("in", "missed", 0)


async def test_call_notes_are_ignored_when_a_pbx_reports_the_calls_itself(client, rt, amo):
    seed(amo)
    acc = await create_account(client)
    await client.put(
        f"/api/accounts/{acc['id']}/telephony/mango", json={"api_key": "k", "api_salt": "s", "extensions": {}}
    )
    await sync.run_sync(rt, acc["id"])
    assert await calls(rt) == []


def test_a_note_without_status_is_answered_when_it_lasted() -> None:
    note = NoteAdded(
        id="1",
        entity_type="contact",
        entity_id="9",
        kind=NoteKind.CALL_IN,
        created_at=datetime(2025, 11, 24, 16, tzinfo=UTC),
        params={"duration": "41", "phone": "79991234567"},
    )
    call = call_from_note(note, "RU")
    assert call.status is CallStatus.ANSWERED and call.direction is CallDirection.IN and call.deal_id is None
    assert call.call_id == "note:1" and call.talk_seconds == 41
    assert (
        call_from_note(
            NoteAdded(id="2", entity_type="deal", entity_id="9", kind=NoteKind.COMMON, created_at=note.created_at), "RU"
        )
        is None
    )
