"""Report periods in the account's local days, and the working-time table the funnel's SQL joins.

A report period is a pair of local dates, both inclusive. Its UTC bounds are local midnights, so a
call at 23:30 Moscow time on the 4th belongs to the 4th even though it is the 4th 20:30 in UTC.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import Date, Float, String, literal, literal_column, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

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


# No CRM keeps anything older; the funnel's working-time table from here to today is some 20,000
# rows, built in a fifth of a second.
EARLIEST = date(1970, 1, 1)


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
    # The funnel's working-time table runs from the period to today, a row a day (one query
    # parameter in all, whatever its length): bounded below by the epoch, above by a year ahead.
    if day_from < EARLIEST:
        raise PeriodError(f"a period starts on {EARLIEST.isoformat()} or later")
    if (day_to - current).days > MAX_DAYS:
        raise PeriodError(f"a period ends within {MAX_DAYS} days of today")
    return Period(day_from, day_to, timezone)


class _json_rows(FunctionElement[Any]):
    """The elements of a JSON array given as one parameter, a row each, in a column "value"."""

    inherit_cache = True
    name = "json_rows"


@compiles(_json_rows, "postgresql")
def _json_rows_pg(element: _json_rows, compiler: Any, **kw: Any) -> str:
    return f"json_array_elements(CAST({compiler.process(element.clauses, **kw)} AS json))"


@compiles(_json_rows, "sqlite")
def _json_rows_sqlite(element: _json_rows, compiler: Any, **kw: Any) -> str:
    return f"json_each({compiler.process(element.clauses, **kw)})"


class _json_item(FunctionElement[Any]):
    """Item i of a JSON array row: _json_item(value, literal_column("i")); the subclass says its type."""

    inherit_cache = True
    name = "json_item"
    pg_type = "TEXT"


class _json_date(_json_item):
    type = Date()
    inherit_cache = True
    pg_type = "DATE"


class _json_float(_json_item):
    type = Float()
    inherit_cache = True
    pg_type = "DOUBLE PRECISION"


@compiles(_json_item, "postgresql")
def _json_item_pg(element: _json_item, compiler: Any, **kw: Any) -> str:
    value, i = (compiler.process(c, **kw) for c in element.clauses)
    return f"CAST(({value} ->> {i}) AS {element.pg_type})"


@compiles(_json_item, "sqlite")
def _json_item_sqlite(element: _json_item, compiler: Any, **kw: Any) -> str:
    # SQLite has no date type: a date is its ISO text, as local_day() returns it there.
    value, i = (compiler.process(c, **kw) for c in element.clauses)
    return f"json_extract({value}, '$[{i}]')"


def working_table(calendar: BusinessCalendar, first: date, last: date) -> Any:
    """One row per local date in [first, last]: the working seconds before that date (counted from
    `first`), the UTC epoch of its working start, and its working length (0 on a day off).

    The working time accumulated up to an instant t of local date d is then
    cum(d) + clamp(epoch(t) - start(d), 0, length(d)), so the working time between two instants is
    a difference of two such values: a join by date, no loop in SQL or Python per row.

    The rows travel as ONE parameter, a JSON array the database unpacks (json_array_elements on
    PostgreSQL, json_each on SQLite): a VALUES list took four parameters a day, and a table of some
    twenty years overflowed asyncpg's 32,767 (a period in 2000 was a 500).
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
        rows.append((day.isoformat(), cum, start.timestamp(), length))
        cum += length
        day += timedelta(days=1)
    row = _json_rows(literal(json.dumps(rows, separators=(",", ":")), String())).table_valued("value").c.value
    return select(
        _json_date(row, literal_column("0")).label("day"),
        _json_float(row, literal_column("1")).label("cum"),
        _json_float(row, literal_column("2")).label("ws"),
        _json_float(row, literal_column("3")).label("len"),
    ).cte("workdays")


__all__ = ["MAX_DAYS", "PRESETS", "Period", "PeriodError", "local_midnight", "resolve", "today", "working_table"]
