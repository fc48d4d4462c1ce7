"""POST /hooks/bitrix24/{key}: Bitrix24's form, its application_token and member_id checked,
ids hydrated through `batch` by the worker into the same mirror amoCRM uses."""

from __future__ import annotations

from sqlalchemy import select

from app.accounts.models import Account
from app.ingest import pipeline, worker
from app.mirror.models import Note, StageHistory
from tests.app.bitrix24.support import HOUR, NOW, deals, inbox, seed, tasks
from tests.conftest import B24_FORM, B24_WEBHOOK_URL, b24_form, create_b24_account

MEMBER = "a1b2c3d4e5f60718293a4b5c6d7e8f90"


async def post(client, key: str, body: str):
    return await client.post(f"/hooks/bitrix24/{key}", content=body, headers=B24_FORM)


async def test_account_contract_keeps_the_webhook_secret_out_of_the_stored_url(client, rt):
    acc = await create_b24_account(client)
    assert acc["crm"] == "bitrix24" and acc["key"] and acc["id"]
    assert acc["hooks"] == {"bitrix24": f"http://crmwatch.test/hooks/bitrix24/{acc['key']}"}
    assert acc["base_url"] == "https://demoshop.bitrix24.ru" and "abc123secret" not in str(acc)
    async with rt.sessions() as s:
        account = await s.get(Account, acc["id"])
        assert rt.box.open(account.credentials) == {"access_token": "webhook:1/abc123secret"}
        assert account.webhook_secret_hash and "f0e1d2" not in account.webhook_secret_hash


async def test_any_host_and_plain_http_are_accepted(client):
    acc = await create_b24_account(client, base_url="http://10.0.0.5:8080/b24/rest/12/Zx9secret/")
    assert acc["base_url"] == "http://10.0.0.5:8080/b24"


async def test_bad_account_fields_get_422_and_store_nothing(client):
    cases = [
        {"base_url": B24_WEBHOOK_URL, "application_token": None},  # no token: events could not be checked
        {"base_url": "https://demoshop.bitrix24.ru/", "application_token": "f0e1d2c3b4a5968778695a4b"},
        {"base_url": B24_WEBHOOK_URL, "access_token": "x"},
        {"base_url": B24_WEBHOOK_URL, "surprise": 1},
        {"base_url": B24_WEBHOOK_URL, "application_token": "short"},
    ]
    for extra in cases:
        body = {
            "name": "P",
            "crm": "bitrix24",
            "application_token": "f0e1d2c3b4a5968778695a4b3c2d1e0f",
            "timezone": "Europe/Moscow",
            **extra,
        }
        body = {k: v for k, v in body.items() if v is not None}
        resp = await client.post("/api/accounts", json=body)
        assert resp.status_code == 422, (extra, resp.text)
    assert (await client.get("/api/accounts")).json() == []


async def test_a_new_webhook_url_is_sealed_like_the_first(client, rt):
    acc = await create_b24_account(client)
    url = f"/api/accounts/{acc['id']}"
    alone = await client.patch(url, json={"base_url": "https://demoshop.bitrix24.ru/rest/1/newsecret9/"})
    assert alone.status_code == 422 and "application_token" in alone.text
    token = "a" * 32
    resp = await client.patch(
        url, json={"base_url": "https://demoshop.bitrix24.ru/rest/1/newsecret9/", "application_token": token}
    )
    assert resp.status_code == 200 and resp.json()["base_url"] == "https://demoshop.bitrix24.ru"
    async with rt.sessions() as s:
        account = await s.get(Account, acc["id"])
        assert rt.box.open(account.credentials) == {"access_token": "webhook:1/newsecret9"}
    client._transport.app.state.keys.invalidate()
    old = await post(client, acc["key"], b24_form("ONCRMDEALADD"))
    new = await post(client, acc["key"], b24_form("ONCRMDEALADD", **{"auth[application_token]": token}))
    assert old.status_code == 401 and new.status_code == 200
    assert (await client.patch(url, json={"surprise": 1})).status_code == 422


async def test_amocrm_still_refuses_bitrix24_fields(client):
    resp = await client.post(
        "/api/accounts",
        json={
            "name": "A",
            "crm": "amocrm",
            "base_url": "https://x.amocrm.ru",
            "access_token": "t",
            "application_token": "f0e1d2c3b4a59687",
        },
    )
    assert resp.status_code == 422


