"""Issue 18: the inbox is claimed by account. One account's burst does not starve another, and
on PostgreSQL two workers never hold rows of the same account (hence of the same deal) at once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import func, insert, select

from app.db import is_postgres, utcnow
from app.ingest import worker
from app.ingest.intake import inbox_row
from app.ingest.models import InboxEvent
from app.mirror.models import Task
from tests.conftest import create_account, form_body

BIG, SMALL = 20_000, 10


def _task_hook(task_id: int) -> str:
    return form_body("task_add", **{"task[add][0][id]": str(task_id)})


async def _receive(rt, account_id: int, task_ids: range) -> None:
    now = utcnow()
    rows = [inbox_row(account_id, "amocrm", f"t{i}", None, _task_hook(i), now) for i in task_ids]
    async with rt.sessions() as s, s.begin():
        for start in range(0, len(rows), 5000):
            await s.execute(insert(InboxEvent), rows[start : start + 5000])


async def _done(rt, account_id: int) -> list[int]:
    async with rt.sessions() as s:
        return list(
            await s.scalars(
                select(InboxEvent.id)
                .where(InboxEvent.account_id == account_id, InboxEvent.status == "done")
                .order_by(InboxEvent.id)
            )
        )


async def test_a_burst_of_one_account_does_not_starve_another(client, rt):
    busy, quiet = (await create_account(client))["id"], (await create_account(client, name="Тихий"))["id"]
    # 20,000 events of one account arrive first, then 10 of another: in arrival order the 10
    # would wait for 40 batches.
    await _receive(rt, busy, range(1, BIG + 1))
    await _receive(rt, quiet, range(900_001, 900_001 + SMALL))
    rt.settings.inbox_batch_size = 500

    assert await worker.process_batch(rt) == 500
    # The very first batch applied all of the quiet account's events, and the busy account's oldest.
    assert len(await _done(rt, quiet)) == SMALL
    async with rt.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Task).where(Task.account_id == quiet)) == SMALL
        busy_ids = list(
            await s.scalars(
                select(InboxEvent.id).where(InboxEvent.account_id == busy).order_by(InboxEvent.id).limit(500 - SMALL)
            )
        )
    assert await _done(rt, busy) == busy_ids


async def test_rows_are_taken_round_robin_fewest_waiting_first(client, rt):
    ids = [(await create_account(client, name=f"A{n}"))["id"] for n in range(3)]
    for n, account_id in enumerate(ids):
        await _receive(rt, account_id, range(1000 * (n + 1), 1000 * (n + 1) + 3 + n))  # 3, 4, 5 rows
    async with rt.sessions() as s, s.begin():
        rows = await worker.claim(s, 6, utcnow())
    # Two of each account's oldest rows: every account moves, none waits for another's backlog.
    assert sorted(r.account_id for r in rows) == sorted(ids * 2)
    for account_id in ids:
        mine = [r.id for r in rows if r.account_id == account_id]
        async with rt.sessions() as s:
            oldest = list(
                await s.scalars(
                    select(InboxEvent.id).where(InboxEvent.account_id == account_id).order_by(InboxEvent.id).limit(2)
                )
            )
        assert mine == oldest


async def test_two_workers_never_hold_the_same_account(client, rt):
    ids = [(await create_account(client, name=f"W{n}"))["id"] for n in range(6)]
    for n, account_id in enumerate(ids):
        await _receive(rt, account_id, range(10_000 * (n + 1), 10_000 * (n + 1) + 20))
    async with rt.sessions() as first, first.begin():
        mine = await worker.claim(first, 40, utcnow())
        held = {r.account_id for r in mine}
        # Fewest waiting first until the batch is full, and at least four accounts when there are.
        assert len(held) == worker.MIN_ACCOUNTS_PER_BATCH and len(mine) == 40
        if is_postgres(first):
            async with rt.sessions() as second, second.begin():
                theirs = await worker.claim(second, 40, utcnow())
            # The other worker takes the accounts the first does not hold, and only those.
            assert {r.account_id for r in theirs} == set(ids) - held
            assert len(theirs) == 40
        # (SQLite has one writer at a time: a second worker's transaction waits for this one.)
    # Once the first committed, its accounts are free again.
    async with rt.sessions() as s, s.begin():
        assert {r.account_id for r in await worker.claim(s, 200, utcnow())} == set(ids)


async def test_one_worker_applies_other_accounts_batches_at_once(client, rt, monkeypatch):
    ids = [(await create_account(client, name=f"L{n}"))["id"] for n in range(8)]
    for n, account_id in enumerate(ids):
        await _receive(rt, account_id, range(10_000 * (n + 1), 10_000 * (n + 1) + 30))
    monkeypatch.setattr(rt.settings, "inbox_batch_size", 40)
    held: list[set[int]] = []  # the accounts of each batch being applied right now
    most, overlaps = 0, []
    apply_set = worker._apply_set

    async def watched(rt_, s, batch, now):
        nonlocal most
        mine = {row.account_id for row in batch.rows}
        overlaps.extend(mine & other for other in held if mine & other)
        held.append(mine)
        most = max(most, len(held))
        try:
            await asyncio.sleep(0.05)  # a batch at the database: the other loop claims meanwhile
            return await apply_set(rt_, s, batch, now)
        finally:
            held.remove(mine)

    monkeypatch.setattr(worker, "_apply_set", watched)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run_forever(rt, stop))
    for _ in range(400):
        if await worker.pending_count(rt) == 0:
            break
        await asyncio.sleep(0.05)
    stop.set()
    rt.inbox_wakeup.set()
    await running
    assert await worker.pending_count(rt) == 0
    async with rt.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Task)) == 8 * 30
    # Two batches at once on PostgreSQL (one on SQLite), and never two holding the same account.
    assert most == worker.apply_loops(rt) == (2 if rt.engine.dialect.name == "postgresql" else 1)
    assert overlaps == []


async def test_metrics_and_the_account_show_the_lag(client, rt):
    aid = (await create_account(client))["id"]
    await _receive(rt, aid, range(1, 4))
    async with rt.sessions() as s, s.begin():  # the oldest came in 90 s ago
        oldest = await s.scalar(select(func.min(InboxEvent.id)).where(InboxEvent.account_id == aid))
        row = await s.get(InboxEvent, oldest)
        row.received_at = utcnow() - timedelta(seconds=90)

    text = (await client.get("/metrics")).text
    assert f'crmwatch_inbox_depth{{account_id="{aid}"}} 3.0' in text
    age = next(
        ln for ln in text.splitlines() if ln.startswith(f'crmwatch_inbox_oldest_age_seconds{{account_id="{aid}"}}')
    )
    assert 90 <= float(age.split()[-1]) < 150
    lag = (await client.get(f"/api/accounts/{aid}")).json()["inbox"]
    assert lag["pending"] == 3 and 90 <= lag["lag_seconds"] < 150

    assert await worker.drain(rt) == 3
    text = (await client.get("/metrics")).text
    # Caught up: the account drops out of the per-account gauges; the rate counts its rows.
    assert f'account_id="{aid}"' not in text
    assert "crmwatch_inbox_apply_rate 0.05" in text  # 3 rows over the last minute
    assert (await client.get(f"/api/accounts/{aid}")).json()["inbox"]["lag_seconds"] == 0.0
