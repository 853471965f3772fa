"""The proxy's hot path end to end over gRPC: real auth, billing and proxy processes on
PostgreSQL and Redis, fake upstream providers. Every test checks money to the micro-unit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack

import grpc
import pytest
from google.api import httpbody_pb2
from redis import Redis

from gatemesh.privacy.v1 import participant_pb2, participant_pb2_grpc
from gatemesh.proxy.v1 import proxy_pb2
from services.proxy.tokens import TokenCounter
from services.runtime.access import SERVICE_TOKEN_HEADER
from tests.fake_upstream import plan_chat, plan_embeddings
from tests.support import REDIS_PROXY, create_database, drop_database

from .conftest import clear, received
from .mesh import (
    MODEL,
    SERVICE_TOKEN,
    Mesh,
    chat_body,
    cost,
    log_text,
    proxy_rows,
    sse_payloads,
    start_mesh,
    table_dump,
    trailers,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def databases() -> Iterator[dict[str, str]]:
    loop = asyncio.new_event_loop()
    urls = {name: loop.run_until_complete(create_database(f"proxy_{name}")) for name in ("auth", "billing", "proxy")}
    yield urls
    for url in urls.values():
        loop.run_until_complete(drop_database(url))
    loop.close()


@pytest.fixture(scope="module")
def mesh(
    tmp_path_factory: pytest.TempPathFactory, databases: dict[str, str], upstreams: Callable[[str], str]
) -> Iterator[Mesh]:
    Redis.from_url(REDIS_PROXY).flushdb()
    with ExitStack() as stack:
        yield start_mesh(stack, tmp_path_factory.mktemp("mesh"), databases, upstreams)


@pytest.fixture
async def live(mesh: Mesh) -> AsyncIterator[Mesh]:
    """The mesh with fresh channels on the test's event loop."""
    yield mesh
    for channel in mesh.channels.values():
        await channel.close()
    mesh.channels.clear()


async def test_json_call_charges_price_times_reported_tokens(live: Mesh) -> None:
    user = await live.user()
    before, _ = await user.balance()
    body = chat_body(max_tokens=50)
    (message,) = await user.chat(body)
    reply = json.loads(message.data)
    usage = reply["usage"]
    assert message.content_type == "application/json"
    assert reply["choices"][0]["message"]["content"] == plan_chat(body).text
    assert before - await user.settled_balance() == cost(usage["prompt_tokens"], usage["completion_tokens"])
    (record,) = await user.usage()
    assert (record.input_tokens, record.output_tokens, record.status) == (usage["prompt_tokens"], 8, "ok")
    assert not record.tokens_estimated


async def test_stream_hides_the_usage_chunk_and_charges_it(live: Mesh) -> None:
    user = await live.user()
    before, _ = await user.balance()
    body = chat_body(stream=True, fake_words=5)
    messages = await user.chat(body)
    payloads = sse_payloads(messages)
    assert {m.content_type for m in messages} == {"text/event-stream"}
    assert payloads[-1] == "[DONE]"
    assert not any(isinstance(p, dict) and p.get("usage") for p in payloads)
    text = "".join(p["choices"][0]["delta"].get("content", "") for p in payloads[:-1] if p["choices"])
    assert text == plan_chat(body).text
    plan = plan_chat(body)
    assert before - await user.settled_balance() == cost(plan.prompt_tokens, plan.completion_tokens)


async def test_stream_keeps_usage_for_a_client_that_asked(live: Mesh) -> None:
    user = await live.user()
    before, _ = await user.balance()
    payloads = sse_payloads(await user.chat(chat_body(stream=True, stream_options={"include_usage": True})))
    usage = payloads[-2]["usage"]
    assert before - await user.settled_balance() == cost(usage["prompt_tokens"], usage["completion_tokens"])


async def test_client_disconnect_mid_stream_charges_what_was_produced(live: Mesh) -> None:
    user = await live.user()
    before, _ = await user.balance()
    body = chat_body(stream=True, fake_words=40, fake_mode="slow", fake_delay_ms=50)
    request = httpbody_pb2.HttpBody(data=json.dumps(body).encode())
    call = live.proxy.ChatCompletions(request, metadata=user.metadata)
    seen = 0
    async for _message in call:
        seen += 1
        if seen == 3:
            call.cancel()
            break
    after = await user.settled_balance()
    (record,) = await user.usage()
    counter = TokenCounter()
    assert record.status == "client_disconnected"
    assert record.tokens_estimated
    assert record.input_tokens == counter.prompt_tokens(MODEL, body)
    assert 3 <= record.output_tokens < 40  # " hello" is one token: one per chunk the upstream produced
    assert before - after == cost(record.input_tokens, record.output_tokens)


