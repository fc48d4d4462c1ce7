"""Chaos run: real crmwatch processes on PostgreSQL against the amoCRM emulator, with kills, CRM
faults and dropped database connections; then checks that nothing was lost or done twice.

    python bench/chaos.py --database postgresql+asyncpg://postgres@127.0.0.1:5432/postgres --seconds 60

It makes a scratch database, serves the amoCRM emulator from this process, and starts two
`crmwatch serve --no-workers`, two `crmwatch worker` and two `crmwatch scheduler`. For
`--seconds` it posts amoCRM webhooks (each one unique) to the two servers, SIGKILLs a random
crmwatch process every `--kill-every` seconds (and starts it again), switches the CRM every
`--fault-every` seconds between healthy, 503 outage, a 429 storm longer than the outbox lease and
answers lost after the write, and once terminates every database backend (pg_terminate_backend).
It samples the holders of the scheduler's advisory lock throughout.

Then the CRM turns healthy and the run drains (rows waiting out a backoff are made due, so the
drain takes seconds, not the backoff's minutes), and it checks: every acknowledged webhook stored
and applied exactly once; every task and note the outbox sent is in the CRM exactly once, read
back by its marker; never two scheduler leaders; no 5xx to a valid webhook. It prints a table and
exits 1 when a check fails.

Not covered (yet): PBX call webhooks, Bitrix24, and the SQLite single-process mode.
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
from urllib.parse import quote

import httpx
import uvicorn
from sqlalchemy import func, select, text, update

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.accounts.models import Account  # noqa: E402
from app.db import scratch_database, utcnow  # noqa: E402
from app.findings.scheduler import SCHEDULER_LOCK_KEY  # noqa: E402
from app.ingest.models import InboxEvent  # noqa: E402
from app.migrate import upgrade  # noqa: E402
from app.outbox.models import OutboxAction  # noqa: E402
from app.rules import config as rules_config  # noqa: E402
from app.rules.registry import RULES  # noqa: E402
from app.runtime import Runtime  # noqa: E402
from app.settings import Settings  # noqa: E402
from integrations.amocrm.emulator import EmulatorState, create_emulator_app  # noqa: E402

TOKEN = "chaos-token"
SECRET = "chaos-secret-key"
ADMIN = "chaos-admin-token"
PIPELINE, STAGE, MANAGER = 4100000, 41000001, 8100002
FAULTS = ("storm", "lost_answers", "outage", "healthy")  # in turn, so a short run meets each


@dataclass
class Tally:
    webhooks_sent: int = 0
    webhooks_acked: int = 0
    webhooks_5xx: int = 0
    webhooks_refused: int = 0  # connection refused or reset: the server was being killed
    kills: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    backends_terminated: int = 0
    leader_samples: list[int] = field(default_factory=list)
    acked_tokens: list[str] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_emulator(state: EmulatorState, port: int) -> uvicorn.Server:
    config = uvicorn.Config(
        create_emulator_app(state, rate_limit_per_s=None), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server


async def seed(url: str, emulator_port: int, deals: int, state: EmulatorState) -> str:
    """The emulated account with `deals` open deals and no tasks, and its crmwatch account (queued
    for a backfill). Returns the account's hook key."""
    state.add_token(TOKEN)
    state.add_user(MANAGER, "Дмитрий Волков", "dv@shop.example")
    state.add_pipeline(PIPELINE, "Продажи", [(STAGE, "Первичный контакт", 10)], is_main=True)
    old = int(time.time()) - 20 * 86400
    for i in range(deals):
        state.add_lead(31000001 + i, f"Сделка {i}", PIPELINE, STAGE, responsible_user_id=MANAGER, created_at=old)
    rt = Runtime.build(Settings(database_url=url, secret_key=SECRET, log_json=False))
    key = uuid.uuid4().hex
    try:
        async with rt.sessions() as s, s.begin():
            account = Account(
                name="Хаос",
                crm="amocrm",
                base_url=f"http://127.0.0.1:{emulator_port}",
                key=key,
                external_id=str(state.account["id"]),
                subdomain=state.account["subdomain"],
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
            doc = {"rules": {name: {"enabled": name == "deal_without_task"} for name in RULES}}
            await rules_config.save(s, account.id, rules_config.RulesDocument.model_validate(doc))
    finally:
        await rt.dispose()
    return key


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


async def post_webhooks(tally: Tally, ports: list[int], key: str, deals: int, state: EmulatorState, until: float):
    rng = random.Random(7)
    n = 0
    async with httpx.AsyncClient(timeout=10) as client:
        while time.monotonic() < until:
            n += 1
            token = f"chaos-{n}-x"
            stamp = int(time.time()) + n
            if n % 4 == 0:
                # A new deal with no task, made 20 days ago: its finding opens now, under the chaos,
                # and its task and note go out through the CRM's faults.
                deal = 32000000 + n
                state.add_lead(
                    deal, f"Сделка {token}", PIPELINE, STAGE, responsible_user_id=MANAGER, created_at=stamp - 86400 * 20
                )
                body = webhook("add", deal, token, stamp, state.account["id"])
            else:
                body = webhook("update", 31000001 + rng.randrange(deals), token, stamp, state.account["id"])
            port = rng.choice(ports)
            tally.webhooks_sent += 1
            try:
                resp = await client.post(
                    f"http://127.0.0.1:{port}/hooks/amocrm/{key}",
                    content=body,
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )
            except httpx.TransportError:
                tally.webhooks_refused += 1
            else:
                if resp.status_code >= 500:
                    tally.webhooks_5xx += 1
                elif resp.status_code < 300:
                    tally.webhooks_acked += 1
                    tally.acked_tokens.append(token)
            await asyncio.sleep(0.05)


async def chaos(tally: Tally, fleet: Fleet, state: EmulatorState, url: str, args: argparse.Namespace, until: float):
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
                state.healthy()
                if fault == "outage":
                    state.outage(args.fault_every)
                elif fault == "storm":  # longer than the lease, each 429 with a Retry-After
                    state.rate_limit_storm(args.lease * 1.5, retry_after=1)
                elif fault == "lost_answers":
                    state.lose_answers(args.fault_every)
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


async def verify(url: str, state: EmulatorState, tally: Tally) -> dict[str, int]:
    rt = Runtime.build(Settings(database_url=url, secret_key=SECRET, log_json=False))
    try:
        async with rt.reads() as s:
            inbox = list(await s.execute(select(InboxEvent.payload, InboxEvent.status)))
            rows = list(await s.scalars(select(OutboxAction)))
    finally:
        await rt.dispose()
    stored = Counter(m for payload, _ in inbox for m in re.findall(r"chaos-\d+-x", payload or ""))
    acked = set(tally.acked_tokens)
    texts = [t.get("text") or "" for t in state.tasks.values()] + [
        (n.get("params") or {}).get("text") or "" for n in state.notes.values()
    ]
    # A task or note names its row by its page's link (/f/<id>-<signature>), older ones by #cw<id>.
    in_crm = Counter(int(a or b) for t in texts for a, b in re.findall(r"#cw(\d+)\b|/f/(\d+)-", t))
    writes = [r for r in rows if r.kind in ("create_task", "add_note")]
    return {
        "webhooks acked but not stored": len([t for t in acked if stored[t] == 0]),
        "webhooks stored twice": len([t for t, n in stored.items() if n > 1]),
        "inbox rows not applied": len([1 for _, status in inbox if status != "done"]),
        "outbox rows": len(rows),
        "tasks+notes sent": len([r for r in writes if r.status == "sent"]),
        "tasks+notes missing in CRM": len([r for r in writes if r.status != "cancelled" and in_crm[r.id] == 0]),
        "tasks+notes duplicated in CRM": len([r for r in writes if in_crm[r.id] > 1]),
        "outbox rows dead": len([r for r in rows if r.status == "dead"]),
    }


async def run(args: argparse.Namespace, url: str) -> int:
    if True:
        state = EmulatorState()
        emulator_port = free_port()
        emulator = serve_emulator(state, emulator_port)
        key = await seed(url, emulator_port, args.deals, state)
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
        }
        logs = Path(tempfile.mkdtemp(prefix="crmwatch-chaos-"))
        fleet = Fleet(env, ports, logs)
        tally = Tally()
        fleet.start_all()
        try:
            ready = await fleet_ready(ports, url)
            until = time.monotonic() + args.seconds
            await asyncio.gather(
                post_webhooks(tally, ports, key, args.deals, state, until), chaos(tally, fleet, state, url, args, until)
            )
            state.healthy()
            took = await drain(url, args.drain_timeout)
            found = await verify(url, state, tally)
        finally:
            fleet.stop_all()
            emulator.should_exit = True
    leaders = max(tally.leader_samples or [0])
    table = [
        ("seconds to start the fleet", f"{ready:.1f}"),
        ("seconds of chaos", args.seconds),
        (
            "webhooks sent / acked / refused (server killed)",
            f"{tally.webhooks_sent} / {tally.webhooks_acked} / {tally.webhooks_refused}",
        ),
        ("5xx to a valid webhook", tally.webhooks_5xx),
        ("kills (SIGKILL)", ", ".join(f"{k} {n}" for k, n in sorted(tally.kills.items())) or 0),
        ("CRM fault switches", ", ".join(f"{k} {n}" for k, n in sorted(tally.faults.items())) or 0),
        ("429s answered by the CRM", state.rejected_429),
        ("database backends terminated", tally.backends_terminated),
        ("scheduler leaders at once (max of samples)", f"{leaders} ({len(tally.leader_samples)} samples)"),
        *found.items(),
        ("time to drain after the chaos (s)", f"{took:.1f}"),
        ("process logs", str(logs)),
    ]
    width = max(len(k) for k, _ in table)
    for k, v in table:
        print(f"{k:<{width}}  {v}")
    failed = (
        tally.webhooks_5xx
        or leaders > 1
        or took != took  # nan: did not drain
        or found["webhooks acked but not stored"]
        or found["webhooks stored twice"]
        or found["inbox rows not applied"]
        or found["tasks+notes missing in CRM"]
        or found["tasks+notes duplicated in CRM"]
        or found["outbox rows dead"]
        or not found["tasks+notes sent"]
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
