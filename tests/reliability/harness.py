"""A mesh built to be hurt: auth, billing and proxy as separate processes (so each can be
killed with SIGKILL and started again), Envoy in front, PostgreSQL databases of its own, a
private `redis-server` on a free port (restartable without touching the Redis other tests
share), the fake upstream in `chaos` mode and an OTLP receiver.

`ChaosMesh` also makes the load's users: accounts made through auth's gRPC API, each with
many API keys, so that every call of a load runs on a key of its own and billing's usage
records (which carry the key id) say exactly what became of each call.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import httpx

from gatemesh.auth.v1 import auth_pb2, auth_pb2_grpc
from gatemesh.billing.v1 import billing_pb2, billing_pb2_grpc
from services.edge.launch import start_edge, wait_edge
from tests.e2e.edge_mesh import INPUT_MICROS, OUTPUT_MICROS, POLICY, fake_upstream, mesh_env, wait_port
from tests.otlp_receiver import OtlpReceiver
from tests.proxy.mesh import pg_plain
from tests.support import ROOT, create_database, drop_database, free_port, wait_healthy

SERVICES = ("auth", "billing", "proxy")
# The privacy service's worker, fast enough for a test (as tests/privacy/mesh.py's FAST).
PRIVACY_ENV = {
    "GATEMESH_PRIVACY_WORKER_INTERVAL_S": "0.05",
    "GATEMESH_PRIVACY_BACKOFF_S": "0.2",
    "GATEMESH_PRIVACY_BACKOFF_MAX_S": "1",
    "GATEMESH_PRIVACY_LEASE_S": "3",
    "GATEMESH_PRIVACY_CALL_TIMEOUT_S": "5",
    "GATEMESH_PRIVACY_MAX_ATTEMPTS": "100",
}
CHAOS = "gm-chaos"
PASSWORD = "a reliability password 4f9c"
ADMIN_TOKEN = "reliability-admin-token"
SERVICE_TOKEN = "reliability-service-token"
# The chaos provider's timeout: the fake upstream's `hang` answers after HANG_S, past it.
CHAOS_TIMEOUT_S, HANG_S = 1.0, 2.5


@dataclass
class Account:
    """One account of the load, its API keys by key id, and what it was granted."""

    account_id: str
    email: str
    granted: int
    keys: dict[str, str] = field(default_factory=dict)


class PrivateRedis:
    """`redis-server` on a free port: this test's own, so it can be stopped and started
    again without disturbing anyone else's Redis. No persistence by default; `persistent`
    keeps an append-only file in `log`'s directory, as a production Redis would, so that a
    restart (SIGTERM, then start) keeps what was written (the settle outbox)."""

    def __init__(self, log: Path, persistent: bool = False) -> None:
        self.port = free_port()
        self.log = log
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        if self.persistent:
            args += ["--dir", str(self.log.parent), "--appendonly", "yes", "--appendfilename", f"redis-{self.port}.aof"]
        else:
            args += ["--appendonly", "no"]
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=out)
        wait_port(self.port, self.process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


class ChaosMesh:
    """The running mesh and what the tests do to it."""

    def __init__(
        self,
        tmp: Path,
        databases: dict[str, str],
        upstream: str,
        receiver: OtlpReceiver,
        redis: PrivateRedis,
        traces: bool = True,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.tmp = tmp
        self.traces = traces
        self.databases = databases
        self.upstream = upstream
        self.receiver = receiver
        self.redis = redis
        self.env = {**self._env(), **(extra_env or {})}
        self.logs = {name: tmp / f"{name}.log" for name in (*SERVICES, "privacy", "edge")}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.url = f"http://127.0.0.1:{self.env['GATEMESH_EDGE_PORT']}"

    def _env(self) -> dict[str, str]:
        env = mesh_env(self.tmp, self.databases, self.upstream, self.receiver)
        if not self.traces:  # exporting spans costs the mesh more CPU than the calls themselves
            env = {key: value for key, value in env.items() if not key.startswith("OTEL_")}
        providers = json.loads(env["GATEMESH_PROVIDERS"])
        chaos = {"name": "chaos", "base_url": f"{self.upstream}/v1", "models": [CHAOS], "timeout_s": CHAOS_TIMEOUT_S}
        providers.append({**chaos, "max_retries": 1, "max_connections": 2048})
        prices = json.loads(env["GATEMESH_PRICES"])
        prices[CHAOS] = {"input_per_mtok_usd": INPUT_MICROS, "output_per_mtok_usd": OUTPUT_MICROS}
        env.update(
            {
                "GATEMESH_PROVIDERS": json.dumps(providers),
                "GATEMESH_PRICES": json.dumps(prices),
                "GATEMESH_REDIS_URL": self.redis.url,
                "GATEMESH_LOG_LEVEL": "INFO",
                "GATEMESH_ADMIN_TOKEN": ADMIN_TOKEN,
                "GATEMESH_SERVICE_TOKEN": SERVICE_TOKEN,
                "GATEMESH_PROXY_RETRY_BACKOFF_S": "0.01",
                # Holds of calls a killed proxy never settled expire soon, and the sweeper
                # runs often, so that "no hold left open" is checked within the test.
                "GATEMESH_PROXY_HOLD_TTL_S": "300",
                "GATEMESH_BILLING_SWEEP_INTERVAL_S": "1",
                "GATEMESH_PROXY_OUTBOX_STALE_S": "2",
            }
        )
        return env

    def start(self, name: str) -> None:
        """Start one service (or the edge) and wait until it serves."""
        if name == "edge":
            with open(self.logs[name], "ab") as out:
                self.processes[name] = start_edge(env=self.env, stdout=out, stderr=out, cwd=ROOT)
            wait_edge(self.processes[name], time.monotonic() + 60, self.url)
            return
        with open(self.logs[name], "ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"], env=self.env, stdout=out, stderr=out, cwd=ROOT
            )
        self.processes[name] = process
        wait_healthy(self.address(name), process)

    def kill(self, name: str) -> None:
        """SIGKILL: no drain, no cleanup, as a crash."""
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def stop(self, name: str) -> None:
        process = self.processes.get(name)
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()

    def address(self, name: str) -> str:
        return self.env[f"GATEMESH_{name.upper()}_ADDR"]

    def channel(self, name: str) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(self.address(name))

    async def accounts(self, count: int, keys_each: int, credit: int) -> list[Account]:
        """`count` accounts with `keys_each` API keys and `credit` micro-units each."""
        async with self.channel("auth") as auth_channel, self.channel("billing") as billing_channel:
            auth = auth_pb2_grpc.AuthServiceStub(auth_channel)
            billing = billing_pb2_grpc.BillingServiceStub(billing_channel)
            made = [await self._account(auth, billing, keys_each, credit) for _ in range(count)]
        return made

    async def _account(
        self, auth: auth_pb2_grpc.AuthServiceStub, billing: billing_pb2_grpc.BillingServiceStub, keys: int, credit: int
    ) -> Account:
        email = f"rel-{secrets.token_hex(5)}@example.com"
        signup = auth_pb2.SignUpRequest(
            email=email, password=PASSWORD, age_attested=True, accepted_policy_version=POLICY
        )
        account_id = (await auth.SignUp(signup)).account.account_id
        session = (await auth.SignIn(auth_pb2.SignInRequest(email=email, password=PASSWORD))).session_token
        metadata = [("authorization", f"Bearer {session}")]
        account = Account(account_id, email, credit)
        made = await asyncio.gather(
            *(auth.CreateApiKey(auth_pb2.CreateApiKeyRequest(name=f"k{i}"), metadata=metadata) for i in range(keys))
        )
        account.keys.update((created.key.key_id, created.api_key) for created in made)
        grant = billing_pb2.GrantCreditsRequest(
            account_id=account_id, amount_micros=credit, reason="reliability", idempotency_key=f"grant:{account_id}"
        )
        await billing.GrantCredits(grant, metadata=[("authorization", f"Bearer {ADMIN_TOKEN}")])
        return account

    def upstream_stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.upstream}/_fake/stats").json()

    async def billing_rows(self, query: str, *args: Any) -> list[dict[str, Any]]:
        return await self.rows("billing", query, *args)

    async def rows(self, service: str, query: str, *args: Any) -> list[dict[str, Any]]:
        """Rows of a query on one service's database."""
        connection = await asyncpg.connect(pg_plain(self.databases[service]))
        try:
            return [dict(row) for row in await connection.fetch(query, *args)]
        finally:
            await connection.close()


