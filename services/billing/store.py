"""Billing's queries on SQLAlchemy Core, each inside the caller's transaction (`conn`).

The ledger's overdraft guard is here: every debit of a per-person ledger account is a
conditional `UPDATE ... WHERE balance + delta >= 0` (PostgreSQL takes the row lock and
re-checks the condition after waiting, so 500 concurrent holds cannot overdraw), and the
table's CHECK constraint backs it. The hot path's statements are built once per dialect
(`hot`); PostgreSQL's one-statement forms are in `pg`, the tables in `tables`, and
`sqlstore` puts these functions behind the domain's ports. Cards, chain and the privacy
participant call these functions with their own transactions.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import bindparam, cast, delete, func, select, text, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import SQLModel

from services.runtime.db import arrays_insert, column_arrays
from services.runtime.errors import Aborted

from .errors import Overdraft
from .idempotency import params_hash, stored_result
from .model import SYSTEM_PREFIX, holds_account, naive, system, utcnow, wallet
from .pg import ADD_BALANCES_PG, HOLD_PG, KEYS_STORED_PG, SETTLE_PG, record_keys_pg
from .tables import (
    METADATA,
    CardPayment,
    ChainCursor,
    ChainDeposit,
    Code,
    CodeBatch,
    DepositAddress,
    Entry,
    Erasure,
    Hold,
    Idempotency,
    KeySpend,
    LedgerAccount,
    StripeEvent,
    Transfer,
    UsageDailyAnonymous,
    UsageRow,
)

__all__ = [  # what the modules outside the domain take from here
    "HOLD_PG", "METADATA", "SETTLE_PG", "CardPayment", "ChainCursor", "ChainDeposit", "Code", "CodeBatch",
    "DepositAddress", "Entry", "Erasure", "Hold", "Idempotency", "KeySpend", "LedgerAccount", "Overdraft",
    "StripeEvent", "Transfer", "UsageDailyAnonymous", "UsageRow", "holds_account", "naive", "params_hash",
    "system", "utcnow", "wallet",
]  # fmt: skip


def insert_ignore(conn: AsyncConnection, model: type[SQLModel], index: Sequence[str]) -> Any:
    """`INSERT ... ON CONFLICT DO NOTHING` in the session's dialect."""
    dialect = conn.dialect.name
    module = sqlite if dialect == "sqlite" else postgresql
    return module.insert(model.__table__).on_conflict_do_nothing(index_elements=list(index))


def upsert_add(conn: AsyncConnection, model: type[SQLModel], index: Sequence[str], values: dict[str, Any]) -> Any:
    """`INSERT ... ON CONFLICT DO UPDATE SET col = col + excluded.col` for the numeric values."""
    dialect = conn.dialect.name
    module = sqlite if dialect == "sqlite" else postgresql
    table = model.__table__
    stmt = module.insert(table).values(**values)
    adds = {k: table.c[k] + stmt.excluded[k] for k, v in values.items() if k not in index and isinstance(v, int)}
    return stmt.on_conflict_do_update(index_elements=list(index), set_=adds)


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
    keys, accounts, holds = Idempotency.__table__, LedgerAccount.__table__, Hold.__table__
    spend = KeySpend.__table__
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
        transfer=Transfer.__table__.insert(),
        entries=Entry.__table__.insert(),
        hold=holds.insert(),
        usage=UsageRow.__table__.insert(),
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
    return stored_result(scope, stored.params_hash, stored.result, digest)


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
                LedgerAccount.id.in_([wallet(account_id), holds_account(account_id)])
            )
        )
    ).all()
    if not rows:
        return None
    found: dict[str, int] = dict(rows)
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
        statement, names = record_keys_pg(type(done[0][2]))
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
        await conn.execute(arrays_insert(LedgerAccount.__table__, columns, ("id",)), column_arrays(rows))
        return
    dicts = [{"id": holds_account(a), "kind": "holds", "account_id": a, "balance": 0} for a in accounts]
    await conn.execute(insert_ignore(conn, LedgerAccount, ["id"]), dicts)


async def lock_key_spend(conn: AsyncConnection, key_ids: list[str]) -> dict[str, tuple[int, int]]:
    """{key: (spent, held)} of these API keys, rows created if missing and locked in id order
    (after the ledger rows, as the single hold locks them)."""
    keys = sorted(set(key_ids))
    if not keys:
        return {}
    table = KeySpend.__table__
    await conn.execute(insert_ignore(conn, KeySpend, ["key_id"]), [{"key_id": k, "spent": 0, "held": 0} for k in keys])
    query = select(table.c.key_id, table.c.spent, table.c.held).where(table.c.key_id.in_(keys))
    rows = (await conn.execute(query.order_by(table.c.key_id).with_for_update())).all()
    return {k: (int(spent), int(held)) for k, spent, held in rows}


async def add_key_held(conn: AsyncConnection, held: dict[str, int]) -> None:
    """Add to the held amount of key-spend rows locked by `lock_key_spend`."""
    changes = [{"k": k, "h": v} for k, v in sorted(held.items()) if v]
    if changes:
        table = KeySpend.__table__
        stmt = update(table).where(table.c.key_id == bindparam("k")).values(held=table.c.held + bindparam("h"))
        await conn.execute(stmt, changes)


# --- the privacy participant's queries ------------------------------------------------------

# The tables an erasure deletes from or rewrites: vacuumed after it (their dead row versions
# still hold the erased values).
TOUCHED_BY_ERASURE = (
    "usage_records", "entries", "ledger_accounts", "transfers", "card_payments", "chain_deposits",
    "deposit_addresses", "holds", "codes", "idempotency",
)  # fmt: skip
# The usage-record columns an export reads, in UsageRecord's field order ("id" is usage_id).
USAGE_EXPORT_COLUMNS = (
    "id", "account_id", "key_id", "model", "provider", "input_tokens", "output_tokens", "cost_micros", "status",
    "latency_ms", "created_at", "tokens_estimated", "shortfall_micros",
)  # fmt: skip
UsageKey = tuple[datetime, str]


