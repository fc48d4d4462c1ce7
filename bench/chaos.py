"""Chaos run: real crmwatch processes on PostgreSQL against the amoCRM and Bitrix24 emulators,
with kills, CRM faults and dropped database connections; then checks that nothing was lost or
done twice.

    python bench/chaos.py --database postgresql+asyncpg://postgres@127.0.0.1:5432/postgres --seconds 60

It makes a scratch database, serves both emulators from this process, and starts two
`crmwatch serve --no-workers`, two `crmwatch worker` and two `crmwatch scheduler`. Two accounts
are watched: an amoCRM one (connected by token) and a Bitrix24 portal (an app, installed through
its ONAPPINSTALL event), each with a Mango Office PBX whose calls are logged into the CRM.

For `--seconds` it posts, to the two servers, each delivery unique: amoCRM lead webhooks (new and
updated deals), amoCRM task webhooks and Bitrix24 activity events (a manager plans the deal, so
its finding resolves and crmwatch's own task is closed), Bitrix24 deal events, and signed Mango
call summaries for numbers the CRMs know (so each call is matched and logged: amoCRM POST
/api/v4/calls, Bitrix24 telephony.externalcall.*). Meanwhile it SIGKILLs a random crmwatch
process every `--kill-every` seconds (and starts it again), switches both CRMs every
`--fault-every` seconds between healthy, outage (amoCRM 503s; Bitrix24 500s), a 429 storm longer
than the outbox lease (Bitrix24: the batch method blocked, its OPERATION_TIME_LIMIT 429) and
answers lost after the write, and once terminates every database backend (pg_terminate_backend).
It samples the holders of the scheduler's advisory lock throughout.

Then the CRMs turn healthy and the run drains (rows waiting out a backoff are made due, so the
drain takes seconds, not the backoff's minutes), and it checks, for both CRMs: every acknowledged
delivery stored and applied exactly once; every acknowledged call stored once; every task and note
the outbox sent in the CRM exactly once, read back by its marker; every call log written exactly
once (found by its uniq: amoCRM's call note, Bitrix24's EXTERNAL_CALL_ID); every close applied
(the task completed in the CRM); nothing dead; never two scheduler leaders; no 5xx to a valid
delivery. It prints a table and exits 1 when a check fails.

Not covered (yet): the SQLite single-process mode.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode

import httpx
import uvicorn
from sqlalchemy import func, select, text, update

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.accounts.models import Account  # noqa: E402
from app.calls import calllog  # noqa: E402
from app.calls.models import Call  # noqa: E402
from app.db import scratch_database, utcnow  # noqa: E402
from app.findings.models import Finding  # noqa: E402
from app.findings.scheduler import SCHEDULER_LOCK_KEY  # noqa: E402
from app.ingest.models import InboxEvent  # noqa: E402
from app.migrate import upgrade  # noqa: E402
from app.outbox.models import OutboxAction  # noqa: E402
from app.rules import config as rules_config  # noqa: E402
from app.rules.registry import RULES  # noqa: E402
from app.runtime import Runtime  # noqa: E402
from app.settings import Settings  # noqa: E402
from integrations.amocrm.demo_data import webhook_form  # noqa: E402
from integrations.amocrm.emulator import EmulatorState, create_emulator_app  # noqa: E402
from integrations.bitrix24.emulator import Bitrix24Emulator, create_bitrix24_app  # noqa: E402
from integrations.bitrix24.wire import ACTIVITY_PREFIX  # noqa: E402
from integrations.telephony.mango import call_summary, signed_form  # noqa: E402

TOKEN = "chaos-token"
SECRET = "chaos-secret-key"
ADMIN = "chaos-admin-token"
PIPELINE, STAGE, MANAGER = 4100000, 41000001, 8100002
B24_MANAGER, B24_APP, B24_APP_SECRET = 7, "local.chaos0000000001", "chaos-b24-app-secret"
MANGO = {
    "amocrm": ("chaos-mango-key-amo", "chaos-mango-salt-amo"),
    "bitrix24": ("chaos-mango-key-b24", "chaos-mango-salt-b24"),
}
EXTENSION = "101"
LINE = "74951234567"
FAULTS = ("storm", "lost_answers", "outage", "healthy")  # in turn, so a short run meets each
TOKEN_RE = re.compile(r"chaos-\d+-x")
# A task or note names its row by its page's link (/f/<id>-<signature>), older ones by #cw<id>.
MARK_RE = re.compile(r"#cw(\d+)\b|/f/(\d+)-")


@dataclass
class Tally:
    sent: Counter[str] = field(default_factory=Counter)  # by kind of delivery
    acked: Counter[str] = field(default_factory=Counter)
    webhooks_5xx: int = 0
    webhooks_4xx: int = 0
    webhooks_refused: int = 0  # connection refused or reset: the server was being killed
    kills: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    backends_terminated: int = 0
    leader_samples: list[int] = field(default_factory=list)
    acked_tokens: list[str] = field(default_factory=list)
    acked_calls: dict[str, list[str]] = field(default_factory=lambda: {"amocrm": [], "bitrix24": []})
    plans: Counter[str] = field(default_factory=Counter)  # manager tasks posted, by CRM (closes to come)


@dataclass
class World:
    """The two emulated CRMs and what crmwatch calls their accounts."""

    amo: EmulatorState
    b24: Bitrix24Emulator
    amo_port: int
    b24_port: int
    deals: int
    ids: dict[str, int] = field(default_factory=dict)  # crm → crmwatch account id
    keys: dict[str, str] = field(default_factory=dict)  # crm → hook key

    planned: set[tuple[str, int]] = field(default_factory=set)  # (crm, deal) a manager has planned
    b24_completions: Counter[str] = field(default_factory=Counter)  # activity id → crm.activity.update to done

    def count_b24_completions(self) -> None:
        """Wraps the portal's crm.activity.update to count the writes that complete an activity."""
        update = self.b24.m_crm_activity_update

        def counted(params: dict) -> dict:
            fields = params.get("fields") or {}
            if isinstance(fields, dict) and str(fields.get("COMPLETED", "")).upper() == "Y":
                self.b24_completions[str(params.get("id"))] += 1
            return update(params)

        self.b24.m_crm_activity_update = counted  # type: ignore[method-assign]

    def close_writes(self, crm: str) -> Counter[str]:
        """How many times each task was written completed (amoCRM PATCH items; Bitrix24 updates)."""
        if crm == "amocrm":
            return Counter(str(w["id"]) for m, p, w in self.amo.writes if (m, p) == ("PATCH", "/api/v4/tasks"))
        return self.b24_completions

    def unplanned(self, crm: str) -> int | None:
        """A deal that carries crmwatch's task (its finding is open) and no manager's plan yet."""
        if crm == "amocrm":
            deals = [
                t["entity_id"]
                for t in list(self.amo.tasks.values())
                if t["entity_id"] and MARK_RE.search(t.get("text") or "")  # not a digest on no card
            ]
        else:
            deals = [
                int(a["OWNER_ID"])
                for a in list(self.b24.activities.values())
                if MARK_RE.search(a.get("DESCRIPTION") or "")
            ]
        deal = next((d for d in deals if (crm, d) not in self.planned), None)
        if deal is not None:
            self.planned.add((crm, deal))
        return deal

    def amo_phone(self, i: int) -> str:
        return f"+7999100{i:04d}"

    def b24_phone(self, i: int) -> str:
        return f"+7999200{i:04d}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(app: object, port: int) -> uvicorn.Server:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server


