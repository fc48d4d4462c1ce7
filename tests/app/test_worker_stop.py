"""Every worker loop stops within a bounded time of SIGTERM while the CRM is down (issue 17,
defect 6), and leaves its claims for the next process.

The CRM refuses every connection (respx at the wire), and the clients retry with the production
schedule (backoff from 0.5 s to 60 s, six retries: half a minute per call at worst). A loop must
come out of such a wait by itself as soon as it is told to stop, not be cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from pathlib import Path

import httpx
import pytest
import respx
from sqlalchemy import select

from app import workers
from app.accounts.models import Account
from app.db import utcnow
from app.ingest.models import InboxEvent
from app.outbox.models import OutboxAction
from app.sync import service as sync
from tests.app.bitrix24.test_b24_app_mode import install
from tests.app.outbox.outbox_support import T0, add_deals, evaluate, new_account, rules_doc
from tests.conftest import FORM, create_account

# Time a loop has, after stop, to end its step by itself (its retry wait ends at once).
BY_ITSELF_S = 1.5


async def outbox_work(client, rt, amo, b24) -> str:
    rules = rules_doc("deal_without_task", notify={"escalate_after_hours": None, "repeat_hours": None})
    aid = await new_account(rt, amo=amo, rules=rules)
    await add_deals(rt, aid, range(35000001, 35000004), amo=amo)
    await evaluate(rt, aid, T0)
    return "/api/v4/"


async def sync_work(client, rt, amo, b24) -> str:
    await create_account(client)  # its backfill is queued
    return "/api/v4/account"


async def inbox_work(client, rt, amo, b24) -> str:
    from integrations.amocrm.demo_data import DEMO_PIPELINE_ID, seed_demo

    seed_demo(amo, now=1764000000)
    acc = await create_account(client)
    await sync.run_pending(rt)
    thin = (  # a status change that names the lead only: the worker reads the lead from the CRM
        "leads%5Bstatus%5D%5B0%5D%5Bid%5D=31000003&leads%5Bstatus%5D%5B0%5D%5Bstatus_id%5D=41000003"
        f"&leads%5Bstatus%5D%5B0%5D%5Bpipeline_id%5D={DEMO_PIPELINE_ID}"
        "&account%5Bid%5D=29876543&account%5Bsubdomain%5D=demoshop"
    )
    assert (await client.post(f"/hooks/amocrm/{acc['key']}", content=thin, headers=FORM)).status_code == 200
    return "/api/v4/leads"


async def catchup_work(client, rt, amo, b24) -> str:
    await install(client, rt, b24)
    return "event.offline"


async def no_work(client, rt, amo, b24) -> str:
    return ""


WORK = {
    "inbox-worker": inbox_work,
    "sync-worker": sync_work,
    "outbox-worker": outbox_work,
    "catchup-worker": catchup_work,
    "heartbeat": no_work,
}


def test_every_worker_loop_is_covered():
    assert {name for name, _ in workers.WORKERS} == set(WORK)


@pytest.mark.parametrize("name", list(WORK))
async def test_a_loop_stops_at_once_while_the_crm_is_down(client, rt, amo, b24, name):
    path = await WORK[name](client, rt, amo, b24)
    rt.settings.crm_backoff_base_seconds, rt.settings.crm_backoff_cap_seconds = 0.5, 60.0
    rt.http_transport = None  # the real network, where respx refuses every connection
    stop = asyncio.Event()
    with respx.mock(assert_all_called=False) as crm:
        down = crm.route().mock(side_effect=httpx.ConnectError("connection refused"))
        [task] = workers.start(rt, stop, {name})
        if path:
            # Busy in its retry sequence: the second attempt came, the third waits its turn.
            started = time.monotonic()
            while len([c for c in down.calls if path in str(c.request.url)]) < 2:
                assert time.monotonic() - started < 10, f"{name} never reached the CRM"
                await asyncio.sleep(0.05)
        else:
            await asyncio.sleep(0.2)
        asked = time.monotonic()
        await workers.finish(rt, stop, [task])
        took = time.monotonic() - asked
    assert task.done() and not task.cancelled() and task.exception() is None
    assert took < BY_ITSELF_S, f"{name} took {took:.1f} s to stop"

    # Its claims are left for the next process.
    async with rt.sessions() as s:
        rows = list(await s.scalars(select(OutboxAction)))
        accounts = list(await s.scalars(select(Account)))
        inbox = list(await s.scalars(select(InboxEvent)))
    assert not [r for r in rows if r.status == "sending"]
    if name == "outbox-worker":
        assert rows and all(r.status == "pending" and r.next_attempt_at <= utcnow() for r in rows)
    assert not [a for a in accounts if a.sync_state == "running"]
    if name == "sync-worker":
        assert [a.sync_state for a in accounts] == ["queued"]
    assert all(r.status in ("pending", "done") for r in inbox)


async def test_a_loop_stuck_in_a_request_is_cancelled_and_gives_its_claims_back(client, rt, amo, b24, monkeypatch):
    """A CRM that accepts the connection and never answers: the request waits for its timeout,
    longer than the grace; the loop is cancelled and the outbox puts its batch back."""
    await outbox_work(client, rt, amo, b24)
    monkeypatch.setattr(workers, "STOP_GRACE_S", 0.5)
    rt.settings.crm_timeout_seconds = 600
    rt.http_transport = None
    arrived = asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        arrived.set()
        await asyncio.sleep(3600)
        return httpx.Response(200)

    stop = asyncio.Event()
    with respx.mock(assert_all_called=False) as crm:
        crm.route().mock(side_effect=hang)
        tasks = workers.start(rt, stop, {"outbox-worker"})
        await asyncio.wait_for(arrived.wait(), 10)
        asked = time.monotonic()
        await workers.finish(rt, stop, tasks)
        took = time.monotonic() - asked
    assert tasks[0].done() and took < workers.STOP_GRACE_S + workers.CANCEL_GRACE_S
    async with rt.sessions() as s:
        rows = list(await s.scalars(select(OutboxAction)))
    # Back in the queue at once; attempts count the interrupted claim, so the next one reads back first.
    # (Rows no lane had claimed yet when stop came, on a slow machine, are untouched: attempts 0.)
    assert rows and all(r.status == "pending" and r.next_attempt_at <= utcnow() for r in rows), [
        f"{r.id}:{r.status}:{r.attempts}:{(r.next_attempt_at - utcnow()).total_seconds():.1f}" for r in rows
    ]
    assert 1 in {r.attempts for r in rows} and {r.attempts for r in rows} <= {0, 1}


def closed_port() -> int:
    """A local port nothing listens on: every connection to it is refused, as by a CRM that is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_crmwatch_worker_exits_within_ten_seconds_of_sigterm_while_the_crm_is_down(rt, settings, tmp_path):
    """The real process: `crmwatch worker` with the production retry schedule against a CRM that
    refuses connections, busy in the outbox and the sync when SIGTERM comes."""
    rules = rules_doc("deal_without_task", notify={"escalate_after_hours": None, "repeat_hours": None})
    aid = await new_account(rt, base_url=f"http://127.0.0.1:{closed_port()}", rules=rules)
    await add_deals(rt, aid, range(35000001, 35000011))
    await evaluate(rt, aid, T0)
    async with rt.sessions() as s, s.begin():
        account = await s.get(Account, aid)
        account.sync_state, account.sync_requested_at = "queued", utcnow()
    env = {
        **os.environ,
        "CRMWATCH_DATABASE_URL": settings.database_url,
        "CRMWATCH_SECRET_KEY": settings.secret_key.get_secret_value(),
        "CRMWATCH_SECRET_KEY_FILE": str(tmp_path / "unused.secret"),
        "CRMWATCH_LOG_JSON": "true",
    }
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("crmwatch")), "worker", env=env, stdout=log_file, stderr=log_file
        )
        try:
            started = time.monotonic()
            # Both the outbox and the sync are in their retry sequences.
            while not all(f'"path": "{p}"' in log_path.read_text() for p in ("/api/v4/tasks", "/api/v4/account")):
                assert proc.returncode is None, log_path.read_text()
                assert time.monotonic() - started < 30, log_path.read_text()[-3000:]
                await asyncio.sleep(0.1)
            asked = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 15)
            took = time.monotonic() - asked
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0, log_path.read_text()[-3000:]
    assert took < 10, f"the worker took {took:.1f} s to stop"

    async with rt.sessions() as s:
        rows = list(await s.scalars(select(OutboxAction)))
        account = await s.get(Account, aid)
    assert rows and not [r for r in rows if r.status == "sending"]
    assert all(r.next_attempt_at <= utcnow() for r in rows if r.attempts)  # due again for the next process
    assert account.sync_state == "queued"
