"""Async database access with SQLModel (SQLAlchemy's asyncio engine underneath).

PostgreSQL via asyncpg in tests and production, SQLite via aiosqlite as the local default.
Each service owns its own database (its own URL) and its own alembic migrations, with a
version table named after the service so that services could even share one database
without touching each other's tables. Also what every service's pooled connections and
bulk writes need: the idle-only ping and the one-statement bulk insert.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData, event, exc, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from .health import Dependency
from .telemetry import traces_exported


def make_engine(url: str, pool_size: int = 10, max_overflow: int = 20) -> AsyncEngine:
    """A pooled async engine, traced by OpenTelemetry when spans are exported (statements only,
    never parameters)."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    else:
        engine = create_async_engine(url, pool_size=pool_size, max_overflow=max_overflow)
        ping_when_idle(engine)
    if traces_exported():
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        SQLAlchemyInstrumentor().instrument(engine=engine.sync_engine)
    return engine


PING_AFTER_IDLE_S = 10.0


def ping_when_idle(engine: AsyncEngine, idle_s: float = PING_AFTER_IDLE_S) -> None:
    """Check a pooled connection before use only if it sat idle for `idle_s`, replacing it
    when the server dropped it (a restart, an idle timeout). SQLAlchemy's `pool_pre_ping`
    checks at every checkout: with asyncpg that is three round trips (BEGIN, a query,
    ROLLBACK) before each transaction, doubling a one-statement hold's. A connection
    in steady use is known alive; one that dies while in use fails its statement, which
    invalidates it and the pool's older connections, and the callers retry."""

    @event.listens_for(engine.sync_engine, "checkin")
    def _idle_from(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < idle_s:
            return
        try:
            dbapi_connection.ping()
        except Exception as error:
            raise exc.DisconnectionError("the pooled connection was dropped") from error


def database_check(engine: AsyncEngine) -> Dependency:
    """The health check of a service's database (`health`): `SELECT 1` on a connection of
    its own, outside the service's pool (a pool drained by load must not look like a
    database that is down). PostgreSQL: one pooled connection, pinged before each use and
    replaced when the server dropped it; SQLite is a local file, checked on the engine."""
    if engine.dialect.name == "sqlite":
        probe = engine
    else:
        probe = create_async_engine(engine.url, pool_size=1, max_overflow=0, pool_pre_ping=True)

    async def check() -> None:
        async with probe.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def close() -> None:
        if probe is not engine:
            await probe.dispose()

    return Dependency("database", check, close)


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]  # sqlite3's, untyped in the hook
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA secure_delete=ON")  # erased values leave the file, not only the results
    cursor.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


@asynccontextmanager
async def transaction(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session inside one transaction: committed on success, rolled back on error."""
    async with sessions() as session, session.begin():
        yield session


COPY_MIN_ROWS = 64


async def insert_rows(conn: AsyncConnection, model: Any, rows: Sequence[Any], columns: Sequence[str] = ()) -> None:
    """Insert many rows inside the caller's transaction: dicts with the same keys, or tuples
    of `columns` (the hot batches build tuples: no dict per row to take apart again).

    On PostgreSQL one statement whatever the number of rows: below COPY_MIN_ROWS an INSERT
    from one array per column (`arrays_insert`), from there COPY on the transaction's own
    asyncpg connection (for a settle batch's thousands of rows about a third of a multi-row
    INSERT, on both sides; below that its extra round trips, asyncpg looking up the column
    types first, cost more than they save). Not an executemany: the driver binds and runs
    the statement once per row (for a batch of 20 calls, three such inserts were a fifth of
    billing's CPU). Every service's bulk writes go through here.
    """
    if not rows:
        return
    table = model.__table__
    if conn.dialect.name != "postgresql":
        dicts = [dict(zip(columns, row, strict=True)) for row in rows] if columns else list(rows)
        await conn.execute(table.insert(), dicts)
        return
    if not columns:
        columns = list(rows[0])
        rows = [tuple(row[c] for c in columns) for row in rows]
    if len(rows) < COPY_MIN_ROWS:
        await conn.execute(arrays_insert(table, tuple(columns)), column_arrays(rows))
        return
    raw = await conn.get_raw_connection()
    await raw.driver_connection.copy_records_to_table(table.name, records=rows, columns=list(columns))  # type: ignore[union-attr]  # asyncpg


@functools.cache
def arrays_insert(table: Any, columns: tuple[str, ...], conflict: tuple[str, ...] = ()) -> Any:
    """PostgreSQL: `INSERT INTO table (columns) SELECT * FROM unnest(:c0, :c1, ...)`, each
    parameter an array of one column's values (see `column_arrays`); with `conflict`, rows
    whose key exists are skipped."""
    dialect = postgresql.dialect()
    arrays = ", ".join(
        f"CAST(:c{i} AS {table.c[name].type.compile(dialect=dialect)}[])" for i, name in enumerate(columns)
    )
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM unnest({arrays})"
    if conflict:
        sql += f" ON CONFLICT ({', '.join(conflict)}) DO NOTHING"
    return text(sql)


def column_arrays(rows: Sequence[Sequence[Any]]) -> dict[str, list[Any]]:
    """The parameters of an `arrays_insert`: rows turned into one list per column."""
    return {f"c{i}": list(values) for i, values in enumerate(zip(*rows, strict=True))}


def alembic_config(migrations_dir: Path, service: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.attributes["version_table"] = f"alembic_version_{service}"
    return config


async def migrate(engine: AsyncEngine, migrations_dir: Path, service: str) -> None:
    """Bring the service's database to the newest migration. On PostgreSQL under a
    transaction-scoped advisory lock: instances started at once (several replicas, the
    migration Job) migrate one after the other, and the later ones find the schema at head."""
    config = alembic_config(migrations_dir, service)

    def upgrade(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":  # replicas starting together take turns
            await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": migration_lock_key(service)})
        await connection.run_sync(upgrade)


def migration_lock_key(service: str) -> int:
    """A stable 63-bit advisory-lock key per service database (not Python's salted hash)."""
    return int.from_bytes(hashlib.sha256(f"gatemesh-migrate-{service}".encode()).digest()[:8], "big") >> 1


def run_migrations_in_env(target_metadata: MetaData) -> None:
    """The body of every service's alembic `env.py`: run on the connection `migrate` passes."""
    from alembic import context

    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through services.runtime.db.migrate()")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=context.config.attributes.get("version_table", "alembic_version"),
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
