"""overdue_task on hand-built mirror states, evaluated at fixed instants (Moscow time, RU calendar)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from app.mirror.models import Deal, Task
from tests.app.rules.mirror_builder import (
    MANAGER,
    OTHER_MANAGER,
    Event,
    add_deal,
    add_task,
    change,
    default_calendar,
    evaluate,
    finding,
    findings,
    history,
    msk,
    new_account,
    save_rules,
)

RULE = "overdue_task"
# Monday 2025-12-08, an ordinary working week in Russia.
CREATED = msk(2025, 12, 8, 9, 30)
DUE = msk(2025, 12, 8, 12, 0)
NOW = msk(2025, 12, 8, 14, 0)


async def _deal_with_task(rt, *, due=DUE, responsible=MANAGER):
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=CREATED)
        add_task(s, aid, "T1", "D1", due_at=due, created_at=CREATED, responsible_user_id=responsible)
    return aid


async def test_past_due_task_opens_a_finding_started_at_its_due_time(rt):
    aid = await _deal_with_task(rt)

    result = await evaluate(rt, aid, NOW)

    f = await finding(rt, aid, RULE, "T1")
    assert f is not None
    assert (f.status, f.entity_type, f.deal_id, f.manager_id) == ("open", "task", "D1", MANAGER)
    assert f.started_at == DUE
    assert f.opened_at == NOW
    assert f.times_opened == 1
    assert f.rule_version == 1
    assert f.suppressed is False
    assert result.opened >= 1
    assert await history(rt, f.id) == [Event(None, "open", "sweep", "condition began")]


async def test_task_not_yet_due_has_no_finding_until_its_due_time(rt):
    aid = await _deal_with_task(rt, due=msk(2025, 12, 8, 15, 0))

    await evaluate(rt, aid, NOW)
    assert await findings(rt, aid, RULE) == []

    await evaluate(rt, aid, msk(2025, 12, 8, 14, 59, 59))
    assert await findings(rt, aid, RULE) == []

    await evaluate(rt, aid, msk(2025, 12, 8, 15, 0))
    f = await finding(rt, aid, RULE, "T1")
    assert f is not None and f.status == "open"


async def test_completed_task_resolves_and_reopening_it_reopens_the_same_finding(rt):
    aid = await _deal_with_task(rt)
    await evaluate(rt, aid, NOW)
    first = await finding(rt, aid, RULE, "T1")
    assert first is not None and first.status == "open"

    later = NOW + timedelta(minutes=30)
    await change(rt, Task, aid, "T1", is_completed=True, completed_at=later - timedelta(minutes=1))
    await evaluate(rt, aid, later)

    resolved = await finding(rt, aid, RULE, "T1")
    assert resolved is not None
    assert resolved.status == "resolved"
    assert resolved.resolved_at == later
    assert (await history(rt, first.id))[-1] == Event("open", "resolved", "sweep", "condition cleared")

    reopened_at = NOW + timedelta(hours=1)
    await change(rt, Task, aid, "T1", is_completed=False, completed_at=None)
    await evaluate(rt, aid, reopened_at)

    rows = await findings(rt, aid, RULE)
    assert len(rows) == 1, "a regression reuses the finding row"
    again = rows[0]
    assert again.id == first.id
    assert again.status == "open"
    assert again.times_opened == 2
    assert again.opened_at == reopened_at
    assert again.resolved_at is None
    assert again.started_at == DUE
    assert await history(rt, first.id) == [
        Event(None, "open", "sweep", "condition began"),
        Event("open", "resolved", "sweep", "condition cleared"),
        Event("resolved", "open", "sweep", "regression"),
    ]


async def test_deleted_task_resolves_its_finding(rt):
    aid = await _deal_with_task(rt)
    await evaluate(rt, aid, NOW)

    await change(rt, Task, aid, "T1", is_deleted=True)
    await evaluate(rt, aid, NOW + timedelta(minutes=5))

    f = await finding(rt, aid, RULE, "T1")
    assert f is not None and f.status == "resolved"
    assert (await history(rt, f.id))[-1].reason == "condition cleared"


async def test_grace_of_two_working_hours_keeps_the_finding_pending_across_the_weekend(rt):
    # Friday 2025-12-26 17:30: half an hour of the working day is left, the rest is next Monday.
    cal = default_calendar()
    assert cal.is_working_day(date(2025, 12, 26)) and cal.is_working_day(date(2025, 12, 29))
    assert not cal.is_working_day(date(2025, 12, 27)) and not cal.is_working_day(date(2025, 12, 28))
    due = msk(2025, 12, 26, 17, 30)
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=msk(2025, 12, 26, 10))
        add_task(s, aid, "T1", "D1", due_at=due, created_at=msk(2025, 12, 26, 10))
    await save_rules(rt, aid, {"rules": {RULE: {"settings": {"grace_minutes": 120}}}})

    for now in (msk(2025, 12, 26, 18, 30), msk(2025, 12, 28, 12), msk(2025, 12, 29, 10, 29, 59)):
        await evaluate(rt, aid, now)
        f = await finding(rt, aid, RULE, "T1")
        assert f is not None
        assert f.status == "pending", now
        assert (f.times_opened, f.opened_at, f.started_at) == (0, None, due)

    opened = msk(2025, 12, 29, 10, 30)  # 30 min on Friday + 90 min on Monday = 2 working hours
    await evaluate(rt, aid, opened)
    f = await finding(rt, aid, RULE, "T1")
    assert f is not None
    assert (f.status, f.times_opened, f.opened_at, f.started_at) == ("open", 1, opened, due)
    assert await history(rt, f.id) == [
        Event(None, "pending", "sweep", "condition began"),
        Event("pending", "open", "sweep", "grace period over"),
    ]


async def test_grace_of_sixty_minutes_pending_on_sunday_open_on_monday_morning(rt):
    due = msk(2025, 12, 26, 17, 30)
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=msk(2025, 12, 26, 10))
        add_task(s, aid, "T1", "D1", due_at=due, created_at=msk(2025, 12, 26, 10))
    await save_rules(rt, aid, {"rules": {RULE: {"settings": {"grace_minutes": 60}}}})

    await evaluate(rt, aid, msk(2025, 12, 28, 20))
    f = await finding(rt, aid, RULE, "T1")
    assert f is not None and f.status == "pending"

    await evaluate(rt, aid, msk(2025, 12, 29, 10))
    f = await finding(rt, aid, RULE, "T1")
    assert f is not None and f.status == "open"


@pytest.mark.parametrize(
    ("deal_change", "reason"),
    [
        ({"is_closed": True, "closed_at": NOW - timedelta(minutes=1), "stage_id": "142"}, "deal closed"),
        ({"is_deleted": True, "deleted_at": NOW - timedelta(minutes=1)}, "deal deleted"),
    ],
)
async def test_finding_resolves_when_its_deal_closes_or_is_deleted(rt, deal_change, reason):
    aid = await _deal_with_task(rt)
    await evaluate(rt, aid, NOW - timedelta(minutes=10))
    f = await finding(rt, aid, RULE, "T1")
    assert f is not None and f.status == "open"

    await change(rt, Deal, aid, "D1", **deal_change)
    await evaluate(rt, aid, NOW)

    f = await finding(rt, aid, RULE, "T1")
    assert f is not None
    assert f.status == "resolved"
    assert (await history(rt, f.id))[-1] == Event("open", "resolved", "sweep", reason)


async def test_task_handed_to_another_manager_moves_the_finding(rt):
    aid = await _deal_with_task(rt)
    await evaluate(rt, aid, NOW)
    before = await finding(rt, aid, RULE, "T1")
    assert before is not None and before.manager_id == MANAGER

    await change(rt, Task, aid, "T1", responsible_user_id=OTHER_MANAGER)
    await evaluate(rt, aid, NOW + timedelta(minutes=5))

    after = await finding(rt, aid, RULE, "T1")
    assert after is not None
    assert after.id == before.id
    assert (after.status, after.manager_id, after.times_opened) == ("open", OTHER_MANAGER, 1)
    assert len(await history(rt, after.id)) == 1, "a new manager is not a transition"


async def test_task_without_responsible_falls_back_to_the_deal_manager(rt):
    aid = await _deal_with_task(rt, responsible=None)
    await evaluate(rt, aid, NOW)
    f = await finding(rt, aid, RULE, "T1")
    assert f is not None and f.manager_id == MANAGER

    await change(rt, Deal, aid, "D1", responsible_user_id=OTHER_MANAGER)
    await evaluate(rt, aid, NOW + timedelta(minutes=5))
    f = await finding(rt, aid, RULE, "T1")
    assert f is not None and f.manager_id == OTHER_MANAGER
