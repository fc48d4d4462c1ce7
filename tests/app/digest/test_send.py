"""Sending the digest through the outbox: Telegram at the wire (respx, the Bot API's own answers)
and the CRM (the amoCRM emulator); once per account, day and channel; the bot token sealed."""

from __future__ import annotations

from datetime import timedelta

import httpx
import respx
from sqlalchemy import select, update

from app.accounts.models import Account
from app.db import utcnow
from app.digest.delivery import _clip, send_telegram
from app.digest.models import DigestSettings
from app.outbox import delivery
from app.outbox.models import OutboxAction
from app.outbox.senders import Batch
from app.runtime import Runtime
from integrations.amocrm.emulator import EmulatorState

from .scenario import build

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
SEND = f"https://api.telegram.org/bot{TOKEN}/sendMessage"
OK = {
    "ok": True,
    "result": {
        "message_id": 4711,
        "from": {"id": 123456789, "is_bot": True, "first_name": "crmwatch", "username": "crmwatch_bot"},
        "chat": {"id": -1001234567890, "title": "Продажи", "type": "supergroup"},
        "date": 1794200400,
        "text": "Утренняя сводка",
    },
}
TOO_MANY = {
    "ok": False,
    "error_code": 429,
    "description": "Too Many Requests: retry after 7",
    "parameters": {"retry_after": 7},
}
BLOCKED = {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}


