"""The widget and the deal tab in a real headless Chromium, against a running crmwatch.

crmwatch is served by uvicorn on a free port (real database); a stand-in for the amoCRM card
on another port loads the real script.js from the built archive, so CORS, the disposable
tokens and the SDK callbacks all run as in the CRM. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
import uvicorn
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from sqlalchemy import update

from app.accounts.models import Account
from app.findings.models import Finding
from app.widget.bundle import build_widget
from app.widget.service import snooze_labels
from integrations.amocrm.widget_host import CardHost, create_card_host_app
from tests.app.widget.test_widget_bitrix24_tab import GOOD_AUTH, MEMBER_ID, PORTAL_USER, bitrix_account, placement_form
from tests.app.widget.widget_support import (
    AMO_ACCOUNT_ID,
    AUDIENCE,
    MANAGER,
    SECRET,
    SUBDOMAIN,
    deal_with_findings,
    widget_account,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
WAIT_MS = 15_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def serving(app: Any, port: int) -> AsyncIterator[str]:
    # lifespan off: the crmwatch app is already started by the `app` fixture, in this event loop.
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_config=None, access_log=False)
    )
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        if task.done() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on port {port}")
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
def chromium_path() -> str:
    # A missing browser fails the run: these tests are the only proof the widget works in a page.
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium); .ci/run does")
    return str(CHROMIUM)


@pytest.fixture
async def browser(chromium_path: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            await chromium.close()


async def until(check: Any, seconds: float = 10) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.2)


async def test_amocrm_widget_in_the_lead_card(app, client, rt, amo, browser, tmp_path, db_url):
    acc = await widget_account(client, rt, amo)
    deal_id, items = await deal_with_findings(client, acc, at_least=2)
    host_port, crm_port = free_port(), free_port()
    host_origin = f"http://127.0.0.1:{host_port}"
    # The "amoCRM account address" is the stand-in card's own origin: CORS and `iss` are held to it.
    async with rt.sessions() as s, s.begin():
        await s.execute(update(Account).where(Account.id == acc["id"]).values(base_url=host_origin))
    archive = tmp_path / "widget.zip"
    crm_url = f"http://127.0.0.1:{crm_port}"
    build_widget("amocrm", archive, crm_url)
    host = CardHost(
        widget_zip=archive,
        secret=SECRET,
        base_url=host_origin,
        audience=AUDIENCE,
        account_id=AMO_ACCOUNT_ID,
        subdomain=SUBDOMAIN,
        user_id=MANAGER,
        crmwatch_url=crm_url,
    )
    ARTIFACTS.mkdir(exist_ok=True)
    backend = "postgres" if "postgresql" in db_url else "sqlite"

    async with serving(app, crm_port), serving(create_card_host_app(host), host_port):
        page = await browser.new_page(viewport={"width": 1000, "height": 900})
        await page.goto(f"{host_origin}/card?lead_id={deal_id}")
        cards = page.locator("#card_widgets_panel .cw-item")
        await cards.first.wait_for(timeout=WAIT_MS)
        assert await cards.count() == len(items)
        panel_text = await page.locator("#card_widgets_panel").inner_text()
        assert all(i["title"] in panel_text for i in items) and "Принято" in panel_text and "Отложить" in panel_text
        width = await page.locator("#card_widgets_panel .cw-root").evaluate("e => e.getBoundingClientRect().width")
        assert 200 <= width <= 280  # laid out inside the ~280 px right panel, not overflowing it
        await page.screenshot(path=str(ARTIFACTS / f"amocrm-card-{backend}.png"), full_page=True)

        # Acknowledge hides the warning at once, and crmwatch records who did it.
        first_id = int(await cards.first.get_attribute("data-finding-id"))
        await cards.first.locator(".cw-ack").click()
        await page.wait_for_function(
            f"document.querySelectorAll('.cw-item').length === {len(items) - 1}", timeout=WAIT_MS
        )

        async def acknowledged() -> dict | None:
            detail = (await client.get(f"/api/findings/{first_id}")).json()
            return detail if detail["status"] == "acknowledged" else None

        detail = await until(acknowledged)
        assert detail and detail["history"][-1]["actor"] == f"user:{MANAGER}"

        # Live: a finding that resolves meanwhile (a sweep, another manager) leaves the panel by itself.
        second_id = int(await cards.first.get_attribute("data-finding-id"))
        async with rt.sessions() as s, s.begin():
            await s.execute(update(Finding).where(Finding.id == second_id).values(status="resolved"))
        await page.wait_for_function(
            f"!document.querySelector('.cw-item[data-finding-id=\"{second_id}\"]')", timeout=WAIT_MS
        )
        if len(items) == 2:
            await page.get_by_text("Всё в порядке").wait_for(timeout=WAIT_MS)
        # ...and one that opens again comes back.
        async with rt.sessions() as s, s.begin():
            await s.execute(update(Finding).where(Finding.id == second_id).values(status="open"))
        await page.locator(f'.cw-item[data-finding-id="{second_id}"]').wait_for(timeout=WAIT_MS)

        # Snooze offers 1 hour / until tomorrow / 1 week; the choice is recorded like Acknowledge.
        item = page.locator(f'.cw-item[data-finding-id="{second_id}"]')
        await item.locator(".cw-snooze").click()
        async with rt.reads() as s:
            # "до завтра", or the real time ("до пн 09:00") when the next working morning is not tomorrow.
            tomorrow = (await snooze_labels(s, await s.get(Account, acc["id"]), "ru"))["tomorrow"]
        assert await item.locator(".cw-menu button").all_inner_texts() == ["на 1 час", tomorrow, "на неделю"]
        await item.locator(".cw-snooze-tomorrow").click()
        await item.wait_for(state="detached", timeout=WAIT_MS)

        async def snoozed() -> dict | None:
            detail = (await client.get(f"/api/findings/{second_id}")).json()
            return detail if detail["status"] == "snoozed" else None

        detail = await until(snoozed)
        assert detail and detail["snoozed_by"] == f"user:{MANAGER}"

        # A bad signature and an expired token each show a clear message instead of the list.
        for mode, message in (("bad_signature", "crmwatch не принял подпись виджета"), ("expired", "Сессия истекла")):
            host.token_mode = mode
            other = await browser.new_page(viewport={"width": 1000, "height": 600})
            await other.goto(f"{host_origin}/card?lead_id={deal_id}")
            await other.locator(".cw-error", has_text=message).wait_for(timeout=WAIT_MS)
            assert await other.locator(".cw-item").count() == 0
            await other.screenshot(path=str(ARTIFACTS / f"amocrm-card-{mode}-{backend}.png"))
            await other.close()
        host.token_mode = "good"

    # crmwatch gone: the panel says so rather than staying blank.
    host.crmwatch_url = f"http://127.0.0.1:{free_port()}"
    async with serving(create_card_host_app(host), host_port):
        gone = await browser.new_page()
        await gone.goto(f"{host_origin}/card?lead_id={deal_id}")
        await gone.locator(".cw-error", has_text="crmwatch недоступен").wait_for(timeout=WAIT_MS)


def bitrix_frame_page(crm_url: str, form: dict[str, str]) -> str:
    """What Bitrix24 does with a placement: POST the handler into an iframe in the deal card."""
    inputs = "".join(
        f'<input type="hidden" name="{k}" value="{v.replace(chr(34), "&quot;")}">' for k, v in form.items()
    )
    return (
        f'<!doctype html><html><body style="margin:0"><form id="f" method="post" target="tab" '
        f'action="{crm_url}/widget/bitrix24/deal-tab">{inputs}</form>'
        '<iframe name="tab" style="width:700px;height:600px;border:0"></iframe>'
        "<script>document.getElementById('f').submit()</script></body></html>"
    )


async def test_bitrix24_deal_tab_verified_and_forged(app, client, rt, browser, db_url):
    _, ids = await bitrix_account(rt)
    portal_port, crm_port = free_port(), free_port()
    portal_origin, crm_url = f"http://127.0.0.1:{portal_port}", f"http://127.0.0.1:{crm_port}"
    async with rt.sessions() as s, s.begin():
        await s.execute(update(Account).where(Account.external_id == MEMBER_ID).values(base_url=portal_origin))
    portal = FastAPI()

    @portal.get("/crm/deal/details/3473/", response_class=HTMLResponse)
    async def deal_card(auth: str) -> HTMLResponse:
        return HTMLResponse(bitrix_frame_page(crm_url, placement_form(AUTH_ID=auth)))

    ARTIFACTS.mkdir(exist_ok=True)
    backend = "postgres" if "postgresql" in db_url else "sqlite"

    def user_current(request: httpx.Request) -> httpx.Response:
        good = f"auth={GOOD_AUTH}" in request.content.decode()
        return (
            httpx.Response(200, json={"result": PORTAL_USER})
            if good
            else httpx.Response(401, json={"error": "invalid_token", "error_description": "invalid"})
        )

    with respx.mock(using="httpx", assert_all_called=False) as mock:
        checks = mock.post(f"{portal_origin}/rest/user.current.json").mock(side_effect=user_current)
        mock.route().pass_through()
        async with serving(app, crm_port), serving(portal, portal_port):
            page = await browser.new_page(viewport={"width": 760, "height": 700})
            await page.goto(f"{portal_origin}/crm/deal/details/3473/?auth={GOOD_AUTH}")
            tab = page.frame_locator("iframe[name=tab]")
            await tab.locator(".cw-item").first.wait_for(timeout=WAIT_MS)
            assert await tab.locator(".cw-item").count() == 2
            assert await tab.locator(".cw-item .cw-sev").count() == 2  # severity in words, not colour alone
            assert "Анна Смирнова" in await tab.locator("body").inner_text()
            await page.screenshot(path=str(ARTIFACTS / f"bitrix24-deal-tab-{backend}.png"))
            await tab.locator(f'.cw-item[data-finding-id="{ids[0]}"] .cw-ack').click()
            await tab.locator(f'.cw-item[data-finding-id="{ids[0]}"]').wait_for(state="detached", timeout=WAIT_MS)

            async def recorded() -> bool:
                detail = (await client.get(f"/api/findings/{ids[0]}")).json()
                return detail["status"] == "acknowledged" and detail["history"][-1]["actor"] == "user:7"

            assert await until(recorded)

            forged = await browser.new_page(viewport={"width": 760, "height": 700})
            await forged.goto(f"{portal_origin}/crm/deal/details/3473/?auth=forged-by-someone")
            refusal = forged.frame_locator("iframe[name=tab]").locator("[data-crmwatch-refusal=forged]")
            await refusal.wait_for(timeout=WAIT_MS)
            assert "Вход не подтверждён" in await refusal.inner_text()
            assert await forged.frame_locator("iframe[name=tab]").locator(".cw-item").count() == 0
            await forged.screenshot(path=str(ARTIFACTS / f"bitrix24-deal-tab-forged-{backend}.png"))
    assert checks.call_count == 2
    assert json.loads(placement_form()["PLACEMENT_OPTIONS"]) == {"ID": "3473"}
