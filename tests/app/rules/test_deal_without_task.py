"""deal_without_task on hand-built mirror states, evaluated at fixed instants (Moscow time, RU calendar)."""

from __future__ import annotations

from datetime import date, timedelta

from app.mirror.models import Task
from tests.app.rules.mirror_builder import (
    MANAGER,
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
)

RULE = "deal_without_task"
# Monday 2025-12-08, an ordinary working week in Russia.
CREATED = msk(2025, 12, 8, 10, 0)


async def test_deal_without_any_task_is_pending_for_fifteen_working_minutes_then_open(rt):
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=CREATED)

    await evaluate(rt, aid, CREATED + timedelta(minutes=14, seconds=59))
    f = await finding(rt, aid, RULE, "D1")
    assert f is not None
    assert (f.status, f.started_at, f.deal_id, f.manager_id, f.entity_type) == (
        "pending",
        CREATED,
        "D1",
        MANAGER,
        "deal",
    )
    assert f.times_opened == 0 and f.opened_at is None

    opened = CREATED + timedelta(minutes=15)
    await evaluate(rt, aid, opened)
    f = await finding(rt, aid, RULE, "D1")
    assert f is not None
    assert (f.status, f.started_at, f.opened_at, f.times_opened) == ("open", CREATED, opened, 1)
    assert await history(rt, f.id) == [
        Event(None, "pending", "sweep", "condition began"),
        Event("pending", "open", "sweep", "grace period over"),
    ]


async def test_grace_counts_working_minutes_over_a_weekend(rt):
    cal = default_calendar()
    assert cal.is_working_day(date(2025, 12, 12)) and cal.is_working_day(date(2025, 12, 15))
    created = msk(2025, 12, 12, 17, 50)  # Friday, ten working minutes before the end of the day
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=created)

    await evaluate(rt, aid, msk(2025, 12, 14, 12))  # Sunday: two calendar days later
    f = await finding(rt, aid, RULE, "D1")
    assert f is not None and f.status == "pending"

    await evaluate(rt, aid, msk(2025, 12, 15, 9, 4))
    f = await finding(rt, aid, RULE, "D1")
    assert f is not None and f.status == "pending"

    await evaluate(rt, aid, msk(2025, 12, 15, 9, 5))
    f = await finding(rt, aid, RULE, "D1")
    assert f is not None and f.status == "open"


async def test_started_at_is_when_the_last_task_was_completed(rt):
    aid = await new_account(rt)
    last_done = msk(2025, 12, 8, 11, 0)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=msk(2025, 12, 8, 9, 0))
        add_task(
            s, aid, "T0", "D1", due_at=msk(2025, 12, 8, 10), is_completed=True, completed_at=msk(2025, 12, 8, 10, 5)
        )
        add_task(s, aid, "T1", "D1", due_at=msk(2025, 12, 8, 12), is_completed=True, completed_at=last_done)

    await evaluate(rt, aid, msk(2025, 12, 8, 11, 10))
    f = await finding(rt, aid, RULE, "D1")
    assert f is not None and f.status == "pending" and f.started_at == last_done

    await evaluate(rt, aid, msk(2025, 12, 8, 12, 0))
    f = await finding(rt, aid, RULE, "D1")
    assert f is not None and f.status == "open" and f.started_at == last_done


async def test_a_deleted_open_task_counts_from_its_deletion(rt):
    aid = await new_account(rt)
    deleted_at = msk(2025, 12, 8, 11, 30)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=msk(2025, 12, 8, 9, 0))
        task = add_task(
            s, aid, "T1", "D1", due_at=msk(2025, 12, 9, 12), created_at=msk(2025, 12, 8, 9, 0), is_deleted=True
        )
        task.source_updated_at = deleted_at

    await evaluate(rt, aid, msk(2025, 12, 8, 13))
    f = await finding(rt, aid, RULE, "D1")
    assert f is not None and f.status == "open" and f.started_at == deleted_at


async def test_an_open_task_resolves_the_finding_and_completing_it_regresses(rt):
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=CREATED)
    await evaluate(rt, aid, CREATED + timedelta(hours=1))
    first = await finding(rt, aid, RULE, "D1")
    assert first is not None and first.status == "open"

    async with rt.sessions() as s, s.begin():
        add_task(s, aid, "T1", "D1", due_at=msk(2025, 12, 9, 12), created_at=CREATED + timedelta(hours=1))
    await evaluate(rt, aid, CREATED + timedelta(hours=2))
    f = await finding(rt, aid, RULE, "D1")
    assert f is not None and f.status == "resolved"
    assert (await history(rt, f.id))[-1] == Event("open", "resolved", "sweep", "condition cleared")

    done = CREATED + timedelta(hours=3)
    await change(rt, Task, aid, "T1", is_completed=True, completed_at=done, source_updated_at=done)
    await evaluate(rt, aid, done + timedelta(minutes=5))
    f = await finding(rt, aid, RULE, "D1")
    assert f is not None and f.id == first.id
    assert (f.status, f.started_at) == ("pending", done)

    await evaluate(rt, aid, done + timedelta(minutes=20))
    f = await finding(rt, aid, RULE, "D1")
    assert f is not None
    assert (f.status, f.started_at, f.times_opened) == ("open", done, 2)
    assert [e.reason for e in await history(rt, f.id)] == [
        "condition began",
        "condition cleared",
        "regression",
        "grace period over",
    ]


async def test_tasks_on_other_deals_or_accounts_do_not_count(rt):
    aid = await new_account(rt)
    other = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=CREATED)
        add_deal(s, aid, "D2", created_at=CREATED)
        add_task(s, aid, "T2", "D2", due_at=msk(2025, 12, 9, 12), created_at=CREATED)
        # The same CRM deal id in another account, with an open task: a different deal.
        add_deal(s, other, "D1", created_at=CREATED)
        add_task(s, other, "T9", "D1", due_at=msk(2025, 12, 9, 12), created_at=CREATED)

    await evaluate(rt, aid, CREATED + timedelta(hours=1))

    rows = await findings(rt, aid, RULE)
    assert [(f.entity_id, f.status) for f in rows] == [("D1", "open")]
    assert await findings(rt, other) == []


async def test_closed_and_deleted_deals_are_ignored(rt):
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "WON", created_at=CREATED, is_closed=True, stage_id="142")
        add_deal(s, aid, "GONE", created_at=CREATED, is_deleted=True)

    await evaluate(rt, aid, CREATED + timedelta(days=1))

    assert await findings(rt, aid) == []
