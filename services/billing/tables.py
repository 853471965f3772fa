"""Billing's tables (SQLModel, on billing's own metadata), as the migrations create them.

The ledger is double-entry: a `transfers` row with two or more `entries` that sum to zero.
Per-person ledger accounts (`wallet:<account>` = available credit, `holds:<account>` = credit
reserved by open holds) keep a running balance in `ledger_accounts`, backed by a CHECK
constraint against overdraft. System accounts (`system:revenue`, `system:topup_card`, ...)
keep no running balance, so that no hot row serializes every settle in the mesh: their
balance is the sum of their entries. Timestamps are stored as naive UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Column, DateTime, Index, Integer, Text, UniqueConstraint
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel


class BillingModel(SQLModel, registry=registry()):
    """Billing's own metadata, so that its tables never meet another service's in one process."""


def _money() -> Any:
    return Field(default=0, sa_type=BigInteger, nullable=False)


class LedgerAccount(BillingModel, table=True):
    __tablename__ = "ledger_accounts"
    __table_args__ = (
        CheckConstraint("balance >= 0", name="ck_ledger_accounts_nonnegative"),
        Index("ix_ledger_accounts_account", "account_id"),
    )
    id: str = Field(primary_key=True, max_length=100)
    kind: str = Field(max_length=16)
    account_id: str = Field(max_length=64)
    balance: int = _money()


class Transfer(BillingModel, table=True):
    __tablename__ = "transfers"
    __table_args__ = (Index("ix_transfers_account_created", "account_id", "created_at"),)
    id: str = Field(primary_key=True, max_length=36)
    kind: str = Field(max_length=24)
    account_id: str = Field(max_length=64)
    reference: str = Field(default="", max_length=200)
    amount: int = _money()
    created_at: datetime = Field(sa_column=Column(DateTime, nullable=False))


class Entry(BillingModel, table=True):
    __tablename__ = "entries"
    __table_args__ = (
        Index("ix_entries_transfer", "transfer_id"),
        Index("ix_entries_account_created", "ledger_account", "created_at"),
    )
    id: int | None = Field(default=None, primary_key=True, sa_type=BigInteger().with_variant(Integer, "sqlite"))
    transfer_id: str = Field(max_length=36)
    ledger_account: str = Field(max_length=100)
    amount: int = _money()
    created_at: datetime = Field(sa_column=Column(DateTime, nullable=False))


class Hold(BillingModel, table=True):
    __tablename__ = "holds"
    __table_args__ = (Index("ix_holds_status_expires", "status", "expires_at"),)
    id: str = Field(primary_key=True, max_length=36)
    account_id: str = Field(max_length=64, index=True)
    key_id: str = Field(default="", max_length=64)
    amount: int = _money()
    status: str = Field(max_length=16)
    created_at: datetime = Field(sa_column=Column(DateTime, nullable=False))
    expires_at: datetime = Field(sa_column=Column(DateTime, nullable=False))


class KeySpend(BillingModel, table=True):
    __tablename__ = "key_spend"
    key_id: str = Field(primary_key=True, max_length=64)
    spent: int = _money()
    held: int = _money()


class Idempotency(BillingModel, table=True):
    """Idempotency keys with their first result. The key index serves every lookup; the time
    index only the retention sweep, so on PostgreSQL it is BRIN: keys arrive in time order,
    and a BRIN index costs next to nothing per insert (a B-tree costs one more index insert
    per hold and per settle)."""

    __tablename__ = "idempotency"
    __table_args__ = (Index("ix_idempotency_created_at", "created_at", postgresql_using="brin"),)
    scope: str = Field(primary_key=True, max_length=32)
    key: str = Field(primary_key=True, max_length=200)
    params_hash: str = Field(max_length=64)
    result: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    created_at: datetime = Field(sa_column=Column(DateTime, nullable=False))


class UsageRow(BillingModel, table=True):
    __tablename__ = "usage_records"
    __table_args__ = (
        Index("ix_usage_account_created", "account_id", "created_at", "id"),
        Index("ix_usage_account_model_created", "account_id", "model", "created_at"),
        Index("ix_usage_account_key_created", "account_id", "key_id", "created_at"),
        Index("ix_usage_created", "created_at"),
    )
    id: str = Field(primary_key=True, max_length=36)
    account_id: str = Field(max_length=64)
    key_id: str = Field(default="", max_length=64)
    model: str = Field(max_length=128)
    provider: str = Field(default="", max_length=64)
    input_tokens: int = _money()
    output_tokens: int = _money()
    cost_micros: int = _money()
    shortfall_micros: int = _money()
    status: str = Field(default="", max_length=32)
    latency_ms: int = 0
    tokens_estimated: bool = False
    created_at: datetime = Field(sa_column=Column(DateTime, nullable=False))


class UsageDailyAnonymous(BillingModel, table=True):
    """Daily per-model totals that identify nobody; they outlive the usage records (P5.2)."""

    __tablename__ = "usage_daily_anonymous"
    day: str = Field(primary_key=True, max_length=10)
    model: str = Field(primary_key=True, max_length=128)
    requests: int = _money()
    input_tokens: int = _money()
    output_tokens: int = _money()
    cost_micros: int = _money()


class CodeBatch(BillingModel, table=True):
    __tablename__ = "code_batches"
    id: str = Field(primary_key=True, max_length=36)
    amount: int = _money()
    count: int
    expires_at: datetime | None = Field(default=None, sa_column=Column(DateTime, nullable=True))
    created_at: datetime = Field(sa_column=Column(DateTime, nullable=False))


class Code(BillingModel, table=True):
    __tablename__ = "codes"
    hash: str = Field(primary_key=True, max_length=64)
    batch_id: str = Field(max_length=36, index=True)
    redeemed_by: str | None = Field(default=None, max_length=64)
    redeemed_at: datetime | None = Field(default=None, sa_column=Column(DateTime, nullable=True))


class CardPayment(BillingModel, table=True):
    __tablename__ = "card_payments"
    id: str = Field(primary_key=True, max_length=36)
    account_id: str = Field(max_length=64, index=True)
    session_ref: str = Field(default="", max_length=255, index=True)
    customer_ref: str = Field(default="", max_length=255)
    payment_ref: str = Field(default="", max_length=255, index=True)
    amount: int = _money()
    status: str = Field(max_length=16)
    credit_transfer_id: str = Field(default="", max_length=36)
    refunded_micros: int = _money()
    refund_applied_micros: int = _money()
    created_at: datetime = Field(sa_column=Column(DateTime, nullable=False))


class StripeEvent(BillingModel, table=True):
    __tablename__ = "stripe_events"
    id: str = Field(primary_key=True, max_length=255)
    type: str = Field(max_length=64)
    received_at: datetime = Field(sa_column=Column(DateTime, nullable=False))


class DepositAddress(BillingModel, table=True):
    __tablename__ = "deposit_addresses"
    __table_args__ = (UniqueConstraint("account_id", "chain_id", name="uq_deposit_account_chain"),)
    id: int | None = Field(default=None, primary_key=True)
    account_id: str = Field(max_length=64)
    chain_id: int = Field(sa_type=BigInteger)
    address: str = Field(max_length=42, unique=True)
    created_at: datetime = Field(sa_column=Column(DateTime, nullable=False))


class ChainDeposit(BillingModel, table=True):
    __tablename__ = "chain_deposits"
    __table_args__ = (
        UniqueConstraint("chain_id", "tx_hash", "log_index", name="uq_chain_deposit_log"),
        Index("ix_chain_deposits_status", "chain_id", "status", "block_number"),
    )
    id: str = Field(primary_key=True, max_length=36)
    chain_id: int = Field(sa_type=BigInteger)
    tx_hash: str = Field(max_length=66)
    log_index: int
    block_number: int = Field(sa_type=BigInteger)
    block_hash: str = Field(max_length=66)
    account_id: str = Field(max_length=64, index=True)
    from_address: str = Field(max_length=42)
    to_address: str = Field(max_length=42)
    token: str = Field(max_length=16)
    token_amount: str = Field(max_length=80)
    amount_micros: int = _money()
    status: str = Field(max_length=16)
    transfer_id: str = Field(default="", max_length=36)
    created_at: datetime = Field(sa_column=Column(DateTime, nullable=False))


class ChainCursor(BillingModel, table=True):
    __tablename__ = "chain_cursors"
    chain_id: int = Field(primary_key=True, sa_type=BigInteger)
    last_block: int = Field(sa_type=BigInteger)


class Erasure(BillingModel, table=True):
    __tablename__ = "erasures"
    request_id: str = Field(primary_key=True, max_length=100)
    result: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime, nullable=False))


METADATA = BillingModel.metadata
