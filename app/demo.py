"""`crmwatch demo`: the whole product against a built-in amoCRM emulator, no CRM account needed.

It starts the emulator and crmwatch side by side, fills the emulator with a small sales team,
connects it as an account exactly as an operator would (POST /api/accounts), lets the backfill
run, replays a scripted stretch of the team's day as amoCRM webhooks, and prints where to look.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import uvicorn
from sqlalchemy.engine import make_url

from app import logging as app_logging
from app.calls import demo_pbx
from app.dashboard import demo_history
from app.main import create_app
from app.migrate import upgrade_async
from app.rules.config import RulesDocument
from app.settings import Settings
from integrations.amocrm.demo_data import DEMO_TOKEN, seed_demo, webhook_form
from integrations.amocrm.emulator import EmulatorState, create_emulator_app
from integrations.amocrm.widget_host import CardHost, create_card_host_app
from integrations.bitrix24 import demo_data as b24_demo
from integrations.bitrix24.emulator import (
    APP_TOKEN,
    WEBHOOK_SECRET,
    WEBHOOK_USER,
    Bitrix24Emulator,
    create_bitrix24_app,
)

DEMO_ADMIN_TOKEN = "demo-admin-token"
# The demo's amoCRM integration secret: the emulator signs the widget's disposable tokens with it.
DEMO_WIDGET_SECRET = "demo-widget-secret-0123456789abcdef"
HOUR = 3600


def _server(app: Any, host: str, port: int) -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                                         lifespan="on"))


async def _wait_until(check: Any, seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.2)
    raise TimeoutError(f"demo: timed out waiting for {what}")


def _script(state: EmulatorState, now: int) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """A stretch of the team's day: what each manager does, and the webhook amoCRM would send."""
    steps: list[tuple[str, str, list[tuple[str, str]]]] = []
    lead = state.add_lead(31000100, "Заявка с сайта: кондиционеры в офис", 4100000, 41000001, price=260000,
                          responsible_user_id=8100003, created_at=now - 600, updated_at=now - 600)
    steps.append(("Новая заявка с сайта", "leads.add", webhook_form(state, "leads.add", lead)))
    task = state.add_task(52000100, 31000100, "Позвонить, уточнить площадь помещений", now + 2 * HOUR,
                          responsible_user_id=8100003, created_at=now - 300)
    steps.append(("Менеджер поставил задачу", "task.add", webhook_form(state, "task.add", task)))
    moved = state.move_lead(31000003, 41000003, at=now - 120, by_user=8100004)
    old_stage = moved["value_before"][0]["lead_status"]["id"]
    steps.append(("Сделка перешла на этап «КП отправлено»", "leads.status",
                  webhook_form(state, "leads.status", state.leads[31000003], old_status_id=old_stage)))
    open_task = next(t for t in state.tasks.values() if not t["is_completed"])
    done = state.complete_task(open_task["id"], "Клиент ждёт КП до пятницы", at=now - 60)
    steps.append(("Задача выполнена с результатом", "task.update", webhook_form(state, "task.update", done)))
    note = state.add_note(61000100, 31000100, "common", text="ок", created_by=8100003, created_at=now - 30)
    steps.append(("Пустой комментарий на карточке", "note.add", webhook_form(state, "note.add", note)))
    # amoCRM retries a delivery it thinks failed: the same body again must change nothing.
    steps.append(("Повторная доставка того же вебхука", "task.add", steps[1][2]))
    return steps


def _widget_card(state: EmulatorState, crmwatch_url: str, emulator_url: str) -> CardHost:
    """The real widget, built now, in a lead card served by the emulator (the demo account's address)."""
    from app.widget.bundle import build_widget

    out = Path(tempfile.mkdtemp(prefix="crmwatch-demo-widget-")) / "widget.zip"
    build_widget("amocrm", out, crmwatch_url)
    manager = min(state.users) if state.users else 1
    return CardHost(widget_zip=out, secret=DEMO_WIDGET_SECRET, base_url=emulator_url, audience=crmwatch_url,
                    account_id=state.account["id"], subdomain=state.account["subdomain"], user_id=manager,
                    crmwatch_url=crmwatch_url, is_admin=True)


async def _show_widget(http: httpx.AsyncClient, card: CardHost, account_id: int, findings: list[dict[str, Any]]
                       ) -> None:
    await http.put(f"/api/accounts/{account_id}/widget", json={"client_secret": DEMO_WIDGET_SECRET,
                                                                "audience": card.audience})
    per_deal: dict[str, int] = {}
    for item in findings:
        if not item["suppressed"]:
            per_deal[item["deal_id"]] = per_deal.get(item["deal_id"], 0) + 1
    if not per_deal:
        return
    lead = max(per_deal, key=lambda d: per_deal[d])
    # One call the way the widget makes it, to show the path works end to end.
    resp = await http.get("/widget/amocrm/findings", params={"lead_id": lead},
                          headers={"X-Auth-Token": card.token(), "Origin": card.base_url, "Authorization": ""})
    shown = len(resp.json().get("items", [])) if resp.status_code == 200 else f"error {resp.status_code}"
    print(f"widget card:  {card.base_url}/card?lead_id={lead}   ({shown} warnings in the panel; "
          f"open it in a browser, acknowledge one, watch /api/findings)")


