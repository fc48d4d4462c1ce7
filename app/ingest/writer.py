"""Durable intake with group commit.

A webhook is answered only after its row is committed. Committing each request on its own
costs one fsync per webhook and, on SQLite, makes concurrent requests queue for the single
write lock. Instead one writer task takes every row waiting at that moment, inserts them
in one transaction and then releases all their requests together: the same durability,
a fraction of the commits. Duplicates are dropped by the unique key (ON CONFLICT DO NOTHING).

The writer keeps one connection of its own rather than checking one out of the pool for each
group: the check-out, the liveness ping and the reset cost about as much as the insert itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .models import InboxEvent

log = logging.getLogger(__name__)

MAX_GROUP = 500


@dataclass(slots=True)
class _Pending:
    row: dict[str, Any]
    done: asyncio.Future[None]


class InboxWriter:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        self._statement = dialect.insert(InboxEvent.__table__).on_conflict_do_nothing(
            index_elements=["account_id", "source", "dedup_key"]
        )
        # None is the stop marker: everything queued before it is still committed.
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._conn: AsyncConnection | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="inbox-writer")

    async def stop(self) -> None:
        if self._task is None:
            return
        await self._queue.put(None)
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        await self._drop_connection()

    async def write(self, row: dict[str, Any]) -> None:
        """Returns once the row is committed (or was already there); raises if it could not be."""
        if self._task is None:
            await self._insert([row])
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(row, fut))
        await fut

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                return
            group = [first]
            while len(group) < MAX_GROUP and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stopping = True
                    break
                group.append(item)
            try:
                await self._insert([p.row for p in group])
            except Exception:
                # One bad row must not fail its neighbours: retry them one by one.
                log.exception("inbox.group_commit_failed", extra={"size": len(group)})
                for p in group:
                    try:
                        await self._insert([p.row])
                    except Exception as exc:
                        _resolve(p.done, exc)
                    else:
                        _resolve(p.done, None)
            else:
                for p in group:
                    _resolve(p.done, None)

    async def write_many(self, rows: list[dict[str, Any]]) -> None:
        """Commits rows in one transaction, bypassing the group-commit queue (a drain of queued deliveries)."""
        if rows:
            await self._insert(rows)

    async def _insert(self, rows: list[dict[str, Any]]) -> None:
        if self._task is None:  # not started (tests, one-off use): no connection to keep
            async with self._engine.begin() as conn:
                await conn.execute(self._statement, rows)
            return
        # Core on a bare connection: the ORM session would add nothing here but overhead.
        if self._conn is None:
            self._conn = await self._engine.connect()
        try:
            async with self._conn.begin():
                await self._conn.execute(self._statement, rows)
        except Exception:
            # A broken connection (a restarted database) must not break every later group:
            # the next group opens a fresh one.
            await self._drop_connection()
            raise

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


def _resolve(fut: asyncio.Future[None], exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is None:
        fut.set_result(None)
    else:
        fut.set_exception(exc)
