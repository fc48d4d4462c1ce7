"""App mode: ONAPPINSTALL, event.bind and placement.bind, OAuth refresh per portal, and the
offline-event catch-up (reserve mode, crash in the middle of a drain)."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from app.accounts.models import Account
from app.ingest import catchup, worker
from app.mirror.models import Company
from integrations.bitrix24 import crm as b24crm
from tests.app.bitrix24.support import HOUR, NOW, deals, inbox, seed, tasks
from tests.conftest import B24_FORM

CLIENT_ID, CLIENT_SECRET = "local.6751a1b2c3.12345678", "s3cretS3cretS3cret"


async def install(client, rt, b24) -> dict:
    b24.add_oauth_client(CLIENT_ID, CLIENT_SECRET)
    resp = await client.post(
        "/api/accounts",
        json={
            "name": "Портал (приложение)",
            "crm": "bitrix24",
            "base_url": "https://demoshop.bitrix24.ru",
            "app": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
            "timezone": "Europe/Moscow",
        },
    )
    assert resp.status_code == 201, resp.text
    acc = resp.json()
    assert acc["auth"] == "oauth" and acc["sync"]["state"] == "never"  # nothing to read before the install
    # Before the install no event but the install itself gets in.
    early = await client.post(
        f"/hooks/bitrix24/{acc['key']}", content=b24.event_form("ONCRMDEALADD", 1), headers=B24_FORM
    )
    assert early.status_code == 401
    resp = await client.post(f"/hooks/bitrix24/{acc['key']}", content=b24.install_form(CLIENT_ID), headers=B24_FORM)
    assert resp.status_code == 200
    await worker.drain(rt)
    client._transport.app.state.keys.invalidate()
    return acc


async def test_install_saves_tokens_and_binds_events_and_the_deal_tab(client, rt, b24):
    acc = await install(client, rt, b24)
    async with rt.sessions() as s:
        account = await s.get(Account, acc["id"])
        creds = rt.box.open(account.credentials)
    assert account.external_id == b24.member_id and account.webhook_secret_hash
    assert creds["access_token"] in b24.access_tokens and creds["refresh_token"] in b24.refresh_tokens
    assert account.sync_state == "queued"
    assert ("ONCRMDEALUPDATE", "offline") in b24.bound and ("ONTASKADD", "offline") in b24.bound
    assert ("ONCRMCOMPANYUPDATE", "offline") in b24.bound and ("ONCRMCOMPANYDELETE", "offline") in b24.bound
    assert ("ONCRMDEALUPDATE", f"http://crmwatch.test/hooks/bitrix24/{acc['key']}") in b24.bound
    assert ("ONVOXIMPLANTCALLEND", f"http://crmwatch.test/hooks/bitrix24/{acc['key']}") in b24.bound
    assert ("ONVOXIMPLANTCALLEND", "offline") not in b24.bound
    assert b24.placements == [
        {
            "placement": "CRM_DEAL_DETAIL_TAB",
            "handler": "http://crmwatch.test/widget/bitrix24/deal-tab",
            "title": "crmwatch",
        }
    ]
    # From now on events must carry the installed application_token.
    ok = await client.post(f"/hooks/bitrix24/{acc['key']}", content=b24.event_form("ONCRMDEALADD", 1), headers=B24_FORM)
    forged = await client.post(
        f"/hooks/bitrix24/{acc['key']}", headers=B24_FORM, content=b24.event_form("ONCRMDEALADD", 1, token="1" * 32)
    )
    assert ok.status_code == 200 and forged.status_code == 401


async def test_an_expired_token_is_refreshed_once_for_concurrent_callers(client, rt, b24):
    seed(b24)
    acc = await install(client, rt, b24)
    b24.access_tokens.clear()  # the hour is up
    clients = [rt.crm_client(acc["id"], "bitrix24", "https://demoshop.bitrix24.ru") for _ in range(3)]
    try:
        await asyncio.gather(*(c.identity() for c in clients))
    finally:
        for c in clients:
            await c.aclose()
    async with rt.sessions() as s:
        account = await s.get(Account, acc["id"])
        creds = rt.box.open(account.credentials)
    # One refresh: a second would have spent the single-use refresh token and failed.
    assert account.status == "active" and len(b24.refresh_tokens) == 1
    assert creds["refresh_token"] in b24.refresh_tokens and creds["access_token"] in b24.access_tokens


async def test_changes_made_while_down_arrive_through_offline_events(client, rt, b24):
    seed(b24)
    acc = await install(client, rt, b24)
    b24.offline.clear()
    # crmwatch is down: the portal keeps changing and posts nothing we receive.
    b24.move_deal(4521, "WON", at=NOW - HOUR)
    b24.add_activity(20001, 4522, "Отправить договор", NOW + 3 * HOUR, responsible=8)
    b24.update_task(881, status="5")
    b24.update_task(881, title="Подготовить КП (готово)")  # one record per object, not two
    assert len(b24.offline) == 3
    assert await catchup.drain_account(rt, acc["id"]) == 3
    assert b24.offline == []  # cleared once stored
    await worker.drain(rt)
    found = await deals(rt, acc["id"])
    assert found["4521"].stage_id == "WON" and found["4521"].is_closed
    found_tasks = await tasks(rt, acc["id"])
    assert found_tasks["act:20001"].deal_id == "4522" and found_tasks["task:881"].is_completed


async def test_a_crash_in_the_middle_of_a_drain_loses_nothing(client, rt, b24, monkeypatch):
    seed(b24)
    acc = await install(client, rt, b24)
    b24.offline.clear()
    for i in range(60):  # two batches of event.offline.get
        b24.add_deal(7000 + i, f"Сделка {i}", "NEW")
    real_ack = b24crm.OfflineBatch.ack
    calls = 0

    async def crash_on_second(self, keys=None):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("process killed after storing, before event.offline.clear")
        await real_ack(self, keys)

    monkeypatch.setattr(b24crm.OfflineBatch, "ack", crash_on_second)
    await catchup.drain_all(rt)  # logs the crash, like a dying worker would lose its stack
    hidden = [r for r in b24.offline if r["PROCESS_ID"]]
    assert len(hidden) == 10 and len(b24.offline) == 10  # stored, but still hidden under its process_id
    monkeypatch.setattr(b24crm.OfflineBatch, "ack", real_ack)
    stored = await catchup.drain_account(rt, acc["id"])
    assert stored == 10 and b24.offline == []
    rows = await inbox(rt)
    offline_rows = [r for r in rows if r.content_type == "application/json"]
    assert len(offline_rows) == 60  # the re-read batch was stored once, not twice
    await worker.drain(rt)
    assert {str(7000 + i) for i in range(60)} <= set(await deals(rt, acc["id"]))


async def test_online_and_offline_copies_of_one_change_apply_once(client, rt, b24):
    seed(b24)
    acc = await install(client, rt, b24)
    b24.offline.clear()
    b24.move_deal(4522, "C3:WON", at=NOW - HOUR)
    online = b24.event_form("ONCRMDEALUPDATE", 4522)
    assert (await client.post(f"/hooks/bitrix24/{acc['key']}", content=online, headers=B24_FORM)).status_code == 200
    await catchup.drain_account(rt, acc["id"])
    await worker.drain(rt)
    from app.mirror.models import StageHistory

    async with rt.sessions() as s:
        history = list(
            await s.scalars(
                select(StageHistory).where(StageHistory.account_id == acc["id"], StageHistory.deal_id == "4522")
            )
        )
    assert len(await inbox(rt)) >= 3  # install, online, offline
    assert [h.stage_id for h in history] == ["C3:WON"]
    assert (await deals(rt, acc["id"]))["4522"].is_closed


async def test_a_webhook_account_has_no_offline_queue_and_asks_for_none(client, rt, b24):
    from tests.conftest import create_b24_account

    acc = await create_b24_account(client)
    b24.request_log.clear()
    assert await catchup.drain_account(rt, acc["id"]) == 0
    assert b24.request_log == []


async def test_a_queued_deletion_applies_without_a_read(client, rt, b24):
    seed(b24)
    acc = await install(client, rt, b24)
    await worker.drain(rt)
    async with rt.sessions() as s, s.begin():
        (await s.get(Account, acc["id"])).external_id = None  # as if the install had not said it
    b24.offline.clear()
    b24.delete_deal(4521)
    assert await catchup.drain_account(rt, acc["id"]) == 1
    b24.request_log.clear()
    await worker.drain(rt)
    assert b24.request_log == []
    row = (await inbox(rt))[-1]
    assert row.status == "done" and row.content_type == "application/json"
    assert (await deals(rt, acc["id"]))["4521"].is_deleted


async def test_company_changes_made_while_down_arrive_through_offline_events(client, rt, b24):
    seed(b24)
    acc = await install(client, rt, b24)
    b24.offline.clear()
    # crmwatch is down: a company is added, another renamed, then deleted, in the portal.
    b24.add_company(3001, "ИП Васильев", assigned_by=7)
    b24.update_company(2917, TITLE="ООО «Ромашка Плюс»")
    b24.delete_company(2917)
    assert [r["EVENT_NAME"] for r in b24.offline] == ["ONCRMCOMPANYADD", "ONCRMCOMPANYUPDATE", "ONCRMCOMPANYDELETE"]
    assert await catchup.drain_account(rt, acc["id"]) == 3
    await worker.drain(rt)
    async with rt.sessions() as s:
        added = await s.get(Company, (acc["id"], "3001"))
        gone = await s.get(Company, (acc["id"], "2917"))
    assert (added.name, added.responsible_user_id, added.is_deleted) == ("ИП Васильев", "7", False)
    assert gone.is_deleted
