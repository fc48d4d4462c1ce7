"""The finding lifecycle the engine drives: idempotence, incremental scope, snooze, acknowledge,
rule versions and disabled rules."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from app.db import utcnow
from app.findings import evaluation as engine
from app.findings import service
from app.findings.models import Finding
from app.mirror.models import Task
from app.rules.registry import RULES
from tests.app.rules.mirror_builder import (
    Event,
    add_deal,
    add_note,
    add_task,
    all_events,
    change,
    evaluate,
    finding,
    findings,
    history,
    msk,
    new_account,
    save_rules,
)

# Monday 2025-12-08 10:00 the deals are created; by Thursday 12:00 several rules fire.
CREATED = msk(2025, 12, 8, 10, 0)
NOW = msk(2025, 12, 11, 12, 0)


def _snapshot(rows: list[Finding]) -> list[tuple]:
    columns = [c.key for c in Finding.__table__.columns]
    return [tuple(getattr(f, c) for c in columns) for f in rows]


async def _two_overdue_deals(rt) -> int:
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        for n in ("1", "2"):
            add_deal(s, aid, f"D{n}", created_at=CREATED)
            add_task(s, aid, f"T{n}", f"D{n}", due_at=NOW - timedelta(hours=1), created_at=CREATED)
    return aid


async def _set_status(rt, finding_id: int, **values) -> None:
    async with rt.sessions() as s, s.begin():
        f = await s.get(Finding, finding_id)
        for name, value in values.items():
            setattr(f, name, value)


async def test_evaluating_twice_changes_nothing(rt):
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        # Stuck, without a task (so the stuck finding is suppressed), with an empty note.
        add_deal(s, aid, "D1", created_at=CREATED)
        add_note(s, aid, "N1", "D1", "ок", created_at=NOW - timedelta(hours=2))
        # An overdue task that was also put off without contact.
        add_deal(s, aid, "D2", created_at=NOW - timedelta(hours=3))
        add_task(
            s,
            aid,
            "T2",
            "D2",
            due_at=NOW - timedelta(minutes=30),
            created_at=NOW - timedelta(hours=3),
            previous_due_at=NOW - timedelta(hours=2),
            due_moved_at=NOW - timedelta(hours=1),
        )
        # A deal whose last task closed five minutes ago: deal_without_task is pending.
        add_deal(s, aid, "D3", created_at=NOW - timedelta(hours=3))
        add_task(
            s,
            aid,
            "T3",
            "D3",
            due_at=NOW,
            created_at=NOW - timedelta(hours=3),
            is_completed=True,
            completed_at=NOW - timedelta(minutes=5),
        )

    first = await evaluate(rt, aid, NOW)
    rows = await findings(rt, aid)
    events = await all_events(rt)
    assert {(f.rule, f.entity_id, f.status, f.suppressed) for f in rows} == {
        ("deal_without_task", "D1", "open", False),
        ("stuck_stage", "D1", "open", True),
        ("empty_comment", "N1", "open", False),
        ("overdue_task", "T2", "open", False),
        ("task_rescheduled_without_contact", "T2", "open", False),
        ("deal_without_task", "D3", "pending", False),
        # New this morning, and nobody has called or written since.
        ("lead_not_contacted", "D2", "open", False),
        ("lead_not_contacted", "D3", "open", False),
    }
    assert first.opened == 7
    assert len(events) == 8

    for now in (NOW, NOW + timedelta(minutes=1)):
        again = await evaluate(rt, aid, now)
        assert (again.opened, again.resolved, again.open) == (0, 0, 7)
        assert _snapshot(await findings(rt, aid)) == _snapshot(rows)
        assert await all_events(rt) == events


async def test_incremental_evaluation_touches_only_the_given_deals(rt):
    aid = await _two_overdue_deals(rt)
    await evaluate(rt, aid, NOW)
    later = NOW + timedelta(minutes=10)
    for n in ("1", "2"):
        await change(rt, Task, aid, f"T{n}", is_completed=True, completed_at=later - timedelta(minutes=1))
    async with rt.sessions() as s, s.begin():
        add_task(s, aid, "T2B", "D2", due_at=later - timedelta(minutes=5), created_at=CREATED)
    d2_before = _snapshot([f for f in await findings(rt, aid) if f.deal_id == "D2"])

    await evaluate(rt, aid, later, deal_ids=["D1"], actor="incremental")

    t1 = await finding(rt, aid, "overdue_task", "T1")
    assert t1 is not None and t1.status == "resolved"
    assert (await history(rt, t1.id))[-1] == Event("open", "resolved", "incremental", "condition cleared")
    # The other deal's finding stays open although its task is done, and its new overdue task waits.
    assert _snapshot([f for f in await findings(rt, aid) if f.deal_id == "D2"]) == d2_before
    assert await finding(rt, aid, "overdue_task", "T2B") is None

    await evaluate(rt, aid, later + timedelta(minutes=1))

    t2 = await finding(rt, aid, "overdue_task", "T2")
    t2b = await finding(rt, aid, "overdue_task", "T2B")
    assert t2 is not None and t2.status == "resolved"
    assert (await history(rt, t2.id))[-1] == Event("open", "resolved", "sweep", "condition cleared")
    assert t2b is not None and t2b.status == "open"


async def test_an_empty_incremental_scope_does_nothing(rt):
    aid = await _two_overdue_deals(rt)

    result = await evaluate(rt, aid, NOW, deal_ids=[])

    assert result.opened == 0
    assert await findings(rt, aid) == []


async def test_a_snooze_that_ended_reopens_and_one_in_the_future_holds(rt):
    aid = await _two_overdue_deals(rt)
    await evaluate(rt, aid, NOW)
    ended = await finding(rt, aid, "overdue_task", "T1")
    held = await finding(rt, aid, "overdue_task", "T2")
    assert ended is not None and held is not None
    await _set_status(
        rt,
        ended.id,
        status="snoozed",
        snoozed_until=NOW + timedelta(minutes=30),
        snoozed_by="user:u1",
        snooze_reason="в отпуске",
    )
    async with rt.sessions() as s, s.begin():
        # The service refuses a snooze into the past by the real clock, which is far after NOW.
        await service.snooze(s, await s.get(Finding, held.id), utcnow() + timedelta(days=1), "user:u1", "жду")

    await evaluate(rt, aid, NOW + timedelta(minutes=30))

    ended = await finding(rt, aid, "overdue_task", "T1")
    held = await finding(rt, aid, "overdue_task", "T2")
    assert ended is not None and held is not None
    assert (ended.status, ended.snoozed_until) == ("open", None)
    assert (await history(rt, ended.id))[-1] == Event("snoozed", "open", "sweep", "snooze ended")
    assert held.status == "snoozed" and held.snoozed_until is not None
    assert (await history(rt, held.id))[-1].to_status == "snoozed"


async def test_a_snoozed_finding_resolves_when_its_condition_clears(rt):
    aid = await _two_overdue_deals(rt)
    await evaluate(rt, aid, NOW)
    f = await finding(rt, aid, "overdue_task", "T1")
    assert f is not None
    await _set_status(rt, f.id, status="snoozed", snoozed_until=NOW + timedelta(days=1))

    await change(rt, Task, aid, "T1", is_completed=True, completed_at=NOW + timedelta(minutes=1))
    await evaluate(rt, aid, NOW + timedelta(minutes=5))

    f = await finding(rt, aid, "overdue_task", "T1")
    assert f is not None
    assert (f.status, f.snoozed_until) == ("resolved", None)
    assert (await history(rt, f.id))[-1] == Event("snoozed", "resolved", "sweep", "condition cleared")


async def test_a_snooze_of_a_pending_finding_ends_back_in_pending(rt):
    aid = await new_account(rt)
    due = msk(2025, 12, 8, 12, 0)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=CREATED)
        add_task(s, aid, "T1", "D1", due_at=due, created_at=CREATED)
    await save_rules(rt, aid, {"rules": {"overdue_task": {"settings": {"grace_minutes": 120}}}})
    await evaluate(rt, aid, due + timedelta(minutes=30))
    f = await finding(rt, aid, "overdue_task", "T1")
    assert f is not None and f.status == "pending"
    await _set_status(rt, f.id, status="snoozed", snoozed_until=due + timedelta(minutes=45))

    # The snooze is over but the two working hours of grace are not.
    await evaluate(rt, aid, due + timedelta(hours=1))
    f = await finding(rt, aid, "overdue_task", "T1")
    assert f is not None
    assert f.status != "open" or (f.opened_at is not None and f.times_opened == 1)

    await evaluate(rt, aid, due + timedelta(hours=3))
    f = await finding(rt, aid, "overdue_task", "T1")
    assert f is not None
    assert (f.status, f.times_opened) == ("open", 1)
    assert f.opened_at is not None


async def test_an_acknowledged_finding_stays_acknowledged_then_resolves(rt):
    aid = await _two_overdue_deals(rt)
    await evaluate(rt, aid, NOW)
    f = await finding(rt, aid, "overdue_task", "T1")
    assert f is not None
    async with rt.sessions() as s, s.begin():
        await service.acknowledge(s, await s.get(Finding, f.id), "user:u1", "разберусь")

    await evaluate(rt, aid, NOW + timedelta(hours=1))
    f = await finding(rt, aid, "overdue_task", "T1")
    assert f is not None
    assert (f.status, f.acknowledged_by) == ("acknowledged", "user:u1")
    assert [e.to_status for e in await history(rt, f.id)] == ["open", "acknowledged"]

    await change(rt, Task, aid, "T1", is_completed=True, completed_at=NOW + timedelta(hours=1, minutes=1))
    await evaluate(rt, aid, NOW + timedelta(hours=2))
    f = await finding(rt, aid, "overdue_task", "T1")
    assert f is not None and f.status == "resolved"
    assert (await history(rt, f.id))[-1] == Event("acknowledged", "resolved", "sweep", "condition cleared")

    # Should it come back, the acknowledgement does not carry over.
    await change(rt, Task, aid, "T1", is_completed=False, completed_at=None)
    await evaluate(rt, aid, NOW + timedelta(hours=3))
    f = await finding(rt, aid, "overdue_task", "T1")
    assert f is not None
    assert (f.status, f.acknowledged_at, f.acknowledged_by, f.times_opened) == ("open", None, None, 2)


async def test_a_bumped_rule_version_updates_still_violating_findings(rt, monkeypatch):
    aid = await _two_overdue_deals(rt)
    await evaluate(rt, aid, NOW)
    await change(rt, Task, aid, "T2", is_completed=True, completed_at=NOW + timedelta(minutes=1))
    await evaluate(rt, aid, NOW + timedelta(minutes=5))
    assert {f.entity_id: (f.status, f.rule_version) for f in await findings(rt, aid, "overdue_task")} == {
        "T1": ("open", 1),
        "T2": ("resolved", 1),
    }

    monkeypatch.setitem(RULES, "overdue_task", dataclasses.replace(RULES["overdue_task"], version=2))
    await evaluate(rt, aid, NOW + timedelta(minutes=10))

    rows = {f.entity_id: f for f in await findings(rt, aid, "overdue_task")}
    assert (rows["T1"].status, rows["T1"].rule_version) == ("open", 2)
    assert (rows["T2"].status, rows["T2"].rule_version) == ("resolved", 1)
    other_rules = [f.rule_version for f in await findings(rt, aid) if f.rule != "overdue_task"]
    assert other_rules and set(other_rules) == {1}


async def test_disabling_a_rule_resolves_its_findings(rt):
    aid = await _two_overdue_deals(rt)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D3", created_at=CREATED)  # a deal_without_task finding, which must stay
    await evaluate(rt, aid, NOW)
    assert len([f for f in await findings(rt, aid, "overdue_task") if f.status == "open"]) == 2

    await save_rules(rt, aid, {"rules": {"overdue_task": {"enabled": False}}})
    async with rt.sessions() as s, s.begin():
        add_task(s, aid, "T3", "D3", due_at=NOW, created_at=CREATED)
    await evaluate(rt, aid, NOW + timedelta(minutes=5))

    rows = await findings(rt, aid, "overdue_task")
    assert [(f.entity_id, f.status) for f in rows] == [("T1", "resolved"), ("T2", "resolved")]
    for f in rows:
        assert (await history(rt, f.id))[-1] == Event("open", "resolved", "sweep", "rule disabled")
    other = await finding(rt, aid, "deal_without_task", "D3")
    assert other is not None and other.status == "resolved"
    assert (await history(rt, other.id))[-1].reason == "condition cleared"

    await save_rules(rt, aid, {"rules": {"overdue_task": {"enabled": True}}})
    await evaluate(rt, aid, NOW + timedelta(minutes=10))
    assert {(f.entity_id, f.status) for f in await findings(rt, aid, "overdue_task")} == {
        ("T1", "open"),
        ("T2", "open"),
        ("T3", "open"),
    }


async def test_disabling_every_rule_resolves_every_finding(rt):
    aid = await _two_overdue_deals(rt)
    await evaluate(rt, aid, NOW)
    assert any(f.status == "open" for f in await findings(rt, aid))

    await save_rules(rt, aid, {"rules": {name: {"enabled": False} for name in RULES}})
    for deal_ids in (["D1"], None):  # an incremental evaluation, then a sweep
        await evaluate(rt, aid, NOW + timedelta(minutes=5), deal_ids=deal_ids)

    rows = await findings(rt, aid)
    assert rows and {f.status for f in rows} == {"resolved"}
    for f in rows:
        assert (await history(rt, f.id))[-1].reason == "rule disabled"


async def test_findings_are_per_account(rt):
    first = await _two_overdue_deals(rt)
    second = await _two_overdue_deals(rt)

    await evaluate(rt, first, NOW)

    assert len(await findings(rt, first, "overdue_task")) == 2
    assert await findings(rt, second) == []
    async with rt.sessions() as s:
        accounts = set(await s.scalars(select(Finding.account_id)))
    assert accounts == {first}


async def test_two_evaluations_at_the_same_instant_log_each_finding_once(rt):
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=CREATED)
        add_task(s, aid, "T1", "D1", due_at=NOW - timedelta(hours=1), created_at=CREATED)
        add_deal(s, aid, "D2", created_at=CREATED)
        add_task(s, aid, "T2", "D2", due_at=NOW + timedelta(days=1), created_at=CREATED)
    await evaluate(rt, aid, NOW, deal_ids=["D1"], actor="incremental")
    # An event on the other deal is evaluated in the same instant (a coarse clock, or an explicit `now`).
    await change(rt, Task, aid, "T2", due_at=NOW - timedelta(hours=1))

    result = await evaluate(rt, aid, NOW, deal_ids=["D2"], actor="incremental")

    t1 = await finding(rt, aid, "overdue_task", "T1")
    assert t1 is not None
    assert [e.reason for e in await history(rt, t1.id)] == ["condition began"]
    # Only what opened on D2 counts (its overdue task, and the deal itself if it is also stuck).
    opened_on_d2 = [f for f in await findings(rt, aid) if f.deal_id == "D2" and f.status == "open"]
    assert any(f.entity_id == "T2" for f in opened_on_d2)
    assert result.opened == len(opened_on_d2)


async def test_a_task_moved_to_another_deal_takes_its_finding_along(rt):
    aid = await _two_overdue_deals(rt)
    await evaluate(rt, aid, NOW)
    t1 = await finding(rt, aid, "overdue_task", "T1")
    assert t1 is not None and t1.deal_id == "D1"
    async with rt.sessions() as s, s.begin():
        await s.execute(
            update(Task).where(Task.account_id == aid, Task.id == "T1").values(deal_id="D2", entity_id="D2")
        )

    # The event names the deal the task is on now; the finding is found by its entity.
    await evaluate(rt, aid, NOW + timedelta(minutes=1), deal_ids=["D2"], actor="incremental")

    moved = await finding(rt, aid, "overdue_task", "T1")
    assert (moved.id, moved.status, moved.deal_id) == (t1.id, "open", "D2")
    assert [e.reason for e in await history(rt, t1.id)] == ["condition began"]
    # Re-evaluating the deal it left finds nothing gone there.
    result = await evaluate(rt, aid, NOW + timedelta(minutes=2), deal_ids=["D1"], actor="incremental")
    assert result.resolved == 0
    assert (await finding(rt, aid, "overdue_task", "T1")).status == "open"


async def test_a_rolled_back_evaluation_leaves_the_connection_ready_for_the_next(rt):
    """The differences live in a temporary table made once per connection: neither a rollback nor
    a finished evaluation may leave it missing or holding rows."""
    aid = await _two_overdue_deals(rt)

    class Abort(Exception):
        pass

    for _ in range(2):
        try:
            async with rt.sessions() as s, s.begin():
                result = await engine.evaluate(s, aid, now=NOW)
                assert result.opened > 0
                raise Abort
        except Abort:
            pass
    assert await findings(rt, aid) == []

    result = await evaluate(rt, aid, NOW)

    assert result.opened == len([f for f in await findings(rt, aid) if f.status == "open"]) > 0
    async with rt.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(engine.diff_table)) == 0


async def test_a_reused_statement_takes_each_evaluations_moment_and_deals(rt):
    # The engine builds an account's rule statement once and re-executes it: the moment and the
    # deals in scope must be parameters of each execution, never the first evaluation's values.
    aid = await new_account(rt)
    due = NOW + timedelta(hours=1)
    async with rt.sessions() as s, s.begin():
        for n in ("1", "2", "3"):
            add_deal(s, aid, f"D{n}", created_at=CREATED)
            add_task(s, aid, f"T{n}", f"D{n}", due_at=due, created_at=CREATED)

    await evaluate(rt, aid, NOW, deal_ids=["D1"], actor="incremental")
    assert await finding(rt, aid, "overdue_task", "T1") is None  # not yet due

    await evaluate(rt, aid, due + timedelta(hours=1), deal_ids=["D2"], actor="incremental")
    assert (await finding(rt, aid, "overdue_task", "T2")).status == "open"
    assert await finding(rt, aid, "overdue_task", "T1") is None  # out of scope this time

    await evaluate(rt, aid, due + timedelta(hours=1), deal_ids=["D1", "D3"], actor="incremental")
    assert {f.entity_id for f in await findings(rt, aid, "overdue_task")} == {"T1", "T2", "T3"}

    await evaluate(rt, aid, NOW)  # a sweep back before the due time: the condition has not begun
    assert {f.status for f in await findings(rt, aid, "overdue_task")} == {"resolved"}


@pytest.mark.parametrize("many", [False, True], ids=["few", "many"])
async def test_a_rule_that_computes_from_now_itself_is_still_evaluated_at_each_moment(rt, monkeypatch, caplog, many):
    # A rule author may well write `Task.due_at <= ctx.now` instead of ctx.now_param(): the engine
    # must notice that such a query cannot be reused, and rebuild it at each evaluation. (`many`:
    # as a tick's many deals, whose comparison comes with the moments in one statement on
    # PostgreSQL, built afresh too.)
    if many:
        from app import db as app_db
        from app.findings import due
        from app.findings import evaluation as evaluation_module

        for module in (app_db, evaluation_module, due):
            monkeypatch.setattr(module, "MANY_DEALS", 0)
    from sqlalchemy import and_, false, literal
    from sqlalchemy import select as sa_select

    from app.db import UtcDateTime
    from app.mirror.models import Deal

    def naive(ctx):
        return (
            sa_select(
                Task.id.label("entity_id"),
                Task.deal_id.label("deal_id"),
                Deal.responsible_user_id.label("manager_id"),
                Task.due_at.label("started_at"),
                literal(True).label("opens"),
            )
            .join(Deal, and_(Deal.account_id == Task.account_id, Deal.id == Task.deal_id))
            .where(
                Task.account_id == ctx.account_id,
                Task.is_completed == false(),
                Task.due_at <= literal(ctx.now, UtcDateTime()),
                *([Deal.id.in_(ctx.deal_ids)] if ctx.deal_ids is not None else []),
            )
        )

    from app.rules import engine

    monkeypatch.setitem(RULES, "overdue_task", dataclasses.replace(RULES["overdue_task"], violations=naive))
    monkeypatch.setattr(engine, "_warned", set())  # warned once per process: make this test's own
    aid = await new_account(rt)
    due = NOW + timedelta(hours=1)
    async with rt.sessions() as s, s.begin():
        for n in ("1", "2"):
            add_deal(s, aid, f"D{n}", created_at=CREATED)
            add_task(s, aid, f"T{n}", f"D{n}", due_at=due, created_at=CREATED)

    await evaluate(rt, aid, NOW, deal_ids=["D1"], actor="incremental")
    await evaluate(rt, aid, due + timedelta(hours=1), deal_ids=["D2"], actor="incremental")
    assert [f.entity_id for f in await findings(rt, aid, "overdue_task")] == ["T2"]
    await evaluate(rt, aid, due + timedelta(hours=1))
    assert {f.entity_id for f in await findings(rt, aid, "overdue_task")} == {"T1", "T2"}
    assert "rules.query_not_parametrized" in caplog.text  # and the rule's author hears why it is slower
