"""PolicyService over gRPC: policy versions (P10) and the data map (P4.4). No rules here.

Publishing and the account lists need compliance staff (checked by the runtime from the
method's declared access); reading the current version and the data map is public.
"""

from __future__ import annotations

from datetime import UTC, datetime

import grpc

from gatemesh.common.v1 import common_pb2
from gatemesh.privacy.v1 import policy_pb2, policy_pb2_grpc
from services.runtime.access import principal
from services.runtime.timestamps import from_timestamp, optional_timestamp, to_timestamp

from . import datamap
from .policy import Policies, PolicyVersion, require_staff
from .policy_clients import DataMapSource

OPERATOR = "operator"


def now() -> datetime:
    return datetime.now(UTC)


def staff_id() -> str:
    """The calling staff member's account id, or "operator" for the local operator."""
    caller = principal()
    return OPERATOR if caller.operator else caller.account_id


def version_proto(version: PolicyVersion | None) -> policy_pb2.PolicyVersion | None:
    if version is None:
        return None
    return policy_pb2.PolicyVersion(
        version=version.version,
        effective_at=to_timestamp(version.effective_at),
        summary=version.summary,
        published_at=to_timestamp(version.published_at),
    )


def datamap_proto(found: datamap.DataMap) -> policy_pb2.GetDataMapResponse:
    return policy_pb2.GetDataMapResponse(
        generated_at=to_timestamp(found.generated_at),
        services=list(found.services),
        unavailable=list(found.unavailable),
        fields=[
            policy_pb2.DataMapField(
                service=f.service,
                store=f.store,
                field=f.field,
                category=f.category,  # type: ignore[arg-type]  # the name of a proto enum value, which protobuf takes where its stubs want the enum
                purpose=f.purpose,
                retention=f.retention,
                retention_days=f.retention_days,
                erasure=f.erasure,  # type: ignore[arg-type]  # the name of a proto enum value, which protobuf takes where its stubs want the enum
                processors=list(f.processors),
            )
            for f in found.fields
        ],
        processors=[
            policy_pb2.ProcessorEntry(
                name=p.name,
                receives=list(p.receives),
                categories=list(p.categories),  # type: ignore[arg-type]  # the name of a proto enum value, which protobuf takes where its stubs want the enum
            )
            for p in found.processors
        ],
        markdown=datamap.to_markdown(found),
    )


class PolicyServicer(policy_pb2_grpc.PolicyServiceServicer):
    def __init__(self, policies: Policies, datamaps: DataMapSource) -> None:
        self.policies = policies
        self.datamaps = datamaps

    async def GetCurrentPolicy(
        self, request: policy_pb2.GetCurrentPolicyRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb2.GetCurrentPolicyResponse:
        current, upcoming = await self.policies.current(now())
        return policy_pb2.GetCurrentPolicyResponse(current=version_proto(current), upcoming=version_proto(upcoming))

    async def PublishPolicyVersion(
        self, request: policy_pb2.PublishPolicyVersionRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb2.PublishPolicyVersionResponse:
        require_staff(principal().is_compliance)
        effective_at = from_timestamp(request.effective_at) if request.HasField("effective_at") else None
        published = await self.policies.publish(staff_id(), request.version, effective_at, request.summary, now())
        return policy_pb2.PublishPolicyVersionResponse(
            version=version_proto(published.version), created=published.created, notified=published.notified
        )

    async def ListPolicyVersions(
        self, request: policy_pb2.ListPolicyVersionsRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb2.ListPolicyVersionsResponse:
        versions = await self.policies.versions()
        return policy_pb2.ListPolicyVersionsResponse(
            versions=[
                policy_pb2.PublishedPolicyVersion(
                    version=version_proto(v),
                    published_by=v.published_by,
                    notified=v.notified,
                    notified_at=optional_timestamp(v.notified_at),
                )
                for v in versions
            ]
        )

    async def ListPendingAcceptances(
        self, request: policy_pb2.ListPendingAcceptancesRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb2.ListPendingAcceptancesResponse:
        version, page = await self.policies.pending(
            staff_id(), request.version, request.page.page_size, request.page.page_token, now()
        )
        return policy_pb2.ListPendingAcceptancesResponse(
            version=version,
            account_ids=page.account_ids,
            page=common_pb2.PageResponse(next_page_token=page.next_page_token),
        )

    async def GetDataMap(
        self, request: policy_pb2.GetDataMapRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb2.GetDataMapResponse:
        return datamap_proto(await self.datamaps.get())
