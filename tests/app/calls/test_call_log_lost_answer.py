"""A call logged by number (amoCRM POST /api/v4/calls) whose answer is lost is written once.

amoCRM may apply the write and the answer never arrive (a 502 from its proxy, a timeout, a worker
killed mid-request). The row then comes back with attempts > 1, and its call must be looked for by
its `uniq` (the call notes amoCRM made: call_in / call_out on the lead, contact or company) before
anything is sent again. Checked at the wire with respx, and against the emulator, where amoCRM's
filing rule (one open lead: the lead's card, else the contact's) decides where the readback looks.
"""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
import respx
from sqlalchemy import select

from app.calls import calllog
from app.calls.models import Call
from app.db import utcnow
from app.outbox import delivery
from app.outbox.models import OutboxAction
from tests.app.outbox.outbox_support import MANAGER, PIPELINE, REAL_BASE, STAGE, make_due, new_account, outbox

CONTACT, DEAL, OTHER_DEAL = 34100200, 34100100, 34100101
NUMBER = "+79991234567"


async def queue_call(rt, account_id: int, call_id: str = "lost-1") -> OutboxAction:
    """A finished outgoing call matched to a contact and its deal, queued for logging by number."""
    async with rt.sessions() as s, s.begin():
        call = Call(
            account_id=account_id,
            provider="mango",
            provider_call_id=call_id,
            direction="out",
            client_number=NUMBER,
            manager_id=MANAGER,
            started_at=utcnow() - timedelta(minutes=3),
            talk_seconds=42,
            status="answered",
            is_final=True,
            contact_id=str(CONTACT),
            deal_id=str(DEAL),
            match_source="mirror",
        )
        s.add(call)
        await s.flush()
        row = OutboxAction(
            account_id=account_id,
            kind=calllog.KIND,
            purpose="log",
            dedup_key=f"call:{call.id}",
            deal_id=call.deal_id,
            user_id=call.manager_id,
            ref_id=call.id,
        )
        s.add(row)
    return row


def uniq(call_id: str = "lost-1") -> str:
    return f"{calllog.UNIQ_PREFIX}mango:{call_id}"


class FakeCalls:
    """amoCRM's calls at the wire: POST /api/v4/calls files a call note on the contact's card, and
    the notes of leads, contacts and companies are listed by type and change time. `lose` answers
    the next writes 502 after applying them."""

    def __init__(self) -> None:
        self.notes: list[dict] = []
        self.lose = 0
        self.reads: list[httpx.Request] = []

    def post(self, request: httpx.Request) -> httpx.Response:
        rows = []
        for item in json.loads(request.content):
            note = {
                "id": 61000001 + len(self.notes),
                "entity_id": CONTACT,
                "note_type": "call_out" if item["direction"] == "outbound" else "call_in",
                "updated_at": int(utcnow().timestamp()),
                "params": {k: item[k] for k in ("uniq", "duration", "source", "phone")},
            }
            self.notes.append(note)
            rows.append(
                {"id": note["id"], "entity_id": CONTACT, "entity_type": "contacts", "request_id": item["request_id"]}
            )
        if self.lose:
            self.lose -= 1
            return httpx.Response(502, json={"title": "Bad Gateway"})
        return httpx.Response(200, json={"_embedded": {"calls": rows}})

    def read(self, entity: str):
        def answer(request: httpx.Request) -> httpx.Response:
            self.reads.append(request)
            types = set(request.url.params.get_list("filter[note_type][]"))
            since = int(request.url.params["filter[updated_at][from]"])
            rows = [
                n for n in self.notes if entity == "contacts" and n["note_type"] in types and n["updated_at"] >= since
            ]
            if not rows or int(request.url.params.get("page", "1")) > 1:
                return httpx.Response(204)
            return httpx.Response(200, json={"_page": 1, "_embedded": {"notes": rows}})

        return answer


def mocked(mock: respx.MockRouter, fake: FakeCalls) -> respx.Route:
    for entity in ("leads", "contacts", "companies"):
        mock.get(f"/api/v4/{entity}/notes").mock(side_effect=fake.read(entity))
    return mock.post("/api/v4/calls").mock(side_effect=fake.post)


