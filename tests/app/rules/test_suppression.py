"""Inhibition: stuck_stage stays quiet while the deal has an open deal_without_task finding (the default)."""

from __future__ import annotations

from datetime import timedelta

from tests.app.rules.mirror_builder import (
    add_deal,
    add_task,
    evaluate,
    finding,
    history,
    msk,
    new_account,
    save_rules,
)

# Monday 2025-12-08 10:00; by Thursday 12:00 the deal is stuck (3 working days) and has had no task.
ENTERED = msk(2025, 12, 8, 10, 0)
THURSDAY = msk(2025, 12, 11, 12, 0)


async def _stuck_deal_without_task(rt) -> int:
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=ENTERED, stage_entered_at=ENTERED)
    return aid


async def test_stuck_stage_is_suppressed_while_the_deal_has_no_task(rt):
    aid = await _stuck_deal_without_task(rt)

    await evaluate(rt, aid, THURSDAY)

    inhibitor = await finding(rt, aid, "deal_without_task", "D1")
    stuck = await finding(rt, aid, "stuck_stage", "D1")
    assert inhibitor is not None and inhibitor.status == "open" and inhibitor.suppressed is False
    assert stuck is not None and stuck.status == "open"
    assert stuck.suppressed is True


async def test_suppression_lifts_once_the_deal_gets_a_task(rt):
    aid = await _stuck_deal_without_task(rt)
    await evaluate(rt, aid, THURSDAY)
    stuck = await finding(rt, aid, "stuck_stage", "D1")
    assert stuck is not None and stuck.suppressed is True

    async with rt.sessions() as s, s.begin():
        add_task(s, aid, "T1", "D1", due_at=msk(2025, 12, 12, 12), created_at=THURSDAY + timedelta(minutes=1))
    await evaluate(rt, aid, THURSDAY + timedelta(minutes=5))

    inhibitor = await finding(rt, aid, "deal_without_task", "D1")
    stuck = await finding(rt, aid, "stuck_stage", "D1")
    assert inhibitor is not None and inhibitor.status == "resolved"
    assert stuck is not None and stuck.status == "open"
    assert stuck.suppressed is False
    # Suppression is a flag, not a transition.
    assert [e.reason for e in await history(rt, stuck.id)] == ["condition began"]


async def test_a_pending_inhibitor_does_not_suppress_until_it_opens(rt):
    aid = await new_account(rt)
    done = THURSDAY - timedelta(minutes=5)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=ENTERED, stage_entered_at=ENTERED)
        add_task(s, aid, "T1", "D1", due_at=THURSDAY, created_at=ENTERED, is_completed=True, completed_at=done)

    await evaluate(rt, aid, THURSDAY)
    inhibitor = await finding(rt, aid, "deal_without_task", "D1")
    stuck = await finding(rt, aid, "stuck_stage", "D1")
    assert inhibitor is not None and inhibitor.status == "pending"
    assert stuck is not None and stuck.status == "open" and stuck.suppressed is False

    await evaluate(rt, aid, done + timedelta(minutes=15))
    inhibitor = await finding(rt, aid, "deal_without_task", "D1")
    stuck = await finding(rt, aid, "stuck_stage", "D1")
    assert inhibitor is not None and inhibitor.status == "open"
    assert stuck is not None and stuck.suppressed is True


async def test_inhibition_is_per_deal(rt):
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=ENTERED, stage_entered_at=ENTERED)
        add_deal(s, aid, "D2", created_at=ENTERED, stage_entered_at=ENTERED)
        add_task(s, aid, "T2", "D2", due_at=msk(2025, 12, 12, 12), created_at=ENTERED)

    await evaluate(rt, aid, THURSDAY)

    d1 = await finding(rt, aid, "stuck_stage", "D1")
    d2 = await finding(rt, aid, "stuck_stage", "D2")
    assert d1 is not None and d1.suppressed is True
    assert d2 is not None and d2.status == "open" and d2.suppressed is False


async def test_an_empty_suppress_map_suppresses_nothing(rt):
    aid = await _stuck_deal_without_task(rt)
    await evaluate(rt, aid, THURSDAY)
    stuck = await finding(rt, aid, "stuck_stage", "D1")
    assert stuck is not None and stuck.suppressed is True

    await save_rules(rt, aid, {"suppress": {}})
    await evaluate(rt, aid, THURSDAY + timedelta(minutes=5))

    inhibitor = await finding(rt, aid, "deal_without_task", "D1")
    stuck = await finding(rt, aid, "stuck_stage", "D1")
    assert inhibitor is not None and inhibitor.status == "open"
    assert stuck is not None and stuck.status == "open"
    assert stuck.suppressed is False


async def test_inhibition_is_the_same_when_the_differences_are_many(rt, monkeypatch):
    """Past _MANY differences the engine takes its bulk paths (statistics on the differences,
    the changed deals as a subquery, TRUNCATE): same outcome as the few-rows paths above."""
    from app.findings import lifecycle as engine

    monkeypatch.setattr(engine, "_MANY", 0)
    aid = await _stuck_deal_without_task(rt)
    await evaluate(rt, aid, THURSDAY)
    assert (await finding(rt, aid, "stuck_stage", "D1")).suppressed is True

    async with rt.sessions() as s, s.begin():
        add_task(s, aid, "T1", "D1", due_at=msk(2025, 12, 12, 12), created_at=THURSDAY + timedelta(minutes=1))
    await evaluate(rt, aid, THURSDAY + timedelta(minutes=5), deal_ids=["D1"], actor="incremental")

    assert (await finding(rt, aid, "deal_without_task", "D1")).status == "resolved"
    stuck = await finding(rt, aid, "stuck_stage", "D1")
    assert stuck.status == "open" and stuck.suppressed is False


async def test_a_settings_change_is_applied_by_the_next_sweep_that_commits(rt):
    """A sweep re-applies inhibition over the whole account once per settings change; one that
    rolls back must not count."""
    from app.findings import evaluation as engine

    aid = await _stuck_deal_without_task(rt)
    await evaluate(rt, aid, THURSDAY)
    await save_rules(rt, aid, {"suppress": {}})

    class Abort(Exception):
        pass

    try:
        async with rt.sessions() as s, s.begin():
            await engine.evaluate(s, aid, now=THURSDAY + timedelta(minutes=5))
            raise Abort
    except Abort:
        pass
    assert (await finding(rt, aid, "stuck_stage", "D1")).suppressed is True  # rolled back

    await evaluate(rt, aid, THURSDAY + timedelta(minutes=6))

    assert (await finding(rt, aid, "stuck_stage", "D1")).suppressed is False
