"""Working time of the business calendar: holidays, transfers, DST, and the cutoff/add_working inverses."""

from __future__ import annotations

import random
import time as clock
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays
import pytest

from app.calendar.business import BusinessCalendar, CalendarConfig, humanize

MSK = ZoneInfo("Europe/Moscow")
BERLIN = ZoneInfo("Europe/Berlin")
HOUR = 3600.0
DAY = 9 * HOUR


def msk(y: int, m: int, d: int, hh: int = 0, mm: int = 0, ss: int = 0, us: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, ss, us, tzinfo=MSK)


def berlin(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=BERLIN)


@pytest.fixture(scope="module")
def ru_facts() -> None:
    """The RU examples below rely on these facts; fail loudly if the holidays data ever says otherwise."""
    y2025 = holidays.country_holidays("RU", years=2025)
    assert date(2025, 11, 1) in y2025.weekend_workdays  # Saturday worked for the 3 November day off
    assert date(2025, 11, 3) in y2025 and date(2025, 11, 4) in y2025
    assert date(2025, 12, 31) in y2025
    y2026 = holidays.country_holidays("RU", years=2026)
    assert all(date(2026, 1, d) in y2026 for d in range(1, 10))
    assert date(2026, 1, 12) not in y2026


@pytest.fixture
def ru(ru_facts: None) -> BusinessCalendar:
    return BusinessCalendar(CalendarConfig())


@pytest.fixture
def plain() -> BusinessCalendar:
    """Moscow hours, Monday to Friday, no public holidays."""
    return BusinessCalendar(CalendarConfig(country=None))


# --- config -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("start,end", [(time(9), time(9)), (time(18), time(9))])
def test_config_rejects_work_end_not_after_start(start: time, end: time) -> None:
    with pytest.raises(ValueError, match="work_end"):
        CalendarConfig(work_start=start, work_end=end)


def test_config_rejects_bad_timezone_country_and_weekdays() -> None:
    with pytest.raises(ValueError, match="timezone"):
        CalendarConfig(timezone="Mars/Olympus_Mons")
    with pytest.raises(ValueError, match="country"):
        CalendarConfig(country="XX")
    with pytest.raises(ValueError, match="work_days"):
        CalendarConfig(work_days=frozenset({0, 7}))


def test_config_normalises_collections_to_frozensets() -> None:
    cfg = CalendarConfig(work_days={0, 1}, extra_holidays=[date(2025, 1, 13)])  # type: ignore[arg-type]
    assert cfg.work_days == frozenset({0, 1}) and isinstance(cfg.work_days, frozenset)
    assert isinstance(cfg.extra_holidays, frozenset)
    hash(cfg)


def test_day_seconds() -> None:
    assert BusinessCalendar(CalendarConfig()).day_seconds == 9 * 3600
    assert BusinessCalendar(CalendarConfig(work_start=time(10), work_end=time(19, 30))).day_seconds == 34200


# --- working days -------------------------------------------------------------------------------------------------


def test_ru_holidays_and_transferred_saturday(ru: BusinessCalendar) -> None:
    assert ru.is_working_day(date(2025, 10, 31))  # Friday
    assert ru.is_working_day(date(2025, 11, 1))  # Saturday, transferred working day
    assert not ru.is_working_day(date(2025, 11, 2))  # Sunday
    assert not ru.is_working_day(date(2025, 11, 3))  # Monday, transferred day off
    assert not ru.is_working_day(date(2025, 11, 4))  # Tuesday, Unity Day
    assert ru.is_working_day(date(2025, 11, 5))
    assert not ru.is_working_day(date(2025, 12, 31))
    assert [d for d in range(1, 13) if ru.is_working_day(date(2026, 1, d))] == [12]


def test_no_country_means_only_work_days(plain: BusinessCalendar) -> None:
    assert plain.is_working_day(date(2025, 11, 4))
    assert not plain.is_working_day(date(2025, 11, 1))
    assert plain.is_working_day(date(2026, 1, 5))


