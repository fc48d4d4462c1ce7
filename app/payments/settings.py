"""Which deal fields hold the expected payment: its date, optionally its amount and a "paid" flag.

Stored on the account as `deal_fields` (role → the CRM's field id), which is also what tells the
mirror to keep those custom fields of deals (app/mirror/fields.py). A field id is an amoCRM custom
field's numeric id, or a Bitrix24 user field's original name, `UF_CRM_…`.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.accounts.models import Account

# role in Account.deal_fields → the schema's name for it
ROLES = {"payment_date": "date_field", "payment_amount": "amount_field", "paid": "paid_field"}
FIELD_PATTERNS = {
    "amocrm": (re.compile(r"^[0-9]{1,20}$"), "an amoCRM custom field id (digits, e.g. 512345)"),
    "bitrix24": (
        re.compile(r"^UF_CRM_[0-9A-Z_]{1,50}$"),
        "a Bitrix24 user field's original name (UF_CRM_…, e.g. UF_CRM_1721244707107)",
    ),
}


class PaymentFields(BaseModel):
    """Each null when not used; a PUT replaces all three."""

    model_config = ConfigDict(extra="forbid")
    date_field: str | None = Field(
        None, max_length=64, description="the deal field with the expected payment date; null: no expected payments"
    )
    amount_field: str | None = Field(
        None, max_length=64, description="the expected amount; null: the deal's budget (price)"
    )
    paid_field: str | None = Field(
        None,
        max_length=64,
        description="set (a ticked flag, a date, any value) when the money came: received today is a deal won "
        "today or one whose paid field was set today",
    )

    @model_validator(mode="after")
    def _distinct(self) -> PaymentFields:
        named = [v for v in (self.date_field, self.amount_field, self.paid_field) if v is not None]
        if len(named) != len(set(named)):
            raise ValueError("date_field, amount_field and paid_field must be different fields")
        return self


class PaymentFieldsOut(PaymentFields):
    warnings: list[str] = Field(default_factory=list)


def check(account: Account, fields: PaymentFields) -> list[str]:
    """What is wrong with the fields for this account's CRM (empty when nothing)."""
    pattern, what = FIELD_PATTERNS.get(account.crm, FIELD_PATTERNS["amocrm"])
    errors = []
    for name in ("date_field", "amount_field", "paid_field"):
        value = getattr(fields, name)
        if value is not None and not pattern.match(value):
            errors.append(f"{name}: {value!r} is not {what}")
    return errors


def read(account: Account) -> PaymentFields:
    roles = account.deal_fields or {}
    return PaymentFields(**{name: roles.get(role) for role, name in ROLES.items()})


def write(account: Account, fields: PaymentFields) -> bool:
    """Stores the fields on the account; True when the set of fields changed (the mirror then
    holds no values of a newly named one until its deals change or are read again)."""
    before = set((account.deal_fields or {}).values()) - {None}
    roles: dict[str, Any] = {role: getattr(fields, name) for role, name in ROLES.items()}
    roles = {k: v for k, v in roles.items() if v is not None}
    account.deal_fields = roles or None
    return set(roles.values()) - before != set()


__all__ = ["FIELD_PATTERNS", "ROLES", "PaymentFields", "PaymentFieldsOut", "check", "read", "write"]
