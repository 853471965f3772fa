"""`gatemesh privacy ...` as compliance staff use it, against a running mesh."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from gatemesh.auth.v1 import auth_pb2
from tests.privacy.mesh import OPERATOR, PASSWORD, PrivacyMesh
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
    own = await asyncio.to_thread(cli, pm, "approve", rid, *as_staff, stdin=PASSWORD + "\n")
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
