"""Access, rectification and erasure requests through real processes on PostgreSQL: auth,
billing, proxy and privacy each running as `python -m services.<name>`."""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from datetime import datetime, timedelta

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2

from gatemesh.auth.v1 import auth_pb2
from gatemesh.common.v1 import common_pb2
from gatemesh.privacy.v1 import privacy_pb2
from services.privacy.domain import subject_pseudonym
from services.privacy.store import PrivacyStore, utcnow
from services.runtime.db import make_engine
from services.runtime.errors import details_of
from tests.privacy.mesh import AWAITING, COMPLETED, OPERATOR, PASSWORD, PrivacyMesh
from tests.proxy.mesh import chat_body, pg_plain, proxy_rows, table_dump

ACCESS, RECTIFY, ERASE = (
    privacy_pb2.REQUEST_TYPE_ACCESS,
    privacy_pb2.REQUEST_TYPE_RECTIFICATION,
    privacy_pb2.REQUEST_TYPE_ERASURE,
)
USAGE_COLUMNS = (
    "id", "account_id", "key_id", "model", "provider", "input_tokens", "output_tokens", "cost_micros",
    "shortfall_micros", "status", "latency_ms", "tokens_estimated", "created_at",
)  # fmt: skip
HMAC_SECRET = "proxy-test-hmac"  # tests/proxy/mesh.py's key_hmac_secret


def subject(user) -> common_pb2.SubjectRef:
    return common_pb2.SubjectRef(account_id=user.account_id)


async def email_of(pm: PrivacyMesh, account_id: str) -> str:
    request = auth_pb2.AdminGetAccountRequest(account_id=account_id)
    return (await pm.mesh.auth.AdminGetAccount(request, metadata=OPERATOR)).account.email


async def download(pm: PrivacyMesh, request_id: str, fmt: str = "") -> bytes:
    request = privacy_pb2.DownloadExportRequest(request_id=request_id, format=fmt)
    return b"".join([c.data async for c in pm.stub().DownloadExport(request, metadata=OPERATOR)])


def violations(error: grpc.aio.AioRpcError) -> set[str]:
    """The field names of a BadRequest detail."""
    status = details_of(error)
    found: set[str] = set()
    for detail in status.details if status else []:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            found |= {v.field for v in bad.field_violations}
    return found


async def request_count(pm: PrivacyMesh) -> int:
    return (await pm.rows("SELECT count(*) AS n FROM privacy_requests"))[0]["n"]


async def request_logged(pm: PrivacyMesh, account_id: str) -> None:
    """Wait for the proxy's request-log row of a call: it is written once billing confirmed
    the call's settle, after the answer (an export raised before that has nothing to show)."""
    for _ in range(200):
        if await proxy_rows(pm.mesh.databases["proxy"], account_id):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the call was never logged")


async def test_access_export_holds_every_participant_and_is_encrypted_at_rest_P8_1(shared_mesh: PrivacyMesh) -> None:
    """P8.1: one machine-readable export assembled from every service; a zip with one file
    per service; the stored copy is ciphertext (the email is nowhere in privacy's tables)."""
    pm = shared_mesh
    user = await pm.mesh.user()
    await user.chat(chat_body())
    await request_logged(pm, user.account_id)
    request = await pm.raise_request(type=ACCESS, subject=subject(user))
    done = await pm.wait(request.request_id)
    assert {s.participant for s in done.steps} == {"auth", "billing", "proxy"}
    assert done.export_expires_at.seconds - done.completed_at.seconds == 7 * 86400
    document = json.loads(await download(pm, done.request_id))
    assert set(document["services"]) == {"auth", "billing", "proxy"}
    messages = {r["message"] for part in document["services"].values() for r in part["records"]}
    assert {"gatemesh.auth.v1.AccountRecord", "gatemesh.billing.v1.UsageRecord"} <= messages
    assert "gatemesh.proxy.v1.RequestLogRecord" in messages
    email = await email_of(pm, user.account_id)
    assert email in json.dumps(document)
    assert email not in await table_dump(pm.database)
    archive = zipfile.ZipFile(io.BytesIO(await download(pm, done.request_id, "zip")))
    assert set(archive.namelist()) == {"export.json", "auth.json", "billing.json", "proxy.json"}
    assert json.loads(archive.read("billing.json"))["records"]


