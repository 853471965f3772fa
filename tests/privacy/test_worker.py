"""The worker under failure: a privacy process killed mid-erasure, a participant down for a
while, two privacy instances on one database. Real processes, PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from collections import Counter

from gatemesh.common.v1 import common_pb2
from gatemesh.privacy.v1 import privacy_pb2
from tests.privacy.mesh import ATTENTION, COMPLETED, OPERATOR, PrivacyMesh
from tests.privacy.test_cli import cli
from tests.proxy.mesh import chat_body
from tests.support import service_process

ERASE, ACCESS = privacy_pb2.REQUEST_TYPE_ERASURE, privacy_pb2.REQUEST_TYPE_ACCESS


async def staff_erasure(pm: PrivacyMesh, account_id: str) -> str:
    _, staff = await pm.staff()
    subject = common_pb2.SubjectRef(account_id=account_id)
    request = await pm.raise_request(staff, type=ERASE, subject=subject, reason="test")
    return request.request_id


async def approve(pm: PrivacyMesh, request_id: str) -> None:
    await pm.stub().ApproveRequest(privacy_pb2.ApproveRequestRequest(request_id=request_id), metadata=OPERATOR)


async def wait_step(pm: PrivacyMesh, request_id: str, participant: str, status: int) -> None:
    for _ in range(300):
        steps = (await pm.get(request_id)).steps
        if any(s.participant == participant and s.phase == "erase" and s.status == status for s in steps):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{participant} never reached {status}")


async def test_kill_9_mid_erasure_then_restart_completes_applied_once_P8_3(fresh: PrivacyMesh) -> None:
    """A privacy process killed while billing's erasure call is in flight loses its lease;
    the restarted process resumes the step, billing replays its first result, and every
    participant applied the erasure exactly once."""
    pm = fresh
    user = await pm.mesh.user()
    await user.chat(chat_body())
    first = pm.start_privacy()
    request_id = await staff_erasure(pm, user.account_id)
    billing = pm.mesh.pids["billing"]
    os.kill(billing, signal.SIGSTOP)  # the call to billing hangs: privacy is mid-step
    try:
        await approve(pm, request_id)
        await wait_step(pm, request_id, "billing", privacy_pb2.STEP_STATUS_RUNNING)
        await asyncio.sleep(0.5)
        first.kill()
    finally:
        os.kill(billing, signal.SIGCONT)
    pm.start_privacy()
    done = await pm.wait(request_id)
    assert done.status == COMPLETED
    steps = {(s.participant, s.phase): s for s in done.steps}
    assert steps[("billing", "erase")].attempts == 2  # the killed one and the resumed one
    for database, table in (("billing", "erasures"), ("proxy", "erasures"), ("auth", "erasure_requests")):
        rows = await pm.rows(f"SELECT request_id FROM {table}", database=pm.mesh.databases[database])
        assert [r["request_id"] for r in rows] == [request_id], database
    done_events = await pm.rows(
        "SELECT actor FROM privacy_audit WHERE request_id = $1 AND event = 'step_erase_done'", request_id
    )
    assert Counter(e["actor"] for e in done_events) == {"proxy": 1, "billing": 1, "auth": 1}


async def test_a_participant_down_is_retried_until_it_is_back(fresh: PrivacyMesh) -> None:
    """UNAVAILABLE is retried with backoff; once the proxy is back the erasure completes."""
    pm = fresh
    user = await pm.mesh.user()
    pm.start_privacy(GATEMESH_PRIVACY_MAX_ATTEMPTS="1000")
    request_id = await staff_erasure(pm, user.account_id)  # the data map is taken while all are up
    mesh = pm.mesh
    os.kill(mesh.pids["proxy"], signal.SIGKILL)
    await asyncio.sleep(0.3)
    await approve(pm, request_id)
    for _ in range(200):
        step = next(s for s in (await pm.get(request_id)).steps if s.participant == "proxy")
        if step.attempts >= 3:
            break
        await asyncio.sleep(0.1)
    assert step.attempts >= 3 and step.last_error == "UNAVAILABLE"
    assert step.status in (privacy_pb2.STEP_STATUS_PENDING, privacy_pb2.STEP_STATUS_RUNNING)  # retried, not given up
    restart_proxy(pm)
    done = await pm.wait(request_id)
    assert done.status == COMPLETED


async def test_an_idle_worker_runs_queued_steps_at_once_and_retries_when_due(fresh: PrivacyMesh) -> None:
    """An idle worker looks for other instances' steps only every `privacy_worker_interval_s`
    (60 s here), yet an erasure queued through this instance runs at once, and a step that
    failed is retried at its backoff time, not at the next look."""
    pm = fresh
    user = await pm.mesh.user()
    pm.start_privacy(
        GATEMESH_PRIVACY_WORKER_INTERVAL_S="60", GATEMESH_PRIVACY_BACKOFF_S="0.2", GATEMESH_PRIVACY_MAX_ATTEMPTS="1000"
    )
    await asyncio.sleep(1.0)  # the worker has looked once and is idle
    started = asyncio.get_running_loop().time()
    request_id = await staff_erasure(pm, user.account_id)
    os.kill(pm.mesh.pids["proxy"], signal.SIGKILL)
    await asyncio.sleep(0.3)
    await approve(pm, request_id)
    for _ in range(150):
        step = next(s for s in (await pm.get(request_id)).steps if s.participant == "proxy")
        if step.attempts >= 3:
            break
        await asyncio.sleep(0.1)
    assert step.attempts >= 3 and step.last_error == "UNAVAILABLE"  # retried at 0.2 s, 0.4 s, ...
    restart_proxy(pm)
    done = await pm.wait(request_id, within=20)
    assert done.status == COMPLETED
    assert asyncio.get_running_loop().time() - started < 30  # never waited for the 60 s look


def restart_proxy(pm: PrivacyMesh) -> None:
    mesh = pm.mesh
    restarted = service_process("services.proxy", mesh.envs["proxy"], mesh.proxy_addr, mesh.logs["proxy"])
    mesh.pids["proxy"] = pm.stack.enter_context(restarted).pid


async def test_too_many_attempts_need_attention_and_staff_retry(fresh: PrivacyMesh) -> None:
    """After privacy_max_attempts the step needs attention, the request is listed for staff,
    and a staff retry runs it to completion once the participant is back. From the CLI:
    `approve --wait` shows the attempts and exits non-zero, `list --attention` lists it,
    `retry --wait` follows it to completion."""
    pm = fresh
    user = await pm.mesh.user()
    pm.start_privacy(GATEMESH_PRIVACY_MAX_ATTEMPTS="3")
    request_id = await staff_erasure(pm, user.account_id)
    os.kill(pm.mesh.pids["proxy"], signal.SIGKILL)
    await asyncio.sleep(0.3)
    failed = await asyncio.to_thread(cli, pm, "approve", request_id, "--wait")
    assert failed.returncode == 1 and f"{request_id} needs attention" in failed.stderr, failed
    assert re.search(r"proxy\s+erase\s+needs attention attempt 3", failed.stdout), failed.stdout
    stuck = await pm.wait(request_id, (ATTENTION,))
    proxy_step = next(s for s in stuck.steps if s.participant == "proxy")
    assert (proxy_step.status, proxy_step.attempts) == (privacy_pb2.STEP_STATUS_NEEDS_ATTENTION, 3)
    listed = await asyncio.to_thread(cli, pm, "list", "--attention", "--json")
    assert [r["request_id"] for r in json.loads(listed.stdout)] == [request_id]
    restart_proxy(pm)
    retried = await asyncio.to_thread(cli, pm, "retry", request_id, "--wait")
    assert retried.returncode == 0 and f"{request_id} completed" in retried.stdout, retried.stderr
    assert (await pm.wait(request_id)).status == COMPLETED


async def test_two_instances_on_one_database_never_run_a_step_twice(fresh: PrivacyMesh) -> None:
    """SELECT ... FOR UPDATE SKIP LOCKED: both instances work the queue, each step runs once."""
    pm = fresh
    users = [await pm.mesh.user() for _ in range(4)]
    a = pm.start_privacy(GATEMESH_PRIVACY_WORKER_BATCH="1")
    pm.start_privacy(GATEMESH_PRIVACY_WORKER_BATCH="1")
    ids = []
    for user in users * 2:
        ids.append(
            (await pm.raise_request(type=ACCESS, subject=common_pb2.SubjectRef(account_id=user.account_id))).request_id
        )
    for request_id in ids:
        done = await pm.wait(request_id)
        assert [s.attempts for s in done.steps] == [1, 1, 1]
    events = await pm.rows("SELECT request_id, actor, details FROM privacy_audit WHERE event = 'step_export_done'")
    assert Counter((e["request_id"], e["actor"]) for e in events) == Counter(
        {(r, p): 1 for r in ids for p in ("auth", "billing", "proxy")}
    )

    workers = {json.loads(e["details"])["worker"] for e in events}
    assert len(workers) == 2, "both instances claimed steps"
    assert a.process is not None


async def test_on_sqlite_one_worker_runs_requests_and_erased_values_leave_the_files_P8_3(
    fresh: PrivacyMesh, tmp_path
) -> None:
    """The local setup: privacy on SQLite (one worker). An access request and an approved
    erasure complete; the certificate names secure_delete; the subject's account id is in
    neither the database file nor its write-ahead log afterwards (P8.3)."""
    pm = fresh
    path = tmp_path / "privacy.db"
    pm.start_privacy(GATEMESH_PRIVACY_DATABASE_URL=f"sqlite+aiosqlite:///{path}")
    user = await pm.mesh.user()
    await user.chat(chat_body())
    subject = common_pb2.SubjectRef(account_id=user.account_id)
    access = await pm.wait((await pm.raise_request(type=ACCESS, subject=subject)).request_id)
    assert access.status == COMPLETED
    request_id = await staff_erasure(pm, user.account_id)
    await approve(pm, request_id)
    assert (await pm.wait(request_id)).status == COMPLETED
    reply = await pm.stub().GetCertificate(privacy_pb2.GetCertificateRequest(request_id=request_id), metadata=OPERATOR)
    assert "secure_delete" in json.loads(reply.certificate.document)["storage"]["privacy"]
    files = [p for p in tmp_path.iterdir() if p.name.startswith("privacy.db")]
    assert path in files
    for file in files:
        assert user.account_id.encode() not in file.read_bytes(), file.name
