"""PBX callback intake: authenticated at the edge with the account's PBX secrets, stored raw in
the inbox (intake.py), answered fast; a PBX asking who a number is gets its answer from the mirror."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from app.calls import lookup
from app.calls.hookconfig import secrets_cache
from app.db import utcnow
from app.metrics import WEBHOOKS
from app.runtime import Runtime
from integrations.phones import to_e164
from integrations.registry import TELEPHONY_ADAPTERS, TELEPHONY_SOURCE, telephony_adapter
from integrations.telephony.base import HookRequest, StoredHook, WebhookMalformed, WebhookRejected

from .intake import NotText, account_and_body, as_text, refuse, store

log = logging.getLogger(__name__)

hooks_router = APIRouter(tags=["telephony"])


async def _receive(request: Request, provider: str, key: str, path: str) -> Response:
    source = TELEPHONY_SOURCE + provider
    adapter = telephony_adapter(provider)
    rt: Runtime = request.app.state.runtime
    got = await account_and_body(request, rt, key, source)
    if isinstance(got, Response):
        return got
    account, body = got
    secrets = await secrets_cache(request).lookup(account.id, provider)
    if secrets is None:
        return refuse(
            status.HTTP_404_NOT_FOUND, source, "not_configured", f"{provider} is not configured for this account"
        )
    hook = HookRequest(
        method=request.method,
        path=path,
        query=dict(request.query_params),
        headers={k.lower(): v for k, v in request.headers.items()},
        body=body,
        content_type=request.headers.get("content-type"),
    )
    try:
        verdict = adapter.verify(hook, secrets, utcnow())
    except WebhookRejected as exc:
        return refuse(status.HTTP_401_UNAUTHORIZED, source, "rejected", f"not signed by {provider}: {exc}")
    except WebhookMalformed as exc:
        return refuse(status.HTTP_400_BAD_REQUEST, source, "malformed", f"not a {provider} callback: {exc}")
    if verdict.store:
        try:
            text = as_text(verdict.stored_body if verdict.stored_body is not None else body)
        except NotText as exc:
            return refuse(status.HTTP_400_BAD_REQUEST, source, "malformed", str(exc))
        await store(
            request,
            rt,
            account.id,
            source,
            verdict.dedup_key,
            hook.content_type,
            StoredHook(path=path, body=text, content_type=hook.content_type, meta=verdict.meta).dumps(),
        )
    WEBHOOKS.labels(source, "accepted").inc()
    answer = verdict.response
    if verdict.lookup_number is not None:
        number = to_e164(verdict.lookup_number, account.region)
        answer = {}
        if number is not None:
            async with rt.reads() as s:
                answer = await lookup.who_is(s, account.id, number, provider)
    if verdict.media_type == "text/plain":
        return PlainTextResponse(str(answer))
    return JSONResponse(answer)


def _route(provider: str, with_path: bool) -> Any:
    if with_path:

        async def receive_with_path(request: Request, key: str, event: str) -> Response:
            return await _receive(request, provider, key, f"events/{event}")

        handler = receive_with_path
    else:

        async def receive_plain(request: Request, key: str) -> Response:
            return await _receive(request, provider, key, "")

        handler = receive_plain
    handler.__name__ = f"receive_{provider}_telephony{'_event' if with_path else ''}"
    handler.__doc__ = (
        f"Receives {provider} PBX callbacks. 401 and nothing stored unless the callback "
        "is signed with this account's secret; 200 once it is durably stored."
    )
    return handler


for _name, _adapter in TELEPHONY_ADAPTERS.items():
    if getattr(_adapter, "event_paths", False):
        # The PBX appends the event path to the URL it was given.
        hooks_router.add_api_route(
            f"/hooks/telephony/{_name}/{{key}}/events/{{event:path}}",
            _route(_name, True),
            methods=["POST"],
            responses={400: {}, 401: {}, 404: {}, 413: {}},
        )
    else:
        for _method in getattr(_adapter, "methods", ("POST",)):
            hooks_router.add_api_route(
                f"/hooks/telephony/{_name}/{{key}}",
                _route(_name, False),
                methods=[_method],
                operation_id=f"receive_{_name}_telephony_{_method.lower()}",
                responses={400: {}, 401: {}, 404: {}, 413: {}},
            )
