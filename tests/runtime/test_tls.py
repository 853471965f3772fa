"""P6.1: TLS between services when configured; with a CA, mutual TLS, and a client
certificate signed by that CA is itself the service credential."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from gatemesh.auth.v1 import auth_pb2
from gatemesh.privacy.v1 import participant_pb2, participant_pb2_grpc
from services.runtime.clients import service_channel
from services.runtime.participant import describe_data
from services.runtime.server import ServiceSpec, bind, build_server
from services.runtime.settings import GatemeshSettings
from tests.edge.edge_support import self_signed


class Participant(participant_pb2_grpc.PrivacyParticipantServicer):
    async def DescribeData(self, request, context):
        return describe_data("auth", [auth_pb2.DESCRIPTOR])


def tls_settings(tmp_path: Path, cert: Path, key: Path) -> GatemeshSettings:
    return GatemeshSettings(
        data_dir=tmp_path,
        service_token="token",
        admin_token="admin",
        key_hmac_secret="x",
        tls_cert_file=str(cert),
        tls_key_file=str(key),
        tls_ca_file=str(cert),
    )


def pems(settings: GatemeshSettings) -> tuple[bytes, bytes, bytes]:
    """CA, key and certificate of the mesh, as PEM bytes."""
    return tuple(Path(p).read_bytes() for p in (settings.tls_ca_file, settings.tls_key_file, settings.tls_cert_file))


@pytest.fixture
async def mtls_server(tmp_path: Path) -> AsyncIterator[tuple[str, GatemeshSettings]]:
    (tmp_path / "mesh").mkdir()
    cert, key = self_signed(tmp_path / "mesh")
    settings = tls_settings(tmp_path, cert, key)
    spec = ServiceSpec(
        name="tls-test",
        register=lambda srv: participant_pb2_grpc.add_PrivacyParticipantServicer_to_server(Participant(), srv),
        service_names=["gatemesh.privacy.v1.PrivacyParticipant"],
    )
    server, _ = build_server(spec, settings)
    port = bind(server, "127.0.0.1:0", settings)
    await server.start()
    yield f"127.0.0.1:{port}", settings
    await server.stop(0)


async def test_service_channel_speaks_mutual_tls_p6_1(mtls_server) -> None:
    address, settings = mtls_server
    channel = service_channel(address, settings)
    try:
        stub = participant_pb2_grpc.PrivacyParticipantStub(channel)
        reply = await stub.DescribeData(participant_pb2.DescribeDataRequest(), timeout=5)
        assert reply.service == "auth"
    finally:
        await channel.close()


async def test_client_certificate_is_a_service_credential_p6_1(mtls_server) -> None:
    """With mTLS, a caller holding a certificate from the mesh CA needs no shared token."""
    address, settings = mtls_server
    creds = grpc.ssl_channel_credentials(*pems(settings))
    async with grpc.aio.secure_channel(address, creds) as channel:
        stub = participant_pb2_grpc.PrivacyParticipantStub(channel)
        reply = await stub.DescribeData(participant_pb2.DescribeDataRequest(), timeout=5)
    assert reply.service == "auth"


async def test_callers_without_a_mesh_certificate_are_refused_p6_1(mtls_server, tmp_path: Path) -> None:
    address, settings = mtls_server
    ca = pems(settings)[0]
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    other_cert, other_key = self_signed(stranger)
    other = pems(tls_settings(tmp_path, other_cert, other_key))
    attempts = {
        "plaintext": grpc.aio.insecure_channel(address),
        "no client certificate": grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(ca)),
        "certificate from another CA": grpc.aio.secure_channel(
            address, grpc.ssl_channel_credentials(ca, other[1], other[2])
        ),
    }
    for name, channel in attempts.items():
        async with channel:
            stub = participant_pb2_grpc.PrivacyParticipantStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.DescribeData(participant_pb2.DescribeDataRequest(), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, name
