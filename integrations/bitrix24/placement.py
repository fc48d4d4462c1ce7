"""Asks the Bitrix24 portal whether a placement's AUTH_ID is real, and whose it is.

A placement POST is only a form in the manager's browser: anyone can post one. `member_id` picks
the installed portal; the portal itself then confirms the AUTH_ID by answering a REST call made
with it (`user.current`, which also names the acting user). The call goes to the address stored
at install time, never to the DOMAIN the form claims, so a forged form cannot point the check at
a server of its own.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx

from integrations.base import CardAccountHint, CardRejected, CardUnavailable, CardUser


class PortalRefused(CardRejected):
    """The portal does not know this AUTH_ID (forged, expired, or from another portal)."""

    def __init__(self, detail: str) -> None:
        super().__init__("token_invalid", detail)


class PortalUnavailable(CardUnavailable):
    """The portal could not be asked (network, 5xx): nothing is decided."""


class Bitrix24Placement:
    """The credential is the placement's AUTH_ID; the portal is picked by the form's member_id (its hint)."""

    def hint(self, claim: str) -> CardAccountHint:
        return CardAccountHint(external_id=claim or None)  # the form's member_id

    async def verify(
        self,
        credential: str,
        *,
        base_url: str,
        secret: str | None = None,
        audience: str | None = None,
        transport: Any = None,
        ask_admin: bool = False,
    ) -> CardUser:
        user = await current_user(base_url, credential, transport=transport)
        if ask_admin and await is_admin(base_url, credential, transport=transport):
            user = replace(user, is_admin=True)
        return user


async def current_user(
    base_url: str, auth_id: str, *, transport: httpx.AsyncBaseTransport | None = None, http_timeout: float = 10.0
) -> CardUser:
    url = f"{base_url.rstrip('/')}/rest/user.current.json"
    try:
        async with httpx.AsyncClient(transport=transport, timeout=http_timeout) as http:
            resp = await http.post(url, data={"auth": auth_id})
    except httpx.HTTPError as exc:
        raise PortalUnavailable(f"the portal did not answer: {type(exc).__name__}") from None
    if resp.status_code >= 500:
        raise PortalUnavailable(f"the portal answered {resp.status_code}")
    try:
        body = resp.json()
    except ValueError:
        raise PortalUnavailable("the portal answered something that is not JSON") from None
    # Bitrix24 answers a bad token with 401 and {"error": "invalid_token" | "expired_token", ...}.
    if resp.status_code != 200 or not isinstance(body, dict) or "error" in body:
        error = body.get("error") if isinstance(body, dict) else None
        raise PortalRefused(f"the portal refused AUTH_ID ({error or resp.status_code})")
    result = body.get("result")
    if not isinstance(result, dict) or not str(result.get("ID") or "").isdigit():
        raise PortalRefused("the portal's answer names no user")
    name = " ".join(p for p in (result.get("NAME"), result.get("LAST_NAME")) if p) or str(result["ID"])
    return CardUser(id=str(result["ID"]), name=name)


async def is_admin(
    base_url: str, auth_id: str, *, transport: httpx.AsyncBaseTransport | None = None, http_timeout: float = 10.0
) -> bool:
    """`user.admin`: whether the AUTH_ID's user administers the portal. Asked after current_user
    confirmed the AUTH_ID; an unclear answer is taken as "no" (the narrower view)."""
    url = f"{base_url.rstrip('/')}/rest/user.admin.json"
    try:
        async with httpx.AsyncClient(transport=transport, timeout=http_timeout) as http:
            resp = await http.post(url, data={"auth": auth_id})
        body = resp.json()
    except (httpx.HTTPError, ValueError):
        return False
    return resp.status_code == 200 and isinstance(body, dict) and body.get("result") is True
