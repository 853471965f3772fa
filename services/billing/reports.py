"""Reading the ledger: balances, quotes, usage listings, statistics, statements; and the
retention sweep that turns old usage into anonymous aggregates (P5.2).

Usage listings page by keyset: the page token encodes `(created_at, id)` of the last row.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from services.runtime.errors import InvalidArgument, Unavailable, Violations

from .model import (
    Balance,
    DailyStats,
    Statement,
    StatementLine,
    UsagePage,
    UsageQuery,
    check_account,
    holds_account,
    wallet,
)
from .ports import Storage
from .prices import PriceTable

OptOuts = Callable[[], Awaitable[set[str]]]


def encode_cursor(created_at: datetime, row_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{row_id}".encode()).decode()


def decode_cursor(token: str) -> tuple[datetime, str]:
    try:
        created, row_id = base64.urlsafe_b64decode(token.encode()).decode().split("|", 1)
        return datetime.fromisoformat(created), row_id
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("malformed page token", field_violations={"page.page_token": "not a token"}) from None


def merge_daily(archived: list[DailyStats], live: list[DailyStats]) -> list[DailyStats]:
    """Swept days' anonymous totals plus the live records' totals, per (day, model)."""
    merged = {(s.day, s.model): s for s in archived}
    for s in live:
        old = merged.get((s.day, s.model))
        if old is not None:
            s = DailyStats(
                s.day, s.model, s.requests + old.requests, s.input_tokens + old.input_tokens,
                s.output_tokens + old.output_tokens, s.cost_micros + old.cost_micros,
            )  # fmt: skip
        merged[(s.day, s.model)] = s
    return [merged[k] for k in sorted(merged)]


def month_range(month: str) -> tuple[datetime, datetime]:
    """The first moment of a `YYYY-MM` month and of the next (naive UTC)."""
    start = datetime(int(month[:4]), int(month[5:]), 1)
    return start, datetime(start.year + start.month // 12, start.month % 12 + 1, 1)


class Reports:
    def __init__(
        self,
        storage: Storage,
        prices: PriceTable,
        clock: Callable[[], datetime],
        opt_outs: OptOuts | None = None,
        stats_min_accounts: int = 3,
        idempotency_ttl_days: int = 7,
    ) -> None:
        self.storage = storage
        self.prices = prices
        self.clock = clock
        self.opt_outs = opt_outs
        self.stats_min_accounts = stats_min_accounts
        self.idempotency_ttl_days = idempotency_ttl_days

    async def balance(self, account_id: str) -> Balance:
        """Available and held credit; an account billing has never seen has none (auth owns
        accounts, so billing cannot tell a new account from an unknown one)."""
        v = Violations()
        check_account(v, account_id)
        v.raise_if_any()
        async with self.storage.read() as tx:
            found = await tx.balances(account_id)
        available, held = found or (0, 0)
        return Balance(account_id, available, held)

    def quote(self, model: str, input_tokens: int, output_tokens: int, at: datetime | None) -> tuple[int, Any]:
        v = Violations()
        v.check(bool(model), "model", "required")
        v.check(input_tokens >= 0, "input_tokens", "must not be negative")
        v.check(output_tokens >= 0, "output_tokens", "must not be negative")
        v.raise_if_any()
        return self.prices.quote(model, input_tokens, output_tokens, at or datetime.now(UTC))

    async def list_usage(self, query: UsageQuery) -> UsagePage:
        v = Violations()
        check_account(v, query.account_id)
        v.check(query.page_size >= 0, "page.page_size", "must not be negative")
        v.raise_if_any()
        size = min(query.page_size or 50, 1000)
        cursor = decode_cursor(query.page_token) if query.page_token else None
        async with self.storage.read() as tx:
            rows = await tx.usage_rows(query, cursor, size + 1)
        token = encode_cursor(rows[size - 1].created_at, rows[size - 1].id) if len(rows) > size else ""
        return UsagePage(rows[:size], token)

    async def usage_stats(self, account_id: str, since: datetime | None, until: datetime | None) -> list[DailyStats]:
        """Daily per-model totals of one account, for its dashboard (P2.4)."""
        async with self.storage.read() as tx:
            return await tx.daily(since, until, account_id=account_id)

    async def aggregate_stats(self, since: datetime | None, until: datetime | None) -> list[DailyStats]:
        """Daily per-model totals across accounts (P2.4): accounts that opted out of analytics
        are left out (P7.3), and groups of fewer than `stats_min_accounts` accounts are
        suppressed so that no row describes one person. Swept days come from the anonymous
        aggregates that outlive the records (P5.2)."""
        opted_out = await self.opt_outs() if self.opt_outs else set()
        async with self.storage.read() as tx:
            live = await tx.daily(since, until, exclude=opted_out, min_accounts=self.stats_min_accounts)
            archived = await tx.archived_daily(since, until)
        return merge_daily(archived, live)

    async def retention_sweep(self, retention_days: int) -> tuple[int, int]:
        """Delete usage records older than the retention (P5.2), first rolling them into
        anonymous daily per-model aggregates (without opted-out accounts, P7.3); forget
        idempotency keys older than `idempotency_ttl_days`.
        Returns (deleted records, aggregate rows touched)."""
        v = Violations()
        v.check(retention_days > 0, "retention_days", "must be positive")
        v.raise_if_any()
        cutoff = self.clock() - timedelta(days=retention_days)
        try:
            opted_out: set[str] | None = await self.opt_outs() if self.opt_outs else set()
        except Unavailable:
            opted_out = None  # deleting on time (P5.2) wins over keeping the aggregate
        async with self.storage.begin() as tx:
            rows = await tx.daily(None, cutoff, exclude=opted_out) if opted_out is not None else []
            await tx.add_anonymous(rows)
            deleted = await tx.delete_usage_before(cutoff)
            await tx.forget_keys_before(self.clock() - timedelta(days=self.idempotency_ttl_days))
        return deleted, len(rows)

    async def statement(self, account_id: str, month: str) -> Statement:
        """The month's movements of the account's credit (available plus held), opening and
        closing balances. Moves between its own wallet and holds net to zero and are left out."""
        v = Violations()
        check_account(v, account_id)
        match = re.fullmatch(r"(\d{4})-(\d{2})", month)
        v.check(match is not None and 1 <= int(match.group(2)) <= 12, "month", "must be YYYY-MM")
        v.raise_if_any()
        start, end = month_range(month)
        mine = [wallet(account_id), holds_account(account_id)]
        async with self.storage.read() as tx:
            opening = await tx.opening_balance(mine, start)
            rows = await tx.statement_rows(mine, start, end)
        lines = [StatementLine(r[0], r[1], int(r[4]), r[2], r[3]) for r in rows]
        return Statement(month, opening, opening + sum(x.amount_micros for x in lines), lines)
