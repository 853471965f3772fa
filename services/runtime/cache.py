"""The Redis client: `redis.asyncio` against a real server in tests and production.

Locally, with no `redis_url` configured, an in-process substitute (fakeredis, with Lua
scripting) stands in, so a single-machine mesh runs with nothing else installed. It is
per process: use real Redis as soon as more than one instance of a service runs.
"""

from __future__ import annotations

from redis.asyncio import Redis


def make_redis(url: str, max_connections: int = 64) -> Redis:
    """A pooled client for `url`, or the in-process substitute when `url` is empty."""
    if url:
        return Redis.from_url(url, max_connections=max_connections, health_check_interval=30)
    import fakeredis

    return fakeredis.FakeAsyncRedis()
