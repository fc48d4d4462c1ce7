"""Findings the minute their deadline passes: each evaluation keeps, per deal, when the rules'
verdict can next change with no event (app/findings/due.py), and the scheduler's tick re-evaluates
only the deals whose moment has come. The full sweep stays as a reconciliation, and the property
test below proves it finds nothing the ticks missed."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from app import db as app_db
from app.calls.models import Call
from app.db import MANY_DEALS
from app.findings import due, evaluation, scheduler
from app.findings import service as findings_service
from app.findings.models import DueMoment, Finding
from app.mirror.models import Deal, Task
from tests.app.rules.mirror_builder import (
    MANAGER,
    add_deal,
    add_note,
    add_task,
    evaluate,
    finding,
    findings,
    msk,
    new_account,
    save_rules,
)

# Friday 6 March 2026; Monday 9 March is a public holiday in Russia (8 March fell on a Sunday).
FRIDAY = msk(2026, 3, 6, 10, 0)
DUE = msk(2026, 3, 6, 18, 55)
NEXT_WORKING_MINUTE = msk(2026, 3, 10, 9, 0)


async def _moments(rt, aid) -> dict[str, float]:
    async with rt.sessions() as s:
        rows = await s.execute(select(DueMoment.deal_id, DueMoment.due_epoch).where(DueMoment.account_id == aid))
        return dict(rows.all())


async def test_a_task_due_at_1855_on_the_friday_before_a_holiday_opens_at_the_next_working_minute(rt):
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=FRIDAY - timedelta(hours=1))
        add_task(s, aid, "T1", "D1", due_at=DUE, created_at=FRIDAY - timedelta(hours=1))
    await evaluate(rt, aid, FRIDAY, deal_ids=["D1"], actor="incremental")  # the task's event
    assert (await _moments(rt, aid))["D1"] == DUE.timestamp()  # it falls due at 18:55

    assert await scheduler.tick_account(rt, aid, DUE - timedelta(seconds=1)) == 0
    assert await scheduler.tick_account(rt, aid, DUE) == 1
    f = await finding(rt, aid, "overdue_task", "T1")
    # Due, but out of hours: not flagged yet; the next moment is Tuesday's first working minute.
    assert f is not None and f.status == "pending"
    assert (await _moments(rt, aid))["D1"] == NEXT_WORKING_MINUTE.timestamp()

    for quiet in (msk(2026, 3, 6, 23, 0), msk(2026, 3, 9, 12, 0), NEXT_WORKING_MINUTE - timedelta(seconds=1)):
        assert await scheduler.tick_account(rt, aid, quiet) == 0
    assert (await finding(rt, aid, "overdue_task", "T1")).status == "pending"

    assert await scheduler.tick_account(rt, aid, NEXT_WORKING_MINUTE) == 1
    f = await finding(rt, aid, "overdue_task", "T1")
    assert f.status == "open" and f.opened_at == NEXT_WORKING_MINUTE


async def test_a_sweep_sees_the_same_deadline(rt):
    """The rule itself: at 19:00 on Friday or on the holiday the task is due but not overdue."""
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=FRIDAY - timedelta(hours=1))
        add_task(s, aid, "T1", "D1", due_at=DUE, created_at=FRIDAY - timedelta(hours=1))
    await evaluate(rt, aid, msk(2026, 3, 9, 15, 0))
    assert (await finding(rt, aid, "overdue_task", "T1")).status == "pending"
    await evaluate(rt, aid, NEXT_WORKING_MINUTE + timedelta(minutes=1))
    assert (await finding(rt, aid, "overdue_task", "T1")).status == "open"


async def test_a_tick_re_evaluates_only_the_deals_whose_moment_has_come(rt):
    aid = await new_account(rt)
    start = msk(2025, 12, 8, 10, 0)  # Monday
    async with rt.sessions() as s, s.begin():
        for i in range(30):
            add_deal(s, aid, f"D{i}", created_at=start - timedelta(days=1))
            # D0 falls due in 10 minutes, the others in a week.
            add_task(s, aid, f"T{i}", f"D{i}", due_at=start + timedelta(minutes=10 if i == 0 else 7 * 1440))
    await evaluate(rt, aid, start)
    moments = await _moments(rt, aid)
    assert set(moments) == {f"D{i}" for i in range(30)}
    # A sweep stores earlier bounds; the deals due by then are D0's alone.
    assert (
        moments["D0"] <= (start + timedelta(minutes=10)).timestamp() < min(v for k, v in moments.items() if k != "D0")
    )

    assert await scheduler.tick_account(rt, aid, start + timedelta(minutes=9)) <= 1  # at most D0, early
    assert await scheduler.tick_account(rt, aid, start + timedelta(minutes=10)) == 1
    f = await finding(rt, aid, "overdue_task", "T0")
    assert f.status == "open" and f.opened_at == start + timedelta(minutes=10)
    assert [x.entity_id for x in await findings(rt, aid, "overdue_task")] == ["T0"]


async def test_a_sweep_reads_moments_from_findings_as_the_rules_give_them(rt):
    """deal_without_task, empty_comment and call_not_logged give a sweep their moments from their
    active findings (Rule.sweep_timing), pipeline overrides included: the sweep stores for each deal the bound the
    rules' own timing gives, one second before the exact moment an evaluation of the deal stores."""
    aid = await new_account(rt)
    now = msk(2025, 12, 8, 10, 0)  # Monday, working hours
    await save_rules(
        rt,
        aid,
        {
            "rules": {
                "deal_without_task": {"pipelines": {"P2": {"grace_minutes": 40}}},
                "empty_comment": {"pipelines": {"P2": {"lookback_days": 3}}},
                "call_not_logged": {"pipelines": {"P2": {"minutes": 50}}},
                "stuck_stage": {"enabled": False},  # its moments would come first
            }
        },
    )
    async with rt.sessions() as s, s.begin():
        for deal_id, pipeline in (("D1", "P1"), ("D2", "P2")):
            # No open task since five minutes ago: pending until the grace has run out.
            add_deal(s, aid, deal_id, created_at=now - timedelta(days=2), pipeline_id=pipeline)
            add_task(
                s,
                aid,
                f"T{deal_id}",
                deal_id,
                due_at=now - timedelta(hours=1),
                created_at=now - timedelta(days=2),
                is_completed=True,
                completed_at=now - timedelta(minutes=5),
            )
        for deal_id, pipeline in (("D3", "P1"), ("D4", "P2")):
            # An empty comment nobody answered: it leaves the look-back window in days.
            add_deal(s, aid, deal_id, created_at=now - timedelta(days=2), pipeline_id=pipeline)
            add_task(s, aid, f"T{deal_id}", deal_id, due_at=now + timedelta(days=60), created_at=now)
            add_note(s, aid, f"N{deal_id}", deal_id, "ок", created_at=now - timedelta(days=1))
        for deal_id, pipeline in (("D5", "P1"), ("D6", "P2")):
            # A call not written down yet, ended five minutes ago (talk 95 s, 105 s in all).
            add_deal(s, aid, deal_id, created_at=now - timedelta(days=2), pipeline_id=pipeline)
            add_task(
                s, aid, f"T{deal_id}", deal_id, due_at=now + timedelta(days=60), created_at=now - timedelta(days=2)
            )
            started = now - timedelta(minutes=5, seconds=105)
            s.add(_call(aid, 1, started, "answered", "out", f"+7999000000{deal_id[1]}", deal_id))
    await evaluate(rt, aid, now)
    assert {f.deal_id for f in await findings(rt, aid, "deal_without_task")} == {"D1", "D2"}
    assert {f.deal_id for f in await findings(rt, aid, "empty_comment")} == {"D3", "D4"}
    assert {f.deal_id for f in await findings(rt, aid, "call_not_logged")} == {"D5", "D6"}
    swept = await _moments(rt, aid)
    await evaluate(rt, aid, now, deal_ids=["D1", "D2", "D3", "D4", "D5", "D6"], actor="incremental")
    exact = await _moments(rt, aid)
    assert exact == {
        "D1": (now + timedelta(minutes=10)).timestamp(),
        "D2": (now + timedelta(minutes=35)).timestamp(),
        "D3": (now + timedelta(days=6)).timestamp(),
        "D4": (now + timedelta(days=2)).timestamp(),
        "D5": (now + timedelta(minutes=25)).timestamp(),
        "D6": (now + timedelta(minutes=45)).timestamp(),
    }
    assert set(swept) == set(exact)
    for deal_id, moment in exact.items():
        assert swept[deal_id] == pytest.approx(moment - 1.0, abs=0.01), deal_id


