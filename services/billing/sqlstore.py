"""The domain's ports (`ports.Storage`, `ports.Transaction`) on SQLAlchemy: PostgreSQL, or
SQLite for a local mesh.

Each method is one query or a short fixed sequence (most in `store`, the hot path's prebuilt
statements; the reports' queries here). `one_statement` is True on PostgreSQL, where a hold,
a settle within its hold and a lease's draw within its rest run as `pg.HOLD_PG`,
`pg.SETTLE_PG` and `pg.DRAW_PG`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.runtime.db import insert_rows

from . import store
from .model import USAGE_COLUMNS, DailyStats, UsageQuery, holds_account, iso, naive, system, utcnow, wallet
from .pg import DRAW_PG, HOLD_PG, SETTLE_PG
from .ports import Legs
from .tables import Code, CodeBatch, Entry, Hold, Idempotency, Transfer, UsageDailyAnonymous, UsageRow

_T = Transfer.__table__  # SQLModel declares no __table__
_E = Entry.__table__
_H = Hold.__table__
_U = UsageRow.__table__
_A = UsageDailyAnonymous.__table__
_CODES, _BATCHES = Code.__table__, CodeBatch.__table__
_KEYS = Idempotency.__table__
_TAKE_FROM_HOLD = (  # a credit lease's draws (issue 15), executed once per hold
    update(_H).where(_H.c.id == bindparam("b_id")).values(amount=_H.c.amount - bindparam("b_taken"))
)


def _range(column: Any, since: datetime | None, until: datetime | None) -> list[Any]:
    return store.key_range(column, naive(since) if since else None, naive(until) if until else None)


def _settle_values(item: Any, cost: int, usage_id: str, transfer_id: str, now: datetime, digest: str) -> dict[str, Any]:
    """The parameters of `pg.SETTLE_PG` and `pg.DRAW_PG` (the same names in both)."""
    u = item.usage
    return {
        "hold_id": item.hold_id, "cost": cost, "holds_prefix": holds_account(""),
        "wallet_prefix": wallet(""), "revenue": system("revenue"), "usage_id": usage_id,
        "u_key_id": u.key_id, "model": u.model, "provider": u.provider, "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens, "status": u.status, "latency_ms": u.latency_ms,
        "tokens_estimated": u.tokens_estimated, "created": naive(u.started_at) if u.started_at else now,
        "transfer_id": transfer_id, "now": now, "key": item.idempotency_key,
        "params_hash": digest, "key_created": utcnow(),
    }  # fmt: skip


class SqlStore:
    """`ports.Storage` on an async engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.one_statement = engine.dialect.name == "postgresql"

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[SqlTransaction]:
        async with self.engine.begin() as conn:
            yield SqlTransaction(conn)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[SqlTransaction]:
        async with self.engine.connect() as conn:
            yield SqlTransaction(conn)

    def bind(self, conn: AsyncConnection) -> SqlTransaction:
        return SqlTransaction(conn)


