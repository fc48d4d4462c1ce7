"""amoCRM's disposable widget token (`X-Auth-Token`): what it claims and whether it holds.

amoCRM's `$authorizedAjax` (widget SDK) sends a fresh JWT with every request: HS256, signed with
the integration's secret key, living 30 minutes. Its claims (amoCRM developer docs, "one-time
tokens"): `iss` the account's address, `aud` the base address of the integration's redirect_uri,
`jti` a UUID, `iat`/`nbf`/`exp`, `account_id`, `subdomain`, `client_uuid`, `user_id`.

The unverified claims only say which account's secret to try (hint); nothing is trusted until
the signature, audience and expiry hold for that secret and the issuer is that account's own
address (verify). Accepting each jti once is the caller's (it needs storage).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import jwt

from integrations.base import CardAccountHint, CardKeyMismatch, CardRejected, CardUser
from integrations.http import origin

# Clocks of amoCRM and of this server disagree a little; a token is not refused for seconds.
LEEWAY_SECONDS = 30
# amoCRM's tokens live 30 minutes; one claiming more is not one of theirs.
MAX_LIFETIME_SECONDS = 30 * 60 + LEEWAY_SECONDS
_ACCOUNT_ID = re.compile(r"[0-9]{1,20}")
_SUBDOMAIN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_JTI = re.compile(r"[\x21-\x7e]{1,100}")


class AmoCrmWidgetToken:
    def hint(self, claim: str) -> CardAccountHint:
        credential = claim
        if not credential:
            raise CardRejected("token_missing", "the X-Auth-Token header with amoCRM's widget token is required")
        try:
            header = jwt.get_unverified_header(credential)
            claims = jwt.decode(credential, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise CardRejected("token_invalid", "X-Auth-Token is not a JWT") from None
        if header.get("alg") != "HS256":
            raise CardRejected("token_invalid", "the widget token must be signed with HS256")
        account_id, subdomain = claims.get("account_id"), claims.get("subdomain")
        external_id = str(account_id) if account_id is not None else None
        sub = str(subdomain).lower() if subdomain else None
        # Not yet verified, and looked up in the database: only the shapes amoCRM issues (a NUL
        # or any odd character goes no further than here).
        if (external_id is not None and not _ACCOUNT_ID.fullmatch(external_id)) or (
            sub is not None and not _SUBDOMAIN.fullmatch(sub)
        ):
            raise CardRejected("token_invalid", "the token's account_id or subdomain is not amoCRM's")
        return CardAccountHint(external_id=external_id, subdomain=sub)

    async def verify(
        self,
        credential: str,
        *,
        base_url: str,
        secret: str | None = None,
        audience: str | None = None,
        transport: Any = None,
        ask_admin: bool = False,
    ) -> CardUser:
        if not secret:
            raise CardRejected(
                "widget_not_configured", "the integration's secret key is not set: PUT /api/accounts/{id}/widget"
            )
        try:
            claims = jwt.decode(
                credential,
                secret,
                algorithms=["HS256"],
                audience=audience,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "jti", "aud", "iss"]},
            )
        except jwt.InvalidSignatureError:
            raise CardKeyMismatch() from None
        except jwt.ExpiredSignatureError:
            raise CardRejected("token_expired", "the widget token has expired") from None
        except jwt.InvalidAudienceError:
            raise CardRejected("token_invalid", f"the token's aud is not {audience}") from None
        except jwt.PyJWTError as exc:
            raise CardRejected("token_invalid", f"the widget token is malformed: {exc}") from None
        if origin(str(claims["iss"])) != origin(base_url):
            raise CardRejected("token_invalid", "the token was issued for another amoCRM address")
        if claims["exp"] - claims["iat"] > MAX_LIFETIME_SECONDS:
            raise CardRejected("token_invalid", "the token lives longer than amoCRM's 30 minutes")
        user_id = claims.get("user_id")
        if user_id is None or not _ACCOUNT_ID.fullmatch(str(user_id)):
            raise CardRejected("token_invalid", "the token carries no user_id")
        jti = str(claims["jti"])
        if not _JTI.fullmatch(jti):
            raise CardRejected("token_invalid", "the token's jti is missing or too long")
        # `is_admin`: amoCRM's own word that this user administers the account (in every token).
        return CardUser(
            id=str(user_id),
            jti=jti,
            is_admin=claims.get("is_admin") is True,
            expires_at=datetime.fromtimestamp(int(claims["exp"]) + LEEWAY_SECONDS, UTC),
        )