async def test_a_snooze_ends_at_the_tick(rt):
    aid = await new_account(rt)
    now = msk(2025, 12, 8, 10, 0)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=now - timedelta(days=1))
        add_task(s, aid, "T1", "D1", due_at=now - timedelta(hours=1), created_at=now - timedelta(days=1))
    await evaluate(rt, aid, now, deal_ids=["D1"])
    until = now + timedelta(hours=2)
    async with rt.sessions() as s, s.begin():
        f = await s.scalar(select(Finding).where(Finding.account_id == aid, Finding.rule == "overdue_task"))
        with mock.patch.object(findings_service, "utcnow", lambda: now):
            await findings_service.snooze(s, f, until, "admin", None)
    assert (await _moments(rt, aid))["D1"] <= until.timestamp()
    await scheduler.tick_account(rt, aid, until - timedelta(minutes=1))
    assert (await finding(rt, aid, "overdue_task", "T1")).status == "snoozed"
    await scheduler.tick_account(rt, aid, until)
    assert (await finding(rt, aid, "overdue_task", "T1")).status == "open"


async def test_calls_without_a_deal_are_ticked_as_the_account_s_own(rt):
    aid = await new_account(rt)
    now = msk(2025, 12, 8, 10, 0)
    async with rt.sessions() as s, s.begin():
        s.add(_call(aid, 1, now - timedelta(minutes=5), "answered", "in", "+79990000001", None))
    await evaluate(rt, aid, now, deal_ids=[""], actor="incremental")  # what the inbox asks for such a call
    f = await finding(rt, aid, "unknown_number", "+79990000001")
    assert f is not None and f.status == "pending"
    assert "" in await _moments(rt, aid)
    await scheduler.tick_account(rt, aid, now + timedelta(minutes=11))  # the 15 minutes' grace from the call
    assert (await finding(rt, aid, "unknown_number", "+79990000001")).status == "open"


