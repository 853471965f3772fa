"""`gatemesh privacy ...` as compliance staff use it, against a running mesh."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from gatemesh.auth.v1 import auth_pb2
from gatemesh.privacy.v1 import privacy_pb2
from services.privacy.domain import subject_pseudonym
from tests.privacy.mesh import OPERATOR, PASSWORD, PrivacyMesh
from tests.privacy.test_requests import HMAC_SECRET
from tests.proxy.mesh import chat_body
from tests.support import ROOT

GATEMESH = str(Path(sys.executable).parent / "gatemesh")


def cli(pm: PrivacyMesh, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **pm.instances[-1].env}
    return subprocess.run(
        [GATEMESH, "privacy", *args], env=env, input=stdin, capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def request_id(out: str) -> str:
    found = re.search(r"request (pr_[0-9a-f]+)", out)
    assert found, out
    return found.group(1)


async def email_of(pm: PrivacyMesh, account_id: str) -> str:
    request = auth_pb2.AdminGetAccountRequest(account_id=account_id)
    return (await pm.mesh.auth.AdminGetAccount(request, metadata=OPERATOR)).account.email


async def test_staff_erase_approve_wait_certificate_from_the_cli_P8_3_P8_5(shared_mesh: PrivacyMesh) -> None:
    """P8.5: a named member raises an erasure, cannot approve it, the operator (a second
    member) approves with --wait (progress per step), and the certificate verifies."""
    pm = shared_mesh
    user = await pm.mesh.user()
    await user.chat(chat_body())
    email = await email_of(pm, user.account_id)
    staff_email = f"cli-staff-{user.account_id[-6:]}@example.com"
    create = auth_pb2.AdminCreateAccountRequest(email=staff_email, password=PASSWORD, role=auth_pb2.ROLE_COMPLIANCE)
    await pm.mesh.auth.AdminCreateAccount(create, metadata=OPERATOR)

    as_staff = ("--as", staff_email, "--password-stdin")
    raised = await asyncio.to_thread(
        cli, pm, "erase", "--email", email, "--reason", "asked by email", *as_staff, "--wait", stdin=PASSWORD + "\n"
    )
    assert raised.returncode == 0, raised.stderr
    rid = request_id(raised.stdout)
    assert "awaits approval" in raised.stdout
    password_file = pm.tmp / f"{staff_email}.password"
    password_file.write_text(PASSWORD + "\n")
    own = await asyncio.to_thread(cli, pm, "approve", rid, "--as", staff_email, "--password-file", str(password_file))
    assert own.returncode == 1 and "cannot approve their own" in own.stderr
    approved = await asyncio.to_thread(cli, pm, "approve", rid, "--wait")
    assert approved.returncode == 0, approved.stderr
    assert re.search(r"billing\s+erase\s+done", approved.stdout) and f"{rid} completed" in approved.stdout
    cert = await asyncio.to_thread(cli, pm, "certificate", rid, "--verify")
    assert cert.returncode == 0 and "signature verifies" in cert.stdout
    listed = await asyncio.to_thread(cli, pm, "list", "--json")
    assert rid in {r["request_id"] for r in json.loads(listed.stdout)}
    audit = await asyncio.to_thread(cli, pm, "audit")
    assert audit.returncode == 0 and "intact" in audit.stdout


async def test_cli_export_wait_and_clear_errors(shared_mesh: PrivacyMesh) -> None:
    pm = shared_mesh
    user = await pm.mesh.user()
    email = await email_of(pm, user.account_id)
    done = await asyncio.to_thread(cli, pm, "export", "--email", email, "--wait")
    assert done.returncode == 0 and "completed" in done.stdout, done.stderr
    status = await asyncio.to_thread(cli, pm, "status", request_id(done.stdout))
    assert re.search(r"auth\s+export\s+done", status.stdout)
    unknown = await asyncio.to_thread(cli, pm, "status", "pr_000000000000000000000000")
    assert unknown.returncode == 1 and "no such request" in unknown.stderr
    nobody = await asyncio.to_thread(cli, pm, "export", "--email", "nobody-at-all@example.com")
    assert nobody.returncode == 1 and "unknown subject" in nobody.stderr
    malformed = await asyncio.to_thread(cli, pm, "rectify", "--email", email, "--new-email", "not-an-email")
    assert malformed.returncode == 1 and "new_email" in malformed.stderr


async def test_a_password_argument_is_refused_and_starts_nothing(shared_mesh: PrivacyMesh) -> None:
    """`--as` reads the password the CLI's one way (common.read_password): never an argument."""
    pm = shared_mesh
    user = await pm.mesh.user()
    email = await email_of(pm, user.account_id)
    before = await pm.rows("SELECT count(*) AS n FROM privacy_requests")
    argument = await asyncio.to_thread(
        cli, pm, "export", "--email", email, "--as", "someone@example.com", "--password", "hunter2hunter2"
    )
    assert argument.returncode == 2 and "--password-stdin" in argument.stderr
    assert "hunter2hunter2" not in argument.stderr
    no_terminal = await asyncio.to_thread(cli, pm, "export", "--email", email, "--as", "someone@example.com")
    assert no_terminal.returncode == 2 and "--password-file" in no_terminal.stderr
    assert await pm.rows("SELECT count(*) AS n FROM privacy_requests") == before


