"""Span attributes and log lines never carry content or secrets (P3.2, P6.2)."""

from __future__ import annotations

import io
import json
import logging

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.runtime.telemetry import JsonFormatter, RedactingSpanProcessor, ScrubFilter, clean_attributes

KEY = "gm-" + "A" * 43


def test_redacting_processor_drops_unsafe_attributes_p3_2() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(RedactingSpanProcessor(SimpleSpanProcessor(exporter)))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("call") as span:
        span.set_attribute("rpc.method", "VerifyKey")
        span.set_attribute("gen_ai.usage.input_tokens", 12)
        span.set_attribute("http.request.body", "CANARY prompt text")
        span.set_attribute("user.password", "hunter2hunter2")
        span.set_attribute("api_key", KEY)
        span.set_attribute("note", f"called with {KEY}")
        span.add_event("log", {"message": "CANARY"})
    (exported,) = exporter.get_finished_spans()
    attributes = dict(exported.attributes)
    assert attributes["rpc.method"] == "VerifyKey"
    assert attributes["gen_ai.usage.input_tokens"] == 12
    assert "http.request.body" not in attributes
    assert "user.password" not in attributes
    assert "api_key" not in attributes
    assert KEY not in attributes["note"]
    assert all("CANARY" not in str(e.attributes) for e in exported.events)


def test_clean_attributes_keeps_counts_and_drops_emails() -> None:
    cleaned = clean_attributes({"output_tokens": 3, "enduser.email": "a@b.c", "db.system": "postgresql"})
    assert cleaned == {"output_tokens": 3, "db.system": "postgresql"}


def test_log_lines_are_json_and_scrubbed_p6_2() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    handler.addFilter(ScrubFilter())
    logger = logging.getLogger("gatemesh.test.scrub")
    logger.addHandler(handler)
    logger.propagate = False
    logger.warning("refused key %s with header Bearer %s", KEY, "sessiontoken123")
    line = json.loads(stream.getvalue())
    assert line["service"] == "test"
    assert KEY not in line["msg"]
    assert "sessiontoken123" not in line["msg"]
