"""What follows a batch of call events, outside the inbox transaction: the CRM look-up for
numbers the mirror does not know, and the managers' daily figures."""

from __future__ import annotations

import logging

from sqlalchemy import select

from app.accounts.models import Account
from app.runtime import Runtime

from . import stats
from .matching import search_crm
from .models import Call

log = logging.getLogger(__name__)


async def after_calls(rt: Runtime, account_id: int, call_ids: list[int]) -> set[str]:
    """Returns the deals whose calls changed through the CRM look-up (to re-evaluate)."""
    touched: set[str] = set()
    async with rt.reads() as s:
        unknown = list(await s.scalars(select(Call.id).where(
            Call.account_id == account_id, Call.id.in_(call_ids), Call.is_final.is_(True),
            Call.client_number.is_not(None), Call.contact_id.is_(None), Call.deal_id.is_(None),
            Call.crm_searched_at.is_(None))))
    if unknown:
        touched |= await search_crm(rt, account_id, unknown)
    try:
        async with rt.sessions() as s, s.begin():
            account = await s.get(Account, account_id)
            rows = (await s.execute(select(Call.manager_id, Call.started_at).where(
                Call.account_id == account_id, Call.id.in_(call_ids), Call.manager_id.is_not(None),
                Call.started_at.is_not(None)))).all()
            if account is not None and rows:
                await stats.refresh(s, account_id, account.timezone,
                                    {(m, stats.local_day(at, account.timezone)) for m, at in rows})
    except Exception:
        # The figures are derived data: the next call of that manager and day recomputes them.
        log.exception("calls.stats_failed", extra={"account_id": account_id})
    return touched
