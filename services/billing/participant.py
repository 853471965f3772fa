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

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import delete, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gatemesh.billing.v1 import billing_pb2
from gatemesh.privacy.v1 import data_pb2, participant_pb2, participant_pb2_grpc
from services.runtime.errors import Violations
from services.runtime.participant import describe_data, page_size, to_record

from . import store
from .domain import Billing, check_account
from .store import (
    CardPayment,
    ChainDeposit,
    Code,
    DepositAddress,
    Entry,
    Erasure,
    Hold,
    Idempotency,
    LedgerAccount,
    Transfer,
    UsageRow,
)

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


class BillingParticipant(participant_pb2_grpc.PrivacyParticipantServicer):
    def __init__(self, billing: Billing, secret: str) -> None:
        self.billing = billing
        self._secret = secret

    async def DescribeData(self, request: Any, context: Any) -> participant_pb2.DescribeDataResponse:
        return describe_data(SERVICE, [billing_pb2.DESCRIPTOR])

    async def ExportSubject(self, request: Any, context: Any) -> participant_pb2.ExportSubjectResponse:
        account = subject_account(request)
        async with self.billing.engine.connect() as conn:
            records = await export_records(conn, account)
        return participant_pb2.ExportSubjectResponse(service=SERVICE, records=[to_record(r) for r in records])

    async def StreamExportSubject(
        self, request: Any, context: Any
    ) -> AsyncIterator[participant_pb2.StreamExportSubjectResponse]:
        """The export in pages: usage records (possibly millions) by keyset, then the rest."""
        account = subject_account(request)
        size = page_size(request.page_size)
        async for rows in usage_pages(self.billing.engine, account, size):
            records = [to_record(usage_record(r)) for r in rows]
            yield participant_pb2.StreamExportSubjectResponse(service=SERVICE, records=records)
        async with self.billing.engine.connect() as conn:
            others = await export_records(conn, account, usage=False)
        for start in range(0, len(others), size):
            page = [to_record(r) for r in others[start : start + size]]
            yield participant_pb2.StreamExportSubjectResponse(service=SERVICE, records=page)

    async def RectifySubject(self, request: Any, context: Any) -> participant_pb2.RectifySubjectResponse:
        subject_account(request)
        return participant_pb2.RectifySubjectResponse(service=SERVICE)  # billing holds no email or name

    async def EraseSubject(self, request: Any, context: Any) -> participant_pb2.EraseSubjectResponse:
        account = subject_account(request)
        v = Violations()
        v.check(0 < len(request.request_id) <= 100, "request_id", "required, at most 100 characters")
        v.raise_if_any()
        async with self.billing.engine.begin() as conn:
            t = Erasure.__table__  # type: ignore[attr-defined]
            stored = (await conn.execute(select(t.c.result).where(t.c.request_id == request.request_id))).scalar()
            if stored is not None:
                return erase_response(json.loads(stored), replayed=True)
            counts = await erase(conn, account, pseudonym(self._secret, account))
            await conn.execute(
                t.insert().values(request_id=request.request_id, result=json.dumps(counts), created_at=store.utcnow())
            )
        return erase_response(counts, replayed=False)


def erase_response(counts: dict[str, list[int]], replayed: bool) -> participant_pb2.EraseSubjectResponse:
    actions = [participant_pb2.ErasureAction(store=name, strategy=s, count=n) for name, (s, n) in counts.items()]
    return participant_pb2.EraseSubjectResponse(service=SERVICE, actions=actions, replayed=replayed)


async def erase(conn: AsyncConnection, account: str, alias: str) -> dict[str, list[int]]:
    hold = data_pb2.ERASURE_STRATEGY_LEGAL_HOLD
    usage = UsageRow.__table__  # type: ignore[attr-defined]
    deleted = (await conn.execute(delete(usage).where(usage.c.account_id == account))).rowcount
    counts = {"billing.usage_records": [data_pb2.ERASURE_STRATEGY_DELETE, deleted]}
    for prefix in ("wallet:", "holds:"):
        ledger, entries = LedgerAccount.__table__, Entry.__table__  # type: ignore[attr-defined]
        await conn.execute(
            update(entries).where(entries.c.ledger_account == prefix + account).values(ledger_account=prefix + alias)
        )
        await conn.execute(
            update(ledger).where(ledger.c.id == prefix + account).values(id=prefix + alias, account_id=alias)
        )
    renamed = {
        "billing.transfers": Transfer,
        "billing.card_payments": CardPayment,
        "billing.chain_deposits": ChainDeposit,
        "billing.deposit_addresses": DepositAddress,
        "billing.holds": Hold,
    }
    for name, model in renamed.items():
        t = model.__table__  # type: ignore[attr-defined]
        values: dict[str, str] = {"account_id": alias}
        if model is CardPayment:
            values["customer_ref"] = alias
        counts[name] = [
            hold,
            (await conn.execute(update(t).where(t.c.account_id == account).values(**values))).rowcount,
        ]
    codes, keys = Code.__table__, Idempotency.__table__  # type: ignore[attr-defined]
    await conn.execute(update(codes).where(codes.c.redeemed_by == account).values(redeemed_by=alias))
    await conn.execute(delete(keys).where(keys.c.key.startswith(f"{account}:", autoescape=True)))
    return counts


