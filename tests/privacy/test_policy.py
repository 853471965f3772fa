"""Policy versions (P10.1, P10.2) through real processes on PostgreSQL: staff publish, the
current version is public, auth requires it, the accounts that have not accepted it are
listed, and every account gets one notification in the outbox, once."""

from __future__ import annotations

import asyncio
import json
import os
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from gatemesh.auth.v1 import auth_pb2
from gatemesh.common.v1 import common_pb2
from gatemesh.privacy.v1 import policy_pb2, policy_pb2_grpc, privacy_pb2
from services.runtime.errors import details_of
from services.runtime.timestamps import to_timestamp
from tests.privacy.mesh import OPERATOR, PASSWORD, POLICY, PrivacyMesh, open_mesh
from tests.privacy.mesh import PrivacyProcess as Process

NEW = "2026-12-15"


@pytest.fixture
async def pm(tmp_path: Path, upstreams):
    """The mesh, with one privacy service where auth looks for the current policy version."""
    with ExitStack() as stack:
        pm = await open_mesh(stack, tmp_path, upstreams)
        address = pm.mesh.envs["auth"]["GATEMESH_PRIVACY_ADDR"]
        instance = Process(pm.privacy_env(address), address, tmp_path / "privacy-policy.log").start()
        pm.instances.append(instance)
        stack.callback(instance.stop)
        yield pm


def policy_stub(pm: PrivacyMesh) -> policy_pb2_grpc.PolicyServiceStub:
    pm.stub()  # opens (and keeps) the channel to the privacy instance
    return policy_pb2_grpc.PolicyServiceStub(pm._channels[pm.instances[0].address])


def publish_request(version: str, effective_at: datetime, summary: str = "clearer retention wording") -> object:
    return policy_pb2.PublishPolicyVersionRequest(
        version=version, effective_at=to_timestamp(effective_at), summary=summary
    )


async def outbox(pm: PrivacyMesh, version: str) -> list[str]:
    rows = await pm.rows("SELECT account_id FROM privacy_policy_notifications WHERE version = $1", version)
    return sorted(r["account_id"] for r in rows)


async def active_accounts(pm: PrivacyMesh) -> list[str]:
    rows = await pm.rows("SELECT account_id FROM accounts WHERE status = 1", database=pm.mesh.databases["auth"])
    return sorted(r["account_id"] for r in rows)


async def sign_up(pm: PrivacyMesh, version: str = POLICY) -> tuple[auth_pb2.Account, list[tuple[str, str]]]:
    """A new account that accepted `version`, and its dashboard session."""
    email = f"policy-{os.urandom(4).hex()}@example.com"
    request = auth_pb2.SignUpRequest(email=email, password=PASSWORD, age_attested=True, accepted_policy_version=version)
    return (await pm.mesh.auth.SignUp(request)).account, await pm.session(email)


async def signed_up_eventually(pm: PrivacyMesh, version: str) -> auth_pb2.Account:
    """Sign up with `version` once auth has picked it up (its cache, or its 5 s retry when
    privacy was not reachable yet): 15 s at most, as `eventually_refused`."""
    for _ in range(150):
        try:
            return (await sign_up(pm, version))[0]
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            await asyncio.sleep(0.1)
    return (await sign_up(pm, version))[0]


async def eventually_refused(call) -> grpc.aio.AioRpcError:
    """Auth caches the current version briefly (0.5 s in tests): wait for the refusal."""
    for _ in range(150):  # 15 s: a loaded machine can delay the refresh well past the cache time
        try:
            await call()
        except grpc.aio.AioRpcError as error:
            return error
        await asyncio.sleep(0.1)
    raise AssertionError("auth kept accepting the superseded policy version")


async def test_published_version_is_current_required_by_auth_and_notified_once_P10_1_P10_2(
    pm: PrivacyMesh,
) -> None:
    """P10.1: a published version with its effective date becomes the current one, public;
    P10.2: auth records acceptances of it (and refuses the superseded one), staff list who
    has not accepted it, and every account is notified once, however often it is published."""
    stub = policy_stub(pm)
    assert not (await stub.GetCurrentPolicy(policy_pb2.GetCurrentPolicyRequest())).HasField("current")
    (first, session), (second, _) = await sign_up(pm), await sign_up(pm)
    staff_id, staff = await pm.staff()

    published = await stub.PublishPolicyVersion(publish_request(NEW, datetime.now(UTC)), metadata=staff)
    assert published.created and published.version.version == NEW
    accounts = await active_accounts(pm)
    assert published.notified == len(accounts) and await outbox(pm, NEW) == accounts
    assert {first.account_id, second.account_id, staff_id} <= set(accounts)

    effective = published.version.effective_at.ToDatetime(tzinfo=UTC)
    again = await stub.PublishPolicyVersion(publish_request(NEW, effective), metadata=OPERATOR)
    with pytest.raises(grpc.aio.AioRpcError) as changed:
        await stub.PublishPolicyVersion(publish_request(NEW, datetime.now(UTC), "other words"), metadata=OPERATOR)
    assert changed.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert not again.created and again.notified == len(accounts) and await outbox(pm, NEW) == accounts

    current = await stub.GetCurrentPolicy(policy_pb2.GetCurrentPolicyRequest())  # no credential: public
    assert current.current.version == NEW and current.current.summary == "clearer retention wording"

    old = auth_pb2.AcceptPolicyRequest(version=POLICY)
    refused = await eventually_refused(lambda: pm.mesh.auth.AcceptPolicy(old, metadata=session))
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT and NEW in (refused.details() or "")
    accepted = await pm.mesh.auth.AcceptPolicy(auth_pb2.AcceptPolicyRequest(version=NEW), metadata=session)
    assert accepted.account.accepted_policy_version == NEW
    newcomer, _ = await sign_up(pm, NEW)
    assert newcomer.accepted_policy_version == NEW
    rows = await pm.rows(
        "SELECT version FROM policy_acceptances WHERE account_id = $1", first.account_id,
        database=pm.mesh.databases["auth"],
    )  # fmt: skip
    assert sorted(r["version"] for r in rows) == sorted([POLICY, NEW])

    pending = await stub.ListPendingAcceptances(policy_pb2.ListPendingAcceptancesRequest(), metadata=staff)
    assert pending.version == NEW
    assert second.account_id in pending.account_ids and staff_id in pending.account_ids
    assert first.account_id not in pending.account_ids and newcomer.account_id not in pending.account_ids

    events = await pm.rows("SELECT event, actor FROM privacy_audit WHERE event LIKE 'policy_%' ORDER BY seq")
    assert [(e["event"], e["actor"]) for e in events] == [
        ("policy_published", staff_id),
        ("policy_pending_listed", staff_id),
    ]  # P6.3: staff actions on account data are in the trail, which stays intact
    trail = await pm.stub().VerifyAuditTrail(privacy_pb2.VerifyAuditTrailRequest(), metadata=OPERATOR)
    assert trail.intact


