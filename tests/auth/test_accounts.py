"""Accounts over gRPC against real PostgreSQL and Redis: sign-up rules (P9.1, P10.2),
sessions, password and email changes, closure (P8.4), analytics opt-out (P7.3), sign-in
throttling and the security log (P1.5, P5.3)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc
import pytest
from sqlalchemy import select, update

from gatemesh.auth.v1 import auth_pb2, auth_pb2_grpc
from services.auth.store import PolicyAcceptanceRow, SecurityEventRow, now
from tests.auth.conftest import OPERATOR, PASSWORD, POLICY, SERVICE, StartAuth


async def refused(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    return error.value


async def rows(auth, table):
    async with auth.app.store.sessions() as db:
        return list((await db.scalars(select(table))).all())


async def test_sign_up_records_age_attestation_and_policy_acceptance_p9_1_p10_2(auth) -> None:
    account = await auth.sign_up("Person@Example.com")
    assert account.email == "person@example.com"
    assert account.accepted_policy_version == POLICY
    assert account.status == auth_pb2.ACCOUNT_STATUS_ACTIVE
    (acceptance,) = await rows(auth, PolicyAcceptanceRow)
    assert (acceptance.account_id, acceptance.version) == (account.account_id, POLICY)
    stored = await auth.app.store.account_by_id(account.account_id)
    assert stored.age_attested and stored.password_hash.startswith("$argon2id$")  # P6.2


async def test_sign_up_refuses_without_age_attestation_or_current_policy_p9_1(auth) -> None:
    request = auth_pb2.SignUpRequest(email="kid@example.com", password=PASSWORD, accepted_policy_version=POLICY)
    error = await refused(auth.stub.SignUp(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "age_attested" in error.details()
    old = auth_pb2.SignUpRequest(
        email="kid@example.com", password=PASSWORD, age_attested=True, accepted_policy_version="1999-01-01"
    )
    error = await refused(auth.stub.SignUp(old))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"accepted_policy_version: must be the current policy version {POLICY}" in error.details()
    assert await auth.app.store.account_by_email("kid@example.com") is None


async def test_duplicate_email_is_already_exists(auth) -> None:
    await auth.sign_up("twice@example.com")
    error = await refused(auth.sign_up("TWICE@example.com"))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_sign_in_get_me_sign_out(auth) -> None:
    account = await auth.sign_up()
    md = await auth.session(account.email)
    me = await auth.stub.GetMe(auth_pb2.GetMeRequest(), metadata=md)
    assert me.account.account_id == account.account_id
    await auth.stub.SignOut(auth_pb2.SignOutRequest(), metadata=md)
    error = await refused(auth.stub.GetMe(auth_pb2.GetMeRequest(), metadata=md))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_wrong_password_and_unknown_email_look_the_same(auth) -> None:
    account = await auth.sign_up()
    wrong = await refused(auth.stub.SignIn(auth_pb2.SignInRequest(email=account.email, password="x" * 12)))
    unknown = await refused(auth.stub.SignIn(auth_pb2.SignInRequest(email="nobody@example.com", password="x" * 12)))
    assert wrong.code() == unknown.code() == grpc.StatusCode.UNAUTHENTICATED
    assert wrong.details() == unknown.details()


async def test_failed_sign_ins_are_throttled_per_account_p2_3(start_auth: StartAuth) -> None:
    auth = await start_auth(auth_signin_max_failures_account=3)
    account = await auth.sign_up()
    for _ in range(3):
        await refused(auth.stub.SignIn(auth_pb2.SignInRequest(email=account.email, password="wrong password!")))
    # Even the right password is refused while throttled, with a time to retry.
    error = await refused(auth.stub.SignIn(auth_pb2.SignInRequest(email=account.email, password=PASSWORD)))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert 1 <= int(dict(error.trailing_metadata())["retry-after"]) <= 900


async def test_failed_sign_ins_are_throttled_per_ip_p2_3(start_auth: StartAuth) -> None:
    auth = await start_auth(auth_signin_max_failures_ip=4)
    ip = [("x-forwarded-for", "203.0.113.9, 10.0.0.1")]
    for i in range(4):
        request = auth_pb2.SignInRequest(email=f"guess{i}@example.com", password="wrong password!")
        await refused(auth.stub.SignIn(request, metadata=ip))
    account = await auth.sign_up()
    request = auth_pb2.SignInRequest(email=account.email, password=PASSWORD)
    error = await refused(auth.stub.SignIn(request, metadata=ip))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await auth.stub.SignIn(request, metadata=[("x-forwarded-for", "198.51.100.7")])  # another IP is fine


async def test_security_log_records_ip_and_user_agent_p1_5(auth) -> None:
    account = await auth.sign_up()
    origin = [("x-forwarded-for", "203.0.113.5, 10.1.1.1")]
    async with grpc.aio.insecure_channel(auth.address, options=[("grpc.primary_user_agent", "dashboard/1.0")]) as ch:
        stub = auth_pb2_grpc.AuthServiceStub(ch)
        wrong = auth_pb2.SignInRequest(email=account.email, password="wrong password!")
        await refused(stub.SignIn(wrong, metadata=origin))
        await stub.SignIn(auth_pb2.SignInRequest(email=account.email, password=PASSWORD), metadata=origin)
    events = {e.event: e for e in await rows(auth, SecurityEventRow) if e.account_id == account.account_id}
    assert {"sign_up", "sign_in_failed", "sign_in"} <= set(events)
    assert events["sign_in"].ip == "203.0.113.5"  # the first hop of x-forwarded-for
    assert events["sign_in"].user_agent.startswith("dashboard/1.0")
    assert events["sign_up"].ip == "127.0.0.1"  # no header: the peer


async def test_security_log_is_swept_after_90_days_p5_3(auth) -> None:
    account = await auth.sign_up()
    await auth.session(account.email)
    async with auth.app.store.sessions() as db, db.begin():
        await db.execute(
            update(SecurityEventRow)
            .where(SecurityEventRow.event == "sign_up")
            .values(created_at=now() - timedelta(days=91))
        )
    events, _ = await auth.app.accounts.sweep()
    assert events == 1
    assert {e.event for e in await rows(auth, SecurityEventRow)} == {"sign_in"}


async def test_change_password_needs_the_current_one_and_ends_other_sessions(auth) -> None:
    account = await auth.sign_up()
    md, other = await auth.session(account.email), await auth.session(account.email)
    wrong = auth_pb2.ChangePasswordRequest(current_password="not my password", new_password="another long secret")
    assert (await refused(auth.stub.ChangePassword(wrong, metadata=md))).code() == grpc.StatusCode.PERMISSION_DENIED
    request = auth_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password="another long secret")
    await auth.stub.ChangePassword(request, metadata=md)
    await auth.stub.GetMe(auth_pb2.GetMeRequest(), metadata=md)
    assert (
        await refused(auth.stub.GetMe(auth_pb2.GetMeRequest(), metadata=other))
    ).code() == grpc.StatusCode.UNAUTHENTICATED
    await auth.session(account.email, "another long secret")


async def test_change_email(auth) -> None:
    account = await auth.sign_up()
    taken = await auth.sign_up()
    md = await auth.session(account.email)
    clash = auth_pb2.ChangeEmailRequest(new_email=taken.email, password=PASSWORD)
    assert (await refused(auth.stub.ChangeEmail(clash, metadata=md))).code() == grpc.StatusCode.ALREADY_EXISTS
    reply = await auth.stub.ChangeEmail(
        auth_pb2.ChangeEmailRequest(new_email="new@example.org", password=PASSWORD), metadata=md
    )
    assert reply.account.email == "new@example.org"
    await auth.session("new@example.org")


async def test_close_account_revokes_keys_and_sessions_p8_4(auth) -> None:
    account, md, key = await auth.user_with_key()
    await auth.stub.VerifyKey(auth_pb2.VerifyKeyRequest(api_key=key), metadata=SERVICE)
    closed = await auth.stub.CloseAccount(auth_pb2.CloseAccountRequest(password=PASSWORD), metadata=md)
    assert closed.account.status == auth_pb2.ACCOUNT_STATUS_CLOSED
    stored = await auth.app.store.account_by_id(account.account_id)
    assert stored.closed_at is not None
    key_error = await refused(auth.stub.VerifyKey(auth_pb2.VerifyKeyRequest(api_key=key), metadata=SERVICE))
    assert key_error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (
        await refused(auth.stub.GetMe(auth_pb2.GetMeRequest(), metadata=md))
    ).code() == grpc.StatusCode.UNAUTHENTICATED
    sign_in = await refused(auth.stub.SignIn(auth_pb2.SignInRequest(email=account.email, password=PASSWORD)))
    assert sign_in.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_analytics_opt_out_is_honoured_at_once_p7_3(auth) -> None:
    account, md, key = await auth.user_with_key()
    before = await auth.stub.VerifyKey(auth_pb2.VerifyKeyRequest(api_key=key), metadata=SERVICE)
    assert not before.analytics_opt_out
    await auth.stub.SetAnalyticsOptOut(auth_pb2.SetAnalyticsOptOutRequest(opt_out=True), metadata=md)
    after = await auth.stub.VerifyKey(auth_pb2.VerifyKeyRequest(api_key=key), metadata=SERVICE)
    assert after.analytics_opt_out  # the cached verification was dropped
    listed = await auth.stub.ListAnalyticsOptOuts(auth_pb2.ListAnalyticsOptOutsRequest(), metadata=SERVICE)
    assert listed.account_ids == [account.account_id]


async def test_accept_policy_records_the_version_p10_2(start_auth: StartAuth) -> None:
    auth = await start_auth(auth_policy_version="2027-01-01")
    created = await auth.stub.AdminCreateAccount(
        auth_pb2.AdminCreateAccountRequest(email="staff@example.com"), metadata=OPERATOR
    )
    assert len(created.generated_password) >= 20 and not created.account.accepted_policy_version
    md = await auth.session("staff@example.com", created.generated_password)
    old = await refused(auth.stub.AcceptPolicy(auth_pb2.AcceptPolicyRequest(version="2026-11-01"), metadata=md))
    assert old.code() == grpc.StatusCode.INVALID_ARGUMENT
    reply = await auth.stub.AcceptPolicy(auth_pb2.AcceptPolicyRequest(version="2027-01-01"), metadata=md)
    assert reply.account.accepted_policy_version == "2027-01-01"
    assert [(a.version) for a in await rows(auth, PolicyAcceptanceRow)] == ["2027-01-01"]


async def test_admin_roles(auth) -> None:
    created = await auth.stub.AdminCreateAccount(
        auth_pb2.AdminCreateAccountRequest(email="admin@example.com", password=PASSWORD, role=auth_pb2.ROLE_ADMIN),
        metadata=OPERATOR,
    )
    assert created.account.role == auth_pb2.ROLE_ADMIN and not created.generated_password
    md = await auth.session("admin@example.com")
    found = await auth.stub.AdminGetAccount(auth_pb2.AdminGetAccountRequest(email="admin@example.com"), metadata=md)
    assert found.account.account_id == created.account.account_id
    missing = await refused(
        auth.stub.AdminGetAccount(auth_pb2.AdminGetAccountRequest(email="no@example.com"), metadata=md)
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND


async def test_the_sweeper_runs_at_start_p5_3(start_auth: StartAuth) -> None:
    """An instance restarted more often than the sweep interval still sweeps."""
    auth = await start_auth()
    account = await auth.sign_up()
    async with auth.app.store.sessions() as db, db.begin():
        await db.execute(update(SecurityEventRow).values(created_at=now() - timedelta(days=91)))
    second = await start_auth(auth_sweep_interval_s=86400)
    for _ in range(100):
        if not [e for e in await rows(second, SecurityEventRow) if e.account_id == account.account_id]:
            break
        await asyncio.sleep(0.02)
    assert not [e for e in await rows(second, SecurityEventRow) if e.account_id == account.account_id]
