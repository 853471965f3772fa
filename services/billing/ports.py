"""What billing's rules need from storage: small Protocols the domain calls, as the proxy's
ports are. `store.SqlStore` implements them on SQLAlchemy (PostgreSQL, SQLite);
`tests/billing/fakes.py` in memory, so that the rules get unit tests without a database.

A `Transaction` is one database transaction: everything done through it commits together
or not at all (the domain raises to roll back). Rows come back as objects with attributes
(`hold.amount`, `hold.account_id`, ...). Lists of rows are locked in id order, the one order
every path locks in, so that no two transactions deadlock.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol

from .model import DailyStats, UsageQuery

Legs = Sequence[tuple[str, int]]


class KeyRows(Protocol):
    """Idempotency keys with their first results."""

    async def claim_key(self, scope: str, key: str, params: dict[str, Any]) -> dict[str, Any] | None: ...
    async def finish_key(self, scope: str, key: str, result: dict[str, Any]) -> None: ...
    async def record_key(self, scope: str, key: str, params: dict[str, Any], result: dict[str, Any]) -> bool: ...
    async def stored_key(self, scope: str, key: str) -> Any: ...
    async def stored_keys(self, scope: str, keys: list[str]) -> dict[str, tuple[str, str]]: ...
    async def record_keys(self, scope: str, done: list[tuple[str, str, Any]]) -> None: ...


class LedgerRows(Protocol):
    """Transfers, entries and the per-person running balances."""

    async def post_transfer(
        self, transfer_id: str, kind: str, account_id: str, legs: Legs, reference: str, amount: int, now: datetime
    ) -> dict[str, int]:
        """Write a transfer; the new per-person balances. `errors.Overdraft` when a debit
        would take one below zero."""

    async def insert_postings(self, transfers: list[dict[str, Any]], entries: list[dict[str, Any]]) -> None: ...
    async def balance_of(self, ledger_account: str) -> int: ...
    async def lock_balances(self, ledger_accounts: list[str]) -> dict[str, int]: ...
    async def lock_persons(self, account_ids: Sequence[str]) -> dict[str, int]: ...
    async def add_balances(self, deltas: dict[str, int]) -> None: ...
    async def ensure_holds_accounts(self, account_ids: list[str]) -> None: ...
    async def balances(self, account_id: str) -> tuple[int, int] | None: ...


class HoldRows(Protocol):
    """Holds, the API keys' spend, and usage records."""

    async def insert_holds(self, rows: list[dict[str, Any]]) -> None: ...
    async def take_open_hold(self, hold_id: str, status: str) -> Any:
        """Resolve an open hold (its row as it was), or None."""

    async def hold_status(self, hold_id: str) -> str | None: ...
    async def set_hold_status(self, hold_ids: list[str], status: str) -> None: ...
    async def lock_holds(self, hold_ids: list[str]) -> dict[str, Any]: ...
    async def take_from_holds(self, taken: dict[str, int]) -> None:
        """{hold: amount taken}: credit leases' draws (issue 15) lower their open holds'
        amounts (rows locked by `lock_holds`), in one statement."""

    async def expired_holds(self, now: datetime, limit: int) -> list[Any]: ...
    async def lock_key_spend(self, key_ids: list[str]) -> dict[str, tuple[int, int]]:
        """{key: (spent, held)}, rows created if missing."""

    async def add_key_held(self, held: dict[str, int]) -> None: ...
    async def resolve_key_spend(self, changes: dict[str, tuple[int, int]]) -> None:
        """{key: (held to remove, spent to add)}."""

    async def insert_usages(self, rows: list[tuple[Any, ...]]) -> None:
        """Usage records as tuples in `model.USAGE_COLUMNS` order."""


class CodeRows(Protocol):
    async def insert_code_batch(
        self, batch_id: str, amount: int, count: int, expires_at: datetime | None, now: datetime, hashes: list[str]
    ) -> None: ...
    async def code_terms(self, digest: str) -> Any:
        """(amount, expires_at) of a code's batch, or None for an unknown code."""

    async def take_code(self, digest: str, account_id: str, now: datetime) -> bool: ...


class ReportRows(Protocol):
    async def topup_for_update(self, transfer_id: str) -> Any: ...
    async def refunded(self, transfer_id: str) -> int: ...
    async def usage_rows(self, query: UsageQuery, cursor: tuple[datetime, str] | None, limit: int) -> list[Any]: ...
    async def daily(
        self,
        since: datetime | None,
        until: datetime | None,
        account_id: str | None = None,
        exclude: set[str] | None = None,
        min_accounts: int = 0,
    ) -> list[DailyStats]: ...
    async def archived_daily(self, since: datetime | None, until: datetime | None) -> list[DailyStats]: ...
    async def add_anonymous(self, rows: list[DailyStats]) -> None: ...
    async def delete_usage_before(self, cutoff: datetime) -> int: ...
    async def forget_keys_before(self, moment: datetime) -> None: ...
    async def opening_balance(self, ledger_accounts: list[str], before: datetime) -> int: ...
    async def statement_rows(self, ledger_accounts: list[str], start: datetime, end: datetime) -> list[Any]: ...


class Transaction(KeyRows, LedgerRows, HoldRows, CodeRows, ReportRows, Protocol):
    """One database transaction; PostgreSQL's one-statement forms when `Storage.one_statement`."""

    async def hold_in_one_statement(
        self, item: Any, hold_id: str, transfer_id: str, now: datetime, expires: datetime, digest: str
    ) -> Any: ...
    async def settle_in_one_statement(
        self, item: Any, cost: int, usage_id: str, transfer_id: str, now: datetime, digest: str
    ) -> Any: ...
    async def draw_in_one_statement(
        self, item: Any, cost: int, usage_id: str, transfer_id: str, now: datetime, digest: str
    ) -> Any:
        """A lease's draw within its rest (`pg.DRAW_PG`): (amount left or None, balance, recorded)."""


class Storage(Protocol):
    """Where billing keeps its rows."""

    one_statement: bool  # the store has the PostgreSQL one-statement hold, settle and draw

    def begin(self) -> AbstractAsyncContextManager[Transaction]:
        """A transaction, committed when the block ends without an exception."""

    def read(self) -> AbstractAsyncContextManager[Transaction]:
        """A connection for reading (no transaction to commit)."""

    def bind(self, conn: Any) -> Transaction:
        """The transaction a caller outside the domain already opened (cards, chain)."""
