"""A fifth service joins the fan-out by implementing PrivacyParticipant and being listed in
the configuration, with no change to the orchestrator. The participant here is not built
on our runtime: a plain synchronous servicer on pytest-grpc's thread-pool server."""

from __future__ import annotations

import json
import threading
import time

import grpc
import pytest
from google.protobuf import struct_pb2

from gatemesh.common.v1 import common_pb2
from gatemesh.privacy.v1 import data_pb2, participant_pb2, participant_pb2_grpc, privacy_pb2
from tests.privacy.mesh import ATTENTION, COMPLETED, OPERATOR, PrivacyMesh

MESSAGE, STORE = "acme.crm.v1.Contact", "crm.contacts"
CALL_TIMEOUT_S, HANG_S = 2, 3


class CrmParticipant(participant_pb2_grpc.PrivacyParticipantServicer):
    """A CRM holding one contact per account: exported, rectified, erased (once per request id).
    Accounts in `refuse` get FAILED_PRECONDITION on erasure; those in `keep` are reported
    erased but kept (a faulty participant that only the verification export can catch)."""

    def __init__(self) -> None:
        self.contacts: dict[str, dict[str, str]] = {}
        self.erasures: dict[str, int] = {}
        self.refuse: set[str] = set()
        self.keep: set[str] = set()
        self.hang: dict[str, int] = {}  # account -> erase calls still to answer only after HANG_S
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def DescribeData(self, request, context):
        personal = data_pb2.PersonalData(
            category=data_pb2.DATA_CATEGORY_SUPPORT,
            purpose="P1.7 support correspondence",
            retention="while the account is active",
            erasure=data_pb2.ERASURE_STRATEGY_DELETE,
        )
        field = participant_pb2.DataField(message=MESSAGE, store=STORE, field="email", personal=personal)
        return participant_pb2.DescribeDataResponse(service="crm", fields=[field])

    def ExportSubject(self, request, context):
        response = participant_pb2.ExportSubjectResponse(service="crm")
        contact = self.contacts.get(request.subject.account_id)
        if contact:
            data = struct_pb2.Struct()
            data.update(contact)
            response.records.add(message=MESSAGE, data=data)
        return response

    def RectifySubject(self, request, context):
        contact = self.contacts.get(request.subject.account_id)
        if contact and "email" in request.changes:
            contact["email"] = request.changes["email"]
            return participant_pb2.RectifySubjectResponse(service="crm", updated={STORE: 1})
        return participant_pb2.RectifySubjectResponse(service="crm")

    def EraseSubject(self, request, context):
        account = request.subject.account_id
        self.calls.append(account)
        if self.hang.get(account, 0) > 0:
            self.hang[account] -= 1
            time.sleep(HANG_S)  # past the privacy service's deadline: it gives up on this call
        if account in self.refuse:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the contact has an open support case")
        if account in self.keep:
            action = participant_pb2.ErasureAction(store=STORE, strategy=data_pb2.ERASURE_STRATEGY_DELETE, count=1)
            return participant_pb2.EraseSubjectResponse(service="crm", actions=[action])
        with self.lock:
            replayed = request.request_id in self.erasures
            if not replayed:
                self.erasures[request.request_id] = int(self.contacts.pop(request.subject.account_id, None) is not None)
            count = self.erasures[request.request_id]
        action = participant_pb2.ErasureAction(store=STORE, strategy=data_pb2.ERASURE_STRATEGY_DELETE, count=count)
        return participant_pb2.EraseSubjectResponse(service="crm", actions=[action], replayed=replayed)


@pytest.fixture(scope="module")
def grpc_add_to_server():
    return participant_pb2_grpc.add_PrivacyParticipantServicer_to_server


@pytest.fixture(scope="module")
def grpc_servicer():
    return CrmParticipant()


@pytest.fixture(scope="module")
def grpc_stub_cls():
    return participant_pb2_grpc.PrivacyParticipantStub


@pytest.fixture(scope="module")
def crm_mesh(base_mesh: PrivacyMesh, grpc_server, grpc_addr) -> PrivacyMesh:
    """Privacy started with the CRM listed among the participants, billing's phase."""
    mesh = base_mesh.mesh
    participants = [
        {"name": "proxy", "address": mesh.proxy_addr, "phase": 1},
        {"name": "billing", "address": mesh.billing_addr, "phase": 2},
        {"name": "crm", "address": grpc_addr, "phase": 2, "service_token": False},
        {"name": "auth", "address": mesh.auth_addr, "phase": 3},
    ]
    base_mesh.start_privacy(
        GATEMESH_PRIVACY_PARTICIPANTS=json.dumps(participants), GATEMESH_PRIVACY_CALL_TIMEOUT_S=str(CALL_TIMEOUT_S)
    )
    return base_mesh


async def approved_erasure(pm: PrivacyMesh, account_id: str) -> str:
    _, staff = await pm.staff()
    subject = common_pb2.SubjectRef(account_id=account_id)
    erasure = await pm.raise_request(staff, type=privacy_pb2.REQUEST_TYPE_ERASURE, subject=subject, reason="test")
    await pm.stub().ApproveRequest(privacy_pb2.ApproveRequestRequest(request_id=erasure.request_id), metadata=OPERATOR)
    return erasure.request_id


async def retry(pm: PrivacyMesh, request_id: str) -> None:
    await pm.stub().RetryRequest(privacy_pb2.RetryRequestRequest(request_id=request_id), metadata=OPERATOR)