def test_extra_days_override_the_country_calendar() -> None:
    cal = BusinessCalendar(
        CalendarConfig(
            extra_holidays=frozenset({date(2025, 11, 5), date(2025, 11, 1), date(2025, 11, 8)}),
            extra_workdays=frozenset({date(2025, 11, 4), date(2025, 11, 8), date(2025, 11, 9)}),
        )
    )
    assert cal.is_working_day(date(2025, 11, 4))  # public holiday made a company working day
    assert not cal.is_working_day(date(2025, 11, 5))  # ordinary Wednesday made a company day off
    assert not cal.is_working_day(date(2025, 11, 1))  # transferred working Saturday cancelled by the company
    assert cal.is_working_day(date(2025, 11, 8))  # both sets: extra_workdays wins
    assert cal.is_working_day(date(2025, 11, 9))  # plain Sunday made a working day
    assert cal.working_seconds(msk(2025, 11, 4, 12), msk(2025, 11, 6, 12)) == 3 * HOUR + 6 * HOUR


def test_custom_work_days() -> None:
    cal = BusinessCalendar(CalendarConfig(country=None, work_days=frozenset({5, 6})))
    assert cal.is_working_day(date(2025, 10, 11)) and not cal.is_working_day(date(2025, 10, 13))
    assert cal.working_seconds(msk(2025, 10, 10), msk(2025, 10, 14)) == 2 * DAY


