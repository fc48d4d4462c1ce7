"""The findings, rules and sweep API, driven the way an operator (or the widget) uses it."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select, update

from app.accounts.models import Account
from app.findings import scheduler
from app.findings.models import Finding, FindingEvent
from app.ingest import worker
from app.sync import service as sync
from integrations.amocrm.demo_data import seed_demo
from tests.conftest import FORM, create_account, form_body

NOW = int(time.time())


async def demo_account(client, rt, amo) -> dict:
    seed_demo(amo, now=NOW)
    acc = await create_account(client)
    await sync.run_pending(rt)  # the backfill ends with a first sweep
    return acc


async def open_findings(client, acc, **params) -> dict:
    resp = await client.get(f"/api/accounts/{acc['id']}/findings", params={"status": "open", **params})
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_a_new_account_shows_its_existing_problems_after_the_backfill(client, rt, amo):
    acc = await demo_account(client, rt, amo)
    page = await open_findings(client, acc, limit=100)
    rules = {item["rule"] for item in page["items"]}
    assert {"overdue_task", "deal_without_task", "stuck_stage"} <= rules
    assert page["total"] == len(page["items"])
    item = next(i for i in page["items"] if i["rule"] == "overdue_task")
    assert item["deal_id"] and item["manager_id"] and item["status"] == "open"
    assert "просрочена на" in item["message"] and item["details"]["task_text"]
    assert item["link"].startswith("http://crmwatch.test/api/findings/")
    english = await open_findings(client, acc, lang="en", rule="overdue_task")
    assert all("overdue by" in i["message"] for i in english["items"])


async def test_filters_and_paging(client, rt, amo):
    acc = await demo_account(client, rt, amo)
    everything = await open_findings(client, acc, limit=500)
    first = everything["items"][0]
    by_deal = await open_findings(client, acc, deal_id=first["deal_id"])
    assert by_deal["items"] and all(i["deal_id"] == first["deal_id"] for i in by_deal["items"])
    by_manager = await open_findings(client, acc, manager_id=first["manager_id"])
    assert all(i["manager_id"] == first["manager_id"] for i in by_manager["items"])
    page1 = await open_findings(client, acc, limit=2, offset=0)
    page2 = await open_findings(client, acc, limit=2, offset=2)
    assert page1["total"] == everything["total"] and len(page1["items"]) == 2
    assert not {i["id"] for i in page1["items"]} & {i["id"] for i in page2["items"]}
    assert (await client.get(f"/api/accounts/{acc['id']}/findings", params={"status": "bogus"})).status_code == 422
    assert (await client.get("/api/accounts/999/findings")).status_code == 404


async def test_acknowledge_and_snooze_with_history(client, rt, amo):
    acc = await demo_account(client, rt, amo)
    items = (await open_findings(client, acc, rule="stuck_stage"))["items"]
    a, b = items[0]["id"], items[1]["id"]

    acked = await client.post(f"/api/findings/{a}/ack", json={"by": "8100001", "reason": "обсудили на планёрке"})
    assert acked.status_code == 200 and acked.json()["status"] == "acknowledged"
    assert acked.json()["history"][-1]["actor"] == "admin:8100001"
    again = await client.post(f"/api/findings/{a}/ack")  # already acknowledged: the same answer again
    assert again.status_code == 200 and again.json()["status"] == "acknowledged"
    assert again.json()["history"] == acked.json()["history"]

    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert (await client.post(f"/api/findings/{b}/snooze", json={"until": past})).status_code == 409
    naive = await client.post(f"/api/findings/{b}/snooze", json={"until": "2030-01-01T10:00:00"})
    assert naive.status_code == 422
    until = datetime.now(UTC) + timedelta(days=1)
    snoozed = await client.post(f"/api/findings/{b}/snooze", json={"until": until.isoformat(), "reason": "в отпуске"})
    assert snoozed.status_code == 200
    body = snoozed.json()
    assert body["status"] == "snoozed" and body["snooze_reason"] == "в отпуске"
    assert [h["to_status"] for h in body["history"]] == ["open", "snoozed"]

    # The snooze ends while the deal is still stuck: the next sweep opens it again.
    async with rt.sessions() as s, s.begin():
        await s.execute(
            update(Finding).where(Finding.id == b).values(snoozed_until=datetime.now(UTC) - timedelta(minutes=1))
        )
    await client.post(f"/api/accounts/{acc['id']}/sweep")
    after = (await client.get(f"/api/findings/{b}")).json()
    assert after["status"] == "open" and after["history"][-1]["reason"] == "snooze ended"
    assert (await client.get(f"/api/findings/{a}")).json()["status"] == "acknowledged"
    assert (await client.get("/api/findings/999999")).status_code == 404


async def test_a_webhook_resolves_a_finding_incrementally(client, rt, amo):
    acc = await demo_account(client, rt, amo)
    [item] = (await open_findings(client, acc, rule="overdue_task", deal_id="31000014"))["items"]
    task_id = item["entity_id"]
    done = form_body(
        "task_complete",
        **{
            "task[update][0][id]": task_id,
            "task[update][0][element_id]": "31000014",
            "task[update][0][last_modified]": str(NOW + 60),
        },
    )
    assert (await client.post(f"/hooks/amocrm/{acc['key']}", content=done, headers=FORM)).status_code == 200
    await worker.drain(rt)
    detail = (await client.get(f"/api/findings/{item['id']}")).json()
    assert detail["status"] == "resolved"
    assert detail["history"][-1] == {**detail["history"][-1], "actor": "incremental", "reason": "condition cleared"}


async def test_rules_document_round_trip_and_validation(client, rt, amo):
    acc = await demo_account(client, rt, amo)
    url = f"/api/accounts/{acc['id']}/rules"
    defaults = (await client.get(url)).json()
    assert set(defaults["rules"]) == {
        "overdue_task",
        "deal_without_task",
        "stuck_stage",
        "task_rescheduled_without_contact",
        "empty_comment",
        "call_not_logged",
        "unknown_number",
        "lead_not_contacted",
        "missed_call_not_returned",
        "plan_behind_pace",
    }
    # Every rule is on by default but plan_behind_pace (a finding on a manager, asked for on purpose).
    assert {n for n, r in defaults["rules"].items() if not r["enabled"]} == {"plan_behind_pace"}
    assert defaults["rules"]["stuck_stage"]["settings"] == {"limit_days": 3.0}
    assert defaults["calendar"]["country"] == "RU" and defaults["sweep_interval_minutes"] == 5

    doc = {
        "rules": {
            "stuck_stage": {
                "settings": {"limit_days": 10},
                "stages": {"4100000/41000004": {"limit_days": 2}},
                "exclude": {"users": ["8100004"]},
            }
        },
        # Every day a working day, no public holidays: the demo's stage ages are counted from the
        # real clock, and a weekend or the New Year holidays must not decide what this test sees.
        "calendar": {"work_start": "10:00", "work_end": "19:00", "country": None, "work_days": [1, 2, 3, 4, 5, 6, 7]},
    }
    saved = await client.put(url, json=doc)
    assert saved.status_code == 200, saved.text
    assert saved.json()["rules"]["stuck_stage"]["stages"] == {"4100000/41000004": {"limit_days": 2}}
    assert saved.json()["calendar"]["work_days"] == [1, 2, 3, 4, 5, 6, 7]
    await client.post(f"/api/accounts/{acc['id']}/sweep")
    stuck = {i["deal_id"] for i in (await open_findings(client, acc, rule="stuck_stage"))["items"]}
    # "Принимают решение" has 2 working days now, every other stage 10, and Лебедев's deals are excluded.
    assert {"31000004", "31000010"} <= stuck  # 6 and 3 calendar days in "Принимают решение"
    assert "31000001" not in stuck  # 9 calendar days in "КП отправлено": 9 working days, under 10
    assert not stuck & {"31000003", "31000009", "31000014"}  # Лебедев's

    for bad, where in [
        ({"rules": {"no_such_rule": {}}}, "unknown rule"),
        ({"rules": {"stuck_stage": {"settings": {"limit_days": -1}}}}, "limit_days"),
        ({"rules": {"stuck_stage": {"settings": {"limit_dayz": 1}}}}, "limit_dayz"),
        ({"rules": {"stuck_stage": {"stages": {"41000004": {"limit_days": 2}}}}}, "pipeline_id/stage_id"),
        ({"calendar": {"work_start": "18:00", "work_end": "09:00"}}, "work_end"),
        ({"calendar": {"country": "XX"}}, "country"),
        ({"suppress": {"stuck_stage": ["nope"]}}, "unknown rule"),
        ({"surprise": 1}, "surprise"),
    ]:
        resp = await client.put(url, json=bad)
        assert resp.status_code == 422, (bad, resp.text)
        assert where in resp.text, (where, resp.text)
    assert (await client.get(url)).json()["rules"]["stuck_stage"]["settings"] == {"limit_days": 10.0}


async def test_sweep_endpoint_counts_and_is_idempotent(client, rt, amo):
    seed_demo(amo, now=NOW)
    acc = await create_account(client)
    await sync.run_pending(rt)  # the backfill ends with a first sweep, so the next one finds nothing new
    again = (await client.post(f"/api/accounts/{acc['id']}/sweep")).json()
    assert again["opened"] == 0 and again["resolved"] == 0 and again["open"] > 0
    async with rt.sessions() as s:
        events = len((await s.scalars(select(FindingEvent))).all())
    await client.post(f"/api/accounts/{acc['id']}/sweep")
    async with rt.sessions() as s:
        assert len((await s.scalars(select(FindingEvent))).all()) == events  # nothing written twice
    assert (await client.post("/api/accounts/999/sweep")).status_code == 404


async def test_scheduler_sweeps_accounts_whose_turn_has_come(client, rt, amo):
    acc = await demo_account(client, rt, amo)
    now = datetime.now(UTC)
    async with rt.sessions() as s, s.begin():
        await s.execute(update(Account).values(next_sweep_at=now + timedelta(minutes=3)))
    assert await scheduler.sweep_due(rt, now) == 0
    assert await scheduler.sweep_due(rt, now + timedelta(minutes=4)) == 1
    async with rt.sessions() as s:
        account = await s.get(Account, acc["id"])
    # The next one is the nightly reconciliation, at 03:00 in the account's time zone.
    swept = now + timedelta(minutes=4)
    nightly = account.next_sweep_at.astimezone(ZoneInfo(account.timezone))
    assert (nightly.hour, nightly.minute) == (3, 0)
    assert timedelta(0) < account.next_sweep_at - swept <= timedelta(days=1)
    assert account.last_sweep_at == swept


async def test_only_one_scheduler_leads_on_postgresql(rt):
    first, second = scheduler.SweepScheduler(rt), scheduler.SweepScheduler(rt)
    try:
        assert await first._lead() is True
        expected_second = rt.engine.dialect.name != "postgresql"  # SQLite: one process, always leader
        assert await second._lead() is expected_second
        await first.stop()
        assert await second._lead() is True  # the standby takes over
    finally:
        await first.stop()
        await second.stop()
