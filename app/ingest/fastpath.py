"""The webhook route served straight from the ASGI entry point.

CRM webhooks are nearly all of our traffic, and the handler itself is cheap (a cached key
lookup, a scan of the form, a group commit). Going through FastAPI's stack for each one
(its middlewares, routing, dependency resolution, exception wrappers) would cost more than the
handler. So `POST /hooks/{crm}/{key}` for a registered CRM is dispatched here first, to the very
same handler FastAPI would call, inside the same request-id/access-log/metrics layer. The
FastAPI routes stay registered: they document the hooks in the OpenAPI schema and answer any
other method.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from app.errors import client_gone, crash_response
from app.middleware import RequestContext

Handler = Callable[[Request, str], Awaitable[Response]]


class HookFastPath:
    def __init__(self, handlers: dict[str, Handler]) -> None:
        self._handlers = handlers
        # What the access log and the latency metric call the route, as FastAPI would.
        self._routes = {crm: SimpleNamespace(path=f"/hooks/{crm}/{{key}}") for crm in handlers}
        self._asgi = RequestContext(self._serve)

    def match(self, scope: dict[str, Any]) -> bool:
        if scope["type"] != "http" or scope["method"] != "POST":
            return False
        parts = scope["path"].split("/")
        # "/hooks/amocrm/KEY" → ["", "hooks", "amocrm", "KEY"]
        return len(parts) == 4 and parts[1] == "hooks" and parts[2] in self._handlers and bool(parts[3])

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self._asgi(scope, receive, send)

    async def _serve(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        _, _, crm, key = scope["path"].split("/")
        scope["route"] = self._routes[crm]
        try:
            response = await self._handlers[crm](Request(scope, receive), key)
        except ClientDisconnect:
            response = client_gone()
        except Exception:
            response = crash_response("POST")
        await response(scope, receive, send)
