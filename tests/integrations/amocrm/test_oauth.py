"""amoCRM OAuth grants: what goes on the wire and how refusals and outages are told apart."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import respx

from integrations.amocrm.oauth import TokenPair, exchange
from integrations.base import CrmAuthError, CrmUnavailable

BASE = "https://demoshop.amocrm.ru"
TOKEN_URL = f"{BASE}/oauth2/access_token"
CREDS = {
    "client_id": "7f2c1a9e-0000-4000-8000-000000000001",
    "client_secret": "s3cr3t",
    "redirect_uri": "https://crmwatch.example.com/oauth/amocrm",
}
GRANTED = {"token_type": "Bearer", "expires_in": 86400, "access_token": "acc-1", "refresh_token": "ref-1"}


@pytest.fixture
def token_route() -> Iterator[respx.Route]:
    with respx.mock(assert_all_mocked=True) as router:
        yield router.post(TOKEN_URL)


def sent_json(route: respx.Route) -> dict[str, str]:
    request = route.calls.last.request
    assert request.headers["Content-Type"] == "application/json"
    return json.loads(request.content)


async def test_code_grant_sends_json_and_returns_pair(token_route: respx.Route) -> None:
    token_route.mock(return_value=httpx.Response(200, json=GRANTED))

    before = datetime.now(UTC)
    pair = await exchange(BASE, code="def502000abc", **CREDS)
    after = datetime.now(UTC)

    assert sent_json(token_route) == {**CREDS, "grant_type": "authorization_code", "code": "def502000abc"}
    assert isinstance(pair, TokenPair)
    assert (pair.access_token, pair.refresh_token) == ("acc-1", "ref-1")
    assert before + timedelta(seconds=86400) <= pair.expires_at <= after + timedelta(seconds=86400)


async def test_refresh_grant_sends_refresh_token(token_route: respx.Route) -> None:
    token_route.mock(
        return_value=httpx.Response(
            200, json={**GRANTED, "expires_in": 3600, "access_token": "acc-2", "refresh_token": "ref-2"}
        )
    )

    before = datetime.now(UTC)
    pair = await exchange(BASE, refresh_token="ref-1", **CREDS)

    body = sent_json(token_route)
    assert body == {**CREDS, "grant_type": "refresh_token", "refresh_token": "ref-1"}
    # amoCRM rotates refresh tokens: the new one must be the one handed back.
    assert pair.refresh_token == "ref-2"
    assert abs(pair.expires_at - (before + timedelta(seconds=3600))) < timedelta(seconds=5)


async def test_revoked_token_is_auth_error_with_hint(token_route: respx.Route) -> None:
    token_route.mock(
        return_value=httpx.Response(400, json={"title": "Ошибка", "status": 400, "hint": "Token has been revoked"})
    )

    with pytest.raises(CrmAuthError, match="Token has been revoked"):
        await exchange(BASE, refresh_token="ref-1", **CREDS)


@pytest.mark.parametrize(
    "effect",
    [
        httpx.Response(502, text="Bad Gateway"),
        httpx.Response(429),
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("read timed out"),
    ],
    ids=["502", "429", "connect-error", "read-timeout"],
)
async def test_outage_is_unavailable_not_auth_error(token_route: respx.Route, effect: object) -> None:
    # An outage must not look like a revoked grant, or the account would be flagged for re-consent.
    token_route.mock(side_effect=[effect])

    with pytest.raises(CrmUnavailable):
        await exchange(BASE, refresh_token="ref-1", **CREDS)
    assert token_route.call_count == 1


@pytest.mark.parametrize("grant", [{}, {"code": "c", "refresh_token": "r"}], ids=["neither", "both"])
async def test_exactly_one_grant_is_required(grant: dict[str, str]) -> None:
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        route = router.post(TOKEN_URL)
        with pytest.raises(ValueError):
            await exchange(BASE, **CREDS, **grant)
        assert not route.called
