"""amoCRM API v4 client: HAL paging, 204-as-empty, a per-account rate limit and backoff."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import phonenumbers

from integrations.base import (
    CallDirection,
    CallStatus,
    CompanyUpserted,
    ContactUpserted,
    CrmAmbiguous,
    CrmAuthError,
    CrmIdentity,
    CrmRateLimited,
    CrmRequestError,
    CrmUnavailable,
    DealUpserted,
    DomainEvent,
    NewCall,
    NewNote,
    NewTask,
    NoteAdded,
    NoteKind,
    PhoneLookup,
    PipelineUpserted,
    RecordNamed,
    StageEntered,
    StageInfo,
    SyncSection,
    TaskClosure,
    TaskUpserted,
    TokenSource,
    UserUpserted,
)
from integrations.custom_fields import collect
from integrations.http import backoff_delay, fits, pause, tls_context
from integrations.phones import normalize_all
from integrations.ratelimit import SlidingWindowLimiter
from integrations.timestamps import from_unix as ts

from .mapping import ENTITY_TYPES, NOTE_KINDS, call_from_note, money, sid, stage_kind

log = logging.getLogger(__name__)

PAGE_LIMIT = 250
EVENTS_PAGE_LIMIT = 100
RETRY_STATUSES = {429, 500, 502, 503, 504}


class AmoCrmClient:
    def __init__(
        self,
        base_url: str,
        tokens: TokenSource,
        limiter: SlidingWindowLimiter,
        *,
        max_retries: int = 6,
        backoff_base: float = 0.5,
        backoff_cap: float = 60.0,
        timeout: float = 20.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._origin = _origin(self.base_url)
        self._tokens = tokens
        self._limiter = limiter
        self._max_retries = max_retries
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._sleep = sleep
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            verify=tls_context(),
            headers={"User-Agent": "crmwatch/0.1", "Accept": "application/hal+json, application/json"},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def subscribe(self, hook_url: str, public_url: str) -> None:
        return None  # amoCRM webhooks are set up in the account's settings

    async def queued_deliveries(self) -> AsyncIterator[Any]:
        return
        yield  # amoCRM retries failed deliveries itself and keeps no queue for us

    # -- transport ---------------------------------------------------------------------------

    async def request(
        self, method: str, url: str, *, params: Any = None, json: Any = None, idempotent: bool = True
    ) -> httpx.Response:
        """One logical call: rate-limited, retried on 429/5xx/network errors, refreshed once on 401.

        A non-idempotent write is retried only when it surely did not land (429, a refused
        connection); after a timeout or a 5xx it raises CrmAmbiguous, and the caller reads back.

        No wait outlives the caller's deadline (integrations.http.within): a Retry-After or a
        rate-limit queue (the limiter's) that would raises CrmRateLimited at once, for the caller to come back later,
        and a backoff that would raises CrmUnavailable. A stop request cuts a wait short (CrmStopping)."""
        token = await self._tokens.access_token()
        refreshed = False
        attempt = 0
        while True:
            await self._limiter.acquire(reserve=self._timeout)
            try:
                resp = await self._http.request(
                    method, url, params=params, json=json, headers={"Authorization": f"Bearer {token}"}
                )
            except httpx.TransportError as exc:
                if not idempotent and not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                    raise CrmAmbiguous(f"amoCRM {method} {_path(url)}: {type(exc).__name__}") from None
                reason, retry_after = f"{type(exc).__name__}", None
            else:
                if resp.status_code == 401 and not refreshed:
                    refreshed = True
                    new = await self._tokens.refresh_after_401(token)
                    if new is None:
                        raise CrmAuthError("amoCRM refused the access token")
                    token = new
                    continue
                if resp.status_code == 401:
                    raise CrmAuthError("amoCRM refused the access token after a refresh")
                if resp.status_code not in RETRY_STATUSES:
                    if resp.status_code >= 400:
                        raise CrmRequestError(
                            f"amoCRM answered {resp.status_code} to {method} {_path(url)}: {resp.text[:300]}"
                        )
                    return resp
                reason, retry_after = f"HTTP {resp.status_code}", _retry_after(resp)
                if resp.status_code == 429:
                    self._limiter.penalize(1.0 if retry_after is None else retry_after)
                elif not idempotent:
                    raise CrmAmbiguous(f"amoCRM answered {resp.status_code} to {method} {_path(url)}")
            attempt += 1
            delay = retry_after if retry_after is not None else self._backoff(attempt)
            if attempt > self._max_retries:
                raise CrmUnavailable(f"amoCRM {method} {_path(url)} failed {attempt} times, last: {reason}")
            if not fits(delay, self._timeout):
                message = f"amoCRM {method} {_path(url)}: {reason}, and no time left to wait {delay:.0f} s"
                if reason == "HTTP 429":
                    raise CrmRateLimited(message, retry_after=delay)
                raise CrmUnavailable(message)
            log.warning(
                "amocrm.retry",
                extra={"path": _path(url), "reason": reason, "attempt": attempt, "delay_s": round(delay, 2)},
            )
            await pause(delay, self._sleep)

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(attempt, self._backoff_base, self._backoff_cap)

    async def get_json(self, url: str, params: Any = None) -> dict[str, Any] | None:
        resp = await self.request("GET", url, params=params)
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()

    async def paginate(
        self, path: str, key: str, params: dict[str, Any] | None = None, limit: int = PAGE_LIMIT
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Pages of `_embedded[key]`, following `_links.next` until it is absent or a 204 arrives."""
        url: str | None = path
        query: Any = {**(params or {}), "limit": limit, "page": 1}
        page = 1
        while url is not None:
            body = await self.get_json(url, query)
            if body is None:
                return
            rows = (body.get("_embedded") or {}).get(key) or []
            if rows:
                yield rows
            nxt = ((body.get("_links") or {}).get("next") or {}).get("href")
            if not nxt or not rows:
                return
            page += 1
            if _origin(nxt) == self._origin:
                url, query = nxt, None
            else:
                # Never send our token to a host we were not configured with.
                url, query = path, {**(params or {}), "limit": limit, "page": page}

    # -- reads ---------------------------------------------------------------------------------

    async def identity(self) -> CrmIdentity:
        # The time zone is only on the wire when asked for with `with=datetime_settings`.
        body = await self.get_json("/api/v4/account", {"with": "datetime_settings"}) or {}
        settings = (body.get("_embedded") or {}).get("datetime_settings") or {}
        return CrmIdentity(
            external_id=str(body.get("id", "")),
            name=body.get("name"),
            subdomain=body.get("subdomain"),
            timezone=settings.get("timezone"),
            country=body.get("country"),
        )

    def backfill(self, *, history_days: int, region: str, deal_fields: tuple[str, ...] = ()) -> list[SyncSection]:
        # Leads come with all their custom_fields_values: deal_fields needs no request of its own.
        since = int((datetime.now(UTC) - timedelta(days=history_days)).timestamp())
        return [
            SyncSection("pipelines", self._pipelines()),
            SyncSection("users", self._mapped("/api/v4/users", "users", _user)),
            SyncSection("contacts", self._mapped("/api/v4/contacts", "contacts", lambda r: _contact(r, region))),
            SyncSection("companies", self._mapped("/api/v4/companies", "companies", _company)),
            SyncSection("deals", self._mapped("/api/v4/leads", "leads", _deal, {"with": "contacts"})),
            SyncSection("tasks", self._mapped("/api/v4/tasks", "tasks", _task, {"filter[is_completed]": 0})),
            SyncSection(
                "stage_events",
                self._mapped(
                    "/api/v4/events",
                    "events",
                    _stage_event,
                    {"filter[type]": "lead_status_changed", "filter[created_at][from]": since},
                    EVENTS_PAGE_LIMIT,
                ),
            ),
            SyncSection(
                "notes", self._mapped("/api/v4/leads/notes", "notes", _note, {"filter[updated_at][from]": since})
            ),
            # Call notes read again as calls (their own section, so the counts say what they hold).
            SyncSection(
                "calls",
                self._mapped(
                    "/api/v4/leads/notes",
                    "notes",
                    lambda n: _call_note(n, region),
                    {"filter[updated_at][from]": since, "filter[note_type][]": ["call_in", "call_out"]},
                ),
            ),
        ]

    async def fetch_deals(self, ids: list[str], *, region: str) -> list[DomainEvent]:
        """Full records of the given leads (for thin webhooks); unknown ids are simply absent."""
        out: list[DomainEvent] = []
        for start in range(0, len(ids), PAGE_LIMIT):
            chunk = ids[start : start + PAGE_LIMIT]
            query = [("with", "contacts"), *(("filter[id][]", i) for i in chunk), ("limit", PAGE_LIMIT)]
            body = await self.get_json("/api/v4/leads", query)
            rows = ((body or {}).get("_embedded") or {}).get("leads") or []
            out.extend(_deal(r) for r in rows)
        return out

    async def fetch_named(self, refs: list[RecordNamed], *, region: str) -> list[DomainEvent]:
        # amoCRM webhooks carry the record itself; only a thin deal is ever named.
        return await self.fetch_deals([r.id for r in refs if r.kind == "deal"], region=region)

    # -- writes ------------------------------------------------------------------------------------

    async def create_tasks(self, tasks: list[NewTask]) -> dict[str, str]:
        body = [
            {
                "text": t.text,
                "complete_till": int(t.due_at.timestamp()),
                **({"entity_id": int(t.deal_id), "entity_type": "leads"} if t.deal_id else {}),
                "task_type_id": int(t.type_id or 1),
                "request_id": t.request_id,
                **({"responsible_user_id": int(t.responsible_user_id)} if t.responsible_user_id else {}),
            }
            for t in tasks
        ]
        resp = await self.request("POST", "/api/v4/tasks", json=body, idempotent=False)
        return _created(resp, "tasks")

    async def add_notes(self, notes: list[NewNote]) -> dict[str, str]:
        body = [
            {"entity_id": int(n.deal_id), "note_type": "common", "params": {"text": n.text}, "request_id": n.request_id}
            for n in notes
        ]
        resp = await self.request("POST", "/api/v4/leads/notes", json=body, idempotent=False)
        return _created(resp, "notes")

    async def log_calls(self, calls: list[NewCall]) -> dict[str, str]:
        # POST /api/v4/calls files each call on the card of the contact or company with the number
        # (and its single open deal); a number amoCRM knows no one with is dropped.
        body = [
            {
                "direction": "inbound" if c.direction is CallDirection.IN else "outbound",
                "uniq": c.uniq,
                "duration": c.talk_seconds,
                "source": c.source,
                "phone": c.phone,
                "call_status": CALL_STATUS_CODES.get(c.status, 6),
                "created_at": int(c.started_at.timestamp()),
                "request_id": c.request_id,
                **({"link": c.recording_url} if c.recording_url else {}),
                **({"responsible_user_id": int(c.responsible_user_id)} if c.responsible_user_id else {}),
            }
            for c in calls
        ]
        resp = await self.request("POST", "/api/v4/calls", json=body, idempotent=False)
        return _created(resp, "calls")

    async def find_calls(self, calls: list[NewCall]) -> dict[str, str]:
        """Calls already filed (a lost answer to POST /api/v4/calls), found by their `uniq`.

        amoCRM answers a logged call with the call note it made (call_in / call_out, `uniq` in its
        params) on the lead when the number's contact or company has one open lead, else on that
        contact or company. So the notes of calls of all three kinds are read, those changed since
        the earliest call began (a call is written after it began; less a margin for clocks)."""
        if not calls:
            return {}
        wanted = {c.uniq: c.request_id for c in calls}
        since = int(min(c.started_at for c in calls).timestamp()) - FIND_CALLS_MARGIN_S
        params = {"filter[note_type][]": ["call_in", "call_out"], "filter[updated_at][from]": since}
        found: dict[str, str] = {}
        for entity in ("leads", "contacts", "companies"):
            async for rows in self.paginate(f"/api/v4/{entity}/notes", "notes", params):
                for row in rows:
                    uniq = (row.get("params") or {}).get("uniq") if isinstance(row.get("params"), dict) else None
                    if uniq in wanted:
                        found[wanted[uniq]] = str(row["id"])
        return found

    async def close_tasks(self, closures: list[TaskClosure]) -> None:
        # Not retried blindly after a 5xx or a timeout (each repeat writes the result again): the
        # caller reads back with completed_tasks before closing again.
        body = [{"id": int(c.task_id), "is_completed": True, "result": {"text": c.result_text}} for c in closures]
        await self.request("PATCH", "/api/v4/tasks", json=body, idempotent=False)

    async def completed_tasks(self, task_ids: list[str]) -> set[str]:
        ids = sorted({int(t) for t in task_ids if t.isdigit()})
        done: set[str] = set()
        for start in range(0, len(ids), PAGE_LIMIT):
            params = {"filter[id][]": ids[start : start + PAGE_LIMIT]}
            async for rows in self.paginate("/api/v4/tasks", "tasks", params):
                done |= {str(r["id"]) for r in rows if r.get("is_completed")}
        return done

    async def find_marked(self, kind: str, deal_ids: list[str], markers: list[str]) -> dict[str, str]:
        path, key = ("/api/v4/tasks", "tasks") if kind == "task" else ("/api/v4/leads/notes", "notes")
        params: dict[str, Any] = {"filter[entity_id][]": sorted(set(deal_ids))}
        if kind == "task":
            params["filter[entity_type]"] = "leads"
        found: dict[str, str] = {}
        wanted = set(markers)
        async for rows in self.paginate(path, key, params):
            for row in rows:
                text = row.get("text") if kind == "task" else (row.get("params") or {}).get("text")
                for marker in wanted & set(_MARKER.findall(text or "")):
                    found[marker] = str(row["id"])
        return found

    async def find_marked_tasks_of(self, user_ids: list[str], markers: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        if not user_ids:
            return found
        wanted = set(markers)
        params: dict[str, Any] = {"filter[responsible_user_id][]": sorted(set(user_ids))}
        async for rows in self.paginate("/api/v4/tasks", "tasks", params):
            for row in rows:
                if row.get("entity_id"):
                    continue
                for marker in wanted & set(_MARKER.findall(row.get("text") or "")):
                    found[marker] = str(row["id"])
        return found

    async def search_phone(self, phone: str, *, region: str) -> PhoneLookup:
        """amoCRM's `query` is a full-text search over filled fields, so it is given the number's
        national digits (how people type it into a card) and every hit is checked against the
        normalized phones: a number that only appears in a note or a name is no match."""
        parsed = phonenumbers.parse(phone, region)
        query = str(parsed.national_number)
        contacts: list[DomainEvent] = []
        contact_ids: list[str] = []
        deal_ids: list[str] = []
        async for rows in self.paginate("/api/v4/contacts", "contacts", {"query": query, "with": "leads"}):
            for row in rows:
                contact = _contact(row, region)
                if isinstance(contact, ContactUpserted) and phone in (contact.phones or ()):
                    contacts.append(contact)
                    contact_ids.append(contact.id)
                    deal_ids.extend(
                        str(lead["id"]) for lead in (row.get("_embedded") or {}).get("leads") or [] if "id" in lead
                    )
        async for rows in self.paginate("/api/v4/companies", "companies", {"query": query, "with": "leads"}):
            for row in rows:
                if phone in _phones(row, region):
                    deal_ids.extend(
                        str(lead["id"]) for lead in (row.get("_embedded") or {}).get("leads") or [] if "id" in lead
                    )
        deal_ids = list(dict.fromkeys(deal_ids))
        deals = await self.fetch_deals(deal_ids, region=region) if deal_ids else []
        return PhoneLookup(events=(*contacts, *deals), contact_ids=tuple(contact_ids), deal_ids=tuple(deal_ids))

    async def _pipelines(self) -> AsyncIterator[list[DomainEvent]]:
        body = await self.get_json("/api/v4/leads/pipelines")
        if body:
            yield [_pipeline(p) for p in (body.get("_embedded") or {}).get("pipelines") or []]

    async def _mapped(
        self,
        path: str,
        key: str,
        convert: Callable[[dict[str, Any]], DomainEvent | None],
        params: dict[str, Any] | None = None,
        limit: int = PAGE_LIMIT,
    ) -> AsyncIterator[list[DomainEvent]]:
        async for rows in self.paginate(path, key, params, limit):
            yield [ev for ev in map(convert, rows) if ev is not None]


# -- API v4 records → domain events -------------------------------------------------------------


def _call_note(n: dict[str, Any], region: str) -> DomainEvent | None:
    note = _note(n)
    return call_from_note(note, region) if isinstance(note, NoteAdded) else None


def _pipeline(p: dict[str, Any]) -> PipelineUpserted:
    statuses = (p.get("_embedded") or {}).get("statuses") or []
    return PipelineUpserted(
        id=str(p["id"]),
        name=p.get("name") or "",
        sort=int(p.get("sort") or 0),
        is_archived=bool(p.get("is_archive")),
        stages=tuple(
            StageInfo(id=str(s["id"]), name=s.get("name") or "", sort=int(s.get("sort") or 0), kind=stage_kind(s["id"]))
            for s in statuses
        ),
    )


def _user(u: dict[str, Any]) -> UserUpserted:
    rights = u.get("rights") or {}
    return UserUpserted(
        id=str(u["id"]), name=u.get("name"), email=u.get("email"), is_active=rights.get("is_active", True)
    )


def _phones(c: dict[str, Any], region: str) -> tuple[str, ...]:
    phones = [
        v.get("value")
        for f in c.get("custom_fields_values") or []
        if f.get("field_code") == "PHONE"
        for v in f.get("values") or []
        if isinstance(v.get("value"), str)
    ]
    return normalize_all(phones, region)


def _contact(c: dict[str, Any], region: str) -> DomainEvent:
    return ContactUpserted(
        id=str(c["id"]),
        updated_at=ts(c.get("updated_at")) or datetime.now(UTC),
        name=c.get("name"),
        responsible_user_id=sid(c.get("responsible_user_id")),
        phones=_phones(c, region),
    )


def _company(c: dict[str, Any]) -> DomainEvent:
    return CompanyUpserted(
        id=str(c["id"]),
        updated_at=ts(c.get("updated_at")) or datetime.now(UTC),
        name=c.get("name"),
        responsible_user_id=sid(c.get("responsible_user_id")),
    )


def _deal(lead: dict[str, Any]) -> DealUpserted:
    embedded = lead.get("_embedded") or {}
    contacts = embedded.get("contacts") or []
    companies = embedded.get("companies")
    return DealUpserted(
        id=str(lead["id"]),
        updated_at=ts(lead.get("updated_at")) or datetime.now(UTC),
        name=lead.get("name") or "",
        pipeline_id=sid(lead.get("pipeline_id")),
        stage_id=sid(lead.get("status_id")),
        stage_kind=stage_kind(lead["status_id"]) if sid(lead.get("status_id")) else None,
        price=money(lead.get("price")),
        responsible_user_id=sid(lead.get("responsible_user_id")),
        created_at=ts(lead.get("created_at")),
        closed_at=ts(lead.get("closed_at")),
        contact_ids=tuple(str(c["id"]) for c in contacts if "id" in c),
        company_ids=None if companies is None else tuple(str(c["id"]) for c in companies if "id" in c),
        # API v4 answers null when no field has a value; a date is unix seconds, a flag a boolean.
        custom_fields=collect(
            [
                (f.get("field_id"), [v.get("value") for v in f.get("values") or [] if isinstance(v, dict)])
                for f in lead.get("custom_fields_values") or []
                if isinstance(f, dict)
            ]
        ),
    )


def _task(t: dict[str, Any]) -> TaskUpserted:
    entity_type = ENTITY_TYPES.get(str(t.get("entity_type")))
    entity_id = sid(t.get("entity_id"))
    result = t.get("result")
    return TaskUpserted(
        id=str(t["id"]),
        updated_at=ts(t.get("updated_at")) or datetime.now(UTC),
        deal_id=entity_id if entity_type == "deal" else None,
        entity_type=entity_type,
        entity_id=entity_id,
        text=t.get("text"),
        type_id=sid(t.get("task_type_id")),
        responsible_user_id=sid(t.get("responsible_user_id")),
        due_at=ts(t.get("complete_till")),
        is_completed=bool(t.get("is_completed")),
        result_text=result.get("text") if isinstance(result, dict) else None,
        created_at=ts(t.get("created_at")),
        created_by=sid(t.get("created_by")),
    )


def _stage_event(e: dict[str, Any]) -> StageEntered | None:
    after = [v.get("lead_status") for v in e.get("value_after") or [] if isinstance(v, dict)]
    before = [v.get("lead_status") for v in e.get("value_before") or [] if isinstance(v, dict)]
    at = ts(e.get("created_at"))
    if not after or not after[0] or at is None or e.get("entity_id") is None:
        return None
    return StageEntered(
        deal_id=str(e["entity_id"]),
        stage_id=str(after[0]["id"]),
        pipeline_id=sid(after[0].get("pipeline_id")),
        at=at,
        from_stage_id=sid(before[0].get("id")) if before and before[0] else None,
        by_user_id=sid(e.get("created_by")),
    )


def _note(n: dict[str, Any]) -> NoteAdded | None:
    entity_id = sid(n.get("entity_id"))
    if entity_id is None:
        return None
    params = n.get("params") if isinstance(n.get("params"), dict) else {}
    return NoteAdded(
        id=str(n["id"]),
        entity_type="deal",
        entity_id=entity_id,
        deal_id=entity_id,
        kind=NOTE_KINDS.get(str(n.get("note_type")), NoteKind.OTHER),
        text=params.get("text") if isinstance(params.get("text"), str) else None,
        created_by=sid(n.get("created_by")),
        created_at=ts(n.get("created_at")) or datetime.now(UTC),
        params={k: v for k, v in params.items() if k != "text"},
    )


# crmwatch's marks: #cw<row id>, or its page's link, …/f/<row id>-<signature>.
_MARKER = re.compile(r"#cw\d+|/f/\d+-")
# How far before a call's start its note may seem to have changed (amoCRM's clock against ours).
FIND_CALLS_MARGIN_S = 600
# call_status of POST /api/v4/calls: 4 talked, 6 no answer, 7 busy.
CALL_STATUS_CODES = {CallStatus.ANSWERED: 4, CallStatus.MISSED: 6, CallStatus.BUSY: 7, CallStatus.FAILED: 6}


def _created(resp: httpx.Response, key: str) -> dict[str, str]:
    rows = ((resp.json() if resp.content else {}).get("_embedded") or {}).get(key) or []
    return {str(r["request_id"]): str(r["id"]) for r in rows if r.get("request_id") is not None and "id" in r}


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, min(float(value), 3600.0))
    except ValueError:
        return None


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _path(url: str) -> str:
    return urlsplit(url).path or url
