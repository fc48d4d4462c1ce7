"""The reports: the team table, the same figures per day, findings over time, the funnel.

The repository does the counting in SQL; this module puts the grouped rows together per manager,
adds the totals and names everyone from the mirror. A service never commits (it only reads).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.calendar.business import BusinessCalendar
from app.rules import config as rules_config

from . import repository as repo
from .periods import Period, today, working_table

CALL_FIELDS = ("calls", "talk_seconds", "successful_calls", "incoming", "outgoing", "missed")
DAY_FIELDS = (*CALL_FIELDS, "cards_changed")
HYGIENE_FIELDS = ("open_deals", "open_tasks", "overdue_tasks", "deals_without_task")
RESCHEDULED = "task_rescheduled_without_contact"


@dataclass(frozen=True)
class Scope:
    """Who is looking: the whole team (managers None) or only the given managers' rows and deals."""

    managers: tuple[str, ...] | None = None

    def allows(self, manager_id: str | None) -> bool:
        return self.managers is None or manager_id in self.managers


TEAM = Scope()


def _name(people: dict[str, tuple[str | None, bool]], manager_id: str) -> str:
    name = people.get(manager_id, (None, False))[0]
    return name or manager_id


def _calls_vs_cards(row: dict[str, Any]) -> None:
    # Successful calls against cards changed: more calls than cards means talks that left no trace.
    row["calls_not_written"] = max(0, row["successful_calls"] - row["cards_changed"])
    row["calls_vs_cards_flag"] = row["successful_calls"] > row["cards_changed"]
    row["tasks_per_deal"] = round(row["open_tasks"] / row["open_deals"], 2) if row["open_deals"] else None
    row["open_findings_total"] = sum(row["open_findings"].values())
    row["tasks_moved_without_contact"] = row["open_findings"].get(RESCHEDULED, 0)


async def day_rows(s: AsyncSession, account: Account, period: Period, scope: Scope) -> dict[tuple[str, date], dict]:
    """Calls and cards changed per (manager, local day) of the period: days with no activity are absent."""
    out: dict[tuple[str, date], dict[str, int]] = {}

    def slot(manager_id: str, day: Any) -> dict[str, int]:
        return out.setdefault((manager_id, repo.day_key(day)), dict.fromkeys(DAY_FIELDS, 0))

    for r in await repo.call_days(s, account.id, account.timezone, period.start, period.end, scope.managers):
        row = slot(r.manager_id, r.day)
        for f in CALL_FIELDS:
            row[f] = int(getattr(r, f))
    for r in await repo.cards_changed_days(s, account.id, account.timezone, period.start, period.end, scope.managers):
        slot(r.manager_id, r.day)["cards_changed"] = int(r.cards_changed)
    return out


async def period_totals(s: AsyncSession, account: Account, period: Period, scope: Scope) -> dict[str, dict[str, int]]:
    """The same figures per manager over the whole period (the sum of their days): managers with
    no call and no card changed are absent."""
    out: dict[str, dict[str, int]] = {}
    for r in await repo.call_totals(s, account.id, period.start, period.end, scope.managers):
        out[r.manager_id] = {**{f: int(getattr(r, f)) for f in CALL_FIELDS}, "cards_changed": 0}
    for r in await repo.cards_changed_totals(s, account.id, account.timezone, period.start, period.end, scope.managers):
        out.setdefault(r.manager_id, dict.fromkeys(DAY_FIELDS, 0))["cards_changed"] = int(r.cards_changed)
    return out


async def daily(s: AsyncSession, account: Account, period: Period, scope: Scope) -> list[dict[str, Any]]:
    """Per manager per day, named; what `call-stats` and the period table read."""
    people = await repo.users(s, account.id)
    rows = await day_rows(s, account, period, scope)
    return [{"manager_id": m, "name": _name(people, m), "day": d, **v} for (m, d), v in sorted(rows.items())]


