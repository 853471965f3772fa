"""A fifth service joins the fan-out by implementing PrivacyParticipant and being listed in
the configuration, with no change to the orchestrator. The participant here is not built
on our runtime: a plain synchronous servicer on pytest-grpc's thread-pool server."""

from __future__ import annotations

import json
import threading

import pytest
from google.protobuf import struct_pb2

from gatemesh.common.v1 import common_pb2
from gatemesh.privacy.v1 import data_pb2, participant_pb2, participant_pb2_grpc, privacy_pb2
from tests.privacy.mesh import COMPLETED, OPERATOR, PrivacyMesh

MESSAGE, STORE = "acme.crm.v1.Contact", "crm.contacts"


class CrmParticipant(participant_pb2_grpc.PrivacyParticipantServicer):
    """A CRM holding one contact per account: exported, rectified, erased (once per request id)."""

    def __init__(self) -> None:
        self.contacts: dict[str, dict[str, str]] = {}
        self.erasures: dict[str, int] = {}
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


async def test_a_fifth_participant_joins_by_configuration_P8_1_P8_3(
    base_mesh: PrivacyMesh, grpc_server, grpc_addr, grpc_servicer: CrmParticipant, grpc_stub
) -> None:
    """P8.1, P8.3: the CRM's data is in the export and erased, verified and certified."""
    pm = base_mesh
    assert grpc_stub.DescribeData(participant_pb2.DescribeDataRequest()).service == "crm"
    mesh = pm.mesh
    participants = [
        {"name": "proxy", "address": mesh.proxy_addr, "phase": 1},
        {"name": "billing", "address": mesh.billing_addr, "phase": 2},
        {"name": "crm", "address": grpc_addr, "phase": 2, "service_token": False},
        {"name": "auth", "address": mesh.auth_addr, "phase": 3},
    ]
    pm.start_privacy(GATEMESH_PRIVACY_PARTICIPANTS=json.dumps(participants))
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
