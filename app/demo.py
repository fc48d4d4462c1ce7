"""`crmwatch demo`: the whole product against built-in amoCRM and Bitrix24 emulators, no CRM account needed.

It starts the emulators and crmwatch side by side (on ports it checked first), fills the emulators
with a small sales team, connects them as accounts exactly as an operator would (POST
/api/accounts), lets the backfill run, replays a scripted stretch of the team's day as webhooks and
PBX calls, and prints, in Russian or English, what crmwatch found, what it wrote back, and which
pages to open.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import os
import re
import signal
import socket
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import uvicorn
from sqlalchemy.engine import make_url

from app import demo_pbx
from app import logging as app_logging
from app.dashboard import demo_history
from app.demo_text import TEXT, counts, money
from app.main import create_app
from app.migrate import upgrade_async
from app.rules.config import RulesDocument
from app.settings import Settings
from app.widget.bundle import build_widget
from integrations.amocrm.demo_data import DEMO_TOKEN, HEAD, seed_demo, webhook_form
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
from integrations.telegram.emulator import TelegramState, create_telegram_app

DEMO_ADMIN_TOKEN = "demo-admin-token"
DEMO_BOT_TOKEN = "123456789:demo-bot-token-0123456789abcdef"
DEMO_CHAT = "-1001000000001"
# The demo's amoCRM integration secret: the emulator signs the widget's disposable tokens with it.
DEMO_WIDGET_SECRET = "demo-widget-secret-0123456789abcdef"
HOUR = 3600


def _server(app: Any, host: str, port: int) -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="on"))


async def _wait_until(check: Any, seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.2)
    raise DemoError(f"timed out waiting for {what}")


def _script(state: EmulatorState, now: int) -> list[tuple[tuple[str, str], str, list[tuple[str, str]]]]:
    """A stretch of the team's day: what each manager does (in Russian and English), and the webhook
    amoCRM would send."""
    steps: list[tuple[tuple[str, str], str, list[tuple[str, str]]]] = []
    lead = state.add_lead(
        31000100,
        "Заявка с сайта: кондиционеры в офис",
        4100000,
        41000001,
        price=260000,
        responsible_user_id=8100003,
        created_at=now - 600,
        updated_at=now - 600,
    )
    steps.append(
        (
            ("Новая заявка с сайта", "A new request from the website"),
            "leads.add",
            webhook_form(state, "leads.add", lead),
        )
    )
    task = state.add_task(
        52000100,
        31000100,
        "Позвонить, уточнить площадь помещений",
        now + 2 * HOUR,
        responsible_user_id=8100003,
        created_at=now - 300,
    )
    steps.append(
        (("Менеджер поставил задачу", "A manager set a task"), "task.add", webhook_form(state, "task.add", task))
    )
    # A problem that starts after the connection: crmwatch writes it into the CRM on its own.
    late = state.add_task(
        52000101,
        31000100,
        "Отправить расчёт стоимости",
        now - 300,
        responsible_user_id=8100003,
        created_at=now - 900,
    )
    steps.append(
        (
            ("Задача менеджера просрочена", "A manager's task runs late"),
            "task.add",
            webhook_form(state, "task.add", late),
        )
    )
    moved = state.move_lead(31000003, 41000003, at=now - 120, by_user=8100004)
    old_stage = moved["value_before"][0]["lead_status"]["id"]
    steps.append(
        (
            ("Сделка перешла на этап «КП отправлено»", "A deal moved to the stage “КП отправлено”"),
            "leads.status",
            webhook_form(state, "leads.status", state.leads[31000003], old_status_id=old_stage),
        )
    )
    open_task = next(t for t in state.tasks.values() if not t["is_completed"])
    done = state.complete_task(open_task["id"], "Клиент ждёт КП до пятницы", at=now - 60)
    steps.append(
        (
            ("Задача выполнена с результатом", "A task done, with its result"),
            "task.update",
            webhook_form(state, "task.update", done),
        )
    )
    note = state.add_note(61000100, 31000100, "common", text="ок", created_by=8100003, created_at=now - 30)
    steps.append(
        (
            ("Пустой комментарий на карточке", "An empty comment on a card"),
            "note.add",
            webhook_form(state, "note.add", note),
        )
    )
    # amoCRM retries a delivery it thinks failed: the same body again must change nothing.
    steps.append((("Повторная доставка того же вебхука", "The same webhook delivered again"), "task.add", steps[1][2]))
    return steps


def _widget_card(state: EmulatorState, crmwatch_url: str, emulator_url: str) -> CardHost:
    """The real widget, built now, in a lead card served by the emulator (the demo account's address)."""
    out = Path(tempfile.mkdtemp(prefix="crmwatch-demo-widget-")) / "widget.zip"
    build_widget("amocrm", out, crmwatch_url)
    manager = min(state.users) if state.users else 1
    return CardHost(
        widget_zip=out,
        secret=DEMO_WIDGET_SECRET,
        base_url=emulator_url,
        audience=crmwatch_url,
        account_id=state.account["id"],
        subdomain=state.account["subdomain"],
        user_id=manager,
        crmwatch_url=crmwatch_url,
        is_admin=True,
    )


def reset_database(database: str) -> None:
    """Every demo starts from the same clean day."""
    url = make_url(database)
    if url.drivername.startswith("sqlite") and url.database:
        for suffix in ("", "-wal", "-shm"):
            Path(url.database + suffix).unlink(missing_ok=True)


class DemoError(Exception):
    """The demo cannot go on; the message says why (the CLI prints it as one line)."""


# An overdue task escalates this many seconds after its finding opens (default: 8 working hours).
ESCALATE_SECONDS = 10


def ports_taken(host: str, ports: dict[str, int]) -> list[tuple[str, int]]:
    """The demo's ports that cannot be listened on (another program has them, or one is given twice),
    found before anything starts, so that nothing of another program is ever touched."""
    taken, seen = [], set()
    for flag, port in ports.items():
        if port in seen:
            taken.append((flag, port))
            continue
        seen.add(port)
        with socket.socket() as sock:
            # As uvicorn binds: a port only in TIME_WAIT is free, one with a listener is not.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                taken.append((flag, port))
    return taken


class _Say:
    def __init__(self, lang: str) -> None:
        self.lang, self.text = lang, TEXT[lang]

    def __call__(self, key: str, **values: Any) -> None:
        print(self.text[key].format(**values), flush=True)

    def __getitem__(self, key: str) -> str:
        return self.text[key]


async def _started(servers: list[uvicorn.Server], tasks: list[asyncio.Task[Any]]) -> None:
    deadline = time.monotonic() + 30
    while not all(s.started for s in servers):
        if any(t.done() for t in tasks) or time.monotonic() > deadline:
            raise DemoError("a demo server could not start (is one of its ports taken?); nothing was connected")
        await asyncio.sleep(0.05)


async def run_demo(
    *,
    host: str,
    port: int,
    emulator_port: int,
    database: str,
    once: bool,
    bitrix24_port: int | None = None,
    lang: str = "ru",
) -> int:
    say = _Say(lang)
    bitrix24_port = bitrix24_port or emulator_port + 1
    settings = Settings(
        database_url=database,
        admin_token=DEMO_ADMIN_TOKEN,
        secret_key=os.environ.get("CRMWATCH_SECRET_KEY", "demo-secret-key"),
        public_url=f"http://{host}:{port}",
        log_level="WARNING",
        log_json=False,
        telegram_api_url=f"http://{host}:{emulator_port}",
    )
    app_logging.configure(settings.log_level, settings.log_json)
    await upgrade_async(settings.database_url)

    now = int(time.time())
    state = EmulatorState()
    state.add_token(DEMO_TOKEN)
    seed_demo(state, now=now)
    emulator_app = create_emulator_app(state, rate_limit_per_s=7)
    card = _widget_card(state, f"http://{host}:{port}", f"http://{host}:{emulator_port}")
    emulator_app.router.routes.extend(create_card_host_app(card).router.routes)
    # The Telegram Bot API beside it (its paths, /bot<token>/..., are its own): the morning digest goes there.
    telegram = TelegramState(chats={DEMO_CHAT})
    emulator_app.router.routes.extend(create_telegram_app(telegram).router.routes)
    emulator = _server(emulator_app, host, emulator_port)
    portal = Bitrix24Emulator()  # Bitrix24's own limits: 2 requests/s, a burst of 50
    b24_demo.seed_portal(portal, now)
    portal_server = _server(create_bitrix24_app(portal), host, bitrix24_port)
    service = _server(create_app(settings), host, port)
    servers = [
        asyncio.create_task(emulator.serve()),
        asyncio.create_task(portal_server.serve()),
        asyncio.create_task(service.serve()),
    ]
    base = f"http://{host}:{port}"
    try:
        await _started([emulator, portal_server, service], servers)
        async with httpx.AsyncClient(
            base_url=base, timeout=10, headers={"Authorization": f"Bearer {DEMO_ADMIN_TOKEN}"}
        ) as http:
            await _wait_until(lambda: _ok(http, "/healthz"), 30, "crmwatch to start")
            say("servers")
            say("crmwatch", url=base, token=DEMO_ADMIN_TOKEN)
            say("amo_emulator", url=f"http://{host}:{emulator_port}", token=DEMO_TOKEN)
            say("b24_emulator", url=f"http://{host}:{bitrix24_port}", user=WEBHOOK_USER, secret=WEBHOOK_SECRET)
            amo_id, card_url = await _amocrm(http, say, base, state, card, f"http://{host}:{emulator_port}", now)
            b24_id = await _bitrix24_portal(http, say, base, portal, f"http://{host}:{bitrix24_port}", now)
            dashboards = await _dashboard_history(
                http, say, settings.database_url, {"amocrm": amo_id, "bitrix24": b24_id}
            )
            await _digest(http, say, telegram, amo_id, base)
            say("look")
            if card_url:
                say("look_card", url=card_url)
            say("look_dashboard_amo", url=dashboards["amocrm"])
            say("look_dashboard_widget", url=f"http://{host}:{emulator_port}/settings/widgets/crmwatch")
            say("look_dashboard_b24", url=dashboards["bitrix24"])
            say("look_home", url=base, token=DEMO_ADMIN_TOKEN)
        if once:
            return 0
        say("running")
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


def _step(say: _Say, status: int, *, repeat: bool = False) -> str:
    if status != 200:
        return say["refused"].format(code=status)
    return say["repeat"] if repeat else say["accepted"]


def _deal(say: _Say, name: str | None, amount: float | None) -> str:
    return say["deal"].format(name=name or "?", amount=money(amount, say.lang))


async def _amocrm(
    http: httpx.AsyncClient, say: _Say, base: str, state: EmulatorState, card: CardHost, emulator_url: str, now: int
) -> tuple[int, str | None]:
    """The amoCRM account: connected, backfilled, a day replayed, its findings and what went back.
    Returns the account's id and the widget's card page."""
    resp = await http.post(
        "/api/accounts",
        json={
            "name": "Демо-магазин",
            "crm": "amocrm",
            "base_url": emulator_url,
            "access_token": DEMO_TOKEN,
            "timezone": "Europe/Moscow",
        },
    )
    resp.raise_for_status()
    account = resp.json()
    aid = account["id"]
    say("amo_account", name=account["name"], id=aid)
    # A head of sales to escalate to, and a calendar and delay that let an escalation happen now.
    head = state.users[HEAD]["name"]
    (
        await http.patch(
            f"/api/accounts/{aid}/rules",
            headers={"Content-Type": "application/merge-patch+json"},
            json={
                "supervisor_user_id": str(HEAD),
                "calendar": {
                    "country": None,
                    "work_days": [1, 2, 3, 4, 5, 6, 7],
                    "work_start": "00:00:00",
                    "work_end": "23:59:59",
                },
                "rules": {"overdue_task": {"notify": {"escalate_after_hours": ESCALATE_SECONDS / HOUR}}},
            },
        )
    ).raise_for_status()
    say("calendar", seconds=ESCALATE_SECONDS, head=head)
    synced = await _wait_until(lambda: _sync_finished(http, aid), 120, "the backfill")
    say("backfill", state=_sync_state(say, synced["state"]), counts=counts(synced["counts"], say.lang))
    say("backlog_quiet")

    say("day")
    steps = _script(state, now)
    for i, (titles, _kind, form) in enumerate(steps):
        r = await http.post(
            account["hooks"]["amocrm"].removeprefix(base),
            content=urlencode(form),
            headers={"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "amoCRM-WebHook-client/1.0"},
        )
        say("step", title=titles[say.lang == "en"], result=_step(say, r.status_code, repeat=i == len(steps) - 1))
    hook, calls = await demo_pbx.feed(http, account, "Europe/Moscow")
    say("pbx", hook=hook)
    for titles, status in calls:
        say("step", title=titles[say.lang == "en"], result=_step(say, status))
    inbox = await _wait_until(lambda: _inbox_drained(http, aid), 30, "the inbox worker")
    # The late task's finding opened just now; its escalation comes due ESCALATE_SECONDS later.
    escalate_at = time.monotonic() + ESCALATE_SECONDS + 1
    say("inbox", **inbox["counts"])
    say("mirror", **(await http.get(f"/api/accounts/{aid}/mirror")).json())

    await asyncio.sleep(max(0.0, escalate_at - time.monotonic()))
    sweep = (await http.post(f"/api/accounts/{aid}/sweep")).json()
    say("sweep", **sweep)
    findings = (
        await http.get(f"/api/accounts/{aid}/findings", params={"status": "open", "limit": 500, "lang": say.lang})
    ).json()["items"]
    suppress = (await http.get(f"/api/accounts/{aid}/rules")).json()["suppress"]
    say("findings", total=len(findings))
    for item in findings:
        say(
            "finding",
            title=item["title"],
            where=_amo_where(say, state, item),
            manager=item["details"].get("manager_name", item["manager_id"] or "—"),
            message=item["message"],
        )
        if item["suppressed"]:
            by = next(
                (
                    f["title"]
                    for f in findings
                    if f["deal_id"] == item["deal_id"] and f["rule"] in suppress.get(item["rule"], [])
                ),
                ", ".join(suppress.get(item["rule"], [])),
            )
            say("suppressed_mark", by=by)
    quiet = sum(1 for f in findings if f["suppressed"])
    if quiet:
        say("suppressed_note", count=quiet)
    backlog = sum(1 for f in findings if f["backlog"] and not f["suppressed"] and f["deal_id"])
    if backlog:
        say("backlog_note", count=backlog)

    card_url, shown = await _show_widget(http, card, aid, findings)
    await _wait_until(lambda: _outbox_drained(http, aid), 60, "the outbox")
    await _written_into_amocrm(http, say, state, aid, findings)
    if card_url:
        say("widget", url=card_url, shown=shown)
    return aid, card_url


def _amo_where(say: _Say, state: EmulatorState, item: dict[str, Any]) -> str:
    if not item["deal_id"]:
        return say["number"].format(number=item["entity_id"])
    lead = state.leads.get(int(item["deal_id"]), {})
    return _deal(say, lead.get("name"), lead.get("price"))


async def _written_into_amocrm(
    http: httpx.AsyncClient, say: _Say, state: EmulatorState, aid: int, findings: list[dict[str, Any]]
) -> None:
    """What went into amoCRM, told so that it adds up against the open findings."""
    sent = (await http.get(f"/api/accounts/{aid}/outbox", params={"status": "sent", "limit": 1000})).json()["items"]
    speaking = {f["id"] for f in findings if not f["suppressed"] and not f["backlog"]}
    tasks = {str(t["id"]): t for t in state.tasks.values() if "/f/" in (t.get("text") or "")}
    notes = {str(n["id"]): n for n in state.notes.values() if "/f/" in ((n.get("params") or {}).get("text") or "")}
    opened = [a for a in sent if a["kind"] == "create_task" and a["purpose"] == "open"]
    for_open = [a for a in opened if a["finding_id"] in speaking]
    escalations = [a for a in sent if a["kind"] == "create_task" and a["purpose"] == "escalate"]
    digests = [a for a in sent if a["kind"] == "digest"]
    say("written", tasks=len(tasks), notes=len(notes))
    say("written_backlog", digests=len(digests))
    say("written_open", count=len(for_open))
    # Everything else written was for findings that resolved since (their tasks closed again).
    resolved_notes = [
        a for a in sent if a["kind"] == "add_note" and a["purpose"] == "open" and a["finding_id"] not in speaking
    ]
    if len(opened) > len(for_open) or resolved_notes:
        say("written_closed", count=len(opened) - len(for_open), notes=len(resolved_notes))
    no_card = sum(1 for f in findings if not f["deal_id"] and not f["suppressed"])
    if no_card:
        say("written_no_card", count=no_card)
    say("written_escalated", count=len(escalations))

    def where(task: dict[str, Any]) -> str:
        lead = state.leads.get(int(task["entity_id"] or 0), {})
        return _deal(say, lead.get("name"), lead.get("price"))

    def owner(task: dict[str, Any]) -> str:
        return state.users.get(task.get("responsible_user_id") or 0, {}).get("name", "?")

    team = next((a for a in digests if a["purpose"] == "backlog_team"), None)
    summary = tasks.get((team or {}).get("external_id") or "")
    if summary:
        say("example_summary", owner=owner(summary))
        for line in summary["text"].splitlines():
            say("example_summary_line", text=line)
    for action in for_open[:3]:
        task = tasks.get(action["external_id"] or "")
        if task:
            say("example_task", owner=owner(task), where=where(task), text=task["text"].splitlines()[0])
    open_notes = [a for a in sent if a["kind"] == "add_note" and a["finding_id"] in speaking]
    for action in open_notes[:2]:
        note = notes.get(action["external_id"] or "")
        if note:
            say("example_note", where=where(note), text=note["params"]["text"].splitlines()[0])
    for action in escalations[:3]:
        task = tasks.get(action["external_id"] or "")
        if task:
            say("escalation", owner=owner(task), where=where(task), text=task["text"].splitlines()[0])
    if not escalations:
        say("no_escalation")


async def _show_widget(
    http: httpx.AsyncClient, card: CardHost, account_id: int, findings: list[dict[str, Any]]
) -> tuple[str | None, Any]:
    """The card of the deal with the most warnings, and how many the widget shows there."""
    await http.put(
        f"/api/accounts/{account_id}/widget", json={"client_secret": DEMO_WIDGET_SECRET, "audience": card.audience}
    )
    per_deal: dict[str, int] = {}
    for item in findings:
        if item["deal_id"] and not item["suppressed"]:
            per_deal[item["deal_id"]] = per_deal.get(item["deal_id"], 0) + 1
    if not per_deal:
        return None, 0
    lead = max(per_deal, key=lambda d: per_deal[d])
    # One call the way the widget makes it, to show the path works end to end.
    resp = await http.get(
        "/widget/amocrm/findings",
        params={"lead_id": lead},
        headers={"X-Auth-Token": card.token(), "Origin": card.base_url, "Authorization": ""},
    )
    shown = len(resp.json().get("items", [])) if resp.status_code == 200 else f"error {resp.status_code}"
    return f"{card.base_url}/card?lead_id={lead}", shown


def _sync_state(say: _Say, value: str) -> str:
    names = {"ru": {"done": "готово", "failed": "ошибка"}, "en": {}}
    return names[say.lang].get(value, value)


async def _bitrix24_portal(
    http: httpx.AsyncClient, say: _Say, base: str, portal: Bitrix24Emulator, portal_url: str, now: float
) -> int:
    """The same product on a Bitrix24 portal, connected by its inbound webhook; returns its account id."""
    resp = await http.post(
        "/api/accounts",
        json={
            "name": "Демо-портал Битрикс24",
            "crm": "bitrix24",
            "base_url": f"{portal_url}/rest/{WEBHOOK_USER}/{WEBHOOK_SECRET}/",
            "application_token": APP_TOKEN,
            "timezone": "Europe/Moscow",
        },
    )
    resp.raise_for_status()
    account = resp.json()
    say("b24_account", name=account["name"], id=account["id"])
    synced = await _wait_until(lambda: _sync_finished(http, account["id"]), 120, "the Bitrix24 backfill")
    say("backfill", state=_sync_state(say, synced["state"]), counts=counts(synced["counts"], say.lang))
    # The portal's own call goes two working hours back, like the demo PBX's, so its window has passed.
    calendar = RulesDocument().business_calendar("Europe/Moscow")
    call_at = calendar.cutoff(datetime.now(UTC), 2 * 3600).timestamp()
    say("b24_day")
    for titles, form in b24_demo.script(portal, now, call_at=call_at):
        r = await http.post(
            account["hooks"]["bitrix24"].removeprefix(base),
            content=form,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        say("step", title=titles[say.lang == "en"], result=_step(say, r.status_code))
    await _wait_until(lambda: _inbox_drained(http, account["id"]), 30, "the inbox worker")
    await http.post(f"/api/accounts/{account['id']}/sweep")
    findings = (
        await http.get(
            f"/api/accounts/{account['id']}/findings", params={"status": "open", "limit": 100, "lang": say.lang}
        )
    ).json()["items"]

    def where(deal_id: str | int) -> str:
        deal = portal.deals.get(int(deal_id), {})
        return _deal(say, deal.get("title"), deal.get("opportunity"))

    say("b24_findings", total=len(findings))
    for item in findings:
        say(
            "finding",
            title=item["title"],
            where=where(item["deal_id"]) if item["deal_id"] else item["entity_id"],
            manager=item["details"].get("manager_name", item["manager_id"] or "—"),
            message=item["message"],
        )
    await _wait_until(lambda: _outbox_drained(http, account["id"]), 60, "the Bitrix24 outbox")
    todos = [a for a in portal.activities.values() if "/f/" in a["DESCRIPTION"]]
    comments = [c for c in portal.comments.values() if "/f/" in c["COMMENT"]]
    summaries = [t for t in portal.tasks.values() if "/f/" in t["description"]]
    still_open = [a for a in todos if a["COMPLETED"] != "Y"]
    backlog = sum(1 for f in findings if f["backlog"] and not f["suppressed"] and f["deal_id"])
    say("b24_written", summaries=len(summaries), todos=len(todos), comments=len(comments))
    say("b24_written_open", open=len(still_open), closed=len(todos) - len(still_open), backlog=backlog)
    for todo in still_open[:3]:
        say("b24_example", where=where(todo["OWNER_ID"]), text=todo["SUBJECT"])
    say("b24_refused", count=portal.refused_503)
    return int(account["id"])


async def _dashboard_history(
    http: httpx.AsyncClient, say: _Say, database: str, accounts: dict[str, int]
) -> dict[str, str]:
    """A few weeks of history behind both accounts, so the dashboard's charts have something to
    show; returns a read-only dashboard link per CRM."""
    links: dict[str, str] = {}
    for crm, account_id in accounts.items():
        added = await demo_history.add(database, account_id, datetime.now(UTC))
        say("history", crm=say[f"crm_{crm}"], **added)
        links[crm] = await demo_history.dashboard_url(http, account_id)
    return links


async def _digest(http: httpx.AsyncClient, say: _Say, telegram: TelegramState, account_id: int, base: str) -> None:
    """The morning digest of the amoCRM account, sent now into the emulated Telegram chat and printed."""
    resp = await http.put(
        f"/api/accounts/{account_id}/digest/settings",
        json={"telegram": {"bot_token": DEMO_BOT_TOKEN, "chat_id": DEMO_CHAT}, "language": say.lang},
    )
    resp.raise_for_status()
    (await http.post(f"/api/accounts/{account_id}/digest/send")).raise_for_status()

    async def arrived() -> bool:
        return bool(telegram.messages)

    await _wait_until(arrived, 30, "the digest to reach Telegram")
    say("digest", chat=DEMO_CHAT, url=f"{base}/api/accounts/{account_id}/digest/preview")
    text = re.sub(r"<[^>]+>", "", telegram.messages[-1]["text"])
    for line in html.unescape(text).splitlines():
        print(f"  │ {line}", flush=True)


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