async def test_a_fifth_participant_joins_by_configuration_P8_1_P8_3(
    crm_mesh: PrivacyMesh, grpc_servicer: CrmParticipant, grpc_stub
) -> None:
    """P8.1, P8.3: the CRM's data is in the export and erased, verified and certified."""
    pm = crm_mesh
    assert grpc_stub.DescribeData(participant_pb2.DescribeDataRequest()).service == "crm"
    mesh = pm.mesh
    user = await mesh.user()
    grpc_servicer.contacts[user.account_id] = {"email": "contact@example.com", "account_id": user.account_id}
    subject = common_pb2.SubjectRef(account_id=user.account_id)

    access = await pm.raise_request(type=privacy_pb2.REQUEST_TYPE_ACCESS, subject=subject)
    await pm.wait(access.request_id)
    chunks = pm.stub().DownloadExport(
        privacy_pb2.DownloadExportRequest(request_id=access.request_id), metadata=OPERATOR
    )
    document = json.loads(b"".join([c.data async for c in chunks]))
    assert document["services"]["crm"]["records"][0]["data"]["email"] == "contact@example.com"

    _, staff = await pm.staff()
    erasure = await pm.raise_request(staff, type=privacy_pb2.REQUEST_TYPE_ERASURE, subject=subject, reason="test")
    await pm.stub().ApproveRequest(privacy_pb2.ApproveRequestRequest(request_id=erasure.request_id), metadata=OPERATOR)
    done = await pm.wait(erasure.request_id)
    assert done.status == COMPLETED
    assert user.account_id not in grpc_servicer.contacts
    assert list(grpc_servicer.erasures) == [erasure.request_id]
    reply = await pm.stub().GetCertificate(
        privacy_pb2.GetCertificateRequest(request_id=done.request_id), metadata=OPERATOR
    )
    crm = next(s for s in json.loads(reply.certificate.document)["services"] if s["service"] == "crm")
    assert crm["erased"] == [{"store": STORE, "strategy": "delete", "count": 1}]
    # it does not say when its storage files were purged: neither does the certificate
    assert crm["storage_purged_at"] is None and crm["storage_purge"].startswith("not reported")
    assert json.loads(reply.certificate.document)["storage"]["participants_purged_at"] is None


async def test_failed_precondition_needs_attention_at_once_and_staff_retry_completes(
    crm_mesh: PrivacyMesh, grpc_servicer: CrmParticipant
) -> None:
    """FAILED_PRECONDITION is not retried: the step needs attention after one attempt, with
    the participant's message; auth's phase has not started (nothing half-applied there);
    once the cause is gone a staff retry completes the erasure."""
    pm = crm_mesh
    user = await pm.mesh.user()
    grpc_servicer.contacts[user.account_id] = {"email": "case@example.com"}
    grpc_servicer.refuse.add(user.account_id)
    request_id = await approved_erasure(pm, user.account_id)
    stuck = await pm.wait(request_id, (ATTENTION,))
    crm = next(s for s in stuck.steps if s.participant == "crm")
    assert (crm.status, crm.attempts) == (privacy_pb2.STEP_STATUS_NEEDS_ATTENTION, 1)
    assert "FAILED_PRECONDITION" in crm.last_error or "open support case" in crm.last_error
    auth = next(s for s in stuck.steps if s.participant == "auth" and s.phase == "erase")
    assert auth.attempts == 0
    grpc_servicer.refuse.discard(user.account_id)
    await retry(pm, request_id)
    assert (await pm.wait(request_id)).status == COMPLETED
    assert user.account_id not in grpc_servicer.contacts


async def test_verification_finding_personal_data_needs_attention_P8_3(
    crm_mesh: PrivacyMesh, grpc_servicer: CrmParticipant
) -> None:
    """P8.3: a participant that says it erased but did not is caught by the verification
    export: the request needs attention with what was found (store and count, no values),
    issues no certificate, and completes on a retry once the data is really gone."""
    pm = crm_mesh
    user = await pm.mesh.user()
    grpc_servicer.contacts[user.account_id] = {"email": "kept@example.com"}
    grpc_servicer.keep.add(user.account_id)
    request_id = await approved_erasure(pm, user.account_id)
    found = await pm.wait(request_id, (ATTENTION,))
    assert any(STORE in f for f in found.findings), found.findings
    assert not any("kept@example.com" in f for f in found.findings)
    with pytest.raises(grpc.aio.AioRpcError) as no_certificate:
        await pm.stub().GetCertificate(privacy_pb2.GetCertificateRequest(request_id=request_id), metadata=OPERATOR)
    assert no_certificate.value.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND)
    grpc_servicer.keep.discard(user.account_id)
    await retry(pm, request_id)
    done = await pm.wait(request_id)
    assert done.status == COMPLETED and not done.findings
    assert user.account_id not in grpc_servicer.contacts


async def test_a_call_past_its_deadline_is_retried(crm_mesh: PrivacyMesh, grpc_servicer: CrmParticipant) -> None:
    """Participants are called with a deadline: a call that hangs past it is DEADLINE_EXCEEDED,
    retried with backoff, and the second attempt completes the erasure (applied once)."""
    pm = crm_mesh
    user = await pm.mesh.user()
    grpc_servicer.contacts[user.account_id] = {"email": "slow@example.com"}
    grpc_servicer.hang[user.account_id] = 1
    request_id = await approved_erasure(pm, user.account_id)
    done = await pm.wait(request_id)
    crm = next(s for s in done.steps if s.participant == "crm" and s.phase == "erase")
    assert (done.status, crm.attempts) == (COMPLETED, 2)
    assert grpc_servicer.calls.count(user.account_id) == 2
    retried = await pm.rows(
        "SELECT details FROM privacy_audit WHERE request_id = $1 AND event = 'step_retry_scheduled'", request_id
    )
    assert len(retried) == 1 and "DEADLINE_EXCEEDED" in retried[0]["details"]
