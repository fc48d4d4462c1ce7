"""The demo's weeks of history give every chart of the dashboard something to show."""

from __future__ import annotations

from datetime import timedelta

from app.accounts.models import Account
from app.dashboard import demo_history
from app.reports import service
from app.reports.periods import Period
from tests.app.reports import scenario


async def test_history_fills_every_chart(rt, settings) -> None:
    aid = await scenario.build(rt)
    counts = await demo_history.add(settings.database_url, aid, scenario.NOW, weeks=3)
    assert counts["calls"] > 100 and counts["deals"] > 5 and counts["findings"] > 5
    async with rt.reads() as s:
        account = await s.get(Account, aid)
        period = Period(
            (scenario.NOW - timedelta(days=21)).date(), (scenario.NOW - timedelta(days=1)).date(), "Europe/Moscow"
        )
        trend = await service.trend(s, account, period, service.TEAM)
        funnel = await service.funnel(s, account, "P1", period, service.TEAM, scenario.NOW)
        team = await service.managers(s, account, period, service.TEAM, scenario.NOW)
    busy_days = sum(1 for i in range(len(trend["days"])) if any(m["calls"][i] for m in trend["calls"]))
    assert busy_days >= 10  # three weeks of working days, holidays and weekends empty
    assert sum(trend["findings"]["opened"]) > 0 and sum(trend["findings"]["resolved"]) > 0
    assert funnel["won"] + funnel["lost"] > 0 and funnel["conversion"] is not None
    assert any(st["avg_working_days"] for st in funnel["stages"])
    # Managers differ: the first makes more calls than the last.
    calls = {r["manager_id"]: r["calls"] for r in team["items"]}
    assert calls["101"] > calls["103"] > 0
