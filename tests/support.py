"""Test support shared by every test package: real PostgreSQL and Redis, free ports, and
starting real service processes.

PostgreSQL: `GATEMESH_TEST_PG` (default postgresql://postgres@127.0.0.1:5432) is the
server; each test database is created fresh (`gm_<name>_<random>`) and dropped afterwards.
Redis: `GATEMESH_TEST_REDIS` (default redis://127.0.0.1:6379/0); each test gets a key
prefix namespace by using its own logical database number where it matters, and flushes it.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
PG_SERVER = os.environ.get("GATEMESH_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
REDIS_SERVER = os.environ.get("GATEMESH_TEST_REDIS", "redis://127.0.0.1:6379")

# Logical Redis databases. Each pytest process takes its own range (an xdist worker by its
# number), so that parallel workers never flush each other's keys: slots 0-2 for the per-test
# fixture (chosen by pid, so a developer's run and CI's rarely meet), 3 the proxy meshes,
# 4 the edge meshes, 5 the outbox tests, 6 spare.
WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0) % 2


def redis_db(slot: int) -> str:
    """The URL of this process's logical Redis database number `slot` (0-6)."""
    return f"{REDIS_SERVER}/{1 + 7 * WORKER + slot}"


REDIS_PROXY, REDIS_EDGE, REDIS_OUTBOX = redis_db(3), redis_db(4), redis_db(5)


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback port, never one this process handed out before: a mesh asks for
    several before any is bound, and the kernel may offer a just-closed port again."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


async def create_database(name: str) -> str:
    """Create a fresh PostgreSQL database; returns its SQLAlchemy asyncpg URL."""
    db = f"gm_{name}_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(f"{PG_SERVER}/postgres")
    try:
        await conn.execute(f'CREATE DATABASE "{db}"')
    finally:
        await conn.close()
    return f"{PG_SERVER.replace('postgresql://', 'postgresql+asyncpg://')}/{db}"


async def drop_database(url: str) -> None:
    db = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(f"{PG_SERVER}/postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    finally:
        await conn.close()


def wait_healthy(address: str, process: subprocess.Popen | None = None, timeout: float = 60.0) -> None:
    """Block until the gRPC server at `address` reports SERVING."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"process for {address} exited with {process.returncode}")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise TimeoutError(f"{address} not healthy after {timeout}s")


@contextmanager
def service_process(module: str, env: dict[str, str], address: str, log_path: Path) -> Iterator[subprocess.Popen]:
    """Run `python -m <module>` with `env` added, wait for health, stop it (SIGTERM) after."""
    full_env = {**os.environ, **env}
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", module], env=full_env, stdout=log, stderr=log, cwd=ROOT)
        try:
            wait_healthy(address, process)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