def reset_database(database: str) -> None:
    """Every demo starts from the same clean day."""
    url = make_url(database)
    if url.drivername.startswith("sqlite") and url.database:
        for suffix in ("", "-wal", "-shm"):
            Path(url.database + suffix).unlink(missing_ok=True)


async def run_demo(*, host: str, port: int, emulator_port: int, database: str, once: bool) -> int:
    settings = Settings(database_url=database, admin_token=DEMO_ADMIN_TOKEN,
                        secret_key=os.environ.get("CRMWATCH_SECRET_KEY", "demo-secret-key"),
                        public_url=f"http://{host}:{port}", log_level="WARNING", log_json=False)
    app_logging.configure(settings.log_level, settings.log_json)
    await upgrade_async(database)

    now = int(time.time())
    state = EmulatorState()
    state.add_token(DEMO_TOKEN)
    seed_demo(state, now=now)
    emulator_app = create_emulator_app(state, rate_limit_per_s=7)
    card = _widget_card(state, f"http://{host}:{port}", f"http://{host}:{emulator_port}")
    emulator_app.router.routes.extend(create_card_host_app(card).router.routes)
    emulator = _server(emulator_app, host, emulator_port)
    portal = Bitrix24Emulator()  # Bitrix24's own limits: 2 requests/s, a burst of 50
    b24_demo.seed_portal(portal, now)
    portal_server = _server(create_bitrix24_app(portal), host, emulator_port + 1)
    service = _server(create_app(settings), host, port)
    servers = [asyncio.create_task(emulator.serve()), asyncio.create_task(portal_server.serve()),
               asyncio.create_task(service.serve())]
    base = f"http://{host}:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10,
                                     headers={"Authorization": f"Bearer {DEMO_ADMIN_TOKEN}"}) as http:
            await _wait_until(lambda: _ok(http, "/healthz"), 30, "crmwatch to start")
            print(f"crmwatch      {base}   (API docs: {base}/docs, admin token: {DEMO_ADMIN_TOKEN})")
            print(f"amoCRM emulator http://{host}:{emulator_port}   (token: {DEMO_TOKEN})")
            resp = await http.post("/api/accounts", json={
                "name": "Демо-магазин", "crm": "amocrm", "base_url": f"http://{host}:{emulator_port}",
                "access_token": DEMO_TOKEN, "timezone": "Europe/Moscow"})
            resp.raise_for_status()
            account = resp.json()
            print(f"account {account['id']} created; webhook URL: {account['hooks']['amocrm']}")
            synced = await _wait_until(lambda: _sync_finished(http, account["id"]), 120, "the backfill")
            print(f"backfill {synced['state']}: {synced['counts']}")

            for title, kind, form in _script(state, now):
                r = await http.post(account["hooks"]["amocrm"].removeprefix(base), content=urlencode(form),
                                    headers={"Content-Type": "application/x-www-form-urlencoded",
                                             "User-Agent": "amoCRM-WebHook-client/1.0"})
                print(f"  webhook {kind:<13} {r.status_code}  {title}")
            await demo_pbx.feed(http, account, "Europe/Moscow")
            inbox = await _wait_until(lambda: _inbox_drained(http, account["id"]), 30, "the inbox worker")
            print(f"inbox: {inbox['counts']}")
            mirror = (await http.get(f"/api/accounts/{account['id']}/mirror")).json()
            print("what crmwatch sees now:")
            for name, value in mirror.items():
                print(f"  {name:<26} {value}")
            sweep = (await http.post(f"/api/accounts/{account['id']}/sweep")).json()
            print(f"sweep: {sweep}")
            findings = (await http.get(f"/api/accounts/{account['id']}/findings",
                                       params={"status": "open", "limit": 100})).json()
            print(f"open findings ({findings['total']}):")
            for item in findings["items"]:
                quiet = "  (подавлено)" if item["suppressed"] else ""
                manager = item["details"].get("manager_name", item["manager_id"])
                where = f"сделка {item['deal_id']}" if item["deal_id"] else item["entity_id"]
                print(f"  [{item['rule']}] {where}, {manager}: {item['message']}{quiet}")
            await _show_widget(http, card, account["id"], findings["items"])
            await _wait_until(lambda: _outbox_drained(http, account["id"]), 60, "the outbox")
            crm_tasks = [t for t in state.tasks.values() if "#cw" in (t.get("text") or "")]
            notes = [n for n in state.notes.values() if "#cw" in ((n.get("params") or {}).get("text") or "")]
            print(f"written into the CRM: {len(crm_tasks)} tasks, {len(notes)} notes; for example:")
            for task in crm_tasks[:3]:
                owner = state.users.get(task.get("responsible_user_id") or 0, {}).get("name", "?")
                print(f"  задача для {owner}, сделка {task['entity_id']}: {task['text'].splitlines()[0]}")
            for note in notes[:2]:
                print(f"  примечание, сделка {note['entity_id']}: {note['params']['text'].splitlines()[0]}")
            b24_account = await _bitrix24_portal(http, base, portal, f"http://{host}:{emulator_port + 1}", now)
            for shown in (account["id"], b24_account):
                await demo_history.add(database, shown, datetime.now(UTC))
            print(f"\nDashboard, amoCRM account:   {await demo_history.dashboard_url(http, account['id'])}")
            print(f"  inside amoCRM (widget page): http://{host}:{emulator_port}/settings/widgets/crmwatch")
            print(f"Dashboard, Bitrix24 portal:  {await demo_history.dashboard_url(http, b24_account)}")
            print(f"\nLook at:  {base}/api/accounts/{account['id']}/findings   "
                  f"{base}/api/accounts/{account['id']}/outbox?status=sent   {base}/metrics")
            print(f"          (send 'Authorization: Bearer {DEMO_ADMIN_TOKEN}')")
        if once:
            return 0
        print("\nRunning; Ctrl-C stops the demo.")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        return 0
    finally:
        emulator.should_exit = portal_server.should_exit = service.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*servers, return_exceptions=True), 15)
        logging.getLogger(__name__).info("demo.stopped")


