"""The pace the plan_behind_pace rule judges: each manager's pace against the current month's plan,
written into `manager_pace` (app/rules/models.py) for the accounts that switched the rule on.

Why a table between them: the pace (targets walked back from the plan, the business calendar) is
computed here, in app/plans, which imports the rules; the rules may not import the plans. So the
scheduler's leader refreshes the table every REFRESH_SECONDS (app/workers.py PERIODIC), and the
account's sweeps open, resolve, notify and escalate the findings through the findings' lifecycle
like every other rule's. Sweeps are nightly, so a refresh that changes who is behind brings the
account's sweep forward: a finding opens or resolves within a scheduler tick of that refresh
(REFRESH_SECONDS plus the tick, with the defaults).
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.db import utcnow
from app.rules import config as rules_config
from app.rules.models import ManagerPace
from app.runtime import Runtime

from .service import current_month, pace

log = logging.getLogger(__name__)

RULE = "plan_behind_pace"
REFRESH_SECONDS = 900.0


async def refresh(s: AsyncSession, account: Account, now: datetime) -> int:
    """Replaces the account's pace rows with the current month's; returns how many. With the rule
    off, the rows go (nothing is computed)."""
    doc = await rules_config.load(s, account.id)
    resolved = doc.resolved(RULE)
    old = {
        (r.manager_id, r.milestone): r
        for r in await s.scalars(select(ManagerPace).where(ManagerPace.account_id == account.id))
    }
    await s.execute(delete(ManagerPace).where(ManagerPace.account_id == account.id))
    if not resolved.enabled:
        return 0
    measured = set(resolved.settings.measure)
    month = current_month(now, account.timezone)
    report = await pace(s, account, month, now)
    rows = []
    for manager in report["managers"]:
        for r in manager["rows"]:
            if r["milestone"] not in measured or r["target"] is None:
                continue
            before = old.get((manager["manager_id"], r["milestone"]))
            behind = r["behind"] and r["behind_percent"] > 0
            # Behind since the first refresh of this month that saw it, for as long as it lasts.
            kept = before is not None and before.month == month and before.behind_since is not None
            since = (before.behind_since if kept else now) if behind else None
            rows.append(
                ManagerPace(
                    account_id=account.id,
                    manager_id=manager["manager_id"],
                    milestone=r["milestone"],
                    month=month,
                    target=float(r["target"]),
                    fact=float(r["fact"]),
                    expected=float(r["expected"] or 0),
                    behind_percent=float(r["behind_percent"]),
                    elapsed_days=float(report["working_days_elapsed"]),
                    behind_since=since,
                    computed_at=now,
                )
            )
    s.add_all(rows)
    # Sweeps are nightly (the ticks follow deals, and a manager is no deal): when the set of
    # managers behind changes, the account's sweep is brought forward to the scheduler's next
    # tick, so a finding opens or resolves within minutes of the refresh that saw it.
    was = {key for key, r in old.items() if r.month == month and r.behind_since is not None}
    now_behind = {(r.manager_id, r.milestone) for r in rows if r.behind_since is not None}
    if was != now_behind:
        await s.execute(update(Account).where(Account.id == account.id).values(next_sweep_at=now))
    return len(rows)


async def refresh_due(rt: Runtime, now: datetime | None = None) -> int:
    """The periodic job: every active account's pace rows; returns how many accounts have the rule on."""
    now = now or utcnow()
    async with rt.reads() as s:
        accounts = list(
            await s.scalars(
                select(Account).where(Account.status == "active", Account.paused.is_(False)).order_by(Account.id)
            )
        )
    on = 0
    for account in accounts:
        try:
            async with rt.sessions() as s, s.begin():
                if await refresh(s, account, now):
                    on += 1
        except Exception:
            # One account's bad data must not stop the others'.
            log.exception("plans.pace_refresh_failed", extra={"account_id": account.id})
    return on


__all__ = ["REFRESH_SECONDS", "refresh", "refresh_due"]