async def test_fallback_after_5xx_charges_once(live: Mesh) -> None:
    user = await live.user()
    clear(live.upstreams["broken"])
    before, _ = await user.balance()
    body = chat_body(model="gm-fallback", fake_words=4)
    (message,) = await user.chat(body)
    usage = json.loads(message.data)["usage"]
    assert received(live.upstreams["broken"]), "the broken provider was tried first"
    assert before - await user.settled_balance() == cost(usage["prompt_tokens"], usage["completion_tokens"])
    (record,) = await user.usage()
    assert record.provider == "healthy"


async def test_upstream_down_releases_the_hold(live: Mesh) -> None:
    user = await live.user()
    before, _ = await user.balance()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await user.chat(chat_body(model="gm-dead"))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert trailers(caught.value)["gm-http-status"] == "503"
    assert await user.settled_balance() == before


async def test_stream_cut_midway_sends_an_error_event_and_charges_what_arrived(live: Mesh) -> None:
    user = await live.user()
    before, _ = await user.balance()
    body = chat_body(stream=True, fake_mode="cut", fake_cut_after=3)
    payloads = sse_payloads(await user.chat(body))
    assert payloads[-1]["error"]["code"] == "upstream_error"
    after = await user.settled_balance()
    (record,) = await user.usage()
    assert (record.output_tokens, record.status) == (3, "upstream_error")
    assert before - after == cost(record.input_tokens, 3)


async def test_every_client_field_reaches_the_upstream(live: Mesh) -> None:
    user = await live.user()
    clear(live.upstreams["ok"])
    extra = {
        "seed": 7,
        "response_format": {"type": "json_object"},
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
        "a_field_not_yet_invented": {"nested": [1, 2.5, None, "x"]},
    }
    await user.chat(chat_body(model="gm-alias", **extra))
    (sent,) = received(live.upstreams["ok"])
    assert sent == {**chat_body(**extra), "model": MODEL}  # only the alias was rewritten


async def test_tokens_counted_locally_when_the_upstream_reports_none(live: Mesh) -> None:
    user = await live.user()
    before, _ = await user.balance()
    body = chat_body(fake_mode="no_usage", fake_words=6)
    (message,) = await user.chat(body)
    assert "usage" not in json.loads(message.data)
    after = await user.settled_balance()
    counter = TokenCounter()
    expected_in, expected_out = counter.prompt_tokens(MODEL, body), counter.count(MODEL, plan_chat(body).text)
    (record,) = await user.usage()
    assert record.tokens_estimated
    assert (record.input_tokens, record.output_tokens) == (expected_in, expected_out)
    assert before - after == cost(expected_in, expected_out)


async def test_embeddings_charge_input_tokens(live: Mesh) -> None:
    user = await live.user()
    before, _ = await user.balance()
    body = {"model": "gm-embed", "input": ["one two three", "four"]}
    request = httpbody_pb2.HttpBody(data=json.dumps(body).encode())
    reply = json.loads((await live.proxy.Embeddings(request, metadata=user.metadata)).data)
    assert len(reply["data"]) == 2
    assert before - await user.settled_balance() == cost(plan_embeddings(body)[1], 0)


async def test_invalid_key_is_401(live: Mesh) -> None:
    for metadata in ([("authorization", "Bearer gm-not-a-real-key-000000000000000000")], []):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            request = httpbody_pb2.HttpBody(data=json.dumps(chat_body()).encode())
            [m async for m in live.proxy.ChatCompletions(request, metadata=metadata)]
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert trailers(caught.value)["gm-http-status"] == "401"


async def test_model_outside_the_allowlist_is_403_and_listing_shows_only_allowed(live: Mesh) -> None:
    user = await live.user(allowed_models=["gm-embed"])
    before, _ = await user.balance()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await user.chat(chat_body())
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert trailers(caught.value)["gm-http-status"] == "403"
    assert json.loads(trailers(caught.value)["gm-error-json"])["error"]["code"] == "model_not_allowed"
    assert await user.settled_balance() == before
    listed = json.loads((await live.proxy.ListModels(proxy_pb2.ListModelsRequest(), metadata=user.metadata)).data)
    assert [m["id"] for m in listed["data"]] == ["gm-embed"]
    everyone = await live.user()
    listed = json.loads((await live.proxy.ListModels(proxy_pb2.ListModelsRequest(), metadata=everyone.metadata)).data)
    ids = {m["id"] for m in listed["data"]}
    assert {"gm-test", "gm-alias", "gm-fallback", "gm-embed"} <= ids
    assert "gm-other" not in ids  # served but not priced: a call would be refused, so it is not listed


