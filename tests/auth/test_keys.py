"""API keys over gRPC against real PostgreSQL and Redis: lifecycle, VerifyKey, rate limits,
revocation across instances, and Authenticate."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from redis.asyncio import Redis

from gatemesh.auth.v1 import auth_pb2
from tests.auth.conftest import OPERATOR, SERVICE, StartAuth, user


def verify(key: str, **fields) -> auth_pb2.VerifyKeyRequest:
    return auth_pb2.VerifyKeyRequest(api_key=key, **fields)


async def refused(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    return error.value


def openai_code(error: grpc.aio.AioRpcError) -> str:
    import json

    return json.loads(dict(error.trailing_metadata())["gm-error-json"])["error"]["code"]


async def test_key_is_shown_once_and_listed_without_it_p1_6(auth) -> None:
    account, md, key = await auth.user_with_key(name="laptop")
    assert key.startswith("gm-") and len(key) == 46
    listed = await auth.stub.ListApiKeys(auth_pb2.ListApiKeysRequest(), metadata=md)
    (listed_key,) = listed.keys
    assert listed_key.name == "laptop"
    assert listed_key.prefix == key[:7]
    assert key not in str(listed) and key[7:] not in str(listed)
    reply = await auth.stub.VerifyKey(verify(key), metadata=SERVICE)
    assert reply.account_id == account.account_id
    assert reply.key_id == listed_key.key_id
    assert reply.limits.requests_per_minute == 600  # the service default


async def test_list_pages_through_keys(auth) -> None:
    _, md, _ = await auth.user_with_key(name="k0")
    for i in range(1, 5):
        await auth.stub.CreateApiKey(auth_pb2.CreateApiKeyRequest(name=f"k{i}"), metadata=md)
    names, token = [], ""
    while True:
        page = await auth.stub.ListApiKeys(
            auth_pb2.ListApiKeysRequest(page={"page_size": 2, "page_token": token}), metadata=md
        )
        names += [k.name for k in page.keys]
        token = page.page.next_page_token
        if not token:
            break
    assert names == ["k0", "k1", "k2", "k3", "k4"]


async def test_revoked_key_is_refused_at_once(auth) -> None:
    _, md, key = await auth.user_with_key()
    await auth.stub.VerifyKey(verify(key), metadata=SERVICE)  # now cached locally and in Redis
    key_id = (await auth.stub.ListApiKeys(auth_pb2.ListApiKeysRequest(), metadata=md)).keys[0].key_id
    revoked = await auth.stub.RevokeApiKey(auth_pb2.RevokeApiKeyRequest(key_id=key_id), metadata=md)
    assert revoked.key.HasField("revoked_at")
    error = await refused(auth.stub.VerifyKey(verify(key), metadata=SERVICE))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert openai_code(error) == "invalid_api_key"


async def test_another_accounts_key_cannot_be_revoked(auth) -> None:
    _, md_a, _ = await auth.user_with_key()
    _, md_b, key_b = await auth.user_with_key()
    key_id = (await auth.stub.ListApiKeys(auth_pb2.ListApiKeysRequest(), metadata=md_b)).keys[0].key_id
    error = await refused(auth.stub.RevokeApiKey(auth_pb2.RevokeApiKeyRequest(key_id=key_id), metadata=md_a))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    await auth.stub.VerifyKey(verify(key_b), metadata=SERVICE)


async def test_rotation_replaces_the_key_with_the_same_settings(auth) -> None:
    _, md, old = await auth.user_with_key(name="ci", allowed_models=["gpt-x"], limits={"requests_per_minute": 7})
    key_id = (await auth.stub.ListApiKeys(auth_pb2.ListApiKeysRequest(), metadata=md)).keys[0].key_id
    rotated = await auth.stub.RotateApiKey(auth_pb2.RotateApiKeyRequest(key_id=key_id), metadata=md)
    assert rotated.api_key != old and rotated.key.name == "ci"
    reply = await auth.stub.VerifyKey(verify(rotated.api_key, model="gpt-x"), metadata=SERVICE)
    assert reply.limits.requests_per_minute == 7
    assert (await refused(auth.stub.VerifyKey(verify(old), metadata=SERVICE))).code() == grpc.StatusCode.UNAUTHENTICATED


async def test_model_allowlist(auth) -> None:
    _, _, key = await auth.user_with_key(allowed_models=["small-model"])
    await auth.stub.VerifyKey(verify(key, model="small-model"), metadata=SERVICE)
    error = await refused(auth.stub.VerifyKey(verify(key, model="big-model"), metadata=SERVICE))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert openai_code(error) == "model_not_allowed"


async def test_expired_key_is_refused(auth) -> None:
    expires = Timestamp()
    expires.FromDatetime(datetime.now(UTC) + timedelta(seconds=1))
    _, _, key = await auth.user_with_key(expires_at=expires)
    await auth.stub.VerifyKey(verify(key), metadata=SERVICE)
    await asyncio.sleep(1.2)
    error = await refused(auth.stub.VerifyKey(verify(key), metadata=SERVICE))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "expired" in error.details()


async def test_unknown_and_malformed_keys(auth) -> None:
    unknown = await refused(auth.stub.VerifyKey(verify("gm-" + "x" * 43), metadata=SERVICE))
    assert unknown.code() == grpc.StatusCode.UNAUTHENTICATED
    malformed = await refused(auth.stub.VerifyKey(verify("sk-not-ours"), metadata=SERVICE))
    assert malformed.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = error_details_pb2.BadRequest()
    assert rpc_status.from_call(malformed).details[0].Unpack(bad)
    assert [v.field for v in bad.field_violations] == ["api_key"]


async def same_minute(auth, needed_s: float = 5.0) -> None:
    """Wait, if need be, so that the next few seconds fall in one rate-limit window."""
    seconds, micros = await auth.app.redis.time()
    into = seconds % 60 + micros / 1e6
    if into > 60 - needed_s:
        await asyncio.sleep(60 - into + 0.05)


async def test_rate_limit_is_exact_under_200_concurrent_calls(auth) -> None:
    _, _, key = await auth.user_with_key(limits={"requests_per_minute": 50, "tokens_per_minute": 10_000_000})
    request = verify(key, consume_rate_limit=True, estimated_tokens=1)
    await same_minute(auth)
    results = await asyncio.gather(
        *(auth.stub.VerifyKey(request, metadata=SERVICE) for _ in range(200)), return_exceptions=True
    )
    passed = [r for r in results if isinstance(r, auth_pb2.VerifyKeyResponse)]
    limited = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(passed) == 50
    assert len(limited) == 150
    assert {e.code() for e in limited} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert sorted(r.remaining_requests for r in passed) == list(range(50))
    retry = error_details_pb2.RetryInfo()
    assert any(d.Unpack(retry) for d in rpc_status.from_call(limited[0]).details)
    assert 1 <= retry.retry_delay.seconds <= 60
    assert openai_code(limited[0]) == "rate_limit_exceeded"
    assert 1 <= int(dict(limited[0].trailing_metadata())["retry-after"]) <= 60


async def test_token_limit_is_exact_and_report_tokens_adjusts_it(auth) -> None:
    _, _, key = await auth.user_with_key(limits={"requests_per_minute": 10_000, "tokens_per_minute": 1000})
    request = verify(key, consume_rate_limit=True, estimated_tokens=10)
    await same_minute(auth)
    results = await asyncio.gather(
        *(auth.stub.VerifyKey(request, metadata=SERVICE) for _ in range(200)), return_exceptions=True
    )
    passed = [r for r in results if isinstance(r, auth_pb2.VerifyKeyResponse)]
    assert len(passed) == 100
    # The calls used 500 fewer tokens than estimated: that room comes back.
    await auth.stub.ReportTokens(
        auth_pb2.ReportTokensRequest(key_id=passed[0].key_id, token_delta=-500), metadata=SERVICE
    )
    more = await asyncio.gather(
        *(auth.stub.VerifyKey(request, metadata=SERVICE) for _ in range(100)), return_exceptions=True
    )
    assert sum(isinstance(r, auth_pb2.VerifyKeyResponse) for r in more) == 50


async def test_revocation_reaches_a_second_instance_within_one_second(start_auth: StartAuth) -> None:
    """Two instances share PostgreSQL and Redis; local caches last a minute, so only the
    pub/sub revocation can make the second one refuse the key in time."""
    first = await start_auth(auth_local_cache_ttl_s=60)
    second = await start_auth(auth_local_cache_ttl_s=60)
    _, md, key = await first.user_with_key()
    await first.stub.VerifyKey(verify(key), metadata=SERVICE)
    await second.stub.VerifyKey(verify(key), metadata=SERVICE)  # cached in second's process
    key_id = (await first.stub.ListApiKeys(auth_pb2.ListApiKeysRequest(), metadata=md)).keys[0].key_id
    await first.stub.RevokeApiKey(auth_pb2.RevokeApiKeyRequest(key_id=key_id), metadata=md)
    revoked_at = time.monotonic()
    while True:
        try:
            await second.stub.VerifyKey(verify(key), metadata=SERVICE)
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            break
        assert time.monotonic() - revoked_at < 1.0, "second instance still accepts the revoked key"
        await asyncio.sleep(0.01)


async def test_redis_only_instance_sees_revocation_at_once(start_auth: StartAuth) -> None:
    """An instance without a local cache reads Redis: the tombstone must be there at once."""
    first = await start_auth()
    redis_only = await start_auth(auth_local_cache_ttl_s=0)
    _, md, key = await first.user_with_key()
    await redis_only.stub.VerifyKey(verify(key), metadata=SERVICE)  # fills the Redis entry
    key_id = (await first.stub.ListApiKeys(auth_pb2.ListApiKeysRequest(), metadata=md)).keys[0].key_id
    await first.stub.RevokeApiKey(auth_pb2.RevokeApiKeyRequest(key_id=key_id), metadata=md)
    error = await refused(redis_only.stub.VerifyKey(verify(key), metadata=SERVICE))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_cached_verification_needs_no_database(auth) -> None:
    """Once cached, VerifyKey keeps working while the database is unreachable."""
    _, _, key = await auth.user_with_key()
    await auth.stub.VerifyKey(verify(key), metadata=SERVICE)
    original = auth.app.store.key_for_verification

    async def no_database(_hash: str):
        raise AssertionError("the database was consulted")

    auth.app.store.key_for_verification = no_database  # type: ignore[method-assign]
    try:
        for _ in range(20):
            await auth.stub.VerifyKey(verify(key), metadata=SERVICE)
    finally:
        auth.app.store.key_for_verification = original  # type: ignore[method-assign]


async def test_last_used_is_flushed_in_the_background(auth) -> None:
    _, md, key = await auth.user_with_key()
    for _ in range(5):
        await auth.stub.VerifyKey(verify(key), metadata=SERVICE)
    listed = await auth.stub.ListApiKeys(auth_pb2.ListApiKeysRequest(), metadata=md)
    assert not listed.keys[0].HasField("last_used_at")  # no write per call
    await auth.app.keys.flush_last_used()
    listed = await auth.stub.ListApiKeys(auth_pb2.ListApiKeysRequest(), metadata=md)
    assert listed.keys[0].HasField("last_used_at")


async def test_authenticate_resolves_keys_sessions_and_the_operator(auth) -> None:
    account, md, key = await auth.user_with_key()
    by_key = await auth.stub.Authenticate(auth_pb2.AuthenticateRequest(credential=key), metadata=SERVICE)
    assert by_key.principal.account_id == account.account_id and by_key.principal.key_id
    session = md[0][1].removeprefix("Bearer ")
    by_session = await auth.stub.Authenticate(auth_pb2.AuthenticateRequest(credential=session), metadata=SERVICE)
    assert by_session.principal.account_id == account.account_id and by_session.principal.session_id
    operator = OPERATOR[0][1].removeprefix("Bearer ")
    by_operator = await auth.stub.Authenticate(auth_pb2.AuthenticateRequest(credential=operator), metadata=SERVICE)
    assert by_operator.principal.operator
    for garbage in ("nope", "gm-short", "gms_" + "x" * 43):
        error = await refused(
            auth.stub.Authenticate(auth_pb2.AuthenticateRequest(credential=garbage), metadata=SERVICE)
        )
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    # An API key also works as a USER credential on auth's own RPCs.
    me = await auth.stub.GetMe(auth_pb2.GetMeRequest(), metadata=user(key))
    assert me.account.account_id == account.account_id


async def test_admin_key_commands(auth) -> None:
    account = await auth.sign_up()
    created = await auth.stub.AdminCreateApiKey(
        auth_pb2.AdminCreateApiKeyRequest(email=account.email, key={"name": "ops"}), metadata=OPERATOR
    )
    listed = await auth.stub.AdminListApiKeys(auth_pb2.AdminListApiKeysRequest(email=account.email), metadata=OPERATOR)
    assert [k.key_id for k in listed.keys] == [created.key.key_id]
    await auth.stub.AdminRevokeApiKey(auth_pb2.RevokeApiKeyRequest(key_id=created.key.key_id), metadata=OPERATOR)
    error = await refused(auth.stub.VerifyKey(verify(created.api_key), metadata=SERVICE))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    # A user session is not an admin credential.
    md = await auth.session(account.email)
    denied = await refused(
        auth.stub.AdminListApiKeys(auth_pb2.AdminListApiKeysRequest(email=account.email), metadata=md)
    )
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_rate_limit_counters_live_in_redis_not_in_process(start_auth: StartAuth, redis_url: str) -> None:
    """Two instances share one window: the limit holds across them."""
    first = await start_auth()
    second = await start_auth()
    _, _, key = await first.user_with_key(limits={"requests_per_minute": 10})
    request = verify(key, consume_rate_limit=True)
    await same_minute(first)
    calls = [s.stub.VerifyKey(request, metadata=SERVICE) for s in (first, second) for _ in range(10)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert sum(isinstance(r, auth_pb2.VerifyKeyResponse) for r in results) == 10
    client = Redis.from_url(redis_url)
    assert await client.keys("gm:auth:rl:*")
    await client.aclose()


async def test_an_api_key_cannot_manage_keys_or_the_account(auth) -> None:
    """A leaked key must not mint keys, revoke others or close the account."""
    _, _md, key = await auth.user_with_key()
    as_key = user(key)
    for call in (
        auth.stub.CreateApiKey(auth_pb2.CreateApiKeyRequest(name="more"), metadata=as_key),
        auth.stub.CloseAccount(auth_pb2.CloseAccountRequest(password="whatever password"), metadata=as_key),
        auth.stub.ChangePassword(
            auth_pb2.ChangePasswordRequest(current_password="x" * 12, new_password="y" * 12), metadata=as_key
        ),
    ):
        assert (await refused(call)).code() == grpc.StatusCode.PERMISSION_DENIED
    listed = await auth.stub.ListApiKeys(auth_pb2.ListApiKeysRequest(), metadata=as_key)  # reading is fine
    assert len(listed.keys) == 1


async def test_an_expired_key_cannot_be_rotated_into_a_live_one(auth) -> None:
    expires = Timestamp()
    expires.FromDatetime(datetime.now(UTC) + timedelta(seconds=1))
    _, md, _ = await auth.user_with_key(expires_at=expires)
    key_id = (await auth.stub.ListApiKeys(auth_pb2.ListApiKeysRequest(), metadata=md)).keys[0].key_id
    await asyncio.sleep(1.1)
    error = await refused(auth.stub.RotateApiKey(auth_pb2.RotateApiKeyRequest(key_id=key_id), metadata=md))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_verify_key_batch_answers_each_item_as_verify_key_would(auth) -> None:
    """The proxy coalesces concurrent VerifyKey calls into VerifyKeyBatch: every item gets the
    response, or the status, reason and retry delay, that a single VerifyKey would give."""
    _, _, key = await auth.user_with_key(allowed_models=["small-model"], limits={"requests_per_minute": 2})
    await same_minute(auth)
    items = [
        verify(key, model="small-model", consume_rate_limit=True),
        verify(key, model="big-model"),
        verify(key, model="m" * 5000),  # refused before the key is even looked at
        verify("gm-" + "x" * 43),
        verify("sk-not-ours"),
        verify(key, consume_rate_limit=True),
        verify(key, consume_rate_limit=True),  # the third request this minute: over the limit of 2
    ]
    reply = await auth.stub.VerifyKeyBatch(auth_pb2.VerifyKeyBatchRequest(items=items), metadata=SERVICE)
    outcomes = [(i.error_code, i.error_reason) for i in reply.items]
    assert outcomes[:5] == [
        ("", ""), ("PERMISSION_DENIED", "model_not_allowed"), ("INVALID_ARGUMENT", ""),
        ("UNAUTHENTICATED", "invalid_api_key"), ("INVALID_ARGUMENT", ""),
    ]  # fmt: skip
    # The rate limits are taken in item order (one Redis round trip for the batch).
    assert outcomes[5:] == [("", ""), ("RESOURCE_EXHAUSTED", "rate_limit_exceeded")]
    assert 1 <= reply.items[6].retry_after_seconds <= 60
    assert reply.items[0].result.key_id and reply.items[0].result.remaining_requests == 1
    # Again, the key now in auth's own cache (checked without I/O): the same verdicts.
    again = [verify(key, model="small-model"), verify(key, model="big-model"), verify(key, consume_rate_limit=True)]
    reply = await auth.stub.VerifyKeyBatch(auth_pb2.VerifyKeyBatchRequest(items=again), metadata=SERVICE)
    assert [(i.error_code, i.error_reason) for i in reply.items] == [
        ("", ""), ("PERMISSION_DENIED", "model_not_allowed"), ("RESOURCE_EXHAUSTED", "rate_limit_exceeded"),
    ]  # fmt: skip
    assert (await refused(auth.stub.VerifyKeyBatch(auth_pb2.VerifyKeyBatchRequest(items=items)))).code() == (
        grpc.StatusCode.UNAUTHENTICATED
    )  # an internal RPC: refused without the service credential
    empty = await refused(auth.stub.VerifyKeyBatch(auth_pb2.VerifyKeyBatchRequest(), metadata=SERVICE))
    assert empty.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_batch_of_keys_no_cache_holds_is_looked_up_in_one_query(auth, redis_url: str) -> None:
    """A burst of keys no cache holds (after a restart, a Redis flush, or a thousand new keys
    at once) costs one SELECT for the whole VerifyKeyBatch. Looked up one by one, 500 such
    keys took 4-13 s on 2 cores, past the proxy's deadline: every call of the burst failed
    and nothing was cached, so the next burst failed too (found by tests/reliability)."""
    from sqlalchemy import event

    account, md, first = await auth.user_with_key()
    made = [first]
    for index in range(39):
        created = await auth.stub.CreateApiKey(auth_pb2.CreateApiKeyRequest(name=f"k{index}"), metadata=md)
        made.append(created.api_key)
    await Redis.from_url(redis_url).flushdb()  # no Redis entries; none in process either (never verified)
    selects: list[str] = []

    def count(_conn, _cursor, statement: str, *_args) -> None:
        if "api_keys" in statement and statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    event.listen(auth.app.engine.sync_engine, "before_cursor_execute", count)
    try:
        items = [verify(key, consume_rate_limit=True) for key in made] + [verify("gm-" + "y" * 43)]
        reply = await auth.stub.VerifyKeyBatch(auth_pb2.VerifyKeyBatchRequest(items=items), metadata=SERVICE)
    finally:
        event.remove(auth.app.engine.sync_engine, "before_cursor_execute", count)
    assert len(selects) == 1
    assert {i.result.account_id for i in reply.items[:-1]} == {account.account_id}
    assert reply.items[-1].error_reason == "invalid_api_key"
    # Cached now (in process and in Redis): the same batch needs no query at all.
    again = await auth.stub.VerifyKeyBatch(auth_pb2.VerifyKeyBatchRequest(items=items[:-1]), metadata=SERVICE)
    assert len(selects) == 1 and not any(i.error_code for i in again.items)
