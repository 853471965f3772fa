"""A real mesh for the proxy's integration tests: auth, billing and proxy processes on
PostgreSQL and Redis, with fake upstream providers, plus helpers to make paying users."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from google.api import httpbody_pb2
from redis import Redis

from gatemesh.auth.v1 import auth_pb2, auth_pb2_grpc
from gatemesh.billing.v1 import billing_pb2, billing_pb2_grpc
from gatemesh.common.v1 import common_pb2
from gatemesh.proxy.v1 import proxy_pb2_grpc
from tests.support import REDIS_PROXY, create_database, drop_database, free_port, service_process

SERVICE_TOKEN = "proxy-test-service-token"
ADMIN_TOKEN = "proxy-test-admin-token"
OPERATOR = [("authorization", f"Bearer {ADMIN_TOKEN}")]
PASSWORD = "correct horse battery staple"
POLICY = "2026-11-01"
# Whole micro-units per token, so expected costs are exact integers.
INPUT_MICROS, OUTPUT_MICROS = 2, 8
MODEL = "gm-test"


def cost(input_tokens: int, output_tokens: int) -> int:
    return input_tokens * INPUT_MICROS + output_tokens * OUTPUT_MICROS


def pg_plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


@dataclass
class Mesh:
    """Addresses, log files and databases of the running mesh, and channels to it."""

    proxy_addr: str
    auth_addr: str
    billing_addr: str
    logs: dict[str, Path]
    databases: dict[str, str]
    upstreams: dict[str, str]
    pids: dict[str, int] = field(default_factory=dict)
    envs: dict[str, dict[str, str]] = field(default_factory=dict)
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)

    def channel(self, name: str) -> grpc.aio.Channel:
        if name not in self.channels:
            address = {"proxy": self.proxy_addr, "auth": self.auth_addr, "billing": self.billing_addr}[name]
            self.channels[name] = grpc.aio.insecure_channel(address)
        return self.channels[name]

    @property
    def proxy(self) -> proxy_pb2_grpc.ProxyServiceStub:
        return proxy_pb2_grpc.ProxyServiceStub(self.channel("proxy"))

    @property
    def auth(self) -> auth_pb2_grpc.AuthServiceStub:
        return auth_pb2_grpc.AuthServiceStub(self.channel("auth"))

    @property
    def billing(self) -> billing_pb2_grpc.BillingServiceStub:
        return billing_pb2_grpc.BillingServiceStub(self.channel("billing"))

    async def user(self, credit_micros: int = 10_000_000, **key: Any) -> User:
        """A new account with credit and an API key."""
        email = f"user-{secrets.token_hex(5)}@example.com"
        signup = auth_pb2.SignUpRequest(
            email=email, password=PASSWORD, age_attested=True, accepted_policy_version=POLICY
        )
        account = (await self.auth.SignUp(signup)).account
        session = (await self.auth.SignIn(auth_pb2.SignInRequest(email=email, password=PASSWORD))).session_token
        created = await self.auth.CreateApiKey(
            auth_pb2.CreateApiKeyRequest(name="test", **key), metadata=[("authorization", f"Bearer {session}")]
        )
        if credit_micros:
            grant = billing_pb2.GrantCreditsRequest(
                account_id=account.account_id, amount_micros=credit_micros, reason="test", idempotency_key=email
            )
            await self.billing.GrantCredits(grant, metadata=OPERATOR)
        return User(self, account.account_id, created.api_key, session, created.key.key_id)


@dataclass
class User:
    mesh: Mesh
    account_id: str
    api_key: str
    session: str = ""
    key_id: str = ""

    @property
    def session_metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.session}")]

    @property
    def metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.api_key}")]

    async def balance(self) -> tuple[int, int]:
        """(available, held) micro-units."""
        reply = await self.mesh.billing.AdminGetBalance(
            billing_pb2.AdminGetBalanceRequest(account_id=self.account_id), metadata=OPERATOR
        )
        return reply.balance_micros, reply.held_micros

    async def settled_balance(self, polls: int = 200) -> int:
        """The available balance once no hold is open (settles may run after the call ends)."""
        for _ in range(polls):
            available, held = await self.balance()
            if held == 0:
                return available
            await asyncio.sleep(0.05)
        raise AssertionError("a hold is still open")

    async def usage(self) -> list[billing_pb2.UsageRecord]:
        """Every usage record of the account (all pages)."""
        records: list[billing_pb2.UsageRecord] = []
        token = ""
        while True:
            page = common_pb2.PageRequest(page_size=1000, page_token=token)
            request = billing_pb2.AdminListUsageRequest(
                account_id=self.account_id, filter=billing_pb2.ListUsageRequest(page=page)
            )
            reply = await self.mesh.billing.AdminListUsage(request, metadata=OPERATOR)
            records += reply.records
            token = reply.page.next_page_token
            if not token:
                return records

    async def chat(self, body: dict[str, Any]) -> list[httpbody_pb2.HttpBody]:
        request = httpbody_pb2.HttpBody(content_type="application/json", data=json.dumps(body).encode())
        return [message async for message in self.mesh.proxy.ChatCompletions(request, metadata=self.metadata)]


def chat_body(content: str = "say hello please", **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


def sse_payloads(messages: list[httpbody_pb2.HttpBody]) -> list[Any]:
    """The data of every SSE event in a streamed answer ('[DONE]' as a string)."""
    text = b"".join(m.data for m in messages).decode()
    payloads = []
    for event in text.split("\n\n"):
        if event.startswith("data: "):
            data = event[6:]
            payloads.append(data if data == "[DONE]" else json.loads(data))
    return payloads


def add_proxy(stack: ExitStack, mesh: Mesh, tmp: Path, name: str = "proxy2", **env: str) -> subprocess.Popen:
    """Another proxy process beside the mesh's (same auth, billing, Redis and request-log
    database); `proxies(mesh)` reaches it as the second stub."""
    address = f"127.0.0.1:{free_port()}"
    full = {**mesh.envs["proxy"], "GATEMESH_PROXY_ADDR": address, **env}
    process = stack.enter_context(service_process("services.proxy", full, address, tmp / f"{name}.log"))
    mesh.envs[name] = {"addr": address}
    return process


def proxies(mesh: Mesh) -> list[proxy_pb2_grpc.ProxyServiceStub]:
    if "proxy2" not in mesh.channels:
        mesh.channels["proxy2"] = grpc.aio.insecure_channel(mesh.envs["proxy2"]["addr"])
    return [mesh.proxy, proxy_pb2_grpc.ProxyServiceStub(mesh.channels["proxy2"])]


def counted(key_id: str) -> int:
    """Requests auth's limiter has taken for the key this minute (calls and shares)."""
    client = Redis.from_url(REDIS_PROXY)
    seconds, _ = client.time()
    value = client.get(f"gm:auth:rl:{{{key_id}}}:r:{seconds // 60}")  # hash-tagged: one Redis Cluster slot
    return int(value or 0)


