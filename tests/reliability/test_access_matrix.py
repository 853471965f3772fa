"""Who may call what, proven over the whole contract: every RPC of every service, called on
the real processes that serve it (found by asking each one over gRPC reflection) with the
credentials of every role, and every REST route of the edge for the roles a person has.

Generated, not listed: the RPCs come from the generated descriptors, what each role must
get from the method's `gatemesh.common.v1.access` option, and each request from the
method's input type (`tests/reliability/messages.py`), so an RPC added to a proto is in
the matrix without this file changing. What a role must get:

- PUBLIC: nobody is refused (the proxy's OpenAI routes are PUBLIC to the interceptor and
  check the API key themselves: only a live API key passes).
- USER: any signed-in account (a dashboard session; an API key too, except where auth asks
  for a session); anonymous callers, the service credential, a revoked key, an expired
  session and a closed account's key get UNAUTHENTICATED. Another account naming the first one's key, request or
  account id gets NOT_FOUND or PERMISSION_DENIED, or an answer that holds none of it.
- ADMIN / COMPLIANCE: the role's dashboard session (admins may do compliance's work too);
  other accounts, and a staff account's API key, get PERMISSION_DENIED; callers without a
  live credential UNAUTHENTICATED.
- INTERNAL: only the service credential; everyone else UNAUTHENTICATED.

A call that may change its caller (a USER RPC that is not a GET) runs on a fresh account
of the role, so signing out, a password change or a closure cannot spoil the next call.
Then: the ownership cases, gRPC sent to the edge, revocation at once, and a scan for every
credential the run used (`scan.py`).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gatemesh.auth.v1 import auth_pb2, auth_pb2_grpc
from gatemesh.billing.v1 import billing_pb2, billing_pb2_grpc
from gatemesh.common.v1 import common_pb2
from gatemesh.privacy.v1 import privacy_pb2, privacy_pb2_grpc
from services.runtime.access import OPEN_SERVICES
from tests.reliability.full_mesh import MESH, OPERATOR, SERVICE, FullMesh, Person, bearer, full_mesh
from tests.reliability.harness import ADMIN_TOKEN, PASSWORD, SERVICE_TOKEN
from tests.reliability.messages import (
    RULES,
    Fill,
    access_name,
    access_of,
    contract_services,
    http_rule,
    message_class,
    minimal_request,
)
from tests.reliability.results import Row, record
from tests.reliability.scan import everything, where

pytestmark = pytest.mark.e2e

Code = grpc.StatusCode
ROLES = (
    "anonymous",
    "user",
    "user_key",
    "other_user",
    "admin",
    "admin_key",
    "compliance",
    "compliance_key",
    "service",
    "revoked_key",
    "expired_session",
    "closed_account_key",
)
KEY_ROLES = {"user_key", "admin_key", "compliance_key"}
DEAD = ("anonymous", "service", "revoked_key", "expired_session", "closed_account_key")
# PUBLIC to the interceptor: the proxy authenticates the API key itself (hot path, cached).
KEY_AUTHENTICATED = {"gatemesh.proxy.v1.ProxyService"}
# Auth's account and key management takes a dashboard session, never an API key.
SESSION_ONLY = {
    "SignOut",
    "ChangePassword",
    "ChangeEmail",
    "CloseAccount",
    "SetAnalyticsOptOut",
    "AcceptPolicy",
    "CreateApiKey",
    "RevokeApiKey",
    "RotateApiKey",
}
# Id fields that name the first account's things when another account calls.
OWNED_IDS = ("account_id", "key_id", "request_id")
INTERNAL = common_pb2.ACCESS_INTERNAL
BROKEN = {Code.UNKNOWN, Code.INTERNAL, Code.UNIMPLEMENTED, Code.DATA_LOSS}
REFUSED = {Code.UNAUTHENTICATED, Code.PERMISSION_DENIED}
ROLE_OF = {
    "admin": auth_pb2.ROLE_ADMIN,
    "admin_key": auth_pb2.ROLE_ADMIN,
    "compliance": auth_pb2.ROLE_COMPLIANCE,
    "compliance_key": auth_pb2.ROLE_COMPLIANCE,
}


@dataclass
class World:
    """The mesh and the people the matrix calls it as."""

    mesh: FullMesh
    owner: Person  # "user A": has a key and a completed privacy export
    owner_request: str
    shared: dict[str, Person]
    revoked_key: str
    expired_session: str
    closed_key: str
    served: dict[str, list[str]] = field(default_factory=dict)  # service -> addresses

    @property
    def owner_ids(self) -> dict[str, str]:
        return {"account_id": self.owner.account_id, "key_id": self.owner.key_id, "request_id": self.owner_request}

    @property
    def owner_marks(self) -> list[str]:
        return [self.owner.account_id, self.owner.key_id, self.owner_request, self.owner.email]


@dataclass
class Outcome:
    code: Code
    text: str = ""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FullMesh]:
    with full_mesh(tmp_path_factory.mktemp("access")) as running:
        yield running


@pytest.fixture(scope="module")
def world(mesh: FullMesh) -> World:
    return asyncio.run(make_world(mesh))


async def make_world(mesh: FullMesh) -> World:
    async with mesh.channel("auth") as channel, mesh.channel("privacy") as privacy_channel:
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        owner = await mesh.person(auth, key=True)
        await owner_usage(mesh, owner)
        request_id = await completed_export(privacy_pb2_grpc.PrivacyServiceStub(privacy_channel), owner)
        shared = {
            "user": await mesh.person(auth, key=True),
            "admin": await mesh.person(auth, auth_pb2.ROLE_ADMIN, key=True),
            "compliance": await mesh.person(auth, auth_pb2.ROLE_COMPLIANCE, key=True),
        }
        revoked = await mesh.person(auth, key=True)
        await auth.RevokeApiKey(auth_pb2.RevokeApiKeyRequest(key_id=revoked.key_id), metadata=bearer(revoked.session))
        expired = await mesh.person(auth)
        await mesh.expire_sessions(expired.account_id)
        closed = await mesh.person(auth, key=True)
        await auth.CloseAccount(auth_pb2.CloseAccountRequest(password=PASSWORD), metadata=bearer(closed.session))
    world = World(mesh, owner, request_id, shared, revoked.api_key, expired.session, closed.api_key)
    for name in MESH:
        for service in await served_services(mesh.address(name)):
            world.served.setdefault(service, []).append(mesh.address(name))
    return world


async def owner_usage(mesh: FullMesh, owner: Person) -> None:
    """Credit for the owner and one paid call on their key, so they have usage to protect."""
    async with mesh.channel("billing") as channel:
        grant = billing_pb2.GrantCreditsRequest(
            account_id=owner.account_id, amount_micros=1_000_000, reason="acl", idempotency_key=owner.account_id
        )
        await billing_pb2_grpc.BillingServiceStub(channel).GrantCredits(grant, metadata=OPERATOR)
    async with httpx.AsyncClient(base_url=mesh.url, timeout=30) as client:
        body = {"model": "gm-test", "messages": [{"role": "user", "content": "hello"}]}
        reply = await client.post("/v1/chat/completions", json=body, headers=dict(bearer(owner.api_key)))
        assert reply.status_code == 200, reply.text
    for _ in range(200):  # the settle reaches billing just after the answer
        async with mesh.channel("billing") as channel:
            usage = await billing_pb2_grpc.BillingServiceStub(channel).ListUsage(
                billing_pb2.ListUsageRequest(), metadata=bearer(owner.session)
            )
        if usage.records:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the owner's call left no usage record")


async def completed_export(privacy: privacy_pb2_grpc.PrivacyServiceStub, owner: Person) -> str:
    """The owner's own access request, once its export is ready."""
    made = await privacy.CreateMyRequest(
        privacy_pb2.CreateMyRequestRequest(type=privacy_pb2.REQUEST_TYPE_ACCESS), metadata=bearer(owner.session)
    )
    request_id = made.request.request_id
    for _ in range(600):
        got = await privacy.GetMyRequest(
            privacy_pb2.GetMyRequestRequest(request_id=request_id), metadata=bearer(owner.session)
        )
        if got.request.status == privacy_pb2.REQUEST_STATUS_COMPLETED:
            return request_id
        await asyncio.sleep(0.1)
    raise AssertionError(f"the owner's access request did not complete: {got.request}")


