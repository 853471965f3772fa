"""Fixtures every test package can use: real PostgreSQL databases and Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio import Redis

from tests.support import REDIS_SERVER, create_database, drop_database


@pytest.fixture
async def pg_database() -> AsyncIterator[Callable[[str], Awaitable[str]]]:
    """A factory of fresh PostgreSQL databases (asyncpg URLs), dropped after the test."""
    created: list[str] = []

    async def make(name: str) -> str:
        url = await create_database(name)
        created.append(url)
        return url

    yield make
    for url in created:
        await drop_database(url)


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    """A real Redis logical database, flushed before and after the test."""
    url = f"{REDIS_SERVER}/9"
    client = Redis.from_url(url)
    await client.flushdb()
    yield url
    await client.flushdb()
    await client.aclose()
