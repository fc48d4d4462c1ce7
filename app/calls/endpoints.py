"""PBX callbacks (authenticated at the edge, stored raw in the inbox, answered fast) and the
admin API for telephony settings, calls and the managers' daily call figures."""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from sqlalchemy import select

from app.db import utcnow
from app.deps import account_or_404, runtime
from app.ingest.endpoints import BodyTooLarge, read_body, refuse
from app.metrics import WEBHOOKS
from app.runtime import Runtime
from app.security import require_admin
from integrations.phones import to_e164
from integrations.registry import TELEPHONY_ADAPTERS, TELEPHONY_SOURCE, telephony_adapter
from integrations.telephony.base import HookRequest, StoredHook, WebhookMalformed, WebhookRejected

from . import lookup
from .hookconfig import SecretsCache
from .models import Call, TelephonyConfig
from .schemas import CallOut, TelephonyIn, TelephonyOut

log = logging.getLogger(__name__)

hooks_router = APIRouter(tags=["telephony"])
router = APIRouter(prefix="/api/accounts", tags=["telephony"], dependencies=[Depends(require_admin)])


def _secrets(request: Request) -> SecretsCache:
    cache = getattr(request.app.state, "telephony_secrets", None)
    if cache is None:
        rt: Runtime = request.app.state.runtime
        cache = request.app.state.telephony_secrets = SecretsCache(rt.reads, rt.box)
    return cache


async def _receive(request: Request, provider: str, key: str, path: str) -> Response:
    source = TELEPHONY_SOURCE + provider
    adapter = telephony_adapter(provider)
    rt: Runtime = request.app.state.runtime
    account = await request.app.state.keys.lookup(key)
    if account is None:
        return refuse(status.HTTP_404_NOT_FOUND, source, "unknown_key", "unknown webhook key")
    try:
        body = await read_body(request, rt.settings.max_webhook_bytes)
    except BodyTooLarge:
        return refuse(status.HTTP_413_CONTENT_TOO_LARGE, source, "too_large",
                       f"body over {rt.settings.max_webhook_bytes} bytes")
    secrets = await _secrets(request).lookup(account.id, provider)
    if secrets is None:
        return refuse(status.HTTP_404_NOT_FOUND, source, "not_configured",
                       f"{provider} is not configured for this account")
    hook = HookRequest(method=request.method, path=path, query=dict(request.query_params),
                       headers={k.lower(): v for k, v in request.headers.items()}, body=body,
                       content_type=request.headers.get("content-type"))
    try:
        verdict = adapter.verify(hook, secrets, utcnow())
    except WebhookRejected as exc:
        return refuse(status.HTTP_401_UNAUTHORIZED, source, "rejected", f"not signed by {provider}: {exc}")
    except WebhookMalformed as exc:
        return refuse(status.HTTP_400_BAD_REQUEST, source, "malformed", f"not a {provider} callback: {exc}")
    if verdict.store:
        try:
            text = verdict.stored_body if verdict.stored_body is not None else body.decode("utf-8")
        except UnicodeDecodeError:
            return refuse(status.HTTP_400_BAD_REQUEST, source, "malformed", "the body is not UTF-8")
        if "\x00" in text:
            return refuse(status.HTTP_400_BAD_REQUEST, source, "malformed", "the body contains a NUL byte")
        now = utcnow()
        await request.app.state.inbox_writer.write({
            "account_id": account.id, "source": source, "dedup_key": verdict.dedup_key,
            "content_type": (hook.content_type or "")[:100],
            "payload": StoredHook(path=path, body=text, content_type=hook.content_type, meta=verdict.meta).dumps(),
            "received_at": now, "status": "pending", "attempts": 0, "next_attempt_at": now,
        })
        rt.inbox_wakeup.set()
        rt.last_intake = time.monotonic()
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
    handler.__doc__ = (f"Receives {provider} PBX callbacks. 401 and nothing stored unless the callback "
                       "is signed with this account's secret; 200 once it is durably stored.")
    return handler


for _name, _adapter in TELEPHONY_ADAPTERS.items():
    if getattr(_adapter, "event_paths", False):
        # The PBX appends the event path to the URL it was given.
        hooks_router.add_api_route(f"/hooks/telephony/{_name}/{{key}}/events/{{event:path}}",
                                   _route(_name, True), methods=["POST"],
                                   responses={400: {}, 401: {}, 404: {}, 413: {}})
    else:
        for _method in getattr(_adapter, "methods", ("POST",)):
            hooks_router.add_api_route(f"/hooks/telephony/{_name}/{{key}}", _route(_name, False),
                                       methods=[_method], operation_id=f"receive_{_name}_telephony_{_method.lower()}",
                                       responses={400: {}, 401: {}, 404: {}, 413: {}})


