"""The dashboard in a real headless Chromium against crmwatch on a real database: the figures equal
the JSON, sorting, drill-down to the deals and their CRM cards, the XLSX download, the amoCRM
widget's full page and the Bitrix24 app page, at 1280 and 768 px (screenshots in test-artifacts/)."""

from __future__ import annotations

import json

import httpx
import pytest
import respx
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from openpyxl import load_workbook
from sqlalchemy import update

from app.accounts.models import Account
from app.widget.bundle import build_widget
from integrations.amocrm.widget_host import CardHost, create_card_host_app
from tests.app.reports import scenario
from tests.app.widget.test_widget_bitrix24_tab import GOOD_AUTH, MEMBER_ID, PORTAL_USER
from tests.browser.test_widget_browser import ARTIFACTS, WAIT_MS, browser, chromium_path, free_port, serving

__all__ = ["browser", "chromium_path"]  # fixtures shared with the widget's browser tests

WEEK = "from=2026-11-02&to=2026-11-06"
FIGURES = (
    "calls",
    "successful_calls",
    "incoming",
    "outgoing",
    "missed",
    "cards_changed",
    "overdue_tasks",
    "deals_without_task",
    "open_findings_total",
)
SECRET = "integration-secret-0123456789abcdef"
AUDIENCE = "https://crmwatch.example.com"


def _number(text: str) -> int:
    return int("".join(ch for ch in text if ch.isdigit()) or "0")


async def _table(page) -> list[dict[str, str]]:
    return await page.eval_on_selector_all(
        "#cw-team-table tbody tr:not(.cw-total)",
        """rows => rows.map(r => {
        const out = {manager_id: r.getAttribute('data-manager')};
        r.querySelectorAll('td').forEach(td => { out[td.getAttribute('data-key')] = td.innerText; });
        return out; })""",
    )


@pytest.mark.parametrize("width", [1280, 768])
async def test_team_page_figures_sorting_drilldown_export(app, client, rt, browser, db_url, tmp_path, width) -> None:
    aid = await scenario.build(rt)
    link = (await client.post(f"/api/accounts/{aid}/dashboard/links", json={})).json()["url"]
    path = link.split("crmwatch.test", 1)[1]
    expected = (await client.get(f"/api/accounts/{aid}/reports/managers?{WEEK}")).json()
    funnel = (await client.get(f"/api/accounts/{aid}/reports/funnel?{WEEK}&pipeline_id=P1")).json()
    backend = "postgres" if "postgresql" in db_url else "sqlite"
    ARTIFACTS.mkdir(exist_ok=True)
    port = free_port()
    async with serving(app, port) as base:
        page = await browser.new_page(viewport={"width": width, "height": 1000}, accept_downloads=True)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(f"{base}{path}?{WEEK}")
        await page.wait_for_selector("#crmwatch-dashboard[data-loaded]", timeout=WAIT_MS)
        await page.wait_for_selector("#cw-chart-calls .main-svg", timeout=WAIT_MS)

        # Each figure on the page is the JSON's.
        rows = {r["manager_id"]: r for r in await _table(page)}
        assert set(rows) == {i["manager_id"] for i in expected["items"]}
        for item in expected["items"]:
            row = rows[item["manager_id"]]
            assert row["name"] == item["name"]
            for key in FIGURES:
                assert _number(row[key]) == item[key], (item["manager_id"], key, row[key])
        assert "⚠" not in rows["101"]["calls_not_written"]
        flagged = await page.eval_on_selector(
            'tr[data-manager="102"] td[data-key=calls_not_written]', "td => getComputedStyle(td, '::before').content"
        )
        assert "⚠" in flagged  # calls clearly outnumber cards changed
        stages = await page.eval_on_selector_all(
            "#cw-funnel-table tbody tr",
            """rows => rows.map(r => [
            r.getAttribute('data-stage'), r.querySelector('[data-key=open_deals]').innerText,
            r.querySelector('[data-key=avg_working_days]').innerText])""",
        )
        assert [(s, _number(n)) for s, n, _ in stages] == [
            (st["stage_id"], st["open_deals"]) for st in funnel["stages"]
        ]
        assert [d.replace(",", ".") for _, _, d in stages] == [str(st["avg_working_days"]) for st in funnel["stages"]]
        assert await page.inner_text("[data-key=conversion] b") == "50 %"

        # Sorting: by calls, most first; again, least first; by name, alphabetical.
        await page.click("#cw-team-table th[data-key=calls]")
        order = [r["manager_id"] for r in await _table(page)]
        assert order == [i["manager_id"] for i in sorted(expected["items"], key=lambda i: -i["calls"])]
        assert await page.get_attribute("#cw-team-table th[data-key=calls]", "aria-sort") == "descending"
        await page.click("#cw-team-table th[data-key=calls]")
        assert [r["manager_id"] for r in await _table(page)] == order[::-1]
        await page.click("#cw-team-table th[data-key=name]")
        assert [r["name"] for r in await _table(page)] == ["Анна Петрова", "Борис Иванов", "Вера Смирнова"]
        await page.screenshot(path=str(ARTIFACTS / f"dashboard-team-{width}-{backend}.png"), full_page=True)

        # Drill-down: a rule's count opens the deals behind it, each with its CRM card.
        await page.click('#cw-rules-table tr[data-manager="101"] td[data-rule=overdue_task] button')
        await page.wait_for_selector("#cw-deals-table tbody tr", timeout=WAIT_MS)
        deals = await page.eval_on_selector_all(
            "#cw-deals-table tbody tr",
            """rows => rows.map(r => [
            r.getAttribute('data-deal'), r.querySelector('a.cw-crm-link').href])""",
        )
        assert deals == [["D1", "https://demoshop.amocrm.ru/leads/detail/D1"]]
        await page.screenshot(path=str(ARTIFACTS / f"dashboard-drilldown-{width}-{backend}.png"))
        await page.click("#cw-drill button")

        # The export downloads and opens.
        async with page.expect_download() as info:
            await page.click("#cw-export-xlsx")
        download = await info.value
        saved = tmp_path / "export.xlsx"
        await download.save_as(saved)
        sheet = load_workbook(saved).worksheets[0]
        table = list(sheet.iter_rows(values_only=True))
        assert table[0][0] == "Менеджер" and table[-1][0] == "Итого"
        assert {r[1]: r[2] for r in table[1:-1]} == {i["manager_id"]: i["calls"] for i in expected["items"]}
        assert not errors, errors


