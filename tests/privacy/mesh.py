"""A real mesh for the privacy tests: auth, billing and proxy processes (tests/proxy's
`start_mesh`) on PostgreSQL and Redis, plus privacy processes that a test can kill -9,
restart, or run twice on one database, and helpers to drive requests as staff or users."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc

from gatemesh.auth.v1 import auth_pb2
from gatemesh.privacy.v1 import privacy_pb2, privacy_pb2_grpc
from tests.proxy.mesh import ADMIN_TOKEN, OPERATOR, PASSWORD, POLICY, Mesh, pg_plain, start_mesh
from tests.support import ROOT, create_database, drop_database, free_port, wait_healthy

FAST = {
    "GATEMESH_PRIVACY_WORKER_INTERVAL_S": "0.05",
    "GATEMESH_PRIVACY_BACKOFF_S": "0.2",
    "GATEMESH_PRIVACY_BACKOFF_MAX_S": "1",
    "GATEMESH_PRIVACY_CLOSED_POLL_S": "0.5",
    "GATEMESH_PRIVACY_LEASE_S": "3",
    "GATEMESH_PRIVACY_CALL_TIMEOUT_S": "5",
    "GATEMESH_PRIVACY_MAX_ATTEMPTS": "30",
}
COMPLETED, ATTENTION, AWAITING = (
    privacy_pb2.REQUEST_STATUS_COMPLETED,
    privacy_pb2.REQUEST_STATUS_NEEDS_ATTENTION,
    privacy_pb2.REQUEST_STATUS_AWAITING_APPROVAL,
)


@dataclass
class PrivacyProcess:
    """`python -m services.privacy` that a test can kill -9 and start again."""

    env: dict[str, str]
    address: str
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivacyProcess:
        out = open(self.log, "ab")  # noqa: SIM115 - the process owns it
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.privacy"], env={**os.environ, **self.env}, stdout=out, stderr=out, cwd=ROOT
        )
        wait_healthy(self.address, self.process)
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown, no cleanup, leases left as they are."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()


@dataclass
class PrivacyMesh:
    mesh: Mesh
    database: str
    tmp: Path
    stack: ExitStack
    instances: list[PrivacyProcess] = field(default_factory=list)
    _channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)

    def privacy_env(self, address: str, **extra: str) -> dict[str, str]:
        base = {
            k: v for k, v in self.mesh.envs["auth"].items() if not k.startswith(("GATEMESH_AUTH_D", "GATEMESH_AUTH_AR"))
        }
        return {
            **base,
            **FAST,
            "GATEMESH_PRIVACY_DATABASE_URL": self.database,
            "GATEMESH_PRIVACY_ADDR": address,
            "GATEMESH_LISTEN": address,
            **extra,
        }

    def start_privacy(self, **extra: str) -> PrivacyProcess:
        address = f"127.0.0.1:{free_port()}"
        n = len(self.instances)
        instance = PrivacyProcess(self.privacy_env(address, **extra), address, self.tmp / f"privacy{n}.log").start()
        self.instances.append(instance)
        self.stack.callback(instance.stop)
        return instance

    def stub(self, instance: PrivacyProcess | None = None) -> privacy_pb2_grpc.PrivacyServiceStub:
        live = [i for i in self.instances if i.process and i.process.poll() is None]
        address = (instance or live[-1]).address
        if address not in self._channels:
            self._channels[address] = grpc.aio.insecure_channel(address)
        return privacy_pb2_grpc.PrivacyServiceStub(self._channels[address])

    async def session(self, email: str, password: str = PASSWORD) -> list[tuple[str, str]]:
        token = (await self.mesh.auth.SignIn(auth_pb2.SignInRequest(email=email, password=password))).session_token
        return [("authorization", f"Bearer {token}")]

    async def staff(self, role: int = auth_pb2.ROLE_COMPLIANCE) -> tuple[str, list[tuple[str, str]]]:
        """A compliance member (created by the operator): (account id, session metadata)."""
        email = f"staff-{os.urandom(4).hex()}@example.com"
        request = auth_pb2.AdminCreateAccountRequest(email=email, password=PASSWORD, role=role)
        account = (await self.mesh.auth.AdminCreateAccount(request, metadata=OPERATOR)).account
        return account.account_id, await self.session(email)

    async def raise_request(self, metadata: Any = None, **fields: Any) -> privacy_pb2.PrivacyRequest:
        fields.setdefault("identity_verification", "reply from the account's address")
        reply = await self.stub().CreateRequest(
            privacy_pb2.CreateRequestRequest(**fields), metadata=metadata or OPERATOR
        )
        return reply.request

    async def get(self, request_id: str) -> privacy_pb2.PrivacyRequest:
        reply = await self.stub().GetRequest(privacy_pb2.GetRequestRequest(request_id=request_id), metadata=OPERATOR)
        return reply.request

    async def wait(self, request_id: str, statuses: tuple[int, ...] = (COMPLETED,), within: float = 60) -> Any:
        deadline = asyncio.get_running_loop().time() + within
        while True:
            request = await self.get(request_id)
            if request.status in statuses:
                return request
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"request {request_id} still {request.status}: {request}")
            await asyncio.sleep(0.1)

    async def rows(self, sql: str, *args: Any, database: str | None = None) -> list[dict[str, Any]]:
        conn = await asyncpg.connect(pg_plain(database or self.database))
        try:
            return [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    def export_json(self, chunks: list[Any]) -> dict[str, Any]:
        return json.loads(b"".join(c.data for c in chunks))


def _drop(url: str) -> None:
    """Drop a database from synchronous cleanup code, even inside a running event loop."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, drop_database(url)).result()


async def open_mesh(stack: ExitStack, tmp: Path, upstreams: Any) -> PrivacyMesh:
    """auth, billing and proxy on fresh PostgreSQL databases (dropped when `stack` closes),
    and a database for privacy; privacy processes are started by the test."""
    databases = {name: await create_database(f"pv_{name}") for name in ("auth", "billing", "proxy", "privacy")}
    for url in databases.values():
        stack.callback(_drop, url)
    mesh = start_mesh(stack, tmp, databases, upstreams)
    return PrivacyMesh(mesh, databases["privacy"], tmp, stack)


__all__ = ["ADMIN_TOKEN", "OPERATOR", "PASSWORD", "POLICY", "PrivacyMesh", "open_mesh"]