async def test_rate_limit_is_429_with_retry_after(live: Mesh) -> None:
    from gatemesh.auth.v1 import auth_pb2

    user = await live.user(limits=auth_pb2.KeyLimits(requests_per_minute=1))
    await user.chat(chat_body())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await user.chat(chat_body())
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    meta = trailers(caught.value)
    assert meta["gm-http-status"] == "429"
    assert int(meta["retry-after"]) >= 1
    assert json.loads(meta["gm-error-json"])["error"]["code"] == "rate_limit_exceeded"


async def test_empty_balance_is_insufficient_quota(live: Mesh) -> None:
    user = await live.user(credit_micros=0)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await user.chat(chat_body())
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    meta = trailers(caught.value)
    assert meta["gm-http-status"] == "429"
    assert json.loads(meta["gm-error-json"])["error"]["code"] == "insufficient_quota"
    assert await user.balance() == (0, 0)


async def test_concurrent_calls_coalesce_holds_and_settles_and_charge_each_exactly(live: Mesh) -> None:
    """40 calls at once from two users: their holds and settles reach billing in batches
    (HoldBatch, SettleBatch); each paid call is charged its own price, the unpaid user's
    calls are refused with insufficient_quota alone, and no hold is left."""
    payer, broke = await live.user(), await live.user(credit_micros=0)
    before, _ = await payer.balance()
    bodies = [chat_body(f"question number {i}", max_tokens=20 + i) for i in range(30)]
    calls = [payer.chat(body) for body in bodies] + [broke.chat(chat_body()) for _ in range(10)]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    replies = [json.loads(messages[0].data) for messages in outcomes[:30]]  # type: ignore[index]
    expected = sum(cost(r["usage"]["prompt_tokens"], r["usage"]["completion_tokens"]) for r in replies)
    assert before - await payer.settled_balance() == expected
    assert len(await payer.usage()) == 30
    for refused in outcomes[30:]:
        assert isinstance(refused, grpc.aio.AioRpcError)
        assert json.loads(trailers(refused)["gm-error-json"])["error"]["code"] == "insufficient_quota"
    assert await broke.balance() == (0, 0)


async def test_malformed_body_is_400_naming_the_field(live: Mesh) -> None:
    user = await live.user()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await user.chat({"model": MODEL, "messages": "not a list"})
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert json.loads(trailers(caught.value)["gm-error-json"])["error"]["param"] == "messages"


async def test_p3_2_canary_content_is_in_no_table_and_no_log_line(live: Mesh) -> None:
    """P3.2: content lives in memory only: a canary sent in a prompt and echoed in the
    completion appears in no table of the proxy's (or auth's, billing's) database and no log line."""
    user = await live.user()
    canary = "CANARY-7f3a9c1e-do-not-store"
    (message,) = await user.chat(chat_body(f"please repeat {canary}", fake_mode="echo"))
    assert canary in message.data.decode()
    streamed = await user.chat(chat_body(f"again {canary}", fake_mode="echo", stream=True))
    assert canary in b"".join(m.data for m in streamed).decode()
    await user.settled_balance()
    await asyncio.sleep(0.3)  # the request-log writer flushes every 0.1 s
    assert len(await proxy_rows(live.databases["proxy"], user.account_id)) == 2
    for name, url in live.databases.items():
        assert canary not in await table_dump(url), name
    for name, path in live.logs.items():
        assert canary not in log_text(path), name


async def test_participant_exports_and_erases_request_metadata_once(live: Mesh) -> None:
    user = await live.user()
    await user.chat(chat_body())
    await user.settled_balance()
    stub = participant_pb2_grpc.PrivacyParticipantStub(live.channel("proxy"))
    service = [(SERVICE_TOKEN_HEADER, SERVICE_TOKEN)]
    subject = participant_pb2.ExportSubjectRequest(subject={"account_id": user.account_id})
    exported = await stub.ExportSubject(subject, metadata=service)
    (record,) = exported.records
    assert record.message == "gatemesh.proxy.v1.RequestLogRecord"
    assert record.data["model"] == MODEL and record.data["outcome"] == "ok"
    erase = participant_pb2.EraseSubjectRequest(subject={"account_id": user.account_id}, request_id="erase-1")
    first = await stub.EraseSubject(erase, metadata=service)
    again = await stub.EraseSubject(erase, metadata=service)
    assert (first.actions[0].count, first.replayed) == (1, False)
    assert (again.actions[0].count, again.replayed) == (1, True)
    assert not (await stub.ExportSubject(subject, metadata=service)).records
    described = await stub.DescribeData(participant_pb2.DescribeDataRequest(), metadata=service)
    assert [f.field for f in described.fields] == ["account_id"]
