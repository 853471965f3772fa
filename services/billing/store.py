"""Billing's tables and the queries the domain needs (SQLModel tables, SQLAlchemy Core queries).

The ledger is double-entry: a `transfers` row with two or more `entries` that sum to zero.
Per-person ledger accounts (`wallet:<account>` = available credit, `holds:<account>` = credit
reserved by open holds) keep a running balance in `ledger_accounts`, guarded twice against
overdraft: every debit is a conditional `UPDATE ... WHERE balance + delta >= 0` (PostgreSQL
takes the row lock and re-checks the condition after waiting, so 500 concurrent holds cannot
overdraw), and a CHECK constraint backs it. System accounts (`system:revenue`,
`system:topup_card`, ...) keep no running balance, so that no hot row serializes every
settle in the mesh: their balance is the sum of their entries.

Timestamps are stored as naive UTC.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    cast,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from services.runtime.db import arrays_insert, column_arrays
from services.runtime.errors import Aborted, AlreadyExists

SYSTEM_PREFIX = "system:"


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def naive(moment: datetime) -> datetime:
    """A datetime as naive UTC, the stored form."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def wallet(account_id: str) -> str:
    return f"wallet:{account_id}"


def holds_account(account_id: str) -> str:
    return f"holds:{account_id}"


def system(name: str) -> str:
    return f"{SYSTEM_PREFIX}{name}"


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
TABLES = [
    LedgerAccount,
    Transfer,
    Entry,
    Hold,
    KeySpend,
    Idempotency,
    UsageRow,
    UsageDailyAnonymous,
    CodeBatch,
    Code,
    CardPayment,
    StripeEvent,
    DepositAddress,
    ChainDeposit,
    ChainCursor,
    Erasure,
]


class Overdraft(Exception):
    """A debit would take a per-person ledger account below zero."""

    def __init__(self, ledger_account: str) -> None:
        super().__init__(ledger_account)
        self.ledger_account = ledger_account


def insert_ignore(conn: AsyncConnection, model: type[SQLModel], index: Sequence[str]) -> Any:
    """`INSERT ... ON CONFLICT DO NOTHING` in the session's dialect."""
    dialect = conn.dialect.name
    module = sqlite if dialect == "sqlite" else postgresql
    return module.insert(model.__table__).on_conflict_do_nothing(index_elements=list(index))  # type: ignore[attr-defined]


def upsert_add(conn: AsyncConnection, model: type[SQLModel], index: Sequence[str], values: dict[str, Any]) -> Any:
    """`INSERT ... ON CONFLICT DO UPDATE SET col = col + excluded.col` for the numeric values."""
    dialect = conn.dialect.name
    module = sqlite if dialect == "sqlite" else postgresql
    table = model.__table__  # type: ignore[attr-defined]
    stmt = module.insert(table).values(**values)
    adds = {k: table.c[k] + stmt.excluded[k] for k, v in values.items() if k not in index and isinstance(v, int)}
    return stmt.on_conflict_do_update(index_elements=list(index), set_=adds)


