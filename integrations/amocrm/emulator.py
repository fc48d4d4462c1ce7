"""In-memory emulator of the amoCRM API v4 subset that crmwatch talks to.

It backs `crmwatch demo`, the integration tests (through httpx.ASGITransport) and the benchmark.
amoCRM's wire quirks are reproduced on purpose -- 204 with no body for an empty list, HAL paging
links, single-use refresh tokens, a per-token rate limit -- so that a client which works against
the emulator has already met the surprises of the real service.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

WON_STATUS_ID = 142
LOST_STATUS_ID = 143
CLOSED_STATUS_IDS = (WON_STATUS_ID, LOST_STATUS_ID)
PHONE_FIELD_ID = 264911
PHONE_ENUM_WORK = 193200
DEFAULT_LIMIT = 50
MAX_LIMIT = 250
MAX_EVENTS_LIMIT = 100
MAX_WRITE_BATCH = 50
TOKEN_TTL_S = 86400
NOTE_TYPES = ("common", "call_in", "call_out")
NOTE_ENTITIES = ("leads", "contacts", "companies")  # the cards a note can be on (GET /api/v4/<entity>/notes)
STAGE_COLORS = ("#99ccff", "#ffff99", "#ffcc66", "#ffcccc", "#d6eaff", "#deff81")
HAL_JSON = "application/hal+json"
PROBLEM_JSON = "application/problem+json"
OAUTH_PROBLEM_TYPE = "https://developers.amocrm.ru/v3/errors/OAuthProblemJson"


class ApiError(Exception):
    """An amoCRM-style problem answer; raised anywhere in a handler, rendered by the app."""

    def __init__(self, status: int, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.detail, self.extra = status, detail, extra


class OAuthError(ApiError):
    """The OAuth server words its problems differently from the API: a `hint` and a Russian title."""

    def __init__(self, status: int, hint: str) -> None:
        super().__init__(status, OAUTH_PROBLEM_TYPE)
        self.hint = hint

    def body(self) -> dict[str, Any]:
        return {
            "hint": self.hint,
            "title": "Некорректный запрос",
            "type": OAUTH_PROBLEM_TYPE,
            "status": self.status,
            "detail": self.detail,
        }


class EmulatorState:
    """Everything the emulated account holds. Plain data, so tests and the demo can poke at it directly."""

    def __init__(
        self,
        *,
        account_id: int = 29876543,
        subdomain: str = "demoshop",
        name: str = "Демо-магазин",
        current_user_id: int = 8100001,
        created_at: int = 1700000000,
    ) -> None:
        self.account: dict[str, Any] = {
            "id": account_id,
            "name": name,
            "subdomain": subdomain,
            "current_user_id": current_user_id,
            "country": "RU",
            "currency": "RUB",
            "timezone": "Europe/Moscow",
            "created_at": created_at,
        }
        self.users: dict[int, dict[str, Any]] = {}
        self.pipelines: dict[int, dict[str, Any]] = {}
        self.contacts: dict[int, dict[str, Any]] = {}
        self.companies: dict[int, dict[str, Any]] = {}
        self.leads: dict[int, dict[str, Any]] = {}
        self.tasks: dict[int, dict[str, Any]] = {}
        self.notes: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.tokens: set[str] = set()
        self.oauth_clients: dict[str, dict[str, str]] = {}
        self.auth_codes: dict[str, str] = {}
        self.refresh_tokens: dict[str, str] = {}
        self.request_log: list[tuple[str, str, str]] = []
        self.rejected_429 = 0
        # Monotonic seconds for the rate limiter; replace it in tests to make the window deterministic.
        self.clock: Callable[[], float] = time.monotonic
        # Unix seconds stamped on records created through the HTTP write endpoints.
        self.unix_now: Callable[[], int] = lambda: int(time.time())
        self._hits: dict[str, deque[float]] = {}
        self._faults: deque[int] = deque()
        # Every item a write endpoint applied, in order: (method, path, item as sent). Tests count
        # the CRM writes of one action here (a close leaves no other trace when repeated).
        self.writes: list[tuple[str, str, dict[str, Any]]] = []
        # Timed fault modes (self.clock seconds), for storms longer than a lease and chaos runs.
        self._storm_until = 0.0
        self._storm_retry_after = 1.0
        self._outage_until = 0.0
        self._outage_status = 503
        self._lose_answers_until = 0.0

    # -- credentials ---------------------------------------------------------------------------

    def add_token(self, token: str) -> None:
        self.tokens.add(token)

    def revoke_token(self, token: str) -> None:
        """Lets a test play an expired access token: the next request with it gets 401."""
        self.tokens.discard(token)

    def add_oauth_client(self, client_id: str, client_secret: str, redirect_uri: str) -> None:
        self.oauth_clients[client_id] = {"secret": client_secret, "redirect_uri": redirect_uri}

    def issue_auth_code(self, client_id: str) -> str:
        if client_id not in self.oauth_clients:
            raise KeyError(f"unknown OAuth client {client_id}")
        code = "def50200" + secrets.token_hex(24)
        self.auth_codes[code] = client_id
        return code

    def fail_next(self, n: int, status: int = 500) -> None:
        self._faults.extend([status] * n)

    def rate_limit_storm(self, seconds: float, retry_after: float = 1.0) -> None:
        """Every API request answers 429 with this Retry-After for the next `seconds`."""
        self._storm_until = self.clock() + seconds
        self._storm_retry_after = retry_after

    def outage(self, seconds: float, status: int = 503) -> None:
        """Every API request answers `status` for the next `seconds`, before doing anything."""
        self._outage_until = self.clock() + seconds
        self._outage_status = status

    def lose_answers(self, seconds: float) -> None:
        """For the next `seconds` writes are applied and then answered 502: the answer is lost."""
        self._lose_answers_until = self.clock() + seconds

    def healthy(self) -> None:
        """Ends every timed fault mode."""
        self._storm_until = self._outage_until = self._lose_answers_until = 0.0

    def timed_fault(self) -> Response | None:
        now = self.clock()
        if now < self._storm_until:
            self.rejected_429 += 1
            return Response(status_code=429, headers={"Retry-After": f"{self._storm_retry_after:g}"})
        if now < self._outage_until:
            return _problem(self._outage_status, "Service unavailable")
        return None

    def answer_lost(self) -> bool:
        return self.clock() < self._lose_answers_until

    # -- seeding -------------------------------------------------------------------------------

    def add_user(self, id: int, name: str, email: str, is_active: bool = True, is_admin: bool = False) -> dict:
        user = {"id": id, "name": name, "email": email, "is_active": is_active, "is_admin": is_admin}
        self.users[id] = user
        return user

    def add_pipeline(
        self,
        id: int,
        name: str,
        statuses: Iterable[tuple[int, str, int]],
        is_main: bool = False,
        sort: int | None = None,
    ) -> dict:
        rows = [
            _status(id, sid, sname, ssort, STAGE_COLORS[i % len(STAGE_COLORS)], True)
            for i, (sid, sname, ssort) in enumerate(statuses)
        ]
        # amoCRM gives every pipeline its own copy of the two closing stages, with fixed ids.
        rows.append(_status(id, WON_STATUS_ID, "Успешно реализовано", 10000, "#CCFF66", False))
        rows.append(_status(id, LOST_STATUS_ID, "Закрыто и не реализовано", 11000, "#D5D8DB", False))
        pipeline = {
            "id": id,
            "name": name,
            "sort": sort if sort is not None else len(self.pipelines) + 1,
            "is_main": is_main,
            "is_unsorted_on": False,
            "is_archive": False,
            "account_id": self.account["id"],
            "statuses": rows,
        }
        self.pipelines[id] = pipeline
        return pipeline

    def add_contact(
        self,
        id: int,
        name: str,
        phones: Iterable[str] = (),
        responsible_user_id: int | None = None,
        created_at: int | None = None,
        updated_at: int | None = None,
    ) -> dict:
        user = self._user_or_default(responsible_user_id)
        created = created_at if created_at is not None else self.unix_now()
        first, _, last = name.partition(" ")
        contact = {
            "id": id,
            "name": name,
            "first_name": first,
            "last_name": last,
            "responsible_user_id": user,
            "group_id": 0,
            "created_by": user,
            "updated_by": user,
            "created_at": created,
            "updated_at": updated_at if updated_at is not None else created,
            "phones": list(phones),
            "account_id": self.account["id"],
        }
        self.contacts[id] = contact
        return contact

    def add_company(
        self,
        id: int,
        name: str,
        phones: Iterable[str] = (),
        lead_ids: Iterable[int] = (),
        responsible_user_id: int | None = None,
    ) -> dict:
        user = self._user_or_default(responsible_user_id)
        now = self.unix_now()
        company = {
            "id": id,
            "name": name,
            "responsible_user_id": user,
            "group_id": 0,
            "created_by": user,
            "updated_by": user,
            "created_at": now,
            "updated_at": now,
            "phones": list(phones),
            "lead_ids": list(lead_ids),
            "account_id": self.account["id"],
        }
        self.companies[id] = company
        return company

    def add_lead(
        self,
        id: int,
        name: str,
        pipeline_id: int,
        status_id: int,
        price: int = 0,
        responsible_user_id: int | None = None,
        contact_ids: Iterable[int] = (),
        created_at: int | None = None,
        updated_at: int | None = None,
    ) -> dict:
        self._check_status(pipeline_id, status_id)
        user = self._user_or_default(responsible_user_id)
        created = created_at if created_at is not None else self.unix_now()
        lead = {
            "id": id,
            "name": name,
            "price": price,
            "responsible_user_id": user,
            "group_id": 0,
            "status_id": status_id,
            "pipeline_id": pipeline_id,
            "created_by": user,
            "updated_by": user,
            "created_at": created,
            "updated_at": updated_at if updated_at is not None else created,
            "closed_at": created if status_id in CLOSED_STATUS_IDS else None,
            "is_deleted": False,
            "contact_ids": list(contact_ids),
            "account_id": self.account["id"],
        }
        self.leads[id] = lead
        return lead

    def move_lead(
        self,
        lead_id: int,
        status_id: int,
        at: int | None = None,
        by_user: int | None = None,
        pipeline_id: int | None = None,
    ) -> dict:
        """Moves a lead and records the `lead_status_changed` event amoCRM would log."""
        lead = self.leads[lead_id]
        new_pipeline = pipeline_id if pipeline_id is not None else lead["pipeline_id"]
        self._check_status(new_pipeline, status_id)
        at = at if at is not None else self.unix_now()
        by_user = by_user if by_user is not None else lead["responsible_user_id"]
        before = {"id": lead["status_id"], "pipeline_id": lead["pipeline_id"]}
        lead.update(
            status_id=status_id,
            pipeline_id=new_pipeline,
            updated_at=at,
            updated_by=by_user,
            closed_at=at if status_id in CLOSED_STATUS_IDS else None,
        )
        event = {
            "id": f"01{len(self.events) + 1:010x}",
            "type": "lead_status_changed",
            "entity_id": lead_id,
            "entity_type": "lead",
            "created_by": by_user,
            "created_at": at,
            "value_after": [{"lead_status": {"id": status_id, "pipeline_id": new_pipeline}}],
            "value_before": [{"lead_status": before}],
            "account_id": self.account["id"],
            "_embedded": {"entity": {"id": lead_id}},
        }
        self.events.append(event)
        return event

    def update_lead(self, lead_id: int, at: int | None = None, by_user: int | None = None, **changes: Any) -> dict:
        """Edits name/price/responsible_user_id, e.g. to replay a `leads.update` webhook in the demo."""
        unknown = set(changes) - {"name", "price", "responsible_user_id"}
        if unknown:
            raise ValueError(f"update_lead cannot change {sorted(unknown)}; use move_lead for stages")
        lead = self.leads[lead_id]
        lead.update(
            changes,
            updated_at=at if at is not None else self.unix_now(),
            updated_by=by_user if by_user is not None else lead["responsible_user_id"],
        )
        return lead

    def delete_lead(self, lead_id: int) -> dict:
        return self.leads.pop(lead_id)

    def add_task(
        self,
        id: int,
        lead_id: int,
        text: str,
        complete_till: int,
        responsible_user_id: int | None = None,
        task_type_id: int = 1,
        created_at: int | None = None,
        is_completed: bool = False,
        created_by: int | None = None,
    ) -> dict:
        user = self._user_or_default(responsible_user_id)
        created = created_at if created_at is not None else self.unix_now()
        author = created_by if created_by is not None else user
        task = {
            "id": id,
            "created_by": author,
            "updated_by": author,
            "created_at": created,
            "updated_at": created,
            "responsible_user_id": user,
            "group_id": 0,
            "entity_id": lead_id,
            "entity_type": "leads",
            "duration": 0,
            "is_completed": is_completed,
            "task_type_id": task_type_id,
            "text": text,
            # amoCRM serializes a missing result as an empty PHP array, i.e. [] rather than null.
            "result": [],
            "complete_till": complete_till,
            "account_id": self.account["id"],
        }
        self.tasks[id] = task
        return task

    def complete_task(
        self, task_id: int, result_text: str | None = None, at: int | None = None, by_user: int | None = None
    ) -> dict:
        task = self.tasks[task_id]
        task.update(
            is_completed=True,
            result={"text": result_text} if result_text else [],
            updated_at=at if at is not None else self.unix_now(),
            updated_by=by_user if by_user is not None else task["responsible_user_id"],
        )
        return task

    def add_note(
        self,
        id: int,
        lead_id: int,
        note_type: str = "common",
        text: str | None = None,
        params: dict | None = None,
        created_by: int | None = None,
        created_at: int | None = None,
        entity_type: str = "leads",
    ) -> dict:
        """A note on a card: a lead's (`lead_id`) unless `entity_type` says a contact's or a company's."""
        if note_type not in NOTE_TYPES:
            raise ValueError(f"note_type must be one of {NOTE_TYPES}")
        if note_type == "common":
            params = {"text": text if text is not None else (params or {}).get("text", "")}
        else:
            params = {"uniq": "", "duration": 0, "source": "", "link": "", "phone": "", **(params or {})}
        user = self._user_or_default(created_by)
        created = created_at if created_at is not None else self.unix_now()
        note = {
            "id": id,
            "entity_id": lead_id,
            "created_by": user,
            "updated_by": user,
            "created_at": created,
            "updated_at": created,
            "responsible_user_id": user,
            "group_id": 0,
            "note_type": note_type,
            "params": params,
            "account_id": self.account["id"],
            "entity_type": entity_type,  # not on the wire: which GET /api/v4/<entity>/notes lists it
        }
        self.notes[id] = note
        return note

    # -- gatekeeping (used by the app) -----------------------------------------------------------

    def admit(self, token: str, limit: int | None) -> bool:
        """Rolling one-second window per token; only admitted requests count, as a rejected one costs nothing."""
        if not limit:
            return True
        now = self.clock()
        hits = self._hits.setdefault(token, deque())
        while hits and hits[0] <= now - 1.0:
            hits.popleft()
        if len(hits) >= limit:
            self.rejected_429 += 1
            return False
        hits.append(now)
        return True

    def take_fault(self) -> int | None:
        return self._faults.popleft() if self._faults else None

    def grant(self, body: dict[str, Any]) -> dict[str, Any]:
        """The /oauth2/access_token logic: validates the grant and issues a fresh token pair."""
        client_id = str(body.get("client_id") or "")
        client = self.oauth_clients.get(client_id)
        if client is None or client["secret"] != body.get("client_secret"):
            raise OAuthError(401, "Client authentication failed")
        if body.get("redirect_uri") != client["redirect_uri"]:
            raise OAuthError(400, "Redirect URI mismatch")
        grant_type = body.get("grant_type")
        if grant_type == "authorization_code":
            if self.auth_codes.get(str(body.get("code"))) != client_id:
                raise OAuthError(400, "Authorization code has been revoked")
            del self.auth_codes[str(body["code"])]
        elif grant_type == "refresh_token":
            if self.refresh_tokens.get(str(body.get("refresh_token"))) != client_id:
                raise OAuthError(400, "Token has been revoked")
            # Rotation: the spent refresh token is gone for good, a second use must fail.
            del self.refresh_tokens[str(body["refresh_token"])]
        else:
            raise OAuthError(400, "The authorization grant type is not supported by the authorization server.")
        access, refresh = secrets.token_urlsafe(32), "def50200" + secrets.token_hex(48)
        self.tokens.add(access)
        self.refresh_tokens[refresh] = client_id
        return {"token_type": "Bearer", "expires_in": TOKEN_TTL_S, "access_token": access, "refresh_token": refresh}

    # -- helpers ---------------------------------------------------------------------------------

    def next_id(self, table: dict[int, Any], floor: int) -> int:
        return max([floor, *table]) + 1

    def _user_or_default(self, user_id: int | None) -> int:
        return user_id if user_id is not None else self.account["current_user_id"]

    def _check_status(self, pipeline_id: int, status_id: int) -> None:
        pipeline = self.pipelines.get(pipeline_id)
        if pipeline is None or all(s["id"] != status_id for s in pipeline["statuses"]):
            raise ValueError(f"status {status_id} is not in pipeline {pipeline_id}")