class SqlTransaction:
    """`ports.Transaction` on one connection inside its transaction."""

    __slots__ = ("conn",)

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    # --- idempotency keys --------------------------------------------------------------

    async def claim_key(self, scope: str, key: str, params: dict[str, Any]) -> dict[str, Any] | None:
        return await store.claim_key(self.conn, scope, key, params)

    async def finish_key(self, scope: str, key: str, result: dict[str, Any]) -> None:
        await store.finish_key(self.conn, scope, key, result)

    async def record_key(self, scope: str, key: str, params: dict[str, Any], result: dict[str, Any]) -> bool:
        return await store.record_key(self.conn, scope, key, params, result)

    async def stored_key(self, scope: str, key: str) -> Any:
        return await store.stored_key(self.conn, scope, key)

    async def stored_keys(self, scope: str, keys: list[str]) -> dict[str, tuple[str, str]]:
        return await store.stored_keys(self.conn, scope, keys)

    async def record_keys(self, scope: str, done: list[tuple[str, str, Any]]) -> None:
        await store.record_keys(self.conn, scope, done)

    # --- the ledger --------------------------------------------------------------------

    async def post_transfer(
        self, transfer_id: str, kind: str, account_id: str, legs: Legs, reference: str, amount: int, now: datetime
    ) -> dict[str, int]:
        return await store.post_transfer(self.conn, transfer_id, kind, account_id, legs, reference, amount, now)

    async def insert_postings(self, transfers: list[dict[str, Any]], entries: list[dict[str, Any]]) -> None:
        await insert_rows(self.conn, Transfer, transfers)
        await insert_rows(self.conn, Entry, entries)

    async def balance_of(self, ledger_account: str) -> int:
        return await store.balance_of(self.conn, ledger_account)

    async def lock_balances(self, ledger_accounts: list[str]) -> dict[str, int]:
        return await store.lock_balances(self.conn, ledger_accounts)

    async def lock_persons(self, account_ids: Sequence[str]) -> dict[str, int]:
        return await store.lock_persons(self.conn, account_ids)

    async def add_balances(self, deltas: dict[str, int]) -> None:
        await store.add_balances(self.conn, deltas)

    async def ensure_holds_accounts(self, account_ids: list[str]) -> None:
        await store.ensure_holds_accounts(self.conn, account_ids)

    async def balances(self, account_id: str) -> tuple[int, int] | None:
        return await store.balances(self.conn, account_id)

    # --- holds, key spend, usage -------------------------------------------------------

    async def insert_holds(self, rows: list[dict[str, Any]]) -> None:
        if len(rows) == 1:  # the single hold's step path: the prebuilt insert
            await self.conn.execute(store.hot(self.conn).hold, rows[0])
            return
        await insert_rows(self.conn, Hold, rows)

    async def take_open_hold(self, hold_id: str, status: str) -> Any:
        values = {"b_id": hold_id, "b_status": status}
        return (await self.conn.execute(store.hot(self.conn).take_hold, values)).one_or_none()

    async def hold_status(self, hold_id: str) -> str | None:
        return (await self.conn.execute(select(_H.c.status).where(_H.c.id == hold_id))).scalar_one_or_none()

    async def set_hold_status(self, hold_ids: list[str], status: str) -> None:
        await store.set_hold_status(self.conn, hold_ids, status)

    async def lock_holds(self, hold_ids: list[str]) -> dict[str, Any]:
        return await store.lock_holds(self.conn, hold_ids)

    async def take_from_holds(self, taken: dict[str, int]) -> None:
        if taken:
            rows = [{"b_id": h, "b_taken": amount} for h, amount in sorted(taken.items())]
            await self.conn.execute(_TAKE_FROM_HOLD, rows)

    async def expired_holds(self, now: datetime, limit: int) -> list[Any]:
        query = select(_H).where(_H.c.status == "open", _H.c.expires_at < now).limit(limit)
        if self.conn.dialect.name == "postgresql":  # several instances may sweep
            query = query.with_for_update(skip_locked=True)
        return list((await self.conn.execute(query)).all())

    async def lock_key_spend(self, key_ids: list[str]) -> dict[str, tuple[int, int]]:
        return await store.lock_key_spend(self.conn, key_ids)

    async def add_key_held(self, held: dict[str, int]) -> None:
        await store.add_key_held(self.conn, held)

    async def resolve_key_spend(self, changes: dict[str, tuple[int, int]]) -> None:
        await store.resolve_key_spend(self.conn, changes)

    async def insert_usages(self, rows: list[tuple[Any, ...]]) -> None:
        await insert_rows(self.conn, UsageRow, rows, USAGE_COLUMNS)

    # --- PostgreSQL's one-statement hold, settle and draw -------------------------------

    async def hold_in_one_statement(
        self, item: Any, hold_id: str, transfer_id: str, now: datetime, expires: datetime, digest: str
    ) -> Any:
        """`pg.HOLD_PG`: (balance or None, reserved, recorded)."""
        values = {
            "holds": holds_account(item.account_id), "wallet": wallet(item.account_id),
            "account": item.account_id, "amount": item.amount, "key_id": item.key_id, "cap": item.key_cap,
            "hold_id": hold_id, "transfer_id": transfer_id, "now": now, "expires": expires,
            "expires_iso": iso(expires), "key": item.idempotency_key, "params_hash": digest, "created": utcnow(),
        }  # fmt: skip
        return (await self.conn.execute(HOLD_PG, values)).one()

    async def settle_in_one_statement(
        self, item: Any, cost: int, usage_id: str, transfer_id: str, now: datetime, digest: str
    ) -> Any:
        """`pg.SETTLE_PG`: (hold amount or None, wallet balance, recorded)."""
        values = _settle_values(item, cost, usage_id, transfer_id, now, digest)
        return (await self.conn.execute(SETTLE_PG, values)).one()

    async def draw_in_one_statement(
        self, item: Any, cost: int, usage_id: str, transfer_id: str, now: datetime, digest: str
    ) -> Any:
        """`pg.DRAW_PG`: (the lease's amount left or None, wallet balance, recorded)."""
        values = _settle_values(item, cost, usage_id, transfer_id, now, digest)
        return (await self.conn.execute(DRAW_PG, values)).one()

    # --- codes -------------------------------------------------------------------------

    async def insert_code_batch(
        self, batch_id: str, amount: int, count: int, expires_at: datetime | None, now: datetime, hashes: list[str]
    ) -> None:
        await self.conn.execute(
            _BATCHES.insert().values(id=batch_id, amount=amount, count=count, created_at=now, expires_at=expires_at)
        )
        await self.conn.execute(_CODES.insert(), [{"hash": h, "batch_id": batch_id} for h in hashes])

    async def code_terms(self, digest: str) -> Any:
        query = (
            select(_BATCHES.c.amount, _BATCHES.c.expires_at)
            .select_from(_CODES.join(_BATCHES, _CODES.c.batch_id == _BATCHES.c.id))
            .where(_CODES.c.hash == digest)
        )
        return (await self.conn.execute(query)).one_or_none()

    async def take_code(self, digest: str, account_id: str, now: datetime) -> bool:
        """Mark an unredeemed code redeemed: one conditional UPDATE, so it redeems once."""
        taken = await self.conn.execute(
            update(_CODES)
            .where(_CODES.c.hash == digest, _CODES.c.redeemed_by.is_(None))
            .values(redeemed_by=account_id, redeemed_at=now)
        )
        return taken.rowcount == 1

    # --- refunds and reports -----------------------------------------------------------

    async def topup_for_update(self, transfer_id: str) -> Any:
        return (await self.conn.execute(select(_T).where(_T.c.id == transfer_id).with_for_update())).one_or_none()

    async def refunded(self, transfer_id: str) -> int:
        query = select(func.coalesce(func.sum(_T.c.amount), 0)).where(
            _T.c.kind == "refund", _T.c.reference == transfer_id
        )
        return int((await self.conn.execute(query)).scalar_one())

    async def usage_rows(self, query: UsageQuery, cursor: tuple[datetime, str] | None, limit: int) -> list[Any]:
        conditions = [_U.c.account_id == query.account_id, *_range(_U.c.created_at, query.since, query.until)]
        if query.model:
            conditions.append(_U.c.model == query.model)
        if query.key_id:
            conditions.append(_U.c.key_id == query.key_id)
        if cursor is not None:
            created, row_id = cursor
            conditions.append((_U.c.created_at < created) | ((_U.c.created_at == created) & (_U.c.id < row_id)))
        stmt = select(_U).where(*conditions).order_by(_U.c.created_at.desc(), _U.c.id.desc()).limit(limit)
        return [UsageRow(**row._mapping) for row in (await self.conn.execute(stmt)).all()]

    def _day(self, column: Any) -> Any:
        if self.conn.dialect.name == "sqlite":
            return func.strftime("%Y-%m-%d", column)
        return func.to_char(column, "YYYY-MM-DD")

    async def daily(
        self,
        since: datetime | None,
        until: datetime | None,
        account_id: str | None = None,
        exclude: set[str] | None = None,
        min_accounts: int = 0,
    ) -> list[DailyStats]:
        """Per-day, per-model totals of the usage records in [since, until), of one account
        or of all but `exclude`, leaving out groups of fewer than `min_accounts` accounts."""
        conditions = _range(_U.c.created_at, since, until)
        if account_id is not None:
            conditions.insert(0, _U.c.account_id == account_id)
        if exclude:
            conditions.append(_U.c.account_id.notin_(sorted(exclude)))
        day = self._day(_U.c.created_at).label("day")
        totals = (func.sum(_U.c.input_tokens), func.sum(_U.c.output_tokens), func.sum(_U.c.cost_micros))
        stmt = select(day, _U.c.model, func.count(), *totals).where(*conditions)
        stmt = stmt.group_by(day, _U.c.model).order_by(day, _U.c.model)
        if min_accounts > 1:
            stmt = stmt.having(func.count(_U.c.account_id.distinct()) >= min_accounts)
        rows = (await self.conn.execute(stmt)).all()
        return [DailyStats(str(r[0]), r[1], int(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in rows]

    async def archived_daily(self, since: datetime | None, until: datetime | None) -> list[DailyStats]:
        query = select(_A).order_by(_A.c.day, _A.c.model)
        if since is not None:
            query = query.where(_A.c.day >= since.strftime("%Y-%m-%d"))
        if until is not None:
            query = query.where(_A.c.day < until.strftime("%Y-%m-%d"))
        return [DailyStats(**r._mapping) for r in (await self.conn.execute(query)).all()]

    async def add_anonymous(self, rows: list[DailyStats]) -> None:
        for s in rows:
            await self.conn.execute(store.upsert_add(self.conn, UsageDailyAnonymous, ["day", "model"], asdict(s)))

    async def delete_usage_before(self, cutoff: datetime) -> int:
        return (await self.conn.execute(delete(_U).where(_U.c.created_at < cutoff))).rowcount

    async def forget_keys_before(self, moment: datetime) -> None:
        await self.conn.execute(delete(_KEYS).where(_KEYS.c.created_at < moment))

    async def opening_balance(self, ledger_accounts: list[str], before: datetime) -> int:
        return sum([await store.sum_entries(self.conn, acct, before=before) for acct in ledger_accounts])

    async def statement_rows(self, ledger_accounts: list[str], start: datetime, end: datetime) -> list[Any]:
        """(transfer id, kind, time, reference, net change) of the transfers that moved these
        accounts' total in [start, end), in time order."""
        net = func.sum(_E.c.amount)
        query = (
            select(_T.c.id, _T.c.kind, _T.c.created_at, _T.c.reference, net)
            .select_from(_E.join(_T, _E.c.transfer_id == _T.c.id))
            .where(_E.c.ledger_account.in_(ledger_accounts), _E.c.created_at >= start, _E.c.created_at < end)
            .group_by(_T.c.id, _T.c.kind, _T.c.created_at, _T.c.reference)
            .having(net != 0)
            .order_by(_T.c.created_at, _T.c.id)
        )
        return list((await self.conn.execute(query)).all())


async def open_holds(engine: AsyncEngine) -> tuple[int, int]:
    """How many holds are open and how much they hold (the outstanding-holds gauges); uses
    the (status, expires_at) index."""
    query = select(func.count(), func.coalesce(func.sum(_H.c.amount), 0)).where(_H.c.status == "open")
    async with engine.connect() as conn:
        count, amount = (await conn.execute(query)).one()
    return int(count), int(amount)
