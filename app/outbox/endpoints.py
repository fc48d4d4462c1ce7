from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import BaseModel
from sqlalchemy import func, select

from app.db import utcnow
from app.deps import INT32_MAX, AccountId, RowId, account_or_404, runtime
from app.runtime import Runtime
from app.security import require_admin

from .models import OutboxAction

router = APIRouter(prefix="/api", tags=["outbox"], dependencies=[Depends(require_admin)])


class OutboxOut(BaseModel):
    id: int
    finding_id: int | None
    kind: str
    purpose: str
    deal_id: str | None
    user_id: str | None
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    external_id: str | None
    text: str | None
    # digest: what it sums up; grouped: ref_id is the digest that carries it
    details: dict[str, Any] | None = None
    ref_id: int | None = None
    created_at: datetime
    sent_at: datetime | None


class OutboxPage(BaseModel):
    items: list[OutboxOut]
    total: int


def _out(row: OutboxAction) -> OutboxOut:
    return OutboxOut.model_validate(row, from_attributes=True)


@router.get("/accounts/{account_id}/outbox", response_model=OutboxPage)
async def list_outbox(
    account_id: AccountId,
    status_: Literal["pending", "sending", "sent", "dead", "cancelled", "grouped", "all"] = Query(
        "pending", alias="status"
    ),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=INT32_MAX),
    rt: Runtime = Depends(runtime),
) -> OutboxPage:
    """What crmwatch has written, or will write, into the CRM, with attempts and the last error."""
    async with rt.reads() as s:
        await account_or_404(s, account_id)
        where = [OutboxAction.account_id == account_id]
        if status_ != "all":
            where.append(OutboxAction.status == status_)
        total = await s.scalar(select(func.count()).select_from(OutboxAction).where(*where)) or 0
        rows = await s.scalars(select(OutboxAction).where(*where).order_by(OutboxAction.id).limit(limit).offset(offset))
        return OutboxPage(items=[_out(r) for r in rows], total=total)


@router.post("/outbox/{action_id}/retry", response_model=OutboxOut, responses={409: {}})
async def retry(action_id: RowId, rt: Runtime = Depends(runtime)) -> OutboxOut:
    """Sends a dead (or waiting) action again now."""
    async with rt.sessions() as s, s.begin():
        row = await s.get(OutboxAction, action_id, with_for_update=True)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"outbox action {action_id} not found")
        if row.status in ("sent", "sending"):
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"action {action_id} is already {row.status}; only a dead or waiting action can be retried",
            )
        row.status, row.next_attempt_at, row.last_error = "pending", utcnow(), None
        # A fresh three days from now, so a retried action is not given up on at once.
        row.created_at = utcnow()
    rt.outbox_wakeup.set()
    return _out(row)