async def served_services(address: str) -> list[str]:
    """The services a server says it serves (gRPC reflection), standard ones left out."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        async for reply in stub.ServerReflectionInfo(iter([ask])):
            names = [service.name for service in reply.list_services_response.service]
            return [name for name in names if name not in OPEN_SERVICES]
    return []


# --- what each role must get --------------------------------------------------------------


def takes_owned_ids(method: MethodDescriptor) -> bool:
    return any(fd.name in OWNED_IDS for fd in method.input_type.fields)


def expected(method: MethodDescriptor, role: str) -> set[Code] | str:
    """The codes the call must end with, or 'allowed' / 'isolated'."""
    access = access_of(method)
    if access == common_pb2.ACCESS_PUBLIC:
        if method.containing_service.full_name in KEY_AUTHENTICATED and role not in KEY_ROLES:
            return {Code.UNAUTHENTICATED}
        return "allowed"
    if access == common_pb2.ACCESS_INTERNAL:
        return "allowed" if role == "service" else {Code.UNAUTHENTICATED}
    if role in DEAD:
        return {Code.UNAUTHENTICATED}
    if access == common_pb2.ACCESS_USER:
        if role in KEY_ROLES and method.name in SESSION_ONLY:
            return {Code.PERMISSION_DENIED}
        return "isolated" if role == "other_user" and takes_owned_ids(method) else "allowed"
    # Staff powers need a dashboard session (or the operator token): never an API key.
    allowed = {common_pb2.ACCESS_ADMIN: {"admin"}, common_pb2.ACCESS_COMPLIANCE: {"admin", "compliance"}}[access]
    return "allowed" if role in allowed else {Code.PERMISSION_DENIED}


def verdict(method: MethodDescriptor, role: str, outcome: Outcome, owner_marks: list[str]) -> str | None:
    """None when the outcome is what the role must get, else what went wrong."""
    want = expected(method, role)
    if outcome.code in BROKEN:
        return f"broke: {outcome.code.name} {outcome.text[:200]}"
    if want == "allowed":
        return f"refused: {outcome.code.name} {outcome.text[:200]}" if outcome.code in REFUSED else None
    if want == "isolated":
        if outcome.code in (Code.NOT_FOUND, Code.PERMISSION_DENIED):
            return None
        leaked = [mark for mark in owner_marks if mark and mark in outcome.text]
        return f"{outcome.code.name} and the answer names the owner's {leaked}" if leaked else None
    if outcome.code not in want:
        return f"got {outcome.code.name}, wanted {sorted(c.name for c in want)}: {outcome.text[:200]}"
    return None


# --- calling ------------------------------------------------------------------------------


async def credential(world: World, auth: auth_pb2_grpc.AuthServiceStub, method: MethodDescriptor, role: str) -> Any:
    """(metadata, fill) for a call of `method` as `role`."""
    fill = Fill(email=world.shared["user"].email, password=PASSWORD, credential=world.shared["user"].session)
    if role == "anonymous":
        return [], fill
    if role == "service":
        return SERVICE, fill
    if role == "revoked_key":
        return bearer(world.revoked_key), fill
    if role == "expired_session":
        return bearer(world.expired_session), fill
    if role == "closed_account_key":
        return bearer(world.closed_key), fill
    person = await caller(world, auth, method, role)
    if role == "other_user":
        fill.ids = world.owner_ids
    return bearer(person.api_key if role in KEY_ROLES else person.session), fill


def changes_its_caller(method: MethodDescriptor) -> bool:
    """A USER method that is not a read (its REST verb is not GET) may change the caller's
    own account: sign it out, change its password, close it."""
    rule = http_rule(method)
    return access_of(method) == common_pb2.ACCESS_USER and (rule is None or rule[0] != "GET")


async def caller(world: World, auth: auth_pb2_grpc.AuthServiceStub, method: MethodDescriptor, role: str) -> Person:
    """A fresh account when the call may change its caller, else a shared one of the role."""
    if not changes_its_caller(method):
        return world.shared[role.removesuffix("_key") if role != "other_user" else "user"]
    return await world.mesh.person(auth, ROLE_OF.get(role, 0), key=role in KEY_ROLES)


async def invoke(channel: grpc.aio.Channel, method: MethodDescriptor, request: Message, metadata: Any) -> Outcome:
    path = f"/{method.containing_service.full_name}/{method.name}"
    reply_type = message_class(method.output_type)
    try:
        if method.server_streaming:
            return await _first_of_stream(channel, path, reply_type, request, metadata)
        reply = await channel.unary_unary(
            path, request_serializer=type(request).SerializeToString, response_deserializer=reply_type.FromString
        )(request, metadata=metadata, timeout=20)
        return Outcome(Code.OK, str(reply))
    except grpc.aio.AioRpcError as error:
        return Outcome(error.code(), error.details() or "")


async def _first_of_stream(channel: grpc.aio.Channel, path: str, reply_type: Any, request: Message, md: Any) -> Outcome:
    """A stream's first message (a refusal comes before it); a stream still open after 3 s
    (a watch) was let in."""
    call = channel.unary_stream(
        path, request_serializer=type(request).SerializeToString, response_deserializer=reply_type.FromString
    )(request, metadata=md, timeout=20)
    try:
        first = await asyncio.wait_for(call.read(), 3)
    except TimeoutError:
        return Outcome(Code.OK, "still streaming")
    finally:
        call.cancel()
    return Outcome(Code.OK, "" if first is grpc.aio.EOF else str(first))


@dataclass
class Case:
    method: MethodDescriptor
    role: str
    address: str
    outcome: Outcome | None = None
    problem: str | None = None


async def run_matrix(world: World) -> list[Case]:
    cases = [
        Case(method, role, address)
        for service in contract_services()
        for method in service.methods
        for address in world.served.get(service.full_name, [])
        for role in ROLES
    ]
    limit = asyncio.Semaphore(12)
    async with world.mesh.channel("auth") as auth_channel:
        auth = auth_pb2_grpc.AuthServiceStub(auth_channel)
        channels = {address: grpc.aio.insecure_channel(address) for address in {case.address for case in cases}}
        try:
            await asyncio.gather(*(run_case(world, auth, channels[case.address], case, limit) for case in cases))
        finally:
            for channel in channels.values():
                await channel.close()
    return cases


async def run_case(
    world: World, auth: auth_pb2_grpc.AuthServiceStub, channel: grpc.aio.Channel, case: Case, limit: Any
) -> None:
    async with limit:
        metadata, fill = await credential(world, auth, case.method, case.role)
        request = minimal_request(case.method, fill)
        case.outcome = await invoke(channel, case.method, request, metadata)
        case.problem = verdict(case.method, case.role, case.outcome, world.owner_marks)


# --- the tests ----------------------------------------------------------------------------


def test_every_contract_service_is_served_and_every_generated_request_is_valid(world: World) -> None:
    """The matrix below is complete: each service of the protos is served by a process of
    the mesh, and the request generated for each of its RPCs passes the contract's rules
    (so a call is judged on its credential, not turned away as malformed)."""
    services = contract_services()
    assert not [s.full_name for s in services if s.full_name not in world.served], world.served
    fill = Fill(ids=world.owner_ids, email=world.owner.email, password=PASSWORD)
    invalid = {
        f"{m.containing_service.name}.{m.name}": RULES.violations(minimal_request(m, fill))
        for service in services
        for m in service.methods
    }
    assert not {name: v for name, v in invalid.items() if v}
    assert {m.name for s in services for m in s.methods} >= SESSION_ONLY
    # The edge is the way in from outside: no service-only RPC has a REST route.
    assert not [m.full_name for s in services for m in s.methods if http_rule(m) and access_of(m) == INTERNAL]


def test_every_rpc_for_every_role_gets_exactly_what_its_access_says(world: World) -> None:
    cases = asyncio.run(run_matrix(world))
    failed = [
        f"{c.method.containing_service.name}.{c.method.name} "
        f"[{access_name(access_of(c.method))}] as {c.role} on {c.address}: {c.problem}"
        for c in cases
        if c.problem
    ]
    methods = {(c.method.full_name, c.address) for c in cases}
    record(
        Row(
            f"access matrix: {len(methods)} RPCs (per server) x {len(ROLES)} roles",
            inputs=len(cases),
            checks=len(cases),
            passed=len(cases) - len(failed),
        )
    )
    assert not failed, "\n".join(failed)
    # Every role was refused somewhere and let in somewhere: the matrix is not vacuous.
    for role in ROLES:
        codes = {c.outcome.code for c in cases if c.role == role and c.outcome}
        assert codes & REFUSED and codes - REFUSED, (role, codes)


# --- the REST routes through the edge -----------------------------------------------------

REST_ROLES = (
    "anonymous",
    "user",
    "other_user",
    "user_key",
    "admin_key",
    "compliance",
    "revoked_key",
    "expired_session",
    "closed_account_key",
)


def rest_call(method: MethodDescriptor, request: Message) -> tuple[str, str, dict[str, Any] | None]:
    """(verb, path, JSON body) of the method's route, path fields taken from `request`."""
    verb, template, body = http_rule(method)  # type: ignore[misc]
    path = template
    used = []
    for name in re.findall(r"{([a-z_]+)}", template):
        path = path.replace(f"{{{name}}}", str(getattr(request, name)))
        used.append(name)
    if not body:
        return verb, path, None
    document = json_format.MessageToDict(request, preserving_proto_field_name=True)
    return verb, path, {key: value for key, value in document.items() if key not in used}


