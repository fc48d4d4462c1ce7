"""Writing finished calls into the CRM card (optional per PBX: `log_calls`), through the outbox.

A call is queued in the same transaction that learns it is finished and matched, keyed by the
call, so it is written once. amoCRM files a call by its number (POST /api/v4/calls) and drops a
number no contact carries: a call matched to a deal only through a company, or not to a contact
at all, is written as a note on the matched deal instead (marked, so a lost answer is found
again rather than written twice). A call sent by number carries its `uniq`; a row tried before
(a lost answer, a worker killed mid-request) asks the CRM for that uniq before sending again.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app import wording
from app.db import dialect_insert, utcnow
from app.outbox.models import OutboxAction
from app.outbox.senders import Batch, Outcome, marker, register
from integrations.base import CallDirection, CallStatus, NewCall, NewNote

from . import facts
from .models import Call, TelephonyConfig

KIND = "log_call"
UNIQ_PREFIX = "crmwatch:"  # integrations/amocrm/mapping.OWN_UNIQ_PREFIX: not read back as a new call


async def enqueue(s: AsyncSession, account_id: int, call_ids: list[int]) -> int:
    """Outbox rows for the finished, matched calls of PBXs that log calls; returns how many were added."""
    logging_pbx = set(
        await s.scalars(
            select(TelephonyConfig.provider).where(
                TelephonyConfig.account_id == account_id, TelephonyConfig.log_calls.is_(True)
            )
        )
    )
    if not logging_pbx:
        return 0
    calls = await s.scalars(
        select(Call).where(
            Call.account_id == account_id,
            Call.id.in_(call_ids),
            Call.provider.in_(sorted(logging_pbx)),
            Call.is_final.is_(True),
            Call.deal_id.is_not(None),
            Call.direction.is_distinct_from("internal"),
            Call.client_number.is_not(None),
        )
    )
    now = utcnow()
    rows = [
        {
            "account_id": account_id,
            "finding_id": None,
            "kind": KIND,
            "purpose": "log",
            "dedup_key": f"call:{c.id}",
            "deal_id": c.deal_id,
            "user_id": c.manager_id,
            "ref_id": c.id,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for c in calls
    ]
    if not rows:
        return 0
    result = await s.execute(dialect_insert(s, OutboxAction.__table__).values(rows).on_conflict_do_nothing())
    return result.rowcount or 0


def note_text(call: Call, lang: str, timezone: str, marker: str) -> str:
    incoming = call.direction == "in"
    number = facts.pretty_number(call.client_number)
    when = facts.local_time(call, timezone)
    words = wording.of(lang)
    what = words.CALL_INCOMING if incoming else words.CALL_OUTGOING
    how = (
        words.CALL_TALK.format(duration=facts.duration(call.talk_seconds, lang))
        if call.status == "answered"
        else words.CALL_NOT_ANSWERED
    )
    record = f"\n{call.recording_url}" if call.recording_url and call.recording_url.startswith("http") else ""
    return f"{what} {number}, {when}, {how}{record}\n{marker}"


def new_call(row: OutboxAction, call: Call) -> NewCall:
    """The call as the CRM is asked to file it; `uniq` names the call, so a resend is found again."""
    return NewCall(
        request_id=str(row.id),
        direction=CallDirection(call.direction or "out"),
        phone=call.client_number,
        status=CallStatus(call.status or "missed"),
        talk_seconds=call.talk_seconds or 0,
        started_at=call.started_at or call.created_at,
        uniq=f"{UNIQ_PREFIX}{call.provider}:{call.provider_call_id}",
        responsible_user_id=call.manager_id,
        recording_url=call.recording_url,
        contact_id=call.contact_id,
    )


async def send(batch: Batch) -> Outcome:
    """Delivers one batch of log_call rows: calls by number where a contact carries it, notes otherwise."""
    client, account, rows, out = batch.client, batch.account, batch.rows, batch.outcome
    done, texts = out.sent, out.texts
    async with batch.rt.reads() as s:
        calls = {c.id: c for c in await s.scalars(select(Call).where(Call.id.in_([r.ref_id for r in rows])))}
    by_number: list[tuple[Any, Call]] = []
    as_note: list[tuple[Any, Call]] = []
    for row in rows:
        call = calls.get(row.ref_id)
        if call is None:
            out.cancelled.add(row.id)
        elif call.contact_id:
            by_number.append((row, call))
        else:
            as_note.append((row, call))
        if call is not None:
            texts[row.id] = note_text(call, account.language, account.timezone, marker(row.id))
    if by_number:
        new_calls = {row.id: new_call(row, call) for row, call in by_number}
        # A row tried before may have been written with its answer lost: find it by its uniq first.
        retried = [new_calls[row.id] for row, _ in by_number if row.attempts > 1]
        found = await client.find_calls(retried) if retried else {}
        for row, _ in by_number:
            if str(row.id) in found:
                done[row.id] = found[str(row.id)]
        todo_calls = [new_calls[row.id] for row, _ in by_number if row.id not in done]
        created = await client.log_calls(todo_calls) if todo_calls else {}
        for row, _ in by_number:
            if row.id in done:
                continue
            if str(row.id) in created:
                done[row.id] = created[str(row.id)]
            else:
                as_note.append((row, calls[row.ref_id]))  # the CRM dropped it: the deal gets a note
    if as_note:
        retried = [row for row, _ in as_note if row.attempts > 1]
        if retried:
            found = await client.find_marked("note", [r.deal_id for r in retried], [marker(r.id) for r in retried])
            for row in retried:
                if marker(row.id) in found:
                    done[row.id] = found[marker(row.id)]
        todo = [(row, call) for row, call in as_note if row.id not in done]
        if todo:
            created = await client.add_notes(
                [NewNote(request_id=str(row.id), deal_id=row.deal_id, text=texts[row.id]) for row, _ in todo]
            )
            for row, _ in todo:
                if str(row.id) in created:
                    done[row.id] = created[str(row.id)]
    return out


register(KIND, send)
