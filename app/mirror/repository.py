"""Read queries over the mirror."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, false, func, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from .models import Contact, Deal, Note, Stage, Task, User


def deal_stage() -> ColumnElement[bool]:
    """A deal's stage: stage ids repeat across pipelines (amoCRM's won 142 and lost 143 are in every
    one), so the join needs the pipeline too."""
    return and_(Stage.account_id == Deal.account_id, Stage.pipeline_id == Deal.pipeline_id, Stage.id == Deal.stage_id)


def closed_between(start: datetime, end: datetime) -> list[Any]:
    """Deals closed in [start, end) and not deleted: what the plans, reports and ABC/XYZ count as won
    or lost in a period (with `deal_stage()` and the stage's kind)."""
    return [Deal.is_closed.is_(True), Deal.is_deleted.is_(False), Deal.closed_at >= start, Deal.closed_at < end]


async def summary(s: AsyncSession, account_id: int, now: datetime) -> dict[str, int]:
    """Counts that show at a glance whether the mirror is alive and what it holds."""
    open_deal = (Deal.account_id == account_id, Deal.is_deleted == false(), Deal.is_closed == false())
    open_task = (Task.account_id == account_id, Task.is_deleted == false(), Task.is_completed == false())

    async def count(model: type, *where: object) -> int:
        return await s.scalar(select(func.count()).select_from(model).where(*where)) or 0

    return {
        "deals_open": await count(Deal, *open_deal),
        "deals_closed": await count(
            Deal, Deal.account_id == account_id, Deal.is_deleted == false(), Deal.is_closed == true()
        ),
        "tasks_open": await count(Task, *open_task),
        "tasks_overdue": await count(Task, *open_task, Task.due_at < now),
        "deals_without_open_task": await count(
            Deal, *open_deal, ~select(Task.id).where(*open_task, Task.deal_id == Deal.id).exists()
        ),
        "notes": await count(Note, Note.account_id == account_id),
        "contacts": await count(Contact, Contact.account_id == account_id, Contact.is_deleted == false()),
        "users": await count(User, User.account_id == account_id),
    }