# ---- the property: ticks and events leave nothing for the sweep to change --------------------------

STARTS = [
    msk(2025, 12, 8, 8, 30),  # Monday before work
    msk(2025, 12, 12, 17, 20),  # Friday evening
    msk(2026, 3, 6, 18, 0),  # Friday before a holiday Monday
    msk(2025, 12, 31, 12, 0),  # into the New Year holidays
]
# Short windows and limits, so that a few steps of the clock cross many of them.
RULES = {
    "rules": {
        "stuck_stage": {"settings": {"limit_days": 0.5}},
        "deal_without_task": {"settings": {"grace_minutes": 30}},
        "overdue_task": {"settings": {"grace_minutes": 20}, "stages": {"P1/S2": {"grace_minutes": 0}}},
        "call_not_logged": {"settings": {"minutes": 20, "lookback_days": 1}},
        "missed_call_not_returned": {"settings": {"minutes": 25, "lookback_days": 1}},
        "empty_comment": {"settings": {"lookback_days": 1}},
        "unknown_number": {"settings": {"grace_minutes": 10, "lookback_days": 1}},
        "lead_not_contacted": {"settings": {"minutes": 15}},
    }
}
STEPS = [1, 5, 14, 15, 16, 29, 61, 180, 541, 1440, 2 * 1440, 3 * 1440]

