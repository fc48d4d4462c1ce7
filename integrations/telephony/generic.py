"""Any other PBX: one JSON call event per POST, signed per the Standard Webhooks spec.

Headers `webhook-id`, `webhook-timestamp` (unix seconds) and `webhook-signature` (space-separated
`v1,<base64>` entries, several while a key is rotated). The signature is HMAC-SHA256 over
`<id>.<timestamp>.<raw body>` with the secret (`whsec_` + base64 key, or any other string used
as its own bytes). A timestamp more than 5 minutes from our clock is refused; a webhook-id seen
before is stored once (the inbox's unique key), so a replay changes nothing.

The body (see README, "Generic PBX"):
    {"call_id": "…", "event": "start|answer|end|recording", "direction": "in|out|internal",
     "client_number": "…", "line_number": "…", "manager": "<extension or login>",
     "started_at": "<ISO 8601>", "answered_at": …, "ended_at": …, "talk_seconds": 0,
     "duration_seconds": 0, "status": "answered|missed|busy|failed", "recording_url": "https://…"}
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from integrations.base import CallDirection, CallEvent, CallStatus, DomainEvent
from integrations.phones import to_e164

from .base import HookRequest, HookVerdict, StoredHook, WebhookMalformed, WebhookRejected
from .common import digest

TOLERANCE_SECONDS = 5 * 60


class GenericCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    call_id: str = Field(min_length=1, max_length=128)
    event: Literal["start", "answer", "end", "recording"] = "end"
    direction: CallDirection | None = None
    client_number: str | None = Field(default=None, max_length=64)
    line_number: str | None = Field(default=None, max_length=64)
    manager: str | None = Field(default=None, max_length=100)
    started_at: AwareDatetime | None = None
    answered_at: AwareDatetime | None = None
    ended_at: AwareDatetime | None = None
    talk_seconds: int | None = Field(default=None, ge=0, le=86400)
    duration_seconds: int | None = Field(default=None, ge=0, le=86400)
    status: CallStatus | None = None
    recording_url: str | None = Field(default=None, max_length=2000)


def _key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[len("whsec_") :], validate=True)
        except (binascii.Error, ValueError):
            pass
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def _call(body: bytes) -> GenericCall:
    try:
        return GenericCall.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise WebhookMalformed(f"{where}: {first.get('msg')}") from None


class GenericAdapter:
    name = "generic"
    secret_fields = ("secret",)
    # The next or the previous secret, accepted beside the main one while a key is rotated.
    option_fields = ("secondary_secret",)

    def verify(self, request: HookRequest, credentials: Mapping[str, Any], now: datetime) -> HookVerdict:
        msg_id = request.headers.get("webhook-id", "")
        stamp = request.headers.get("webhook-timestamp", "")
        given = request.headers.get("webhook-signature", "")
        if not (msg_id and stamp and given):
            raise WebhookRejected("webhook-id, webhook-timestamp and webhook-signature are required")
        # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
        if not (stamp.isascii() and stamp.isdigit()) or abs(now.timestamp() - int(stamp)) > TOLERANCE_SECONDS:
            raise WebhookRejected("webhook-timestamp is more than 5 minutes away from our clock")
        secrets = [s for s in (credentials.get("secret"), credentials.get("secondary_secret")) if s]
        expected = {sign(str(s), msg_id, stamp, request.body).encode() for s in secrets}
        offered = [part.encode() for part in given.split(" ") if part.startswith("v1,")]
        if not any(hmac.compare_digest(o, e) for o in offered for e in expected):
            raise WebhookRejected("no webhook-signature matches")
        _call(request.body)
        return HookVerdict(dedup_key=digest("webhook-id", msg_id))

    def parse(self, hook: StoredHook, *, region: str, received_at: datetime) -> list[DomainEvent]:
        c = _call(hook.body.encode("utf-8"))
        final = c.event == "end"
        talk = c.talk_seconds
        if final and talk is None and c.answered_at and c.ended_at:
            talk = max(0, int((c.ended_at - c.answered_at).total_seconds()))
        status = c.status
        if final and status is None:
            status = CallStatus.ANSWERED if (talk or 0) > 0 else CallStatus.MISSED
        return [
            CallEvent(
                provider=self.name,
                call_id=c.call_id,
                direction=c.direction,
                client_number=to_e164(c.client_number, region),
                line_number=to_e164(c.line_number, region),
                manager_ref=c.manager,
                started_at=c.started_at,
                answered_at=c.answered_at or (received_at if c.event == "answer" else None),
                ended_at=c.ended_at or (received_at if final else None),
                talk_seconds=talk,
                duration_seconds=c.duration_seconds,
                status=status if final else None,
                is_final=final,
                recording_url=c.recording_url,
            )
        ]
