"""stuck_stage on hand-built mirror states: limits in working days, overrides, exclusions, holidays."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from app.mirror.models import Deal
from tests.app.rules.mirror_builder import (
    MANAGER,
    OTHER_MANAGER,
    Event,
    add_deal,
    add_pipeline,
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

RULE = "stuck_stage"
# Monday 2025-12-08 10:00; 8-22 December 2025 has no public holiday in Russia.
ENTERED = msk(2025, 12, 8, 10, 0)


async def _open_stuck(rt, aid) -> list[str]:
    return sorted(f.entity_id for f in await findings(rt, aid, RULE) if f.status == "open")


async def test_default_limit_is_three_working_days(rt):
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=ENTERED - timedelta(days=7), stage_entered_at=ENTERED)

    await evaluate(rt, aid, msk(2025, 12, 11, 9, 59, 59))
    assert await findings(rt, aid, RULE) == []

    thursday = msk(2025, 12, 11, 10, 0)  # Mon 8 h + Tue 9 h + Wed 9 h + Thu 1 h = 27 h = 3 working days
    await evaluate(rt, aid, thursday)
    f = await finding(rt, aid, RULE, "D1")
    assert f is not None
    assert (f.status, f.started_at, f.deal_id, f.manager_id, f.opened_at) == ("open", ENTERED, "D1", MANAGER, thursday)


async def test_account_level_limit_in_the_rules_document(rt):
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=ENTERED, stage_entered_at=ENTERED)
    await save_rules(rt, aid, {"rules": {RULE: {"settings": {"limit_days": 0.5}}}})

    await evaluate(rt, aid, msk(2025, 12, 8, 14, 29))
    assert await findings(rt, aid, RULE) == []
    await evaluate(rt, aid, msk(2025, 12, 8, 14, 30))
    assert await _open_stuck(rt, aid) == ["D1"]


async def test_stage_override_beats_pipeline_override_beats_account(rt):
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_pipeline(s, aid, "P2", "Опт", {"Q1": "Квалификация", "Q2": "Счёт"})
        for deal_id, pipeline, stage in [
            ("A", "P1", "S1"),
            ("NEGOTIATION", "P1", "S2"),
            ("CONTRACT", "P1", "S3"),
            ("P2_STAGE", "P2", "Q1"),
            ("P2_OTHER", "P2", "Q2"),
        ]:
            add_deal(
                s, aid, deal_id, created_at=ENTERED, stage_entered_at=ENTERED, pipeline_id=pipeline, stage_id=stage
            )
    await save_rules(
        rt,
        aid,
        {
            "rules": {
                RULE: {
                    "stages": {"P1/S2": {"limit_days": 2}, "P1/S3": {"limit_days": 10}, "P2/Q1": {"limit_days": 1}},
                    "pipelines": {"P2": {"limit_days": 5}},
                }
            }
        },
    )

    expected = [
        (msk(2025, 12, 9, 9, 59), []),
        (msk(2025, 12, 9, 10, 0), ["P2_STAGE"]),  # 1 day: the P2/Q1 stage override, not the pipeline's 5
        (msk(2025, 12, 10, 10, 0), ["NEGOTIATION", "P2_STAGE"]),  # 2 days: "Переговоры"
        (msk(2025, 12, 11, 10, 0), ["A", "NEGOTIATION", "P2_STAGE"]),  # 3 days: the account default
        (msk(2025, 12, 12, 10, 0), ["A", "NEGOTIATION", "P2_STAGE"]),
        (msk(2025, 12, 15, 10, 0), ["A", "NEGOTIATION", "P2_OTHER", "P2_STAGE"]),  # 5 days: pipeline P2
        (msk(2025, 12, 22, 9, 59), ["A", "NEGOTIATION", "P2_OTHER", "P2_STAGE"]),
        (msk(2025, 12, 22, 10, 0), ["A", "CONTRACT", "NEGOTIATION", "P2_OTHER", "P2_STAGE"]),  # 10 days: "Договор"
    ]
    for now, stuck in expected:
        await evaluate(rt, aid, now)
        assert await _open_stuck(rt, aid) == stuck, now


async def test_stage_changed_back_and_forth_resolves_then_reopens_with_a_new_start(rt):
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=ENTERED, stage_entered_at=ENTERED)
    await evaluate(rt, aid, msk(2025, 12, 11, 10, 30))
    first = await finding(rt, aid, RULE, "D1")
    assert first is not None and first.status == "open" and first.started_at == ENTERED

    moved = msk(2025, 12, 11, 11, 0)
    await _move(rt, aid, "S2", moved)
    await evaluate(rt, aid, moved + timedelta(minutes=5))
    f = await finding(rt, aid, RULE, "D1")
    assert f is not None and f.status == "resolved"

    back = msk(2025, 12, 11, 12, 0)
    await _move(rt, aid, "S1", back)
    # Thu 6 h + Fri 9 h + Mon 9 h = 24 h: not yet three working days in the stage again.
    await evaluate(rt, aid, msk(2025, 12, 16, 11, 59))
    f = await finding(rt, aid, RULE, "D1")
    assert f is not None and f.status == "resolved"

    reopened = msk(2025, 12, 16, 12, 0)
    await evaluate(rt, aid, reopened)
    rows = await findings(rt, aid, RULE)
    assert len(rows) == 1
    f = rows[0]
    assert f.id == first.id
    assert (f.status, f.started_at, f.opened_at, f.times_opened) == ("open", back, reopened, 2)
    assert await history(rt, f.id) == [
        Event(None, "open", "sweep", "condition began"),
        Event("open", "resolved", "sweep", "condition cleared"),
        Event("resolved", "open", "sweep", "regression"),
    ]


async def _move(rt, aid, stage_id, at):
    await change(rt, Deal, aid, "D1", stage_id=stage_id, stage_entered_at=at, source_updated_at=at)


@pytest.mark.parametrize(
    "exclude",
    [
        {"stages": ["P1/S1"]},
        {"pipelines": ["P1"]},
        {"users": [MANAGER]},
    ],
    ids=["stage", "pipeline", "user"],
)
async def test_excluded_deals_get_no_finding_and_existing_ones_resolve(rt, exclude):
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_pipeline(s, aid, "P2", "Опт", {"Q1": "Квалификация"})
        add_deal(s, aid, "EXCLUDED", created_at=ENTERED, stage_entered_at=ENTERED)
        add_deal(
            s,
            aid,
            "KEPT",
            created_at=ENTERED,
            stage_entered_at=ENTERED,
            pipeline_id="P2",
            stage_id="Q1",
            responsible_user_id=OTHER_MANAGER,
        )
    thursday = msk(2025, 12, 11, 12)
    await evaluate(rt, aid, thursday)
    assert await _open_stuck(rt, aid) == ["EXCLUDED", "KEPT"]

    await save_rules(rt, aid, {"rules": {RULE: {"exclude": exclude}}})
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "EXCLUDED_NEW", created_at=ENTERED, stage_entered_at=ENTERED)
    await evaluate(rt, aid, thursday + timedelta(minutes=5))

    assert await _open_stuck(rt, aid) == ["KEPT"]
    assert await finding(rt, aid, RULE, "EXCLUDED_NEW") is None
    f = await finding(rt, aid, RULE, "EXCLUDED")
    assert f is not None and f.status == "resolved"
    assert (await history(rt, f.id))[-1].to_status == "resolved"


async def test_working_days_skip_the_new_year_holidays(rt):
    cal = default_calendar()
    entered = msk(2025, 12, 31, 10, 0)  # a Wednesday
    saturday = msk(2026, 1, 3, 12, 0)  # three calendar days later
    limit = 3 * cal.day_seconds
    # The premise, checked against the calendar rather than assumed: the holidays leave no working time.
    assert not cal.is_working_day(date(2025, 12, 31))
    assert cal.working_seconds(entered, saturday) < limit
    assert not any(cal.is_working_day(date(2026, 1, d)) for d in range(1, 10))
    stuck_at = cal.add_working(entered, limit)
    assert stuck_at > msk(2026, 1, 12)

    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=entered, stage_entered_at=entered)

    for now in (saturday, msk(2026, 1, 5, 10), msk(2026, 1, 9, 17), stuck_at - timedelta(seconds=1)):
        await evaluate(rt, aid, now)
        assert await findings(rt, aid, RULE) == [], now

    await evaluate(rt, aid, stuck_at)
    f = await finding(rt, aid, RULE, "D1")
    assert f is not None and f.status == "open" and f.started_at == entered


async def test_without_a_holiday_calendar_the_same_deal_is_stuck_early_in_january(rt):
    entered = msk(2025, 12, 31, 10, 0)
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=entered, stage_entered_at=entered)
    await save_rules(rt, aid, {"calendar": {"country": None}})

    # Weekends only: Wed 8 h + Thu 9 h + Fri 9 h + Mon 1 h = 27 h by Monday 2026-01-05 10:00.
    await evaluate(rt, aid, msk(2026, 1, 5, 9, 59))
    assert await findings(rt, aid, RULE) == []
    await evaluate(rt, aid, msk(2026, 1, 5, 10, 0))
    assert await _open_stuck(rt, aid) == ["D1"]
