"""bench/apply.py's mix, tiny: the inbox worker's batches leave the same mirror and the same
active findings as applying the same rows one by one, each with its own re-evaluation.

This is the check the benchmark makes at full size. It holds any faster apply (set-based
batches, several workers) to the result of the simplest one.
"""

from __future__ import annotations

import logging
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, text

from app.db import Base, scratch_database, utcnow
from app.findings.models import Finding
from app.ingest import worker as inbox_worker
from app.ingest.models import InboxEvent
from app.main import create_app
from app.migrate import upgrade
from app.mirror.models import Deal, Task
from app.runtime import Runtime
from app.settings import Settings

# The benchmark's modules are scripts beside each other in bench/, imported the way they import each other.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import applymix

ACCOUNTS, DEALS, EVENTS = 8, 40, 200
# Batches small enough that two loops of one worker (PostgreSQL) hold different accounts at once.
BATCH = 60


@pytest.fixture
def reference_url(db_url: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A second empty, migrated database of the same kind as db_url."""
    if db_url.startswith("sqlite"):
        path = tmp_path / "reference.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    with scratch_database(db_url, "crmwatch_test_ref") as url:
        upgrade(url)
        yield url


async def _runtime(settings: Settings, url: str) -> Runtime:
    rt = Runtime.build(settings.model_copy(update={"database_url": url, "inbox_batch_size": BATCH}))
    if rt.engine.dialect.name == "postgresql":
        async with rt.engine.begin() as conn:
            tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
            await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    return rt


@pytest.fixture
async def runtimes(settings: Settings, db_url: str, reference_url: str) -> AsyncIterator[tuple[Runtime, Runtime]]:
    batch, one_by_one = await _runtime(settings, db_url), await _runtime(settings, reference_url)
    yield batch, one_by_one
    await batch.dispose()
    await one_by_one.dispose()


async def _receive(rt: Runtime, mix: list[applymix.Hook]) -> None:
    """The mix through the real intake, in process (the benchmark posts it over the network)."""
    app = create_app(runtime=rt, run_workers=False)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://crmwatch.test") as http:
            for hook in mix:
                resp = await http.post(
                    hook.path, content=hook.body, headers={"Content-Type": "application/x-www-form-urlencoded"}
                )
                assert resp.status_code == 200, resp.text


async def test_batches_apply_what_one_by_one_applies(
    runtimes: tuple[Runtime, Runtime], caplog: pytest.LogCaptureFixture
) -> None:
    batch, one_by_one = runtimes
    now = utcnow()
    plans = await applymix.seed(batch, ACCOUNTS, DEALS, 7, now)
    assert plans == await applymix.seed(one_by_one, ACCOUNTS, DEALS, 7, now)
    async with batch.reads() as s:
        before = await applymix.snapshot(s)
    mix = applymix.build_mix(plans, EVENTS, 7, now)
    assert len({h.body for h in mix}) == EVENTS
    await _receive(batch, mix)

    # The worker's own path: batches of inbox_batch_size, one re-evaluation per account and batch,
    # as many batches at once as one worker process applies (two on PostgreSQL).
    with caplog.at_level(logging.WARNING, logger="app.ingest.worker"):
        assert await inbox_worker.drain(batch, loops=inbox_worker.apply_loops(batch)) == EVENTS
    # Set-based all the way: no batch fell back to row by row.
    assert not [r for r in caplog.records if r.getMessage() == "inbox.batch_fallback"]
    assert await applymix.replay_one_by_one(batch, one_by_one) == EVENTS

    async with batch.reads() as s:
        after = await applymix.snapshot(s)
        assert await applymix.inbox_counts(s) == {"done": EVENTS}
        kinds = dict((await s.execute(select(Finding.rule, func.count()).group_by(Finding.rule))).all())
        closed = await s.scalar(select(func.count()).select_from(Deal).where(Deal.is_closed))
        moved = await s.scalar(select(func.count()).select_from(Task).where(Task.due_moved_at.is_not(None)))
    async with one_by_one.reads() as s:
        reference = await applymix.snapshot(s)
        assert await applymix.inbox_counts(s) == {"done": EVENTS}
    assert applymix.differences(after, reference) == {label: [] for label in applymix.COMPARED}

    # Not a vacuous equality: the mix changed the mirror and the findings in every way it can.
    changed = applymix.differences(before, after)
    for label in ("deals", "tasks", "notes", "calls", "stage_history", "active findings"):
        assert changed[label], f"the mix changed no {label}"
    assert closed and moved
    assert {
        "deal_without_task",
        "overdue_task",
        "empty_comment",
        "task_rescheduled_without_contact",
        "call_not_logged",
        "missed_call_not_returned",
    } <= set(kinds)
    async with batch.reads() as s:
        assert await s.scalar(select(func.count()).select_from(InboxEvent).where(InboxEvent.attempts > 0)) == 0
