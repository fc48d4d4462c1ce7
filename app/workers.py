"""The background roles, one list for `crmwatch serve` (app/main.py) and `crmwatch worker`
(app/cli.py): each loop runs until `stop` is set. The sweep scheduler runs beside them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from app.digest import scheduler as digest
from app.findings.scheduler import SweepScheduler
from app.ingest import catchup
from app.ingest import worker as inbox
from app.outbox import delivery
from app.retention import service as retention
from app.runtime import Runtime
from app.settings import Settings
from app.sync import service as sync

Loop = Callable[[Runtime, asyncio.Event], Awaitable[None]]


async def heartbeat(rt: Runtime, stop: asyncio.Event, every: float = 5.0) -> None:
    """Touches CRMWATCH_HEARTBEAT_FILE while this process's event loop runs: what the container
    health check of a process without HTTP looks at (docker-compose.yml). Unset: waits for stop."""
    path = rt.settings.heartbeat_file
    while not stop.is_set():
        if path:
            # A few bytes to a local file: cheaper than handing them to a thread.
            with open(path, "w") as file:  # noqa: ASYNC230
                file.write(f"{time.time():.0f}\n")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


# (task name, loop): the inbox first, as it carries the webhooks.
WORKERS: list[tuple[str, Loop]] = [
    ("inbox-worker", inbox.run_forever),
    ("sync-worker", sync.run_forever),
    ("outbox-worker", delivery.run_forever),
    ("catchup-worker", catchup.run_forever),
    ("heartbeat", heartbeat),
]


# Periodic jobs the scheduler's leader runs beside the sweeps: (name, interval in seconds, job).
PERIODIC: list[tuple[str, Callable[[Settings], float], Callable[[Runtime], Awaitable[object]]]] = [
    ("retention-purge", lambda s: s.retention_purge_minutes * 60, retention.purge),
    ("morning-digest", lambda s: digest.TICK_SECONDS, digest.due),
]


def scheduler(rt: Runtime) -> SweepScheduler:
    """The sweep scheduler with every periodic job, for `serve`, `worker` and `scheduler`."""
    return SweepScheduler(
        rt, rt.settings.scheduler_tick_seconds, [(name, every(rt.settings), job) for name, every, job in PERIODIC]
    )


def start(rt: Runtime, stop: asyncio.Event) -> list[asyncio.Task[None]]:
    """Every worker as a task of the running loop."""
    return [asyncio.create_task(loop(rt, stop), name=name) for name, loop in WORKERS]


__all__ = ["PERIODIC", "WORKERS", "SweepScheduler", "heartbeat", "scheduler", "start"]
