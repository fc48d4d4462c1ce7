"""Backfill of a Bitrix24 portal through the existing sync, against the emulator."""

from __future__ import annotations

from sqlalchemy import select

from app.mirror.models import Company, ContactPhone, Note, Stage, StageHistory, User
from app.sync import service as sync
from tests.app.bitrix24.support import HOUR, NOW, deals, seed, tasks
from tests.conftest import create_b24_account


async def test_a_portal_is_backfilled_with_progress(client, rt, b24):
    seed(b24)
    b24.add_activity(10300, 4521, "Встреча", NOW + 5 * HOUR, completed=True)  # done: not read
    b24.add_task(883, 4521, "Закрыта", NOW, status=5)  # done: not read
    acc = await create_b24_account(client)
    assert await sync.run_pending(rt) == 1
    body = (await client.get(f"/api/accounts/{acc['id']}")).json()
    assert body["sync"]["state"] == "done" and body["sync"]["error"] is None
    assert body["sync"]["counts"] == {
        "pipelines": 2,
        "users": 2,
        "contacts": 1,
        "companies": 1,
        "deals": 3,
        "stage_events": 4,
        "activities": 1,
        "tasks": 1,
        "notes": 1,
    }
    found = await deals(rt, acc["id"])
    assert set(found) == {"4521", "4522", "4523"}
    # MOVED_TIME and the stage history say when the deal entered its stage.
    assert abs(found["4521"].stage_entered_at.timestamp() - (NOW - 60 * HOUR)) < 1
    assert found["4521"].stage_entered_source == "event"
    assert found["4523"].is_closed and not found["4522"].is_closed and found["4522"].pipeline_id == "3"
    # The deal's company (named in the backfill's select) and the company itself, by name.
    assert (found["4523"].company_id, found["4521"].company_id) == ("2917", None)
    open_tasks = await tasks(rt, acc["id"])
    assert set(open_tasks) == {"act:10233", "task:881"}  # the unbound task 882 is not a deal's
    assert open_tasks["act:10233"].deal_id == "4521" and open_tasks["task:881"].deal_id == "4522"
    async with rt.sessions() as s:
        kinds = {(st.pipeline_id, st.id): st.kind for st in await s.scalars(select(Stage))}
        phones = set(await s.scalars(select(ContactPhone.phone)))
        users = {u.id: u.name for u in await s.scalars(select(User))}
        notes = list(await s.scalars(select(Note)))
        history = list(await s.scalars(select(StageHistory).where(StageHistory.deal_id == "4521")))
        company = await s.get(Company, (acc["id"], "2917"))
    assert kinds[("0", "WON")] == "won" and kinds[("0", "LOSE")] == "lost" and kinds[("0", "NEW")] == "open"
    assert kinds[("3", "C3:WON")] == "won"
    assert phones == {"+79123456789"}
    assert users["7"] == "Анна Петрова"
    assert [n.deal_id for n in notes] == ["4521"]
    assert sorted(h.stage_id for h in history) == ["NEW", "PREPARATION"]
    assert (company.name, company.responsible_user_id, company.is_deleted) == ("ООО «Ромашка»", "8", False)
    assert abs(company.source_updated_at.timestamp() - (NOW - 80 * HOUR)) < 1


async def test_a_big_portal_pages_through_more_than_50_deals(client, rt, b24):
    seed(b24)
    for i in range(120):
        b24.add_deal(6000 + i, f"Сделка {i}", "NEW", at=NOW - HOUR)
    acc = await create_b24_account(client)
    await sync.run_pending(rt)
    assert len(await deals(rt, acc["id"])) == 123
    # start=-1 with ">id": no count query, pages of 50 by id.
    exports = [p for m, p in b24.calls if m == "crm.item.list" and "select" in p and "stageId" in p["select"]]
    assert [(p["start"], p["filter"], p["order"]) for p in exports] == [
        (-1, {">id": 0}, {"id": "ASC"}),
        (-1, {">id": 6046}, {"id": "ASC"}),
        (-1, {">id": 6096}, {"id": "ASC"}),
    ]


async def test_a_sync_that_hits_the_limit_fails_visibly_and_can_be_rerun(client, rt, b24):
    seed(b24)
    acc = await create_b24_account(client)
    b24.fail_next(100, 503, "QUERY_LIMIT_EXCEEDED")
    await sync.run_pending(rt)
    body = (await client.get(f"/api/accounts/{acc['id']}")).json()
    assert body["sync"]["state"] == "failed" and "QUERY_LIMIT_EXCEEDED" in body["sync"]["error"]
    b24.faults.clear()
    await client.post(f"/api/accounts/{acc['id']}/sync")
    await sync.run_pending(rt)
    assert (await client.get(f"/api/accounts/{acc['id']}")).json()["sync"]["state"] == "done"
    assert len(await deals(rt, acc["id"])) == 3
