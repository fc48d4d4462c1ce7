"""Sipuni: "events on the PBX" sent by GET or POST as URL-encoded fields, one request per event:

    event  1 call started, 3 answered, 2 call ended, 4 one leg of a transferred call ended
    call_id, timestamp (unix), src_num / src_type, dst_num / dst_type (1 outside number,
    2 an employee), short_src_num / short_dst_num (extensions), call_start_timestamp,
    call_answer_timestamp, status (ANSWER, BUSY, NOANSWER, CANCEL, CONGESTION, CHANUNAVAIL),
    call_record_link, last_called

Sipuni signs nothing: the URL given to it carries the account's key and a `token` of our own
(`…/hooks/telephony/sipuni/{key}?token=…`), and both must match. It must be answered with
`{"success": true}`, or it stops sending.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from integrations.base import CallDirection, CallEvent, CallStatus, DomainEvent, UnknownEntity
from integrations.phones import to_e164
from integrations.timestamps import from_unix as unix

from .base import HookRequest, HookVerdict, StoredHook, WebhookMalformed, WebhookRejected
from .common import digest, form_fields, text

STATUSES = {
    "ANSWER": CallStatus.ANSWERED,
    "BUSY": CallStatus.BUSY,
    "NOANSWER": CallStatus.MISSED,
    "CANCEL": CallStatus.MISSED,
    "CONGESTION": CallStatus.FAILED,
    "CHANUNAVAIL": CallStatus.FAILED,
}
SUCCESS = {"success": True}


class SipuniAdapter:
    name = "sipuni"
    secret_fields = ("token",)
    methods = ("GET", "POST")

    def verify(self, request: HookRequest, credentials: Mapping[str, Any], now: datetime) -> HookVerdict:
        token = request.query.get("token", "")
        if not token or not hmac.compare_digest(token.encode(), str(credentials.get("token", "")).encode()):
            raise WebhookRejected("the token in the URL is not this account's")
        fields = dict(request.query) if request.method == "GET" else form_fields(request.body)
        fields.pop("token", None)  # a secret: not part of what we keep
        if fields.get("event") not in ("1", "2", "3", "4"):
            raise WebhookMalformed("event must be 1, 2, 3 or 4")
        if not text(fields.get("call_id")):
            raise WebhookMalformed("call_id is missing")
        stored = urlencode(sorted(fields.items()))
        return HookVerdict(dedup_key=digest(stored), response=SUCCESS, stored_body=stored)

    def parse(self, hook: StoredHook, *, region: str, received_at: datetime) -> list[DomainEvent]:
        f = form_fields(hook.body.encode("utf-8"))
        event, call_id = f.get("event"), text(f.get("call_id"))
        if call_id is None or event not in ("1", "2", "3"):
            return [UnknownEntity(kind=f"sipuni.{event}")]
        incoming = f.get("src_type") == "1"
        at = unix(f.get("timestamp")) or received_at
        common: dict[str, Any] = {
            "provider": self.name,
            "call_id": call_id,
            "direction": CallDirection.IN if incoming else CallDirection.OUT,
            "client_number": to_e164(text(f.get("src_num") if incoming else f.get("dst_num")), region),
            "manager_ref": text(f.get("short_dst_num") or f.get("last_called"))
            if incoming
            else text(f.get("short_src_num")),
            "started_at": unix(f.get("call_start_timestamp")) or (at if event == "1" else None),
        }
        if event == "1":
            return [CallEvent(**common)]
        if event == "3":
            return [CallEvent(**common, answered_at=at)]
        status = STATUSES.get((f.get("status") or "").upper(), CallStatus.FAILED)
        answered_at = unix(f.get("call_answer_timestamp")) if status is CallStatus.ANSWERED else None
        started = common["started_at"]
        return [
            CallEvent(
                **common,
                ended_at=at,
                answered_at=answered_at,
                status=status,
                is_final=True,
                talk_seconds=max(0, int((at - answered_at).total_seconds())) if answered_at else 0,
                duration_seconds=max(0, int((at - started).total_seconds())) if started else None,
                recording_url=text(f.get("call_record_link")),
            )
        ]
