"""Per manager per day: calls, talk time, successful contacts, in vs out, missed, cards changed.

Days are the account's local days. A row is recomputed from the calls (and the mirror's notes,
stage moves and tasks) whenever a call of that manager and day changes, so it is always a pure
function of the data and a recomputation is harmless.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import and_, case, func, select, union
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.db import dialect_insert, utcnow
from app.mirror.models import Note, StageHistory, Task

from .models import Call, CallStatsDaily
from .service import SUCCESSFUL_TALK_SECONDS


def local_day(at: datetime, timezone: str) -> date:
    return at.astimezone(ZoneInfo(timezone)).date()


def day_bounds(day: date, timezone: str) -> tuple[datetime, datetime]:
    tz = ZoneInfo(timezone)
    start = datetime.combine(day, time(0), tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), tz).astimezone(UTC)
    return start, end


async def cards_changed(s: AsyncSession, account_id: int, manager_id: str, start: datetime, end: datetime) -> int:
    """Deals the manager touched in [start, end): a note written, a stage moved, a task set or closed."""
    touched = union(
        select(Note.deal_id.label("deal_id")).where(
            Note.account_id == account_id,
            Note.created_by == manager_id,
            Note.kind == "common",
            Note.created_at >= start,
            Note.created_at < end,
            Note.deal_id.is_not(None),
        ),
        select(StageHistory.deal_id).where(
            StageHistory.account_id == account_id,
            StageHistory.by_user_id == manager_id,
            StageHistory.entered_at >= start,
            StageHistory.entered_at < end,
        ),
        select(Task.deal_id).where(
            Task.account_id == account_id,
            Task.deal_id.is_not(None),
            Task.created_by == manager_id,
            Task.created_at >= start,
            Task.created_at < end,
        ),
        select(Task.deal_id).where(
            Task.account_id == account_id,
            Task.deal_id.is_not(None),
            Task.responsible_user_id == manager_id,
            Task.completed_at >= start,
            Task.completed_at < end,
        ),
    ).subquery()
    return await s.scalar(select(func.count()).select_from(touched)) or 0


async def refresh(s: AsyncSession, account_id: int, timezone: str, pairs: set[tuple[str, date]]) -> None:
    for manager_id, day in sorted(pairs):
        start, end = day_bounds(day, timezone)
        answered = Call.status == "answered"

        def count(condition: object) -> object:
            return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

        row = (
            await s.execute(
                select(
                    func.count().label("calls"),
                    func.coalesce(func.sum(case((answered, func.coalesce(Call.talk_seconds, 0)), else_=0)), 0).label(
                        "talk"
                    ),
                    count(and_(answered, Call.talk_seconds >= SUCCESSFUL_TALK_SECONDS)).label("successful"),
                    count(Call.direction == "in").label("incoming"),
                    count(Call.direction == "out").label("outgoing"),
                    count(and_(Call.direction == "in", Call.status != "answered")).label("missed"),
                ).where(
                    Call.account_id == account_id,
                    Call.manager_id == manager_id,
                    Call.is_final.is_(True),
                    Call.direction.is_distinct_from("internal"),
                    Call.started_at >= start,
                    Call.started_at < end,
                )
            )
        ).one()
        values = {
            "calls": row.calls,
            "talk_seconds": int(row.talk),
            "successful": int(row.successful),
            "incoming": int(row.incoming),
            "outgoing": int(row.outgoing),
            "missed": int(row.missed),
            "cards_changed": await cards_changed(s, account_id, manager_id, start, end),
            "updated_at": utcnow(),
        }
        stmt = dialect_insert(s, CallStatsDaily.__table__).values(
            account_id=account_id, manager_id=manager_id, day=day, **values
        )
        await s.execute(stmt.on_conflict_do_update(index_elements=["account_id", "manager_id", "day"], set_=values))


async def refresh_day(s: AsyncSession, account_id: int, now: datetime) -> None:
    """Recomputes the account's local day of `now` for every manager with calls in it: notes and
    card changes made after the last call of the day count too (the scheduler runs this with
    each sweep)."""
    timezone = await s.scalar(select(Account.timezone).where(Account.id == account_id))
    if timezone is None:
        return
    day = local_day(now, timezone)
    start, end = day_bounds(day, timezone)
    managers = await s.scalars(
        select(Call.manager_id)
        .where(
            Call.account_id == account_id, Call.manager_id.is_not(None), Call.started_at >= start, Call.started_at < end
        )
        .distinct()
    )
    await refresh(s, account_id, timezone, {(m, day) for m in managers})


__all__ = ["cards_changed", "day_bounds", "local_day", "refresh", "refresh_day"]
