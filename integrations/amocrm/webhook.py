"""amoCRM webhooks (form-encoded, PHP bracket keys) → domain events.

One post may carry several entities and several actions; each becomes its own event in
the order amoCRM wrote them. See ../shared/fixtures/amocrm/README.md for the wire shape.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from integrations.base import (
    CompanyDeleted,
    CompanyUpserted,
    ContactDeleted,
    ContactUpserted,
    DealDeleted,
    DealRestored,
    DealUpserted,
    DomainEvent,
    NoteAdded,
    NoteKind,
    ParsedWebhook,
    TaskDeleted,
    TaskUpserted,
    UnknownEntity,
    WebhookMalformed,
)
from integrations.custom_fields import collect
from integrations.formdata import FormError, items, parse_bracket_form, scan_bracket_form
from integrations.phones import normalize_all
from integrations.timestamps import from_unix as ts

from .mapping import ENTITY_TYPES, NOTE_KINDS, money, sid, stage_kind, with_calls

# Top-level keys amoCRM uses; anything else in a post means it is not an amoCRM webhook.
KNOWN_ROOTS = {
    "account",
    "leads",
    "contacts",
    "companies",
    "task",
    "customers",
    "catalogs",
    "unsorted",
    "talk",
    "message",
    "chats",
    "incoming_leads",
}


ACCOUNT_KEYS = frozenset({"account[id]", "account[subdomain]"})


def check(body: bytes) -> ParsedWebhook:
    """The request-path check: is this an amoCRM webhook, and for which account? (No tree is built.)"""
    if not body:
        raise WebhookMalformed("empty body")
    try:
        roots, account = scan_bracket_form(body, ACCOUNT_KEYS)
    except FormError as exc:
        raise WebhookMalformed(str(exc)) from None
    if not (roots & KNOWN_ROOTS):
        raise WebhookMalformed("no amoCRM entity or account in the body")
    return ParsedWebhook(
        external_account_id=account.get("account[id]") or None, subdomain=account.get("account[subdomain]") or None
    )


def _tree(body: bytes) -> dict[str, Any]:
    if not body:
        raise WebhookMalformed("empty body")
    try:
        form = parse_bracket_form(body)
    except FormError as exc:
        raise WebhookMalformed(str(exc)) from None
    if not (form.keys() & KNOWN_ROOTS):
        raise WebhookMalformed("no amoCRM entity or account in the body")
    return form


def parse(body: bytes, *, region: str, received_at: datetime) -> list[DomainEvent]:
    form = _tree(body)
    events: list[DomainEvent] = []
    for root, node in form.items():
        if root == "account":
            continue
        if root == "leads":
            events.extend(_leads(node, region, received_at))
        elif root == "task":
            events.extend(_tasks(node, received_at))
        elif root == "contacts":
            events.extend(_contacts(node, region, received_at))
        else:
            events.append(UnknownEntity(kind=root))
    return with_calls(events, region)


def _leads(node: Any, region: str, received_at: datetime) -> list[DomainEvent]:
    out: list[DomainEvent] = []
    if not isinstance(node, dict):
        return [UnknownEntity(kind="leads")]
    for action, entries in node.items():
        for entry in items(entries):
            if action == "note":
                out.append(_note(entry, received_at))
                continue
            lead_id = sid(entry.get("id"))
            if lead_id is None:
                continue
            if action == "delete":
                out.append(DealDeleted(id=lead_id))
            elif action in ("add", "update", "status", "responsible", "restore"):
                if action == "restore":
                    out.append(DealRestored(id=lead_id))
                out.append(_deal(entry, action, received_at))
            else:
                out.append(UnknownEntity(kind=f"leads.{action}"))
    return out


def _deal(entry: dict[str, Any], action: str, received_at: datetime) -> DealUpserted:
    updated = ts(entry.get("last_modified")) or ts(entry.get("updated_at")) or received_at
    return DealUpserted(
        id=str(entry["id"]),
        updated_at=updated,
        name=entry.get("name") if isinstance(entry.get("name"), str) else None,
        pipeline_id=sid(entry.get("pipeline_id")),
        stage_id=sid(entry.get("status_id")),
        stage_kind=stage_kind(entry["status_id"]) if sid(entry.get("status_id")) else None,
        price=money(entry.get("price")),
        responsible_user_id=sid(entry.get("responsible_user_id")),
        created_at=ts(entry.get("date_create")) or ts(entry.get("created_at")),
        stage_changed_at=updated if action == "status" else None,
        custom_fields=_custom_fields(entry),
        # The digital pipeline's "send webhook" posts ids only: no name, no responsible.
        is_thin="name" not in entry or "responsible_user_id" not in entry,
    )


# A bare value of unix seconds: what amoCRM's webhooks send for a date field (see _custom_fields).
_UNIX = re.compile(r"-?[0-9]{1,12}")


def _custom_fields(entry: dict[str, Any]) -> dict[str, Any] | None:
    """`custom_fields[n][id]` with `[values][m][value]` (or a bare `[values][m]`): a lead's fields
    that have a value. A webhook lists them all; none listed at all means "not said" (a thin post,
    or a lead with no values, which the next full read settles), as for a contact's phones.

    amoCRM's webhooks keep the API v2 shape: most fields send `[values][m][value]` (lists add
    `[enum]`), but a date field sends its value bare, as unix seconds of the date's midnight in the
    account's time zone: `custom_fields[1][values][0]=1537920000` (captured deliveries from 2018,
    2021 and 2024 agree; see the fixture lead_update_payment.txt). A bare run of digits is therefore
    kept as an int, the type API v4 (the backfill) gives the same date, so a webhook does not look
    like a change of a value the backfill stored. Anything else bare stays a string (read by
    app/payments as an ISO or DD.MM.YYYY date)."""
    if "custom_fields" not in entry:
        return None
    pairs = []
    for field in items(entry.get("custom_fields")):
        values = field.get("values")
        first = next(iter(items(values)), None) if isinstance(values, dict) else None
        if first is not None:
            pairs.append((field.get("id"), first.get("value")))
        elif isinstance(values, dict):  # values[0]=1764000000
            bare = [values[k].strip() for k in sorted(values) if isinstance(values[k], str) and values[k].strip()]
            pairs.append((field.get("id"), [int(v) if _UNIX.fullmatch(v) else v for v in bare]))
    return collect(pairs)


def _note(entry: dict[str, Any], received_at: datetime) -> DomainEvent:
    note = entry.get("note") if isinstance(entry.get("note"), dict) else entry
    note_id = sid(note.get("id"))
    element_id = sid(note.get("element_id"))
    if note_id is None or element_id is None:
        return UnknownEntity(kind="leads.note")
    entity_type = ENTITY_TYPES.get(str(note.get("element_type", "2")), "deal")
    params = note.get("metadata") if isinstance(note.get("metadata"), dict) else {}
    text = note.get("text") if isinstance(note.get("text"), str) else None
    return NoteAdded(
        id=note_id,
        entity_type=entity_type,
        entity_id=element_id,
        deal_id=element_id if entity_type == "deal" else None,
        kind=NOTE_KINDS.get(str(note.get("note_type")), NoteKind.OTHER),
        text=text,
        created_by=sid(note.get("created_by")),
        created_at=ts(note.get("date_create")) or ts(note.get("created_at")) or received_at,
        params={k.lower(): v for k, v in params.items() if isinstance(v, str)},
    )


def _tasks(node: Any, received_at: datetime) -> list[DomainEvent]:
    out: list[DomainEvent] = []
    if not isinstance(node, dict):
        return [UnknownEntity(kind="task")]
    for action, entries in node.items():
        for entry in items(entries):
            task_id = sid(entry.get("id"))
            if task_id is None:
                continue
            if action == "delete":
                out.append(TaskDeleted(id=task_id))
            elif action in ("add", "update"):
                out.append(_task(entry, received_at))
            else:
                out.append(UnknownEntity(kind=f"task.{action}"))
    return out


def _task(entry: dict[str, Any], received_at: datetime) -> TaskUpserted:
    entity_type = ENTITY_TYPES.get(str(entry.get("element_type", "")))
    entity_id = sid(entry.get("element_id"))
    result = entry.get("result")
    result_text = result.get("text") if isinstance(result, dict) else None
    status = entry.get("status")
    return TaskUpserted(
        id=str(entry["id"]),
        updated_at=ts(entry.get("last_modified")) or received_at,
        deal_id=entity_id if entity_type == "deal" else None,
        entity_type=entity_type,
        entity_id=entity_id,
        text=entry.get("text") if isinstance(entry.get("text"), str) else None,
        type_id=sid(entry.get("task_type")),
        responsible_user_id=sid(entry.get("responsible_user_id")),
        due_at=ts(entry.get("complete_till")),
        is_completed=None if status is None else status == "1",
        result_text=result_text if isinstance(result_text, str) else None,
        created_at=ts(entry.get("date_create")),
        created_by=sid(entry.get("created_user_id")),
    )


def _contacts(node: Any, region: str, received_at: datetime) -> list[DomainEvent]:
    out: list[DomainEvent] = []
    if not isinstance(node, dict):
        return [UnknownEntity(kind="contacts")]
    for action, entries in node.items():
        for entry in items(entries):
            if action == "note":
                out.append(_note(entry, received_at))
                continue
            contact_id = sid(entry.get("id"))
            if contact_id is None:
                continue
            if action == "delete":
                # A company's deletion is posted under contacts[...] too, with type=company.
                company = entry.get("type") == "company"
                out.append(CompanyDeleted(id=contact_id) if company else ContactDeleted(id=contact_id))
            elif action in ("add", "update", "restore", "responsible"):
                # A company posted under contacts[...] carries type=company: the mirror keeps its
                # name and manager (the clients of the ABC/XYZ report), not its phones.
                if entry.get("type") == "company":
                    out.append(
                        CompanyUpserted(
                            id=contact_id,
                            updated_at=ts(entry.get("last_modified")) or ts(entry.get("updated_at")) or received_at,
                            name=entry.get("name") if isinstance(entry.get("name"), str) else None,
                            responsible_user_id=sid(entry.get("responsible_user_id")),
                        )
                    )
                    continue
                out.append(_contact(entry, region, received_at))
            else:
                out.append(UnknownEntity(kind=f"contacts.{action}"))
    return out


def _contact(entry: dict[str, Any], region: str, received_at: datetime) -> ContactUpserted:
    phones: list[str] = []
    fields_seen = False
    for field in items(entry.get("custom_fields")):
        fields_seen = True
        if str(field.get("code", "")).upper() == "PHONE":
            phones.extend(v["value"] for v in items(field.get("values")) if isinstance(v.get("value"), str))
    return ContactUpserted(
        id=str(entry["id"]),
        updated_at=ts(entry.get("last_modified")) or ts(entry.get("updated_at")) or received_at,
        name=entry.get("name") if isinstance(entry.get("name"), str) else None,
        responsible_user_id=sid(entry.get("responsible_user_id")),
        # No custom_fields at all means "not said", not "no phones".
        phones=normalize_all(phones, region) if fields_seen else None,
    )
