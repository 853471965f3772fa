"""The SSE reader against the event-stream format as specified (the HTML standard's
"Interpreting an event stream" and its examples), whatever the line ends and however the
bytes are split across reads."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from services.proxy.gateway import Gateway
from services.proxy.model import Limits
from services.proxy.router import Router
from services.proxy.settings import ProviderConfig
from services.proxy.sse import StreamState, event_data
from services.proxy.tokens import TokenCounter
from services.proxy.upstream import CircuitBreaker, Provider

from .test_metering import Gatekeeper, Ledger, RequestLog

LINE_ENDS = {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}

# The standard's examples (LF form) and the data of the events each one dispatches.
SPEC_EXAMPLES = [
    (b"data: YHOO\ndata: +2\ndata: 10\n\n", [b"YHOO\n+2\n10"]),
    (
        b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n",
        [b"first event", b"second event", b" third event"],
    ),
    (b"data\n\ndata\ndata\n\ndata:", [b"", b"\n"]),  # the last block has no blank line: discarded
    (b"data:test\n\ndata: test\n\n", [b"test", b"test"]),
]


def dispatched(stream: bytes, reads: list[bytes]) -> list[bytes]:
    """Feed the reads; the data of every event the reader forwarded, in order."""
    state = StreamState(client_wants_usage=True)
    out = b"".join(state.feed(read) for read in reads)
    assert b"\r" not in out  # forwarded with LF line ends only
    events = [event_data(event) for event in out.split(b"\n\n")]
    return [data for data in events if data is not None]


def splits(stream: bytes) -> list[list[bytes]]:
    """The stream in one read, byte by byte, and cut at every position in two."""
    return [[stream], [stream[i : i + 1] for i in range(len(stream))]] + [
        [stream[:i], stream[i:]] for i in range(1, len(stream))
    ]


@pytest.mark.parametrize("end", list(LINE_ENDS), ids=list(LINE_ENDS))
@pytest.mark.parametrize(("stream", "expected"), SPEC_EXAMPLES, ids=["multiline", "fields", "empty", "space"])
def test_spec_examples_dispatch_the_specified_events(stream: bytes, expected: list[bytes], end: str) -> None:
    stream = stream.replace(b"\n", LINE_ENDS[end])
    for reads in splits(stream):
        assert dispatched(stream, reads) == expected, reads


def openai_stream(end: bytes, space: bytes = b"") -> bytes:
    content = {"choices": [{"index": 0, "delta": {"content": " hi"}}]}
    usage = {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}
    events = [json.dumps(content).encode(), json.dumps(usage).encode(), b"[DONE]"]
    return b"".join(b":ping" + end + b"data:" + space + data + end + end for data in events)


@pytest.mark.parametrize("end", list(LINE_ENDS), ids=list(LINE_ENDS))
def test_done_without_a_space_ends_the_stream_and_usage_is_read(end: str) -> None:
    stream = b"\xef\xbb\xbf" + openai_stream(LINE_ENDS[end])  # a byte order mark may open a stream
    for reads in splits(stream):
        state = StreamState(client_wants_usage=False)
        out = b"".join(state.feed(read) for read in reads)
        assert state.done, reads
        assert state.usage == {"prompt_tokens": 5, "completion_tokens": 1}
        assert b'"usage"' not in out  # hidden from a client that did not ask for it
        assert out.endswith(b"data:[DONE]\n\n")
        assert state.output_text() == " hi"


def test_done_inside_content_or_a_comment_does_not_end_the_stream() -> None:
    state = StreamState(client_wants_usage=False)
    state.feed(b": [DONE]\n\ndata: " + json.dumps({"choices": [{"delta": {"content": "[DONE]"}}]}).encode() + b"\n\n")
    assert not state.done
    assert state.output_text() == "[DONE]"


@pytest.mark.parametrize("style", ["crlf", "cr"])
async def test_a_compact_upstream_stream_ends_normally_without_an_error_event(
    upstreams: Callable[[str], str], style: str
) -> None:
    config = ProviderConfig(name="up", base_url=upstreams(""), models=["m"])
    router = Router([Provider(config, CircuitBreaker(5, 30))], {}, 0.0)
    ledger, log = Ledger(), RequestLog()
    gateway = Gateway(router, Gatekeeper(), ledger, log, TokenCounter(), Limits())
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    try:
        reply = await gateway.chat("gm-key", json.dumps({**body, "fake_sse": style}).encode())
        assert reply.stream is not None
        text = b"".join([chunk async for chunk in reply.stream.chunks()])
        await gateway.tasks.drain()
    finally:
        await router.close()
    assert text.endswith(b"data:[DONE]\n\n") and b'"error"' not in text
    ((_, usage),) = ledger.settled
    assert (usage.status, usage.output_tokens, usage.tokens_estimated) == ("ok", 8, False)
