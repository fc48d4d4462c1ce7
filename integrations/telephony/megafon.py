"""MegaFon Virtual PBX "CRM API": form posts with `cmd` = history / event / contact and the shared
`crm_token` the PBX was given.

- `history` is the finished call: type in/out, status (Success / missed / Cancel / Busy /
  NotAvailable / NotAllowed / NotFound), start (YYYYmmddTHHMMSSZ, UTC), duration (seconds; the
  history gives no separate talk time, so an answered call's talk is its duration), link.
- `event` is progress: INCOMING / OUTGOING, ACCEPTED, COMPLETED / CANCELLED.
- `contact` is a question the PBX waits on: who is this number, and whose client? Answered from
  the mirror with `{"contact_name", "responsible"}`; nothing is stored.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from integrations.base import CallDirection, CallEvent, CallStatus, DomainEvent, UnknownEntity
from integrations.phones import to_e164

from .base import HookRequest, HookVerdict, StoredHook, WebhookMalformed, WebhookRejected
from .common import as_int, digest, form_fields, text

STATUSES = {
    "success": CallStatus.ANSWERED,
    "missed": CallStatus.MISSED,
    "cancel": CallStatus.MISSED,
    "busy": CallStatus.BUSY,
    "notavailable": CallStatus.FAILED,
    "notallowed": CallStatus.FAILED,
    "notfound": CallStatus.FAILED,
}
DIRECTIONS = {
    "in": CallDirection.IN,
    "incoming": CallDirection.IN,
    "out": CallDirection.OUT,
    "outgoing": CallDirection.OUT,
}


class MegafonAdapter:
    name = "megafon"
    secret_fields = ("crm_token",)

    def verify(self, request: HookRequest, credentials: Mapping[str, Any], now: datetime) -> HookVerdict:
        fields = form_fields(request.body)
        token = fields.get("crm_token", "")
        if not token or not hmac.compare_digest(token.encode(), str(credentials.get("crm_token", "")).encode()):
            raise WebhookRejected("crm_token is not this account's")
        cmd = fields.get("cmd", "")
        if cmd == "contact":
            return HookVerdict(dedup_key="", store=False, lookup_number=text(fields.get("phone")) or "")
        if cmd not in ("history", "event"):
            raise WebhookMalformed(f"unknown cmd {cmd[:40]!r}")
        if not text(fields.get("callid")):
            raise WebhookMalformed("callid is missing")
        # The token is a secret: it is not part of what we keep.
        fields.pop("crm_token", None)
        return HookVerdict(dedup_key=digest(request.body.decode("utf-8")), stored_body=urlencode(fields))

    def parse(self, hook: StoredHook, *, region: str, received_at: datetime) -> list[DomainEvent]:
        f = form_fields(hook.body.encode("utf-8"))
        call_id = text(f.get("callid"))
        if call_id is None:
            return [UnknownEntity(kind=f"megafon.{f.get('cmd')}")]
        kind = (f.get("type") or "").lower()
        common: dict[str, Any] = {
            "provider": self.name,
            "call_id": call_id,
            "client_number": to_e164(text(f.get("phone")), region),
            "line_number": to_e164(text(f.get("diversion") or f.get("telnum")), region),
            "manager_ref": text(f.get("user")) or text(f.get("ext")),
        }
        if f.get("cmd") == "history":
            started = _start(f.get("start"))
            total = as_int(f.get("duration")) or 0
            status = STATUSES.get((f.get("status") or "").lower(), CallStatus.FAILED)
            answered = status is CallStatus.ANSWERED
            ended = started + timedelta(seconds=total) if started else received_at
            return [
                CallEvent(
                    **common,
                    direction=DIRECTIONS.get(kind),
                    started_at=started,
                    ended_at=ended,
                    answered_at=started if answered else None,
                    duration_seconds=total,
                    talk_seconds=total if answered else 0,
                    status=status,
                    is_final=True,
                    recording_url=text(f.get("link")),
                )
            ]
        if kind in ("incoming", "outgoing"):
            return [CallEvent(**common, direction=DIRECTIONS[kind], started_at=received_at)]
        if kind == "accepted":
            return [CallEvent(**common, answered_at=received_at)]
        return [CallEvent(**common)]


def _start(value: str | None) -> datetime | None:
    try:
        return datetime.strptime((value or "").strip(), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