def test_holiday_objects_are_built_once_per_year(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    real = holidays.country_holidays

    def counting(*args: object, **kwargs: object) -> holidays.HolidayBase:
        calls.append(kwargs.get("years"))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(holidays, "country_holidays", counting)
    cal = BusinessCalendar(CalendarConfig())
    assert calls == []  # lazy
    cal.working_seconds(msk(2025, 1, 1), msk(2026, 2, 1))
    cal.is_working_day(date(2025, 6, 12))
    cal.working_seconds(msk(2025, 3, 1), msk(2025, 4, 1))
    assert sorted(calls) == [2025, 2026]  # type: ignore[type-var]


# --- working_seconds ----------------------------------------------------------------------------------------------


def test_due_after_hours_before_the_november_long_weekend(ru: BusinessCalendar) -> None:
    # Due Friday 19:00; Saturday 1 Nov was worked in full; Mon/Tue off; checked Wednesday 10:00.
    assert ru.working_seconds(msk(2025, 10, 31, 19), msk(2025, 11, 5, 10)) == 10 * HOUR
    # Weekends only: Monday and Tuesday would count instead of Saturday.
    weekends_only = BusinessCalendar(CalendarConfig(country=None))
    assert weekends_only.working_seconds(msk(2025, 10, 31, 19), msk(2025, 11, 5, 10)) == 2 * DAY + HOUR


def test_new_year_holidays(ru: BusinessCalendar) -> None:
    # Tuesday 30 Dec 17:00 → Monday 12 Jan 10:00: one hour on each side of the 31 Dec..11 Jan break.
    assert ru.working_seconds(msk(2025, 12, 30, 17), msk(2026, 1, 12, 10)) == 2 * HOUR
    assert ru.working_seconds(msk(2025, 12, 31, 9), msk(2026, 1, 11, 23)) == 0


def test_same_day_across_midnight_weekend_and_reversed(plain: BusinessCalendar) -> None:
    assert plain.working_seconds(msk(2025, 10, 8, 10, 15), msk(2025, 10, 8, 11, 45)) == 1.5 * HOUR
    assert plain.working_seconds(msk(2025, 10, 8, 7), msk(2025, 10, 8, 20)) == DAY  # clipped to hours
    assert plain.working_seconds(msk(2025, 10, 8, 17), msk(2025, 10, 9, 10)) == 2 * HOUR  # across midnight
    assert plain.working_seconds(msk(2025, 10, 8, 19), msk(2025, 10, 9, 8)) == 0  # overnight only
    assert plain.working_seconds(msk(2025, 10, 11, 9), msk(2025, 10, 12, 18)) == 0  # weekend
    assert plain.working_seconds(msk(2025, 10, 9, 12), msk(2025, 10, 8, 12)) == 0  # reversed
    assert plain.working_seconds(msk(2025, 10, 8, 12), msk(2025, 10, 8, 12)) == 0
    assert plain.working_seconds(msk(2025, 10, 6), msk(2025, 10, 13)) == 5 * DAY


def test_inputs_in_any_timezone(plain: BusinessCalendar) -> None:
    # 06:00 UTC is 09:00 in Moscow: the period is local, whatever zone the caller uses.
    start = datetime(2025, 10, 8, 6, tzinfo=UTC)
    end = datetime(2025, 10, 8, 16, tzinfo=ZoneInfo("Asia/Yekaterinburg"))  # 14:00 Moscow
    assert plain.working_seconds(start, end) == 5 * HOUR
    # 23:30 UTC on Tuesday is already Wednesday 02:30 in Moscow.
    assert plain.working_seconds(datetime(2025, 10, 7, 23, 30, tzinfo=UTC), msk(2025, 10, 8, 10)) == HOUR


def test_naive_datetimes_are_rejected(plain: BusinessCalendar) -> None:
    with pytest.raises(ValueError, match="naive"):
        plain.working_seconds(datetime(2025, 10, 8, 10), msk(2025, 10, 8, 12))
    with pytest.raises(ValueError, match="naive"):
        plain.cutoff(datetime(2025, 10, 8, 10), 60)


@pytest.mark.parametrize(
    "friday,monday",
    [((2025, 3, 28), (2025, 3, 31)), ((2025, 10, 24), (2025, 10, 27))],
    ids=["spring-forward", "fall-back"],
)
def test_dst_keeps_nine_hour_days(friday: tuple[int, int, int], monday: tuple[int, int, int]) -> None:
    cal = BusinessCalendar(CalendarConfig(timezone="Europe/Berlin", country=None))
    assert cal.working_seconds(berlin(*monday, 0), berlin(*monday, 23)) == DAY
    assert cal.working_seconds(berlin(*friday, 12), berlin(*monday, 12)) == DAY
    assert cal.working_seconds(berlin(*friday, 9), berlin(*monday, 18)) == 2 * DAY
    # Monday's period follows the new offset: 08:00 Berlin is before hours on both sides of the switch.
    assert cal.working_seconds(berlin(*monday, 8), berlin(*monday, 9)) == 0
    assert cal.cutoff(berlin(*monday, 12), DAY) == berlin(*friday, 12).astimezone(UTC)


# --- cutoff -------------------------------------------------------------------------------------------------------


def test_cutoff_examples(plain: BusinessCalendar, ru: BusinessCalendar) -> None:
    monday = msk(2025, 10, 13, 10)
    assert plain.cutoff(monday, 0) == monday
    assert plain.cutoff(monday, -5) == monday
    assert plain.cutoff(monday, 1800) == msk(2025, 10, 13, 9, 30)
    # Exactly the Monday morning hour: everything back to Friday 18:00 has W = 1 h, the latest such instant is 09:00.
    assert plain.cutoff(monday, HOUR) == msk(2025, 10, 13, 9)
    assert plain.cutoff(monday, HOUR + 1) == msk(2025, 10, 10, 17, 59, 59)
    assert plain.cutoff(monday, 2 * HOUR) == msk(2025, 10, 10, 17)
    # From a weekend the walk starts at Friday's end.
    assert plain.cutoff(msk(2025, 10, 11, 12), DAY) == msk(2025, 10, 10, 9)
    assert plain.cutoff(msk(2025, 10, 11, 12), 60) == msk(2025, 10, 10, 17, 59)
    # Through the RU November transfer: Wednesday hour + Saturday day exhaust 10 h at Saturday 09:00.
    now = msk(2025, 11, 5, 10)
    assert ru.cutoff(now, 10 * HOUR) == msk(2025, 11, 1, 9)
    assert ru.cutoff(now, 10 * HOUR + 60) == msk(2025, 10, 31, 17, 59)
    # The Friday-19:00 task is 10 working hours overdue: it violates a 10 h rule, not an 11 h one.
    due = msk(2025, 10, 31, 19)
    assert due <= ru.cutoff(now, 10 * HOUR)
    assert not due <= ru.cutoff(now, 11 * HOUR)


def test_cutoff_returns_utc(ru: BusinessCalendar) -> None:
    result = ru.cutoff(msk(2025, 10, 13, 10), 2 * HOUR)
    assert result.tzinfo is UTC
    assert result == datetime(2025, 10, 10, 14, tzinfo=UTC)


def _random_instants(rng: random.Random, n: int) -> list[datetime]:
    base = datetime(2025, 9, 1, tzinfo=UTC)
    out = []
    for _ in range(n):
        if rng.random() < 0.4:
            # On whole local hours, to land exactly on period starts and ends.
            local = datetime(2025, 9, 1, tzinfo=MSK) + timedelta(days=rng.randrange(150), hours=rng.randrange(24))
            out.append(local)
        else:
            out.append(base + timedelta(seconds=rng.uniform(0, 150 * 86400)))
    return out


def _random_amounts(rng: random.Random, n: int) -> list[float]:
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.3:
            out.append(rng.randrange(1, 40) * HOUR)  # whole hours, often whole days
        elif r < 0.4:
            out.append(rng.randrange(1, 30) * DAY)
        elif r < 0.5:
            out.append(rng.uniform(0, 120))
        else:
            out.append(rng.uniform(0, 30 * DAY))
    return out


def test_cutoff_is_the_exact_boundary(ru: BusinessCalendar) -> None:
    """For t <= now: t <= cutoff(now, s)  <=>  working_seconds(t, now) >= s (at microsecond resolution)."""
    rng = random.Random(20251101)
    nows = _random_instants(rng, 400)
    amounts = _random_amounts(rng, 400)
    tick = timedelta(microseconds=1)
    for now, s in zip(nows, amounts, strict=True):
        c = ru.cutoff(now, s)
        assert c <= now
        assert ru.working_seconds(c, now) >= s - 1e-6, (now, s, c)
        for step in (tick, timedelta(seconds=1), timedelta(hours=3)):
            if c + step <= now:
                assert ru.working_seconds(c + step, now) < s, (now, s, c, step)
        # The boundary never sits at a period end followed by idle time: W grows right after it.
        if c < now:
            assert ru.is_working_time(c), (now, s, c)


def test_cutoff_performance(ru: BusinessCalendar) -> None:
    now = msk(2025, 12, 15, 12, 34)
    ru.cutoff(now, 30 * DAY)  # warm the year and day caches, as a long-running worker would be
    runs = 300
    started = clock.perf_counter()
    for i in range(runs):
        ru.cutoff(now - timedelta(minutes=i), 30 * DAY)
    assert (clock.perf_counter() - started) / runs < 1e-3


# --- add_working / next_working_start -----------------------------------------------------------------------------


def test_add_working_examples(plain: BusinessCalendar, ru: BusinessCalendar) -> None:
    assert plain.add_working(msk(2025, 10, 10, 17), 2 * HOUR) == msk(2025, 10, 13, 10)
    assert plain.add_working(msk(2025, 10, 10, 17), HOUR) == msk(2025, 10, 10, 18)  # due at close, not Monday
    assert plain.add_working(msk(2025, 10, 11, 15), 30 * 60) == msk(2025, 10, 13, 9, 30)  # counting starts Monday
    assert plain.add_working(msk(2025, 10, 8, 7), 0) == msk(2025, 10, 8, 9)
    assert plain.add_working(msk(2025, 10, 8, 12), 0) == msk(2025, 10, 8, 12)
    assert plain.add_working(msk(2025, 10, 8, 12), 5 * DAY) == msk(2025, 10, 15, 12)
    # RU: Friday 31 Oct 17:00 + 2 h lands on the transferred Saturday; + 11 h skips to Wednesday.
    assert ru.add_working(msk(2025, 10, 31, 17), 2 * HOUR) == msk(2025, 11, 1, 10)
    assert ru.add_working(msk(2025, 10, 31, 17), 11 * HOUR) == msk(2025, 11, 5, 10)
    assert ru.add_working(msk(2025, 12, 30, 17), 2 * HOUR) == msk(2026, 1, 12, 10)
    assert ru.add_working(msk(2025, 10, 31, 17), HOUR).tzinfo is UTC


def test_add_working_is_inverse_of_working_seconds(ru: BusinessCalendar) -> None:
    rng = random.Random(7)
    for start, s in zip(_random_instants(rng, 400), _random_amounts(rng, 400), strict=True):
        start = ru.next_working_start(start) if rng.random() < 0.7 else start
        end = ru.add_working(start, s)
        assert abs(ru.working_seconds(start, end) - s) <= 1e-6, (start, s, end)
        # And nothing earlier would do.
        assert ru.working_seconds(start, end - timedelta(microseconds=1)) < s


def test_working_seconds_is_additive(ru: BusinessCalendar) -> None:
    rng = random.Random(11)
    points = _random_instants(rng, 300)
    for a, b, c in zip(points[::3], points[1::3], points[2::3], strict=True):
        a, b, c = sorted((a, b, c))
        assert ru.working_seconds(a, c) == pytest.approx(ru.working_seconds(a, b) + ru.working_seconds(b, c), abs=1e-6)


def test_is_working_time_and_next_working_start(ru: BusinessCalendar) -> None:
    assert ru.is_working_time(msk(2025, 10, 31, 9))
    assert ru.is_working_time(msk(2025, 10, 31, 17, 59, 59))
    assert not ru.is_working_time(msk(2025, 10, 31, 18))  # periods are half-open
    assert not ru.is_working_time(msk(2025, 10, 31, 8, 59))
    assert ru.is_working_time(msk(2025, 11, 1, 12))  # transferred Saturday
    assert not ru.is_working_time(msk(2025, 11, 4, 12))
    assert ru.next_working_start(msk(2025, 10, 31, 12)) == msk(2025, 10, 31, 12)
    assert ru.next_working_start(msk(2025, 10, 31, 18)) == msk(2025, 11, 1, 9)
    assert ru.next_working_start(msk(2025, 11, 1, 18)) == msk(2025, 11, 5, 9)
    assert ru.next_working_start(msk(2025, 12, 30, 23)) == msk(2026, 1, 12, 9)


def test_calendar_without_working_days_fails_instead_of_spinning() -> None:
    cal = BusinessCalendar(CalendarConfig(country=None, work_days=frozenset()))
    assert cal.working_seconds(msk(2025, 1, 1), msk(2025, 12, 31)) == 0
    with pytest.raises(ValueError, match="no working days"):
        cal.cutoff(msk(2025, 10, 8, 12), HOUR)
    with pytest.raises(ValueError, match="no working days"):
        cal.add_working(msk(2025, 10, 8, 12), HOUR)


# --- humanize -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n,minutes,hours,days",
    [
        (1, "1 рабочая минута", "1 рабочий час", "1 рабочий день"),
        (2, "2 рабочие минуты", "2 рабочих часа", "2 рабочих дня"),
        (4, "4 рабочие минуты", "4 рабочих часа", "4 рабочих дня"),
        (5, "5 рабочих минут", "5 рабочих часов", "5 рабочих дней"),
        (11, "11 рабочих минут", "11 рабочих часов", "11 рабочих дней"),
        (12, "12 рабочих минут", "12 рабочих часов", "12 рабочих дней"),
        (21, "21 рабочая минута", "21 рабочий час", "21 рабочий день"),
        (22, "22 рабочие минуты", "22 рабочих часа", "22 рабочих дня"),
        (25, "25 рабочих минут", "25 рабочих часов", "25 рабочих дней"),
    ],
)
def test_humanize_russian_plurals(n: int, minutes: str, hours: str, days: str) -> None:
    assert humanize(n * 60, 86400) == minutes
    assert humanize(n * HOUR, 30 * 86400) == hours  # a long "day" keeps the value in hours
    assert humanize(n * DAY, int(DAY)) == days


