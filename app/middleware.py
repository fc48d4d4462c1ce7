"""Request ids, an access log without secrets, and latency metrics, as one pure ASGI layer
(BaseHTTPMiddleware would cost the webhook path a task switch per request). It also refuses, for
every route, what no handler can use: a NUL character in the path or the query."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import structlog
from starlette.responses import JSONResponse

from app.logging import mask_path
from app.metrics import HTTP_LATENCY

log = logging.getLogger("crmwatch.access")

# What an access log and /metrics call a request the client abandoned before it was answered
# (nginx's code): the client's doing, so counted apart from our 5xx.
CLIENT_CLOSED = 499


def has_nul(scope: dict[str, Any]) -> bool:
    """A NUL in the path or the query: no text column holds one (PostgreSQL refuses it with an
    error), and no id, key or filter of ours contains one."""
    query = scope.get("query_string") or b""
    return "\x00" in scope["path"] or b"%00" in query or b"\x00" in query


NUL_REFUSED = JSONResponse({"detail": "a NUL character in the URL"}, status_code=400)


class RequestContext:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")[:64]
        request_id = incoming if incoming.replace("-", "").isalnum() else uuid.uuid4().hex
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            if has_nul(scope):
                await NUL_REFUSED(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            HTTP_LATENCY.labels(getattr(route, "path", "unmatched"), str(status)).observe(elapsed)
            # An accepted webhook is the one line per request a busy CRM would flood the log
            # with; /metrics counts those, and DEBUG shows them when wanted.
            level = logging.DEBUG if status < 300 and scope["path"].startswith("/hooks/") else logging.INFO
            if log.isEnabledFor(level):
                log.log(
                    level,
                    "http.request",
                    extra={
                        "method": scope["method"],
                        "path": mask_path(scope["path"]),
                        "status": status,
                        "ms": round(elapsed * 1000, 2),
                    },
                )
            structlog.contextvars.unbind_contextvars("request_id")


class DeclaredBodyLimit:
    """A body that declares a length over the route's limit gets 413 before any handler runs, so a
    handler that never reads its body does not act and then answer 413. A body without a length
    (chunked) is counted as it is read, by FastAPI's `max_body_size` (and the webhook intake's own
    bounded read)."""

    def __init__(self, app: Any, limit: int, webhook_limit: int) -> None:
        self.app, self.limit, self.webhook_limit = app, limit, webhook_limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            limit = self.webhook_limit if scope["path"].startswith("/hooks/") else self.limit
            declared = declared_length(scope)
            if declared is not None and declared > limit:
                await JSONResponse({"detail": f"body over {limit} bytes"}, status_code=413)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def declared_length(scope: dict[str, Any]) -> int | None:
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None
