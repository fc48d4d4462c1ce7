"""Request-scoped helpers shared by every router."""

from __future__ import annotations

from fastapi import HTTPException, Request, status
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.runtime import Runtime


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def account_or_404(s: AsyncSession, account_id: int) -> Account:
    account = await s.get(Account, account_id)
    if account is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"account {account_id} not found")
    return account
