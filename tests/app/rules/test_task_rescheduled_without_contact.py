"""task_rescheduled_without_contact on hand-built mirror states."""

from __future__ import annotations

from datetime import timedelta

from app.mirror.models import Task
from tests.app.rules.mirror_builder import (
    MANAGER,
    OTHER_MANAGER,
    Event,
    add_deal,
    add_note,
    add_task,
    change,
    evaluate,
    finding,
    findings,
    history,
    msk,
    new_account,
    save_rules,
)

RULE = "task_rescheduled_without_contact"
# Monday 2025-12-08: the task is set at 10:00 for 15:00; at 14:00 it is moved forward.
DEAL_CREATED = msk(2025, 12, 8, 9, 0)
TASK_CREATED = msk(2025, 12, 8, 10, 0)
ORIGINAL_DUE = msk(2025, 12, 8, 15, 0)
MOVED_AT = msk(2025, 12, 8, 14, 0)
NOW = msk(2025, 12, 8, 16, 0)


async def _rescheduled(rt, shift: timedelta = timedelta(days=1)) -> int:
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=DEAL_CREATED)
        add_task(
            s,
            aid,
            "T1",
            "D1",
            due_at=ORIGINAL_DUE + shift,
            created_at=TASK_CREATED,
            previous_due_at=ORIGINAL_DUE,
            due_moved_at=MOVED_AT,
            responsible_user_id=OTHER_MANAGER,
        )
    return aid


async def test_task_moved_forward_without_contact_is_a_finding(rt):
    aid = await _rescheduled(rt)

    await evaluate(rt, aid, NOW)

    f = await finding(rt, aid, RULE, "T1")
    assert f is not None
    assert (f.status, f.entity_type, f.deal_id, f.manager_id) == ("open", "task", "D1", OTHER_MANAGER)
    assert f.started_at == MOVED_AT
    assert f.severity == "info"
    assert await history(rt, f.id) == [Event(None, "open", "sweep", "condition began")]


async def test_a_note_or_call_since_the_task_was_set_means_contact(rt):
    aid = await new_account(rt)
    kinds = ["common", "call_in", "call_out"]
    async with rt.sessions() as s, s.begin():
        for kind in [*kinds, "none"]:
            add_deal(s, aid, f"D_{kind}", created_at=DEAL_CREATED)
            add_task(
                s,
                aid,
                f"T_{kind}",
                f"D_{kind}",
                due_at=ORIGINAL_DUE + timedelta(days=1),
                created_at=TASK_CREATED,
                previous_due_at=ORIGINAL_DUE,
                due_moved_at=MOVED_AT,
            )
        for kind in kinds:
            add_note(
                s,
                aid,
                f"N_{kind}",
                f"D_{kind}",
                "Клиент просит перенести встречу на завтра" if kind == "common" else None,
                created_at=msk(2025, 12, 8, 13, 0),
                kind=kind,
            )

    await evaluate(rt, aid, NOW)

    assert [f.entity_id for f in await findings(rt, aid, RULE)] == ["T_none"]


async def test_notes_that_are_not_contact_do_not_count(rt):
    aid = await _rescheduled(rt)
    other = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        # Before the task was set, a system note, a note on another deal, the same deal id in another account.
        add_note(
            s,
            aid,
            "N1",
            "D1",
            "Обсудили условия поставки, ждём реквизиты",
            created_at=TASK_CREATED - timedelta(minutes=1),
        )
        add_note(s, aid, "N2", "D1", "Этап сделки изменён", created_at=msk(2025, 12, 8, 13), kind="system")
        add_deal(s, aid, "D2", created_at=DEAL_CREATED)
        add_note(s, aid, "N3", "D2", None, created_at=msk(2025, 12, 8, 13), kind="call_out")
        add_deal(s, other, "D1", created_at=DEAL_CREATED)
        add_note(s, other, "N4", "D1", None, created_at=msk(2025, 12, 8, 13), kind="call_in")

    await evaluate(rt, aid, NOW)

    f = await finding(rt, aid, RULE, "T1")
    assert f is not None and f.status == "open"


async def test_a_call_after_the_finding_resolves_it(rt):
    aid = await _rescheduled(rt)
    await evaluate(rt, aid, NOW)
    f = await finding(rt, aid, RULE, "T1")
    assert f is not None and f.status == "open"

    async with rt.sessions() as s, s.begin():
        add_note(s, aid, "N1", "D1", None, created_at=NOW + timedelta(minutes=10), kind="call_out")
    await evaluate(rt, aid, NOW + timedelta(minutes=15))

    f = await finding(rt, aid, RULE, "T1")
    assert f is not None and f.status == "resolved"
    assert (await history(rt, f.id))[-1] == Event("open", "resolved", "sweep", "condition cleared")


async def test_only_a_move_forward_by_at_least_an_hour_counts(rt):
    shifts = {
        "10MIN": timedelta(minutes=10),
        "59MIN": timedelta(minutes=59),
        "1H1S": timedelta(hours=1, seconds=1),
        "3D": timedelta(days=3),
        "EARLIER": timedelta(hours=-2),  # moved earlier: not putting it off
    }
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        for name, shift in shifts.items():
            add_deal(s, aid, f"D_{name}", created_at=DEAL_CREATED)
            add_task(
                s,
                aid,
                f"T_{name}",
                f"D_{name}",
                due_at=ORIGINAL_DUE + shift,
                created_at=TASK_CREATED,
                previous_due_at=ORIGINAL_DUE,
                due_moved_at=MOVED_AT,
                responsible_user_id=MANAGER,
            )

    await evaluate(rt, aid, NOW)

    assert sorted(f.entity_id for f in await findings(rt, aid, RULE)) == ["T_1H1S", "T_3D"]


async def test_a_move_of_exactly_one_hour_counts(rt):
    # The boundary itself: on SQLite the difference is computed in floating point (julianday), where
    # two instants exactly one hour apart can come out a few microseconds short of 3600 s.
    aid = await _rescheduled(rt, timedelta(hours=1))

    await evaluate(rt, aid, NOW)

    f = await finding(rt, aid, RULE, "T1")
    assert f is not None and f.status == "open"


async def test_min_shift_from_the_rules_document(rt):
    aid = await _rescheduled(rt, timedelta(minutes=10))
    await save_rules(rt, aid, {"rules": {RULE: {"settings": {"min_shift_minutes": 5}}}})

    await evaluate(rt, aid, NOW)

    f = await finding(rt, aid, RULE, "T1")
    assert f is not None and f.status == "open"


async def test_completed_rescheduled_task_resolves(rt):
    aid = await _rescheduled(rt)
    await evaluate(rt, aid, NOW)

    await change(rt, Task, aid, "T1", is_completed=True, completed_at=NOW + timedelta(minutes=1))
    await evaluate(rt, aid, NOW + timedelta(minutes=5))

    f = await finding(rt, aid, RULE, "T1")
    assert f is not None and f.status == "resolved"
