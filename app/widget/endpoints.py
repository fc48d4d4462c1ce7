"""Routes of the card: the amoCRM widget's API, the Bitrix24 deal tab, and the admin setting."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response, status
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.deps import account_or_404, runtime
from app.findings.service import TransitionError
from app.runtime import Runtime
from app.security import load_secret, require_admin
from integrations.formdata import FormError, parse_bracket_form

from . import amocrm_token, bitrix24_portal, deal_tab, service, session_token
from .models import WidgetConfig
from .rejected import TokenRejected
from .schemas import CardFindings, CardSnoozeIn, WidgetConfigIn, WidgetConfigOut

admin_router = APIRouter(prefix="/api", tags=["widget"], dependencies=[Depends(require_admin)])
amocrm_router = APIRouter(prefix="/widget/amocrm", tags=["widget"])
bitrix24_router = APIRouter(prefix="/widget/bitrix24", tags=["widget"])

STATIC = Path(__file__).parent / "static"
Lang = Literal["ru", "en"]


# --- admin: the integration secret for accounts that do not use OAuth -------------------------

def _config_out(rt: Runtime, account: Account, config: WidgetConfig | None) -> WidgetConfigOut:
    key = amocrm_token.signing_key(account, config, rt.box, rt.settings.public_url)
    source = None
    if config is not None and config.secret is not None:
        source = "widget"
    elif key is not None:
        source = "oauth"
    audience = key.audience if key else (config.audience if config and config.audience else
                                         amocrm_token.origin(rt.settings.public_url))
    return WidgetConfigOut(account_id=account.id, secret_source=source, audience=audience)


@admin_router.get("/accounts/{account_id}/widget", response_model=WidgetConfigOut)
async def get_widget_config(account_id: int, rt: Runtime = Depends(runtime)) -> WidgetConfigOut:
    async with rt.reads() as s:
        account = await account_or_404(s, account_id)
        return _config_out(rt, account, await s.get(WidgetConfig, account_id))


@admin_router.put("/accounts/{account_id}/widget", response_model=WidgetConfigOut)
async def put_widget_config(account_id: int, body: WidgetConfigIn, rt: Runtime = Depends(runtime)
                            ) -> WidgetConfigOut:
    """Sets the amoCRM integration's secret key (never echoed back) and, if needed, the tokens' `aud`."""
    async with rt.sessions() as s, s.begin():
        account = await account_or_404(s, account_id)
        if account.crm != "amocrm":
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "the widget secret is for amoCRM accounts")
        config = await s.get(WidgetConfig, account_id) or WidgetConfig(account_id=account_id)
        if body.client_secret is not None:
            config.secret = rt.box.seal({"client_secret": body.client_secret.get_secret_value()})
        if body.audience is not None:
            config.audience = amocrm_token.origin(str(body.audience))
        s.add(config)
        await s.flush()
        return _config_out(rt, account, config)


# --- amoCRM: the widget in the lead card ------------------------------------------------------

async def _amocrm_origins(s: AsyncSession) -> set[str]:
    return {amocrm_token.origin(u) for u in await s.scalars(select(Account.base_url).where(Account.crm == "amocrm"))}


def _cors(origin: str | None, allowed: bool) -> dict[str, str]:
    if not origin or not allowed:
        return {"Vary": "Origin"}
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


@amocrm_router.options("/{path:path}", include_in_schema=False)
async def amocrm_preflight(request: Request, rt: Runtime = Depends(runtime)) -> Response:
    # A preflight carries no token, so it cannot name the account: any connected amoCRM
    # account's own address may ask; the real request is then held to its verified account.
    origin = request.headers.get("origin")
    async with rt.reads() as s:
        allowed = bool(origin) and origin.lower() in await _amocrm_origins(s)
    if not allowed:
        return Response(status_code=status.HTTP_403_FORBIDDEN, headers={"Vary": "Origin"})
    return Response(status_code=status.HTTP_204_NO_CONTENT, headers={
        **_cors(origin, True), "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": "X-Auth-Token, Content-Type, X-Requested-With",
        "Access-Control-Max-Age": "600"})


async def amocrm_call(request: Request, rt: Runtime, token: str | None,
                       act: Callable[[AsyncSession, amocrm_token.WidgetUser], Awaitable[Any]]) -> JSONResponse:
    """One call from amoCRM's page, authenticated by its disposable token (the card's routes and the
    dashboard's session exchange use it)."""
    origin = request.headers.get("origin")
    try:
        async with rt.sessions() as s, s.begin():
            user = await amocrm_token.verify(s, token, rt.box, rt.settings.public_url)
            own_origin = amocrm_token.origin(user.account.base_url)
            if origin and origin.lower() != own_origin:
                raise TokenRejected("token_invalid", "the request comes from another account's page")
            body = await act(s, user)
        return JSONResponse(body, headers=_cors(origin, bool(origin)))
    except TokenRejected as exc:
        async with rt.reads() as s:
            known = bool(origin) and origin.lower() in await _amocrm_origins(s)
        # Known pages get to read why (so the widget can say "сессия истекла"); others learn nothing.
        return JSONResponse({"detail": exc.detail, "code": exc.code}, status_code=status.HTTP_401_UNAUTHORIZED,
                            headers=_cors(origin, known))
    except service.NotFound as exc:
        return JSONResponse({"detail": str(exc), "code": "not_found"}, status_code=404, headers=_cors(origin, True))
    except TransitionError as exc:
        return JSONResponse({"detail": str(exc), "code": "conflict"}, status_code=409, headers=_cors(origin, True))