def rest_expected(method: MethodDescriptor, role: str) -> set[int] | str:
    """The HTTP statuses the route must answer `role` with, or 'allowed' / 'isolated'."""
    want = expected(method, role)
    if isinstance(want, str):
        return want
    return {HTTP_OF[code] for code in want}


HTTP_OF = {Code.UNAUTHENTICATED: 401, Code.PERMISSION_DENIED: 403, Code.NOT_FOUND: 404}


def rest_verdict(method: MethodDescriptor, role: str, reply: httpx.Response, owner_marks: list[str]) -> str | None:
    want = rest_expected(method, role)
    if reply.status_code >= 500:
        return f"broke: {reply.status_code} {reply.text[:200]}"
    if want == "allowed":
        return f"refused: {reply.status_code} {reply.text[:200]}" if reply.status_code in (401, 403) else None
    if want == "isolated":
        if reply.status_code in (403, 404):
            return None
        leaked = [mark for mark in owner_marks if mark and mark in reply.text]
        return f"{reply.status_code} and the answer names the owner's {leaked}" if leaked else None
    if reply.status_code not in want:  # type: ignore[operator]
        return f"got {reply.status_code}, wanted {sorted(want)}: {reply.text[:200]}"  # type: ignore[arg-type]
    if "error" not in reply.json() or "type" not in reply.json()["error"]:
        return f"{reply.status_code} without an OpenAI-style error body: {reply.text[:200]}"
    return None


