from __future__ import annotations

import time

from app.sync import service as sync
from integrations.amocrm.demo_data import seed_demo
from tests.conftest import create_account


async def test_demo_account_sweep(client, rt, amo):
    seed_demo(amo, now=int(time.time()))
    acc = await create_account(client)
    await sync.run_pending(rt)
    r = await client.post(f"/api/accounts/{acc['id']}/sweep")
    assert r.status_code == 200, r.text
    print(r.json())
    f = await client.get(f"/api/accounts/{acc['id']}/findings?status=all&limit=100")
    assert f.status_code == 200, f.text
    for it in f.json()["items"]:
        print(it["rule"], it["deal_id"], it["status"], it["message"])
    r2 = await client.post(f"/api/accounts/{acc['id']}/sweep")
    print(r2.json())
    assert r2.json()["opened"] == 0 and r2.json()["resolved"] == 0
