"""Webhook intake: authenticated, deduplicated, durable before 2xx, and never a 500."""

from __future__ import annotations

import random

from sqlalchemy import func, select, update

from app.accounts.models import Account
from app.ingest.models import InboxEvent
from tests.conftest import FORM, create_account, form_body


async def inbox_rows(rt) -> list[InboxEvent]:
    async with rt.sessions() as s:
        return list(await s.scalars(select(InboxEvent).order_by(InboxEvent.id)))


async def test_fixture_webhook_is_stored_raw_and_answered_200(client, rt):
    acc = await create_account(client)
    body = form_body("lead_status")
    resp = await client.post(f"/hooks/amocrm/{acc['key']}", content=body, headers=FORM)
    assert resp.status_code == 200 and resp.json() == {"status": "accepted"}
    rows = await inbox_rows(rt)
    assert len(rows) == 1
    assert rows[0].payload == body and rows[0].source == "amocrm" and rows[0].status == "pending"
    assert rows[0].account_id == acc["id"]


async def test_a_redelivery_of_the_same_content_changes_nothing(client, rt):
    acc = await create_account(client)
    for _ in range(3):
        assert (
            await client.post(f"/hooks/amocrm/{acc['key']}", content=form_body("task_add"), headers=FORM)
        ).status_code == 200
    assert len(await inbox_rows(rt)) == 1
    other = form_body("task_add", **{"task[add][0][last_modified]": "1764000100"})
    await client.post(f"/hooks/amocrm/{acc['key']}", content=other, headers=FORM)
    assert len(await inbox_rows(rt)) == 2


async def test_concurrent_deliveries_are_all_stored_once(client, rt):
    import asyncio

    acc = await create_account(client)
    bodies = [form_body("lead_update", **{"leads[update][0][id]": str(31000000 + i)}) for i in range(40)]
    resps = await asyncio.gather(
        *(client.post(f"/hooks/amocrm/{acc['key']}", content=b, headers=FORM) for b in bodies + bodies[:10])
    )
    assert {r.status_code for r in resps} == {200}
    assert len(await inbox_rows(rt)) == 40


async def test_a_wrong_key_is_refused_and_stores_nothing(client, rt):
    await create_account(client)
    resp = await client.post("/hooks/amocrm/not-a-key", content=form_body("lead_add"), headers=FORM)
    assert resp.status_code == 404
    assert await inbox_rows(rt) == []


async def test_another_amocrm_account_is_refused_once_ours_is_known(client, rt):
    acc = await create_account(client)
    async with rt.sessions() as s, s.begin():
        await s.execute(update(Account).values(external_id="29876543"))
    app_keys = client._transport.app.state.keys  # the key cache holds the old identity for a few seconds
    app_keys.invalidate()
    foreign = form_body("lead_add", **{"account[id]": "11111111"})
    assert (await client.post(f"/hooks/amocrm/{acc['key']}", content=foreign, headers=FORM)).status_code == 401
    other_sub = form_body("lead_add", **{"account[subdomain]": "othershop"})
    assert (await client.post(f"/hooks/amocrm/{acc['key']}", content=other_sub, headers=FORM)).status_code == 401
    assert await inbox_rows(rt) == []
    # Our own account id passes, and so does an older delivery that carries only the subdomain.
    assert (
        await client.post(f"/hooks/amocrm/{acc['key']}", content=form_body("lead_add"), headers=FORM)
    ).status_code == 200
    only_sub = "&".join(p for p in form_body("lead_update").split("&") if not p.startswith("account%5Bid%5D"))
    assert (await client.post(f"/hooks/amocrm/{acc['key']}", content=only_sub, headers=FORM)).status_code == 200
    assert len(await inbox_rows(rt)) == 2


async def test_unparseable_bodies_get_400_and_store_nothing(client, rt):
    acc = await create_account(client)
    url = f"/hooks/amocrm/{acc['key']}"
    for body in (
        b"",
        b"%%%&&&==",
        b"\xff\xfe\x00garbage",
        b"foo=bar&baz=1",
        b"leads=1&leads[add][0][id]=2",
        b'{"leads": {"add": []}}',
    ):
        resp = await client.post(url, content=body, headers=FORM)
        assert resp.status_code == 400, body
        assert "not a amocrm webhook" in resp.json()["detail"] or "UTF-8" in resp.json()["detail"]
    assert await inbox_rows(rt) == []


