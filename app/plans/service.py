"""Plans: read and replace a month's plan, the activity targets counted back from it, and the pace
(the caller owns the transaction).

Targets. The plan's won deals (or its revenue over the average won deal) are walked back along the
configured milestones, nearest to the win first: proposals = won / (wins per proposal), meetings =
proposals / (proposals per meeting), first contacts = meetings / (meetings per first contact), each
rounded up. A conversion is the later step's count over the earlier step's count in the history
window (the `history_days` before the month begins, so a month's targets do not move while it
runs), per manager; where the manager had fewer than `min_history` of the earlier step, or none of
the later one, the team's conversion applies. Worked example: 3 won at 1 win per 3 proposals is 9
proposals; at 1 proposal per 2 meetings 18 meetings; over 20 working days that is 4.5, about 5, a
week (per_week = target over the month's working days × 5, rounded up).

Pace. The fact to date against the target pro-rated over the month's working time elapsed (the
account's business calendar): expected = target × elapsed share; behind when the fact is below it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.calendar.business import BusinessCalendar
from app.rules import config as rules_config
from app.rules.config import MILESTONES, PlansIn

from . import repository as repo
from .models import Plan
from .schemas import ManagerPlan, PlanIn, PlanOut

# The walk back from the win, nearest step first.
CHAIN = ("won_deals", *reversed(MILESTONES))


async def get(s: AsyncSession, account_id: int, month: str) -> PlanOut:
    """The month's plan; a month nobody planned is an empty plan."""
    rows = await repo.month(s, account_id, month)
    return PlanOut(
        month=month,
        managers={r.manager_id: ManagerPlan(revenue=r.revenue, won_deals=r.won_deals) for r in rows},
    )


async def put(s: AsyncSession, account_id: int, month: str, plan: PlanIn) -> PlanOut:
    """Replaces the month's whole plan: a manager left out has no plan for the month any more."""
    rows = [
        Plan(account_id=account_id, month=month, manager_id=m, revenue=p.revenue, won_deals=p.won_deals)
        for m, p in plan.managers.items()
    ]
    await repo.replace_month(s, account_id, month, rows)
    known = await repo.known_users(s, account_id, plan.managers)
    warnings = [
        f"managers.{m}: the CRM has no user {m!r} that crmwatch knows of; kept as written"
        for m in sorted(set(plan.managers) - known)
    ]
    out = await get(s, account_id, month)
    return out.model_copy(update={"warnings": warnings})


# --- the month in working time ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Month:
    key: str  # YYYY-MM
    first: date
    last: date
    start: datetime  # the local midnight the month begins, in UTC
    end: datetime  # the local midnight after it, exclusive


def month_of(key: str, timezone: str) -> Month:
    year, month = int(key[:4]), int(key[5:7])
    first = date(year, month, 1)
    nxt = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
    tz = ZoneInfo(timezone)

    def midnight(d: date) -> datetime:
        return datetime.combine(d, time(0), tz).astimezone(UTC)

    return Month(key, first, nxt - timedelta(days=1), midnight(first), midnight(nxt))


def current_month(now: datetime, timezone: str) -> str:
    local = now.astimezone(ZoneInfo(timezone))
    return f"{local.year:04d}-{local.month:02d}"


def working_days(cal: BusinessCalendar, m: Month) -> int:
    return sum(1 for i in range((m.last - m.first).days + 1) if cal.is_working_day(m.first + timedelta(days=i)))


def elapsed_share(cal: BusinessCalendar, m: Month, now: datetime) -> float:
    """The share of the month's working time behind `now` (0 before the month, 1 after it)."""
    total = cal.working_seconds(m.start, m.end)
    if total <= 0:
        return 1.0
    return cal.working_seconds(m.start, min(max(now, m.start), m.end)) / total


# --- targets ---------------------------------------------------------------------------------------------


def _up(x: float) -> int:
    # 9.000000001 from floating point is still 9 proposals.
    return math.ceil(x - 1e-9)


@dataclass(frozen=True)
class Conversion:
    rate: float | None  # later step per earlier step
    source: str  # "own" | "team" | "none"
    later: int
    earlier: int


def conversion(own: tuple[int, int], team: tuple[int, int], min_history: int) -> Conversion:
    """`own` and `team` are (later, earlier) counts over the history window."""
    later, earlier = own
    if earlier >= min_history and later > 0:
        return Conversion(later / earlier, "own", later, earlier)
    t_later, t_earlier = team
    if t_earlier > 0 and t_later > 0:
        return Conversion(t_later / t_earlier, "team", t_later, t_earlier)
    return Conversion(None, "none", t_later, t_earlier)


def walk_back(won_target: int | None, steps: list[tuple[str, Conversion]]) -> dict[str, int | None]:
    """Targets per milestone from the won-deals target, each step divided by its conversion (a
    conversion above 1 counts as 1: a step never needs fewer than the one after it)."""
    out: dict[str, int | None] = {}
    target = won_target
    for name, conv in steps:
        target = None if target is None or conv.rate is None else _up(target / min(conv.rate, 1.0))
        out[name] = target
    return out


