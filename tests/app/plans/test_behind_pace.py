"""plan_behind_pace: a finding on the MANAGER (no deal) when they are more than X % behind the pro-rated
plan after Y working days; off by default; its task goes to the manager on no card, escalates to the
head of sales, and is closed when the manager catches up. The scenario is test_pace's (November 2026,
now Mon 16 Nov 12:00 Moscow, 9.33 working days gone): 101 has 1 of 3 won where 1.4 were due (28.6 %
behind)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from app.accounts.models import Account
from app.findings.models import Finding
from app.findings.scheduler import sweep_account, sweep_due
from app.mirror.models import Deal
from app.outbox import delivery
from app.outbox.models import OutboxAction
from app.plans import behind, service
from app.rules.models import ManagerPace
from tests.conftest import DEMO_TOKEN

from .test_pace import NOW, build, msk

RULE = "plan_behind_pace"
ON = {"enabled": True, "settings": {"percent": 20, "after_working_days": 5, "measure": ["won_deals", "revenue"]}}


async def _refresh(rt, aid: int, now) -> int:
    async with rt.sessions() as s, s.begin():
        return await behind.refresh(s, await s.get(Account, aid), now)


async def _findings(rt, aid: int) -> list[Finding]:
    async with rt.sessions() as s:
        return list(
            await s.scalars(select(Finding).where(Finding.account_id == aid, Finding.rule == RULE).order_by(Finding.id))
        )


async def _outbox(rt, aid: int) -> list[OutboxAction]:
    async with rt.sessions() as s:
        rows = await s.scalars(
            select(OutboxAction)
            .join(Finding, Finding.id == OutboxAction.finding_id)
            .where(OutboxAction.account_id == aid, Finding.rule == RULE)
            .order_by(OutboxAction.id)
        )
        return list(rows)


async def _expected_behind(rt, aid: int, now) -> set[str]:
    """Who the plan report says is more than 20 % behind on won deals or revenue."""
    async with rt.sessions() as s:
        report = await service.pace(s, await s.get(Account, aid), "2026-11", now)
    return {
        m["manager_id"]
        for m in report["managers"]
        for r in m["rows"]
        if r["milestone"] in ("won_deals", "revenue") and r["behind_percent"] > 20
    }


async def test_off_by_default(client, rt):
    aid = await build(rt)
    rules = (await client.get(f"/api/accounts/{aid}/rules")).json()["rules"]
    assert rules[RULE]["enabled"] is False
    assert rules[RULE]["settings"] == {"percent": 20.0, "after_working_days": 5, "measure": ["revenue", "won_deals"]}
    assert await _refresh(rt, aid, NOW) == 0
    await sweep_account(rt, aid, NOW)
    assert await _findings(rt, aid) == []
    async with rt.sessions() as s:
        assert list(await s.scalars(select(ManagerPace))) == []


async def test_a_manager_behind_gets_a_finding_a_task_on_no_card_and_an_escalation(client, rt, amo):
    aid = await build(rt)
    patch = await client.patch(
        f"/api/accounts/{aid}/rules", json={"rules": {RULE: ON}, "supervisor_user_id": "900", "flood_limit": 1000}
    )  # (the scenario's deal findings would otherwise be summed up into one task: the flood guard)
    assert patch.status_code == 200, patch.text
    assert await _refresh(rt, aid, NOW) > 0
    behind_now = await _expected_behind(rt, aid, NOW)
    assert "101" in behind_now
    await sweep_account(rt, aid, NOW)
    found = await _findings(rt, aid)
    assert {f.entity_id for f in found} == behind_now
    anna = next(f for f in found if f.entity_id == "101")
    assert (anna.entity_type, anna.deal_id, anna.manager_id, anna.status) == ("manager", None, "101", "open")
    assert anna.started_at == NOW  # behind since the refresh that first saw it
    # Listed like any finding, in Russian, with the figure that is furthest behind.
    listed = (await client.get(f"/api/accounts/{aid}/findings", params={"rule": RULE, "manager_id": "101"})).json()
    [item] = listed["items"]
    assert item["deal_id"] is None and item["entity_type"] == "manager"
    assert item["message"].startswith("Анна Петрова отстаёт от плана месяца на 29 %: выигранные сделки 1 из 1")
    assert item["details"]["figures"]["won_deals"]["target"] == 3
    # The CRM: a task for the manager on no card; no note (there is no card).
    rows = [r for r in await _outbox(rt, aid) if r.finding_id == anna.id]
    assert [(r.kind, r.purpose, r.deal_id, r.user_id) for r in rows] == [("create_task", "open", None, "101")]
    # A second sweep says nothing new; a day later (8 working hours) the head of sales hears of it.
    await sweep_account(rt, aid, NOW + timedelta(minutes=5))
    assert len([r for r in await _outbox(rt, aid) if r.finding_id == anna.id]) == 1
    await sweep_account(rt, aid, NOW + timedelta(days=1))
    rows = [r for r in await _outbox(rt, aid) if r.finding_id == anna.id]
    assert [(r.kind, r.purpose, r.deal_id, r.user_id) for r in rows][1:] == [("create_task", "escalate", None, "900")]

    # Delivered to amoCRM as a task on no lead for the manager.
    async with rt.sessions() as s, s.begin():
        (await s.get(Account, aid)).credentials = rt.box.seal({"access_token": DEMO_TOKEN})
        # The scenario's other findings are on made-up deals the emulator does not have: not sent.
        ours = select(Finding.id).where(Finding.rule == RULE)
        await s.execute(update(OutboxAction).where(OutboxAction.finding_id.not_in(ours)).values(status="cancelled"))
    for user_id, name in ((101, "Анна Петрова"), (900, "РОП")):
        amo.add_user(user_id, name, f"{user_id}@example.ru")
    await delivery.deliver_pending(rt)
    tasks = [t for t in amo.tasks.values() if "Анна Петрова отстаёт" in (t.get("text") or "")]
    assert {t["responsible_user_id"] for t in tasks} == {101, 900}
    assert all(not t.get("entity_id") for t in tasks)
    # The task's link opens the finding's page: the manager's message, no card to link to.
    page_path = next(t for t in tasks if t["responsible_user_id"] == 101)["text"].split("crmwatch.test", 1)[1]
    page = await client.get(page_path)
    assert page.status_code == 200 and "Анна Петрова отстаёт от плана месяца" in page.text
    assert "/leads/detail/" not in page.text

    # Anna catches up: two more won this month. The next refresh and sweep resolve it and close the task.
    async with rt.sessions() as s, s.begin():
        for i in ("N1", "N2"):
            s.add(Deal(account_id=aid, id=i, name=i, pipeline_id="P1", stage_id="142", price=120_000,
                       responsible_user_id="101", is_closed=True, closed_at=msk(11, 13)))  # fmt: skip
    later = NOW + timedelta(days=1, hours=1)
    await _refresh(rt, aid, later)
    await sweep_account(rt, aid, later)
    anna = next(f for f in await _findings(rt, aid) if f.entity_id == "101")
    assert (anna.status, anna.resolution) == ("resolved", "condition_cleared")
    closes = [r for r in await _outbox(rt, aid) if r.finding_id == anna.id and r.kind == "close_task"]
    assert len(closes) == 2  # the manager's task and the escalation
    await delivery.deliver_pending(rt)
    assert all(amo.tasks[t["id"]]["is_completed"] for t in tasks)


async def test_not_before_y_working_days_and_not_within_x_percent(client, rt):
    aid = await build(rt)
    await client.patch(f"/api/accounts/{aid}/rules", json={"rules": {RULE: ON}})
    early = msk(11, 3, 12)  # one and a half working days into November
    await _refresh(rt, aid, early)
    await sweep_account(rt, aid, early)
    assert await _findings(rt, aid) == []
    # 28.6 % behind is not more than 30 %.
    lenient = {**ON, "settings": {**ON["settings"], "percent": 30}}
    await client.patch(f"/api/accounts/{aid}/rules", json={"rules": {RULE: lenient}})
    await _refresh(rt, aid, NOW)
    await sweep_account(rt, aid, NOW)
    assert "101" not in {f.entity_id for f in await _findings(rt, aid)}
    # A new month starts clean: last month's rows do not count before the next refresh.
    await client.patch(f"/api/accounts/{aid}/rules", json={"rules": {RULE: ON}})
    await _refresh(rt, aid, NOW)
    await sweep_account(rt, aid, NOW)
    assert "101" in {f.entity_id for f in await _findings(rt, aid) if f.status == "open"}
    december = msk(12, 10)
    await sweep_account(rt, aid, december)
    assert all(f.status == "resolved" for f in await _findings(rt, aid))


@pytest.mark.parametrize(
    "bad",
    [{"percent": 0}, {"percent": 120}, {"after_working_days": -1}, {"measure": ["calls"]}, {"measure": []}, {"x": 1}],
)
async def test_bad_settings_are_422(client, rt, bad):
    aid = await build(rt)
    resp = await client.patch(f"/api/accounts/{aid}/rules", json={"rules": {RULE: {"settings": bad}}})
    assert resp.status_code == 422, resp.text
    assert (await client.get(f"/api/accounts/{aid}/rules")).json()["rules"][RULE]["enabled"] is False


async def test_a_refresh_that_changes_who_is_behind_brings_the_nightly_sweep_forward(client, rt):
    """Sweeps are nightly and a manager is no deal, so no tick reaches this rule: the refresh that
    first sees a manager behind must make the scheduler's next tick sweep the account."""
    aid = await build(rt)
    assert (await client.patch(f"/api/accounts/{aid}/rules", json={"rules": {RULE: ON}})).status_code == 200
    await sweep_account(rt, aid, NOW)  # the settings change's sweep: pace not refreshed yet, nothing opens
    assert await _findings(rt, aid) == []
    async with rt.sessions() as s:
        assert (await s.get(Account, aid)).next_sweep_at > NOW + timedelta(hours=1)  # tonight

    assert await _refresh(rt, aid, NOW) > 0
    async with rt.sessions() as s:
        assert (await s.get(Account, aid)).next_sweep_at == NOW
    assert await sweep_due(rt, NOW + timedelta(seconds=15)) >= 1
    assert "101" in {f.entity_id for f in await _findings(rt, aid) if f.status == "open"}

    # The same verdict at the next refresh leaves the nightly sweep where it is.
    await _refresh(rt, aid, NOW + timedelta(minutes=15))
    async with rt.sessions() as s:
        assert (await s.get(Account, aid)).next_sweep_at > NOW + timedelta(hours=1)