async def test_rectification_reaches_every_participant_P8_2(shared_mesh: PrivacyMesh) -> None:
    """P8.2: a new email reaches every service holding it; the export afterwards shows it,
    and privacy keeps neither address once done."""
    pm = shared_mesh
    user = await pm.mesh.user()
    old = await email_of(pm, user.account_id)
    new = f"fixed-{user.account_id[-6:]}@example.org"
    request = await pm.raise_request(type=RECTIFY, subject=subject(user), new_email=new)
    done = await pm.wait(request.request_id)
    assert {s.participant: dict(s.counts) for s in done.steps}["auth"] == {"auth.accounts": 1}
    assert await email_of(pm, user.account_id) == new
    export = await pm.wait((await pm.raise_request(type=ACCESS, subject=subject(user))).request_id)
    text = (await download(pm, export.request_id)).decode()
    assert new in text and old not in text
    dump = await table_dump(pm.database)
    assert new not in dump and old not in dump


async def test_staff_erasure_needs_a_second_member_then_erases_and_certifies_P8_3_P5_5(
    shared_mesh: PrivacyMesh,
) -> None:
    """P8.3, P8.5, P5.5, P6.2: a staff erasure (recording how identity was verified, and the
    data map it runs under) waits for a second compliance member; then keys are
    refused, usage is gone, payments stay pseudonymized, privacy forgets the account, and
    the signed certificate verifies (and fails once tampered with)."""
    pm = shared_mesh
    user = await pm.mesh.user()
    await user.chat(chat_body())
    email = await email_of(pm, user.account_id)
    _, staff = await pm.staff()
    request = await pm.raise_request(
        staff, type=ERASE, subject=subject(user), reason="asked by email", identity_verification="signed letter"
    )
    assert request.status == AWAITING
    assert (request.origin, request.identity_verification) == (privacy_pb2.ORIGIN_STAFF, "signed letter")
    snapshot = (await pm.rows("SELECT datamap FROM privacy_requests WHERE request_id = $1", request.request_id))[0]
    assert {"auth", "billing", "proxy"} <= set(json.loads(snapshot["datamap"])["participants"]), (
        "it runs under a data map snapshot"
    )
    await asyncio.sleep(0.5)
    assert (await pm.get(request.request_id)).status == AWAITING  # nothing runs unapproved
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await pm.stub().ApproveRequest(privacy_pb2.ApproveRequestRequest(request_id=request.request_id), metadata=staff)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    approval = privacy_pb2.ApproveRequestRequest(request_id=request.request_id)
    assert (await pm.stub().ApproveRequest(approval, metadata=OPERATOR)).request.approvals[0].staff_id == "operator"
    done = await pm.wait(request.request_id)
    phases = [(s.participant, s.phase) for s in done.steps]
    assert phases[:3] == [("proxy", "erase"), ("billing", "erase"), ("auth", "erase")]
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await user.chat(chat_body())
    assert gone.value.code() == grpc.StatusCode.UNAUTHENTICATED
    billing = pm.mesh.databases["billing"]
    assert await pm.rows("SELECT id FROM usage_records WHERE account_id = $1", user.account_id, database=billing) == []
    kept = await pm.rows("SELECT account_id FROM transfers WHERE account_id LIKE 'anon-%'", database=billing)
    assert kept, "the grant's ledger transfer stays, pseudonymized"
    dump = await table_dump(pm.database)
    assert email not in dump and user.account_id not in dump

    reply = await pm.stub().GetCertificate(
        privacy_pb2.GetCertificateRequest(request_id=done.request_id), metadata=OPERATOR
    )
    cert = reply.certificate
    body = json.loads(cert.document)
    assert body["subject_id"] == subject_pseudonym(HMAC_SECRET, user.account_id)
    billing_entry = next(s for s in body["services"] if s["service"] == "billing")
    assert any(e["store"] == "billing.usage_records" and e["count"] >= 1 for e in billing_entry["erased"])
    assert any(e["store"] == "billing.transfers" and "P5.5" in e["legal_basis"] for e in billing_entry["retained"])
    # each participant vacuumed what it erased from, and the certificate says when the last did
    assert billing_entry["storage_purge"].startswith("postgresql vacuum: usage_records")
    purged = sorted(s["storage_purged_at"] for s in body["services"])
    assert len(purged) == 3 and body["storage"]["participants_purged_at"] == purged[-1]
    verify = privacy_pb2.VerifyCertificateRequest(document=cert.document, signature=cert.signature)
    assert (await pm.stub().VerifyCertificate(verify, metadata=OPERATOR)).valid
    tampered = privacy_pb2.VerifyCertificateRequest(
        document=cert.document.replace('"count":', '"count":9', 1), signature=cert.signature
    )
    assert not (await pm.stub().VerifyCertificate(tampered, metadata=OPERATOR)).valid