async def test_scheduled_version_is_upcoming_until_its_date_P10_1(pm: PrivacyMesh) -> None:
    """P10.1: a version with a later effective date is announced, not current, until then;
    P8.3: an erased account's notifications leave the outbox with the rest of its data."""
    stub = policy_stub(pm)
    subject, session = await sign_up(pm)
    now = datetime.now(UTC)
    await stub.PublishPolicyVersion(publish_request("v1", now), metadata=OPERATOR)
    await stub.PublishPolicyVersion(publish_request("v2", now + timedelta(days=30)), metadata=OPERATOR)
    reply = await stub.GetCurrentPolicy(policy_pb2.GetCurrentPolicyRequest())
    assert reply.current.version == "v1" and reply.upcoming.version == "v2"
    listed = await stub.ListPolicyVersions(policy_pb2.ListPolicyVersionsRequest(), metadata=OPERATOR)
    assert [v.version.version for v in listed.versions] == ["v2", "v1"]
    assert all(v.published_by == "operator" and v.HasField("notified_at") for v in listed.versions)
    assert (await signed_up_eventually(pm, "v1")).accepted_policy_version == "v1"

    assert subject.account_id in await outbox(pm, "v1") and subject.account_id in await outbox(pm, "v2")
    erase = privacy_pb2.CreateMyRequestRequest(type=privacy_pb2.REQUEST_TYPE_ERASURE, reason="leaving")
    request = (await pm.stub().CreateMyRequest(erase, metadata=session)).request
    done = await pm.wait(request.request_id, within=120)
    assert subject.account_id not in await outbox(pm, "v1") + await outbox(pm, "v2")
    got = privacy_pb2.GetCertificateRequest(request_id=done.request_id)
    certificate = json.loads((await pm.stub().GetCertificate(got, metadata=OPERATOR)).certificate.document)
    assert certificate["privacy"]["erased"]["privacy.privacy_policy_notifications"] == 2


async def test_bad_publications_are_refused_and_change_nothing_P10_1(pm: PrivacyMesh) -> None:
    """P10.1: malformed ids, past or out-of-order dates and non-staff callers are refused."""
    stub = policy_stub(pm)
    now = datetime.now(UTC)
    await stub.PublishPolicyVersion(publish_request("2027-01", now + timedelta(days=10)), metadata=OPERATOR)
    cases = [
        (publish_request("", now), "version"),
        (publish_request("has spaces", now), "version"),
        (publish_request("old", now - timedelta(days=1)), "effective_at"),
        (publish_request("before", now + timedelta(days=5)), "effective_at"),
        (policy_pb2.PublishPolicyVersionRequest(version="nodate"), "effective_at"),
        (publish_request("long", now + timedelta(days=20), "x" * 2001), "summary"),
    ]
    for request, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.PublishPolicyVersion(request, metadata=OPERATOR)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in str(details_of(bad.value))
    _, session = await sign_up(pm)
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stub.PublishPolicyVersion(publish_request("u", now + timedelta(days=40)), metadata=session)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    listed = await stub.ListPolicyVersions(policy_pb2.ListPolicyVersionsRequest(), metadata=OPERATOR)
    assert [v.version.version for v in listed.versions] == ["2027-01"]
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stub.ListPendingAcceptances(policy_pb2.ListPendingAcceptancesRequest(version="nope"), metadata=OPERATOR)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    page = common_pb2.PageRequest(page_size=-1)
    with pytest.raises(grpc.aio.AioRpcError) as bad_page:
        await stub.ListPendingAcceptances(policy_pb2.ListPendingAcceptancesRequest(page=page), metadata=OPERATOR)
    assert bad_page.value.code() == grpc.StatusCode.INVALID_ARGUMENT