async def run_rest(world: World) -> list[tuple[str, str, str | None]]:
    methods = [m for s in contract_services() for m in s.methods]
    routes = [m for m in methods if http_rule(m) and access_of(m) != common_pb2.ACCESS_PUBLIC]
    results = []
    limit = asyncio.Semaphore(8)
    async with world.mesh.channel("auth") as channel, httpx.AsyncClient(base_url=world.mesh.url, timeout=30) as client:
        auth = auth_pb2_grpc.AuthServiceStub(channel)

        async def one(method: MethodDescriptor, role: str) -> None:
            async with limit:
                metadata, fill = await credential(world, auth, method, role)
                verb, path, body = rest_call(method, minimal_request(method, fill))
                reply = await client.request(verb, path, json=body, headers=dict(metadata))
                results.append((method.name, role, rest_verdict(method, role, reply, world.owner_marks)))

        await asyncio.gather(*(one(method, role) for method in routes for role in REST_ROLES))
    return results


def test_every_rest_route_refuses_whom_its_rpc_refuses(world: World) -> None:
    """The edge's REST routes (from the protos' HTTP annotations) give each role what the
    RPC behind them does: anonymous callers, revoked keys and expired sessions a 401 with an
    OpenAI-style error body, another account's ids a 404, staff routes a 403 to users."""
    results = asyncio.run(run_rest(world))
    failed = [f"{name} as {role}: {problem}" for name, role, problem in results if problem]
    routes = {name for name, _role, _problem in results}
    record(
        Row(
            f"access over REST: {len(routes)} routes x {len(REST_ROLES)} roles",
            inputs=len(results),
            checks=len(results),
            passed=len(results) - len(failed),
        )
    )
    assert not failed, "\n".join(failed)


