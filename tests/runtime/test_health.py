"""A service's health follows its stores (`runtime.health`), and a store that was briefly
unreachable is an error callers retry (`runtime.faults`): real PostgreSQL, a private
`redis-server`, a real gRPC server."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from gatemesh.auth.v1 import auth_pb2, auth_pb2_grpc
from services.runtime.cache import redis_check
from services.runtime.db import database_check, make_engine
from services.runtime.faults import again_if_connection_lost, connection_lost
from services.runtime.health import LIVENESS, NOT_SERVING, SERVING, Dependency, DependencyWatch
from services.runtime.server import ServiceSpec, bind, build_server
from services.runtime.settings import GatemeshSettings
from tests.reliability.harness import PrivateRedis
from tests.support import PG_SERVER

SECRET_EMAIL = "someone-private@example.com"


@pytest.fixture
def redis_server(tmp_path) -> Iterator[PrivateRedis]:
    redis = PrivateRedis(tmp_path / "redis.log")
    redis.start()
    yield redis
    redis.stop()


async def status(servicer: health.aio.HealthServicer, service: str = "") -> int:
    reply = await servicer.Check(health_pb2.HealthCheckRequest(service=service), None)
    return reply.status


async def test_health_says_not_serving_while_redis_is_down_and_serving_once_it_is_back(
    redis_server: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    servicer = health.aio.HealthServicer()
    watch = DependencyWatch(servicer, ["gatemesh.auth.v1.AuthService"], redis_check(redis_server.url, 1.0), 1.0)
    assert await watch.check()
    assert await status(servicer) == SERVING
    redis_server.stop()
    with caplog.at_level(logging.INFO, "gatemesh.health"):
        assert not await watch.check()
        assert not await watch.check()  # logged once, when it went down
    assert await status(servicer) == NOT_SERVING
    assert await status(servicer, "gatemesh.auth.v1.AuthService") == NOT_SERVING
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "health: redis unreachable (ConnectionError): NOT_SERVING"
    ]
    redis_server.start()  # the same port: the check's own client reconnects
    assert await watch.check()
    assert await status(servicer) == SERVING
    await watch.close()


async def admin(sql: str) -> None:
    connection = await asyncpg.connect(f"{PG_SERVER}/postgres")
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def test_health_follows_the_database_and_survives_terminated_connections(
    pg_database: Callable[[str], Awaitable[str]],
) -> None:
    """Connections ended by the server are replaced (SERVING); a database that refuses
    connections is NOT_SERVING; SERVING again once it accepts them."""
    url = await pg_database("health_db")
    name = url.rsplit("/", 1)[1]
    engine = make_engine(url)
    servicer = health.aio.HealthServicer()
    watch = DependencyWatch(servicer, [], [database_check(engine)], 2.0)
    try:
        assert await watch.check()
        await terminate(name)
        assert await watch.check(), "a dropped connection is replaced, not reported"
        await admin(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        await terminate(name)
        assert not await watch.check()
        assert await status(servicer) == NOT_SERVING
        await admin(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        assert await watch.check()
        assert await status(servicer) == SERVING
    finally:
        await admin(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        await watch.close()
        await engine.dispose()


async def terminate(database: str) -> None:
    await admin(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"
        " AND pid <> pg_backend_pid()"
    )


async def lost_connection_error(engine: AsyncEngine, database: str) -> Exception:
    """The error a statement meets on a pooled connection the server ended."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
        await terminate(database)
        try:
            await connection.execute(text("SELECT :email"), {"email": SECRET_EMAIL})
        except Exception as error:
            return error
    raise AssertionError("the terminated connection still worked")


async def test_a_lost_connection_is_told_apart_from_a_bad_statement_and_retried(
    pg_database: Callable[[str], Awaitable[str]],
) -> None:
    url = await pg_database("health_lost")
    name = url.rsplit("/", 1)[1]
    engine = make_engine(url)
    try:
        assert connection_lost(await lost_connection_error(engine, name))
        try:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT * FROM no_such_table"))
        except Exception as error:
            assert not connection_lost(error)
        runs = []

        async def work() -> int:
            async with engine.begin() as connection:
                runs.append(1)
                if len(runs) == 1:
                    await terminate(name)
                return (await connection.execute(text("SELECT 7"))).scalar_one()

        assert await again_if_connection_lost(work) == 7
        assert len(runs) == 2
    finally:
        await engine.dispose()


@pytest.fixture
async def lost_server(tmp_path, pg_database: Callable[[str], Awaitable[str]]) -> AsyncIterator[str]:
    """A server whose SignUp meets a lost database connection."""
    url = await pg_database("health_rpc")
    engine = make_engine(url)

    class Accounts(auth_pb2_grpc.AuthServiceServicer):
        async def SignUp(self, request, context):
            raise await lost_connection_error(engine, url.rsplit("/", 1)[1])

    settings = GatemeshSettings(data_dir=tmp_path, service_token="s", admin_token="a", key_hmac_secret="x")
    spec = ServiceSpec("test", lambda srv: auth_pb2_grpc.add_AuthServiceServicer_to_server(Accounts(), srv), [])
    server, _ = build_server(spec, settings)
    port = bind(server, "127.0.0.1:0", settings)
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(0)
    await engine.dispose()


async def test_a_lost_database_connection_is_answered_unavailable_and_logged_without_parameters(
    lost_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    """UNAVAILABLE, which callers retry (it was INTERNAL); the log line names the error's
    type, never the statement's parameters (the traceback carried them)."""
    async with grpc.aio.insecure_channel(lost_server) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        with caplog.at_level(logging.INFO), pytest.raises(grpc.aio.AioRpcError) as failed:
            request = auth_pb2.SignUpRequest(
                email="a@example.com", password="long enough password", age_attested=True, accepted_policy_version="x"
            )
            await stub.SignUp(request)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert SECRET_EMAIL not in caplog.text and "Traceback" not in caplog.text


async def test_liveness_stays_serving_when_a_dependency_is_down(tmp_path) -> None:
    """A liveness probe asks for `liveness`: a Redis outage takes the instance out of
    rotation (""), but must not have it restarted."""

    async def down() -> None:
        raise ConnectionError("down")

    servicer = health.aio.HealthServicer()
    await servicer.set(LIVENESS, SERVING)
    watch = DependencyWatch(servicer, [], [Dependency("redis", down)], 1.0)
    assert not await watch.check()
    assert await status(servicer) == NOT_SERVING
    assert await status(servicer, LIVENESS) == SERVING


async def test_a_served_health_check_reaches_the_client(redis_server: PrivateRedis, tmp_path) -> None:
    """Through a real server: the overall status a probe reads follows the watch."""
    settings = GatemeshSettings(data_dir=tmp_path, service_token="s", admin_token="a", key_hmac_secret="x")
    server, servicer = build_server(ServiceSpec("test", lambda srv: None, []), settings)
    port = bind(server, "127.0.0.1:0", settings)
    await server.start()
    watch = DependencyWatch(servicer, [], redis_check(redis_server.url, 1.0), 1.0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            await watch.check()
            assert (await stub.Check(health_pb2.HealthCheckRequest())).status == SERVING
            redis_server.stop()
            await watch.check()
            assert (await stub.Check(health_pb2.HealthCheckRequest())).status == NOT_SERVING
    finally:
        await watch.close()
        await server.stop(0)
