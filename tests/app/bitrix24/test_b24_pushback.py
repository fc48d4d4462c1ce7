"""Push-back to a Bitrix24 portal through the existing outbox: a to-do activity (or a task)
for the manager, a timeline comment, completion on resolve, all through `batch`, idempotent."""

from __future__ import annotations

from app.ingest import worker
from app.outbox import delivery
from app.sync import service as sync
from tests.app.bitrix24.support import HOUR, NOW, seed
from tests.app.outbox.outbox_support import outbox, rules_doc, set_rules
from tests.conftest import B24_FORM, create_b24_account

QUIET = {"escalate_after_hours": None, "repeat_hours": None}


async def connected(client, rt, b24, notify: dict | None = None) -> dict:
    seed(b24)
    b24.add_deal(4524, "Без задачи", "NEW", assigned_by=7, at=NOW - 100 * HOUR)
    acc = await create_b24_account(client)
    await set_rules(
        rt, acc["id"], rules_doc("deal_without_task", notify={**QUIET, **(notify or {})}, announce_backlog="all")
    )
    await sync.run_pending(rt)  # the backfill ends with a sweep
    return acc


def ours(b24, deal_id: int) -> list[dict]:
    return [a for a in b24.activities.values() if a["OWNER_ID"] == str(deal_id) and "/f/" in a["DESCRIPTION"]]


async def test_activity_and_comment_go_out_in_batches_and_close_on_resolve(client, rt, b24):
    acc = await connected(client, rt, b24)
    assert {r.kind for r in await outbox(rt)} == {"create_task", "add_note"}
    b24.request_log.clear()
    await delivery.deliver_pending(rt)
    assert set(b24.request_log) == {"1/abc123secret/batch.json"}
    [todo] = ours(b24, 4524)
    assert todo["RESPONSIBLE_ID"] == "7" and todo["COMPLETED"] == "N" and todo["SUBJECT"]
    [comment] = [c for c in b24.comments.values() if c["ENTITY_ID"] == "4524"]
    assert "/f/" in comment["COMMENT"] and "задач" in comment["COMMENT"]
    sent = {r.kind: r for r in await outbox(rt)}
    assert sent["create_task"].status == "sent" and sent["create_task"].external_id == f"act:{todo['ID']}"
    assert sent["add_note"].external_id == comment["ID"]

    # The manager plans a call: the finding resolves and crmwatch completes its own activity.
    b24.add_activity(30001, 4524, "Позвонить", NOW + 5 * HOUR, responsible=7)
    await client.post(
        f"/hooks/bitrix24/{acc['key']}", content=b24.event_form("ONCRMACTIVITYADD", 30001), headers=B24_FORM
    )
    await worker.drain(rt)
    await delivery.deliver_pending(rt)
    assert b24.activities[int(todo["ID"])]["COMPLETED"] == "Y"
    assert b24.activities[30001]["COMPLETED"] == "N"


async def test_task_type_task_creates_a_task_bound_to_the_deal(client, rt, b24):
    await connected(client, rt, b24, {"task_type_id": "task"})
    await delivery.deliver_pending(rt)
    [task] = [t for t in b24.tasks.values() if "/f/" in t["description"]]
    assert task["ufCrmTask"] == ["D_4524"] and task["responsibleId"] == "7"
    [row] = await outbox(rt, kind="create_task")
    assert row.external_id == f"task:{task['id']}"


async def test_a_lost_answer_is_read_back_not_sent_twice(client, rt, b24):
    await connected(client, rt, b24, {"note": False})
    b24.lose_answers = 1  # the portal creates the activity, its answer never arrives
    await delivery.deliver_pending(rt)
    [row] = await outbox(rt, kind="create_task")
    assert row.status == "pending" and len(ours(b24, 4524)) == 1
    from tests.app.outbox.outbox_support import make_due

    await make_due(rt)
    await delivery.deliver_pending(rt)
    [row] = await outbox(rt, kind="create_task")
    [todo] = ours(b24, 4524)  # still one
    assert row.status == "sent" and row.external_id == f"act:{todo['ID']}"


async def test_a_query_limit_during_delivery_is_retried_later(client, rt, b24):
    await connected(client, rt, b24)
    b24.fail_next(100, 503, "QUERY_LIMIT_EXCEEDED")
    await delivery.deliver_pending(rt)
    rows = await outbox(rt)
    assert {r.status for r in rows} == {"pending"} and "QUERY_LIMIT_EXCEEDED" in rows[0].last_error
    assert ours(b24, 4524) == []
