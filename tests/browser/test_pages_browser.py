"""The pages a person opens at crmwatch's own address, in a real Chromium with no way out to the
internet: every request to a host other than 127.0.0.1 is refused and recorded."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from tests.browser.test_widget_browser import ARTIFACTS, WAIT_MS, browser, chromium_path, free_port, serving

__all__ = ["browser", "chromium_path"]  # the fixtures, re-used from the widget's browser tests


async def offline_page(browser: Any) -> tuple[Any, list[str]]:
    page = await browser.new_page(viewport={"width": 1100, "height": 900})
    outside: list[str] = []

    async def only_loopback(route: Any) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            await route.continue_()
        else:
            outside.append(route.request.url)
            await route.abort()

    await page.route("**/*", only_loopback)
    return page, outside


async def test_docs_render_offline(app, browser, db_url):
    ARTIFACTS.mkdir(exist_ok=True)
    async with serving(app, free_port()) as base:
        page, outside = await offline_page(browser)
        await page.goto(f"{base}/docs")
        # Swagger UI drew the API: an operation block per endpoint, the title from openapi.json.
        await page.locator(".opblock").first.wait_for(timeout=WAIT_MS)
        assert await page.locator(".opblock").count() > 20
        assert "crmwatch" in await page.locator(".info .title").inner_text()
        assert await page.locator(".opblock-summary-path", has_text="/api/accounts/{account_id}/rules").count() >= 2
        await page.screenshot(path=str(ARTIFACTS / "docs-swagger-offline.png"))

        redoc, outside_redoc = await offline_page(browser)
        await redoc.goto(f"{base}/redoc")
        await redoc.locator(".api-content h1", has_text="crmwatch").wait_for(timeout=WAIT_MS)
        await redoc.screenshot(path=str(ARTIFACTS / "docs-redoc-offline.png"))
    assert outside == [] and outside_redoc == []


async def test_landing_page_links_to_docs_health_and_dashboard(app, browser, db_url):
    async with serving(app, free_port()) as base:
        page, outside = await offline_page(browser)
        await page.goto(f"{base}/")
        body = await page.locator("body").inner_text()
        assert "crmwatch" in body and "карточке сделки" in body
        assert "/dashboard/links" in body  # how the head of sales' dashboard is reached
        await page.screenshot(path=str(ARTIFACTS / "landing-ru.png"))
        await page.get_by_role("link", name="Проверка состояния").click()
        assert '"status":"ok"' in (await page.locator("body").inner_text()).replace(" ", "")
        await page.goto(f"{base}/")
        await page.get_by_role("link", name="Документация API (Swagger UI)").click()
        await page.locator(".opblock").first.wait_for(timeout=WAIT_MS)
        await page.goto(f"{base}/?lang=en")
        assert "Health check" in await page.locator("body").inner_text()
    assert outside == []
