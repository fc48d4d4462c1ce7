"""Plans: read and replace a month's plan (the caller owns the transaction)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from . import repository as repo
from .models import Plan
from .schemas import ManagerPlan, PlanIn, PlanOut


async def get(s: AsyncSession, account_id: int, month: str) -> PlanOut:
    """The month's plan; a month nobody planned is an empty plan."""
    rows = await repo.month(s, account_id, month)
    return PlanOut(
        month=month,
        managers={r.manager_id: ManagerPlan(revenue=r.revenue, won_deals=r.won_deals) for r in rows},
    )


async def put(s: AsyncSession, account_id: int, month: str, plan: PlanIn) -> PlanOut:
    """Replaces the month's whole plan: a manager left out has no plan for the month any more."""
    rows = [
        Plan(account_id=account_id, month=month, manager_id=m, revenue=p.revenue, won_deals=p.won_deals)
        for m, p in plan.managers.items()
    ]
    await repo.replace_month(s, account_id, month, rows)
    known = await repo.known_users(s, account_id, plan.managers)
    warnings = [
        f"managers.{m}: the CRM has no user {m!r} that crmwatch knows of; kept as written"
        for m in sorted(set(plan.managers) - known)
    ]
    out = await get(s, account_id, month)
    return out.model_copy(update={"warnings": warnings})


__all__ = ["get", "put"]
