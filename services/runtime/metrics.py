"""Prometheus metrics: every metric of the mesh, the gRPC server interceptor, the endpoint.

Each service serves its metrics on its own port (`<service>_metrics_port`, on
`metrics_host`; 0 turns the endpoint off) with `prometheus-client`'s own HTTP server, a
thread beside the event loop, so a scrape never waits on the loop and the loop never waits
on a scrape. Every metric is declared here, in one place, so the documentation
(docs/metrics.md) and the test that scrapes a running mesh name the same set.

Labels are bounded and never personal: gRPC method and status code, provider and model
names from the configuration, breaker states, batch RPC names. Never an API key, an email,
an account or key id (tests/deploy/test_metrics_e2e.py scrapes every endpoint and checks).

Values that live in PostgreSQL or Redis (outstanding holds, the settle outbox) are read by
*probes*: async functions a service registers with `add_probe`, run every
`metrics_refresh_s` by the server bootstrap, which set gauges. A scrape then costs no query,
and the hot path pays nothing for them.

Written on prometheus-client rather than OpenTelemetry's metrics SDK and its Prometheus
exporter: the interceptor is on the hot path, and a prometheus-client counter increment is
a lock and an add (measured with bench.gateway; docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .interceptors import HandlerWrapper

log = logging.getLogger("gatemesh.metrics")

# Buckets for calls that take from a fraction of a millisecond (a cached VerifyKey) to a
# long model answer.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

# gRPC servers: the names and labels of go-grpc-prometheus, which dashboards expect.
GRPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "gRPC calls completed by this server, by method and status code.",
    ["grpc_service", "grpc_method", "grpc_type", "grpc_code"],
)
GRPC_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time from a call's arrival to its status (a stream: to its end), by method.",
    ["grpc_service", "grpc_method", "grpc_type"],
    buckets=LATENCY_BUCKETS,
)

# The proxy's upstream calls.
UPSTREAM_REQUESTS = Counter(
    "gatemesh_upstream_requests_total",
    "Attempts sent to upstream providers (retries and fallbacks count each).",
    ["provider", "model"],
)
UPSTREAM_ERRORS = Counter(
    "gatemesh_upstream_errors_total",
    "Failed upstream attempts, by kind: status (with the HTTP status class), timeout, connect, protocol.",
    ["provider", "model", "kind"],
)
UPSTREAM_SECONDS = Histogram(
    "gatemesh_upstream_request_seconds",
    "Upstream time of a non-streamed call: from sending it to its whole answer.",
    ["provider", "model"],
    buckets=LATENCY_BUCKETS,
)
UPSTREAM_FIRST_TOKEN = Histogram(
    "gatemesh_upstream_first_token_seconds",
    "Upstream time to first token of a streamed call: from sending it to its first content event.",
    ["provider", "model"],
    buckets=LATENCY_BUCKETS,
)
BREAKER_STATES = ("closed", "half_open", "open")

# Limits and batching.
RATE_LIMIT_REFUSALS = Counter(
    "gatemesh_rate_limit_refusals_total",
    "Calls refused because a key's per-minute request or token budget was spent.",
    ["service"],
)
BATCH_SIZE = Histogram(
    "gatemesh_coalesced_batch_size",
    "Calls coalesced into one batch RPC (VerifyKeyBatch, HoldBatch, SettleBatch).",
    ["rpc"],
    buckets=BATCH_BUCKETS,
)

# State that lives in Redis or PostgreSQL, set by probes.
DEPENDENCY_UP = Gauge(
    "gatemesh_dependency_up", "1 while the service's health check reaches the dependency, 0 while not.", ["dependency"]
)
OUTBOX_DEPTH = Gauge("gatemesh_settle_outbox_depth", "Settles in the Redis outbox that billing has not confirmed.")
OUTBOX_AGE = Gauge(
    "gatemesh_settle_outbox_oldest_age_seconds", "Age of the oldest settle in the outbox (0 when it is empty)."
)
HOLDS_OUTSTANDING = Gauge("gatemesh_holds_outstanding", "Open credit holds in the ledger.")
HOLDS_OUTSTANDING_MICROS = Gauge("gatemesh_holds_outstanding_micros", "Credit held by open holds, in micro-units.")
CHAIN_LAG = Gauge(
    "gatemesh_chain_watcher_lag_blocks", "Blocks between the chain's head and the last block the watcher scanned."
)
CHAIN_HEAD = Gauge("gatemesh_chain_head_block", "The chain's head block at the watcher's last look.")

# The privacy service's orchestration (the privacy worker increments these).
PRIVACY_REQUESTS = Counter(
    "gatemesh_privacy_requests_total",
    "Data-subject requests that reached a status, by kind (export, rectify, erase) and status.",
    ["kind", "status"],
)
PRIVACY_STEPS = Counter(
    "gatemesh_privacy_steps_total",
    "Participant steps of data-subject requests that reached a status, by participant and status.",
    ["participant", "status"],
)

# Background work.
SWEEPS = Counter("gatemesh_background_runs_total", "Background job runs, by job and outcome.", ["job", "outcome"])


class _CallbackGauge(Collector):
    """A gauge whose samples are read at scrape time from in-process state (never I/O)."""

    def __init__(self, name: str, documentation: str, labels: list[str], read: Callable[[], Iterable[Any]]) -> None:
        self._name, self._doc, self._labels, self._read = name, documentation, labels, read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(self._name, self._doc, labels=self._labels)
        for labels, value in self._read():
            family.add_metric(list(labels), value)
        yield family

    def describe(self) -> Iterable[GaugeMetricFamily]:
        yield GaugeMetricFamily(self._name, self._doc, labels=self._labels)


_callbacks: dict[str, _CallbackGauge] = {}


def callback_gauge(name: str, documentation: str, labels: list[str], read: Callable[[], Iterable[Any]]) -> None:
    """Register (or replace: tests build a service more than once per process) a gauge read
    from `read()`, which yields `(label values, value)` pairs."""
    old = _callbacks.pop(name, None)
    if old is not None:
        REGISTRY.unregister(old)
    collector = _CallbackGauge(name, documentation, labels, read)
    REGISTRY.register(collector)
    _callbacks[name] = collector


def breaker_gauge(providers: Callable[[], Iterable[tuple[str, str]]]) -> None:
    """`gatemesh_circuit_breaker_state{provider, state}`: 1 for each provider's current
    state, 0 for the others (the usual enum-as-gauge form)."""

    def read() -> Iterable[tuple[tuple[str, str], float]]:
        for provider, current in providers():
            for state in BREAKER_STATES:
                yield (provider, state), 1.0 if state == current else 0.0

    callback_gauge(
        "gatemesh_circuit_breaker_state",
        "Each upstream provider's circuit-breaker state (1 for the current one).",
        ["provider", "state"],
        read,
    )


_enabled = True


def enable(on: bool) -> None:
    """Switch the hot path's metrics (upstream, batch sizes) on or off (`metrics_enabled`)."""
    global _enabled
    _enabled = on


