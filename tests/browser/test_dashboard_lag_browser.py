"""The dashboard's account header warns when the mirror is more than a minute behind the CRM
(issue 18), in a real headless Chromium; and says nothing once the inbox has caught up.
Screenshot in test-artifacts/dashboard-lag-<db>.png."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import insert, update

from app.db import utcnow
from app.ingest.models import InboxEvent
from tests.app.reports import scenario
from tests.browser.test_widget_browser import ARTIFACTS, WAIT_MS, browser, chromium_path, free_port, serving

__all__ = ["browser", "chromium_path"]


async def _inbox_row(rt, aid: int, received_ago: timedelta, n: int) -> None:
    at = utcnow() - received_ago
    async with rt.sessions() as s, s.begin():
        await s.execute(
            insert(InboxEvent).values(
                account_id=aid,
                source="amocrm",
                dedup_key=f"lag-{n}",
                payload="leads%5Bupdate%5D%5B0%5D%5Bid%5D=1",
                received_at=at,
                next_attempt_at=at,
                status="pending",
            )
        )


async def test_header_warns_while_the_mirror_is_behind(app, client, rt, browser, db_url) -> None:
    aid = await scenario.build(rt)
    # A mass edit still being applied: the oldest row waiting came in 5 minutes ago.
    await _inbox_row(rt, aid, timedelta(minutes=5), 1)
    await _inbox_row(rt, aid, timedelta(seconds=10), 2)
    path = (
        (await client.post(f"/api/accounts/{aid}/dashboard/links", json={})).json()["url"].split("crmwatch.test", 1)[1]
    )
    lag = (await client.get(f"/api/accounts/{aid}")).json()["inbox"]
    assert lag["pending"] == 2 and 295 <= lag["lag_seconds"] <= 400
    backend = "postgres" if "postgresql" in db_url else "sqlite"
    ARTIFACTS.mkdir(exist_ok=True)
    async with serving(app, free_port()) as base:
        page = await browser.new_page(viewport={"width": 1280, "height": 700})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(base + path)
        await page.wait_for_selector("#cw-lag", timeout=WAIT_MS)
        text = await page.inner_text("#cw-lag")
        assert "Данные отстают от CRM на 5 мин — изменения ещё применяются" in text
        # Right under the account's title, before any figure.
        assert await page.evaluate("document.querySelector('h1').nextElementSibling.nextElementSibling.id") == "cw-lag"
        await page.screenshot(path=str(ARTIFACTS / f"dashboard-lag-{backend}.png"))

        # Caught up (the rows applied): no warning.
        async with rt.sessions() as s, s.begin():
            await s.execute(update(InboxEvent).values(status="done", processed_at=utcnow()))
        assert (await client.get(f"/api/accounts/{aid}")).json()["inbox"] == {
            "pending": 0,
            "oldest_pending_at": None,
            "lag_seconds": 0.0,
        }
        await page.goto(base + path + "?lang=en")
        await page.wait_for_selector("#crmwatch-dashboard[data-loaded]", timeout=WAIT_MS)
        assert await page.query_selector("#cw-lag") is None
        assert not errors, errors
