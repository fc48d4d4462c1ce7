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
from app.deps import AccountId, RowId, account_or_404, runtime
from app.findings.models import Finding
from app.findings.service import TransitionError
from app.runtime import Runtime
from app.security import load_secret, require_admin
from integrations.http import origin as origin_of

from . import amocrm_token, deal_tab, placement, service, session_token
from .models import WidgetConfig
from .rejected import TokenRejected
from .schemas import CardFindings, CardSnoozeIn, WidgetConfigIn, WidgetConfigOut

admin_router = APIRouter(prefix="/api", tags=["widget"], dependencies=[Depends(require_admin)])
# What every card call may answer besides its result (see _card_error); the app adds 400/404/422.
CARD_REFUSALS: dict[int | str, dict[str, Any]] = {401: {}, 404: {}, 409: {}}
amocrm_router = APIRouter(prefix="/widget/amocrm", tags=["widget"], responses=CARD_REFUSALS)
bitrix24_router = APIRouter(prefix="/widget/bitrix24", tags=["widget"], responses=CARD_REFUSALS)
PAGE = {"content": {"text/html": {"schema": {"type": "string"}}}}

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
    audience = (
        key.audience if key else (config.audience if config and config.audience else origin_of(rt.settings.public_url))
    )
    return WidgetConfigOut(account_id=account.id, secret_source=source, audience=audience)


@admin_router.get("/accounts/{account_id}/widget", response_model=WidgetConfigOut)
async def get_widget_config(account_id: AccountId, rt: Runtime = Depends(runtime)) -> WidgetConfigOut:
    async with rt.reads() as s:
        account = await account_or_404(s, account_id)
        return _config_out(rt, account, await s.get(WidgetConfig, account_id))