async def _bitrix24_portal(http: httpx.AsyncClient, base: str, portal: Bitrix24Emulator, portal_url: str,
                           now: float) -> int:
    """The same product on a Bitrix24 portal, connected by its inbound webhook."""
    print(f"\nBitrix24 emulator {portal_url}   (inbound webhook /rest/{WEBHOOK_USER}/{WEBHOOK_SECRET}/)")
    resp = await http.post("/api/accounts", json={
        "name": "Демо-портал Битрикс24", "crm": "bitrix24",
        "base_url": f"{portal_url}/rest/{WEBHOOK_USER}/{WEBHOOK_SECRET}/", "application_token": APP_TOKEN,
        "timezone": "Europe/Moscow"})
    resp.raise_for_status()
    account = resp.json()
    print(f"account {account['id']} created; event handler URL: {account['hooks']['bitrix24']}")
    synced = await _wait_until(lambda: _sync_finished(http, account["id"]), 120, "the Bitrix24 backfill")
    print(f"backfill {synced['state']}: {synced['counts']}")
    # The portal's own call goes two working hours back, like the demo PBX's, so its window has passed.
    calendar = RulesDocument().business_calendar("Europe/Moscow")
    call_at = calendar.cutoff(datetime.now(UTC), 2 * 3600).timestamp()
    for title, form in b24_demo.script(portal, now, call_at=call_at):
        r = await http.post(account["hooks"]["bitrix24"].removeprefix(base), content=form,
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
        print(f"  event {r.status_code}  {title}")
    await _wait_until(lambda: _inbox_drained(http, account["id"]), 30, "the inbox worker")
    await http.post(f"/api/accounts/{account['id']}/sweep")
    findings = (await http.get(f"/api/accounts/{account['id']}/findings",
                               params={"status": "open", "limit": 100})).json()
    print(f"open findings on the portal ({findings['total']}):")
    for item in findings["items"]:
        manager = item["details"].get("manager_name", item["manager_id"])
        print(f"  [{item['rule']}] сделка {item['deal_id']}, {manager}: {item['message']}")
    await _wait_until(lambda: _outbox_drained(http, account["id"]), 60, "the Bitrix24 outbox")
    todos = [a for a in portal.activities.values() if "#cw" in a["DESCRIPTION"]]
    comments = [c for c in portal.comments.values() if "#cw" in c["COMMENT"]]
    print(f"written into the portal: {len(todos)} дел (crm.activity.todo.add), {len(comments)} комментариев")
    for todo in todos[:3]:
        print(f"  дело, сделка {todo['OWNER_ID']}: {todo['SUBJECT']}")
    print(f"portal requests refused for the rate limit: {portal.refused_503}")
    return account["id"]


async def _ok(http: httpx.AsyncClient, path: str) -> bool:
    try:
        return (await http.get(path)).status_code == 200
    except httpx.TransportError:
        return False


async def _sync_finished(http: httpx.AsyncClient, account_id: int) -> dict[str, Any] | None:
    sync = (await http.get(f"/api/accounts/{account_id}")).json()["sync"]
    return sync if sync["state"] in ("done", "failed") else None


async def _outbox_drained(http: httpx.AsyncClient, account_id: int) -> bool:
    # A batch being sent is no longer "pending": count it too, or the demo reports too early.
    for state in ("pending", "sending"):
        outbox = (await http.get(f"/api/accounts/{account_id}/outbox", params={"status": state})).json()
        if outbox["total"]:
            return False
    return True


async def _inbox_drained(http: httpx.AsyncClient, account_id: int) -> dict[str, Any] | None:
    inbox = (await http.get(f"/api/accounts/{account_id}/inbox")).json()
    return inbox if inbox["counts"]["pending"] == 0 else None