def seed_crms(world: World) -> None:
    """amoCRM: `deals` open deals with no task, and as many contacts (each with a phone and an open
    deal of its own) for the calls. Bitrix24: the same, on the portal's general pipeline."""
    amo, b24, old = world.amo, world.b24, time.time() - 20 * 86400
    amo.add_token(TOKEN)
    amo.add_user(MANAGER, "Дмитрий Волков", "dv@shop.example")
    amo.add_pipeline(PIPELINE, "Продажи", [(STAGE, "Первичный контакт", 10)], is_main=True)
    for i in range(world.deals):
        amo.add_lead(31000001 + i, f"Сделка {i}", PIPELINE, STAGE, responsible_user_id=MANAGER, created_at=int(old))
        amo.add_contact(9100001 + i, f"Клиент {i}", phones=[world.amo_phone(i)], responsible_user_id=MANAGER)
        amo.add_lead(
            33000001 + i,
            f"Звонки {i}",
            PIPELINE,
            STAGE,
            responsible_user_id=MANAGER,
            contact_ids=[9100001 + i],
            created_at=int(old),
        )
    b24.add_oauth_client(B24_APP, B24_APP_SECRET)
    b24.add_user(B24_MANAGER, "Анна", "Петрова", "anna@portal.example")
    for status_id, name, sort, sem in (
        ("NEW", "Новая", 10, None),
        ("WON", "Успешна", 60, "S"),
        ("LOSE", "Провал", 70, "F"),
    ):
        b24.add_stage(0, status_id, name, sort, sem)
    for i in range(world.deals):
        b24.add_deal(4700001 + i, f"Сделка {i}", "NEW", assigned_by=B24_MANAGER, at=old)
        b24.add_contact(5100001 + i, f"Клиент {i}", [world.b24_phone(i)], assigned_by=B24_MANAGER, at=old)
        b24.add_deal(4800001 + i, f"Звонки {i}", "NEW", assigned_by=B24_MANAGER, contact_id=5100001 + i, at=old)


