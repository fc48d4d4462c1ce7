"""The same migrations build, tear down and rebuild the schema on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

import app.models_all  # noqa: F401
from app.db import Base
from app.migrate import alembic_config


def test_downgrade_and_upgrade_again(db_url):
    cfg = alembic_config(db_url)
    command.downgrade(cfg, "base")
    command.upgrade(cfg, "head")
    command.upgrade(cfg, "head")  # idempotent


def test_models_and_migrations_agree(db_url):
    if "sqlite" not in db_url:
        return  # one dialect is enough to catch a model changed without a migration
    engine = create_engine(db_url.replace("+aiosqlite", ""))
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), Base.metadata)
        tables = set(inspect(conn).get_table_names())
    assert diff == [], f"models changed without a migration: {diff}"
    assert {"accounts", "inbox_events", "deals", "tasks", "notes", "contacts", "stage_history"} <= tables
