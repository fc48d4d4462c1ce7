"""amoCRM OAuth 2.0: exchange an authorization code or a refresh token for a token pair.

amoCRM refresh tokens are single-use and rotate on every refresh; the caller must store the
new pair before anyone else may refresh (app/accounts/tokens.py serializes that).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from integrations.base import CrmAuthError, CrmUnavailable, TokenPair


async def exchange(
    base_url: str,
    *,
    client_id: str,
    client_secret: str,
    redirect_uri: str,
    code: str | None = None,
    refresh_token: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> TokenPair:
    if (code is None) == (refresh_token is None):
        raise ValueError("exactly one of code or refresh_token")
    body = {"client_id": client_id, "client_secret": client_secret, "redirect_uri": redirect_uri}
    if code is not None:
        body |= {"grant_type": "authorization_code", "code": code}
    else:
        body |= {"grant_type": "refresh_token", "refresh_token": refresh_token}
    try:
        async with httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=20, transport=transport) as http:
            resp = await http.post("/oauth2/access_token", json=body)
    except httpx.TransportError as exc:
        raise CrmUnavailable(f"amoCRM OAuth unreachable: {type(exc).__name__}") from None
    if resp.status_code >= 500 or resp.status_code == 429:
        raise CrmUnavailable(f"amoCRM OAuth answered {resp.status_code}")
    if resp.status_code != 200:
        # 400/401: the code or refresh token is spent or wrong; only a person can fix that.
        raise CrmAuthError(f"amoCRM OAuth refused the grant ({resp.status_code}): {_hint(resp)}")
    data = resp.json()
    return TokenPair(
        access_token=data["access_token"],
        refresh_token=data["refresh_token"],
        expires_at=datetime.now(UTC) + timedelta(seconds=int(data.get("expires_in", 86400))),
    )


def _hint(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200]
    return str(body.get("hint") or body.get("detail") or body.get("title") or "")[:200]
