"""A local OpenAI-compatible upstream for tests and benchmarks: `python -m tests.fake_upstream --port P`.

Real model providers are outside the platform, so tests and benchmarks talk to this instead.
It answers `/v1/chat/completions` (JSON and SSE streams, with a usage chunk when asked for
`stream_options.include_usage`), `/v1/embeddings` and `/v1/models`, deterministically: the
same body always gives the same answer and the same usage, computed by `plan_chat` /
`plan_embeddings`, which tests import to know what a call must cost.

Failure modes, per request through the body field `fake_mode` (an unknown field, so it
travels through the proxy unchanged) or for every request through `--mode`:
`500`, `429` (with retry-after), `slow` (`fake_delay_ms` before each chunk or the body),
`cut` (the stream stops after `fake_cut_after` chunks without finishing), `no_usage`
(no usage reported), `echo` (the completion repeats the last user message), `one_read`
(the whole stream in one write, so a proxy reads it, [DONE] included, at once). Modes combine
with commas: `"fake_mode": "echo,no_usage"`. `"fake_sse": "crlf"` or `"cr"` writes a stream
in another form the SSE format allows: that line end, `data:` without a space, a comment
line before each event.

`chaos` (per request, or `--mode chaos`) draws one of those at random for every request, from
a generator seeded by `--seed`: `ok`, `500`, `429`, `hang` (answers after `--hang-s`, past a
provider's timeout), `cut` (streams stop midway; JSON calls are answered), `no_usage`, with
the weights of `CHAOS_WEIGHTS`. `GET /_fake/stats` counts what was drawn, so a load test can
report the faults it injected.

The bodies it received are kept in memory only (the last 200), for tests that check what
reached the upstream: `GET /_fake/requests`, cleared by `DELETE /_fake/requests`; the
`traceparent` headers received: `GET /_fake/traceparents`.
aiohttp serves thousands of requests per second here, so it is never a benchmark's bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from aiohttp import web

DEFAULT_WORDS = 8
WORD = " hello"
EMBEDDING_DIM = 8
# The faults `chaos` draws from, and how often: half the calls meet one.
CHAOS_WEIGHTS = {"ok": 50, "500": 12, "429": 10, "hang": 6, "cut": 12, "no_usage": 10}


@dataclass(frozen=True)
class ChatPlan:
    """What the fake upstream answers to a chat body."""

    pieces: list[str]
    prompt_tokens: int
    completion_tokens: int

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def _modes(body: dict[str, Any], default: str) -> set[str]:
    value = body.get("fake_mode") or default
    return {part.strip() for part in str(value).split(",") if part.strip()}


def _prompt_tokens(body: dict[str, Any]) -> int:
    """A deterministic token count: whitespace-separated words of every message, plus 3 each."""
    total = 0
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        total += 3 + (len(content.split()) if isinstance(content, str) else 0)
    return total


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user" and isinstance(message.get("content"), str):
            return message["content"]
    return ""


def plan_chat(body: dict[str, Any], default_mode: str = "") -> ChatPlan:
    """The completion, its chunks and its usage for a chat body."""
    if "echo" in _modes(body, default_mode):
        words = _last_user_text(body).split(" ")
        pieces = [words[0], *(f" {w}" for w in words[1:])]
    else:
        count = int(body.get("fake_words") or DEFAULT_WORDS)
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        if isinstance(limit, int) and limit > 0:
            count = min(count, limit)
        pieces = [WORD] * count
    return ChatPlan(pieces, _prompt_tokens(body), len(pieces))


def plan_embeddings(body: dict[str, Any]) -> tuple[int, int]:
    """(number of inputs, prompt tokens) for an embeddings body."""
    items = body.get("input")
    # One text, one token-id array, or a list of either (as OpenAI reads `input`).
    single = not isinstance(items, list) or (bool(items) and all(type(i) is int for i in items))
    inputs = [items] if single else items
    tokens = sum(len(item.split()) if isinstance(item, str) else len(item or []) for item in inputs)
    return len(inputs), tokens


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class FakeUpstream:
    """The aiohttp application and its in-memory state."""

    def __init__(self, mode: str = "", seed: int = 0, hang_s: float = 2.0) -> None:
        self.mode = mode
        self.received: deque[dict[str, Any]] = deque(maxlen=200)
        self.traceparents: deque[str] = deque(maxlen=200)
        self.count = 0
        self.chaos = random.Random(seed)
        self.hang_s = hang_s
        self.drawn: Counter[str] = Counter()

    def _draw(self, modes: set[str]) -> set[str]:
        """Replace `chaos` by one fault drawn at random (counted in `drawn`)."""
        if "chaos" not in modes:
            return modes
        fault = self.chaos.choices(list(CHAOS_WEIGHTS), weights=list(CHAOS_WEIGHTS.values()))[0]
        self.drawn[fault] += 1
        return (modes - {"chaos"}) | {fault}

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/_fake/requests", self.requests)
        app.router.add_get("/_fake/stats", self.stats)
        app.router.add_delete("/_fake/requests", self.clear)
        app.router.add_get("/_fake/traceparents", self.traced)
        return app

    async def _read(self, request: web.Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.read())
        except ValueError:
            raise web.HTTPBadRequest(
                text=json.dumps({"error": {"message": "We could not parse the JSON body of your request."}}),
                content_type="application/json",
            ) from None
        self.count += 1
        self.received.append(body)
        if "traceparent" in request.headers:
            self.traceparents.append(request.headers["traceparent"])
        return body

    async def _failure(self, modes: set[str], body: dict[str, Any]) -> web.Response | None:
        if "hang" in modes:
            await asyncio.sleep(self.hang_s)
        if "slow" in modes:
            await asyncio.sleep(int(body.get("fake_delay_ms") or 200) / 1000)
        if "500" in modes:
            return _error(500, "the fake upstream failed", "server_error")
        if "429" in modes:
            return _error(429, "the fake upstream is rate limiting", "rate_limit_exceeded", {"retry-after": "1"})
        return None

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._read(request)
        modes = self._draw(_modes(body, self.mode))
        failure = await self._failure(modes, body)
        if failure is not None:
            return failure
        plan = plan_chat(body, self.mode)
        model = str(body.get("model", ""))
        if body.get("stream"):
            return await self._stream(request, body, plan, model, modes)
        message = {"role": "assistant", "content": plan.text}
        reply: dict[str, Any] = {
            "id": f"chatcmpl-fake{self.count}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        }
        if "no_usage" not in modes:
            reply["usage"] = _usage(plan.prompt_tokens, plan.completion_tokens)
        return web.json_response(reply)

    async def _stream(
        self, request: web.Request, body: dict[str, Any], plan: ChatPlan, model: str, modes: set[str]
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
        await response.prepare(request)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage")) and "no_usage" not in modes
        delay = int(body.get("fake_delay_ms") or 200) / 1000 if "slow" in modes else 0.0
        cut_after = int(body.get("fake_cut_after") or 2) if "cut" in modes else -1
        base = {"id": f"chatcmpl-fake{self.count}", "object": "chat.completion.chunk", "created": int(time.time())}
        base["model"] = model
        usage_field = {"usage": None} if include_usage else {}
        style = str(body.get("fake_sse") or "")
        held: list[bytes] = []

        async def write(data: bytes) -> None:
            if "one_read" in modes:
                held.append(data)
            else:
                await response.write(data)

        for index, piece in enumerate(plan.pieces):
            if index == cut_after:
                assert request.transport is not None
                request.transport.close()  # the connection drops mid-stream, no [DONE]
                return response
            if delay:
                await asyncio.sleep(delay)
            delta = {"role": "assistant", "content": piece} if index == 0 else {"content": piece}
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}], **usage_field}
            await write(_event(chunk, style))
        final = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], **usage_field}
        await write(_event(final, style))
        if include_usage:
            usage = {**base, "choices": [], "usage": _usage(plan.prompt_tokens, plan.completion_tokens)}
            await write(_event(usage, style))
        await write(_sse(b"[DONE]", style))
        await response.write_eof(b"".join(held))
        return response

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await self._read(request)
        modes = self._draw(_modes(body, self.mode))
        failure = await self._failure(modes, body)
        if failure is not None:
            return failure
        count, tokens = plan_embeddings(body)
        data = [
            {"object": "embedding", "index": i, "embedding": [round(0.1 * (i + d), 3) for d in range(EMBEDDING_DIM)]}
            for i in range(count)
        ]
        reply: dict[str, Any] = {"object": "list", "data": data, "model": body.get("model", "")}
        if "no_usage" not in modes:
            reply["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        return web.json_response(reply)

    async def models(self, _request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": []})

    async def requests(self, _request: web.Request) -> web.Response:
        return web.json_response(list(self.received))

    async def traced(self, _request: web.Request) -> web.Response:
        """The W3C `traceparent` headers of the calls received (the proxy's trace context)."""
        return web.json_response(list(self.traceparents))

    async def stats(self, _request: web.Request) -> web.Response:
        return web.json_response({"requests": self.count, "drawn": dict(self.drawn)})

    async def clear(self, _request: web.Request) -> web.Response:
        self.received.clear()
        return web.json_response({})


def _event(chunk: dict[str, Any], style: str = "") -> bytes:
    return _sse(json.dumps(chunk, separators=(",", ":")).encode(), style)


def _sse(data: bytes, style: str) -> bytes:
    """One event: `data: ...` and LF, or the compact form with `style`'s line end."""
    end = {"crlf": b"\r\n", "cr": b"\r"}.get(style)
    if end is None:
        return b"data: " + data + b"\n\n"
    return b": keep-alive" + end + b"data:" + data + end + end


def _error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"message": message, "type": "server_error" if status >= 500 else code, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", default="", help="failure mode for every request (see the module docstring)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the `chaos` mode's draws")
    parser.add_argument("--hang-s", type=float, default=2.0, help="how long `hang` waits before answering")
    args = parser.parse_args()
    upstream = FakeUpstream(args.mode, args.seed, args.hang_s)
    # A deep accept queue: load tests open a thousand connections at once.
    web.run_app(upstream.app(), host=args.host, port=args.port, access_log=None, print=None, backlog=2048)


if __name__ == "__main__":
    main()