async def test_link_pages_that_no_longer_work(app, client, rt, browser) -> None:
    aid = await scenario.build(rt)
    made = (await client.post(f"/api/accounts/{aid}/dashboard/links", json={})).json()
    await client.delete(f"/api/accounts/{aid}/dashboard/links/{made['id']}")
    port = free_port()
    async with serving(app, port) as base:
        page = await browser.new_page(viewport={"width": 1280, "height": 600})
        response = await page.goto(base + made["url"].split("crmwatch.test", 1)[1])
        assert response.status == 410
        assert "Ссылка отозвана" in await page.inner_text("[data-crmwatch-refusal=revoked]")
        await page.screenshot(path=str(ARTIFACTS / "dashboard-link-revoked.png"))


async def test_amocrm_widget_full_page(app, client, rt, browser, tmp_path, db_url) -> None:
    host_port, crm_port = free_port(), free_port()
    host_origin, crm_url = f"http://127.0.0.1:{host_port}", f"http://127.0.0.1:{crm_port}"
    aid = await scenario.build(rt, base_url=host_origin)
    async with rt.sessions() as s, s.begin():
        await s.execute(update(Account).where(Account.id == aid).values(external_id="29876543", subdomain="demoshop"))
    assert (
        await client.put(f"/api/accounts/{aid}/widget", json={"client_secret": SECRET, "audience": AUDIENCE})
    ).status_code == 200
    archive = tmp_path / "widget.zip"
    build_widget("amocrm", archive, crm_url)
    host = CardHost(
        widget_zip=archive,
        secret=SECRET,
        base_url=host_origin,
        audience=AUDIENCE,
        account_id=29876543,
        subdomain="demoshop",
        user_id=102,
        crmwatch_url=crm_url,
    )
    backend = "postgres" if "postgresql" in db_url else "sqlite"
    async with serving(app, crm_port), serving(create_card_host_app(host), host_port):
        # A manager (no is_admin): their own row only, in the widget_page location.
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await page.goto(f"{host_origin}/settings/widgets/crmwatch?area=widget_page")
        frame = page.frame_locator("iframe.crmwatch-dashboard-frame")
        await frame.locator("#cw-team-table").wait_for(timeout=WAIT_MS)
        ids = await frame.locator("#cw-team-table tbody tr:not(.cw-total)").evaluate_all(
            "rows => rows.map(r => r.getAttribute('data-manager'))"
        )
        assert ids == ["102"]
        assert "только свои" in await frame.locator(".cw-sub").inner_text()
        await page.screenshot(path=str(ARTIFACTS / f"dashboard-amocrm-manager-{backend}.png"))
        # The account's admin, in advanced_settings: the whole team.
        host.is_admin = True
        admin = await browser.new_page(viewport={"width": 1280, "height": 900})
        await admin.goto(f"{host_origin}/settings/widgets/crmwatch")
        frame = admin.frame_locator("iframe.crmwatch-dashboard-frame")
        await frame.locator("#cw-team-table tbody tr[data-manager='103']").wait_for(timeout=WAIT_MS)
        assert await frame.locator("#cw-team-table tbody tr:not(.cw-total)").count() == 3
        await admin.screenshot(path=str(ARTIFACTS / f"dashboard-amocrm-admin-{backend}.png"))
        # A forged signature: a clear message, no dashboard.
        host.token_mode = "bad_signature"
        forged = await browser.new_page(viewport={"width": 1280, "height": 600})
        await forged.goto(f"{host_origin}/settings/widgets/crmwatch")
        await forged.get_by_text("crmwatch не принял подпись виджета").wait_for(timeout=WAIT_MS)
        assert await forged.locator("iframe").count() == 0