def test_humanize_russian_teens_and_hundreds() -> None:
    assert humanize(111 * DAY, int(DAY)) == "111 рабочих дней"
    assert humanize(101 * DAY, int(DAY)) == "101 рабочий день"
    assert humanize(14 * DAY, int(DAY)) == "14 рабочих дней"


def test_humanize_units_and_rounding() -> None:
    day = int(DAY)
    assert humanize(0, day) == "0 рабочих минут"
    assert humanize(-5, day) == "0 рабочих минут"
    assert humanize(1, day) == "1 рабочая минута"  # something is already late
    assert humanize(45 * 60 + 59, day) == "45 рабочих минут"
    assert humanize(HOUR - 1, day) == "59 рабочих минут"
    assert humanize(HOUR, day) == "1 рабочий час"
    assert humanize(2 * HOUR - 1e-7, day) == "2 рабочих часа"  # microsecond noise does not floor a whole hour
    assert humanize(DAY - 1, day) == "8 рабочих часов"
    assert humanize(DAY, day) == "1 рабочий день"
    assert humanize(3 * DAY + 8 * HOUR, day) == "3 рабочих дня"


def test_humanize_english() -> None:
    day = int(DAY)
    assert humanize(0, day, "en") == "0 working minutes"
    assert humanize(60, day, "en") == "1 working minute"
    assert humanize(45 * 60, day, "en") == "45 working minutes"
    assert humanize(HOUR, day, "en") == "1 working hour"
    assert humanize(2 * HOUR, day, "en") == "2 working hours"
    assert humanize(DAY, day, "en") == "1 working day"
    assert humanize(5 * DAY, day, "en") == "5 working days"
    assert humanize(21 * DAY, day, "en") == "21 working days"


