"""amoCRM's disposable widget token (`X-Auth-Token`), checked before anything is read or written.

What the token claims and whether it holds is amoCRM's business (integrations/amocrm/widget_token.py,
behind integrations.base.CardAuth). Here: which connected accounts the token may come from, each
one's secret and audience, and burning the token's jti once per account.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.db import dialect_insert, utcnow
from app.security import CredentialBox
from integrations.base import CardAccountHint, CardKeyMismatch, CardUser
from integrations.http import origin
from integrations.registry import crm_adapter

from .models import WidgetConfig, WidgetTokenUse
from .rejected import TokenRejected

_PURGE_EVERY_SECONDS = 60.0
_last_purge = 0.0


@dataclass(frozen=True)
class WidgetUser:
    account: Account
    user_id: str
    jti: str
    # amoCRM's `is_admin` claim: the account's administrator (the dashboard shows them the team).
    is_admin: bool = False

    @property
    def actor(self) -> str:
        # The finding's history records who acted, as the CRM knows them (see FindingEvent.actor).
        return f"user:{self.user_id}"


@dataclass(frozen=True)
class SigningKey:
    secret: str
    audience: str


def signing_key(
    account: Account, config: WidgetConfig | None, box: CredentialBox, public_url: str
) -> SigningKey | None:
    """The secret and audience amoCRM uses for this account's widget tokens, or None if unknown.

    An explicitly configured secret wins; an OAuth account's client_secret is the integration's
    secret already. The audience is the configured one, else the origin of the OAuth redirect_uri
    (that is what amoCRM derives `aud` from), else crmwatch's own public origin.
    """
    secret: str | None = None
    audience = config.audience if config is not None and config.audience else None
    if config is not None and config.secret is not None:
        secret = box.open(config.secret).get("client_secret")
    creds = box.open(account.credentials) if account.auth_kind == "oauth" else {}
    if secret is None:
        secret = creds.get("client_secret")
    if audience is None and creds.get("redirect_uri"):
        audience = origin(creds["redirect_uri"])
    if not secret:
        return None
    return SigningKey(secret=secret, audience=audience or origin(public_url))


async def _candidates(s: AsyncSession, hint: CardAccountHint) -> list[Account]:
    if hint.external_id is None and not hint.subdomain:
        return []
    match = []
    if hint.external_id is not None:
        match.append(Account.external_id == hint.external_id)
    if hint.subdomain:
        match.append(Account.subdomain == hint.subdomain)
    rows = await s.scalars(select(Account).where(Account.crm == "amocrm", or_(*match)).order_by(Account.id))
    # An account whose amoCRM id is known must carry that id in the token; one not yet
    # learned from the API is matched by subdomain (its base URL).
    return [a for a in rows if a.external_id is None or a.external_id == hint.external_id]


async def verify(s: AsyncSession, raw: str | None, box: CredentialBox, public_url: str) -> WidgetUser:
    """Checks the token and burns its jti in the caller's transaction (the caller commits)."""
    card = crm_adapter("amocrm").card
    accounts = await _candidates(s, card.hint(raw or ""))
    if not accounts:
        raise TokenRejected("token_invalid", "the token names no amoCRM account connected to crmwatch")
    configs = {
        c.account_id: c
        for c in await s.scalars(select(WidgetConfig).where(WidgetConfig.account_id.in_([a.id for a in accounts])))
    }
    unconfigured = 0
    for account in accounts:
        key = signing_key(account, configs.get(account.id), box, public_url)
        if key is None:
            unconfigured += 1
            continue
        try:
            user = await card.verify(raw or "", base_url=account.base_url, secret=key.secret, audience=key.audience)
        except CardKeyMismatch:
            continue  # another account's secret, or a forgery: try the next candidate
        return await _accept(s, account, user)
    if unconfigured == len(accounts):
        raise TokenRejected(
            "widget_not_configured", "the integration's secret key is not set: PUT /api/accounts/{id}/widget"
        )
    raise CardKeyMismatch()


async def _accept(s: AsyncSession, account: Account, user: CardUser) -> WidgetUser:
    """Burns the token's jti: a token is accepted once per account."""
    assert user.jti is not None and user.expires_at is not None
    await _purge_expired(s)
    stmt = dialect_insert(s, WidgetTokenUse).values(account_id=account.id, jti=user.jti, expires_at=user.expires_at)
    result = await s.execute(stmt.on_conflict_do_nothing(index_elements=["account_id", "jti"]))
    if result.rowcount != 1:
        raise TokenRejected("token_replayed", "this widget token was already used")
    return WidgetUser(account=account, user_id=user.id, jti=user.jti, is_admin=user.is_admin)


async def _purge_expired(s: AsyncSession) -> None:
    # A burned jti is only worth keeping while its token could still be accepted.
    global _last_purge
    now = time.monotonic()
    if now - _last_purge < _PURGE_EVERY_SECONDS:
        return
    _last_purge = now
    await s.execute(delete(WidgetTokenUse).where(WidgetTokenUse.expires_at < utcnow()))
