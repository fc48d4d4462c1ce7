"""Access tokens for CRM clients, with OAuth refresh serialized per account.

amoCRM refresh tokens are single-use: two processes refreshing at once would burn the pair
and lock the account out. The refresh therefore runs inside one transaction that first
takes the account row's write lock (a no-op UPDATE: a row lock on PostgreSQL, the database
write lock on SQLite), re-reads the credentials, and refreshes only if nobody else did.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.security import CredentialBox
from integrations.base import CrmAdapter, CrmAuthError

from .models import Account

log = logging.getLogger(__name__)

REFRESH_MARGIN = timedelta(minutes=5)


class TokenHost(Protocol):
    """What token refresh needs of the process (app.runtime.Runtime has it all): named here so
    that accounts does not import the runtime that imports it."""

    reads: async_sessionmaker[AsyncSession]
    sessions: async_sessionmaker[AsyncSession]
    box: CredentialBox
    refresh_locks: dict[int, asyncio.Lock]
    http_transport: httpx.AsyncBaseTransport | None

    def crm_adapter(self, crm: str) -> CrmAdapter: ...


class AccountTokens:
    def __init__(self, runtime: TokenHost, account_id: int) -> None:
        self.rt = runtime
        self.account_id = account_id

    async def _read(self) -> tuple[str, dict[str, Any]]:
        async with self.rt.reads() as s:
            row = (
                await s.execute(select(Account.auth_kind, Account.credentials).where(Account.id == self.account_id))
            ).one()
        return row.auth_kind, self.rt.box.open(row.credentials)

    async def access_token(self) -> str:
        kind, creds = await self._read()
        if kind == "token":
            return creds["access_token"]
        expires = _expiry(creds)
        if creds.get("access_token") and expires is not None and expires - datetime.now(UTC) > REFRESH_MARGIN:
            return creds["access_token"]
        return await self._refresh(seen_refresh_token=creds.get("refresh_token"))

    async def refresh_after_401(self, rejected: str) -> str | None:
        kind, creds = await self._read()
        if kind == "token":
            await self.mark_needs_attention("the CRM refused the long-lived token")
            return None
        if creds.get("access_token") != rejected:
            return creds["access_token"]  # another worker already refreshed
        try:
            return await self._refresh(seen_refresh_token=creds.get("refresh_token"))
        except CrmAuthError:
            return None

    async def _refresh(self, seen_refresh_token: str | None) -> str:
        # The database lock serializes processes; this one spares a process's own tasks the wait.
        lock = self.rt.refresh_locks.setdefault(self.account_id, asyncio.Lock())
        async with lock, self.rt.sessions() as s, s.begin():
            await s.execute(
                update(Account)
                .where(Account.id == self.account_id)
                .values(credentials_version=Account.credentials_version)
            )
            account = await s.get(Account, self.account_id, with_for_update=True, populate_existing=True)
            assert account is not None
            creds = self.rt.box.open(account.credentials)
            if creds.get("refresh_token") != seen_refresh_token and creds.get("access_token"):
                return creds["access_token"]  # lost the race: the winner's token is ours too
            if not creds.get("refresh_token"):
                raise CrmAuthError("no refresh token stored")
            adapter = self.rt.crm_adapter(account.crm)
            try:
                pair = await adapter.oauth_exchange(
                    account.base_url,
                    client_id=creds["client_id"],
                    client_secret=creds["client_secret"],
                    redirect_uri=creds["redirect_uri"],
                    refresh_token=creds["refresh_token"],
                    transport=self.rt.http_transport,
                )
            except CrmAuthError as exc:
                account.status, account.status_reason = "needs_attention", str(exc)
                await s.commit()
                raise
            creds |= {
                "access_token": pair.access_token,
                "refresh_token": pair.refresh_token,
                "expires_at": pair.expires_at.isoformat(),
            }
            account.credentials = self.rt.box.seal(creds)
            account.credentials_version += 1
            account.status, account.status_reason = "active", None
            log.info("oauth.refreshed", extra={"account_id": self.account_id})
            return pair.access_token

    async def mark_needs_attention(self, reason: str) -> None:
        async with self.rt.sessions() as s, s.begin():
            await s.execute(
                update(Account)
                .where(Account.id == self.account_id)
                .values(status="needs_attention", status_reason=reason)
            )


def _expiry(creds: dict[str, Any]) -> datetime | None:
    value = creds.get("expires_at")
    return datetime.fromisoformat(value) if value else None
