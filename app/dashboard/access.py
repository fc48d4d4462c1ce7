"""Who is looking at the dashboard, and what they may see.

Three ways in, none of which needs the admin token:
- a read-only link (`/dashboard/l/<secret>`): the team or one manager, until it expires or is revoked;
- amoCRM: the widget's disposable token (verified by app/widget/amocrm_token.py) is exchanged for a
  dashboard session;
- Bitrix24: the app's page, verified like the deal tab (member_id, then `user.current` at the
  portal's stored address), then a dashboard session.

A dashboard session is the card's own short-lived token (app/widget/session_token.py) with a
`deal` claim of "dashboard:team" or "dashboard:self" instead of a deal id: a card token never
opens the dashboard, and a dashboard session names no deal a card call could act on.

Scope: the account's supervisors (`supervisor_user_id` in the rules document) and the CRM's admins
see everyone; a supervisor named in `team_supervisors` sees their team and themselves; anyone
else sees only their own row and deals.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.reports.service import TEAM, Scope
from app.rules import config as rules_config
from app.widget import session_token
from app.widget.rejected import TokenRejected

from .models import DashboardLink

TEAM_CLAIM = "dashboard:team"
SELF_CLAIM = "dashboard:self"
SESSION_LIFETIME = timedelta(hours=1)


@dataclass(frozen=True)
class Viewer:
    account: Account
    scope: Scope
    who: str  # "link:<id>" or "user:<crm user id>", for the page header


def new_link_secret() -> str:
    return secrets.token_urlsafe(32)


def link_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def scope_of_user(s: AsyncSession, account: Account, user_id: str, crm_admin: bool) -> Scope:
    if crm_admin:
        return TEAM
    doc = await rules_config.load(s, account.id)
    if doc.supervisor_user_id is not None and doc.supervisor_user_id == user_id:
        return TEAM
    team = sorted(m for m, sup in doc.team_supervisors.items() if sup == user_id)
    if team:
        return Scope(tuple(sorted({*team, user_id})))
    return Scope((user_id,))


def issue_session(server_secret: str, account: Account, user_id: str, team_view: bool) -> str:
    return session_token.issue(
        server_secret,
        session_token.CardSession(
            account_id=account.id, deal_id=TEAM_CLAIM if team_view else SELF_CLAIM, user_id=user_id, crm=account.crm
        ),
        SESSION_LIFETIME,
    )


async def viewer_from_session(s: AsyncSession, server_secret: str, token: str) -> Viewer:
    card = session_token.check(server_secret, token)
    if card.deal_id not in (TEAM_CLAIM, SELF_CLAIM):
        raise TokenRejected("token_invalid", "this token is for a deal card, not the dashboard")
    account = await s.get(Account, card.account_id)
    if account is None or account.crm != card.crm:
        raise TokenRejected("token_invalid", "the account is no longer connected")
    # A session without the admin's view is re-scoped on every call, so a change of supervisors in
    # the rules document takes effect at once.
    scope = TEAM if card.deal_id == TEAM_CLAIM else await scope_of_user(s, account, card.user_id, False)
    return Viewer(account=account, scope=scope, who=f"user:{card.user_id}")


class LinkRefused(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code  # unknown | expired | revoked


async def viewer_from_link(s: AsyncSession, secret: str, now: datetime) -> Viewer:
    if not secret or len(secret) > 100:
        raise LinkRefused("unknown")
    link = await s.scalar(select(DashboardLink).where(DashboardLink.token_hash == link_hash(secret)))
    # Compared again in constant time: the lookup by hash already did the work, this is belt and braces.
    if link is None or not hmac.compare_digest(link.token_hash, link_hash(secret)):
        raise LinkRefused("unknown")
    if link.revoked_at is not None:
        raise LinkRefused("revoked")
    if link.expires_at <= now:
        raise LinkRefused("expired")
    account = await s.get(Account, link.account_id)
    if account is None:
        raise LinkRefused("unknown")
    scope = Scope((link.manager_id,)) if link.manager_id else TEAM
    return Viewer(account=account, scope=scope, who=f"link:{link.id}")
