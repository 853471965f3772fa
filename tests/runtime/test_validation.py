"""Request rules declared on the protos (google.api.field_behavior, buf.validate) and the
server interceptor that enforces them: the compiled checks must say what protovalidate
says, for every request type of the contracts, at and around every bound."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import protovalidate
import pytest
from buf.validate import validate_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status

from gatemesh.auth.v1 import auth_pb2, auth_pb2_grpc
from gatemesh.billing.v1 import billing_pb2
from gatemesh.common.v1 import common_pb2
from gatemesh.proxy.v1 import proxy_pb2
from services.runtime.access import Principal
from services.runtime.errors import InvalidArgument, Unauthenticated
from services.runtime.interceptors import check_request
from services.runtime.server import ServiceSpec, bind, build_server
from services.runtime.settings import GatemeshSettings
from services.runtime.validation import REQUIRED_MESSAGE, RequestRules, field_rules

CONTRACTS = (auth_pb2, billing_pb2, proxy_pb2, common_pb2)
USER_TOKEN = "user-session-token"


def request_types() -> list[Descriptor]:
    return [
        d
        for module in CONTRACTS
        for name, d in module.DESCRIPTOR.message_types_by_name.items()
        if name.endswith("Request")
    ]


def test_every_contract_request_is_compiled_not_left_to_cel() -> None:
    """The contracts use only rules the compiled checks cover: no request pays for CEL."""
    rules = RequestRules()
    slow = [d.full_name for d in request_types() if rules.plan(d) is None]
    assert slow == []


def test_violations_name_every_bad_field_once() -> None:
    rules = RequestRules()
    request = auth_pb2.SignUpRequest(email="nope", password="short", accepted_policy_version="x" * 65)
    assert rules.violations(request) == {
        "email": "must be a valid email address",
        "password": "must be at least 12 characters",
        "age_attested": REQUIRED_MESSAGE,
        "accepted_policy_version": "must be at most 64 characters",
    }


def test_nested_and_list_fields_are_named_by_path() -> None:
    request = auth_pb2.CreateApiKeyRequest(
        name="ci", allowed_models=["gpt", "", "m" * 201], limits=auth_pb2.KeyLimits(requests_per_minute=-1)
    )
    assert RequestRules().violations(request) == {
        "allowed_models[1]": "must be at least 1 characters",
        "allowed_models[2]": "must be at most 200 characters",
        "limits.requests_per_minute": "must be greater than or equal to 0",
    }
    page = auth_pb2.ListApiKeysRequest(page=common_pb2.PageRequest(page_size=-5))
    assert RequestRules().violations(page) == {
        "page.page_size": "must be greater than or equal to 0 and less than or equal to 1000"
    }


def test_optional_fields_with_rules_accept_their_zero_value() -> None:
    """IGNORE_IF_ZERO_VALUE: an admin-created account without a password gets a generated one."""
    assert RequestRules().violations(auth_pb2.AdminCreateAccountRequest(email="ann@example.com")) == {}
    bad = auth_pb2.AdminCreateAccountRequest(email="ann@example.com", password="short", role=42)
    assert RequestRules().violations(bad) == {
        "password": "must be at least 12 characters",
        "role": "value must be one of the defined enum values",
    }


def test_batch_items_fail_alone_not_the_batch() -> None:
    """HoldBatch, SettleBatch, VerifyKeyBatch: one bad item must not refuse the others."""
    batch = billing_pb2.HoldBatchRequest(items=[billing_pb2.HoldRequest(amount_micros=-1)])
    assert RequestRules().violations(batch) == {}
    assert RequestRules().violations(batch.items[0])  # the item itself is checked by Hold's rules


# --- the compiled checks agree with protovalidate ------------------------------------------


def string_candidates(fd: FieldDescriptor, rules: Any) -> list[str]:
    values = ["", "a", "ann@example.com", "not an email", "a@b", "x@-bad-.com", "2026-01", "2026-13", "acct_1"]
    values += ["bad id!", "https://example.com/ok", "ftp://example.com", "json", "csv", "xml", "é" * 3]
    for bound in ("min_len", "max_len"):
        if rules is not None and rules.string.HasField(bound):
            n = getattr(rules.string, bound)
            values += ["x" * max(0, n - 1), "x" * n, "x" * (n + 1)]
    return values


def integer_candidates(rules: Any, kind: str) -> list[int]:
    values = [0, 1, -1, 2**31 - 1]
    typed = getattr(rules, kind, None) if rules is not None else None
    for bound in ("gt", "gte", "lt", "lte"):
        if typed is not None and typed.HasField(bound):
            n = getattr(typed, bound)
            values += [n - 1, n, n + 1]
    if kind.startswith("uint"):
        values = [v for v in values if v >= 0]
    if kind.endswith("32"):
        values = [v for v in values if -(2**31) <= v < 2**31]
    return values


def candidates(fd: FieldDescriptor) -> list[Any]:
    rules = field_rules(fd)
    t = fd.type
    if t == FieldDescriptor.TYPE_STRING:
        return string_candidates(fd, rules)
    if t == FieldDescriptor.TYPE_BOOL:
        return [False, True]
    if t == FieldDescriptor.TYPE_ENUM:
        return [0, 1, 99]
    kinds = {
        FieldDescriptor.TYPE_INT32: "int32",
        FieldDescriptor.TYPE_INT64: "int64",
        FieldDescriptor.TYPE_UINT32: "uint32",
        FieldDescriptor.TYPE_UINT64: "uint64",
    }
    if t in kinds:
        return integer_candidates(rules, kinds[t])
    return [None]


def variants(descriptor: Descriptor, count: int = 12, depth: int = 0) -> Iterator[Any]:
    """`count` messages whose fields walk through their candidate values, out of step."""
    cls = message_factory.GetMessageClass(descriptor)
    for i in range(count):
        message = cls()
        for index, fd in enumerate(descriptor.fields):
            if fd.message_type is not None:
                if fd.message_type.full_name.startswith("google.") or depth > 2 or (i + index) % 3 == 0:
                    continue
                nested = list(variants(fd.message_type, count, depth + 1))[(i + index) % count]
                target = getattr(message, fd.name)
                (target.add() if fd.is_repeated else target).CopyFrom(nested)
                continue
            values = candidates(fd)
            value = values[(i * 7 + index * 3) % len(values)]
            if fd.is_repeated:
                size = [0, 1, 2, 101][(i + index) % 4]
                getattr(message, fd.name).extend([value] * size)
            else:
                setattr(message, fd.name, value)
        yield message


def reference(message: Any) -> set[tuple[str, str]]:
    from services.runtime.validation import field_path

    found = validator().collect_violations(message)
    return {(field_path(v.proto.field), v.proto.message) for v in found}


_VALIDATOR: list[protovalidate.Validator] = []


def validator() -> protovalidate.Validator:
    if not _VALIDATOR:
        _VALIDATOR.append(protovalidate.Validator())
    return _VALIDATOR[0]


@pytest.mark.parametrize("descriptor", request_types(), ids=lambda d: d.name)
def test_compiled_checks_say_what_protovalidate_says(descriptor: Descriptor) -> None:
    rules = RequestRules()
    plan = rules.plan(descriptor)
    assert plan is not None
    for message in variants(descriptor):
        ours = set(plan.violations(message))
        required = {path for path, why in ours if why == REQUIRED_MESSAGE}
        ours -= {(path, REQUIRED_MESSAGE) for path in required}
        # A REQUIRED field left empty is reported as such and its other rules are not run;
        # protovalidate does not read field_behavior, so it checks them: leave those out.
        theirs = {(path, why) for path, why in reference(message) if path not in required}
        assert ours == theirs, message


def test_a_type_with_rules_beyond_the_compiled_ones_is_left_to_protovalidate() -> None:
    """A CEL rule (not compiled) makes the type protovalidate's, with its own message."""
    fdp = descriptor_pb2.FileDescriptorProto(name="test_cel.proto", package="gm.test", syntax="proto3")
    fdp.dependency.append("buf/validate/validate.proto")
    message = fdp.message_type.add(name="Even")
    field = message.field.add(name="n", number=1, type=FieldDescriptor.TYPE_INT32, label=1)
    even_rule = validate_pb2.Rule(id="even", message="must be even", expression="this % 2 == 0")
    rule = validate_pb2.FieldRules(cel=[even_rule])
    field.options.Extensions[validate_pb2.field].CopyFrom(rule)
    pool = descriptor_pool.Default()
    pool.Add(fdp)
    even = message_factory.GetMessageClass(pool.FindMessageTypeByName("gm.test.Even"))
    rules = RequestRules()
    assert rules.plan(even.DESCRIPTOR) is None
    assert rules.violations(even(n=3)) == {"n": "must be even"}
    assert rules.violations(even(n=4)) == {}


