"""The expected-payments report: per manager, the deals expected to pay today, tomorrow and within
the next 7 days, the money received today, and the payments overdue, each with links to the cards.

Definitions (days are the account's local days; `day` is "today", by default the real one):
- expected on a date: an open deal (not won, lost or deleted) whose date field holds that date;
  `tomorrow` is day + 1, `next_7_days` is day + 1 … day + 7 (tomorrow included), `today` is day;
- overdue: an open deal whose date is before `day` (the date passed, the deal not won);
- received today: a deal won on `day` (closed in a won stage), or one whose paid field got a value
  on `day` (by the CRM's modification time of that change), whatever its stage; once per deal;
- amount: the amount field when it holds a number, else the deal's budget.

The date field's value is read as the CRMs send it: unix seconds (amoCRM), an ISO date or date-time
(Bitrix24; its own date is taken, not shifted), or DD.MM.YYYY. A value that is none of them leaves the
deal out. Only what can match is read from the database: open deals with a date, deals closed on
the day, deals whose paid field changed on the day (a JSON path in the query).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, false, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.mirror.fields import stamp
from app.mirror.models import Deal, Stage, User
from app.mirror.repository import deal_stage
from app.reports.periods import local_midnight
from app.reports.repository import card_url

BUCKETS = ("overdue", "today", "tomorrow", "next_7_days", "received_today")
# Values a "paid" field has when it says "not paid" (a checkbox left off, Bitrix24's "N").
UNSET = {"", "0", "n", "no", "false", "нет", "off"}
_DMY = re.compile(r"^([0-9]{1,2})\.([0-9]{1,2})\.([0-9]{4})")


def parse_day(value: Any, timezone: str) -> date | None:
    """The date a field's value names, in the account's local days."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float) or (isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,12}", value.strip())):
        try:
            return datetime.fromtimestamp(int(float(value)), UTC).astimezone(ZoneInfo(timezone)).date()
        except (ValueError, OverflowError, OSError):
            return None
    text = str(value).strip()
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        pass
    match = _DMY.match(text)
    if match:
        try:
            return date(int(match[3]), int(match[2]), int(match[1]))
        except ValueError:
            return None
    return None


