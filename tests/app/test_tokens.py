"""OAuth refresh: single-use refresh tokens must never be burnt by a race."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from app.accounts.models import Account
from app.accounts.tokens import AccountTokens
from integrations.base import CrmAuthError
from tests.conftest import create_account

CLIENT = {"client_id": "client-1", "client_secret": "client-secret-1", "redirect_uri": "https://crmwatch.test/oauth"}


async def oauth_account(client, amo) -> dict:
    amo.add_oauth_client(**CLIENT)
    return await create_account(client, access_token=None, oauth={**CLIENT, "code": amo.issue_auth_code("client-1")})


async def expire(rt, account_id: int) -> dict:
    async with rt.sessions() as s, s.begin():
        account = await s.get(Account, account_id)
        creds = rt.box.open(account.credentials)
        creds["expires_at"] = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        account.credentials = rt.box.seal(creds)
    return creds


def refreshes(amo) -> int:
    return sum(1 for method, path, _ in amo.request_log if path == "/oauth2/access_token") - 1  # minus the code


async def test_concurrent_refreshes_spend_the_refresh_token_once(client, rt, amo):
    acc = await oauth_account(client, amo)
    old = await expire(rt, acc["id"])
    # Two "workers" (separate token sources, as in two processes) need a token at once.
    tokens = await asyncio.gather(*(AccountTokens(rt, acc["id"]).access_token() for _ in range(5)))
    assert refreshes(amo) == 1
    assert len(set(tokens)) == 1 and tokens[0] != old["access_token"] and tokens[0] in amo.tokens
    async with rt.sessions() as s:
        account = await s.get(Account, acc["id"])
        creds = rt.box.open(account.credentials)
    assert creds["refresh_token"] != old["refresh_token"] and account.credentials_version == 2


async def test_a_fresh_token_is_used_without_refreshing(client, rt, amo):
    acc = await oauth_account(client, amo)
    token = await AccountTokens(rt, acc["id"]).access_token()
    assert token in amo.tokens and refreshes(amo) == 0


async def test_a_401_refreshes_once_and_the_loser_of_a_race_reuses_the_winners_token(client, rt, amo):
    acc = await oauth_account(client, amo)
    tokens = AccountTokens(rt, acc["id"])
    rejected = await tokens.access_token()
    first = await tokens.refresh_after_401(rejected)
    # A second worker saw the same 401 a moment later: it must not refresh again.
    second = await AccountTokens(rt, acc["id"]).refresh_after_401(rejected)
    assert first == second and refreshes(amo) == 1


async def test_a_revoked_refresh_token_marks_the_account_for_attention(client, rt, amo):
    acc = await oauth_account(client, amo)
    creds = await expire(rt, acc["id"])
    async with rt.sessions() as s, s.begin():  # someone spent our refresh token elsewhere
        account = await s.get(Account, acc["id"])
        account.credentials = rt.box.seal({**creds, "refresh_token": "spent-elsewhere"})
    with pytest.raises(CrmAuthError, match="refused"):
        await AccountTokens(rt, acc["id"]).access_token()
    body = (await client.get(f"/api/accounts/{acc['id']}")).json()
    assert body["status"] == "needs_attention"


async def test_a_refused_long_lived_token_marks_the_account_for_attention(client, rt):
    acc = await create_account(client)
    assert await AccountTokens(rt, acc["id"]).refresh_after_401("demo-token") is None
    assert (await client.get(f"/api/accounts/{acc['id']}")).json()["status"] == "needs_attention"