async def test_child_account_erasure_records_its_reason_P9_2(shared_mesh: PrivacyMesh) -> None:
    """P9.2: `erase --child` raises an erasure whose reason says so (in the request and in its
    certificate); as any staff erasure it runs once a second member approves it."""
    pm = shared_mesh
    user = await pm.mesh.user()
    email = await email_of(pm, user.account_id)
    staff_email = f"cli-child-{user.account_id[-6:]}@example.com"
    create = auth_pb2.AdminCreateAccountRequest(email=staff_email, password=PASSWORD, role=auth_pb2.ROLE_COMPLIANCE)
    await pm.mesh.auth.AdminCreateAccount(create, metadata=OPERATOR)
    both = await asyncio.to_thread(cli, pm, "erase", "--email", email, "--child", "--reason", "other")
    assert both.returncode == 2
    raised = await asyncio.to_thread(
        cli, pm, "erase", "--email", email, "--child", "--as", staff_email, "--password-stdin", stdin=PASSWORD + "\n"
    )
    assert raised.returncode == 0, raised.stderr
    rid = request_id(raised.stdout)
    status = await asyncio.to_thread(cli, pm, "status", rid)
    assert "awaiting approval" in status.stdout and "reason: child account (P9.2)" in status.stdout
    approved = await asyncio.to_thread(cli, pm, "approve", rid, "--wait")
    assert approved.returncode == 0 and f"{rid} completed" in approved.stdout, approved.stderr
    cert = await asyncio.to_thread(cli, pm, "certificate", rid, "--verify")
    assert cert.returncode == 0 and '"reason": "child account (P9.2)"' in cert.stdout


async def test_rectify_and_dry_run_from_the_cli_wait_per_step_P8_2(shared_mesh: PrivacyMesh) -> None:
    """P8.2 from the CLI: `rectify --wait` shows each participant's step and the new email is
    auth's; `erase --dry-run --wait` (no approval) reports counts and the key still works."""
    pm = shared_mesh
    user = await pm.mesh.user()
    await user.chat(chat_body())
    await user.settled_balance()
    email = await email_of(pm, user.account_id)
    new = f"cli-fixed-{user.account_id[-6:]}@example.org"
    fixed = await asyncio.to_thread(cli, pm, "rectify", "--email", email, "--new-email", new, "--wait")
    assert fixed.returncode == 0, fixed.stderr
    assert re.search(r"auth\s+rectify\s+done.*auth\.accounts=1", fixed.stdout), fixed.stdout
    assert await email_of(pm, user.account_id) == new
    dry = await asyncio.to_thread(cli, pm, "erase", "--email", new, "--reason", "what if", "--dry-run", "--wait")
    assert dry.returncode == 0 and "completed" in dry.stdout, dry.stderr
    assert re.search(r"billing\s+dry-run\s+done.*billing\.usage_records=1", dry.stdout), dry.stdout
    assert await user.chat(chat_body())


