"""Working time of an account's business calendar.

Every duration crmwatch reports ("overdue by 2 working hours", "5 working days in stage") is working
time: a task that fell due at 19:00 on the Friday before a holiday weekend is not three days overdue
on the next working morning.

A working day has exactly one working period, [work_start, work_end) in local wall-clock time. All
arithmetic is done on integer microseconds since the epoch, the resolution of `datetime`, so the
inverse operations (`cutoff`, `add_working`) agree exactly with `working_seconds` instead of drifting
by float rounding; `seconds` arguments are rounded to the nearest microsecond.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_ONE_DAY = timedelta(days=1)
_US_PER_S = 1_000_000
# A calendar with no working day in ten years is misconfigured (e.g. empty work_days and no country);
# without this bound the walks in cutoff()/add_working() would never end.
_MAX_IDLE_DAYS = 3660
# Periods are cached per local date; the bound only guards a long-lived process against unbounded growth.
_PERIOD_CACHE_MAX = 50_000


@dataclass(frozen=True, slots=True)
class CalendarConfig:
    timezone: str = "Europe/Moscow"
    # Public holidays and transferred working days come from the `holidays` package; None = weekends only.
    country: str | None = "RU"
    work_start: time = time(9, 0)
    work_end: time = time(18, 0)
    work_days: frozenset[int] = frozenset({0, 1, 2, 3, 4})  # Monday=0 … Sunday=6
    extra_holidays: frozenset[date] = frozenset()  # company days off
    extra_workdays: frozenset[date] = frozenset()  # company working days on a weekend or holiday

    def __post_init__(self) -> None:
        if self.work_start.tzinfo is not None or self.work_end.tzinfo is not None:
            raise ValueError("work_start and work_end are local wall-clock times and must be naive")
        if self.work_end <= self.work_start:
            raise ValueError(f"work_end ({self.work_end}) must be after work_start ({self.work_start})")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {self.timezone!r}") from exc
        if self.country is not None and self.country not in holidays.list_supported_countries():
            raise ValueError(f"country {self.country!r} is not supported by the holidays package")
        # Callers (settings, JSON) tend to pass lists or sets; frozensets keep the config hashable.
        for name in ("work_days", "extra_holidays", "extra_workdays"):
            object.__setattr__(self, name, frozenset(getattr(self, name)))
        if not self.work_days <= frozenset(range(7)):
            raise ValueError(f"work_days must be weekday numbers 0..6, got {sorted(self.work_days)}")


def _to_us(at: datetime) -> int:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("naive datetime given to a business calendar; pass an aware datetime")
    return (at - _EPOCH) // _US


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _seconds_to_us(seconds: float) -> int:
    return round(seconds * _US_PER_S)


class BusinessCalendar:
    def __init__(self, config: CalendarConfig) -> None:
        self.config = config
        self._tz = ZoneInfo(config.timezone)
        self._holidays: dict[int, holidays.HolidayBase] = {}
        self._periods: dict[date, tuple[int, int] | None] = {}
        span = datetime.combine(date.min, config.work_end) - datetime.combine(date.min, config.work_start)
        self._day_seconds = int(span.total_seconds())

    @property
    def day_seconds(self) -> int:
        return self._day_seconds

    def _country_year(self, year: int) -> holidays.HolidayBase:
        obj = self._holidays.get(year)
        if obj is None:
            # expand=False: membership tests must not quietly populate other years behind the cache.
            obj = holidays.country_holidays(self.config.country, years=year, expand=False)
            self._holidays[year] = obj
        return obj

    def is_working_day(self, day: date) -> bool:
        cfg = self.config
        if day in cfg.extra_workdays:
            return True
        if day in cfg.extra_holidays:
            return False
        if cfg.country is not None:
            country = self._country_year(day.year)
            if day in country:
                return False
            if day in country.weekend_workdays:
                return True
        return day.weekday() in cfg.work_days

    def _period(self, day: date) -> tuple[int, int] | None:
        """The working period of a local date as [start, end) in epoch microseconds, None on a day off."""
        try:
            return self._periods[day]
        except KeyError:
            pass
        period = None
        if self.is_working_day(day):
            # Local wall-clock times converted per day, so a DST switch moves the UTC period, not its length.
            start = _to_us(datetime.combine(day, self.config.work_start, tzinfo=self._tz))
            end = _to_us(datetime.combine(day, self.config.work_end, tzinfo=self._tz))
            # Working hours that straddle a DST gap could otherwise come out inverted.
            period = (start, max(start, end))
        if len(self._periods) >= _PERIOD_CACHE_MAX:
            self._periods.clear()
        self._periods[day] = period
        return period

    def _local_date(self, at: datetime) -> date:
        return at.astimezone(self._tz).date()

    def working_seconds(self, start: datetime, end: datetime) -> float:
        start_us, end_us = _to_us(start), _to_us(end)
        if end_us <= start_us:
            return 0.0
        # A day's period lies within its local date, so the local dates of the two ends bound the walk.
        day, last = self._local_date(start), self._local_date(end)
        total = 0
        while day <= last:
            period = self._period(day)
            if period is not None:
                lo, hi = max(period[0], start_us), min(period[1], end_us)
                if hi > lo:
                    total += hi - lo
            day += _ONE_DAY
        return total / _US_PER_S

    def cutoff(self, now: datetime, seconds: float) -> datetime:
        """The latest instant t <= now with working_seconds(t, now) >= seconds, in UTC.

        W(t), the working time accumulated up to t, is continuous and non-decreasing; the answer is
        sup{t <= now : W(t) <= W(now) - seconds}. It always lies inside a working period or at a
        period's start (a flat stretch after a period end also satisfies the bound, so the supremum
        moves on to the next start), hence W grows right after it and, for t <= now:
        t <= cutoff  <=>  working_seconds(t, now) >= seconds. Rules can therefore be set-based SQL:
        "violates iff started_at <= cutoff".
        """
        now_us = _to_us(now)
        remaining = _seconds_to_us(seconds)
        if remaining <= 0:
            return now.astimezone(UTC)
        day = self._local_date(now)
        idle = 0
        while True:
            period = self._period(day)
            if period is not None:
                idle = 0
                start, end = period[0], min(period[1], now_us)
                if end > start:
                    # Exhausted exactly at a period start returns that start: the flat stretch before it
                    # has the same W, and the supremum of that set is the start itself.
                    if remaining <= end - start:
                        return _from_us(end - remaining)
                    remaining -= end - start
            else:
                idle += 1
                if idle > _MAX_IDLE_DAYS:
                    raise ValueError("business calendar has no working days to count back through")
            day -= _ONE_DAY

    def deadline_cutoff(self, now: datetime, seconds: float) -> datetime:
        """The latest instant t with add_working(t, seconds) <= now: what started at or before it
        is past its deadline at `now`. The same as cutoff() for a positive duration; for none, a
        deadline still falls on a working minute: out of hours, only what started before the last
        working period ended is due (a task due at 18:55 on a Friday is overdue on Monday at 09:00).
        """
        if _seconds_to_us(seconds) > 0:
            return self.cutoff(now, seconds)
        now_us = _to_us(now)
        day = self._local_date(now)
        for _ in range(_MAX_IDLE_DAYS + 2):
            period = self._period(day)
            if period is not None and period[0] < period[1] and period[0] <= now_us:
                if now_us < period[1]:
                    return now.astimezone(UTC)
                # add_working(t, 0) for t at or after the period's end is the next period's start.
                return _from_us(period[1] - 1)
            day -= _ONE_DAY
        raise ValueError("business calendar has no working days to count back through")

    def add_working(self, start: datetime, seconds: float) -> datetime:
        """The instant at which `seconds` of working time have elapsed after `start`, in UTC.

        Ending exactly at a period's end returns that end (e.g. 17:00 + 1 h = 18:00 the same day), not
        the next morning: that is the earliest instant with the required working time behind it.
        """
        cursor = _to_us(start)
        remaining = max(0, _seconds_to_us(seconds))
        day = self._local_date(start)
        idle = 0
        while True:
            period = self._period(day)
            if period is not None:
                idle = 0
                begin, end = max(period[0], cursor), period[1]
                # A start at or after the period end has nothing left here (periods are half-open).
                if begin < end:
                    if remaining <= end - begin:
                        return _from_us(begin + remaining)
                    remaining -= end - begin
            else:
                idle += 1
                if idle > _MAX_IDLE_DAYS:
                    raise ValueError("business calendar has no working days to count forward through")
            day += _ONE_DAY

    def is_working_time(self, at: datetime) -> bool:
        period = self._period(self._local_date(at))
        return period is not None and period[0] <= _to_us(at) < period[1]

    def next_working_start(self, at: datetime) -> datetime:
        """`at` itself (in UTC) inside working hours, else the start of the next working period."""
        return self.add_working(at, 0)


_RU_FORMS = {
    "minute": ("рабочая минута", "рабочие минуты", "рабочих минут"),
    "hour": ("рабочий час", "рабочих часа", "рабочих часов"),
    "day": ("рабочий день", "рабочих дня", "рабочих дней"),
}
_EN_FORMS = {
    "minute": ("working minute", "working minutes"),
    "hour": ("working hour", "working hours"),
    "day": ("working day", "working days"),
}


def _ru_plural(n: int, forms: tuple[str, str, str]) -> str:
    if n % 100 in range(11, 15):
        return forms[2]
    if n % 10 == 1:
        return forms[0]
    if n % 10 in (2, 3, 4):
        return forms[1]
    return forms[2]


def humanize(seconds: float, day_seconds: int, lang: str = "ru") -> str:
    """A working duration in the largest whole unit: minutes under an hour, hours under a day, else days."""
    if day_seconds <= 0:
        raise ValueError("day_seconds must be positive")
    if lang not in ("ru", "en"):
        raise ValueError(f"unsupported language {lang!r}")
    raw = max(0.0, seconds)
    # Durations come from microsecond arithmetic; the nudge keeps 7199.9999995 s from reading as "1 hour".
    value = raw + 1e-6
    if value < 3600:
        unit, n = "minute", math.floor(value / 60)
        if n == 0 and raw > 0:
            n = 1  # "0 minutes" would hide that something is already overdue
    elif value < day_seconds:
        unit, n = "hour", math.floor(value / 3600)
    else:
        unit, n = "day", math.floor(value / day_seconds)
    if lang == "ru":
        return f"{n} {_ru_plural(n, _RU_FORMS[unit])}"
    return f"{n} {_EN_FORMS[unit][0 if n == 1 else 1]}"
