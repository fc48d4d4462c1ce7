"""The short-lived token crmwatch signs itself for a page it served (the Bitrix24 deal tab).

The placement POST is verified with the portal once; the page's own calls afterwards carry this
token, bound to one account, one deal and one user, so they need no further round trip.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import timedelta

import jwt

from app.db import utcnow
from app.security import derived_key

from .rejected import TokenRejected

ISSUER = "crmwatch"
AUDIENCE = "crmwatch:card"


@dataclass(frozen=True)
class CardSession:
    account_id: int
    deal_id: str
    user_id: str
    crm: str

    @property
    def actor(self) -> str:
        return f"user:{self.user_id}"


def _key(server_secret: str) -> str:
    # Its own key, derived from the server secret, so a page token can never open credentials.
    return base64.urlsafe_b64encode(derived_key(server_secret, b"card-session-v1")).decode()


def issue(server_secret: str, session: CardSession, lifetime: timedelta) -> str:
    now = utcnow()
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + lifetime,
        "sub": str(session.account_id),
        "deal": session.deal_id,
        "uid": session.user_id,
        "crm": session.crm,
    }
    return jwt.encode(claims, _key(server_secret), algorithm="HS256")


def check(server_secret: str, token: str | None) -> CardSession:
    if not token:
        raise TokenRejected("token_missing", "the page's session token is missing")
    try:
        claims = jwt.decode(
            token,
            _key(server_secret),
            algorithms=["HS256"],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "aud", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenRejected("token_expired", "the card session has expired: reopen the tab") from None
    except jwt.PyJWTError:
        raise TokenRejected("token_invalid", "the card session token is not valid") from None
    return CardSession(
        account_id=int(claims["sub"]), deal_id=str(claims["deal"]), user_id=str(claims["uid"]), crm=str(claims["crm"])
    )