op = st.one_of(
    st.tuples(st.just("step"), st.sampled_from(STEPS) | st.integers(1, 4000)),
    st.tuples(st.just("deal")),
    st.tuples(st.just("task"), st.integers(0, 9), st.integers(-300, 3 * 1440)),
    st.tuples(st.just("complete"), st.integers(0, 29)),
    st.tuples(st.just("move"), st.integers(0, 29), st.integers(10, 2 * 1440)),
    st.tuples(st.just("stage"), st.integers(0, 9)),
    st.tuples(st.just("note"), st.integers(0, 9), st.booleans()),
    st.tuples(st.just("close"), st.integers(0, 9)),
    st.tuples(
        st.just("call"),
        st.integers(-1, 9),  # -1: a call nobody matched to a deal
        st.sampled_from(["answered in", "answered out", "missed in", "short in"]),
        st.integers(0, 1),
    ),
    st.tuples(st.just("snooze"), st.integers(0, 29), st.integers(1, 3000)),
)
_call_ids = iter(range(1, 10**9))


def _call(aid: int, n: int, started, status: str, direction: str, number: str, deal_id: str | None) -> Call:
    talk = 0 if status != "answered" else (20 if n == 0 else 95)
    ended = started + timedelta(seconds=talk + 10)
    return Call(
        account_id=aid,
        provider="mango",
        provider_call_id=f"P{next(_call_ids)}",
        direction=direction,
        client_number=number,
        manager_id=MANAGER,
        manager_ref="101",
        started_at=started,
        answered_at=started + timedelta(seconds=5) if status == "answered" else None,
        ended_at=ended,
        talk_seconds=talk,
        duration_seconds=talk + 10,
        status=status,
        is_final=True,
        deal_id=deal_id,
        contact_id=None,
        match_source="mirror" if deal_id else None,
    )


def _snapshot(rows: list[Finding]) -> list[tuple[Any, ...]]:
    return sorted(
        (
            f.rule,
            f.entity_type,
            f.entity_id,
            f.status,
            f.deal_id,
            f.manager_id,
            f.started_at,
            f.suppressed,
            f.snoozed_until,
            f.times_opened,
        )
        for f in rows
    )


async def _run(rt, start, program) -> None:
    aid = await new_account(rt)
    await save_rules(rt, aid, RULES)
    now = start
    deals: list[str] = []
    tasks: list[str] = []
    notes = 0

    async def event(deal_id: str) -> None:
        # What the inbox does after an event: the rules over the deals it touched.
        await evaluate(rt, aid, now, deal_ids=[deal_id], actor="incremental")

    async with rt.sessions() as s, s.begin():
        for i in range(2):
            add_deal(s, aid, f"D{i}", created_at=start - timedelta(hours=5 * i + 1))
            add_task(s, aid, f"T{i}", f"D{i}", due_at=start + timedelta(minutes=40 * i - 30))
            deals.append(f"D{i}")
            tasks.append(f"T{i}")
    await evaluate(rt, aid, now)  # the first sweep after connecting

    for step in program:
        kind = step[0]
        if kind == "step":
            now += timedelta(minutes=step[1])
            await scheduler.tick_account(rt, aid, now)
            continue
        async with rt.sessions() as s, s.begin():
            if kind == "deal":
                deal_id = f"D{len(deals)}"
                add_deal(s, aid, deal_id, created_at=now)
                deals.append(deal_id)
            elif kind == "task":
                deal_id = deals[step[1] % len(deals)]
                task_id = f"T{len(tasks)}"
                add_task(s, aid, task_id, deal_id, due_at=now + timedelta(minutes=step[2]), created_at=now)
                tasks.append(task_id)
            elif kind in ("complete", "move"):
                task = await s.get(Task, (aid, tasks[step[1] % len(tasks)]))
                deal_id = task.deal_id
                if kind == "complete":
                    task.is_completed, task.completed_at = True, now
                else:
                    task.previous_due_at, task.due_moved_at = task.due_at, now
                    task.due_at = task.due_at + timedelta(minutes=step[2])
                task.source_updated_at = now
            elif kind in ("stage", "close"):
                deal = await s.get(Deal, (aid, deals[step[1] % len(deals)]))
                deal_id = deal.id
                if kind == "close":
                    deal.is_closed, deal.closed_at = True, now
                else:
                    deal.stage_id = {"S1": "S2", "S2": "S3", "S3": "S1"}[deal.stage_id]
                    deal.stage_entered_at = now
            elif kind == "note":
                deal_id = deals[step[1] % len(deals)]
                text = "ок" if step[2] else "Обсудили условия поставки, клиент ждёт счёт"
                notes += 1
                add_note(s, aid, f"N{notes}", deal_id, text, created_at=now)
            elif kind == "call":
                # One number per deal: a call on one deal never changes another deal's verdict.
                deal_id = deals[step[1] % len(deals)] if step[1] >= 0 else None
                number = f"+7999100{deal_id[1:]:0>4}" if deal_id else f"+79992000{step[3]:03d}"
                status, direction = step[2].split()
                s.add(
                    _call(
                        aid,
                        0 if status == "short" else 1,
                        now,
                        "answered" if status != "missed" else "missed",
                        direction,
                        number,
                        deal_id,
                    )
                )
                deal_id = deal_id or ""
            elif kind == "snooze":
                active = list(
                    await s.scalars(
                        select(Finding)
                        .where(Finding.account_id == aid, Finding.status.in_(("pending", "open", "acknowledged")))
                        .order_by(Finding.id)
                    )
                )
                if not active:
                    continue
                target = active[step[1] % len(active)]
                with mock.patch.object(findings_service, "utcnow", lambda at=now: at):
                    await findings_service.snooze(s, target, now + timedelta(minutes=step[2]), "admin", None)
                continue  # a person's action: no evaluation follows it
        await event(deal_id)

    await assert_reconciled(rt, aid, now, program)


