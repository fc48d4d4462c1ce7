"""OAuth 2.0 of Bitrix24 apps: tokens come from the portal's OAuth server, oauth.bitrix.info.

An access token lives one hour; a refresh hands out a new pair and invalidates the old one,
so refreshes of one portal must never overlap (app/accounts/tokens.py serializes them).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from integrations.base import CrmAuthError, CrmUnavailable, TokenPair
from integrations.http import tls_context

OAUTH_URL = "https://oauth.bitrix.info/oauth/token/"
ACCESS_TTL = timedelta(hours=1)


async def refresh(
    *,
    client_id: str,
    client_secret: str,
    refresh_token: str,
    transport: httpx.AsyncBaseTransport | None = None,
    url: str = OAUTH_URL,
) -> TokenPair:
    params = {
        "grant_type": "refresh_token",
        "client_id": client_id,
        "client_secret": client_secret,
        "refresh_token": refresh_token,
    }
    async with httpx.AsyncClient(timeout=20.0, transport=transport, verify=tls_context()) as http:
        try:
            resp = await http.get(url, params=params)
        except httpx.TransportError as exc:
            raise CrmUnavailable(f"Bitrix24 OAuth server: {type(exc).__name__}") from None
    try:
        body = resp.json()
    except ValueError:
        body = {}
    if resp.status_code >= 500:
        raise CrmUnavailable(f"Bitrix24 OAuth server answered {resp.status_code}")
    if resp.status_code >= 400 or "error" in body or not body.get("access_token"):
        raise CrmAuthError(f"Bitrix24 refused the refresh token: {body.get('error') or resp.status_code}")
    expires = body.get("expires")
    expires_at = (
        datetime.fromtimestamp(int(expires), UTC)
        if str(expires or "").isdigit()
        else datetime.now(UTC) + timedelta(seconds=int(body.get("expires_in") or ACCESS_TTL.seconds))
    )
    return TokenPair(access_token=body["access_token"], refresh_token=body["refresh_token"], expires_at=expires_at)
