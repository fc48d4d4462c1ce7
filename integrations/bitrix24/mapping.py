"""Bitrix24 records → CRM-neutral domain events."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from integrations.base import (
    CompanyUpserted,
    ContactUpserted,
    DealUpserted,
    DomainEvent,
    NoteAdded,
    NoteKind,
    PipelineUpserted,
    StageEntered,
    StageInfo,
    StageKind,
    TaskDeleted,
    TaskUpserted,
    UserUpserted,
)
from integrations.custom_fields import collect
from integrations.phones import normalize_all

from .wire import ACTIVITY_PREFIX, DEAL_TYPE_ID, TASK_PREFIX, sid, when

# Stage semantics: P(rocess), S(uccess), F(ailure).
SEMANTICS = {"S": StageKind.WON, "F": StageKind.LOST}
# tasks.task status: 4 "supposedly completed" (awaiting the creator's check) and 5 "completed"
# both mean the responsible person is done with it.
TASK_DONE_STATUSES = {"4", "5"}
DEAL_PREFIX = "D_"


def _now() -> datetime:
    return datetime.now(UTC)


def stage_kind(semantics: Any) -> StageKind:
    return SEMANTICS.get(str(semantics or "").upper(), StageKind.OPEN)


def pipeline(category: dict[str, Any], statuses: list[dict[str, Any]]) -> PipelineUpserted:
    return PipelineUpserted(
        id=str(category["id"]),
        name=category.get("name") or "",
        sort=int(category.get("sort") or 0),
        stages=tuple(
            StageInfo(
                id=str(s["STATUS_ID"]),
                name=s.get("NAME") or "",
                sort=int(s.get("SORT") or 0),
                kind=stage_kind(s.get("SEMANTICS")),
            )
            for s in statuses
        ),
    )


def user(u: dict[str, Any]) -> UserUpserted:
    name = " ".join(p for p in (u.get("NAME"), u.get("LAST_NAME")) if p) or None
    active = u.get("ACTIVE")
    return UserUpserted(
        id=str(u["ID"]),
        name=name,
        email=u.get("EMAIL") or None,
        is_active=None if active is None else active in (True, "Y", "true", "1", 1),
    )


def deal(item: dict[str, Any], *, stage_entry: bool = True) -> list[DomainEvent]:
    """A crm.item record of entityTypeId 2 (camelCase fields). `stage_entry` adds the entry into
    its current stage at MOVED_TIME as its own fact (a backfill reads the stage history instead)."""
    moved = when(item.get("movedTime"))
    stage = sid(item.get("stageId"))
    semantic = item.get("stageSemanticId")
    contacts = item.get("contactIds")
    if not isinstance(contacts, list):
        contacts = [item["contactId"]] if item.get("contactId") else []
    closed = item.get("closed") in ("Y", True)
    updated = when(item.get("updatedTime")) or _now()
    events: list[DomainEvent] = [
        DealUpserted(
            id=str(item["id"]),
            updated_at=updated,
            name=item.get("title") or "",
            pipeline_id=sid(item.get("categoryId")) or "0",
            stage_id=stage,
            stage_kind=stage_kind(semantic) if semantic else None,
            price=float(item["opportunity"]) if item.get("opportunity") not in (None, "") else None,
            responsible_user_id=sid(item.get("assignedById")),
            created_at=when(item.get("createdTime")),
            closed_at=(when(item.get("closedate")) or moved or updated) if closed else None,
            stage_changed_at=moved,
            contact_ids=tuple(str(c) for c in contacts if c),
            # 0 is Bitrix24's "no company".
            company_ids=None
            if "companyId" not in item
            else tuple(str(c) for c in [item["companyId"]] if c not in (None, "", 0, "0")),
            custom_fields=user_fields(item),
        )
    ]
    if stage and moved and stage_entry:
        # MOVED_TIME is when the deal entered its current stage: the fact stuck_stage counts from.
        events.append(
            StageEntered(
                deal_id=str(item["id"]),
                stage_id=stage,
                pipeline_id=sid(item.get("categoryId")) or "0",
                at=moved,
                by_user_id=sid(item.get("movedBy")),
            )
        )
    return events


_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def uf_name(key: str) -> str | None:
    """A user field's original name (UF_CRM_…) from either spelling crm.item answers in:
    `UF_CRM_1721244707107` (useOriginalUfNames=Y) or `ufCrm_1721244707107` / `ufCrmPaidOn`
    (camelCase, its default). None for any other field."""
    if key.startswith("UF_CRM_"):
        return key
    if not key.startswith("ufCrm"):
        return None
    rest = key[len("ufCrm") :].lstrip("_")
    return "UF_CRM_" + _CAMEL_HUMP.sub("_", rest).upper() if rest else None


def user_fields(item: dict[str, Any]) -> dict[str, Any] | None:
    """The record's user fields that have a value, by original name; None when the answer carried
    no user field at all (a `select` that named none: not said)."""
    pairs = [(name, value) for key, value in item.items() if (name := uf_name(key)) is not None]
    return collect(pairs) if pairs else None


def stage_history(row: dict[str, Any]) -> StageEntered | None:
    at = when(row.get("CREATED_TIME"))
    if at is None or not row.get("OWNER_ID") or not row.get("STAGE_ID"):
        return None
    return StageEntered(
        deal_id=str(row["OWNER_ID"]),
        stage_id=str(row["STAGE_ID"]),
        pipeline_id=sid(row.get("CATEGORY_ID")) or "0",
        at=at,
    )


# Providers whose activities record a call that happened (Bitrix24's own telephony, and calls
# registered with telephony.externalcall.*): the portal completes them when the call ends.
CALL_RECORD_PROVIDERS = frozenset({"VOXIMPLANT_CALL"})


def activity(a: dict[str, Any]) -> TaskUpserted | TaskDeleted:
    if a.get("PROVIDER_ID") in CALL_RECORD_PROVIDERS and a.get("COMPLETED") in ("Y", True):
        # A completed call record is not a task anybody did: mirrored as one, it would count as
        # the manager's "task completed" after the call (silencing call_not_logged) and as the
        # deal's last closed task. Any earlier copy of it goes.
        return TaskDeleted(ACTIVITY_PREFIX + str(a["ID"]))
    owner = sid(a.get("OWNER_ID"))
    is_deal = str(a.get("OWNER_TYPE_ID")) == str(DEAL_TYPE_ID)
    return TaskUpserted(
        id=ACTIVITY_PREFIX + str(a["ID"]),
        updated_at=when(a.get("LAST_UPDATED")) or when(a.get("CREATED")) or _now(),
        deal_id=owner if is_deal else None,
        entity_type="deal" if is_deal else sid(a.get("OWNER_TYPE_ID")),
        entity_id=owner,
        text=a.get("SUBJECT") or a.get("DESCRIPTION") or None,
        type_id="activity",
        responsible_user_id=sid(a.get("RESPONSIBLE_ID")),
        due_at=when(a.get("DEADLINE")) or when(a.get("END_TIME")),
        is_completed=a.get("COMPLETED") in ("Y", True),
        created_at=when(a.get("CREATED")),
        created_by=sid(a.get("AUTHOR_ID")),
    )


def deal_of_task(bindings: Any) -> str | None:
    for value in bindings if isinstance(bindings, list) else []:
        if isinstance(value, str) and value.startswith(DEAL_PREFIX):
            return value[len(DEAL_PREFIX) :]
    return None


def task(t: dict[str, Any]) -> TaskUpserted:
    """A tasks.task record (camelCase fields, as tasks.task.get/list answer)."""
    deal_id = deal_of_task(t.get("ufCrmTask"))
    return TaskUpserted(
        id=TASK_PREFIX + str(t["id"]),
        updated_at=when(t.get("changedDate")) or when(t.get("createdDate")) or _now(),
        deal_id=deal_id,
        entity_type="deal" if deal_id else None,
        entity_id=deal_id,
        text=t.get("title") or None,
        type_id="task",
        responsible_user_id=sid(t.get("responsibleId")),
        due_at=when(t.get("deadline")),
        is_completed=str(t.get("status")) in TASK_DONE_STATUSES,
        created_at=when(t.get("createdDate")),
        created_by=sid(t.get("createdBy")),
    )


def comment(c: dict[str, Any]) -> NoteAdded | None:
    entity_id = sid(c.get("ENTITY_ID"))
    if entity_id is None:
        return None
    is_deal = str(c.get("ENTITY_TYPE", "")).lower() == "deal"
    return NoteAdded(
        id=str(c["ID"]),
        entity_type="deal" if is_deal else str(c.get("ENTITY_TYPE", "")).lower(),
        entity_id=entity_id,
        deal_id=entity_id if is_deal else None,
        kind=NoteKind.COMMON,
        text=c.get("COMMENT") if isinstance(c.get("COMMENT"), str) else None,
        created_by=sid(c.get("AUTHOR_ID")),
        created_at=when(c.get("CREATED")) or _now(),
    )


def contact(c: dict[str, Any], region: str) -> ContactUpserted:
    phones = [p.get("VALUE") for p in c.get("PHONE") or [] if isinstance(p, dict) and isinstance(p.get("VALUE"), str)]
    name = " ".join(p for p in (c.get("NAME"), c.get("LAST_NAME")) if p) or None
    return ContactUpserted(
        id=str(c["ID"]),
        updated_at=when(c.get("DATE_MODIFY")) or _now(),
        name=name,
        responsible_user_id=sid(c.get("ASSIGNED_BY_ID")),
        phones=normalize_all(phones, region),
    )


def company(c: dict[str, Any]) -> CompanyUpserted:
    """A crm.company record (crm.company.get/list: UPPER_CASE fields). Its name and manager: the
    client of the ABC/XYZ report by company (its phones stay in the portal)."""
    title = c.get("TITLE")
    return CompanyUpserted(
        id=str(c["ID"]),
        updated_at=when(c.get("DATE_MODIFY")) or when(c.get("DATE_CREATE")) or _now(),
        name=title if isinstance(title, str) and title else None,
        responsible_user_id=sid(c.get("ASSIGNED_BY_ID")),
    )
