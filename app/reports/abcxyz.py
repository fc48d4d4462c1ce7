"""ABC/XYZ of clients over a period, the 3×3 matrix (team and per manager), and the movement of
clients between groups since the previous period of equal length.

ABC over the revenue of won deals closed in the period, clients sorted by revenue, largest first:
a client is A when the clients before it hold less than a_share % of the total, B when they hold
less than a_share + b_share %, otherwise C (so the largest client is always A).
XYZ over the client's revenue per local month of the period (months without a purchase count as
0): the coefficient of variation (population standard deviation over the mean) at most x_cv % is
X, at most y_cv % Y, otherwise Z; a client with a single purchase (one won deal) is Z.

The database groups the won deals per (client, month, manager); this module only ranks the
clients. A client's manager is their responsible user in the CRM, else the manager who sold them
the most in the period.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.rules import config as rules_config
from app.rules.config import AbcXyzIn

from . import repository as repo
from .periods import Period
from .service import Scope

GROUPS = tuple(a + x for a in "ABC" for x in "XYZ")


@dataclass
class Client:
    client_id: str
    name: str | None = None
    responsible: str | None = None
    revenue: float = 0.0
    purchases: int = 0
    months: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    sold_by: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    abc: str = "C"
    xyz: str = "Z"
    cv: float | None = None

    @property
    def group(self) -> str:
        return self.abc + self.xyz

    @property
    def manager_id(self) -> str | None:
        if self.responsible:
            return self.responsible
        if not self.sold_by:
            return None
        return min(self.sold_by.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def months_of(day_from: date, day_to: date) -> list[str]:
    """The local months a period touches, 'YYYY-MM'."""
    out, y, m = [], day_from.year, day_from.month
    while (y, m) <= (day_to.year, day_to.month):
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def coefficient_of_variation(values: list[float]) -> float | None:
    """Population standard deviation over the mean, in percent; None when the mean is 0."""
    if not values:
        return None
    mean = sum(values) / len(values)
    if mean <= 0:
        return None
    variance = sum((v - mean) ** 2 for v in values) / len(values)
    return math.sqrt(variance) / mean * 100


def xyz_of(cv: float | None, purchases: int, t: AbcXyzIn) -> str:
    # A tiny tolerance: 10 % computed in floating point must still be "at most 10 %".
    if purchases <= 1 or cv is None:
        return "Z"
    if cv <= t.x_cv + 1e-9:
        return "X"
    if cv <= t.y_cv + 1e-9:
        return "Y"
    return "Z"


def rank(clients: dict[str, Client], months: list[str], t: AbcXyzIn) -> list[Client]:
    """Sets abc, xyz and cv of every client; returns them largest first."""
    ordered = sorted(clients.values(), key=lambda c: (-c.revenue, c.client_id))
    total = sum(c.revenue for c in ordered)
    before = 0.0
    for c in ordered:
        share = before / total * 100 if total > 0 else 100.0
        c.abc = "A" if share < t.a_share - 1e-9 else "B" if share < t.a_share + t.b_share - 1e-9 else "C"
        before += c.revenue
        # One purchase has no regularity to measure: no coefficient, and Z.
        c.cv = coefficient_of_variation([c.months.get(m, 0.0) for m in months]) if c.purchases > 1 else None
        c.xyz = xyz_of(c.cv, c.purchases, t)
    return ordered


def _empty_matrix() -> dict[str, dict[str, float]]:
    return {g: {"clients": 0, "revenue": 0.0} for g in GROUPS}


def _matrix(clients: list[Client]) -> dict[str, dict[str, float]]:
    out = _empty_matrix()
    for c in clients:
        cell = out[c.group]
        cell["clients"] += 1
        cell["revenue"] += c.revenue
    for cell in out.values():
        cell["revenue"] = round(cell["revenue"], 2)
    return out


def previous_period(period: Period) -> Period:
    """The period of equal length that ends the day before this one begins."""
    length = (period.day_to - period.day_from).days + 1
    return Period(period.day_from - timedelta(days=length), period.day_from - timedelta(days=1), period.timezone)


async def report(
    s: AsyncSession,
    account: Account,
    period: Period,
    scope: Scope,
    by: str | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    doc = await rules_config.load(s, account.id)
    t = doc.abcxyz
    by = by or t.clients
    before = previous_period(period)
    people = await repo.users(s, account.id)
    halves: tuple[dict[str, Client], dict[str, Client]] = ({}, {})
    rows = await repo.client_months(s, account.id, account.timezone, before.start, period.start, period.end, by)
    for r in rows:
        c = halves[int(r.half)].get(r.client_id)
        if c is None:
            c = halves[int(r.half)][r.client_id] = Client(r.client_id, r.name, r.responsible_user_id)
        revenue = float(r.revenue or 0)
        c.revenue += revenue
        c.purchases += int(r.purchases)
        c.months[r.month] += revenue
        if r.manager_id is not None:
            c.sold_by[r.manager_id] += revenue
    earlier = rank(halves[0], months_of(before.day_from, before.day_to), t)
    now = rank(halves[1], months_of(period.day_from, period.day_to), t)
    was = {c.client_id: c.group for c in earlier}

    visible = [c for c in now if scope.allows(c.manager_id)]
    visible_before = [c for c in earlier if scope.allows(c.manager_id)]

    def name(manager_id: str | None) -> str | None:
        if manager_id is None:
            return None
        return people.get(manager_id, (None, False))[0] or manager_id

    items = [
        {
            "client_id": c.client_id,
            "name": c.name,
            "revenue": round(c.revenue, 2),
            "abc": c.abc,
            "xyz": c.xyz,
            "group": c.group,
            "purchases": c.purchases,
            "cv": round(c.cv, 2) if c.cv is not None else None,
            "manager_id": c.manager_id,
            "manager_name": name(c.manager_id),
            "previous": was.get(c.client_id),
        }
        for c in visible
    ]
    per_manager: dict[str | None, list[Client]] = defaultdict(list)
    for c in visible:
        per_manager[c.manager_id].append(c)
    movement = [
        {
            "client_id": c.client_id,
            "name": c.name,
            "manager_id": c.manager_id,
            "manager_name": name(c.manager_id),
            "from": was[c.client_id],
            "to": c.group,
            "revenue": round(c.revenue, 2),
        }
        for c in visible
        if c.client_id in was and was[c.client_id] != c.group
    ]
    seen_now = {c.client_id for c in now}
    return {
        "from": period.day_from,
        "to": period.day_to,
        "by": by,
        "thresholds": t.model_dump(exclude={"clients"}),
        "total_revenue": round(sum(c.revenue for c in visible), 2),
        "items_total": len(items),
        "items": items if limit is None else items[:limit],
        "matrix": _matrix(visible),
        "by_manager": [
            {"manager_id": m, "name": name(m), "matrix": _matrix(cs)}
            for m, cs in sorted(per_manager.items(), key=lambda kv: ((name(kv[0]) or "").lower(), kv[0] or ""))
        ],
        "previous": {"from": before.day_from, "to": before.day_to, "matrix": _matrix(visible_before)},
        "movement": movement,
        "new_clients": sum(1 for c in visible if c.client_id not in was),
        "lost_clients": sum(1 for c in visible_before if c.client_id not in seen_now),
    }


__all__ = ["GROUPS", "coefficient_of_variation", "months_of", "previous_period", "rank", "report", "xyz_of"]
