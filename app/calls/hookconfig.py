"""(account, PBX) → its opened secrets, cached briefly: every PBX callback needs them, and a
database read plus a Fernet decryption per callback cost more than the rest of the intake.

A changed or deleted setting takes effect at once in this process (invalidate) and in other
processes within TTL seconds, like the webhook key cache.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.security import CredentialBox

from .models import TelephonyConfig

TTL_SECONDS = 5.0


class SecretsCache:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], box: CredentialBox, ttl: float = TTL_SECONDS
    ) -> None:
        self._sessions = sessions
        self._box = box
        self._ttl = ttl
        self._entries: dict[tuple[int, str], tuple[float, dict[str, Any] | None]] = {}

    async def lookup(self, account_id: int, provider: str) -> dict[str, Any] | None:
        now = time.monotonic()
        hit = self._entries.get((account_id, provider))
        if hit is not None and hit[0] > now:
            return hit[1]
        async with self._sessions() as s:
            sealed = await s.scalar(
                select(TelephonyConfig.credentials).where(
                    TelephonyConfig.account_id == account_id, TelephonyConfig.provider == provider
                )
            )
        found = self._box.open(sealed) if sealed is not None else None
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[(account_id, provider)] = (now + self._ttl, found)
        return found

    def invalidate(self) -> None:
        self._entries.clear()


def secrets_cache(request: Request) -> SecretsCache:
    """The process's cache, made on first use: PBX callbacks read it, the settings API invalidates it."""
    cache = getattr(request.app.state, "telephony_secrets", None)
    if cache is None:
        rt = request.app.state.runtime
        cache = request.app.state.telephony_secrets = SecretsCache(rt.reads, rt.box)
    return cache
