"""A whole mesh for the edge's end-to-end tests: `gatemesh up` as a real process (auth,
billing, proxy and Envoy) on PostgreSQL and Redis, the fake upstream, an OTLP receiver,
and helpers to make paying users the way a person would (REST and the operator CLI)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from redis import Redis

from gatemesh.billing.v1 import billing_pb2, billing_pb2_grpc
from services.runtime.clients import service_channel
from services.runtime.settings import GatemeshSettings
from tests.otlp_receiver import OtlpReceiver
from tests.support import REDIS_EDGE, ROOT, create_database, drop_database, free_port

GATEMESH = str(Path(sys.executable).parent / "gatemesh")
PASSWORD = "correct horse battery staple"
POLICY = "2026-11-01"
# Whole micro-units per token, so that expected costs are exact integers.
INPUT_MICROS, OUTPUT_MICROS = 2, 8
MODEL, OTHER, EMBED = "gm-test", "gm-other", "gm-embed"
FLAKY, DEAD, SLOW = "gm-flaky", "gm-dead", "gm-slow"
SERVICES = ("auth", "billing", "proxy")


def cost(input_tokens: int, output_tokens: int = 0) -> int:
    return input_tokens * INPUT_MICROS + output_tokens * OUTPUT_MICROS


@dataclass
class Mesh:
    """The running mesh: its edge URL, environment, databases, logs and upstream."""

    url: str
    env: dict[str, str]
    databases: dict[str, str]
    log: Path
    upstream: str
    receiver: OtlpReceiver

    def cli(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [GATEMESH, *args], env=self.env, capture_output=True, text=True, timeout=60, cwd=ROOT, input=stdin
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def grant(self, account_id: str, micros: int) -> None:
        """Credit an account as the operator (billing's GrantCredits)."""

        async def run() -> None:
            settings = GatemeshSettings(data_dir=Path(self.env["GATEMESH_DATA_DIR"]))
            channel = service_channel(self.env["GATEMESH_BILLING_ADDR"], settings, settings.secret("admin_token"))
            async with channel:
                request = billing_pb2.GrantCreditsRequest(
                    account_id=account_id, amount_micros=micros, reason="e2e", idempotency_key=secrets.token_hex(8)
                )
                await billing_pb2_grpc.BillingServiceStub(channel).GrantCredits(request)

        asyncio.run(run())

    def rest_user(self, credit_micros: int = 10_000_000, **key: Any) -> User:
        """Sign up, sign in and create a key through the edge's /api/v1, then credit."""
        email = f"e2e-{secrets.token_hex(5)}@example.com"
        body = {"email": email, "password": PASSWORD, "age_attested": True, "accepted_policy_version": POLICY}
        with httpx.Client(base_url=self.url) as client:
            account = _ok(client.post("/api/v1/accounts", json=body))["account"]
            session = _ok(client.post("/api/v1/sessions", json={"email": email, "password": PASSWORD}))
            headers = {"authorization": f"Bearer {session['session_token']}"}
            created = _ok(client.post("/api/v1/keys", json={"name": "e2e", **key}, headers=headers))
        if credit_micros:
            self.grant(account["account_id"], credit_micros)
        return User(self, account["account_id"], created["api_key"], email)

    def metrics_urls(self) -> dict[str, str]:
        """Each service's Prometheus endpoint, and the edge's (Envoy's statistics)."""
        ports = {name: self.env[f"GATEMESH_{name.upper()}_METRICS_PORT"] for name in SERVICES}
        ports["edge"] = self.env["GATEMESH_EDGE_METRICS_PORT"]
        return {name: f"http://127.0.0.1:{port}/metrics" for name, port in ports.items()}

    def upstream_requests(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.upstream}/_fake/requests").json()

    async def table_dump(self) -> str:
        """Every row of every table of every service database, as text."""
        parts = []
        for url in self.databases.values():
            conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
            try:
                tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                for table in tables:
                    rows = await conn.fetch(f'SELECT * FROM "{table["tablename"]}"')
                    parts.extend(str(dict(row)) for row in rows)
            finally:
                await conn.close()
        return "\n".join(parts)


@dataclass
class User:
    mesh: Mesh
    account_id: str
    api_key: str
    email: str = ""

    def balance(self) -> tuple[int, int]:
        """(available, held) micro-units, read through the edge's /api/v1/balance."""
        reply = _ok(httpx.get(f"{self.mesh.url}/api/v1/balance", headers={"authorization": f"Bearer {self.api_key}"}))
        return int(reply["balance_micros"]), int(reply["held_micros"])

    def settled_balance(self) -> int:
        """The available balance once no hold is open (settles may finish after the reply)."""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            available, held = self.balance()
            if held == 0:
                return available
            time.sleep(0.05)
        raise AssertionError("a hold is still open")


def _ok(reply: httpx.Response) -> dict[str, Any]:
    assert reply.status_code == 200, reply.text
    return reply.json()


def wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def wait_for_line(path: Path, needle: str, process: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in path.read_text(errors="replace"):
            return
        if process.poll() is not None:
            raise RuntimeError(f"gatemesh up exited with {process.returncode}:\n{path.read_text(errors='replace')}")
        time.sleep(0.1)
    raise TimeoutError(f"{needle!r} not in {path} after {timeout}s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


@contextmanager
def fake_upstream(log: Path, *options: str, port: int = 0) -> Iterator[str]:
    """The fake upstream as a process (`options`: its command-line flags), stopped after."""
    port = port or free_port()
    with open(log, "wb") as out:
        command = [sys.executable, "-m", "tests.fake_upstream", "--port", str(port), *options]
        process = subprocess.Popen(command, stdout=out, stderr=out, cwd=ROOT)
        try:
            wait_port(port, process)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop(process)


def mesh_env(tmp: Path, databases: dict[str, str], upstream: str, receiver: OtlpReceiver) -> dict[str, str]:
    base = f"{upstream}/v1"
    providers = [
        {"name": "primary", "base_url": base, "models": [MODEL, OTHER, EMBED], "timeout_s": 10},
        {"name": "flaky", "base_url": base, "models": [FLAKY], "max_retries": 0},
        {"name": "dead", "base_url": f"http://127.0.0.1:{free_port()}/v1", "models": [DEAD], "max_retries": 0},
        {"name": "slow", "base_url": base, "models": [SLOW], "timeout_s": 0.3, "max_retries": 0},
    ]
    price = {"input_per_mtok_usd": INPUT_MICROS, "output_per_mtok_usd": OUTPUT_MICROS}
    env = {key: value for key, value in os.environ.items() if not key.startswith(("GATEMESH_", "OTEL_"))}
    env.update(receiver.otel_env())
    env.update(
        {
            "GATEMESH_DATA_DIR": str(tmp / "data"),
            "GATEMESH_REDIS_URL": REDIS_EDGE,
            "GATEMESH_LOG_LEVEL": "DEBUG",
            "GATEMESH_EDGE_PORT": str(free_port()),
            "GATEMESH_EDGE_SERVICES": json.dumps(list(SERVICES)),
            **{f"GATEMESH_{name.upper()}_ADDR": f"127.0.0.1:{free_port()}" for name in (*SERVICES, "privacy")},
            **{f"GATEMESH_{name.upper()}_DATABASE_URL": url for name, url in databases.items()},
            "GATEMESH_AUTH_ARGON2_TIME_COST": "1",
            "GATEMESH_AUTH_ARGON2_MEMORY_KIB": "1024",
            "GATEMESH_AUTH_ARGON2_PARALLELISM": "1",
            "GATEMESH_PRICES": json.dumps({m: price for m in (MODEL, OTHER, EMBED, FLAKY, DEAD, SLOW)}),
            "GATEMESH_PROVIDERS": json.dumps(providers),
            "GATEMESH_PROXY_LOG_FLUSH_S": "0.1",
            # credit leases go back 0.5 s after their last call (5 s by default), so that tests
            # waiting for "no hold open" need not wait long
            "GATEMESH_PROXY_CREDIT_LEASE_IDLE_S": "0.5",
            **{f"GATEMESH_{name.upper()}_METRICS_PORT": str(free_port()) for name in SERVICES},
            "GATEMESH_METRICS_REFRESH_S": "0.5",
            "GATEMESH_EDGE_ADMIN_PORT": str(free_port()),
            "GATEMESH_EDGE_METRICS_PORT": str(free_port()),
            "GATEMESH_PROXY_PRICE_REFRESH_S": "1",
        }
    )
    return env


@contextmanager
def running_mesh(tmp: Path, extra_env: dict[str, str] | None = None) -> Iterator[Mesh]:
    """`gatemesh up` with every service on PostgreSQL and Redis (and `extra_env` on top of
    `mesh_env`); stopped afterwards."""
    databases = {name: asyncio.run(create_database(f"e2e_{name}")) for name in SERVICES}
    Redis.from_url(REDIS_EDGE).flushdb()
    log = tmp / "up.log"
    try:
        with OtlpReceiver() as receiver, fake_upstream(tmp / "upstream.log") as upstream:
            env = {**mesh_env(tmp, databases, upstream, receiver), **(extra_env or {})}
            with open(log, "wb") as out:
                process = subprocess.Popen([GATEMESH, "up"], env=env, stdout=out, stderr=out, cwd=ROOT)
            try:
                wait_for_line(log, "gatemesh is up", process)
                url = f"http://127.0.0.1:{env['GATEMESH_EDGE_PORT']}"
                yield Mesh(url, env, databases, log, upstream, receiver)
            finally:
                stop(process)
    finally:
        for url in databases.values():
            asyncio.run(drop_database(url))
