"""Set-based holds and settles: many in one transaction and a fixed number of statements.

Both kinds share `run_batch`, which takes the locks first and the idempotency keys last,
the order of the single hold and settle (so batches and single calls never deadlock): lock
the rows the items touch, look the items' keys up (a key stored earlier replays its first
result, or is refused for other parameters), decide each fresh item in order against the
locked rows, write the batch, and store the keys with their results in one statement. A key
stored meanwhile by a concurrent request (it did not exist when looked up, under the locks)
aborts the whole batch, which then changed nothing, and the caller retries it. The reply is
sent only after the commit: an item reported done is durable, and the items of a batch that
fails as a whole were not acknowledged, so the caller retries them with the same keys. Items
that fail on their own (unknown hold, already resolved, insufficient credit, a key's spend
limit, bad input, reused key) are reported per item and change nothing.

Settles (`BatchSettler`) lock their holds in id order, then the wallets and holds accounts
they touch in id order; holds (`BatchHolder`) create missing holds accounts, lock the ledger
rows in id order, then the API keys' spend rows in id order (the single hold's order). Each
item is decided in Python exactly as a single call would be, against running balances and
caps (a running wallet balance decides what an amount above a hold can take).

The ledger side of a batch is posted per person (`Postings`): one transfer per account and
batch, whose entries are the sums of its items' legs, instead of one transfer per call. The
ledger's invariants hold as before (each transfer sums to zero, balances are the sums of
their entries); the per-call detail lives in the hold and usage rows, and a batch of 1,000
calls over 64 accounts writes 64 transfers and under 200 entries instead of 1,000 and 3,000.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from services.runtime.db import insert_rows
from services.runtime.errors import AlreadyExists, DomainError, FailedPrecondition, NotFound

from . import store
from .domain import (
    Billing,
    HoldIn,
    HoldResult,
    SettleIn,
    SettleResult,
    insufficient_credit,
    iso,
    key_spend_limit,
    new_id,
)
from .store import Entry, Hold, Transfer, UsageRow

USAGE_COLUMNS = (
    "id", "account_id", "key_id", "model", "provider", "input_tokens", "output_tokens", "cost_micros",
    "shortfall_micros", "status", "latency_ms", "tokens_estimated", "created_at",
)  # fmt: skip
Outcome = SettleResult | Exception
HoldOutcome = HoldResult | Exception


class BatchWork(Protocol):
    """What one kind of batch does inside `run_batch`'s transaction."""

    def validate(self, item: Any) -> None:
        """Check one item (a DomainError fails that item alone)."""

    async def lock(self, conn: Any, items: Sequence[Any]) -> None:
        """Lock (in the fixed order) every row the valid items may touch."""

    def decide(self, item: Any) -> Any:
        """The outcome of one fresh item, against the locked rows as the batch left them."""

    async def write(self, conn: Any) -> None:
        """Write what the decided items changed."""


def reused_key(scope: str) -> AlreadyExists:
    return AlreadyExists(
        f"idempotency key already used for a different {scope} request", reason="idempotency_key_reused"
    )


async def run_batch(
    billing: Billing,
    scope: str,
    items: list[Any],
    params_of: Callable[[Any], dict[str, Any]],
    result_type: type,
    work: BatchWork,
) -> list[Any]:
    """What holds and settles in batches share, in one transaction: validate each item; lock
    the rows; look the keys up (replaying stored results or refusing other parameters); let
    `work` decide the fresh items in order and write them; store their keys with their
    results; answer repeats of a key within the batch like its first item."""
    results: dict[int, Any] = {}
    firsts: dict[str, int] = {}  # in the order of first appearance: items are decided in order
    for i, item in enumerate(items):
        try:
            work.validate(item)
        except DomainError as error:
            results[i] = error
            continue
        firsts.setdefault(item.idempotency_key, i)
    hashes = {k: store.params_hash(params_of(items[i])) for k, i in firsts.items()}
    async with billing.engine.begin() as conn:
        await work.lock(conn, [items[i] for i in firsts.values()])
        stored = await store.stored_keys(conn, scope, list(firsts))
        for key, i in firsts.items():
            if key in stored:
                digest, result = stored[key]
                results[i] = result_type(**json.loads(result)) if digest == hashes[key] else reused_key(scope)
            else:
                results[i] = work.decide(items[i])
        await work.write(conn)
        done = [
            (k, hashes[k], results[i])
            for k, i in firsts.items()
            if k not in stored and not isinstance(results[i], Exception)
        ]
        await store.record_keys(conn, scope, done)
    for i, item in enumerate(items):  # repeats of a key within the batch
        first = firsts.get(item.idempotency_key)
        if i not in results and first is not None:
            results[i] = results[first] if params_of(item) == params_of(items[first]) else reused_key(scope)
    return [results[i] for i in range(len(items))]


