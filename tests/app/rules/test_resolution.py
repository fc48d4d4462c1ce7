"""Honest resolution: every finding that stops being open says why, and a finding that only fell
out of its rule's look-back window is `expired` (or kept), never resolved as fixed.

Monday 2025-12-08 is an ordinary working week in Russia (09:00-18:00, Moscow)."""

from __future__ import annotations

from datetime import date

from sqlalchemy import select

from app.accounts.models import Account
from app.findings.models import Finding, FindingEvent
from app.mirror.models import ContactPhone, Deal, Task
from app.outbox.models import OutboxAction
from app.reports import service as reports
from app.reports.periods import Period
from tests.app.rules.mirror_builder import (
    Event,
    add_deal,
    add_note,
    add_task,
    change,
    evaluate,
    finding,
    history,
    msk,
    new_account,
    save_rules,
)
from tests.app.rules.test_call_rules import CLIENT, add_call

MON = msk(2025, 12, 8, 10, 0)


async def _overdue(rt) -> tuple[int, Finding]:
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=MON)
        add_task(s, aid, "T1", "D1", due_at=msk(2025, 12, 8, 11), created_at=MON)
    await evaluate(rt, aid, msk(2025, 12, 8, 12))
    f = await finding(rt, aid, "overdue_task", "T1")
    assert f.status == "open" and f.resolution is None
    return aid, f


async def _ended(rt, aid: int, rule: str, entity: str, status: str, resolution: str) -> Finding:
    f = await finding(rt, aid, rule, entity)
    assert (f.status, f.resolution) == (status, resolution)
    last = (await history(rt, f.id))[-1]
    assert (last.to_status, last.reason) == (status, resolution.replace("_", " "))
    async with rt.sessions() as s:
        codes = list(
            await s.scalars(
                select(FindingEvent.resolution).where(FindingEvent.finding_id == f.id).order_by(FindingEvent.id)
            )
        )
    assert codes[-1] == resolution
    return f


# -- the reasons of an automatic resolution ----------------------------------------------------------


async def test_a_fix_is_condition_cleared(rt):
    aid, _ = await _overdue(rt)
    await change(rt, Task, aid, "T1", is_completed=True, completed_at=msk(2025, 12, 8, 12, 30))
    result = await evaluate(rt, aid, msk(2025, 12, 8, 13))
    assert (result.resolved, result.expired) == (1, 0)
    await _ended(rt, aid, "overdue_task", "T1", "resolved", "condition_cleared")


async def test_a_closed_deal(rt):
    aid, _ = await _overdue(rt)
    await change(rt, Deal, aid, "D1", is_closed=True)
    await evaluate(rt, aid, msk(2025, 12, 8, 13), deal_ids=["D1"])
    await _ended(rt, aid, "overdue_task", "T1", "resolved", "deal_closed")


async def test_a_deleted_deal(rt):
    aid, _ = await _overdue(rt)
    await change(rt, Deal, aid, "D1", is_deleted=True)
    await evaluate(rt, aid, msk(2025, 12, 8, 13))
    await _ended(rt, aid, "overdue_task", "T1", "resolved", "deal_deleted")


async def test_a_disabled_rule(rt):
    aid, _ = await _overdue(rt)
    await save_rules(rt, aid, {"rules": {"overdue_task": {"enabled": False}}})
    await evaluate(rt, aid, msk(2025, 12, 8, 13))
    await _ended(rt, aid, "overdue_task", "T1", "resolved", "rule_disabled")


async def test_a_regression_forgets_the_resolution(rt):
    aid, _ = await _overdue(rt)
    await change(rt, Task, aid, "T1", is_completed=True, completed_at=msk(2025, 12, 8, 12, 30))
    await evaluate(rt, aid, msk(2025, 12, 8, 13))
    await change(rt, Task, aid, "T1", is_completed=False, completed_at=None)
    await evaluate(rt, aid, msk(2025, 12, 8, 14))
    f = await finding(rt, aid, "overdue_task", "T1")
    assert (f.status, f.resolution, f.resolved_at) == ("open", None, None)


# -- a person's action, through the API ---------------------------------------------------------------


async def test_acknowledge_and_snooze_record_a_persons_action(rt, client):
    aid, f = await _overdue(rt)
    resp = await client.post(f"/api/findings/{f.id}/ack", json={"by": "Иван", "reason": "звоню"})
    assert resp.status_code == 200 and resp.json()["resolution"] == "acknowledged"
    detail = (await client.get(f"/api/findings/{f.id}")).json()
    assert detail["status"] == "acknowledged" and detail["resolution"] == "acknowledged"
    assert [(h["to_status"], h["resolution"], h["reason"]) for h in detail["history"]][-1] == (
        "acknowledged",
        "acknowledged",
        "звоню",
    )
    assert detail["history"][0]["resolution"] is None  # opening is no resolution
    until = "2099-01-01T09:00:00+03:00"
    resp = await client.post(f"/api/findings/{f.id}/snooze", json={"until": until, "reason": "в отпуске"})
    assert resp.status_code == 200 and resp.json()["resolution"] == "snoozed"
    page = (await client.get(f"/api/accounts/{aid}/findings", params={"status": "snoozed"})).json()
    assert [(i["id"], i["resolution"]) for i in page["items"]] == [(f.id, "snoozed")]