# --- ownership: another account's things stay untouched -----------------------------------

# Every USER RPC that names something by id, and what another account naming the owner's
# thing must get: refused as unknown, or an answer with nothing of the owner's in it.
OWNERSHIP: dict[str, set[Code] | str] = {
    "RevokeApiKey": {Code.NOT_FOUND},
    "RotateApiKey": {Code.NOT_FOUND},
    "ListUsage": "none of the owner's",  # key_id filters within the caller's own usage
    "GetMyRequest": {Code.NOT_FOUND},
    "DownloadMyExport": {Code.NOT_FOUND},
}


def user_methods_with_ids() -> set[str]:
    """USER RPCs with a string `..._id` field: it names a thing (a number like chain_id does not)."""
    return {
        m.name
        for s in contract_services()
        for m in s.methods
        if access_of(m) == common_pb2.ACCESS_USER and any(names_a_thing(fd) for fd in m.input_type.fields)
    }


def names_a_thing(fd: FieldDescriptor) -> bool:
    return fd.name.endswith("_id") and fd.type == FieldDescriptor.TYPE_STRING


async def owner_view(world: World) -> dict[str, str]:
    """What the owner sees of their keys, requests, export, balance and usage."""
    md = bearer(world.owner.session)
    async with world.mesh.channel("auth") as a, world.mesh.channel("billing") as b, world.mesh.channel("privacy") as p:
        keys = await auth_pb2_grpc.AuthServiceStub(a).ListApiKeys(auth_pb2.ListApiKeysRequest(), metadata=md)
        privacy = privacy_pb2_grpc.PrivacyServiceStub(p)
        mine = await privacy.ListMyRequests(privacy_pb2.ListMyRequestsRequest(), metadata=md)
        export = privacy.DownloadMyExport(
            privacy_pb2.DownloadMyExportRequest(request_id=world.owner_request), metadata=md
        )
        chunks = b"".join([chunk.data async for chunk in export])
        billing = billing_pb2_grpc.BillingServiceStub(b)
        balance = await billing.GetBalance(billing_pb2.GetBalanceRequest(), metadata=md)
        usage = await billing.ListUsage(billing_pb2.ListUsageRequest(), metadata=md)
    return {
        "keys": str(keys),
        "requests": str(mine),
        "export": str(len(chunks)),
        "balance": str(balance),
        "usage": str(usage),
    }


