"""The process dies at the worst moments of a delivery; against the amoCRM emulator.

Before the send: the claimed rows sit under a lease and come back when it runs out. After the
send but before our commit: the CRM has the writes, we do not know it, and the read-back by
marker must find them instead of writing them twice.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import update

from app.db import utcnow
from app.findings.scheduler import sweep_account
from app.outbox import delivery
from app.outbox.models import OutboxAction
from app.outbox.senders import page_marker
from app.sync import service as sync
from integrations.amocrm.demo_data import seed_demo
from tests.app.outbox.outbox_support import (
    T0,
    add_deals,
    crm_notes,
    crm_tasks,
    evaluate,
    make_due,
    new_account,
    outbox,
    plan_task,
    rules_doc,
    writes,
)
from tests.conftest import create_account

NOW = int(time.time())


async def connected(client, rt, amo) -> int:
    """The demo account, backfilled and swept once: its outbox holds tasks and notes to deliver."""
    seed_demo(amo, now=NOW)
    # Every existing problem written one by one (the default announces them in one summary).
    acc = await create_account(client, rules={"announce_backlog": "all", "flood_limit": 1000})
    await sync.run_pending(rt)
    return acc["id"]


def markers(records: list[dict], kind: str) -> list[str]:
    texts = [r["text"] if kind == "create_task" else r["params"]["text"] for r in records]
    return [re.search(r"/f/\d+-", t).group() for t in texts]


def crm_records(amo, kind: str) -> list[dict]:
    return crm_tasks(amo) if kind == "create_task" else crm_notes(amo)


async def test_a_worker_that_dies_after_claiming_leaves_rows_that_come_back_when_the_lease_ends(client, rt, amo):
    await connected(client, rt, amo)
    claimed = await delivery.claim(rt)
    assert claimed and {r.status for r in claimed} == {"sending"}
    kind = claimed[0].kind
    # ...and the worker dies here, before sending anything.

    # Another worker delivers everything else, but leaves the leased rows alone.
    await delivery.deliver_pending(rt)
    assert crm_records(amo, kind) == []
    assert {r.status for r in await outbox(rt, kind=kind)} == {"sending"}

    # The lease runs out: the rows are claimed again and sent exactly once.
    await make_due(rt, status="sending")
    before = len(amo.request_log)
    await delivery.deliver_pending(rt)
    rows = await outbox(rt, kind=kind)
    assert {r.status for r in rows} == {"sent"} and {r.attempts for r in rows} == {2}
    records = crm_records(amo, kind)
    assert sorted(markers(records, kind)) == sorted(page_marker(r.id) for r in rows)
    assert {str(r["id"]) for r in records} == {r.external_id for r in rows}
    # A second attempt looks before it writes.
    calls = [(m, p) for m, p, _ in amo.request_log[before:]]
    assert calls[0][0] == "GET" and calls[1][0] == "POST"


@pytest.mark.parametrize("kind", ["create_task", "add_note"])
async def test_a_worker_that_dies_after_the_crm_accepted_does_not_write_twice(client, rt, amo, monkeypatch, kind):
    aid = await connected(client, rt, amo)
    real_record = delivery._record
    died = []

    async def dying_record(rt_, rows, done, *args, **kwargs):
        if rows[0].kind == kind and not died:
            died.append([r.id for r in rows])
            assert len(done) == len(rows)  # the CRM took every item of the batch...
            raise RuntimeError("the process died")  # ...and we never wrote that down
        return await real_record(rt_, rows, done, *args, **kwargs)

    monkeypatch.setattr(delivery, "_record", dying_record)
    with pytest.raises(RuntimeError, match="died"):
        await delivery.deliver_pending(rt)
    await delivery.deliver_pending(rt)  # a surviving worker sends the rest
    [lost] = died
    in_crm = crm_records(amo, kind)
    assert len(in_crm) == len(lost)
    rows = {r.id: r for r in await outbox(rt, kind=kind)}
    assert {rows[i].status for i in lost} == {"sending"}

    await make_due(rt, status="sending")
    posts = len([r for r in amo.request_log if r[0] == "POST"])
    await delivery.deliver_pending(rt)
    assert len([r for r in amo.request_log if r[0] == "POST"]) == posts  # recorded from the read-back
    assert crm_records(amo, kind) == in_crm
    by_marker = {m: str(r["id"]) for m, r in zip(markers(in_crm, kind), in_crm, strict=True)}
    for row in await outbox(rt, kind=kind):
        assert row.status == "sent" and row.external_id == by_marker[page_marker(row.id)]

    # Another sweep and delivery change nothing in the CRM.
    before = len(amo.request_log)
    await sweep_account(rt, aid)
    await delivery.deliver_pending(rt)
    assert writes(amo, before) == []
    assert len(crm_tasks(amo)) == len(await outbox(rt, kind="create_task"))
    assert len(crm_notes(amo)) == len(await outbox(rt, kind="add_note"))


class LosingAnswers(httpx.AsyncBaseTransport):
    """Passes requests to the emulator, but loses the answer to the first `times` POSTs to `path`:
    amoCRM did the write, we saw a 502."""

    def __init__(self, inner: httpx.AsyncBaseTransport, path: str, times: int = 1) -> None:
        self.inner, self.path, self.left = inner, path, times

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if self.left and request.method == "POST" and request.url.path == self.path:
            self.left -= 1
            await response.aread()
            return httpx.Response(502)
        return response


async def tasks_account(rt, amo) -> int:
    aid = await new_account(
        rt,
        amo=amo,
        rules=rules_doc(
            "deal_without_task", notify={"note": False, "escalate_after_hours": None, "repeat_hours": None}
        ),
    )
    await add_deals(rt, aid, [31000001], amo=amo)
    await evaluate(rt, aid, T0)
    async with rt.sessions() as s, s.begin():  # queued now, as by a live sweep
        await s.execute(update(OutboxAction).values(created_at=utcnow(), next_attempt_at=utcnow()))
    return aid


async def resolve(rt, amo, aid: int) -> None:
    """The manager plans a next step in the CRM; the mirror learns it and a sweep resolves the finding."""
    amo.add_task(52999999, 31000001, "Позвонить клиенту", NOW + 86400)
    await plan_task(rt, aid, "31000001", T0 + timedelta(minutes=30))
    assert (await evaluate(rt, aid, T0 + timedelta(hours=1))).resolved == 1


async def test_a_finding_resolving_while_its_task_is_in_doubt_after_a_crash_still_closes_it(rt, amo, monkeypatch):
    aid = await tasks_account(rt, amo)
    real_record = delivery._record

    async def dying_record(*args, **kwargs):
        monkeypatch.setattr(delivery, "_record", real_record)
        raise RuntimeError("the process died")

    monkeypatch.setattr(delivery, "_record", dying_record)
    with pytest.raises(RuntimeError):
        await delivery.deliver_pending(rt)
    [task] = crm_tasks(amo)
    await resolve(rt, amo, aid)
    await delivery.deliver_pending(rt)  # the close waits for the task it closes
    assert amo.tasks[task["id"]]["is_completed"] is False

    await make_due(rt, status="sending")
    await make_due(rt, status="pending")
    await delivery.deliver_pending(rt)
    assert amo.tasks[task["id"]]["is_completed"] is True
    assert "Нарушение устранено" in amo.tasks[task["id"]]["result"]["text"]
    assert {(r.kind, r.status) for r in await outbox(rt)} == {("create_task", "sent"), ("close_task", "sent")}


async def test_a_finding_resolving_while_its_task_is_in_doubt_after_a_lost_answer_still_closes_it(rt, amo):
    aid = await tasks_account(rt, amo)
    rt.http_transport = LosingAnswers(rt.http_transport, "/api/v4/tasks")
    await delivery.deliver_pending(rt)
    [row] = await outbox(rt)
    assert row.status == "pending" and row.attempts == 1 and "502" in row.last_error
    [task] = crm_tasks(amo)  # amoCRM did create it

    await resolve(rt, amo, aid)
    await make_due(rt)
    await delivery.deliver_pending(rt)
    assert amo.tasks[task["id"]]["is_completed"] is True
