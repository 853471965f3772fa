"""OpenTelemetry tracing and structured logging, set up the same way in every service.

Tracing: the SDK's TracerProvider with the resource from `OTEL_SERVICE_NAME` /
`OTEL_RESOURCE_ATTRIBUTES`, exporters named by the standard `OTEL_TRACES_EXPORTER`
(`otlp`, `console`, `none`; unset means `none` so a local mesh needs no collector), the
OTLP exporter configured by the standard `OTEL_EXPORTER_OTLP_*` variables, W3C trace
context propagation, and instrumentation of gRPC (client and server), SQLAlchemy, Redis and
the aiohttp client (the upstream call). Background jobs start their own traces (`root_span`).

Every span passes through `RedactingSpanProcessor` before export: attributes whose names
could hold content, credentials or personal data are dropped, and string values that look
like API keys or bearer tokens are removed. The SDK offers no attribute filter of its own,
hence this small processor.

Logging: JSON lines on stderr with the current trace and span ids; a filter scrubs
anything that looks like an API key or a bearer token from every message.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

SECRET_VALUE = re.compile(r"(gm-[A-Za-z0-9_\-]{16,}|(?i:bearer)\s+\S+|sk-[A-Za-z0-9_\-]{16,})")
DENIED_NAME = re.compile(
    r"(content|prompt|completion|message|body|payload|password|secret|token|api[._-]?key|"
    r"authorization|cookie|credential|email|header|db\.statement|db\.query\.text|query|args)",
    re.IGNORECASE,
)
ALLOWED_NAME = re.compile(r"(^gen_ai\.usage\.|_tokens$|^rpc\.|^net\.|^server\.|^network\.|^db\.system|^db\.name)")


def _clean_value(value: Any) -> Any:
    if isinstance(value, str):
        return SECRET_VALUE.sub("[redacted]", value)
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        return tuple(_clean_value(item) for item in value)
    return value


def clean_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """Attributes safe to export: no content, credentials or personal data."""
    cleaned: dict[str, Any] = {}
    for name, value in (attributes or {}).items():
        if DENIED_NAME.search(name) and not ALLOWED_NAME.search(name):
            continue
        cleaned[name] = _clean_value(value)
    return cleaned


class RedactingSpanProcessor(SpanProcessor):
    """Hands the next processor a copy of each ended span with unsafe attributes removed."""

    def __init__(self, inner: SpanProcessor) -> None:
        self._inner = inner

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self._inner.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        events = [
            Event(event.name, clean_attributes(event.attributes), event.timestamp)
            for event in span.events
            if event.name != "exception"  # exception messages can quote input
        ]
        safe = ReadableSpan(
            name=span.name,
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=clean_attributes(span.attributes),
            events=events,
            links=span.links,
            kind=span.kind,
            status=span.status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )
        self._inner.on_end(safe)

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


def _exporters() -> list[SpanExporter]:
    names = [n.strip() for n in os.environ.get("OTEL_TRACES_EXPORTER", "none").split(",") if n.strip()]
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "none":
            continue
        if name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name in ("otlp", "otlp_proto_http"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())
        else:
            raise ValueError(f"unsupported OTEL_TRACES_EXPORTER {name!r}: use otlp, console or none")
    return exporters


_exporting = False


def setup_telemetry(service: str, extra_processors: Sequence[SpanProcessor] = ()) -> TracerProvider:
    """Install the tracer provider once per process; add `extra_processors` (tests) to it.

    Instrumentation (gRPC, SQLAlchemy, Redis) is switched on only once something exports
    spans: with `OTEL_TRACES_EXPORTER=none` it would cost CPU on every call for spans that
    go nowhere. Logs still carry trace ids whenever a span is active.
    """
    global _exporting
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        os.environ.setdefault("OTEL_SERVICE_NAME", f"gatemesh-{service}")
        provider = TracerProvider(resource=Resource.create({"service.namespace": "gatemesh"}))
        for exporter in _exporters():
            provider.add_span_processor(RedactingSpanProcessor(BatchSpanProcessor(exporter)))
            _exporting = True
        trace.set_tracer_provider(provider)
    for processor in extra_processors:
        provider.add_span_processor(RedactingSpanProcessor(processor))
        _exporting = True
    if _exporting:
        _instrument_libraries()
    return provider


def traces_exported() -> bool:
    """Whether spans go anywhere: when not, hot paths skip instrumentation (interceptors,
    statement tracing) that would only cost CPU."""
    return _exporting


def _instrument_libraries() -> None:
    """Redis calls, and aiohttp's client (the proxy's upstream call: a span, and W3C
    `traceparent` sent to the provider). Only URL, method and status are recorded."""
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    for instrumentor in (RedisInstrumentor(), AioHttpClientInstrumentor()):
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()


@contextmanager
def root_span(name: str) -> Iterator[None]:
    """A span that starts its own trace (a sweep, a watcher pass): background work is not
    part of whichever call happened to be current when its loop was started."""
    tracer = trace.get_tracer("gatemesh.background")
    with tracer.start_as_current_span(name, context=Context(), kind=trace.SpanKind.INTERNAL):
        yield


class ScrubFilter(logging.Filter):
    """Removes anything that looks like an API key or bearer token from log records."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg = SECRET_VALUE.sub("[redacted]", message)
        record.args = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line, with the trace context of the current span."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        context = trace.get_current_span().get_span_context()
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if context.is_valid:
            entry["trace_id"] = format(context.trace_id, "032x")
            entry["span_id"] = format(context.span_id, "016x")
        if record.exc_info:
            entry["exc"] = SECRET_VALUE.sub("[redacted]", self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(service: str, level: str = "INFO") -> None:
    """JSON logs on stderr, scrubbed, with trace ids."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    handler.addFilter(ScrubFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("sqlalchemy.engine", "httpx", "httpcore", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
