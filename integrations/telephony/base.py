"""What every PBX integration implements: check a callback on the request path, then turn the
stored callback into CallEvents in the inbox worker.

The split mirrors the CRM adapters: `verify` is cheap and synchronous (the PBX waits for our
answer), `parse` runs later and may be retried, so it must be a pure function of what was stored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from integrations.base import DomainEvent, WebhookMalformed, WebhookRejected

__all__ = ["HookRequest", "HookVerdict", "StoredHook", "TelephonyAdapter", "WebhookMalformed", "WebhookRejected"]


@dataclass(frozen=True, slots=True)
class HookRequest:
    method: str
    path: str  # what follows the key in the URL ("events/summary"), "" when nothing does
    query: Mapping[str, str]
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    content_type: str | None = None


@dataclass(frozen=True, slots=True)
class HookVerdict:
    """An authenticated callback: how to recognise a redelivery, and what to answer."""

    dedup_key: str
    store: bool = True  # False: a URL check or a ping, answered and forgotten
    response: Any = field(default_factory=lambda: {"status": "accepted"})
    media_type: str = "application/json"
    # A synchronous question the PBX waits on (MegaFon's "who is this number?"), answered from the mirror.
    lookup_number: str | None = None
    # Settings the later parse needs (a time zone), stored with the callback.
    meta: Mapping[str, str] = field(default_factory=dict)
    # What to keep instead of the raw body (fields sent in the query; a secret left out).
    stored_body: str | None = None


@dataclass(frozen=True, slots=True)
class StoredHook:
    """A callback as the inbox keeps it: the body and the bits of the request its meaning depends on."""

    path: str
    body: str
    content_type: str | None = None
    meta: Mapping[str, str] = field(default_factory=dict)

    def dumps(self) -> str:
        return json.dumps(
            {"path": self.path, "body": self.body, "content_type": self.content_type, "meta": dict(self.meta)},
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @classmethod
    def loads(cls, text: str) -> StoredHook:
        data = json.loads(text)
        return cls(
            path=data.get("path") or "",
            body=data["body"],
            content_type=data.get("content_type"),
            meta=data.get("meta") or {},
        )


class TelephonyAdapter(Protocol):
    name: str  # "mango"
    # The secrets PUT /api/accounts/{id}/telephony/{name} requires; never echoed back.
    secret_fields: tuple[str, ...]

    def verify(self, request: HookRequest, credentials: Mapping[str, Any], now: datetime) -> HookVerdict:
        """Authenticate and shape-check, on the request path. WebhookRejected → 401, nothing
        stored; WebhookMalformed → 400."""
        ...

    def parse(self, hook: StoredHook, *, region: str, received_at: datetime) -> list[DomainEvent]:
        """The stored callback as CRM-neutral events (CallEvents), run by the inbox worker."""
        ...