def test_another_account_never_reads_or_changes_the_owners_keys_usage_or_requests(world: World) -> None:
    """P6.3: a user sees their own. Every USER RPC taking an id is tried by another account
    with the owner's key, request and account ids; nothing of the owner's changes."""
    assert set(OWNERSHIP) == user_methods_with_ids(), "a USER RPC taking an id needs an ownership case"
    by_name = {m.name: m for s in contract_services() for m in s.methods}
    before = asyncio.run(owner_view(world))
    assert world.owner.key_id in before["keys"] and before["export"] != "0" and world.owner.key_id in before["usage"]
    intruder = bearer(world.shared["user"].session)
    problems = []
    for name, want in OWNERSHIP.items():
        method = by_name[name]
        request = minimal_request(method, Fill(ids=world.owner_ids, password=PASSWORD))
        address = world.served[method.containing_service.full_name][0]
        outcome = asyncio.run(invoke_on(address, method, request, intruder))
        marks = world.owner_marks
        if isinstance(want, set) and outcome.code not in want:
            problems.append(f"{name}: {outcome.code.name} {outcome.text[:200]}")
        if not isinstance(want, set) and (outcome.code != Code.OK or any(m in outcome.text for m in marks)):
            problems.append(f"{name}: {outcome.code.name} {outcome.text[:200]}")
    after = asyncio.run(owner_view(world))
    record(
        Row(
            "ownership: another account on every USER RPC taking an id",
            inputs=len(OWNERSHIP),
            checks=len(OWNERSHIP) + 1,
            passed=len(OWNERSHIP) - len(problems) + (before == after),
        )
    )
    assert not problems, problems
    assert after == before
    models = httpx.get(f"{world.mesh.url}/v1/models", headers=dict(bearer(world.owner.api_key)), timeout=30)
    assert models.status_code == 200, models.text  # the owner's key still works


