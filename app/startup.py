"""What a process checks before it starts work: that its database can be reached. A database that
is down is retried for `database_wait_seconds` with a log line per attempt (a container started
beside its database usually wins the race); anything else fails at once, in one sentence."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from app.database_url import describe

log = logging.getLogger("crmwatch.startup")


class StartupError(Exception):
    """The process cannot start; the message says what is wrong and what to do."""


def _unreachable(exc: BaseException) -> bool:
    """A server that is down or not yet up (worth waiting for), not a wrong password or database name."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionError | socket.gaierror | TimeoutError | asyncio.TimeoutError):
            return True
        if type(cause).__name__ in ("CannotConnectNowError", "ConnectionDoesNotExistError"):
            return True  # asyncpg: the server is starting up or shutting down
        if isinstance(cause, OSError) and cause.errno is not None:
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _reason(exc: BaseException) -> str:
    inner = getattr(exc, "orig", None) or exc
    text_ = str(inner).strip().splitlines()[0] if str(inner).strip() else type(inner).__name__
    return text_.removeprefix("<class ").strip()


def _check_sqlite(url: str) -> None:
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    folder = Path(database).expanduser().resolve().parent
    if not folder.is_dir():
        raise StartupError(
            f"the folder {folder} for the SQLite database does not exist: create it, or point "
            "CRMWATCH_DATABASE_URL elsewhere"
        )


async def _ping(url: str) -> None:
    before = set(threading.enumerate())
    engine = create_async_engine(url, pool_pre_ping=False)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
        # After a failed connect aiosqlite stops its thread without waiting for it; the thread then
        # answers this loop, which by then may be closed, and prints a traceback under our one-line
        # error. Let such threads end while the loop is still open.
        for thread in set(threading.enumerate()) - before:
            if "_connection_worker_thread" in thread.name:
                await asyncio.to_thread(thread.join, 2.0)


async def wait_for_database(url: str, wait_seconds: float, pause: float = 1.0) -> None:
    """Returns once the database answers; raises StartupError when it cannot be used."""
    if make_url(url).get_backend_name() == "sqlite":
        _check_sqlite(url)
    where = describe(url)
    pause = min(pause, wait_seconds / 5) if wait_seconds > 0 else pause  # a short wait still retries
    deadline = time.monotonic() + wait_seconds
    attempt = 0
    while True:
        attempt += 1
        try:
            await asyncio.wait_for(_ping(url), timeout=max(pause * 5, 5.0))
            return
        except Exception as exc:  # whatever it is, it becomes one sentence, never a traceback
            if not _unreachable(exc):
                raise StartupError(
                    f"{where} did not accept the connection: {_reason(exc)}; check CRMWATCH_DATABASE_URL"
                ) from None
            if time.monotonic() >= deadline:
                raise StartupError(
                    f"{where} did not answer for {wait_seconds:g} s ({_reason(exc)}): start it, or "
                    "fix CRMWATCH_DATABASE_URL (CRMWATCH_DATABASE_WAIT_SECONDS sets how long to "
                    "wait)"
                ) from None
            log.warning(
                "database.unreachable",
                extra={"database": where, "attempt": attempt, "error": _reason(exc), "retry_in_seconds": pause},
            )
            await asyncio.sleep(pause)
