"""Bitrix24's own telephony (ONVOXIMPLANTCALLEND) as the call model, and the wire words of
logging an outside PBX's calls into the portal (telephony.externalcall.*).

The call-end event says who talked to which number, when and how it ended, but not which
card the call is about: that is the call's CRM activity (CRM_ACTIVITY_ID), whose bindings
(crm.activity.binding.list) name the deal. The parser therefore yields the call's facts and a
RecordNamed("call", …); the client reads the binding through `batch`, outside the inbox
transaction, and answers with a CallEvent that only carries the deal (and the recording,
which voximplant.statistic.get knows and the event does not).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from integrations.base import CallDirection, CallEvent, CallStatus, DomainEvent, NewCall, RecordNamed, UnknownEntity
from integrations.phones import to_e164

from .wire import DEAL_TYPE_ID, sid, when

PROVIDER = "bitrix24"
CALL_REF = "call"
# CALL_TYPE: 1 outgoing, 2 incoming, 3 incoming redirected to a mobile or landline, 4 callback
# (the portal rings the manager, then dials the client who asked for it: an outgoing call),
# 5 information call (a robot reading a text: no manager, no conversation, not a sales call).
_DIRECTION = {"1": CallDirection.OUT, "2": CallDirection.IN, "3": CallDirection.IN, "4": CallDirection.OUT}
INFO_CALL = "5"
# CALL_FAILED_CODE: 200 success, 304 missed, 486 busy; 603 declined, 603-S cancelled and the
# rest (403, 404, 480, 484, 503, 402, 423, OTHER) are failures of the line or the number.
_STATUS = {"304": CallStatus.MISSED, "486": CallStatus.BUSY}
# telephony.externalcall.register TYPE and finish STATUS_CODE for our call model.
REGISTER_TYPE = {CallDirection.OUT: 1, CallDirection.IN: 2}
FINISH_CODE = {CallStatus.ANSWERED: "200", CallStatus.MISSED: "304", CallStatus.BUSY: "486", CallStatus.FAILED: "603"}


def _int(value: Any) -> int | None:
    try:
        return int(float(str(value)))
    except (TypeError, ValueError):
        return None


def status_of(code: Any, duration: int | None) -> CallStatus:
    code = str(code or "").strip().upper()
    if code == "200":
        # A "successful" call that lasted nothing never reached a conversation.
        return CallStatus.ANSWERED if (duration or 0) > 0 else CallStatus.MISSED
    return _STATUS.get(code, CallStatus.FAILED)


def ref_id(call_id: str, activity_id: str | None) -> str:
    """The RecordNamed id of a call: its activity (digits, may be empty) and the call id."""
    return f"{activity_id or ''}:{call_id}"


def split_ref(value: str) -> tuple[str | None, str]:
    activity, _, call_id = value.partition(":")
    return (activity or None), call_id


def call_end(data: Any, *, region: str) -> list[DomainEvent]:
    """ONVOXIMPLANTCALLEND's `data` → the finished call, and the reference that names its card."""
    if not isinstance(data, dict) or not sid(data.get("CALL_ID")):
        return [UnknownEntity("onvoximplantcallend")]
    call_type = str(data.get("CALL_TYPE") or "").strip()
    if call_type == INFO_CALL or call_type not in _DIRECTION:
        return [UnknownEntity("onvoximplantcallend")]
    call_id = str(data["CALL_ID"])
    duration = _int(data.get("CALL_DURATION"))
    status = status_of(data.get("CALL_FAILED_CODE"), duration)
    started = when(data.get("CALL_START_DATE"))
    # The event has no end time; the call lasted at least CALL_DURATION from its start. An end
    # taken too early only lets more of the manager's later notes count for the call.
    ended = started + timedelta(seconds=duration or 0) if started else None
    manager = sid(data.get("PORTAL_USER_ID"))
    event = CallEvent(
        provider=PROVIDER,
        call_id=call_id,
        direction=_DIRECTION[call_type],
        client_number=to_e164(sid(data.get("PHONE_NUMBER")), region),
        line_number=to_e164(sid(data.get("PORTAL_NUMBER")), region),
        manager_id=manager if manager != "0" else None,
        started_at=started,
        ended_at=ended,
        talk_seconds=duration if status is CallStatus.ANSWERED else 0,
        duration_seconds=duration,
        status=status,
        recording_url=sid(data.get("CALL_RECORD_URL")),
        is_final=True,
    )
    return [event, RecordNamed(CALL_REF, ref_id(call_id, sid(data.get("CRM_ACTIVITY_ID"))))]


