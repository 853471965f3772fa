"""The shared server bootstrap: access control from the proto options, error mapping,
health and reflection, as every service gets them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from gatemesh.auth.v1 import auth_pb2, auth_pb2_grpc
from gatemesh.privacy.v1 import participant_pb2, participant_pb2_grpc
from services.runtime.access import SERVICE_TOKEN_HEADER, Principal, principal
from services.runtime.errors import Unauthenticated, Violations
from services.runtime.participant import describe_data
from services.runtime.server import BindError, ServiceSpec, address_setting, bind, build_server
from services.runtime.settings import GatemeshSettings

SERVICE_TOKEN = "test-service-token"
ADMIN_TOKEN = "test-admin-token"
USER_TOKEN = "user-session-token"


class Participant(participant_pb2_grpc.PrivacyParticipantServicer):
    """An INTERNAL-only servicer, answering DescribeData from the auth contract."""

    async def DescribeData(self, request, context):
        return describe_data("auth", [auth_pb2.DESCRIPTOR])


class Accounts(auth_pb2_grpc.AuthServiceServicer):
    """A USER-level and a PUBLIC method, to exercise access levels and error mapping."""

    async def GetMe(self, request, context):
        return auth_pb2.GetMeResponse(account=auth_pb2.Account(account_id=principal().account_id))

    async def SignUp(self, request, context):
        violations = Violations()
        violations.check("@" in request.email, "email", "must be an email address")
        violations.check(len(request.password) >= 12, "password", "must be at least 12 characters")
        violations.raise_if_any()
        raise AssertionError("not reached in these tests")


async def authenticate(credential: str) -> Principal:
    if credential == USER_TOKEN:
        return Principal(account_id="acct-1")
    raise Unauthenticated("invalid credential")


@pytest.fixture
async def server(tmp_path) -> AsyncIterator[str]:
    settings = GatemeshSettings(
        data_dir=tmp_path, service_token=SERVICE_TOKEN, admin_token=ADMIN_TOKEN, key_hmac_secret="x"
    )

    def register(srv: grpc.aio.Server) -> None:
        participant_pb2_grpc.add_PrivacyParticipantServicer_to_server(Participant(), srv)
        auth_pb2_grpc.add_AuthServiceServicer_to_server(Accounts(), srv)

    spec = ServiceSpec(
        name="test",
        register=register,
        service_names=["gatemesh.privacy.v1.PrivacyParticipant", "gatemesh.auth.v1.AuthService"],
        authenticator=authenticate,
    )
    srv, health = build_server(spec, settings)
    port = bind(srv, "127.0.0.1:0", settings)
    await srv.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    yield f"127.0.0.1:{port}"
    await srv.stop(0)


async def test_internal_method_refuses_callers_without_service_credential(server: str) -> None:
    async with grpc.aio.insecure_channel(server) as channel:
        stub = participant_pb2_grpc.PrivacyParticipantStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.DescribeData(participant_pb2.DescribeDataRequest())
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as wrong:
            await stub.DescribeData(participant_pb2.DescribeDataRequest(), metadata=[(SERVICE_TOKEN_HEADER, "nope")])
        assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # A user's credential is not a service credential either.
        with pytest.raises(grpc.aio.AioRpcError) as user:
            await stub.DescribeData(
                participant_pb2.DescribeDataRequest(), metadata=[("authorization", f"Bearer {USER_TOKEN}")]
            )
        assert user.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = await stub.DescribeData(
            participant_pb2.DescribeDataRequest(), metadata=[(SERVICE_TOKEN_HEADER, SERVICE_TOKEN)]
        )
        assert reply.service == "auth"


async def test_data_map_is_generated_from_field_options(server: str) -> None:
    """P4.4: the data map comes from the contracts' personal-data declarations."""
    async with grpc.aio.insecure_channel(server) as channel:
        stub = participant_pb2_grpc.PrivacyParticipantStub(channel)
        reply = await stub.DescribeData(
            participant_pb2.DescribeDataRequest(), metadata=[(SERVICE_TOKEN_HEADER, SERVICE_TOKEN)]
        )
    fields = {(f.store, f.field): f.personal for f in reply.fields}
    assert fields[("auth.accounts", "email")].erasure == 2  # ANONYMIZE
    assert fields[("auth.api_keys", "key_hash")].erasure == 1  # DELETE
    assert fields[("auth.security_events", "ip")].retention_days == 90  # P5.3
    assert ("auth.accounts", "account_id") not in fields


async def test_user_method_resolves_principal(server: str) -> None:
    async with grpc.aio.insecure_channel(server) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetMe(auth_pb2.GetMeRequest())
        assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = await stub.GetMe(auth_pb2.GetMeRequest(), metadata=[("authorization", f"Bearer {USER_TOKEN}")])
        assert reply.account.account_id == "acct-1"


async def test_invalid_argument_has_field_violations_and_edge_trailers(server: str) -> None:
    async with grpc.aio.insecure_channel(server) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.SignUp(auth_pb2.SignUpRequest(email="nope", password="short"))
    error = bad.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error)
    request_errors = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(request_errors)
    # The interceptor's rules from the proto (tests/runtime/test_validation.py) answer first.
    assert {v.field for v in request_errors.field_violations} == {
        "email",
        "password",
        "age_attested",
        "accepted_policy_version",
    }
    trailers = dict(error.trailing_metadata())
    assert trailers["gm-http-status"] == "400"
    assert "email" in trailers["gm-error-json"]


async def test_health_and_reflection(server: str) -> None:
    async with grpc.aio.insecure_channel(server) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert (await health.Check(health_pb2.HealthCheckRequest())).status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = reflection.ServerReflectionInfo()
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        reply = await call.read()
        await call.done_writing()
        names = {s.name for s in reply.list_services_response.service}
        assert "gatemesh.auth.v1.AuthService" in names
        assert "grpc.health.v1.Health" in names


async def test_a_taken_port_fails_naming_the_address_and_setting(server: str, tmp_path) -> None:
    """grpc's default SO_REUSEPORT would let a second server share the port silently."""
    settings = GatemeshSettings(data_dir=tmp_path, service_token="s", admin_token="a", key_hmac_secret="x")
    second, _ = build_server(ServiceSpec(name="auth", register=lambda _srv: None, service_names=[]), settings)
    with pytest.raises(BindError) as refused:
        bind(second, server, settings, "auth_addr")
    assert server in str(refused.value) and "`auth_addr`" in str(refused.value)
    assert "GATEMESH_AUTH_ADDR" in str(refused.value)


def test_address_setting_names_where_the_address_came_from(tmp_path) -> None:
    base = {"data_dir": tmp_path, "service_token": "s", "admin_token": "a", "key_hmac_secret": "x"}
    settings = GatemeshSettings(**base, auth_addr="127.0.0.1:7001")
    assert address_setting("auth", settings, "127.0.0.1:7001") == "auth_addr"
    listening = GatemeshSettings(**base, listen="0.0.0.0:7002")
    assert address_setting("auth", listening, "0.0.0.0:7002") == "listen"