@contextmanager
def chaos_mesh(
    tmp: Path,
    seed: int = 12,
    traces: bool = True,
    extra_env: dict[str, str] | None = None,
    privacy: bool = False,
    persistent_redis: bool = False,
) -> Iterator[ChaosMesh]:
    """Every process of the mesh started, stopped (and its databases dropped) afterwards;
    with `privacy`, the privacy service too (its worker fast, `PRIVACY_ENV`)."""
    names = (*SERVICES, "privacy") if privacy else SERVICES
    databases = {name: asyncio.run(create_database(f"rel_{name}")) for name in names}
    redis = PrivateRedis(tmp / "redis.log", persistent_redis)
    try:
        with ExitStack() as stack:
            redis.start()
            stack.callback(redis.stop)
            receiver = stack.enter_context(OtlpReceiver())
            upstream = stack.enter_context(
                fake_upstream(tmp / "upstream.log", "--seed", str(seed), "--hang-s", str(HANG_S))
            )
            env = {**(PRIVACY_ENV if privacy else {}), **(extra_env or {})}
            mesh = ChaosMesh(tmp, databases, upstream, receiver, redis, traces, env)
            for name in (*names, "edge"):
                stack.callback(mesh.stop, name)
                mesh.start(name)
            yield mesh
    finally:
        for url in databases.values():
            asyncio.run(drop_database(url))