def binding_commands(refs: list[RecordNamed]) -> tuple[dict[str, tuple[str, dict[str, Any]]], dict[str, str]]:
    """Batch commands that read, per call, its statistics row and its activity's bindings.
    A call without an activity id in the event takes it from its statistics row, in the same batch."""
    commands: dict[str, tuple[str, dict[str, Any]]] = {}
    calls: dict[str, str] = {}
    for i, ref in enumerate(dict.fromkeys(refs)):
        activity, call_id = split_ref(ref.id)
        calls[f"c{i}"] = call_id
        commands[f"s{i}"] = ("voximplant.statistic.get", {"FILTER": {"CALL_ID": call_id}})
        commands[f"b{i}"] = (
            "crm.activity.binding.list",
            {"activityId": activity or f"$result[s{i}][0][CRM_ACTIVITY_ID]"},
        )
    return commands, calls


def bound_deal(bindings: Any) -> str | None:
    """The deal among an activity's bindings; the newest when Bitrix24 bound the call to several."""
    deals = (
        [
            sid(b.get("entityId"))
            for b in bindings
            if isinstance(b, dict) and str(b.get("entityTypeId")) == str(DEAL_TYPE_ID)
        ]
        if isinstance(bindings, list)
        else []
    )
    deals = [d for d in deals if d]
    return max(deals, key=lambda d: (len(d), d)) if deals else None


def binding_event(call_id: str, stat: Any, bindings: Any) -> CallEvent | None:
    """What the portal adds to the event: the card (deal) and the recording. Not final, so it
    only fills in; a call bound to a contact alone is left to the number matching."""
    row = stat[0] if isinstance(stat, list) and stat and isinstance(stat[0], dict) else {}
    deal = bound_deal(bindings)
    record = sid(row.get("CALL_RECORD_URL"))
    if deal is None and record is None:
        return None
    return CallEvent(provider=PROVIDER, call_id=call_id, deal_id=deal, recording_url=record)


def register_params(call: NewCall, external_id: str) -> dict[str, Any]:
    params: dict[str, Any] = {
        "USER_ID": call.responsible_user_id,
        "PHONE_NUMBER": call.phone,
        "TYPE": REGISTER_TYPE.get(call.direction, 1),
        "CALL_START_DATE": call.started_at.isoformat(timespec="seconds"),
        # Never create a lead for a number the portal does not know, never pop up a card, never
        # post into the manager's chat: this is a record of a call that already happened.
        "CRM_CREATE": 0,
        "SHOW": 0,
        "ADD_TO_CHAT": 0,
        "EXTERNAL_CALL_ID": external_id,
    }
    if call.contact_id:
        params["CRM_ENTITY_TYPE"], params["CRM_ENTITY_ID"] = "CONTACT", call.contact_id
    return params


def finish_params(call: NewCall, register_key: str) -> dict[str, Any]:
    params: dict[str, Any] = {
        "CALL_ID": f"$result[{register_key}][CALL_ID]",
        "USER_ID": call.responsible_user_id,
        "DURATION": call.talk_seconds if call.status is CallStatus.ANSWERED else 0,
        "STATUS_CODE": FINISH_CODE.get(call.status, "603"),
        "ADD_TO_CHAT": 0,
    }
    if call.recording_url and call.recording_url.startswith("http"):
        params["RECORD_URL"] = call.recording_url
    return params


def external_call_id(uniq: str) -> str:
    """Bitrix24 keeps EXTERNAL_CALL_ID in its statistics: the key a resend is found again by."""
    return uniq[:255]
