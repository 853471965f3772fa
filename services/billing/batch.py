"""Set-based holds and settles: many in one transaction and a fixed number of statements.

Both kinds share `run_batch`: validate every item, claim all idempotency keys in one
INSERT (a key stored earlier replays its first result), decide the fresh items, give back
the keys of items that failed on their own, store the others' results. The reply is sent
only after the commit: an item reported done is durable, and an item of a batch that fails
as a whole was not acknowledged, so the caller retries it with the same idempotency key.
Items that fail on their own (unknown hold, already resolved, insufficient credit, a key's
spend limit, bad input, reused key) are reported per item and change nothing.

Settles (`BatchSettler`) lock their holds in id order, then the wallets and holds accounts
they touch in id order, compute every item in Python exactly as a single settle would (a
running wallet balance decides what an amount above a hold can take), and write the
transfers, entries, usage records, hold states, balances and key spend in one statement
each. Holds (`BatchHolder`) create missing holds accounts, lock the ledger rows in id
order, then the API keys' spend rows in id order (the single hold's order), decide each
hold against running balances and caps, and write holds, transfers, entries, balances and
key spend the same way. Because every path locks in these orders, batches and single
operations never deadlock.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import bindparam, update

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
from .store import Entry, Hold, KeySpend, Transfer, UsageRow

Outcome = SettleResult | Exception
HoldOutcome = HoldResult | Exception


def settle_params(item: SettleIn) -> dict[str, Any]:
    return {"hold": item.hold_id, "actual": item.actual_micros, "usage": item.usage.params()}


def reused_key(scope: str) -> AlreadyExists:
    return AlreadyExists(
        f"idempotency key already used for a different {scope} request", reason="idempotency_key_reused"
    )


async def run_batch(
    billing: Billing,
    scope: str,
    items: list[Any],
    validate: Callable[[Any], None],
    params_of: Callable[[Any], dict[str, Any]],
    result_type: type,
    decide: Callable[[Any, list[int], dict[int, Any]], Awaitable[None]],
) -> list[Any]:
    """What holds and settles in batches share, in one transaction: validate each item;
    claim the items' idempotency keys (a key stored earlier replays its first result, or is
    refused for other parameters); let `decide` work out and write the fresh items (filling
    `results` by index); give back the keys of the items that failed; store the others'
    results with their keys; answer repeats of a key within the batch like its first item."""
    results: dict[int, Any] = {}
    firsts: dict[str, int] = {}
    for i, item in enumerate(items):
        try:
            validate(item)
        except DomainError as error:
            results[i] = error
            continue
        firsts.setdefault(item.idempotency_key, i)
    async with billing.engine.begin() as conn:
        params = {k: params_of(items[i]) for k, i in firsts.items()}
        fresh, stored = await store.claim_keys(conn, scope, params)
        for key, (digest, result) in stored.items():
            same = digest == store.params_hash(params[key])
            results[firsts[key]] = result_type(**json.loads(result)) if same else reused_key(scope)
        work = [firsts[k] for k in firsts if k in fresh]
        await decide(conn, work, results)
        failed = [items[i].idempotency_key for i in work if isinstance(results[i], Exception)]
        await store.unclaim_keys(conn, scope, failed)
        done = {items[i].idempotency_key: vars(results[i]) for i in work if not isinstance(results[i], Exception)}
        await store.finish_keys(conn, scope, done)
    for i, item in enumerate(items):  # repeats of a key within the batch
        first = firsts.get(item.idempotency_key)
        if i not in results and first is not None:
            results[i] = results[first] if params_of(item) == params_of(items[first]) else reused_key(scope)
    return [results[i] for i in range(len(items))]


class BatchSettler:
    def __init__(self, billing: Billing) -> None:
        self.billing = billing

    async def run(self, items: list[SettleIn]) -> list[Outcome]:
        async def decide(conn: Any, work: list[int], results: dict[int, Any]) -> None:
            writer = _Writer(self.billing)
            await writer.plan(conn, items, work, results)
            await writer.write(conn)

        billing = self.billing
        return await run_batch(billing, "settle", items, billing.validate_settle, settle_params, SettleResult, decide)


class _Writer:
    """Plans a batch against locked rows, then writes it set-wise."""

    def __init__(self, billing: Billing) -> None:
        self.billing = billing
        self.now = billing.clock()
        self.transfers: list[dict[str, Any]] = []
        self.entries: list[dict[str, Any]] = []
        self.usage: list[dict[str, Any]] = []
        self.closed: list[dict[str, Any]] = []
        self.deltas: dict[str, int] = {}
        self.key_spend: dict[str, tuple[int, int]] = {}

    async def plan(self, conn: Any, items: list[SettleIn], work: list[int], results: dict[int, Outcome]) -> None:
        holds = await store.lock_holds(conn, [items[i].hold_id for i in work])
        accounts = {h.account_id for h in holds.values()}
        ledger = [store.wallet(a) for a in accounts] + [store.holds_account(a) for a in accounts]
        balances = await store.lock_balances(conn, ledger)
        seen: set[str] = set()
        for i in work:
            hold = holds.get(items[i].hold_id)
            if hold is None:
                results[i] = NotFound("no such hold", field_violations={"hold_id": "unknown"})
            elif hold.status != "open" or hold.id in seen:
                results[i] = FailedPrecondition(
                    f"the hold is already {hold.status if hold.id not in seen else 'settled'}"
                )
            else:
                seen.add(hold.id)
                results[i] = self._one(items[i], hold, balances)

    def _one(self, item: SettleIn, hold: Any, balances: dict[str, int]) -> SettleResult:
        account = hold.account_id
        wallet = store.wallet(account)
        cost = item.actual_micros or self.billing.price_usage(item.usage)
        from_hold = min(cost, hold.amount)
        extra = cost - from_hold
        taken = min(extra, balances.get(wallet, 0))
        released = hold.amount - from_hold
        balances[wallet] = balances.get(wallet, 0) + released - taken
        legs = [
            (store.holds_account(account), -hold.amount),
            (wallet, released - taken),
            (store.system("revenue"), from_hold + taken),
        ]
        transfer_id, usage_id, charged = new_id(), new_id(), from_hold + taken
        self.transfers.append(
            {"id": transfer_id, "kind": "usage", "account_id": account, "reference": hold.id, "amount": charged,
             "created_at": self.now}
        )  # fmt: skip
        for ledger_account, delta in legs:
            if delta:
                self.entries.append({"transfer_id": transfer_id, "ledger_account": ledger_account, "amount": delta,
                                     "created_at": self.now})  # fmt: skip
                self.deltas[ledger_account] = self.deltas.get(ledger_account, 0) + delta
        u = item.usage
        self.usage.append(
            {"id": usage_id, "account_id": account, "key_id": u.key_id, "model": u.model, "provider": u.provider,
             "input_tokens": u.input_tokens, "output_tokens": u.output_tokens, "cost_micros": charged,
             "shortfall_micros": extra - taken, "status": u.status, "latency_ms": u.latency_ms,
             "tokens_estimated": u.tokens_estimated,
             "created_at": store.naive(u.started_at) if u.started_at else self.now}
        )  # fmt: skip
        self.closed.append({"i": hold.id})
        if hold.key_id:
            held, spent = self.key_spend.get(hold.key_id, (0, 0))
            self.key_spend[hold.key_id] = (held + hold.amount, spent + charged)
        return SettleResult(charged, released, extra - taken, usage_id, balances[wallet])

    async def write(self, conn: Any) -> None:
        await store.insert_rows(conn, Transfer, self.transfers)
        await store.insert_rows(conn, Entry, self.entries)
        await store.insert_rows(conn, UsageRow, self.usage)
        await store.add_balances(conn, self.deltas)
        if self.closed:
            holds = Hold.__table__  # type: ignore[attr-defined]
            stmt = update(holds).where(holds.c.id == bindparam("i")).values(status="settled")
            await conn.execute(stmt, self.closed)
        if self.key_spend:
            t = KeySpend.__table__  # type: ignore[attr-defined]
            stmt = (
                update(t)
                .where(t.c.key_id == bindparam("k"))
                .values(held=t.c.held - bindparam("h"), spent=t.c.spent + bindparam("s"))
            )
            await conn.execute(stmt, [{"k": k, "h": h, "s": s} for k, (h, s) in sorted(self.key_spend.items())])


class BatchHolder:
    def __init__(self, billing: Billing) -> None:
        self.billing = billing

    async def run(self, items: list[HoldIn]) -> list[HoldOutcome]:
        async def decide(conn: Any, work: list[int], results: dict[int, Any]) -> None:
            await _HoldWriter(self.billing).run(conn, items, work, results)

        billing = self.billing
        return await run_batch(billing, "hold", items, billing.validate_hold, HoldIn.params, HoldResult, decide)


class _HoldWriter:
    """Decides a batch of holds against locked balances and caps, then writes it set-wise."""

    def __init__(self, billing: Billing) -> None:
        self.billing = billing
        self.now = billing.clock()
        self.holds: list[dict[str, Any]] = []
        self.transfers: list[dict[str, Any]] = []
        self.entries: list[dict[str, Any]] = []
        self.deltas: dict[str, int] = {}
        self.key_held: dict[str, int] = {}

    async def run(self, conn: Any, items: list[HoldIn], work: list[int], results: dict[int, HoldOutcome]) -> None:
        accounts = [items[i].account_id for i in work]
        await store.ensure_holds_accounts(conn, accounts)
        ledger = [store.wallet(a) for a in accounts] + [store.holds_account(a) for a in accounts]
        balances = await store.lock_balances(conn, ledger)
        spend = await store.lock_key_spend(conn, [items[i].key_id for i in work if items[i].key_id])
        for i in work:
            results[i] = self._one(items[i], balances, spend)
        await store.insert_rows(conn, Hold, self.holds)
        await store.insert_rows(conn, Transfer, self.transfers)
        await store.insert_rows(conn, Entry, self.entries)
        await store.add_balances(conn, self.deltas)
        await store.add_key_held(conn, self.key_held)

    def _one(self, item: HoldIn, balances: dict[str, int], spend: dict[str, tuple[int, int]]) -> HoldOutcome:
        wallet, held_account = store.wallet(item.account_id), store.holds_account(item.account_id)
        if balances.get(wallet, 0) < item.amount:
            return insufficient_credit()
        if item.key_id:
            spent, held = spend[item.key_id]
            if item.key_cap and spent + held + item.amount > item.key_cap:
                return key_spend_limit()
            spend[item.key_id] = (spent, held + item.amount)
            self.key_held[item.key_id] = self.key_held.get(item.key_id, 0) + item.amount
        balances[wallet] -= item.amount
        balances[held_account] = balances.get(held_account, 0) + item.amount
        for account, delta in ((wallet, -item.amount), (held_account, item.amount)):
            self.deltas[account] = self.deltas.get(account, 0) + delta
        hold_id, transfer_id = new_id(), new_id()
        expires = self.billing.hold_expiry(item, self.now)
        self.holds.append(
            {"id": hold_id, "account_id": item.account_id, "key_id": item.key_id, "amount": item.amount,
             "status": "open", "created_at": self.now, "expires_at": expires}
        )  # fmt: skip
        self.transfers.append(
            {"id": transfer_id, "kind": "hold", "account_id": item.account_id, "reference": hold_id,
             "amount": item.amount, "created_at": self.now}
        )  # fmt: skip
        for account, delta in ((wallet, -item.amount), (held_account, item.amount)):
            self.entries.append({"transfer_id": transfer_id, "ledger_account": account, "amount": delta,
                                 "created_at": self.now})  # fmt: skip
        return HoldResult(hold_id, item.amount, iso(expires), balances[wallet])
