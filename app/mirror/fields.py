"""Which custom fields of deals the mirror keeps, and how a deal's kept values change.

An account names the deal fields it needs (today: the expected payment's date and amount, and a
"paid" flag, app/payments) in `Account.deal_fields`, a JSON object of role → the CRM's field id.
The mirror keeps those fields only, in `Deal.custom_fields`:

    {"<field id>": {"value": <JSON scalar as the CRM sent it>, "set_at": "<ISO UTC>"}}

`set_at` is the CRM's modification time of the change that gave the field its current value
(for a backfill, the deal's last modification): what "set today" means for the paid flag.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account


def kept(deal_fields: Mapping[str, Any] | None) -> frozenset[str]:
    """The field ids an account's `deal_fields` names (roles without a field left out)."""
    return frozenset(str(v) for v in (deal_fields or {}).values() if v not in (None, ""))


async def kept_for(s: AsyncSession, account_id: int) -> frozenset[str]:
    return kept(await s.scalar(select(Account.deal_fields).where(Account.id == account_id)))


def stamp(at: datetime) -> str:
    """One text form for every `set_at`, so that comparing the strings compares the instants."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _canonical(value: Any) -> Any:
    """One form of a value for comparing: the two ways in spell one value differently. amoCRM's
    API v4 (the backfill) sends a checkbox as true and a number as a number, its webhooks send "1"
    and "45000"; a value that only changed its spelling has not changed."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, str):
        return value.strip()
    return value


def same_value(a: Any, b: Any) -> bool:
    return a == b or _canonical(a) == _canonical(b)


def merge(
    old: Mapping[str, Any] | None, incoming: Mapping[str, Any] | None, keep: frozenset[str], at: datetime
) -> dict[str, Any] | None:
    """The deal's kept fields after an event. `incoming` None: the event did not say (keep them
    all as they are); else it lists every field that has a value, so a kept field it leaves out
    was cleared. A value that did not change keeps its `set_at`."""
    current = {k: v for k, v in (old or {}).items() if k in keep}
    if incoming is None:
        return current or None
    out: dict[str, Any] = {}
    for field_id in sorted(keep):
        if field_id not in incoming:
            continue
        value = incoming[field_id]
        before = current.get(field_id)
        if isinstance(before, dict) and same_value(before.get("value"), value):
            out[field_id] = before
        else:
            out[field_id] = {"value": value, "set_at": stamp(at)}
    return out or None


__all__ = ["kept", "kept_for", "merge", "same_value", "stamp"]
