"""Relaying an accepted upstream stream to the client, and settling it when it ends.

A stream's final chunk ([DONE], or the error event of a stream the upstream cut) leaves
only once its settle is durable, so a crash can lose only streams that never ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

from services.runtime.errors import BadGateway

from .bodies import usage_tokens
from .metered_call import MeteredCall
from .sse import StreamState, error_event
from .upstream import upstream_chunks


class StreamRelay:
    """Forwards an accepted upstream stream to the client and settles it when it ends."""

    def __init__(
        self,
        call: MeteredCall,
        state: StreamState,
        response: aiohttp.ClientResponse,
        first: bytes,
        count_output: Callable[[str, StreamState], int],
    ) -> None:
        self.call = call
        self.state = state
        self.response = response
        self.first = first
        self._count_output = count_output

    async def chunks(self) -> AsyncIterator[bytes]:
        """The SSE bytes for the client; an upstream failure mid-stream becomes an error event."""
        outcome = "client_disconnected"
        try:
            if self.state.done:  # the whole stream came in the first read: settle before [DONE] leaves
                await self.finish_durably("ok")
            yield self.first
            try:
                async for data in upstream_chunks(self.response):
                    out = self.state.feed(data)
                    if self.state.done and not self.call.finished:
                        await self.finish_durably("ok")  # before [DONE] leaves
                    if out:
                        yield out
            except (aiohttp.ClientError, TimeoutError):
                pass
            if self.state.done:
                outcome = "ok"
            else:
                outcome = "upstream_error"
                await self.finish_durably(outcome)  # before the final (error) event leaves
                failure = BadGateway("the upstream provider failed mid-stream", reason="upstream_error")
                yield error_event(failure.openai_body())
        finally:
            self.response.close()
            self.finish(outcome)

    def abandon(self) -> None:
        """The client went away (or the call ended): settle what was produced, if not yet done."""
        if not self.call.finished:
            self.response.close()
            self.finish("client_disconnected")

    def finish(self, outcome: str) -> asyncio.Task[Any] | None:
        if self.call.finished:
            return None
        tokens = usage_tokens(self.state.usage)
        if tokens is None:
            tokens = (self.call.prompt, self._count_output(self.call.route.model, self.state), True)
        return self.call.settle(*tokens, outcome=outcome)

    async def finish_durably(self, outcome: str) -> None:
        """Settle in the background, and wait only until the settle is durable: a stream's
        final chunk leaves after it, so a crash can lose only streams that never ended."""
        self.finish(outcome)
        await self.call.durable()
