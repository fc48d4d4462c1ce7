from __future__ import annotations

import logging

import pytest
from sqlalchemy import select

from app.accounts.models import Account
from tests.conftest import AMO_BASE, FORM, create_account, form_body


async def test_create_returns_id_key_and_hook_urls(client, rt):
    created = await create_account(client)
    assert created["id"] > 0 and len(created["key"]) >= 24
    assert created["hooks"]["amocrm"] == f"http://crmwatch.test/hooks/amocrm/{created['key']}"
    assert created["sync"]["state"] == "queued"  # every new account is backfilled once
    assert created["subdomain"] == "demoshop"
    assert "access_token" not in created and "credentials" not in created


async def test_credentials_are_encrypted_at_rest_and_never_returned(client, rt, caplog):
    caplog.set_level(logging.DEBUG)
    created = await create_account(client, access_token="very-secret-token-123")
    async with rt.sessions() as s:
        account = await s.get(Account, created["id"])
    assert b"very-secret-token-123" not in account.credentials
    assert rt.box.open(account.credentials) == {"access_token": "very-secret-token-123"}
    listed = await client.get("/api/accounts")
    one = await client.get(f"/api/accounts/{created['id']}")
    assert "very-secret-token-123" not in listed.text + one.text
    assert "very-secret-token-123" not in caplog.text


async def test_admin_token_is_required(client):
    resp = await client.post("/api/accounts", json={}, headers={"Authorization": "Bearer wrong"})
    assert resp.status_code == 401
    resp = await client.get("/api/accounts", headers={"Authorization": ""})
    assert resp.status_code == 401


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"name": "x", "crm": "amocrm", "base_url": AMO_BASE}, "exactly one of access_token"),
        (
            {
                "name": "x",
                "crm": "amocrm",
                "base_url": AMO_BASE,
                "access_token": "t",
                "oauth": {"client_id": "c", "client_secret": "s", "redirect_uri": "https://r", "code": "x"},
            },
            "exactly one",
        ),
        ({"name": "x", "crm": "salesforce", "base_url": AMO_BASE, "access_token": "t"}, "unsupported crm"),
        ({"name": "x", "crm": "amocrm", "base_url": "not a url", "access_token": "t"}, "base_url"),
        (
            {"name": "x", "crm": "amocrm", "base_url": AMO_BASE, "access_token": "t", "timezone": "Mars/Olympus"},
            "unknown time zone",
        ),
        (
            {
                "name": "x",
                "crm": "amocrm",
                "base_url": AMO_BASE,
                "oauth": {"client_id": "c", "client_secret": "s", "redirect_uri": "https://r"},
            },
            "code or refresh_token",
        ),
    ],
)
async def test_invalid_bodies_get_422_and_store_nothing(client, rt, body, fragment):
    resp = await client.post("/api/accounts", json=body)
    assert resp.status_code == 422
    assert fragment in resp.text
    async with rt.sessions() as s:
        assert (await s.scalars(select(Account))).all() == []


async def test_plain_http_base_url_is_accepted(client):
    created = await create_account(client, base_url="http://127.0.0.1:9")
    assert created["base_url"] == "http://127.0.0.1:9"


async def test_patch_changes_settings_and_rotating_the_key_retires_the_old_one(client):
    created = await create_account(client)
    old_key = created["key"]
    resp = await client.patch(
        f"/api/accounts/{created['id']}", json={"timezone": "Asia/Yekaterinburg", "rotate_key": True}
    )
    assert resp.status_code == 200
    assert resp.json()["timezone"] == "Asia/Yekaterinburg"
    new_key = resp.json()["key"]
    assert new_key != old_key
    assert (
        await client.post(f"/hooks/amocrm/{old_key}", content=form_body("lead_add"), headers=FORM)
    ).status_code == 404
    assert (
        await client.post(f"/hooks/amocrm/{new_key}", content=form_body("lead_add"), headers=FORM)
    ).status_code == 200


async def test_patch_rejects_unknown_fields_and_bad_timezone(client):
    created = await create_account(client)
    assert (await client.patch(f"/api/accounts/{created['id']}", json={"crm": "bitrix24"})).status_code == 422
    assert (await client.patch(f"/api/accounts/{created['id']}", json={"timezone": "Nowhere"})).status_code == 422


async def test_delete_removes_the_account_and_its_data(client, rt):
    created = await create_account(client)
    await client.post(f"/hooks/amocrm/{created['key']}", content=form_body("lead_add"), headers=FORM)
    assert (await client.delete(f"/api/accounts/{created['id']}")).status_code == 204
    assert (await client.get(f"/api/accounts/{created['id']}")).status_code == 404
    assert (
        await client.post(f"/hooks/amocrm/{created['key']}", content=form_body("lead_add"), headers=FORM)
    ).status_code == 404
    from app.ingest.models import InboxEvent

    async with rt.sessions() as s:
        assert (await s.scalars(select(InboxEvent))).all() == []


async def test_unknown_account_is_404(client):
    assert (await client.get("/api/accounts/999")).status_code == 404
    assert (await client.post("/api/accounts/999/sync")).status_code == 404
    assert (await client.delete("/api/accounts/999")).status_code == 404


async def test_oauth_code_is_exchanged_at_creation(client, rt, amo):
    amo.add_oauth_client("client-1", "client-secret-1", "https://crmwatch.test/oauth")
    code = amo.issue_auth_code("client-1")
    created = await create_account(
        client,
        access_token=None,
        oauth={
            "client_id": "client-1",
            "client_secret": "client-secret-1",
            "redirect_uri": "https://crmwatch.test/oauth",
            "code": code,
        },
    )
    assert created["auth"] == "oauth"
    async with rt.sessions() as s:
        creds = rt.box.open((await s.get(Account, created["id"])).credentials)
    assert creds["access_token"] in amo.tokens and creds["refresh_token"]
    assert "client-secret-1" not in (await client.get(f"/api/accounts/{created['id']}")).text


async def test_a_refused_oauth_code_is_a_400_and_stores_nothing(client, rt, amo):
    amo.add_oauth_client("client-1", "client-secret-1", "https://crmwatch.test/oauth")
    resp = await client.post(
        "/api/accounts",
        json={
            "name": "x",
            "crm": "amocrm",
            "base_url": AMO_BASE,
            "oauth": {
                "client_id": "client-1",
                "client_secret": "client-secret-1",
                "redirect_uri": "https://crmwatch.test/oauth",
                "code": "never-issued",
            },
        },
    )
    assert resp.status_code == 400
    assert "refused" in resp.json()["detail"]
    async with rt.sessions() as s:
        assert (await s.scalars(select(Account))).all() == []
