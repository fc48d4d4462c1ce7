"""What follows a batch of call events, outside the inbox transaction: the CRM look-up for
numbers the mirror does not know, and the managers' daily figures."""

from __future__ import annotations

import logging

from sqlalchemy import select, update

from app.accounts.models import Account
from app.db import utcnow
from app.runtime import Runtime
from integrations.base import CrmError

from . import calllog, stats
from .matching import match_call
from .models import Call
from .service import mirror_writer

log = logging.getLogger(__name__)

# CRM look-ups per inbox batch and account: the fallback must not eat the CRM's rate limit.
MAX_SEARCHES = 20


async def after_calls(rt: Runtime, account_id: int, call_ids: list[int]) -> set[str]:
    """Returns the deals whose calls changed through the CRM look-up (to re-evaluate), and ""
    (the account's calls without a deal, app/findings/due.py) when some of these have none."""
    touched: set[str] = set()
    async with rt.reads() as s:
        if await s.scalar(
            select(Call.id)
            .where(
                Call.account_id == account_id, Call.id.in_(call_ids), Call.is_final.is_(True), Call.deal_id.is_(None)
            )
            .limit(1)
        ):
            touched.add("")
        unknown = list(
            await s.scalars(
                select(Call.id).where(
                    Call.account_id == account_id,
                    Call.id.in_(call_ids),
                    Call.is_final.is_(True),
                    Call.client_number.is_not(None),
                    Call.contact_id.is_(None),
                    Call.deal_id.is_(None),
                    Call.crm_searched_at.is_(None),
                )
            )
        )
    if unknown:
        touched |= await search_crm(rt, account_id, unknown)
    try:
        async with rt.sessions() as s, s.begin():
            account = await s.get(Account, account_id)
            rows = (
                await s.execute(
                    select(Call.manager_id, Call.started_at).where(
                        Call.account_id == account_id,
                        Call.id.in_(call_ids),
                        Call.manager_id.is_not(None),
                        Call.started_at.is_not(None),
                    )
                )
            ).all()
            if account is not None and rows:
                await stats.refresh(
                    s, account_id, account.timezone, {(m, stats.local_day(at, account.timezone)) for m, at in rows}
                )
    except Exception:
        # The figures are derived data: the next call of that manager and day recomputes them.
        log.exception("calls.stats_failed", extra={"account_id": account_id})
    return touched


async def search_crm(rt: Runtime, account_id: int, call_ids: list[int]) -> set[str]:
    """Asks the CRM about numbers the mirror does not know. Best effort: a CRM outage leaves the
    calls unsearched, and a later call from the number asks again. Returns the deals matched."""
    async with rt.reads() as s:
        account = await s.get(Account, account_id)
        numbers = list(
            await s.scalars(
                select(Call.client_number)
                .where(
                    Call.account_id == account_id,
                    Call.id.in_(call_ids),
                    Call.client_number.is_not(None),
                    Call.deal_id.is_(None),
                    Call.contact_id.is_(None),
                    Call.crm_searched_at.is_(None),
                )
                .distinct()
            )
        )
    if account is None or account.status != "active" or not numbers:
        return set()
    client = rt.crm_client(account.id, account.crm, account.base_url)
    found = {}
    try:
        for number in sorted(numbers)[:MAX_SEARCHES]:
            found[number] = await client.search_phone(number, region=account.region)
    except CrmError as exc:
        log.warning("calls.crm_search_failed", extra={"account_id": account_id, "error": str(exc)})
    finally:
        await client.aclose()
    if not found:
        return set()
    touched: set[str] = set()
    async with rt.sessions() as s, s.begin():
        for number, lookup in found.items():
            result = await mirror_writer(s, account_id).apply(list(lookup.events))
            touched |= result.touched_deals
            if result.calls:
                # Matched while the found contacts were applied: through the search all the same.
                await s.execute(
                    update(Call)
                    .where(
                        Call.id.in_(sorted(result.calls)), Call.client_number == number, Call.match_source == "mirror"
                    )
                    .values(match_source="crm_search")
                )
            calls = list(
                await s.scalars(
                    select(Call).where(
                        Call.account_id == account_id, Call.client_number == number, Call.deal_id.is_(None)
                    )
                )
            )
            matched = [c for c in calls if await match_call(s, c, "crm_search", list(lookup.deal_ids))]
            touched |= {c.deal_id for c in matched if c.deal_id}
            await calllog.enqueue(s, account_id, [c.id for c in matched])
            await s.execute(
                update(Call)
                .where(Call.account_id == account_id, Call.client_number == number, Call.crm_searched_at.is_(None))
                .values(crm_searched_at=utcnow())
            )
    return touched