async def seed_amocrm_account(url: str, world: World) -> None:
    """The amoCRM account, written straight into the database (queued for a backfill)."""
    rt = Runtime.build(Settings(database_url=url, secret_key=SECRET, log_json=False))
    key = uuid.uuid4().hex
    try:
        async with rt.sessions() as s, s.begin():
            account = Account(
                name="Хаос",
                crm="amocrm",
                base_url=f"http://127.0.0.1:{world.amo_port}",
                key=key,
                external_id=str(world.amo.account["id"]),
                subdomain=world.amo.account["subdomain"],
                timezone="Europe/Moscow",
                region="RU",
                language="ru",
                auth_kind="token",
                credentials=rt.box.seal({"access_token": TOKEN}),
                credentials_version=1,
                status="active",
                sync_state="queued",
                sync_requested_at=utcnow(),
                sync_counts={},
            )
            s.add(account)
            await s.flush()
            await save_rules(s, account.id)
            world.ids["amocrm"], world.keys["amocrm"] = account.id, key
    finally:
        await rt.dispose()


async def save_rules(s, account_id: int) -> None:
    # A task for each finding, the backlog found at connecting included (not one summing task per
    # person), so every seeded deal's task is there for a plan to close.
    doc = {
        "rules": {name: {"enabled": name == "deal_without_task"} for name in RULES},
        "announce_backlog": "all",
        "flood_limit": 10_000,
    }
    await rules_config.save(s, account_id, rules_config.RulesDocument.model_validate(doc))