# -- admin ----------------------------------------------------------------------------------------

def _provider_or_404(provider: str) -> Any:
    if provider not in TELEPHONY_ADAPTERS:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            f"unknown provider {provider!r}; known: {', '.join(sorted(TELEPHONY_ADAPTERS))}")
    return TELEPHONY_ADAPTERS[provider]


def _out(rt: Runtime, key: str, config: TelephonyConfig, secrets: dict[str, Any]) -> TelephonyOut:
    adapter = TELEPHONY_ADAPTERS[config.provider]
    suffix = "/events/" if getattr(adapter, "event_paths", False) else ""
    # Options (a time zone) are not secret; secrets are only ever named.
    options = {k: str(v) for k, v in secrets.items() if k in getattr(adapter, "option_fields", ())
               and k not in ("secondary_secret",)}
    return TelephonyOut(provider=config.provider, options=options,
                        secrets_set=sorted(k for k, v in secrets.items() if v and k not in options),
                        extensions={k: str(v) for k, v in (config.extensions or {}).items()},
                        log_calls=config.log_calls, updated_at=config.updated_at,
                        hook_url=f"{rt.settings.public_url.rstrip('/')}/hooks/telephony/{config.provider}/{key}{suffix}")


@router.put("/{account_id}/telephony/{provider}", response_model=TelephonyOut)
async def put_telephony(account_id: int, provider: str, body: TelephonyIn, request: Request,
                        rt: Runtime = Depends(runtime)) -> TelephonyOut:
    """Connects a PBX: its secrets (stored encrypted, never shown again) and the map of PBX
    extensions or logins to CRM users. Secrets left out keep their stored values."""
    adapter = _provider_or_404(provider)
    given = body.secrets()
    allowed = (*adapter.secret_fields, *getattr(adapter, "option_fields", ()))
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"unknown fields for {provider}: {', '.join(unknown)}; "
                            f"it takes: {', '.join(allowed)}")
    bad = sorted(k for k, v in given.items() if not isinstance(v, str) or not v.strip() or len(v) > 500)
    if bad:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"secrets must be non-empty strings: {', '.join(bad)}")
    async with rt.sessions() as s, s.begin():
        account = await account_or_404(s, account_id)
        config = await s.get(TelephonyConfig, (account_id, provider))
        secrets = {**(rt.box.open(config.credentials) if config else {}), **given}
        missing = [f for f in adapter.secret_fields if not secrets.get(f)]
        if missing:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"{provider} needs: {', '.join(missing)}")
        if config is None:
            config = TelephonyConfig(account_id=account_id, provider=provider)
            s.add(config)
        config.credentials = rt.box.seal(secrets)
        config.extensions = {k.strip(): str(v).strip() for k, v in body.extensions.items()}
        config.log_calls = body.log_calls
        config.updated_at = utcnow()
        await s.flush()
        out = _out(rt, account.key, config, secrets)
    _secrets(request).invalidate()
    return out


@router.get("/{account_id}/telephony/{provider}", response_model=TelephonyOut)
async def get_telephony(account_id: int, provider: str, rt: Runtime = Depends(runtime)) -> TelephonyOut:
    _provider_or_404(provider)
    async with rt.reads() as s:
        account = await account_or_404(s, account_id)
        config = await s.get(TelephonyConfig, (account_id, provider))
        if config is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"{provider} is not configured for this account")
        return _out(rt, account.key, config, rt.box.open(config.credentials))


@router.delete("/{account_id}/telephony/{provider}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_telephony(account_id: int, provider: str, request: Request,
                           rt: Runtime = Depends(runtime)) -> Response:
    _provider_or_404(provider)
    async with rt.sessions() as s, s.begin():
        await account_or_404(s, account_id)
        config = await s.get(TelephonyConfig, (account_id, provider))
        if config is not None:
            await s.delete(config)
    _secrets(request).invalidate()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{account_id}/calls", response_model=list[CallOut])
async def list_calls(account_id: int, rt: Runtime = Depends(runtime),
                     number: str | None = Query(None, description="client number in E.164"),
                     deal_id: str | None = None, limit: int = Query(100, ge=1, le=1000)) -> list[CallOut]:
    async with rt.reads() as s:
        await account_or_404(s, account_id)
        where = [Call.account_id == account_id]
        if number:
            where.append(Call.client_number == number)
        if deal_id:
            where.append(Call.deal_id == deal_id)
        rows = await s.scalars(select(Call).where(*where).order_by(Call.started_at.desc(), Call.id.desc()).limit(limit))
        return [CallOut.model_validate(r) for r in rows]
