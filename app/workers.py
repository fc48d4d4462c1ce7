"""The background roles, one list for `crmwatch serve` (app/main.py) and `crmwatch worker`
(app/cli.py): each loop runs until `stop` is set. The sweep scheduler runs beside them.

Stopping is bounded (SIGTERM must not wait on a failing CRM): every loop runs with the stop event
as its CRM clients' stop signal (integrations.http.stops_on), so a retry wait ends at once with
CrmStopping and the work goes back for the next process; a loop still busy STOP_GRACE_S after stop
(a request that hangs until its timeout) is cancelled, and gives its claims back on the way out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from app.digest import scheduler as digest
from app.findings import scheduler as findings_scheduler
from app.findings.scheduler import SweepScheduler
from app.ingest import catchup
from app.ingest import worker as inbox
from app.outbox import delivery
from app.plans import behind as plan_pace
from app.retention import service as retention
from app.runtime import Runtime
from app.settings import Settings
from app.sync import service as sync
from integrations.http import stops_on

log = logging.getLogger(__name__)

Loop = Callable[[Runtime, asyncio.Event], Awaitable[None]]

# After stop: how long the loops may take to finish their step before they are cancelled, and
# then to give their claims back. Together well inside the 10 s a supervisor waits after SIGTERM.
STOP_GRACE_S = 3.0
CANCEL_GRACE_S = 3.0


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
    ("due-tick", lambda s: s.due_tick_seconds, findings_scheduler.tick_due),
    ("retention-purge", lambda s: s.retention_purge_minutes * 60, retention.purge),
    ("morning-digest", lambda s: digest.TICK_SECONDS, digest.due),
    ("plan-pace", lambda s: plan_pace.REFRESH_SECONDS, plan_pace.refresh_due),
]


def scheduler(rt: Runtime) -> SweepScheduler:
    """The sweep scheduler with every periodic job, for `serve`, `worker` and `scheduler`."""
    return SweepScheduler(
        rt, rt.settings.scheduler_tick_seconds, [(name, every(rt.settings), job) for name, every, job in PERIODIC]
    )


async def _until_stopped(loop: Loop, rt: Runtime, stop: asyncio.Event) -> None:
    with stops_on(stop):  # tasks the loop starts inherit it
        await loop(rt, stop)


def start(rt: Runtime, stop: asyncio.Event, names: set[str] | None = None) -> list[asyncio.Task[None]]:
    """Every worker (or those named) as a task of the running loop."""
    return [
        asyncio.create_task(_until_stopped(loop, rt, stop), name=name)
        for name, loop in WORKERS
        if names is None or name in names
    ]


async def finish(rt: Runtime, stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
    """Stops the workers: sets `stop`, wakes the idle ones, lets the busy ones end their step for
    STOP_GRACE_S, then cancels what is left. Returns within STOP_GRACE_S + CANCEL_GRACE_S."""
    stop.set()
    for wakeup in (rt.inbox_wakeup, rt.sync_wakeup, rt.outbox_wakeup):
        wakeup.set()
    if not tasks:
        return
    _, busy = await asyncio.wait(tasks, timeout=STOP_GRACE_S)
    for task in busy:
        task.cancel()
    if busy:
        await asyncio.wait(busy, timeout=CANCEL_GRACE_S)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("worker.crashed", extra={"worker": task.get_name()}, exc_info=task.exception())


__all__ = ["PERIODIC", "WORKERS", "SweepScheduler", "finish", "heartbeat", "scheduler", "start"]
