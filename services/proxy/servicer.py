"""The gRPC entrypoint of the OpenAI-compatible API: HttpBody in, HttpBody out.

The API key comes from the `authorization: Bearer gm-...` metadata that the edge forwards
from the HTTP header. Errors raised before the first message become the call's status (the
edge turns them into OpenAI-shaped HTTP errors); errors after it travel inside the stream.
When the call ends for any reason, the stream relay is told, so a client that disconnects
is still charged for what the upstream produced.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.api import httpbody_pb2

from gatemesh.proxy.v1 import proxy_pb2, proxy_pb2_grpc
from services.runtime.access import bearer

from .gateway import Gateway

JSON = "application/json"
SSE = "text/event-stream"


def api_key(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):  # bytes only for "-bin" keys
            return bearer({key: value})
    return ""


class ProxyServicer(proxy_pb2_grpc.ProxyServiceServicer):
    """ChatCompletions, Embeddings and ListModels over the Gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def ChatCompletions(
        self, request: httpbody_pb2.HttpBody, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        reply = await self.gateway.chat(api_key(context), request.data)
        if reply.stream is None:
            yield httpbody_pb2.HttpBody(content_type=JSON, data=reply.body)
            return
        relay = reply.stream
        context.add_done_callback(lambda _context: relay.abandon())  # type: ignore[arg-type]  # types-grpcio wants its _DoneCallback class, which no function is
        async for chunk in relay.chunks():
            yield httpbody_pb2.HttpBody(content_type=SSE, data=chunk)

    async def Embeddings(self, request: httpbody_pb2.HttpBody, context: grpc.aio.ServicerContext) -> Any:
        return httpbody_pb2.HttpBody(
            content_type=JSON, data=await self.gateway.embeddings(api_key(context), request.data)
        )

    async def ListModels(self, request: proxy_pb2.ListModelsRequest, context: grpc.aio.ServicerContext) -> Any:
        return httpbody_pb2.HttpBody(content_type=JSON, data=await self.gateway.list_models(api_key(context)))