async def test_dry_run_reports_and_changes_nothing(shared_mesh: PrivacyMesh) -> None:
    """A dry run (no approval needed) reports per store what erasure would do; the key still works."""
    pm = shared_mesh
    user = await pm.mesh.user()
    await user.chat(chat_body())
    await user.settled_balance()  # the settle (and its usage record) lands after the answer
    request = await pm.raise_request(type=ERASE, subject=subject(user), reason="what if", dry_run=True)
    done = await pm.wait(request.request_id)
    counts = {s.participant: dict(s.counts) for s in done.steps}
    assert counts["billing"]["billing.usage_records"] == 1
    assert counts["proxy"]["proxy.request_log"] == 1
    assert await user.chat(chat_body())
    assert not (
        await pm.stub().GetRequest(privacy_pb2.GetRequestRequest(request_id=done.request_id), metadata=OPERATOR)
    ).request.findings


async def test_self_service_sees_only_own_requests_P8_1_P6_3(shared_mesh: PrivacyMesh) -> None:
    """P6.3: a user raises and reads their own requests; another's is unknown to them."""
    pm = shared_mesh
    alice, bob = await pm.mesh.user(), await pm.mesh.user()
    a_session = await pm.session(await email_of(pm, alice.account_id))
    b_session = await pm.session(await email_of(pm, bob.account_id))
    created = await pm.stub().CreateMyRequest(privacy_pb2.CreateMyRequestRequest(type=ACCESS), metadata=a_session)
    rid = created.request.request_id
    assert created.request.requested_by == "subject"
    await pm.wait(rid)
    mine = await pm.stub().GetMyRequest(privacy_pb2.GetMyRequestRequest(request_id=rid), metadata=a_session)
    assert mine.request.status == COMPLETED
    chunks = pm.stub().DownloadMyExport(privacy_pb2.DownloadMyExportRequest(request_id=rid), metadata=a_session)
    assert b"".join([c.data async for c in chunks])
    for call in (
        pm.stub().GetMyRequest(privacy_pb2.GetMyRequestRequest(request_id=rid), metadata=b_session),
        _drain(pm.stub().DownloadMyExport(privacy_pb2.DownloadMyExportRequest(request_id=rid), metadata=b_session)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await pm.stub().ListMyRequests(privacy_pb2.ListMyRequestsRequest(), metadata=b_session)
    assert [r.request_id for r in listed.requests] == []
    with pytest.raises(grpc.aio.AioRpcError) as staff_only:
        await pm.stub().ListRequests(privacy_pb2.ListRequestsRequest(), metadata=a_session)
    assert staff_only.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def _drain(stream) -> None:
    async for _ in stream:
        pass


async def test_closing_the_account_raises_an_erasure_due_in_30_days_P5_4_P8_4(shared_mesh: PrivacyMesh) -> None:
    """P5.4, P8.4: self-service closure raises an erasure (no approval) that runs to completion."""
    pm = shared_mesh
    user = await pm.mesh.user()
    session = await pm.session(await email_of(pm, user.account_id))
    await pm.mesh.auth.CloseAccount(auth_pb2.CloseAccountRequest(password=PASSWORD), metadata=session)
    wanted = subject_pseudonym(HMAC_SECRET, user.account_id)
    for _ in range(200):
        listed = await pm.stub().ListRequests(privacy_pb2.ListRequestsRequest(), metadata=OPERATOR)
        found = [r for r in listed.requests if r.subject_id == wanted]
        if found and found[0].status == COMPLETED:
            break
        await asyncio.sleep(0.1)
    assert len(found) == 1 and found[0].origin == privacy_pb2.ORIGIN_ACCOUNT_CLOSED
    assert found[0].status == COMPLETED
    assert found[0].due_at.seconds - found[0].received_at.seconds <= 30 * 86400
    resolved = await pm.mesh.auth.AdminGetAccount(
        auth_pb2.AdminGetAccountRequest(account_id=user.account_id), metadata=OPERATOR
    )
    assert resolved.account.status == auth_pb2.ACCOUNT_STATUS_ERASED


@pytest.mark.parametrize(
    ("fields", "code", "field"),
    [
        ({"type": ACCESS, "subject": {"email": "nobody-here@example.com"}}, grpc.StatusCode.NOT_FOUND, ""),
        ({"type": ACCESS, "subject": {"email": "not an email"}}, grpc.StatusCode.INVALID_ARGUMENT, "subject.email"),
        (
            {"type": RECTIFY, "subject": {"email": "x@example.com"}, "new_email": "nope"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "new_email",
        ),
        (
            {"type": ERASE, "subject": {"email": "x@example.com"}},
            grpc.StatusCode.INVALID_ARGUMENT,
            "reason",
        ),
        ({"type": 0, "subject": {"email": "x@example.com"}}, grpc.StatusCode.INVALID_ARGUMENT, "type"),
        (
            {"type": ACCESS, "subject": {"email": "x@example.com"}, "identity_verification": " "},
            grpc.StatusCode.INVALID_ARGUMENT,
            "identity_verification",
        ),
    ],
)
async def test_bad_requests_are_refused_and_start_nothing(shared_mesh: PrivacyMesh, fields, code, field) -> None:
    """Unknown subject, malformed email, bad new email, missing reason, no type, no record of
    how identity was verified (P8.5): a clear error, no request."""
    pm = shared_mesh
    before = await request_count(pm)
    subject_ref = common_pb2.SubjectRef(**fields.pop("subject"))
    fields.setdefault("identity_verification", "call-back on the number on file")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await pm.stub().CreateRequest(
            privacy_pb2.CreateRequestRequest(subject=subject_ref, **fields), metadata=OPERATOR
        )
    assert error.value.code() == code
    if field:
        assert field in violations(error.value)
    assert await request_count(pm) == before


async def test_staff_cannot_erase_themselves_nor_approve_their_own_P8_5(shared_mesh: PrivacyMesh) -> None:
    """P8.5: a staff member's erasure of their own account is refused (nothing is stored);
    the requester's own approval is refused and the request stays waiting, no step run."""
    pm = shared_mesh
    before = await request_count(pm)
    staff_id, staff = await pm.staff()
    with pytest.raises(grpc.aio.AioRpcError) as self_erase:
        await pm.raise_request(staff, type=ERASE, subject=common_pb2.SubjectRef(account_id=staff_id), reason="me")
    assert self_erase.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "their own" in self_erase.value.details()
    assert await request_count(pm) == before

    user = await pm.mesh.user()
    request = await pm.raise_request(staff, type=ERASE, subject=subject(user), reason="asked by letter")
    with pytest.raises(grpc.aio.AioRpcError) as own:
        await pm.stub().ApproveRequest(privacy_pb2.ApproveRequestRequest(request_id=request.request_id), metadata=staff)
    assert own.value.code() == grpc.StatusCode.PERMISSION_DENIED and "cannot approve" in own.value.details()
    await asyncio.sleep(0.3)
    waiting = await pm.get(request.request_id)
    assert waiting.status == AWAITING and not waiting.approvals
    assert all(s.attempts == 0 for s in waiting.steps)
    assert await user.chat(chat_body()), "nothing was erased"


async def test_an_unknown_request_id_is_refused_everywhere(shared_mesh: PrivacyMesh) -> None:
    """Every call naming a request: an unknown id is NOT_FOUND, a malformed one
    INVALID_ARGUMENT naming `request_id`; nothing is created."""
    pm = shared_mesh
    before = await request_count(pm)
    stub = pm.stub()
    calls = {
        "GetRequest": lambda rid: stub.GetRequest(privacy_pb2.GetRequestRequest(request_id=rid), metadata=OPERATOR),
        "ApproveRequest": lambda rid: stub.ApproveRequest(
            privacy_pb2.ApproveRequestRequest(request_id=rid), metadata=OPERATOR
        ),
        "RetryRequest": lambda rid: stub.RetryRequest(
            privacy_pb2.RetryRequestRequest(request_id=rid), metadata=OPERATOR
        ),
        "GetCertificate": lambda rid: stub.GetCertificate(
            privacy_pb2.GetCertificateRequest(request_id=rid), metadata=OPERATOR
        ),
        "DownloadExport": lambda rid: _drain(
            stub.DownloadExport(privacy_pb2.DownloadExportRequest(request_id=rid), metadata=OPERATOR)
        ),
    }
    for name, call in calls.items():
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await call("pr_000000000000000000000000")
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND, name
        assert "no such request" in unknown.value.details(), name
        for bad in ("", "x" * 200):
            with pytest.raises(grpc.aio.AioRpcError) as malformed:
                await call(bad)
            assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, bad)
            assert "request_id" in violations(malformed.value), (name, bad)
    assert await request_count(pm) == before


async def test_an_export_is_deleted_after_its_7_days_P8_1(shared_mesh: PrivacyMesh) -> None:
    """P8.1: the export can be downloaded for 7 days; the sweeper then deletes it and a
    download says it expired."""
    pm = shared_mesh
    user = await pm.mesh.user()
    done = await pm.wait((await pm.raise_request(type=ACCESS, subject=subject(user))).request_id)
    assert await download(pm, done.request_id)
    past = "now() - interval '8 days'"
    await pm.rows(f"UPDATE privacy_exports SET expires_at = {past} WHERE request_id = $1", done.request_id)
    await pm.rows(f"UPDATE privacy_requests SET export_expires_at = {past} WHERE request_id = $1", done.request_id)
    store = PrivacyStore(make_engine(pm.database))
    try:
        assert await store.sweep_exports(utcnow()) >= 1
    finally:
        await store.engine.dispose()
    assert await pm.rows("SELECT 1 FROM privacy_exports WHERE request_id = $1", done.request_id) == []
    with pytest.raises(grpc.aio.AioRpcError) as expired:
        await download(pm, done.request_id)
    assert expired.value.code() == grpc.StatusCode.NOT_FOUND and "expired" in expired.value.details()


async def test_staff_reads_are_audited_and_the_chain_detects_tampering_P6_3(shared_mesh: PrivacyMesh) -> None:
    """P6.3: every staff access to a subject's request is an audit event; the hash chain
    verifies, and an edited event (bypassing the append-only trigger) breaks it."""
    pm = shared_mesh
    user = await pm.mesh.user()
    done = await pm.wait((await pm.raise_request(type=ACCESS, subject=subject(user))).request_id)
    await download(pm, done.request_id)
    events = await pm.rows("SELECT event, actor FROM privacy_audit WHERE request_id = $1", done.request_id)
    assert ("request_viewed", "operator") in {(e["event"], e["actor"]) for e in events}
    assert ("export_downloaded", "operator") in {(e["event"], e["actor"]) for e in events}
    intact = await pm.stub().VerifyAuditTrail(privacy_pb2.VerifyAuditTrailRequest(), metadata=OPERATOR)
    assert intact.intact and intact.events >= len(events)
    with pytest.raises(Exception, match="append-only"):
        await pm.rows("UPDATE privacy_audit SET actor = 'someone' WHERE request_id = $1", done.request_id)
    await pm.rows("ALTER TABLE privacy_audit DISABLE TRIGGER privacy_audit_append_only")
    await pm.rows(
        "UPDATE privacy_audit SET actor = 'someone' WHERE event = 'request_viewed' AND request_id = $1", done.request_id
    )
    broken = await pm.stub().VerifyAuditTrail(privacy_pb2.VerifyAuditTrailRequest(), metadata=OPERATOR)
    assert not broken.intact and broken.broken_at > 0


async def test_an_export_larger_than_a_page_holds_every_record_P8_1(shared_mesh: PrivacyMesh) -> None:
    """P8.1: the paged export contract (StreamExportSubject) carries an account whose usage
    spans several pages (the worker asks for pages of 2,000): every record arrives once."""
    pm = shared_mesh
    user = await pm.mesh.user()
    count, start = 4_500, datetime(2026, 11, 1)
    rows = [
        (f"us_page_{user.account_id[-8:]}_{n:05d}", user.account_id, user.key_id, "gm-small", "bench", 10, 5, 100, 0,
         "ok", 40, False, start + timedelta(seconds=n))
        for n in range(count)
    ]  # fmt: skip
    conn = await asyncpg.connect(pg_plain(pm.mesh.databases["billing"]))
    try:
        await conn.copy_records_to_table("usage_records", records=rows, columns=USAGE_COLUMNS)
    finally:
        await conn.close()
    done = await pm.wait((await pm.raise_request(type=ACCESS, subject=subject(user))).request_id)
    document = json.loads(await download(pm, done.request_id))
    usage = [r for r in document["services"]["billing"]["records"] if r["message"] == "gatemesh.billing.v1.UsageRecord"]
    ids = [r["data"]["usage_id"] for r in usage]
    assert len(ids) == len(set(ids)) == count
