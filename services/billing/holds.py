"""Holds, settles and releases: the hot path, one call at a time (the batches are in `batch`).

Every mutation here runs in one transaction with its idempotency key stored with its result
after the work (`Holds.once`, one statement fewer than claim + finish): a retry with the same
key and parameters returns the stored first result, other parameters are refused, and a
failed attempt (insufficient credit, bad input) rolls back with everything else, so nothing
is half-done and the key stays free. On PostgreSQL a hold, a settle within its hold, and a
draw on a credit lease (`SettleIn.lease`, issue 15) within what is left of it, is one
statement (`pg.HOLD_PG`, `pg.SETTLE_PG`, `pg.DRAW_PG`) that states the rules of `rules` in SQL;
any other settle or draw runs step by step (`Holds._settle_steps`, `Holds._draw_steps`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from services.runtime.errors import Aborted, DomainError, InvalidArgument, Violations

from . import batch
from .errors import KeyTaken, Overdraft, hold_resolved, insufficient_credit, key_spend_limit, no_such_hold
from .idempotency import params_hash, stored_result
from .model import (
    MAX_MICROS,
    HoldIn,
    HoldResult,
    ReleaseIn,
    ReleaseResult,
    SettleIn,
    SettleResult,
    UsageIn,
    check_account,
    check_amount,
    check_key,
    iso,
    new_id,
    usage_row,
    wallet,
)
from .ports import Storage, Transaction
from .prices import PriceTable
from .rules import draw_legs, hold_legs, hold_refusal, release_legs, settle_legs, settle_split


class Holds:
    """Credit reserved for a call, then charged (settle) or given back (release, expiry)."""

    def __init__(
        self,
        storage: Storage,
        prices: PriceTable,
        clock: Callable[[], datetime],
        hold_ttl_s: int = 600,
        hold_max_ttl_s: int = 86_400,
    ) -> None:
        self.storage = storage
        self.prices = prices
        self.clock = clock
        self.hold_ttl_s = hold_ttl_s
        self.hold_max_ttl_s = hold_max_ttl_s

    # --- holds -----------------------------------------------------------------------

    def validate_hold(self, item: HoldIn) -> None:
        v = Violations()
        check_account(v, item.account_id)
        check_amount(v, item.amount)
        v.check(0 <= item.ttl_s <= self.hold_max_ttl_s, "ttl_seconds", f"must be between 0 and {self.hold_max_ttl_s}")
        check_key(v, item.idempotency_key)
        v.check(len(item.key_id) <= 64, "key_id", "at most 64 characters")
        v.check(item.key_cap >= 0, "key_spend_cap_micros", "must not be negative")
        v.raise_if_any()

    def hold_expiry(self, item: HoldIn, now: datetime) -> datetime:
        return now + timedelta(seconds=item.ttl_s or self.hold_ttl_s)

    async def hold(self, item: HoldIn) -> HoldResult:
        self.validate_hold(item)
        one_statement = self.storage.one_statement

        async def work(tx: Transaction) -> HoldResult:
            if one_statement:
                return await self._hold_in_one_statement(tx, item)
            return await self._hold_steps(tx, item)

        return await self.once(
            "hold", item.idempotency_key, item.params(), work, lambda first: HoldResult(**first), one_statement
        )

    async def _hold_in_one_statement(self, tx: Transaction, item: HoldIn) -> HoldResult:
        """The hold on PostgreSQL: one round trip instead of seven; it stores the idempotency
        key with the result itself. Any refusal raises, so that `once` rolls it back."""
        hold_id, now = new_id(), self.clock()
        expires = self.hold_expiry(item, now)
        row = await tx.hold_in_one_statement(item, hold_id, new_id(), now, expires, params_hash(item.params()))
        if row.balance is None:
            raise insufficient_credit()
        if item.key_id and (not row.reserved or (item.key_cap and item.amount > item.key_cap)):
            raise key_spend_limit()
        if not row.recorded:
            raise KeyTaken
        return HoldResult(hold_id, item.amount, iso(expires), int(row.balance))

    async def _hold_steps(self, tx: Transaction, item: HoldIn) -> HoldResult:
        """The hold one statement at a time (SQLite): the hold's row first (on SQLite the
        first write takes the database's write lock, so what is read next stays true), then
        the decision of `rules.hold_refusal`, then the ledger and the key's spend (the
        ledger's conditional debit still guards the balance)."""
        hold_id, now = new_id(), self.clock()
        expires = self.hold_expiry(item, now)
        await tx.insert_holds(
            [{"id": hold_id, "account_id": item.account_id, "key_id": item.key_id, "amount": item.amount,
              "status": "open", "created_at": now, "expires_at": expires}]
        )  # fmt: skip
        available = await tx.balance_of(wallet(item.account_id))
        spend = await tx.lock_key_spend([item.key_id]) if item.key_id else {}
        spent, held = spend.get(item.key_id, (0, 0))
        refusal = hold_refusal(available, item.amount, item.key_id, spent + held, item.key_cap)
        if refusal is not None:
            raise refusal
        legs = hold_legs(item.account_id, item.amount)
        try:
            after = await tx.post_transfer(new_id(), "hold", item.account_id, legs, hold_id, item.amount, now)
        except Overdraft:
            raise insufficient_credit() from None
        if item.key_id:  # after the ledger rows: every path locks ledger rows, then the key's row
            await tx.add_key_held({item.key_id: item.amount})
        return HoldResult(hold_id, item.amount, iso(expires), after[wallet(item.account_id)])

    async def hold_batch(self, items: list[HoldIn]) -> list[HoldResult | Exception]:
        """Place many holds in one transaction (see `batch`); one outcome per item. A batch of
        one takes the single hold's path."""
        if len(items) == 1:
            try:
                return [await self.hold(items[0])]
            except DomainError as error:
                return [error]
        return await batch.hold_batch(self, items)

    # --- idempotency -------------------------------------------------------------------

    async def once(
        self,
        scope: str,
        key: str,
        params: dict[str, Any],
        work: Callable[[Transaction], Awaitable[Any]],
        load: Callable[[dict[str, Any]], Any],
        key_stored_by_work: bool = False,
    ) -> Any:
        """Run a mutation once per idempotency key, with the key stored in the same statement
        as its result, after the work (one statement instead of claim + finish), or by the
        work itself (`key_stored_by_work`: it raises `KeyTaken` when the key was taken). A repeat
        either fails in its work (the hold is settled, the credit is spent) or finds the key
        taken when it stores it; both roll back and return the stored first result. A
        concurrent repeat waits on the key's unique index until the first commits."""
        try:
            async with self.storage.begin() as tx:
                result = await work(tx)
                if key_stored_by_work:
                    return result
                if not await tx.record_key(scope, key, params, vars(result)):
                    raise KeyTaken
                return result
        except (KeyTaken, DomainError) as error:
            async with self.storage.read() as tx:
                stored = await tx.stored_key(scope, key)
            if stored is None or not stored.result:
                if isinstance(error, KeyTaken):
                    raise Aborted("a concurrent request with this idempotency key is in progress; retry") from None
                raise
            return load(stored_result(scope, stored.params_hash, stored.result, params_hash(params)))

    # --- settles -----------------------------------------------------------------------

    def validate_settle(self, item: SettleIn, prefix: str = "") -> int:
        """Check a settle; its cost (the actual amount given, or the usage priced)."""
        v = Violations()
        v.check(bool(item.hold_id), f"{prefix}hold_id", "required")
        v.check(0 <= item.actual_micros <= MAX_MICROS, f"{prefix}actual_micros", "must not be negative")
        check_key(v, item.idempotency_key)
        item.usage.validate(v, f"{prefix}usage")
        v.raise_if_any()
        return item.actual_micros or self.price_usage(item.usage)

    def price_usage(self, usage: UsageIn) -> int:
        """The cost of a call at the price in force when it started."""
        when = (usage.started_at or self.clock().replace(tzinfo=UTC)).astimezone(UTC)
        try:
            cost, _ = self.prices.quote(usage.model, usage.input_tokens, usage.output_tokens, when)
        except InvalidArgument as error:
            raise InvalidArgument(error.message, field_violations={"usage.model": "no price for this model"}) from None
        return cost

    async def settle(self, item: SettleIn) -> SettleResult:
        cost = self.validate_settle(item)
        params = item.params()
        one_statement = self.storage.one_statement
        steps = self._draw_steps if item.lease else self._settle_steps

        async def work(tx: Transaction) -> SettleResult:
            if not one_statement:
                return await steps(tx, item, cost)
            done = await self._in_one_statement(tx, item, cost, params)
            if done is None:  # not open, or above the hold (a lease's rest): step by step, storing the key too
                done = await steps(tx, item, cost)
                if not await tx.record_key("settle", item.idempotency_key, params, vars(done)):
                    raise KeyTaken
            return done

        return await self.once(
            "settle", item.idempotency_key, params, work, lambda first: SettleResult(**first), one_statement
        )

    async def _in_one_statement(
        self, tx: Transaction, item: SettleIn, cost: int, params: dict[str, Any]
    ) -> SettleResult | None:
        """The settle (`pg.SETTLE_PG`) or a lease's draw (`pg.DRAW_PG`) on PostgreSQL when the
        cost is within the hold: one round trip instead of about nine, the idempotency key
        stored with the result. None when it wrote nothing (and no round trip for a draw of
        cost 0): the hold is not open, holds less than the cost, or the draw moves no money;
        the step path then decides as ever. A settle gives back the rest of its hold, a draw
        leaves it in the lease."""
        if item.lease and cost <= 0:
            return None
        statement = tx.draw_in_one_statement if item.lease else tx.settle_in_one_statement
        usage_id = new_id()
        row = await statement(item, cost, usage_id, new_id(), self.clock(), params_hash(params))
        if row.amount is None:
            return None
        if not row.recorded:
            raise KeyTaken
        released = 0 if item.lease else settle_split(int(row.amount), cost, 0).released
        return SettleResult(cost, released, 0, usage_id, int(row.balance))

    async def _settle_steps(self, tx: Transaction, item: SettleIn, cost: int) -> SettleResult:
        hold = await self._take_open_hold(tx, item.hold_id, "settled")
        account = hold.account_id
        available = await self._available_locked(tx, account) if cost > hold.amount else 0
        split = settle_split(hold.amount, cost, available)
        now, usage_id = self.clock(), new_id()
        await tx.insert_usages([usage_row(usage_id, account, item.usage, split.charged, split.shortfall, now)])
        legs = settle_legs(account, hold.amount, split)
        after = await tx.post_transfer(new_id(), "usage", account, legs, item.hold_id, split.charged, now)
        if hold.key_id:
            await tx.resolve_key_spend({hold.key_id: (hold.amount, split.charged)})
        balance = after.get(wallet(account))
        if balance is None:
            balance = await tx.balance_of(wallet(account))
        return SettleResult(split.charged, split.released, split.shortfall, usage_id, balance)

    async def _draw_steps(self, tx: Transaction, item: SettleIn, cost: int) -> SettleResult:
        """A call's cost drawn from a credit lease (issue 15): a proxy's long hold that many
        calls draw on, each draw taking its cost from the hold and leaving it open with the
        rest (a Release or the sweeper returns that). A lease that has ended (the replay of a
        proxy's outbox after its lease expired) leaves the cost to the wallet, as far as it
        goes. Locks in the order of every path: the hold's row, the ledger rows, the key's row."""
        hold = (await tx.lock_holds([item.hold_id])).get(item.hold_id)
        if hold is None:
            raise no_such_hold()
        account = hold.account_id
        remaining = hold.amount if hold.status == "open" else 0
        available = await self._available_locked(tx, account) if cost > remaining else 0
        split = settle_split(remaining, cost, available)
        now, usage_id = self.clock(), new_id()
        await tx.insert_usages([usage_row(usage_id, account, item.usage, split.charged, split.shortfall, now)])
        if split.from_hold:
            await tx.take_from_holds({hold.id: split.from_hold})
        after: dict[str, int] = {}
        if split.charged:  # a failed call's usage (cost 0) moves no money: no transfer
            legs = draw_legs(account, split)
            after = await tx.post_transfer(new_id(), "usage", account, legs, hold.id, split.charged, now)
            if hold.key_id:
                await tx.resolve_key_spend({hold.key_id: (split.from_hold, split.charged)})
        balance = after.get(wallet(account))
        if balance is None:
            balance = await tx.balance_of(wallet(account))
        return SettleResult(split.charged, 0, split.shortfall, usage_id, balance)

    async def _available_locked(self, tx: Transaction, account: str) -> int:
        """The wallet balance, with the account's ledger rows locked in id order (as every
        transfer locks them), so that this lock cannot deadlock against a concurrent hold."""
        return (await tx.lock_persons([account])).get(wallet(account), 0)

    async def _take_open_hold(self, tx: Transaction, hold_id: str, status: str) -> Any:
        """Resolve an open hold in one statement (the UPDATE takes the row lock, and a concurrent
        resolver waits, then finds it no longer open); the hold's row as it was."""
        taken = await tx.take_open_hold(hold_id, status)
        if taken is not None:
            return taken
        found = await tx.hold_status(hold_id)
        if found is None:
            raise no_such_hold()
        raise hold_resolved(found)

    async def settle_batch(self, items: list[SettleIn]) -> list[SettleResult | Exception]:
        """Settle many holds in one transaction (see `batch`); one outcome per item. A batch of
        one (a quiet proxy's) takes the single settle's path: fewer statements."""
        if len(items) == 1:
            try:
                return [await self.settle(items[0])]
            except DomainError as error:
                return [error]
        return await batch.settle_batch(self, items)

    # --- releases ----------------------------------------------------------------------

    def validate_release(self, item: ReleaseIn, prefix: str = "") -> None:
        v = Violations()
        v.check(bool(item.hold_id), f"{prefix}hold_id", "required")
        check_key(v, item.idempotency_key)
        if item.usage is not None:
            item.usage.validate(v, f"{prefix}usage")
        v.raise_if_any()

    async def release(self, hold_id: str, idempotency_key: str, usage: UsageIn | None = None) -> ReleaseResult:
        item = ReleaseIn(hold_id, idempotency_key, usage)
        self.validate_release(item)

        async def work(tx: Transaction) -> ReleaseResult:
            hold = await self._take_open_hold(tx, hold_id, "released")
            return await self._release(tx, hold, None, usage)

        return await self.once("release", idempotency_key, item.params(), work, lambda first: ReleaseResult(**first))

    async def release_batch(self, items: list[ReleaseIn]) -> list[ReleaseResult | Exception]:
        """Release many holds in one transaction (see `batch`); a batch of one takes the
        single release's path."""
        if len(items) == 1:
            try:
                return [await self.release(items[0].hold_id, items[0].idempotency_key, items[0].usage)]
            except DomainError as error:
                return [error]
        return await batch.release_batch(self, items)

    async def _release(self, tx: Transaction, hold: Any, status: str | None, usage: UsageIn | None) -> ReleaseResult:
        """Return a hold's amount to the wallet; `status` closes the hold (None: already closed)."""
        account, now = hold.account_id, self.clock()
        if usage is not None:
            await tx.insert_usages([usage_row(new_id(), account, usage, 0, 0, now)])
        if hold.amount:  # a credit lease drawn to nothing (issue 15) has no money to move
            legs = release_legs(account, hold.amount)
            after = await tx.post_transfer(new_id(), "release", account, legs, hold.id, hold.amount, now)
            balance = after[wallet(account)]
        else:
            balance = await tx.balance_of(wallet(account))
        if status is not None:
            await tx.set_hold_status([hold.id], status)
        if hold.key_id and hold.amount:
            await tx.resolve_key_spend({hold.key_id: (hold.amount, 0)})
        return ReleaseResult(hold.amount, balance)

    async def expire_holds(self, limit: int = 500) -> int:
        """Release open holds past their ttl (the sweeper); returns how many."""
        async with self.storage.begin() as tx:
            holds = await tx.expired_holds(self.clock(), limit)
            for hold in holds:
                await self._release(tx, hold, "expired", None)
        return len(holds)
