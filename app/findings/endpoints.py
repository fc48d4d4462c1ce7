from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Query, status

from app.accounts.models import Account
from app.deps import INT32_MAX, AccountId, RowId, account_or_404, runtime
from app.runtime import Runtime
from app.security import require_admin

from . import evaluation, service
from .models import Finding
from .schemas import AckIn, FindingDetail, FindingPage, SnoozeIn, SweepOut

router = APIRouter(prefix="/api", tags=["findings"], dependencies=[Depends(require_admin)])


def _missing(what: str, ident: int) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"{what} {ident} not found")


@router.post("/accounts/{account_id}/sweep", response_model=SweepOut, responses={409: {}})
async def sweep(account_id: AccountId, rt: Runtime = Depends(runtime)) -> SweepOut:
    """Evaluates every rule over the whole account now (the scheduler does this nightly, as a
    reconciliation: findings follow their deadlines through its tick);
    409 while the account is paused."""
    async with rt.sessions() as s, s.begin():
        account = await account_or_404(s, account_id)
        if account.paused:
            raise HTTPException(
                status.HTTP_409_CONFLICT, f'account {account_id} is paused; resume it with PATCH {{"paused": false}}'
            )
        result = await evaluation.evaluate(s, account_id, actor="api")
    if result.enqueued:
        rt.outbox_wakeup.set()
    return SweepOut(opened=result.opened, resolved=result.resolved, expired=result.expired, open=result.open)


@router.get("/accounts/{account_id}/findings", response_model=FindingPage)
async def list_findings(
    account_id: AccountId,
    status_: Literal["pending", "open", "acknowledged", "snoozed", "resolved", "expired", "all"] = Query(
        "open", alias="status"
    ),
    rule: str | None = None,
    deal_id: str | None = Query(None, description="the CRM's own deal id"),
    manager_id: str | None = Query(None, description="the CRM's own user id"),
    lang: Literal["ru", "en"] | None = None,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=INT32_MAX),
    rt: Runtime = Depends(runtime),
) -> FindingPage:
    async with rt.reads() as s:
        account = await account_or_404(s, account_id)
        rows, total = await service.search(
            s, account_id, status=status_, rule=rule, deal_id=deal_id, manager_id=manager_id, limit=limit, offset=offset
        )
        items = await service.render(s, account, rows, rt.settings.public_url, lang)
    return FindingPage(items=items, total=total, limit=limit, offset=offset)


async def _detail(rt: Runtime, finding_id: int, lang: str | None = None) -> FindingDetail:
    async with rt.reads() as s:
        finding = await s.get(Finding, finding_id)
        if finding is None:
            raise _missing("finding", finding_id)
        account = await s.get(Account, finding.account_id)
        assert account is not None
        [item] = await service.render(s, account, [finding], rt.settings.public_url, lang)
        return FindingDetail(**item.model_dump(), history=await service.history(s, finding_id))


@router.get("/findings/{finding_id}", response_model=FindingDetail)
async def get_finding(
    finding_id: RowId, lang: Literal["ru", "en"] | None = None, rt: Runtime = Depends(runtime)
) -> FindingDetail:
    return await _detail(rt, finding_id, lang)


@router.post("/findings/{finding_id}/ack", response_model=FindingDetail, responses={409: {}})
async def acknowledge(finding_id: RowId, body: AckIn | None = None, rt: Runtime = Depends(runtime)) -> FindingDetail:
    body = body or AckIn()
    async with rt.sessions() as s, s.begin():
        finding = await s.get(Finding, finding_id, with_for_update=True)
        if finding is None:
            raise _missing("finding", finding_id)
        try:
            await service.acknowledge(s, finding, _actor(body.by), body.reason)
        except service.TransitionError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    return await _detail(rt, finding_id)


@router.post("/findings/{finding_id}/snooze", response_model=FindingDetail, responses={409: {}})
async def snooze(finding_id: RowId, body: SnoozeIn, rt: Runtime = Depends(runtime)) -> FindingDetail:
    if body.until.tzinfo is None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "until needs a time zone, e.g. 2026-12-01T09:00:00+03:00"
        )
    async with rt.sessions() as s, s.begin():
        finding = await s.get(Finding, finding_id, with_for_update=True)
        if finding is None:
            raise _missing("finding", finding_id)
        try:
            await service.snooze(s, finding, body.until, _actor(body.by), body.reason)
        except service.TransitionError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    return await _detail(rt, finding_id)


def _actor(by: str | None) -> str:
    return f"admin:{by}" if by else "admin"
