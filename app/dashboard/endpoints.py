"""The dashboard's routes: read-only links (admin), the ways in from amoCRM and Bitrix24, the page,
its static files, and the JSON it draws (the reports' own answers, in the viewer's scope)."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import plotly
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response, status
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.db import utcnow
from app.deps import AccountId, IsoDay, RowId, account_or_404, runtime
from app.ingest import lag
from app.mirror.models import User
from app.payments import report as payments_report
from app.plans import service as plans_service
from app.plans.schemas import MONTH_PATTERN
from app.reports import endpoints as reports
from app.reports import service as reports_service
from app.reports.periods import today
from app.runtime import Runtime
from app.security import load_secret, require_admin
from app.widget import amocrm_token, placement
from app.widget import endpoints as widget_endpoints
from app.widget.rejected import TokenRejected
from integrations.http import origin

from . import access, pages
from .models import DashboardLink

# The account header warns when the mirror is more than this far behind (issue 18).
LAG_WARNING_S = 60

admin_router = APIRouter(prefix="/api/accounts", tags=["dashboard"], dependencies=[Depends(require_admin)])
router = APIRouter(tags=["dashboard"])

STATIC = Path(__file__).parent / "static"
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
Lang = Literal["ru", "en"]


# --- admin: read-only links -------------------------------------------------------------------------


class LinkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    manager_id: str | None = Field(
        None, pattern=reports.ID_PATTERN, description="show only this manager (the CRM's user id); omit for the team"
    )
    expires_in_days: int = Field(30, ge=1, le=365)
    label: str | None = Field(None, max_length=200)


class LinkOut(BaseModel):
    id: int
    manager_id: str | None
    label: str | None
    expires_at: datetime
    revoked_at: datetime | None
    created_at: datetime
    url: str | None = Field(None, description="only in the answer that created the link")


def _link_out(link: DashboardLink, url: str | None = None) -> LinkOut:
    return LinkOut(
        id=link.id,
        manager_id=link.manager_id,
        label=link.label,
        expires_at=link.expires_at,
        revoked_at=link.revoked_at,
        created_at=link.created_at,
        url=url,
    )


@admin_router.post("/{account_id}/dashboard/links", response_model=LinkOut, status_code=status.HTTP_201_CREATED)
async def create_link(account_id: AccountId, body: LinkIn, rt: Runtime = Depends(runtime)) -> LinkOut:
    """A read-only dashboard link for the whole team or for one manager. The URL is shown once; the
    link works until `expires_in_days` pass or it is revoked (DELETE)."""
    secret = access.new_link_secret()
    async with rt.sessions() as s, s.begin():
        await account_or_404(s, account_id)
        if body.manager_id is not None and await s.get(User, (account_id, body.manager_id)) is None:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"manager {body.manager_id!r} is not a user of this account's CRM",
            )
        now = utcnow()
        link = DashboardLink(
            account_id=account_id,
            token_hash=access.link_hash(secret),
            manager_id=body.manager_id,
            label=body.label,
            expires_at=now + timedelta(days=body.expires_in_days),
            created_at=now,
        )
        s.add(link)
        await s.flush()
        return _link_out(link, f"{rt.settings.public_url.rstrip('/')}/dashboard/l/{secret}")


@admin_router.get("/{account_id}/dashboard/links", response_model=list[LinkOut])
async def list_links(account_id: AccountId, rt: Runtime = Depends(runtime)) -> list[LinkOut]:
    async with rt.reads() as s:
        await account_or_404(s, account_id)
        rows = await s.scalars(
            select(DashboardLink)
            .where(DashboardLink.account_id == account_id)
            .order_by(DashboardLink.created_at.desc(), DashboardLink.id.desc())
        )
        return [_link_out(r) for r in rows]


@admin_router.delete("/{account_id}/dashboard/links/{link_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_link(account_id: AccountId, link_id: RowId, rt: Runtime = Depends(runtime)) -> Response:
    """Revokes a link at once: its page and its data answer "revoked" from the next request on."""
    async with rt.sessions() as s, s.begin():
        link = await s.get(DashboardLink, link_id)
        if link is None or link.account_id != account_id:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"link {link_id} not found")
        link.revoked_at = link.revoked_at or utcnow()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- pages ------------------------------------------------------------------------------------------


# A page's language: the asked one, else the account's (the same rule as the Bitrix24 deal tab).
_lang = placement.page_lang


async def _amocrm_origins(s: AsyncSession) -> list[str]:
    return sorted({origin(u) for u in await s.scalars(select(Account.base_url).where(Account.crm == "amocrm"))})


@router.get("/dashboard/l/{secret}", response_class=HTMLResponse, include_in_schema=False)
async def link_page(secret: str, lang: Lang | None = None, rt: Runtime = Depends(runtime)) -> HTMLResponse:
    async with rt.reads() as s:
        try:
            viewer = await access.viewer_from_link(s, secret, utcnow())
        except access.LinkRefused as exc:
            code = status.HTTP_410_GONE if exc.code in ("expired", "revoked") else status.HTTP_404_NOT_FOUND
            return pages.refusal(_lang(lang), exc.code, code)
    return pages.page(_lang(lang, viewer.account), f"Link {secret}", [])


@router.get("/dashboard/view", response_class=HTMLResponse, include_in_schema=False)
async def session_page(lang: Lang | None = None, rt: Runtime = Depends(runtime)) -> HTMLResponse:
    """The page the amoCRM widget frames; the session comes in the URL fragment, never to a server log."""
    async with rt.reads() as s:
        ancestors = await _amocrm_origins(s)
    return pages.page(_lang(lang), None, ancestors)


@router.post("/widget/amocrm/dashboard/session", responses=widget_endpoints.CARD_REFUSALS)
async def amocrm_session(
    request: Request, x_auth_token: str | None = Header(None), rt: Runtime = Depends(runtime)
) -> JSONResponse:
    """Exchanges amoCRM's disposable widget token for a dashboard session (the widget's full-page
    locations call this through $authorizedAjax). The token is checked exactly as the card's calls
    are (the card's own flow: signature, audience, expiry, one use, the account's own page)."""

    async def act(s: AsyncSession, user: amocrm_token.WidgetUser) -> dict[str, Any]:
        scope = await access.scope_of_user(s, user.account, user.user_id, user.is_admin)
        token = access.issue_session(load_secret(rt.settings), user.account, user.user_id, scope.managers is None)
        url = f"{rt.settings.public_url.rstrip('/')}/dashboard/view?lang={_lang(None, user.account)}#s={token}"
        return {"session": token, "url": url}

    return await widget_endpoints.amocrm_call(request, rt, x_auth_token, act)


@router.post("/dashboard/bitrix24", response_class=HTMLResponse, include_in_schema=False)
async def bitrix24_page(request: Request, rt: Runtime = Depends(runtime)) -> HTMLResponse:
    """The Bitrix24 app's own page (its menu item's handler), signed in exactly like the deal tab
    (app/widget/placement.py); the portal is also asked whether the user administers it."""
    try:
        signed = await placement.sign_in(rt, await placement.fields(request), ask_admin=True)
    except placement.Refused as exc:
        return pages.refusal(exc.lang, exc.reason, exc.status_code, [origin(exc.portal)] if exc.portal else None)
    account, user = signed.account, signed.user
    async with rt.reads() as s:
        scope = await access.scope_of_user(s, account, user.id, user.is_admin)
    token = access.issue_session(load_secret(rt.settings), account, user.id, scope.managers is None)
    return pages.page(signed.lang, f"Bearer {token}", [origin(account.base_url)])


@lru_cache(maxsize=4)
def _static(name: str) -> bytes:
    path = PLOTLY_JS if name == "plotly.min.js" else STATIC / name
    return path.read_bytes()


@router.get("/dashboard/static/{name}", include_in_schema=False)
async def static(name: Literal["dashboard.js", "dashboard.css", "plotly.min.js"]) -> Response:
    media = "text/css" if name.endswith(".css") else "text/javascript"
    # plotly.js is versioned by the installed package; our own files change with crmwatch.
    cache = "public, max-age=86400" if name == "plotly.min.js" else "no-cache"
    return Response(_static(name), media_type=f"{media}; charset=utf-8", headers={"Cache-Control": cache})


# --- the data the page draws ------------------------------------------------------------------------


class _Refused(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code, self.detail = code, detail


async def _viewer(request: Request, s: AsyncSession, rt: Runtime) -> access.Viewer:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    try:
        if scheme.lower() == "link":
            return await access.viewer_from_link(s, value, utcnow())
        if scheme.lower() == "bearer":
            return await access.viewer_from_session(s, load_secret(rt.settings), value)
    except access.LinkRefused as exc:
        raise _Refused(f"link_{exc.code}", f"the dashboard link is {exc.code}") from None
    except TokenRejected as exc:
        raise _Refused(exc.code, exc.detail) from None
    raise _Refused("token_missing", "a dashboard link or session is required")


async def _answer(request: Request, rt: Runtime, act: Any) -> Response:
    try:
        async with rt.reads() as s:
            viewer = await _viewer(request, s, rt)
            result = await act(s, viewer)
    except _Refused as exc:
        return JSONResponse({"detail": exc.detail, "code": exc.code}, status_code=status.HTTP_401_UNAUTHORIZED)
    except HTTPException as exc:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
    return result if isinstance(result, Response) else JSONResponse(jsonable_encoder(result))


@router.get("/dashboard/api/meta", include_in_schema=False)
async def meta(request: Request, rt: Runtime = Depends(runtime)) -> Response:
    async def act(s: AsyncSession, viewer: access.Viewer) -> dict[str, Any]:
        return {
            "account": viewer.account.name,
            "crm": viewer.account.crm,
            "timezone": viewer.account.timezone,
            "team_view": viewer.scope.managers is None,
            "pipelines": await reports.pipelines(s, viewer.account),
            # How far the mirror is behind the CRM: the header warns past LAG_WARNING_S.
            "lag_seconds": round((await lag.of_account(s, viewer.account.id)).seconds(utcnow()), 1),
            "lag_warning_seconds": LAG_WARNING_S,
        }

    return await _answer(request, rt, act)


@router.get("/dashboard/api/managers", include_in_schema=False)
async def dashboard_managers(
    request: Request,
    period: reports.PeriodParams = Depends(),
    fmt: reports.Format = Query("json", alias="format"),
    lang: Lang = "ru",
    rt: Runtime = Depends(runtime),
) -> Response:
    async def act(s: AsyncSession, viewer: access.Viewer) -> Response:
        return await reports.answer_managers(s, viewer.account, period.resolve(viewer.account), viewer.scope, fmt, lang)

    return await _answer(request, rt, act)


@router.get("/dashboard/api/trend", include_in_schema=False)
async def dashboard_trend(
    request: Request, period: reports.PeriodParams = Depends(), rt: Runtime = Depends(runtime)
) -> Response:
    async def act(s: AsyncSession, viewer: access.Viewer) -> dict[str, Any]:
        return await reports_service.trend(s, viewer.account, period.resolve(viewer.account), viewer.scope)

    return await _answer(request, rt, act)


@router.get("/dashboard/api/funnel", include_in_schema=False)
async def dashboard_funnel(
    request: Request,
    period: reports.PeriodParams = Depends(),
    pipeline_id: str | None = Query(None, pattern=reports.ID_PATTERN),
    rt: Runtime = Depends(runtime),
) -> Response:
    async def act(s: AsyncSession, viewer: access.Viewer) -> dict[str, Any]:
        return await reports.answer_funnel(s, viewer.account, pipeline_id, period.resolve(viewer.account), viewer.scope)

    return await _answer(request, rt, act)


@router.get("/dashboard/api/deals", include_in_schema=False)
async def dashboard_deals(
    request: Request,
    rule: str | None = Query(None, max_length=64),
    manager_id: str | None = Query(None, pattern=reports.ID_PATTERN),
    rt: Runtime = Depends(runtime),
) -> Response:
    async def act(s: AsyncSession, viewer: access.Viewer) -> list[dict[str, Any]]:
        return await reports_service.deals(s, viewer.account, viewer.scope, reports.rule_or_422(rule), manager_id)

    return await _answer(request, rt, act)


@router.get("/dashboard/api/plan", include_in_schema=False)
async def dashboard_plan(
    request: Request, month: str | None = Query(None, pattern=MONTH_PATTERN), rt: Runtime = Depends(runtime)
) -> Response:
    async def act(s: AsyncSession, viewer: access.Viewer) -> dict[str, Any]:
        now = utcnow()
        chosen = month or plans_service.current_month(now, viewer.account.timezone)
        return await plans_service.pace(s, viewer.account, chosen, now, viewer.scope.managers)

    return await _answer(request, rt, act)


@router.get("/dashboard/api/abcxyz", include_in_schema=False)
async def dashboard_abcxyz(
    request: Request,
    period: reports.PeriodParams = Depends(),
    by: reports.ClientsBy | None = None,
    rt: Runtime = Depends(runtime),
) -> Response:
    async def act(s: AsyncSession, viewer: access.Viewer) -> dict[str, Any]:
        # The page shows the matrix and the movement; the client list stops at the largest 200.
        return await reports.answer_abcxyz(s, viewer.account, period.resolve(viewer.account), viewer.scope, by, 200)

    return await _answer(request, rt, act)


@router.get("/dashboard/api/payments", include_in_schema=False)
async def dashboard_payments(
    request: Request, day: IsoDay | None = Query(None, alias="date"), rt: Runtime = Depends(runtime)
) -> Response:
    async def act(s: AsyncSession, viewer: access.Viewer) -> dict[str, Any]:
        chosen = day or today(utcnow(), viewer.account.timezone)
        # The page lists at most 50 deals per manager and bucket; the counts and sums are of all.
        return await payments_report.payments(s, viewer.account, chosen, viewer.scope.managers, 50)

    return await _answer(request, rt, act)


__all__ = ["admin_router", "router"]
