"""Fixtures every test package can use: real PostgreSQL databases and Redis."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio import Redis

from tests.support import create_database, drop_database, redis_db


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


# Each pytest process takes its own logical database (see `tests.support.redis_db`), so that
# two test runs on one machine, or two xdist workers, do not flush each other's keys mid-test.
REDIS_URL = redis_db(os.getpid() % 3)


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    """A real Redis logical database, flushed before and after the test."""
    url = REDIS_URL
    client = Redis.from_url(url)
    await client.flushdb()
    yield url
    await client.flushdb()
    await client.aclose()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The reliability results table, when a test of the run added rows to it (the
    reliability tests, schemathesis: see tests/reliability/results.py)."""
    from tests.reliability.results import ROWS, table

    if ROWS:
        terminalreporter.section("reliability results")
        terminalreporter.write_line(table(ROWS))
