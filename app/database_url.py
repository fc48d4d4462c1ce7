"""The spellings of a database URL people actually write, mapped to the async drivers crmwatch
runs on (asyncpg, aiosqlite), and a one-line explanation for everything else."""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

EXAMPLES = "postgresql://user:password@host:5432/db or sqlite:///./crmwatch.db"
# What users write → the driver crmwatch installs and runs.
ASYNC_DRIVERS = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}


class DatabaseUrlError(ValueError):
    """The URL cannot name a database crmwatch can use; the message says what to write instead."""


def parse(url: str) -> URL:
    try:
        parsed = make_url(url.strip())
    except ArgumentError:
        raise DatabaseUrlError(f"CRMWATCH_DATABASE_URL is not a database URL; write it like {EXAMPLES}") from None
    driver = ASYNC_DRIVERS.get(parsed.drivername)
    if driver is None:
        backend = parsed.drivername.split("+")[0]
        if backend in ("postgres", "postgresql", "sqlite"):
            raise DatabaseUrlError(
                f"CRMWATCH_DATABASE_URL names the driver {parsed.drivername!r}; crmwatch runs "
                f"on asyncpg and aiosqlite: write it like {EXAMPLES}"
            )
        raise DatabaseUrlError(
            f"CRMWATCH_DATABASE_URL names {backend!r}; crmwatch runs on PostgreSQL or SQLite: write it like {EXAMPLES}"
        )
    return parsed.set(drivername=driver)


def normalize(url: str) -> str:
    """`postgres://…` and `postgresql://…` become `postgresql+asyncpg://…`, `sqlite:///…` becomes
    `sqlite+aiosqlite:///…`; the password stays as written (percent-escaped)."""
    return parse(url).render_as_string(hide_password=False)


def describe(url: str) -> str:
    """Where the URL points, for messages: never the password."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite at {parsed.database or ':memory:'}"
    return f"PostgreSQL at {parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"
