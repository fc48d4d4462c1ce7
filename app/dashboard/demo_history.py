"""A few weeks of a sales team's history for `crmwatch demo`, so every chart has something to show.

The demo's CRMs start "today"; the dashboard's period charts need the days before it. This writes,
straight into the demo's database, for each manager the mirror knows: calls on every working day,
deals moved through the stages and closed (won or lost), and findings that opened and later
resolved. Everything is deterministic (a fixed seed), and marked as history: the calls come from
the provider `demo_history`, the deals and findings have ids of their own.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import select

from app.accounts.models import Account
from app.calls.models import Call
from app.db import make_engine, make_sessionmaker
from app.findings.models import Finding, FindingEvent
from app.mirror.models import Deal, Stage, StageHistory, User
from app.rules.config import load as load_rules

RULES = ("overdue_task", "deal_without_task", "stuck_stage", "empty_comment", "task_rescheduled_without_contact")


async def add(database_url: str, account_id: int, now: datetime, *, weeks: int = 4, seed: int = 12) -> dict[str, int]:
    """Writes the history; returns how many rows of each kind."""
    rnd = random.Random(seed + account_id)
    engine = make_engine(database_url)
    counts = {"calls": 0, "deals": 0, "stage_moves": 0, "findings": 0}
    try:
        async with make_sessionmaker(engine)() as s, s.begin():
            account = await s.get(Account, account_id)
            if account is None:
                return counts
            calendar = (await load_rules(s, account_id)).business_calendar(account.timezone)
            managers = [
                u.id
                for u in await s.scalars(select(User).where(User.account_id == account_id, User.is_active.is_(True)))
            ]
            stages = list(
                await s.scalars(
                    select(Stage).where(Stage.account_id == account_id).order_by(Stage.pipeline_id, Stage.sort)
                )
            )
            if not managers or not stages:
                return counts
            pipeline = stages[0].pipeline_id
            flow = [st for st in stages if st.pipeline_id == pipeline and st.kind == "open"]
            won = next((st for st in stages if st.pipeline_id == pipeline and st.kind == "won"), None)
            lost = next((st for st in stages if st.pipeline_id == pipeline and st.kind == "lost"), None)
            day = (now - timedelta(days=7 * weeks)).date()
            n = 0
            findings: list[Finding] = []
            while day < now.date():
                if calendar.is_working_day(day):
                    start = datetime.combine(day, calendar.config.work_start, ZoneInfo(account.timezone)).astimezone(
                        UTC
                    )
                    for m_index, manager in enumerate(managers):
                        # Managers differ on purpose: the first works the phone, the last hardly does.
                        pace = max(2, 18 - 5 * m_index)
                        for _ in range(rnd.randint(pace // 2, pace)):
                            n += 1
                            at = start + timedelta(seconds=rnd.randint(0, calendar.day_seconds - 60))
                            direction = rnd.choice(("in", "out", "out"))
                            answered = rnd.random() > (0.25 if direction == "in" else 0.35)
                            talk = rnd.choice((15, 35, 60, 95, 180, 320)) if answered else 0
                            s.add(
                                Call(
                                    account_id=account_id,
                                    provider="demo_history",
                                    provider_call_id=f"h{account_id}-{n}",
                                    direction=direction,
                                    client_number=f"+7916{rnd.randint(1000000, 9999999)}",
                                    manager_id=manager,
                                    started_at=at,
                                    ended_at=at + timedelta(seconds=talk + 10),
                                    talk_seconds=talk,
                                    status="answered" if answered else "missed",
                                    is_final=True,
                                )
                            )
                            counts["calls"] += 1
                        if flow and won and lost and rnd.random() < 0.6:
                            counts["stage_moves"] += _deal(
                                s, rnd, account_id, pipeline, flow, won, lost, manager, start, calendar.day_seconds, n
                            )
                            counts["deals"] += 1
                        if rnd.random() < 0.5:
                            findings.append(_finding(rnd, account_id, manager, start, n))
                day += timedelta(days=1)
            s.add_all(findings)
            await s.flush()
            for f in findings:
                s.add_all(
                    [
                        FindingEvent(
                            finding_id=f.id, at=f.opened_at, from_status=None, to_status="open", actor="sweep"
                        ),
                        FindingEvent(
                            finding_id=f.id, at=f.resolved_at, from_status="open", to_status="resolved", actor="sweep"
                        ),
                    ]
                )
            counts["findings"] = len(findings)
    finally:
        await engine.dispose()
    return counts


def _deal(
    s: Any,
    rnd: random.Random,
    account_id: int,
    pipeline: str,
    flow: list[Stage],
    won: Stage,
    lost: Stage,
    manager: str,
    start: datetime,
    day_seconds: int,
    n: int,
) -> int:
    """A deal that went through some of the stages, then was won or lost; returns its stage moves."""
    deal_id = f"9{account_id:02d}{n:06d}"
    at = start + timedelta(seconds=rnd.randint(0, day_seconds // 2))
    created = at
    moves = 0
    final = won if rnd.random() < 0.45 else lost
    for stage in flow[: rnd.randint(1, len(flow))]:
        s.add(
            StageHistory(
                account_id=account_id,
                deal_id=deal_id,
                pipeline_id=pipeline,
                stage_id=stage.id,
                entered_at=at,
                by_user_id=manager,
            )
        )
        moves += 1
        at += timedelta(hours=rnd.randint(2, 40))
    s.add(
        StageHistory(
            account_id=account_id,
            deal_id=deal_id,
            pipeline_id=pipeline,
            stage_id=final.id,
            entered_at=at,
            by_user_id=manager,
        )
    )
    s.add(
        Deal(
            account_id=account_id,
            id=deal_id,
            name=f"Сделка из истории №{n}",
            pipeline_id=pipeline,
            stage_id=final.id,
            stage_entered_at=at,
            stage_entered_source="event",
            price=float(rnd.choice((45000, 80000, 120000, 260000, 410000))),
            responsible_user_id=manager,
            is_closed=True,
            closed_at=at,
            created_at=created,
            source_updated_at=at,
        )
    )
    return moves + 1


def _finding(rnd: random.Random, account_id: int, manager: str, start: datetime, n: int) -> Finding:
    """A finding that opened on that day and resolved within a few days (its history follows)."""
    opened = start + timedelta(hours=rnd.randint(0, 8))
    return Finding(
        account_id=account_id,
        rule=rnd.choice(RULES),
        rule_version=1,
        entity_type="deal",
        entity_id=f"history-{n}",
        deal_id=None,
        manager_id=manager,
        severity="warning",
        status="resolved",
        started_at=opened,
        opened_at=opened,
        resolved_at=opened + timedelta(hours=rnd.randint(1, 60)),
        times_opened=1,
    )


async def dashboard_url(http: httpx.AsyncClient, account_id: int) -> str:
    """A read-only link to the team's dashboard, as an operator would create one."""
    resp = await http.post(f"/api/accounts/{account_id}/dashboard/links", json={"expires_in_days": 30, "label": "demo"})
    resp.raise_for_status()
    return resp.json()["url"]
