"""Everything a running crmwatch process shares: settings, database, crypto, CRM clients.

One object, built once per process (and once per test), passed where it is needed, so
tests can swap the HTTP transport for an emulator in a single place.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.accounts.tokens import AccountTokens
from app.db import make_engine, make_sessionmaker
from app.security import CredentialBox, load_secret
from app.settings import Settings
from integrations.base import CrmClient
from integrations.ratelimit import LimiterRegistry
from integrations.registry import crm_adapter

# A webhook accepted this recently means a burst is under way (Runtime.intake_busy).
BUSY_WINDOW_S = 0.5


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    box: CredentialBox
    # For transactions that only read. On SQLite they skip the write lock (every `sessions`
    # transaction takes it up front); on PostgreSQL this is the same engine.
    reads: async_sessionmaker[AsyncSession]
    read_engine: AsyncEngine
    # Tests and the demo route CRM traffic to an emulator here; None means the real network.
    http_transport: httpx.AsyncBaseTransport | None = None
    limiters: LimiterRegistry = field(default_factory=LimiterRegistry)
    # Set when new inbox rows or sync requests exist, so workers wake without waiting a poll.
    inbox_wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    sync_wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    outbox_wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    # One OAuth refresh at a time per account within this process (app/accounts/tokens.py).
    refresh_locks: dict[int, asyncio.Lock] = field(default_factory=dict)
    # time.monotonic() of the last webhook accepted; background work yields to a busy intake.
    last_intake: float = 0.0

    @classmethod
    def build(cls, settings: Settings, http_transport: httpx.AsyncBaseTransport | None = None) -> Runtime:
        engine = make_engine(settings.database_url)
        read_engine = make_engine(settings.database_url, read_only=True) if engine.dialect.name == "sqlite" else engine
        return cls(
            settings=settings,
            engine=engine,
            sessions=make_sessionmaker(engine),
            box=CredentialBox(load_secret(settings)),
            http_transport=http_transport,
            reads=make_sessionmaker(read_engine),
            read_engine=read_engine,
        )

    crm_adapter = staticmethod(crm_adapter)

    def crm_client(self, account_id: int, crm: str, base_url: str) -> CrmClient:
        s = self.settings
        adapter = crm_adapter(crm)
        return adapter.make_client(
            base_url,
            AccountTokens(self, account_id),
            self.limiters.get(crm, account_id, factory=lambda: adapter.make_limiter(s)),
            max_retries=s.crm_max_retries,
            backoff_base=s.crm_backoff_base_seconds,
            backoff_cap=s.crm_backoff_cap_seconds,
            timeout=s.crm_timeout_seconds,
            transport=self.http_transport,
        )

    def intake_busy(self) -> bool:
        """Webhooks arrived in the last BUSY_WINDOW_S: background work stands back (see
        app/ingest/worker.py) so intake keeps answering fast."""
        return time.monotonic() - self.last_intake < BUSY_WINDOW_S

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()