async def assert_reconciled(rt, aid, now, program) -> None:
    """The end of a property run: a full sweep (the reconciliation) finds nothing the ticks and
    the incremental evaluations left undone."""
    ticked = _snapshot(await findings(rt, aid))
    result = await evaluate(rt, aid, now)
    assert (result.opened, result.resolved, result.expired, result.changed) == (0, 0, 0, 0), program
    assert _snapshot(await findings(rt, aid)) == ticked, program


@settings(
    # More in a long run: CRMWATCH_TICK_EXAMPLES=500 python -m pytest tests/app/rules/test_ticks.py
    max_examples=int(os.environ.get("CRMWATCH_TICK_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(start=st.sampled_from(STARTS), program=st.lists(op, min_size=1, max_size=30))
async def test_ticks_leave_nothing_for_the_sweep(rt, start, program):
    await _run(rt, start, program)


async def test_a_sweep_s_early_bounds_are_made_exact_by_the_tick(rt):
    """After a sweep a deal's moment may come early (no calendar in SQL): the tick that reaches it
    changes nothing and stores the exact moment, so the finding still opens right at its deadline."""
    aid = await new_account(rt)
    friday = msk(2025, 12, 12, 17, 0)
    async with rt.sessions() as s, s.begin():
        # Entered its stage on Friday at 17:00: three working days later is Wednesday 17:00.
        add_deal(s, aid, "D1", created_at=friday, stage_entered_at=friday)
        add_task(s, aid, "T1", "D1", due_at=friday + timedelta(days=30))
    await evaluate(rt, aid, friday)
    early = (await _moments(rt, aid))["D1"]
    assert early < msk(2025, 12, 17, 17, 0).timestamp()
    await scheduler.tick_account(rt, aid, msk(2025, 12, 15, 18, 0))  # Monday evening: past the bound
    assert (await _moments(rt, aid))["D1"] == msk(2025, 12, 17, 17, 0).timestamp()
    assert await finding(rt, aid, "stuck_stage", "D1") is None
    await scheduler.tick_account(rt, aid, msk(2025, 12, 17, 17, 0))
    assert (await finding(rt, aid, "stuck_stage", "D1")).opened_at == msk(2025, 12, 17, 17, 0)


async def test_closing_a_deal_drops_its_moment(rt):
    aid = await new_account(rt)
    now = msk(2025, 12, 8, 10, 0)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=now)
        add_task(s, aid, "T1", "D1", due_at=now + timedelta(hours=1))
    await evaluate(rt, aid, now, deal_ids=["D1"])
    assert "D1" in await _moments(rt, aid)
    async with rt.sessions() as s, s.begin():
        await s.execute(update(Deal).where(Deal.account_id == aid).values(is_closed=True))
    await evaluate(rt, aid, now, deal_ids=["D1"])
    assert "D1" not in await _moments(rt, aid)


async def test_a_tick_of_many_deals_is_the_same_as_of_a_few(rt):
    """Past MANY_DEALS the deals in scope are one array parameter on PostgreSQL: same findings."""
    aid = await new_account(rt)
    start = msk(2025, 12, 8, 10, 0)
    async with rt.sessions() as s, s.begin():
        for i in range(MANY_DEALS + 10):
            add_deal(s, aid, f"D{i}", created_at=start - timedelta(days=1))
            add_task(s, aid, f"T{i}", f"D{i}", due_at=start + timedelta(minutes=5 + i % 3))
    await evaluate(rt, aid, start, deal_ids=[f"D{i}" for i in range(MANY_DEALS + 10)], actor="incremental")
    assert await scheduler.tick_account(rt, aid, start + timedelta(minutes=8)) == MANY_DEALS + 10
    opened = await findings(rt, aid, "overdue_task")
    assert len(opened) == MANY_DEALS + 10 and {f.status for f in opened} == {"open"}
    # What is left to come is each deal's stage limit, days away.
    moments = await _moments(rt, aid)
    assert len(moments) == MANY_DEALS + 10 and min(moments.values()) > (start + timedelta(days=1)).timestamp()


async def test_a_call_without_a_deal_resolves_in_an_evaluation_of_many_deals(rt):
    """Past MANY_DEALS the findings on the deals in scope and those without a deal ("" asked
    about) are read apart on PostgreSQL (RuleContext.where_in_deal_scope): a missed call nobody
    matched to a deal, returned since, must still resolve there, not wait for the sweep."""
    aid = await new_account(rt)
    now = msk(2025, 12, 8, 10, 0)
    number = "+79990000002"
    deals = [f"D{i}" for i in range(MANY_DEALS + 10)]
    async with rt.sessions() as s, s.begin():
        for deal_id in deals:
            add_deal(s, aid, deal_id, created_at=now - timedelta(days=1))
        s.add(_call(aid, 1, now - timedelta(hours=2), "missed", "in", number, None))
    await evaluate(rt, aid, now, deal_ids=["", *deals], actor="incremental")
    (missed,) = await findings(rt, aid, "missed_call_not_returned")
    assert missed.deal_id is None and missed.status == "open"

    async with rt.sessions() as s, s.begin():
        s.add(_call(aid, 2, now + timedelta(minutes=1), "answered", "out", number, None))
    await evaluate(rt, aid, now + timedelta(minutes=2), deal_ids=["", *deals], actor="incremental")
    assert (await finding(rt, aid, "missed_call_not_returned", missed.entity_id)).status == "resolved"


@settings(
    max_examples=int(os.environ.get("CRMWATCH_TICK_EXAMPLES", "15")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(start=st.sampled_from(STARTS), program=st.lists(op, min_size=1, max_size=30))
async def test_ticks_of_many_deals_leave_nothing_for_the_sweep(rt, start, program):
    """The property above with every scoped evaluation taken as one of many deals: on PostgreSQL
    the deals in scope are then read once (a CTE every rule's query reads instead of the deals
    table) and the findings on them once, the path of a real tick's thousand deals."""
    with (
        mock.patch.object(app_db, "MANY_DEALS", 0),
        mock.patch.object(evaluation, "MANY_DEALS", 0),
        mock.patch.object(due, "MANY_DEALS", 0),
    ):
        await _run(rt, start, program)
