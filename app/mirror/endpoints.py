from __future__ import annotations

from fastapi import APIRouter, Depends

from app.db import utcnow
from app.deps import AccountId, account_or_404, runtime
from app.runtime import Runtime
from app.security import require_admin

from . import repository

router = APIRouter(prefix="/api/accounts", tags=["mirror"], dependencies=[Depends(require_admin)])


@router.get("/{account_id}/mirror")
async def mirror_summary(account_id: AccountId, rt: Runtime = Depends(runtime)) -> dict[str, int]:
    """What crmwatch currently knows of the account's CRM: open deals, open and overdue tasks, …"""
    async with rt.reads() as s:
        await account_or_404(s, account_id)
        return await repository.summary(s, account_id, utcnow())
