"""The same migrations build, tear down and rebuild the schema on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

import app.models_all  # noqa: F401
from app.db import Base
from app.migrate import alembic_config


def _inspect(db_url: str, look: Any) -> Any:
    """`look(sync connection)` on the test database, through the app's own async driver."""

    async def run() -> Any:
        engine = create_async_engine(db_url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(look)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _state(conn: Any) -> tuple[set[str], str | None]:
    tables = set(inspect(conn).get_table_names()) - {"alembic_version"}
    return tables, MigrationContext.configure(conn).get_current_revision()


def test_downgrade_and_upgrade_again(db_url):
    cfg = alembic_config(db_url)
    head = ScriptDirectory.from_config(cfg).get_current_head()
    built, revision = _inspect(db_url, _state)
    assert revision == head and {t.name for t in Base.metadata.sorted_tables} <= built

    command.downgrade(cfg, "base")
    assert _inspect(db_url, _state) == (set(), None)  # every table gone, no revision left

    command.upgrade(cfg, "head")
    command.upgrade(cfg, "head")  # idempotent
    assert _inspect(db_url, _state) == (built, head)


def test_models_and_migrations_agree(db_url):
    """On both databases: a model changed without a migration shows up as a difference."""

    def differences(conn: Any) -> tuple[list[Any], set[str]]:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), Base.metadata)
        return diff, set(inspect(conn).get_table_names())

    diff, tables = _inspect(db_url, differences)
    assert diff == [], f"models changed without a migration: {diff}"
    assert {"accounts", "inbox_events", "deals", "tasks", "notes", "contacts", "stage_history"} <= tables
