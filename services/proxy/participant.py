"""The proxy as a PrivacyParticipant: it holds request metadata (P1.4) and nothing else.

Export renders the subject's request-log rows as `RequestLogRecord`s (streamed in pages by
StreamExportSubject); there is nothing to
rectify (no email or name is held); erasure deletes the rows, once per request id (a
repeat replays the first count), then purges them from the storage files (VACUUM on
PostgreSQL, again on a repeat). Rows still buffered by the writer are flushed first, so
an erasure cannot be overtaken by an insert. Subjects are named by account id: the proxy
never sees email addresses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.ext.asyncio import AsyncEngine

from gatemesh.privacy.v1 import data_pb2, participant_pb2, participant_pb2_grpc
from gatemesh.proxy.v1 import proxy_pb2
from services.runtime.errors import Violations
from services.runtime.participant import JsonRenderer, describe_data, json_page, page_size, purge, to_record
from services.runtime.proto_types import descriptor_of

from . import store

SERVICE = "proxy"
STORE = "proxy.request_log"
RECORD = descriptor_of(proxy_pb2.RequestLogRecord)
RENDER = JsonRenderer(RECORD)  # a row's fields are named as the record's


def log_record(row: store.RequestLogRow) -> proxy_pb2.RequestLogRecord:
    created = Timestamp()
    moment = row.created_at
    created.FromDatetime(moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC))
    values = row.model_dump(exclude={"created_at", "stream", "endpoint"})
    return proxy_pb2.RequestLogRecord(**values, created_at=created, endpoint=row.endpoint, stream=row.stream)


class ProxyParticipant(participant_pb2_grpc.PrivacyParticipantServicer):
    """PrivacyParticipant over the request log."""

    def __init__(self, engine: AsyncEngine, writer: store.RequestLogWriter) -> None:
        self.engine = engine
        self.writer = writer

    async def DescribeData(self, request: Any, context: Any) -> participant_pb2.DescribeDataResponse:
        return describe_data(SERVICE, [proxy_pb2.DESCRIPTOR])

    async def ExportSubject(self, request: Any, context: Any) -> participant_pb2.ExportSubjectResponse:
        response = participant_pb2.ExportSubjectResponse(service=SERVICE)
        if request.subject.account_id:
            await self.writer.flush()
            rows = await store.rows_of(self.engine, request.subject.account_id)
            response.records.extend(to_record(log_record(row)) for row in rows)
        return response

    async def StreamExportSubject(
        self, request: Any, context: Any
    ) -> AsyncIterator[participant_pb2.StreamExportSubjectResponse]:
        """The export in pages (an account may have a year of calls), rendered as JSON here."""
        if not request.subject.account_id:
            return
        await self.writer.flush()
        async for rows in store.pages_of(self.engine, request.subject.account_id, page_size(request.page_size)):
            yield json_page(SERVICE, RENDER.records(row.model_dump() for row in rows))

    async def RectifySubject(self, request: Any, context: Any) -> participant_pb2.RectifySubjectResponse:
        return participant_pb2.RectifySubjectResponse(service=SERVICE)

    async def EraseSubject(self, request: Any, context: Any) -> participant_pb2.EraseSubjectResponse:
        violations = Violations()
        violations.check(0 < len(request.request_id) <= 100, "request_id", "is required (at most 100 characters)")
        violations.raise_if_any()
        await self.writer.flush()
        deleted, replayed = await store.erase(self.engine, request.subject.account_id, request.request_id)
        action = participant_pb2.ErasureAction(store=STORE, strategy=data_pb2.ERASURE_STRATEGY_DELETE, count=deleted)
        purged_at, how = await purge(self.engine, [store.RequestLogRow.__tablename__])
        return participant_pb2.EraseSubjectResponse(
            service=SERVICE, actions=[action], replayed=replayed, purged_at=purged_at, purge=how
        )
