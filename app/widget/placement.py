"""A Bitrix24 placement page's sign-in, shared by the deal tab and the dashboard's app page.

Bitrix24 opens both with a form POST (DOMAIN/PROTOCOL/LANG/APP_SID in the query string, the rest in
the form). `member_id` picks the installed portal; the portal then confirms AUTH_ID itself
(integrations/bitrix24/placement.py, behind integrations.base.CardAuth) at the address stored at
install, never at the DOMAIN the form claims.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request, status
from sqlalchemy import select

from app.accounts.models import Account
from app.runtime import Runtime
from integrations.base import CardRejected, CardUnavailable, CardUser
from integrations.formdata import FormError, parse_bracket_form
from integrations.registry import crm_adapter


async def fields(request: Request) -> dict[str, str]:
    """The placement's fields, query string and form together; a broken form counts as empty."""
    try:
        form = parse_bracket_form(await request.body()) if request.headers.get("content-length") != "0" else {}
    except FormError:
        form = {}
    return {k: v for k, v in {**request.query_params, **form}.items() if isinstance(v, str)}


def page_lang(value: str | None, account: Account | None = None) -> str:
    if value in ("ru", "en"):
        return value
    return account.language if account is not None and account.language in ("ru", "en") else "ru"


@dataclass(frozen=True)
class SignedIn:
    account: Account
    user: CardUser
    lang: str


class Refused(Exception):
    """Why the page is not shown: `reason` names the refusal's words (DEAL_TAB_REFUSALS and the
    dashboard's), `portal` is the verified portal's address once it is known (it may frame the refusal)."""

    def __init__(self, lang: str, reason: str, status_code: int, portal: str | None = None) -> None:
        super().__init__(reason)
        self.lang, self.reason, self.status_code, self.portal = lang, reason, status_code, portal


async def sign_in(rt: Runtime, field: dict[str, str], *, ask_admin: bool = False) -> SignedIn:
    """member_id → the installed portal → the portal confirms AUTH_ID; raises Refused."""
    lang = page_lang(field.get("LANG"))
    auth_id, member_id = field.get("AUTH_ID", ""), field.get("member_id", "")
    if not auth_id or not member_id:
        raise Refused(lang, "bad_request", status.HTTP_400_BAD_REQUEST)
    card = crm_adapter("bitrix24").card
    async with rt.reads() as s:
        hint = card.hint(member_id)
        account = await s.scalar(
            select(Account).where(Account.crm == "bitrix24", Account.external_id == hint.external_id)
        )
    if account is None:
        raise Refused(lang, "not_installed", status.HTTP_403_FORBIDDEN)
    lang = page_lang(field.get("LANG"), account)
    try:
        user = await card.verify(auth_id, base_url=account.base_url, transport=rt.http_transport, ask_admin=ask_admin)
    except CardRejected:
        raise Refused(lang, "forged", status.HTTP_403_FORBIDDEN, account.base_url) from None
    except CardUnavailable:
        raise Refused(lang, "portal_down", status.HTTP_503_SERVICE_UNAVAILABLE, account.base_url) from None
    return SignedIn(account=account, user=user, lang=lang)
