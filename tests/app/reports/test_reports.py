"""Every figure of the reports against the hand-computed week of scenario.py, on both databases."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from openpyxl import load_workbook
from sqlalchemy import select

from app.accounts.models import Account
from app.mirror.models import Deal
from app.reports import service
from app.reports.periods import Period, PeriodError, resolve
from app.runtime import Runtime

from . import scenario
from .scenario import DAY_FROM, DAY_TO, NOW, msk

WEEK = Period(DAY_FROM, DAY_TO, "Europe/Moscow")


async def _account(rt: Runtime, account_id: int) -> Account:
    async with rt.reads() as s:
        return await s.get(Account, account_id)


async def test_team_table_figures(rt: Runtime) -> None:
    aid = await scenario.build(rt)
    account = await _account(rt, aid)
    async with rt.reads() as s:
        report = await service.managers(s, account, WEEK, service.TEAM, NOW)
    rows = {r["manager_id"]: r for r in report["items"]}
    assert [r["name"] for r in report["items"]] == ["Анна Петрова", "Борис Иванов", "Вера Смирнова"]
    anna, boris, vera = rows["101"], rows["102"], rows["103"]
    # The 23:30 Moscow call counts on Monday, the 00:30 Saturday one (Friday in UTC) does not;
    # the backfilled call counts like the others.
    assert {k: anna[k] for k in ("calls", "talk_seconds", "successful_calls", "incoming", "outgoing", "missed")} == {
        "calls": 4,
        "talk_seconds": 135,
        "successful_calls": 2,
        "incoming": 2,
        "outgoing": 2,
        "missed": 1,
    }
    assert anna["cards_changed"] == 9
    assert anna["calls_vs_cards_flag"] is False and anna["calls_not_written"] == 0
    assert anna["open_findings"] == {"overdue_task": 1, "deal_without_task": 1}
    assert (anna["open_deals"], anna["open_tasks"], anna["overdue_tasks"], anna["deals_without_task"]) == (3, 1, 1, 2)
    assert anna["tasks_per_deal"] == 0.33
    # Exactly 40 s is successful; internal and unfinished calls are not calls of the report.
    assert (boris["calls"], boris["talk_seconds"], boris["successful_calls"], boris["outgoing"]) == (1, 40, 1, 1)
    assert boris["cards_changed"] == 0
    assert boris["calls_vs_cards_flag"] is True and boris["calls_not_written"] == 1
    assert boris["open_findings"] == {"stuck_stage": 1}
    assert (boris["open_deals"], boris["deals_without_task"], boris["tasks_per_deal"]) == (1, 0, 1.0)
    # A manager with no calls has a row of zeros.
    assert vera["calls"] == vera["talk_seconds"] == vera["cards_changed"] == vera["open_deals"] == 0
    assert vera["open_findings"] == {} and vera["tasks_per_deal"] is None
    totals = report["totals"]
    assert (totals["calls"], totals["successful_calls"], totals["cards_changed"]) == (5, 3, 9)
    assert totals["open_findings"] == {"overdue_task": 1, "deal_without_task": 1, "stuck_stage": 1}
    assert totals["tasks_per_deal"] == 0.5  # 2 open tasks over 4 open deals


async def test_a_manager_sees_only_their_row(rt: Runtime) -> None:
    aid = await scenario.build(rt)
    account = await _account(rt, aid)
    async with rt.reads() as s:
        report = await service.managers(s, account, WEEK, service.Scope(("102",)), NOW)
        deals = await service.deals(s, account, service.Scope(("102",)), None, None)
    assert [r["manager_id"] for r in report["items"]] == ["102"]
    assert report["totals"]["calls"] == 1
    assert [d["deal_id"] for d in deals] == ["D3"]


async def test_day_boundary_moves_with_the_period(rt: Runtime) -> None:
    aid = await scenario.build(rt)
    account = await _account(rt, aid)
    async with rt.reads() as s:
        saturday = await service.daily(
            s, account, Period(date(2026, 11, 7), date(2026, 11, 7), "Europe/Moscow"), service.TEAM
        )
        week = await service.daily(s, account, WEEK, service.TEAM)
    assert [(r["manager_id"], r["day"], r["calls"], r["talk_seconds"]) for r in saturday] == [
        ("101", date(2026, 11, 7), 1, 100)
    ]
    by_key = {(r["manager_id"], r["day"]): r for r in week}
    assert by_key[("101", date(2026, 11, 2))]["calls"] == 4
    assert by_key[("101", date(2026, 11, 2))]["cards_changed"] == 4
    assert by_key[("101", date(2026, 11, 3))]["cards_changed"] == 3
    assert by_key[("101", date(2026, 11, 5))]["cards_changed"] == 2
    assert by_key[("102", date(2026, 11, 3))]["successful_calls"] == 1


async def test_findings_over_time(rt: Runtime) -> None:
    aid = await scenario.build(rt)
    account = await _account(rt, aid)
    async with rt.reads() as s:
        trend = await service.trend(s, account, WEEK, service.TEAM)
    assert trend["findings"] == {"opened": [2, 1, 0, 0, 0], "resolved": [0, 0, 0, 1, 0], "expired": [0] * 5}
    assert trend["open_by_rule"] == {
        "deal_without_task": [1, 1, 1, 1, 1],
        "empty_comment": [1, 1, 1, 0, 0],
        "overdue_task": [1, 1, 1, 1, 1],
        "stuck_stage": [0, 1, 1, 1, 1],
    }
    calls = {c["manager_id"]: c for c in trend["calls"]}
    assert calls["101"]["calls"] == [4, 0, 0, 0, 0] and calls["101"]["successful_calls"] == [2, 0, 0, 0, 0]
    assert calls["102"]["calls"] == [0, 1, 0, 0, 0]


async def test_funnel(rt: Runtime) -> None:
    aid = await scenario.build(rt)
    account = await _account(rt, aid)
    async with rt.reads() as s:
        funnel = await service.funnel(s, account, "P1", WEEK, service.TEAM, NOW)
    stages = {st["stage_id"]: st for st in funnel["stages"]}
    assert [st["stage_id"] for st in funnel["stages"]] == ["S1", "S2", "S3"]
    assert (stages["S1"]["open_deals"], stages["S1"]["amount"]) == (2, 500)
    assert (stages["S2"]["open_deals"], stages["S2"]["amount"]) == (1, 100)
    assert (stages["S3"]["open_deals"], stages["S3"]["amount"]) == (1, 700)
    # Working days, Wed 4 Nov a holiday: S1 (1.5 + 0.5 + 1.3333 + 2.8889 + 0.3333) / 5; S2 the deal that
    # came back (1 + 0.8333); S3 (0.5 + 1.3333) / 2.
    assert stages["S1"]["avg_working_days"] == 1.31
    assert stages["S2"]["avg_working_days"] == 1.83
    assert stages["S3"]["avg_working_days"] == 0.92
    assert (stages["S1"]["entered"], stages["S1"]["moved_on"], stages["S1"]["stage_conversion"]) == (4, 3, 0.75)
    assert (stages["S2"]["entered"], stages["S2"]["moved_on"], stages["S2"]["stage_conversion"]) == (1, 0, 0.0)
    assert (stages["S3"]["entered"], stages["S3"]["moved_on"], stages["S3"]["stage_conversion"]) == (2, 1, 0.5)
    # The deal won and re-opened is neither won nor closed.
    assert (funnel["won"], funnel["lost"], funnel["conversion"]) == (1, 1, 0.5)
    assert funnel["avg_deal_size"] == 1000
    assert funnel["avg_funnel_working_days"] == 1.94  # (1 + 2.8889) / 2
    managers = {m["manager_id"]: m for m in funnel["by_manager"]}
    assert (managers["101"]["open_deals"], managers["101"]["won"], managers["101"]["conversion"]) == (3, 1, 1.0)
    assert managers["101"]["bottleneck_stage_id"] == "S2"  # S2 and S3 tie at +1/12; the earlier stage
    assert (managers["102"]["lost"], managers["102"]["conversion"], managers["102"]["avg_deal_size"]) == (1, 0.0, None)
    assert managers["102"]["bottleneck_stage_name"] == "Новая"
    assert funnel["by_client"]["new"]["won"] == 1 and funnel["by_client"]["new"]["lost"] == 0
    assert funnel["by_client"]["returning"]["lost"] == 1 and funnel["by_client"]["returning"]["conversion"] == 0.0


async def test_funnel_of_one_manager_and_an_empty_period(rt: Runtime) -> None:
    aid = await scenario.build(rt)
    account = await _account(rt, aid)
    async with rt.reads() as s:
        mine = await service.funnel(s, account, "P1", WEEK, service.Scope(("101",)), NOW)
        empty = await service.funnel(
            s, account, "P1", Period(date(2026, 9, 1), date(2026, 9, 2), "Europe/Moscow"), service.TEAM, NOW
        )
    assert [st["open_deals"] for st in mine["stages"]] == [1, 1, 1]
    assert (mine["won"], mine["lost"], mine["conversion"]) == (1, 0, 1.0)
    assert [m["manager_id"] for m in mine["by_manager"]] == ["101"]
    assert (empty["won"], empty["lost"], empty["conversion"], empty["avg_deal_size"]) == (0, 0, None, None)
    assert all(st["avg_working_days"] is None for st in empty["stages"])


async def test_funnel_time_of_a_deal_created_decades_ago(rt: Runtime) -> None:
    """The working-time table spans the oldest deal closed in the period to today: thirty years of
    days (four query parameters a day overflowed asyncpg's 32,767) now travel as one parameter, and
    the SQL's working time agrees with the business calendar's."""
    aid = await scenario.build(rt)
    async with rt.sessions() as s, s.begin():
        closed = list(
            await s.scalars(
                select(Deal).where(
                    Deal.account_id == aid,
                    Deal.pipeline_id == "P1",
                    Deal.is_closed.is_(True),
                    Deal.closed_at >= WEEK.start,
                    Deal.closed_at < WEEK.end,
                )
            )
        )
        assert len(closed) == 2
        closed[0].created_at = datetime(1995, 3, 1, 9, tzinfo=UTC)
        spans = [(d.created_at, d.closed_at) for d in closed]
    account = await _account(rt, aid)
    async with rt.reads() as s:
        funnel = await service.funnel(s, account, "P1", WEEK, service.TEAM, NOW)
        cal = await service.calendar(s, account)
    expected = sum(cal.working_seconds(a, b) for a, b in spans) / len(spans) / cal.day_seconds
    assert expected > 3000  # half of some 7,900 working days since 1995
    assert funnel["avg_funnel_working_days"] == round(expected, 2)
    # The stage figures do not move: they read the period's stays only.
    assert {st["stage_id"]: st["avg_working_days"] for st in funnel["stages"]} == {"S1": 1.31, "S2": 1.83, "S3": 0.92}


async def test_holiday_changes_working_days(rt: Runtime, client: object) -> None:
    """With Wed 4 Nov made a working day (extra_workdays), D1's S2 stay grows by one day."""
    aid = await scenario.build(rt)
    resp = await client.put(f"/api/accounts/{aid}/rules", json={"calendar": {"extra_workdays": ["2026-11-04"]}})
    assert resp.status_code == 200, resp.text
    account = await _account(rt, aid)
    async with rt.reads() as s:
        funnel = await service.funnel(s, account, "P1", WEEK, service.TEAM, NOW)
    assert {st["stage_id"]: st["avg_working_days"] for st in funnel["stages"]}["S2"] == 2.83


def test_period_presets() -> None:
    now = msk(11, 6, 12)  # a Friday
    assert resolve("Europe/Moscow", now, "this_week") == Period(date(2026, 11, 2), date(2026, 11, 6), "Europe/Moscow")
    assert resolve("Europe/Moscow", now, "last_week") == Period(date(2026, 10, 26), date(2026, 11, 1), "Europe/Moscow")
    assert resolve("Europe/Moscow", now, "last_month") == Period(date(2026, 10, 1), date(2026, 10, 31), "Europe/Moscow")
    # 22:00 UTC on Friday is already Saturday in Moscow.
    assert resolve("Europe/Moscow", msk(11, 7, 1), "today").day_from == date(2026, 11, 7)
    with pytest.raises(PeriodError):
        resolve("Europe/Moscow", now, None, date(2026, 11, 6), date(2026, 11, 1))
    with pytest.raises(PeriodError):
        resolve("Europe/Moscow", now, "this_week", date(2026, 11, 6), date(2026, 11, 6))


async def test_managers_endpoint_contract_and_exports(rt: Runtime, client: object) -> None:
    aid = await scenario.build(rt)
    resp = await client.get(f"/api/accounts/{aid}/reports/managers", params={"from": "2026-11-02", "to": "2026-11-06"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    anna = next(i for i in body["items"] if i["manager_id"] == "101")
    assert {
        "manager_id",
        "name",
        "calls",
        "talk_seconds",
        "successful_calls",
        "incoming",
        "outgoing",
        "missed",
        "cards_changed",
        "open_findings",
    } <= set(anna)
    assert anna["calls"] == 4 and body["totals"]["calls"] == 5
    csv = await client.get(
        f"/api/accounts/{aid}/reports/managers", params={"from": "2026-11-02", "to": "2026-11-06", "format": "csv"}
    )
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    lines = csv.content.decode("utf-8-sig").splitlines()
    assert lines[0].startswith("Менеджер,ID в CRM,Звонки")
    assert lines[1].startswith("Анна Петрова,101,4,135,2,2,2,1,9")
    assert lines[-1].startswith("Итого,,5,175,3")
    xlsx = await client.get(
        f"/api/accounts/{aid}/reports/managers",
        params={"from": "2026-11-02", "to": "2026-11-06", "format": "xlsx", "lang": "en"},
    )
    assert xlsx.status_code == 200
    import io

    book = load_workbook(io.BytesIO(xlsx.content))
    assert book.sheetnames == ["Managers", "Per day"]
    rows = list(book["Managers"].iter_rows(values_only=True))
    assert rows[0][:3] == ("Manager", "CRM id", "Calls")
    assert rows[1][:4] == ("Анна Петрова", "101", 4, 135)
    assert rows[-1][0] == "Total"
    per_day = list(book["Per day"].iter_rows(values_only=True))
    assert ("2026-11-02", "Анна Петрова", "101", 4) in [(str(r[0])[:10], r[1], r[2], r[3]) for r in per_day[1:]]


async def test_fresh_account_and_bad_input(client: object) -> None:
    resp = await client.post(
        "/api/accounts",
        json={"name": "Пусто", "crm": "amocrm", "base_url": "https://demoshop.amocrm.ru", "access_token": "x"},
    )
    assert resp.status_code == 201, resp.text
    aid = resp.json()["id"]
    empty = await client.get(f"/api/accounts/{aid}/reports/managers", params={"from": "2026-11-02", "to": "2026-11-06"})
    assert empty.status_code == 200 and empty.json()["items"] == []
    funnel = await client.get(f"/api/accounts/{aid}/reports/funnel", params={"pipeline_id": "1"})
    assert funnel.status_code == 200
    assert funnel.json()["stages"] == [] and funnel.json()["conversion"] is None
    for params in (
        {"from": "2026-11-06", "to": "2026-11-01"},
        {"from": "2026-11-06"},
        {"from": "yesterday"},
        {"from": "2024-01-01", "to": "2026-01-01"},
        {"format": "pdf"},
        {"period": "forever"},
    ):
        bad = await client.get(f"/api/accounts/{aid}/reports/managers", params=params)
        assert bad.status_code == 422, (params, bad.text)
    assert (await client.get(f"/api/accounts/{aid}/reports/deals", params={"rule": "nope"})).status_code == 422
    assert (await client.get("/api/accounts/9999/reports/managers")).status_code == 404
    assert (await client.get(f"/api/accounts/{aid}/reports/managers", headers={"Authorization": ""})).status_code == 401


async def test_call_stats_counts_backfilled_calls_and_names_managers(rt: Runtime, client: object) -> None:
    """Issue 15: call-stats reads the calls themselves (the report's query), not a table that only
    live calls refresh, and names each manager."""
    aid = await scenario.build(rt)
    resp = await client.get(f"/api/accounts/{aid}/call-stats", params={"from": "2026-11-02", "to": "2026-11-06"})
    assert resp.status_code == 200, resp.text
    rows = {(r["manager_id"], r["day"]): r for r in resp.json()}
    monday = rows[("101", "2026-11-02")]
    assert monday["name"] == "Анна Петрова"
    # Three live calls and the backfilled one at 23:30.
    assert (monday["calls"], monday["talk_seconds"], monday["successful"], monday["cards_changed"]) == (4, 135, 2, 4)
    assert rows[("102", "2026-11-03")]["name"] == "Борис Иванов"
    only = await client.get(
        f"/api/accounts/{aid}/call-stats", params={"from": "2026-11-02", "to": "2026-11-06", "manager_id": "102"}
    )
    assert {r["manager_id"] for r in only.json()} == {"102"}
