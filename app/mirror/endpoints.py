from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, status

from app.accounts.models import Account
from app.db import utcnow
from app.deps import runtime
from app.runtime import Runtime
from app.security import require_admin

from . import repository

router = APIRouter(prefix="/api/accounts", tags=["mirror"], dependencies=[Depends(require_admin)])


@router.get("/{account_id}/mirror")
async def mirror_summary(account_id: int, rt: Runtime = Depends(runtime)) -> dict[str, int]:
    """What crmwatch currently knows of the account's CRM: open deals, open and overdue tasks, …"""
    async with rt.reads() as s:
        if await s.get(Account, account_id) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"account {account_id} not found")
        return await repository.summary(s, account_id, utcnow())
