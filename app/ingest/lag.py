"""How far the mirror is behind what was accepted: the inbox rows not yet applied, per account.

Read by /metrics (app/ops), the dashboard's header and, through its own query on the same table
(app/accounts cannot import this package: it imports accounts), GET /api/accounts/{id}.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from .models import InboxEvent

# The window over which /metrics reports the apply rate.
RATE_WINDOW = timedelta(seconds=60)


@dataclass(frozen=True)
class Lag:
    pending: int
    oldest_pending_at: datetime | None

    def seconds(self, now: datetime) -> float:
        """Age of the oldest row not applied yet: how far behind the mirror is (0 when current)."""
        return max(0.0, (now - self.oldest_pending_at).total_seconds()) if self.oldest_pending_at else 0.0


async def by_account(s: AsyncSession) -> dict[int, Lag]:
    """Every account with rows waiting (pending rows, including those waiting for a retry)."""
    rows = await s.execute(
        select(InboxEvent.account_id, func.count(), func.min(InboxEvent.received_at))
        .where(InboxEvent.status == "pending")
        .group_by(InboxEvent.account_id)
    )
    return {account_id: Lag(n, oldest) for account_id, n, oldest in rows}


async def of_account(s: AsyncSession, account_id: int) -> Lag:
    n, oldest = (
        await s.execute(
            select(func.count(), func.min(InboxEvent.received_at)).where(
                InboxEvent.status == "pending", InboxEvent.account_id == account_id
            )
        )
    ).one()
    return Lag(n or 0, oldest)


async def apply_rate(s: AsyncSession, now: datetime) -> float:
    """Rows applied per second over the last RATE_WINDOW, by every worker sharing the database."""
    n = await s.scalar(
        select(func.count())
        .select_from(InboxEvent)
        .where(InboxEvent.status == "done", InboxEvent.processed_at > now - RATE_WINDOW)
    )
    return (n or 0) / RATE_WINDOW.total_seconds()
