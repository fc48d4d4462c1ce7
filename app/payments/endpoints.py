"""Admin API of expected payments: the deal fields that hold them, and the report."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi.encoders import jsonable_encoder

from app.db import utcnow
from app.deps import AccountId, IsoDay, account_or_404, runtime
from app.reports.periods import today
from app.runtime import Runtime
from app.security import require_admin

from . import report, settings
from .settings import PaymentFields, PaymentFieldsOut

router = APIRouter(prefix="/api/accounts", tags=["payments"], dependencies=[Depends(require_admin)])
ID_PATTERN = r"^[0-9A-Za-z_:.\-]{1,64}$"


@router.get("/{account_id}/payments/settings", response_model=PaymentFieldsOut)
async def get_settings(account_id: AccountId, rt: Runtime = Depends(runtime)) -> PaymentFieldsOut:
    """The deal fields that hold the expected payment's date, amount and the "paid" flag."""
    async with rt.reads() as s:
        account = await account_or_404(s, account_id)
        return PaymentFieldsOut(**settings.read(account).model_dump())


@router.put("/{account_id}/payments/settings", response_model=PaymentFieldsOut, responses={422: {}})
async def put_settings(account_id: AccountId, body: PaymentFields, rt: Runtime = Depends(runtime)) -> PaymentFieldsOut:
    """Replaces the payment fields: each an amoCRM custom field id (digits) or a Bitrix24 user field's
    original name (`UF_CRM_…`), null when not used. The mirror keeps these custom fields of deals
    (and no others) from then on, from webhooks and every sync; deals that do not change get their
    values with the next `POST /api/accounts/{id}/sync`."""
    async with rt.sessions() as s, s.begin():
        account = await account_or_404(s, account_id)
        errors = settings.check(account, body)
        if errors:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "; ".join(errors))
        added = settings.write(account, body)
        warnings = (
            [
                "the mirror keeps a newly named field from now on: deals get its value when they change, "
                f"or all at once with POST /api/accounts/{account_id}/sync"
            ]
            if added
            else []
        )
        return PaymentFieldsOut(**body.model_dump(), warnings=warnings)


@router.get("/{account_id}/reports/payments")
async def payments_report(
    account_id: AccountId,
    day: IsoDay | None = Query(None, alias="date", description="the account's local day taken as today"),
    manager_id: str | None = Query(None, pattern=ID_PATTERN),
    limit: int = Query(100, ge=1, le=5000, description="deals listed per manager and bucket (all are counted)"),
    rt: Runtime = Depends(runtime),
) -> dict[str, Any]:
    """Expected payments per manager, with links to the deal cards: `overdue` (the date passed and the
    deal is not won), `today`, `tomorrow`, `next_7_days` (tomorrow to 7 days ahead), and
    `received_today` (won today, or the paid field set today). Each bucket has `count`, `amount` (the
    amount field, else the deal's budget) and `deals`; `totals` for the team. The dates are the
    account's local days."""
    async with rt.reads() as s:
        account = await account_or_404(s, account_id)
        chosen = day or today(utcnow(), account.timezone)
        scope = (manager_id,) if manager_id else None
        return jsonable_encoder(await report.payments(s, account, chosen, scope, limit))