@amocrm_router.get("/findings", response_model=CardFindings)
async def amocrm_findings(request: Request, lead_id: str = Query(pattern=r"^\d{1,20}$"), lang: Lang | None = None,
                          x_auth_token: str | None = Header(None), rt: Runtime = Depends(runtime)) -> JSONResponse:
    """The opened lead's open findings, for the widget's panel (authenticated by amoCRM's X-Auth-Token)."""
    async def act(s: AsyncSession, user: amocrm_token.WidgetUser) -> dict[str, Any]:
        chosen = lang or user.account.language
        items = await service.card_findings(s, user.account, lead_id, rt.settings.public_url, chosen)
        return CardFindings(deal_id=lead_id, lang=chosen, items=items).model_dump(mode="json")
    return await amocrm_call(request, rt, x_auth_token, act)


@amocrm_router.post("/findings/{finding_id}/ack")
async def amocrm_ack(request: Request, finding_id: int, x_auth_token: str | None = Header(None),
                     rt: Runtime = Depends(runtime)) -> JSONResponse:
    async def act(s: AsyncSession, user: amocrm_token.WidgetUser) -> dict[str, Any]:
        f = await service.acknowledge(s, user.account, finding_id, user.actor)
        return {"id": f.id, "status": f.status, "by": user.actor}
    return await amocrm_call(request, rt, x_auth_token, act)


@amocrm_router.post("/findings/{finding_id}/snooze")
async def amocrm_snooze(request: Request, finding_id: int, body: CardSnoozeIn, x_auth_token: str | None = Header(None),
                        rt: Runtime = Depends(runtime)) -> JSONResponse:
    async def act(s: AsyncSession, user: amocrm_token.WidgetUser) -> dict[str, Any]:
        f = await service.snooze(s, user.account, finding_id, body.preset, user.actor)
        return {"id": f.id, "status": f.status, "until": f.snoozed_until.isoformat() if f.snoozed_until else None,
                "by": user.actor}
    return await amocrm_call(request, rt, x_auth_token, act)


# --- Bitrix24: the CRM_DEAL_DETAIL_TAB placement ----------------------------------------------

SESSION_MAX = timedelta(hours=1)
SESSION_MIN = timedelta(minutes=5)


def _page_lang(value: str | None, account: Account | None) -> str:
    if value in ("ru", "en"):
        return value
    return account.language if account is not None and account.language in ("ru", "en") else "ru"


@bitrix24_router.post("/deal-tab", response_class=HTMLResponse)
async def bitrix24_deal_tab(request: Request, rt: Runtime = Depends(runtime)) -> HTMLResponse:
    """The deal tab Bitrix24 opens (placement.bind at install); verified with the portal on every load."""
    # Bitrix24 puts DOMAIN/PROTOCOL/LANG/APP_SID in the query string and the rest in the form.
    try:
        form = parse_bracket_form(await request.body()) if request.headers.get("content-length") != "0" else {}
    except FormError:
        form = {}
    field = {k: v for k, v in {**request.query_params, **form}.items() if isinstance(v, str)}
    lang = _page_lang(field.get("LANG"), None)
    auth_id, member_id = field.get("AUTH_ID", ""), field.get("member_id", "")
    try:
        deal_id = str(json.loads(field.get("PLACEMENT_OPTIONS") or "{}").get("ID") or "")
    except (ValueError, AttributeError):
        deal_id = ""
    if not auth_id or not member_id or not deal_id.isdigit():
        return deal_tab.refusal(lang, "bad_request", status.HTTP_400_BAD_REQUEST)
    if field.get("PLACEMENT", "CRM_DEAL_DETAIL_TAB") != "CRM_DEAL_DETAIL_TAB":
        return deal_tab.refusal(lang, "bad_request", status.HTTP_400_BAD_REQUEST)
    async with rt.reads() as s:
        account = await s.scalar(select(Account).where(Account.crm == "bitrix24", Account.external_id == member_id))
    if account is None:
        return deal_tab.refusal(lang, "not_installed", status.HTTP_403_FORBIDDEN)
    lang = _page_lang(field.get("LANG"), account)
    try:
        user = await bitrix24_portal.current_user(account.base_url, auth_id, transport=rt.http_transport)
    except bitrix24_portal.PortalRefused:
        return deal_tab.refusal(lang, "forged", status.HTTP_403_FORBIDDEN, account.base_url)
    except bitrix24_portal.PortalUnavailable:
        return deal_tab.refusal(lang, "portal_down", status.HTTP_503_SERVICE_UNAVAILABLE, account.base_url)
    try:
        # The page lives as long as Bitrix24's own AUTH_ID (an hour), within sane bounds.
        lifetime = min(SESSION_MAX, max(SESSION_MIN, timedelta(seconds=int(field.get("AUTH_EXPIRES") or 3600))))
    except ValueError:
        lifetime = SESSION_MAX
    token = session_token.issue(load_secret(rt.settings), session_token.CardSession(
        account_id=account.id, deal_id=deal_id, user_id=user.id, crm="bitrix24"), lifetime)
    return deal_tab.page(lang, token, deal_id, user.name, account.base_url)


