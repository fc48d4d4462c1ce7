"""The background roles, one list for `crmwatch serve` (app/main.py) and `crmwatch worker`
(app/cli.py): each loop runs until `stop` is set. The sweep scheduler runs beside them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from app.findings.scheduler import SweepScheduler
from app.ingest import catchup
from app.ingest import worker as inbox
from app.outbox import delivery
from app.runtime import Runtime
from app.sync import service as sync

Loop = Callable[[Runtime, asyncio.Event], Awaitable[None]]

# (task name, loop): the inbox first, as it carries the webhooks.
WORKERS: list[tuple[str, Loop]] = [
    ("inbox-worker", inbox.run_forever),
    ("sync-worker", sync.run_forever),
    ("outbox-worker", delivery.run_forever),
    ("catchup-worker", catchup.run_forever),
]


def start(rt: Runtime, stop: asyncio.Event) -> list[asyncio.Task[None]]:
    """Every worker as a task of the running loop."""
    return [asyncio.create_task(loop(rt, stop), name=name) for name, loop in WORKERS]


__all__ = ["WORKERS", "SweepScheduler", "start"]
