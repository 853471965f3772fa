"""A tiny OTLP/HTTP trace receiver for tests: what the services export, kept for assertions.

Services export with the standard variables (`receiver.otel_env()` gives them):
`OTEL_TRACES_EXPORTER=otlp`, `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`,
`OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:<port>`, `OTEL_BSP_SCHEDULE_DELAY=200`.
The receiver decodes each `ExportTraceServiceRequest` and keeps the spans (with their
service name) and the raw request bodies, so a test can look for a trace id, a span
name, or a string that must never have been exported (P3.2). It runs in a thread of the
test process: `with OtlpReceiver() as receiver: ...`, or `python -m tests.otlp_receiver`.
"""

from __future__ import annotations

import argparse
import gzip
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span


@dataclass(frozen=True)
class ReceivedSpan:
    """One exported span and the service that exported it."""

    service: str
    span: Span

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def parent_span_id(self) -> str:
        return self.span.parent_span_id.hex()

    @property
    def name(self) -> str:
        return self.span.name


def _service_name(resource: Any) -> str:
    for attribute in resource.attributes:
        if attribute.key == "service.name":
            return attribute.value.string_value
    return ""


def _decode(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


class OtlpReceiver:
    """An OTLP/HTTP (protobuf) receiver on a free loopback port."""

    def __init__(self, port: int = 0) -> None:
        self.spans: list[ReceivedSpan] = []
        self.bodies: list[bytes] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def otel_env(self) -> dict[str, str]:
        """The environment that makes a service export its spans here."""
        return {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def record(self, raw: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(raw)
        with self._lock:
            self.bodies.append(raw)
            for resource_spans in request.resource_spans:
                service = _service_name(resource_spans.resource)
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend(ReceivedSpan(service, span) for span in scope_spans.spans)

    def snapshot(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self.spans)

    def wait_for(self, predicate: Callable[[ReceivedSpan], bool], timeout: float = 10.0) -> list[ReceivedSpan]:
        """The spans matching `predicate`, waiting until at least one has arrived."""
        deadline = time.monotonic() + timeout
        while True:
            found = [span for span in self.snapshot() if predicate(span)]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def contains(self, needle: str) -> bool:
        """Whether any exported byte (names, attributes, events) holds `needle`."""
        data = needle.encode()
        with self._lock:
            return any(data in body for body in self.bodies)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = _decode(self._body(), self.headers.get("content-encoding", ""))
                if self.path.rstrip("/") == "/v1/traces":
                    receiver.record(raw)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def _body(self) -> bytes:
                """The request body, sized or chunked (Envoy's OTLP exporter sends chunks)."""
                if "chunked" not in self.headers.get("transfer-encoding", "").lower():
                    return self.rfile.read(int(self.headers.get("content-length") or 0))
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()  # the empty trailer section
                return b"".join(chunks)

            def log_message(self, *_args: object) -> None:  # quiet: tests read spans, not logs
                pass

        return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description="Print the spans exported to this OTLP/HTTP receiver.")
    parser.add_argument("--port", type=int, default=4318)
    args = parser.parse_args()
    with OtlpReceiver(args.port) as receiver:
        print(f"listening on {receiver.endpoint}", flush=True)
        seen = 0
        while True:
            spans = receiver.snapshot()
            for item in spans[seen:]:
                print(f"{item.service} {item.trace_id} {item.name}", flush=True)
            seen = len(spans)
            time.sleep(0.5)


if __name__ == "__main__":
    main()