async def fresh_minute(margin: int = 15) -> None:
    seconds, _ = Redis.from_url(REDIS_PROXY).time()
    if seconds % 60 > 60 - margin:
        await asyncio.sleep(61 - seconds % 60)


async def call(stub: proxy_pb2_grpc.ProxyServiceStub, user: User, **body: object) -> None:
    request = httpbody_pb2.HttpBody(content_type="application/json", data=json.dumps(chat_body(**body)).encode())
    async for _ in stub.ChatCompletions(request, metadata=user.metadata):
        pass


async def leased(live: Mesh, user: User) -> int:
    """Call through every proxy until each took a share of the key (so it holds a lease);
    how many calls that took."""
    calls = 0
    for stub in proxies(live):
        for _ in range(50):
            before = counted(user.key_id)
            await call(stub, user, max_tokens=20)
            calls += 1
            if counted(user.key_id) > before + 1:  # the call and a share
                break
            await asyncio.sleep(0.1)  # the proxy's key-change stream is not up yet
        else:
            raise AssertionError("the proxy never leased the key")
    return calls


def mesh_databases(prefix: str) -> Iterator[dict[str, str]]:
    """The body of a module fixture: fresh auth, billing and proxy databases, dropped after."""
    loop = asyncio.new_event_loop()
    urls = {name: loop.run_until_complete(create_database(f"{prefix}_{name}")) for name in ("auth", "billing", "proxy")}
    yield urls
    for url in urls.values():
        loop.run_until_complete(drop_database(url))
    loop.close()


async def fresh_channels(mesh: Mesh) -> AsyncIterator[Mesh]:
    """The body of a per-test fixture: the mesh, its channels closed after the test (each
    test has its own event loop)."""
    yield mesh
    for channel in mesh.channels.values():
        await channel.close()
    mesh.channels.clear()