def params_hash(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


@functools.cache
def _hot(dialect: str) -> SimpleNamespace:
    """The hot path's statements, built once per dialect with bind parameters.

    Building a SQLAlchemy statement costs about three times as much CPU as executing a
    prebuilt one; holds and settles run a dozen statements each, so they use these. The
    upserts are `text()`: SQLAlchemy cannot cache the compiled form of a dialect insert with
    ON CONFLICT ("no key" in its log) and would compile it on every call; this SQL is the same
    on PostgreSQL and SQLite (3.35+ for RETURNING).
    """
    module = sqlite if dialect == "sqlite" else postgresql
    keys, accounts, holds = Idempotency.__table__, LedgerAccount.__table__, Hold.__table__  # type: ignore[attr-defined]
    spend = KeySpend.__table__  # type: ignore[attr-defined]
    return SimpleNamespace(
        claim=text(
            "INSERT INTO idempotency (scope, key, params_hash, result, created_at)"
            " VALUES (:scope, :key, :params_hash, :result, :created_at) ON CONFLICT (scope, key) DO NOTHING"
        ),
        claim_many=module.insert(keys).on_conflict_do_nothing(index_elements=["scope", "key"]).returning(keys.c.key),
        stored=select(keys.c.params_hash, keys.c.result).where(
            keys.c.scope == bindparam("scope"), keys.c.key == bindparam("key")
        ),
        finish=update(keys)
        .where(keys.c.scope == bindparam("b_scope"), keys.c.key == bindparam("b_key"))
        .values(result=bindparam("b_result")),
        debit=update(accounts)
        .where(accounts.c.id == bindparam("b_id"), accounts.c.balance + bindparam("b_delta") >= 0)
        .values(balance=accounts.c.balance + bindparam("b_delta"))
        .returning(accounts.c.balance),
        credit=text(
            "INSERT INTO ledger_accounts (id, kind, account_id, balance) VALUES (:id, :kind, :account_id, :balance)"
            " ON CONFLICT (id) DO UPDATE SET balance = ledger_accounts.balance + excluded.balance RETURNING balance"
        ),
        transfer=Transfer.__table__.insert(),  # type: ignore[attr-defined]
        entries=Entry.__table__.insert(),  # type: ignore[attr-defined]
        hold=holds.insert(),
        usage=UsageRow.__table__.insert(),  # type: ignore[attr-defined]
        take_hold=update(holds)
        .where(holds.c.id == bindparam("b_id"), holds.c.status == "open")
        .values(status=bindparam("b_status"))
        .returning(holds),
        balance=select(accounts.c.balance).where(accounts.c.id == bindparam("b_id")),
        balance_locked=select(accounts.c.balance).where(accounts.c.id == bindparam("b_id")).with_for_update(),
        key_reserve=text(
            "INSERT INTO key_spend (key_id, spent, held) VALUES (:key_id, :spent, :held)"
            " ON CONFLICT (key_id) DO UPDATE SET held = key_spend.held + excluded.held"
            " WHERE CAST(:b_cap AS BIGINT) = 0"
            " OR key_spend.spent + key_spend.held + excluded.held <= CAST(:b_cap AS BIGINT)"
            " RETURNING key_id"
        ),
        key_resolve=update(spend)
        .where(spend.c.key_id == bindparam("b_key"))
        .values(held=spend.c.held - bindparam("b_held"), spent=spend.c.spent + bindparam("b_spent")),
        # The batches' statements: a list of ids goes as one parameter, `ids` (see `among`).
        keys_stored=KEYS_STORED_PG
        if dialect == "postgresql"
        else select(keys.c.key, keys.c.params_hash, keys.c.result).where(
            keys.c.scope == bindparam("scope"), among(dialect, keys.c.key)
        ),
        lock_holds=select(holds).where(among(dialect, holds.c.id)).order_by(holds.c.id).with_for_update(),
        lock_balances=select(accounts.c.id, accounts.c.balance)
        .where(among(dialect, accounts.c.id))
        .order_by(accounts.c.id)
        .with_for_update(),
        add_balance=update(accounts)
        .where(accounts.c.id == bindparam("b_id"))
        .values(balance=accounts.c.balance + bindparam("b_delta")),
        hold_status=update(holds).where(among(dialect, holds.c.id)).values(status=bindparam("b_status")),
    )


def hot(conn: AsyncConnection) -> SimpleNamespace:
    return _hot(conn.dialect.name)


async def claim_key(conn: AsyncConnection, scope: str, key: str, params: dict[str, Any]) -> dict[str, Any] | None:
    """Claim an idempotency key inside the caller's transaction.

    None: the key is new (and now held by this transaction; a concurrent request with the
    same key waits on the unique index). A dict: the stored result of the first request.
    AlreadyExists: the key was used with other parameters.
    """
    digest = params_hash(params)
    row = {"scope": scope, "key": key, "params_hash": digest, "result": "", "created_at": utcnow()}
    result = await conn.execute(hot(conn).claim, row)
    if result.rowcount == 1:
        return None
    stored = (await conn.execute(hot(conn).stored, {"scope": scope, "key": key})).one()
    if stored.params_hash != digest:
        raise AlreadyExists(
            f"idempotency key already used for a different {scope} request",
            field_violations={"idempotency_key": "reuse a key only to retry the identical request"},
            reason="idempotency_key_reused",
        )
    return json.loads(stored.result)


async def record_key(
    conn: AsyncConnection, scope: str, key: str, params: dict[str, Any], result: dict[str, Any]
) -> bool:
    """Store a key with its finished result in one statement (the hot paths' variant of
    claim + finish); False when the key exists already (committed by an earlier request)."""
    row = {
        "scope": scope,
        "key": key,
        "params_hash": params_hash(params),
        "result": json.dumps(result, default=str),
        "created_at": utcnow(),
    }
    return (await conn.execute(hot(conn).claim, row)).rowcount == 1


async def stored_key(conn: AsyncConnection, scope: str, key: str) -> Any:
    """(params_hash, result) of a stored key, or None."""
    return (await conn.execute(hot(conn).stored, {"scope": scope, "key": key})).one_or_none()


async def finish_key(conn: AsyncConnection, scope: str, key: str, result: dict[str, Any]) -> None:
    values = {"b_scope": scope, "b_key": key, "b_result": json.dumps(result, default=str)}
    await conn.execute(hot(conn).finish, values)


async def post_transfer(
    conn: AsyncConnection,
    transfer_id: str,
    kind: str,
    account_id: str,
    legs: Sequence[tuple[str, int]],
    reference: str = "",
    amount: int | None = None,
    now: datetime | None = None,
) -> dict[str, int]:
    """Write one immutable transfer and its entries; returns the new per-person balances.

    Raises Overdraft (rolling nothing back itself: the caller's transaction does) when a
    debit would take a wallet or holds account below zero.
    """
    if sum(amount for _, amount in legs) != 0:
        raise ValueError("a transfer's entries must sum to zero")
    now = now or utcnow()
    total = amount if amount is not None else sum(a for _, a in legs if a > 0)
    row = {"id": transfer_id, "kind": kind, "account_id": account_id, "reference": reference, "amount": total}
    await conn.execute(hot(conn).transfer, {**row, "created_at": now})
    entries = [
        {"transfer_id": transfer_id, "ledger_account": acct, "amount": delta, "created_at": now}
        for acct, delta in legs
        if delta != 0
    ]
    await conn.execute(hot(conn).entries, entries)
    # The balances last: their row locks (contended on a busy account) are then held only
    # until the commit, not while the rows above are written.
    balances: dict[str, int] = {}
    for ledger_account, delta in sorted(legs):
        if ledger_account.startswith(SYSTEM_PREFIX) or delta == 0:
            continue
        balances[ledger_account] = await _apply(conn, ledger_account, account_id, delta)
    return balances


async def _apply(conn: AsyncConnection, ledger_account: str, account_id: str, delta: int) -> int:
    if delta > 0:
        kind = ledger_account.split(":", 1)[0]
        values = {"id": ledger_account, "kind": kind, "account_id": account_id, "balance": delta}
        return int((await conn.execute(hot(conn).credit, values)).scalar_one())
    balance = (await conn.execute(hot(conn).debit, {"b_id": ledger_account, "b_delta": delta})).scalar_one_or_none()
    if balance is None:
        raise Overdraft(ledger_account)
    return int(balance)


async def balance_of(conn: AsyncConnection, ledger_account: str, for_update: bool = False) -> int:
    stmt = hot(conn).balance_locked if for_update else hot(conn).balance
    value = (await conn.execute(stmt, {"b_id": ledger_account})).scalar_one_or_none()
    return int(value or 0)


async def balances(conn: AsyncConnection, account_id: str) -> tuple[int, int] | None:
    """(available, held) of an account, or None when billing has never seen it."""
    rows = (
        await conn.execute(
            select(LedgerAccount.id, LedgerAccount.balance).where(
                LedgerAccount.id.in_([wallet(account_id), holds_account(account_id)])  # type: ignore[attr-defined]
            )
        )
    ).all()
    if not rows:
        return None
    found = dict(rows)
    return int(found.get(wallet(account_id), 0)), int(found.get(holds_account(account_id), 0))


async def sum_entries(conn: AsyncConnection, ledger_account: str, before: datetime | None = None) -> int:
    stmt = select(func.coalesce(func.sum(Entry.amount), 0)).where(Entry.ledger_account == ledger_account)
    if before is not None:
        stmt = stmt.where(Entry.created_at < before)
    return int((await conn.execute(stmt)).scalar_one())


def key_range(column: Any, since: datetime | None, until: datetime | None) -> list[Any]:
    conditions = []
    if since is not None:
        conditions.append(column >= since)
    if until is not None:
        conditions.append(column < until)
    return conditions


def all_of(conditions: list[Any]) -> Any:
    return and_(*conditions) if conditions else True


def among(dialect: str, column: Any) -> Any:
    """`column IN :ids`, for a statement built once and given a list of values as `ids`. On
    PostgreSQL as `IN (SELECT unnest(array))`: one parameter however many values (a batch's
    thousand ids would otherwise be a thousand parameters to send and parse), probed one by
    one through the column's index. Not `= ANY(array)`: once the driver's prepared statement
    gets a generic plan, PostgreSQL may scan the table comparing each row with every element
    (seen: 200 ms for 1,000 keys in a table of 24,000)."""
    if dialect == "postgresql":
        return column.in_(select(func.unnest(cast(bindparam("ids"), postgresql.ARRAY(column.type)))))
    return column.in_(bindparam("ids", expanding=True))


async def stored_keys(conn: AsyncConnection, scope: str, keys: list[str]) -> dict[str, tuple[str, str]]:
    """{key: (params hash, stored result)} of those of these keys stored earlier."""
    if not keys:
        return {}
    rows = await conn.execute(hot(conn).keys_stored, {"scope": scope, "ids": keys})
    return {k: (h, r) for k, h, r in rows.all()}


async def record_keys(conn: AsyncConnection, scope: str, done: list[tuple[str, str, Any]]) -> None:
    """Store (key, params hash, result dataclass) triples in one statement. On PostgreSQL the
    results go as one array per field and the database builds their JSON (`json.dumps` per
    result was a tenth of a settle batch's Python). A key that a concurrent request stored
    since `stored_keys` looked raises Aborted: the caller's transaction rolls back and its
    caller retries, to find that key's result."""
    if not done:
        return
    now = utcnow()
    if conn.dialect.name == "postgresql":
        statement, names = _record_keys_pg(type(done[0][2]))
        params = {"scope": scope, "now": now, "keys": [k for k, _, _ in done], "hashes": [h for _, h, _ in done]}
        for i, name in enumerate(names):
            params[f"c{i}"] = [getattr(r, name) for _, _, r in done]
        stored = (await conn.execute(statement, params)).scalar_one()
    else:
        rows = [
            {"scope": scope, "key": k, "params_hash": h, "result": json.dumps(vars(r), default=str), "created_at": now}
            for k, h, r in done
        ]
        stored = len((await conn.execute(hot(conn).claim_many, rows)).all())
    if stored != len(done):
        raise Aborted("a concurrent request with one of these idempotency keys is in progress; retry")


_SQL_TYPES = {"int": "BIGINT", "str": "VARCHAR"}


@functools.cache
def _record_keys_pg(result_type: type) -> tuple[Any, list[str]]:
    """The statement storing keys with results of this dataclass (int and str fields), and
    the field names in the order of its array parameters c0, c1, ..."""
    fields = dataclasses.fields(result_type)
    names = [f.name for f in fields]
    types = [_SQL_TYPES[getattr(f.type, "__name__", f.type)] for f in fields]  # annotations may be strings
    arrays = ", ".join(f"CAST(:c{i} AS {sql_type}[])" for i, sql_type in enumerate(types))
    columns = ", ".join(f"c{i}" for i in range(len(fields)))
    result = ", ".join(f"'{name}', c{i}" for i, name in enumerate(names))
    statement = text(
        f"""
WITH stored AS (
    INSERT INTO idempotency (scope, key, params_hash, result, created_at)
    SELECT CAST(:scope AS VARCHAR), k, h, json_build_object({result})::text, CAST(:now AS TIMESTAMP)
    FROM unnest(CAST(:keys AS VARCHAR[]), CAST(:hashes AS VARCHAR[]), {arrays}) AS u(k, h, {columns})
    ON CONFLICT (scope, key) DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM stored
"""
    )
    return statement, names


async def lock_holds(conn: AsyncConnection, hold_ids: list[str]) -> dict[str, Any]:
    """The holds with these ids, row-locked in id order (a fixed order: no deadlocks)."""
    if not hold_ids:
        return {}
    rows = await conn.execute(hot(conn).lock_holds, {"ids": sorted(set(hold_ids))})
    return {row.id: row for row in rows.all()}


async def lock_balances(conn: AsyncConnection, ledger_accounts: list[str]) -> dict[str, int]:
    if not ledger_accounts:
        return {}
    rows = await conn.execute(hot(conn).lock_balances, {"ids": sorted(set(ledger_accounts))})
    return {k: int(v) for k, v in rows.all()}


async def lock_persons(conn: AsyncConnection, account_ids: Sequence[str]) -> dict[str, int]:
    """`lock_balances` of these accounts' wallets and holds accounts."""
    accounts = set(account_ids)
    return await lock_balances(conn, [wallet(a) for a in accounts] + [holds_account(a) for a in accounts])


async def add_balances(conn: AsyncConnection, deltas: dict[str, int]) -> None:
    """Apply balance changes to rows locked by `lock_balances` (the CHECK still guards them)."""
    changes = [(k, v) for k, v in sorted(deltas.items()) if v and not k.startswith(SYSTEM_PREFIX)]
    if not changes:
        return
    if conn.dialect.name == "postgresql":  # one statement, not one per row (the rows are locked already)
        ids, amounts = zip(*changes, strict=True)
        await conn.execute(ADD_BALANCES_PG, {"ids": list(ids), "deltas": list(amounts)})
        return
    await conn.execute(hot(conn).add_balance, [{"b_id": k, "b_delta": v} for k, v in changes])


async def set_hold_status(conn: AsyncConnection, hold_ids: list[str], status: str) -> None:
    """Mark holds locked by `lock_holds` resolved, in one statement."""
    if hold_ids:
        await conn.execute(hot(conn).hold_status, {"ids": hold_ids, "b_status": status})


async def resolve_key_spend(conn: AsyncConnection, changes: dict[str, tuple[int, int]]) -> None:
    """Move settled holds' amounts out of their keys' held amount: {key: (held, spent)}."""
    if changes:
        rows = [{"b_key": k, "b_held": h, "b_spent": s} for k, (h, s) in sorted(changes.items())]
        await conn.execute(hot(conn).key_resolve, rows)


async def ensure_holds_accounts(conn: AsyncConnection, account_ids: list[str]) -> None:
    """Create the holds ledger rows a batch of holds will credit, in id order (the order every
    path locks ledger rows in), so that `lock_balances` can lock them all."""
    accounts = sorted(set(account_ids))
    if not accounts:
        return
    if conn.dialect.name == "postgresql":
        rows = [(holds_account(a), "holds", a, 0) for a in accounts]
        columns = ("id", "kind", "account_id", "balance")
        await conn.execute(arrays_insert(LedgerAccount.__table__, columns, ("id",)), column_arrays(rows))  # type: ignore[attr-defined]
        return
    rows = [{"id": holds_account(a), "kind": "holds", "account_id": a, "balance": 0} for a in accounts]
    await conn.execute(insert_ignore(conn, LedgerAccount, ["id"]), rows)


async def lock_key_spend(conn: AsyncConnection, key_ids: list[str]) -> dict[str, tuple[int, int]]:
    """{key: (spent, held)} of these API keys, rows created if missing and locked in id order
    (after the ledger rows, as the single hold locks them)."""
    keys = sorted(set(key_ids))
    if not keys:
        return {}
    table = KeySpend.__table__  # type: ignore[attr-defined]
    await conn.execute(insert_ignore(conn, KeySpend, ["key_id"]), [{"key_id": k, "spent": 0, "held": 0} for k in keys])
    query = select(table.c.key_id, table.c.spent, table.c.held).where(table.c.key_id.in_(keys))
    rows = (await conn.execute(query.order_by(table.c.key_id).with_for_update())).all()
    return {k: (int(spent), int(held)) for k, spent, held in rows}


async def add_key_held(conn: AsyncConnection, held: dict[str, int]) -> None:
    """Add to the held amount of key-spend rows locked by `lock_key_spend`."""
    changes = [{"k": k, "h": v} for k, v in sorted(held.items()) if v]
    if changes:
        table = KeySpend.__table__  # type: ignore[attr-defined]
        stmt = update(table).where(table.c.key_id == bindparam("k")).values(held=table.c.held + bindparam("h"))
        await conn.execute(stmt, changes)


# A whole hold in one statement, for PostgreSQL (the single hold's path; SQLite runs the same
# steps one statement each). The holds account is credited first and the wallet debited only
# after it (the debit's WHERE reads `credit`), so rows are locked in the one order every path
# uses (`holds:<a>` before `wallet:<a>`), then the key's spend row. Every later step reads
# `debit`, so nothing is written when the wallet cannot cover the amount, except the holds
# account's credit: the caller rolls the transaction back on any refusal (no debit, the key's
# cap, the idempotency key taken by an earlier request).
# A whole settle within its hold in one statement, for PostgreSQL (the single settle's path
# when the cost does not exceed the hold; above it, and on SQLite, the settle runs step by
# step). `taken` resolves the open hold (its row lock first); the holds account is debited,
# then the wallet credited (`wallet` reads `held`), then the key's spend row (`spend` reads
# `wallet`): the one lock order of every path. Everything else reads `taken`, so nothing is
# written when the hold is not open or its amount is below the cost: the caller then takes
# the step path in the same transaction, which raises the right error or charges above the
# hold. The idempotency key is stored last, with the result; a key taken meanwhile by a
# concurrent request shows as `recorded` 0 and the caller rolls back.
SETTLE_PG = text(
    """
WITH taken AS (
    UPDATE holds SET status = 'settled'
    WHERE id = CAST(:hold_id AS VARCHAR) AND status = 'open' AND amount >= CAST(:cost AS BIGINT)
    RETURNING account_id, key_id, amount
), held AS (
    UPDATE ledger_accounts l SET balance = l.balance - t.amount
    FROM taken t WHERE l.id = CAST(:holds_prefix AS VARCHAR) || t.account_id
    RETURNING l.balance
), wallet AS (
    UPDATE ledger_accounts l SET balance = l.balance + t.amount - CAST(:cost AS BIGINT)
    FROM taken t WHERE l.id = CAST(:wallet_prefix AS VARCHAR) || t.account_id AND EXISTS (SELECT 1 FROM held)
    RETURNING l.balance
), usage AS (
    INSERT INTO usage_records (id, account_id, key_id, model, provider, input_tokens, output_tokens, cost_micros,
                               shortfall_micros, status, latency_ms, tokens_estimated, created_at)
    SELECT CAST(:usage_id AS VARCHAR), t.account_id, CAST(:u_key_id AS VARCHAR), CAST(:model AS VARCHAR),
           CAST(:provider AS VARCHAR), CAST(:input_tokens AS BIGINT), CAST(:output_tokens AS BIGINT),
           CAST(:cost AS BIGINT), 0, CAST(:status AS VARCHAR), CAST(:latency_ms AS BIGINT),
           CAST(:tokens_estimated AS BOOLEAN), CAST(:created AS TIMESTAMP)
    FROM taken t
), transfer AS (
    INSERT INTO transfers (id, kind, account_id, reference, amount, created_at)
    SELECT CAST(:transfer_id AS VARCHAR), 'usage', t.account_id, CAST(:hold_id AS VARCHAR), CAST(:cost AS BIGINT),
           CAST(:now AS TIMESTAMP)
    FROM taken t
), legs AS (
    INSERT INTO entries (transfer_id, ledger_account, amount, created_at)
    SELECT CAST(:transfer_id AS VARCHAR), leg.account, leg.amount, CAST(:now AS TIMESTAMP)
    FROM taken t, LATERAL (VALUES (CAST(:holds_prefix AS VARCHAR) || t.account_id, -t.amount),
                                  (CAST(:wallet_prefix AS VARCHAR) || t.account_id, t.amount - CAST(:cost AS BIGINT)),
                                  (CAST(:revenue AS VARCHAR), CAST(:cost AS BIGINT))) AS leg(account, amount)
    WHERE leg.amount <> 0
), spend AS (
    UPDATE key_spend s SET held = s.held - t.amount, spent = s.spent + CAST(:cost AS BIGINT)
    FROM taken t, wallet WHERE s.key_id = t.key_id AND t.key_id <> ''
), recorded AS (
    INSERT INTO idempotency (scope, key, params_hash, result, created_at)
    SELECT 'settle', CAST(:key AS VARCHAR), CAST(:params_hash AS VARCHAR),
           json_build_object('charged_micros', CAST(:cost AS BIGINT),
                             'released_micros', t.amount - CAST(:cost AS BIGINT), 'shortfall_micros', 0,
                             'usage_id', CAST(:usage_id AS VARCHAR), 'balance_micros', wallet.balance)::text,
           CAST(:key_created AS TIMESTAMP)
    FROM taken t, wallet
    ON CONFLICT (scope, key) DO NOTHING
    RETURNING 1
)
SELECT (SELECT amount FROM taken) AS amount,
       (SELECT balance FROM wallet) AS balance,
       (SELECT count(*) FROM recorded) AS recorded
"""
)


# One primary-key probe per key, whatever the statistics say: as `key IN (SELECT unnest(...))`
# PostgreSQL planned by the selectivity of `scope`, and with stale statistics (a table that
# grew since it was last analyzed) it read every key of the scope to join them with the
# batch's (seen: 10 ms per batch at 22,000 keys, and growing with the table).
KEYS_STORED_PG = text(
    "SELECT i.key, i.params_hash, i.result FROM unnest(CAST(:ids AS VARCHAR[])) AS k(key),"
    " LATERAL (SELECT key, params_hash, result FROM idempotency WHERE scope = :scope AND key = k.key LIMIT 1) AS i"
)

ADD_BALANCES_PG = text(
    "UPDATE ledger_accounts AS a SET balance = a.balance + d.delta"
    " FROM unnest(CAST(:ids AS VARCHAR[]), CAST(:deltas AS BIGINT[])) AS d(id, delta) WHERE a.id = d.id"
)

HOLD_PG = text(
    """
WITH credit AS (
    INSERT INTO ledger_accounts (id, kind, account_id, balance)
    VALUES (CAST(:holds AS VARCHAR), 'holds', CAST(:account AS VARCHAR), CAST(:amount AS BIGINT))
    ON CONFLICT (id) DO UPDATE SET balance = ledger_accounts.balance + excluded.balance
    RETURNING balance
), debit AS (
    UPDATE ledger_accounts SET balance = balance - CAST(:amount AS BIGINT)
    WHERE id = CAST(:wallet AS VARCHAR) AND balance >= CAST(:amount AS BIGINT) AND EXISTS (SELECT 1 FROM credit)
    RETURNING balance
), hold AS (
    INSERT INTO holds (id, account_id, key_id, amount, status, created_at, expires_at)
    SELECT CAST(:hold_id AS VARCHAR), CAST(:account AS VARCHAR), CAST(:key_id AS VARCHAR), CAST(:amount AS BIGINT),
           'open', CAST(:now AS TIMESTAMP), CAST(:expires AS TIMESTAMP)
    FROM debit
), transfer AS (
    INSERT INTO transfers (id, kind, account_id, reference, amount, created_at)
    SELECT CAST(:transfer_id AS VARCHAR), 'hold', CAST(:account AS VARCHAR), CAST(:hold_id AS VARCHAR),
           CAST(:amount AS BIGINT), CAST(:now AS TIMESTAMP)
    FROM debit
), legs AS (
    INSERT INTO entries (transfer_id, ledger_account, amount, created_at)
    SELECT CAST(:transfer_id AS VARCHAR), leg.account, leg.amount, CAST(:now AS TIMESTAMP)
    FROM debit, (VALUES (CAST(:wallet AS VARCHAR), -CAST(:amount AS BIGINT)),
                        (CAST(:holds AS VARCHAR), CAST(:amount AS BIGINT))) AS leg(account, amount)
), spend AS (
    INSERT INTO key_spend (key_id, spent, held)
    SELECT CAST(:key_id AS VARCHAR), 0, CAST(:amount AS BIGINT) FROM debit WHERE CAST(:key_id AS VARCHAR) <> ''
    ON CONFLICT (key_id) DO UPDATE SET held = key_spend.held + excluded.held
    WHERE CAST(:cap AS BIGINT) = 0 OR key_spend.spent + key_spend.held + excluded.held <= CAST(:cap AS BIGINT)
    RETURNING key_id
), recorded AS (
    INSERT INTO idempotency (scope, key, params_hash, result, created_at)
    SELECT 'hold', CAST(:key AS VARCHAR), CAST(:params_hash AS VARCHAR),
           json_build_object('hold_id', CAST(:hold_id AS VARCHAR), 'amount_micros', CAST(:amount AS BIGINT),
                             'expires_at', CAST(:expires_iso AS VARCHAR), 'balance_micros', debit.balance)::text,
           CAST(:created AS TIMESTAMP)
    FROM debit
    ON CONFLICT (scope, key) DO NOTHING
    RETURNING 1
)
SELECT (SELECT balance FROM debit) AS balance,
       (SELECT count(*) FROM spend) AS reserved,
       (SELECT count(*) FROM recorded) AS recorded
"""
)