async def test_a_deal_event_is_stored_then_hydrated_through_batch(client, rt, b24):
    seed(b24)
    acc = await create_b24_account(client)
    b24.request_log.clear()
    resp = await post(client, acc["key"], b24_form("ONCRMDEALUPDATE"))
    assert resp.status_code == 200 and b24.request_log == []  # answered without asking the portal
    rows = await inbox(rt)
    assert [r.source for r in rows] == ["bitrix24"] and rows[0].status == "pending"
    b24.request_log.clear()
    await worker.drain(rt)
    assert b24.request_log == ["1/abc123secret/batch.json"]
    deal = (await deals(rt, acc["id"]))["4521"]
    assert (deal.name, deal.stage_id, deal.pipeline_id, deal.responsible_user_id) == (
        "Поставка оборудования",
        "PREPARATION",
        "0",
        "7",
    )
    assert abs(deal.stage_entered_at.timestamp() - (NOW - 60 * HOUR)) < 1
    assert (await inbox(rt))[0].status == "done"
    async with rt.sessions() as s:
        assert (await s.get(Account, acc["id"])).external_id == MEMBER  # learned from the verified event


async def test_task_activity_comment_and_deletes(client, rt, b24):
    seed(b24)
    acc = await create_b24_account(client)
    for body in (
        b24_form("ONTASKUPDATE", **{"data[FIELDS_BEFORE][ID]": "881", "data[FIELDS_AFTER][ID]": "881"}),
        b24_form("ONCRMACTIVITYADD"),
        b24.event_form("ONCRMTIMELINECOMMENTADD", 501),
    ):
        assert (await post(client, acc["key"], body)).status_code == 200
    await worker.drain(rt)
    found = await tasks(rt, acc["id"])
    assert found["task:881"].deal_id == "4522" and found["task:881"].type_id == "task"
    assert found["act:10233"].deal_id == "4521" and found["act:10233"].type_id == "activity"
    async with rt.sessions() as s:
        note = (await s.scalars(select(Note).where(Note.account_id == acc["id"]))).one()
    assert note.deal_id == "4521" and note.text.startswith("Клиент просит")
    await post(client, acc["key"], b24.event_form("ONCRMACTIVITYDELETE", 10233))
    await post(client, acc["key"], b24.event_form("ONCRMDEALDELETE", 4521))
    await worker.drain(rt)
    assert (await tasks(rt, acc["id"]))["act:10233"].is_deleted
    assert (await deals(rt, acc["id"]))["4521"].is_deleted


async def test_a_record_deleted_before_the_worker_read_it_becomes_a_deletion(client, rt, b24):
    seed(b24)
    acc = await create_b24_account(client)
    await post(client, acc["key"], b24.event_form("ONCRMDEALADD", 4522))
    await worker.drain(rt)
    await post(client, acc["key"], b24.event_form("ONCRMDEALUPDATE", 4522))
    b24.deals.pop(4522)
    await worker.drain(rt)
    assert (await deals(rt, acc["id"]))["4522"].is_deleted


async def test_forged_token_foreign_portal_and_garbage_store_nothing(client, rt, b24):
    acc = await create_b24_account(client)
    forged = await post(client, acc["key"], b24_form("ONCRMDEALUPDATE", **{"auth[application_token]": "0" * 32}))
    missing = await post(client, acc["key"], "event=ONCRMDEALUPDATE&data%5BFIELDS%5D%5BID%5D=1&auth%5Bdomain%5D=x")
    assert forged.status_code == 401 and missing.status_code == 401
    # Once the portal's member_id is known, another portal's event is refused even with our token.
    await post(client, acc["key"], b24_form("ONCRMDEALADD"))
    await worker.drain(rt)
    client._transport.app.state.keys.invalidate()  # the key cache holds the old identity for a few seconds
    before = len(await inbox(rt))
    foreign = await post(client, acc["key"], b24_form("ONCRMDEALUPDATE", **{"auth[member_id]": "f" * 32}))
    assert foreign.status_code == 401
    for garbage in ("not a form %%%", '{"event": "ONCRMDEALADD"}', "event=ONCRMDEALADD"):
        assert (await post(client, acc["key"], garbage)).status_code == 400
    assert len(await inbox(rt)) == before
    # An install event cannot replace the secret an account already has.
    install = b24.install_form("app.1")
    assert (await post(client, acc["key"], install.replace(b24.application_token, "9" * 32))).status_code == 401


