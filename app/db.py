"""Engine, sessions and the few dialect differences between SQLite and PostgreSQL.

Services never commit: the caller (an endpoint, a worker loop) owns the transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BigInteger,
    Date,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    any_,
    bindparam,
    event,
    literal,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator

# Stable constraint names make migrations reproducible on both databases.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL wants 64 bits for busy tables.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on both databases (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def utcnow() -> datetime:
    return datetime.now(UTC)


# What every new connection runs once, outside any transaction, before its first use: the
# temporary tables of code that would otherwise create them again in every transaction (where a
# rollback would also take them away). A module registers a function of the dialect that
# returns its statements; `connection.info[CONNECTION_SETUP_DONE]` tells that they ran.
CONNECTION_SETUP: list[Callable[[Any], list[str]]] = []
CONNECTION_SETUP_DONE = "crmwatch_connection_setup"


def _install_connection_setup(engine: AsyncEngine) -> None:
    dialect = engine.sync_engine.dialect

    @event.listens_for(engine.sync_engine, "connect")
    def _setup(dbapi_conn: Any, record: Any) -> None:
        statements = [sql for build in CONNECTION_SETUP for sql in build(dialect)]
        if dialect.name == "postgresql":

            async def run(driver_conn: Any) -> None:
                for sql in statements:  # asyncpg outside a transaction: each commits at once
                    await driver_conn.execute(sql)

            dbapi_conn.run_async(run)
        else:
            cur = dbapi_conn.cursor()
            for sql in statements:
                cur.execute(sql)
            cur.close()
        record.info[CONNECTION_SETUP_DONE] = True


def make_engine(url: str, *, read_only: bool = False, **kwargs: Any) -> AsyncEngine:
    """An engine for `url`. On SQLite, `read_only` gives one whose transactions do not take the
    write lock (see _sqlite_begin), so readers never queue behind a writer."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            # WAL lets readers run beside the single writer; NORMAL keeps commits durable
            # against a process crash (only an OS crash can lose the last transactions).
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
            # SQLite has no time zones: the reports' local_day() is this Python function there.
            dbapi_conn.create_function("crmwatch_local_day", 2, _sqlite_local_day, deterministic=True)
            # Take over transaction control from the driver (see _sqlite_begin).
            dbapi_conn.isolation_level = None

        _install_connection_setup(engine)
        if read_only:
            return engine

        @event.listens_for(engine.sync_engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # A deferred transaction that reads first and writes later cannot wait for the
            # write lock: SQLite fails it at once with "database is locked" when another
            # connection wrote in between. IMMEDIATE takes the lock up front, so the busy
            # timeout applies and concurrent writers queue instead of failing.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    engine = create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10, **kwargs)
    _install_connection_setup(engine)
    return engine


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def is_postgres(session_or_engine: AsyncSession | AsyncEngine) -> bool:
    bind = session_or_engine.bind if isinstance(session_or_engine, AsyncSession) else session_or_engine
    return bind.dialect.name == "postgresql"


def dialect_insert(session: AsyncSession, table: Any) -> Any:
    """An INSERT that knows ON CONFLICT on both supported databases."""
    return (postgresql.insert if is_postgres(session) else sqlite.insert)(table)


# Above this many values an IN-list changing at every execution is one array parameter on
# PostgreSQL (among()): rendered value by value into the SQL, a tick's thousand deals cost more
# than running the query. (Below it the IN-list stays: the planner sees how few there are.)
MANY_DEALS = 50


def among(session_or_dialect: Any, column: Any, values: Any) -> Any:
    """`column IN (values)`, as `= ANY($1)` on PostgreSQL for more than MANY_DEALS values."""
    values = list(values)
    name = session_or_dialect if isinstance(session_or_dialect, str) else dialect_of(session_or_dialect)
    if name == "postgresql" and len(values) > MANY_DEALS:
        return column == any_(bindparam(None, list(values), type_=postgresql.ARRAY(column.type)))
    if len(values) == 1:
        # The same test, but a plain parameter: an IN-list is rendered into the statement's text
        # again at every execution.
        return column == bindparam(None, values[0], type_=column.type)
    return column.in_(list(values))


class Prepared:
    """A Core statement compiled once, run with its parameters put in place here (PostgreSQL).

    At every execution SQLAlchemy looks up the statement's compiled form by its cache key, whose
    hash it computes afresh from the whole statement, then builds the parameters name by name.
    For a rules statement of a few thousand nodes that cost more CPU than the database spent
    running it for one deal, twice per event (its comparison and its moments). Here the string
    and the order of the values are computed once; an execution looks up each value and applies
    the bind's processor, as SQLAlchemy would (0.35 ms less CPU per statement, measured on the
    bench's million-deal account). Rows come back as the driver returns them, with no result
    processing: only for statements whose columns need none on asyncpg (strings, numbers,
    booleans, timestamptz as an aware datetime)."""

    __slots__ = ("slots", "sql")

    def __init__(self, statement: Any, dialect: Any) -> None:
        compiled = statement.compile(dialect=dialect)
        if not compiled.positional or compiled.post_compile_params or compiled.literal_execute_params:
            raise ValueError("a positional statement without expanding parameters only")
        processors = compiled._bind_processors
        self.sql: str = compiled.string
        self.slots = tuple((name, compiled.binds[name], processors.get(name)) for name in compiled.positiontup or ())

    def arguments(self, params: dict[str, Any]) -> tuple[Any, ...]:
        values = []
        for name, bind, processor in self.slots:
            if name in params:
                value = params[name]
            elif bind.required:
                raise KeyError(f"no value for the required parameter {name!r}")
            else:
                value = bind.effective_value
            values.append(processor(value) if processor is not None else value)
        return tuple(values)

    async def execute(self, s: AsyncSession, params: dict[str, Any]) -> Any:
        """Runs it in the session's transaction; returns the driver's result (rows, rowcount).
        Objects the session holds unflushed are flushed first, as its own execute() would."""
        if s.autoflush:
            await s.flush()
        connection = await s.connection()
        return await connection.exec_driver_sql(self.sql, self.arguments(params))


_prepared: dict[int, tuple[Any, Prepared | None]] = {}


def prepared(statement: Any, dialect: Any) -> Prepared | None:
    """The statement's Prepared form, made at its first execution; None for one it cannot take
    (an expanding IN-list, rendered anew at each execution). Only for statements built once and
    kept (a template's): the cache holds them by identity."""
    kept = _prepared.get(id(statement))
    if kept is not None and kept[0] is statement:
        return kept[1]
    if len(_prepared) > 10_000:
        _prepared.clear()
    try:
        made: Prepared | None = Prepared(statement, dialect)
    except ValueError:
        made = None
    _prepared[id(statement)] = (statement, made)
    return made


async def execute_kept(s: AsyncSession, statement: Any, params: dict[str, Any], **options: Any) -> Any:
    """Executes a statement built once and kept: on PostgreSQL in its Prepared form where it has
    one (its rows then unprocessed: see Prepared), else as usual."""
    if is_postgres(s):
        made = prepared(statement, s.bind.dialect)
        if made is not None:
            return await made.execute(s, params)
    return await s.execute(statement, params, **options)


def dialect_of(session_or_engine: Any) -> str:
    bind = session_or_engine.bind if isinstance(session_or_engine, AsyncSession) else session_or_engine
    return str(bind.dialect.name)


class epoch(FunctionElement[float]):
    """Seconds since 1970 of a datetime column, on both databases (for interval arithmetic)."""

    type = Float()
    inherit_cache = True
    name = "epoch"


class float_epoch(FunctionElement[float]):
    """epoch() as a double precision number on PostgreSQL: date_part('epoch', …), the same
    value as EXTRACT(EPOCH FROM …) rounded to a float, which EXTRACT returns as numeric (since
    PostgreSQL 14) and costs 2.5x as much to compute (a sweep computes it for every deal's moment)."""

    type = Float()
    inherit_cache = True
    name = "float_epoch"


@compiles(epoch, "sqlite")
@compiles(float_epoch, "sqlite")  # SQLite's julianday arithmetic is a float already
def _epoch_sqlite(element: epoch | float_epoch, compiler: Any, **kw: Any) -> str:
    return f"((julianday({compiler.process(element.clauses, **kw)}) - 2440587.5) * 86400.0)"


@compiles(epoch, "postgresql")
def _epoch_pg(element: epoch, compiler: Any, **kw: Any) -> str:
    return f"EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)})"


@compiles(float_epoch, "postgresql")
def _float_epoch_pg(element: float_epoch, compiler: Any, **kw: Any) -> str:
    return f"date_part('epoch', {compiler.process(element.clauses, **kw)})"


class local_day(FunctionElement[date]):
    """The calendar date of a UTC datetime column in a time zone: local_day(column, "Europe/Moscow")."""

    type = Date()
    inherit_cache = True
    name = "local_day"


@compiles(local_day, "postgresql")
def _local_day_pg(element: local_day, compiler: Any, **kw: Any) -> str:
    column, zone = list(element.clauses)
    return f"CAST(timezone({compiler.process(zone, **kw)}, {compiler.process(column, **kw)}) AS DATE)"


@compiles(local_day, "sqlite")
def _local_day_sqlite(element: local_day, compiler: Any, **kw: Any) -> str:
    return f"crmwatch_local_day({compiler.process(element.clauses, **kw)})"


class _local_day_within(FunctionElement[date]):
    type = Date()
    inherit_cache = True
    name = "local_day_within"


@compiles(_local_day_within, "postgresql")
def _local_day_within_pg(element: _local_day_within, compiler: Any, **kw: Any) -> str:
    column, _, first, bounds = list(element.clauses)  # the zone is for SQLite (an unused bind fails)
    column, first, bounds = (compiler.process(c, **kw) for c in (column, first, bounds))
    # width_bucket: how many of the sorted day starts are <= the instant (a binary search).
    return f"({first} + width_bucket({column}, {bounds}) - 1)"


@compiles(_local_day_within, "sqlite")
def _local_day_within_sqlite(element: _local_day_within, compiler: Any, **kw: Any) -> str:
    column, zone, _, _ = list(element.clauses)
    return f"crmwatch_local_day({compiler.process(column, **kw)}, {compiler.process(zone, **kw)})"


def local_day_within(column: Any, timezone: str, start: datetime, end: datetime) -> Any:
    """local_day(column, timezone) for a column the statement bounds to [start, end): the same
    dates, but on PostgreSQL found among the span's local midnights, worked out here once, rather
    than by a time-zone conversion of each row (a quarter of a month-of-calls report's time).
    Outside [start, end) the answer is meaningless: only use it where the statement says so."""
    zone = ZoneInfo(timezone)
    first = start.astimezone(zone).date()
    bounds, day = [start], first + timedelta(days=1)
    while (midnight := datetime.combine(day, time(0), zone).astimezone(UTC)) < end:
        bounds.append(midnight)
        day += timedelta(days=1)
    return _local_day_within(
        column,
        literal(timezone, String()),
        literal(first, Date()),
        bindparam(None, bounds, type_=postgresql.ARRAY(DateTime(timezone=True))),
    )


class local_month(FunctionElement[str]):
    """'YYYY-MM' of a UTC datetime column in a time zone, on both databases."""

    type = String()
    inherit_cache = True
    name = "local_month"


@compiles(local_month, "postgresql")
def _local_month_pg(element: local_month, compiler: Any, **kw: Any) -> str:
    column, zone = list(element.clauses)
    return f"to_char(timezone({compiler.process(zone, **kw)}, {compiler.process(column, **kw)}), 'YYYY-MM')"


@compiles(local_month, "sqlite")
def _local_month_sqlite(element: local_month, compiler: Any, **kw: Any) -> str:
    return f"substr(crmwatch_local_day({compiler.process(element.clauses, **kw)}), 1, 7)"


def _sqlite_local_day(stored: str | None, zone: str) -> str | None:
    if stored is None:
        return None
    at = datetime.fromisoformat(stored)
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at
    return at.astimezone(ZoneInfo(zone)).date().isoformat()


async def _run_outside_transaction(url: str, statement: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@contextlib.contextmanager
def scratch_database(url: str, prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database beside the one `url` names, dropped afterwards whatever
    happened: what the test suite and the benchmarks run in. Yields its URL."""
    name = f"{prefix}_{secrets.token_hex(5)}"
    asyncio.run(_run_outside_transaction(url, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_run_outside_transaction(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
