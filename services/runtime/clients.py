"""gRPC channels from one service to another: pooled, traced, authenticated.

A channel is made once per target and reused for every call (HTTP/2 multiplexes calls
over it). A target may list several instances of a service scaled out (gRPC's
`ipv4:127.0.0.1:50052,127.0.0.1:50062`): the channel connects to each and spreads calls
over them round-robin, skipping an instance that is down. Every call carries the service
credential; TLS (mutual when a CA is configured) is used when the settings name
certificates.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from .access import SERVICE_TOKEN_HEADER
from .settings import GatemeshSettings
from .telemetry import traces_exported


class _MetadataInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds fixed metadata (the service credential) to every unary call.

    grpc.aio files an interceptor under the first call type it implements only, so one
    object implementing both would never see server-streaming calls: `_StreamMetadata`
    is a separate object for those."""

    def __init__(self, metadata: Sequence[tuple[str, str]]) -> None:
        self._metadata = tuple(metadata)

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()), *self._metadata)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _StreamMetadata(grpc.aio.UnaryStreamClientInterceptor):
    """The same metadata on server-streaming calls."""

    def __init__(self, unary: _MetadataInterceptor) -> None:
        self._unary = unary

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._unary._details(details), request)


def channel_options(settings: GatemeshSettings) -> list[tuple[str, Any]]:
    """Message limits and keepalives, for servers and clients alike."""
    size = settings.grpc_max_message_bytes
    return [
        ("grpc.max_send_message_length", size),
        ("grpc.max_receive_message_length", size),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


def client_options(settings: GatemeshSettings) -> list[tuple[str, Any]]:
    """A client's channel options: calls spread round-robin over the target's instances, and
    a peer that went away is tried again at least every 2 s (gRPC's default backoff grows
    to 120 s, long after a restarted service is back)."""
    return [
        *channel_options(settings),
        ("grpc.lb_policy_name", "round_robin"),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]


def client_credentials(settings: GatemeshSettings) -> grpc.ChannelCredentials | None:
    """TLS credentials when certificates are configured, else None (plaintext)."""
    if not settings.tls_ca_file:
        return None
    ca = Path(settings.tls_ca_file).read_bytes()
    if settings.tls_cert_file and settings.tls_key_file:
        return grpc.ssl_channel_credentials(
            ca, Path(settings.tls_key_file).read_bytes(), Path(settings.tls_cert_file).read_bytes()
        )
    return grpc.ssl_channel_credentials(ca)


def service_channel(target: str, settings: GatemeshSettings, credential: str | None = None) -> grpc.aio.Channel:
    """A channel to another Gatemesh service. `credential` defaults to the service token;
    the CLI passes the operator token as a bearer credential instead."""
    if credential is None:
        metadata = [(SERVICE_TOKEN_HEADER, settings.secret("service_token"))]
    else:
        metadata = [("authorization", f"Bearer {credential}")]
    tracing = aio_client_interceptors() if traces_exported() else []
    unary = _MetadataInterceptor(metadata)
    interceptors = [*tracing, unary, _StreamMetadata(unary)]
    creds = client_credentials(settings)
    if creds is None:
        return grpc.aio.insecure_channel(target, options=client_options(settings), interceptors=interceptors)
    return grpc.aio.secure_channel(target, creds, options=client_options(settings), interceptors=interceptors)
