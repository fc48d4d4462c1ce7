"""Accounts: create, change, delete; credentials sealed before they touch the database."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import column, func, select, table, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow
from app.runtime import Runtime
from app.security import new_hook_key, webhook_secret_hash

from .models import Account
from .schemas import AccountCreate, AccountOut, AccountPatch, InboxLagOut, OAuthIn, SyncOut

log = logging.getLogger(__name__)


class RulesHook:
    """How a rules document given with a new account is checked and stored. The rules package
    sets these when imported (it builds on accounts, so accounts cannot import it)."""

    validate: Callable[[dict[str, Any]], Any] | None = None
    save: Callable[[AsyncSession, int, Any], Awaitable[None]] | None = None


def validated_rules(data: AccountCreate) -> Any:
    """The new account's rules document, validated (pydantic's ValidationError when it is not)."""
    if data.rules is None:
        return None
    if RulesHook.validate is None:
        raise RuntimeError("the rules package is not loaded")
    return RulesHook.validate(data.rules)


async def _credentials(
    rt: Runtime, crm: str, base_url: str, access_token: Any, oauth: OAuthIn | None
) -> tuple[str, dict[str, Any]]:
    if access_token is not None:
        return "token", {"access_token": access_token.get_secret_value()}
    assert oauth is not None
    creds: dict[str, Any] = {
        "client_id": oauth.client_id,
        "client_secret": oauth.client_secret.get_secret_value(),
        "redirect_uri": oauth.redirect_uri,
    }
    if oauth.code is not None:
        # Codes live 20 minutes and work once: exchange now, while the operator is watching.
        pair = await rt.crm_adapter(crm).oauth_exchange(
            base_url,
            client_id=oauth.client_id,
            client_secret=creds["client_secret"],
            redirect_uri=oauth.redirect_uri,
            code=oauth.code.get_secret_value(),
            transport=rt.http_transport,
        )
        creds |= {
            "access_token": pair.access_token,
            "refresh_token": pair.refresh_token,
            "expires_at": pair.expires_at.isoformat(),
        }
    else:
        assert oauth.refresh_token is not None
        creds |= {"refresh_token": oauth.refresh_token.get_secret_value(), "access_token": None, "expires_at": None}
    return "oauth", creds


async def create(rt: Runtime, s: AsyncSession, data: AccountCreate) -> Account:
    """Raises pydantic's ValidationError (for a 422) when the rules document given is invalid,
    before anything is stored or any code exchanged."""
    rules = validated_rules(data)
    base_url = str(data.base_url).rstrip("/")
    connection = data.connection()
    secret_hash = None
    if connection is not None:
        base_url, kind, creds = connection.base_url.rstrip("/"), connection.auth_kind, connection.credentials
        secret_hash = webhook_secret_hash(connection.webhook_secret)
        ready = bool(creds.get("access_token"))
    else:
        ready = True
        kind, creds = await _credentials(rt, data.crm, base_url, data.access_token, data.oauth)
    account = Account(
        webhook_secret_hash=secret_hash,
        external_id=connection.external_id if connection else None,
        name=data.name,
        crm=data.crm,
        base_url=base_url,
        key=new_hook_key(),
        timezone=data.timezone,
        region=data.region,
        language=data.language,
        auth_kind=kind,
        credentials=rt.box.seal(creds),
        credentials_version=1,
        subdomain=rt.crm_adapter(data.crm).subdomain_of(base_url),
        status="active",
        paused=data.paused,
        # Until the sweep after the backfill, what the rules find is this account's backlog.
        backlog_since=utcnow(),
        # Every new account is backfilled once, without anyone asking; one whose tokens the CRM
        # has yet to hand over (an app before its install) is backfilled when they arrive.
        sync_state="queued" if ready else "never",
        sync_requested_at=utcnow() if ready else None,
        sync_counts={},
    )
    s.add(account)
    await s.flush()
    if rules is not None and RulesHook.save is not None:
        await RulesHook.save(s, account.id, rules)
    log.info("account.created", extra={"account_id": account.id, "crm": account.crm, "auth": kind})
    return account


async def patch(rt: Runtime, s: AsyncSession, account: Account, data: AccountPatch) -> Account:
    """Raises ValueError (for a 422) when the CRM's own fields do not fit."""
    adapter = rt.crm_adapter(account.crm)
    extras = dict(data.model_extra or {})
    connection = None
    if extras or data.base_url is not None:
        # A CRM whose connection lives in its URL (a Bitrix24 inbound webhook) re-derives it, so a
        # new URL's secret is sealed like the first one, never stored in base_url.
        connection = adapter.connect(str(data.base_url or account.base_url), extras)
        if connection is not None and (data.access_token is not None or data.oauth is not None):
            raise ValueError(f"{account.crm} connects with its own fields, not access_token or oauth")
    for name in ("name", "timezone", "region", "language"):
        value = getattr(data, name)
        if value is not None:
            setattr(account, name, value)
    if connection is not None:
        account.base_url = connection.base_url.rstrip("/")
        account.subdomain = adapter.subdomain_of(account.base_url) or account.subdomain
        account.auth_kind = connection.auth_kind
        account.credentials = rt.box.seal(connection.credentials)
        account.credentials_version += 1
        account.webhook_secret_hash = webhook_secret_hash(connection.webhook_secret)
        account.status, account.status_reason = "active", None
    elif data.base_url is not None:
        account.base_url = str(data.base_url).rstrip("/")
        account.subdomain = rt.crm_adapter(account.crm).subdomain_of(account.base_url) or account.subdomain
    if data.access_token is not None or data.oauth is not None:
        kind, creds = await _credentials(rt, account.crm, account.base_url, data.access_token, data.oauth)
        account.auth_kind, account.credentials = kind, rt.box.seal(creds)
        account.credentials_version += 1
        account.status, account.status_reason = "active", None
    if data.rotate_key:
        account.key = new_hook_key()
    if data.paused is not None and data.paused != account.paused:
        account.paused = data.paused
        if not data.paused:
            account.next_sweep_at = None  # resumed: swept at the scheduler's next tick
        log.info("account.paused" if data.paused else "account.resumed", extra={"account_id": account.id})
    return account


