"""A thin async Bitrix24 REST client on httpx: per-portal leaky bucket, `batch`, paging, backoff.

Two ways in, told apart by the token the TokenSource hands out:
- an inbound webhook ("webhook:{user_id}/{secret}"): the secret is part of the URL,
  `{portal}/rest/{user_id}/{secret}/{method}.json`;
- an app's OAuth access token: `{portal}/rest/{method}.json` with `auth` in the body.
Every call is a POST with a JSON body; Bitrix24 answers errors as {"error", "error_description"}.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from integrations.base import (
    CrmAmbiguous,
    CrmAuthError,
    CrmRateLimited,
    CrmRequestError,
    CrmUnavailable,
    TokenSource,
)
from integrations.http import backoff_delay, fits, pause, tls_context

from .limits import PortalLimiter
from .wire import MAX_BATCH, PAGE_SIZE, php_query

log = logging.getLogger(__name__)

WEBHOOK_TOKEN_PREFIX = "webhook:"
AUTH_ERRORS = {"expired_token", "invalid_token", "NO_AUTH_FOUND", "INVALID_CREDENTIALS", "invalid_grant"}
QUERY_LIMIT = "QUERY_LIMIT_EXCEEDED"
OPERATION_LIMIT = "OPERATION_TIME_LIMIT"
# Without a reset time in the answer, a blocked method is retried after this long.
DEFAULT_METHOD_PAUSE_S = 60.0


class MethodPaused(CrmRateLimited):
    """Bitrix24 blocked this method (OPERATION_TIME_LIMIT) for longer than we are willing to wait."""


@dataclass(frozen=True, slots=True)
class BatchResult:
    result: dict[str, Any]
    errors: dict[str, Any]
    total: dict[str, Any]
    next: dict[str, Any]


class Bitrix24Client:
    def __init__(
        self,
        base_url: str,
        tokens: TokenSource,
        limiter: PortalLimiter,
        *,
        max_retries: int = 6,
        backoff_base: float = 0.5,
        backoff_cap: float = 60.0,
        timeout: float = 20.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        max_pause_wait: float = 30.0,
        task_kind: str = "activity",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._tokens = tokens
        self.limiter = limiter
        self._max_retries = max_retries
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._sleep = sleep
        self._max_pause_wait = max_pause_wait
        self._timeout = timeout
        self.task_kind = task_kind
        self._http = httpx.AsyncClient(
            timeout=timeout,
            transport=transport,
            verify=tls_context(),
            headers={"User-Agent": "crmwatch/0.1", "Accept": "application/json"},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def _endpoint(self, token: str, method: str) -> tuple[str, dict[str, Any]]:
        if token.startswith(WEBHOOK_TOKEN_PREFIX):
            return f"{self.base_url}/rest/{token[len(WEBHOOK_TOKEN_PREFIX) :]}/{method}.json", {}
        return f"{self.base_url}/rest/{method}.json", {"auth": token}

    # -- transport ---------------------------------------------------------------------------

    async def call(
        self, method: str, params: dict[str, Any] | None = None, *, idempotent: bool = True
    ) -> dict[str, Any]:
        """One REST call: the whole answer ({"result", "next", "total", "time"}).

        Retries 503 QUERY_LIMIT_EXCEEDED, other 5xx and network errors with backoff; a write that
        may have landed (timeout, 5xx) raises CrmAmbiguous instead, for the caller to read back.
        429 OPERATION_TIME_LIMIT pauses the method for the whole portal until its reset."""
        token = await self._tokens.access_token()
        refreshed = False
        attempt = 0
        while True:
            wait = self.limiter.paused_for(method)
            if wait > 0:
                if wait > self._max_pause_wait or not fits(wait, self._timeout):
                    raise MethodPaused(
                        f"Bitrix24 blocked {method} for another {wait:.0f} s (OPERATION_TIME_LIMIT)", retry_after=wait
                    )
                await pause(wait, self._sleep)
            # The caller's deadline (integrations.http.within) holds for every wait: see AmoCrmClient.request.
            await self.limiter.acquire(reserve=self._timeout)
            url, auth = self._endpoint(token, method)
            try:
                resp = await self._http.post(url, json={**(params or {}), **auth})
            except httpx.TransportError as exc:
                if not idempotent and not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                    raise CrmAmbiguous(f"Bitrix24 {method}: {type(exc).__name__}") from None
                reason = type(exc).__name__
            else:
                body = _json(resp)
                error = str(body.get("error") or "")
                if resp.status_code < 400 and not error:
                    return body
                if resp.status_code == 401 or error in AUTH_ERRORS:
                    if refreshed:
                        raise CrmAuthError(f"Bitrix24 refused the credentials after a refresh: {error}")
                    refreshed = True
                    new = await self._tokens.refresh_after_401(token)
                    if new is None:
                        raise CrmAuthError(f"Bitrix24 refused the credentials: {error or resp.status_code}")
                    token = new
                    continue
                if error == OPERATION_LIMIT:
                    reset = _reset_at(body) or time.time() + DEFAULT_METHOD_PAUSE_S
                    self.limiter.pause_method(method, reset)
                    log.warning("bitrix24.method_paused", extra={"method": method, "until": reset})
                    reason = OPERATION_LIMIT  # the write did not run: retrying after the pause is safe
                elif error == QUERY_LIMIT:
                    # Refused before it ran: a write may be sent again.
                    self.limiter.penalize()
                    reason = QUERY_LIMIT
                elif resp.status_code >= 500:
                    if not idempotent:
                        raise CrmAmbiguous(f"Bitrix24 answered {resp.status_code} to {method}")
                    reason = f"HTTP {resp.status_code}"
                else:
                    raise CrmRequestError(
                        f"Bitrix24 refused {method}: {error or resp.status_code} "
                        f"{str(body.get('error_description') or '')[:300]}"
                    )
            attempt += 1
            delay = self.limiter.paused_for(method) if reason == OPERATION_LIMIT else self._backoff(attempt)
            if attempt > self._max_retries:
                raise CrmUnavailable(f"Bitrix24 {method} failed {attempt} times, last: {reason}")
            if not fits(delay, self._timeout):
                message = f"Bitrix24 {method}: {reason}, and no time left to wait {delay:.0f} s"
                if reason in (OPERATION_LIMIT, QUERY_LIMIT):
                    limited = MethodPaused if reason == OPERATION_LIMIT else CrmRateLimited
                    raise limited(message, retry_after=max(delay, 1.0))
                raise CrmUnavailable(message)
            if reason != OPERATION_LIMIT:
                log.warning(
                    "bitrix24.retry",
                    extra={"method": method, "reason": reason, "attempt": attempt, "delay_s": round(delay, 2)},
                )
                await pause(delay, self._sleep)

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(attempt, self._backoff_base, self._backoff_cap)

    async def batch(
        self, commands: dict[str, tuple[str, dict[str, Any]]], *, halt: bool = False, idempotent: bool = True
    ) -> BatchResult:
        """Up to 50 commands in one request (one unit of the portal's request counter)."""
        if len(commands) > MAX_BATCH:
            raise ValueError(f"a batch holds at most {MAX_BATCH} commands, got {len(commands)}")
        cmd = {key: f"{method}?{php_query(params)}" if params else method for key, (method, params) in commands.items()}
        body = await self.call("batch", {"halt": 1 if halt else 0, "cmd": cmd}, idempotent=idempotent)
        inner = body.get("result") or {}
        errors = _mapping(inner.get("result_error"))
        for key, err in errors.items():
            code = err.get("error") if isinstance(err, dict) else None
            method = commands[key][0] if key in commands else "batch"
            if code == OPERATION_LIMIT:
                reset = _reset_at(err) or time.time() + DEFAULT_METHOD_PAUSE_S
                self.limiter.pause_method(method, reset)
                raise MethodPaused(
                    f"Bitrix24 blocked {method} (OPERATION_TIME_LIMIT) inside a batch",
                    retry_after=max(1.0, reset - time.time()),
                )
            if code == QUERY_LIMIT:
                self.limiter.penalize()
                raise CrmRateLimited(
                    f"Bitrix24 refused {method} inside a batch: {QUERY_LIMIT}",
                    retry_after=max(1.0, self.limiter.delay()),
                )
        return BatchResult(
            result=_mapping(inner.get("result")),
            errors=errors,
            total=_mapping(inner.get("result_total")),
            next=_mapping(inner.get("result_next")),
        )

    async def batch_all(
        self, commands: dict[str, tuple[str, dict[str, Any]]], *, idempotent: bool = True
    ) -> BatchResult:
        """Any number of commands, 50 to a batch."""
        keys = list(commands)
        merged = BatchResult({}, {}, {}, {})
        for start in range(0, len(keys), MAX_BATCH):
            part = await self.batch({k: commands[k] for k in keys[start : start + MAX_BATCH]}, idempotent=idempotent)
            merged.result.update(part.result)
            merged.errors.update(part.errors)
            merged.total.update(part.total)
            merged.next.update(part.next)
        return merged

    async def pages(
        self, method: str, params: dict[str, Any] | None = None, *, key: str | None = None
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """A list method page by page (50 a page), following `next` until it is absent."""
        start: int | None = 0
        while start is not None:
            body = await self.call(method, {**(params or {}), "start": start})
            rows = _rows(body.get("result"), key)
            if rows:
                yield rows
            nxt = body.get("next")
            start = int(nxt) if isinstance(nxt, int | str) and str(nxt).isdigit() and rows else None

    async def export(
        self, method: str, params: dict[str, Any] | None = None, *, key: str | None = None, id_field: str = "ID"
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """A large list without counting: `>ID` past the last row seen, start=-1, by ID ascending.
        Bitrix24 recommends this over `start` paging for big tables (no COUNT(*), no deep OFFSET)."""
        last = 0
        params = dict(params or {})
        base_filter = dict(params.pop("filter", None) or {})
        while True:
            body = await self.call(
                method,
                {**params, "filter": {**base_filter, f">{id_field}": last}, "order": {id_field: "ASC"}, "start": -1},
            )
            rows = _rows(body.get("result"), key)
            if rows:
                yield rows
            if len(rows) < PAGE_SIZE:
                return
            last = int(rows[-1][id_field])


def _json(resp: httpx.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {"result": body}


def _mapping(value: Any) -> dict[str, Any]:
    # PHP encodes an empty associative array as [], a filled one as {}.
    return value if isinstance(value, dict) else {}


def _rows(result: Any, key: str | None) -> list[dict[str, Any]]:
    if key is not None and isinstance(result, dict):
        result = result.get(key)
    if isinstance(result, dict):  # some list methods key their rows by id
        result = list(result.values())
    return [r for r in result or [] if isinstance(r, dict)] if isinstance(result, list) else []


def _reset_at(body: Any) -> float | None:
    if not isinstance(body, dict):
        return None
    value = (body.get("time") or {}).get("operating_reset_at") if isinstance(body.get("time"), dict) else None
    value = value or body.get("operating_reset_at")
    try:
        return float(value) if value else None
    except (TypeError, ValueError):
        return None
