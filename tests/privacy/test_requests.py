"""Access, rectification and erasure requests through real processes on PostgreSQL."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest

from gatemesh.common.v1 import common_pb2
from gatemesh.privacy.v1 import privacy_pb2
from tests.privacy.mesh import AWAITING, COMPLETED, OPERATOR, PrivacyMesh, open_mesh
from tests.proxy.mesh import chat_body

ACCESS, RECTIFY, ERASE = (
    privacy_pb2.REQUEST_TYPE_ACCESS,
    privacy_pb2.REQUEST_TYPE_RECTIFICATION,
    privacy_pb2.REQUEST_TYPE_ERASURE,
)


@pytest.fixture
async def pm(tmp_path: Path, pg_database, upstreams):
    with ExitStack() as stack:
        pm = await open_mesh(stack, tmp_path, pg_database, upstreams)
        pm.start_privacy()
        yield pm


def subject(user) -> common_pb2.SubjectRef:
    return common_pb2.SubjectRef(account_id=user.account_id)


async def test_access_export_holds_every_participant_P8_1(pm: PrivacyMesh) -> None:
    """P8.1: one machine-readable export assembled from every service."""
    user = await pm.mesh.user()
    await user.chat(chat_body())
    request = await pm.raise_request(type=ACCESS, subject=subject(user))
    done = await pm.wait(request.request_id)
    assert {s.participant for s in done.steps} == {"auth", "billing", "proxy"}
    chunks = [
        c
        async for c in pm.stub().DownloadExport(
            privacy_pb2.DownloadExportRequest(request_id=done.request_id), metadata=OPERATOR
        )
    ]
    document = pm.export_json(chunks)
    assert set(document["services"]) == {"auth", "billing", "proxy"}
    messages = {r["message"] for part in document["services"].values() for r in part["records"]}
    assert "gatemesh.auth.v1.AccountRecord" in messages
    assert "gatemesh.billing.v1.UsageRecord" in messages
    assert "gatemesh.proxy.v1.RequestLogRecord" in messages


async def test_staff_erasure_waits_for_a_second_member_and_is_certified_P8_3(pm: PrivacyMesh) -> None:
    """P8.3, P5.5: a staff erasure runs after a second member approves; certificate verifies."""
    user = await pm.mesh.user()
    await user.chat(chat_body())
    _, staff = await pm.staff()
    request = await pm.raise_request(staff, type=ERASE, subject=subject(user), reason="asked by email")
    assert request.status == AWAITING
    approved = await pm.stub().ApproveRequest(
        privacy_pb2.ApproveRequestRequest(request_id=request.request_id), metadata=OPERATOR
    )
    assert approved.request.approvals[0].staff_id == "operator"
    done = await pm.wait(request.request_id)
    assert done.status == COMPLETED
    cert = (
        await pm.stub().GetCertificate(privacy_pb2.GetCertificateRequest(request_id=done.request_id), metadata=OPERATOR)
    ).certificate
    ok = await pm.stub().VerifyCertificate(
        privacy_pb2.VerifyCertificateRequest(document=cert.document, signature=cert.signature), metadata=OPERATOR
    )
    assert ok.valid
    tampered = cert.document.replace('"count":', '"count":1', 1)
    bad = await pm.stub().VerifyCertificate(
        privacy_pb2.VerifyCertificateRequest(document=tampered, signature=cert.signature), metadata=OPERATOR
    )
    assert not bad.valid
    audit = await pm.stub().VerifyAuditTrail(privacy_pb2.VerifyAuditTrailRequest(), metadata=OPERATOR)
    assert audit.intact and audit.events > 3
