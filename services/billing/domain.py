"""`Billing`: the one object the servicer, cards, chain and the privacy participant hold.

A thin facade over billing's concepts, each in its own module: `holds` (holds, settles,
releases, and `batch` for many at once), `credits` (grants, top-ups, refunds), `codes`
(redemption codes), `reports` (balances, usage, statistics, statements, retention). The rules
they share are plain functions in `rules`; values in `model`; refusals in `errors`. They reach
storage only through the ports in `ports`, which `sqlstore.SqlStore` implements on the
engine given here (the tests' in-memory fake implements them too). No gRPC and no SQL here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from .codes import Codes
from .credits import Credits
from .holds import Holds
from .model import (
    Balance,
    CodesResult,
    DailyStats,
    HoldIn,
    HoldResult,
    ReleaseIn,
    ReleaseResult,
    SettleIn,
    SettleResult,
    Statement,
    TransferResult,
    UsageIn,
    UsagePage,
    UsageQuery,
    check_account,
    check_key,
    new_id,
    utcnow,
)
from .ports import Storage
from .prices import PriceTable
from .reports import OptOuts, Reports

__all__ = [  # the names callers import from here
    "Billing", "HoldIn", "HoldResult", "ReleaseIn", "ReleaseResult", "SettleIn", "SettleResult", "UsageIn",
    "UsageQuery", "check_account", "check_key", "new_id",
]  # fmt: skip


class Billing:
    """The ledger and everything that moves money in it. `clock` (naive UTC now) may be
    replaced at any time; every part reads it through the facade."""

    def __init__(
        self,
        engine: Any,
        prices: PriceTable,
        secret: str,
        hold_ttl_s: int = 600,
        hold_max_ttl_s: int = 86_400,
        opt_outs: OptOuts | None = None,
        stats_min_accounts: int = 3,
        clock: Callable[[], datetime] = utcnow,
        idempotency_ttl_days: int = 7,
        storage: Storage | None = None,
    ) -> None:
        if storage is None:
            from .sqlstore import SqlStore  # the composition's default: SQL on `engine`

            storage = SqlStore(engine)
        self.engine = engine  # cards, chain and the participant open their own transactions on it
        self.storage = storage
        self.prices = prices
        self.clock = clock
        self.holds = Holds(storage, prices, self.now, hold_ttl_s, hold_max_ttl_s)
        self.credits = Credits(storage, self.now)
        self.codes = Codes(storage, secret, self.now, self.credits)
        self.reports = Reports(storage, prices, self.now, opt_outs, stats_min_accounts, idempotency_ttl_days)

    def now(self) -> datetime:
        return self.clock()

    # --- holds, settles, releases ------------------------------------------------------

    async def hold(
        self, account_id: str, amount: int, ttl_s: int, idempotency_key: str, key_id: str = "", key_cap: int = 0
    ) -> HoldResult:
        return await self.holds.hold(HoldIn(account_id, amount, ttl_s, idempotency_key, key_id, key_cap))

    async def hold_batch(self, items: list[HoldIn]) -> list[HoldResult | Exception]:
        return await self.holds.hold_batch(items)

    async def settle(self, item: SettleIn) -> SettleResult:
        return await self.holds.settle(item)

    async def settle_batch(self, items: list[SettleIn]) -> list[SettleResult | Exception]:
        return await self.holds.settle_batch(items)

    async def release(self, hold_id: str, idempotency_key: str, usage: UsageIn | None = None) -> ReleaseResult:
        return await self.holds.release(hold_id, idempotency_key, usage)

    async def release_batch(self, items: list[ReleaseIn]) -> list[ReleaseResult | Exception]:
        return await self.holds.release_batch(items)

    async def expire_holds(self, limit: int = 500) -> int:
        return await self.holds.expire_holds(limit)

    # --- credits in and out ------------------------------------------------------------

    async def grant(self, account_id: str, amount: int, reason: str, idempotency_key: str) -> TransferResult:
        return await self.credits.grant(account_id, amount, reason, idempotency_key)

    async def credit(
        self, conn: Any, account_id: str, amount: int, kind: str, source: str, reference: str
    ) -> TransferResult:
        """A top-up inside the caller's own transaction `conn` (cards, chain)."""
        return await self.credits.credit(self.storage.bind(conn), account_id, amount, kind, source, reference)

    async def refund(self, transfer_id: str, amount: int, reason: str, idempotency_key: str) -> TransferResult:
        return await self.credits.refund(transfer_id, amount, reason, idempotency_key)

    async def refund_in(self, conn: Any, transfer_id: str, amount: int) -> TransferResult:
        """A refund inside the caller's own transaction `conn` (the card webhook)."""
        return await self.credits.refund_in(self.storage.bind(conn), transfer_id, amount)

    async def create_codes(
        self, amount: int, count: int, expires_at: datetime | None, idempotency_key: str
    ) -> CodesResult:
        return await self.codes.create_codes(amount, count, expires_at, idempotency_key)

    async def redeem(self, account_id: str, code: str, idempotency_key: str) -> TransferResult:
        return await self.codes.redeem(account_id, code, idempotency_key)

    # --- reading -----------------------------------------------------------------------

    async def balance(self, account_id: str) -> Balance:
        return await self.reports.balance(account_id)

    def quote(self, model: str, input_tokens: int, output_tokens: int, at: datetime | None) -> tuple[int, Any]:
        return self.reports.quote(model, input_tokens, output_tokens, at)

    async def list_usage(self, query: UsageQuery) -> UsagePage:
        return await self.reports.list_usage(query)

    async def usage_stats(self, account_id: str, since: datetime | None, until: datetime | None) -> list[DailyStats]:
        return await self.reports.usage_stats(account_id, since, until)

    async def aggregate_stats(self, since: datetime | None, until: datetime | None) -> list[DailyStats]:
        return await self.reports.aggregate_stats(since, until)

    async def retention_sweep(self, retention_days: int) -> tuple[int, int]:
        return await self.reports.retention_sweep(retention_days)

    async def statement(self, account_id: str, month: str) -> Statement:
        return await self.reports.statement(account_id, month)
