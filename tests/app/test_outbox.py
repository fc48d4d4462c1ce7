"""Push-back through the outbox into the amoCRM emulator: the issue's contracts, end to end."""

from __future__ import annotations

import time

from sqlalchemy import func, select

from app.outbox import delivery
from app.outbox.models import OutboxAction
from app.sync import service as sync
from integrations.amocrm.demo_data import seed_demo
from tests.conftest import create_account

NOW = int(time.time())


async def connected(client, rt, amo) -> dict:
    seed_demo(amo, now=NOW)
    acc = await create_account(client)
    await sync.run_pending(rt)  # backfill, then the first sweep enqueues
    return acc


def crm_tasks_by_crmwatch(amo) -> list[dict]:
    return [t for t in amo.tasks.values() if "#cw" in (t.get("text") or "")]


def crm_notes_by_crmwatch(amo) -> list[dict]:
    return [n for n in amo.notes.values() if "#cw" in ((n.get("params") or {}).get("text") or "")]


async def test_each_open_finding_becomes_a_task_and_a_note_on_its_deal(client, rt, amo):
    acc = await connected(client, rt, amo)
    await delivery.deliver_pending(rt)
    findings = (await client.get(f"/api/accounts/{acc['id']}/findings", params={"limit": 500})).json()["items"]
    speaking = [f for f in findings if not f["suppressed"]]
    tasks = crm_tasks_by_crmwatch(amo)
    notes = crm_notes_by_crmwatch(amo)
    assert len(tasks) == len(speaking) and len(notes) == len(speaking)
    for finding in speaking:
        deal = amo.leads[int(finding["deal_id"])]
        [task] = [t for t in tasks if t["entity_id"] == deal["id"] and finding["message"] in t["text"]]
        assert task["entity_type"] == "leads"
        assert task["responsible_user_id"] == int(finding["manager_id"])
        assert task["complete_till"] > NOW
        assert finding["link"] in task["text"]
    # A second sweep writes nothing new.
    before = len(amo.request_log)
    assert (await client.post(f"/api/accounts/{acc['id']}/sweep")).json()["opened"] == 0
    await delivery.deliver_pending(rt)
    assert len(crm_tasks_by_crmwatch(amo)) == len(tasks)
    assert not [r for r in amo.request_log[before:] if r[0] in ("POST", "PATCH")]


async def test_a_resolved_finding_closes_its_task(client, rt, amo):
    acc = await connected(client, rt, amo)
    await delivery.deliver_pending(rt)
    [finding] = (
        await client.get(
            f"/api/accounts/{acc['id']}/findings", params={"rule": "deal_without_task", "deal_id": "31000008"}
        )
    ).json()["items"]
    [task] = [t for t in crm_tasks_by_crmwatch(amo) if t["entity_id"] == 31000008 and not t["is_completed"]]
    # The manager plans a next step in the CRM; the sweep sees it and the finding resolves.
    amo.add_task(52999999, 31000008, "Позвонить клиенту", NOW + 86400, responsible_user_id=8100003, created_at=NOW)
    await client.post(f"/api/accounts/{acc['id']}/sync")
    await sync.run_pending(rt)
    assert (await client.get(f"/api/findings/{finding['id']}")).json()["status"] == "resolved"
    await delivery.deliver_pending(rt)
    closed = amo.tasks[task["id"]]
    assert closed["is_completed"] is True
    assert "Нарушение устранено" in str(closed["result"])
    patches = [r for r in amo.request_log if r[0] == "PATCH" and r[1] == "/api/v4/tasks"]
    assert len(patches) == 1


async def test_the_outbox_api_shows_and_retries_actions(client, rt, amo):
    acc = await connected(client, rt, amo)
    pending = (await client.get(f"/api/accounts/{acc['id']}/outbox", params={"status": "pending"})).json()
    assert pending["total"] > 0 and {i["kind"] for i in pending["items"]} == {"create_task", "add_note"}
    amo.fail_next(1000, status=400)  # the CRM refuses everything: the rows go dead
    await delivery.deliver_pending(rt)
    dead = (await client.get(f"/api/accounts/{acc['id']}/outbox", params={"status": "dead"})).json()
    assert dead["total"] == pending["total"] and dead["items"][0]["last_error"]
    amo._faults.clear()
    row = dead["items"][0]["id"]
    assert (await client.post(f"/api/outbox/{row}/retry")).json()["status"] == "pending"
    await delivery.deliver_pending(rt)
    sent = (await client.get(f"/api/accounts/{acc['id']}/outbox", params={"status": "sent"})).json()
    assert [i["id"] for i in sent["items"]] == [row] and sent["items"][0]["external_id"]
    assert (await client.post("/api/outbox/999999/retry")).status_code == 404


async def test_nothing_is_sent_for_a_finding_that_resolved_before_delivery(client, rt, amo):
    acc = await connected(client, rt, amo)
    async with rt.sessions() as s:
        queued = await s.scalar(
            select(func.count())
            .select_from(OutboxAction)
            .where(OutboxAction.kind == "create_task", OutboxAction.status == "pending")
        )
    assert queued
    await client.put(
        f"/api/accounts/{acc['id']}/rules",
        json={
            "rules": {
                r: {"enabled": False}
                for r in (
                    "overdue_task",
                    "deal_without_task",
                    "stuck_stage",
                    "task_rescheduled_without_contact",
                    "empty_comment",
                    "lead_not_contacted",
                )
            }
        },
    )
    await client.post(f"/api/accounts/{acc['id']}/sweep")
    await delivery.deliver_pending(rt)
    assert crm_tasks_by_crmwatch(amo) == []
    async with rt.sessions() as s:
        statuses = set(await s.scalars(select(OutboxAction.status).where(OutboxAction.kind == "create_task")))
    assert statuses == {"cancelled"}
