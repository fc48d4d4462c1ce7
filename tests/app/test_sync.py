"""Backfill through API v4 against the amoCRM emulator (real HTTP semantics over ASGI)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from app.accounts.models import Account
from app.mirror.models import Contact, ContactPhone, Deal, Note, Pipeline, Stage, Task, User
from app.sync import service as sync
from integrations.amocrm.demo_data import seed_demo
from tests.conftest import create_account

NOW = int(datetime.now(UTC).timestamp())


async def count(rt, model) -> int:
    async with rt.sessions() as s:
        return await s.scalar(select(func.count()).select_from(model))


async def test_a_new_account_is_backfilled_once(client, rt, amo):
    seed_demo(amo, now=NOW)
    acc = await create_account(client)
    assert await sync.run_pending(rt) == 1
    assert await sync.run_pending(rt) == 0  # nothing queued twice

    body = (await client.get(f"/api/accounts/{acc['id']}")).json()
    assert body["sync"]["state"] == "done" and body["sync"]["error"] is None
    counts = body["sync"]["counts"]
    assert counts["pipelines"] == 1 and counts["users"] == 4 and counts["contacts"] == 12
    assert counts["deals"] == 15 and counts["tasks"] == 8 and counts["notes"] == 5
    assert counts["stage_events"] > 0
    assert body["external_id"] == "29876543" and body["subdomain"] == "demoshop"

    assert await count(rt, Deal) == 15 and await count(rt, Task) == 8 and await count(rt, Note) == 5
    assert await count(rt, User) == 4 and await count(rt, Pipeline) == 1 and await count(rt, Contact) == 12
    async with rt.sessions() as s:
        kinds = {st.id: st.kind for st in await s.scalars(select(Stage))}
        phones = set(await s.scalars(select(ContactPhone.phone)))
        won = await s.get(Deal, (acc["id"], "31000011"))
        stuck = await s.get(Deal, (acc["id"], "31000004"))
    assert kinds["142"] == "won" and kinds["143"] == "lost" and kinds["41000001"] == "open"
    # Mixed formats of the same numbers all end up E.164.
    assert {"+79123456701", "+79123456702", "+79123456703", "+79123456705"} <= phones
    assert won.is_closed
    # When the deal entered its stage comes from lead_status_changed events, not from now.
    moved = max(e["created_at"] for e in amo.events if e["entity_id"] == 31000004)
    assert stuck.stage_entered_at == datetime.fromtimestamp(moved, UTC)
    assert stuck.stage_entered_source == "event"


async def test_requests_follow_amocrm_paging_rules(client, rt, amo):
    seed_demo(amo, now=NOW)
    for i in range(600):  # more than two pages of 250
        amo.add_lead(
            40000000 + i,
            f"Сделка {i}",
            4100000,
            41000001,
            price=1000,
            responsible_user_id=8100002,
            created_at=NOW - 3600,
            updated_at=NOW - 3600,
        )
    await create_account(client)
    await sync.run_pending(rt)
    assert await count(rt, Deal) == 615
    lead_pages = [q for m, p, q in amo.request_log if p == "/api/v4/leads"]
    assert len(lead_pages) == 3 and all("limit=250" in q for q in lead_pages)
    events = [q for m, p, q in amo.request_log if p == "/api/v4/events"]
    assert events and all("limit=100" in q and "lead_status_changed" in q for q in events)


async def test_an_empty_account_syncs_through_204s(client, rt, amo):
    amo.add_user(8100001, "Админ", "a@example.com")
    acc = await create_account(client)
    await sync.run_pending(rt)
    body = (await client.get(f"/api/accounts/{acc['id']}")).json()
    assert body["sync"]["state"] == "done"
    assert body["sync"]["counts"]["deals"] == 0 and body["sync"]["counts"]["users"] == 1


async def test_sync_backs_off_on_429_and_5xx_and_still_completes(client, rt, amo):
    seed_demo(amo, now=NOW)
    amo.fail_next(3, status=503)
    await create_account(client)
    await sync.run_pending(rt)
    assert await count(rt, Deal) == 15
    amo.fail_next(2, status=429)
    acc2 = await create_account(client)
    await sync.run_pending(rt)
    assert (await client.get(f"/api/accounts/{acc2['id']}")).json()["sync"]["state"] == "done"


@pytest.mark.parametrize("amo_rate_limit", [7])  # the emulator answers 429 past 7 requests/s
async def test_sync_stays_under_seven_requests_per_second(client, rt, amo):
    rt.settings.amocrm_rate_per_second = 7
    seed_demo(amo, now=NOW)
    for i in range(3000):  # 13 pages of contacts: ~20 requests in all
        amo.add_contact(50000000 + i, f"Контакт {i}", phones=[f"8 900 {i:03d}-00-00"], created_at=NOW, updated_at=NOW)
    await create_account(client)
    started = time.monotonic()
    await sync.run_pending(rt)
    elapsed = time.monotonic() - started
    assert amo.rejected_429 == 0
    assert await count(rt, Contact) == 3012
    requests = len(amo.request_log)
    assert requests >= 20 and requests / elapsed <= 7.0


async def test_refused_credentials_mark_the_account_for_attention(client, rt, amo):
    seed_demo(amo, now=NOW)
    acc = await create_account(client, access_token="revoked-token")
    await sync.run_pending(rt)
    body = (await client.get(f"/api/accounts/{acc['id']}")).json()
    assert body["sync"]["state"] == "failed" and body["status"] == "needs_attention"
    assert "refused" in body["status_reason"]


async def test_an_unreachable_crm_fails_the_sync_without_losing_the_request(client, rt, amo):
    amo.fail_next(100, status=502)
    acc = await create_account(client)
    await sync.run_pending(rt)
    body = (await client.get(f"/api/accounts/{acc['id']}")).json()
    assert body["sync"]["state"] == "failed" and "502" in body["sync"]["error"]
    assert body["status"] == "active"  # an outage is not a credentials problem
    amo._faults.clear()  # the CRM recovers
    seed_demo(amo, now=NOW)
    resp = await client.post(f"/api/accounts/{acc['id']}/sync")
    assert resp.status_code == 202 and resp.json()["state"] == "queued"
    await sync.run_pending(rt)
    assert await count(rt, Deal) == 15


async def test_a_sync_requested_while_running_runs_again(client, rt, amo):
    seed_demo(amo, now=NOW)
    acc = await create_account(client)
    account_id = await sync.claim_next(rt)
    assert account_id == acc["id"]
    resp = await client.post(f"/api/accounts/{acc['id']}/sync")
    assert resp.json()["state"] == "running"
    await sync.run_sync(rt, account_id)
    assert (await client.get(f"/api/accounts/{acc['id']}")).json()["sync"]["state"] == "queued"
    assert await sync.run_pending(rt) == 1


async def test_a_sync_whose_worker_died_is_picked_up_again(client, rt, amo):
    seed_demo(amo, now=NOW)
    acc = await create_account(client)
    assert await sync.claim_next(rt) == acc["id"]  # ...and the process dies here
    async with rt.sessions() as s, s.begin():
        account = await s.get(Account, acc["id"])
        account.sync_heartbeat_at = datetime(2020, 1, 1, tzinfo=UTC)
    assert await sync.run_pending(rt) == 1
    assert await count(rt, Deal) == 15
