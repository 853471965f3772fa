"""Every RPC of every service, called with generated messages (hypothesis, strategies built
from the descriptors in the generated code: `tests/reliability/strategies.py`) against the
real processes (auth, billing, proxy, privacy on PostgreSQL and Redis).

Which RPCs: whatever each process's server reflection lists, so a new RPC is fuzzed
without editing this file. Each example calls with no credential, a forged one, or the
credential the RPC's `access` option asks for (a user's session, compliance staff's
session, the operator token, the service token). Whatever the message:
- the status is never UNKNOWN, INTERNAL or DATA_LOSS (a crash or an unhandled error);
- an error carries its details (`grpc-status-details-bin`, same code) and the edge's
  OpenAI-shaped body (`gm-error-json`), as every documented error does;
- a refused call (any status but OK) writes nothing: every table of every service's
  database is hashed before and after it and must be unchanged, except the tables named
  in WRITTEN_WHEN_REFUSED, each for a reason.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, symbol_database
from google.protobuf.descriptor import MethodDescriptor
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gatemesh.auth.v1.auth_pb2
import gatemesh.billing.v1.billing_pb2
import gatemesh.privacy.v1.participant_pb2
import gatemesh.privacy.v1.policy_pb2
import gatemesh.privacy.v1.privacy_pb2
import gatemesh.proxy.v1.proxy_pb2  # noqa: F401 - the generated code fills the default pool
from gatemesh.auth.v1 import auth_pb2, auth_pb2_grpc
from gatemesh.common.v1 import common_pb2
from services.runtime.access import OPEN_SERVICES, SERVICE_TOKEN_HEADER
from tests.privacy.mesh import PrivacyMesh, open_mesh
from tests.proxy.conftest import upstreams  # noqa: F401 - a fixture, re-exported
from tests.proxy.mesh import ADMIN_TOKEN, OPERATOR, PASSWORD, POLICY, SERVICE_TOKEN
from tests.reliability.results import Row, record
from tests.reliability.snapshots import Snapshots
from tests.reliability.strategies import messages

pytestmark = pytest.mark.e2e

EXAMPLES = 12
CRASHES = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DATA_LOSS}
# Tables a refused call of a method may write to, and why (everything else must stay as it was).
WRITTEN_WHEN_REFUSED: dict[str, set[str]] = {
    # A failed sign-in is itself the event auth's security log is for.
    "gatemesh.auth.v1.AuthService.SignIn": {"auth.security_events"},
}
STREAM_WAIT_S = 1.5  # a subscription (WatchKeyChanges) answers nothing until a change


def rpc_methods(address: str) -> list[MethodDescriptor]:
    """The RPCs a running server lists through reflection (less health and reflection)."""
    with grpc.insecure_channel(address) as channel:
        names = ProtoReflectionDescriptorDatabase(channel).get_services()
    pool = descriptor_pool.Default()
    found = []
    for name in sorted(set(names) - OPEN_SERVICES):
        found.extend(pool.FindServiceByName(name).methods)
    return found


def access_of(method: MethodDescriptor) -> int:
    options = method.GetOptions()
    level = options.Extensions[common_pb2.access] if options.HasExtension(common_pb2.access) else 0
    return level or common_pb2.ACCESS_INTERNAL


@dataclass
class Target:
    """The running mesh as the fuzz sees it: addresses, credentials, snapshots, tallies."""

    addresses: dict[str, str]
    credentials: dict[int, list[tuple[str, str]]]
    snapshots: Snapshots
    channels: dict[str, grpc.Channel] = field(default_factory=dict)
    calls: int = 0
    refused: int = 0
    checks: int = 0

    def channel(self, address: str) -> grpc.Channel:
        if address not in self.channels:
            self.channels[address] = grpc.insecure_channel(address)
        return self.channels[address]


def user_session(auth: Any) -> list[tuple[str, str]]:
    email = f"fuzz-{os.urandom(4).hex()}@example.com"
    request = auth_pb2.SignUpRequest(email=email, password=PASSWORD, age_attested=True, accepted_policy_version=POLICY)
    auth.SignUp(request)
    token = auth.SignIn(auth_pb2.SignInRequest(email=email, password=PASSWORD)).session_token
    return [("authorization", f"Bearer {token}")]


def staff_session(auth: Any) -> list[tuple[str, str]]:
    email = f"fuzz-staff-{os.urandom(4).hex()}@example.com"
    request = auth_pb2.AdminCreateAccountRequest(email=email, password=PASSWORD, role=auth_pb2.ROLE_COMPLIANCE)
    auth.AdminCreateAccount(request, metadata=OPERATOR)
    token = auth.SignIn(auth_pb2.SignInRequest(email=email, password=PASSWORD)).session_token
    return [("authorization", f"Bearer {token}")]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, upstreams) -> Iterator[PrivacyMesh]:  # noqa: F811
    with ExitStack() as stack:
        running = asyncio.run(open_mesh(stack, tmp_path_factory.mktemp("hostile-grpc"), upstreams))
        running.start_privacy()
        yield running


@pytest.fixture(scope="module")
def target(mesh: PrivacyMesh) -> Iterator[Target]:
    addresses = {
        "auth": mesh.mesh.auth_addr,
        "billing": mesh.mesh.billing_addr,
        "proxy": mesh.mesh.proxy_addr,
        "privacy": mesh.instances[0].address,
    }
    snapshots = Snapshots(mesh.mesh.databases)
    target = Target(addresses, {}, snapshots)
    auth = auth_pb2_grpc.AuthServiceStub(target.channel(addresses["auth"]))
    target.credentials = {
        common_pb2.ACCESS_PUBLIC: [],
        common_pb2.ACCESS_USER: user_session(auth),
        common_pb2.ACCESS_COMPLIANCE: staff_session(auth),
        common_pb2.ACCESS_ADMIN: [("authorization", f"Bearer {ADMIN_TOKEN}")],
        common_pb2.ACCESS_INTERNAL: [(SERVICE_TOKEN_HEADER, SERVICE_TOKEN)],
    }
    yield target
    for channel in target.channels.values():
        channel.close()
    snapshots.close()
    record(
        Row(
            f"hostile gRPC: generated messages, {len(CASES)} RPCs",
            inputs=target.calls,
            checks=target.checks,
            passed=target.checks,
        )
    )


def cases() -> list[tuple[str, MethodDescriptor]]:
    """(service, method) for every RPC, resolved from the generated code's descriptors.

    The servers' reflection lists the same (test_every_listed_rpc_is_fuzzed checks)."""
    pool = descriptor_pool.Default()
    by_service = {
        "auth": ["gatemesh.auth.v1.AuthService", "gatemesh.privacy.v1.PrivacyParticipant"],
        "billing": ["gatemesh.billing.v1.BillingService", "gatemesh.privacy.v1.PrivacyParticipant"],
        "proxy": ["gatemesh.proxy.v1.ProxyService", "gatemesh.privacy.v1.PrivacyParticipant"],
        "privacy": ["gatemesh.privacy.v1.PrivacyService", "gatemesh.privacy.v1.PolicyService"],
    }
    return [
        (service, method)
        for service, names in by_service.items()
        for name in names
        for method in pool.FindServiceByName(name).methods
    ]


