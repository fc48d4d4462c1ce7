"""The dashboard's expected-payments section in a real headless Chromium: the sums per bucket and the
table per manager equal the JSON report, a cell opens the deals with links to their cards, in Russian
and English (screenshots in test-artifacts/)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from app.accounts.models import Account
from app.mirror.models import Deal, Pipeline, Stage, User
from tests.browser.test_widget_browser import ARTIFACTS, WAIT_MS, browser, chromium_path, free_port, serving
from tests.conftest import create_account

__all__ = ["browser", "chromium_path"]


async def _seed(rt, aid: int) -> None:
    now = datetime.now(ZoneInfo("Europe/Moscow"))
    today = now.date()
    # "Won today" must fall on today's Moscow date whenever the suite runs, just after midnight too:
    # halfway between the local midnight and now is always both today and in the past.
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    won_today = (midnight + (now - midnight) / 2).astimezone(UTC)

    def on(days: int) -> str:
        return (today + timedelta(days=days)).isoformat()

    def deal(id: str, manager: str, stage: str, price: float, date: str | None, **extra) -> Deal:
        fields = {"700101": {"value": date, "set_at": "2026-01-01T00:00:00+00:00"}} if date else None
        return Deal(
            account_id=aid, id=id, name=f"Заказ {id}", pipeline_id="1", stage_id=stage, price=price,
            responsible_user_id=manager, is_closed=stage == "142", is_deleted=False, custom_fields=fields, **extra,
        )  # fmt: skip

    async with rt.sessions() as s, s.begin():
        (await s.get(Account, aid)).deal_fields = {"payment_date": "700101"}
        s.add(Pipeline(account_id=aid, id="1", name="Продажи"))
        s.add_all(
            [
                Stage(account_id=aid, pipeline_id="1", id="10", name="Счёт", kind="open"),
                Stage(account_id=aid, pipeline_id="1", id="142", name="Успешно", kind="won"),
                User(account_id=aid, id="101", name="Анна Петрова"),
                User(account_id=aid, id="102", name="Борис Смирнов"),
            ]
        )
        s.add_all(
            [
                deal("5001", "101", "10", 120000, on(1)),
                deal("5002", "101", "10", 30000, on(4)),
                deal("5003", "102", "10", 45000, on(-3)),
                deal("5004", "102", "10", 8000, on(-1)),
                deal("5005", "102", "10", 15000, on(0)),
                deal("5006", "101", "142", 70000, on(-10), closed_at=won_today),
            ]
        )


@pytest.mark.parametrize(("lang", "width"), [("ru", 1280), ("en", 768)])
async def test_payments_section(app, client, rt, browser, db_url, lang, width) -> None:
    aid = (await create_account(client))["id"]
    await _seed(rt, aid)
    link = (await client.post(f"/api/accounts/{aid}/dashboard/links", json={})).json()["url"]
    path = link.split("crmwatch.test", 1)[1]
    report = (await client.get(f"/api/accounts/{aid}/reports/payments")).json()
    backend = "postgres" if "postgresql" in db_url else "sqlite"
    ARTIFACTS.mkdir(exist_ok=True)
    async with serving(app, free_port()) as base:
        page = await browser.new_page(viewport={"width": width, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(f"{base}{path}?lang={lang}")
        await page.wait_for_selector("#crmwatch-dashboard[data-loaded]", timeout=WAIT_MS)
        await page.wait_for_selector("#cw-pay-table tbody tr", timeout=WAIT_MS)
        assert await page.inner_text("#cw-pay h2") == ("Ожидаемые оплаты" if lang == "ru" else "Expected payments")
        # The team's tiles: the count of each bucket is the report's.
        counts = await page.eval_on_selector_all(
            "#cw-pay-kpis .cw-kpi",
            "ks => Object.fromEntries(ks.map(k => [k.dataset.key, k.querySelector('small').innerText]))",
        )
        assert counts == {b: str(v["count"]) for b, v in report["totals"].items()}
        assert report["totals"]["overdue"]["count"] == 2 and report["totals"]["received_today"]["count"] == 1
        # The table: a row per manager, a cell per non-empty bucket with its count first.
        cells = await page.eval_on_selector_all(
            "#cw-pay-table tbody td[data-bucket]",
            "tds => tds.map(td => [td.closest('tr').dataset.manager, td.dataset.bucket, td.innerText.split(' · ')[0]])",
        )
        expected = [
            [i["manager_id"], b, str(i[b]["count"])]
            for i in report["items"]
            for b in ("overdue", "today", "tomorrow", "next_7_days", "received_today")
            if i[b]["count"]
        ]
        assert cells == expected
        await page.screenshot(path=str(ARTIFACTS / f"dashboard-payments-{lang}-{width}-{backend}.png"), full_page=True)
        # Boris's overdue payments open with links to the cards, the oldest-largest first.
        await page.click("#cw-pay-table tr[data-manager='102'] td[data-bucket=overdue] button")
        await page.wait_for_selector("#cw-pay-deals tbody tr", timeout=WAIT_MS)
        deals = await page.eval_on_selector_all(
            "#cw-pay-deals tbody tr", "rows => rows.map(r => [r.dataset.deal, r.querySelector('a').href])"
        )
        assert deals == [
            ["5003", "https://demoshop.amocrm.ru/leads/detail/5003"],
            ["5004", "https://demoshop.amocrm.ru/leads/detail/5004"],
        ]
        await page.screenshot(path=str(ARTIFACTS / f"dashboard-payments-drill-{lang}-{width}-{backend}.png"))
        assert errors == []
        await page.close()