async def test_list_overdue_shows_requests_past_or_within_7_days_of_due(shared_mesh: PrivacyMesh) -> None:
    """Staff see open requests overdue or due within 7 days; one due in 30 days is not listed,
    nor a completed one. (Erasures the operator raises wait for a second member: open.)"""
    pm = shared_mesh
    ids = []
    for _ in range(3):
        user = await pm.mesh.user()
        email = await email_of(pm, user.account_id)
        raised = await asyncio.to_thread(cli, pm, "erase", "--email", email, "--reason", "asked by letter")
        assert "awaiting approval" in raised.stdout, raised  # the operator is one member: a second must approve
        ids.append(request_id(raised.stdout))
    own = await asyncio.to_thread(cli, pm, "approve", ids[0])
    assert own.returncode == 1 and "cannot approve their own" in own.stderr
    user = await pm.mesh.user()
    finished = await asyncio.to_thread(cli, pm, "export", "--email", await email_of(pm, user.account_id), "--wait")
    ids.append(request_id(finished.stdout))
    late, soon, later, completed = ids
    await pm.rows("UPDATE privacy_requests SET due_at = now() - interval '1 day' WHERE request_id = $1", completed)
    await pm.rows("UPDATE privacy_requests SET due_at = now() - interval '1 day' WHERE request_id = $1", late)
    await pm.rows("UPDATE privacy_requests SET due_at = now() + interval '6 days' WHERE request_id = $1", soon)
    listed = await asyncio.to_thread(cli, pm, "list", "--overdue", "--json")
    assert listed.returncode == 0, listed.stderr
    found = {r["request_id"] for r in json.loads(listed.stdout)}
    assert {late, soon} <= found and not {later, completed} & found


async def test_staff_closure_of_an_account_leads_to_its_erasure_P5_4_P8_4(shared_mesh: PrivacyMesh) -> None:
    """P5.4, P8.4: `gatemesh accounts close` (auth's AdminCloseAccount, compliance staff or
    the operator) refuses the key at once, and privacy raises the erasure (origin: account
    closed, due within 30 days, no approval) that runs to completion; closing again is a no-op."""
    pm = shared_mesh
    user = await pm.mesh.user()
    await user.chat(chat_body())
    email = await email_of(pm, user.account_id)
    closed = await asyncio.to_thread(accounts_cli, pm, "close", "--email", email)
    assert closed.returncode == 0 and user.account_id in closed.stdout, closed.stderr
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await user.chat(chat_body())
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    wanted = subject_pseudonym(HMAC_SECRET, user.account_id)
    found: list[privacy_pb2.PrivacyRequest] = []
    for _ in range(300):
        listed = await pm.stub().ListRequests(privacy_pb2.ListRequestsRequest(), metadata=OPERATOR)
        found = [r for r in listed.requests if r.subject_id == wanted]
        if found and found[0].status == privacy_pb2.REQUEST_STATUS_COMPLETED:
            break
        await asyncio.sleep(0.1)
    assert [(r.origin, r.status) for r in found] == [
        (privacy_pb2.ORIGIN_ACCOUNT_CLOSED, privacy_pb2.REQUEST_STATUS_COMPLETED)
    ]
    assert found[0].due_at.seconds - found[0].received_at.seconds <= 30 * 86400
    account = (
        await pm.mesh.auth.AdminGetAccount(
            auth_pb2.AdminGetAccountRequest(account_id=user.account_id), metadata=OPERATOR
        )
    ).account
    assert account.status == auth_pb2.ACCOUNT_STATUS_ERASED
    again = await pm.mesh.auth.AdminCloseAccount(
        auth_pb2.AdminCloseAccountRequest(account_id=user.account_id), metadata=OPERATOR
    )
    assert again.account.status == auth_pb2.ACCOUNT_STATUS_ERASED
    unknown = await asyncio.to_thread(accounts_cli, pm, "close", "--email", "nobody-here@example.com")
    assert unknown.returncode == 1 and "no such account" in unknown.stderr


def accounts_cli(pm: PrivacyMesh, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **pm.instances[-1].env}
    return subprocess.run([GATEMESH, "accounts", *args], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
