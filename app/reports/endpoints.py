"""The reports as JSON (and the team table as CSV / XLSX) for the admin API.

The `answer_*` functions are shared with the dashboard's own routes, which call them with the
scope of the person looking instead of the admin's whole team.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.calls.schemas import CallStatsOut
from app.db import utcnow
from app.deps import AccountId, IsoDay, account_or_404, runtime
from app.mirror.models import Pipeline
from app.rules.registry import RULES
from app.runtime import Runtime
from app.security import require_admin

from . import abcxyz, export, service
from .periods import Period, PeriodError, resolve, today
from .schemas import FunnelReport, ManagersReport

router = APIRouter(prefix="/api/accounts", tags=["reports"], dependencies=[Depends(require_admin)])
calls_router = APIRouter(prefix="/api/accounts", tags=["telephony"], dependencies=[Depends(require_admin)])

Lang = Literal["ru", "en"]
Format = Literal["json", "csv", "xlsx"]
PresetParam = Literal["today", "yesterday", "this_week", "last_week", "this_month", "last_month"]
ID_PATTERN = r"^[0-9A-Za-z_:.\-]{1,64}$"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class PeriodParams:
    """?period=this_week, or ?from=YYYY-MM-DD&to=YYYY-MM-DD (local days, both inclusive)."""

    def __init__(
        self,
        period: PresetParam | None = None,
        day_from: Annotated[IsoDay | None, Query(alias="from")] = None,
        day_to: Annotated[IsoDay | None, Query(alias="to")] = None,
    ) -> None:
        self.preset, self.day_from, self.day_to = period, day_from, day_to

    def resolve(self, account: Account) -> Period:
        try:
            return resolve(account.timezone, utcnow(), self.preset, self.day_from, self.day_to)
        except PeriodError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None


def rule_or_422(rule: str | None) -> str | None:
    if rule is not None and rule not in RULES:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"unknown rule {rule!r}; known: {', '.join(sorted(RULES))}"
        )
    return rule


async def answer_managers(
    s: AsyncSession, account: Account, period: Period, scope: service.Scope, fmt: str, lang: str
) -> Response:
    report = await service.managers(s, account, period, scope, utcnow())
    stem = f"crmwatch-managers-{period.day_from}-{period.day_to}"
    if fmt == "csv":
        return Response(
            export.to_csv(report, lang),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{stem}.csv"'},
        )
    if fmt == "xlsx":
        days = await service.daily(s, account, period, scope)
        return Response(
            export.to_xlsx(report, days, lang),
            media_type=XLSX,
            headers={"Content-Disposition": f'attachment; filename="{stem}.xlsx"'},
        )
    return JSONResponse(jsonable_encoder(ManagersReport.model_validate(report)))


async def answer_funnel(
    s: AsyncSession, account: Account, pipeline_id: str | None, period: Period, scope: service.Scope
) -> dict[str, Any]:
    if pipeline_id is None:
        # The first pipeline the CRM lists; an account with none gets an empty funnel.
        pipeline_id = (
            await s.scalar(
                select(Pipeline.id)
                .where(Pipeline.account_id == account.id)
                .order_by(Pipeline.is_archived, Pipeline.sort, Pipeline.id)
                .limit(1)
            )
            or ""
        )
    report = await service.funnel(s, account, pipeline_id, period, scope, utcnow())
    return jsonable_encoder(FunnelReport.model_validate(report))


async def pipelines(s: AsyncSession, account: Account) -> list[dict[str, Any]]:
    rows = await s.scalars(
        select(Pipeline)
        .where(Pipeline.account_id == account.id, Pipeline.is_archived.is_(False))
        .order_by(Pipeline.sort, Pipeline.id)
    )
    return [{"id": p.id, "name": p.name} for p in rows]


@router.get(
    "/{account_id}/reports/managers",
    response_model=ManagersReport,
    responses={200: {"content": {"text/csv": {}, XLSX: {}}}, 422: {}},
)
async def managers_report(
    account_id: AccountId,
    period: PeriodParams = Depends(),
    fmt: Format = Query("json", alias="format"),
    lang: Lang = "ru",
    rt: Runtime = Depends(runtime),
) -> Response:
    """One row per manager for the period (the account's local days, both ends inclusive): calls,
    talk seconds, successful calls (talk ≥ 40 s), incoming, outgoing, missed, cards changed; and now:
    open findings by rule, overdue tasks, deals without a task, tasks per open deal.
    `?format=csv` or `xlsx` downloads the same table (the XLSX adds a sheet per day)."""
    async with rt.reads() as s:
        account = await account_or_404(s, account_id)
        return await answer_managers(s, account, period.resolve(account), service.TEAM, fmt, lang)


@router.get("/{account_id}/reports/daily")
async def daily_report(
    account_id: AccountId,
    period: PeriodParams = Depends(),
    rt: Runtime = Depends(runtime),
    manager_id: str | None = Query(None, pattern=ID_PATTERN),
) -> list[dict[str, Any]]:
    """The team table's period figures per manager per local day (days without activity left out)."""
    async with rt.reads() as s:
        account = await account_or_404(s, account_id)
        scope = service.Scope((manager_id,)) if manager_id else service.TEAM
        return jsonable_encoder(await service.daily(s, account, period.resolve(account), scope))


@router.get("/{account_id}/reports/trend")
async def trend_report(
    account_id: AccountId, period: PeriodParams = Depends(), rt: Runtime = Depends(runtime)
) -> dict[str, Any]:
    """For the charts: calls and successful calls per manager per day, findings opened vs resolved
    per day, and each rule's open findings at the end of each day."""
    async with rt.reads() as s:
        account = await account_or_404(s, account_id)
        return jsonable_encoder(await service.trend(s, account, period.resolve(account), service.TEAM))


@router.get("/{account_id}/reports/funnel", response_model=FunnelReport)
async def funnel_report(
    account_id: AccountId,
    period: PeriodParams = Depends(),
    rt: Runtime = Depends(runtime),
    pipeline_id: str | None = Query(None, pattern=ID_PATTERN),
) -> dict[str, Any]:
    """Per stage of the pipeline: open deals and their amount now, average working days in the stage
    (of the stays that began in the period; a stay still going counts until now) and stage-to-stage
    conversion; won and lost among deals closed in the period, conversion = won / (won + lost)
    (null when both are 0), average deal size, by manager (with the bottleneck stage) and by new vs
    returning client."""
    async with rt.reads() as s:
        account = await account_or_404(s, account_id)
        return await answer_funnel(s, account, pipeline_id, period.resolve(account), service.TEAM)


@router.get("/{account_id}/reports/deals")
async def deals_report(
    account_id: AccountId,
    rt: Runtime = Depends(runtime),
    rule: str | None = Query(None, max_length=64),
    manager_id: str | None = Query(None, pattern=ID_PATTERN),
    limit: int = Query(500, ge=1, le=5000),
) -> list[dict[str, Any]]:
    """The deals behind the open findings (optionally of one rule and one manager), with CRM card links."""
    async with rt.reads() as s:
        account = await account_or_404(s, account_id)
        return jsonable_encoder(await service.deals(s, account, service.TEAM, rule_or_422(rule), manager_id, limit))


ClientsBy = Literal["contact", "company"]


async def answer_abcxyz(
    s: AsyncSession, account: Account, period: Period, scope: service.Scope, by: str | None, limit: int | None
) -> dict[str, Any]:
    return jsonable_encoder(await abcxyz.report(s, account, period, scope, by, limit))


@router.get("/{account_id}/reports/abcxyz")
async def abcxyz_report(
    account_id: AccountId,
    period: PeriodParams = Depends(),
    by: ClientsBy | None = None,
    limit: int | None = Query(None, ge=1, le=100_000),
    rt: Runtime = Depends(runtime),
) -> dict[str, Any]:
    """ABC/XYZ of clients (`by` contact or company; default: the rules document's `abcxyz.clients`) over
    the revenue of won deals closed in the period. `items`: per client revenue, `abc`, `xyz`, the
    coefficient of variation of monthly revenue, the manager, and the group in the previous period
    of equal length; `matrix`: clients and revenue per cell (all 9), also `by_manager` and for the
    `previous` period; `movement`: the clients whose group changed (e.g. AX → BX). Thresholds
    (A 80 %, B 15 %, X ≤ 10 %, Y ≤ 25 %) are in the rules document under `abcxyz`."""
    async with rt.reads() as s:
        account = await account_or_404(s, account_id)
        return await answer_abcxyz(s, account, period.resolve(account), service.TEAM, by, limit)


# Served here rather than in app/calls (whose path it keeps): it is the team report's query per
# day, and app/calls must not depend on the reports that read it.
@calls_router.get("/{account_id}/call-stats", response_model=list[CallStatsOut])
async def call_stats(
    account_id: AccountId,
    rt: Runtime = Depends(runtime),
    day_from: IsoDay | None = Query(None, alias="from"),
    day_to: IsoDay | None = Query(None, alias="to"),
    manager_id: str | None = Query(None, pattern=ID_PATTERN),
) -> list[CallStatsOut]:
    """Per manager per day (the account's local days): the manager's name, calls, talk seconds,
    successful contacts (talk ≥ 40 s), incoming, outgoing, missed, and cards changed. Counted from
    the calls themselves (the team report's query), so backfilled calls count like live ones.
    Default: the last 7 days."""
    async with rt.reads() as s:
        account = await account_or_404(s, account_id)
        day_to = day_to or today(utcnow(), account.timezone)
        day_from = day_from or day_to - timedelta(days=6)
        if day_from > day_to or (day_to - day_from).days > 366:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "from must be before to, at most a year apart")
        scope = service.Scope((manager_id,)) if manager_id else service.TEAM
        rows = await service.daily(s, account, Period(day_from, day_to, account.timezone), scope)
        return [CallStatsOut(successful=r["successful_calls"], **r) for r in rows]
