"""Optional per PBX: finished, matched calls are written into the amoCRM card through the outbox."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from app.ingest import worker
from app.outbox import delivery
from app.outbox.models import OutboxAction
from tests.conftest import create_account

FIXTURES = Path(__file__).parents[2] / "fixtures" / "telephony"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def crm(amo, *, contact: bool) -> None:
    amo.add_user(5512345, "Иван Волков", "ivan@example.test")
    amo.add_pipeline(7001, "Продажи", [(70011, "Первичный контакт", 10)])
    if contact:
        amo.add_contact(9001, "Пётр Петров", phones=["+7 (999) 123-45-67"])
        amo.add_lead(8001, "Поставка", 7001, 70011, contact_ids=[9001])
    else:
        amo.add_lead(8001, "Поставка", 7001, 70011)
        amo.add_company(9500, "ООО Ромашка", phones=["+7 999 123-45-67"], lead_ids=[8001])


async def run(client, rt, *, log_calls: bool) -> list[OutboxAction]:
    acc = await create_account(client)
    await client.put(
        f"/api/accounts/{acc['id']}/telephony/mango",
        json={
            "api_key": "fx-mango-api-key",
            "api_salt": "fx-mango-api-salt",
            "extensions": {"101": "5512345"},
            "log_calls": log_calls,
        },
    )
    body = (FIXTURES / "mango_summary_outbound_answered.form").read_bytes().strip()
    await client.post(f"/hooks/telephony/mango/{acc['key']}/events/summary", content=body, headers=FORM)
    await worker.drain(rt)
    await delivery.deliver_pending(rt)
    async with rt.sessions() as s:
        return list(await s.scalars(select(OutboxAction).where(OutboxAction.kind == "log_call")))


async def test_a_call_with_a_known_contact_is_logged_by_number(client, rt, amo):
    crm(amo, contact=True)
    [row] = await run(client, rt, log_calls=True)
    assert row.status == "sent" and row.deal_id == "8001" and row.user_id == "5512345"
    [note] = [n for n in amo.notes.values() if n["note_type"] == "call_out"]
    assert note["entity_id"] == 8001 and note["params"]["uniq"] == "crmwatch:mango:MzM0NTY3ODk6MTAx"
    assert note["params"]["duration"] == 95 and note["params"]["call_status"] == 4
    assert note["params"]["phone"] == "+79991234567" and str(note["id"]) == row.external_id
    # Delivered once: another pass sends nothing more.
    await delivery.deliver_pending(rt)
    assert len([n for n in amo.notes.values() if n["note_type"] == "call_out"]) == 1


async def test_a_call_matched_only_through_a_company_becomes_a_note_on_the_deal(client, rt, amo):
    crm(amo, contact=False)
    [row] = await run(client, rt, log_calls=True)
    assert row.status == "sent"
    [note] = [n for n in amo.notes.values() if n["note_type"] == "common"]
    assert note["entity_id"] == 8001
    text = note["params"]["text"]
    assert text.startswith("Исходящий звонок +7 999 123-45-67") and "1 мин 35 с" in text
    assert f"#cw{row.id}" in note["params"]["text"]


async def test_nothing_is_logged_unless_the_account_asks(client, rt, amo):
    crm(amo, contact=True)
    assert await run(client, rt, log_calls=False) == []
    assert amo.notes == {}