async def test_a_call_end_event_becomes_a_call_even_when_its_activity_is_gone(client, rt):
    from app.calls.models import Call

    acc = await create_b24_account(client)
    assert (await post(client, acc["key"], b24_form("ONVOXIMPLANTCALLEND"))).status_code == 200
    await worker.drain(rt)
    row = (await inbox(rt))[0]
    assert row.status == "done" and "CALL_ID" in row.payload
    async with rt.sessions() as s:
        [call] = await s.scalars(select(Call))
    # The portal no longer knows activity 10240: the call stays, unbound, for the number matching.
    assert (call.provider, call.provider_call_id, call.status, call.deal_id) == (
        "bitrix24",
        "externalCall.7c1e0f2a.1764000400",
        "answered",
        None,
    )


async def test_a_failed_read_keeps_the_event_and_retries_it(client, rt, b24):
    seed(b24)
    acc = await create_b24_account(client)
    await post(client, acc["key"], b24_form("ONCRMDEALUPDATE"))
    b24.fail_next(50, 503, "QUERY_LIMIT_EXCEEDED")
    await worker.process_batch(rt)
    row = (await inbox(rt))[0]
    assert row.status == "pending" and row.attempts == 1 and "QUERY_LIMIT_EXCEEDED" in row.last_error
    assert "4521" not in await deals(rt, acc["id"])
    b24.faults.clear()
    async with rt.sessions() as s, s.begin():
        (await s.get(type(row), row.id)).next_attempt_at = row.received_at
    await worker.drain(rt)
    assert (await deals(rt, acc["id"]))["4521"].stage_id == "PREPARATION"


async def test_a_long_outage_never_parks_the_event(client, rt, b24):
    seed(b24)
    acc = await create_b24_account(client)
    await post(client, acc["key"], b24_form("ONCRMDEALUPDATE"))
    b24.fail_next(10_000, 503, "QUERY_LIMIT_EXCEEDED")
    for _ in range(rt.settings.inbox_max_attempts + 2):
        async with rt.sessions() as s, s.begin():
            row = (await inbox(rt))[0]
            (await s.get(type(row), row.id)).next_attempt_at = row.received_at
        await worker.process_batch(rt)
    row = (await inbox(rt))[0]
    assert row.status == "pending" and row.attempts == rt.settings.inbox_max_attempts + 2
    b24.faults.clear()
    async with rt.sessions() as s, s.begin():
        (await s.get(type(row), row.id)).next_attempt_at = row.received_at
    await worker.drain(rt)
    assert (await deals(rt, acc["id"]))["4521"].stage_id == "PREPARATION"


async def test_a_worker_that_dies_mid_read_loses_nothing(client, rt, b24, monkeypatch):
    seed(b24)
    acc = await create_b24_account(client)
    await post(client, acc["key"], b24_form("ONCRMDEALUPDATE"))

    async def die(*a, **kw):
        raise KeyboardInterrupt  # the process goes away between claiming and applying

    monkeypatch.setattr(pipeline, "apply_named", die)
    try:
        await worker.process_batch(rt)
    except KeyboardInterrupt:
        pass
    monkeypatch.undo()
    row = (await inbox(rt))[0]
    assert row.status == "pending" and row.next_attempt_at > row.received_at  # leased, not lost
    async with rt.sessions() as s, s.begin():
        (await s.get(type(row), row.id)).next_attempt_at = row.received_at
    await worker.drain(rt)
    assert (await deals(rt, acc["id"]))["4521"].stage_id == "PREPARATION"


async def test_the_same_change_twice_applies_once(client, rt, b24):
    seed(b24)
    acc = await create_b24_account(client)
    await post(client, acc["key"], b24_form("ONCRMDEALUPDATE"))
    await post(client, acc["key"], b24_form("ONCRMDEALUPDATE", ts="1764000999"))
    await worker.drain(rt)
    async with rt.sessions() as s:
        history = list(await s.scalars(select(StageHistory).where(StageHistory.deal_id == "4521")))
    assert len(history) == 1 and len(await inbox(rt)) == 2
