"""A batch that changes different fields of different rows still writes each table in one
executemany UPDATE (app/mirror/service.update_together), and the rows end as each event said."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import event, select

from app.calls.service import mirror_writer
from app.mirror.models import Deal
from integrations.base import DealUpserted, StageKind
from tests.conftest import create_account

T0 = datetime(2025, 11, 24, 16, 0, tzinfo=UTC)


def deal(did: str, at: datetime, **said) -> DealUpserted:
    return DealUpserted(id=did, updated_at=at, pipeline_id="P", stage_kind=StageKind.OPEN, **said)


async def test_rows_changing_different_columns_are_updated_in_one_statement(client, rt):
    account_id = (await create_account(client))["id"]
    ids = [f"D{n}" for n in range(12)]
    async with rt.sessions() as s, s.begin():
        await mirror_writer(s, account_id).apply([deal(d, T0, name=d, stage_id="S", price=100) for d in ids])
    later = T0 + timedelta(hours=1)
    # Consecutive deals change different columns: a name, a price, a stage (and its entry time).
    changes = [
        deal(d, later, name=f"{d} renamed")
        if n % 3 == 0
        else deal(d, later, price=200 + n)
        if n % 3 == 1
        else deal(d, later, stage_id="S2")
        for n, d in enumerate(ids)
    ]
    updates: list[tuple[str, bool]] = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("UPDATE DEALS"):
            updates.append((statement, executemany))

    engine = rt.engine.sync_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        async with rt.sessions() as s, s.begin():
            await mirror_writer(s, account_id).apply_batch(changes)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert len(updates) == 1 and updates[0][1], updates
    async with rt.sessions() as s:
        got = {d.id: d for d in await s.scalars(select(Deal).where(Deal.account_id == account_id))}
    for n, d in enumerate(ids):
        expected = (f"{d} renamed", 100, "S") if n % 3 == 0 else (d, 200 + n, "S") if n % 3 == 1 else (d, 100, "S2")
        assert (got[d].name, got[d].price, got[d].stage_id) == expected, d
        assert got[d].source_updated_at == later
