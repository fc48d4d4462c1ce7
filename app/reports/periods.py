"""Report periods in the account's local days, and the working-time table the funnel's SQL joins.

A report period is a pair of local dates, both inclusive. Its UTC bounds are local midnights, so a
call at 23:30 Moscow time on the 4th belongs to the 4th even though it is the 4th 20:30 in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import Date, Float, column, values

from app.calendar.business import BusinessCalendar

Preset = Literal["today", "yesterday", "this_week", "last_week", "this_month", "last_month"]
PRESETS: tuple[str, ...] = ("today", "yesterday", "this_week", "last_week", "this_month", "last_month")
# A report over more than this many days is refused: nobody reads it, and it would cost.
MAX_DAYS = 366


class PeriodError(ValueError):
    """The asked-for period is not a valid one (told to the caller as a 422)."""


@dataclass(frozen=True)
class Period:
    day_from: date
    day_to: date
    timezone: str

    @property
    def start(self) -> datetime:
        return local_midnight(self.day_from, self.timezone)

    @property
    def end(self) -> datetime:
        """The exclusive end: the local midnight after day_to."""
        return local_midnight(self.day_to + timedelta(days=1), self.timezone)

    def days(self) -> list[date]:
        return [self.day_from + timedelta(days=i) for i in range((self.day_to - self.day_from).days + 1)]


def local_midnight(day: date, timezone: str) -> datetime:
    return datetime.combine(day, time(0), ZoneInfo(timezone)).astimezone(UTC)


def today(now: datetime, timezone: str) -> date:
    return now.astimezone(ZoneInfo(timezone)).date()


MAX_AGE_DAYS = 5 * 365


def resolve(
    timezone: str, now: datetime, preset: str | None = None, day_from: date | None = None, day_to: date | None = None
) -> Period:
    """A preset (relative to the account's today) or an explicit from/to; default: today."""
    current = today(now, timezone)
    if preset is not None and (day_from is not None or day_to is not None):
        raise PeriodError("give either period or from/to, not both")
    if preset is not None:
        monday = current - timedelta(days=current.weekday())
        first = current.replace(day=1)
        last_month_end = first - timedelta(days=1)
        span = {
            "today": (current, current),
            "yesterday": (current - timedelta(days=1), current - timedelta(days=1)),
            "this_week": (monday, current),
            "last_week": (monday - timedelta(days=7), monday - timedelta(days=1)),
            "this_month": (first, current),
            "last_month": (last_month_end.replace(day=1), last_month_end),
        }.get(preset)
        if span is None:
            raise PeriodError(f"unknown period {preset!r}; known: {', '.join(PRESETS)}")
        return Period(span[0], span[1], timezone)
    if (day_from is None) != (day_to is None):
        raise PeriodError("from and to go together")
    if day_from is None or day_to is None:
        return Period(current, current, timezone)
    if day_from > day_to:
        raise PeriodError("from must not be after to")
    if (day_to - day_from).days + 1 > MAX_DAYS:
        raise PeriodError(f"a period is at most {MAX_DAYS} days")
    # The funnel's working-time table runs from the period to today, a row a day: bounded, as are
    # the query's parameters (a period in 2000 was a 500 on PostgreSQL).
    if (current - day_from).days > MAX_AGE_DAYS or (day_to - current).days > MAX_DAYS:
        raise PeriodError(f"a period lies within {MAX_AGE_DAYS // 365} years of today")
    return Period(day_from, day_to, timezone)


def working_table(calendar: BusinessCalendar, first: date, last: date) -> Any:
    """One row per local date in [first, last]: the working seconds before that date (counted from
    `first`), the UTC epoch of its working start, and its working length (0 on a day off).

    The working time accumulated up to an instant t of local date d is then
    cum(d) + clamp(epoch(t) - start(d), 0, length(d)), so the working time between two instants is
    a difference of two such values: a join by date, no loop in SQL or Python per row. (A CTE,
    because SQLite takes VALUES only there.)
    """
    cfg = calendar.config
    tz = ZoneInfo(cfg.timezone)
    rows = []
    cum = 0.0
    day = first
    while day <= last:
        start = datetime.combine(day, cfg.work_start, tz)
        length = 0.0
        if calendar.is_working_day(day):
            length = max(0.0, (datetime.combine(day, cfg.work_end, tz) - start).total_seconds())
        rows.append((day, cum, start.timestamp(), length))
        cum += length
        day += timedelta(days=1)
    # A CTE of VALUES: SQLite accepts VALUES as a table only there.
    return (
        values(
            column("day", Date()),
            column("cum", Float()),
            column("ws", Float()),
            column("len", Float()),
            name="workdays",
        )
        .data(rows)
        .cte("workdays")
    )


__all__ = ["MAX_DAYS", "PRESETS", "Period", "PeriodError", "local_midnight", "resolve", "today", "working_table"]