def per_week(target: int | None, days: int) -> int | None:
    """A month's target per working week (5 working days), rounded up: 18 over 20 days is 5."""
    if target is None or days <= 0:
        return None
    return _up(target * 5 / days)


# --- the report ------------------------------------------------------------------------------------------


def _pace_row(name: str, target: float | None, fact: float, share: float, days: int) -> dict[str, Any]:
    expected = None if target is None else target * share
    behind = expected is not None and fact < expected - 1e-9
    return {
        "milestone": name,
        "target": target,
        "per_week": per_week(int(target), days) if target is not None and name != "revenue" else None,
        "fact": fact,
        "expected": None if expected is None else round(expected, 2),
        "behind": behind,
        "behind_percent": round((expected - fact) / expected * 100, 1) if behind and expected else 0.0,
    }


async def pace(
    s: AsyncSession, account: Account, month: str, now: datetime, managers: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """The month's plan, targets and pace per manager and milestone (the managers with a plan for
    the month; `managers` narrows them to a scope). What the plan report, the dashboard and the
    digest read."""
    doc = await rules_config.load(s, account.id)
    cfg: PlansIn = doc.plans
    cal = doc.business_calendar(account.timezone)
    m = month_of(month, account.timezone)
    days = working_days(cal, m)
    share = elapsed_share(cal, m, now)
    plans = [p for p in await repo.month(s, account.id, month) if managers is None or p.manager_id in managers]
    names = await repo.users(s, account.id)

    hist_start = m.start - timedelta(days=cfg.history_days)
    counted = await repo.milestone_counts(s, account.id, cfg, hist_start, m.start, m.end)
    won = await repo.won(s, account.id, hist_start, m.start, m.end)
    hist = {(mgr, k): n for (half, mgr, k), n in counted.items() if half == 0}
    fact = {(mgr, k): n for (half, mgr, k), n in counted.items() if half == 1}
    hist_won = {mgr: v for (half, mgr), v in won.items() if half == 0}
    fact_won = {mgr: v for (half, mgr), v in won.items() if half == 1}

    configured = [name for name in CHAIN if name == "won_deals" or name in cfg.milestones]

    def counts(manager: str | None) -> dict[str, int]:
        if manager is None:  # the team
            out = {n: sum(v for (_, k), v in hist.items() if k == n) for n in configured}
            out["won_deals"] = sum(n for n, _ in hist_won.values())
            return out
        out = {n: hist.get((manager, n), 0) for n in configured}
        out["won_deals"] = hist_won.get(manager, (0, 0.0))[0]
        return out

    team = counts(None)
    team_revenue = sum(r for _, r in hist_won.values())
    items = []
    for p in plans:
        mine = counts(p.manager_id)
        steps = [
            (earlier, conversion((mine[later], mine[earlier]), (team[later], team[earlier]), cfg.min_history))
            for later, earlier in pairwise(configured)
        ]
        # Revenue only: the won deals it takes at the average won deal (own, else the team's).
        own_won, own_revenue = hist_won.get(p.manager_id, (0, 0.0))
        avg = own_revenue / own_won if own_won >= cfg.min_history and own_revenue > 0 else None
        avg_source = "own" if avg is not None else "team"
        if avg is None and team["won_deals"] and team_revenue > 0:
            avg = team_revenue / team["won_deals"]
        won_target = p.won_deals
        if won_target is None and p.revenue is not None and avg:
            won_target = _up(p.revenue / avg)
        targets = {"won_deals": won_target, **walk_back(won_target, steps)}
        done_won, done_revenue = fact_won.get(p.manager_id, (0, 0.0))
        rows = []
        if p.revenue is not None:
            rows.append(_pace_row("revenue", p.revenue, round(done_revenue, 2), share, days))
        for name in configured:
            done = done_won if name == "won_deals" else fact.get((p.manager_id, name), 0)
            rows.append(_pace_row(name, targets[name], done, share, days))
        items.append(
            {
                "manager_id": p.manager_id,
                "name": names.get(p.manager_id) or p.manager_id,
                "plan": {"revenue": p.revenue, "won_deals": p.won_deals},
                "avg_deal": {"value": round(avg, 2) if avg else None, "source": avg_source if avg else "none"},
                "conversions": [
                    {
                        "from": earlier,
                        "to": later,
                        "rate": None if c.rate is None else round(c.rate, 4),
                        "source": c.source,
                        "later": c.later,
                        "earlier": c.earlier,
                    }
                    for (later, (earlier, c)) in zip(configured, steps, strict=False)
                ],
                "rows": rows,
                "behind": any(r["behind"] for r in rows),
            }
        )
    items.sort(key=lambda i: (i["name"].lower(), i["manager_id"]))
    return {
        "month": month,
        "timezone": account.timezone,
        "working_days": days,
        "working_days_elapsed": round(share * days, 2),
        "elapsed_share": round(share, 4),
        "history": {"from": hist_start, "to": m.start, "days": cfg.history_days},
        "milestones": configured,
        "managers": items,
    }


__all__ = ["CHAIN", "Conversion", "conversion", "current_month", "get", "pace", "per_week", "put", "walk_back"]
