"""A call's facts as a finding shows them: number, time, duration, manager, recording link."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import phonenumbers


def pretty_number(e164: str | None) -> str:
    if not e164:
        return "?"
    try:
        return phonenumbers.format_number(phonenumbers.parse(e164), phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    except phonenumbers.NumberParseException:
        return e164


def duration(seconds: int | None, lang: str) -> str:
    seconds = int(seconds or 0)
    minutes, rest = divmod(seconds, 60)
    if lang == "ru":
        return f"{minutes} мин {rest} с" if minutes else f"{rest} с"
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def local_time(call: Any, timezone: str) -> str:
    at = call.started_at or call.ended_at
    return at.astimezone(ZoneInfo(timezone)).strftime("%d.%m %H:%M") if at else "?"


def details(call: Any) -> dict[str, Any]:
    if call is None:
        return {}
    return {
        "call_id": call.id,
        "provider": call.provider,
        "direction": call.direction,
        "number": call.client_number,
        "started_at": call.started_at.isoformat() if call.started_at else None,
        "ended_at": call.ended_at.isoformat() if call.ended_at else None,
        "talk_seconds": call.talk_seconds,
        "duration_seconds": call.duration_seconds,
        "status": call.status,
        "manager_id": call.manager_id,
        "manager_ref": call.manager_ref,
        "recording_url": call.recording_url,
        "deal_id": call.deal_id,
        "contact_id": call.contact_id,
    }
