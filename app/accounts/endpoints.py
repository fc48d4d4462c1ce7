from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from app.deps import AccountId, account_or_404, runtime
from app.runtime import Runtime
from app.security import require_admin
from integrations.base import CrmAuthError, CrmUnavailable

from . import service
from .schemas import AccountCreate, AccountOut, AccountPatch, SyncOut

router = APIRouter(prefix="/api/accounts", tags=["accounts"], dependencies=[Depends(require_admin)])


def _crm_error(exc: Exception) -> HTTPException:
    if isinstance(exc, CrmAuthError):
        return HTTPException(status.HTTP_400_BAD_REQUEST, f"the CRM refused the credentials: {exc}")
    return HTTPException(status.HTTP_502_BAD_GATEWAY, f"the CRM could not be reached: {exc}")


@router.post("", status_code=status.HTTP_201_CREATED, response_model=AccountOut, responses={502: {}})
async def create_account(body: AccountCreate, rt: Runtime = Depends(runtime)) -> Any:
    """Connects a CRM account. `rules` (optional) is the rules document, as PUT
    /api/accounts/{id}/rules takes it, in force from the first sweep; `"paused": true` creates it
    paused (backfilled, but neither evaluated nor written to until PATCH `{"paused": false}`)."""
    try:
        async with rt.sessions() as s, s.begin():
            account = await service.create(rt, s, body)
    except (CrmAuthError, CrmUnavailable) as exc:
        raise _crm_error(exc) from None
    except ValidationError as exc:
        errors = [
            {"loc": ["body", "rules", *e.get("loc", ())], "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse(
            {"detail": "invalid rules document", "errors": jsonable_encoder(errors)},
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    rt.sync_wakeup.set()
    return service.to_out(rt, account)


@router.get("", response_model=list[AccountOut])
async def list_accounts(rt: Runtime = Depends(runtime)) -> list[AccountOut]:
    async with rt.reads() as s:
        return [service.to_out(rt, a) for a in await service.list_all(s)]


@router.get("/{account_id}", response_model=AccountOut)
async def get_account(account_id: AccountId, rt: Runtime = Depends(runtime)) -> AccountOut:
    async with rt.reads() as s:
        account = await account_or_404(s, account_id)
        return service.to_out(rt, account, await service.inbox_lag(s, account_id))


@router.patch("/{account_id}", response_model=AccountOut, responses={502: {}})
async def patch_account(
    account_id: AccountId, body: AccountPatch, request: Request, rt: Runtime = Depends(runtime)
) -> AccountOut:
    try:
        async with rt.sessions() as s, s.begin():
            account = await account_or_404(s, account_id)
            await service.patch(rt, s, account, body)
    except (CrmAuthError, CrmUnavailable) as exc:
        raise _crm_error(exc) from None
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    request.app.state.keys.invalidate()
    return service.to_out(rt, account)


@router.delete("/{account_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_account(account_id: AccountId, request: Request, rt: Runtime = Depends(runtime)) -> Response:
    async with rt.sessions() as s, s.begin():
        account = await account_or_404(s, account_id)
        await s.delete(account)
    request.app.state.keys.invalidate()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{account_id}/sync", status_code=status.HTTP_202_ACCEPTED, response_model=SyncOut)
async def sync_account(account_id: AccountId, rt: Runtime = Depends(runtime)) -> SyncOut:
    async with rt.sessions() as s, s.begin():
        account = await account_or_404(s, account_id)
        await service.request_sync(s, account)
    rt.sync_wakeup.set()
    return service.to_out(rt, account).sync