def start_mesh(
    stack: ExitStack,
    tmp: Path,
    databases: dict[str, str],
    upstream: Callable[[str], str],
    log_level: str = "DEBUG",
    proxy_env: dict[str, str] | None = None,
    billing_port: int = 0,
    billing_env: dict[str, str] | None = None,
) -> Mesh:
    """Start auth, billing and proxy as real processes (`python -m services.<name>`)."""
    addrs = {name: f"127.0.0.1:{free_port()}" for name in ("auth", "billing", "proxy")}
    if billing_port:
        addrs["billing"] = f"127.0.0.1:{billing_port}"
    ok, broken = upstream(""), upstream("500")
    providers = [
        {"name": "primary", "base_url": ok, "models": [MODEL, "gm-embed", "gm-other"], "timeout_s": 10},
        {"name": "broken", "base_url": broken, "models": ["gm-fallback"], "weight": 1e6},
        {"name": "healthy", "base_url": ok, "models": ["gm-fallback"], "weight": 1e-6},
        {"name": "dead", "base_url": f"http://127.0.0.1:{free_port()}/v1", "models": ["gm-dead"], "max_retries": 0},
    ]
    price = {"input_per_mtok_usd": INPUT_MICROS, "output_per_mtok_usd": OUTPUT_MICROS}
    common = {
        "GATEMESH_DATA_DIR": str(tmp),
        "GATEMESH_SERVICE_TOKEN": SERVICE_TOKEN,
        "GATEMESH_ADMIN_TOKEN": ADMIN_TOKEN,
        "GATEMESH_KEY_HMAC_SECRET": "proxy-test-hmac",
        "GATEMESH_REDIS_URL": REDIS_PROXY,
        "GATEMESH_LOG_LEVEL": log_level,
        **{f"GATEMESH_{name.upper()}_ADDR": address for name, address in addrs.items()},
        # Where auth asks for the current policy version: free, so that no stray privacy
        # service answers; a privacy test starts its privacy service here.
        "GATEMESH_PRIVACY_ADDR": f"127.0.0.1:{free_port()}",
    }
    env = {
        "auth": {
            "GATEMESH_AUTH_DATABASE_URL": databases["auth"],
            "GATEMESH_AUTH_ARGON2_TIME_COST": "1",
            "GATEMESH_AUTH_ARGON2_MEMORY_KIB": "1024",
            "GATEMESH_AUTH_ARGON2_PARALLELISM": "1",
            "GATEMESH_AUTH_POLICY_CACHE_S": "0.5",
        },
        "billing": {
            "GATEMESH_BILLING_DATABASE_URL": databases["billing"],
            "GATEMESH_PRICES": json.dumps({m: price for m in (MODEL, "gm-embed", "gm-fallback", "gm-dead")}),
            **(billing_env or {}),
        },
        "proxy": {
            "GATEMESH_PROXY_DATABASE_URL": databases["proxy"],
            "GATEMESH_PROVIDERS": json.dumps(providers),
            "GATEMESH_MODEL_ALIASES": json.dumps({"gm-alias": MODEL}),
            "GATEMESH_PROXY_LOG_FLUSH_S": "0.1",
            # credit leases go back 0.5 s after their last call (5 s by default), so that tests
            # waiting for "no hold open" need not wait long
            "GATEMESH_PROXY_CREDIT_LEASE_IDLE_S": "0.5",
            "GATEMESH_PROXY_RETRY_BACKOFF_S": "0.01",
            **(proxy_env or {}),
        },
    }
    logs = {name: tmp / f"{name}.log" for name in addrs}
    pids, envs = {}, {name: {**common, **env[name]} for name in addrs}
    for name in ("auth", "billing", "proxy"):
        process = service_process(f"services.{name}", envs[name], addrs[name], logs[name])
        pids[name] = stack.enter_context(process).pid
    upstreams = {"ok": ok, "broken": broken}
    return Mesh(addrs["proxy"], addrs["auth"], addrs["billing"], logs, databases, upstreams, pids, envs)


async def table_dump(url: str) -> str:
    """Every row of every table of a database, as text (for canary scans)."""
    connection = await asyncpg.connect(pg_plain(url))
    try:
        tables = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        rows = [await connection.fetch(f'SELECT * FROM "{t["tablename"]}"') for t in tables]
    finally:
        await connection.close()
    return "\n".join(str(dict(row)) for group in rows for row in group)


async def proxy_rows(url: str, account_id: str) -> list[dict[str, Any]]:
    connection = await asyncpg.connect(pg_plain(url))
    try:
        rows = await connection.fetch("SELECT * FROM request_log WHERE account_id = $1", account_id)
    finally:
        await connection.close()
    return [dict(row) for row in rows]


def log_text(path: Path) -> str:
    return path.read_text(errors="replace")


def trailers(error: grpc.aio.AioRpcError) -> dict[str, Any]:
    return {key: value for key, value in (error.trailing_metadata() or ())}
