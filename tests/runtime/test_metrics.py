"""The metrics every server exports: calls by method and status code, their latency, and
the endpoint that serves them (docs/metrics.md)."""

from __future__ import annotations

import contextlib
import urllib.request

import grpc
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from gatemesh.auth.v1 import auth_pb2, auth_pb2_grpc
from services.runtime import metrics
from services.runtime.access import SERVICE_TOKEN_HEADER
from tests.runtime.test_server import SERVICE_TOKEN, USER_TOKEN, server  # noqa: F401  (the fixture)
from tests.support import free_port

AUTH = "gatemesh.auth.v1.AuthService"


def handled(method: str, code: str) -> float:
    labels = {"grpc_service": AUTH, "grpc_method": method, "grpc_type": "unary", "grpc_code": code}
    return REGISTRY.get_sample_value("grpc_server_handled_total", labels) or 0.0


def timed(method: str) -> float:
    labels = {"grpc_service": AUTH, "grpc_method": method, "grpc_type": "unary"}
    return REGISTRY.get_sample_value("grpc_server_handling_seconds_count", labels) or 0.0


async def test_calls_are_counted_by_method_and_status_code(server: str) -> None:  # noqa: F811
    ok, invalid, unauthenticated = (
        handled("GetMe", "OK"),
        handled("SignUp", "INVALID_ARGUMENT"),
        handled("GetMe", "UNAUTHENTICATED"),
    )
    count = timed("GetMe")
    async with grpc.aio.insecure_channel(server) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        await stub.GetMe(auth_pb2.GetMeRequest(), metadata=[("authorization", f"Bearer {USER_TOKEN}")])
        for call in (
            stub.SignUp(auth_pb2.SignUpRequest(email="nope", password="short")),
            stub.GetMe(auth_pb2.GetMeRequest(), metadata=[("authorization", "Bearer wrong")]),
        ):
            with contextlib.suppress(grpc.aio.AioRpcError):
                await call
    assert handled("GetMe", "OK") == ok + 1
    assert handled("SignUp", "INVALID_ARGUMENT") == invalid + 1
    assert handled("GetMe", "UNAUTHENTICATED") == unauthenticated + 1
    assert timed("GetMe") == count + 2


def test_endpoint_serves_the_registered_metrics() -> None:
    port = metrics.serve_metrics("127.0.0.1", free_port())
    metrics.breaker_gauge(lambda: [("primary", "open")])
    metrics.upstream_failed("primary", "gm-test", "status", 503)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[("gatemesh_circuit_breaker_state", (("provider", "primary"), ("state", "open")))] == 1
    assert samples[("gatemesh_circuit_breaker_state", (("provider", "primary"), ("state", "closed")))] == 0
    key = ("gatemesh_upstream_errors_total", (("kind", "status_5xx"), ("model", "gm-test"), ("provider", "primary")))
    assert samples[key] >= 1


def test_off_when_the_port_is_zero() -> None:
    assert metrics.serve_metrics("127.0.0.1", 0) == 0


def test_service_token_header_is_never_a_label() -> None:
    names = {label for metric in REGISTRY.collect() for sample in metric.samples for label in sample.labels}
    assert SERVICE_TOKEN_HEADER not in names
    assert not names & {"account_id", "key_id", "email", "api_key", "authorization"}
    assert SERVICE_TOKEN not in str([s.labels for m in REGISTRY.collect() for s in m.samples])
