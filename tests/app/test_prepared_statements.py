"""Statements compiled once (app.db.Prepared): an event's re-evaluation runs its comparison and
its moments this way on PostgreSQL. They must give what SQLAlchemy's own execution gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Float, String, bindparam, literal, select
from sqlalchemy.dialects.postgresql import asyncpg

from app.db import Prepared, UtcDateTime, execute_kept, is_postgres, prepared
from app.findings.models import DueMoment
from tests.app.rules.mirror_builder import new_account

MOSCOW = timezone(timedelta(hours=3))


def _statement() -> object:
    """Named parameters, a literal among them (a value fixed at build time) and one whose type
    converts what it is given (UtcDateTime: any aware datetime to UTC)."""
    return (
        select(DueMoment.deal_id, DueMoment.due_epoch, bindparam("asked_at", type_=UtcDateTime()).label("asked_at"))
        .where(
            DueMoment.account_id == bindparam("account"),
            DueMoment.due_epoch <= bindparam("until", type_=Float()),
            DueMoment.deal_id != literal("skipped", String()),
        )
        .order_by(DueMoment.deal_id)
    )


async def test_a_kept_statement_gives_what_sqlalchemy_gives(rt) -> None:
    account_id = await new_account(rt)
    other_id = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        s.add_all(
            [
                DueMoment(account_id=account_id, deal_id="a", due_epoch=1.0),
                DueMoment(account_id=account_id, deal_id="b", due_epoch=5.0),
                DueMoment(account_id=account_id, deal_id="skipped", due_epoch=0.5),
                DueMoment(account_id=other_id, deal_id="c", due_epoch=0.1),
            ]
        )
    statement = _statement()
    asked = datetime(2026, 12, 7, 10, 0, tzinfo=MOSCOW)
    params = {"account": account_id, "until": 2.0, "asked_at": asked}
    async with rt.sessions() as s, s.begin():
        usual = (await s.execute(statement, params)).all()
        kept = (await execute_kept(s, statement, params)).all()
        again = (await execute_kept(s, statement, {**params, "until": 9.0})).all()
        if is_postgres(s):
            # The compiled form is what ran (on SQLite execute_kept goes SQLAlchemy's way).
            assert prepared(statement, s.bind.dialect) is not None
    assert [(d, e) for d, e, _ in usual] == [("a", 1.0)]
    assert [tuple(row) for row in kept] == [tuple(row) for row in usual]
    assert kept[0][2] == asked and kept[0][2].utcoffset() == timedelta(0)
    # The same compiled form with other values: nothing of the first execution stays behind.
    assert [(d, e) for d, e, _ in again] == [("a", 1.0), ("b", 5.0)]


async def test_unflushed_objects_are_seen_as_by_sqlalchemy(rt) -> None:
    account_id = await new_account(rt)
    statement = _statement()
    params = {"account": account_id, "until": 2.0, "asked_at": datetime.now(UTC)}
    async with rt.sessions() as s, s.begin():
        s.add(DueMoment(account_id=account_id, deal_id="pending", due_epoch=1.0))
        rows = (await execute_kept(s, statement, params)).all()
    assert [row[0] for row in rows] == ["pending"]


def test_values_are_put_in_order_through_their_types() -> None:
    made = Prepared(_statement(), asyncpg.dialect())
    asked = datetime(2026, 12, 7, 10, 0, tzinfo=MOSCOW)
    arguments = made.arguments({"account": 7, "until": 2.0, "asked_at": asked})
    # Each value at its $n, the literal from the statement itself, the datetime made UTC.
    assert "$1" in made.sql and "$4" in made.sql and "$5" not in made.sql
    by_place = dict(zip([name for name, _, _ in made.slots], arguments, strict=True))
    assert by_place["account"] == 7 and by_place["until"] == 2.0
    assert by_place["asked_at"] == asked and by_place["asked_at"].tzinfo is UTC
    assert "skipped" in arguments


def test_a_required_value_left_out_is_an_error() -> None:
    made = Prepared(_statement(), asyncpg.dialect())
    with pytest.raises(KeyError, match="until"):
        made.arguments({"account": 7, "asked_at": datetime.now(UTC)})


def test_an_in_list_is_left_to_sqlalchemy() -> None:
    # An expanding IN-list is rendered into the SQL anew at each execution: no compiled form.
    statement = select(DueMoment.deal_id).where(DueMoment.deal_id.in_(bindparam("deals", expanding=True)))
    assert prepared(statement, asyncpg.dialect()) is None
    with pytest.raises(ValueError):
        Prepared(statement, asyncpg.dialect())