# --- the interceptor -------------------------------------------------------------------------


def test_check_request_raises_invalid_argument_with_the_fields() -> None:
    with pytest.raises(InvalidArgument) as error:
        check_request(RequestRules(), auth_pb2.SignInRequest(email="ann@example.com"))
    assert error.value.field_violations == {"password": REQUIRED_MESSAGE}
    body = error.value.openai_body()["error"]
    assert body["param"] == "password" and "password: is required" in body["message"]


class Accounts(auth_pb2_grpc.AuthServiceServicer):
    """Records the requests that reach it: a refused one never does."""

    def __init__(self) -> None:
        self.reached: list[str] = []

    async def SignIn(self, request, context):
        self.reached.append("SignIn")
        return auth_pb2.SignInResponse(session_token="t")

    async def ListApiKeys(self, request, context):
        self.reached.append("ListApiKeys")
        return auth_pb2.ListApiKeysResponse()


@pytest.fixture
async def served(tmp_path) -> AsyncIterator[tuple[auth_pb2_grpc.AuthServiceStub, Accounts]]:
    settings = GatemeshSettings(data_dir=tmp_path, service_token="s", admin_token="a", key_hmac_secret="x")
    accounts = Accounts()

    async def authenticate(credential: str) -> Principal:
        if credential == USER_TOKEN:
            return Principal(account_id="acct-1")
        raise Unauthenticated("invalid credential")

    spec = ServiceSpec(
        name="test",
        register=lambda srv: auth_pb2_grpc.add_AuthServiceServicer_to_server(accounts, srv),
        service_names=["gatemesh.auth.v1.AuthService"],
        authenticator=authenticate,
    )
    srv, health = build_server(spec, settings)
    port = bind(srv, "127.0.0.1:0", settings)
    await srv.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield auth_pb2_grpc.AuthServiceStub(channel), accounts
    await srv.stop(0)