async def invoke_on(address: str, method: MethodDescriptor, request: Message, metadata: Any) -> Outcome:
    async with grpc.aio.insecure_channel(address) as channel:
        return await invoke(channel, method, request, metadata)


# --- the edge forwards nothing but its REST API -------------------------------------------


async def run_through_edge(world: World) -> list[tuple[MethodDescriptor, Outcome]]:
    """Every RPC called as raw gRPC through the edge, with a credential its access lets in."""
    credentials = {
        common_pb2.ACCESS_PUBLIC: [],
        common_pb2.ACCESS_USER: bearer(world.shared["user"].session),
        common_pb2.ACCESS_ADMIN: bearer(world.shared["admin"].session),
        common_pb2.ACCESS_COMPLIANCE: bearer(world.shared["compliance"].session),
        common_pb2.ACCESS_INTERNAL: SERVICE,
    }
    fill = Fill(email=world.shared["user"].email, password=PASSWORD)
    methods = [m for s in contract_services() for m in s.methods]
    async with world.mesh.channel("auth") as auth_channel:
        auth = auth_pb2_grpc.AuthServiceStub(auth_channel)
        fresh = {m.full_name: bearer((await world.mesh.person(auth)).session) for m in methods if changes_its_caller(m)}
    async with grpc.aio.insecure_channel(world.mesh.url.removeprefix("http://")) as channel:
        calls = [
            invoke(channel, m, minimal_request(m, fill), fresh.get(m.full_name, credentials[access_of(m)]))
            for m in methods
        ]
        outcomes = await asyncio.gather(*calls)
    return list(zip(methods, outcomes, strict=True))


def test_the_edge_forwards_only_the_rpcs_of_its_rest_api(world: World) -> None:
    """The edge is the way in from outside: gRPC sent to it reaches the RPCs that have a
    REST route (the same calls as the REST API) and nothing else: no INTERNAL RPC (Hold,
    Settle, VerifyKey, EraseSubject...) and no ADMIN RPC, whatever the credential. With
    mutual TLS between services, the edge's client certificate would otherwise make any
    caller of the edge a service."""
    results = asyncio.run(run_through_edge(world))
    unrouted = {Code.UNIMPLEMENTED, Code.NOT_FOUND}
    reached = [
        f"{m.containing_service.name}.{m.name}: {o.code.name}"
        for m, o in results
        if not http_rule(m) and o.code not in unrouted
    ]
    missed = [
        f"{m.containing_service.name}.{m.name}: {o.code.name} {o.text[:100]}"
        for m, o in results
        if http_rule(m) and o.code == Code.UNIMPLEMENTED
    ]
    record(
        Row(
            "edge: raw gRPC to every RPC",
            inputs=len(results),
            checks=len(results),
            passed=len(results) - len(reached) - len(missed),
        )
    )
    assert not reached, reached
    assert not missed, missed


# --- a revocation holds at once, even for a key the proxy has leased ------------------------


async def leased_key(world: World, auth: auth_pb2_grpc.AuthServiceStub, client: httpx.AsyncClient) -> Person:
    """A person whose key has credit and has been used (so the proxy holds its lease)."""
    person = await world.mesh.person(auth, key=True)
    await owner_usage(world.mesh, person)
    for _ in range(3):
        assert (await chat(client, person.api_key)).status_code == 200
    return person


