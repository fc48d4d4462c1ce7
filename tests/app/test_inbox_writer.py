"""The group-commit writer behind webhook intake: every accepted row is committed, in groups,
and a connection lost between groups costs no webhook."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select, text

from app.accounts.models import Account
from app.db import utcnow
from app.ingest.models import InboxEvent
from app.ingest.writer import InboxWriter


async def _account(rt) -> int:
    async with rt.sessions() as s, s.begin():
        account = Account(
            name="w",
            crm="amocrm",
            base_url="https://w.amocrm.ru",
            key="writer-test-key",
            auth_kind="token",
            credentials=b"x",
            sync_counts={},
        )
        s.add(account)
        await s.flush()
        return account.id


def _row(account_id: int, n: int) -> dict:
    now = utcnow()
    return {
        "account_id": account_id,
        "source": "amocrm",
        "dedup_key": f"body-{n}",
        "content_type": "x",
        "payload": f"leads[status][0][id]={n}",
        "received_at": now,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
    }


async def _stored(rt, account_id: int) -> set[str]:
    async with rt.sessions() as s:
        return set(await s.scalars(select(InboxEvent.dedup_key).where(InboxEvent.account_id == account_id)))


async def test_concurrent_writes_are_all_committed_and_a_redelivery_is_a_no_op(rt):
    aid = await _account(rt)
    writer = InboxWriter(rt.engine)
    writer.start()
    try:
        await asyncio.gather(*(writer.write(_row(aid, n)) for n in range(200)))
        await writer.write(_row(aid, 7))  # the same body again
    finally:
        await writer.stop()
    assert await _stored(rt, aid) == {f"body-{n}" for n in range(200)}
    async with rt.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(InboxEvent)) == 200


async def test_a_connection_lost_between_groups_loses_no_webhook(rt):
    aid = await _account(rt)
    writer = InboxWriter(rt.engine)
    writer.start()
    try:
        await writer.write(_row(aid, 1))
        # The database went away under the writer's own connection (a restart, a killed backend).
        if rt.engine.dialect.name == "postgresql":
            pid = await writer._conn.scalar(text("SELECT pg_backend_pid()"))
            await writer._conn.rollback()
            async with rt.sessions() as s:
                assert await s.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        else:
            await writer._conn.invalidate()
        await asyncio.gather(*(writer.write(_row(aid, n)) for n in range(2, 12)))
    finally:
        await writer.stop()
    assert await _stored(rt, aid) == {f"body-{n}" for n in range(1, 12)}
