"""Zadarma: form posts NOTIFY_START / NOTIFY_INTERNAL / NOTIFY_ANSWER / NOTIFY_END /
NOTIFY_OUT_START / NOTIFY_OUT_END / NOTIFY_RECORD, signed in the `Signature` header.

Signature = base64 of the hex HMAC-SHA1 (as PHP's hash_hmac returns it) of fields that depend
on the event, with the account's API secret. Saving the URL in Zadarma's panel first checks it
with `GET ?zd_echo=X`, which must answer X. `call_start` is wall-clock time in the PBX's time
zone (an option here, Moscow by default); the end of a call is when NOTIFY_END arrived.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from integrations.base import CallDirection, CallEvent, CallStatus, DomainEvent, UnknownEntity
from integrations.phones import to_e164

from .base import HookRequest, HookVerdict, StoredHook, WebhookMalformed, WebhookRejected
from .common import as_int, digest, form_fields, text

# The fields each event's signature covers, in order.
SIGNED: dict[str, tuple[str, ...]] = {
    "NOTIFY_START": ("caller_id", "called_did", "call_start"),
    "NOTIFY_INTERNAL": ("caller_id", "called_did", "call_start"),
    "NOTIFY_END": ("caller_id", "called_did", "call_start"),
    "NOTIFY_ANSWER": ("caller_id", "destination", "call_start"),
    "NOTIFY_OUT_START": ("internal", "destination", "call_start"),
    "NOTIFY_OUT_END": ("internal", "destination", "call_start"),
    "NOTIFY_RECORD": ("pbx_call_id", "call_id_with_rec"),
}
STATUSES = {
    "answered": CallStatus.ANSWERED,
    "busy": CallStatus.BUSY,
    "no answer": CallStatus.MISSED,
    "cancel": CallStatus.MISSED,
}


def signature(fields: Mapping[str, str], secret: str) -> str:
    event = fields.get("event", "")
    message = "".join(fields.get(name, "") for name in SIGNED[event])
    hexdigest = hmac.new(secret.encode(), message.encode(), hashlib.sha1).hexdigest()
    return base64.b64encode(hexdigest.encode()).decode()


class ZadarmaAdapter:
    name = "zadarma"
    secret_fields = ("api_secret",)
    option_fields = ("timezone",)
    methods = ("GET", "POST")

    def verify(self, request: HookRequest, credentials: Mapping[str, Any], now: datetime) -> HookVerdict:
        if request.method == "GET":
            echo = request.query.get("zd_echo")
            if echo is None:
                raise WebhookMalformed("a GET from Zadarma carries zd_echo")
            return HookVerdict(dedup_key="", store=False, response=echo, media_type="text/plain")
        fields = form_fields(request.body)
        event = fields.get("event", "")
        if event not in SIGNED:
            if event == "NOTIFY_IVR":  # signed by nothing we can check, and says nothing we keep
                return HookVerdict(dedup_key="", store=False)
            raise WebhookMalformed(f"unknown event {event[:40]!r}")
        given = request.headers.get("signature", "")
        if not given or not hmac.compare_digest(
            given.encode(), signature(fields, str(credentials.get("api_secret", ""))).encode()
        ):
            raise WebhookRejected("the Signature header does not match")
        zone = str(credentials.get("timezone") or "Europe/Moscow")
        return HookVerdict(dedup_key=digest(request.body.decode("utf-8")), meta={"timezone": zone})

    def parse(self, hook: StoredHook, *, region: str, received_at: datetime) -> list[DomainEvent]:
        fields = form_fields(hook.body.encode("utf-8"))
        event = fields.get("event", "")
        call_id = text(fields.get("pbx_call_id"))
        if call_id is None or event not in SIGNED:
            return [UnknownEntity(kind=f"zadarma.{event}")]
        if event == "NOTIFY_RECORD":
            rec = text(fields.get("call_id_with_rec"))
            return [CallEvent(provider=self.name, call_id=call_id, recording_url=f"zadarma:{rec}" if rec else None)]
        started = _local(fields.get("call_start"), hook.meta.get("timezone", "Europe/Moscow"))
        outgoing = event.startswith("NOTIFY_OUT_")
        client = fields.get("destination") if outgoing else fields.get("caller_id")
        common: dict[str, Any] = {
            "provider": self.name,
            "call_id": call_id,
            "direction": CallDirection.OUT if outgoing else CallDirection.IN,
            "client_number": to_e164(text(client), region),
            "manager_ref": text(fields.get("internal")),
            "started_at": started,
        }
        if not outgoing:
            common["line_number"] = to_e164(text(fields.get("called_did")), region)
        if event == "NOTIFY_ANSWER":
            return [CallEvent(**common, answered_at=received_at)]
        if event in ("NOTIFY_END", "NOTIFY_OUT_END"):
            status = STATUSES.get((fields.get("disposition") or "").lower(), CallStatus.FAILED)
            talk = as_int(fields.get("duration")) or 0
            answered = status is CallStatus.ANSWERED
            ended = max(received_at, started) if started else received_at
            return [
                CallEvent(
                    **common,
                    status=status,
                    is_final=True,
                    ended_at=ended,
                    talk_seconds=talk if answered else 0,
                    answered_at=ended - timedelta(seconds=talk) if answered else None,
                    duration_seconds=int((ended - started).total_seconds()) if started else None,
                )
            ]
        return [CallEvent(**common)]


def _local(value: str | None, zone: str) -> datetime | None:
    if not value:
        return None
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        tz = ZoneInfo("Europe/Moscow")
    try:
        return datetime.strptime(value.strip(), "%Y-%m-%d %H:%M:%S").replace(tzinfo=tz).astimezone(UTC)
    except ValueError:
        return None