async def chat(client: httpx.AsyncClient, api_key: str) -> httpx.Response:
    body = {"model": "gm-test", "messages": [{"role": "user", "content": "hello"}]}
    return await client.post("/v1/chat/completions", json=body, headers=dict(bearer(api_key)))


async def revoke_each_way(world: World) -> dict[str, list[int]]:
    """{how: statuses of the next calls}, each made the moment the revoking call returned."""
    found = {}
    async with world.mesh.channel("auth") as channel, httpx.AsyncClient(base_url=world.mesh.url, timeout=30) as client:
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        ways = {
            "revoke": lambda p: auth.RevokeApiKey(
                auth_pb2.RevokeApiKeyRequest(key_id=p.key_id), metadata=bearer(p.session)
            ),
            "rotate": lambda p: auth.RotateApiKey(
                auth_pb2.RotateApiKeyRequest(key_id=p.key_id), metadata=bearer(p.session)
            ),
            "close": lambda p: auth.CloseAccount(
                auth_pb2.CloseAccountRequest(password=PASSWORD), metadata=bearer(p.session)
            ),
            "admin revoke": lambda p: auth.AdminRevokeApiKey(
                auth_pb2.RevokeApiKeyRequest(key_id=p.key_id), metadata=OPERATOR
            ),
        }
        for how, revoke in ways.items():
            person = await leased_key(world, auth, client)
            await revoke(person)
            found[how] = [(await chat(client, person.api_key)).status_code for _ in range(3)]
            found[how].append((await client.get("/v1/models", headers=dict(bearer(person.api_key)))).status_code)
            found[how].append((await client.get("/api/v1/balance", headers=dict(bearer(person.api_key)))).status_code)
    return found


def test_a_revoked_key_is_refused_everywhere_at_once_even_when_leased(world: World) -> None:
    """Revoked, rotated away, its account closed, or revoked by the operator: the very next
    call on the key is a 401 at the proxy (which held a lease for it) and at every USER route."""
    found = asyncio.run(revoke_each_way(world))
    record(
        Row(
            "revocation at once: 4 ways x 5 calls",
            inputs=20,
            checks=20,
            passed=sum(status == 401 for statuses in found.values() for status in statuses),
        )
    )
    assert all(status == 401 for statuses in found.values() for status in statuses), found


# --- afterwards: the credentials of the whole run are kept nowhere -------------------------

# What a session token and an API key look like (`services/auth/domain.py`, `keys.py`).
CREDENTIAL_RE = re.compile(r"gms_[A-Za-z0-9_-]{20,}|gm-[A-Za-z0-9_-]{43}")


def test_no_password_token_or_key_of_the_whole_matrix_is_kept_anywhere_p6_2(world: World) -> None:
    """P6.2, after every RPC was called as every role: the shared password, the operator
    and service tokens, and every session token and API key handed out are in no table,
    Redis key, log line, file or exported span (`tests/reliability/scan.py`)."""
    time.sleep(1.5)  # the span exporters flush every 0.2 s, Envoy's every 5 s: most of it
    texts = everything(world.mesh)
    fixed = {
        name: where(value, texts)
        for name, value in (("password", PASSWORD), ("admin token", ADMIN_TOKEN), ("service token", SERVICE_TOKEN))
    }
    handed_out = {p.session for p in world.mesh.people} | {p.api_key for p in world.mesh.people if p.api_key}
    seen = {match: name for name, text in texts.items() for match in CREDENTIAL_RE.findall(text)}
    leaked = {token[:8]: place for token, place in seen.items() if token in handed_out}
    record(
        Row(
            f"secrets after the matrix: {len(handed_out) + len(fixed)} credentials",
            inputs=len(handed_out) + 3,
            checks=len(handed_out) + 3,
            passed=len(handed_out) - len(leaked) + sum(not v for v in fixed.values()),
        )
    )
    assert not {name: places for name, places in fixed.items() if places}
    assert not leaked
    assert len(handed_out) > 100 and world.owner.email in "".join(texts.values())  # the scan saw the run
