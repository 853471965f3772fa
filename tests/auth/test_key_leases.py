"""Auth's side of key leases: VerifyKey hands out a lease tag and a rate share when asked,
and WatchKeyChanges pushes every change of a key to the proxies, from this instance and
from the others (over Redis), before the RPC that made the change answers."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from gatemesh.auth.v1 import auth_pb2

from .conftest import PASSWORD, SERVICE, Running, StartAuth


async def watch(auth: Running) -> tuple[grpc.aio.UnaryStreamCall, asyncio.Queue]:
    """A watcher as a proxy runs it: the stream, and a queue of the tags it names."""
    stream = auth.stub.WatchKeyChanges(auth_pb2.WatchKeyChangesRequest(), metadata=SERVICE)
    first = await asyncio.wait_for(stream.read(), 5)
    assert first.ready and first.heartbeat_ms > 0
    tags: asyncio.Queue = asyncio.Queue()

    async def pump() -> None:
        while (message := await stream.read()) is not grpc.aio.EOF:
            for tag in message.lease_tags:
                tags.put_nowait(tag)

    asyncio.get_running_loop().create_task(pump())
    return stream, tags


async def pushed(tags: asyncio.Queue, tag: str, within_s: float = 1.0) -> None:
    """The tag arrives within `within_s` (a change may come twice: this instance pushes its
    own at once, and again when Redis echoes it)."""
    async with asyncio.timeout(within_s):
        while await tags.get() != tag:
            pass


async def lease(auth: Running, api_key: str) -> auth_pb2.VerifyKeyResponse:
    request = auth_pb2.VerifyKeyRequest(api_key=api_key, consume_rate_limit=True, estimated_tokens=10, lease=True)
    return await auth.stub.VerifyKey(request, metadata=SERVICE)


async def test_verify_with_lease_gives_a_tag_that_is_neither_key_nor_hash_and_a_share(auth: Running) -> None:
    _, _, key = await auth.user_with_key(limits=auth_pb2.KeyLimits(requests_per_minute=100))
    reply = await lease(auth, key)
    assert len(reply.lease_tag) == 24 and reply.lease_tag not in key
    assert reply.lease_tag != auth.app.keys.hmac_of(key)
    assert reply.rate_share.requests == 10 and 0 < reply.rate_share.valid_ms <= 60_000
    plain = await auth.stub.VerifyKey(auth_pb2.VerifyKeyRequest(api_key=key), metadata=SERVICE)
    assert not plain.lease_tag and not plain.HasField("rate_share")


async def test_watch_is_internal(auth: Running) -> None:
    stream = auth.stub.WatchKeyChanges(auth_pb2.WatchKeyChangesRequest())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.read()
    assert caught.value.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


async def test_revocation_is_pushed_before_revoke_answers(auth: Running) -> None:
    _, session, key = await auth.user_with_key()
    tag = (await lease(auth, key)).lease_tag
    stream, tags = await watch(auth)
    key_id = (await auth.stub.ListApiKeys(auth_pb2.ListApiKeysRequest(), metadata=session)).keys[0].key_id
    await auth.stub.RevokeApiKey(auth_pb2.RevokeApiKeyRequest(key_id=key_id), metadata=session)
    await pushed(tags, tag, 0.1)  # written before the answer: here at once
    stream.cancel()


async def test_closure_and_rotation_are_pushed(auth: Running) -> None:
    _, session, key = await auth.user_with_key()
    _, other_session, other = await auth.user_with_key()
    stream, tags = await watch(auth)
    closing = (await lease(auth, key)).lease_tag
    rotating = (await lease(auth, other)).lease_tag
    await auth.stub.CloseAccount(auth_pb2.CloseAccountRequest(password=PASSWORD), metadata=session)
    await pushed(tags, closing)
    key_id = (await auth.stub.ListApiKeys(auth_pb2.ListApiKeysRequest(), metadata=other_session)).keys[0].key_id
    await auth.stub.RotateApiKey(auth_pb2.RotateApiKeyRequest(key_id=key_id), metadata=other_session)
    await pushed(tags, rotating)
    stream.cancel()


async def test_a_change_made_at_another_instance_reaches_this_ones_watchers(start_auth: StartAuth) -> None:
    here, there = await start_auth(), await start_auth()
    _, session, key = await here.user_with_key()
    tag = (await lease(here, key)).lease_tag
    stream, tags = await watch(here)
    key_id = (await there.stub.ListApiKeys(auth_pb2.ListApiKeysRequest(), metadata=session)).keys[0].key_id
    await there.stub.RevokeApiKey(auth_pb2.RevokeApiKeyRequest(key_id=key_id), metadata=session)
    await pushed(tags, tag, 2.0)
    stream.cancel()


async def test_an_instance_that_lost_its_listener_ends_streams_and_leases_nothing(auth: Running) -> None:
    _, _, key = await auth.user_with_key()
    stream, _ = await watch(auth)
    auth.app.cache.listening.clear()
    auth.app.cache.feed.reset()  # what the listener does when it loses Redis
    assert await stream.read() is grpc.aio.EOF
    assert not (await lease(auth, key)).lease_tag
    refused = auth.stub.WatchKeyChanges(auth_pb2.WatchKeyChangesRequest(), metadata=SERVICE)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await refused.read()
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_batch_takes_one_share_per_key(auth: Running) -> None:
    """Concurrent first calls of one key (one VerifyKeyBatch) must not each take a share of
    its minute: only the first item gets one, the others take just their call."""
    _, _, key = await auth.user_with_key(limits=auth_pb2.KeyLimits(requests_per_minute=100))
    item = auth_pb2.VerifyKeyRequest(api_key=key, consume_rate_limit=True, estimated_tokens=10, lease=True)
    reply = await auth.stub.VerifyKeyBatch(auth_pb2.VerifyKeyBatchRequest(items=[item] * 10), metadata=SERVICE)
    shares = [i.result.rate_share.requests for i in reply.items]
    assert not any(i.error_code for i in reply.items)
    assert shares == [10] + [0] * 9
    assert reply.items[-1].result.remaining_requests == 100 - 10 - 10
