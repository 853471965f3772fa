"""Key and rate leases end to end: real auth, billing and proxy processes (two proxies) on
PostgreSQL and Redis. A leased key is served without auth counting each call; every change
to a key (revocation, rotation, account closure, erasure, an edit of its allowlist or spend
cap) applies to its very next call at every proxy that had it leased; shares from several
proxies never pass a key's limit; and a proxy whose key-change stream is down verifies
every call (fail closed)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack

import grpc
import pytest
from redis import Redis

from gatemesh.auth.v1 import auth_pb2
from gatemesh.common.v1 import common_pb2
from gatemesh.privacy.v1 import participant_pb2, participant_pb2_grpc
from gatemesh.proxy.v1 import proxy_pb2_grpc
from services.runtime.access import SERVICE_TOKEN_HEADER
from tests.support import REDIS_PROXY

from .mesh import (
    OPERATOR,
    PASSWORD,
    SERVICE_TOKEN,
    Mesh,
    User,
    add_proxy,
    call,
    counted,
    fresh_channels,
    fresh_minute,
    leased,
    mesh_databases,
    proxies,
    start_mesh,
    trailers,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def databases() -> Iterator[dict[str, str]]:
    yield from mesh_databases("lease")


@pytest.fixture(scope="module")
def mesh(
    tmp_path_factory: pytest.TempPathFactory, databases: dict[str, str], upstreams: Callable[[str], str]
) -> Iterator[Mesh]:
    """The mesh plus a second proxy (same auth, billing and request-log database)."""
    Redis.from_url(REDIS_PROXY).flushdb()
    tmp = tmp_path_factory.mktemp("lease-mesh")
    with ExitStack() as stack:
        mesh = start_mesh(stack, tmp, databases, upstreams, "INFO", {"GATEMESH_PROXY_RPC_TIMEOUT_S": "1"})
        add_proxy(stack, mesh, tmp)
        yield mesh


@pytest.fixture
async def live(mesh: Mesh) -> AsyncIterator[Mesh]:
    async for value in fresh_channels(mesh):
        yield value


async def refused(stub: proxy_pb2_grpc.ProxyServiceStub, user: User) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(stub, user, max_tokens=20)
    return caught.value


async def test_a_leased_key_is_served_without_auth_taking_each_call(live: Mesh) -> None:
    await fresh_minute()
    user = await live.user(limits=auth_pb2.KeyLimits(requests_per_minute=1000))
    await leased(live, user)
    taken = counted(user.key_id)
    for stub in proxies(live):
        for _ in range(5):
            await call(stub, user, max_tokens=20)
    assert counted(user.key_id) == taken  # every call came out of the proxies' shares


async def test_revocation_refuses_the_next_call_at_every_proxy(live: Mesh) -> None:
    user = await live.user()
    await leased(live, user)
    await live.auth.RevokeApiKey(auth_pb2.RevokeApiKeyRequest(key_id=user.key_id), metadata=user.session_metadata)
    for stub in proxies(live):
        error = await refused(stub, user)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert trailers(error)["gm-http-status"] == "401"


async def test_rotation_refuses_the_old_key_and_serves_the_new(live: Mesh) -> None:
    user = await live.user()
    await leased(live, user)
    rotated = await live.auth.RotateApiKey(
        auth_pb2.RotateApiKeyRequest(key_id=user.key_id), metadata=user.session_metadata
    )
    for stub in proxies(live):
        assert (await refused(stub, user)).code() == grpc.StatusCode.UNAUTHENTICATED
    new = User(live, user.account_id, rotated.api_key, user.session, rotated.key.key_id)
    for stub in proxies(live):
        await call(stub, new)


async def test_account_closure_refuses_the_next_call_at_every_proxy(live: Mesh) -> None:
    user = await live.user()
    await leased(live, user)
    await live.auth.CloseAccount(auth_pb2.CloseAccountRequest(password=PASSWORD), metadata=user.session_metadata)
    for stub in proxies(live):
        assert (await refused(stub, user)).code() == grpc.StatusCode.UNAUTHENTICATED


async def test_erasure_refuses_the_next_call_at_every_proxy(live: Mesh) -> None:
    """P8 erasure through auth's participant: the subject's leased key stops at once."""
    user = await live.user()
    await leased(live, user)
    participant = participant_pb2_grpc.PrivacyParticipantStub(live.channel("auth"))
    erase = participant_pb2.EraseSubjectRequest(
        subject=common_pb2.SubjectRef(account_id=user.account_id), request_id=f"erase-{user.account_id}"
    )
    await participant.EraseSubject(erase, metadata=[(SERVICE_TOKEN_HEADER, SERVICE_TOKEN)])
    for stub in proxies(live):
        assert (await refused(stub, user)).code() == grpc.StatusCode.UNAUTHENTICATED


async def test_an_allowlist_change_applies_to_the_next_call_at_every_proxy(live: Mesh) -> None:
    user = await live.user()
    await leased(live, user)
    update = auth_pb2.AdminUpdateApiKeyRequest(key_id=user.key_id, allowed_models=["gm-other"])
    await live.auth.AdminUpdateApiKey(update, metadata=OPERATOR)
    for stub in proxies(live):
        error = await refused(stub, user)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert json.loads(trailers(error)["gm-error-json"])["error"]["code"] == "model_not_allowed"


async def test_a_spend_cap_change_applies_to_the_next_call_at_every_proxy(live: Mesh) -> None:
    user = await live.user()
    await leased(live, user)
    update = auth_pb2.AdminUpdateApiKeyRequest(key_id=user.key_id, spend_cap_micros=1)
    await live.auth.AdminUpdateApiKey(update, metadata=OPERATOR)
    for stub in proxies(live):
        error = await refused(stub, user)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert json.loads(trailers(error)["gm-error-json"])["error"]["code"] == "insufficient_quota"


async def test_shares_of_several_proxies_never_pass_the_limit(live: Mesh) -> None:
    await fresh_minute(margin=25)
    rpm = 30
    user = await live.user(limits=auth_pb2.KeyLimits(requests_per_minute=rpm))
    stubs = proxies(live)
    outcomes: list[str] = []

    async def client(stub: proxy_pb2_grpc.ProxyServiceStub) -> None:
        for _ in range(25):
            try:
                await call(stub, user, max_tokens=20)
                outcomes.append("ok")
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                meta = trailers(error)
                assert meta["gm-http-status"] == "429" and int(meta["retry-after"]) >= 1
                outcomes.append("429")

    await asyncio.gather(*(client(stub) for stub in stubs for _ in range(3)))
    assert counted(user.key_id) <= rpm
    assert outcomes.count("ok") <= rpm
    assert outcomes.count("ok") >= rpm - 2 * 3  # at most a share's remainder idles per proxy
    assert outcomes.count("429") == len(outcomes) - outcomes.count("ok")


async def test_with_the_stream_down_every_call_is_verified(live: Mesh) -> None:
    """Auth frozen (SIGSTOP): a leased key is served at first (nothing on its path waits for
    auth), but once the stream is silent for three heartbeats the proxy drops its leases and
    verifies each call, which now fails; when auth is back, calls are verified and leased
    again (a fresh lease: the first call goes to auth)."""
    await fresh_minute(margin=25)
    user = await live.user(limits=auth_pb2.KeyLimits(requests_per_minute=1000))
    await leased(live, user)
    stub = proxies(live)[0]
    os.kill(live.pids["auth"], signal.SIGSTOP)
    try:
        started = time.monotonic()
        await call(stub, user)  # leased: served with auth frozen
        assert time.monotonic() - started < 1.0
        await asyncio.sleep(3.5)  # heartbeats are 1 s apart: three missed, the leases are gone
        error = await refused(stub, user)
        assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    finally:
        os.kill(live.pids["auth"], signal.SIGCONT)
    for _ in range(100):  # the proxy resubscribes with backoff
        try:
            before = counted(user.key_id)
            await call(stub, user)
            break
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.1)
    assert counted(user.key_id) > before  # verified by auth, not served from the old lease