CASES = cases()


def forged() -> st.SearchStrategy[list[tuple[str, str]]]:
    token = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80)
    return st.one_of(
        token.map(lambda t: [("authorization", f"Bearer {t}")]),
        token.map(lambda t: [("authorization", t)]),
        token.map(lambda t: [(SERVICE_TOKEN_HEADER, t)]),
    )


def call(target: Target, service: str, method: MethodDescriptor, request: Any, metadata: list) -> grpc.RpcError | None:
    """Make the call; None when it succeeded, else the error (a stream read briefly)."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    database = symbol_database.Default()
    reply_class = database.GetSymbol(method.output_type.full_name)
    channel = target.channel(target.addresses[service])
    options = {"request_serializer": type(request).SerializeToString, "response_deserializer": reply_class.FromString}
    try:
        if method.server_streaming:
            stream = channel.unary_stream(path, **options)(request, metadata=metadata, timeout=STREAM_WAIT_S)
            for _ in stream:
                pass
        else:
            channel.unary_unary(path, **options)(request, metadata=metadata, timeout=30)
    except grpc.RpcError as error:
        if method.server_streaming and error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return None  # a subscription that stayed open: it was accepted
        return error
    return None


def check_error(error: grpc.RpcError, where: str) -> int:
    """The documented error shape; returns how many checks it made."""
    code = error.code()
    assert code not in CRASHES, f"{where}: {code.name} {error.details()}"
    status = rpc_status.from_call(error)
    assert status is not None and status.code == code.value[0], f"{where}: {code.name} without details"
    trailers = dict(error.trailing_metadata() or ())
    body = json.loads(trailers["gm-error-json"])["error"]
    assert isinstance(body["message"], str) and body["message"] and body["type"], f"{where}: {body}"
    return 3


@pytest.mark.parametrize(
    ("service", "method"), CASES, ids=[f"{s}:{m.containing_service.name}.{m.name}" for s, m in CASES]
)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_generated_messages_never_crash_and_refusals_write_nothing(
    target: Target, service: str, method: MethodDescriptor, data: st.DataObject
) -> None:
    proper = target.credentials[access_of(method)]
    metadata = data.draw(st.one_of(st.just([]), forged(), st.just(proper)), label="credential")
    request = data.draw(messages(method.input_type), label="request")
    where = f"{service} {method.full_name}"
    before = target.snapshots.take()
    error = call(target, service, method, request, metadata)
    target.calls += 1
    if error is None:
        return
    target.refused += 1
    target.checks += check_error(error, where)
    after = target.snapshots.take()
    changed = sorted(Snapshots.changed(before, after) - WRITTEN_WHEN_REFUSED.get(method.full_name, set()))
    assert not changed, f"{where} refused ({error.code().name}) but wrote to {changed}"
    target.checks += 1


def test_every_listed_rpc_is_fuzzed(target: Target) -> None:
    listed = {
        (service, method.full_name) for service, address in target.addresses.items() for method in rpc_methods(address)
    }
    assert listed == {(service, method.full_name) for service, method in CASES}
