"""The amoCRM card after Acknowledge and Snooze, in a real Chromium: what happened is shown with an
undo, snoozed findings stay reachable from a line that says until when, a card with only snoozed
findings does not claim all is fine, and severity is written, not only coloured."""

from __future__ import annotations

from sqlalchemy import update

from app.accounts.models import Account
from app.widget.bundle import build_widget
from app.widget.service import snooze_labels
from integrations.amocrm.widget_host import CardHost, create_card_host_app
from tests.app.widget.widget_support import (
    AMO_ACCOUNT_ID,
    AUDIENCE,
    MANAGER,
    SECRET,
    SUBDOMAIN,
    deal_with_findings,
    widget_account,
)
from tests.browser.test_widget_browser import (
    ARTIFACTS,
    WAIT_MS,
    browser,
    chromium_path,
    free_port,
    serving,
    until,
)

__all__ = ["browser", "chromium_path"]  # the fixtures, re-used from the widget's browser tests
SEVERITY_WORDS = {"critical": "Критично", "warning": "Внимание", "info": "К сведению"}


async def test_undo_snoozed_line_and_severity_words(app, client, rt, amo, browser, tmp_path, db_url):
    acc = await widget_account(client, rt, amo)
    deal_id, items = await deal_with_findings(client, acc, at_least=2)
    host_port, crm_port = free_port(), free_port()
    host_origin, crm_url = f"http://127.0.0.1:{host_port}", f"http://127.0.0.1:{crm_port}"
    async with rt.sessions() as s, s.begin():
        await s.execute(update(Account).where(Account.id == acc["id"]).values(base_url=host_origin))
    archive = tmp_path / "widget.zip"
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
    async with rt.reads() as s:
        tomorrow = (await snooze_labels(s, await s.get(Account, acc["id"]), "ru"))["tomorrow"]
    ARTIFACTS.mkdir(exist_ok=True)
    backend = "postgres" if "postgresql" in db_url else "sqlite"

    async def status(finding_id: int) -> str:
        return (await client.get(f"/api/findings/{finding_id}")).json()["status"]

    async with serving(app, crm_port), serving(create_card_host_app(host), host_port):
        page = await browser.new_page(viewport={"width": 1000, "height": 900})
        await page.goto(f"{host_origin}/card?lead_id={deal_id}")
        cards = page.locator("#card_widgets_panel .cw-item")
        await cards.first.wait_for(timeout=WAIT_MS)
        n = await cards.count()
        # Every warning says its severity in a word, matching the finding's severity.
        for item in items:
            badge = page.locator(f'.cw-item[data-finding-id="{item["id"]}"] .cw-sev')
            assert await badge.inner_text() in (
                SEVERITY_WORDS[item["severity"]],
                SEVERITY_WORDS[item["severity"]].upper(),
            )

        # Acknowledge: "Принято." with an undo; the undo brings the warning back, recorded as the manager's.
        first = items[0]["id"]
        await page.locator(f'.cw-item[data-finding-id="{first}"] .cw-ack').click()
        notice = page.locator(f'.cw-notice[data-notice-for="{first}"]')
        await notice.wait_for(timeout=WAIT_MS)
        assert "Принято." in await notice.inner_text()
        assert await until(lambda: _is(status(first), "acknowledged"))
        await page.screenshot(path=str(ARTIFACTS / f"amocrm-card-ack-undo-{backend}.png"), full_page=True)
        await notice.locator(".cw-undo", has_text="Отменить").click()
        await page.locator(f'.cw-item[data-finding-id="{first}"]').wait_for(timeout=WAIT_MS)
        assert await until(lambda: _is(status(first), "open"))
        detail = (await client.get(f"/api/findings/{first}")).json()
        assert detail["history"][-1]["actor"] == f"user:{MANAGER}" and detail["history"][-1]["to_status"] == "open"

        # Snooze every warning until the next working morning: each says until when, with an undo.
        for item in items:
            row = page.locator(f'.cw-item[data-finding-id="{item["id"]}"]')
            await row.locator(".cw-snooze").click()
            await row.locator(".cw-snooze-tomorrow").click()
            await page.locator(f'.cw-notice[data-notice-for="{item["id"]}"]').wait_for(timeout=WAIT_MS)
        await page.wait_for_function("document.querySelectorAll('.cw-item').length === 0", timeout=WAIT_MS)
        texts = await page.locator(".cw-notice-text").all_inner_texts()
        assert texts and all(t.startswith("Отложено до ") for t in texts)
        if tomorrow != "до завтра":
            assert all(t == f"Отложено {tomorrow}." for t in texts)  # e.g. "Отложено до пн 09:00."
        # The undo goes after a few seconds; the line of snoozed findings stays.
        await page.wait_for_function("document.querySelectorAll('.cw-notice').length === 0", timeout=WAIT_MS)
        line = page.locator(".cw-snoozed-toggle")
        await line.wait_for(timeout=WAIT_MS)
        label = (await client.get(f"/api/findings/{first}")).json()["snoozed_until"]
        assert label and (await line.inner_text()).startswith(f"{n} отложено до ")
        # Only snoozed findings left: the card must not say all is fine.
        assert "Всё в порядке" not in await page.locator("#card_widgets_panel").inner_text()
        await page.screenshot(path=str(ARTIFACTS / f"amocrm-card-snoozed-line-{backend}.png"), full_page=True)

        # The line opens the snoozed ones; "Вернуть" brings one back.
        await line.click()
        snoozed = page.locator(".cw-snoozed-list .cw-snoozed-item")
        await snoozed.first.wait_for(timeout=WAIT_MS)
        assert await snoozed.count() == n
        assert await page.locator(".cw-snoozed-list .cw-sev").count() == n
        await page.screenshot(path=str(ARTIFACTS / f"amocrm-card-snoozed-open-{backend}.png"), full_page=True)
        await snoozed.first.locator(".cw-unsnooze", has_text="Вернуть").click()
        await cards.first.wait_for(timeout=WAIT_MS)
        back = int(await cards.first.get_attribute("data-finding-id"))
        assert await until(lambda: _is(status(back), "open"))
        await page.wait_for_function(
            f"document.querySelectorAll('.cw-snoozed-item').length === {n - 1}", timeout=WAIT_MS
        )


async def _is(value, expected: str) -> bool:
    return (await value) == expected
