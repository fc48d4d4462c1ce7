"""Which deals a call or a contact's phones reach beyond their own card.

The rules about calls look across deals by number, so an event on one card can change the
verdict on another, and the inbox must re-evaluate those deals too (the nightly sweep would
otherwise be the first to see it):

- missed_call_not_returned: an answered call with the number, whatever deal it is on (or none),
  returns a miss; an earlier miss makes a later one a repeat. A call reaches every deal that has
  a call with its number, and "" (the account's calls without a deal) when one of those has none.
- lead_not_contacted: a call with a number of any of the deal's contacts is a contact. A call
  reaches the open deals whose contacts have its number; a contact whose phones change (or that
  is deleted, its phones with it) reaches its open deals.
- unknown_number: a number no contact has. A contact whose phones change reaches "" (the calls
  without a deal, where those findings live).

Linking or unlinking a contact is a change of the deal itself (the deal event touches it). Notes
and tasks on a contact or a company carry no deal (integrations/base.py) and no rule reads them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy import and_, false, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.mirror.models import ContactPhone, Deal, DealContact

from .models import Call

# The longest look-back a call rule may be given (their settings allow 30 days): a call further
# back from the changed one than this is outside every window that could still see both.
LONGEST_LOOKBACK = timedelta(days=31)
# Ids per IN list.
CHUNK = 500


def _chunks(values: Iterable[str]) -> Iterable[list[str]]:
    items = sorted(set(values))
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


async def _open_deals_of(
    s: AsyncSession, account_id: int, contact_ids: list[str] | None, numbers: list[str]
) -> set[str]:
    """The open deals linked to these contacts, or to the contacts that have these numbers."""
    query = (
        select(DealContact.deal_id)
        .join(Deal, and_(Deal.account_id == DealContact.account_id, Deal.id == DealContact.deal_id))
        .where(DealContact.account_id == account_id, Deal.is_deleted == false(), Deal.is_closed == false())
    )
    if contact_ids is not None:
        query = query.where(DealContact.contact_id.in_(contact_ids))
    else:
        query = query.join(
            ContactPhone,
            and_(ContactPhone.account_id == DealContact.account_id, ContactPhone.contact_id == DealContact.contact_id),
        ).where(ContactPhone.phone.in_(numbers))
    return set(await s.scalars(query.distinct()))


async def deals_of_calls(s: AsyncSession, account_id: int, call_ids: Iterable[int]) -> set[str]:
    """The deals whose verdict these calls (just created or changed) can change: every deal with
    a call with one of their numbers ("" for such calls on no deal), and the open deals whose
    contacts have one of the numbers."""
    ids = sorted(set(call_ids))
    numbers: set[str] = set()
    starts = []
    for start in range(0, len(ids), CHUNK):
        rows = await s.execute(
            select(Call.client_number, Call.started_at).where(
                Call.account_id == account_id, Call.id.in_(ids[start : start + CHUNK]), Call.client_number.is_not(None)
            )
        )
        for number, started in rows:
            numbers.add(number)
            starts.append(started)
    if not numbers:
        return set()
    reached: set[str] = set()
    # The numbers' calls near enough to the changed ones to share a window with them (a call
    # with no start yet sorts nowhere: all of them, then).
    recent = []
    if None not in starts:
        recent = [or_(Call.started_at.is_(None), Call.started_at >= min(starts) - LONGEST_LOOKBACK)]
    for chunk in _chunks(numbers):
        rows = await s.scalars(
            select(func.coalesce(Call.deal_id, ""))
            .where(Call.account_id == account_id, Call.client_number.in_(chunk), *recent)
            .distinct()
        )
        reached.update(rows)
        reached |= await _open_deals_of(s, account_id, None, chunk)
    return reached


async def deals_of_contacts(s: AsyncSession, account_id: int, contact_ids: Iterable[str]) -> set[str]:
    """The deals whose verdict a change of these contacts' phones can change: their open deals,
    and "" (a number that gains or loses its contact is, or stops being, an unknown number)."""
    contacts = set(contact_ids)
    if not contacts:
        return set()
    reached = {""}
    for chunk in _chunks(contacts):
        reached |= await _open_deals_of(s, account_id, chunk, [])
    return reached
