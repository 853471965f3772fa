"""SSE relay rules and the body sent upstream: usage chunk hidden unless asked, fields kept."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import aiohttp
import pytest

from services.proxy.bodies import parse_object, upstream_chat_body, validate_chat
from services.proxy.router import Route
from services.proxy.sse import StreamState
from services.proxy.upstream import upstream_chunks
from services.runtime.errors import InvalidArgument


def event(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


CONTENT = event({"choices": [{"index": 0, "delta": {"content": " hi"}}], "usage": None})
USAGE = event({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1}})
DONE = b"data: [DONE]\n\n"
BODY = {"model": "gm-test", "messages": [{"role": "user", "content": "say hello please"}]}


def test_usage_chunk_hidden_from_a_client_that_did_not_ask() -> None:
    state = StreamState(client_wants_usage=False)
    out = state.feed(CONTENT + USAGE + DONE)
    assert out == CONTENT + DONE
    assert state.usage == {"prompt_tokens": 5, "completion_tokens": 1}
    assert state.done


def test_usage_chunk_kept_for_a_client_that_asked() -> None:
    state = StreamState(client_wants_usage=True)
    assert state.feed(CONTENT + USAGE + DONE) == CONTENT + USAGE + DONE


def test_events_split_across_reads_are_forwarded_whole() -> None:
    state = StreamState(client_wants_usage=False)
    stream = CONTENT + CONTENT + USAGE + DONE
    out = b"".join(state.feed(stream[i : i + 7]) for i in range(0, len(stream), 7))
    assert out == CONTENT + CONTENT + DONE
    assert state.output_text() == " hi hi"


def test_output_text_includes_tool_call_arguments() -> None:
    state = StreamState(client_wants_usage=False)
    call = {"index": 0, "function": {"name": "f", "arguments": '{"a":1}'}}
    state.feed(event({"choices": [{"delta": {"tool_calls": [call]}}]}))
    assert state.output_text() == 'f{"a":1}'


def route(public: str = "m", model: str = "m") -> Route:
    return Route(public, model, ())


def test_stream_body_gets_include_usage_and_keeps_every_field() -> None:
    raw = b'{"model":"m","stream":true,"messages":[{"role":"user","content":"x"}],"seed":7,"future_field":{"a":[1]}}'
    sent, wants = upstream_chat_body(raw, json.loads(raw), route(), True)
    assert not wants
    parsed = json.loads(sent)
    assert parsed["stream_options"] == {"include_usage": True}
    assert {k: v for k, v in parsed.items() if k != "stream_options"} == json.loads(raw)


def test_stream_body_merges_existing_stream_options() -> None:
    raw = b'{"model":"m","stream":true,"messages":[],"stream_options":{"other":1}}'
    sent, wants = upstream_chat_body(raw, json.loads(raw), route(), True)
    assert json.loads(sent)["stream_options"] == {"other": 1, "include_usage": True}
    assert not wants


def test_json_body_passes_unchanged_and_alias_rewrites_only_the_model() -> None:
    raw = b'{"model": "m",  "messages": [], "x": 1.50}'
    assert upstream_chat_body(raw, json.loads(raw), route(), False) == (raw, False)
    sent, _ = upstream_chat_body(raw, json.loads(raw), route("fast", "m-large"), False)
    assert json.loads(sent) == {"model": "m-large", "messages": [], "x": 1.5}


def test_client_usage_request_is_respected() -> None:
    raw = b'{"model":"m","stream":true,"stream_options":{"include_usage":true}}'
    assert upstream_chat_body(raw, json.loads(raw), route(), True) == (raw, True)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"model": 5, "messages": []}', "model"),
        (b'{"model": "m", "messages": "hi"}', "messages"),
        (b'{"model": "m", "messages": [{"role": "user"}], "stream": "yes"}', "stream"),
        (b'{"model": "m", "messages": [{"role": "user"}], "max_tokens": -1}', "max_tokens"),
    ],
)
def test_malformed_requests_are_rejected_naming_the_problem(raw: bytes, field: str | None) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_chat(parse_object(raw))
    if field:
        assert field in caught.value.field_violations
    else:
        assert "JSON" in caught.value.message


def test_output_text_counts_events_that_arrived_in_one_read() -> None:
    state = StreamState(client_wants_usage=False)
    state.feed(CONTENT + CONTENT + CONTENT)
    assert state.output_text() == " hi hi hi"


def test_crlf_separated_events_are_split_inspected_and_forwarded() -> None:
    state = StreamState(client_wants_usage=False)
    stream = (CONTENT + CONTENT + USAGE + DONE).replace(b"\n", b"\r\n")
    out = b"".join(state.feed(stream[i : i + 5]) for i in range(0, len(stream), 5))  # splits every CRLF once
    assert out == CONTENT + CONTENT + DONE
    assert state.usage == {"prompt_tokens": 5, "completion_tokens": 1}
    assert state.done and state.output_text() == " hi hi"


async def test_bytes_received_before_an_upstream_cut_reach_the_relay(upstreams: Callable[[str], str]) -> None:
    """aiohttp raises on a cut stream before handing out what it had already buffered; those
    events must still be relayed and counted (the cut used to drop them under load)."""
    body = {**BODY, "stream": True, "fake_mode": "cut", "fake_cut_after": 3}
    received = b""
    async with aiohttp.ClientSession() as session, session.post(f"{upstreams('')}/chat/completions", json=body) as r:
        await asyncio.sleep(0.5)  # three events and the cut arrive before anything is read
        with pytest.raises(aiohttp.ClientPayloadError):
            async for data in upstream_chunks(r):
                received += data
    assert received.count(b"data: ") == 3
