"""Admin API of the plans: `PUT` / `GET /api/accounts/{id}/plans/{YYYY-MM}`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.encoders import jsonable_encoder

from app.db import utcnow
from app.deps import AccountId, account_or_404, runtime
from app.runtime import Runtime
from app.security import require_admin

from . import service
from .schemas import MONTH_PATTERN, PlanIn, PlanOut

router = APIRouter(prefix="/api/accounts", tags=["plans"], dependencies=[Depends(require_admin)])

MonthParam = Path(pattern=MONTH_PATTERN, description="the account's local month, YYYY-MM")


@router.get("/{account_id}/plans/{month}", response_model=PlanOut, response_model_exclude_none=True)
async def get_plan(account_id: AccountId, month: str = MonthParam, rt: Runtime = Depends(runtime)) -> PlanOut:
    """The month's plan per manager (empty when nobody set one)."""
    async with rt.reads() as s:
        await account_or_404(s, account_id)
        return await service.get(s, account_id, month)


@router.put("/{account_id}/plans/{month}", response_model=PlanOut, response_model_exclude_none=True)
async def put_plan(
    account_id: AccountId, body: PlanIn, month: str = MonthParam, rt: Runtime = Depends(runtime)
) -> PlanOut:
    """**Replaces the month's whole plan**: per manager (the CRM's user id) `revenue` and/or
    `won_deals`, neither negative. A manager left out has no plan for the month. `warnings` names
    managers the mirror does not know; they are kept."""
    async with rt.sessions() as s, s.begin():
        await account_or_404(s, account_id)
        return await service.put(s, account_id, month, body)


@router.get("/{account_id}/reports/plan")
async def plan_report(
    account_id: AccountId,
    month: str | None = Query(None, pattern=MONTH_PATTERN, description="YYYY-MM; default: this month"),
    rt: Runtime = Depends(runtime),
) -> dict[str, Any]:
    """Plan vs fact per manager with a plan for the month: revenue and won deals, and the activity
    targets counted back from the plan through the milestones in the rules document
    (`plans.milestones`: stages entered, task types completed, calls of at least 40 s) with each
    manager's conversions over the 90 days before the month (the team's where too little
    history); the fact to date against the target pro-rated over the month's working time, with
    `behind` and `behind_percent` per manager and milestone."""
    async with rt.reads() as s:
        account = await account_or_404(s, account_id)
        now = utcnow()
        month = month or service.current_month(now, account.timezone)
        return jsonable_encoder(await service.pace(s, account, month, now))
