"""gRPC clients of the configured PrivacyParticipants (and of auth, for subjects).

One pooled channel per participant, every call with a deadline. Before a worker call, a
channel that is between connection attempts is given `CONNECT_WAIT_S` to reconnect (gRPC
would fail the call at once until its backoff ends): a participant that restarted is picked
up by the next attempt instead of every attempt failing inside one backoff window. A peer
still down after that wait is UNAVAILABLE, as gRPC would say. Exports are read with
`StreamExportSubject` (pages, bounded memory) and fall back to the unary `ExportSubject`
for a participant that does not implement the stream, so that any service implementing
the original contract joins the fan-out. A page comes back as `ExportPage`: its records as
JSON bytes (what the export document stores) and counts per record message. A participant
that renders its pages (`records_json`) is passed through untouched, with no parse and no
re-encode; structured `records` (the original contract) are rendered here. Records become
dicts only where the verification needs to look inside them (`ExportPage.records`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import grpc
from google.protobuf import json_format

from gatemesh.auth.v1 import auth_pb2, auth_pb2_grpc
from gatemesh.common.v1 import common_pb2
from gatemesh.privacy.v1 import participant_pb2, participant_pb2_grpc
from services.runtime.clients import client_credentials, client_options, service_channel
from services.runtime.errors import NotFound, Unavailable
from services.runtime.timestamps import from_timestamp

from .domain import Participant
from .settings import PrivacySettings

PAGE_SIZE = 10_000  # the participants' cap: fewer, larger pages (a usage page is ~3 MB)
CONNECT_WAIT_S = 5.0  # > the 2 s reconnect backoff cap of `client_options`: two connect tries


@dataclass(frozen=True)
class ExportPage:
    """One page of a participant's export: `records_json` as in StreamExportSubjectResponse
    (comma-separated ExportedRecords in the JSON mapping) and records per message."""

    json: bytes
    counts: dict[str, int]

    def records(self) -> list[dict[str, Any]]:
        """The records as dicts (parsed on demand: only the verification looks inside)."""
        return json.loads(b"[" + self.json + b"]") if self.json else []

    @classmethod
    def of(cls, records: Iterable[participant_pb2.ExportedRecord]) -> ExportPage:
        """A page of structured records (the original contract), rendered."""
        dicts = [_record(r) for r in records]
        counts: dict[str, int] = {}
        for r in dicts:
            counts[r["message"]] = counts.get(r["message"], 0) + 1
        encoded = json.dumps(dicts, sort_keys=True, separators=(",", ":")).encode()[1:-1] if dicts else b""
        return cls(encoded, counts)


@dataclass(frozen=True)
class Subject:
    account_id: str
    role: int
    status: int


def _channel(settings: PrivacySettings, address: str, with_token: bool) -> grpc.aio.Channel:
    if with_token:
        return service_channel(address, settings)
    creds = client_credentials(settings)
    if creds is None:
        return grpc.aio.insecure_channel(address, options=client_options(settings))
    return grpc.aio.secure_channel(address, creds, options=client_options(settings))


class Participants:
    """The fan-out targets, by name."""

    def __init__(self, settings: PrivacySettings) -> None:
        self.timeout = settings.privacy_call_timeout_s
        self.configured = [Participant(p.name, p.address, p.phase) for p in settings.participants()]
        self._channels = {p.name: _channel(settings, p.address, p.service_token) for p in settings.participants()}
        self._stubs = {name: participant_pb2_grpc.PrivacyParticipantStub(ch) for name, ch in self._channels.items()}

    def stub(self, name: str) -> participant_pb2_grpc.PrivacyParticipantStub:
        return self._stubs[name]

    async def connected(self, name: str) -> participant_pb2_grpc.PrivacyParticipantStub:
        """The participant's stub once its channel is connected, or UNAVAILABLE after
        `CONNECT_WAIT_S` (see the module docstring)."""
        channel = self._channels[name]
        if channel.get_state(try_to_connect=True) != grpc.ChannelConnectivity.READY:
            try:
                await asyncio.wait_for(channel.channel_ready(), CONNECT_WAIT_S)
            except TimeoutError:
                empty = grpc.aio.Metadata()
                raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, empty, empty, "not connected") from None
        return self._stubs[name]

    async def describe(self, name: str) -> dict[str, Any]:
        reply = await self.stub(name).DescribeData(participant_pb2.DescribeDataRequest(), timeout=self.timeout)
        return json_format.MessageToDict(reply, preserving_proto_field_name=True, use_integers_for_enums=True)

    async def datamap(self) -> dict[str, Any]:
        """The data map every participant declares now: the snapshot a request runs under."""
        found: dict[str, Any] = {}
        for p in self.configured:
            try:
                found[p.name] = await self.describe(p.name)
            except grpc.aio.AioRpcError as error:
                raise Unavailable(f"participant {p.name} did not describe its data ({error.code().name})") from None
        return {"participants": found}

    async def export_pages(self, name: str, account_id: str, request_id: str) -> AsyncIterator[ExportPage]:
        """The subject's records at one participant, page by page."""
        subject = common_pb2.SubjectRef(account_id=account_id)
        request = participant_pb2.StreamExportSubjectRequest(
            subject=subject, request_id=request_id, page_size=PAGE_SIZE
        )
        call = (await self.connected(name)).StreamExportSubject(request, timeout=self.timeout)
        try:
            async for page in call:
                if page.records or not page.records_json:  # an empty page still names the part
                    yield ExportPage.of(page.records)
                if page.records_json:
                    yield ExportPage(page.records_json, {m: int(n) for m, n in page.record_counts.items()})
            return
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
        unary = participant_pb2.ExportSubjectRequest(subject=subject, request_id=request_id)
        reply = await self.stub(name).ExportSubject(unary, timeout=self.timeout)
        for start in range(0, len(reply.records), PAGE_SIZE):
            yield ExportPage.of(reply.records[start : start + PAGE_SIZE])

    async def rectify(self, name: str, account_id: str, request_id: str, changes: dict[str, str]) -> dict[str, int]:
        request = participant_pb2.RectifySubjectRequest(
            subject=common_pb2.SubjectRef(account_id=account_id), request_id=request_id, changes=changes
        )
        reply = await (await self.connected(name)).RectifySubject(request, timeout=self.timeout)
        return dict(reply.updated)

    async def erase(self, name: str, account_id: str, request_id: str) -> dict[str, Any]:
        """What the erasure did: actions, replayed, and when (and how) the participant purged
        the erased values from its storage files (None when it does not say)."""
        request = participant_pb2.EraseSubjectRequest(
            subject=common_pb2.SubjectRef(account_id=account_id), request_id=request_id
        )
        reply = await (await self.connected(name)).EraseSubject(request, timeout=self.timeout)
        actions = [{"store": a.store, "strategy": int(a.strategy), "count": int(a.count)} for a in reply.actions]
        purged = from_timestamp(reply.purged_at) if reply.HasField("purged_at") else None
        return {
            "actions": actions,
            "replayed": reply.replayed,
            "purged_at": purged.isoformat(timespec="seconds").replace("+00:00", "Z") if purged else None,
            "purge": reply.purge,
        }

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