def _app_frame(crm_url: str, form: dict[str, str]) -> str:
    """What Bitrix24 does when the app's menu item is opened: POST the handler into an iframe."""
    inputs = "".join(f'<input type="hidden" name="{k}" value="{v}">' for k, v in form.items())
    return (
        f'<!doctype html><html><body style="margin:0"><form id="f" method="post" target="app" '
        f'action="{crm_url}/dashboard/bitrix24">{inputs}</form>'
        '<iframe name="app" style="width:768px;height:900px;border:0"></iframe>'
        "<script>document.getElementById('f').submit()</script></body></html>"
    )


async def test_bitrix24_app_page(app, client, rt, browser, db_url) -> None:
    portal_port, crm_port = free_port(), free_port()
    portal_origin, crm_url = f"http://127.0.0.1:{portal_port}", f"http://127.0.0.1:{crm_port}"
    aid = await scenario.build(rt, crm="bitrix24", base_url=portal_origin)
    async with rt.sessions() as s, s.begin():
        await s.execute(update(Account).where(Account.id == aid).values(external_id=MEMBER_ID))
    portal = FastAPI()

    @portal.get("/marketplace/app/crmwatch/", response_class=HTMLResponse)
    async def app_page(auth: str) -> HTMLResponse:
        return HTMLResponse(_app_frame(crm_url, {"AUTH_ID": auth, "member_id": MEMBER_ID, "LANG": "ru"}))

    def user_current(request: httpx.Request) -> httpx.Response:
        if f"auth={GOOD_AUTH}" in request.content.decode():
            return httpx.Response(200, json={"result": {**PORTAL_USER, "ID": "101"}})
        return httpx.Response(401, json={"error": "invalid_token"})

    backend = "postgres" if "postgresql" in db_url else "sqlite"
    with respx.mock(using="httpx", assert_all_called=False) as mock:
        mock.post(f"{portal_origin}/rest/user.current.json").mock(side_effect=user_current)
        mock.post(f"{portal_origin}/rest/user.admin.json").mock(return_value=httpx.Response(200, json={"result": True}))
        mock.route().pass_through()
        async with serving(app, crm_port), serving(portal, portal_port):
            page = await browser.new_page(viewport={"width": 800, "height": 950})
            await page.goto(f"{portal_origin}/marketplace/app/crmwatch/?auth={GOOD_AUTH}")
            frame = page.frame_locator("iframe[name=app]")
            await frame.locator("#cw-team-table tbody tr[data-manager='103']").wait_for(timeout=WAIT_MS)
            links = await frame.locator("#cw-rules-table button").count()
            assert links >= 1
            await page.screenshot(path=str(ARTIFACTS / f"dashboard-bitrix24-{backend}.png"), full_page=True)
            forged = await browser.new_page(viewport={"width": 800, "height": 600})
            await forged.goto(f"{portal_origin}/marketplace/app/crmwatch/?auth=forged")
            refusal = forged.frame_locator("iframe[name=app]").locator("[data-crmwatch-refusal=forged]")
            await refusal.wait_for(timeout=WAIT_MS)
    assert json.dumps(PORTAL_USER)
