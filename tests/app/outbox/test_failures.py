"""How delivery survives amoCRM failing, at the wire (respx against a real amoCRM address).

A write that surely did not land (429, a refused connection) is simply retried; a write whose
answer was lost (5xx, a read timeout) is read back by its marker before it is sent again.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

import httpx
import pytest
import respx
from sqlalchemy import update

from app.accounts.models import Account
from app.db import utcnow
from app.outbox import delivery
from app.outbox.models import OutboxAction
from app.outbox.senders import page_marker
from tests.app.outbox.outbox_support import (
    REAL_BASE,
    T0,
    FakeAmo,
    add_deals,
    bodies,
    evaluate,
    make_due,
    new_account,
    outbox,
    rules_doc,
)

TASKS_ONLY = {"note": False, "escalate_after_hours": None, "repeat_hours": None}


async def account_with_tasks(rt, deals: list[int]) -> int:
    """An account at a real amoCRM address with one pending create_task row per deal."""
    aid = await new_account(rt, base_url=REAL_BASE, rules=rules_doc("deal_without_task", notify=TASKS_ONLY))
    await add_deals(rt, aid, deals)
    await evaluate(rt, aid, T0)
    # Queued just now, as a live sweep would have: young rows are retried, not given up on.
    async with rt.sessions() as s, s.begin():
        await s.execute(update(OutboxAction).values(created_at=utcnow(), next_attempt_at=utcnow()))
    rt.http_transport = None
    return aid


def lost_answer(fake: FakeAmo, failure: str, landed: bool, times: int = 1):
    """The first `times` POSTs fail with `failure`; when `landed`, amoCRM created the tasks first."""
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls > times:
            return fake.create_tasks(request)
        if landed:
            fake.create_tasks(request)
        if failure == "read_timeout":
            raise httpx.ReadTimeout("timed out", request=request)
        return httpx.Response(500, json={"title": "Internal Server Error", "status": 500})

    return handler


@pytest.mark.parametrize("failure", ["429", "connect_error"])
async def test_a_write_that_surely_did_not_land_is_retried_at_once_and_sent_once(rt, failure):
    await account_with_tasks(rt, [31000001])
    fake = FakeAmo()
    calls = 0

    def flaky(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls <= 4:
            if failure == "connect_error":
                raise httpx.ConnectError("connection refused", request=request)
            return httpx.Response(429, headers={"Retry-After": "0.01"})
        return fake.create_tasks(request)

    with respx.mock(base_url=REAL_BASE) as mock:  # any other request (a read-back) would fail the test
        tasks = mock.post("/api/v4/tasks").mock(side_effect=flaky)
        assert await delivery.deliver_pending(rt) == 1
        assert await delivery.deliver_pending(rt) == 0
    assert tasks.call_count == 5
    assert len(fake.tasks) == 1
    [row] = await outbox(rt)
    assert row.status == "sent" and row.attempts == 1 and row.external_id == str(next(iter(fake.tasks)))


async def test_a_429_storm_longer_than_the_retries_waits_and_then_sends_once(rt):
    await account_with_tasks(rt, [31000001])
    fake = FakeAmo()
    with respx.mock(base_url=REAL_BASE) as mock:
        tasks = mock.post("/api/v4/tasks").mock(return_value=httpx.Response(429, headers={"Retry-After": "0.01"}))
        await delivery.deliver_pending(rt)
        assert tasks.call_count == rt.settings.amocrm_max_retries + 1
        [row] = await outbox(rt)
        assert row.status == "pending" and row.attempts == 1 and "429" in row.last_error
        assert row.next_attempt_at > utcnow() + timedelta(seconds=5)

        await make_due(rt)
        tasks.mock(side_effect=fake.create_tasks)
        read = mock.get("/api/v4/tasks").mock(side_effect=fake.read_tasks)
        await delivery.deliver_pending(rt)
    assert read.call_count == 1 and len(fake.tasks) == 1
    [row] = await outbox(rt)
    assert row.status == "sent" and row.attempts == 2


@pytest.mark.parametrize("failure", ["http_500", "read_timeout"])
@pytest.mark.parametrize("landed", [True, False], ids=["created_before_the_error", "not_created"])
async def test_a_lost_answer_is_read_back_before_sending_again(rt, failure, landed):
    await account_with_tasks(rt, [31000001, 31000002])
    fake = FakeAmo()
    with respx.mock(base_url=REAL_BASE) as mock:
        post = mock.post("/api/v4/tasks").mock(side_effect=lost_answer(fake, failure, landed))
        read = mock.get("/api/v4/tasks").mock(side_effect=fake.read_tasks)
        assert await delivery.deliver_pending(rt) == 1
        assert post.call_count == 1 and read.call_count == 0  # CrmAmbiguous: no blind retry inside the call

        rows = await outbox(rt)
        assert len(rows) == 2
        for row in rows:
            assert row.status == "pending" and row.attempts == 1 and row.external_id is None
            assert row.last_error and ("500" in row.last_error or "ReadTimeout" in row.last_error)
            # Backoff: 10 s ± 20 % for a first failure.
            assert utcnow() + timedelta(seconds=5) < row.next_attempt_at < utcnow() + timedelta(seconds=13)
        assert await delivery.deliver_pending(rt) == 0  # not due yet

        await make_due(rt)
        assert await delivery.deliver_pending(rt) == 1

    # The read-back asked for the deals' tasks first.
    assert read.call_count == 1
    params = read.calls[0].request.url.params
    assert sorted(params.get_list("filter[entity_id][]")) == ["31000001", "31000002"]
    assert params["filter[entity_type]"] == "leads"
    # Found there: recorded without a second POST. Not there: sent again.
    assert post.call_count == (1 if landed else 2)
    assert len(fake.tasks) == 2
    by_marker = {re.search(r"/f/\d+-", t["text"]).group(): str(t["id"]) for t in fake.tasks.values()}
    for row in await outbox(rt):
        assert row.status == "sent" and row.attempts == 2 and row.last_error is None
        assert row.external_id == by_marker[page_marker(row.id)]


async def test_a_batch_refused_for_one_bad_item_is_split_and_the_good_ones_are_sent(rt):
    await account_with_tasks(rt, [31000001, 31000002, 31000003])
    fake = FakeAmo()
    bad = 31000002

    def validating(request: httpx.Request) -> httpx.Response:
        items = json.loads(request.content)
        wrong = [i for i, item in enumerate(items) if item["entity_id"] == bad]
        if wrong:
            return httpx.Response(
                400,
                json={
                    "title": "Bad Request",
                    "status": 400,
                    "detail": "Request validation failed",
                    "validation-errors": [
                        {
                            "request_id": str(wrong[0]),
                            "errors": [{"code": "NotFound", "path": "entity_id", "detail": "lead not found"}],
                        }
                    ],
                },
            )
        return fake.create_tasks(request)

    with respx.mock(base_url=REAL_BASE, assert_all_called=False) as mock:
        post = mock.post("/api/v4/tasks").mock(side_effect=validating)
        mock.get("/api/v4/tasks").mock(side_effect=fake.read_tasks)
        await delivery.deliver_pending(rt)
        assert await delivery.deliver_pending(rt) == 0

    sizes = [len(b) for b in bodies(post)]
    assert sizes == [3, 1, 1, 1]
    assert sorted(t["entity_id"] for t in fake.tasks.values()) == [31000001, 31000003]
    rows = {r.deal_id: r for r in await outbox(rt)}
    assert rows["31000001"].status == rows["31000003"].status == "sent"
    dead = rows[str(bad)]
    assert dead.status == "dead" and "400" in dead.last_error and "lead not found" in dead.last_error
    assert dead.text and page_marker(dead.id) in dead.text  # what we tried to send stays on record


async def test_a_row_failing_for_three_days_goes_dead_and_can_be_retried_by_hand(rt, client):
    await account_with_tasks(rt, [31000001])
    async with rt.sessions() as s, s.begin():
        await s.execute(update(OutboxAction).values(created_at=utcnow() - timedelta(days=3, hours=1)))
    fake = FakeAmo()
    with respx.mock(base_url=REAL_BASE) as mock:
        mock.post("/api/v4/tasks").mock(return_value=httpx.Response(503))
        await delivery.deliver_pending(rt)
    [row] = await outbox(rt)
    assert row.status == "dead" and "503" in row.last_error
    aid = row.account_id
    dead = (await client.get(f"/api/accounts/{aid}/outbox", params={"status": "dead"})).json()
    assert [i["id"] for i in dead["items"]] == [row.id]

    resp = await client.post(f"/api/outbox/{row.id}/retry")
    assert resp.status_code == 200
    assert resp.json()["status"] == "pending" and resp.json()["last_error"] is None
    with respx.mock(base_url=REAL_BASE) as mock:
        post = mock.post("/api/v4/tasks").mock(side_effect=fake.create_tasks)
        mock.get("/api/v4/tasks").mock(side_effect=fake.read_tasks)
        assert await delivery.deliver_pending(rt) == 1
    assert post.call_count == 1 and len(fake.tasks) == 1
    [row] = await outbox(rt)
    assert row.status == "sent"
    assert (await client.post(f"/api/outbox/{row.id}/retry")).status_code == 409  # sent is final


async def test_a_refused_long_lived_token_parks_the_account_and_its_rows(rt, client):
    aid = await account_with_tasks(rt, [31000001, 31000002])
    fake = FakeAmo()

    def authorized(request: httpx.Request) -> httpx.Response:
        if request.headers["Authorization"] != "Bearer fresh-token":
            return httpx.Response(401, json={"title": "Unauthorized", "status": 401})
        return fake.create_tasks(request)

    with respx.mock(base_url=REAL_BASE, assert_all_called=False) as mock:
        post = mock.post("/api/v4/tasks").mock(side_effect=authorized)
        mock.get("/api/v4/tasks").mock(side_effect=fake.read_tasks)
        assert await delivery.deliver_pending(rt) == 1
        # A long-lived token cannot be refreshed: one request, then the account needs a person.
        assert post.call_count == 1
        async with rt.sessions() as s:
            account = await s.get(Account, aid)
        assert account.status == "needs_attention" and "refused" in account.status_reason
        rows = await outbox(rt)
        for row in rows:
            assert row.status == "pending" and row.attempts == 1 and "refused" in row.last_error
            assert utcnow() + timedelta(minutes=9) < row.next_attempt_at < utcnow() + timedelta(minutes=11)

        # Even when due, nothing is claimed while the account is not active.
        await make_due(rt)
        assert await delivery.claim(rt) == []
        assert await delivery.deliver_pending(rt) == 0
        assert post.call_count == 1
        assert {r.status for r in await outbox(rt)} == {"pending"}

        # A new token brings the account back, and its rows go out once.
        resp = await client.patch(f"/api/accounts/{aid}", json={"access_token": "fresh-token"})
        assert resp.json()["status"] == "active"
        assert await delivery.deliver_pending(rt) == 1
    assert post.call_count == 2
    assert sorted(t["entity_id"] for t in fake.tasks.values()) == [31000001, 31000002]
    assert {r.status for r in await outbox(rt)} == {"sent"}
