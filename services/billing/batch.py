"""Set-based holds, settles and releases: many in one transaction and a fixed number of statements.

All kinds share `run_batch`, which takes the locks first and the idempotency keys last,
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

Settles (`settle_batch`) and releases (`release_batch`) lock their holds in id order, then
the wallets and holds accounts they touch in id order; holds (`hold_batch`) create missing
holds accounts, lock the ledger rows in id order, then the API keys' spend rows in id order
(the single hold's order). Each item is decided by the single call's rules
(`rules.hold_refusal`, `rules.settle_split`, `rules.release_legs`), against running balances
and caps (a running wallet balance decides what an amount above a hold can take).

The ledger side of a batch is posted per person (`Postings`): one transfer per account and
batch, whose entries are the sums of its items' legs, instead of one transfer per call. The
ledger's invariants hold as before (each transfer sums to zero, balances are the sums of
their entries); the per-call detail lives in the hold and usage rows, and a batch of 1,000
calls over 64 accounts writes 64 transfers and under 200 entries instead of 1,000 and 3,000.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

from services.runtime.errors import DomainError

from .errors import hold_resolved, no_such_hold, reused_key
from .idempotency import params_hash, stored_result
from .model import HoldIn, HoldResult, ReleaseIn, ReleaseResult, SettleIn, SettleResult, iso, new_id, usage_row, wallet
from .ports import Storage, Transaction
from .rules import Split, draw_legs, hold_legs, hold_refusal, release_legs, settle_legs, settle_split

Outcome = SettleResult | Exception
HoldOutcome = HoldResult | Exception
ReleaseOutcome = ReleaseResult | Exception


class Rules(Protocol):
    """What a batch asks of the single path (`holds.Holds`): its checks, its expiry, its clock."""

    storage: Storage
    clock: Callable[[], datetime]

    def validate_hold(self, item: HoldIn) -> None: ...
    def hold_expiry(self, item: HoldIn, now: datetime) -> datetime: ...
    def validate_settle(self, item: SettleIn, prefix: str = "") -> int: ...
    def validate_release(self, item: ReleaseIn, prefix: str = "") -> None: ...


class BatchWork(Protocol):
    """What one kind of batch does inside `run_batch`'s transaction."""

    def validate(self, item: Any) -> None:
        """Check one item (a DomainError fails that item alone)."""

    async def lock(self, tx: Transaction, items: Sequence[Any]) -> None:
        """Lock (in the fixed order) every row the valid items may touch."""

    def decide(self, item: Any) -> Any:
        """The outcome of one fresh item, against the locked rows as the batch left them."""

    async def write(self, tx: Transaction) -> None:
        """Write what the decided items changed."""