def _record(record: participant_pb2.ExportedRecord) -> dict[str, Any]:
    return {"message": record.message, "data": json_format.MessageToDict(record.data)}


class Subjects:
    """Auth, asked who a subject is and which accounts were closed."""

    def __init__(self, channel: grpc.aio.Channel, timeout_s: float = 10.0) -> None:
        self.stub = auth_pb2_grpc.AuthServiceStub(channel)
        self.timeout = timeout_s

    async def resolve(self, account_id: str = "", email: str = "") -> Subject:
        request = auth_pb2.ResolveSubjectRequest(subject=common_pb2.SubjectRef(account_id=account_id, email=email))
        try:
            reply = await self.stub.ResolveSubject(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound("unknown subject: no account matches", reason="UNKNOWN_SUBJECT") from None
            raise Unavailable(f"the auth service could not resolve the subject ({error.code().name})") from None
        return Subject(reply.account_id, int(reply.role), int(reply.status))

    async def closed_accounts(self) -> Sequence[tuple[str, datetime | None]]:
        reply = await self.stub.ListClosedAccounts(auth_pb2.ListClosedAccountsRequest(), timeout=self.timeout)
        return [(a.account_id, _naive(from_timestamp(a.closed_at))) for a in reply.accounts]


def _naive(moment: datetime | None) -> datetime | None:
    """The naive UTC the privacy tables store."""
    return moment.replace(tzinfo=None) if moment is not None else None