def upstream_attempt(provider: str, model: str) -> None:
    if _enabled:
        UPSTREAM_REQUESTS.labels(provider, model).inc()


def upstream_answered(provider: str, model: str, seconds: float, streamed: bool) -> None:
    if _enabled:
        (UPSTREAM_FIRST_TOKEN if streamed else UPSTREAM_SECONDS).labels(provider, model).observe(seconds)


def upstream_failed(provider: str, model: str, kind: str, status: int = 0) -> None:
    if _enabled:
        UPSTREAM_ERRORS.labels(provider, model, f"status_{status // 100}xx" if kind == "status" else kind).inc()


def batch_size(rpc: str, size: int) -> None:
    if _enabled:
        BATCH_SIZE.labels(rpc).observe(size)


# Probes: async readers of shared state, run off the hot path.
Probe = Callable[[], Awaitable[None]]
_probes: dict[str, Probe] = {}


def add_probe(name: str, probe: Probe) -> None:
    """Register (or replace) a probe; `run_probes` calls each every `metrics_refresh_s`."""
    _probes[name] = probe


async def run_probes(interval_s: float) -> None:
    """Run every probe, then sleep, forever; a failing probe is logged (by its type) and
    keeps its previous values."""
    while True:
        for name, probe in list(_probes.items()):
            try:
                await probe()
            except Exception as error:
                log.warning("metrics probe %s failed (%s)", name, type(error).__name__)
        await asyncio.sleep(interval_s)


def serve_metrics(host: str, port: int) -> int:
    """Start the /metrics endpoint (any path answers); returns the bound port, 0 when off."""
    if not port:
        return 0
    server, _thread = start_http_server(port, addr=host)
    return int(server.server_port)


def _split(method: str) -> tuple[str, str]:
    """'/pkg.Service/Method' -> ('pkg.Service', 'Method')."""
    _, service, name = method.split("/", 2) if method.count("/") == 2 else ("", "unknown", method)
    return service, name


def _code_of(context: grpc.aio.ServicerContext) -> str:
    code = context.code()
    if code is None:
        return "OK"
    return code.name if isinstance(code, grpc.StatusCode) else grpc.StatusCode(code).name


class MetricsInterceptor(HandlerWrapper):
    """Counts every call by method and status code and times it.

    Each method's handler is wrapped once, its labelled children bound in advance, so a
    call pays two clock reads, one counter increment and one histogram observation. The
    code is read from the context after the handler: an abort sets it there, and an
    exception that escapes becomes UNKNOWN."""

    def _wrap_unary(self, method: str, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        return _timed_unary(*_split(method), behavior)

    def _wrap_stream(
        self, method: str, behavior: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        return _timed_stream(*_split(method), behavior)


def _timed_unary(service: str, name: str, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    seconds = GRPC_SECONDS.labels(service, name, "unary")
    handled: dict[str, Any] = {}

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        start = time.perf_counter()
        code = "UNKNOWN"
        try:
            reply = await behavior(request, context)
            code = _code_of(context)
            return reply
        except grpc.aio.AbortError:
            code = _code_of(context)
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        finally:
            seconds.observe(time.perf_counter() - start)
            counter = handled.get(code)
            if counter is None:
                counter = handled[code] = GRPC_HANDLED.labels(service, name, "unary", code)
            counter.inc()

    return unary


def _timed_stream(
    service: str, name: str, behavior: Callable[..., AsyncIterator[Any]]
) -> Callable[..., AsyncIterator[Any]]:
    seconds = GRPC_SECONDS.labels(service, name, "server_stream")

    async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        start = time.perf_counter()
        code = "UNKNOWN"
        try:
            async for response in behavior(request, context):
                yield response
            code = _code_of(context)
        except grpc.aio.AbortError:
            code = _code_of(context)
            raise
        except (asyncio.CancelledError, GeneratorExit):
            code = "CANCELLED"
            raise
        finally:
            seconds.observe(time.perf_counter() - start)
            GRPC_HANDLED.labels(service, name, "server_stream", code).inc()

    return stream
