"""The gRPC entrypoint of the privacy service: proto <-> domain, nothing else.

Each method validates the shape of its request, calls the use case and maps the result;
domain errors become gRPC statuses in the runtime's interceptor. The caller has already
been checked against the method's declared access (USER for self-service, COMPLIANCE
for staff routes).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import grpc
from google.api import httpbody_pb2

from gatemesh.common.v1 import common_pb2
from gatemesh.privacy.v1 import privacy_pb2, privacy_pb2_grpc
from services.runtime.access import principal
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, Violations
from services.runtime.timestamps import optional_timestamp, to_timestamp

from . import domain, exports
from .requests import Requests
from .store import RequestView, utcnow
from .tables import StepRow
from .vault import Vault

MAX_PAGE = 1000


def page_of(page: Any) -> tuple[int, int]:
    """(offset, limit) from a PageRequest; the token is the offset of the next page."""
    v = Violations()
    v.check(0 <= page.page_size <= MAX_PAGE, "page.page_size", f"must be between 0 and {MAX_PAGE}")
    v.check(not page.page_token or page.page_token.isdigit(), "page.page_token", "is not a token from this listing")
    v.raise_if_any()
    return int(page.page_token or 0), page.page_size or 50


def step_proto(step: StepRow) -> privacy_pb2.Step:
    return privacy_pb2.Step(
        participant=step.participant,
        phase=step.phase,
        order=step.run_order,
        status=step.status,  # type: ignore[arg-type]  # the name of a proto enum value, which protobuf takes where its stubs want the enum
        attempts=step.attempts,
        next_attempt_at=to_timestamp(step.next_attempt_at),
        last_error=step.last_error,
        counts={k: int(v) for k, v in step.counts.items()},
        finished_at=optional_timestamp(step.finished_at),
    )


def request_proto(view: RequestView) -> privacy_pb2.PrivacyRequest:
    r = view.request
    return privacy_pb2.PrivacyRequest(
        request_id=r.request_id,
        type=r.type,  # type: ignore[arg-type]  # the name of a proto enum value, which protobuf takes where its stubs want the enum
        status=r.status,  # type: ignore[arg-type]  # the name of a proto enum value, which protobuf takes where its stubs want the enum
        subject_id=r.subject_id,
        origin=r.origin,  # type: ignore[arg-type]  # the name of a proto enum value, which protobuf takes where its stubs want the enum
        requested_by=r.requested_by,
        identity_verification=r.identity_verification,
        reason=r.reason,
        dry_run=r.dry_run,
        received_at=to_timestamp(r.received_at),
        due_at=to_timestamp(r.due_at),
        completed_at=optional_timestamp(r.completed_at),
        approvals=[
            privacy_pb2.Approval(staff_id=a.staff_id, approved_at=to_timestamp(a.approved_at)) for a in view.approvals
        ],
        steps=[step_proto(s) for s in view.steps],
        findings=list(r.findings),
        export_expires_at=optional_timestamp(r.export_expires_at),
    )


class PrivacyServicer(privacy_pb2_grpc.PrivacyServiceServicer):
    """PrivacyService over the request use cases."""

    def __init__(self, requests: Requests, vault: Vault) -> None:
        self.requests = requests
        self.vault = vault

    # --- self-service ---------------------------------------------------------------------

    async def CreateMyRequest(
        self, request: privacy_pb2.CreateMyRequestRequest, context: grpc.aio.ServicerContext
    ) -> privacy_pb2.CreateMyRequestResponse:
        view = await self.requests.raise_self_service(
            principal(), request.type, request.new_email, request.reason, request.dry_run
        )
        return privacy_pb2.CreateMyRequestResponse(request=request_proto(view))

    async def GetMyRequest(
        self, request: privacy_pb2.GetMyRequestRequest, context: grpc.aio.ServicerContext
    ) -> privacy_pb2.GetMyRequestResponse:
        view = await self.requests.own(principal(), request.request_id)
        return privacy_pb2.GetMyRequestResponse(request=request_proto(view))

    async def ListMyRequests(
        self, request: privacy_pb2.ListMyRequestsRequest, context: grpc.aio.ServicerContext
    ) -> privacy_pb2.ListMyRequestsResponse:
        offset, limit = page_of(request.page)
        views = await self.requests.own_list(principal(), offset, limit)
        return privacy_pb2.ListMyRequestsResponse(
            requests=[request_proto(v) for v in views], page=_next_page(offset, limit, len(views))
        )

    async def DownloadMyExport(
        self, request: privacy_pb2.DownloadMyExportRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        view = await self.requests.own(principal(), request.request_id)
        async for body in self._download(view, request.format):
            yield body

    # --- staff ------------------------------------------------------------------------------

    async def CreateRequest(
        self, request: privacy_pb2.CreateRequestRequest, context: grpc.aio.ServicerContext
    ) -> privacy_pb2.CreateRequestResponse:
        view = await self.requests.raise_for_subject(
            principal(),
            request.type,
            request.subject.account_id,
            request.subject.email,
            request.identity_verification,
            request.reason,
            request.new_email,
            request.dry_run,
        )
        return privacy_pb2.CreateRequestResponse(request=request_proto(view))

    async def ApproveRequest(
        self, request: privacy_pb2.ApproveRequestRequest, context: grpc.aio.ServicerContext
    ) -> privacy_pb2.ApproveRequestResponse:
        view = await self.requests.approve(principal(), request.request_id)
        return privacy_pb2.ApproveRequestResponse(request=request_proto(view))

    async def GetRequest(
        self, request: privacy_pb2.GetRequestRequest, context: grpc.aio.ServicerContext
    ) -> privacy_pb2.GetRequestResponse:
        view = await self.requests.staff_view(principal(), request.request_id)
        return privacy_pb2.GetRequestResponse(request=request_proto(view))

    async def ListRequests(
        self, request: privacy_pb2.ListRequestsRequest, context: grpc.aio.ServicerContext
    ) -> privacy_pb2.ListRequestsResponse:
        offset, limit = page_of(request.page)
        views = await self.requests.staff_list(request.overdue, request.attention, offset, limit)
        return privacy_pb2.ListRequestsResponse(
            requests=[request_proto(v) for v in views], page=_next_page(offset, limit, len(views))
        )

    async def RetryRequest(
        self, request: privacy_pb2.RetryRequestRequest, context: grpc.aio.ServicerContext
    ) -> privacy_pb2.RetryRequestResponse:
        view = await self.requests.retry(principal(), request.request_id)
        return privacy_pb2.RetryRequestResponse(request=request_proto(view))

    async def DownloadExport(
        self, request: privacy_pb2.DownloadExportRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        view = await self.requests.staff_view(principal(), request.request_id, event="export_downloaded")
        async for body in self._download(view, request.format):
            yield body

    async def GetCertificate(
        self, request: privacy_pb2.GetCertificateRequest, context: grpc.aio.ServicerContext
    ) -> privacy_pb2.GetCertificateResponse:
        document, signature = await self.requests.certificate(principal(), request.request_id)
        body = json.loads(document)
        certificate = privacy_pb2.Certificate(
            request_id=request.request_id,
            subject_id=body["subject_id"],
            document=document,
            signature=signature,
            public_key=self.vault.public_key,
            issued_at=to_timestamp(datetime.fromisoformat(body["issued_at"].rstrip("Z"))),
        )
        certificate.details.update(body)
        return privacy_pb2.GetCertificateResponse(certificate=certificate)

    async def VerifyCertificate(
        self, request: privacy_pb2.VerifyCertificateRequest, context: grpc.aio.ServicerContext
    ) -> privacy_pb2.VerifyCertificateResponse:
        v = Violations()
        v.check(bool(request.document), "document", "is required")
        v.check(bool(request.signature), "signature", "is required")
        v.raise_if_any()
        valid = self.requests.verify_certificate(request.document, request.signature)
        return privacy_pb2.VerifyCertificateResponse(valid=valid, request_id=_request_id_of(request.document))

    async def VerifyAuditTrail(
        self, request: privacy_pb2.VerifyAuditTrailRequest, context: grpc.aio.ServicerContext
    ) -> privacy_pb2.VerifyAuditTrailResponse:
        intact, events, broken = await self.requests.verify_audit()
        return privacy_pb2.VerifyAuditTrailResponse(intact=intact, events=events, broken_at=broken)

    # --- helpers ----------------------------------------------------------------------------

    async def _download(self, view: RequestView, fmt: str) -> AsyncIterator[httpbody_pb2.HttpBody]:
        if fmt not in ("", "json", "zip"):
            raise InvalidArgument("unknown export format", field_violations={"format": "must be json or zip"})
        r = view.request
        if r.type != domain.ACCESS:
            raise FailedPrecondition("only an access request has an export")
        if r.status != domain.COMPLETED:
            raise FailedPrecondition("the export is not ready yet")
        if r.export_expires_at is None or r.export_expires_at < utcnow():
            raise NotFound("the export has expired and was deleted", reason="EXPORT_EXPIRED")
        store = self.requests.store
        if fmt == "zip":
            stream, content_type = exports.zip_archive(store, self.vault, r), "application/zip"
        else:
            stream, content_type = exports.json_document(store, self.vault, r), "application/json"
        async for piece in exports.pieces(stream):
            yield httpbody_pb2.HttpBody(content_type=content_type, data=piece)


def _next_page(offset: int, limit: int, got: int) -> common_pb2.PageResponse:
    return common_pb2.PageResponse(next_page_token=str(offset + limit) if got == limit else "")


def _request_id_of(document: str) -> str:
    try:
        value = json.loads(document)
    except ValueError:
        return ""
    return str(value.get("request_id", "")) if isinstance(value, dict) else ""