async def managers(s: AsyncSession, account: Account, period: Period, scope: Scope, now: datetime) -> dict[str, Any]:
    """One row per manager: the period's telephony and card changes, and the open problems now."""
    people = await repo.users(s, account.id)
    period_rows = await period_totals(s, account, period, scope)
    findings = await repo.open_findings(s, account.id, scope.managers)
    hygiene = await repo.hygiene(s, account.id, now, scope.managers)
    ids = {m for m, (_, active) in people.items() if active and scope.allows(m)}
    ids |= set(period_rows) | {r.manager_id for r in findings} | set(hygiene)
    rows: dict[str, dict[str, Any]] = {
        m: {
            "manager_id": m,
            "name": _name(people, m),
            **dict.fromkeys(DAY_FIELDS, 0),
            **dict.fromkeys(HYGIENE_FIELDS, 0),
            "open_findings": {},
        }
        for m in ids
        if m is not None
    }
    for m, v in period_rows.items():
        rows[m].update(v)
    for r in findings:
        rows[r.manager_id]["open_findings"][r.rule] = int(r.n)
    for m, v in hygiene.items():
        rows[m].update(v)
    # Speed to lead: working minutes from a deal's creation to its first contact, the median over
    # the deals created in the period that have had one (None: no such deal).
    table = working_table(
        await calendar(s, account),
        period.day_from,
        max(period.day_to, today(now, account.timezone)) + timedelta(days=1),
    )

    medians: tuple[dict[str, float], dict[str, float]] = ({}, {})  # per manager, the team's
    for r in await repo.first_contact_medians(
        s, account.id, period.start, period.end, account.timezone, table, scope.managers
    ):
        if r.seconds is not None:
            medians[int(r.team)][r.manager_id] = round(float(r.seconds) / 60, 1)
    first_contact = medians[0]
    for m, row in rows.items():
        row["first_contact_median_minutes"] = first_contact.get(m)
    for row in rows.values():
        _calls_vs_cards(row)
    totals: dict[str, Any] = {**dict.fromkeys(DAY_FIELDS, 0), **dict.fromkeys(HYGIENE_FIELDS, 0), "open_findings": {}}
    for row in rows.values():
        for f in (*DAY_FIELDS, *HYGIENE_FIELDS):
            totals[f] += row[f]
        for rule, n in row["open_findings"].items():
            totals["open_findings"][rule] = totals["open_findings"].get(rule, 0) + n
    _calls_vs_cards(totals)
    totals["first_contact_median_minutes"] = medians[1].get("")
    items = sorted(rows.values(), key=lambda r: (r["name"].lower(), r["manager_id"]))
    return {"from": period.day_from, "to": period.day_to, "timezone": period.timezone, "items": items, "totals": totals}


async def trend(s: AsyncSession, account: Account, period: Period, scope: Scope) -> dict[str, Any]:
    """For the charts: calls and successful calls per manager per day, findings opened, resolved
    (fixed) and expired (past the rule's look-back window, not fixed) per day, and each rule's
    open findings at the end of every day."""
    days = period.days()
    people = await repo.users(s, account.id)
    series: dict[str, dict[str, list[int]]] = {}
    # Only the calls: the charts do not show cards changed.
    for r in await repo.call_days(s, account.id, account.timezone, period.start, period.end, scope.managers):
        entry = series.setdefault(r.manager_id, {"calls": [0] * len(days), "successful_calls": [0] * len(days)})
        i = (repo.day_key(r.day) - period.day_from).days
        entry["calls"][i] = int(r.calls)
        entry["successful_calls"][i] = int(r.successful_calls)
    opened, resolved, expired = [0] * len(days), [0] * len(days), [0] * len(days)
    delta: dict[str, list[int]] = defaultdict(lambda: [0] * len(days))
    for r in await repo.finding_days(s, account.id, account.timezone, period.start, period.end, scope.managers):
        i = (repo.day_key(r.day) - period.day_from).days
        opened[i] += int(r.opened)
        resolved[i] += int(r.resolved)
        expired[i] += int(r.expired)
        delta[r.rule][i] += int(r.opened) - int(r.resolved) - int(r.expired)
    before = await repo.findings_open_before(s, account.id, period.start, scope.managers)
    open_by_rule: dict[str, list[int]] = {}
    for rule in sorted(set(before) | set(delta)):
        level, line = before.get(rule, 0), []
        for change in delta.get(rule, [0] * len(days)):
            level += change
            line.append(level)
        open_by_rule[rule] = line
    return {
        "days": days,
        "calls": [{"manager_id": m, "name": _name(people, m), **v} for m, v in sorted(series.items())],
        "findings": {"opened": opened, "resolved": resolved, "expired": expired},
        "open_by_rule": open_by_rule,
    }


async def deals(
    s: AsyncSession, account: Account, scope: Scope, rule: str | None, manager_id: str | None, limit: int = 500
) -> list[dict[str, Any]]:
    """The deals behind the open findings (drill-down), each with a link to its CRM card."""
    people = await repo.users(s, account.id)
    out: dict[str, dict[str, Any]] = {}
    for r in await repo.finding_deals(s, account.id, scope.managers, rule, manager_id, limit):
        item = out.get(r.deal_id)
        if item is None:
            item = out[r.deal_id] = {
                "deal_id": r.deal_id,
                "name": r.name,
                "price": r.price,
                "stage_id": r.stage_id,
                "stage_name": r.stage_name,
                "manager_id": r.manager_id,
                "manager_name": _name(people, r.manager_id) if r.manager_id else None,
                "rules": [],
                "since": r.opened_at,
                "url": repo.card_url(account.crm, account.base_url, r.deal_id),
            }
        item["rules"].append(r.rule)
    return list(out.values())


async def calendar(s: AsyncSession, account: Account) -> BusinessCalendar:
    doc = await rules_config.load(s, account.id)
    return doc.business_calendar(account.timezone)


def _conversion(won: int, lost: int) -> float | None:
    return round(won / (won + lost), 4) if won + lost else None


def _bottleneck(mine: dict[str, int], team: dict[str, int], order: list[str]) -> str | None:
    """The stage where this manager's share of open deals most exceeds the team's share (on a tie,
    the earlier stage of the pipeline)."""
    total_m, total_t = sum(mine.values()), sum(team.values())
    if not total_m or not total_t:
        return None
    best, best_excess = None, 0.0
    for stage_id in order:
        excess = mine.get(stage_id, 0) / total_m - team.get(stage_id, 0) / total_t
        if excess > best_excess + 1e-12:
            best, best_excess = stage_id, excess
    return best


