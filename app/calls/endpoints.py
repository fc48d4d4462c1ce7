"""The admin API for telephony settings, calls and the managers' daily call figures. (The PBX
callbacks themselves are intake: app/ingest/telephony.py.)"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import Response
from sqlalchemy import select

from app.db import utcnow
from app.deps import AccountId, account_or_404, runtime
from app.runtime import Runtime
from app.security import require_admin
from integrations.registry import TELEPHONY_ADAPTERS

from .hookconfig import secrets_cache
from .models import Call, TelephonyConfig
from .schemas import CallOut, TelephonyIn, TelephonyOut

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/accounts", tags=["telephony"], dependencies=[Depends(require_admin)])


# -- admin ----------------------------------------------------------------------------------------


def _provider_or_404(provider: str) -> Any:
    if provider not in TELEPHONY_ADAPTERS:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"unknown provider {provider!r}; known: {', '.join(sorted(TELEPHONY_ADAPTERS))}"
        )
    return TELEPHONY_ADAPTERS[provider]


def _out(rt: Runtime, key: str, config: TelephonyConfig, secrets: dict[str, Any]) -> TelephonyOut:
    adapter = TELEPHONY_ADAPTERS[config.provider]
    suffix = "/events/" if getattr(adapter, "event_paths", False) else ""
    # Options (a time zone) are not secret; secrets are only ever named.
    options = {
        k: str(v)
        for k, v in secrets.items()
        if k in getattr(adapter, "option_fields", ()) and k not in ("secondary_secret",)
    }
    return TelephonyOut(
        provider=config.provider,
        options=options,
        secrets_set=sorted(k for k, v in secrets.items() if v and k not in options),
        extensions={k: str(v) for k, v in (config.extensions or {}).items()},
        log_calls=config.log_calls,
        updated_at=config.updated_at,
        hook_url=f"{rt.settings.public_url.rstrip('/')}/hooks/telephony/{config.provider}/{key}{suffix}",
    )


@router.put("/{account_id}/telephony/{provider}", response_model=TelephonyOut)
async def put_telephony(
    account_id: AccountId, provider: str, body: TelephonyIn, request: Request, rt: Runtime = Depends(runtime)
) -> TelephonyOut:
    """Connects a PBX: its secrets (stored encrypted, never shown again) and the map of PBX
    extensions or logins to CRM users. Secrets left out keep their stored values."""
    adapter = _provider_or_404(provider)
    given = body.secrets()
    allowed = (*adapter.secret_fields, *getattr(adapter, "option_fields", ()))
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"unknown fields for {provider}: {', '.join(unknown)}; it takes: {', '.join(allowed)}",
        )
    bad = sorted(k for k, v in given.items() if not isinstance(v, str) or not v.strip() or len(v) > 500)
    if bad:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"secrets must be non-empty strings: {', '.join(bad)}"
        )
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
    secrets_cache(request).invalidate()
    return out


@router.get("/{account_id}/telephony/{provider}", response_model=TelephonyOut)
async def get_telephony(account_id: AccountId, provider: str, rt: Runtime = Depends(runtime)) -> TelephonyOut:
    _provider_or_404(provider)
    async with rt.reads() as s:
        account = await account_or_404(s, account_id)
        config = await s.get(TelephonyConfig, (account_id, provider))
        if config is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"{provider} is not configured for this account")
        return _out(rt, account.key, config, rt.box.open(config.credentials))


@router.delete("/{account_id}/telephony/{provider}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_telephony(
    account_id: AccountId, provider: str, request: Request, rt: Runtime = Depends(runtime)
) -> Response:
    _provider_or_404(provider)
    async with rt.sessions() as s, s.begin():
        await account_or_404(s, account_id)
        config = await s.get(TelephonyConfig, (account_id, provider))
        if config is not None:
            await s.delete(config)
    secrets_cache(request).invalidate()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{account_id}/calls", response_model=list[CallOut])
async def list_calls(
    account_id: AccountId,
    rt: Runtime = Depends(runtime),
    number: str | None = Query(None, description="client number in E.164"),
    deal_id: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
) -> list[CallOut]:
    async with rt.reads() as s:
        await account_or_404(s, account_id)
        where = [Call.account_id == account_id]
        if number:
            where.append(Call.client_number == number)
        if deal_id:
            where.append(Call.deal_id == deal_id)
        rows = await s.scalars(select(Call).where(*where).order_by(Call.started_at.desc(), Call.id.desc()).limit(limit))
        return [CallOut.model_validate(r) for r in rows]
