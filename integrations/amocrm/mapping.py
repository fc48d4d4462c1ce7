"""amoCRM words → CRM-neutral words. Shared by the webhook parser and the API client."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from integrations.base import NoteKind, StageKind

WON_STATUS_ID = 142
LOST_STATUS_ID = 143

# Webhooks carry numeric note types; API v4 carries names. Both map to one NoteKind.
NOTE_KINDS: dict[str, NoteKind] = {
    "4": NoteKind.COMMON,
    "common": NoteKind.COMMON,
    "10": NoteKind.CALL_IN,
    "call_in": NoteKind.CALL_IN,
    "11": NoteKind.CALL_OUT,
    "call_out": NoteKind.CALL_OUT,
    "25": NoteKind.SYSTEM,
    "service_message": NoteKind.SYSTEM,
    "extended_service_message": NoteKind.SYSTEM,
}

# element_type in webhooks, entity_type in API v4.
ENTITY_TYPES: dict[str, str] = {
    "1": "contact",
    "contacts": "contact",
    "contact": "contact",
    "2": "deal",
    "leads": "deal",
    "lead": "deal",
    "3": "company",
    "companies": "company",
    "company": "company",
    "12": "customer",
    "customers": "customer",
}


def stage_kind(status_id: int | str) -> StageKind:
    sid = int(status_id)
    if sid == WON_STATUS_ID:
        return StageKind.WON
    if sid == LOST_STATUS_ID:
        return StageKind.LOST
    return StageKind.OPEN


def ts(value: Any) -> datetime | None:
    """amoCRM timestamps are unix seconds, as int or string; 0 and blanks mean "none"."""
    if value in (None, "", 0, "0"):
        return None
    try:
        return datetime.fromtimestamp(int(float(value)), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def sid(value: Any) -> str | None:
    """An id as a string; amoCRM uses 0 for "nobody"."""
    if value in (None, "", 0, "0"):
        return None
    return str(value)


def money(value: Any) -> float | None:
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
