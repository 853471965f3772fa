"""Auth test fixtures: real auth servers (in-process `grpc.aio`, built by the service's own
composition root) on real PostgreSQL and Redis, and stubs that call them as a user, as
another service, or as the operator."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from gatemesh.auth.v1 import auth_pb2, auth_pb2_grpc
from gatemesh.privacy.v1 import participant_pb2_grpc
from services.auth.__main__ import AuthApp, build
from services.auth.settings import AuthSettings
from services.runtime.access import SERVICE_TOKEN_HEADER
from services.runtime.server import bind, build_server

SERVICE_TOKEN = "auth-test-service-token"
ADMIN_TOKEN = "auth-test-admin-token"
POLICY = "2026-11-01"
PASSWORD = "correct horse battery staple"


def auth_settings(tmp_path: Any, database_url: str, redis_url: str, **overrides: Any) -> AuthSettings:
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "auth_database_url": database_url,
        "redis_url": redis_url,
        "service_token": SERVICE_TOKEN,
        "admin_token": ADMIN_TOKEN,
        "key_hmac_secret": "auth-test-hmac-secret",
        "auth_argon2_time_cost": 1,
        "auth_argon2_memory_kib": 1024,
        "auth_argon2_parallelism": 1,
    }
    values.update(overrides)
    return AuthSettings(**values)


@dataclass
class Running:
    """A running auth instance and stubs to call it."""

    app: AuthApp
    address: str
    channel: grpc.aio.Channel

    @property
    def stub(self) -> auth_pb2_grpc.AuthServiceStub:
        return auth_pb2_grpc.AuthServiceStub(self.channel)

    @property
    def participant(self) -> participant_pb2_grpc.PrivacyParticipantStub:
        return participant_pb2_grpc.PrivacyParticipantStub(self.channel)

    async def sign_up(self, email: str | None = None, password: str = PASSWORD) -> auth_pb2.Account:
        email = email or f"user-{secrets.token_hex(4)}@example.com"
        reply = await self.stub.SignUp(
            auth_pb2.SignUpRequest(email=email, password=password, age_attested=True, accepted_policy_version=POLICY)
        )
        return reply.account

    async def session(self, email: str, password: str = PASSWORD) -> list[tuple[str, str]]:
        reply = await self.stub.SignIn(auth_pb2.SignInRequest(email=email, password=password))
        return user(reply.session_token)

    async def user_with_key(self, **key: Any) -> tuple[auth_pb2.Account, list[tuple[str, str]], str]:
        """A new account, its session metadata, and a new API key."""
        account = await self.sign_up()
        metadata = await self.session(account.email)
        request = auth_pb2.CreateApiKeyRequest(name=key.pop("name", "test"), **key)
        created = await self.stub.CreateApiKey(request, metadata=metadata)
        return account, metadata, created.api_key


def user(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


SERVICE = [(SERVICE_TOKEN_HEADER, SERVICE_TOKEN)]
OPERATOR = user(ADMIN_TOKEN)


@asynccontextmanager
async def running_auth(settings: AuthSettings) -> AsyncIterator[Running]:
    """An auth server exactly as `python -m services.auth` builds it, on a free port."""
    app = await build(settings)
    server, health = build_server(app.spec, settings)
    port = bind(server, "127.0.0.1:0", settings)
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    tasks = [asyncio.create_task(job()) for job in app.spec.background]
    await asyncio.wait_for(app.cache.listening.wait(), 5)
    address = f"127.0.0.1:{port}"
    channel = grpc.aio.insecure_channel(address)
    try:
        yield Running(app, address, channel)
    finally:
        await channel.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.stop(0)
        for cleanup in app.spec.cleanups:
            await cleanup()


StartAuth = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_auth(tmp_path, pg_database, redis_url) -> AsyncIterator[StartAuth]:
    """Start auth instances sharing one fresh PostgreSQL database and the test Redis."""
    database: list[str] = []
    stack: list[Any] = []

    async def start(**overrides: Any) -> Running:
        if not database:
            database.append(await pg_database("auth"))
        manager = running_auth(auth_settings(tmp_path, database[0], redis_url, **overrides))
        stack.append(manager)
        return await manager.__aenter__()

    yield start
    for manager in reversed(stack):
        await manager.__aexit__(None, None, None)


@pytest.fixture
async def auth(start_auth: StartAuth) -> Running:
    return await start_auth()


@pytest.fixture
async def redis(redis_url: str):
    """A client of the test's Redis database."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()