@admin_router.put("/accounts/{account_id}/widget", response_model=WidgetConfigOut)
async def put_widget_config(
    account_id: AccountId, body: WidgetConfigIn, rt: Runtime = Depends(runtime)
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
            config.audience = origin_of(str(body.audience))
        s.add(config)
        await s.flush()
        return _config_out(rt, account, config)


# --- amoCRM: the widget in the lead card ------------------------------------------------------


async def _amocrm_origins(s: AsyncSession) -> set[str]:
    return {origin_of(u) for u in await s.scalars(select(Account.base_url).where(Account.crm == "amocrm"))}


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
    return Response(
        status_code=status.HTTP_204_NO_CONTENT,
        headers={
            **_cors(origin, True),
            "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
            "Access-Control-Allow-Headers": "X-Auth-Token, Content-Type, X-Requested-With",
            "Access-Control-Max-Age": "600",
        },
    )


# --- the card's one error mapping, for every CRM's card ----------------------------------------


class _CardError(Exception):
    def __init__(self, status_code: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status_code, self.code, self.detail = status_code, code, detail


CARD_ERRORS = (TokenRejected, _CardError, service.NotFound, TransitionError)


def _card_error(exc: Exception) -> tuple[int, dict[str, str]]:
    """(status, body) of a card call that failed: the body's `code` tells the card which message to show."""
    if isinstance(exc, TokenRejected):
        return status.HTTP_401_UNAUTHORIZED, {"detail": exc.detail, "code": exc.code}
    if isinstance(exc, _CardError):
        return exc.status_code, {"detail": exc.detail, "code": exc.code}
    if isinstance(exc, service.NotFound):
        return status.HTTP_404_NOT_FOUND, {"detail": str(exc), "code": "not_found"}
    return status.HTTP_409_CONFLICT, {"detail": str(exc), "code": "conflict"}


async def amocrm_call(
    request: Request,
    rt: Runtime,
    token: str | None,
    act: Callable[[AsyncSession, amocrm_token.WidgetUser], Awaitable[Any]],
) -> JSONResponse:
    origin = request.headers.get("origin")
    try:
        async with rt.sessions() as s, s.begin():
            user = await amocrm_token.verify(s, token, rt.box, rt.settings.public_url)
            own_origin = origin_of(user.account.base_url)
            if origin and origin.lower() != own_origin:
                raise TokenRejected("token_invalid", "the request comes from another account's page")
            body = await act(s, user)
        return JSONResponse(body, headers=_cors(origin, bool(origin)))
    except CARD_ERRORS as exc:
        allowed = True
        if isinstance(exc, TokenRejected):
            # Known pages get to read why (so the widget can say "сессия истекла"); others learn nothing.
            async with rt.reads() as s:
                allowed = bool(origin) and origin.lower() in await _amocrm_origins(s)
        code, body = _card_error(exc)
        return JSONResponse(body, status_code=code, headers=_cors(origin, allowed))


@amocrm_router.get("/findings", response_model=CardFindings)
async def amocrm_findings(
    request: Request,
    lead_id: str = Query(pattern=r"^\d{1,20}$"),
    lang: Lang | None = None,
    x_auth_token: str | None = Header(None),
    rt: Runtime = Depends(runtime),
) -> JSONResponse:
    """The opened lead's open findings, for the widget's panel (authenticated by amoCRM's X-Auth-Token)."""

    async def act(s: AsyncSession, user: amocrm_token.WidgetUser) -> dict[str, Any]:
        chosen = lang or user.account.language
        view = await service.card(s, user.account, lead_id, rt.settings.public_url, chosen)
        return view.model_dump(mode="json")

    return await amocrm_call(request, rt, x_auth_token, act)


async def _amocrm_change(
    request: Request,
    rt: Runtime,
    token: str | None,
    lang: str | None,
    change: Callable[[AsyncSession, amocrm_token.WidgetUser], Awaitable[Any]],
) -> JSONResponse:
    """A change the manager makes from the widget, answered with the finding's new state."""

    async def act(s: AsyncSession, user: amocrm_token.WidgetUser) -> dict[str, Any]:
        f = await change(s, user)
        return service.action_answer(f, user.actor, user.account.timezone, lang or user.account.language)

    return await amocrm_call(request, rt, token, act)


@amocrm_router.post("/findings/{finding_id}/ack")
async def amocrm_ack(
    request: Request,
    finding_id: RowId,
    lang: Lang | None = None,
    x_auth_token: str | None = Header(None),
    rt: Runtime = Depends(runtime),
) -> JSONResponse:
    return await _amocrm_change(
        request, rt, x_auth_token, lang, lambda s, user: service.acknowledge(s, user.account, finding_id, user.actor)
    )


@amocrm_router.post("/findings/{finding_id}/snooze")
async def amocrm_snooze(
    request: Request,
    finding_id: RowId,
    body: CardSnoozeIn,
    lang: Lang | None = None,
    x_auth_token: str | None = Header(None),
    rt: Runtime = Depends(runtime),
) -> JSONResponse:
    return await _amocrm_change(
        request,
        rt,
        x_auth_token,
        lang,
        lambda s, user: service.snooze(s, user.account, finding_id, body.preset, user.actor),
    )


@amocrm_router.post("/findings/{finding_id}/reopen")
async def amocrm_reopen(
    request: Request,
    finding_id: RowId,
    lang: Lang | None = None,
    x_auth_token: str | None = Header(None),
    rt: Runtime = Depends(runtime),
) -> JSONResponse:
    """Undoes the card's Acknowledge or Snooze: the finding is open again."""
    return await _amocrm_change(
        request, rt, x_auth_token, lang, lambda s, user: service.reopen(s, user.account, finding_id, user.actor)
    )


# --- Bitrix24: the CRM_DEAL_DETAIL_TAB placement ----------------------------------------------

SESSION_MAX = timedelta(hours=1)
SESSION_MIN = timedelta(minutes=5)


@bitrix24_router.post(
    "/deal-tab",
    response_class=HTMLResponse,
    responses={
        400: {**PAGE, "description": "Not a deal tab's placement form (a page that says so)"},
        403: {**PAGE, "description": "Not an installed portal, or the portal refused AUTH_ID (a page that says so)"},
        503: {**PAGE, "description": "The portal did not answer (a page that says so)"},
    },
)
async def bitrix24_deal_tab(request: Request, rt: Runtime = Depends(runtime)) -> HTMLResponse:
    """The deal tab Bitrix24 opens (placement.bind at install); verified with the portal on every load."""
    field = await placement.fields(request)
    try:
        deal_id = str(json.loads(field.get("PLACEMENT_OPTIONS") or "{}").get("ID") or "")
    except (ValueError, AttributeError):
        deal_id = ""
    if (
        not (deal_id.isascii() and deal_id.isdigit() and len(deal_id) <= 20)
        or field.get("PLACEMENT", "CRM_DEAL_DETAIL_TAB") != "CRM_DEAL_DETAIL_TAB"
    ):
        return deal_tab.refusal(placement.page_lang(field.get("LANG")), "bad_request", status.HTTP_400_BAD_REQUEST)
    try:
        signed = await placement.sign_in(rt, field)
    except placement.Refused as exc:
        return deal_tab.refusal(exc.lang, exc.reason, exc.status_code, exc.portal)
    try:
        # The page lives as long as Bitrix24's own AUTH_ID (an hour), within sane bounds.
        lifetime = min(SESSION_MAX, max(SESSION_MIN, timedelta(seconds=int(field.get("AUTH_EXPIRES") or 3600))))
    except ValueError:
        lifetime = SESSION_MAX
    token = session_token.issue(
        load_secret(rt.settings),
        session_token.CardSession(
            account_id=signed.account.id, deal_id=deal_id, user_id=signed.user.id, crm="bitrix24"
        ),
        lifetime,
    )
    return deal_tab.page(signed.lang, token, deal_id, signed.user.name, signed.account.base_url)


@bitrix24_router.get("/{name}.js", include_in_schema=False)
async def bitrix24_deal_tab_script(name: Literal["card-core", "deal-tab"]) -> Response:
    return Response(
        (STATIC / f"{name}.js").read_text(encoding="utf-8"),
        media_type="text/javascript",
        headers={"Cache-Control": "no-cache"},
    )


def _session(request: Request, rt: Runtime) -> session_token.CardSession:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    try:
        return session_token.check(load_secret(rt.settings), token if scheme.lower() == "bearer" else None)
    except TokenRejected as exc:
        raise _CardError(status.HTTP_401_UNAUTHORIZED, exc.code, exc.detail) from None


async def _bitrix24_call(
    request: Request, rt: Runtime, act: Callable[[AsyncSession, Account, session_token.CardSession], Awaitable[Any]]
) -> Any:
    try:
        card = _session(request, rt)
        async with rt.sessions() as s, s.begin():
            account = await s.get(Account, card.account_id)
            if account is None or account.crm != card.crm:
                raise _CardError(status.HTTP_401_UNAUTHORIZED, "token_invalid", "the portal is no longer connected")
            return await act(s, account, card)
    except CARD_ERRORS as exc:
        code, body = _card_error(exc)
        return JSONResponse(body, status_code=code)


@bitrix24_router.get("/findings", response_model=CardFindings)
async def bitrix24_findings(request: Request, lang: Lang | None = None, rt: Runtime = Depends(runtime)) -> CardFindings:
    """The tab's deal findings; the deal comes from the page's session token, not from the caller."""

    async def act(s: AsyncSession, account: Account, card: session_token.CardSession) -> CardFindings:
        return await service.card(s, account, card.deal_id, rt.settings.public_url, lang or account.language)

    return await _bitrix24_call(request, rt, act)


async def _on_this_deal(s: AsyncSession, account: Account, card: session_token.CardSession, finding_id: int) -> None:
    finding = await s.get(Finding, finding_id)
    # The page may act on its own deal's findings only.
    if finding is None or finding.account_id != account.id or finding.deal_id != card.deal_id:
        raise service.NotFound(f"finding {finding_id} not found")


async def _bitrix24_change(
    request: Request,
    rt: Runtime,
    finding_id: int,
    lang: str | None,
    change: Callable[[AsyncSession, Account, session_token.CardSession], Awaitable[Any]],
) -> dict[str, Any]:
    """A change the manager makes from the tab, on its own deal's finding only."""

    async def act(s: AsyncSession, account: Account, card: session_token.CardSession) -> dict[str, Any]:
        await _on_this_deal(s, account, card, finding_id)
        f = await change(s, account, card)
        return service.action_answer(f, card.actor, account.timezone, lang or account.language)

    return await _bitrix24_call(request, rt, act)


@bitrix24_router.post("/findings/{finding_id}/ack")
async def bitrix24_ack(
    request: Request, finding_id: RowId, lang: Lang | None = None, rt: Runtime = Depends(runtime)
) -> dict[str, Any]:
    return await _bitrix24_change(
        request, rt, finding_id, lang, lambda s, account, card: service.acknowledge(s, account, finding_id, card.actor)
    )


@bitrix24_router.post("/findings/{finding_id}/snooze")
async def bitrix24_snooze(
    request: Request, finding_id: RowId, body: CardSnoozeIn, lang: Lang | None = None, rt: Runtime = Depends(runtime)
) -> dict[str, Any]:
    return await _bitrix24_change(
        request,
        rt,
        finding_id,
        lang,
        lambda s, account, card: service.snooze(s, account, finding_id, body.preset, card.actor),
    )


@bitrix24_router.post("/findings/{finding_id}/reopen")
async def bitrix24_reopen(
    request: Request, finding_id: RowId, lang: Lang | None = None, rt: Runtime = Depends(runtime)
) -> dict[str, Any]:
    """Undoes the tab's Acknowledge or Snooze: the finding is open again."""
    return await _bitrix24_change(
        request, rt, finding_id, lang, lambda s, account, card: service.reopen(s, account, finding_id, card.actor)
    )


# The one router the app includes: the admin setting and both CRMs' cards.
router = APIRouter()
router.include_router(admin_router)
router.include_router(amocrm_router)
router.include_router(bitrix24_router)
