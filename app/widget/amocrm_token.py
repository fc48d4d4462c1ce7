"""amoCRM's disposable widget token (`X-Auth-Token`), checked before anything is read or written.

amoCRM's `$authorizedAjax` (widget SDK) sends a fresh JWT with every request: HS256, signed with
the integration's secret key, living 30 minutes. Its claims (amoCRM developer docs, "one-time
tokens"): `iss` the account's address, `aud` the base address of the integration's redirect_uri,
`jti` a UUID, `iat`/`nbf`/`exp`, `account_id`, `subdomain`, `client_uuid`, `user_id`.

The token names its account itself, so the unverified claims only choose which secret to try;
nothing is trusted until the signature, audience and expiry hold for that account's secret and
the issuer is that account's own address. A jti is accepted once per account.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import jwt
from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.db import dialect_insert, utcnow
from app.security import CredentialBox

from .models import WidgetConfig, WidgetTokenUse
from .rejected import TokenRejected

# Clocks of amoCRM and of this server disagree a little; a token is not refused for seconds.
LEEWAY_SECONDS = 30
# amoCRM's tokens live 30 minutes; one claiming more is not one of theirs.
MAX_LIFETIME_SECONDS = 30 * 60 + LEEWAY_SECONDS
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


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


@dataclass(frozen=True)
class SigningKey:
    secret: str
    audience: str


def signing_key(account: Account, config: WidgetConfig | None, box: CredentialBox, public_url: str
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


async def _candidates(s: AsyncSession, claims: dict[str, Any]) -> list[Account]:
    account_id = claims.get("account_id")
    subdomain = claims.get("subdomain")
    if account_id is None and not subdomain:
        return []
    match = []
    if account_id is not None:
        match.append(Account.external_id == str(account_id))
    if subdomain:
        match.append(Account.subdomain == str(subdomain).lower())
    rows = await s.scalars(select(Account).where(Account.crm == "amocrm", or_(*match)).order_by(Account.id))
    # An account whose amoCRM id is known must carry that id in the token; one not yet
    # learned from the API is matched by subdomain (its base URL).
    return [a for a in rows if a.external_id is None or a.external_id == str(account_id)]


async def verify(s: AsyncSession, raw: str | None, box: CredentialBox, public_url: str) -> WidgetUser:
    """Checks the token and burns its jti in the caller's transaction (the caller commits)."""
    if not raw:
        raise TokenRejected("token_missing", "the X-Auth-Token header with amoCRM's widget token is required")
    try:
        header = jwt.get_unverified_header(raw)
        unverified = jwt.decode(raw, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise TokenRejected("token_invalid", "X-Auth-Token is not a JWT") from None
    if header.get("alg") != "HS256":
        raise TokenRejected("token_invalid", "the widget token must be signed with HS256")
    accounts = await _candidates(s, unverified)
    if not accounts:
        raise TokenRejected("token_invalid", "the token names no amoCRM account connected to crmwatch")
    configs = {c.account_id: c for c in await s.scalars(
        select(WidgetConfig).where(WidgetConfig.account_id.in_([a.id for a in accounts])))}
    unconfigured = 0
    for account in accounts:
        key = signing_key(account, configs.get(account.id), box, public_url)
        if key is None:
            unconfigured += 1
            continue
        try:
            claims = jwt.decode(raw, key.secret, algorithms=["HS256"], audience=key.audience, leeway=LEEWAY_SECONDS,
                                options={"require": ["exp", "iat", "jti", "aud", "iss"]})
        except jwt.InvalidSignatureError:
            continue  # another account's secret, or a forgery: try the next candidate
        except jwt.ExpiredSignatureError:
            raise TokenRejected("token_expired", "the widget token has expired") from None
        except jwt.InvalidAudienceError:
            raise TokenRejected("token_invalid", f"the token's aud is not {key.audience}") from None
        except jwt.PyJWTError as exc:
            raise TokenRejected("token_invalid", f"the widget token is malformed: {exc}") from None
        return await _accept(s, account, claims)
    if unconfigured == len(accounts):
        raise TokenRejected("widget_not_configured",
                            "the integration's secret key is not set: PUT /api/accounts/{id}/widget")
    raise TokenRejected("token_invalid", "the token's signature does not match the integration's secret key")


async def _accept(s: AsyncSession, account: Account, claims: dict[str, Any]) -> WidgetUser:
    if origin(str(claims["iss"])) != origin(account.base_url):
        raise TokenRejected("token_invalid", "the token was issued for another amoCRM address")
    if claims["exp"] - claims["iat"] > MAX_LIFETIME_SECONDS:
        raise TokenRejected("token_invalid", "the token lives longer than amoCRM's 30 minutes")
    user_id = claims.get("user_id")
    if user_id is None or not str(user_id).isdigit():
        raise TokenRejected("token_invalid", "the token carries no user_id")
    jti = str(claims["jti"])
    if not jti or len(jti) > 100:
        raise TokenRejected("token_invalid", "the token's jti is missing or too long")
    await _purge_expired(s)
    expires_at = datetime.fromtimestamp(int(claims["exp"]) + LEEWAY_SECONDS, UTC)
    stmt = dialect_insert(s, WidgetTokenUse).values(account_id=account.id, jti=jti, expires_at=expires_at)
    result = await s.execute(stmt.on_conflict_do_nothing(index_elements=["account_id", "jti"]))
    if result.rowcount != 1:
        raise TokenRejected("token_replayed", "this widget token was already used")
    return WidgetUser(account=account, user_id=str(user_id), jti=jti, is_admin=claims.get("is_admin") is True)


async def _purge_expired(s: AsyncSession) -> None:
    # A burned jti is only worth keeping while its token could still be accepted.
    global _last_purge
    now = time.monotonic()
    if now - _last_purge < _PURGE_EVERY_SECONDS:
        return
    _last_purge = now
    await s.execute(delete(WidgetTokenUse).where(WidgetTokenUse.expires_at < utcnow()))
