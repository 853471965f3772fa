"""`python -m bench.floor_server PORT`: a bare `grpc.aio` server with only the standard health
service, no interceptors and no I/O per call. What one Python gRPC call costs here, as the
floor under VerifyKey in `bench.verify_key`."""

from __future__ import annotations

import asyncio
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio


async def main(port: int) -> None:
    server = grpc.aio.server()
    health = health_aio.HealthServicer()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