async def request_sync(s: AsyncSession, account: Account) -> None:
    account.sync_requested_at = utcnow()
    # A full re-sync brings back whatever was missed at once: the backlog again, not news.
    if account.backlog_since is None:
        account.backlog_since = account.sync_requested_at
    # A running sync keeps going; sync_requested_at after its start makes it run once more.
    if account.sync_state != "running":
        account.sync_state = "queued"
        account.sync_error = None


async def list_all(s: AsyncSession) -> list[Account]:
    return list(await s.scalars(select(Account).order_by(Account.id)))


async def learn_identity(s: AsyncSession, account_id: int, external_id: str | None, subdomain: str | None) -> None:
    values: dict[str, Any] = {}
    if external_id:
        values["external_id"] = external_id
    if subdomain:
        values["subdomain"] = subdomain
    if values:
        await s.execute(update(Account).where(Account.id == account_id).values(**values))


# The inbox table by name: app/ingest builds on accounts, so accounts cannot import its model.
_INBOX = table("inbox_events", column("account_id"), column("status"), column("received_at"))


async def inbox_lag(s: AsyncSession, account_id: int) -> InboxLagOut:
    """The account's rows not applied yet and the age of the oldest (as app/ingest/lag.py)."""
    n, oldest = (
        await s.execute(
            select(func.count(), func.min(_INBOX.c.received_at)).where(
                _INBOX.c.account_id == account_id, _INBOX.c.status == "pending"
            )
        )
    ).one()
    if isinstance(oldest, str):  # SQLite hands an aggregate of a bare column back as text
        oldest = datetime.fromisoformat(oldest)
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    lag = max(0.0, (utcnow() - oldest).total_seconds()) if oldest is not None else 0.0
    return InboxLagOut(pending=n or 0, oldest_pending_at=oldest, lag_seconds=round(lag, 1))


def to_out(rt: Runtime, account: Account, inbox: InboxLagOut | None = None) -> AccountOut:
    return AccountOut(
        id=account.id,
        key=account.key,
        name=account.name,
        crm=account.crm,
        base_url=account.base_url,
        timezone=account.timezone,
        region=account.region,
        language=account.language,
        auth=account.auth_kind,
        external_id=account.external_id,
        subdomain=account.subdomain,
        status=account.status,
        status_reason=account.status_reason,
        paused=bool(account.paused),
        backlog_since=account.backlog_since,
        hooks=rt.crm_adapter(account.crm).hook_urls(rt.settings.public_url, account.key),
        sync=SyncOut(
            state=account.sync_state,
            section=account.sync_section,
            counts=account.sync_counts or {},
            error=account.sync_error,
            requested_at=account.sync_requested_at,
            started_at=account.sync_started_at,
            finished_at=account.sync_finished_at,
        ),
        inbox=inbox,
        created_at=account.created_at,
    )