def _status(pipeline_id: int, id: int, name: str, sort: int, color: str, editable: bool) -> dict:
    return {
        "id": id,
        "name": name,
        "sort": sort,
        "is_editable": editable,
        "pipeline_id": pipeline_id,
        "color": color,
        "type": 0,
    }


def _problem(status: int, detail: str, **extra: Any) -> JSONResponse:
    titles = {
        400: "Bad Request",
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not Found",
        500: "Internal Server Error",
        502: "Bad Gateway",
        503: "Service Unavailable",
    }
    body = {
        "title": titles.get(status, "Error"),
        "type": f"https://httpstatus.es/{status}",
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def _validation_error(index: int, path: str, detail: str) -> ApiError:
    errors = [{"request_id": str(index), "errors": [{"code": "InvalidValue", "path": path, "detail": detail}]}]
    return ApiError(400, "Request validation failed", **{"validation-errors": errors})


# -- query parsing ---------------------------------------------------------------------------------


def _multi(request: Request, name: str) -> list[str]:
    """Values of `name`, `name[]` and `name[0]`.. (comma lists too): amoCRM clients send all of these."""
    values: list[str] = []
    for key, value in request.query_params.multi_items():
        suffix = key[len(name) :] if key.startswith(name) else None
        if suffix == "" or suffix == "[]" or (suffix and suffix[0] == "[" and suffix[1:-1].isdigit()):
            values.extend(v for v in value.split(",") if v)
    return values


def _int(value: str | None, name: str) -> int:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise _validation_error(0, name, f"{name} must be an integer") from None


def _filtered(request: Request, rows: Iterable[dict], ids: Iterable[str] = (), ranges: Iterable[str] = ()) -> list:
    """Applies `filter[<field>][]=..` set filters and `filter[<field>][from|to]=ts` range filters."""
    out = list(rows)
    for field in ids:
        wanted = {_int(v, f"filter[{field}]") for v in _multi(request, f"filter[{field}]")}
        if wanted:
            out = [r for r in out if r.get(field) in wanted]
    for field in ranges:
        lo, hi = (request.query_params.get(f"filter[{field}][{end}]") for end in ("from", "to"))
        if lo is not None:
            lo_ts = _int(lo, f"filter[{field}][from]")
            out = [r for r in out if r.get(field) is not None and r[field] >= lo_ts]
        if hi is not None:
            hi_ts = _int(hi, f"filter[{field}][to]")
            out = [r for r in out if r.get(field) is not None and r[field] <= hi_ts]
    return out


def _by_id(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: r["id"])


def _page_query(query: str, page: int) -> str:
    """The same raw query with `page` replaced in place (or appended), keeping the client's own encoding."""
    parts = [p for p in query.split("&") if p]
    keys = [p.split("=", 1)[0] for p in parts]
    if "page" not in keys:
        return "&".join([*parts, f"page={page}"])
    return "&".join(f"page={page}" if key == "page" else part for part, key in zip(parts, keys, strict=True))


def _paged(
    request: Request, rows: list, entity: str, render: Callable[[Any], dict], max_limit: int = MAX_LIMIT
) -> Response:
    page = _int(request.query_params.get("page", "1"), "page")
    limit = _int(request.query_params.get("limit", str(DEFAULT_LIMIT)), "limit")
    if page < 1:
        raise _validation_error(0, "page", "page must be 1 or greater")
    if not 1 <= limit <= max_limit:
        raise _validation_error(0, "limit", f"limit must be between 1 and {max_limit}")
    start = (page - 1) * limit
    chunk = rows[start : start + limit]
    if not chunk:
        # The amoCRM quirk: nothing to list is not an empty JSON list but a bodiless 204.
        return Response(status_code=204)
    links: dict[str, Any] = {"self": {"href": str(request.url)}}
    if start + limit < len(rows):
        links["next"] = {"href": str(request.url.replace(query=_page_query(request.url.query, page + 1)))}
    body = {"_page": page, "_links": links, "_embedded": {entity: [render(r) for r in chunk]}}
    return JSONResponse(body, media_type=HAL_JSON)


# -- rendering -------------------------------------------------------------------------------------


def _link(base: str, path: str) -> dict:
    return {"self": {"href": f"{base}{path}"}}


def _render_user(base: str, user: dict) -> dict:
    access = {"view": "A", "edit": "A", "add": "A", "delete": "A", "export": "A"}
    rights = {
        "leads": access,
        "contacts": access,
        "companies": access,
        "mail_access": True,
        "catalog_access": True,
        "is_admin": user["is_admin"],
        "is_free": False,
        "is_active": user["is_active"],
        "group_id": None,
        "role_id": None,
    }
    return {
        "id": user["id"],
        "name": user["name"],
        "email": user["email"],
        "lang": "ru",
        "rights": rights,
        "_links": _link(base, f"/api/v4/users/{user['id']}"),
    }


def _render_pipeline(pipeline: dict) -> dict:
    body = {k: v for k, v in pipeline.items() if k != "statuses"}
    return {**body, "_embedded": {"statuses": [dict(s) for s in pipeline["statuses"]]}}


def _closest_due(state: EmulatorState) -> dict[int, int]:
    """Earliest open task deadline per lead; built once per request so a page costs O(tasks), not O(leads*tasks)."""
    due: dict[int, int] = {}
    for t in state.tasks.values():
        if t["entity_type"] == "leads" and not t["is_completed"] and t["entity_id"] is not None:
            due[t["entity_id"]] = min(due.get(t["entity_id"], t["complete_till"]), t["complete_till"])
    return due


def _field_type(value: Any) -> str:
    if isinstance(value, bool):
        return "checkbox"
    if isinstance(value, int):
        return "date"
    return "numeric" if isinstance(value, float) else "text"


def _companies_of(state: EmulatorState) -> dict[int, list[int]]:
    """Lead id → the companies linked to it (amoCRM embeds them in every lead, with or without `with`)."""
    out: dict[int, list[int]] = {}
    for company in state.companies.values():
        for lead_id in company["lead_ids"]:
            out.setdefault(lead_id, []).append(company["id"])
    return out


def _render_lead(
    base: str, lead: dict, with_contacts: bool, due: dict[int, int], companies: dict[int, list[int]] | None = None
) -> dict:
    body = {k: v for k, v in lead.items() if k not in ("contact_ids", "custom_fields")}
    # A lead's custom fields as API v4 writes them ({field id: value} in the emulator's state;
    # a date as unix seconds, a flag as a boolean); null when none has a value.
    fields = [
        {
            "field_id": int(fid),
            "field_name": f"Field {fid}",
            "field_code": None,
            "field_type": _field_type(value),
            "values": [{"value": value}],
        }
        for fid, value in (lead.get("custom_fields") or {}).items()
    ]
    body.update(
        closest_task_at=due.get(lead["id"]),
        custom_fields_values=fields or None,
        score=None,
        labor_cost=None,
        _links=_link(base, f"/api/v4/leads/{lead['id']}"),
    )
    embedded: dict[str, Any] = {
        "tags": [],
        "companies": [
            {"id": cid, "_links": _link(base, f"/api/v4/companies/{cid}")}
            for cid in (companies or {}).get(lead["id"], [])
        ],
    }
    if with_contacts:
        embedded["contacts"] = [
            {"id": cid, "is_main": i == 0, "_links": _link(base, f"/api/v4/contacts/{cid}")}
            for i, cid in enumerate(lead["contact_ids"])
        ]
    body["_embedded"] = embedded
    return body


def _matches_query(row: dict, query: str | None) -> bool:
    """amoCRM's `query` searches the filled fields; phones are compared by their digits."""
    if not query:
        return True
    digits = "".join(ch for ch in query if ch.isdigit())
    if query.lower() in (row.get("name") or "").lower():
        return True
    return bool(digits) and any(digits in "".join(ch for ch in p if ch.isdigit()) for p in row.get("phones", ()))


def _leads_of(state: EmulatorState, base: str, contact_id: int) -> list[dict]:
    return [
        {"id": lead["id"], "_links": _link(base, f"/api/v4/leads/{lead['id']}")}
        for lead in sorted(state.leads.values(), key=lambda r: r["id"])
        if contact_id in lead["contact_ids"] and not lead["is_deleted"]
    ]


def _render_company(base: str, company: dict, with_leads: bool) -> dict:
    body = {k: v for k, v in company.items() if k not in ("phones", "lead_ids")}
    phones = [{"value": p, "enum_id": PHONE_ENUM_WORK, "enum_code": "WORK"} for p in company["phones"]]
    body.update(
        closest_task_at=None,
        is_deleted=False,
        custom_fields_values=[
            {
                "field_id": PHONE_FIELD_ID,
                "field_name": "Телефон",
                "field_code": "PHONE",
                "field_type": "multitext",
                "values": phones,
            }
        ]
        if phones
        else None,
        _links=_link(base, f"/api/v4/companies/{company['id']}"),
        _embedded={"tags": [], **({"leads": [{"id": i} for i in company["lead_ids"]]} if with_leads else {})},
    )
    return body


def _render_contact(base: str, contact: dict) -> dict:
    body = {k: v for k, v in contact.items() if k != "phones"}
    phones = [{"value": p, "enum_id": PHONE_ENUM_WORK, "enum_code": "WORK"} for p in contact["phones"]]
    fields = (
        [
            {
                "field_id": PHONE_FIELD_ID,
                "field_name": "Телефон",
                "field_code": "PHONE",
                "field_type": "multitext",
                "values": phones,
            }
        ]
        if phones
        else None
    )
    body.update(
        closest_task_at=None,
        is_deleted=False,
        is_unsorted=False,
        custom_fields_values=fields,
        _links=_link(base, f"/api/v4/contacts/{contact['id']}"),
        _embedded={"tags": [], "companies": []},
    )
    return body


def _render_task(base: str, task: dict) -> dict:
    return {**task, "_links": _link(base, f"/api/v4/tasks/{task['id']}")}


def _render_note(base: str, note: dict) -> dict:
    entity = note.get("entity_type", "leads")
    body = {k: v for k, v in note.items() if k != "entity_type"}
    return {**body, "_links": _link(base, f"/api/v4/{entity}/{note['entity_id']}/notes/{note['id']}")}


def _render_account(state: EmulatorState, base: str, withs: set[str]) -> dict:
    acc = state.account
    body = {
        "id": acc["id"],
        "name": acc["name"],
        "subdomain": acc["subdomain"],
        "created_at": acc["created_at"],
        "created_by": 0,
        "updated_at": acc["created_at"],
        "updated_by": 0,
        "current_user_id": acc["current_user_id"],
        "country": acc["country"],
        "currency": acc["currency"],
        "customers_mode": "disabled",
        "is_unsorted_on": False,
        "is_loss_reason_enabled": False,
        "is_helpbot_enabled": False,
        "is_technical_account": False,
        "contact_name_display_order": 1,
        "_links": _link(base, "/api/v4/account"),
    }
    embedded: dict[str, Any] = {}
    # Like amoCRM, the timezone is only on the wire when asked for with `with=datetime_settings`.
    if "datetime_settings" in withs:
        embedded["datetime_settings"] = {
            "date_pattern": "d.m.Y H:i",
            "short_date_pattern": "d.m.Y",
            "short_time_pattern": "H:i",
            "date_format": "d.m.Y",
            "time_format": "H:i:s",
            "timezone": acc["timezone"],
            "timezone_offset": _utc_offset(acc["timezone"]),
        }
    if embedded:
        body["_embedded"] = embedded
    return body


def _utc_offset(tz_name: str) -> str:
    try:
        offset = datetime.now(ZoneInfo(tz_name)).strftime("%z")
    except ZoneInfoNotFoundError:
        return "+00:00"
    return f"{offset[:3]}:{offset[3:]}"


# -- writes ----------------------------------------------------------------------------------------


async def _batch(request: Request) -> list[dict]:
    try:
        items = await request.json()
    except ValueError:
        raise ApiError(400, "Request body is not valid JSON") from None
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
        raise ApiError(400, "Request body must be a non-empty array of objects")
    if len(items) > MAX_WRITE_BATCH:
        raise ApiError(400, f"No more than {MAX_WRITE_BATCH} entities per request")
    return items


def _req_int(item: dict, index: int, field: str) -> int:
    value = item.get(field)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _validation_error(index, field, f"{field} must be an integer")
    return value


def _create_tasks(state: EmulatorState, items: list[dict]) -> list[tuple[dict, str]]:
    for i, item in enumerate(items):
        if not isinstance(item.get("text"), str) or not item["text"]:
            raise _validation_error(i, "text", "text is required")
        _req_int(item, i, "complete_till")
        if item.get("entity_type", "leads") == "leads" and item.get("entity_id") is not None:
            if _req_int(item, i, "entity_id") not in state.leads:
                raise _validation_error(i, "entity_id", "lead not found")
    created = []
    user = state.account["current_user_id"]
    for i, item in enumerate(items):
        task = state.add_task(
            state.next_id(state.tasks, 52000000),
            item.get("entity_id"),
            item["text"],
            item["complete_till"],
            item.get("responsible_user_id"),
            item.get("task_type_id", 1),
            created_at=state.unix_now(),
            created_by=user,
        )
        # A task on no card (amoCRM allows it) has neither entity id nor type.
        task["entity_type"] = item.get("entity_type", "leads") if item.get("entity_id") is not None else None
        created.append((task, str(item.get("request_id", i))))
    return created


def _patch_tasks(state: EmulatorState, items: list[dict]) -> list[tuple[dict, str]]:
    for i, item in enumerate(items):
        if _req_int(item, i, "id") not in state.tasks:
            raise _validation_error(i, "id", "task not found")
    updated = []
    for i, item in enumerate(items):
        task = state.tasks[item["id"]]
        for field in ("text", "complete_till", "responsible_user_id", "task_type_id"):
            if field in item:
                task[field] = item[field]
        if item.get("is_completed") is True:
            result = item.get("result") if isinstance(item.get("result"), dict) else {}
            state.complete_task(task["id"], result.get("text"), state.unix_now(), state.account["current_user_id"])
        else:
            if item.get("is_completed") is False:
                task.update(is_completed=False, result=[])
            task.update(updated_at=state.unix_now(), updated_by=state.account["current_user_id"])
        updated.append((task, str(item.get("request_id", i))))
    return updated


def _create_notes(state: EmulatorState, items: list[dict]) -> list[tuple[dict, str]]:
    for i, item in enumerate(items):
        if _req_int(item, i, "entity_id") not in state.leads:
            raise _validation_error(i, "entity_id", "lead not found")
        if item.get("note_type") not in NOTE_TYPES:
            raise _validation_error(i, "note_type", f"note_type must be one of {', '.join(NOTE_TYPES)}")
        if not isinstance(item.get("params"), dict):
            raise _validation_error(i, "params", "params must be an object")
    created = []
    for i, item in enumerate(items):
        note = state.add_note(
            state.next_id(state.notes, 61000000),
            item["entity_id"],
            item["note_type"],
            params=item["params"],
            created_by=state.account["current_user_id"],
            created_at=state.unix_now(),
        )
        created.append((note, str(item.get("request_id", i))))
    return created


def _last10(phone: str) -> str:
    return "".join(ch for ch in phone if ch.isdigit())[-10:]


def _call_card(state: EmulatorState, phone: str) -> tuple[str, int] | None:
    """Where amoCRM files a call by number: the contact (else the company) whose phone ends in the
    same 10 digits; on its lead when it has exactly one open lead, else on the contact or company
    itself. None: nobody has the number, the call is dropped."""
    wanted = _last10(phone)
    if not wanted:
        return None

    def carries(row: dict) -> bool:
        return any(_last10(p) == wanted for p in row.get("phones", ()))

    def open_lead(lead_id: int) -> bool:
        lead = state.leads.get(lead_id)
        return lead is not None and not lead["is_deleted"] and lead["status_id"] not in CLOSED_STATUS_IDS

    contact = next((c for c in sorted(state.contacts.values(), key=lambda r: r["id"]) if carries(c)), None)
    if contact is not None:
        leads = [i for i, lead in sorted(state.leads.items()) if contact["id"] in lead["contact_ids"] and open_lead(i)]
        return ("leads", leads[0]) if len(leads) == 1 else ("contacts", contact["id"])
    company = next((c for c in sorted(state.companies.values(), key=lambda r: r["id"]) if carries(c)), None)
    if company is not None:
        leads = [i for i in company["lead_ids"] if open_lead(i)]
        return ("leads", leads[0]) if len(leads) == 1 else ("companies", company["id"])
    return None


def _log_calls(state: EmulatorState, items: list[dict]) -> list[tuple[dict, str]]:
    """POST /api/v4/calls: a call becomes a call note (call_in / call_out, `uniq` in its params) on
    the card _call_card picks; a number nobody has is dropped (absent from the answer). Like
    amoCRM, a second call with the same uniq is a second note: nothing here deduplicates."""
    for i, item in enumerate(items):
        if item.get("direction") not in ("inbound", "outbound"):
            raise _validation_error(i, "direction", "direction must be inbound or outbound")
        if not isinstance(item.get("phone"), str) or not item["phone"]:
            raise _validation_error(i, "phone", "phone is required")
        _req_int(item, i, "duration")
        if not isinstance(item.get("source"), str) or not item["source"]:
            raise _validation_error(i, "source", "source is required")
    created = []
    for i, item in enumerate(items):
        card = _call_card(state, item["phone"])
        if card is None:
            continue
        params = {k: item[k] for k in ("uniq", "duration", "source", "link", "phone", "call_status") if k in item}
        note = state.add_note(
            state.next_id(state.notes, 61000000),
            card[1],
            "call_in" if item["direction"] == "inbound" else "call_out",
            params=params,
            created_by=item.get("responsible_user_id") or state.account["current_user_id"],
            created_at=state.unix_now(),
            entity_type=card[0],
        )
        created.append((note, str(item.get("request_id", i))))
    return created


# -- the app ---------------------------------------------------------------------------------------


def create_emulator_app(state: EmulatorState, rate_limit_per_s: int | None = 7) -> FastAPI:
    # Handlers are all `async def` on purpose: they then run one at a time on the event loop, so the
    # plain-dict state needs no locking even under the benchmark's concurrent load.
    app = FastAPI(title="amoCRM API v4 emulator", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        if isinstance(exc, OAuthError):
            return JSONResponse(exc.body(), status_code=exc.status, media_type=PROBLEM_JSON)
        return _problem(exc.status, exc.detail, **exc.extra)

    @app.middleware("http")
    async def _gate(request: Request, call_next: Callable) -> Response:
        state.request_log.append((request.method, request.url.path, request.url.query))
        if not request.url.path.startswith("/api/"):
            return await call_next(request)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token.strip() not in state.tokens:
            return _problem(401, "Неверный логин или пароль")
        if not state.admit(token.strip(), rate_limit_per_s):
            return Response(status_code=429)
        timed = state.timed_fault()
        if timed is not None:
            return timed
        fault = state.take_fault()
        if fault is not None:
            return Response(status_code=fault) if fault == 429 else _problem(fault, "Injected fault")
        return await call_next(request)

    def base(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    @app.post("/oauth2/access_token")
    async def oauth_token(request: Request) -> JSONResponse:
        raw = await request.body()
        # amoCRM documents JSON, but older clients post a form; both are accepted there too.
        try:
            body = json.loads(raw) if raw.lstrip().startswith(b"{") else dict(parse_qsl(raw.decode()))
        except ValueError:
            body = {}
        return JSONResponse(state.grant(body if isinstance(body, dict) else {}))

    @app.get("/api/v4/account")
    async def account(request: Request) -> JSONResponse:
        withs = set(_multi(request, "with"))
        return JSONResponse(_render_account(state, base(request), withs), media_type=HAL_JSON)

    @app.get("/api/v4/users")
    async def users(request: Request) -> Response:
        rows = sorted(state.users.values(), key=lambda u: u["id"])
        return _paged(request, rows, "users", lambda u: _render_user(base(request), u))

    @app.get("/api/v4/leads/pipelines")
    async def pipelines(request: Request) -> Response:
        rows = sorted(state.pipelines.values(), key=lambda p: (p["sort"], p["id"]))
        if not rows:
            return Response(status_code=204)
        body = {"_total_items": len(rows), "_embedded": {"pipelines": [_render_pipeline(p) for p in rows]}}
        return JSONResponse(body, media_type=HAL_JSON)

    @app.get("/api/v4/leads")
    async def leads(request: Request) -> Response:
        with_contacts = "contacts" in _multi(request, "with")
        rows = _filtered(
            request,
            state.leads.values(),
            ids=("id", "pipeline_id", "status_id", "responsible_user_id"),
            ranges=("created_at", "updated_at", "closed_at"),
        )
        due, companies = _closest_due(state), _companies_of(state)
        return _paged(
            request,
            _by_id(rows),
            "leads",
            lambda lead: _render_lead(base(request), lead, with_contacts, due, companies),
        )

    @app.get("/api/v4/leads/{lead_id:int}")
    async def lead(request: Request, lead_id: int) -> JSONResponse:
        found = state.leads.get(lead_id)
        if found is None:
            raise ApiError(404, "Lead not found")
        body = _render_lead(
            base(request), found, "contacts" in _multi(request, "with"), _closest_due(state), _companies_of(state)
        )
        return JSONResponse(body, media_type=HAL_JSON)

    @app.get("/api/v4/contacts")
    async def contacts(request: Request) -> Response:
        rows = _filtered(
            request, state.contacts.values(), ids=("id", "responsible_user_id"), ranges=("created_at", "updated_at")
        )
        rows = [r for r in rows if _matches_query(r, request.query_params.get("query"))]
        with_leads = "leads" in _multi(request, "with")

        def render(c: dict) -> dict:
            body = _render_contact(base(request), c)
            if with_leads:
                body["_embedded"]["leads"] = _leads_of(state, base(request), c["id"])
            return body

        return _paged(request, _by_id(rows), "contacts", render)

    @app.get("/api/v4/companies")
    async def companies(request: Request) -> Response:
        rows = [r for r in state.companies.values() if _matches_query(r, request.query_params.get("query"))]
        with_leads = "leads" in _multi(request, "with")
        return _paged(request, _by_id(rows), "companies", lambda c: _render_company(base(request), c, with_leads))

    @app.get("/api/v4/tasks")
    async def tasks(request: Request) -> Response:
        rows = _filtered(
            request,
            state.tasks.values(),
            ids=("id", "entity_id", "responsible_user_id"),
            ranges=("created_at", "updated_at"),
        )
        flag = request.query_params.get("filter[is_completed]")
        if flag is not None:
            rows = [t for t in rows if t["is_completed"] == bool(_int(flag, "filter[is_completed]"))]
        return _paged(request, _by_id(rows), "tasks", lambda t: _render_task(base(request), t))

    @app.get("/api/v4/tasks/{task_id:int}")
    async def task(request: Request, task_id: int) -> JSONResponse:
        if task_id not in state.tasks:
            raise ApiError(404, "Task not found")
        return JSONResponse(_render_task(base(request), state.tasks[task_id]), media_type=HAL_JSON)

    @app.get("/api/v4/events")
    async def events(request: Request) -> Response:
        rows = _filtered(request, state.events, ids=("entity_id",), ranges=("created_at",))
        types = set(_multi(request, "filter[type]"))
        if types:
            rows = [e for e in rows if e["type"] in types]
        # Newest first, as amoCRM lists its event log; ids grow with insertion and break ties.
        rows.sort(key=lambda e: (e["created_at"], e["id"]), reverse=True)
        return _paged(request, rows, "events", dict, max_limit=MAX_EVENTS_LIMIT)

    @app.get("/api/v4/{entity}/notes")
    async def notes(request: Request, entity: str) -> Response:
        if entity not in NOTE_ENTITIES:
            raise ApiError(404, "Not found")
        mine = (n for n in state.notes.values() if n.get("entity_type", "leads") == entity)
        rows = _filtered(request, mine, ids=("id", "entity_id"), ranges=("updated_at",))
        types = set(_multi(request, "filter[note_type]"))
        if types:
            rows = [n for n in rows if n["note_type"] in types]
        return _paged(request, _by_id(rows), "notes", lambda n: _render_note(base(request), n))

    def write_answer(
        request: Request,
        entity: str,
        done: list[tuple[dict, str]],
        render: Callable[[str, dict], dict],
        extra: tuple[str, ...] = (),
    ) -> JSONResponse:
        rows = [
            {
                "id": record["id"],
                **{k: record[k] for k in extra},
                "request_id": request_id,
                "_links": render(base(request), record)["_links"],
            }
            for record, request_id in done
        ]
        body = {"_links": _link(base(request), request.url.path), "_embedded": {entity: rows}}
        return JSONResponse(body, media_type=HAL_JSON)

    async def write(
        request: Request,
        entity: str,
        apply: Callable[[EmulatorState, list[dict]], list[tuple[dict, str]]],
        render: Callable[[str, dict], dict],
        extra: tuple[str, ...] = (),
    ) -> Response:
        items = await _batch(request)
        done = apply(state, items)
        state.writes.extend((request.method, request.url.path, item) for item in items)
        if state.answer_lost():
            return _problem(502, "Bad gateway")
        return write_answer(request, entity, done, render, extra)

    @app.post("/api/v4/tasks")
    async def create_tasks(request: Request) -> Response:
        return await write(request, "tasks", _create_tasks, _render_task)

    @app.patch("/api/v4/tasks")
    async def patch_tasks(request: Request) -> Response:
        return await write(request, "tasks", _patch_tasks, _render_task, ("updated_at",))

    @app.post("/api/v4/leads/notes")
    async def create_notes(request: Request) -> Response:
        return await write(request, "notes", _create_notes, _render_note, ("entity_id",))

    @app.post("/api/v4/calls")
    async def log_calls(request: Request) -> Response:
        return await write(request, "calls", _log_calls, _render_note, ("entity_id", "entity_type"))

    return app
