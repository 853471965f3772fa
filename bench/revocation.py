"""Revocation propagation: from RevokeApiKey to the drop of the key's lease at every proxy.

`python -m bench.revocation [--revocations N] [--proxies P]` starts two auth processes
(`python -m services.auth`, one PostgreSQL database, Redis) and P watcher processes that
run exactly the proxy's lease code (`services.proxy.adapters.KeyChangeWatcher` over
`services.proxy.leases.Leases`, subscribed to the first auth instance, as a proxy is).
For each of N keys it takes a lease (VerifyKey with `lease=true`), then revokes the key
and records, at each watcher, when the key's tag arrived and its lease was dropped:

- same instance: revoked at the auth instance the proxies watch (pushed at once);
- other instance: revoked at the second instance, reaching the first over Redis pub/sub
  (`gm:auth:revocations`) and from there the proxies.

Times are CLOCK_MONOTONIC (`time.monotonic`, one clock for every process of the machine)
from just before the RevokeApiKey call to the drop; p50/p99 by nearest rank over N x P
drops, and the RevokeApiKey round trip itself (which answers only once the change is
written to every stream of that instance). Needs PostgreSQL and Redis, as the tests do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import asyncpg
import grpc

from bench.stats import percentile, print_table
from bench.verify_key import PG, ROOT, SERVICE, SERVICE_TOKEN, auth_process
from gatemesh.auth.v1 import auth_pb2, auth_pb2_grpc


async def watcher_main(address: str, token: str) -> None:
    """A proxy's lease machinery: prints `ready` once subscribed, then `<tag> <monotonic>`
    for every dropped tag."""
    from services.proxy.adapters import KeyChangeWatcher
    from services.proxy.leases import Leases
    from services.runtime.access import SERVICE_TOKEN_HEADER

    leases = Leases()
    watcher = KeyChangeWatcher(grpc.aio.insecure_channel(address), leases, ((SERVICE_TOKEN_HEADER, token),))

    def dropped(tags: list[str]) -> None:
        now = time.monotonic()
        sys.stdout.write("".join(f"{tag} {now:.6f}\n" for tag in tags))
        sys.stdout.flush()

    watcher.on_drop = dropped
    task = asyncio.create_task(watcher.run())
    for _ in range(1000):
        if leases.ready:
            break
        await asyncio.sleep(0.01)
    print("ready", flush=True)
    await task


class Watchers:
    """P watcher processes and the drop times they report, by tag."""

    def __init__(self, stack: ExitStack, address: str, count: int) -> None:
        self.drops: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        args = [sys.executable, "-m", "bench.revocation", "--watch", address, "--token", SERVICE_TOKEN]
        for _ in range(count):
            proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=ROOT)
            stack.callback(proc.wait, 10)
            stack.callback(proc.terminate)
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a watcher did not subscribe")
            threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            tag, at = line.split()
            with self._lock:
                self.drops.setdefault(tag, []).append(float(at))

    def times(self, tag: str) -> list[float]:
        with self._lock:
            return list(self.drops.get(tag, []))


async def account(stub: auth_pb2_grpc.AuthServiceStub) -> list[tuple[str, str]]:
    email, password = f"bench-{secrets.token_hex(4)}@example.com", secrets.token_urlsafe(16)
    signup = auth_pb2.SignUpRequest(
        email=email, password=password, age_attested=True, accepted_policy_version="2026-11-01"
    )
    await stub.SignUp(signup)
    token = (await stub.SignIn(auth_pb2.SignInRequest(email=email, password=password))).session_token
    return [("authorization", f"Bearer {token}")]


async def measure(watched: str, revoking: str, watchers: Watchers, proxies: int, count: int) -> tuple[list, list]:
    """(drop latencies, RevokeApiKey round trips), in seconds."""
    drops: list[float] = []
    rounds: list[float] = []
    async with grpc.aio.insecure_channel(watched) as near, grpc.aio.insecure_channel(revoking) as far:
        here, there = auth_pb2_grpc.AuthServiceStub(near), auth_pb2_grpc.AuthServiceStub(far)
        session = await account(here)
        for _ in range(count):
            created = await here.CreateApiKey(auth_pb2.CreateApiKeyRequest(name="bench"), metadata=session)
            ask = auth_pb2.VerifyKeyRequest(api_key=created.api_key, consume_rate_limit=True, lease=True)
            tag = (await here.VerifyKey(ask, metadata=SERVICE)).lease_tag
            started = time.monotonic()
            await there.RevokeApiKey(auth_pb2.RevokeApiKeyRequest(key_id=created.key.key_id), metadata=session)
            rounds.append(time.monotonic() - started)
            for _ in range(2000):  # up to 2 s
                if len(watchers.times(tag)) >= proxies:
                    break
                await asyncio.sleep(0.001)
            seen = watchers.times(tag)
            if len(seen) < proxies:
                raise RuntimeError("a revocation did not reach every watcher within 2 s")
            drops += [at - started for at in seen[:proxies]]
            await asyncio.sleep(0.005)  # a Redis echo of this change is not the next one's
    return drops, rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--revocations", type=int, default=200)
    parser.add_argument("--proxies", type=int, default=2)
    parser.add_argument("--watch", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.watch:
        asyncio.run(watcher_main(args.watch, args.token))
        return
    name = f"bench_revocation_{secrets.token_hex(3)}"

    async def create() -> None:
        connection = await asyncpg.connect(f"{PG}/postgres")
        await connection.execute(f'CREATE DATABASE "{name}"')
        await connection.close()

    async def drop() -> None:
        connection = await asyncpg.connect(f"{PG}/postgres")
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.close()

    asyncio.run(create())
    rows = []
    try:
        with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="gm-revocation-") as tmp:
            url = f"{PG.replace('postgresql://', 'postgresql+asyncpg://')}/{name}"
            fast = {"GATEMESH_AUTH_ARGON2_TIME_COST": "1", "GATEMESH_AUTH_ARGON2_MEMORY_KIB": "1024"}
            first, _ = stack.enter_context(auth_process("auth-1", url, Path(tmp), fast))
            second, _ = stack.enter_context(auth_process("auth-2", url, Path(tmp), fast))
            watchers = Watchers(stack, first, args.proxies)
            for label, revoking in (("same instance", first), ("other instance (via Redis)", second)):
                drops, rounds = asyncio.run(measure(first, revoking, watchers, args.proxies, args.revocations))
                p50, p99 = (percentile(drops, q) * 1000 for q in (50, 99))
                rows.append(
                    [label, args.proxies, len(drops), p50, p99, max(drops) * 1000, percentile(rounds, 50) * 1000]
                )
    finally:
        asyncio.run(drop())
    headers = ["revoked at", "proxies", "drops", "p50 ms", "p99 ms", "max ms", "RevokeApiKey p50 ms"]
    print_table("Revocation -> lease dropped at every proxy (nearest-rank percentiles)", headers, rows)
    print(json.dumps({"target_p99_ms": 100, "met": all(row[4] < 100 for row in rows)}))


if __name__ == "__main__":
    main()