class Postings:
    """A batch's ledger legs, summed per person: one transfer per account and kind."""

    def __init__(self, kind: str, now: datetime) -> None:
        self.kind, self.now, self.reference = kind, now, f"batch:{new_id()}"
        self.legs: dict[str, dict[str, int]] = {}
        self.amounts: dict[str, int] = {}

    def add(self, account: str, legs: Sequence[tuple[str, int]], amount: int) -> None:
        mine = self.legs.setdefault(account, {})
        for ledger_account, delta in legs:
            mine[ledger_account] = mine.get(ledger_account, 0) + delta
        self.amounts[account] = self.amounts.get(account, 0) + amount

    def deltas(self) -> dict[str, int]:
        """The batch's net change per ledger account."""
        out: dict[str, int] = {}
        for legs in self.legs.values():
            for ledger_account, delta in legs.items():
                out[ledger_account] = out.get(ledger_account, 0) + delta
        return out

    async def insert(self, conn: Any) -> None:
        """Write the transfers and their entries (the balances are `deltas`, applied apart)."""
        transfers, entries = [], []
        for account, legs in self.legs.items():
            transfer_id = new_id()
            transfers.append(
                {"id": transfer_id, "kind": self.kind, "account_id": account, "reference": self.reference,
                 "amount": self.amounts[account], "created_at": self.now}
            )  # fmt: skip
            entries += [
                {"transfer_id": transfer_id, "ledger_account": ledger_account, "amount": delta, "created_at": self.now}
                for ledger_account, delta in legs.items()
                if delta
            ]
        await insert_rows(conn, Transfer, transfers)
        await insert_rows(conn, Entry, entries)


class BatchSettler:
    def __init__(self, billing: Billing) -> None:
        self.billing = billing

    async def run(self, items: list[SettleIn]) -> list[Outcome]:
        billing = self.billing
        work = _SettleWork(billing)
        return await run_batch(billing, "settle", items, SettleIn.params, SettleResult, work)


class _SettleWork:
    """Settles decided against locked holds, written set-wise, the balances last.

    A settle within its hold only adds to the wallet (the rest of the hold comes back), so
    its decision needs no balance: the batch then locks its ledger rows only at the end,
    to apply its net changes, and holds those locks just until the commit instead of for
    the whole batch (batches in flight on the same accounts overlap instead of queueing).
    Each item's balance after it is the locked balance plus the batch's changes up to it,
    as if the batch had run alone at that moment. A batch with an item above its hold
    (which takes what the wallet has) locks its ledger rows first, before deciding.
    """

    def __init__(self, billing: Billing) -> None:
        self.billing = billing
        self.now = billing.clock()
        self.holds: dict[str, Any] = {}
        self.costs: dict[int, int] = {}
        self.balances: dict[str, int] | None = None  # locked ledger balances, once locked
        self.moves: list[tuple[SettleResult, str, int]] = []  # (result, wallet, change), in order
        self.seen: set[str] = set()
        self.settled: list[str] = []
        self.postings = Postings("usage", self.now)
        self.usage: list[tuple[Any, ...]] = []  # in USAGE_COLUMNS order
        self.key_spend: dict[str, tuple[int, int]] = {}

    def validate(self, item: SettleIn) -> None:
        self.costs[id(item)] = self.billing.validate_settle(item)

    async def lock(self, conn: Any, items: Sequence[SettleIn]) -> None:
        self.holds = await store.lock_holds(conn, [item.hold_id for item in items])
        holds = [(self.holds.get(item.hold_id), self.costs[id(item)]) for item in items]
        if any(hold is not None and cost > hold.amount for hold, cost in holds):  # above a hold: lock now
            self.balances = await self._lock_ledger(conn)

    async def _lock_ledger(self, conn: Any) -> dict[str, int]:
        return await store.lock_persons(conn, [h.account_id for h in self.holds.values()])

    def decide(self, item: SettleIn) -> Outcome:
        hold = self.holds.get(item.hold_id)
        if hold is None:
            return NotFound("no such hold", field_violations={"hold_id": "unknown"})
        status = "settled" if hold.id in self.seen else hold.status  # a second item on it finds it settled
        if status != "open":
            return FailedPrecondition(f"the hold is already {status}", reason="hold_resolved")
        self.seen.add(hold.id)
        return self._charge(item, hold, self.costs[id(item)])

    def _charge(self, item: SettleIn, hold: Any, cost: int) -> SettleResult:
        account = hold.account_id
        wallet = store.wallet(account)
        from_hold = min(cost, hold.amount)
        extra = cost - from_hold
        taken = min(extra, self.balances.get(wallet, 0)) if extra and self.balances is not None else 0
        released, charged = hold.amount - from_hold, from_hold + taken
        legs = ((store.holds_account(account), -hold.amount), (wallet, released - taken),
                (store.system("revenue"), charged))  # fmt: skip
        self.postings.add(account, legs, charged)
        usage_id, u = new_id(), item.usage
        self.usage.append(
            (usage_id, account, u.key_id, u.model, u.provider, u.input_tokens, u.output_tokens, charged,
             extra - taken, u.status, u.latency_ms, u.tokens_estimated,
             store.naive(u.started_at) if u.started_at else self.now)
        )  # fmt: skip
        self.settled.append(hold.id)
        if hold.key_id:
            held, spent = self.key_spend.get(hold.key_id, (0, 0))
            self.key_spend[hold.key_id] = (held + hold.amount, spent + charged)
        result = SettleResult(charged, released, extra - taken, usage_id, 0)
        if self.balances is not None:
            self.balances[wallet] = self.balances.get(wallet, 0) + released - taken
        self.moves.append((result, wallet, released - taken))
        return result

    async def write(self, conn: Any) -> None:
        await insert_rows(conn, UsageRow, self.usage, USAGE_COLUMNS)
        await self.postings.insert(conn)
        await store.set_hold_status(conn, self.settled, "settled")
        running = await self._lock_ledger(conn) if self.moves else {}  # the ledger's locks, from here
        for result, wallet, change in self.moves:
            running[wallet] = running.get(wallet, 0) + change
            result.balance_micros = running[wallet]
        await store.add_balances(conn, self.postings.deltas())
        await store.resolve_key_spend(conn, self.key_spend)


