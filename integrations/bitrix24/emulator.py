"""In-memory emulator of the Bitrix24 REST subset crmwatch uses, with the portal's limits.

It backs the tests (through httpx.ASGITransport) and `crmwatch demo`. Reproduced on purpose:
inbound-webhook and OAuth URLs, JSON errors with 401/400/503/429, the leaky bucket
(503 QUERY_LIMIT_EXCEEDED), a method blocked for its operating time (429 OPERATION_TIME_LIMIT),
`batch` of at most 50 commands counted as one request, `start`/`next` paging and start=-1,
offline events with clear=0 / process_id / event.offline.clear, single-use refresh tokens.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from integrations.formdata import parse_bracket_form

from .wire import MAX_BATCH, PAGE_SIZE

MEMBER_ID = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
APP_TOKEN = "f0e1d2c3b4a5968778695a4b3c2d1e0f"
WEBHOOK_USER, WEBHOOK_SECRET = 1, "abc123secret"
OPERATING_WINDOW_S = 600
OPERATING_LIMIT_S = 480


class RestError(Exception):
    def __init__(self, status: int, error: str, description: str = "") -> None:
        super().__init__(error)
        self.status, self.error, self.description = status, error, description


def _iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="seconds")


def _listify(value: Any) -> Any:
    """A bracket form's {"0": a, "1": b} back into [a, b], recursively."""
    if isinstance(value, dict):
        if value and all(k.isdigit() for k in value):
            return [_listify(value[k]) for k in sorted(value, key=int)]
        return {k: _listify(v) for k, v in value.items()}
    return value


def _num(value: Any) -> Any:
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return value


def _matches(row: dict[str, Any], flt: dict[str, Any]) -> bool:
    lowered = {k.lower(): v for k, v in row.items()}
    for raw_key, expected in (flt or {}).items():
        op = ""
        key = raw_key
        for prefix in (">=", "<=", "!=", "!@", ">", "<", "!", "%", "=", "@"):
            if key.startswith(prefix):
                op, key = prefix, key[len(prefix) :]
                break
        actual = lowered.get(key.lower())
        if op == "%":
            hay = " ".join(map(str, actual)) if isinstance(actual, list) else str(actual or "")
            if str(expected) not in hay:
                return False
            continue
        if isinstance(expected, list):
            hit = (
                str(actual) in {str(e) for e in expected}
                if not isinstance(actual, list)
                else bool({str(a) for a in actual} & {str(e) for e in expected})
            )
            if (op in ("!", "!=", "!@")) == hit:
                return False
            continue
        a, e = _num(actual), _num(expected)
        if isinstance(actual, list):
            ok = str(expected) in {str(x) for x in actual}
        elif op in (">", ">=", "<", "<="):
            if a is None or a == "":
                return False
            try:
                ok = {">": a > e, ">=": a >= e, "<": a < e, "<=": a <= e}[op]
            except TypeError:
                ok = {">": str(a) > str(e), ">=": str(a) >= str(e), "<": str(a) < str(e), "<=": str(a) <= str(e)}[op]
        else:
            ok = str(a if a is not None else "") == str(e if e is not None else "")
            if op in ("!", "!="):
                ok = not ok
        if not ok:
            return False
    return True


_RESULT_REF = re.compile(r"^\$result\[([^\]]+)\]((?:\[[^\]]*\])*)$")


def _substitute(value: Any, results: dict[str, Any]) -> Any:
    """`$result[cmd][0][FIELD]` in a batch command: the answer of an earlier command of the batch;
    empty when that command failed or has no such field."""
    if isinstance(value, dict):
        return {k: _substitute(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, results) for v in value]
    match = _RESULT_REF.match(value) if isinstance(value, str) else None
    if match is None:
        return value
    found: Any = results.get(match[1])
    for step in re.findall(r"\[([^\]]*)\]", match[2]):
        if isinstance(found, list) and step.isdigit() and int(step) < len(found):
            found = found[int(step)]
        elif isinstance(found, dict):
            found = found.get(step)
        else:
            found = None
    return "" if found is None else found if isinstance(found, list | dict) else str(found)


def _digits(value: Any) -> str:
    # The last ten digits: enough to make "8 912…" and "+7 912…" one Russian number here.
    return "".join(ch for ch in str(value or "") if ch.isdigit())[-10:]


def _camel_uf(name: str) -> str:
    """crm.item's default spelling of a user field: UF_CRM_1721244707107 → ufCrm_1721244707107,
    UF_CRM_PAID_ON → ufCrmPaidOn."""
    rest = name[len("UF_CRM_") :]
    if rest[:1].isdigit():
        return "ufCrm_" + rest
    return "ufCrm" + "".join(part.capitalize() for part in rest.split("_"))


def _param(params: dict[str, Any], *names: str, default: Any = None) -> Any:
    lowered = {k.lower(): v for k, v in params.items()}
    for name in names:
        if name.lower() in lowered:
            return lowered[name.lower()]
    return default