async def connect(url: str, world: World, port: int) -> None:
    """Through the running servers, as an operator would: the Bitrix24 app is created and installed
    (its ONAPPINSTALL event), both accounts get a Mango PBX that logs calls; then it waits until
    both backfills are done, every seeded deal's finding has its task in the CRM, and the servers'
    key caches know the portal's token."""
    admin = {"Authorization": f"Bearer {ADMIN}"}
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, headers=admin, timeout=10) as http:
        body = {
            "name": "Хаос (портал)",
            "crm": "bitrix24",
            "base_url": f"http://127.0.0.1:{world.b24_port}",
            "app": {"client_id": B24_APP, "client_secret": B24_APP_SECRET},
            "timezone": "Europe/Moscow",
        }
        resp = await http.post("/api/accounts", json=body)
        if resp.status_code != 201:
            raise SystemExit(f"could not create the Bitrix24 account: {resp.status_code} {resp.text}")
        world.ids["bitrix24"], world.keys["bitrix24"] = resp.json()["id"], resp.json()["key"]
        resp = await http.post(
            f"/hooks/bitrix24/{world.keys['bitrix24']}",
            content=world.b24.install_form(B24_APP),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        if resp.status_code != 200:
            raise SystemExit(f"the Bitrix24 install was refused: {resp.status_code} {resp.text}")
        rt = Runtime.build(Settings(database_url=url, secret_key=SECRET, log_json=False))
        try:
            async with rt.sessions() as s, s.begin():
                await save_rules(s, world.ids["bitrix24"])
            manager = {"amocrm": str(MANAGER), "bitrix24": str(B24_MANAGER)}
            for crm, (api_key, salt) in MANGO.items():
                resp = await http.put(
                    f"/api/accounts/{world.ids[crm]}/telephony/mango",
                    json={
                        "api_key": api_key,
                        "api_salt": salt,
                        "extensions": {EXTENSION: manager[crm]},
                        "log_calls": True,
                    },
                )
                if resp.status_code != 200:
                    raise SystemExit(f"could not connect the PBX to {crm}: {resp.status_code} {resp.text}")
            started, secret_seen = time.monotonic(), None
            while time.monotonic() - started < 120:
                async with rt.reads() as s:
                    states = dict((await s.execute(select(Account.crm, Account.sync_state))).all())
                    secret = await s.scalar(
                        select(Account.webhook_secret_hash).where(Account.id == world.ids["bitrix24"])
                    )
                    opened = await s.scalar(select(func.count()).where(Finding.status == "open"))
                    queued = await s.scalar(select(func.count()).where(OutboxAction.status.in_(("pending", "sending"))))
                # Every seeded deal's finding open and its task in the CRM: a plan under the chaos
                # then resolves a finding whose task is there to close.
                if secret and secret_seen is None:
                    secret_seen = time.monotonic()
                # The servers' key caches (5 s) must have learnt the portal's application token too.
                cached = secret_seen is not None and time.monotonic() - secret_seen > 5.5
                if cached and all(v == "done" for v in states.values()) and opened >= 4 * world.deals and not queued:
                    break
                await asyncio.sleep(0.5)
            else:
                raise SystemExit(f"the accounts did not sync: {states}, {opened} findings open, {queued} queued")
        finally:
            await rt.dispose()


class Fleet:
    """The crmwatch processes, by name; a killed one is started again at once."""

    def __init__(self, env: dict[str, str], ports: list[int], logs: Path) -> None:
        exe = str(Path(sys.executable).with_name("crmwatch"))
        self.commands = {
            **{
                f"serve-{i}": [exe, "serve", "--no-workers", "--no-migrate", "--port", str(p)]
                for i, p in enumerate(ports)
            },
            "worker-0": [exe, "worker"],
            "worker-1": [exe, "worker"],
            "scheduler-0": [exe, "scheduler"],
            "scheduler-1": [exe, "scheduler"],
        }
        self.env = env
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(self.commands[name], env=self.env, stdout=log, stderr=log)

    def start_all(self) -> None:
        for name in self.commands:
            self.start(name)

    def kill_one(self, rng: random.Random) -> str:
        name = rng.choice(sorted(self.procs))
        self.procs[name].kill()
        self.procs[name].wait()
        self.start(name)
        return name

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def webhook(action: str, deal: int, token: str, stamp: int, account_id: int) -> str:
    """An amoCRM lead add or update as it posts it; `token` (in the name) makes each one unique."""
    lead = f"leads[{action}][0]"
    pairs = [
        (f"{lead}[id]", str(deal)),
        (f"{lead}[name]", f"Сделка {token}"),
        (f"{lead}[status_id]", str(STAGE)),
        (f"{lead}[pipeline_id]", str(PIPELINE)),
        (f"{lead}[responsible_user_id]", str(MANAGER)),
        (f"{lead}[last_modified]", str(stamp)),
        (f"{lead}[updated_at]", str(stamp)),
        (f"{lead}[created_at]", str(stamp - 86400 * 20)),
        (f"{lead}[account_id]", str(account_id)),
        ("account[subdomain]", "demoshop"),
        ("account[id]", str(account_id)),
    ]
    return "&".join(quote(k, safe="") + "=" + quote(v, safe="") for k, v in pairs)


def mango_summary(entry: str, inbound: bool, number: str, talk: int) -> dict:
    """A Mango Office call summary (events/summary) for a finished call on extension EXTENSION."""
    start = int(time.time()) - 120
    return call_summary(
        entry,
        inbound=inbound,
        extension=EXTENSION,
        domain="chaos.mangosip.ru",
        client=number.lstrip("+"),
        line=LINE,
        start=start,
        talk=talk,
    )


def mango_form(crm: str, summary: dict) -> str:
    api_key, salt = MANGO[crm]
    return signed_form(api_key, salt, summary)


def next_delivery(n: int, token: str, world: World, rng: random.Random) -> tuple[str, str, str]:
    """The n-th delivery: (kind, hook path, form body). Kinds take turns, so a short run sends each."""
    amo, b24, deals, stamp = world.amo, world.b24, world.deals, int(time.time()) + n
    turn = n % 10
    if turn == 0:
        # A new deal with no task, made 20 days ago: its finding opens now, under the chaos,
        # and its task and note go out through the CRM's faults.
        deal = 32000000 + n
        amo.add_lead(
            deal, f"Сделка {token}", PIPELINE, STAGE, responsible_user_id=MANAGER, created_at=stamp - 86400 * 20
        )
        return "amocrm lead", "amocrm", webhook("add", deal, token, stamp, amo.account["id"])
    if turn == 2 and (lead := world.unplanned("amocrm")) is not None:
        # The manager plans a deal crmwatch has put a task on: its finding resolves, and crmwatch
        # closes its own task.
        task = amo.add_task(59000000 + n, lead, f"Перезвонить {token}", stamp + 86400, MANAGER)
        return "amocrm task", "amocrm", urlencode(webhook_form(amo, "task.add", task))
    if turn in (1, 2, 9):  # (2: when no deal is waiting for a plan)
        return (
            "amocrm lead",
            "amocrm",
            webhook("update", 31000001 + rng.randrange(deals), token, stamp, amo.account["id"]),
        )
    if turn == 3:
        i = rng.randrange(deals)
        summary = mango_summary(token, rng.random() < 0.5, world.amo_phone(i), rng.choice((0, 35, 95)))
        return "amocrm call", "telephony/mango/{key}/events/summary", mango_form("amocrm", summary)
    if turn == 4:
        deal = 4900000 + n
        b24.add_deal(deal, f"Сделка {token}", "NEW", assigned_by=B24_MANAGER, at=stamp - 86400 * 20)
        return "bitrix24 deal", "bitrix24", b24.event_form("ONCRMDEALADD", deal) + f"&chaos={token}"
    if turn == 6 and (deal := world.unplanned("bitrix24")) is not None:
        act = b24.add_activity(None, deal, f"Перезвонить {token}", stamp + 86400, responsible=B24_MANAGER)
        return "bitrix24 activity", "bitrix24", b24.event_form("ONCRMACTIVITYADD", act["ID"]) + f"&chaos={token}"
    if turn in (5, 6, 8):  # (6: when no deal is waiting for a plan)
        deal = 4700001 + rng.randrange(deals)
        return "bitrix24 deal", "bitrix24", b24.event_form("ONCRMDEALUPDATE", deal) + f"&chaos={token}"
    i = rng.randrange(deals)
    summary = mango_summary(token, rng.random() < 0.5, world.b24_phone(i), rng.choice((0, 35, 95)))
    return "bitrix24 call", "telephony/mango/{key}/events/summary", mango_form("bitrix24", summary)


async def post_webhooks(tally: Tally, ports: list[int], world: World, until: float):
    rng = random.Random(7)
    n = 0
    async with httpx.AsyncClient(timeout=10) as client:
        while time.monotonic() < until:
            n += 1
            token = f"chaos-{n}-x"
            kind, route, body = next_delivery(n, token, world, rng)
            crm = kind.split()[0]
            path = route.format(key=world.keys[crm]) if "{key}" in route else f"{route}/{world.keys[crm]}"
            port = rng.choice(ports)
            tally.sent[kind] += 1
            try:
                resp = await client.post(
                    f"http://127.0.0.1:{port}/hooks/{path}",
                    content=body,
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )
            except httpx.TransportError:
                tally.webhooks_refused += 1
            else:
                if resp.status_code >= 500:
                    tally.webhooks_5xx += 1
                elif resp.status_code >= 400:
                    tally.webhooks_4xx += 1
                elif resp.status_code < 300:
                    tally.acked[kind] += 1
                    tally.acked_tokens.append(token)
                    if kind.endswith("call"):
                        tally.acked_calls[crm].append(token)
                    if kind in ("amocrm task", "bitrix24 activity"):
                        tally.plans[crm] += 1
            await asyncio.sleep(0.05)


def crm_fault(world: World, fault: str, args: argparse.Namespace) -> None:
    """Both CRMs into one fault mode. amoCRM's are timed; Bitrix24's outage and lost answers count
    requests, its storm blocks `batch` (nearly every call crmwatch makes) past the lease."""
    amo, b24 = world.amo, world.b24
    amo.healthy()
    b24.faults.clear()
    b24.lose_answers = 0
    b24.blocked.clear()
    if fault == "outage":
        amo.outage(args.fault_every)
        b24.fail_next(int(args.fault_every * 4), 500, "INTERNAL_SERVER_ERROR")
    elif fault == "storm":  # longer than the lease, each 429 with a Retry-After
        amo.rate_limit_storm(args.lease * 1.5, retry_after=1)
        b24.block_method("batch", time.time() + args.lease * 1.5)
    elif fault == "lost_answers":
        amo.lose_answers(args.fault_every)
        b24.lose_answers = int(args.fault_every * 2)


async def chaos(tally: Tally, fleet: Fleet, world: World, url: str, args: argparse.Namespace, until: float):
    rng = random.Random(11)
    next_kill = time.monotonic() + args.kill_every
    next_fault = time.monotonic() + args.fault_every
    terminate_at = time.monotonic() + args.seconds / 2
    rt = Runtime.build(Settings(database_url=url, secret_key=SECRET, log_json=False))
    try:
        while time.monotonic() < until:
            now = time.monotonic()
            if now >= next_kill:
                tally.kills[fleet.kill_one(rng).rsplit("-", 1)[0]] += 1
                next_kill = now + args.kill_every
            if now >= next_fault:
                fault = FAULTS[sum(tally.faults.values()) % len(FAULTS)]
                tally.faults[fault] += 1
                crm_fault(world, fault, args)
                next_fault = now + args.fault_every
            if terminate_at and now >= terminate_at:
                async with rt.engine.connect() as conn:
                    killed = await conn.execute(
                        text(
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                        )
                    )
                    tally.backends_terminated = int(killed.scalar() or 0)
                terminate_at = 0
            try:
                async with rt.engine.connect() as conn:
                    leaders = await conn.scalar(LEADERS_SQL)
                tally.leader_samples.append(int(leaders or 0))
            except Exception:
                await rt.engine.dispose()  # our own connections were terminated too
            await asyncio.sleep(0.25)
    finally:
        await rt.dispose()


LEADERS_SQL = text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND classid::bigint = :c AND objid::bigint = :o AND database = "
    "(SELECT oid FROM pg_database WHERE datname = current_database())"
).bindparams(c=SCHEDULER_LOCK_KEY >> 32, o=SCHEDULER_LOCK_KEY & 0xFFFFFFFF)


