"""The Bitrix24 entry of the CRM registry."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from integrations.base import (
    AccountConnection,
    DomainEvent,
    ParsedWebhook,
    ScrubbedWebhook,
    TokenPair,
    TokenSource,
)

from . import oauth, webhook
from .client import WEBHOOK_TOKEN_PREFIX
from .crm import Bitrix24Crm
from .limits import PortalLimiter
from .placement import Bitrix24Placement

# `https://portal.bitrix24.ru/rest/1/abc123/`: user id, then the webhook's secret.
_WEBHOOK_PATH = re.compile(r"^(?P<prefix>.*?)/rest/(?P<user>\d+)/(?P<secret>[A-Za-z0-9_]+)/?$")
_FIELDS = {"application_token", "app"}


class Bitrix24Adapter:
    name = "bitrix24"
    card = Bitrix24Placement()

    def check_webhook(self, body: bytes, content_type: str | None) -> ParsedWebhook:
        return webhook.check(body)

    def parse_webhook(self, body: bytes, *, region: str, received_at: datetime) -> list[DomainEvent]:
        return webhook.parse(body, region=region, received_at=received_at)

    def scrub_webhook(self, body: bytes) -> ScrubbedWebhook:
        return webhook.scrub(body)

    def subdomain_of(self, base_url: str) -> str | None:
        return urlsplit(base_url).hostname

    def hook_urls(self, public_url: str, key: str) -> dict[str, str]:
        return {"bitrix24": f"{public_url.rstrip('/')}/hooks/bitrix24/{key}"}

    def deal_url(self, base_url: str, deal_id: str) -> str:
        return f"{base_url.rstrip('/')}/crm/deal/details/{deal_id}/"

    def connect(self, base_url: str, fields: Mapping[str, Any]) -> AccountConnection | None:
        unknown = set(fields) - _FIELDS
        if unknown:
            raise ValueError(f"unknown fields for bitrix24: {', '.join(sorted(unknown))}")
        token = fields.get("application_token")
        if token is not None and (not isinstance(token, str) or not re.fullmatch(r"[A-Za-z0-9_]{8,128}", token)):
            raise ValueError("application_token: the outgoing webhook's or the app's token (8-128 letters/digits)")
        parts = urlsplit(base_url)
        match = _WEBHOOK_PATH.match(parts.path)
        app = fields.get("app")
        if match:
            if app is not None:
                raise ValueError("give either an inbound-webhook base_url or app credentials, not both")
            if token is None:
                raise ValueError("application_token is required: Bitrix24 signs each event with it")
            # The webhook's secret goes into the sealed credentials, never into the stored URL.
            origin = urlunsplit((parts.scheme, parts.netloc, match["prefix"], "", ""))
            return AccountConnection(
                base_url=origin,
                auth_kind="token",
                credentials={"access_token": f"{WEBHOOK_TOKEN_PREFIX}{match['user']}/{match['secret']}"},
                webhook_secret=token,
            )
        if app is None:
            raise ValueError(
                "base_url must be an inbound webhook (https://portal/rest/{user_id}/{secret}/), "
                "or give app: {client_id, client_secret} for an app"
            )
        if (
            not isinstance(app, dict)
            or not all(isinstance(app.get(k), str) and app.get(k) for k in ("client_id", "client_secret"))
            or set(app) - {"client_id", "client_secret"}
        ):
            raise ValueError("app must be {client_id, client_secret}")
        if parts.path.rstrip("/"):
            raise ValueError("an app's base_url is the portal address alone, e.g. https://portal.bitrix24.ru")
        return AccountConnection(
            base_url=urlunsplit((parts.scheme, parts.netloc, "", "", "")),
            auth_kind="oauth",
            credentials={
                "client_id": app["client_id"],
                "client_secret": app["client_secret"],
                "redirect_uri": "",
                "access_token": None,
                "refresh_token": None,
                "expires_at": None,
            },
            webhook_secret=token,
        )

    def make_limiter(self, settings: Any) -> PortalLimiter:
        return PortalLimiter(settings.bitrix24_rate_per_second, settings.bitrix24_burst)

    def make_client(
        self,
        base_url: str,
        tokens: TokenSource,
        limiter: PortalLimiter,
        *,
        max_retries: int,
        backoff_base: float,
        backoff_cap: float,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> Bitrix24Crm:
        return Bitrix24Crm(
            base_url,
            tokens,
            limiter,
            max_retries=max_retries,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            timeout=timeout,
            transport=transport,
        )

    async def oauth_exchange(
        self,
        base_url: str,
        *,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        code: str | None = None,
        refresh_token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> TokenPair:
        if refresh_token is None:
            raise ValueError("Bitrix24 apps get their first tokens at install (ONAPPINSTALL), not from a code")
        return await oauth.refresh(
            client_id=client_id, client_secret=client_secret, refresh_token=refresh_token, transport=transport
        )
