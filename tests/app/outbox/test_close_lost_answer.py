"""A close whose answer is lost is read back, not written again.

Completing a task writes its result into the CRM; a PATCH repeated after a 502 that came after
the write (or by a worker that took over the row) writes it once more. The close therefore goes
out once per claim, without retries inside the request, and a close tried before first asks the
CRM whether its task is already completed. At the wire with respx (amoCRM), and in both
emulators with their lost-answer modes.
"""

from __future__ import annotations

from datetime import timedelta

import httpx
import respx

from app.db import utcnow
from app.ingest import worker
from app.outbox import delivery
from app.sync import service as sync
from tests.app.bitrix24.support import HOUR, NOW, seed
from tests.app.outbox.outbox_support import (
    REAL_BASE,
    FakeAmo,
    add_deals,
    bodies,
    evaluate,
    make_due,
    new_account,
    outbox,
    plan_task,
    rules_doc,
    set_rules,
)
from tests.conftest import B24_FORM, create_b24_account

QUIET = {"escalate_after_hours": None, "repeat_hours": None}
DEAL = 31000002


# Evaluated at the real clock: a row that fails is given up three days after it was made, so rows
# made at the outbox tests' T0 (in 2025) would die at their first failure.
NOW_ = utcnow().replace(microsecond=0)


async def resolve_one(rt, aid: int) -> None:
    await plan_task(rt, aid, str(DEAL), NOW_ + timedelta(minutes=30))
    assert (await evaluate(rt, aid, NOW_ + timedelta(hours=1))).resolved == 1
    await make_due(rt)  # the close was made at that hour: due now


async def test_at_the_wire_a_close_whose_answer_was_lost_is_read_back_once(rt):
    aid = await new_account(rt, base_url=REAL_BASE, rules=rules_doc("deal_without_task", notify=QUIET))
    await add_deals(rt, aid, [DEAL])
    await evaluate(rt, aid, NOW_)
    rt.http_transport = None  # the real network transport, intercepted by respx
    fake = FakeAmo()
    with respx.mock(base_url=REAL_BASE) as mock:
        mock.post("/api/v4/tasks").mock(side_effect=fake.create_tasks)
        mock.post("/api/v4/leads/notes").mock(side_effect=fake.add_notes)
        await delivery.deliver_pending(rt)
    [task] = fake.tasks.values()
    await resolve_one(rt, aid)

    def complete_then_lose(request: httpx.Request) -> httpx.Response:
        task["is_completed"] = True  # amoCRM applied it; the answer never arrives
        return httpx.Response(502)

    def read(request: httpx.Request) -> httpx.Response:
        assert request.url.params.get_list("filter[id][]") == [str(task["id"])]
        return httpx.Response(200, json={"_page": 1, "_embedded": {"tasks": [task]}})

    with respx.mock(base_url=REAL_BASE) as mock:
        patch = mock.patch("/api/v4/tasks").mock(side_effect=complete_then_lose)
        reads = mock.get("/api/v4/tasks").mock(side_effect=read)
        await delivery.deliver_pending(rt)
        [close] = await outbox(rt, kind="close_task")
        assert close.status == "pending" and close.attempts == 1
        assert patch.call_count == 1  # a 502 to a PATCH is not retried inside the request
        await make_due(rt)
        await delivery.deliver_pending(rt)

    [close] = await outbox(rt, kind="close_task")
    assert close.status == "sent" and close.attempts == 2
    assert patch.call_count == 1 and reads.call_count == 1
    assert bodies(patch)[0][0]["id"] == task["id"]


async def test_at_the_wire_a_close_that_never_landed_is_sent_again(rt):
    aid = await new_account(rt, base_url=REAL_BASE, rules=rules_doc("deal_without_task", notify=QUIET))
    await add_deals(rt, aid, [DEAL])
    await evaluate(rt, aid, NOW_)
    rt.http_transport = None
    fake = FakeAmo()
    with respx.mock(base_url=REAL_BASE) as mock:
        mock.post("/api/v4/tasks").mock(side_effect=fake.create_tasks)
        mock.post("/api/v4/leads/notes").mock(side_effect=fake.add_notes)
        await delivery.deliver_pending(rt)
    [task] = fake.tasks.values()
    await resolve_one(rt, aid)
    with respx.mock(base_url=REAL_BASE) as mock:
        patch = mock.patch("/api/v4/tasks").mock(
            side_effect=[httpx.Response(503), httpx.Response(200, json={"_embedded": {"tasks": []}})]
        )
        reads = mock.get("/api/v4/tasks").mock(return_value=httpx.Response(204))
        await delivery.deliver_pending(rt)
        await make_due(rt)
        await delivery.deliver_pending(rt)
    [close] = await outbox(rt, kind="close_task")
    assert close.status == "sent" and patch.call_count == 2 and reads.call_count == 1
    assert [b[0]["id"] for b in bodies(patch)] == [task["id"], task["id"]]


async def test_in_the_emulator_a_lost_answer_leaves_one_completion(rt, amo):
    aid = await new_account(rt, amo=amo, rules=rules_doc("deal_without_task", notify=QUIET))
    await add_deals(rt, aid, [DEAL], amo=amo)
    await evaluate(rt, aid, NOW_)
    await delivery.deliver_pending(rt)
    [task] = amo.tasks.values()
    await resolve_one(rt, aid)
    amo.lose_answers(60)
    await delivery.deliver_pending(rt)
    assert task["is_completed"]
    amo.healthy()
    for _ in range(2):
        await make_due(rt)
        await delivery.deliver_pending(rt)
    [close] = await outbox(rt, kind="close_task")
    assert close.status == "sent"
    patches = [w for m, p, w in amo.writes if (m, p) == ("PATCH", "/api/v4/tasks")]
    assert [w["id"] for w in patches] == [task["id"]]


async def test_in_the_bitrix24_emulator_a_lost_answer_leaves_one_completion(client, rt, b24, monkeypatch):
    seed(b24)
    b24.add_deal(4524, "Без задачи", "NEW", assigned_by=7, at=NOW - 100 * HOUR)
    acc = await create_b24_account(client)
    await set_rules(
        rt, acc["id"], rules_doc("deal_without_task", notify={**QUIET, "note": False}, announce_backlog="all")
    )
    await sync.run_pending(rt)
    await delivery.deliver_pending(rt)
    [todo] = [a for a in b24.activities.values() if "/f/" in a["DESCRIPTION"]]
    b24.add_activity(30001, 4524, "Позвонить", NOW + 5 * HOUR, responsible=7)
    await client.post(
        f"/hooks/bitrix24/{acc['key']}", content=b24.event_form("ONCRMACTIVITYADD", 30001), headers=B24_FORM
    )
    await worker.drain(rt)
    updates: list[dict] = []
    update = b24.m_crm_activity_update

    def counted(params: dict) -> dict:
        updates.append(params)
        return update(params)

    monkeypatch.setattr(b24, "m_crm_activity_update", counted)
    b24.lose_answers = 1  # the portal completes the activity; the answer never arrives
    await delivery.deliver_pending(rt)
    assert b24.activities[int(todo["ID"])]["COMPLETED"] == "Y"
    [close] = await outbox(rt, kind="close_task")
    assert close.status == "pending"
    await make_due(rt)
    await delivery.deliver_pending(rt)
    [close] = await outbox(rt, kind="close_task")
    assert close.status == "sent" and len(updates) == 1
