"""The shared Redis client (`runtime.cache.make_redis`) against a private `redis-server`
that is restarted: the next command reconnects instead of failing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.runtime.cache import make_redis
from tests.reliability.harness import PrivateRedis


@pytest.fixture
def redis_server(tmp_path) -> Iterator[PrivateRedis]:
    redis = PrivateRedis(tmp_path / "redis.log")
    redis.start()
    yield redis
    redis.stop()


async def test_commands_after_a_redis_restart_reconnect_instead_of_failing(redis_server: PrivateRedis) -> None:
    client = make_redis(redis_server.url, max_connections=4)
    try:
        assert await client.set("gm:restart", "1")
        redis_server.stop()
        redis_server.start()  # same port; every pooled connection is now dead
        assert await client.set("gm:restart", "2")
        assert await client.get("gm:restart") == b"2"
    finally:
        await client.aclose()
