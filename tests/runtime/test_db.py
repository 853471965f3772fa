"""The pooled engine checks a connection only after it sat idle (`runtime.db.ping_when_idle`):
an idle connection the server dropped is replaced before use; a busy one is not pinged,
and the pool recovers from a dropped one after a single failed statement."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import exc, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.runtime.db import make_engine, ping_when_idle

BACKEND = text("SELECT pg_backend_pid()")


async def backend_pid(engine: AsyncEngine) -> int:
    async with engine.begin() as conn:
        return (await conn.execute(BACKEND)).scalar_one()


async def drop_backend(url: str, pid: int) -> None:
    """What a server restart or an idle timeout does to a pooled connection."""
    other = create_async_engine(url)
    async with other.begin() as conn:
        assert (await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})).scalar_one()
    await other.dispose()


async def test_idle_connection_dropped_by_the_server_is_replaced_before_use(
    pg_database: Callable[[str], Awaitable[str]],
) -> None:
    url = await pg_database("db_idle_ping")
    engine = create_async_engine(url, pool_size=1, max_overflow=0)
    ping_when_idle(engine, idle_s=0.0)  # every checkout finds the connection idle long enough
    try:
        first = await backend_pid(engine)
        await drop_backend(url, first)
        second = await backend_pid(engine)  # no error: the ping found it dead, the pool reconnected
        assert second != first
    finally:
        await engine.dispose()


async def test_connection_in_steady_use_is_not_pinged(pg_database: Callable[[str], Awaitable[str]]) -> None:
    """With the default threshold a just-used connection goes out unchecked: a dropped one
    fails one statement (there was no ping to notice), and the next use gets a new one."""
    url = await pg_database("db_busy_no_ping")
    engine = make_engine(url, pool_size=1, max_overflow=0)
    try:
        first = await backend_pid(engine)
        await drop_backend(url, first)
        with pytest.raises(exc.DBAPIError):
            await backend_pid(engine)
        assert await backend_pid(engine) != first
    finally:
        await engine.dispose()
