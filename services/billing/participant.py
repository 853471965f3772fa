"""Billing's PrivacyParticipant: export, rectify and erase what billing holds about a person.

Erasure applies the strategies declared on the record messages in billing.proto:
- usage records are deleted (P5.2, P8.3);
- payment and ledger records stay under legal hold (P5.5), pseudonymized: every column that
  names the account (ledger account ids, transfers, holds, card payments, deposits, deposit
  addresses, redeemed codes) gets a keyed pseudonym `anon-<HMAC(secret, account)>`, and the
  card processor's customer reference is replaced by it; amounts and dates stay.
Erasure is idempotent per request id (the first result is stored and replayed) and, being
keyed, also harmless when repeated under a new request id.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from gatemesh.billing.v1 import billing_pb2
from gatemesh.privacy.v1 import data_pb2, participant_pb2, participant_pb2_grpc
from services.runtime.errors import Violations
from services.runtime.participant import (
    JsonRenderer,
    describe_data,
    json_page,
    json_sql,
    message_records,
    page_size,
    purge,
    to_record,
)

from . import store
from .domain import Billing, check_account

SERVICE = "billing"


def ts(moment: Any) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(store.naive(moment))
    return stamp


def pseudonym(secret: str, account_id: str) -> str:
    digest = hmac.new(secret.encode(), f"billing-pseudonym:{account_id}".encode(), hashlib.sha256).hexdigest()
    return f"anon-{digest[:32]}"


def subject_account(request: Any) -> str:
    v = Violations()
    check_account(v, request.subject.account_id, "subject.account_id")
    v.raise_if_any()
    return str(request.subject.account_id)


USAGE = billing_pb2.UsageRecord.DESCRIPTOR
USAGE_FIELDS = {"usage_id": "id", **{name: name for name in store.USAGE_EXPORT_COLUMNS if name != "id"}}
USAGE_JSON = JsonRenderer(USAGE)
USAGE_SQL = json_sql(USAGE, USAGE_FIELDS)  # PostgreSQL renders the usage pages itself
SLICES = 32  # spans of the usage time range, RENDERING of them rendered at a time
RENDERING = 3


class BillingParticipant(participant_pb2_grpc.PrivacyParticipantServicer):
    def __init__(self, billing: Billing, secret: str) -> None:
        self.billing = billing
        self._secret = secret

    async def DescribeData(self, request: Any, context: Any) -> participant_pb2.DescribeDataResponse:
        return describe_data(SERVICE, [billing_pb2.DESCRIPTOR])

    async def ExportSubject(self, request: Any, context: Any) -> participant_pb2.ExportSubjectResponse:
        """The original, unary export: every record as a structured message (small accounts)."""
        account = subject_account(request)
        records: list[Any] = []
        async for rows in self._usage_rows(account, page_size(0)):
            records.extend(to_record(usage_record(r)) for r in rows)
        async with self.billing.engine.connect() as conn:
            records.extend(to_record(r) for r in other_records(await store.subject_rows(conn, account)))
        return participant_pb2.ExportSubjectResponse(service=SERVICE, records=records)

    async def StreamExportSubject(
        self, request: Any, context: Any
    ) -> AsyncIterator[participant_pb2.StreamExportSubjectResponse]:
        """The export in pages of rendered JSON: usage records (possibly millions) by keyset,
        rendered by PostgreSQL itself (by `JsonRenderer` on SQLite), then the rest."""
        account = subject_account(request)
        size = page_size(request.page_size)
        if self.billing.engine.dialect.name == "postgresql":
            async for records, count in self._usage_json(account, size):
                yield participant_pb2.StreamExportSubjectResponse(
                    service=SERVICE, records_json=records.encode(), record_counts={USAGE.full_name: count}
                )
        else:
            async for rows in self._usage_rows(account, size):
                yield json_page(SERVICE, USAGE_JSON.records(usage_values(r) for r in rows))
        async with self.billing.engine.connect() as conn:
            others = message_records(other_records(await store.subject_rows(conn, account)))
        if others:
            yield json_page(SERVICE, others)

    async def _usage_rows(self, account: str, size: int) -> AsyncIterator[list[Any]]:
        after: store.UsageKey | None = None
        while True:
            async with self.billing.engine.connect() as conn:
                rows = await store.usage_export_rows(conn, account, after, size)
            if rows:
                yield rows
            if len(rows) < size:
                return
            after = (rows[-1].created_at, rows[-1].id)

    async def _usage_json(self, account: str, size: int) -> AsyncIterator[tuple[str, int]]:
        """The rendered pages in order, the account's time range cut into `SLICES` spans and
        the next span rendered while the current one streams (two database backends at
        work: rendering is what a million-record export spends its time on)."""
        async with self.billing.engine.connect() as conn:
            first, last = await store.usage_time_range(conn, account)
        if first is None or last is None:
            return
        step = (last - first) / SLICES
        cuts = [first + step * n for n in range(SLICES)] if step else [first]
        spans = [(cut, cuts[n + 1] if n + 1 < len(cuts) else None) for n, cut in enumerate(cuts)]
        streams = [functools.partial(self._span_json, account, size, s) for s in spans]
        async for page in in_order(streams, running=RENDERING):
            yield page

    async def _span_json(
        self, account: str, size: int, span: tuple[datetime, datetime | None]
    ) -> AsyncIterator[tuple[str, int]]:
        after: store.UsageKey | None = None
        while True:
            async with self.billing.engine.connect() as conn:
                records, count, after = await store.usage_export_json(conn, account, after, size, USAGE_SQL, span)
            if count:
                yield records, count
            if count < size:
                return

    async def RectifySubject(self, request: Any, context: Any) -> participant_pb2.RectifySubjectResponse:
        subject_account(request)
        return participant_pb2.RectifySubjectResponse(service=SERVICE)  # billing holds no email or name

    async def EraseSubject(self, request: Any, context: Any) -> participant_pb2.EraseSubjectResponse:
        """Erase once per request id, then purge the touched tables' dead row versions (a
        replay purges again: the first attempt may have died between the two)."""
        account = subject_account(request)
        v = Violations()
        v.check(0 < len(request.request_id) <= 100, "request_id", "required, at most 100 characters")
        v.raise_if_any()
        async with self.billing.engine.begin() as conn:
            counts = await store.erasure_result(conn, request.request_id)
            replayed = counts is not None
            if counts is None:
                alias = pseudonym(self._secret, account)
                hold = data_pb2.ERASURE_STRATEGY_LEGAL_HOLD
                counts = await store.erase_subject(conn, account, alias, data_pb2.ERASURE_STRATEGY_DELETE, hold)
                await store.record_erasure(conn, request.request_id, counts)
        purged_at, how = await purge(self.billing.engine, store.TOUCHED_BY_ERASURE)
        response = erase_response(counts, replayed=replayed)
        response.purged_at.CopyFrom(purged_at)
        response.purge = how
        return response


T = TypeVar("T")
_END = object()


async def in_order(streams: list[Callable[[], AsyncIterator[T]]], running: int = 2, depth: int = 2) -> AsyncIterator[T]:
    """The items of each stream in turn, the next `running - 1` streams already running, each
    into a queue of `depth` items (bounded memory); an error in a stream is raised here."""
    queues: dict[int, asyncio.Queue[Any]] = {}
    tasks: list[asyncio.Task[None]] = []

    async def fill(stream: Callable[[], AsyncIterator[T]], queue: asyncio.Queue[Any]) -> None:
        try:
            async for item in stream():
                await queue.put(item)
        except Exception as error:  # handed to the consumer, raised there
            await queue.put(error)
        await queue.put(_END)

    def start(n: int) -> None:
        if n < len(streams):
            queues[n] = asyncio.Queue(depth)
            tasks.append(asyncio.create_task(fill(streams[n], queues[n])))

    try:
        for n in range(running):
            start(n)
        for n in range(len(streams)):
            queue = queues.pop(n)
            while (item := await queue.get()) is not _END:
                if isinstance(item, Exception):
                    raise item
                yield item
            start(n + running)
    finally:
        for task in tasks:
            task.cancel()


def erase_response(counts: dict[str, list[int]], replayed: bool) -> participant_pb2.EraseSubjectResponse:
    actions = [participant_pb2.ErasureAction(store=name, strategy=s, count=n) for name, (s, n) in counts.items()]
    return participant_pb2.EraseSubjectResponse(service=SERVICE, actions=actions, replayed=replayed)


def other_records(rows: dict[str, list[Any]]) -> list[Any]:
    """The payment, deposit and ledger rows (`store.subject_rows`) as record messages (P8.1)."""
    records: list[Any] = []
    for r in rows["card_payments"]:
        records.append(
            billing_pb2.CardPaymentRecord(
                payment_id=r.id, account_id=r.account_id, customer_ref=r.customer_ref, session_ref=r.session_ref,
                payment_ref=r.payment_ref, amount_micros=r.amount, created_at=ts(r.created_at),
            )
        )  # fmt: skip
    for r in rows["chain_deposits"]:
        records.append(
            billing_pb2.ChainDepositRecord(
                deposit_id=r.id, account_id=r.account_id, chain_id=r.chain_id, tx_hash=r.tx_hash,
                log_index=r.log_index, from_address=r.from_address, to_address=r.to_address, token=r.token,
                token_amount=r.token_amount, amount_micros=r.amount_micros, created_at=ts(r.created_at),
            )
        )  # fmt: skip
    for r in rows["deposit_addresses"]:
        records.append(
            billing_pb2.DepositAddressRecord(
                account_id=r.account_id, chain_id=r.chain_id, address=r.address, created_at=ts(r.created_at)
            )
        )
    for r in rows["transfers"]:
        records.append(
            billing_pb2.LedgerTransferRecord(
                transfer_id=r.id, account_id=r.account_id, kind=r.kind, amount_micros=r.amount,
                created_at=ts(r.created_at),
            )
        )  # fmt: skip
    return records


def usage_values(r: Any) -> dict[str, Any]:
    """A usage row's values by UsageRecord field name."""
    return {field: getattr(r, column) for field, column in USAGE_FIELDS.items()}


def usage_record(r: Any) -> billing_pb2.UsageRecord:
    return billing_pb2.UsageRecord(**usage_values(r) | {"created_at": ts(r.created_at)})
