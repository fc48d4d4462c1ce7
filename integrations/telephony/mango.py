"""Mango Office VPBX: form callbacks `vpbx_api_key`, `sign`, `json` to `<our url>/events/<kind>`.

sign = hex sha256(api_key + json + api_salt). The summary is the last event of a call and its
times are unix timestamps, not durations; a call was answered when talk_time > 0 (entry_result
is 1 for a call that ended in the voice menu, so it says nothing about a manager talking).
`events/call` events of one call carry a growing `seq`; an older one arriving late is dropped.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from integrations.base import CallDirection, CallEvent, CallStatus, DomainEvent, UnknownEntity
from integrations.phones import to_e164
from integrations.timestamps import from_unix as unix

from .base import HookRequest, HookVerdict, StoredHook, WebhookMalformed, WebhookRejected
from .common import as_int, digest, form_fields, text

EVENTS = ("events/call", "events/summary", "events/recording", "events/record/added")
DIRECTIONS = {0: CallDirection.INTERNAL, 1: CallDirection.IN, 2: CallDirection.OUT}


def sign(api_key: str, payload: str, api_salt: str) -> str:
    return hashlib.sha256((api_key + payload + api_salt).encode("utf-8")).hexdigest()


def call_summary(
    entry_id: str, *, inbound: bool, extension: str, domain: str, client: str, line: str, start: int, talk: int
) -> dict[str, Any]:
    """The summary Mango posts for a finished call between an extension and an outside number,
    as the demo and the benches send it: an inbound call rings the line; `talk` seconds of
    conversation (0: nobody answered)."""
    manager = {"extension": extension, "number": f"sip:{extension}@{domain}"}
    outside = {"number": client}
    return {
        "entry_id": entry_id,
        "call_direction": 1 if inbound else 2,
        "from": outside if inbound else manager,
        "to": {**manager, "number": line} if inbound else outside,
        "line_number": line,
        "create_time": start,
        "forward_time": start + 2,
        "talk_time": start + 8 if talk else 0,
        "end_time": start + 8 + talk if talk else start + 35,
        "entry_result": 1 if talk else 0,
        "disconnect_reason": 1110,
    }


def signed_form(api_key: str, api_salt: str, event: Mapping[str, Any]) -> str:
    """The form body Mango posts for an event, signed with the account's key and salt."""
    payload = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    return urlencode({"vpbx_api_key": api_key, "sign": sign(api_key, payload, api_salt), "json": payload})


class MangoAdapter:
    name = "mango"
    secret_fields = ("api_key", "api_salt")
    event_paths = True  # the PBX appends "events/<kind>" to the URL it was given

    def verify(self, request: HookRequest, credentials: Mapping[str, Any], now: datetime) -> HookVerdict:
        if request.method != "POST":
            raise WebhookMalformed("Mango posts its events")
        if not request.path.startswith("events/"):
            raise WebhookMalformed(f"not a Mango event path: {request.path[:80]!r}")
        fields = form_fields(request.body)
        missing = [f for f in ("vpbx_api_key", "sign", "json") if f not in fields]
        if missing:
            raise WebhookMalformed(f"missing form fields: {', '.join(missing)}")
        key, salt = str(credentials.get("api_key", "")), str(credentials.get("api_salt", ""))
        if not hmac.compare_digest(fields["vpbx_api_key"].encode(), key.encode()):
            raise WebhookRejected("vpbx_api_key is not this account's")
        if not hmac.compare_digest(fields["sign"].lower().encode(), sign(key, fields["json"], salt).encode()):
            raise WebhookRejected("the sign does not match sha256(api_key + json + api_salt)")
        try:
            data = json.loads(fields["json"])
        except ValueError:
            raise WebhookMalformed("the json field is not JSON") from None
        if not isinstance(data, dict):
            raise WebhookMalformed("the json field is not an object")
        # Only the event is kept: vpbx_api_key is the account's secret, and sign is derived from it.
        return HookVerdict(
            dedup_key=digest(request.path, fields["json"]), stored_body=urlencode({"json": fields["json"]})
        )

    def parse(self, hook: StoredHook, *, region: str, received_at: datetime) -> list[DomainEvent]:
        data = json.loads(form_fields(hook.body.encode("utf-8"))["json"])
        entry = text(data.get("entry_id"))
        if entry is None:
            return [UnknownEntity(kind=f"mango.{hook.path}")]
        if hook.path == "events/summary":
            return [_summary(entry, data, region)]
        if hook.path == "events/call":
            return [_call(entry, data, region)]
        if hook.path in ("events/recording", "events/record/added"):
            return [_recording(entry, data)]
        return [UnknownEntity(kind=f"mango.{hook.path}")]


def _party(data: Mapping[str, Any], side: str) -> tuple[str | None, str | None]:
    """(extension, number) of one side of a call."""
    party = data.get(side) if isinstance(data.get(side), dict) else {}
    return text(party.get("extension")), text(party.get("number"))


def _summary(entry: str, data: Mapping[str, Any], region: str) -> CallEvent:
    direction = DIRECTIONS.get(as_int(data.get("call_direction")) or 0, CallDirection.INTERNAL)
    from_ext, from_number = _party(data, "from")
    to_ext, to_number = _party(data, "to")
    if direction is CallDirection.IN:
        client, manager = from_number, to_ext
    elif direction is CallDirection.OUT:
        client, manager = to_number, from_ext
    else:
        client, manager = None, from_ext
    created, talk, end = unix(data.get("create_time")), unix(data.get("talk_time")), unix(data.get("end_time"))
    talk_seconds = max(0, int((end - talk).total_seconds())) if talk and end else 0
    return CallEvent(
        provider="mango",
        call_id=entry,
        direction=direction,
        client_number=to_e164(client, region),
        line_number=to_e164(text(data.get("line_number")), region),
        manager_ref=manager,
        started_at=created,
        answered_at=talk,
        ended_at=end,
        talk_seconds=talk_seconds,
        duration_seconds=max(0, int((end - created).total_seconds())) if created and end else None,
        status=CallStatus.ANSWERED if talk else CallStatus.MISSED,
        is_final=True,
    )


def _call(entry: str, data: Mapping[str, Any], region: str) -> CallEvent:
    from_ext, from_number = _party(data, "from")
    to_ext, to_number = _party(data, "to")
    if from_ext and to_ext:
        direction, client, manager = CallDirection.INTERNAL, None, from_ext
    elif from_ext:
        direction, client, manager = CallDirection.OUT, to_number, from_ext
    else:
        direction, client, manager = CallDirection.IN, from_number, to_ext
    at = unix(data.get("timestamp"))
    state = text(data.get("call_state"))
    to = data.get("to") if isinstance(data.get("to"), dict) else {}
    return CallEvent(
        provider="mango",
        call_id=entry,
        direction=direction,
        client_number=to_e164(client, region),
        line_number=to_e164(text(to.get("line_number")), region),
        manager_ref=manager,
        started_at=at if state == "Appeared" else None,
        answered_at=at if state == "Connected" else None,
        ended_at=at if state == "Disconnected" else None,
        seq=as_int(data.get("seq")),
    )


def _recording(entry: str, data: Mapping[str, Any]) -> CallEvent:
    # Mango hands out no public link: a recording is fetched by its id through the VPBX API.
    recording = text(data.get("recording_id"))
    return CallEvent(provider="mango", call_id=entry, recording_url=f"mango:{recording}" if recording else None)
