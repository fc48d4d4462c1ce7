"""Accounts with findings, and amoCRM's side of the widget token, for the widget tests."""

from __future__ import annotations

import time

from sqlalchemy import update

from app.accounts.models import Account
from app.sync import service as sync
from integrations.amocrm.demo_data import seed_demo
from integrations.amocrm.widget_host import mint_token
from tests.conftest import AMO_BASE, create_account

SECRET = "integration-secret-0123456789abcdef"
AUDIENCE = "https://crmwatch.example.com"
AMO_ACCOUNT_ID = 29876543  # the emulator's account id, learned by the backfill
SUBDOMAIN = "demoshop"
MANAGER = 8100003
ORIGIN = AMO_BASE


def token(secret: str = SECRET, **over: object) -> str:
    claims: dict = {
        "base_url": AMO_BASE,
        "audience": AUDIENCE,
        "account_id": AMO_ACCOUNT_ID,
        "subdomain": SUBDOMAIN,
        "user_id": MANAGER,
        **over,
    }
    return mint_token(secret, **claims)


async def widget_account(client, rt, amo, *, secret: str | None = SECRET) -> dict:
    """The demo team's account, backfilled and swept, with the integration's secret configured."""
    seed_demo(amo, now=int(time.time()))
    acc = await create_account(client)
    await sync.run_pending(rt)
    if secret is not None:
        resp = await client.put(
            f"/api/accounts/{acc['id']}/widget", json={"client_secret": secret, "audience": AUDIENCE}
        )
        assert resp.status_code == 200, resp.text
    return acc


async def deal_with_findings(client, acc: dict, at_least: int = 1) -> tuple[str, list[dict]]:
    page = (await client.get(f"/api/accounts/{acc['id']}/findings", params={"status": "open", "limit": 500})).json()
    by_deal: dict[str, list[dict]] = {}
    for item in page["items"]:
        if not item["suppressed"]:
            by_deal.setdefault(item["deal_id"], []).append(item)
    deal_id, items = max(by_deal.items(), key=lambda kv: len(kv[1]))
    assert len(items) >= at_least, by_deal
    return deal_id, items


async def add_other_amocrm_account(client, rt, *, base_url: str, external_id: str, secret: str) -> dict:
    acc = await create_account(client, name="Другой", base_url=base_url)
    async with rt.sessions() as s, s.begin():
        await s.execute(update(Account).where(Account.id == acc["id"]).values(external_id=external_id))
    resp = await client.put(f"/api/accounts/{acc['id']}/widget", json={"client_secret": secret, "audience": AUDIENCE})
    assert resp.status_code == 200, resp.text
    return acc
