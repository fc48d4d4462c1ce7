"""The inbox worker applies raw deliveries to the mirror: in order, once, and never stale."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from app.ingest import worker
from app.ingest.models import InboxEvent
from app.mirror.models import Contact, ContactPhone, Deal, Note, StageHistory, Task, User
from tests.conftest import FORM, create_account, form_body


def at(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


async def post(client, acc, name, **overrides):
    resp = await client.post(f"/hooks/amocrm/{acc['key']}", content=form_body(name, **overrides), headers=FORM)
    assert resp.status_code == 200, resp.text


async def get(rt, model, *key):
    async with rt.sessions() as s:
        return await s.get(model, key)


async def test_every_fixture_lands_in_the_mirror(client, rt):
    acc = await create_account(client)
    aid = acc["id"]
    # Same-second changes apply in arrival order, so the stage move comes last here.
    for name in (
        "lead_add",
        "two_leads_one_post",
        "task_add",
        "lead_note_common",
        "lead_note_call_out",
        "contact_update",
        "lead_status",
    ):
        await post(client, acc, name)
    assert await worker.drain(rt) == 7

    deal = await get(rt, Deal, aid, "31000001")
    assert deal.stage_id == "41000003" and deal.pipeline_id == "4100000"
    assert deal.stage_entered_at == at(1764000000) and deal.stage_entered_source == "event"
    assert deal.is_closed is False and deal.is_deleted is False
    assert (await get(rt, Deal, aid, "31000002")).responsible_user_id == "8100002"

    task = await get(rt, Task, aid, "52000001")
    assert task.deal_id == "31000001" and task.due_at == at(1764086400) and task.is_completed is False
    note = await get(rt, Note, aid, "61000002")
    assert note.kind == "call_out" and note.params["duration"] == "95" and note.deal_id == "31000001"
    assert (await get(rt, Note, aid, "61000001")).text == "Обсудили сроки поставки, ждёт КП"
    contact = await get(rt, Contact, aid, "33000001")
    assert contact.name == "Анна Кузнецова"
    assert await get(rt, ContactPhone, aid, "33000001", "+79991234567") is not None
    assert await get(rt, User, aid, "8100001") is not None  # referenced users get a placeholder

    async with rt.sessions() as s:
        history = (await s.scalars(select(StageHistory))).all()
        statuses = {r.status for r in await s.scalars(select(InboxEvent))}
    assert [(h.deal_id, h.from_stage_id, h.stage_id) for h in history] == [("31000001", "41000002", "41000003")]
    assert statuses == {"done"}


async def test_task_lifecycle_complete_reschedule_delete(client, rt):
    acc = await create_account(client)
    await post(client, acc, "task_add")
    await post(client, acc, "task_update_deadline", **{"task[update][0][last_modified]": "1764000100"})
    await worker.drain(rt)
    task = await get(rt, Task, acc["id"], "52000001")
    assert task.due_at == at(1764259200) and task.previous_due_at == at(1764086400)
    assert task.due_moved_at == at(1764000100)

    await post(client, acc, "task_complete", **{"task[update][0][last_modified]": "1764000200"})
    await worker.drain(rt)
    task = await get(rt, Task, acc["id"], "52000001")
    assert task.is_completed and task.result_text == "Клиент согласен на встречу"
    assert task.completed_at == at(1764000200)

    await post(client, acc, "task_delete")
    await worker.drain(rt)
    assert (await get(rt, Task, acc["id"], "52000001")).is_deleted


async def test_a_stale_update_never_overwrites_a_newer_state(client, rt):
    acc = await create_account(client)
    # The newer change (price 48000 at t+100) arrives first, the older one (15000 at t) second.
    await post(client, acc, "lead_update", **{"leads[update][0][last_modified]": "1764000100"})
    await post(client, acc, "lead_responsible", **{"leads[responsible][0][price]": "15000"})
    await worker.drain(rt)
    deal = await get(rt, Deal, acc["id"], "31000001")
    assert deal.price == 48000 and deal.responsible_user_id == "8100001"
    assert deal.source_updated_at == at(1764000100)


async def test_a_deleted_deal_is_not_resurrected_by_a_late_update_but_restore_works(client, rt):
    acc = await create_account(client)
    await post(client, acc, "lead_add")
    await post(client, acc, "lead_delete")
    await post(client, acc, "lead_update")  # stamped before the deletion arrived
    await worker.drain(rt)
    assert (await get(rt, Deal, acc["id"], "31000001")).is_deleted

    restore = form_body("lead_update").replace("%5Bupdate%5D", "%5Brestore%5D")
    await client.post(f"/hooks/amocrm/{acc['key']}", content=restore, headers=FORM)
    await worker.drain(rt)
    deal = await get(rt, Deal, acc["id"], "31000001")
    assert not deal.is_deleted and deal.price == 48000


async def test_won_and_lost_close_the_deal(client, rt):
    acc = await create_account(client)
    await post(client, acc, "lead_add")
    await post(client, acc, "lead_status", **{"leads[status][0][status_id]": "142"})
    await worker.drain(rt)
    deal = await get(rt, Deal, acc["id"], "31000001")
    assert deal.is_closed and deal.closed_at == at(1764000000)
    await post(
        client,
        acc,
        "lead_status",
        **{"leads[status][0][status_id]": "41000002", "leads[status][0][last_modified]": "1764000500"},
    )
    await worker.drain(rt)
    deal = await get(rt, Deal, acc["id"], "31000001")
    assert not deal.is_closed and deal.closed_at is None and deal.stage_entered_at == at(1764000500)


async def test_a_thin_status_webhook_fetches_the_full_lead(client, rt, amo):
    from integrations.amocrm.demo_data import DEMO_PIPELINE_ID, seed_demo

    seed_demo(amo, now=1764000000)
    acc = await create_account(client)
    thin = (
        "leads%5Bstatus%5D%5B0%5D%5Bid%5D=31000003&leads%5Bstatus%5D%5B0%5D%5Bstatus_id%5D=41000003"
        f"&leads%5Bstatus%5D%5B0%5D%5Bpipeline_id%5D={DEMO_PIPELINE_ID}"
        "&leads%5Bstatus%5D%5B0%5D%5Bold_status_id%5D=41000002"
        f"&leads%5Bstatus%5D%5B0%5D%5Bold_pipeline_id%5D={DEMO_PIPELINE_ID}"
        "&account%5Bid%5D=29876543&account%5Bsubdomain%5D=demoshop"
    )
    assert (await client.post(f"/hooks/amocrm/{acc['key']}", content=thin, headers=FORM)).status_code == 200
    await worker.drain(rt)
    deal = await get(rt, Deal, acc["id"], "31000003")
    assert deal.name == "Видеонаблюдение на склад ИП Гусев"  # read back from the API
    assert deal.responsible_user_id == "8100004"
    assert any("filter%5Bid%5D" in q or "filter[id]" in q for _, path, q in amo.request_log if path == "/api/v4/leads")


async def test_unknown_entity_kinds_are_kept_and_ignored(client, rt):
    acc = await create_account(client)
    body = "companies%5Badd%5D%5B0%5D%5Bid%5D=5&account%5Bid%5D=29876543"
    assert (await client.post(f"/hooks/amocrm/{acc['key']}", content=body, headers=FORM)).status_code == 200
    await worker.drain(rt)
    async with rt.sessions() as s:
        row = (await s.scalars(select(InboxEvent))).one()
    assert row.status == "done" and row.ignored == 1 and row.payload == body


async def test_a_failing_row_is_retried_then_parked_without_blocking_others(client, rt, monkeypatch):
    acc = await create_account(client)
    await post(client, acc, "lead_add")
    await post(client, acc, "task_add")
    from app.mirror import service as mirror

    real = mirror.MirrorWriter._on_TaskUpserted

    async def boom(self, ev, r):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(mirror.MirrorWriter, "_on_TaskUpserted", boom)
    rt.settings.inbox_max_attempts = 2
    await worker.process_batch(rt)
    async with rt.sessions() as s:
        rows = {r.payload.split("%5B", 1)[0]: r for r in await s.scalars(select(InboxEvent))}
    assert rows["leads"].status == "done"
    assert rows["task"].status == "pending" and rows["task"].attempts == 1
    assert "simulated bug" in rows["task"].last_error
    assert await get(rt, Task, acc["id"], "52000001") is None  # the savepoint rolled the row back

    async with rt.sessions() as s, s.begin():  # make the retry due now
        (await s.get(InboxEvent, rows["task"].id)).next_attempt_at = rows["task"].received_at
    await worker.process_batch(rt)
    async with rt.sessions() as s:
        assert (await s.get(InboxEvent, rows["task"].id)).status == "failed"

    # After the fix, a parked row can be replayed and nothing was lost.
    monkeypatch.setattr(mirror.MirrorWriter, "_on_TaskUpserted", real)
    async with rt.sessions() as s, s.begin():
        (await s.get(InboxEvent, rows["task"].id)).status = "pending"
    await worker.drain(rt)
    assert (await get(rt, Task, acc["id"], "52000001")).text == "Перезвонить, уточнить бюджет"


@pytest.mark.parametrize("order", [("lead_add", "task_add"), ("task_add", "lead_add")])
async def test_a_task_may_arrive_before_its_deal(client, rt, order):
    acc = await create_account(client)
    for name in order:
        await post(client, acc, name)
    await worker.drain(rt)
    assert (await get(rt, Task, acc["id"], "52000001")).deal_id == "31000001"
    assert (await get(rt, Deal, acc["id"], "31000001")).name == "Заявка с сайта"
