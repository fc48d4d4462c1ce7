"""Every query of the plans."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.mirror.models import User

from .models import Plan


async def month(s: AsyncSession, account_id: int, month: str) -> list[Plan]:
    return list(
        await s.scalars(
            select(Plan).where(Plan.account_id == account_id, Plan.month == month).order_by(Plan.manager_id)
        )
    )


async def replace_month(s: AsyncSession, account_id: int, month: str, rows: Iterable[Plan]) -> None:
    await s.execute(delete(Plan).where(Plan.account_id == account_id, Plan.month == month))
    s.add_all(list(rows))
    await s.flush()


async def known_users(s: AsyncSession, account_id: int, ids: Iterable[str]) -> set[str]:
    wanted = sorted(set(ids))
    if not wanted:
        return set()
    return set(await s.scalars(select(User.id).where(User.account_id == account_id, User.id.in_(wanted))))
