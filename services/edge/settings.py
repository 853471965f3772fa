"""The edge's settings (flat keys prefixed `edge_`), on top of the shared ones.

The edge has no database; it needs where to listen, whether to speak TLS, how big a
request may be, and which services' REST APIs it exposes.
"""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from services.runtime.settings import GatemeshSettings

MESH_SERVICES = ("auth", "billing", "proxy", "privacy")


class EdgeSettings(GatemeshSettings):
    """Settings of the REST edge (Envoy)."""

    edge_host: str = Field("127.0.0.1", description="Address the edge listens on (0.0.0.0 in a container).")
    edge_port: int = Field(8080, description="Port the edge listens on.")
    edge_tls_cert_file: str = Field("", description="PEM certificate chain: with the key, the edge speaks HTTPS.")
    edge_tls_key_file: str = Field("", description="PEM private key for edge_tls_cert_file.")
    edge_max_request_body_bytes: int = Field(
        15 * 1024 * 1024, description="Largest request body; must stay below grpc_max_message_bytes."
    )
    edge_max_request_headers_kb: int = Field(
        32, ge=1, le=8192, description="Largest request header block in KiB (all headers together); beyond: 431."
    )
    edge_max_request_headers: int = Field(
        100, ge=1, description="Most request headers one request may carry; beyond: 431."
    )
    edge_request_headers_timeout_s: float = Field(
        10.0, gt=0, description="Time a client has to send a request's headers (slow clients: 408, then closed)."
    )
    edge_request_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Time a client has to send a whole request, body included (a body trickled slower: 408); the"
        " answer, streams included, is not limited by it.",
    )
    edge_stream_idle_timeout_s: float = Field(
        300.0,
        gt=0,
        description="A request or stream with no bytes either way for this long is ended (408 if unanswered).",
    )
    edge_idle_timeout_s: float = Field(
        60.0, gt=0, description="A client connection with no request in flight for this long is closed."
    )
    edge_max_connections: int = Field(
        50_000, ge=1, description="Most client connections the edge holds at once; more are refused at accept."
    )
    edge_max_concurrent_streams: int = Field(100, ge=1, description="Most requests at once on one HTTP/2 connection.")
    edge_admin_port: int = Field(0, description="Envoy admin port on 127.0.0.1; 0 disables the admin interface.")
    edge_metrics_port: int = Field(
        0,
        description="Port on edge_host serving Envoy's statistics for Prometheus at /metrics (needs edge_admin_port);"
        " 0: off.",
    )
    edge_services: list[str] = Field(
        list(MESH_SERVICES), description="Services whose annotated REST APIs the edge exposes."
    )
    edge_concurrency: int = Field(0, description="Envoy worker threads; 0 lets Envoy use one per core.")
    edge_log_level: str = Field("warning", description="Envoy's own log level (never logs bodies).")
    edge_extra_endpoints: dict[str, list[str]] = Field(
        default_factory=dict,
        description="More instances of a service behind the edge, by service: host:port list added to the "
        'round robin next to <service>_addr (e.g. {"proxy": ["127.0.0.1:50063"]}).',
    )
    edge_trusted_hops: int = Field(
        0, description="Proxies in front of the edge whose X-Forwarded-For entries are trusted (0: none)."
    )

    @model_validator(mode="after")
    def _body_fits_grpc(self) -> Self:
        # An HttpBody adds a few bytes of framing; a body that fills the gRPC limit would come
        # back as a misleading RESOURCE_EXHAUSTED, so the edge must refuse it first (413).
        if self.edge_max_request_body_bytes > self.grpc_max_message_bytes - 4096:
            raise ValueError("edge_max_request_body_bytes must be at least 4 KiB below grpc_max_message_bytes")
        # Headers the edge takes become the call's metadata: a block the services refuse
        # would come back as a 500 instead of the edge's 431.
        if self.edge_max_request_headers_kb * 1024 > self.grpc_max_metadata_bytes - 4096:
            raise ValueError("edge_max_request_headers_kb must be at least 4 KiB below grpc_max_metadata_bytes")
        if self.edge_metrics_port and not self.edge_admin_port:
            raise ValueError("edge_metrics_port needs edge_admin_port (the metrics come from Envoy's admin interface)")
        unknown = set(self.edge_services) - set(MESH_SERVICES)
        if unknown:
            raise ValueError(f"edge_services: unknown services {sorted(unknown)}")
        return self

    @property
    def edge_tls(self) -> bool:
        return bool(self.edge_tls_cert_file and self.edge_tls_key_file)