async def _setup(client: httpx.AsyncClient, rt: Runtime, **extra: object) -> int:
    a = await build(rt)
    body = {"telegram": {"bot_token": TOKEN, "chat_id": "-1001234567890"}, **extra}
    resp = await client.put(f"/api/accounts/{a}/digest/settings", json=body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["telegram_token_set"] is True and "bot_token" not in resp.text and TOKEN not in resp.text
    return a


async def _rows(rt: Runtime, a: int) -> list[OutboxAction]:
    async with rt.reads() as s:
        return list(await s.scalars(select(OutboxAction).where(OutboxAction.account_id == a).order_by(OutboxAction.id)))


async def test_telegram_sent_once(client: httpx.AsyncClient, rt: Runtime) -> None:
    a = await _setup(client, rt)
    async with rt.reads() as s:
        sealed = (await s.get(DigestSettings, a)).telegram_token
    assert TOKEN.encode() not in sealed and rt.box.open(sealed) == {"bot_token": TOKEN}
    with respx.mock(using="httpx") as mock:
        route = mock.post(SEND).mock(return_value=httpx.Response(200, json=OK))
        mock.route().pass_through()  # the app under test is real
        resp = await client.post(f"/api/accounts/{a}/digest/send", params={"date": "2026-11-09"})
        assert resp.status_code == 202, resp.text
        first = resp.json()["outbox"]["telegram"]
        again = await client.post(f"/api/accounts/{a}/digest/send", params={"date": "2026-11-09"})
        assert again.json()["outbox"]["telegram"] == first
        await delivery.deliver_pending(rt)
        await delivery.deliver_pending(rt)
    assert route.call_count == 1
    sent = route.calls[0].request
    body = httpx.Response(200, content=sent.content).json()
    assert body["chat_id"] == "-1001234567890" and body["parse_mode"] == "HTML"
    assert body["text"].startswith("<b>Утренняя сводка — «Сводка», 09.11.2026</b>")
    assert '<a href="https://demoshop.amocrm.ru/leads/detail/D3">' in body["text"]
    (row,) = await _rows(rt, a)
    assert (row.kind, row.status, row.external_id, row.dedup_key) == (
        "digest_telegram",
        "sent",
        "4711",
        "morning:2026-11-09:telegram",
    )
    assert TOKEN not in str(row.details) and TOKEN not in (row.text or "")


async def test_telegram_429_waits_retry_after(client: httpx.AsyncClient, rt: Runtime) -> None:
    a = await _setup(client, rt)
    with respx.mock(using="httpx") as mock:
        route = mock.post(SEND).mock(side_effect=[httpx.Response(429, json=TOO_MANY), httpx.Response(200, json=OK)])
        mock.route().pass_through()  # the app under test is real
        await client.post(f"/api/accounts/{a}/digest/send", params={"date": "2026-11-09"})
        before = utcnow()
        await delivery.deliver_pending(rt)
        (row,) = await _rows(rt, a)
        assert row.status == "pending" and "retry after 7" in row.last_error
        wait = (row.next_attempt_at - before).total_seconds()
        assert 6 <= wait <= 9, wait
        await delivery.deliver_pending(rt)  # not due yet
        assert route.call_count == 1
        async with rt.sessions() as s, s.begin():
            await s.execute(update(OutboxAction).values(next_attempt_at=utcnow() - timedelta(seconds=1)))
        await delivery.deliver_pending(rt)
    assert route.call_count == 2
    (row,) = await _rows(rt, a)
    assert row.status == "sent" and row.external_id == "4711"


async def test_telegram_blocked_bot_is_dead(client: httpx.AsyncClient, rt: Runtime) -> None:
    a = await _setup(client, rt)
    with respx.mock(using="httpx") as mock:
        route = mock.post(SEND).mock(return_value=httpx.Response(403, json=BLOCKED))
        mock.route().pass_through()  # the app under test is real
        await client.post(f"/api/accounts/{a}/digest/send", params={"date": "2026-11-09"})
        await delivery.deliver_pending(rt)
        await delivery.deliver_pending(rt)
    assert route.call_count == 1
    (row,) = await _rows(rt, a)
    assert row.status == "dead"
    assert row.last_error == "telegram 403: Forbidden: bot was blocked by the user"
    listed = (await client.get(f"/api/accounts/{a}/outbox", params={"status": "dead"})).json()
    assert [i["last_error"] for i in listed["items"]] == ["telegram 403: Forbidden: bot was blocked by the user"]


async def test_telegram_server_error_backs_off(client: httpx.AsyncClient, rt: Runtime) -> None:
    a = await _setup(client, rt)
    with respx.mock(using="httpx") as mock:
        mock.post(SEND).mock(return_value=httpx.Response(502, text="Bad Gateway"))
        mock.route().pass_through()  # the app under test is real
        await client.post(f"/api/accounts/{a}/digest/send", params={"date": "2026-11-09"})
        before = utcnow()
        await delivery.deliver_pending(rt)
    (row,) = await _rows(rt, a)
    assert row.status == "pending" and row.last_error.startswith("telegram 502")
    assert 7 <= (row.next_attempt_at - before).total_seconds() <= 13  # the outbox's first backoff, 10 s ± 20 %


async def test_crm_task_for_the_supervisor(client: httpx.AsyncClient, rt: Runtime, amo: EmulatorState) -> None:
    a = await build(rt)
    resp = await client.put(f"/api/accounts/{a}/digest/settings", json={"crm": True, "crm_user_id": "101"})
    assert resp.status_code == 200, resp.text
    resp = await client.post(f"/api/accounts/{a}/digest/send", params={"date": "2026-11-09"})
    assert resp.status_code == 202 and set(resp.json()["outbox"]) == {"crm"}
    await delivery.deliver_pending(rt)
    (row,) = await _rows(rt, a)
    assert row.status == "sent", row.last_error
    task = amo.tasks[int(row.external_id)] if int(row.external_id) in amo.tasks else amo.tasks[row.external_id]
    assert task["text"].startswith("Утренняя сводка — «Сводка», 09.11.2026")
    assert f"#cw{row.id}" in task["text"]
    assert str(task["responsible_user_id"]) == "101"


async def test_send_bad_input(client: httpx.AsyncClient, rt: Runtime) -> None:
    a = await build(rt)
    resp = await client.post(f"/api/accounts/{a}/digest/send", params={"date": "2026-11-09"})
    assert resp.status_code == 409 and "no digest channel" in resp.text
    assert (await client.post(f"/api/accounts/{a}/digest/send", params={"date": "9.11.2026"})).status_code == 422
    bad = [
        {"telegram": {"bot_token": "not-a-token", "chat_id": "-100"}},
        {"telegram": {"bot_token": TOKEN, "chat_id": "chat"}},
        {"send_at": "25:00"},
        {"crm": True, "unknown": 1},
    ]
    for body in bad:
        resp = await client.put(f"/api/accounts/{a}/digest/settings", json=body)
        assert resp.status_code == 422, body
    assert (await client.get(f"/api/accounts/{a}/digest/settings")).json()["enabled"] is False
    assert await _rows(rt, a) == []


def test_long_message_is_cut_between_lines() -> None:
    lines = [f'{i}. <a href="https://demoshop.amocrm.ru/leads/detail/{i}">Сделка {i}</a>' for i in range(200)]
    clipped = _clip("\n".join(lines), 4096)
    assert len(clipped) <= 4096 and clipped.endswith("\n…")
    assert all(line in lines for line in clipped.split("\n")[:-1])


async def _lease_runs_out(rt: Runtime) -> None:
    async with rt.sessions() as s, s.begin():
        await s.execute(update(OutboxAction).values(next_attempt_at=utcnow() - timedelta(seconds=1)))


async def test_a_resend_after_an_unrecorded_answer_says_it_may_be_a_copy(
    client: httpx.AsyncClient, rt: Runtime
) -> None:
    # Telegram cannot be read back: a process that dies between Telegram's answer and our record
    # sends the digest again. The resend is not silent: its first line says it may be a copy.
    a = await _setup(client, rt)
    with respx.mock(using="httpx") as mock:
        route = mock.post(SEND).mock(return_value=httpx.Response(200, json=OK))
        mock.route().pass_through()  # the app under test is real
        await client.post(f"/api/accounts/{a}/digest/send", params={"date": "2026-11-09"})
        rows = await delivery.claim(rt)
        async with rt.reads() as s:
            account = await s.get(Account, a)
        # The sender runs and Telegram takes the message; the process dies before _record.
        out = await send_telegram(Batch(rt, None, account, rows, utcnow()))
        assert route.call_count == 1 and out.sent == {rows[0].id: "4711"}
        (row,) = await _rows(rt, a)
        assert row.status == "sending" and row.details["posting"] == 1  # sent, but not recorded so
        await _lease_runs_out(rt)
        await delivery.deliver_pending(rt)
    assert route.call_count == 2
    first, second = (httpx.Response(200, content=c.request.content).json()["text"] for c in route.calls)
    assert first.startswith("<b>Утренняя сводка") and not first.startswith("♻️")
    assert second.startswith("♻️ Повторная отправка: прошлая попытка могла дойти")
    assert second.endswith(first) or second.split("\n\n", 1)[1] == first
    (row,) = await _rows(rt, a)
    assert row.status == "sent" and row.attempts == 2 and row.details["resent_unknown"] == 1
    assert row.text == second  # the record says what was really sent


async def test_a_read_timeout_is_an_unknown_outcome_and_an_error_answer_is_not(
    client: httpx.AsyncClient, rt: Runtime
) -> None:
    a = await _setup(client, rt, language="en")
    with respx.mock(using="httpx") as mock:
        route = mock.post(SEND).mock(
            side_effect=[
                httpx.Response(502, text="Bad Gateway"),  # answered: not sent, nothing to flag
                httpx.ReadTimeout("no answer"),  # the request went out, no answer: may have arrived
                httpx.Response(200, json=OK),
            ]
        )
        mock.route().pass_through()  # the app under test is real
        await client.post(f"/api/accounts/{a}/digest/send", params={"date": "2026-11-09"})
        for _ in range(3):
            await delivery.deliver_pending(rt)
            await _lease_runs_out(rt)  # makes the backoff due now
    texts = [httpx.Response(200, content=c.request.content).json()["text"] for c in route.calls]
    assert len(texts) == 3
    assert not texts[1].startswith("♻️")  # after a 502 the resend is plain
    assert texts[2].startswith("♻️ Sent again: the previous attempt may have arrived")
    (row,) = await _rows(rt, a)
    assert row.status == "sent" and row.details["resent_unknown"] == 1
