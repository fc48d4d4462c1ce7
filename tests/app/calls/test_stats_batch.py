"""The managers' daily figures of many (manager, day) pairs, computed in a few statements, equal
what each pair computed on its own gives (cards_changed(), the calls counted one by one)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from app.accounts.models import Account
from app.calls import stats
from app.calls.models import Call, CallStatsDaily
from app.mirror.models import Note, StageHistory, Task
from tests.conftest import create_account

T0 = datetime(2025, 11, 24, 20, 30, tzinfo=UTC)  # 23:30 in Moscow: an hour later is the next local day


async def test_many_pairs_at_once_equal_each_pair_alone(client, rt):
    acc = await create_account(client)
    aid = acc["id"]
    managers = ["501", "502", "503"]
    async with rt.sessions() as s, s.begin():
        timezone = await s.scalar(select(Account.timezone).where(Account.id == aid))
        shapes = [("in", "answered", 95), ("out", "answered", 12), ("in", "missed", None), ("out", None, None)]
        shapes += [("internal", "answered", 300), (None, "answered", 41)]
        n = 0
        for hours in (-30, -2, 0.25, 1, 2, 27):
            for i, manager in enumerate(managers):
                direction, status, talk = shapes[(n + i) % len(shapes)]
                n += 1
                s.add(
                    Call(
                        account_id=aid,
                        provider="mango",
                        provider_call_id=f"c{n}",
                        direction=direction,
                        status=status,
                        talk_seconds=talk,
                        manager_id=manager,
                        started_at=T0 + timedelta(hours=hours),
                        is_final=n % 7 != 0,
                    )
                )
                at = T0 + timedelta(hours=hours, minutes=5)
                deal = f"D{n % 4}"
                s.add(
                    Note(
                        account_id=aid,
                        id=f"N{n}",
                        entity_type="deal",
                        entity_id=deal,
                        deal_id=deal,
                        kind="common",
                        text="x",
                        text_norm="x",
                        created_by=manager,
                        created_at=at,
                    )
                )
                s.add(
                    StageHistory(
                        account_id=aid,
                        deal_id=f"D{n % 3}",
                        pipeline_id="p",
                        stage_id="s",
                        entered_at=at,
                        by_user_id=manager,
                    )
                )
                s.add(
                    Task(
                        account_id=aid,
                        id=f"T{n}",
                        deal_id=f"D{n % 5}",
                        created_by=manager,
                        created_at=at,
                        responsible_user_id=managers[(i + 1) % 3],
                        completed_at=at + timedelta(minutes=1),
                        is_completed=True,
                        is_deleted=False,
                    )
                )
    days = {stats.local_day(T0 + timedelta(hours=h), timezone) for h in (-30, -2, 1, 27, 60)}
    pairs = {(m, d) for m in [*managers, "nobody"] for d in days}
    async with rt.sessions() as s, s.begin():
        await stats.refresh(s, aid, timezone, pairs)
    async with rt.sessions() as s:
        got = {(r.manager_id, r.day): r for r in await s.scalars(select(CallStatsDaily))}
        calls = list(await s.scalars(select(Call)))
        assert set(got) == pairs
        for manager, day in pairs:
            start, end = stats.day_bounds(day, timezone)
            mine = [
                c
                for c in calls
                if c.manager_id == manager and c.is_final and c.direction != "internal" and start <= c.started_at < end
            ]
            answered = [c for c in mine if c.status == "answered"]
            row = got[(manager, day)]
            assert (row.calls, row.talk_seconds, row.successful, row.incoming, row.outgoing, row.missed) == (
                len(mine),
                sum(c.talk_seconds or 0 for c in answered),
                sum(1 for c in answered if (c.talk_seconds or 0) >= stats.SUCCESSFUL_TALK_SECONDS),
                sum(1 for c in mine if c.direction == "in"),
                sum(1 for c in mine if c.direction == "out"),
                sum(1 for c in mine if c.direction == "in" and c.status is not None and c.status != "answered"),
            ), (manager, day)
            assert row.cards_changed == await stats.cards_changed(s, aid, manager, start, end), (manager, day)