def _usage_after(account: str, after: UsageKey | None) -> list[Any]:
    usage = UsageRow.__table__
    where = [usage.c.account_id == account]
    if after is not None:
        where.append(tuple_(usage.c.created_at, usage.c.id) > after)
    return where


async def usage_export_rows(conn: AsyncConnection, account: str, after: UsageKey | None, size: int) -> list[Any]:
    """One keyset page (by the (account_id, created_at, id) index) of the account's usage
    rows, the exported columns only."""
    usage = UsageRow.__table__
    query = (
        select(*(usage.c[name] for name in USAGE_EXPORT_COLUMNS))
        .where(*_usage_after(account, after))
        .order_by(usage.c.created_at, usage.c.id)
        .limit(size)
    )
    return list(await conn.execute(query))


async def usage_time_range(conn: AsyncConnection, account: str) -> tuple[datetime | None, datetime | None]:
    """The account's first and last usage time (two index probes)."""
    usage = UsageRow.__table__
    query = select(func.min(usage.c.created_at), func.max(usage.c.created_at)).where(usage.c.account_id == account)
    first, last = (await conn.execute(query)).one()
    return first, last


async def usage_export_json(
    conn: AsyncConnection,
    account: str,
    after: UsageKey | None,
    size: int,
    record_sql: str,
    span: tuple[datetime, datetime | None] | None = None,
) -> tuple[str, int, UsageKey | None]:
    """PostgreSQL: the same page rendered by the database, one text of comma-separated
    records (`record_sql`, a `runtime.participant.json_sql` expression over the table's
    columns), with its record count and the key to continue after; within `span` (from,
    before; before None is open-ended) when given, so that slices render concurrently."""
    keyset = "AND (created_at, id) > (:at, :id)" if after is not None else ""
    if span is not None:
        keyset += " AND created_at >= :since" + (" AND created_at < :before" if span[1] is not None else "")
    query = text(
        "SELECT string_agg(record, ',' ORDER BY created_at, id), count(*), "
        "(array_agg(created_at ORDER BY created_at DESC, id DESC))[1], "
        "(array_agg(id ORDER BY created_at DESC, id DESC))[1] "
        f"FROM (SELECT created_at, id, {record_sql} AS record FROM usage_records "
        f"WHERE account_id = :account {keyset} ORDER BY created_at, id LIMIT :size) page"
    )
    values: dict[str, Any] = {"account": account, "size": size}
    if after is not None:
        values |= {"at": after[0], "id": after[1]}
    if span is not None:
        values |= {"since": span[0]} | ({"before": span[1]} if span[1] is not None else {})
    records, count, last_at, last_id = (await conn.execute(query, values)).one()
    return records or "", int(count), (last_at, last_id) if count else None


async def subject_rows(conn: AsyncConnection, account: str) -> dict[str, list[Any]]:
    """The account's payment, deposit and ledger rows (everything but usage), by table."""
    found: dict[str, list[Any]] = {}
    for model in (CardPayment, ChainDeposit, DepositAddress, Transfer):
        table = model.__table__
        query = select(table).where(table.c.account_id == account)
        if model is Transfer:
            query = query.order_by(table.c.created_at)
        found[table.name] = list(await conn.execute(query))
    return found


async def erasure_result(conn: AsyncConnection, request_id: str) -> dict[str, list[int]] | None:
    """The stored counts of an erasure already applied under this request id."""
    t = Erasure.__table__
    stored = (await conn.execute(select(t.c.result).where(t.c.request_id == request_id))).scalar()
    return json.loads(stored) if stored is not None else None


async def record_erasure(conn: AsyncConnection, request_id: str, counts: dict[str, list[int]]) -> None:
    t = Erasure.__table__
    await conn.execute(t.insert().values(request_id=request_id, result=json.dumps(counts), created_at=utcnow()))


async def erase_subject(
    conn: AsyncConnection, account: str, alias: str, delete_strategy: int, hold_strategy: int
) -> dict[str, list[int]]:
    """Delete the account's usage records and idempotency keys; rename the account to its
    pseudonym `alias` in every payment and ledger table (kept under legal hold). Returns
    {store: [strategy, rows]}."""
    usage = UsageRow.__table__
    deleted = (await conn.execute(delete(usage).where(usage.c.account_id == account))).rowcount
    counts = {"billing.usage_records": [delete_strategy, deleted]}
    ledger, entries = LedgerAccount.__table__, Entry.__table__
    for prefix in ("wallet:", "holds:"):
        await conn.execute(
            update(entries).where(entries.c.ledger_account == prefix + account).values(ledger_account=prefix + alias)
        )
        await conn.execute(
            update(ledger).where(ledger.c.id == prefix + account).values(id=prefix + alias, account_id=alias)
        )
    for model in (Transfer, CardPayment, ChainDeposit, DepositAddress, Hold):
        t = model.__table__
        values = {"account_id": alias, **({"customer_ref": alias} if model is CardPayment else {})}
        renamed = (await conn.execute(update(t).where(t.c.account_id == account).values(**values))).rowcount
        counts[f"billing.{t.name}"] = [hold_strategy, renamed]
    codes, keys = Code.__table__, Idempotency.__table__
    await conn.execute(update(codes).where(codes.c.redeemed_by == account).values(redeemed_by=alias))
    await conn.execute(delete(keys).where(keys.c.key.startswith(f"{account}:", autoescape=True)))
    return counts