async def test_interceptor_refuses_bad_requests_before_the_handler(served) -> None:
    stub, accounts = served
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.SignIn(auth_pb2.SignInRequest(email="not an email", password="x" * 300))
    error = bad.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error_details_pb2.BadRequest()
    assert rpc_status.from_call(error).details[0].Unpack(details)
    assert {(v.field, v.description) for v in details.field_violations} == {
        ("email", "must be a valid email address"),
        ("password", "must be at most 256 characters"),
    }
    trailers = dict(error.trailing_metadata())
    assert trailers["gm-http-status"] == "400" and '"param":"email"' in trailers["gm-error-json"]
    assert accounts.reached == []
    await stub.SignIn(auth_pb2.SignInRequest(email="ann@example.com", password="x" * 12))
    assert accounts.reached == ["SignIn"]


async def test_callers_are_authenticated_before_their_requests_are_judged(served) -> None:
    """An unauthenticated caller learns nothing about the rules: 401 first, then 400."""
    stub, accounts = served
    bad_page = auth_pb2.ListApiKeysRequest(page=common_pb2.PageRequest(page_size=5000))
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await stub.ListApiKeys(bad_page)
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as signed_in:
        await stub.ListApiKeys(bad_page, metadata=[("authorization", f"Bearer {USER_TOKEN}")])
    assert signed_in.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page.page_size" in signed_in.value.details()
    assert accounts.reached == []


def test_nul_in_text_and_times_out_of_range_are_refused_whatever_the_rules() -> None:
    """Found by the gRPC fuzz (tests/reliability/test_hostile_grpc.py): PostgreSQL text
    cannot hold U+0000 and a Timestamp past year 9999 cannot become a datetime; both were
    INTERNAL. The paths name nested and repeated fields like the declared rules do."""
    from services.runtime.validation import NUL_MESSAGE, TIME_MESSAGE

    rules = RequestRules()
    subject = auth_pb2.ResolveSubjectRequest()
    subject.subject.account_id = "acct_\x00"
    assert rules.violations(subject) == {"subject.account_id": NUL_MESSAGE}
    for seconds in (-(2**63), 253_402_300_800):
        stats = billing_pb2.GetAggregateStatsRequest()
        stats.since.seconds = seconds
        assert rules.violations(stats) == {"since": TIME_MESSAGE}
    fine = billing_pb2.GetAggregateStatsRequest()
    fine.since.seconds = 253_402_300_799
    assert rules.violations(fine) == {}
    assert rules.violations(auth_pb2.ResolveSubjectRequest(subject={"account_id": "acct_1"})) == {}
