"""The digest's schedule: working days of the business calendar, the account's local time, and
once only however many schedulers run at once (the outbox's unique dedup key; both databases)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
from sqlalchemy import func, select

from app.digest import scheduler
from app.outbox.models import OutboxAction
from app.runtime import Runtime
from app.workers import PERIODIC

from .scenario import build, msk


async def _configure(client: httpx.AsyncClient, a: int, **extra: object) -> None:
    resp = await client.put(f"/api/accounts/{a}/digest/settings", json={"crm": True, "crm_user_id": "101", **extra})
    assert resp.status_code == 200, resp.text


async def _keys(rt: Runtime, a: int) -> list[str]:
    async with rt.reads() as s:
        return list(
            await s.scalars(
                select(OutboxAction.dedup_key).where(OutboxAction.account_id == a).order_by(OutboxAction.id)
            )
        )


async def test_working_days_at_local_time(client: httpx.AsyncClient, rt: Runtime) -> None:
    a = await build(rt)
    await _configure(client, a)
    assert await scheduler.due(rt, msk(11, 5, 8, 59)) == 0  # Thu, before 09:00
    assert await scheduler.due(rt, msk(11, 5, 9, 0)) == 1
    assert await scheduler.due(rt, msk(11, 5, 9, 1)) == 0  # every later tick: nothing new
    assert await scheduler.due(rt, msk(11, 5, 18)) == 0
    assert await _keys(rt, a) == ["morning:2026-11-05:crm"]


async def test_holiday_and_weekend_produce_no_digest(client: httpx.AsyncClient, rt: Runtime) -> None:
    a = await build(rt)
    await _configure(client, a)
    assert await scheduler.due(rt, msk(11, 4, 10)) == 0  # Wed 4 Nov: Unity Day, a public holiday in Russia
    assert await scheduler.due(rt, msk(11, 7, 10)) == 0  # Saturday
    assert await scheduler.due(rt, msk(11, 8, 10)) == 0  # Sunday
    assert await _keys(rt, a) == []
    assert await scheduler.due(rt, msk(11, 9, 10)) == 1  # Monday
    assert await _keys(rt, a) == ["morning:2026-11-09:crm"]


async def test_time_zone_boundary(client: httpx.AsyncClient, rt: Runtime) -> None:
    far = await build(rt, timezone="Asia/Vladivostok")  # UTC+10
    near = await build(rt)  # Moscow, UTC+3
    await _configure(client, far, send_at="08:30")
    await _configure(client, near)
    # Sun 8 Nov 22:29 UTC is Mon 08:29 in Vladivostok: not yet; 22:30 UTC is 08:30 Monday there,
    # while Moscow is still at 01:30 on Monday, and it is Sunday in UTC.
    assert await scheduler.due(rt, datetime(2026, 11, 8, 22, 29, tzinfo=UTC)) == 0
    assert await scheduler.due(rt, datetime(2026, 11, 8, 22, 30, tzinfo=UTC)) == 1
    assert await _keys(rt, far) == ["morning:2026-11-09:crm"]  # the local Monday, not UTC's Sunday
    assert await _keys(rt, near) == []
    assert await scheduler.due(rt, datetime(2026, 11, 9, 6, 0, tzinfo=UTC)) == 1  # 09:00 in Moscow
    assert await _keys(rt, near) == ["morning:2026-11-09:crm"]


async def test_disabled_sends_nothing(client: httpx.AsyncClient, rt: Runtime) -> None:
    a = await build(rt)
    await _configure(client, a, enabled=False)
    assert await scheduler.due(rt, msk(11, 5, 10)) == 0
    assert await _keys(rt, a) == []


async def test_two_schedulers_race(client: httpx.AsyncClient, rt: Runtime) -> None:
    """Two schedulers (bypassing the leader lock) tick at the same moment, several times over: one
    row per channel. On PostgreSQL the inserts really race, and the unique index decides."""
    a = await build(rt)
    await _configure(client, a, telegram={"bot_token": "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw", "chat_id": "42"})
    other = Runtime.build(rt.settings)
    try:
        results = await asyncio.gather(*(scheduler.due(r, msk(11, 5, 9, 30)) for r in (rt, other, rt, other)))
    finally:
        await other.dispose()
    assert sorted(await _keys(rt, a)) == ["morning:2026-11-05:crm", "morning:2026-11-05:telegram"]
    assert sum(results) >= 1
    async with rt.reads() as s:
        assert await s.scalar(select(func.count()).select_from(OutboxAction)) == 2


def test_the_leader_runs_it() -> None:
    assert any(name == "morning-digest" and job is scheduler.due for name, _, job in PERIODIC)
