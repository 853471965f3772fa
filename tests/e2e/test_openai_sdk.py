"""End to end through the edge with the official `openai` SDK: `gatemesh up` (auth,
billing, proxy, Envoy) on PostgreSQL and Redis, the fake upstream behind it.

Proves what a developer relies on: sync, async and streaming calls work unchanged, each
call costs exactly price x tokens, unknown fields reach the upstream, every failure is
the SDK's matching exception with OpenAI's error body, and a canary string that went
through a completion is found in no table, log or exported span afterwards (P3.2).
One mesh serves the whole module.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.edge_mesh import DEAD, EMBED, FLAKY, MODEL, OTHER, SLOW, Mesh, User, cost, running_mesh
from tests.fake_upstream import plan_chat, plan_embeddings

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory.mktemp("e2e-edge")) as running:
        yield running


@pytest.fixture(scope="module")
def user(mesh: Mesh) -> User:
    return mesh.rest_user()


def files_containing(roots: list[Path], needle: str) -> list[Path]:
    """Every file under `roots` (logs, SQLite files, generated config) that holds `needle`."""
    paths = [p for root in roots for p in ([root] if root.is_file() else root.rglob("*")) if p.is_file()]
    return [path for path in paths if needle.encode() in path.read_bytes()]


def client(mesh: Mesh, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{mesh.url}/v1", api_key=key, max_retries=0)


def messages(text: str = "say hello please") -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_cli_made_key_works_with_the_sdk(mesh: Mesh) -> None:
    email = f"cli-{secrets.token_hex(4)}@example.com"
    account_line = mesh.cli("accounts", "create", "--email", email, "--password-stdin", stdin="a long enough password")
    account_id = account_line.split()[1]
    key = mesh.cli("keys", "create", "--email", email, "--name", "cli").strip().splitlines()[-1]
    mesh.grant(account_id, 1_000_000)
    reply = client(mesh, key).chat.completions.create(model=MODEL, messages=messages())
    assert reply.choices[0].message.content == plan_chat({"messages": messages()}).text


def test_json_completion_costs_price_times_tokens(mesh: Mesh, user: User) -> None:
    before = user.settled_balance()
    reply = client(mesh, user.api_key).chat.completions.create(model=MODEL, messages=messages())
    plan = plan_chat({"messages": messages()})
    assert reply.choices[0].message.content == plan.text
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (plan.prompt_tokens, plan.completion_tokens)
    assert before - user.settled_balance() == cost(plan.prompt_tokens, plan.completion_tokens)


def test_streamed_completion_costs_price_times_tokens_and_hides_usage(mesh: Mesh, user: User) -> None:
    before = user.settled_balance()
    body = {"messages": messages("stream me some words"), "fake_words": 12}
    stream = client(mesh, user.api_key).chat.completions.create(
        model=MODEL, messages=body["messages"], stream=True, extra_body={"fake_words": 12}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    plan = plan_chat(body)
    assert text == plan.text
    assert all(chunk.usage is None for chunk in chunks)  # the client did not ask for usage
    assert before - user.settled_balance() == cost(plan.prompt_tokens, plan.completion_tokens)


async def test_async_stream_with_usage_and_async_json(mesh: Mesh, user: User) -> None:
    before = await asyncio.to_thread(user.settled_balance)
    async with openai.AsyncOpenAI(base_url=f"{mesh.url}/v1", api_key=user.api_key, max_retries=0) as aclient:
        stream = await aclient.chat.completions.create(
            model=MODEL, messages=messages(), stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
        reply = await aclient.chat.completions.create(model=MODEL, messages=messages("and once more"))
    plan = plan_chat({"messages": messages()})
    usage = [chunk.usage for chunk in chunks if chunk.usage is not None]
    assert [(u.prompt_tokens, u.completion_tokens) for u in usage] == [(plan.prompt_tokens, plan.completion_tokens)]
    assert reply.usage is not None
    expected = cost(plan.prompt_tokens, plan.completion_tokens)
    expected += cost(reply.usage.prompt_tokens, reply.usage.completion_tokens)
    assert before - await asyncio.to_thread(user.settled_balance) == expected


def test_embeddings_and_models(mesh: Mesh, user: User) -> None:
    before = user.settled_balance()
    inputs = ["one two three", "four five"]
    reply = client(mesh, user.api_key).embeddings.create(model=EMBED, input=inputs)
    assert len(reply.data) == 2
    _count, tokens = plan_embeddings({"input": inputs})
    assert before - user.settled_balance() == cost(tokens)
    models = {model.id for model in client(mesh, user.api_key).models.list()}
    assert {MODEL, OTHER, EMBED} <= models


def test_unknown_request_fields_reach_the_upstream(mesh: Mesh, user: User) -> None:
    marker = secrets.token_hex(6)
    extra = {"gm_future_field": {"marker": marker, "nested": [1, 2]}, "seed": 7, "tools": []}
    client(mesh, user.api_key).chat.completions.create(model=MODEL, messages=messages(), extra_body=extra)
    received = [r for r in mesh.upstream_requests() if (r.get("gm_future_field") or {}).get("marker") == marker]
    assert received and received[0]["gm_future_field"]["nested"] == [1, 2] and received[0]["seed"] == 7


def test_invalid_key_is_401(mesh: Mesh) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        client(mesh, "gm-" + "x" * 43).chat.completions.create(model=MODEL, messages=messages())
    assert caught.value.status_code == 401
    assert caught.value.body["type"] == "authentication_error"  # type: ignore[index]


def test_model_outside_the_allowlist_is_403(mesh: Mesh) -> None:
    limited = mesh.rest_user(allowed_models=[OTHER])
    with pytest.raises(openai.PermissionDeniedError):
        client(mesh, limited.api_key).chat.completions.create(model=MODEL, messages=messages())
    assert client(mesh, limited.api_key).chat.completions.create(model=OTHER, messages=messages()).choices


def test_rate_limit_is_429_with_retry_after(mesh: Mesh) -> None:
    limited = mesh.rest_user(limits={"requests_per_minute": 1})
    sdk = client(mesh, limited.api_key)
    sdk.chat.completions.create(model=MODEL, messages=messages())
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.chat.completions.create(model=MODEL, messages=messages())
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert caught.value.body["type"] == "rate_limit_error"  # type: ignore[index]


def test_empty_balance_is_insufficient_quota(mesh: Mesh) -> None:
    broke = mesh.rest_user(credit_micros=0)
    with pytest.raises(openai.RateLimitError) as caught:
        client(mesh, broke.api_key).chat.completions.create(model=MODEL, messages=messages())
    assert caught.value.code == "insufficient_quota"
    assert broke.settled_balance() == 0


def test_malformed_json_and_wrong_types_are_400_naming_the_problem(mesh: Mesh, user: User) -> None:
    headers = {"authorization": f"Bearer {user.api_key}", "content-type": "application/json"}
    broken = httpx.post(f"{mesh.url}/v1/chat/completions", content=b'{"model": "gm-test", ', headers=headers)
    assert broken.status_code == 400, broken.text
    assert broken.json()["error"]["type"] == "invalid_request_error"
    assert "json" in broken.json()["error"]["message"].lower()
    with pytest.raises(openai.BadRequestError) as caught:
        client(mesh, user.api_key).chat.completions.create(model=MODEL, messages="not a list")  # type: ignore[arg-type]
    assert "messages" in caught.value.message


def test_unknown_path_is_an_openai_404(mesh: Mesh, user: User) -> None:
    reply = httpx.post(f"{mesh.url}/v1/nothing", json={}, headers={"authorization": f"Bearer {user.api_key}"})
    assert reply.status_code == 404
    assert reply.json()["error"]["type"] == "not_found_error"


@pytest.mark.parametrize(
    ("model", "extra", "status"),
    [(FLAKY, {"fake_mode": "500"}, 502), (DEAD, {}, 503), (SLOW, {"fake_mode": "slow", "fake_delay_ms": 2000}, 504)],
)
def test_upstream_failures_are_5xx_and_charge_nothing(
    mesh: Mesh, user: User, model: str, extra: dict[str, object], status: int
) -> None:
    before = user.settled_balance()
    with pytest.raises(openai.InternalServerError) as caught:
        client(mesh, user.api_key).chat.completions.create(model=model, messages=messages(), extra_body=extra)
    assert caught.value.status_code == status
    assert caught.value.body["type"] == "api_error"  # type: ignore[index]
    assert user.settled_balance() == before


async def test_canary_is_found_in_no_table_log_or_span(mesh: Mesh, user: User) -> None:
    """P3.2: request and response content is never stored, logged or exported."""
    canary = f"CANARY{secrets.token_hex(8)}"
    trace_id = secrets.token_hex(16)
    sdk = openai.AsyncOpenAI(base_url=f"{mesh.url}/v1", api_key=user.api_key, max_retries=0)
    headers = {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
    async with sdk:
        reply = await sdk.chat.completions.create(
            model=MODEL, messages=messages(f"repeat {canary}"), extra_body={"fake_mode": "echo"}, extra_headers=headers
        )
        stream = await sdk.chat.completions.create(
            model=MODEL, messages=messages(f"again {canary}"), stream=True, extra_body={"fake_mode": "echo"}
        )
        streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert canary in (reply.choices[0].message.content or "") and canary in streamed
    # Wait until the calls have left their traces: request-log rows, usage, exported spans.
    ours = lambda s: s.trace_id == trace_id and s.service == "gatemesh-proxy"  # noqa: E731
    spans = await asyncio.to_thread(mesh.receiver.wait_for, ours)
    assert spans, "the proxy exported no span for the call"
    await asyncio.sleep(1.0)  # the request-log writer and the span exporters flush every 0.1-0.2 s
    dump = await mesh.table_dump()
    assert user.account_id in dump  # the scan does see the rows of this account
    assert canary not in dump
    assert not await asyncio.to_thread(files_containing, [mesh.log, Path(mesh.env["GATEMESH_DATA_DIR"])], canary)
    assert not mesh.receiver.contains(canary)
    assert len(mesh.receiver.snapshot()) > 0


def test_sign_up_and_key_creation_through_the_rest_api(mesh: Mesh) -> None:
    fresh = mesh.rest_user(credit_micros=500_000)
    assert fresh.api_key.startswith("gm-")
    assert fresh.balance() == (500_000, 0)
    reply = client(mesh, fresh.api_key).chat.completions.create(model=MODEL, messages=messages())
    assert reply.usage is not None
    assert fresh.settled_balance() == 500_000 - cost(reply.usage.prompt_tokens, reply.usage.completion_tokens)