async def test_the_resolution_shows_in_the_findings_api(rt, client):
    aid, f = await _overdue(rt)
    await change(rt, Deal, aid, "D1", is_closed=True)
    await evaluate(rt, aid, msk(2025, 12, 8, 13))
    page = (
        await client.get(f"/api/accounts/{aid}/findings", params={"status": "resolved", "rule": "overdue_task"})
    ).json()
    assert [(i["id"], i["status"], i["resolution"]) for i in page["items"]] == [(f.id, "resolved", "deal_closed")]
    detail = (await client.get(f"/api/findings/{f.id}")).json()
    assert (detail["history"][-1]["to_status"], detail["history"][-1]["resolution"]) == ("resolved", "deal_closed")
    bad = await client.get(f"/api/accounts/{aid}/findings", params={"status": "gone"})
    assert bad.status_code == 422


# -- look-back windows bound what opens, not what resolves ---------------------------------------------


async def _missed_call(rt) -> tuple[int, str]:
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=msk(2025, 12, 1, 10))
        call = add_call(s, aid, started=msk(2025, 12, 8, 11), status="missed", direction="in")
        await s.flush()
        cid = str(call.id)
    await evaluate(rt, aid, msk(2025, 12, 8, 12))
    assert (await finding(rt, aid, "missed_call_not_returned", cid)).status == "open"
    return aid, cid


async def test_a_missed_call_nobody_returned_expires_and_its_crm_task_stays_open(rt):
    aid, cid = await _missed_call(rt)
    # Thursday 11:05: the call (Monday 11:00) is past the 3-day look-back, and still unreturned.
    result = await evaluate(rt, aid, msk(2025, 12, 11, 11, 5))
    assert (result.resolved, result.expired) == (0, 1)
    f = await _ended(rt, aid, "missed_call_not_returned", cid, "expired", "expired")
    assert f.resolved_at == msk(2025, 12, 11, 11, 5)
    async with rt.sessions() as s:
        kinds = sorted(
            (a.kind, a.purpose) for a in await s.scalars(select(OutboxAction).where(OutboxAction.finding_id == f.id))
        )
    # The task opened for it is never closed as fixed ("Нарушение устранено"): nothing was fixed.
    assert ("close_task", "resolve") not in kinds and ("create_task", "open") in kinds
    # And nothing happens at the next sweeps: expired is an end state.
    again = await evaluate(rt, aid, msk(2025, 12, 11, 11, 10))
    assert (again.resolved, again.expired) == (0, 0)
    assert (await finding(rt, aid, "missed_call_not_returned", cid)).updated_at == f.updated_at
    assert [e.to_status for e in await history(rt, f.id)] == ["open", "expired"]


async def test_a_call_returned_just_as_the_window_ends_is_a_fix(rt):
    aid, cid = await _missed_call(rt)
    async with rt.sessions() as s, s.begin():
        add_call(s, aid, started=msk(2025, 12, 11, 11, 2), status="answered", direction="out", number=CLIENT)
    result = await evaluate(rt, aid, msk(2025, 12, 11, 11, 5))
    assert (result.resolved, result.expired) == (1, 0)
    await _ended(rt, aid, "missed_call_not_returned", cid, "resolved", "condition_cleared")


async def test_a_call_not_written_down_expires(rt):
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=msk(2025, 12, 1, 10))
        call = add_call(s, aid, started=msk(2025, 12, 8, 12))
        await s.flush()
        cid = str(call.id)
    await evaluate(rt, aid, msk(2025, 12, 8, 13))
    assert (await finding(rt, aid, "call_not_logged", cid)).status == "open"
    await evaluate(rt, aid, msk(2025, 12, 11, 12, 5), deal_ids=["D1"])  # incremental scope too
    await _ended(rt, aid, "call_not_logged", cid, "expired", "expired")


