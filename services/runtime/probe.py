"""`python -m services.runtime.probe HOST:PORT [SERVICE]`: exit 0 when the gRPC server there
reports SERVING on the standard health service, 1 otherwise.

For container health checks (compose's `healthcheck`), where no grpc_health_probe binary
can be fetched; Kubernetes uses its own gRPC probes on the same health service.
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def serving(address: str, service: str = "", timeout_s: float = 2.0) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]  # types-grpcio-health-checking's HealthStub declares no methods
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    return 0 if serving(argv[0], argv[1] if len(argv) == 2 else "") else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