def test_humanize_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        humanize(60, 0)
    with pytest.raises(ValueError):
        humanize(60, 3600, "de")


def test_humanize_with_calendar_output(ru: BusinessCalendar) -> None:
    overdue = ru.working_seconds(msk(2025, 10, 31, 19), msk(2025, 11, 5, 10))
    assert humanize(overdue, ru.day_seconds) == "1 рабочий день"
    assert humanize(overdue, ru.day_seconds, "en") == "1 working day"


def test_deadline_cutoff_is_exactly_the_inverse_of_add_working():
    """t <= deadline_cutoff(now, s) exactly when add_working(t, s) <= now, for a grace of none
    too (then a deadline out of hours falls on the next working minute)."""
    cal = BusinessCalendar(CalendarConfig(timezone="Europe/Moscow", country="RU"))
    rng = random.Random(13)
    base = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)  # the week of 8 March (Monday 9 March is a holiday)
    for _ in range(3000):
        t = base + timedelta(seconds=rng.randint(0, 7 * 86400))
        now = t + timedelta(seconds=rng.choice([0, 1, 59, 3600, rng.randint(0, 5 * 86400)]))
        seconds = rng.choice([0, 0, 60, 900, 3600, 27 * 3600])
        assert (t <= cal.deadline_cutoff(now, seconds)) == (cal.add_working(t, seconds) <= now), (t, now, seconds)


def test_a_deadline_with_no_grace_out_of_hours_waits_for_the_next_working_minute():
    cal = BusinessCalendar(CalendarConfig(timezone="Europe/Moscow", country="RU"))
    msk = ZoneInfo("Europe/Moscow")
    due = datetime(2026, 3, 6, 18, 55, tzinfo=msk)  # Friday; Monday 9 March is a holiday
    assert cal.add_working(due, 0) == datetime(2026, 3, 10, 9, 0, tzinfo=msk)
    assert cal.deadline_cutoff(datetime(2026, 3, 9, 12, 0, tzinfo=msk), 0) < due
    assert cal.deadline_cutoff(datetime(2026, 3, 10, 9, 0, tzinfo=msk), 0) >= due
    assert cal.cutoff(datetime(2026, 3, 6, 19, 0, tzinfo=msk), 0) >= due  # (cutoff: wall-clock "now")
