"""The amoCRM entry of the CRM registry."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from integrations.base import (
    AccountConnection,
    DomainEvent,
    ParsedWebhook,
    ScrubbedWebhook,
    TokenPair,
    TokenSource,
)
from integrations.ratelimit import SlidingWindowLimiter

from . import oauth, webhook
from .client import AmoCrmClient
from .widget_token import AmoCrmWidgetToken


class AmoCrmAdapter:
    name = "amocrm"
    card = AmoCrmWidgetToken()

    def check_webhook(self, body: bytes, content_type: str | None) -> ParsedWebhook:
        return webhook.check(body)

    def parse_webhook(self, body: bytes, *, region: str, received_at: datetime) -> list[DomainEvent]:
        return webhook.parse(body, region=region, received_at=received_at)

    def scrub_webhook(self, body: bytes) -> ScrubbedWebhook:
        # amoCRM signs nothing and puts no credential into a webhook: the URL key is the secret.
        return ScrubbedWebhook(body)

    def subdomain_of(self, base_url: str) -> str | None:
        host = urlsplit(base_url).hostname or ""
        for suffix in (".amocrm.ru", ".amocrm.com", ".kommo.com"):
            if host.endswith(suffix):
                return host.removesuffix(suffix)
        return None

    def hook_urls(self, public_url: str, key: str) -> dict[str, str]:
        return {"amocrm": f"{public_url.rstrip('/')}/hooks/amocrm/{key}"}

    def deal_url(self, base_url: str, deal_id: str) -> str:
        return f"{base_url.rstrip('/')}/leads/detail/{deal_id}"

    def connect(self, base_url: str, fields: Mapping[str, Any]) -> AccountConnection | None:
        if fields:
            raise ValueError(f"unknown fields for amocrm: {', '.join(sorted(fields))}")
        return None

    def make_limiter(self, settings: Any) -> SlidingWindowLimiter:
        return SlidingWindowLimiter(settings.amocrm_rate_per_second)

    def make_client(
        self,
        base_url: str,
        tokens: TokenSource,
        limiter: SlidingWindowLimiter,
        *,
        max_retries: int,
        backoff_base: float,
        backoff_cap: float,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> AmoCrmClient:
        return AmoCrmClient(
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
        return await oauth.exchange(
            base_url,
            client_id=client_id,
            client_secret=client_secret,
            redirect_uri=redirect_uri,
            code=code,
            refresh_token=refresh_token,
            transport=transport,
        )