def _selected(row: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The fields a list method's `select` names (the id always), as the portal answers: a field
    left out of `select` is absent from the answer. No select, or "*": every field."""
    select = _param(params, "select", default=None) or ["*"]
    if not isinstance(select, list) or "*" in select:
        return dict(row)
    wanted = {str(name).lower() for name in select} | {"id"}
    return {k: v for k, v in row.items() if k.lower() in wanted}


class Bitrix24Emulator:
    """One portal. Plain data, so tests and the demo poke at it directly."""

    def __init__(
        self,
        *,
        domain: str = "demoshop.bitrix24.ru",
        member_id: str = MEMBER_ID,
        application_token: str = APP_TOKEN,
        rate: float = 2.0,
        burst: int = 50,
    ) -> None:
        self.domain, self.member_id, self.application_token = domain, member_id, application_token
        self.webhooks: set[tuple[int, str]] = {(WEBHOOK_USER, WEBHOOK_SECRET)}
        self.access_tokens: set[str] = set()
        self.refresh_tokens: dict[str, str] = {}  # refresh token → client_id
        self.oauth_clients: dict[str, str] = {}  # client_id → secret
        self.users: dict[int, dict[str, Any]] = {}
        self.categories: dict[int, dict[str, Any]] = {0: {"id": 0, "name": "Общая", "sort": 100}}
        self.statuses: list[dict[str, Any]] = []
        self.deals: dict[int, dict[str, Any]] = {}
        self.stage_history: list[dict[str, Any]] = []
        self.activities: dict[int, dict[str, Any]] = {}
        self.tasks: dict[int, dict[str, Any]] = {}
        self.comments: dict[int, dict[str, Any]] = {}
        self.contacts: dict[int, dict[str, Any]] = {}
        self.companies: dict[int, dict[str, Any]] = {}
        # Telephony: the call statistics (voximplant.statistic.get), activity bindings beyond the
        # owner, and external calls registered but not finished yet (CALL_ID → its registration).
        self.call_stats: list[dict[str, Any]] = []
        self.bindings: dict[int, list[dict[str, int]]] = {}
        self.registered: dict[str, dict[str, Any]] = {}
        self.bound: set[tuple[str, str]] = set()  # (event, handler or "offline")
        self.placements: list[dict[str, Any]] = []
        self.offline: list[dict[str, Any]] = []
        self.request_log: list[str] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []  # (method, params) of each top-level request
        self.rate, self.burst = rate, burst
        self.level, self._stamp = 0.0, None
        self.clock: Callable[[], float] = time.monotonic
        self.unix_now: Callable[[], float] = time.time
        self.blocked: dict[str, float] = {}  # method → unix time it runs again
        # Seconds of "execution time" a method costs; over 480 s within 10 minutes Bitrix24 blocks it.
        self.operating_cost: dict[str, float] = {}
        self._operating: dict[str, list[tuple[float, float]]] = {}
        self.faults: list[tuple[int, str]] = []
        self.refused_503 = 0
        # Requests that are carried out but whose answer is "lost" (a 502 after the work).
        self.lose_answers = 0
        self._ids = 1000

    # -- credentials and faults -----------------------------------------------------------------

    def add_oauth_client(self, client_id: str, client_secret: str) -> None:
        self.oauth_clients[client_id] = client_secret

    def issue_tokens(self, client_id: str) -> dict[str, Any]:
        access, refresh = secrets.token_hex(16), secrets.token_hex(16)
        self.access_tokens.add(access)
        self.refresh_tokens[refresh] = client_id
        return {
            "access_token": access,
            "refresh_token": refresh,
            "expires": int(self.unix_now()) + 3600,
            "expires_in": 3600,
            "member_id": self.member_id,
            "domain": self.domain,
            "client_endpoint": f"https://{self.domain}/rest/",
            "server_endpoint": "https://oauth.bitrix.info/rest/",
            "status": "L",
        }

    def fail_next(self, n: int, status: int = 500, error: str = "INTERNAL_SERVER_ERROR") -> None:
        self.faults.extend([(status, error)] * n)

    def block_method(self, method: str, until_unix: float) -> None:
        self.blocked[method.lower()] = until_unix

    def _spend(self, method: str) -> dict[str, float]:
        """Counts a method's operating time; blocks the method once its 10-minute sum passes 480 s."""
        m = method.lower()
        now = self.unix_now()
        spent = [(t, c) for t, c in self._operating.get(m, []) if t > now - OPERATING_WINDOW_S]
        cost = self.operating_cost.get(m, 0.0)
        if cost:
            spent.append((now, cost))
        self._operating[m] = spent
        total = sum(c for _, c in spent)
        reset = (spent[0][0] + OPERATING_WINDOW_S) if spent else now
        if total > OPERATING_LIMIT_S:
            self.blocked[m] = reset
        return {"operating": total, "operating_reset_at": int(reset)}

    def _admit(self) -> bool:
        now = self.clock()
        if self._stamp is not None:
            self.level = max(0.0, self.level - (now - self._stamp) * self.rate)
        self._stamp = now
        if self.level + 1 > self.burst:
            self.refused_503 += 1
            return False
        self.level += 1
        return True

    def next_id(self) -> int:
        self._ids += 1
        return self._ids

    # -- seeding and changes (each change is queued as an offline event, as the portal does) -----

    def _offline(self, event: str, record_id: int, key: str | None = "FIELDS") -> None:
        if (event, "offline") not in self.bound:
            return
        message = f"{event}:{record_id}"
        for rec in self.offline:
            # One record per object and event: a repeated change only moves its time forward.
            if rec["MESSAGE_ID"] == message and not rec["PROCESS_ID"]:
                rec["TIMESTAMP_X"] = _iso(self.unix_now())
                return
        self.offline.append(
            {
                "ID": str(self.next_id()),
                "TIMESTAMP_X": _iso(self.unix_now()),
                "EVENT_NAME": event,
                "EVENT_DATA": {key: {"ID": record_id}} if key else {"ID": record_id},
                "EVENT_ADDITIONAL": {"user_id": 1},
                "MESSAGE_ID": message,
                "PROCESS_ID": "",
                "ERROR": "0",
            }
        )

    def add_user(self, id: int, name: str, last_name: str = "", email: str = "", active: bool = True) -> dict:
        self.users[id] = {"ID": str(id), "NAME": name, "LAST_NAME": last_name, "EMAIL": email, "ACTIVE": active}
        return self.users[id]

    def add_category(self, id: int, name: str, sort: int = 100) -> None:
        self.categories[id] = {"id": id, "name": name, "sort": sort}

    def add_stage(self, category_id: int, status_id: str, name: str, sort: int, semantics: str | None = None) -> None:
        entity = "DEAL_STAGE" if category_id == 0 else f"DEAL_STAGE_{category_id}"
        self.statuses.append(
            {
                "ID": str(len(self.statuses) + 1),
                "ENTITY_ID": entity,
                "STATUS_ID": status_id,
                "NAME": name,
                "SORT": str(sort),
                "SEMANTICS": semantics,
                "CATEGORY_ID": str(category_id),
            }
        )

    def _semantic(self, stage_id: str) -> str:
        for s in self.statuses:
            if s["STATUS_ID"] == stage_id:
                return s["SEMANTICS"] or "P"
        return "P"

    def add_deal(
        self,
        id: int,
        title: str,
        stage_id: str,
        *,
        category_id: int = 0,
        assigned_by: int = 1,
        opportunity: float = 0,
        contact_id: int | None = None,
        company_id: int | None = None,
        at: float | None = None,
    ) -> dict:
        at = self.unix_now() if at is None else at
        sem = self._semantic(stage_id)
        self.deals[id] = {
            "id": id,
            "title": title,
            "categoryId": category_id,
            "stageId": stage_id,
            "stageSemanticId": sem,
            "closed": "Y" if sem in ("S", "F") else "N",
            "assignedById": assigned_by,
            "opportunity": opportunity,
            "currencyId": "RUB",
            "contactId": contact_id,
            "contactIds": [contact_id] if contact_id else [],
            "companyId": company_id,
            "createdTime": _iso(at),
            "updatedTime": _iso(at),
            "movedTime": _iso(at),
            "movedBy": assigned_by,
        }
        self.stage_history.append(
            {
                "ID": self.next_id(),
                "TYPE_ID": 1,
                "OWNER_ID": id,
                "CREATED_TIME": _iso(at),
                "CATEGORY_ID": category_id,
                "STAGE_SEMANTIC_ID": sem,
                "STAGE_ID": stage_id,
            }
        )
        self._offline("ONCRMDEALADD", id)
        return self.deals[id]

    def move_deal(self, id: int, stage_id: str, at: float | None = None) -> dict:
        at = self.unix_now() if at is None else at
        deal = self.deals[id]
        sem = self._semantic(stage_id)
        deal.update(
            stageId=stage_id,
            stageSemanticId=sem,
            closed="Y" if sem in ("S", "F") else "N",
            updatedTime=_iso(at),
            movedTime=_iso(at),
        )
        self.stage_history.append(
            {
                "ID": self.next_id(),
                "TYPE_ID": 2,
                "OWNER_ID": id,
                "CREATED_TIME": _iso(at),
                "CATEGORY_ID": deal["categoryId"],
                "STAGE_SEMANTIC_ID": sem,
                "STAGE_ID": stage_id,
            }
        )
        self._offline("ONCRMDEALUPDATE", id)
        return deal

    def delete_deal(self, id: int) -> None:
        self.deals.pop(id, None)
        self._offline("ONCRMDEALDELETE", id)

    def add_activity(
        self,
        id: int | None,
        deal_id: int,
        subject: str,
        deadline: float,
        *,
        responsible: int = 1,
        completed: bool = False,
        at: float | None = None,
        type_id: int = 6,
    ) -> dict:
        at = self.unix_now() if at is None else at
        id = id or self.next_id()
        self.activities[id] = {
            "ID": str(id),
            "OWNER_TYPE_ID": "2",
            "OWNER_ID": str(deal_id),
            "TYPE_ID": str(type_id),
            "PROVIDER_ID": "CRM_TODO",
            "SUBJECT": subject,
            "DESCRIPTION": "",
            "RESPONSIBLE_ID": str(responsible),
            "DEADLINE": _iso(deadline),
            "END_TIME": _iso(deadline),
            "COMPLETED": "Y" if completed else "N",
            "CREATED": _iso(at),
            "LAST_UPDATED": _iso(at),
            "AUTHOR_ID": str(responsible),
        }
        self._offline("ONCRMACTIVITYADD", id)
        return self.activities[id]

    def complete_activity(self, id: int, at: float | None = None) -> dict:
        at = self.unix_now() if at is None else at
        self.activities[id].update(COMPLETED="Y", LAST_UPDATED=_iso(at))
        self._offline("ONCRMACTIVITYUPDATE", id)
        return self.activities[id]

    def add_task(
        self,
        id: int | None,
        deal_id: int | None,
        title: str,
        deadline: float,
        *,
        responsible: int = 1,
        status: int = 2,
        at: float | None = None,
        description: str = "",
    ) -> dict:
        at = self.unix_now() if at is None else at
        id = id or self.next_id()
        self.tasks[id] = {
            "id": str(id),
            "title": title,
            "description": description,
            "status": str(status),
            "deadline": _iso(deadline),
            "responsibleId": str(responsible),
            "ufCrmTask": [f"D_{deal_id}"] if deal_id else [],
            "createdDate": _iso(at),
            "changedDate": _iso(at),
            "createdBy": str(responsible),
        }
        self._offline("ONTASKADD", id, "FIELDS_AFTER")
        return self.tasks[id]

    def update_task(self, id: int, at: float | None = None, **changes: Any) -> dict:
        at = self.unix_now() if at is None else at
        self.tasks[id].update(changes, changedDate=_iso(at))
        self._offline("ONTASKUPDATE", id, "FIELDS_AFTER")
        return self.tasks[id]

    def add_comment(self, id: int | None, deal_id: int, text: str, author: int = 1, at: float | None = None) -> dict:
        at = self.unix_now() if at is None else at
        id = id or self.next_id()
        self.comments[id] = {
            "ID": str(id),
            "ENTITY_ID": str(deal_id),
            "ENTITY_TYPE": "deal",
            "CREATED": _iso(at),
            "COMMENT": text,
            "AUTHOR_ID": str(author),
            "FILES": [],
        }
        self._offline("ONCRMTIMELINECOMMENTADD", id, None)
        return self.comments[id]

    def add_contact(self, id: int, name: str, phones: list[str], assigned_by: int = 1, at: float | None = None) -> dict:
        at = self.unix_now() if at is None else at
        self.contacts[id] = {
            "ID": str(id),
            "NAME": name,
            "LAST_NAME": "",
            "ASSIGNED_BY_ID": str(assigned_by),
            "DATE_MODIFY": _iso(at),
            "PHONE": [
                {"ID": str(i), "VALUE_TYPE": "WORK", "VALUE": p, "TYPE_ID": "PHONE"} for i, p in enumerate(phones, 1)
            ],
        }
        self._offline("ONCRMCONTACTADD", id)
        return self.contacts[id]

    def add_company(
        self, id: int, title: str, phones: list[str] = (), assigned_by: int = 1, at: float | None = None
    ) -> dict:
        at = self.unix_now() if at is None else at
        self.companies[id] = {
            "ID": str(id),
            "COMPANY_TYPE": "CUSTOMER",
            "TITLE": title,
            "ASSIGNED_BY_ID": str(assigned_by),
            "DATE_CREATE": _iso(at),
            "DATE_MODIFY": _iso(at),
            "HAS_PHONE": "Y" if phones else "N",
            "PHONE": [
                {"ID": str(i), "VALUE_TYPE": "WORK", "VALUE": p, "TYPE_ID": "PHONE"} for i, p in enumerate(phones, 1)
            ],
        }
        self._offline("ONCRMCOMPANYADD", id)
        return self.companies[id]

    def update_company(self, id: int, at: float | None = None, **changes: Any) -> dict:
        """Changes a company's fields (TITLE, ASSIGNED_BY_ID…), as a manager edits its card."""
        at = self.unix_now() if at is None else at
        self.companies[id].update(changes, DATE_MODIFY=_iso(at))
        self._offline("ONCRMCOMPANYUPDATE", id)
        return self.companies[id]

    def delete_company(self, id: int) -> None:
        self.companies.pop(id, None)
        self._offline("ONCRMCOMPANYDELETE", id)

    def _bind_call(self, activity_id: int, contact_id: int | None, deal_id: int | None) -> None:
        # Bitrix24 files a call activity on the contact and on that contact's open deal.
        self.bindings[activity_id] = ([{"entityTypeId": 3, "entityId": contact_id}] if contact_id else []) + (
            [{"entityTypeId": 2, "entityId": deal_id}] if deal_id else []
        )

    def _call_activity(
        self,
        *,
        user: int,
        phone: str,
        incoming: bool,
        start: float,
        duration: int,
        contact_id: int | None,
        deal_id: int | None,
        completed: bool,
    ) -> int:
        id = self.next_id()
        owner_type, owner = (3, contact_id) if contact_id else ((2, deal_id) if deal_id else (0, 0))
        self.activities[id] = {
            "ID": str(id),
            "OWNER_TYPE_ID": str(owner_type),
            "OWNER_ID": str(owner or 0),
            "TYPE_ID": "2",
            "PROVIDER_ID": "VOXIMPLANT_CALL",
            "DIRECTION": "1" if incoming else "2",
            "SUBJECT": ("Входящий звонок " if incoming else "Исходящий звонок ") + phone,
            "DESCRIPTION": "",
            "RESPONSIBLE_ID": str(user),
            "DEADLINE": _iso(start),
            "END_TIME": _iso(start + duration),
            "COMPLETED": "Y" if completed else "N",
            "CREATED": _iso(start + duration),
            "LAST_UPDATED": _iso(start + duration),
            "AUTHOR_ID": str(user),
        }
        self._bind_call(id, contact_id, deal_id)
        return id

    def add_call(
        self,
        call_id: str,
        *,
        user: int,
        phone: str,
        call_type: int = 1,
        duration: int = 0,
        code: str = "200",
        start: float | None = None,
        contact_id: int | None = None,
        deal_id: int | None = None,
        record_url: str | None = None,
    ) -> dict:
        """A call of the portal's own telephony that just ended: its statistics row and its activity."""
        start = self.unix_now() - duration if start is None else start
        activity = self._call_activity(
            user=user,
            phone=phone,
            incoming=call_type in (2, 3),
            start=start,
            duration=duration,
            contact_id=contact_id,
            deal_id=deal_id,
            completed=code == "200",
        )
        row = {
            "ID": str(self.next_id()),
            "PORTAL_USER_ID": str(user),
            "PORTAL_NUMBER": "reg12345",
            "PHONE_NUMBER": phone,
            "CALL_ID": call_id,
            "EXTERNAL_CALL_ID": None,
            "CALL_CATEGORY": "external",
            "CALL_DURATION": str(duration),
            "CALL_START_DATE": _iso(start),
            "CALL_RECORD_URL": record_url or "",
            "COST": "0.0000",
            "COST_CURRENCY": "RUR",
            "CALL_FAILED_CODE": code,
            "CALL_FAILED_REASON": "",
            "CRM_ENTITY_TYPE": "CONTACT" if contact_id else "",
            "CRM_ENTITY_ID": str(contact_id or ""),
            "CRM_ACTIVITY_ID": str(activity),
            "REST_APP_ID": None,
            "REST_APP_NAME": None,
            "CALL_TYPE": str(call_type),
        }
        self.call_stats.append(row)
        return row

    def call_end_form(self, call_id: str, *, token: str | None = None) -> str:
        """ONVOXIMPLANTCALLEND as Bitrix24 posts it for a call added with add_call."""
        row = next(r for r in self.call_stats if r["CALL_ID"] == call_id)
        pairs = [("event", "ONVOXIMPLANTCALLEND"), ("event_handler_id", "31")]
        pairs += [
            (f"data[{k}]", str(row[k]))
            for k in (
                "CALL_ID",
                "CALL_TYPE",
                "PHONE_NUMBER",
                "PORTAL_NUMBER",
                "PORTAL_USER_ID",
                "CALL_DURATION",
                "CALL_START_DATE",
                "COST",
                "COST_CURRENCY",
                "CALL_FAILED_CODE",
                "CALL_FAILED_REASON",
                "CRM_ACTIVITY_ID",
            )
        ]
        pairs += [
            ("ts", str(int(self.unix_now()))),
            ("auth[domain]", self.domain),
            ("auth[client_endpoint]", f"https://{self.domain}/rest/"),
            ("auth[server_endpoint]", "https://oauth.bitrix.info/rest/"),
            ("auth[member_id]", self.member_id),
            ("auth[application_token]", token or self.application_token),
        ]
        return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)

    def event_form(
        self, event: str, record_id: int | str, *, token: str | None = None, member_id: str | None = None
    ) -> str:
        """The body Bitrix24 posts to a handler for this event, urlencoded in wire order."""
        field = {"ONTASK": "data[FIELDS_AFTER][ID]", "ONCRMTIMELINECOMMENT": "data[ID]"}
        name = next((v for k, v in field.items() if event.startswith(k)), "data[FIELDS][ID]")
        pairs = [
            ("event", event),
            ("event_handler_id", "15"),
            (name, str(record_id)),
            ("ts", str(int(self.unix_now()))),
            ("auth[domain]", self.domain),
            ("auth[client_endpoint]", f"https://{self.domain}/rest/"),
            ("auth[server_endpoint]", "https://oauth.bitrix.info/rest/"),
            ("auth[member_id]", member_id or self.member_id),
            ("auth[application_token]", token or self.application_token),
        ]
        return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)

    def install_form(self, client_id: str) -> str:
        tokens = self.issue_tokens(client_id)
        pairs = [
            ("event", "ONAPPINSTALL"),
            ("data[VERSION]", "1"),
            ("data[ACTIVE]", "Y"),
            ("data[INSTALLED]", "Y"),
            ("data[LANGUAGE_ID]", "ru"),
            ("ts", str(int(self.unix_now()))),
            ("auth[access_token]", tokens["access_token"]),
            ("auth[expires]", str(tokens["expires"])),
            ("auth[expires_in]", "3600"),
            ("auth[scope]", "crm,task,placement,telephony"),
            ("auth[domain]", self.domain),
            ("auth[server_endpoint]", "https://oauth.bitrix.info/rest/"),
            ("auth[status]", "L"),
            ("auth[client_endpoint]", f"https://{self.domain}/rest/"),
            ("auth[member_id]", self.member_id),
            ("auth[user_id]", "1"),
            ("auth[refresh_token]", tokens["refresh_token"]),
            ("auth[application_token]", self.application_token),
        ]
        return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)

    # -- REST ------------------------------------------------------------------------------------

    def _page(
        self,
        rows: list[dict],
        params: dict[str, Any],
        key: str | None = None,
        id_field: str = "ID",
        *,
        selected: bool = False,
    ) -> dict[str, Any]:
        """A page of `rows` as a list method answers; `selected`: only the fields `select` names
        (taken after the filter, which may name fields the select leaves out)."""
        flt = _param(params, "filter", default={}) or {}
        rows = [r for r in rows if _matches(r, flt)]
        order = _param(params, "order", default={}) or {}
        desc = any(str(v).upper() == "DESC" for v in order.values()) if isinstance(order, dict) else False
        rows.sort(key=lambda r: int(r.get(id_field) or r.get(id_field.lower()) or 0), reverse=desc)
        start = int(_param(params, "start", default=0) or 0)
        if start == -1:
            page, body = rows[:PAGE_SIZE], {}
        else:
            page = rows[start : start + PAGE_SIZE]
            body = {"total": len(rows)}
            if start + PAGE_SIZE < len(rows):
                body["next"] = start + PAGE_SIZE
        if selected:
            page = [_selected(r, params) for r in page]
        body["result"] = {key: page} if key else page
        return body

    def run(self, method: str, params: dict[str, Any], app_mode: bool) -> dict[str, Any]:
        m = method.lower()
        handler = getattr(self, "m_" + m.replace(".", "_"), None)
        if handler is None:
            raise RestError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
        if m.startswith("event.") or m.startswith("placement.") or m == "app.info":
            if not app_mode:
                raise RestError(400, "ACCESS_DENIED", "Access denied! Application context required")
        if m.startswith("telephony.externalcall.") and not app_mode:
            raise RestError(400, "WRONG_AUTH_TYPE", "Current authorization type is denied for this method")
        return handler(params)

    def m_profile(self, p: dict) -> dict:
        return {"result": {"ID": "1", "ADMIN": True, "NAME": "Admin"}}

    def m_app_info(self, p: dict) -> dict:
        return {"result": {"ID": 5, "CODE": "local.crmwatch", "VERSION": 1, "STATUS": "L", "INSTALLED": True}}

    def m_user_get(self, p: dict) -> dict:
        return self._page(list(self.users.values()), {"start": _param(p, "start", default=0)})

    def m_crm_category_list(self, p: dict) -> dict:
        return {
            "result": {"categories": sorted(self.categories.values(), key=lambda c: c["id"])},
            "total": len(self.categories),
        }

    def m_crm_status_list(self, p: dict) -> dict:
        return self._page(list(self.statuses), p)

    def m_crm_item_list(self, p: dict) -> dict:
        self._deal_type(p)
        # As the portal: only the fields `select` names (all with "*"); user fields by either
        # spelling, answered in the one useOriginalUfNames asks for.
        select = _param(p, "select", default=None) or ["*"]
        original = _param(p, "useOriginalUfNames", default="N") == "Y"
        wanted = {str(name).lower() for name in select} | {"id"}
        rows = []
        for d in self.deals.values():
            row = {k: v for k, v in d.items() if not k.startswith("UF_CRM_")}
            for name, value in d.items():
                if name.startswith("UF_CRM_") and ("*" in select or name in select or _camel_uf(name) in select):
                    row[name if original else _camel_uf(name)] = value
            rows.append(row)
        page = self._page(rows, p, "items", "id")
        if "*" not in select:  # after the filter, which may name fields the select leaves out
            page["result"]["items"] = [
                {k: v for k, v in r.items() if k.lower() in wanted or k.startswith(("UF_CRM_", "ufCrm"))}
                for r in page["result"]["items"]
            ]
        return page

    def m_crm_item_get(self, p: dict) -> dict:
        self._deal_type(p)
        deal = self.deals.get(int(_param(p, "id", default=0) or 0))
        if deal is None:
            raise RestError(400, "NOT_FOUND", "Элемент не найден")
        original = _param(p, "useOriginalUfNames", default="N") == "Y"
        item = {k if original or not k.startswith("UF_CRM_") else _camel_uf(k): v for k, v in deal.items()}
        return {"result": {"item": item}}

    def _deal_type(self, p: dict) -> None:
        if str(_param(p, "entityTypeId", default="")) != "2":
            raise RestError(400, "NOT_FOUND", "Smart process not found")

    def m_crm_stagehistory_list(self, p: dict) -> dict:
        if str(_param(p, "entityTypeId", default="")) != "2":
            raise RestError(400, "ERROR_ARGUMENT", "entityTypeId")
        return self._page(list(self.stage_history), p, "items")

    def m_crm_activity_list(self, p: dict) -> dict:
        return self._page([dict(a) for a in self.activities.values()], p)

    def m_crm_activity_get(self, p: dict) -> dict:
        act = self.activities.get(int(_param(p, "id", default=0) or 0))
        if act is None:
            raise RestError(400, "NOT_FOUND", "Not found")
        return {"result": dict(act)}

    def m_crm_activity_todo_add(self, p: dict) -> dict:
        owner_type, owner = _param(p, "ownerTypeId"), _param(p, "ownerId")
        deadline = _param(p, "deadline")
        if str(owner_type) != "2" or int(owner or 0) not in self.deals or not deadline:
            raise RestError(400, "ERROR_WRONG_OWNER" if deadline else "ERROR_ARGUMENT", "ownerId / deadline")
        act = self.add_activity(
            None,
            int(owner),
            _param(p, "title", default="") or "",
            datetime.fromisoformat(deadline).timestamp(),
            responsible=int(_param(p, "responsibleId", default=1) or 1),
        )
        act["DESCRIPTION"] = _param(p, "description", default="") or ""
        return {"result": {"id": int(act["ID"])}}

    def m_crm_activity_update(self, p: dict) -> dict:
        act = self.activities.get(int(_param(p, "id", default=0) or 0))
        if act is None:
            raise RestError(400, "NOT_FOUND", "Not found")
        fields = _param(p, "fields", default={}) or {}
        act.update({k.upper(): v for k, v in fields.items()}, LAST_UPDATED=_iso(self.unix_now()))
        self._offline("ONCRMACTIVITYUPDATE", int(act["ID"]))
        return {"result": True}

    def m_tasks_task_list(self, p: dict) -> dict:
        rows = [
            dict(t, ID=t["id"], UF_CRM_TASK=t["ufCrmTask"], TITLE=t["title"], RESPONSIBLE_ID=t["responsibleId"])
            for t in self.tasks.values()
        ]
        body = self._page(rows, p, "tasks")
        body["result"]["tasks"] = [{k: v for k, v in r.items() if not k.isupper()} for r in body["result"]["tasks"]]
        return body

    def m_tasks_task_get(self, p: dict) -> dict:
        task = self.tasks.get(int(_param(p, "taskId", "id", default=0) or 0))
        if task is None:
            raise RestError(400, "ERROR_CORE", "Задача не найдена или доступ запрещен")
        return {"result": {"task": dict(task)}}

    def m_tasks_task_add(self, p: dict) -> dict:
        f = _param(p, "fields", default={}) or {}
        if not f.get("TITLE") or not f.get("RESPONSIBLE_ID", 1):
            raise RestError(400, "ERROR_CORE", "TITLE")
        deal = next((b[2:] for b in f.get("UF_CRM_TASK") or [] if str(b).startswith("D_")), None)
        task = self.add_task(
            None,
            int(deal) if deal else None,
            f["TITLE"],
            datetime.fromisoformat(f["DEADLINE"]).timestamp() if f.get("DEADLINE") else 0,
            responsible=int(f.get("RESPONSIBLE_ID") or 1),
            description=f.get("DESCRIPTION") or "",
        )
        return {"result": {"task": dict(task)}}

    def m_tasks_task_complete(self, p: dict) -> dict:
        tid = int(_param(p, "taskId", default=0) or 0)
        if tid not in self.tasks:
            raise RestError(400, "ERROR_CORE", "Задача не найдена или доступ запрещен")
        self.update_task(tid, status="5")
        return {"result": {"task": dict(self.tasks[tid])}}

    def m_crm_timeline_comment_list(self, p: dict) -> dict:
        flt = _param(p, "filter", default={}) or {}
        if not flt.get("ENTITY_ID") or not flt.get("ENTITY_TYPE"):
            raise RestError(400, "ERROR_ARGUMENT", "filter ENTITY_ID and ENTITY_TYPE are required")
        return self._page([dict(c) for c in self.comments.values()], p)

    def m_crm_timeline_comment_get(self, p: dict) -> dict:
        c = self.comments.get(int(_param(p, "id", default=0) or 0))
        if c is None:
            raise RestError(400, "NOT_FOUND", "Not found")
        return {"result": dict(c)}

    def m_crm_timeline_comment_add(self, p: dict) -> dict:
        f = _param(p, "fields", default={}) or {}
        if (
            str(f.get("ENTITY_TYPE", "")).lower() != "deal"
            or int(f.get("ENTITY_ID") or 0) not in self.deals
            or not f.get("COMMENT")
        ):
            raise RestError(400, "ERROR_ARGUMENT", "ENTITY_ID / COMMENT")
        c = self.add_comment(None, int(f["ENTITY_ID"]), f["COMMENT"])
        return {"result": int(c["ID"])}

    def m_crm_contact_list(self, p: dict) -> dict:
        return self._page([dict(c) for c in self.contacts.values()], p)

    def m_crm_contact_get(self, p: dict) -> dict:
        c = self.contacts.get(int(_param(p, "id", default=0) or 0))
        if c is None:
            raise RestError(400, "NOT_FOUND", "Not found")
        return {"result": dict(c)}

    def m_crm_company_list(self, p: dict) -> dict:
        return self._page([dict(c) for c in self.companies.values()], p, selected=True)

    def m_crm_company_get(self, p: dict) -> dict:
        c = self.companies.get(int(_param(p, "id", default=0) or 0))
        if c is None:
            raise RestError(400, "", "Not found")
        return {"result": dict(c)}

    def m_crm_duplicate_findbycomm(self, p: dict) -> dict:
        if str(_param(p, "type", default="")).upper() != "PHONE":
            raise RestError(400, "Communication type is not defined", "Parameter 'type' is required.")
        values = _param(p, "values", default=[]) or []
        if not isinstance(values, list) or not values or len(values) > 20:
            raise RestError(400, "Communication values is not defined", "Parameter 'values' is required.")
        # Bitrix24 compares digits, ignoring formatting and the extension; so does this.
        wanted = {_digits(v) for v in values}
        found: dict[str, list[int]] = {}
        entity = str(_param(p, "entity_type", default="")).upper()
        for name, rows in (("CONTACT", self.contacts), ("COMPANY", self.companies)):
            if entity and entity != name:
                continue
            ids = [id for id, row in rows.items() if any(_digits(ph["VALUE"]) in wanted for ph in row["PHONE"])]
            if ids:
                found[name] = ids
        return {"result": found or []}

    def m_crm_activity_binding_list(self, p: dict) -> dict:
        raw = str(_param(p, "activityId", default="") or "")
        if not raw.isdigit():
            raise RestError(400, "100", "Required fields are missing")
        act = self.activities.get(int(raw))
        if act is None:
            raise RestError(400, "NOT_FOUND", "Element not found")
        bindings = self.bindings.get(int(raw)) or [
            {"entityTypeId": int(act["OWNER_TYPE_ID"]), "entityId": int(act["OWNER_ID"])}
        ]
        return {"result": [dict(b) for b in bindings]}

    def m_voximplant_statistic_get(self, p: dict) -> dict:
        p = {**p, "filter": _param(p, "FILTER", default={}) or {}}
        return self._page([dict(r) for r in self.call_stats], p)

    def m_telephony_externalcall_register(self, p: dict) -> dict:
        user, phone, kind = (str(_param(p, n, default="") or "") for n in ("USER_ID", "PHONE_NUMBER", "TYPE"))
        if not user:
            raise RestError(400, "ERROR_CORE", "USER_ID or USER_PHONE_INNER should be set")
        if kind not in {"1", "2", "3", "4", "5"}:
            raise RestError(400, "ERROR_CORE", "Unknown TYPE")
        external = _param(p, "EXTERNAL_CALL_ID")
        now = self.unix_now()
        # A repeat within 30 minutes with the same number, type, user and EXTERNAL_CALL_ID is the same call.
        for call_id, reg in self.registered.items():
            if (reg["USER_ID"], reg["PHONE_NUMBER"], reg["TYPE"], reg["EXTERNAL_CALL_ID"]) == (
                user,
                phone,
                kind,
                external,
            ) and now - reg["at"] < 1800:
                return {"result": self._registration(call_id)}
        call_id = f"externalCall.{secrets.token_hex(16)}.{int(now)}"
        entity_type, entity_id = _param(p, "CRM_ENTITY_TYPE"), _param(p, "CRM_ENTITY_ID")
        if not entity_type:
            digits = _digits(phone)
            match = next(
                (id for id, c in self.contacts.items() if any(_digits(x["VALUE"]) == digits for x in c["PHONE"])), None
            )
            entity_type, entity_id = ("CONTACT", match) if match else (None, None)
        self.registered[call_id] = {
            "USER_ID": user,
            "PHONE_NUMBER": phone,
            "TYPE": kind,
            "EXTERNAL_CALL_ID": external,
            "CALL_START_DATE": _param(p, "CALL_START_DATE") or _iso(now),
            "at": now,
            "CRM_ENTITY_TYPE": entity_type,
            "CRM_ENTITY_ID": entity_id,
            "finished": False,
        }
        return {"result": self._registration(call_id)}

    def _registration(self, call_id: str) -> dict:
        reg = self.registered[call_id]
        return {
            "CALL_ID": call_id,
            "CRM_CREATED_LEAD": None,
            "CRM_CREATED_ENTITIES": [],
            "CRM_ENTITY_TYPE": reg["CRM_ENTITY_TYPE"],
            "CRM_ENTITY_ID": _num(str(reg["CRM_ENTITY_ID"] or "")) or None,
        }

    def m_telephony_externalcall_finish(self, p: dict) -> dict:
        call_id = _param(p, "CALL_ID")
        if not isinstance(call_id, str) or not call_id:
            raise RestError(400, "INVALID_ARGUMENT", "CALL_ID must be a string")
        reg = self.registered.get(call_id)
        if reg is None:
            raise RestError(400, "ERROR_CORE", "Call is not found (call should be registered prior to finishing)")
        existing = next((r for r in self.call_stats if r["CALL_ID"] == call_id), None)
        if existing is not None:
            return {"result": dict(existing)}
        duration = int(_param(p, "DURATION", default=0) or 0)
        code = str(_param(p, "STATUS_CODE", default="") or ("200" if duration > 0 else "304"))
        contact = int(reg["CRM_ENTITY_ID"]) if reg["CRM_ENTITY_TYPE"] == "CONTACT" and reg["CRM_ENTITY_ID"] else None
        deal = next(
            (d["id"] for d in self.deals.values() if contact and d.get("contactId") == contact and d["closed"] == "N"),
            None,
        )
        start = datetime.fromisoformat(reg["CALL_START_DATE"]).timestamp()
        activity = self._call_activity(
            user=int(reg["USER_ID"]),
            phone=reg["PHONE_NUMBER"],
            incoming=reg["TYPE"] in ("2", "3"),
            start=start,
            duration=duration,
            contact_id=contact,
            deal_id=deal,
            completed=True,
        )
        row = {
            "ID": str(self.next_id()),
            "CALL_ID": call_id,
            "EXTERNAL_CALL_ID": reg["EXTERNAL_CALL_ID"],
            "PORTAL_USER_ID": reg["USER_ID"],
            "PHONE_NUMBER": reg["PHONE_NUMBER"],
            "PORTAL_NUMBER": "",
            "CALL_TYPE": reg["TYPE"],
            "CALL_DURATION": str(duration),
            "CALL_START_DATE": reg["CALL_START_DATE"],
            "CALL_RECORD_URL": _param(p, "RECORD_URL") or "",
            "CALL_FAILED_CODE": code,
            "CALL_FAILED_REASON": "",
            "COST": "0.0000",
            "COST_CURRENCY": "",
            "CRM_ENTITY_TYPE": reg["CRM_ENTITY_TYPE"] or "",
            "CRM_ENTITY_ID": str(reg["CRM_ENTITY_ID"] or ""),
            "CRM_ACTIVITY_ID": str(activity),
        }
        self.call_stats.append(row)
        return {"result": dict(row)}

    def m_event_bind(self, p: dict) -> dict:
        event = str(_param(p, "event", default="")).upper()
        kind = "offline" if _param(p, "event_type") == "offline" else _param(p, "handler", default="")
        if not event or not kind:
            raise RestError(400, "ERROR_ARGUMENT", "handler")
        if (event, kind) in self.bound:
            raise RestError(400, "ERROR_EVENT_BIND", "Handler already binded")
        self.bound.add((event, kind))
        return {"result": True}

    def m_placement_bind(self, p: dict) -> dict:
        if not _param(p, "PLACEMENT") or not _param(p, "HANDLER"):
            raise RestError(400, "ERROR_ARGUMENT", "PLACEMENT / HANDLER")
        self.placements.append(
            {"placement": _param(p, "PLACEMENT"), "handler": _param(p, "HANDLER"), "title": _param(p, "TITLE")}
        )
        return {"result": True}

    def m_event_offline_get(self, p: dict) -> dict:
        clear = str(_param(p, "clear", default="1")) != "0"
        limit = int(_param(p, "limit", default=50) or 50)
        pid = _param(p, "process_id")
        if pid:
            picked = [r for r in self.offline if r["PROCESS_ID"] == pid and r["ERROR"] == "0"][:limit]
        else:
            picked = [r for r in self.offline if not r["PROCESS_ID"] and r["ERROR"] == "0"][:limit]
            pid = secrets.token_hex(16) if picked else None
        if clear:
            self.offline = [r for r in self.offline if r not in picked]
        else:
            for r in picked:
                r["PROCESS_ID"] = pid
        events = [
            {k: r[k] for k in ("ID", "TIMESTAMP_X", "EVENT_NAME", "EVENT_DATA", "EVENT_ADDITIONAL", "MESSAGE_ID")}
            for r in picked
        ]
        return {"result": {"process_id": None if clear else pid, "events": events}}

    def m_event_offline_clear(self, p: dict) -> dict:
        pid = _param(p, "process_id")
        if not pid:
            raise RestError(400, "ERROR_ARGUMENT", "process_id")
        ids = {str(i) for i in _param(p, "message_id", default=[]) or []}
        self.offline = [r for r in self.offline if not (r["PROCESS_ID"] == pid and (not ids or r["MESSAGE_ID"] in ids))]
        return {"result": True}

    def m_event_offline_error(self, p: dict) -> dict:
        pid = _param(p, "process_id")
        ids = {str(i) for i in _param(p, "message_id", default=[]) or []}
        for r in self.offline:
            if r["PROCESS_ID"] == pid and r["MESSAGE_ID"] in ids:
                r["ERROR"] = "1"
        return {"result": True}

    def m_event_offline_list(self, p: dict) -> dict:
        return self._page([dict(r) for r in self.offline], p)

    def m_batch(self, p: dict, app_mode: bool = False) -> dict:
        cmd = _param(p, "cmd", default={}) or {}
        if len(cmd) > MAX_BATCH:
            raise RestError(400, "ERROR_BATCH_LENGTH_EXCEEDED", f"Max batch length exceeded {MAX_BATCH}")
        out: dict[str, Any] = {
            "result": {},
            "result_error": {},
            "result_total": {},
            "result_next": {},
            "result_time": {},
        }
        halt = str(_param(p, "halt", default="0")) == "1"
        for key, line in cmd.items():
            method, _, query = str(line).partition("?")
            params = _listify(parse_bracket_form(query.encode())) if query else {}
            params = _substitute(params, out["result"])
            try:
                if self.blocked.get(method.lower(), 0) > self.unix_now():
                    raise RestError(429, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.")
                body = self.run(method, params, app_mode)
            except RestError as exc:
                out["result_error"][key] = {"error": exc.error, "error_description": exc.description}
                if halt:
                    break
                continue
            out["result"][key] = body.get("result")
            if "total" in body:
                out["result_total"][key] = body["total"]
            if "next" in body:
                out["result_next"][key] = body["next"]
        # PHP answers an empty associative array as [].
        return {"result": {k: (v or []) for k, v in out.items()}}

    def refresh(self, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        client_id = params.get("client_id", "")
        if (
            self.oauth_clients.get(client_id) != params.get("client_secret")
            or params.get("grant_type") != "refresh_token"
        ):
            return 401, {"error": "invalid_client", "error_description": "Invalid client"}
        if self.refresh_tokens.pop(params.get("refresh_token", ""), None) != client_id:
            return 400, {"error": "invalid_grant", "error_description": "Invalid refresh token"}
        return 200, self.issue_tokens(client_id)


def create_bitrix24_app(state: Bitrix24Emulator) -> FastAPI:
    app = FastAPI(title="Bitrix24 REST emulator", docs_url=None, redoc_url=None, openapi_url=None)

    def answer(body: dict[str, Any], operating: dict[str, float]) -> JSONResponse:
        now = state.unix_now()
        body = {
            **body,
            "time": {
                "start": now,
                "finish": now,
                "duration": 0.0,
                "processing": 0.0,
                "date_start": _iso(now),
                "date_finish": _iso(now),
                **operating,
            },
        }
        return JSONResponse(body)

    def error(exc: RestError) -> JSONResponse:
        return JSONResponse({"error": exc.error, "error_description": exc.description}, status_code=exc.status)

    @app.get("/oauth/token/")
    async def oauth(request: Request) -> JSONResponse:
        status, body = state.refresh(dict(request.query_params))
        return JSONResponse(body, status_code=status)

    @app.post("/rest/{path:path}")
    async def rest(request: Request, path: str) -> JSONResponse:
        state.request_log.append(path)
        raw = await request.body()
        try:
            params = (
                (await request.json())
                if raw.strip().startswith(b"{")
                else (_listify(parse_bracket_form(raw)) if raw else {})
            )
        except ValueError:
            return error(RestError(400, "INVALID_REQUEST", "bad body"))
        parts = path.removesuffix(".json").split("/")
        if len(parts) == 3:
            user, secret, method = parts
            if not user.isdigit() or (int(user), secret) not in state.webhooks:
                return error(RestError(401, "INVALID_CREDENTIALS", "Invalid request credentials"))
            app_mode = False
        elif len(parts) == 1:
            method = parts[0]
            token = params.pop("auth", None) or request.query_params.get("auth")
            if not token:
                return error(RestError(401, "NO_AUTH_FOUND", "Wrong authorization data"))
            if token not in state.access_tokens:
                return error(RestError(401, "expired_token", "The access token provided has expired."))
            app_mode = True
        else:
            return error(RestError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!"))
        state.calls.append((method.lower(), params))
        if state.faults:
            status, code = state.faults.pop(0)
            return error(RestError(status, code, "Injected fault"))
        if not state._admit():
            return error(RestError(503, "QUERY_LIMIT_EXCEEDED", "Too many requests"))
        if state.blocked.get(method.lower(), 0) > state.unix_now():
            return JSONResponse(
                {
                    "error": "OPERATION_TIME_LIMIT",
                    "error_description": "Method is blocked due to operation time limit.",
                    "time": {"operating_reset_at": int(state.blocked[method.lower()])},
                },
                status_code=429,
            )
        operating = state._spend(method)
        try:
            if method.lower() == "batch":
                body = state.m_batch(params, app_mode)
            else:
                body = state.run(method, params, app_mode)
        except RestError as exc:
            return error(exc)
        if state.lose_answers:
            state.lose_answers -= 1
            return JSONResponse({"error": "BAD_GATEWAY"}, status_code=502)
        return answer(body, operating)

    return app
