"""Per manager per day: calls, talk time, successful contacts, in vs out, missed, cards changed.

Days are the account's local days. A row is recomputed from the calls (and the mirror's notes,
stage moves and tasks) whenever a call of that manager and day changes, so it is always a pure
function of the data and a recomputation is harmless.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, case, func, or_, select, union
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


# Days per statement in refresh() (each is one CASE branch and one range in the WHERE).
DAYS_PER_STATEMENT = 31


def _day_of(column: Any, bounds: list[tuple[datetime, datetime]]) -> tuple[Any, Any]:
    """The index in `bounds` of the local day `column` falls in (a CASE, the same on both
    databases), and the condition that it falls in one of them."""
    ranges = [and_(column >= start, column < end) for start, end in bounds]
    return case(*((r, i) for i, r in enumerate(ranges))), or_(*ranges)


async def refresh(s: AsyncSession, account_id: int, timezone: str, pairs: set[tuple[str, date]]) -> None:
    """Recomputes the rows of these (manager, day) pairs: per group of days, one statement for
    the calls' figures and one for the cards changed, whatever the number of managers, then one
    upsert (an inbox batch's calls name a few days and many managers)."""
    days = sorted({day for _, day in pairs})
    for first in range(0, len(days), DAYS_PER_STATEMENT):
        chunk = days[first : first + DAYS_PER_STATEMENT]
        wanted = sorted((m, d) for m, d in pairs if d in set(chunk))
        await _refresh_days(s, account_id, timezone, chunk, wanted)


async def _refresh_days(
    s: AsyncSession, account_id: int, timezone: str, days: list[date], pairs: list[tuple[str, date]]
) -> None:
    bounds = [day_bounds(day, timezone) for day in days]
    managers = sorted({m for m, _ in pairs})
    answered = Call.status == "answered"

    def count(condition: object) -> object:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    day, in_days = _day_of(Call.started_at, bounds)
    figures = {
        (manager, days[index]): row
        for manager, index, *row in await s.execute(
            select(
                Call.manager_id,
                day.label("day"),
                func.count(),
                func.coalesce(func.sum(case((answered, func.coalesce(Call.talk_seconds, 0)), else_=0)), 0),
                count(and_(answered, Call.talk_seconds >= SUCCESSFUL_TALK_SECONDS)),
                count(Call.direction == "in"),
                count(Call.direction == "out"),
                count(and_(Call.direction == "in", Call.status != "answered")),
            )
            .where(
                Call.account_id == account_id,
                Call.manager_id.in_(managers),
                Call.is_final.is_(True),
                Call.direction.is_distinct_from("internal"),
                in_days,
            )
            .group_by(Call.manager_id, day)
        )
    }
    cards = {
        (manager, days[index]): n for manager, index, n in await s.execute(_cards_changed(account_id, managers, bounds))
    }
    now = utcnow()
    values = []
    for manager_id, d in pairs:
        calls, talk, successful, incoming, outgoing, missed = figures.get((manager_id, d), (0, 0, 0, 0, 0, 0))
        values.append(
            {
                "account_id": account_id,
                "manager_id": manager_id,
                "day": d,
                "calls": int(calls),
                "talk_seconds": int(talk),
                "successful": int(successful),
                "incoming": int(incoming),
                "outgoing": int(outgoing),
                "missed": int(missed),
                "cards_changed": int(cards.get((manager_id, d), 0)),
                "updated_at": now,
            }
        )
    if not values:
        return
    stmt = dialect_insert(s, CallStatsDaily.__table__).values(values)
    names = ("calls", "talk_seconds", "successful", "incoming", "outgoing", "missed", "cards_changed", "updated_at")
    await s.execute(
        stmt.on_conflict_do_update(
            index_elements=["account_id", "manager_id", "day"], set_={n: stmt.excluded[n] for n in names}
        )
    )


def _cards_changed(account_id: int, managers: list[str], bounds: list[tuple[datetime, datetime]]) -> Any:
    """cards_changed() for every manager and day at once: (manager, day index, deals)."""
    note_day, note_in = _day_of(Note.created_at, bounds)
    stage_day, stage_in = _day_of(StageHistory.entered_at, bounds)
    created_day, created_in = _day_of(Task.created_at, bounds)
    completed_day, completed_in = _day_of(Task.completed_at, bounds)
    touched = union(
        select(Note.created_by.label("manager_id"), note_day.label("day"), Note.deal_id.label("deal_id")).where(
            Note.account_id == account_id,
            Note.created_by.in_(managers),
            Note.kind == "common",
            note_in,
            Note.deal_id.is_not(None),
        ),
        select(StageHistory.by_user_id, stage_day, StageHistory.deal_id).where(
            StageHistory.account_id == account_id, StageHistory.by_user_id.in_(managers), stage_in
        ),
        select(Task.created_by, created_day, Task.deal_id).where(
            Task.account_id == account_id, Task.deal_id.is_not(None), Task.created_by.in_(managers), created_in
        ),
        select(Task.responsible_user_id, completed_day, Task.deal_id).where(
            Task.account_id == account_id,
            Task.deal_id.is_not(None),
            Task.responsible_user_id.in_(managers),
            completed_in,
        ),
    ).subquery()
    return select(touched.c.manager_id, touched.c.day, func.count()).group_by(touched.c.manager_id, touched.c.day)


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
