"""Webhook key → account, cached briefly: the key check sits on the hottest path we have.

A rotated or deleted key stops working in this process at once (invalidate) and in other
processes within TTL seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.models import Account

TTL_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class HookAccount:
    id: int
    crm: str
    region: str
    external_id: str | None
    subdomain: str | None
    webhook_secret_hash: str | None = None


class KeyCache:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], ttl: float = TTL_SECONDS) -> None:
        self._sessions = sessions
        self._ttl = ttl
        self._entries: dict[str, tuple[float, HookAccount | None]] = {}

    async def lookup(self, key: str) -> HookAccount | None:
        now = time.monotonic()
        hit = self._entries.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        async with self._sessions() as s:
            row = (
                await s.execute(
                    select(
                        Account.id,
                        Account.crm,
                        Account.region,
                        Account.external_id,
                        Account.subdomain,
                        Account.webhook_secret_hash,
                    ).where(Account.key == key)
                )
            ).first()
        found = HookAccount(*row) if row else None
        if len(self._entries) > 10_000:
            self._entries.clear()  # a flood of random keys must not grow memory without bound
        self._entries[key] = (now + self._ttl, found)
        return found

    def invalidate(self) -> None:
        self._entries.clear()