def parse_amount(value: Any) -> float | None:
    """A number from an amount field: 15000, "15000", "15 000,50", Bitrix24's money "15000|RUB"."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    text = str(value).split("|", 1)[0].replace("\u00a0", "").replace(" ", "").replace(",", ".")
    try:
        return float(text)
    except ValueError:
        return None


def is_set(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    return value is not None and str(value).strip().lower() not in UNSET


@dataclass(frozen=True)
class Roles:
    date: str | None
    amount: str | None
    paid: str | None

    @classmethod
    def of(cls, account: Account) -> Roles:
        r = account.deal_fields or {}
        return cls(r.get("payment_date"), r.get("payment_amount"), r.get("paid"))


def _value(fields: dict[str, Any] | None, field_id: str | None) -> Any:
    entry = (fields or {}).get(field_id or "")
    return entry.get("value") if isinstance(entry, dict) else None


def _set_at(fields: dict[str, Any] | None, field_id: str | None) -> datetime | None:
    entry = (fields or {}).get(field_id or "")
    try:
        return datetime.fromisoformat(entry["set_at"]) if isinstance(entry, dict) else None
    except (KeyError, TypeError, ValueError):
        return None


async def _candidates(s: AsyncSession, account: Account, roles: Roles, start: datetime, end: datetime) -> list[Any]:
    maybe = []
    if roles.date:
        maybe.append(and_(Deal.is_closed == false(), Deal.custom_fields[(roles.date, "value")].is_not(None)))
    maybe.append(and_(Deal.closed_at >= start, Deal.closed_at < end))
    if roles.paid:
        set_at = Deal.custom_fields[(roles.paid, "set_at")].as_string()
        maybe.append(and_(set_at >= stamp(start), set_at < stamp(end)))
    stmt = (
        select(
            Deal.id,
            Deal.name,
            Deal.price,
            Deal.responsible_user_id,
            Deal.is_closed,
            Deal.closed_at,
            Deal.custom_fields,
            Stage.kind,
        )
        .outerjoin(Stage, deal_stage())
        .where(Deal.account_id == account.id, Deal.is_deleted == false(), or_(*maybe))
    )
    return list(await s.execute(stmt))


def _slot() -> dict[str, Any]:
    return {"count": 0, "amount": 0.0, "deals": []}


async def payments(
    s: AsyncSession,
    account: Account,
    day: date,
    managers: tuple[str, ...] | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    """The report for `day`; `managers` narrows it to a scope (the dashboard's viewer). Each bucket
    counts and sums every deal, and lists the first `limit` (the largest amounts first)."""
    tz = account.timezone
    roles = Roles.of(account)
    start, end = local_midnight(day, tz), local_midnight(day + timedelta(days=1), tz)
    rows = await _candidates(s, account, roles, start, end)
    names = dict((await s.execute(select(User.id, User.name).where(User.account_id == account.id))).all())
    per: dict[str, dict[str, Any]] = {}
    totals = {b: {"count": 0, "amount": 0.0} for b in BUCKETS}

    def put(bucket: str, row: Any, amount: float, **extra: Any) -> None:
        manager = row.responsible_user_id or ""
        if managers is not None and manager not in managers:
            return
        item = per.setdefault(manager, {b: _slot() for b in BUCKETS})
        slot = item[bucket]
        slot["count"] += 1
        slot["amount"] += amount
        slot["deals"].append(
            {
                "deal_id": row.id,
                "name": row.name,
                "amount": round(amount, 2),
                "url": card_url(account.crm, account.base_url, row.id),
                **extra,
            }
        )
        totals[bucket]["count"] += 1
        totals[bucket]["amount"] += amount

    for row in rows:
        amount = parse_amount(_value(row.custom_fields, roles.amount)) if roles.amount else None
        amount = amount if amount is not None else float(row.price or 0)
        won_today = row.kind == "won" and row.closed_at is not None and start <= row.closed_at < end
        paid_at = _set_at(row.custom_fields, roles.paid) if roles.paid else None
        paid_today = paid_at is not None and start <= paid_at < end and is_set(_value(row.custom_fields, roles.paid))
        if won_today or paid_today:
            how = [r for r, yes in (("won", won_today), ("paid", paid_today)) if yes]
            put("received_today", row, amount, reason=how)
        if row.is_closed or not roles.date:
            continue
        expected = parse_day(_value(row.custom_fields, roles.date), tz)
        if expected is None:
            continue
        delta = (expected - day).days
        if delta < 0:
            put("overdue", row, amount, expected_on=expected, days_overdue=-delta)
        elif delta == 0:
            put("today", row, amount, expected_on=expected)
        elif delta <= 7:
            if delta == 1:
                put("tomorrow", row, amount, expected_on=expected)
            put("next_7_days", row, amount, expected_on=expected)

    items = []
    for manager, buckets in per.items():
        for slot in buckets.values():
            slot["amount"] = round(slot["amount"], 2)
            slot["deals"].sort(key=lambda d: (-d["amount"], d.get("expected_on") or day, d["deal_id"]))
            del slot["deals"][limit:]
        items.append({"manager_id": manager or None, "name": names.get(manager) or manager or None, **buckets})
    items.sort(key=lambda i: ((i["name"] or "").lower(), i["manager_id"] or ""))
    return {
        "date": day,
        "timezone": tz,
        "fields": {"date_field": roles.date, "amount_field": roles.amount, "paid_field": roles.paid},
        "configured": roles.date is not None or roles.paid is not None,
        "items": items,
        "totals": {b: {"count": v["count"], "amount": round(v["amount"], 2)} for b, v in totals.items()},
    }


__all__ = ["BUCKETS", "is_set", "parse_amount", "parse_day", "payments"]
