"""amoCRM words → CRM-neutral words. Shared by the webhook parser and the API client."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from integrations.base import CallDirection, CallEvent, CallStatus, DomainEvent, NoteAdded, NoteKind, StageKind
from integrations.phones import to_e164

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


# call_status of a call note (API v4 /calls): 1 left a message, 2 call back later, 3 not there,
# 4 talked, 5 wrong number, 6 no answer, 7 busy.
CALL_STATUSES: dict[str, CallStatus] = {
    "1": CallStatus.MISSED,
    "2": CallStatus.MISSED,
    "3": CallStatus.MISSED,
    "4": CallStatus.ANSWERED,
    "5": CallStatus.FAILED,
    "6": CallStatus.MISSED,
    "7": CallStatus.BUSY,
}
# The `uniq` crmwatch gives the calls it logs itself (app/calls/logging): not a new call.
OWN_UNIQ_PREFIX = "crmwatch:"


def call_from_note(note: NoteAdded, region: str) -> CallEvent | None:
    """A call note (note_type 10/11, written by a PBX widget or by hand) as a call of its own."""
    if note.kind not in (NoteKind.CALL_IN, NoteKind.CALL_OUT):
        return None
    p = note.params
    uniq = str(p.get("uniq") or "").strip()
    if uniq.startswith(OWN_UNIQ_PREFIX):
        return None
    try:
        duration = max(0, int(float(p.get("duration") or 0)))
    except (TypeError, ValueError):
        duration = 0
    status = CALL_STATUSES.get(str(p.get("call_status") or "")) or (
        CallStatus.ANSWERED if duration > 0 else CallStatus.MISSED
    )
    answered = status is CallStatus.ANSWERED
    # amoCRM stamps the note when the call is logged, which is when it ended.
    ended = note.created_at
    started = ended - timedelta(seconds=duration)
    link = p.get("link")
    return CallEvent(
        provider="amocrm",
        call_id=(uniq or f"note:{note.id}")[:128],
        direction=CallDirection.IN if note.kind is NoteKind.CALL_IN else CallDirection.OUT,
        client_number=to_e164(str(p.get("phone") or ""), region),
        manager_id=note.created_by,
        started_at=started,
        answered_at=started if answered else None,
        ended_at=ended,
        talk_seconds=duration if answered else 0,
        duration_seconds=duration,
        status=status,
        is_final=True,
        recording_url=link if isinstance(link, str) and link else None,
        deal_id=note.deal_id,
    )


def with_calls(events: list[DomainEvent], region: str) -> list[DomainEvent]:
    """The events, plus a call for every call note among them."""
    calls = [c for ev in events if isinstance(ev, NoteAdded) and (c := call_from_note(ev, region)) is not None]
    return [*events, *calls] if calls else events