@bitrix24_router.get("/{name}.js", include_in_schema=False)
async def bitrix24_deal_tab_script(name: Literal["card-core", "deal-tab"]) -> Response:
    return Response((STATIC / f"{name}.js").read_text(encoding="utf-8"), media_type="text/javascript",
                    headers={"Cache-Control": "no-cache"})


class _CardError(Exception):
    def __init__(self, status_code: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status_code, self.code, self.detail = status_code, code, detail


def _session(request: Request, rt: Runtime) -> session_token.CardSession:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    try:
        return session_token.check(load_secret(rt.settings), token if scheme.lower() == "bearer" else None)
    except TokenRejected as exc:
        raise _CardError(status.HTTP_401_UNAUTHORIZED, exc.code, exc.detail) from None


async def _bitrix24_call(request: Request, rt: Runtime,
                         act: Callable[[AsyncSession, Account, session_token.CardSession], Awaitable[Any]]) -> Any:
    try:
        card = _session(request, rt)
        async with rt.sessions() as s, s.begin():
            account = await s.get(Account, card.account_id)
            if account is None or account.crm != card.crm:
                raise _CardError(status.HTTP_401_UNAUTHORIZED, "token_invalid", "the portal is no longer connected")
            return await act(s, account, card)
    except _CardError as exc:
        return JSONResponse({"detail": exc.detail, "code": exc.code}, status_code=exc.status_code)
    except service.NotFound as exc:
        return JSONResponse({"detail": str(exc), "code": "not_found"}, status_code=status.HTTP_404_NOT_FOUND)
    except TransitionError as exc:
        return JSONResponse({"detail": str(exc), "code": "conflict"}, status_code=status.HTTP_409_CONFLICT)


@bitrix24_router.get("/findings", response_model=CardFindings)
async def bitrix24_findings(request: Request, lang: Lang | None = None, rt: Runtime = Depends(runtime)
                            ) -> CardFindings:
    """The tab's deal findings; the deal comes from the page's session token, not from the caller."""
    async def act(s: AsyncSession, account: Account, card: session_token.CardSession) -> CardFindings:
        chosen = lang or account.language
        items = await service.card_findings(s, account, card.deal_id, rt.settings.public_url, chosen)
        return CardFindings(deal_id=card.deal_id, lang=chosen, items=items)
    return await _bitrix24_call(request, rt, act)


async def _on_this_deal(s: AsyncSession, account: Account, card: session_token.CardSession, finding_id: int) -> None:
    from app.findings.models import Finding

    finding = await s.get(Finding, finding_id)
    # The page may act on its own deal's findings only.
    if finding is None or finding.account_id != account.id or finding.deal_id != card.deal_id:
        raise service.NotFound(f"finding {finding_id} not found")


@bitrix24_router.post("/findings/{finding_id}/ack")
async def bitrix24_ack(request: Request, finding_id: int, rt: Runtime = Depends(runtime)) -> dict[str, Any]:
    async def act(s: AsyncSession, account: Account, card: session_token.CardSession) -> dict[str, Any]:
        await _on_this_deal(s, account, card, finding_id)
        f = await service.acknowledge(s, account, finding_id, card.actor)
        return {"id": f.id, "status": f.status, "by": card.actor}
    return await _bitrix24_call(request, rt, act)


@bitrix24_router.post("/findings/{finding_id}/snooze")
async def bitrix24_snooze(request: Request, finding_id: int, body: CardSnoozeIn, rt: Runtime = Depends(runtime)
                          ) -> dict[str, Any]:
    async def act(s: AsyncSession, account: Account, card: session_token.CardSession) -> dict[str, Any]:
        await _on_this_deal(s, account, card, finding_id)
        f = await service.snooze(s, account, finding_id, body.preset, card.actor)
        return {"id": f.id, "status": f.status, "until": f.snoozed_until.isoformat() if f.snoozed_until else None,
                "by": card.actor}
    return await _bitrix24_call(request, rt, act)
