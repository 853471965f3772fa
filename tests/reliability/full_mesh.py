"""The whole mesh for the access and secrets tests: auth, billing, proxy and privacy as
separate processes on PostgreSQL databases of their own, a private Redis, Envoy in front
exposing every service's REST API, the fake upstream and an OTLP receiver (the reliability
harness's `ChaosMesh`, with privacy added), plus the people who call it: accounts of
every role, made through auth's gRPC API as a person or the operator would.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from gatemesh.auth.v1 import auth_pb2, auth_pb2_grpc
from tests.e2e.edge_mesh import POLICY, fake_upstream
from tests.otlp_receiver import OtlpReceiver
from tests.privacy.mesh import FAST
from tests.proxy.mesh import pg_plain
from tests.reliability.harness import ADMIN_TOKEN, PASSWORD, SERVICE_TOKEN, ChaosMesh, PrivateRedis
from tests.support import ROOT, create_database, drop_database, wait_healthy

MESH = ("auth", "billing", "proxy", "privacy")
OPERATOR = [("authorization", f"Bearer {ADMIN_TOKEN}")]
SERVICE = [("x-gatemesh-service-token", SERVICE_TOKEN)]


def bearer(credential: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {credential}")]


@dataclass
class Person:
    """An account, signed in: its session, and an API key when asked for."""

    account_id: str
    email: str
    session: str
    key_id: str = ""
    api_key: str = ""


class FullMesh(ChaosMesh):
    """ChaosMesh with privacy started too and the edge exposing all four REST APIs."""

    def __init__(self, tmp: Path, databases: dict[str, str], upstream: str, receiver: OtlpReceiver, redis: Any):
        super().__init__(tmp, databases, upstream, receiver, redis)
        self.logs["privacy"] = tmp / "privacy.log"
        self.people: list[Person] = []  # everyone `person` made: their secrets must be kept nowhere

    def _env(self) -> dict[str, str]:
        env = super()._env()
        env.update(FAST)
        env.update(
            {
                "GATEMESH_EDGE_SERVICES": json.dumps(list(MESH)),
                "GATEMESH_LOG_LEVEL": "DEBUG",  # the most log lines there can be, for the secrets scan
                "GATEMESH_AUTH_SIGNIN_MAX_FAILURES_IP": "100000",
                "GATEMESH_AUTH_POLICY_CACHE_S": "0.5",
            }
        )
        return env

    def start_all(self) -> None:
        """The four services at once (their clients reconnect until the others serve), then
        the edge: on a busy machine starting them one by one takes tens of seconds longer."""
        for name in MESH:
            with open(self.logs[name], "ab") as out:
                command = [sys.executable, "-m", f"services.{name}"]
                self.processes[name] = subprocess.Popen(command, env=self.env, stdout=out, stderr=out, cwd=ROOT)
        for name in MESH:
            wait_healthy(self.address(name), self.processes[name])
        self.start("edge")

    async def person(self, auth: auth_pb2_grpc.AuthServiceStub, role: int = 0, key: bool = False) -> Person:
        """A new account (signed up, or made by the operator with `role`), signed in."""
        email = f"acl-{secrets.token_hex(5)}@example.com"
        if role:
            made = auth_pb2.AdminCreateAccountRequest(email=email, password=PASSWORD, role=role)
            account_id = (await auth.AdminCreateAccount(made, metadata=OPERATOR)).account.account_id
        else:
            signup = auth_pb2.SignUpRequest(
                email=email, password=PASSWORD, age_attested=True, accepted_policy_version=POLICY
            )
            account_id = (await auth.SignUp(signup)).account.account_id
        session = (await auth.SignIn(auth_pb2.SignInRequest(email=email, password=PASSWORD))).session_token
        made_person = Person(account_id, email, session)
        self.people.append(made_person)
        if key:
            created = await auth.CreateApiKey(auth_pb2.CreateApiKeyRequest(name="acl"), metadata=bearer(session))
            made_person.key_id, made_person.api_key = created.key.key_id, created.api_key
        return made_person

    async def rows(self, service: str, query: str, *args: Any) -> list[dict[str, Any]]:
        connection = await asyncpg.connect(pg_plain(self.databases[service]))
        try:
            return [dict(row) for row in await connection.fetch(query, *args)]
        finally:
            await connection.close()

    async def expire_sessions(self, account_id: str) -> None:
        """Move every session of the account past its expiry, as time would."""
        await self.rows(
            "auth", "UPDATE sessions SET expires_at = now() - interval '1 minute' WHERE account_id = $1", account_id
        )


@contextmanager
def full_mesh(tmp: Path, extra_env: dict[str, str] | None = None) -> Iterator[FullMesh]:
    """Every process of the mesh started, stopped (and its databases dropped) afterwards."""
    databases = {name: asyncio.run(create_database(f"acl_{name}")) for name in MESH}
    redis = PrivateRedis(tmp / "redis.log")
    try:
        with ExitStack() as stack:
            redis.start()
            stack.callback(redis.stop)
            receiver = stack.enter_context(OtlpReceiver())
            upstream = stack.enter_context(fake_upstream(tmp / "upstream.log"))
            mesh = FullMesh(tmp, databases, upstream, receiver, redis)
            mesh.env.update(extra_env or {})
            for name in (*MESH, "edge"):
                stack.callback(mesh.stop, name)
            mesh.start_all()
            yield mesh
    finally:
        for url in databases.values():
            asyncio.run(drop_database(url))
