"""A 429 storm longer than the outbox lease, against the amoCRM emulator, with two workers.

The client used to wait out every Retry-After inside the request (up to 6 retries of up to an
hour) while the claim's lease was 5 minutes: the lease ran out, the second worker took the rows
over, read back, found nothing yet, and both sent. Here the lease is shortened to 1.5 s and the
storm lasts 3 s with Retry-After 0.5 s, so a client that waited through it would outlive its
lease; every action must still land exactly once, read back from the emulator by its marker.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from app.calls import calllog
from app.calls.models import Call
from app.db import utcnow
from app.outbox import delivery, senders
from app.outbox.models import OutboxAction
from app.runtime import Runtime
from tests.app.outbox.outbox_support import (
    MANAGER,
    PIPELINE,
    STAGE,
    T0,
    add_deals,
    evaluate,
    new_account,
    outbox,
    plan_task,
    rules_doc,
)

LEASE_S = 1.5
STORM_S = 3.0
RETRY_AFTER_S = 0.5
DEALS = range(34000001, 34000004)
CALL_DEAL, CALL_CONTACT = 34000100, 34000200
NOTE_DEAL = 34000101  # a deal whose call has no contact: logged as a marked note


def carries_marker(text: str | None, row_id: int) -> bool:
    """Tasks and notes carry their page's link; a call-log note carries the short mark."""
    text = text or ""
    return senders.page_marker(row_id) in text or text.endswith(senders.marker(row_id))


@pytest.fixture
def short_lease(rt: Runtime) -> None:
    rt.settings.outbox_lease_seconds = LEASE_S
    # A request may take this long: what the client reserves of the lease before each wait.
    rt.settings.crm_timeout_seconds = 0.3


async def drain_with_two_workers(rt: Runtime, amo, *, storm: bool) -> float:
    """Two worker processes (separate runtimes, separate rate limiters) deliver until the outbox is empty."""
    other = Runtime.build(rt.settings, http_transport=rt.http_transport)
    stop = asyncio.Event()
    if storm:
        amo.rate_limit_storm(STORM_S, retry_after=RETRY_AFTER_S)
    started = time.monotonic()
    workers = [asyncio.create_task(delivery.run_forever(r, stop, poll_seconds=0.05)) for r in (rt, other)]
    try:
        while await unfinished(rt):
            assert time.monotonic() - started < 30, "delivery did not finish"
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*workers), 10)
        await other.dispose()
    return time.monotonic() - started


async def unfinished(rt: Runtime) -> int:
    # One query: a row moves between "pending" and "sending" while two would look.
    async with rt.reads() as s:
        return len(
            list(await s.scalars(select(OutboxAction.id).where(OutboxAction.status.in_(("pending", "sending")))))
        )


def writes_of(amo, method: str, path: str) -> list[dict]:
    return [item for m, p, item in amo.writes if m == method and p == path]


async def add_calls(rt: Runtime, account_id: int, amo) -> list[int]:
    """Two finished, matched calls queued for logging: one by number (a contact carries it), one as a note."""
    amo.add_contact(CALL_CONTACT, "Пётр Петров", phones=["+7 (999) 123-45-67"])
    amo.add_lead(CALL_DEAL, "Поставка", int(PIPELINE), int(STAGE), contact_ids=[CALL_CONTACT])
    amo.add_lead(NOTE_DEAL, "Без контакта", int(PIPELINE), int(STAGE))
    async with rt.sessions() as s, s.begin():
        calls = [
            Call(
                account_id=account_id,
                provider="mango",
                provider_call_id=f"storm-{i}",
                direction="out",
                client_number=number,
                manager_id=MANAGER,
                started_at=utcnow() - timedelta(minutes=5),
                talk_seconds=60,
                status="answered",
                is_final=True,
                contact_id=contact,
                deal_id=deal,
                match_source="mirror",
            )
            for i, (number, contact, deal) in enumerate(
                [("+79991234567", str(CALL_CONTACT), str(CALL_DEAL)), ("+79990000000", None, str(NOTE_DEAL))]
            )
        ]
        s.add_all(calls)
        await s.flush()
        for call in calls:
            s.add(
                OutboxAction(
                    account_id=account_id,
                    kind=calllog.KIND,
                    purpose="log",
                    dedup_key=f"call:{call.id}",
                    deal_id=call.deal_id,
                    user_id=call.manager_id,
                    ref_id=call.id,
                )
            )
        return [c.id for c in calls]


async def test_a_429_storm_longer_than_the_lease_writes_every_action_once(rt, amo, short_lease):
    rules = rules_doc("deal_without_task", notify={"escalate_after_hours": None, "repeat_hours": None})
    aid = await new_account(rt, amo=amo, rules=rules)
    await add_deals(rt, aid, DEALS, amo=amo)
    await evaluate(rt, aid, T0)
    call_ids = await add_calls(rt, aid, amo)
    kinds = {r.kind for r in await outbox(rt, status="pending")}
    assert kinds == {"create_task", "add_note", "log_call"}

    took = await drain_with_two_workers(rt, amo, storm=True)
    assert took > STORM_S > LEASE_S  # the storm outlasted the lease, and delivery waited it out
    assert amo.rejected_429 > 0

    # The finding is dealt with: each task opened for it is closed, through another storm.
    for deal in DEALS:
        await plan_task(rt, aid, str(deal), T0 + timedelta(hours=1))
    await evaluate(rt, aid, T0 + timedelta(hours=2))
    assert len(await outbox(rt, kind="close_task", status="pending")) == len(DEALS)
    await drain_with_two_workers(rt, amo, storm=True)

    rows = await outbox(rt)
    assert {r.status for r in rows} == {"sent"}, [(r.id, r.kind, r.status, r.last_error) for r in rows]
    by_kind = {kind: [r for r in rows if r.kind == kind] for kind in ("create_task", "add_note", "close_task")}

    # Tasks and notes: one write each, and one record in the CRM carrying the row's marker.
    task_writes = writes_of(amo, "POST", "/api/v4/tasks")
    assert sorted(int(w["request_id"]) for w in task_writes) == [r.id for r in by_kind["create_task"]]
    for row in by_kind["create_task"]:
        [task] = [t for t in amo.tasks.values() if carries_marker(t.get("text"), row.id)]
        assert str(task["id"]) == row.external_id and task["is_completed"]
    note_writes = writes_of(amo, "POST", "/api/v4/leads/notes")
    call_as_note = [r for r in rows if r.kind == "log_call" and r.deal_id == str(NOTE_DEAL)]
    assert sorted(int(w["request_id"]) for w in note_writes) == sorted(r.id for r in by_kind["add_note"] + call_as_note)
    for row in by_kind["add_note"] + call_as_note:
        marked = [n for n in amo.notes.values() if carries_marker((n.get("params") or {}).get("text"), row.id)]
        assert [str(n["id"]) for n in marked] == [row.external_id]

    # Closes: one PATCH item per task.
    closes = writes_of(amo, "PATCH", "/api/v4/tasks")
    assert sorted(w["id"] for w in closes) == sorted(int(r.external_id) for r in by_kind["create_task"])

    # The call with a contact: one POST /api/v4/calls, one call note on its deal.
    async with rt.sessions() as s:
        [by_number] = await s.scalars(select(Call).where(Call.id == call_ids[0]))
    uniq = f"{calllog.UNIQ_PREFIX}mango:{by_number.provider_call_id}"
    assert [w["uniq"] for w in writes_of(amo, "POST", "/api/v4/calls")] == [uniq]
    assert len([n for n in amo.notes.values() if (n.get("params") or {}).get("uniq") == uniq]) == 1