async def usage_pages(engine: AsyncEngine, account: str, size: int) -> AsyncIterator[list[Any]]:
    """The account's usage rows in pages, by the (account_id, created_at, id) index."""
    usage = UsageRow.__table__  # type: ignore[attr-defined]
    after: tuple[Any, str] | None = None
    while True:
        query = select(usage).where(usage.c.account_id == account)
        if after is not None:
            query = query.where(tuple_(usage.c.created_at, usage.c.id) > after)
        query = query.order_by(usage.c.created_at, usage.c.id).limit(size)
        async with engine.connect() as conn:
            rows = list(await conn.execute(query))
        if not rows:
            return
        yield rows
        if len(rows) < size:
            return
        after = (rows[-1].created_at, rows[-1].id)


async def export_records(conn: AsyncConnection, account: str, usage: bool = True) -> list[Any]:
    """Every record billing holds about the account, as record messages (P8.1); without
    the usage records when `usage` is false (StreamExportSubject pages them itself)."""
    records: list[Any] = []
    if usage:
        table = UsageRow.__table__  # type: ignore[attr-defined]
        query = select(table).where(table.c.account_id == account).order_by(table.c.created_at)
        records.extend(usage_record(r) for r in await conn.execute(query))
    cards = CardPayment.__table__  # type: ignore[attr-defined]
    for r in await conn.execute(select(cards).where(cards.c.account_id == account)):
        records.append(
            billing_pb2.CardPaymentRecord(
                payment_id=r.id, account_id=r.account_id, customer_ref=r.customer_ref, session_ref=r.session_ref,
                payment_ref=r.payment_ref, amount_micros=r.amount, created_at=ts(r.created_at),
            )
        )  # fmt: skip
    deposits = ChainDeposit.__table__  # type: ignore[attr-defined]
    for r in await conn.execute(select(deposits).where(deposits.c.account_id == account)):
        records.append(
            billing_pb2.ChainDepositRecord(
                deposit_id=r.id, account_id=r.account_id, chain_id=r.chain_id, tx_hash=r.tx_hash,
                log_index=r.log_index, from_address=r.from_address, to_address=r.to_address, token=r.token,
                token_amount=r.token_amount, amount_micros=r.amount_micros, created_at=ts(r.created_at),
            )
        )  # fmt: skip
    addresses = DepositAddress.__table__  # type: ignore[attr-defined]
    for r in await conn.execute(select(addresses).where(addresses.c.account_id == account)):
        records.append(
            billing_pb2.DepositAddressRecord(
                account_id=r.account_id, chain_id=r.chain_id, address=r.address, created_at=ts(r.created_at)
            )
        )
    transfers = Transfer.__table__  # type: ignore[attr-defined]
    query = select(transfers).where(transfers.c.account_id == account).order_by(transfers.c.created_at)
    for r in await conn.execute(query):
        records.append(
            billing_pb2.LedgerTransferRecord(
                transfer_id=r.id, account_id=r.account_id, kind=r.kind, amount_micros=r.amount,
                created_at=ts(r.created_at),
            )
        )  # fmt: skip
    return records


def usage_record(r: Any) -> billing_pb2.UsageRecord:
    return billing_pb2.UsageRecord(
        usage_id=r.id, account_id=r.account_id, key_id=r.key_id, model=r.model, provider=r.provider,
        input_tokens=r.input_tokens, output_tokens=r.output_tokens, cost_micros=r.cost_micros, status=r.status,
        latency_ms=r.latency_ms, created_at=ts(r.created_at), tokens_estimated=r.tokens_estimated,
        shortfall_micros=r.shortfall_micros,
    )  # fmt: skip