async def test_at_the_wire_a_lost_answer_is_read_back_by_uniq_and_not_sent_again(rt):
    aid = await new_account(rt, base_url=REAL_BASE)
    await queue_call(rt, aid)
    rt.http_transport = None  # the real network transport, intercepted by respx
    fake = FakeCalls()
    fake.lose = 1
    with respx.mock(base_url=REAL_BASE, assert_all_called=False) as mock:
        calls = mocked(mock, fake)
        await delivery.deliver_pending(rt)
        [row] = await outbox(rt)
        assert row.status == "pending" and row.attempts == 1 and "502" in (row.last_error or "")
        assert fake.reads == []  # a first attempt sends at once: nothing can be there yet

        await make_due(rt)
        await delivery.deliver_pending(rt)

    [row] = await outbox(rt)
    assert row.status == "sent" and row.attempts == 2
    assert calls.call_count == 1 and len(fake.notes) == 1
    assert row.external_id == str(fake.notes[0]["id"])
    # The readback asked for call notes of every card amoCRM may file a call on, changed since the call began.
    assert sorted(r.url.path for r in fake.reads) == [
        "/api/v4/companies/notes",
        "/api/v4/contacts/notes",
        "/api/v4/leads/notes",
    ]
    for request in fake.reads:
        assert request.url.params.get_list("filter[note_type][]") == ["call_in", "call_out"]
        assert int(request.url.params["filter[updated_at][from]"]) <= int((utcnow() - timedelta(minutes=3)).timestamp())


async def test_at_the_wire_a_retried_call_amocrm_never_got_is_sent_once(rt):
    aid = await new_account(rt, base_url=REAL_BASE)
    await queue_call(rt, aid)
    rt.http_transport = None
    fake = FakeCalls()
    with respx.mock(base_url=REAL_BASE, assert_all_called=False) as mock:
        calls = mocked(mock, fake)
        # The first write never reached amoCRM (a 503 before anything was applied).
        calls.side_effect = [httpx.Response(503)]
        await delivery.deliver_pending(rt)
        assert [r.status for r in await outbox(rt)] == ["pending"]
        calls.side_effect = fake.post
        await make_due(rt)
        await delivery.deliver_pending(rt)

    [row] = await outbox(rt)
    assert row.status == "sent" and len(fake.notes) == 1 and row.external_id == str(fake.notes[0]["id"])
    assert len(fake.reads) == 3  # it looked before sending, found nothing, and sent


async def retry_until_sent(rt) -> list[OutboxAction]:
    for _ in range(3):
        await make_due(rt)
        await delivery.deliver_pending(rt)
    return await outbox(rt)


async def test_in_the_emulator_a_lost_answer_leaves_one_call_on_the_deal(rt, amo):
    aid = await new_account(rt, amo=amo)
    amo.add_contact(CONTACT, "Пётр Петров", phones=["+7 (999) 123-45-67"])
    amo.add_lead(DEAL, "Поставка", int(PIPELINE), int(STAGE), contact_ids=[CONTACT])
    await queue_call(rt, aid)
    amo.lose_answers(60)
    await delivery.deliver_pending(rt)
    [row] = await outbox(rt)
    assert row.status == "pending"
    assert [n["entity_id"] for n in amo.notes.values() if n["params"].get("uniq") == uniq()] == [DEAL]

    amo.healthy()
    [row] = await retry_until_sent(rt)
    assert row.status == "sent"
    [note] = [n for n in amo.notes.values() if n["params"].get("uniq") == uniq()]
    assert str(note["id"]) == row.external_id and note["entity_id"] == DEAL
    assert len([w for m, p, w in amo.writes if p == "/api/v4/calls"]) == 1


async def test_in_the_emulator_a_call_filed_on_the_contact_card_is_found_there(rt, amo):
    # Two open leads: amoCRM files the call on the contact, not on either lead.
    aid = await new_account(rt, amo=amo)
    amo.add_contact(CONTACT, "Пётр Петров", phones=["8 999 123 45 67"])
    amo.add_lead(DEAL, "Поставка", int(PIPELINE), int(STAGE), contact_ids=[CONTACT])
    amo.add_lead(OTHER_DEAL, "Вторая", int(PIPELINE), int(STAGE), contact_ids=[CONTACT])
    await queue_call(rt, aid, "lost-2")
    amo.lose_answers(60)
    await delivery.deliver_pending(rt)
    amo.healthy()
    [row] = await retry_until_sent(rt)

    [note] = [n for n in amo.notes.values() if n["params"].get("uniq") == uniq("lost-2")]
    assert note["entity_type"] == "contacts" and note["entity_id"] == CONTACT
    assert row.status == "sent" and row.external_id == str(note["id"])
    assert len([1 for m, p, w in amo.writes if p == "/api/v4/calls"]) == 1
    # Neither lead got a note instead.
    assert not [n for n in amo.notes.values() if n["entity_type"] == "leads"]
    async with rt.sessions() as s:
        assert (await s.scalar(select(Call.deal_id))) == str(DEAL)