async def run_batch(
    storage: Storage,
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
    hashes = {k: params_hash(params_of(items[i])) for k, i in firsts.items()}
    async with storage.begin() as tx:
        await work.lock(tx, [items[i] for i in firsts.values()])
        stored = await tx.stored_keys(scope, list(firsts))
        for key, i in firsts.items():
            if key in stored:
                results[i] = _replay(scope, result_type, *stored[key], hashes[key])
            else:
                results[i] = work.decide(items[i])
        await work.write(tx)
        done = [
            (k, hashes[k], results[i])
            for k, i in firsts.items()
            if k not in stored and not isinstance(results[i], Exception)
        ]
        await tx.record_keys(scope, done)
    for i, item in enumerate(items):  # repeats of a key within the batch
        first = firsts.get(item.idempotency_key)
        if i not in results and first is not None:
            results[i] = results[first] if params_of(item) == params_of(items[first]) else reused_key(scope)
    return [results[i] for i in range(len(items))]


def _replay(scope: str, result_type: type, stored_hash: str, result: str, digest: str) -> Any:
    """A stored key's first result, or the refusal of a reused key (as the single path's)."""
    try:
        return result_type(**stored_result(scope, stored_hash, result, digest))
    except DomainError as error:
        return error


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

    async def insert(self, tx: Transaction) -> None:
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
        await tx.insert_postings(transfers, entries)


async def settle_batch(rules: Rules, items: list[SettleIn]) -> list[Outcome]:
    return await run_batch(rules.storage, "settle", items, SettleIn.params, SettleResult, _SettleWork(rules))


async def hold_batch(rules: Rules, items: list[HoldIn]) -> list[HoldOutcome]:
    return await run_batch(rules.storage, "hold", items, HoldIn.params, HoldResult, _HoldWork(rules))


async def release_batch(rules: Rules, items: list[ReleaseIn]) -> list[ReleaseOutcome]:
    return await run_batch(rules.storage, "release", items, ReleaseIn.params, ReleaseResult, _ReleaseWork(rules))


class _SettleWork:
    """Settles decided against locked holds, written set-wise, the balances last.

    A settle within its hold only adds to the wallet (the rest of the hold comes back), so
    its decision needs no balance: the batch then locks its ledger rows only at the end,
    to apply its net changes, and holds those locks just until the commit instead of for
    the whole batch (batches in flight on the same accounts overlap instead of queueing).
    Each item's balance after it is the locked balance plus the batch's changes up to it,
    as if the batch had run alone at that moment. A batch with an item above its hold
    (which takes what the wallet has) locks its ledger rows first, before deciding.

    Draws on credit leases (issue 15, `SettleIn.lease`) may come many times per hold: each
    takes its cost from the hold's running `remaining` and leaves it open, and the hold's new
    amount is written once (`take_from_holds`). A lease that has ended, or whose items cost
    more than it holds, may take from the wallet: its batch locks the ledger rows first.
    """

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.now = rules.clock()
        self.holds: dict[str, Any] = {}
        self.costs: dict[int, int] = {}
        self.balances: dict[str, int] | None = None  # locked ledger balances, once locked
        self.moves: list[tuple[SettleResult, str, int]] = []  # (result, wallet, change), in order
        self.seen: set[str] = set()
        self.settled: list[str] = []
        self.postings = Postings("usage", self.now)
        self.usage: list[tuple[Any, ...]] = []  # in USAGE_COLUMNS order
        self.key_spend: dict[str, tuple[int, int]] = {}
        self.remaining: dict[str, int] = {}  # what each hold has left, once an item changed it
        self.taken: dict[str, int] = {}  # what draws took from each lease

    def validate(self, item: SettleIn) -> None:
        self.costs[id(item)] = self.rules.validate_settle(item)

    async def lock(self, tx: Transaction, items: Sequence[SettleIn]) -> None:
        self.holds = await tx.lock_holds([item.hold_id for item in items])
        holds = [(self.holds.get(item.hold_id), self.costs[id(item)]) for item in items]
        above = any(hold is not None and cost > hold.amount for hold, cost in holds)
        if above or self._leases_may_take_the_wallet(items):  # above a hold: lock now
            self.balances = await self._lock_ledger(tx)

    def _leases_may_take_the_wallet(self, items: Sequence[SettleIn]) -> bool:
        """Whether a draw may go beyond its lease: the lease has ended, or its items (draws and
        settles) cost more than it holds."""
        leases = {item.hold_id for item in items if item.lease and item.hold_id in self.holds}
        costs = dict.fromkeys(leases, 0)
        for item in items:
            if item.hold_id in costs:
                costs[item.hold_id] += self.costs[id(item)]
        return any(self.holds[h].status != "open" or cost > self.holds[h].amount for h, cost in costs.items())

    async def _lock_ledger(self, tx: Transaction) -> dict[str, int]:
        return await tx.lock_persons([h.account_id for h in self.holds.values()])

    def decide(self, item: SettleIn) -> Outcome:
        hold = self.holds.get(item.hold_id)
        if hold is None:
            return no_such_hold()
        status = "settled" if hold.id in self.seen else hold.status  # a second item on it finds it settled
        if item.lease:
            return self._draw(item, hold, self.costs[id(item)], status == "open")
        if status != "open":
            return hold_resolved(status)
        self.seen.add(hold.id)
        return self._charge(item, hold, self.costs[id(item)])

    def _charge(self, item: SettleIn, hold: Any, cost: int) -> SettleResult:
        account = hold.account_id
        amount = self.remaining.get(hold.id, hold.amount)  # what draws earlier in the batch left
        split = settle_split(amount, cost, self._available(account))
        self.postings.add(account, settle_legs(account, amount, split), split.charged)
        self.settled.append(hold.id)
        return self._record(item, hold, split, amount, split.wallet_change)

    def _draw(self, item: SettleIn, hold: Any, cost: int, is_open: bool) -> SettleResult:
        """A draw on a credit lease: from what the lease has left (nothing once it has ended),
        the rest from the wallet; the lease stays open."""
        account = hold.account_id
        remaining = self.remaining.get(hold.id, hold.amount) if is_open else 0
        split = settle_split(remaining, cost, self._available(account))
        if split.from_hold:
            self.remaining[hold.id] = remaining - split.from_hold
            self.taken[hold.id] = self.taken.get(hold.id, 0) + split.from_hold
        if split.charged:  # cost 0 (a failed call's usage): the usage row alone, no transfer
            self.postings.add(account, draw_legs(account, split), split.charged)
        return self._record(item, hold, replace(split, released=0), split.from_hold, -split.taken)

    def _available(self, account: str) -> int:
        """The wallet's running balance when the ledger was locked first; 0 otherwise (no item
        then goes beyond its hold)."""
        return self.balances.get(wallet(account), 0) if self.balances is not None else 0

    def _record(self, item: SettleIn, hold: Any, split: Split, held: int, change: int) -> SettleResult:
        """An item's usage row, key spend (`held` off its hold) and wallet change."""
        account, mine = hold.account_id, wallet(hold.account_id)
        usage_id = new_id()
        self.usage.append(usage_row(usage_id, account, item.usage, split.charged, split.shortfall, self.now))
        if hold.key_id and (held or split.charged):
            before_held, spent = self.key_spend.get(hold.key_id, (0, 0))
            self.key_spend[hold.key_id] = (before_held + held, spent + split.charged)
        result = SettleResult(split.charged, split.released, split.shortfall, usage_id, 0)
        if self.balances is not None:
            self.balances[mine] = self.balances.get(mine, 0) + change
        self.moves.append((result, mine, change))
        return result

    async def write(self, tx: Transaction) -> None:
        await tx.insert_usages(self.usage)
        await self.postings.insert(tx)
        await tx.set_hold_status(self.settled, "settled")
        await tx.take_from_holds(self.taken)
        running = await self._lock_ledger(tx) if self.moves else {}  # the ledger's locks, from here
        for result, mine, change in self.moves:
            running[mine] = running.get(mine, 0) + change
            result.balance_micros = running[mine]
        await tx.add_balances(self.postings.deltas())
        await tx.resolve_key_spend(self.key_spend)


class _HoldWork:
    """Holds decided against locked balances and caps, written set-wise."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.now = rules.clock()
        self.balances: dict[str, int] = {}
        self.spend: dict[str, tuple[int, int]] = {}
        self.holds: list[dict[str, Any]] = []
        self.postings = Postings("hold", self.now)
        self.key_held: dict[str, int] = {}

    def validate(self, item: HoldIn) -> None:
        self.rules.validate_hold(item)

    async def lock(self, tx: Transaction, items: Sequence[HoldIn]) -> None:
        accounts = [item.account_id for item in items]
        await tx.ensure_holds_accounts(accounts)
        self.balances = await tx.lock_persons(accounts)
        self.spend = await tx.lock_key_spend([item.key_id for item in items if item.key_id])

    def decide(self, item: HoldIn) -> HoldOutcome:
        legs = hold_legs(item.account_id, item.amount)
        (mine, _), (held_account, _) = legs
        spent, held = self.spend[item.key_id] if item.key_id else (0, 0)
        refusal = hold_refusal(self.balances.get(mine, 0), item.amount, item.key_id, spent + held, item.key_cap)
        if refusal is not None:
            return refusal
        if item.key_id:
            self.spend[item.key_id] = (spent, held + item.amount)
            self.key_held[item.key_id] = self.key_held.get(item.key_id, 0) + item.amount
        self.balances[mine] -= item.amount
        self.balances[held_account] = self.balances.get(held_account, 0) + item.amount
        self.postings.add(item.account_id, legs, item.amount)
        hold_id = new_id()
        expires = self.rules.hold_expiry(item, self.now)
        self.holds.append(
            {"id": hold_id, "account_id": item.account_id, "key_id": item.key_id, "amount": item.amount,
             "status": "open", "created_at": self.now, "expires_at": expires}
        )  # fmt: skip
        return HoldResult(hold_id, item.amount, iso(expires), self.balances[mine])

    async def write(self, tx: Transaction) -> None:
        await tx.insert_holds(self.holds)
        await self.postings.insert(tx)
        await tx.add_balances(self.postings.deltas())
        await tx.add_key_held(self.key_held)


class _ReleaseWork:
    """Releases decided against locked holds, written set-wise, the balances last.

    A release only gives its hold back to the wallet, so (like a settle within its hold) its
    decision needs no balance: the ledger rows are locked at the end, to apply the net
    changes and report each item's running wallet balance.
    """

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.now = rules.clock()
        self.holds: dict[str, Any] = {}
        self.seen: set[str] = set()
        self.released: list[str] = []
        self.moves: list[tuple[ReleaseResult, str, int]] = []  # (result, wallet, change), in order
        self.postings = Postings("release", self.now)
        self.usage: list[tuple[Any, ...]] = []
        self.key_spend: dict[str, tuple[int, int]] = {}

    def validate(self, item: ReleaseIn) -> None:
        self.rules.validate_release(item)

    async def lock(self, tx: Transaction, items: Sequence[ReleaseIn]) -> None:
        self.holds = await tx.lock_holds([item.hold_id for item in items])

    def decide(self, item: ReleaseIn) -> ReleaseOutcome:
        hold = self.holds.get(item.hold_id)
        if hold is None:
            return no_such_hold()
        status = "released" if hold.id in self.seen else hold.status  # a second item on it finds it released
        if status != "open":
            return hold_resolved(status)
        self.seen.add(hold.id)
        account = hold.account_id
        if hold.amount:  # a credit lease drawn to nothing (issue 15) has no money to move
            self.postings.add(account, release_legs(account, hold.amount), hold.amount)
        if item.usage is not None:
            self.usage.append(usage_row(new_id(), account, item.usage, 0, 0, self.now))
        self.released.append(hold.id)
        if hold.key_id and hold.amount:
            held, spent = self.key_spend.get(hold.key_id, (0, 0))
            self.key_spend[hold.key_id] = (held + hold.amount, spent)
        result = ReleaseResult(hold.amount, 0)
        self.moves.append((result, wallet(account), hold.amount))
        return result

    async def write(self, tx: Transaction) -> None:
        await tx.insert_usages(self.usage)
        await self.postings.insert(tx)
        await tx.set_hold_status(self.released, "released")
        running = await tx.lock_persons([h.account_id for h in self.holds.values()]) if self.moves else {}
        for result, mine, change in self.moves:
            running[mine] = running.get(mine, 0) + change
            result.balance_micros = running[mine]
        await tx.add_balances(self.postings.deltas())
        await tx.resolve_key_spend(self.key_spend)
