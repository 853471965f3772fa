"""The floor of the design, for `bench.gateway`: a bare `grpc.aio` ProxyService that relays
chat completions to the upstream with the proxy's own HTTP client (one pooled aiohttp
session), with no auth, no billing, no routing, no telemetry.

Put behind the same Envoy transcoder as the mesh, it measures what the edge, gRPC and the
HTTP client cost by themselves; whatever Gatemesh adds above it is the price of its own work
(verification, holds, settles, records). Run: `python -m bench.floor_relay --port P
--upstream URL`.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import aiohttp
import grpc
from google.api import httpbody_pb2

from gatemesh.proxy.v1 import proxy_pb2_grpc


class Relay(proxy_pb2_grpc.ProxyServiceServicer):
    """ChatCompletions only: the body goes up as it came, the answer comes back as it goes."""

    def __init__(self, upstream: str) -> None:
        self.url = f"{upstream.rstrip('/')}/chat/completions"
        self.session: aiohttp.ClientSession | None = None

    async def ChatCompletions(
        self, request: httpbody_pb2.HttpBody, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        if self.session is None:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000))
        headers = {"content-type": "application/json"}
        async with self.session.post(self.url, data=request.data, headers=headers) as reply:
            content_type = reply.headers.get("content-type", "application/json").split(";")[0]
            if content_type != "text/event-stream":
                yield httpbody_pb2.HttpBody(content_type=content_type, data=await reply.read())
                return
            async for chunk in reply.content.iter_any():
                yield httpbody_pb2.HttpBody(content_type=content_type, data=chunk)


async def serve(port: int, upstream: str) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    proxy_pb2_grpc.add_ProxyServiceServicer_to_server(Relay(upstream), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("serving", flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the upstream's base URL, e.g. http://127.0.0.1:9000/v1")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.port, args.upstream))


if __name__ == "__main__":
    main()
