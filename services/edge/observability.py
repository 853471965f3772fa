"""What makes the edge observable like the services: its statistics for Prometheus and its
spans over OTLP.

- Metrics: Envoy's admin interface serves `/stats/prometheus`, but the admin interface
  also quits, drains and reconfigures Envoy, so it stays on 127.0.0.1. With
  `edge_metrics_port` set, a second listener on `edge_host` serves only `GET /metrics`,
  routed to the admin's `/stats/prometheus` (Envoy's documented pattern for exposing stats).
- Tracing: with the standard `OTEL_TRACES_EXPORTER=otlp` and `OTEL_EXPORTER_OTLP_ENDPOINT`
  (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) that the services read, Envoy's OpenTelemetry
  tracer exports a span per request over OTLP/HTTP and sends W3C `traceparent` on to the
  service it calls, so a REST call is one trace from the edge to the upstream model. Envoy
  records no headers or bodies in its spans.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

TYPE = "@type"
ADMIN_CLUSTER = "envoy_admin"
OTLP_CLUSTER = "otlp_collector"
ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {TYPE: "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}


@dataclass(frozen=True)
class OtlpTarget:
    """Where the edge exports spans: an OTLP/HTTP traces URL, and the edge's service name."""

    url: str
    service_name: str = "gatemesh-edge"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 4318)

    @property
    def path(self) -> str:
        return urlsplit(self.url).path or "/v1/traces"


def otlp_target(env: Mapping[str, str] | None = None) -> OtlpTarget | None:
    """The OTLP target the standard variables name, or None when traces are not exported."""
    env = os.environ if env is None else env
    exporters = {name.strip() for name in env.get("OTEL_TRACES_EXPORTER", "none").split(",")}
    if not exporters & {"otlp", "otlp_proto_http"}:
        return None
    url = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
    if not url:
        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318").rstrip("/")
        url = f"{base}/v1/traces"
    return OtlpTarget(url, env.get("GATEMESH_EDGE_SERVICE_NAME", "gatemesh-edge"))


def tracing(target: OtlpTarget) -> dict[str, Any]:
    """The connection manager's `tracing` block: every request traced, exported over OTLP/HTTP."""
    return {
        "random_sampling": {"value": 100},
        "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": {
                TYPE: "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                "service_name": target.service_name,
                "http_service": {
                    "http_uri": {"uri": target.url, "cluster": OTLP_CLUSTER, "timeout": "2s"},
                    "request_headers_to_add": [{"header": {"key": "content-type", "value": "application/x-protobuf"}}],
                },
            },
        },
    }


def _plain_cluster(name: str, host: str, port: int, dns: bool) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STRICT_DNS" if dns else "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(host, port)}}]}],
        },
    }


def _address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def otlp_cluster(target: OtlpTarget) -> dict[str, Any]:
    host = target.host
    dns = not host.replace(".", "").isdigit() and ":" not in host
    return _plain_cluster(OTLP_CLUSTER, host, target.port, dns)


def admin_cluster(admin_port: int) -> dict[str, Any]:
    return _plain_cluster(ADMIN_CLUSTER, "127.0.0.1", admin_port, dns=False)


def metrics_listener(host: str, port: int) -> dict[str, Any]:
    """A listener that answers `GET /metrics` (Envoy's Prometheus stats) and 404 otherwise."""
    route = {
        "match": {"path": "/metrics", "headers": [{"name": ":method", "string_match": {"exact": "GET"}}]},
        "route": {"cluster": ADMIN_CLUSTER, "prefix_rewrite": "/stats/prometheus"},
    }
    manager = {
        TYPE: "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "edge_metrics",
        "route_config": {
            "name": "metrics",
            "virtual_hosts": [{"name": "metrics", "domains": ["*"], "routes": [route]}],
        },
        "http_filters": [ROUTER],
    }
    return {
        "name": "edge_metrics",
        "address": _address(host, port),
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}
        ],
    }
