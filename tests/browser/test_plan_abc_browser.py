"""The dashboard's plan-and-pace and ABC/XYZ sections in a real headless Chromium: the figures equal
the JSON reports, the manager picker narrows the matrix, the page works in Russian and English
(screenshots in test-artifacts/)."""

from __future__ import annotations

import pytest

from tests.app.plans import test_pace
from tests.app.reports import test_abcxyz
from tests.browser.test_widget_browser import ARTIFACTS, WAIT_MS, browser, chromium_path, free_port, serving

__all__ = ["browser", "chromium_path"]

PERIOD = "from=2026-08-01&to=2026-10-31"


def _number(text: str, lang: str) -> float | None:
    # ru-RU: "500 000,5"; en-US: "500,000.5".
    text = text.replace(",", ".") if lang == "ru" else text.replace(",", "")
    digits = "".join(ch for ch in text if ch.isdigit() or ch == ".")
    return float(digits) if digits else None


@pytest.mark.parametrize(("lang", "width"), [("ru", 1280), ("en", 768)])
async def test_plan_and_abc_sections(app, client, rt, browser, db_url, lang, width) -> None:
    aid = await test_pace.build(rt)  # the plan, milestones and history of November 2026
    await test_abcxyz.build(rt, aid)  # the clients of August - October 2026
    link = (await client.post(f"/api/accounts/{aid}/dashboard/links", json={})).json()["url"]
    path = link.split("crmwatch.test", 1)[1]
    plan = (await client.get(f"/api/accounts/{aid}/reports/plan?month=2026-11")).json()
    abc = (await client.get(f"/api/accounts/{aid}/reports/abcxyz?{PERIOD}")).json()
    backend = "postgres" if "postgresql" in db_url else "sqlite"
    ARTIFACTS.mkdir(exist_ok=True)
    async with serving(app, free_port()) as base:
        page = await browser.new_page(viewport={"width": width, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(f"{base}{path}?{PERIOD}&month=2026-11&lang={lang}")
        await page.wait_for_selector("#crmwatch-dashboard[data-loaded]", timeout=WAIT_MS)
        await page.wait_for_selector("#cw-plan-table tbody tr", timeout=WAIT_MS)

        # Plan and pace: each manager's row per milestone is the report's.
        rows = await page.eval_on_selector_all(
            "#cw-plan-table tbody tr",
            """rows => rows.map(r => [r.getAttribute('data-manager'), r.getAttribute('data-milestone'),
                r.querySelector('[data-key=target]').innerText, r.querySelector('[data-key=fact]').innerText,
                r.querySelector('[data-key=behind]').innerText])""",
        )
        expected = [
            (m["manager_id"], r["milestone"], r["target"], r["fact"], r["behind"])
            for m in plan["managers"]
            for r in m["rows"]
        ]
        assert [(m, k, _number(t, lang), _number(f, lang)) for m, k, t, f, _ in rows] == [
            (m, k, None if t is None else float(t), float(f)) for m, k, t, f, _ in expected
        ]
        assert [b.startswith("−") for *_, b in rows] == [behind for *_, behind in expected]
        assert {m for m, *_ in rows} == {"101", "102", "103"}

        # ABC/XYZ: the matrix's cells are the report's; the manager picker narrows them.
        async def cells() -> dict[str, float]:
            return await page.eval_on_selector_all(
                "#cw-abc-table td[data-cell]",
                "tds => Object.fromEntries(tds.map(td => [td.getAttribute('data-cell'), "
                "parseInt(td.querySelectorAll('div')[0].innerText.split(':')[1])]))",
            )

        assert await cells() == {g: v["clients"] for g, v in abc["matrix"].items()}
        moved = await page.eval_on_selector_all(
            "#cw-movement-table tbody tr", "rows => rows.map(r => r.getAttribute('data-client'))"
        )
        assert moved == [m["client_id"] for m in abc["movement"]]
        title = "План и темп" if lang == "ru" else "Plan and pace"
        assert await page.inner_text("#cw-plan h2") == title
        await page.screenshot(path=str(ARTIFACTS / f"dashboard-plan-abc-{lang}-{width}-{backend}.png"), full_page=True)

        await page.select_option("#cw-abc-manager", "101")
        mine = next(m for m in abc["by_manager"] if m["manager_id"] == "101")
        assert await cells() == {g: v["clients"] for g, v in mine["matrix"].items()}
        assert not errors, errors