async def test_a_body_over_one_mebibyte_gets_413_and_stores_nothing(client, rt):
    acc = await create_account(client)
    huge = form_body("lead_add") + "&leads[add][0][custom_fields][1][values][0][value]=" + "x" * (1024 * 1024)
    resp = await client.post(f"/hooks/amocrm/{acc['key']}", content=huge, headers=FORM)
    assert resp.status_code == 413

    async def chunked():  # no Content-Length: the limit must hold while streaming too
        for _ in range(20):
            yield b"a" * 100_000

    resp = await client.post(f"/hooks/amocrm/{acc['key']}", content=chunked(), headers=FORM)
    assert resp.status_code == 413
    assert await inbox_rows(rt) == []


async def test_unknown_fields_are_ignored(client, rt):
    acc = await create_account(client)
    body = form_body("lead_add") + "&leads[add][0][some_new_field]=42&account[future][thing]=1"
    assert (await client.post(f"/hooks/amocrm/{acc['key']}", content=body, headers=FORM)).status_code == 200
    assert len(await inbox_rows(rt)) == 1


async def test_random_garbage_never_gets_a_500(client, rt):
    acc = await create_account(client)
    rng = random.Random(7)
    alphabet = "[]=&%abc019_ \x00ё"
    base = form_body("lead_status")
    for i in range(200):
        if i % 2:
            chars = list(base)
            for _ in range(rng.randint(1, 10)):
                chars[rng.randrange(len(chars))] = rng.choice(alphabet)
            body = "".join(chars).encode("utf-8", "surrogatepass")
        else:
            body = bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))
        resp = await client.post(f"/hooks/amocrm/{acc['key']}", content=body, headers=FORM)
        assert resp.status_code < 500, (resp.status_code, body)
        assert resp.status_code in (200, 400)
    async with rt.sessions() as s:
        stored = await s.scalar(select(func.count()).select_from(InboxEvent))
    assert stored is not None and stored <= 100


async def test_healthz_and_openapi(client):
    assert (await client.get("/healthz")).json() == {"status": "ok", "database": "ok"}
    spec = (await client.get("/openapi.json")).json()
    assert "/hooks/amocrm/{key}" in spec["paths"] and "/api/accounts/{account_id}/sync" in spec["paths"]


async def test_metrics_count_webhooks_without_secrets(client):
    acc = await create_account(client)
    await client.post(f"/hooks/amocrm/{acc['key']}", content=form_body("lead_add"), headers=FORM)
    text = (await client.get("/metrics")).text
    assert 'crmwatch_webhooks_total{crm="amocrm",outcome="accepted"}' in text
    assert acc["key"] not in text


async def test_a_foreign_account_is_refused_whether_the_body_carries_raw_or_escaped_utf8(client, rt):
    """Issue 17, defect 3: with a raw "Ж" in a field the check once saw no account fields at all."""
    acc = await create_account(client)
    async with rt.sessions() as s, s.begin():
        await s.execute(update(Account).values(external_id="29876543"))
    client._transport.app.state.keys.invalidate()
    url = f"/hooks/amocrm/{acc['key']}"
    escaped = form_body("lead_add", **{"account[id]": "999", "leads[add][0][name]": "Ж"})
    raw = escaped.replace("%D0%96", "Ж").encode()
    assert b"\xd0\x96" in raw and b"%D0%96" not in raw
    for body in (escaped.encode(), raw, raw.replace(b"account%5Bid%5D", b"account[id]")):
        assert (await client.post(url, content=body, headers=FORM)).status_code == 401, body
    other_sub = form_body("lead_add", **{"account[subdomain]": "чужой", "leads[add][0][name]": "Ж"})
    assert (await client.post(url, content=other_sub.replace("%D0%96", "Ж").encode(), headers=FORM)).status_code == 401
    assert await inbox_rows(rt) == []
    # Our own account with raw UTF-8 is accepted.
    own = form_body("lead_add", **{"leads[add][0][name]": "Ж"}).replace("%D0%96", "Ж").encode()
    assert (await client.post(url, content=own, headers=FORM)).status_code == 200
    assert len(await inbox_rows(rt)) == 1
