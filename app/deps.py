"""Request-scoped helpers shared by every router."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated

from fastapi import HTTPException, Path, Request, status
from pydantic import AfterValidator, BeforeValidator
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.runtime import Runtime

# Ids in a path are bounded by the column they are looked up in: a larger number is no row, and
# handed to the database it overflows (PostgreSQL's int4/int8, SQLite's 64-bit integer) into a 500.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
AccountId = Annotated[int, Path(ge=1, le=INT32_MAX, description="the account's id in crmwatch")]
# Rows keyed by a BigInteger (findings, outbox actions, dashboard links).
RowId = Annotated[int, Path(ge=1, le=INT64_MAX)]


def _iso_day(value: object) -> object:
    # pydantic would take "0" for 1970-01-01 (a Unix time); the schema says YYYY-MM-DD, and so do we.
    if isinstance(value, str) and not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        raise ValueError("a date as YYYY-MM-DD")
    return value


# No CRM keeps a day before the epoch, and a report looks days around the one it is given (the day
# before, a week ahead): at the ends of Python's calendar that arithmetic overflows into a 500.
FIRST_DAY = date(1970, 1, 1)
LAST_DAY = date(2999, 12, 31)


def _day_in_range(value: date) -> date:
    if not FIRST_DAY <= value <= LAST_DAY:
        raise ValueError(f"a day from {FIRST_DAY.isoformat()} to {LAST_DAY.isoformat()}")
    return value


IsoDay = Annotated[date, BeforeValidator(_iso_day), AfterValidator(_day_in_range)]


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def account_or_404(s: AsyncSession, account_id: int) -> Account:
    account = await s.get(Account, account_id)
    if account is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"account {account_id} not found")
    return account