async def funnel(
    s: AsyncSession, account: Account, pipeline_id: str, period: Period, scope: Scope, now: datetime
) -> dict[str, Any]:
    people = await repo.users(s, account.id)
    stage_rows = await repo.stages(s, account.id, pipeline_id)
    open_stages = [st for st in stage_rows if st.kind == "open"]
    names = {st.id: st.name for st in stage_rows}
    cal = await calendar(s, account)
    day_seconds = cal.day_seconds

    # Open deals now: the team's, for the bottleneck; the scope's, for the table.
    team: dict[str, int] = defaultdict(int)
    per_manager: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    amounts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for r in await repo.open_by_stage(s, account.id, pipeline_id, None):
        team[r.stage_id] += int(r.n)
        if r.manager_id is not None and scope.allows(r.manager_id):
            per_manager[r.manager_id][r.stage_id] += int(r.n)
            amounts[r.manager_id][r.stage_id] += float(r.amount)
        elif scope.managers is None:
            per_manager[""][r.stage_id] += int(r.n)  # deals nobody is responsible for still count
            amounts[""][r.stage_id] += float(r.amount)

    # The working-day table spans every instant the averages measure: the oldest deal's creation
    # to now (a stay that began in the period may last until now).
    first = period.day_from
    oldest = await repo.earliest_created(s, account.id, pipeline_id, period.start, period.end, scope.managers)
    if oldest is not None:
        first = min(first, today(oldest, account.timezone))
    last = max(period.day_to, today(now, account.timezone)) + timedelta(days=1)
    table = working_table(cal, first, last)
    times: dict[str, float | None] = {}
    conversion: dict[str, tuple[int, int]] = {}
    for r in await repo.stage_figures(
        s, account.id, pipeline_id, period.start, period.end, now, account.timezone, table, scope.managers
    ):
        times[r.stage_id] = float(r.seconds) if r.seconds is not None else None
        conversion[r.stage_id] = (int(r.entered or 0), int(r.moved_on or 0))
    whole = await repo.funnel_time(
        s, account.id, pipeline_id, period.start, period.end, account.timezone, table, scope.managers
    )

    stages_out = []
    for st in open_stages:
        entered, moved_on = conversion.get(st.id, (0, 0))
        seconds = times.get(st.id)
        stages_out.append(
            {
                "stage_id": st.id,
                "name": st.name,
                "open_deals": sum(v.get(st.id, 0) for v in per_manager.values()),
                "amount": round(sum(v.get(st.id, 0.0) for v in amounts.values()), 2),
                "avg_working_days": round(seconds / day_seconds, 2) if seconds is not None else None,
                "entered": entered,
                "moved_on": moved_on,
                "stage_conversion": round(moved_on / entered, 4) if entered else None,
            }
        )

    closed: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    by_client = {"new": defaultdict(float), "returning": defaultdict(float)}
    for r in await repo.closed(s, account.id, pipeline_id, period.start, period.end, scope.managers):
        key = r.manager_id or ""
        closed[key][r.kind] += int(r.n)
        closed[key][r.kind + "_amount"] += float(r.amount or 0)
        bucket = by_client["returning" if r.is_returning else "new"]
        bucket[r.kind] += int(r.n)
        bucket[r.kind + "_amount"] += float(r.amount or 0)

    def figures(c: dict[str, float]) -> dict[str, Any]:
        won, lost = int(c.get("won", 0)), int(c.get("lost", 0))
        return {
            "won": won,
            "lost": lost,
            "conversion": _conversion(won, lost),
            "won_amount": round(c.get("won_amount", 0.0), 2),
            "avg_deal_size": round(c["won_amount"] / won, 2) if won else None,
        }

    totals: dict[str, float] = defaultdict(float)
    for c in closed.values():
        for k, v in c.items():
            totals[k] += v
    by_manager = []
    for m in sorted({*per_manager, *closed} - {""}, key=lambda m: (_name(people, m).lower(), m)):
        bottleneck = _bottleneck(per_manager.get(m, {}), team, [st.id for st in open_stages])
        by_manager.append(
            {
                "manager_id": m,
                "name": _name(people, m),
                "open_deals": sum(per_manager.get(m, {}).values()),
                "amount": round(sum(amounts.get(m, {}).values()), 2),
                **figures(closed.get(m, {})),
                "bottleneck_stage_id": bottleneck,
                "bottleneck_stage_name": names.get(bottleneck) if bottleneck else None,
            }
        )
    return {
        "pipeline_id": pipeline_id,
        "from": period.day_from,
        "to": period.day_to,
        "stages": stages_out,
        **figures(totals),
        "avg_funnel_working_days": round(whole / day_seconds, 2) if whole is not None else None,
        "by_manager": by_manager,
        "by_client": {k: figures(v) for k, v in by_client.items()},
    }


__all__ = ["TEAM", "Scope", "calendar", "daily", "day_rows", "deals", "funnel", "managers", "period_totals", "trend"]
