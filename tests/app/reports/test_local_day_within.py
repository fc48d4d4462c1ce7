"""local_day_within: the reports' local day of a row bounded to a span, found among the span's local
midnights on PostgreSQL. It must give the date local_day gives for every instant of the span: at
each side of a midnight, across a change of clocks, from a span that does not start at a midnight."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import String, literal, select

from app.calls.models import Call
from app.db import local_day, local_day_within
from app.reports.periods import Period
from app.runtime import Runtime
from tests.app.rules.mirror_builder import new_account
from tests.app.rules.test_call_rules import add_call


def _local(zone: str, *args: int) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(zone)).astimezone(UTC)


@pytest.mark.parametrize(
    ("zone", "first", "last"),
    [
        # Berlin's clocks go back at 03:00 on Sun 25 Oct 2026 (a 25-hour day), forward on 29 Mar.
        ("Europe/Berlin", date(2026, 10, 23), date(2026, 10, 27)),
        ("Europe/Berlin", date(2026, 3, 28), date(2026, 3, 30)),
        # Moscow has no change of clocks; the reports' usual zone, and a month of it.
        ("Europe/Moscow", date(2026, 11, 6), date(2026, 12, 5)),
    ],
)
async def test_same_days_as_local_day(rt: Runtime, zone: str, first: date, last: date) -> None:
    aid = await new_account(rt, timezone=zone)
    period = Period(first, last, zone)
    instants = [period.start, period.end - timedelta(microseconds=1)]
    for day in period.days():
        # Either side of each local midnight, and the hours of the day (the 25th hour included).
        midnight = _local(zone, day.year, day.month, day.day)
        instants += [midnight - timedelta(seconds=1), midnight, midnight + timedelta(seconds=1)]
        instants += [midnight + timedelta(hours=h, minutes=30) for h in range(25)]
    async with rt.sessions() as s, s.begin():
        for at in instants:
            add_call(s, aid, started=at)
    # A span starting mid-day (not at a local midnight) is answered the same way.
    mid_day = period.start + timedelta(hours=13)
    async with rt.reads() as s:
        for start in (period.start, mid_day):
            rows = (
                await s.execute(
                    select(
                        Call.started_at,
                        local_day(Call.started_at, literal(zone, String())),
                        local_day_within(Call.started_at, zone, start, period.end),
                    ).where(Call.account_id == aid, Call.started_at >= start, Call.started_at < period.end)
                )
            ).all()
            assert len(rows) == sum(start <= at < period.end for at in instants)
            for at, expected, got in rows:
                assert str(got)[:10] == str(expected)[:10], (at, expected, got)
            days = {str(got)[:10] for _, _, got in rows}
            assert days == {d.isoformat() for d in period.days()}
