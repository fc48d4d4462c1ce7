"""The CrmClient of a Bitrix24 portal: backfill, fetching what events name, and push-back."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from integrations.base import (
    CompanyDeleted,
    CrmIdentity,
    CrmRequestError,
    DealDeleted,
    DomainEvent,
    NewCall,
    NewNote,
    NewTask,
    PhoneLookup,
    QueuedDelivery,
    RecordNamed,
    SyncSection,
    TaskClosure,
    TaskDeleted,
)

from . import calls as calls_wire
from . import mapping
from .client import WEBHOOK_TOKEN_PREFIX, BatchResult, Bitrix24Client
from .webhook import ONLINE_ONLY, SUBSCRIBED
from .wire import ACTIVITY_PREFIX, DEAL_TYPE_ID, MAX_BATCH, TASK_PREFIX, iso

log = logging.getLogger(__name__)

DEAL_SELECT = [
    "id",
    "title",
    "categoryId",
    "stageId",
    "stageSemanticId",
    "closed",
    "assignedById",
    "opportunity",
    "contactId",
    "contactIds",
    # The client company of the ABC/XYZ report by company: without it in `select` the portal
    # leaves it out and the backfill would not say which company a deal belongs to.
    "companyId",
    "createdTime",
    "updatedTime",
    "movedTime",
    "movedBy",
    "closedate",
]
CONTACT_SELECT = ["ID", "NAME", "LAST_NAME", "PHONE", "ASSIGNED_BY_ID", "DATE_MODIFY"]
COMPANY_SELECT = ["ID", "TITLE", "ASSIGNED_BY_ID", "DATE_CREATE", "DATE_MODIFY"]
TASK_SELECT = [
    "ID",
    "TITLE",
    "STATUS",
    "DEADLINE",
    "RESPONSIBLE_ID",
    "UF_CRM_TASK",
    "CHANGED_DATE",
    "CREATED_DATE",
    "CREATED_BY",
]
ACTIVITY_SELECT = [
    "ID",
    "OWNER_TYPE_ID",
    "OWNER_ID",
    "TYPE_ID",
    "PROVIDER_ID",
    "SUBJECT",
    "RESPONSIBLE_ID",
    "DEADLINE",
    "END_TIME",
    "COMPLETED",
    "CREATED",
    "LAST_UPDATED",
    "AUTHOR_ID",
]
# New, pending, in progress, deferred: a task the responsible person still has to do.
OPEN_TASK_STATUSES = [1, 2, 3, 6]
NOT_FOUND = {"NOT_FOUND", "ERROR_NOT_FOUND"}
# crmwatch's marks: #cw<row id>, or its page's link, …/f/<row id>-<signature>.
MARKER = re.compile(r"#cw\d+|/f/\d+-")
MAX_DRAIN_BATCHES = 200
# The deal card tab crmwatch shows (the page itself is served by the widget module).
DEAL_TAB = "CRM_DEAL_DETAIL_TAB"
DEAL_TAB_PATH = "/widget/bitrix24/deal-tab"


def _not_found(error: Any) -> bool:
    if not isinstance(error, dict):
        return False
    code = str(error.get("error") or "")
    text = str(error.get("error_description") or "").lower()
    return code in NOT_FOUND or "not found" in text or "не найден" in text


class ExternalCallsNeedApp(CrmRequestError):
    """telephony.externalcall.* work only in an app's context: an inbound webhook cannot log calls.
    A refusal by the request itself, so the outbox gives the call up instead of retrying it."""


class Bitrix24Crm(Bitrix24Client):
    # -- reads ---------------------------------------------------------------------------------

    async def identity(self) -> CrmIdentity:
        # No REST method tells an inbound webhook its portal's member_id: it is learned from the
        # first authenticated event (or from ONAPPINSTALL). This call proves the credentials work.
        await self.call("profile")
        return CrmIdentity(external_id="")

    def backfill(self, *, history_days: int, region: str, deal_fields: tuple[str, ...] = ()) -> list[SyncSection]:
        since = datetime.now(UTC) - timedelta(days=history_days)
        return [
            SyncSection("pipelines", self._pipelines()),
            SyncSection(
                "users", self._mapped(self.pages("user.get", {"FILTER": {"USER_TYPE": "employee"}}), mapping.user)
            ),
            SyncSection(
                "contacts",
                self._mapped(
                    self.export("crm.contact.list", {"select": CONTACT_SELECT}),
                    lambda c: mapping.contact(c, region),
                ),
            ),
            # Companies by name before the deals that name them (the ABC/XYZ report by company).
            SyncSection(
                "companies",
                self._mapped(self.export("crm.company.list", {"select": COMPANY_SELECT}), mapping.company),
            ),
            SyncSection("deals", self._deals(deal_fields)),
            SyncSection(
                "stage_events",
                self._mapped(
                    self.export(
                        "crm.stagehistory.list",
                        {
                            "entityTypeId": DEAL_TYPE_ID,
                            "filter": {">=CREATED_TIME": iso(since)},
                            "select": ["ID", "OWNER_ID", "STAGE_ID", "CATEGORY_ID", "CREATED_TIME"],
                        },
                        key="items",
                    ),
                    mapping.stage_history,
                ),
            ),
            SyncSection(
                "activities",
                self._mapped(
                    self.export(
                        "crm.activity.list",
                        {"filter": {"OWNER_TYPE_ID": DEAL_TYPE_ID, "COMPLETED": "N"}, "select": ACTIVITY_SELECT},
                    ),
                    mapping.activity,
                ),
            ),
            SyncSection(
                "tasks",
                self._mapped(
                    self.export(
                        "tasks.task.list",
                        {"filter": {"STATUS": OPEN_TASK_STATUSES}, "select": TASK_SELECT},
                        key="tasks",
                        id_field="ID",
                    ),
                    self._task_row,
                ),
            ),
            SyncSection("notes", self._comments(since)),
        ]

    @staticmethod
    def _task_row(t: dict[str, Any]) -> DomainEvent | None:
        # tasks.task.list filters with UPPER_CASE names but answers in camelCase; `export` pages on
        # the answer's "id", so both spellings are read here.
        if "id" not in t and "ID" in t:
            t = {**t, "id": t["ID"]}
        ev = mapping.task(t)
        return ev if ev.deal_id else None  # only tasks bound to a deal (UF_CRM_TASK "D_<id>") matter

    async def _mapped(
        self, pages: AsyncIterator[list[dict[str, Any]]], convert: Callable[[dict[str, Any]], Any]
    ) -> AsyncIterator[list[DomainEvent]]:
        async for rows in pages:
            out: list[DomainEvent] = []
            for row in rows:
                ev = convert(row)
                if isinstance(ev, list):
                    out.extend(ev)
                elif ev is not None:
                    out.append(ev)
            yield out

    async def _pipelines(self) -> AsyncIterator[list[DomainEvent]]:
        body = await self.call("crm.category.list", {"entityTypeId": DEAL_TYPE_ID})
        categories = (body.get("result") or {}).get("categories") or []
        if not categories:
            categories = [{"id": 0, "name": "", "sort": 0}]
        # Category 0's stages are DEAL_STAGE, the others' DEAL_STAGE_{id}: one batch reads them all.
        commands = {
            f"c{c['id']}": (
                "crm.status.list",
                {"filter": {"ENTITY_ID": _stage_entity(c["id"])}, "order": {"SORT": "ASC"}},
            )
            for c in categories
        }
        stages = await self.batch_all(commands)
        yield [
            mapping.pipeline(c, [s for s in stages.result.get(f"c{c['id']}") or [] if isinstance(s, dict)])
            for c in categories
        ]

    async def _comments(self, since: datetime) -> AsyncIterator[list[DomainEvent]]:
        """Timeline comments of open deals. crm.timeline.comment.list filters only by one entity
        (ENTITY_ID and ENTITY_TYPE are required), so each page of deal ids becomes one batch of
        per-deal lists; the newest 50 comments of a deal are plenty for the rules."""
        async for rows in self.export(
            "crm.item.list",
            {"entityTypeId": DEAL_TYPE_ID, "filter": {"closed": "N"}, "select": ["id"]},
            key="items",
            id_field="id",
        ):
            commands = {
                f"d{r['id']}": (
                    "crm.timeline.comment.list",
                    {
                        "filter": {"ENTITY_ID": r["id"], "ENTITY_TYPE": "deal"},
                        "order": {"ID": "DESC"},
                        "select": ["ID", "ENTITY_ID", "ENTITY_TYPE", "CREATED", "COMMENT", "AUTHOR_ID"],
                    },
                )
                for r in rows
            }
            found = await self.batch_all(commands)
            notes = [
                mapping.comment(c)
                for value in found.result.values()
                if isinstance(value, list)
                for c in value
                if isinstance(c, dict)
            ]
            yield [n for n in notes if n is not None and n.created_at >= since]

    async def _deals(self, deal_fields: tuple[str, ...]) -> AsyncIterator[list[DomainEvent]]:
        # `select` takes field names only (no "ufCrm*"): the account's configured user fields are
        # named, in their original UF_CRM_… spelling, which useOriginalUfNames keeps in the answer.
        params: dict[str, Any] = {"entityTypeId": DEAL_TYPE_ID, "select": [*DEAL_SELECT, *deal_fields]}
        if deal_fields:
            params["useOriginalUfNames"] = "Y"
        async for rows in self.export("crm.item.list", params, key="items", id_field="id"):
            # A new deal takes MOVED_TIME as its stage entry; older entries come from stage_events.
            yield [ev for item in rows for ev in mapping.deal(item, stage_entry=False)]

    async def fetch_deals(self, ids: list[str], *, region: str) -> list[DomainEvent]:
        return await self.fetch_named([RecordNamed("deal", i) for i in ids], region=region)

    async def fetch_named(self, refs: list[RecordNamed], *, region: str) -> list[DomainEvent]:
        calls = [r for r in refs if r.kind == calls_wire.CALL_REF]
        out = await self._call_bindings(calls) if calls else []
        commands: dict[str, tuple[str, dict[str, Any]]] = {}
        for ref in dict.fromkeys(r for r in refs if r.kind != calls_wire.CALL_REF):
            key = f"{ref.kind}_{ref.id}"
            if ref.kind == "deal":
                # Every field, user fields by their original UF_CRM_… names (the mirror keeps the configured ones).
                commands[key] = (
                    "crm.item.get",
                    {"entityTypeId": DEAL_TYPE_ID, "id": ref.id, "useOriginalUfNames": "Y"},
                )
            elif ref.kind == "activity":
                commands[key] = ("crm.activity.get", {"id": ref.id})
            elif ref.kind == "task":
                commands[key] = ("tasks.task.get", {"taskId": ref.id, "select": TASK_SELECT})
            elif ref.kind == "comment":
                commands[key] = ("crm.timeline.comment.get", {"id": ref.id})
            elif ref.kind == "contact":
                commands[key] = ("crm.contact.get", {"id": ref.id})
            elif ref.kind == "company":
                commands[key] = ("crm.company.get", {"id": ref.id})
        if not commands:
            return out
        found = await self.batch_all(commands)
        for key in commands:
            kind, _, rid = key.partition("_")
            if key in found.errors:
                if not _not_found(found.errors[key]):
                    raise CrmRequestError(f"Bitrix24 could not read {kind} {rid}: {found.errors[key]}")
                gone = _deletion(kind, rid)
                if gone is not None:
                    out.append(gone)
                continue
            out.extend(_convert(kind, found.result.get(key), region))
        return out

    async def _call_bindings(self, refs: list[RecordNamed]) -> list[DomainEvent]:
        """The deal each call of Bitrix24's telephony is bound to (through its activity), and its
        recording. The event itself holds the call: a binding the portal will not give (the
        activity is gone, the webhook's user may not read it, the statistics need a scope it
        lacks) leaves the call to the number matching instead of holding the call back, since a
        refusal would refuse again on every retry. Limits and outages raise from `batch`: the
        event waits for the portal, as every named record does."""
        out: list[DomainEvent] = []
        refs = list(dict.fromkeys(refs))
        # Two commands a call: a batch of 50 holds 25 calls.
        for start in range(0, len(refs), MAX_BATCH // 2):
            commands, call_ids = calls_wire.binding_commands(refs[start : start + MAX_BATCH // 2])
            found = await self.batch(commands)
            refused = {k: e for k, e in found.errors.items() if not _not_found(e) and not _no_activity(e)}
            if refused:
                log.warning(
                    "bitrix24.call_binding_unread",
                    extra={"count": len(refused), "error": str(next(iter(refused.values())))},
                )
            for ckey, call_id in call_ids.items():
                i = ckey[1:]
                ev = calls_wire.binding_event(call_id, found.result.get(f"s{i}"), found.result.get(f"b{i}"))
                if ev is not None:
                    out.append(ev)
        return out

    # -- writes ------------------------------------------------------------------------------------

    async def create_tasks(self, tasks: list[NewTask]) -> dict[str, str]:
        commands: dict[str, tuple[str, dict[str, Any]]] = {}
        kinds: dict[str, str] = {}
        for t in tasks:
            # The rules document's task type picks the kind: "task" → a task bound to the deal,
            # anything else → a to-do activity (дело) on the deal.
            # A task on no card can only be a task: an activity always has an owner.
            as_task = (t.type_id or self.task_kind) == "task" or not t.deal_id
            kinds[t.request_id] = "task" if as_task else "activity"
            if kinds[t.request_id] == "task":
                fields = {
                    "TITLE": t.text.split("\n", 1)[0][:250],
                    "DESCRIPTION": t.text,
                    "DEADLINE": iso(t.due_at),
                    **({"UF_CRM_TASK": [f"D_{t.deal_id}"]} if t.deal_id else {}),
                }
                if t.responsible_user_id:
                    fields["RESPONSIBLE_ID"] = t.responsible_user_id
                commands[t.request_id] = ("tasks.task.add", {"fields": fields})
            else:
                params: dict[str, Any] = {
                    "ownerTypeId": DEAL_TYPE_ID,
                    "ownerId": t.deal_id,
                    "deadline": iso(t.due_at),
                    "title": t.text.split("\n", 1)[0][:250],
                    "description": t.text,
                }
                if t.responsible_user_id:
                    params["responsibleId"] = t.responsible_user_id
                commands[t.request_id] = ("crm.activity.todo.add", params)
        result = await self.batch_all(commands, idempotent=False)
        created: dict[str, str] = {}
        for request_id, value in result.result.items():
            if kinds.get(request_id) == "task":
                task = (value or {}).get("task") if isinstance(value, dict) else None
                if task and task.get("id"):
                    created[request_id] = TASK_PREFIX + str(task["id"])
            elif isinstance(value, dict) and value.get("id"):
                created[request_id] = ACTIVITY_PREFIX + str(value["id"])
        if not created:  # a partly refused batch returns what landed; the rest is retried alone
            _raise_refused(result, "create a task")
        return created

    async def add_notes(self, notes: list[NewNote]) -> dict[str, str]:
        commands = {
            n.request_id: (
                "crm.timeline.comment.add",
                {"fields": {"ENTITY_ID": n.deal_id, "ENTITY_TYPE": "deal", "COMMENT": n.text}},
            )
            for n in notes
        }
        result = await self.batch_all(commands, idempotent=False)
        created = {rid: str(v) for rid, v in result.result.items() if isinstance(v, int | str) and str(v).isdigit()}
        if not created:
            _raise_refused(result, "add a comment")
        return created

    async def close_tasks(self, closures: list[TaskClosure]) -> None:
        # Completing a completed activity or task changes nothing, but each write is a change in the
        # portal's history: a close tried before reads back first (completed_tasks).
        commands: dict[str, tuple[str, dict[str, Any]]] = {}
        for c in closures:
            if c.task_id.startswith(TASK_PREFIX):
                commands[c.task_id] = ("tasks.task.complete", {"taskId": c.task_id[len(TASK_PREFIX) :]})
            elif c.task_id.startswith(ACTIVITY_PREFIX):
                commands[c.task_id] = (
                    "crm.activity.update",
                    {"id": c.task_id[len(ACTIVITY_PREFIX) :], "fields": {"COMPLETED": "Y"}},
                )
        if commands:
            # Not retried blindly after a 5xx or a timeout: the caller reads back (completed_tasks).
            result = await self.batch_all(commands, idempotent=False)
            refused = {k: e for k, e in result.errors.items() if not _not_found(e)}
            if refused:
                raise CrmRequestError(f"Bitrix24 refused to complete {sorted(refused)}: {next(iter(refused.values()))}")

    async def completed_tasks(self, task_ids: list[str]) -> set[str]:
        """Completed activities (COMPLETED=Y) and tasks (STATUS 5) among these, read in one batch."""
        commands: dict[str, tuple[str, dict[str, Any]]] = {}
        for t in task_ids:
            if t.startswith(TASK_PREFIX):
                commands[t] = ("tasks.task.get", {"taskId": t[len(TASK_PREFIX) :], "select": ["ID", "STATUS"]})
            elif t.startswith(ACTIVITY_PREFIX):
                commands[t] = ("crm.activity.get", {"id": t[len(ACTIVITY_PREFIX) :]})
        if not commands:
            return set()
        result = await self.batch_all(commands)
        done: set[str] = set()
        for key, value in result.result.items():
            if not isinstance(value, dict):
                continue
            if key.startswith(ACTIVITY_PREFIX) and value.get("COMPLETED") == "Y":
                done.add(key)
            task = value.get("task") if key.startswith(TASK_PREFIX) else None
            if isinstance(task, dict) and str(task.get("status") or task.get("STATUS")) == "5":
                done.add(key)
        return done

    async def find_marked(self, kind: str, deal_ids: list[str], markers: list[str]) -> dict[str, str]:
        wanted = set(markers)
        found: dict[str, str] = {}
        for deal_id in sorted(set(deal_ids)):
            if kind == "task" and self.task_kind == "task":
                pages = self.pages(
                    "tasks.task.list",
                    {"filter": {"UF_CRM_TASK": f"D_{deal_id}"}, "select": ["ID", "TITLE", "DESCRIPTION"]},
                    key="tasks",
                )
                text_of, prefix = (lambda r: f"{r.get('title') or ''} {r.get('description') or ''}"), TASK_PREFIX

                def id_of(r):
                    return r.get("id") or r.get("ID")
            elif kind == "task":
                pages = self.pages(
                    "crm.activity.list",
                    {
                        "filter": {"OWNER_TYPE_ID": DEAL_TYPE_ID, "OWNER_ID": deal_id},
                        "select": ["ID", "SUBJECT", "DESCRIPTION"],
                    },
                )
                text_of, prefix = (lambda r: f"{r.get('SUBJECT') or ''} {r.get('DESCRIPTION') or ''}"), ACTIVITY_PREFIX

                def id_of(r):
                    return r.get("ID")
            else:
                pages = self.pages(
                    "crm.timeline.comment.list", {"filter": {"ENTITY_ID": deal_id, "ENTITY_TYPE": "deal"}}
                )
                text_of, prefix = (lambda r: r.get("COMMENT") or ""), ""

                def id_of(r):
                    return r.get("ID")

            async for rows in pages:
                for row in rows:
                    for marker in wanted & set(MARKER.findall(text_of(row))):
                        found[marker] = prefix + str(id_of(row))
        return found

    async def find_marked_tasks_of(self, user_ids: list[str], markers: list[str]) -> dict[str, str]:
        wanted = set(markers)
        found: dict[str, str] = {}
        for user_id in sorted(set(user_ids)):
            pages = self.pages(
                "tasks.task.list",
                {"filter": {"RESPONSIBLE_ID": user_id}, "select": ["ID", "TITLE", "DESCRIPTION"]},
                key="tasks",
            )
            async for rows in pages:
                for row in rows:
                    text = f"{row.get('title') or ''} {row.get('description') or ''}"
                    for marker in wanted & set(MARKER.findall(text)):
                        found[marker] = TASK_PREFIX + str(row.get("id") or row.get("ID"))
        return found

    async def search_phone(self, phone: str, *, region: str) -> PhoneLookup:
        """Contacts and companies whose phones hold the number (crm.duplicate.findbycomm, which
        matches phones by digits and ignores extensions), then the open deals whose contact or
        company is one of them. Each contact found is read in full and checked against the
        normalized number: the duplicate index also matches partial digit runs."""
        values = _phone_variants(phone)
        found = await self.batch(
            {
                "contacts": ("crm.duplicate.findbycomm", {"entity_type": "CONTACT", "type": "PHONE", "values": values}),
                "companies": (
                    "crm.duplicate.findbycomm",
                    {"entity_type": "COMPANY", "type": "PHONE", "values": values},
                ),
            }
        )
        if found.errors:
            raise CrmRequestError(f"Bitrix24 refused crm.duplicate.findbycomm: {next(iter(found.errors.values()))}")
        contact_ids = _ids_of(found.result.get("contacts"), "CONTACT")
        company_ids = _ids_of(found.result.get("companies"), "COMPANY")
        if not contact_ids and not company_ids:
            return PhoneLookup()
        commands: dict[str, tuple[str, dict[str, Any]]] = {
            f"contact_{cid}": ("crm.contact.get", {"id": cid}) for cid in contact_ids[: MAX_BATCH - 2]
        }
        # crm.item.list filters by the deal's (primary) contact or company; "@" is IN.
        for name, ids in (("contactId", contact_ids), ("companyId", company_ids)):
            if ids:
                commands[f"deals_{name}"] = (
                    "crm.item.list",
                    {
                        "entityTypeId": DEAL_TYPE_ID,
                        "filter": {f"@{name}": ids, "closed": "N"},
                        "select": DEAL_SELECT,
                        "order": {"id": "DESC"},
                    },
                )
        read = await self.batch(commands)
        refused = {k: e for k, e in read.errors.items() if not _not_found(e)}
        if refused:
            raise CrmRequestError(f"Bitrix24 could not read what carries {phone}: {next(iter(refused.values()))}")
        contacts = [
            mapping.contact(v, region)
            for k, v in read.result.items()
            if k.startswith("contact_") and isinstance(v, dict) and v.get("ID")
        ]
        contacts = [c for c in contacts if phone in (c.phones or ())]
        carriers = {c.id for c in contacts}
        deal_events: list[DomainEvent] = []
        deal_ids: list[str] = []
        for key in ("deals_contactId", "deals_companyId"):
            value = read.result.get(key)
            items = value.get("items") if isinstance(value, dict) else None
            for item in items or []:
                if not isinstance(item, dict) or str(item.get("id")) in deal_ids:
                    continue
                if key == "deals_contactId" and not carriers & {
                    str(c) for c in (item.get("contactIds") or [item.get("contactId")])
                }:
                    continue  # its contact matched only a part of the number
                deal_ids.append(str(item["id"]))
                deal_events.extend(mapping.deal(item))
        return PhoneLookup(
            events=(*contacts, *deal_events), contact_ids=tuple(c.id for c in contacts), deal_ids=tuple(deal_ids)
        )

    async def log_calls(self, calls: list[NewCall]) -> dict[str, str]:
        """An outside PBX's calls into the portal's telephony (and the contact's timeline):
        telephony.externalcall.register, then .finish with the CALL_ID register answered, both in
        one batch. Each call carries its own EXTERNAL_CALL_ID, which Bitrix24 keeps in its
        statistics: before sending, calls already there are read back (a lost answer), and a
        register repeated within 30 minutes returns the same CALL_ID rather than a new call.
        Returns request_id → the statistics record id."""
        if (await self._tokens.access_token()).startswith(WEBHOOK_TOKEN_PREFIX):
            raise ExternalCallsNeedApp(
                "Bitrix24 registers external calls only for an app, not for an inbound "
                "webhook: connect the portal as an app to log calls into cards"
            )
        external = {c.request_id: calls_wire.external_call_id(c.uniq) for c in calls}
        done = await self.find_calls(calls)
        todo = [c for c in calls if c.request_id not in done and c.responsible_user_id]
        for start in range(0, len(todo), MAX_BATCH // 2):
            commands: dict[str, tuple[str, dict[str, Any]]] = {}
            part = {f"{i}": c for i, c in enumerate(todo[start : start + MAX_BATCH // 2])}
            for i, c in part.items():
                commands[f"r{i}"] = (
                    "telephony.externalcall.register",
                    calls_wire.register_params(c, external[c.request_id]),
                )
                commands[f"f{i}"] = ("telephony.externalcall.finish", calls_wire.finish_params(c, f"r{i}"))
            result = await self.batch(commands, idempotent=False)
            if any(str((e or {}).get("error")) == "WRONG_AUTH_TYPE" for e in result.errors.values()):
                raise ExternalCallsNeedApp(
                    "Bitrix24 refused to register external calls for this connection (WRONG_AUTH_TYPE): only an app may"
                )
            for i, c in part.items():
                row = result.result.get(f"f{i}")
                if isinstance(row, dict) and row.get("ID"):
                    done[c.request_id] = str(row["ID"])
            if not any(c.request_id in done for c in part.values()):
                _raise_refused(result, "log a call")
        return done

    async def find_calls(self, calls: list[NewCall]) -> dict[str, str]:
        """Calls the portal's statistics already hold, by their EXTERNAL_CALL_ID (our `uniq`)."""
        done: dict[str, str] = {}
        if not calls:
            return done
        keyed = {f"x{i}": c for i, c in enumerate(calls)}
        seen = await self.batch_all(
            {
                k: (
                    "voximplant.statistic.get",
                    {"FILTER": {"EXTERNAL_CALL_ID": calls_wire.external_call_id(c.uniq)}},
                )
                for k, c in keyed.items()
            }
        )
        for k, c in keyed.items():
            rows = seen.result.get(k)
            if isinstance(rows, list) and rows and isinstance(rows[0], dict) and rows[0].get("ID"):
                done[c.request_id] = str(rows[0]["ID"])
        return done

    # -- events ------------------------------------------------------------------------------------

    async def bind_events(self, handler: str, events: list[str], *, offline: bool) -> None:
        """Subscribes the app to events, online (to `handler`) and as offline events; an event
        already bound answers an error Bitrix24 calls "Handler already binded", which is fine."""
        commands: dict[str, tuple[str, dict[str, Any]]] = {}
        for name in events:
            commands[f"on_{name}"] = ("event.bind", {"event": name, "handler": handler})
            if offline:
                commands[f"off_{name}"] = ("event.bind", {"event": name, "event_type": "offline"})
        result = await self.batch_all(commands)
        refused = {
            k: e
            for k, e in result.errors.items()
            if "already" not in str((e or {}).get("error_description", "")).lower()
        }
        if refused:
            raise CrmRequestError(f"Bitrix24 refused event.bind: {next(iter(refused.values()))}")

    async def offline_get(self, *, process_id: str | None = None, limit: int = 50) -> tuple[str | None, list[dict]]:
        params: dict[str, Any] = {"clear": 0, "limit": limit}
        if process_id:
            params["process_id"] = process_id
        body = await self.call("event.offline.get", params)
        result = body.get("result") or {}
        events = result.get("events") if isinstance(result, dict) else None
        return (result.get("process_id") if isinstance(result, dict) else None), list(events or [])

    async def offline_stuck_processes(self) -> list[str]:
        """process_ids of records a drain took (clear=0) but never cleared: a crash in between."""
        seen: dict[str, None] = {}
        async for rows in self.pages("event.offline.list", {"filter": {"!PROCESS_ID": "", "ERROR": 0}}):
            for row in rows:
                if row.get("PROCESS_ID"):
                    seen.setdefault(str(row["PROCESS_ID"]), None)
        return list(seen)

    async def offline_clear(self, process_id: str, message_ids: list[str]) -> None:
        await self.call("event.offline.clear", {"process_id": process_id, "message_id": message_ids})

    async def offline_error(self, process_id: str, message_ids: list[str]) -> None:
        await self.call("event.offline.error", {"process_id": process_id, "message_id": message_ids})

    async def subscribe(self, hook_url: str, public_url: str) -> None:
        """App mode: every event online (to our hook) and offline (for catch-up), and the deal tab."""
        await self.bind_events(hook_url, list(SUBSCRIBED), offline=True)
        await self.bind_events(hook_url, list(ONLINE_ONLY), offline=False)
        await self.bind_placement(DEAL_TAB, f"{public_url.rstrip('/')}{DEAL_TAB_PATH}", "crmwatch")

    async def queued_deliveries(self) -> AsyncIterator[OfflineBatch]:
        """Offline events in reserve mode: event.offline.get with clear=0 hides a batch under a
        process_id; it is cleared only once stored. Batches a crashed drain hid are found again
        through event.offline.list (PROCESS_ID set) and re-read with their process_id first."""
        if (await self._tokens.access_token()).startswith(WEBHOOK_TOKEN_PREFIX):
            return  # offline events exist only for apps
        for process_id in await self.offline_stuck_processes():
            _, events = await self.offline_get(process_id=process_id)
            if events:
                yield OfflineBatch(self, process_id, events)
        for _ in range(MAX_DRAIN_BATCHES):
            process_id, events = await self.offline_get()
            if not events or not process_id:
                return
            yield OfflineBatch(self, process_id, events)

    async def bind_placement(self, placement: str, handler: str, title: str) -> None:
        try:
            await self.call("placement.bind", {"PLACEMENT": placement, "HANDLER": handler, "TITLE": title})
        except CrmRequestError as exc:
            if "already" not in str(exc).lower():
                raise


class OfflineBatch:
    """One event.offline.get answer, as deliveries for the inbox."""

    def __init__(self, client: Bitrix24Crm, process_id: str, events: list[dict[str, Any]]) -> None:
        self._client, self.process_id = client, process_id
        self._ids: dict[str, str] = {}
        self.deliveries: list[QueuedDelivery] = []
        for ev in events:
            message_id = str(ev.get("MESSAGE_ID") or ev.get("ID") or "")
            payload = json.dumps(
                {
                    "event": ev.get("EVENT_NAME"),
                    "data": ev.get("EVENT_DATA") or {},
                    "offline": {"id": ev.get("ID"), "message_id": message_id, "ts": ev.get("TIMESTAMP_X")},
                },
                ensure_ascii=False,
            )
            # A record is rewritten in place when its object changes again: its time is part of the key.
            key = hashlib.sha256(f"offline|{message_id}|{ev.get('TIMESTAMP_X')}".encode()).hexdigest()
            self._ids[key] = message_id
            self.deliveries.append(QueuedDelivery(key, payload, "application/json"))

    async def ack(self, dedup_keys: list[str] | None = None) -> None:
        ids = [self._ids[k] for k in (dedup_keys if dedup_keys is not None else self._ids)]
        if ids:
            await self._client.offline_clear(self.process_id, ids)

    async def reject(self, dedup_keys: list[str]) -> None:
        if dedup_keys:
            await self._client.offline_error(self.process_id, [self._ids[k] for k in dedup_keys])


def _phone_variants(phone: str) -> list[str]:
    """How the number may be typed into a card: E.164, its digits, and the national form."""
    digits = phone.lstrip("+")
    variants = [phone, digits]
    if phone.startswith("+7") and len(digits) == 11:
        variants.append("8" + digits[1:])
    return list(dict.fromkeys(variants))


def _ids_of(value: Any, key: str) -> list[str]:
    # PHP answers "nothing found" as [] rather than {}.
    ids = value.get(key) if isinstance(value, dict) else None
    return [str(i) for i in ids or [] if str(i).isdigit()]


def _no_activity(error: Any) -> bool:
    # A call without an activity: the $result reference comes out empty and Bitrix24 answers that
    # the required activityId is missing (error 100), which means "no binding", not a failure.
    return isinstance(error, dict) and str(error.get("error") or "") in {"100", "ERROR_ARGUMENT"}


def _stage_entity(category_id: Any) -> str:
    return "DEAL_STAGE" if str(category_id) == "0" else f"DEAL_STAGE_{category_id}"


def _deletion(kind: str, rid: str) -> DomainEvent | None:
    if kind == "deal":
        return DealDeleted(rid)
    if kind == "activity":
        return TaskDeleted(ACTIVITY_PREFIX + rid)
    if kind == "task":
        return TaskDeleted(TASK_PREFIX + rid)
    if kind == "company":
        return CompanyDeleted(rid)
    return None


def _convert(kind: str, value: Any, region: str) -> list[DomainEvent]:
    if not isinstance(value, dict):
        return []
    if kind == "deal" and isinstance(value.get("item"), dict):
        return mapping.deal(value["item"])
    if kind == "activity" and value.get("ID"):
        return [mapping.activity(value)]
    if kind == "task" and isinstance(value.get("task"), dict):
        return [mapping.task(value["task"])]
    if kind == "comment" and value.get("ID"):
        note = mapping.comment(value)
        return [note] if note else []
    if kind == "contact" and value.get("ID"):
        return [mapping.contact(value, region)]
    if kind == "company" and value.get("ID"):
        return [mapping.company(value)]
    return []


def _raise_refused(result: BatchResult, what: str) -> None:
    if result.errors:
        first = next(iter(result.errors.values()))
        log.warning("bitrix24.write_refused", extra={"what": what, "count": len(result.errors)})
        raise CrmRequestError(f"Bitrix24 refused to {what}: {first}")
