"""A quiet first connect: the problems an account already has when it connects are findings like
any other, but they reach the CRM as one summary task per manager and one for the head of sales
(`announce_backlog`), not as a task and a note each; a flood guard folds any later burst for one
person into one task. Against the amoCRM and Bitrix24 emulators, on both databases."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from app.accounts.models import Account
from app.findings import evaluation as rules_engine
from app.findings import notify
from app.findings.models import Finding
from app.findings.scheduler import sweep_account
from app.outbox import delivery
from app.outbox.models import OutboxAction
from app.sync import service as sync
from integrations.amocrm.demo_data import HEAD, seed_demo
from tests.app.bitrix24.support import HOUR as B24_HOUR
from tests.app.bitrix24.support import NOW as B24_NOW
from tests.app.bitrix24.support import seed as b24_seed
from tests.app.outbox.outbox_support import HEAD as HEAD_OF_SALES
from tests.app.outbox.outbox_support import (
    MANAGER,
    OTHER_MANAGER,
    T0,
    add_deals,
    evaluate,
    make_due,
    new_account,
    outbox,
    rules_doc,
)
from tests.conftest import create_account, create_b24_account

NOW = int(time.time())
EXTRA = range(31000500, 31000540)  # forty more deals with no task, all Volkov's: a real backlog
VOLKOV = "8100002"


def backlogged(amo) -> None:
    seed_demo(amo, now=NOW)
    for deal_id in EXTRA:
        amo.add_lead(
            deal_id,
            f"Старая сделка {deal_id}",
            4100000,
            41000001,
            responsible_user_id=int(VOLKOV),
            created_at=NOW - 10 * 24 * 3600,
            updated_at=NOW - 10 * 24 * 3600,
        )


async def connect(client, rt, amo, **rules) -> int:
    backlogged(amo)
    acc = await create_account(client, rules={"supervisor_user_id": str(HEAD), **rules})
    assert acc["backlog_since"] is not None and acc["paused"] is False
    await sync.run_pending(rt)  # the backfill ends with the sweep that finds the backlog
    return acc["id"]


async def speaking(rt, account_id: int) -> dict[str, dict[str, int]]:
    """Open, unsuppressed findings on a deal, by manager and rule: what `all` would write."""
    async with rt.sessions() as s:
        rows = await s.execute(
            select(Finding.manager_id, Finding.rule, func.count())
            .where(
                Finding.account_id == account_id,
                Finding.status == "open",
                Finding.suppressed.is_(False),
                Finding.deal_id.is_not(None),
            )
            .group_by(Finding.manager_id, Finding.rule)
        )
        out: dict[str, dict[str, int]] = {}
        for manager, rule, count in rows:
            out.setdefault(manager, {})[rule] = count
        return out


def unbound_tasks(amo) -> list[dict]:
    return [t for t in amo.tasks.values() if t["entity_id"] is None]


async def test_summary_is_one_task_per_manager_and_one_for_the_head_of_sales(client, rt, amo):
    aid = await connect(client, rt, amo)
    by_manager = await speaking(rt, aid)
    assert sum(by_manager[VOLKOV].values()) >= 40 and len(by_manager) >= 2  # many problems, several managers
    rows = await outbox(rt)
    assert {(r.kind, r.purpose) for r in rows} == {("digest", "backlog"), ("digest", "backlog_team")}
    assert len(rows) == len(by_manager) + 1
    mine = {r.user_id: r for r in rows if r.purpose == "backlog"}
    assert {u: r.details["rules"] for u, r in mine.items()} == by_manager
    [team] = [r for r in rows if r.purpose == "backlog_team"]
    assert team.user_id == str(HEAD) and team.deal_id is None
    assert team.details["managers"] == {m: sum(c.values()) for m, c in by_manager.items()}

    async with rt.sessions() as s:
        account = await s.get(Account, aid)
        assert account.backlog_since is None  # the backlog is announced: what opens from now is news

    await delivery.deliver_pending(rt)
    tasks = unbound_tasks(amo)
    assert len(tasks) == len(rows) and not [n for n in amo.notes.values() if "/f/" in str(n.get("params"))]
    volkov = next(t for t in tasks if t["responsible_user_id"] == int(VOLKOV))
    total = sum(by_manager[VOLKOV].values())
    assert f"нарушений — {total}" in volkov["text"] and "Сделка без задачи: " in volkov["text"]
    # The head of sales is a manager too here: her own summary, and the team's.
    [head] = [t for t in tasks if t["responsible_user_id"] == HEAD and "сделки отдела" in t["text"]]
    assert f"Дмитрий Волков — {total}" in head["text"]
    assert {r.status for r in await outbox(rt)} == {"sent"}

    # Another sweep writes nothing, and the backlog never escalates or reminds one by one.
    later = time.time() + 30 * 24 * 3600
    from datetime import UTC, datetime

    async with rt.sessions() as s:
        backlog = set(await s.scalars(select(Finding.id).where(Finding.backlog_opening == Finding.times_opened)))
    assert len(backlog) >= 40
    await sweep_account(rt, aid)
    assert len(await outbox(rt)) == len(rows)
    # A month on, with a head of sales to escalate to and reminders due: none for the backlog.
    await sweep_account(rt, aid, now=datetime.fromtimestamp(later, UTC))
    assert not [r for r in await outbox(rt) if r.finding_id in backlog]


async def test_none_writes_nothing_and_all_writes_each_one(client, rt, amo):
    aid = await connect(client, rt, amo, announce_backlog="none")
    assert await outbox(rt) == []
    assert sum(sum(c.values()) for c in (await speaking(rt, aid)).values()) >= 40  # still listed in crmwatch


async def test_all_writes_a_task_and_a_note_for_each(client, rt, amo):
    aid = await connect(client, rt, amo, announce_backlog="all", flood_limit=1000)
    total = sum(sum(c.values()) for c in (await speaking(rt, aid)).values())
    rows = await outbox(rt)
    opened = [r for r in rows if r.purpose == "open"]
    assert len(opened) == 2 * total and {r.kind for r in opened} == {"create_task", "add_note"}
    assert not [r for r in rows if r.kind == "digest"]


async def test_findings_that_open_after_the_connection_are_written_one_by_one(client, rt, amo):
    aid = await connect(client, rt, amo, announce_backlog="none")
    # The manager of a backlog deal changes (the finding's facts move): still nothing is written.
    async with rt.sessions() as s, s.begin():
        await s.execute(
            update(Finding)
            .where(Finding.account_id == aid, Finding.deal_id == str(EXTRA[0]))
            .values(manager_id=OTHER_MANAGER)
        )
    await sweep_account(rt, aid)
    assert await outbox(rt) == []
    # A new deal with no task: a new problem, written as before.
    from tests.app.outbox.outbox_support import LONG_AGO

    async with rt.sessions() as s, s.begin():
        from app.mirror.models import Deal

        s.add(
            Deal(
                account_id=aid,
                id="31000999",
                name="Новая сделка",
                pipeline_id="4100000",
                stage_id="41000001",
                stage_entered_at=LONG_AGO,
                stage_entered_source="event",
                responsible_user_id=VOLKOV,
                is_closed=False,
                is_deleted=False,
                created_at=LONG_AGO,
                source_updated_at=LONG_AGO,
                mirrored_at=LONG_AGO,
            )
        )
    await sweep_account(rt, aid)
    rows = await outbox(rt)
    assert {(r.kind, r.deal_id) for r in rows} == {("create_task", "31000999"), ("add_note", "31000999")}


async def test_a_full_resync_is_quiet_again(client, rt, amo):
    aid = await connect(client, rt, amo, announce_backlog="none")
    resp = await client.post(f"/api/accounts/{aid}/sync")
    assert resp.status_code == 202
    assert (await client.get(f"/api/accounts/{aid}")).json()["backlog_since"] is not None
    # Deals the webhooks never told us about, found by the re-sync: backlog, not news.
    for deal_id in range(31000600, 31000605):
        amo.add_lead(
            deal_id,
            f"Пропущенная {deal_id}",
            4100000,
            41000001,
            responsible_user_id=int(VOLKOV),
            created_at=NOW - 24 * 3600,
            updated_at=NOW - 24 * 3600,
        )
    await sync.run_pending(rt)
    assert await outbox(rt) == []
    assert (await client.get(f"/api/accounts/{aid}")).json()["backlog_since"] is None


async def test_flood_guard_folds_a_burst_for_one_person_into_one_task(rt, amo):
    aid = await new_account(
        rt, amo=amo, rules=rules_doc("deal_without_task", notify={"escalate_after_hours": None}, flood_limit=20)
    )
    await add_deals(rt, aid, range(33000001, 33000016), amo=amo)  # 15 findings: 30 actions for one manager
    await add_deals(rt, aid, range(33000101, 33000106), manager=OTHER_MANAGER, amo=amo)  # 10 for another
    result = await evaluate(rt, aid, T0)
    rows = await outbox(rt)
    [digest] = [r for r in rows if r.kind == "digest"]
    assert digest.user_id == MANAGER and digest.purpose == "flood" and digest.deal_id is None
    assert digest.details == {"rules": {"deal_without_task": 15}, "actions": 30, "escalations": 0}
    grouped = [r for r in rows if r.status == "grouped"]
    assert (
        len(grouped) == 30 and {r.ref_id for r in grouped} == {digest.id} and {r.user_id for r in grouped} == {MANAGER}
    )
    other = [r for r in rows if r.user_id == OTHER_MANAGER]
    assert len(other) == 10 and {r.status for r in other} == {"pending"}  # under the limit: one by one
    assert result.enqueued == 11

    await delivery.deliver_pending(rt)
    [task] = unbound_tasks(amo)
    assert task["responsible_user_id"] == int(MANAGER) and "Сделка без задачи: 15" in task["text"]
    assert "30 задач и примечаний" in task["text"]
    # The grouped rows keep their dedup keys: the next sweep sends none of them.
    await evaluate(rt, aid, T0 + timedelta(minutes=5))
    assert len(await outbox(rt)) == len(rows)
    assert {r.status for r in await outbox(rt, status="grouped")} == {"grouped"}


async def test_flood_guard_folds_each_flooded_person_under_their_own_task(rt, amo):
    # Two people flooded by one evaluation (a tick's reminders in working hours flood many at
    # once): each gets one task of their own, and each row is grouped under its person's task.
    aid = await new_account(
        rt, amo=amo, rules=rules_doc("deal_without_task", notify={"escalate_after_hours": None}, flood_limit=5)
    )
    await add_deals(rt, aid, range(33000001, 33000005), amo=amo)  # 4 findings: 8 actions
    await add_deals(rt, aid, range(33000101, 33000107), manager=OTHER_MANAGER, amo=amo)  # 6: 12 actions
    result = await evaluate(rt, aid, T0)
    rows = await outbox(rt)
    digests = {r.user_id: r for r in rows if r.kind == "digest"}
    assert set(digests) == {MANAGER, OTHER_MANAGER}
    assert digests[MANAGER].details == {"rules": {"deal_without_task": 4}, "actions": 8, "escalations": 0}
    assert digests[OTHER_MANAGER].details == {"rules": {"deal_without_task": 6}, "actions": 12, "escalations": 0}
    for user, digest in digests.items():
        mine = [r for r in rows if r.kind != "digest" and r.user_id == user]
        assert mine and {(r.status, r.ref_id) for r in mine} == {("grouped", digest.id)}
    assert result.enqueued == 2


async def evaluate_deals(rt, account_id: int, deal_ids: list[str], now):
    """An evaluation of a few deals, as a tick or an event makes (on PostgreSQL the outbox rows
    and the flood guard are then one statement)."""
    async with rt.sessions() as s, s.begin():
        return await rules_engine.evaluate(s, account_id, deal_ids=deal_ids, now=now, actor="tick")


@pytest.mark.parametrize("guarded", [True, False], ids=["tick", "event"])
async def test_flood_guard_folds_a_burst_in_an_evaluation_of_a_few_deals(rt, amo, monkeypatch, guarded):
    # A tick's many deals decide the guard inside the outbox INSERT (on PostgreSQL); an event's
    # few deals insert, then group. Both come to the same rows.
    monkeypatch.setattr(notify, "MANY_DEALS", 0 if guarded else 10_000)
    aid = await new_account(
        rt, amo=amo, rules=rules_doc("deal_without_task", notify={"escalate_after_hours": None}, flood_limit=20)
    )
    mine = await add_deals(rt, aid, range(33000001, 33000016), amo=amo)  # 15 findings: 30 actions
    other = await add_deals(rt, aid, range(33000101, 33000106), manager=OTHER_MANAGER, amo=amo)  # 10
    result = await evaluate_deals(rt, aid, [*mine, *other], T0)
    rows = await outbox(rt)
    [digest] = [r for r in rows if r.kind == "digest"]
    assert digest.user_id == MANAGER and digest.purpose == "flood" and digest.status == "pending"
    assert digest.details == {"rules": {"deal_without_task": 15}, "actions": 30, "escalations": 0}
    grouped = [r for r in rows if r.status == "grouped"]
    assert len(grouped) == 30 and {(r.ref_id, r.user_id) for r in grouped} == {(digest.id, MANAGER)}
    assert {r.last_error for r in grouped} == {"grouped into one task (flood_limit)"}
    assert len([r for r in rows if r.user_id == OTHER_MANAGER and r.status == "pending"]) == 10
    assert result.enqueued == 11
    # The same evaluation again (a second process, a retried tick) adds nothing.
    again = await evaluate_deals(rt, aid, [*mine, *other], T0)
    assert again.enqueued == 0 and len(await outbox(rt)) == len(rows)
    # Later, nothing new: the grouped rows' dedup keys hold, no digest is made for nothing.
    later = await evaluate_deals(rt, aid, [*mine, *other], T0 + timedelta(minutes=5))
    assert later.enqueued == 0 and len(await outbox(rt)) == len(rows)


@pytest.mark.parametrize("guarded", [True, False], ids=["tick", "event"])
async def test_flood_guard_folds_a_ticks_reminders_and_counts_escalations(rt, amo, monkeypatch, guarded):
    monkeypatch.setattr(notify, "MANY_DEALS", 0 if guarded else 10_000)
    # A day later in working hours, the reminders and escalations of one evaluation of a few deals
    # flood the manager and the head of sales: each gets one task, the rows go grouped under it.
    aid = await new_account(
        rt,
        amo=amo,
        rules=rules_doc(
            "deal_without_task",
            notify={"escalate_after_hours": 4, "repeat_hours": 8},
            flood_limit=5,
            supervisor_user_id=HEAD_OF_SALES,
        ),
    )
    mine = await add_deals(rt, aid, range(33000001, 33000007), amo=amo)  # 6 findings
    await evaluate_deals(rt, aid, mine, T0)
    first = {r.id for r in await outbox(rt)}
    # (A tick asks the outbox only when something changed on its deals: here a new one, elsewhere.)
    new = await add_deals(rt, aid, [33000101], manager=OTHER_MANAGER, amo=amo)
    result = await evaluate_deals(rt, aid, [*mine, *new], T0 + timedelta(days=1))
    rows = [r for r in await outbox(rt) if r.id not in first]
    digests = {r.user_id: r for r in rows if r.kind == "digest"}
    assert set(digests) == {MANAGER, HEAD_OF_SALES}
    assert digests[MANAGER].details == {"rules": {"deal_without_task": 6}, "actions": 6, "escalations": 0}
    assert digests[HEAD_OF_SALES].details == {"rules": {"deal_without_task": 6}, "actions": 6, "escalations": 6}
    reminders = [r for r in rows if r.purpose == "repeat"]
    escalations = [r for r in rows if r.purpose == "escalate"]
    assert len(reminders) == 6 and {(r.status, r.ref_id) for r in reminders} == {("grouped", digests[MANAGER].id)}
    assert len(escalations) == 6 and {(r.status, r.ref_id) for r in escalations} == {
        ("grouped", digests[HEAD_OF_SALES].id)
    }
    fresh = [r for r in rows if r.user_id == OTHER_MANAGER]
    assert len(fresh) == 2 and {(r.purpose, r.status) for r in fresh} == {("open", "pending")}
    assert result.enqueued == 4


async def test_a_lost_answer_to_a_digest_is_read_back_not_sent_twice(rt, amo):
    aid = await new_account(
        rt, amo=amo, rules=rules_doc("deal_without_task", notify={"escalate_after_hours": None}, flood_limit=4)
    )
    await add_deals(rt, aid, range(33000001, 33000004), amo=amo)
    await evaluate(rt, aid, T0)
    [digest] = await outbox(rt, kind="digest")
    await delivery.deliver_pending(rt)
    [task] = unbound_tasks(amo)
    # As if the process died before recording it: the row comes back tried once already.
    async with rt.sessions() as s, s.begin():
        await s.execute(update(OutboxAction).where(OutboxAction.id == digest.id).values(status="sending"))
    await make_due(rt, status="sending")
    posts = len([r for r in amo.request_log if r[0] == "POST"])
    await delivery.deliver_pending(rt)
    assert len([r for r in amo.request_log if r[0] == "POST"]) == posts
    [row] = await outbox(rt, kind="digest")
    assert row.status == "sent" and row.external_id == str(task["id"]) and row.attempts == 2
    assert len(unbound_tasks(amo)) == 1


async def test_post_accounts_takes_the_rules_document(client, rt):
    bad = await client.post(
        "/api/accounts",
        json={
            "name": "Магазин",
            "crm": "amocrm",
            "base_url": "https://demoshop.amocrm.ru",
            "access_token": "demo-token",
            "rules": {"announce_backlog": "loudly"},
        },
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"][:3] == ["body", "rules", "announce_backlog"]
    assert (await client.get("/api/accounts")).json() == []  # nothing stored

    acc = await create_account(
        client,
        rules={"announce_backlog": "none", "flood_limit": 5, "rules": {"stuck_stage": {"settings": {"limit_days": 9}}}},
    )
    doc = (await client.get(f"/api/accounts/{acc['id']}/rules")).json()
    assert doc["announce_backlog"] == "none" and doc["flood_limit"] == 5
    assert doc["rules"]["stuck_stage"]["settings"]["limit_days"] == 9
    assert (await client.get(f"/api/accounts/{acc['id']}/rules")).json()["rules"]["overdue_task"]["enabled"] is True
    default = await create_account(client, name="Другой")
    assert (await client.get(f"/api/accounts/{default['id']}/rules")).json()["announce_backlog"] == "summary"


async def test_a_paused_account_is_backfilled_but_neither_swept_nor_written_until_resumed(client, rt, amo):
    backlogged(amo)
    acc = await create_account(client, paused=True, rules={"supervisor_user_id": str(HEAD)})
    aid = acc["id"]
    assert acc["paused"] is True
    await sync.run_pending(rt)
    account = (await client.get(f"/api/accounts/{aid}")).json()
    assert account["sync"]["state"] == "done" and account["backlog_since"] is not None
    assert (await client.get(f"/api/accounts/{aid}/mirror")).json()["deals_open"] >= 40
    assert (await client.get(f"/api/accounts/{aid}/findings", params={"status": "all"})).json()["total"] == 0
    from app.findings.scheduler import sweep_due

    await sweep_due(rt)
    assert (await client.get(f"/api/accounts/{aid}/findings", params={"status": "all"})).json()["total"] == 0
    refused = await client.post(f"/api/accounts/{aid}/sweep")
    assert refused.status_code == 409 and "paused" in refused.json()["detail"]

    # Only a JSON boolean pauses or resumes: 0 or "no" is refused, not read as false.
    for wrong in (0, "no"):
        assert (await client.patch(f"/api/accounts/{aid}", json={"paused": wrong})).status_code == 422
    assert (await client.get(f"/api/accounts/{aid}")).json()["paused"] is True

    # Rules set while paused apply from the first sweep; resuming lets it run.
    await client.patch(f"/api/accounts/{aid}/rules", json={"flood_limit": 7})
    resumed = await client.patch(f"/api/accounts/{aid}", json={"paused": False})
    assert resumed.status_code == 200 and resumed.json()["paused"] is False
    await sweep_due(rt)
    rows = await outbox(rt)
    assert rows and {r.kind for r in rows} == {"digest"}
    assert (await client.get(f"/api/accounts/{aid}")).json()["backlog_since"] is None

    # Paused again: nothing is delivered meanwhile.
    await client.patch(f"/api/accounts/{aid}", json={"paused": True})
    await delivery.deliver_pending(rt)
    assert unbound_tasks(amo) == []
    await client.patch(f"/api/accounts/{aid}", json={"paused": False})
    await delivery.deliver_pending(rt)
    assert len(unbound_tasks(amo)) == len(rows)


async def test_bitrix24_summary_is_a_task_on_no_card_and_read_back_by_marker(client, rt, b24):
    b24_seed(b24)
    for deal_id in range(4600, 4625):
        b24.add_deal(deal_id, f"Старая {deal_id}", "NEW", assigned_by=7, at=B24_NOW - 100 * B24_HOUR)
    acc = await create_b24_account(client, rules={"supervisor_user_id": "1"})
    await sync.run_pending(rt)
    rows = await outbox(rt)
    assert rows and {r.kind for r in rows} == {"digest"}
    assert {r.user_id for r in rows if r.purpose == "backlog_team"} == {"1"}
    await delivery.deliver_pending(rt)
    ours = [t for t in b24.tasks.values() if "/f/" in t["description"]]
    assert len(ours) == len(rows) and all(t["ufCrmTask"] == [] for t in ours)
    assert not [a for a in b24.activities.values() if "/f/" in a["DESCRIPTION"]]
    seven = next(t for t in ours if t["responsibleId"] == "7")
    assert "Сделка без задачи: " in seven["description"]
    # The answer was lost: the task is found by its marker among the person's tasks, not re-created.
    row = next(r for r in rows if r.user_id == "7")
    async with rt.sessions() as s, s.begin():
        await s.execute(update(OutboxAction).where(OutboxAction.id == row.id).values(status="sending"))
    await make_due(rt, status="sending")
    await delivery.deliver_pending(rt)
    assert len([t for t in b24.tasks.values() if "/f/" in t["description"]]) == len(rows)
    [again] = await outbox(rt, id=row.id)
    assert again.status == "sent" and again.external_id == f"task:{seven['id']}"
    assert acc["id"]
