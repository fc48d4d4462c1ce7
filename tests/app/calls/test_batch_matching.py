"""An inbox batch applies calls ahead of the CRM's events when those cannot change their match
(CallsInMirror.arrange): the call still lands on the card that applying every event in its
order would give, whether the batch's contact and deal events reach its number or not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from app.calls.matching import match_call
from app.calls.models import Call
from app.calls.service import mirror_writer
from integrations.base import CallDirection, CallEvent, ContactDeleted, ContactUpserted, DealUpserted, StageKind
from tests.conftest import create_account

T0 = datetime(2025, 11, 24, 16, 0, tzinfo=UTC)
A, B, Z = "+79990000001", "+79990000002", "+79990000009"


def contact(cid: str, *phones: str, at: datetime = T0) -> ContactUpserted:
    return ContactUpserted(id=cid, updated_at=at, name=cid, phones=phones)


def deal(did: str, contacts: tuple[str, ...] | None, *, at: datetime = T0) -> DealUpserted:
    return DealUpserted(
        id=did, updated_at=at, name=did, pipeline_id="P", stage_id="S", stage_kind=StageKind.OPEN, contact_ids=contacts
    )


def call(call_id: str, number: str) -> CallEvent:
    return CallEvent(
        provider="mango",
        call_id=call_id,
        direction=CallDirection.IN,
        client_number=number,
        started_at=T0 + timedelta(hours=2),
        is_final=True,
    )


async def _batch(rt, account_id: int, *events) -> dict[str, tuple[str | None, str | None]]:
    async with rt.sessions() as s, s.begin():
        await mirror_writer(s, account_id).apply_batch(list(events))
    async with rt.sessions() as s:
        return {c.provider_call_id: (c.contact_id, c.deal_id) for c in await s.scalars(select(Call))}


async def _seeded(client, rt) -> int:
    acc = await create_account(client)
    async with rt.sessions() as s, s.begin():
        await mirror_writer(s, acc["id"]).apply(
            [contact("C1", A), contact("C2", B), deal("D1", ("C1",)), deal("D2", ("C2",))]
        )
    return acc["id"]


async def test_a_call_after_a_deal_newly_linked_to_its_contact_matches_that_deal(client, rt):
    account_id = await _seeded(client, rt)
    later = T0 + timedelta(hours=1)
    got = await _batch(rt, account_id, deal("D3", ("C1",), at=later), call("k1", A))
    assert got == {"k1": ("C1", "D3")}


async def test_a_call_after_a_new_contact_with_its_number_and_that_contacts_deal_matches_them(client, rt):
    account_id = await _seeded(client, rt)
    later = T0 + timedelta(hours=1)
    got = await _batch(rt, account_id, contact("C3", A, at=later), deal("D4", ("C3",), at=later), call("k1", A))
    assert got == {"k1": ("C3", "D4")}


async def test_a_call_after_its_contact_lost_the_number_is_not_matched_to_it(client, rt):
    account_id = await _seeded(client, rt)
    later = T0 + timedelta(hours=1)
    got = await _batch(rt, account_id, contact("C1", Z, at=later), call("k1", A), call("k2", B))
    assert got == {"k1": (None, None), "k2": ("C2", "D2")}


async def test_a_call_after_its_contact_was_deleted_is_not_matched_to_it(client, rt):
    account_id = await _seeded(client, rt)
    got = await _batch(rt, account_id, ContactDeleted(id="C1"), call("k1", A))
    assert got == {"k1": (None, None)}


async def test_calls_before_the_events_that_reach_their_number_keep_the_earlier_match(client, rt):
    account_id = await _seeded(client, rt)
    later = T0 + timedelta(hours=1)
    got = await _batch(
        rt,
        account_id,
        call("k1", A),
        deal("D3", ("C1",), at=later),
        contact("C9", Z, at=later),  # reaches no call's number
        call("k2", B),
        call("k3", A),
    )
    assert got == {"k1": ("C1", "D1"), "k2": ("C2", "D2"), "k3": ("C1", "D3")}


async def test_calls_between_changes_to_their_deals_fields_match_as_the_deals_stand_then_without_a_query(
    client, rt, monkeypatch
):
    from app.calls import service

    account_id = await _seeded(client, rt)
    async with rt.sessions() as s, s.begin():
        await mirror_writer(s, account_id).apply([deal("D5", ("C1",), at=T0 + timedelta(minutes=30))])
    queried = []

    async def counted(*args, **kwargs):
        queried.append(args)
        return await match_call(*args, **kwargs)

    monkeypatch.setattr(service, "match_call", counted)
    won = DealUpserted(id="D1", updated_at=T0 + timedelta(hours=2), stage_id="W", stage_kind=StageKind.WON)
    got = await _batch(
        rt,
        account_id,
        call("k1", A),  # D5 is C1's most recent open deal
        deal("D1", None, at=T0 + timedelta(hours=1)),  # D1 becomes the most recent (its links unchanged)
        call("k2", A),
        won,  # and then closes
        call("k3", A),
        call("k4", B),
    )
    assert got == {"k1": ("C1", "D5"), "k2": ("C1", "D1"), "k3": ("C1", "D5"), "k4": ("C2", "D2")}
    assert queried == []