class BatchHolder:
    def __init__(self, billing: Billing) -> None:
        self.billing = billing

    async def run(self, items: list[HoldIn]) -> list[HoldOutcome]:
        billing = self.billing
        work = _HoldWork(billing)
        return await run_batch(billing, "hold", items, HoldIn.params, HoldResult, work)


class _HoldWork:
    """Holds decided against locked balances and caps, written set-wise."""

    def __init__(self, billing: Billing) -> None:
        self.billing = billing
        self.now = billing.clock()
        self.balances: dict[str, int] = {}
        self.spend: dict[str, tuple[int, int]] = {}
        self.holds: list[dict[str, Any]] = []
        self.postings = Postings("hold", self.now)
        self.key_held: dict[str, int] = {}

    def validate(self, item: HoldIn) -> None:
        self.billing.validate_hold(item)

    async def lock(self, conn: Any, items: Sequence[HoldIn]) -> None:
        accounts = [item.account_id for item in items]
        await store.ensure_holds_accounts(conn, accounts)
        self.balances = await store.lock_persons(conn, accounts)
        self.spend = await store.lock_key_spend(conn, [item.key_id for item in items if item.key_id])

    def decide(self, item: HoldIn) -> HoldOutcome:
        wallet, held_account = store.wallet(item.account_id), store.holds_account(item.account_id)
        if self.balances.get(wallet, 0) < item.amount:
            return insufficient_credit()
        if item.key_id:
            spent, held = self.spend[item.key_id]
            if item.key_cap and spent + held + item.amount > item.key_cap:
                return key_spend_limit()
            self.spend[item.key_id] = (spent, held + item.amount)
            self.key_held[item.key_id] = self.key_held.get(item.key_id, 0) + item.amount
        self.balances[wallet] -= item.amount
        self.balances[held_account] = self.balances.get(held_account, 0) + item.amount
        self.postings.add(item.account_id, ((wallet, -item.amount), (held_account, item.amount)), item.amount)
        hold_id = new_id()
        expires = self.billing.hold_expiry(item, self.now)
        self.holds.append(
            {"id": hold_id, "account_id": item.account_id, "key_id": item.key_id, "amount": item.amount,
             "status": "open", "created_at": self.now, "expires_at": expires}
        )  # fmt: skip
        return HoldResult(hold_id, item.amount, iso(expires), self.balances[wallet])

    async def write(self, conn: Any) -> None:
        await insert_rows(conn, Hold, self.holds)
        await self.postings.insert(conn)
        await store.add_balances(conn, self.postings.deltas())
        await store.add_key_held(conn, self.key_held)
