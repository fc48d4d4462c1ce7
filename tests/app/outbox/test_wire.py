"""What the delivery worker puts on the wire to a real amoCRM address, checked byte for byte with respx.

The runtime's transport is set to None, so the amoCRM client uses httpx's own network transport,
which respx intercepts: these are the requests amoCRM itself would receive.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import respx
from sqlalchemy import select

from app.accounts.models import Account
from app.findings import service as findings_service
from app.findings.models import Finding
from app.outbox import delivery
from app.rules import config as rules_config
from tests.app.outbox.outbox_support import (
    MANAGER,
    REAL_BASE,
    T0,
    FakeAmo,
    add_deals,
    bodies,
    evaluate,
    new_account,
    outbox,
    page_link,
    plan_task,
    rules_doc,
)

QUIET = {"escalate_after_hours": None, "repeat_hours": None}


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> datetime:
    """Delivery's clock pinned to one instant, so due times and texts are exact."""
    now = datetime.now(UTC).replace(microsecond=0)
    monkeypatch.setattr(delivery, "utcnow", lambda: now)
    return now


async def rendered(rt, account_id: int, now: datetime) -> dict[int, tuple[str, str]]:
    """finding id → (message, link), as the findings API words them at `now`."""
    async with rt.sessions() as s:
        account = await s.get(Account, account_id)
        found = list(await s.scalars(select(Finding).where(Finding.account_id == account_id)))
        items = await findings_service.render(s, account, found, rt.settings.public_url, now=now)
    return {i.id: (i.message, i.link) for i in items}


async def test_tasks_and_notes_carry_amocrm_fields_text_link_and_marker(rt, frozen):
    aid = await new_account(
        rt, base_url=REAL_BASE, rules=rules_doc("deal_without_task", notify={"task_due_hours": 6, **QUIET})
    )
    await add_deals(rt, aid, [31000001, 31000002])
    await add_deals(rt, aid, [31000003], manager=None)  # nobody responsible: amoCRM picks its default user
    await evaluate(rt, aid, T0)
    words = await rendered(rt, aid, frozen)
    rows = {r.id: r for r in await outbox(rt, account_id=aid)}
    assert {(r.kind, r.purpose) for r in rows.values()} == {("create_task", "open"), ("add_note", "open")}

    rt.http_transport = None  # the real network transport, intercepted by respx
    fake = FakeAmo()
    with respx.mock(base_url=REAL_BASE) as mock:
        tasks = mock.post("/api/v4/tasks").mock(side_effect=fake.create_tasks)
        notes = mock.post("/api/v4/leads/notes").mock(side_effect=fake.add_notes)
        assert await delivery.deliver_pending(rt) == 2

    assert tasks.call_count == 1 and notes.call_count == 1
    for call in [*tasks.calls, *notes.calls]:
        assert str(call.request.url).startswith("https://shop.amocrm.ru/api/v4/")
        assert call.request.headers["Authorization"] == "Bearer demo-token"
        assert call.request.headers["Content-Type"] == "application/json"

    async with rt.sessions() as s:
        account = await s.get(Account, aid)
        doc = await rules_config.load(s, aid)
    due = int(doc.business_calendar(account.timezone).add_working(frozen, 6 * 3600).timestamp())
    assert due > time.time()

    [task_items] = bodies(tasks)
    assert len(task_items) == 3
    for item in task_items:
        row = rows[int(item["request_id"])]
        message, _ = words[row.finding_id]
        expected_keys = {"text", "complete_till", "entity_id", "entity_type", "task_type_id", "request_id"}
        if row.deal_id != "31000003":
            expected_keys.add("responsible_user_id")
            assert item["responsible_user_id"] == int(MANAGER)
        assert set(item) == expected_keys
        assert row.kind == "create_task"
        link = page_link(rt, row.id)
        assert item["text"] == f"{message}. Исправьте и отметьте задачу выполненной.\nПодробнее: {link}"
        assert item["complete_till"] == due and isinstance(item["complete_till"], int)
        assert item["entity_id"] == int(row.deal_id) and isinstance(item["entity_id"], int)
        assert item["entity_type"] == "leads"
        assert item["task_type_id"] == 1
        assert item["request_id"] == str(row.id)

    [note_items] = bodies(notes)
    assert len(note_items) == 3
    for item in note_items:
        row = rows[int(item["request_id"])]
        message, _ = words[row.finding_id]
        link = page_link(rt, row.id)
        assert row.kind == "add_note"
        assert set(item) == {"entity_id", "note_type", "params", "request_id"}
        assert item["entity_id"] == int(row.deal_id)
        assert item["note_type"] == "common"
        assert item["params"] == {"text": f"crmwatch: {message} (с 16.09 10:00)\nПодробнее: {link}"}
        assert item["request_id"] == str(row.id)

    # What amoCRM answered is on record: its ids, and the text as sent.
    sent = {r.id: r for r in await outbox(rt, account_id=aid)}
    for record in [*fake.tasks.values(), *fake.notes.values()]:
        row = sent[int(record["request_id"])]
        assert row.status == "sent" and row.external_id == str(record["id"]) and row.attempts == 1
        assert row.sent_at == frozen
        text = record["text"] if "text" in record else record["params"]["text"]
        assert row.text == text


