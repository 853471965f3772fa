"""Redis Cluster: every multi-key command and Lua script of the mesh keeps its keys in one
hash slot, so a clustered Redis works (docs/deploy.md, "Redis Cluster").

A real three-node cluster (the machine's redis-server, `redis-cli --cluster create`) on free
loopback ports; the rate limiter (its batch script across many keys), the sign-in throttle,
the key cache (with its pub/sub revocations) and the settle outbox run against it through
redis-py's cluster client, which refuses a command or script whose keys span slots
(CROSSSLOT)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from gatemesh.billing.v1 import billing_pb2
from services.auth.keycache import REVOKED, KeyCache
from services.auth.limits import RateAsk, RateLimiter, SignInThrottle
from services.proxy.outbox import OUTBOX_KEY, SettleOutbox
from services.runtime.cache import make_redis
from tests.support import free_port

NODES = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    assert server and cli, "redis-server and redis-cli (Debian's redis-server package) are needed"
    tmp = tmp_path_factory.mktemp("redis-cluster")
    ports = [cluster_port() for _ in range(NODES)]
    processes = [
        subprocess.Popen(
            [
                server,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--save",
                "",
                "--appendonly",
                "no",
                "--cluster-config-file",
                str(tmp / f"nodes-{port}.conf"),
                "--dir",
                str(tmp),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    try:
        for port in ports:
            _wait_ping(cli, port)
        nodes = [f"127.0.0.1:{port}" for port in ports]
        subprocess.run([cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)  # fmt: skip
        _wait_ok(cli, ports[0])
        yield f"redis://127.0.0.1:{ports[0]}"
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) exists too."""
    while (port := free_port()) + 10000 > 65535:
        pass
    return port


def _wait_ping(cli: str, port: int) -> None:
    deadline = time.monotonic() + 20
    while subprocess.run([cli, "-p", str(port), "ping"], capture_output=True).stdout.strip() != b"PONG":
        assert time.monotonic() < deadline, f"redis on {port} did not start"
        time.sleep(0.1)


def _wait_ok(cli: str, port: int) -> None:
    deadline = time.monotonic() + 30
    while (
        b"cluster_state:ok" not in subprocess.run([cli, "-p", str(port), "cluster", "info"], capture_output=True).stdout
    ):
        assert time.monotonic() < deadline, "the cluster did not come up"
        time.sleep(0.2)


@pytest.fixture
async def redis(cluster: str) -> AsyncIterator[RedisCluster]:
    client = make_redis(cluster, cluster=True)
    assert isinstance(client, RedisCluster)
    await client.initialize()
    yield client
    await client.aclose()


def test_a_keys_counters_share_one_slot() -> None:
    for key_id in ("k1", "key_0123456789", "x{y}"):
        assert len({key_slot(name.encode()) for name in RateLimiter._keys(key_id)}) == 1


async def test_a_batch_of_rate_limits_over_many_slots_works(redis: RedisCluster) -> None:
    limiter = RateLimiter(redis)
    key_ids = [f"key{i}" for i in range(40)]
    assert len({key_slot(RateLimiter._keys(k)[0].encode()) for k in key_ids}) > NODES  # spans nodes
    requests = [RateAsk(key_id, 2, 0, 0) for key_id in key_ids] * 3  # each key three times: two pass, one is refused
    decisions = await limiter.consume_many(requests)
    allowed = [d.allowed for d in decisions]
    assert allowed == [True] * 40 + [True] * 40 + [False] * 40
    await limiter.adjust_tokens("key1", 5)


async def test_sign_in_throttle_counts_account_and_ip_apart(redis: RedisCluster) -> None:
    throttle = SignInThrottle(redis, "secret", max_account=2, max_ip=10, window_s=60)
    for _ in range(2):
        await throttle.failed("ada@example.com", "192.0.2.1")
    assert (await throttle.retry_after("ada@example.com", "192.0.2.1") or 0) > 0
    await throttle.succeeded("ada@example.com")
    assert await throttle.retry_after("ada@example.com", "192.0.2.9") is None


async def test_key_cache_and_revocations(redis: RedisCluster) -> None:
    cache = KeyCache(redis, local_ttl_s=30, redis_ttl_s=60)
    listener = asyncio.create_task(cache.listen())
    await asyncio.wait_for(cache.listening.wait(), 10)
    await cache.revoke(["h1", "h2", "h3"])
    assert {await redis.get(f"gm:auth:key:{h}") for h in ("h1", "h2", "h3")} == {REVOKED.encode()}
    listener.cancel()


async def test_settle_outbox(redis: RedisCluster) -> None:
    outbox = SettleOutbox(redis, stale_s=0.0)
    request = billing_pb2.SettleRequest(hold_id="h", idempotency_key="settle-1")
    await outbox.add(request)
    await outbox.measure()
    sent: list[str] = []

    async def send(settle: billing_pb2.SettleRequest) -> None:
        sent.append(settle.idempotency_key)

    assert await outbox.replay(send) == 1
    assert sent == ["settle-1"] and await redis.hlen(OUTBOX_KEY) == 0


def test_this_file_is_where_docs_point() -> None:
    assert "tests/deploy/test_redis_cluster.py" in (Path(__file__).parents[2] / "docs" / "deploy.md").read_text()
