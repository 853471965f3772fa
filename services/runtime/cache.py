"""The Redis client: `redis.asyncio` against a real server in tests and production.

Locally, with no `redis_url` configured, an in-process substitute (fakeredis, with Lua
scripting) stands in, so a single-machine mesh runs with nothing else installed. It is
per process: use real Redis as soon as more than one instance of a service runs.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .health import Dependency


def make_redis(
    url: str, max_connections: int = 64, pool_timeout_s: float = 5.0, cluster: bool = False, dedicated: bool = False
) -> Redis:
    """A pooled client for `url`, or the in-process substitute when `url` is empty.

    The pool blocks (up to `pool_timeout_s`) when all its connections are busy, instead of
    failing the call: more concurrent calls than connections only queue. With `cluster`,
    redis-py's cluster client (it discovers the nodes from the one `url` names); every
    multi-key command and script of the mesh keeps its keys in one hash slot.

    `dedicated`: one connection of its own and no socket timeout, for a caller that sends
    one command at a time and bounds its own waits (the proxy's settle outbox, on the
    answer's path). A pooled command checks a connection out and back in (locks, a shielded
    task) and, with a socket timeout, runs its send in a task of its own (`wait_for`): 108
    us of CPU per command here against 65 us. Ignored with `cluster`."""
    if url and cluster:
        from redis.asyncio.cluster import RedisCluster

        return RedisCluster.from_url(url, max_connections=max_connections)  # type: ignore[return-value]  # same commands
    if url and dedicated:
        return Redis.from_url(url, single_connection_client=True, socket_timeout=None, **_reconnecting())
    if url:
        pool = BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=pool_timeout_s, **_reconnecting()
        )
        return Redis.from_pool(pool)
    import fakeredis

    return fakeredis.FakeAsyncRedis()


def _reconnecting() -> dict[str, Any]:
    """A connection's health checks and its reconnects after a dropped connection."""
    return {
        "health_check_interval": 30,
        "retry": reconnects(),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }


def reconnects() -> Retry:
    """A command that meets a dropped connection (Redis restarted, a failover) is sent again
    on a new one, twice at most, within a fraction of a second. A pool made from a URL
    retries nothing by default: after a Redis restart each pooled connection failed one
    command (a sign-in answered UNAVAILABLE; found by tests/reliability/test_process_faults.py)."""
    return Retry(ExponentialWithJitterBackoff(cap=0.2, base=0.02), retries=2)


def redis_check(url: str, timeout_s: float = 2.0, cluster: bool = False) -> list[Dependency]:
    """The health check of a service's Redis (`health`): PING on a client of its own, so
    a pool busy under load cannot make it look down. None for the in-process substitute
    (it lives in the process)."""
    if not url:
        return []
    if cluster:
        from redis.asyncio.cluster import RedisCluster

        client: Redis | RedisCluster = RedisCluster.from_url(url, socket_timeout=timeout_s)
    else:
        client = Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)

    async def ping() -> None:
        await client.ping()

    return [Dependency("redis", ping, client.aclose)]
