"""What a finding makes crmwatch write, by the rule's notify settings: escalations, reminders,
no task, no closing, silence while suppressed. Evaluated at chosen instants, delivered to the emulator.

T0 is Monday 10:00 in Moscow; the findings open at T0 (their deals have lacked a task for weeks).
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from app.findings import evaluation
from app.outbox import delivery
from tests.app.outbox.outbox_support import (
    HEAD,
    MANAGER,
    OTHER_MANAGER,
    T0,
    add_deals,
    crm_notes,
    crm_tasks,
    evaluate,
    findings,
    msk,
    new_account,
    outbox,
    page_link,
    plan_task,
    rules_doc,
    set_rules,
    writes,
)

NO_REPEAT = {"repeat_hours": None}
NO_ESCALATION = {"escalate_after_hours": None}


async def purposes(rt, purpose: str) -> list:
    return await outbox(rt, purpose=purpose)


async def test_an_open_finding_escalates_once_to_the_supervisor_after_the_limit(rt, amo, client):
    aid = await new_account(
        rt,
        amo=amo,
        rules=rules_doc("deal_without_task", notify={"escalate_after_hours": 2, **NO_REPEAT}, supervisor_user_id=HEAD),
    )
    await add_deals(rt, aid, [31000001, 31000002, 31000003], amo=amo)
    await evaluate(rt, aid, T0)
    by_deal = {f.deal_id: f for f in await findings(rt, aid)}
    assert {f.status for f in by_deal.values()} == {"open"}

    # People took two of them in hand: acknowledged, snoozed (well past the evaluations below).
    await client.post(f"/api/findings/{by_deal['31000002'].id}/ack", json={"by": "8100002"})
    until = (T0 + timedelta(days=3650)).isoformat()
    await client.post(f"/api/findings/{by_deal['31000003'].id}/snooze", json={"until": until})

    await evaluate(rt, aid, T0 + timedelta(hours=1, minutes=59))  # under 2 working hours
    assert await purposes(rt, "escalate") == []
    await evaluate(rt, aid, T0 + timedelta(hours=2, minutes=1))
    [escalation] = await purposes(rt, "escalate")
    assert escalation.kind == "create_task" and escalation.finding_id == by_deal["31000001"].id
    assert escalation.user_id == HEAD and escalation.deal_id == "31000001"

    # Later sweeps, any number of them, do not escalate the same opening again.
    for hours in (3, 5, 30):
        await evaluate(rt, aid, T0 + timedelta(hours=hours))
    assert [r.id for r in await purposes(rt, "escalate")] == [escalation.id]

    await delivery.deliver_pending(rt)
    escalated = [t for t in crm_tasks(amo) if t["text"].startswith("Эскалация")]
    assert len(escalated) == 1
    [task] = escalated
    assert task["responsible_user_id"] == int(HEAD) and task["entity_id"] == 31000001
    assert task["text"].startswith("Эскалация (Дмитрий Волков): У сделки нет запланированной задачи")
    assert task["text"].endswith(f"Подробнее: {page_link(rt, escalation.id)}")


async def test_each_rule_escalates_after_its_own_limit(rt):
    """Rules asking for the same action with different settings are enqueued by one statement per
    setting: each keeps its own limit."""
    rules = rules_doc("deal_without_task", "stuck_stage", supervisor_user_id=HEAD, suppress={})
    rules["rules"]["deal_without_task"]["notify"] = {"escalate_after_hours": 1, **NO_REPEAT}
    rules["rules"]["stuck_stage"]["notify"] = {"escalate_after_hours": 4, **NO_REPEAT}
    aid = await new_account(rt, rules=rules)
    await add_deals(rt, aid, [31000001])
    await evaluate(rt, aid, T0)
    rule_of = {f.id: f.rule for f in await findings(rt, aid)}
    assert sorted(rule_of.values()) == ["deal_without_task", "stuck_stage"]

    await evaluate(rt, aid, T0 + timedelta(hours=2))
    assert [rule_of[r.finding_id] for r in await purposes(rt, "escalate")] == ["deal_without_task"]
    await evaluate(rt, aid, T0 + timedelta(hours=4, minutes=1))
    assert sorted(rule_of[r.finding_id] for r in await purposes(rt, "escalate")) == ["deal_without_task", "stuck_stage"]


async def test_without_a_supervisor_nothing_escalates(rt):
    aid = await new_account(rt, rules=rules_doc("deal_without_task", notify={"escalate_after_hours": 1}))
    await add_deals(rt, aid, [31000001])
    await evaluate(rt, aid, T0)
    await evaluate(rt, aid, T0 + timedelta(hours=4))
    assert await purposes(rt, "escalate") == []


async def test_escalations_go_to_the_head_of_the_managers_team(rt):
    aid = await new_account(
        rt,
        rules=rules_doc(
            "deal_without_task",
            notify={"escalate_after_hours": 1, **NO_REPEAT},
            supervisor_user_id=HEAD,
            team_supervisors={OTHER_MANAGER: "8100009"},
        ),
    )
    await add_deals(rt, aid, [31000001], manager=MANAGER)
    await add_deals(rt, aid, [31000002], manager=OTHER_MANAGER)
    await evaluate(rt, aid, T0)
    await evaluate(rt, aid, T0 + timedelta(hours=2))
    heads = {r.deal_id: r.user_id for r in await purposes(rt, "escalate")}
    assert heads == {"31000001": HEAD, "31000002": "8100009"}


async def test_a_reminder_is_noted_once_per_interval_and_only_in_working_hours(rt, amo):
    aid = await new_account(
        rt, amo=amo, rules=rules_doc("deal_without_task", notify={"repeat_hours": 2, **NO_ESCALATION})
    )
    await add_deals(rt, aid, [31000001, 31000002], amo=amo)
    await evaluate(rt, aid, T0)
    assert len(await purposes(rt, "open")) == 4  # a task and a note each

    await evaluate(rt, aid, T0 + timedelta(hours=1))  # too soon after the opening note
    assert await purposes(rt, "repeat") == []
    at = T0 + timedelta(hours=3)
    await evaluate(rt, aid, at)
    first = await purposes(rt, "repeat")
    assert sorted(r.deal_id for r in first) == ["31000001", "31000002"]
    assert {r.kind for r in first} == {"add_note"}
    await evaluate(rt, aid, at)  # the same sweep again
    await evaluate(rt, aid, at + timedelta(minutes=30))  # and one inside the interval
    assert len(await purposes(rt, "repeat")) == 2

    # Saturday and Sunday, however long since the last one: no reminders.
    for day in (11, 12):
        await evaluate(rt, aid, msk(2025, 10, day, 13))
    assert len(await purposes(rt, "repeat")) == 2
    # Monday's first sweep reminds again.
    await evaluate(rt, aid, msk(2025, 10, 13, 9, 30))
    assert Counter(r.deal_id for r in await purposes(rt, "repeat")) == {"31000001": 2, "31000002": 2}

    await delivery.deliver_pending(rt)
    reminders = [n for n in crm_notes(amo) if n["params"]["text"].startswith("crmwatch, напоминание: ")]
    assert Counter(n["entity_id"] for n in reminders) == {31000001: 2, 31000002: 2}


async def test_no_task_when_the_rule_says_so(rt, amo):
    aid = await new_account(
        rt, amo=amo, rules=rules_doc("deal_without_task", notify={"task": False, **NO_REPEAT, **NO_ESCALATION})
    )
    await add_deals(rt, aid, [31000001], amo=amo)
    await evaluate(rt, aid, T0)
    assert [(r.kind, r.purpose) for r in await outbox(rt)] == [("add_note", "open")]
    await delivery.deliver_pending(rt)
    assert crm_tasks(amo) == [] and len(crm_notes(amo)) == 1
    assert [r for r in amo.request_log if r[1] == "/api/v4/tasks"] == []


async def test_the_task_is_left_open_on_resolve_when_the_rule_says_so(rt, amo):
    quiet = {**NO_REPEAT, **NO_ESCALATION}
    aid = await new_account(rt, amo=amo, rules=rules_doc("deal_without_task", notify=quiet))
    await add_deals(rt, aid, [31000001, 31000002], amo=amo)
    await evaluate(rt, aid, T0)
    await delivery.deliver_pending(rt)
    task_of = {t["entity_id"]: t["id"] for t in crm_tasks(amo)}

    # Deal 1 resolves with closing on (the default), then deal 2 with closing off.
    await plan_task(rt, aid, "31000001", T0 + timedelta(minutes=30))
    await evaluate(rt, aid, T0 + timedelta(hours=1))
    await delivery.deliver_pending(rt)
    assert amo.tasks[task_of[31000001]]["is_completed"] is True

    await set_rules(rt, aid, rules_doc("deal_without_task", notify={**quiet, "close_on_resolve": False}))
    before = len(amo.request_log)
    await plan_task(rt, aid, "31000002", T0 + timedelta(hours=1, minutes=30))
    await evaluate(rt, aid, T0 + timedelta(hours=2))
    assert {f.status for f in await findings(rt, aid)} == {"resolved"}
    await delivery.deliver_pending(rt)
    assert amo.tasks[task_of[31000002]]["is_completed"] is False
    assert writes(amo, before) == []
    assert [r.deal_id for r in await outbox(rt, kind="close_task")] == ["31000001"]


async def test_a_suppressed_finding_says_nothing(rt, amo):
    aid = await new_account(
        rt, amo=amo, rules=rules_doc("deal_without_task", "stuck_stage", notify={**NO_REPEAT, **NO_ESCALATION})
    )
    # Both deals have sat in their stage for weeks. Deal 1 also has no task: its stuck_stage finding
    # is kept quiet by the open deal_without_task one (the default suppression). Deal 2 has a task.
    await add_deals(rt, aid, [31000001, 31000002], amo=amo)
    await plan_task(rt, aid, "31000002", T0 - timedelta(days=1))
    await evaluate(rt, aid, T0)
    found = {(f.rule, f.deal_id): f for f in await findings(rt, aid)}
    assert set(found) == {("deal_without_task", "31000001"), ("stuck_stage", "31000001"), ("stuck_stage", "31000002")}
    assert found[("stuck_stage", "31000001")].suppressed
    assert found[("stuck_stage", "31000001")].status == "open"
    speaking = {found[("deal_without_task", "31000001")].id, found[("stuck_stage", "31000002")].id}
    assert {r.finding_id for r in await outbox(rt)} == speaking

    await delivery.deliver_pending(rt)
    tasks = {t["entity_id"]: t["text"] for t in crm_tasks(amo)}
    assert len(crm_tasks(amo)) == 2
    assert tasks[31000001].startswith("У сделки нет запланированной задачи")
    assert "на этапе" in tasks[31000002]


async def test_a_finding_speaks_once_its_suppression_lifts(rt, amo):
    aid = await new_account(
        rt, amo=amo, rules=rules_doc("deal_without_task", "stuck_stage", notify={**NO_REPEAT, **NO_ESCALATION})
    )
    await add_deals(rt, aid, [31000001], amo=amo)
    await evaluate(rt, aid, T0)
    [stuck] = await findings(rt, aid, "stuck_stage")
    assert stuck.suppressed and await outbox(rt, finding_id=stuck.id) == []

    # The manager plans a next step: deal_without_task resolves, the deal is still stuck.
    await plan_task(rt, aid, "31000001", T0 + timedelta(minutes=30))
    await evaluate(rt, aid, T0 + timedelta(hours=1))
    [stuck] = await findings(rt, aid, "stuck_stage")
    assert stuck.status == "open" and not stuck.suppressed
    assert {(r.kind, r.purpose) for r in await outbox(rt, finding_id=stuck.id)} == {
        ("create_task", "open"),
        ("add_note", "open"),
    }


async def test_re_evaluating_one_deal_escalates_and_reminds_only_that_deal(rt):
    """Escalations and reminders come due with time alone: a sweep finds them account-wide, while
    re-evaluating the deals an event touched looks only at those deals (so its cost does not grow
    with the account's open findings)."""
    aid = await new_account(
        rt,
        rules=rules_doc(
            "deal_without_task", notify={"escalate_after_hours": 1, "repeat_hours": 1}, supervisor_user_id=HEAD
        ),
    )
    await add_deals(rt, aid, [31000001, 31000002])
    await evaluate(rt, aid, T0)
    later = T0 + timedelta(hours=2)
    # A new deal makes the incremental evaluation change something, so it asks the outbox.
    await add_deals(rt, aid, [31000003])
    async with rt.sessions() as s, s.begin():
        result = await evaluation.evaluate(s, aid, deal_ids=["31000001", "31000003"], now=later)
    assert result.changed >= 1
    assert {r.deal_id for r in await purposes(rt, "escalate")} == {"31000001"}
    assert {r.deal_id for r in await purposes(rt, "repeat")} == {"31000001"}

    await evaluate(rt, aid, later)  # the sweep catches up with the deal nobody touched
    assert {r.deal_id for r in await purposes(rt, "escalate")} == {"31000001", "31000002"}
    assert {r.deal_id for r in await purposes(rt, "repeat")} == {"31000001", "31000002"}
