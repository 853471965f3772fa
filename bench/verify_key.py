"""VerifyKey over gRPC: the auth service's share of every model call.

`python -m bench.verify_key [--calls N]` creates a fresh PostgreSQL database, starts three
auth processes (`python -m services.auth`) that share it and Redis, differing only in
caching, and measures VerifyKey from a client in this process:

- cached: in-process cache plus Redis (the production default); no I/O per call;
- cached, tracing off: the same with `OTEL_SDK_DISABLED=true`, to show what the
  OpenTelemetry server interceptor costs;
- redis only: no in-process cache, one Redis GET per call;
- uncached: no cache at all, one PostgreSQL query per call;
- cached + rate limit: cached, plus the atomic Redis Lua script per call;
- floor: a bare grpc.aio server answering the standard health check (`bench.floor_server`),
  no interceptors, no I/O: what any Python gRPC call costs on this machine.

Each at concurrency 1 (a blocking client: the least client overhead) and 64 (one
`grpc.aio` channel, as the proxy calls): p50, p99, calls per second, server CPU per call.
Needs PostgreSQL (GATEMESH_TEST_PG) and Redis (GATEMESH_TEST_REDIS), as the tests do.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.asyncio import Redis

from bench.stats import Result, print_table, process_cpu_seconds
from gatemesh.auth.v1 import auth_pb2, auth_pb2_grpc
from services.runtime.access import SERVICE_TOKEN_HEADER
from tests.support import free_port, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
PG = os.environ.get("GATEMESH_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
REDIS = os.environ.get("GATEMESH_TEST_REDIS", "redis://127.0.0.1:6379") + "/8"
SERVICE_TOKEN = secrets.token_urlsafe(24)
SERVICE = ((SERVICE_TOKEN_HEADER, SERVICE_TOKEN),)

FLOOR = "floor: bare grpc.aio health check"
VARIANTS = {
    "cached": {},
    "cached, tracing off": {"OTEL_SDK_DISABLED": "true"},
    "redis only": {"GATEMESH_AUTH_LOCAL_CACHE_TTL_S": "0"},
    "uncached": {"GATEMESH_AUTH_LOCAL_CACHE_TTL_S": "0", "GATEMESH_AUTH_KEY_CACHE_TTL_S": "0"},
}


@contextmanager
def auth_process(name: str, database_url: str, data_dir: Path, extra: dict[str, str]) -> Iterator[tuple[str, int]]:
    address = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "GATEMESH_DATA_DIR": str(data_dir),
        "GATEMESH_AUTH_ADDR": address,
        "GATEMESH_AUTH_DATABASE_URL": database_url,
        "GATEMESH_REDIS_URL": REDIS,
        "GATEMESH_SERVICE_TOKEN": SERVICE_TOKEN,
        "GATEMESH_LOG_LEVEL": "WARNING",
        "OTEL_TRACES_EXPORTER": "none",
        **extra,
    }
    log = open(data_dir / f"{name.replace(' ', '_')}.log", "wb")  # noqa: SIM115
    process = subprocess.Popen([sys.executable, "-m", "services.auth"], env=env, stdout=log, stderr=log, cwd=ROOT)
    try:
        wait_healthy(address, process)
        yield address, process.pid
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


@contextmanager
def floor_process(data_dir: Path) -> Iterator[tuple[str, int]]:
    """`bench.floor_server`: a bare grpc.aio server (health service only, no interceptors)."""
    port = free_port()
    log = open(data_dir / "floor.log", "wb")  # noqa: SIM115
    command = [sys.executable, "-m", "bench.floor_server", str(port)]
    process = subprocess.Popen(command, stdout=log, stderr=log, cwd=ROOT)
    try:
        wait_healthy(f"127.0.0.1:{port}", process)
        yield f"127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


async def make_key(address: str) -> str:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        email, password = f"bench-{secrets.token_hex(4)}@example.com", secrets.token_urlsafe(16)
        await stub.SignUp(
            auth_pb2.SignUpRequest(
                email=email, password=password, age_attested=True, accepted_policy_version="2026-11-01"
            )
        )
        token = (await stub.SignIn(auth_pb2.SignInRequest(email=email, password=password))).session_token
        limits = auth_pb2.KeyLimits(requests_per_minute=2_000_000_000, tokens_per_minute=10**15)
        created = await stub.CreateApiKey(
            auth_pb2.CreateApiKeyRequest(name="bench", limits=limits), metadata=[("authorization", f"Bearer {token}")]
        )
        return created.api_key


def method_of(channel: Any, request: Any) -> Any:
    """The stub method that takes `request`: VerifyKey, or Health.Check for the floor."""
    if isinstance(request, health_pb2.HealthCheckRequest):
        return health_pb2_grpc.HealthStub(channel).Check
    return auth_pb2_grpc.AuthServiceStub(channel).VerifyKey


def measure_sequential(name: str, address: str, pid: int, request: Any, calls: int) -> Result:
    """Concurrency 1 with a blocking client: the least client overhead, so the figure is
    the server and the transport."""
    with grpc.insecure_channel(address) as channel:
        verify = method_of(channel, request)
        for _ in range(200):  # warm up: connection, caches, code paths
            verify(request, metadata=SERVICE)
        latencies: list[float] = []
        cpu_before = process_cpu_seconds([pid])
        start = time.perf_counter()
        for _ in range(calls):
            began = time.perf_counter()
            verify(request, metadata=SERVICE)
            latencies.append(time.perf_counter() - began)
        wall = time.perf_counter() - start
        cpu = process_cpu_seconds([pid]) - cpu_before
    return Result(name, 1, latencies, wall, cpu * 1000 / calls)


async def measure_concurrent(name: str, address: str, pid: int, request: Any, calls: int, concurrency: int) -> Result:
    """Many calls in flight from one grpc.aio channel, as the proxy makes them."""
    async with grpc.aio.insecure_channel(address) as channel:
        verify = method_of(channel, request)
        for _ in range(200):
            await verify(request, metadata=SERVICE)
        latencies: list[float] = []

        async def worker(n: int) -> None:
            for _ in range(n):
                began = time.perf_counter()
                await verify(request, metadata=SERVICE)
                latencies.append(time.perf_counter() - began)

        cpu_before = process_cpu_seconds([pid])
        start = time.perf_counter()
        await asyncio.gather(*(worker(calls // concurrency) for _ in range(concurrency)))
        wall = time.perf_counter() - start
        cpu = process_cpu_seconds([pid]) - cpu_before
    return Result(name, concurrency, latencies, wall, cpu * 1000 / len(latencies))


async def measure(name: str, address: str, pid: int, request: Any, calls: int, concurrency: int) -> Result:
    if concurrency == 1:
        return await asyncio.to_thread(measure_sequential, name, address, pid, request, calls)
    return await measure_concurrent(name, address, pid, request, calls, concurrency)


async def run(calls: int, data_dir: Path) -> list[Result]:
    db = f"gm_bench_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(f"{PG}/postgres")
    await conn.execute(f'CREATE DATABASE "{db}"')
    database_url = f"{PG.replace('postgresql://', 'postgresql+asyncpg://')}/{db}"
    results: list[Result] = []
    try:
        with ExitStack() as stack:
            servers = {
                name: stack.enter_context(auth_process(name, database_url, data_dir, extra))
                for name, extra in VARIANTS.items()
            }
            floor = stack.enter_context(floor_process(data_dir))
            key = await make_key(servers["cached"][0])
            plain = auth_pb2.VerifyKeyRequest(api_key=key, model="bench-model")
            limited = auth_pb2.VerifyKeyRequest(api_key=key, consume_rate_limit=True, estimated_tokens=100)
            for concurrency in (1, 64):
                results.append(await measure(FLOOR, *floor, health_pb2.HealthCheckRequest(), calls, concurrency))
                for name, (address, pid) in servers.items():
                    n = calls if name != "uncached" else calls // 2
                    results.append(await measure(name, address, pid, plain, n, concurrency))
                address, pid = servers["cached"]
                results.append(await measure("cached + rate limit", address, pid, limited, calls, concurrency))
    finally:
        redis = Redis.from_url(REDIS)
        await redis.flushdb()
        await redis.aclose()
        await conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await conn.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5120, help="calls per row (uncached rows make half)")
    args = parser.parse_args()
    data_dir = Path(os.environ.get("GATEMESH_BENCH_DIR", "/tmp")) / f"gm-bench-{secrets.token_hex(4)}"
    data_dir.mkdir(parents=True)
    results = asyncio.run(run(args.calls, data_dir))
    print_table(
        f"VerifyKey over gRPC (client and server on one {os.cpu_count()}-core machine)",
        ["variant", "concurrency", "calls", "p50 ms", "p99 ms", "calls/s", "server CPU ms/call"],
        [(r.name, r.concurrency, len(r.latencies), r.p50_ms, r.p99_ms, r.rps, r.cpu_ms_per_request) for r in results],
    )


if __name__ == "__main__":
    main()