async def fleet_ready(ports: list[int], url: str, limit_s: float = 120) -> float:
    """Waits until both servers answer /healthz and a scheduler leads; returns the seconds it took."""
    started = time.monotonic()
    rt = Runtime.build(Settings(database_url=url, secret_key=SECRET, log_json=False))
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() - started < limit_s:
                up = 0
                for port in ports:
                    try:
                        up += (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
                    except httpx.TransportError:
                        pass
                async with rt.engine.connect() as conn:
                    leaders = await conn.scalar(LEADERS_SQL)
                if up == len(ports) and leaders == 1:
                    return time.monotonic() - started
                await asyncio.sleep(0.5)
    finally:
        await rt.dispose()
    raise SystemExit("the crmwatch processes did not come up")


async def drain(url: str, limit_s: float) -> float:
    """Waits until the inbox and the outbox have nothing left; rows waiting out a backoff are made due."""
    rt = Runtime.build(Settings(database_url=url, secret_key=SECRET, log_json=False))
    started = time.monotonic()
    try:
        while time.monotonic() - started < limit_s:
            async with rt.sessions() as s, s.begin():
                await s.execute(
                    update(OutboxAction).where(OutboxAction.status == "pending").values(next_attempt_at=utcnow())
                )
                await s.execute(
                    update(InboxEvent).where(InboxEvent.status == "pending").values(next_attempt_at=utcnow())
                )
                busy_out = await s.scalar(select(func.count()).where(OutboxAction.status.in_(("pending", "sending"))))
                busy_in = await s.scalar(select(func.count()).where(InboxEvent.status == "pending"))
                syncing = await s.scalar(select(func.count()).where(Account.sync_state.in_(("queued", "running"))))
            if not busy_out and not busy_in and not syncing:
                return time.monotonic() - started
            await asyncio.sleep(0.5)
        return float("nan")
    finally:
        await rt.dispose()


def crm_records(world: World) -> dict[str, tuple[Counter[int], Counter[str], dict[str, bool]]]:
    """Per CRM, read back from its emulator: how many records (tasks, notes, activities, comments)
    carry each outbox row's marker; how many logged calls carry each uniq; and which tasks are
    completed (by the id crmwatch keeps for them)."""
    amo, b24 = world.amo, world.b24
    amo_texts = [t.get("text") or "" for t in amo.tasks.values()] + [
        (n.get("params") or {}).get("text") or "" for n in amo.notes.values() if n["note_type"] == "common"
    ]
    amo_calls = Counter(
        (n.get("params") or {}).get("uniq") for n in amo.notes.values() if n["note_type"] in ("call_in", "call_out")
    )
    amo_done = {str(t["id"]): bool(t["is_completed"]) for t in amo.tasks.values()}
    b24_texts = (
        [a.get("DESCRIPTION") or "" for a in b24.activities.values()]
        + [c.get("COMMENT") or "" for c in b24.comments.values()]
        + [f"{t.get('title') or ''} {t.get('description') or ''}" for t in b24.tasks.values()]
    )
    b24_calls = Counter(r["EXTERNAL_CALL_ID"] for r in b24.call_stats)
    b24_done = {f"{ACTIVITY_PREFIX}{a['ID']}": a["COMPLETED"] == "Y" for a in b24.activities.values()}

    def marks(texts: list[str]) -> Counter[int]:
        return Counter(int(a or b) for t in texts for a, b in MARK_RE.findall(t))

    return {"amocrm": (marks(amo_texts), amo_calls, amo_done), "bitrix24": (marks(b24_texts), b24_calls, b24_done)}


async def verify(url: str, world: World, tally: Tally) -> dict[str, int]:
    rt = Runtime.build(Settings(database_url=url, secret_key=SECRET, log_json=False))
    try:
        async with rt.reads() as s:
            inbox = list(await s.execute(select(InboxEvent.payload, InboxEvent.status)))
            rows = list(await s.scalars(select(OutboxAction)))
            calls = list(await s.execute(select(Call.account_id, Call.provider_call_id, Call.id)))
    finally:
        await rt.dispose()
    stored = Counter(m for payload, _ in inbox for m in TOKEN_RE.findall(payload or ""))
    acked = set(tally.acked_tokens)
    crm_of = {v: k for k, v in world.ids.items()}
    found: dict[str, int] = {
        "deliveries acked but not stored": len([t for t in acked if stored[t] == 0]),
        "deliveries stored twice": len([t for t, n in stored.items() if n > 1]),
        "inbox rows not applied": len([1 for _, status in inbox if status != "done"]),
        "outbox rows": len(rows),
        "outbox rows dead": len([r for r in rows if r.status == "dead"]),
        "outbox rows not finished": len([r for r in rows if r.status not in ("sent", "cancelled", "grouped")]),
    }
    records = crm_records(world)
    for crm in ("amocrm", "bitrix24"):
        marked, logged, completed = records[crm]
        mine = [r for r in rows if crm_of.get(r.account_id) == crm]
        writes = [r for r in mine if r.kind in ("create_task", "add_note")]
        found[f"{crm}: tasks+notes sent"] = len([r for r in writes if r.status == "sent"])
        found[f"{crm}: tasks+notes missing in CRM"] = len(
            [r for r in writes if r.status == "sent" and marked[r.id] == 0]
        )
        found[f"{crm}: tasks+notes duplicated in CRM"] = len([r for r in writes if marked[r.id] > 1])
        # Calls: each acknowledged summary is one call, matched and queued for logging once.
        by_call = Counter(pid for aid, pid, _ in calls if crm_of.get(aid) == crm)
        call_ids = {pid: cid for aid, pid, cid in calls if crm_of.get(aid) == crm}
        acked_calls = tally.acked_calls[crm]
        logs = {r.ref_id: r for r in mine if r.kind == calllog.KIND}
        found[f"{crm}: calls acked"] = len(acked_calls)
        found[f"{crm}: calls acked but not stored once"] = len([t for t in acked_calls if by_call[t] != 1])
        found[f"{crm}: calls acked but not logged"] = len(
            [t for t in acked_calls if t not in call_ids or getattr(logs.get(call_ids[t]), "status", None) != "sent"]
        )
        uniqs = [f"{calllog.UNIQ_PREFIX}mango:{t}" for t in acked_calls]
        found[f"{crm}: call logs in CRM"] = sum(1 for u in uniqs if logged[u] >= 1)
        found[f"{crm}: call logs duplicated in CRM"] = len([u for u in uniqs if logged[u] > 1])
        # Closes: a manager's plan resolves the finding; crmwatch's task for it must end completed.
        closes = [r for r in mine if r.kind == "close_task"]
        opened = {r.id: r for r in mine if r.kind == "create_task"}
        found[f"{crm}: plans posted"] = tally.plans[crm]
        found[f"{crm}: closes sent"] = len([r for r in closes if r.status == "sent"])
        # Each close written once: a lost answer is read back, not written again.
        found[f"{crm}: closes written twice"] = sum(n - 1 for n in world.close_writes(crm).values() if n > 1)
        found[f"{crm}: closes not applied in CRM"] = len(
            [
                r
                for r in closes
                if r.status == "sent"
                and not completed.get(getattr(opened.get(r.ref_id), "external_id", None) or "", False)
            ]
        )
    return found


CHECKS = (
    "deliveries acked but not stored",
    "deliveries stored twice",
    "inbox rows not applied",
    "outbox rows dead",
    "outbox rows not finished",
    *(
        f"{crm}: {what}"
        for crm in ("amocrm", "bitrix24")
        for what in (
            "tasks+notes missing in CRM",
            "tasks+notes duplicated in CRM",
            "calls acked but not stored once",
            "calls acked but not logged",
            "call logs duplicated in CRM",
            "closes not applied in CRM",
            "closes written twice",
        )
    ),
)
# What a run must have done for its checks to mean something.
MUST_HAPPEN = tuple(
    f"{crm}: {what}"
    for crm in ("amocrm", "bitrix24")
    for what in ("tasks+notes sent", "call logs in CRM", "closes sent")
)


async def run(args: argparse.Namespace, url: str) -> int:
    world = World(
        amo=EmulatorState(),
        b24=Bitrix24Emulator(rate=1000, burst=100000),
        amo_port=free_port(),
        b24_port=free_port(),
        deals=args.deals,
    )
    seed_crms(world)
    world.count_b24_completions()
    emulators = [
        serve(create_emulator_app(world.amo, rate_limit_per_s=None), world.amo_port),
        serve(create_bitrix24_app(world.b24), world.b24_port),
    ]
    await seed_amocrm_account(url, world)
    ports = [free_port(), free_port()]
    env = {
        **os.environ,
        "CRMWATCH_DATABASE_URL": url,
        "CRMWATCH_SECRET_KEY": SECRET,
        "CRMWATCH_ADMIN_TOKEN": ADMIN,
        "CRMWATCH_LOG_LEVEL": "WARNING",
        "CRMWATCH_OUTBOX_LEASE_SECONDS": str(args.lease),
        "CRMWATCH_CRM_TIMEOUT_SECONDS": "1",
        "CRMWATCH_CRM_BACKOFF_BASE_SECONDS": "0.2",
        "CRMWATCH_CRM_BACKOFF_CAP_SECONDS": "2",
        "CRMWATCH_SCHEDULER_TICK_SECONDS": "1",
        "CRMWATCH_INBOX_POLL_SECONDS": "0.5",
        "CRMWATCH_BITRIX24_RATE_PER_SECOND": "50",
        "CRMWATCH_BITRIX24_BURST": "500",
    }
    logs = Path(tempfile.mkdtemp(prefix="crmwatch-chaos-"))
    fleet = Fleet(env, ports, logs)
    tally = Tally()
    fleet.start_all()
    try:
        ready = await fleet_ready(ports, url)
        connecting = time.monotonic()
        await connect(url, world, ports[0])
        connected = time.monotonic() - connecting
        until = time.monotonic() + args.seconds
        await asyncio.gather(post_webhooks(tally, ports, world, until), chaos(tally, fleet, world, url, args, until))
        crm_fault(world, "healthy", args)
        took = await drain(url, args.drain_timeout)
        # Plans posted at the very end resolve their findings at the next ticks: drain again after them.
        await asyncio.sleep(2)
        took += 2 + await drain(url, args.drain_timeout)
        found = await verify(url, world, tally)
    finally:
        stopping = time.monotonic()
        fleet.stop_all()
        stopped = time.monotonic() - stopping
        for emulator in emulators:
            emulator.should_exit = True
    leaders = max(tally.leader_samples or [0])
    table = [
        ("seconds to start the fleet", f"{ready:.1f}"),
        ("seconds to connect both accounts (install, backfill, first tasks)", f"{connected:.1f}"),
        ("seconds of chaos", args.seconds),
        ("deliveries sent, by kind", ", ".join(f"{k} {n}" for k, n in sorted(tally.sent.items()))),
        ("deliveries acked, by kind", ", ".join(f"{k} {n}" for k, n in sorted(tally.acked.items()))),
        ("deliveries refused (server killed) / 4xx", f"{tally.webhooks_refused} / {tally.webhooks_4xx}"),
        ("5xx to a valid delivery", tally.webhooks_5xx),
        ("kills (SIGKILL)", ", ".join(f"{k} {n}" for k, n in sorted(tally.kills.items())) or 0),
        ("CRM fault switches", ", ".join(f"{k} {n}" for k, n in sorted(tally.faults.items())) or 0),
        ("429s answered by amoCRM", world.amo.rejected_429),
        ("database backends terminated", tally.backends_terminated),
        ("scheduler leaders at once (max of samples)", f"{leaders} ({len(tally.leader_samples)} samples)"),
        *found.items(),
        ("time to drain after the chaos (s)", f"{took:.1f}"),
        ("seconds for the fleet to stop (SIGTERM)", f"{stopped:.1f}"),
        ("process logs", str(logs)),
    ]
    width = max(len(k) for k, _ in table)
    for k, v in table:
        print(f"{k:<{width}}  {v}")
    failed = (
        tally.webhooks_5xx
        or tally.webhooks_4xx
        or leaders > 1
        or took != took  # nan: did not drain
        or any(found[k] for k in CHECKS)
        or not all(found[k] for k in MUST_HAPPEN)
    )
    print("RESULT", "FAIL" if failed else "OK")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default=os.environ.get("CRMWATCH_TEST_POSTGRES_URL"), help="a PostgreSQL URL")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--kill-every", type=float, default=5)
    parser.add_argument("--fault-every", type=float, default=5)
    parser.add_argument("--lease", type=float, default=4, help="the outbox lease of the processes (s)")
    parser.add_argument("--deals", type=int, default=20)
    parser.add_argument("--drain-timeout", type=float, default=120)
    args = parser.parse_args(argv)
    if not args.database or not args.database.startswith("postgresql"):
        parser.error("give a PostgreSQL URL: --database or CRMWATCH_TEST_POSTGRES_URL")
    with scratch_database(args.database, "crmwatch_chaos") as url:
        upgrade(url)
        return asyncio.run(run(args, url))


if __name__ == "__main__":
    sys.exit(main())