async def test_a_resolved_finding_completes_its_task_with_a_result(rt, frozen):
    aid = await new_account(rt, base_url=REAL_BASE, rules=rules_doc("deal_without_task", notify=QUIET))
    await add_deals(rt, aid, [31000001, 31000002])
    await evaluate(rt, aid, T0)
    rt.http_transport = None
    fake = FakeAmo()
    with respx.mock(base_url=REAL_BASE) as mock:
        mock.post("/api/v4/tasks").mock(side_effect=fake.create_tasks)
        mock.post("/api/v4/leads/notes").mock(side_effect=fake.add_notes)
        await delivery.deliver_pending(rt)
    task_of = {str(t["entity_id"]): t["id"] for t in fake.tasks.values()}

    # The manager plans a next step on one deal; the next sweep resolves its finding.
    await plan_task(rt, aid, "31000002", T0 + timedelta(minutes=30))
    assert (await evaluate(rt, aid, T0 + timedelta(hours=1))).resolved == 1
    words = await rendered(rt, aid, frozen)
    [close] = await outbox(rt, account_id=aid, kind="close_task")
    assert close.purpose == "resolve" and close.deal_id == "31000002"

    with respx.mock(base_url=REAL_BASE) as mock:
        patch = mock.patch("/api/v4/tasks").mock(return_value=respx.MockResponse(200, json={"_embedded": {}}))
        assert await delivery.deliver_pending(rt) == 1
    [items] = bodies(patch)
    message, _ = words[close.finding_id]
    assert items == [
        {"id": task_of["31000002"], "is_completed": True, "result": {"text": f"Нарушение устранено: {message}"}}
    ]
    [row] = await outbox(rt, id=close.id)
    assert row.status == "sent" and row.external_id is None


async def test_writes_go_in_batches_of_at_most_fifty(rt, frozen):
    aid = await new_account(
        rt, base_url=REAL_BASE, rules=rules_doc("deal_without_task", notify=QUIET, flood_limit=10_000)
    )
    deals = await add_deals(rt, aid, range(32000001, 32000121))
    await evaluate(rt, aid, T0)
    rt.http_transport = None
    fake = FakeAmo()
    with respx.mock(base_url=REAL_BASE) as mock:
        tasks = mock.post("/api/v4/tasks").mock(side_effect=fake.create_tasks)
        notes = mock.post("/api/v4/leads/notes").mock(side_effect=fake.add_notes)
        await delivery.deliver_pending(rt)
    for route in (tasks, notes):
        batches = bodies(route)
        assert [len(b) for b in batches] == [50, 50, 20]
        items = [i for b in batches for i in b]
        assert sorted(str(i["entity_id"]) for i in items) == sorted(deals)  # every deal once
        assert len({i["request_id"] for i in items}) == 120
    rows = await outbox(rt, account_id=aid)
    assert len(rows) == 240 and {r.status for r in rows} == {"sent"}


async def test_the_configured_task_type_is_sent(rt, frozen):
    aid = await new_account(
        rt, base_url=REAL_BASE, rules=rules_doc("deal_without_task", notify={"task_type_id": "2", **QUIET})
    )
    await add_deals(rt, aid, [31000001])
    await evaluate(rt, aid, T0)
    rt.http_transport = None
    fake = FakeAmo()
    with respx.mock(base_url=REAL_BASE) as mock:
        tasks = mock.post("/api/v4/tasks").mock(side_effect=fake.create_tasks)
        mock.post("/api/v4/leads/notes").mock(side_effect=fake.add_notes)
        await delivery.deliver_pending(rt)
    [[item]] = bodies(tasks)
    assert item["task_type_id"] == 2