async def test_an_empty_comment_expires_and_comes_back_with_a_longer_window(rt):
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=MON)
        add_note(s, aid, "N1", "D1", "ок", created_at=msk(2025, 12, 8, 12))
    await evaluate(rt, aid, msk(2025, 12, 8, 12, 5))
    assert (await finding(rt, aid, "empty_comment", "N1")).status == "open"
    await evaluate(rt, aid, msk(2025, 12, 15, 12, 1))  # 7 days and a minute
    await _ended(rt, aid, "empty_comment", "N1", "expired", "expired")
    # A longer window takes the note in again: the same finding opens again.
    await save_rules(rt, aid, {"rules": {"empty_comment": {"settings": {"lookback_days": 14}}}})
    await evaluate(rt, aid, msk(2025, 12, 15, 12, 2))
    f = await finding(rt, aid, "empty_comment", "N1")
    assert (f.status, f.resolution, f.times_opened) == ("open", None, 2)
    assert (await history(rt, f.id))[-1] == Event("expired", "open", "sweep", "regression")


async def test_a_shorter_window_in_the_settings_expires_rather_than_resolves(rt):
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=MON)
        add_note(s, aid, "N1", "D1", "ок", created_at=msk(2025, 12, 8, 12))
    await evaluate(rt, aid, msk(2025, 12, 10, 12))
    await save_rules(rt, aid, {"rules": {"empty_comment": {"settings": {"lookback_days": 1}}}})
    await evaluate(rt, aid, msk(2025, 12, 10, 12, 5))
    await _ended(rt, aid, "empty_comment", "N1", "expired", "expired")


async def test_an_expired_comment_on_a_closed_deal_is_the_deal_closed(rt):
    # The rule judges open deals only: asked again, it no longer sees the note, so the deal
    # closing is the reason, even past the window.
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=MON)
        add_note(s, aid, "N1", "D1", "ок", created_at=msk(2025, 12, 8, 12))
    await evaluate(rt, aid, msk(2025, 12, 8, 12, 5))
    await change(rt, Deal, aid, "D1", is_closed=True)
    await evaluate(rt, aid, msk(2025, 12, 15, 12, 1))
    await _ended(rt, aid, "empty_comment", "N1", "resolved", "deal_closed")


async def test_an_unknown_number_is_kept_past_its_window_until_a_contact_has_it(rt):
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_call(s, aid, started=msk(2025, 12, 8, 11), direction="in", deal_id=None, contact_id=None)
    await evaluate(rt, aid, msk(2025, 12, 8, 12))
    f = await finding(rt, aid, "unknown_number", CLIENT)
    assert f.status == "open"
    result = await evaluate(rt, aid, msk(2025, 12, 17, 12))  # 9 days later: past the 7-day window
    assert (result.resolved, result.expired) == (0, 0)
    kept = await finding(rt, aid, "unknown_number", CLIENT)
    assert (kept.status, kept.resolution, kept.updated_at) == ("open", None, f.updated_at)
    async with rt.sessions() as s, s.begin():
        s.add(ContactPhone(account_id=aid, contact_id="C9", phone=CLIENT))
    await evaluate(rt, aid, msk(2025, 12, 17, 12, 5))
    await _ended(rt, aid, "unknown_number", CLIENT, "resolved", "condition_cleared")


# -- reports: expired is never a fix --------------------------------------------------------------------


async def test_reports_count_expired_apart_from_resolved(rt):
    aid = await new_account(rt)
    only = ("missed_call_not_returned", "overdue_task")
    await save_rules(rt, aid, {"rules": {r: {"enabled": False} for r in ("deal_without_task", "stuck_stage")}})
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=msk(2025, 12, 1, 10))
        call = add_call(s, aid, started=msk(2025, 12, 8, 11), status="missed", direction="in")
        add_task(s, aid, "T1", "D1", due_at=msk(2025, 12, 8, 11), created_at=MON)
        await s.flush()
        cid = str(call.id)
    await evaluate(rt, aid, msk(2025, 12, 8, 12, 5))  # Monday: both open
    await change(rt, Task, aid, "T1", is_completed=True, completed_at=msk(2025, 12, 11, 10))
    await evaluate(rt, aid, msk(2025, 12, 11, 10, 5))  # Thursday 10:05: the task is done, a fix
    await evaluate(rt, aid, msk(2025, 12, 11, 11, 5))  # Thursday 11:05: the missed call expires
    assert (await finding(rt, aid, "missed_call_not_returned", cid)).status == "expired"
    async with rt.sessions() as s:
        account = await s.get(Account, aid)
        week = Period(date(2025, 12, 8), date(2025, 12, 12), "Europe/Moscow")
        trend = await reports.trend(s, account, week, reports.TEAM)
    assert trend["findings"] == {
        "opened": [2, 0, 0, 0, 0],
        "resolved": [0, 0, 0, 1, 0],  # the task, not the call
        "expired": [0, 0, 0, 1, 0],
    }
    assert {r: trend["open_by_rule"][r] for r in only} == {r: [1, 1, 1, 0, 0] for r in only}
