"""The digest by email: a real SMTP server (aiosmtpd) started in the test receives HTML with a
plain-text part; a 5xx refusal is final with the server's words, a 4xx is retried."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes, policy
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select, update

from app.accounts.models import Account
from app.db import utcnow
from app.digest.delivery import send_email
from app.digest.models import DigestSettings
from app.outbox import delivery
from app.outbox.models import OutboxAction
from app.outbox.senders import Batch
from app.runtime import Runtime

from .scenario import build


class Inbox:
    def __init__(self) -> None:
        self.envelopes: list[Any] = []
        self.auth: list[tuple[str, str]] = []
        self.refuse: dict[str, str] = {}

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


async def _setup(client: httpx.AsyncClient, rt: Runtime, port: int, to: list[str]) -> int:
    a = await build(rt)
    email = {"to": to, "from": "crmwatch@shop.example", "host": "127.0.0.1", "port": port, "security": "none"}
    resp = await client.put(f"/api/accounts/{a}/digest/settings", json={"email": email})
    assert resp.status_code == 200, resp.text
    return a


async def test_email_html_and_text(client: httpx.AsyncClient, rt: Runtime, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    a = await _setup(client, rt, port, ["head@shop.example", "boss@shop.example"])
    resp = await client.post(f"/api/accounts/{a}/digest/send", params={"date": "2026-11-09"})
    assert resp.status_code == 202 and set(resp.json()["outbox"]) == {"email"}
    await delivery.deliver_pending(rt)
    await delivery.deliver_pending(rt)
    assert len(inbox.envelopes) == 1
    env = inbox.envelopes[0]
    assert env.mail_from == "crmwatch@shop.example"
    assert env.rcpt_tos == ["head@shop.example", "boss@shop.example"]
    msg = message_from_bytes(env.content, policy=policy.default)
    assert msg["Subject"] == "Утренняя сводка — «Сводка», 09.11.2026"
    assert msg["From"] == "crmwatch@shop.example" and msg["To"] == "head@shop.example, boss@shop.example"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg.get_content_type() == "multipart/alternative"
    plain, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert plain.get_content_type() == "text/plain" and html.get_content_type() == "text/html"
    assert "Факт за 06.11.2026" in plain.get_content() and "<" not in plain.get_content().split("\n", 1)[0]
    assert "https://demoshop.amocrm.ru/leads/detail/D3" in plain.get_content()
    assert '<table class="fact">' in html.get_content()
    async with rt.reads() as s:
        row = await s.scalar(select(OutboxAction).where(OutboxAction.account_id == a))
    assert row.status == "sent" and row.external_id == msg["Message-ID"]


async def test_email_refused_is_dead(client: httpx.AsyncClient, rt: Runtime, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    inbox.refuse["gone@shop.example"] = "550 5.1.1 <gone@shop.example>: mailbox unavailable"
    a = await _setup(client, rt, port, ["gone@shop.example"])
    await client.post(f"/api/accounts/{a}/digest/send", params={"date": "2026-11-09"})
    await delivery.deliver_pending(rt)
    async with rt.reads() as s:
        row = await s.scalar(select(OutboxAction).where(OutboxAction.account_id == a))
    assert row.status == "dead"
    assert "gone@shop.example 550" in row.last_error and "mailbox unavailable" in row.last_error
    assert inbox.envelopes == []


async def test_email_greylisted_is_retried(client: httpx.AsyncClient, rt: Runtime, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    inbox.refuse["later@shop.example"] = "451 4.7.1 greylisted, try again later"
    a = await _setup(client, rt, port, ["later@shop.example"])
    await client.post(f"/api/accounts/{a}/digest/send", params={"date": "2026-11-09"})
    await delivery.deliver_pending(rt)
    async with rt.reads() as s:
        row = await s.scalar(select(OutboxAction).where(OutboxAction.account_id == a))
    assert row.status == "pending" and "451" in row.last_error


async def test_smtp_password_sealed(client: httpx.AsyncClient, rt: Runtime) -> None:
    a = await build(rt)
    email = {
        "to": ["head@shop.example"],
        "from": "crmwatch@shop.example",
        "host": "smtp.shop.example",
        "username": "crmwatch",
        "password": "s3cret-pass",
    }
    resp = await client.put(f"/api/accounts/{a}/digest/settings", json={"email": email})
    assert resp.status_code == 200 and "s3cret-pass" not in resp.text and resp.json()["email"]["password_set"]
    async with rt.reads() as s:
        cfg = await s.get(DigestSettings, a)
    assert b"s3cret-pass" not in cfg.smtp_password and "s3cret-pass" not in str(cfg.email)
    bad = {**email, "to": ["not an address"]}
    assert (await client.put(f"/api/accounts/{a}/digest/settings", json={"email": bad})).status_code == 422


async def test_a_resend_after_a_lost_record_keeps_the_message_id(
    client: httpx.AsyncClient, rt: Runtime, smtp: tuple[Inbox, int]
) -> None:
    # The server took the message, the process died before the outbox recorded it: the lease runs
    # out and the digest is sent again, with the same Message-ID, so a mail client shows it once.
    inbox, port = smtp
    a = await _setup(client, rt, port, ["head@shop.example"])
    await client.post(f"/api/accounts/{a}/digest/send", params={"date": "2026-11-09"})
    rows = await delivery.claim(rt)
    async with rt.reads() as s:
        account = await s.get(Account, a)
    await send_email(Batch(rt, None, account, rows, utcnow()))  # no _record: the crash
    async with rt.sessions() as s, s.begin():
        await s.execute(update(OutboxAction).values(next_attempt_at=utcnow() - timedelta(seconds=1)))
    await delivery.deliver_pending(rt)
    ids = [message_from_bytes(e.content, policy=policy.default)["Message-ID"] for e in inbox.envelopes]
    assert len(ids) == 2 and ids[0] == ids[1] == f"<digest-{a}-2026-11-09-{rows[0].id}@crmwatch>"
