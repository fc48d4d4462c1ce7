"""Which card a call belongs to: client number → contact (mirror) → that contact's open deal,
the most recently active one when there are several. (When the mirror knows no contact with the
number, the CRM is asked once, outside any transaction, after the inbox batch: followup.py.)"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import and_, false, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow
from app.mirror.models import Contact, ContactPhone, Deal, DealContact

from .models import Call

# A contact created long after we saw a call does not make that call "about" it any more.
REMATCH_WINDOW = timedelta(days=30)


async def best_match(
    s: AsyncSession, account_id: int, number: str, among_deals: list[str] | None = None
) -> tuple[str | None, str | None]:
    """(contact id, deal id) for a number; either may be None."""
    contacts = list(
        await s.scalars(
            select(ContactPhone.contact_id)
            .join(Contact, and_(Contact.account_id == ContactPhone.account_id, Contact.id == ContactPhone.contact_id))
            .where(ContactPhone.account_id == account_id, ContactPhone.phone == number, Contact.is_deleted == false())
            .order_by(ContactPhone.contact_id)
        )
    )
    open_deal = [Deal.account_id == account_id, Deal.is_deleted == false(), Deal.is_closed == false()]
    recent = (func.coalesce(Deal.source_updated_at, Deal.mirrored_at).desc(), Deal.id.desc())
    if contacts:
        row = (
            await s.execute(
                select(Deal.id, DealContact.contact_id)
                .join(DealContact, and_(DealContact.account_id == Deal.account_id, DealContact.deal_id == Deal.id))
                .where(*open_deal, DealContact.contact_id.in_(contacts))
                .order_by(*recent)
                .limit(1)
            )
        ).first()
        if row is not None:
            return row.contact_id, row.id
    if among_deals:
        deal = await s.scalar(select(Deal.id).where(*open_deal, Deal.id.in_(among_deals)).order_by(*recent).limit(1))
        return (contacts[0] if contacts else None), deal
    return (contacts[0] if contacts else None), None


async def match_call(s: AsyncSession, call: Call, source: str = "mirror", among_deals: list[str] | None = None) -> bool:
    """Fills the call's contact and deal when they can be found; True when anything changed.
    A deal already on the call stays: the call was about it, even if it closed since."""
    if call.client_number is None or call.deal_id is not None:
        return False
    return settle(call, *await best_match(s, call.account_id, call.client_number, among_deals), source)


def settle(call: Call, contact_id: str | None, deal_id: str | None, source: str = "mirror") -> bool:
    """Puts a match (best_match's) on the call; True when anything changed."""
    if call.client_number is None or call.deal_id is not None:
        return False
    if (contact_id, deal_id) == (None, None) or (contact_id == call.contact_id and deal_id is None):
        return False
    call.contact_id = contact_id or call.contact_id
    call.deal_id = deal_id
    call.match_source, call.matched_at = source, utcnow()
    return True


async def best_matches(
    s: AsyncSession, account_id: int, numbers: list[str]
) -> dict[str, tuple[str | None, str | None]]:
    """best_match() of many numbers at once (no among_deals), in two statements: what an inbox
    batch uses for the calls no other event of it can change the match of."""
    contacts: dict[str, list[str]] = {}
    for phone, contact_id in await s.execute(
        select(ContactPhone.phone, ContactPhone.contact_id)
        .join(Contact, and_(Contact.account_id == ContactPhone.account_id, Contact.id == ContactPhone.contact_id))
        .where(ContactPhone.account_id == account_id, ContactPhone.phone.in_(numbers), Contact.is_deleted == false())
        .order_by(ContactPhone.phone, ContactPhone.contact_id)
    ):
        contacts.setdefault(phone, []).append(contact_id)
    out: dict[str, tuple[str | None, str | None]] = {n: (None, None) for n in numbers}
    out.update({phone: (ids[0], None) for phone, ids in contacts.items()})
    if not contacts:
        return out
    # The most recently active open deal of any contact with the number, ordered as best_match does.
    turn = (
        func.row_number()
        .over(
            partition_by=ContactPhone.phone,
            order_by=(func.coalesce(Deal.source_updated_at, Deal.mirrored_at).desc(), Deal.id.desc()),
        )
        .label("turn")
    )
    ranked = (
        select(ContactPhone.phone, DealContact.contact_id, Deal.id.label("deal_id"), turn)
        .join(Contact, and_(Contact.account_id == ContactPhone.account_id, Contact.id == ContactPhone.contact_id))
        .join(
            DealContact,
            and_(DealContact.account_id == ContactPhone.account_id, DealContact.contact_id == ContactPhone.contact_id),
        )
        .join(Deal, and_(Deal.account_id == DealContact.account_id, Deal.id == DealContact.deal_id))
        .where(
            ContactPhone.account_id == account_id,
            ContactPhone.phone.in_(sorted(contacts)),
            Contact.is_deleted == false(),
            Deal.is_deleted == false(),
            Deal.is_closed == false(),
        )
        .subquery()
    )
    for phone, contact_id, deal_id in await s.execute(
        select(ranked.c.phone, ranked.c.contact_id, ranked.c.deal_id).where(ranked.c.turn == 1)
    ):
        out[phone] = (contact_id, deal_id)
    return out


async def rematch_contacts(s: AsyncSession, account_id: int, contact_ids: set[str]) -> tuple[set[str], set[int]]:
    """Matches calls still without a deal against contacts that just gained phones or deals.
    Returns the deals that gained calls, and the calls that changed."""
    phones = list(
        await s.scalars(
            select(ContactPhone.phone)
            .where(ContactPhone.account_id == account_id, ContactPhone.contact_id.in_(sorted(contact_ids)))
            .distinct()
        )
    )
    if not phones:
        return set(), set()
    calls = await s.scalars(
        select(Call)
        .where(
            Call.account_id == account_id,
            Call.client_number.in_(phones),
            Call.deal_id.is_(None),
            Call.created_at >= utcnow() - REMATCH_WINDOW,
        )
        .order_by(Call.id)
    )
    touched: set[str] = set()
    changed: set[int] = set()
    for call in calls:
        if await match_call(s, call):
            changed.add(call.id)
            if call.deal_id:
                touched.add(call.deal_id)
    return touched, changed
