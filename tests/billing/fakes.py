"""An in-memory `ports.Storage` for unit tests of billing's rules without a database.

It keeps what the SQL store keeps (per-person balances, transfers, holds, key spend, usage,
idempotency keys) in dicts; a transaction works on the live state and, when it raises, the
state is put back as it was, as a rollback would. One transaction at a time (no locks): the
concurrency of the real store is tested on PostgreSQL. Implements what holds, settles,
releases, batches and credits use; codes and reports are tested on PostgreSQL only.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from services.billing.errors import Overdraft
from services.billing.idempotency import params_hash, stored_result
from services.billing.model import SYSTEM_PREFIX, USAGE_COLUMNS, holds_account, wallet


@dataclass
class State:
    balances: dict[str, int] = field(default_factory=dict)
    transfers: list[dict[str, Any]] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)
    holds: dict[str, SimpleNamespace] = field(default_factory=dict)
    key_spend: dict[str, list[int]] = field(default_factory=dict)  # key -> [spent, held]
    usage: list[dict[str, Any]] = field(default_factory=list)
    keys: dict[tuple[str, str], SimpleNamespace] = field(default_factory=dict)


class FakeStore:
    one_statement = False

    def __init__(self) -> None:
        self.state = State()

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[FakeTransaction]:
        before = copy.deepcopy(self.state)
        try:
            yield FakeTransaction(self.state)
        except BaseException:
            self.state.__dict__.update(before.__dict__)
            raise

    @asynccontextmanager
    async def read(self) -> AsyncIterator[FakeTransaction]:
        yield FakeTransaction(self.state)

    def bind(self, conn: Any) -> FakeTransaction:
        return FakeTransaction(self.state)


class FakeTransaction:
    def __init__(self, state: State) -> None:
        self.s = state

    # idempotency keys
    async def claim_key(self, scope: str, key: str, params: dict[str, Any]) -> dict[str, Any] | None:
        stored = self.s.keys.get((scope, key))
        if stored is None:
            self.s.keys[(scope, key)] = SimpleNamespace(params_hash=params_hash(params), result="")
            return None
        return stored_result(scope, stored.params_hash, stored.result, params_hash(params))

    async def finish_key(self, scope: str, key: str, result: dict[str, Any]) -> None:
        self.s.keys[(scope, key)].result = json.dumps(result, default=str)

    async def record_key(self, scope: str, key: str, params: dict[str, Any], result: dict[str, Any]) -> bool:
        if (scope, key) in self.s.keys:
            return False
        self.s.keys[(scope, key)] = SimpleNamespace(params_hash=params_hash(params), result=json.dumps(result))
        return True

    async def stored_key(self, scope: str, key: str) -> Any:
        return self.s.keys.get((scope, key))

    async def stored_keys(self, scope: str, keys: list[str]) -> dict[str, tuple[str, str]]:
        found = {k: self.s.keys.get((scope, k)) for k in keys}
        return {k: (v.params_hash, v.result) for k, v in found.items() if v is not None}

    async def record_keys(self, scope: str, done: list[tuple[str, str, Any]]) -> None:
        for key, digest, result in done:
            self.s.keys[(scope, key)] = SimpleNamespace(params_hash=digest, result=json.dumps(vars(result)))

    # the ledger
    async def post_transfer(
        self, transfer_id: str, kind: str, account_id: str, legs: Any, reference: str, amount: int, now: datetime
    ) -> dict[str, int]:
        assert sum(delta for _, delta in legs) == 0, "a transfer sums to zero"
        self.s.transfers.append({"id": transfer_id, "kind": kind, "account_id": account_id, "amount": amount,
                                 "reference": reference})  # fmt: skip
        after = {}
        for ledger_account, delta in sorted(legs):
            self.s.entries.append({"transfer_id": transfer_id, "ledger_account": ledger_account, "amount": delta})
            if ledger_account.startswith(SYSTEM_PREFIX) or delta == 0:
                continue
            balance = self.s.balances.get(ledger_account, 0) + delta
            if balance < 0:
                raise Overdraft(ledger_account)
            self.s.balances[ledger_account] = after[ledger_account] = balance
        return after

    async def insert_postings(self, transfers: list[dict[str, Any]], entries: list[dict[str, Any]]) -> None:
        self.s.transfers += transfers
        self.s.entries += entries

    async def balance_of(self, ledger_account: str) -> int:
        return self.s.balances.get(ledger_account, 0)

    async def lock_balances(self, ledger_accounts: list[str]) -> dict[str, int]:
        return {a: self.s.balances[a] for a in sorted(set(ledger_accounts)) if a in self.s.balances}

    async def lock_persons(self, account_ids: Sequence[str]) -> dict[str, int]:
        accounts = set(account_ids)
        return await self.lock_balances([wallet(a) for a in accounts] + [holds_account(a) for a in accounts])

    async def add_balances(self, deltas: dict[str, int]) -> None:
        for ledger_account, delta in deltas.items():
            if not ledger_account.startswith(SYSTEM_PREFIX):
                self.s.balances[ledger_account] = self.s.balances.get(ledger_account, 0) + delta
                assert self.s.balances[ledger_account] >= 0, "the CHECK constraint"

    async def ensure_holds_accounts(self, account_ids: list[str]) -> None:
        for a in account_ids:
            self.s.balances.setdefault(holds_account(a), 0)

    async def balances(self, account_id: str) -> tuple[int, int] | None:
        if wallet(account_id) not in self.s.balances and holds_account(account_id) not in self.s.balances:
            return None
        return self.s.balances.get(wallet(account_id), 0), self.s.balances.get(holds_account(account_id), 0)

    # holds, key spend, usage
    async def insert_holds(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.s.holds[row["id"]] = SimpleNamespace(**row)

    async def take_open_hold(self, hold_id: str, status: str) -> Any:
        hold = self.s.holds.get(hold_id)
        if hold is None or hold.status != "open":
            return None
        before = copy.copy(hold)
        hold.status = status
        return before

    async def hold_status(self, hold_id: str) -> str | None:
        hold = self.s.holds.get(hold_id)
        return None if hold is None else hold.status

    async def set_hold_status(self, hold_ids: list[str], status: str) -> None:
        for hold_id in hold_ids:
            self.s.holds[hold_id].status = status

    async def lock_holds(self, hold_ids: list[str]) -> dict[str, Any]:
        return {h: copy.copy(self.s.holds[h]) for h in sorted(set(hold_ids)) if h in self.s.holds}

    async def take_from_holds(self, taken: dict[str, int]) -> None:
        for hold_id, amount in taken.items():
            self.s.holds[hold_id].amount -= amount

    async def expired_holds(self, now: datetime, limit: int) -> list[Any]:
        due = [h for h in self.s.holds.values() if h.status == "open" and h.expires_at < now]
        return [copy.copy(h) for h in due[:limit]]

    async def lock_key_spend(self, key_ids: list[str]) -> dict[str, tuple[int, int]]:
        for k in key_ids:
            self.s.key_spend.setdefault(k, [0, 0])
        return {k: (self.s.key_spend[k][0], self.s.key_spend[k][1]) for k in sorted(set(key_ids))}

    async def add_key_held(self, held: dict[str, int]) -> None:
        for k, amount in held.items():
            self.s.key_spend.setdefault(k, [0, 0])[1] += amount

    async def resolve_key_spend(self, changes: dict[str, tuple[int, int]]) -> None:
        for k, (held, spent) in changes.items():
            row = self.s.key_spend.setdefault(k, [0, 0])
            row[1] -= held
            row[0] += spent

    async def insert_usages(self, rows: list[tuple[Any, ...]]) -> None:
        self.s.usage += [dict(zip(USAGE_COLUMNS, row, strict=True)) for row in rows]

    # refunds
    async def topup_for_update(self, transfer_id: str) -> Any:
        found = [t for t in self.s.transfers if t["id"] == transfer_id]
        return SimpleNamespace(**found[0]) if found else None

    async def refunded(self, transfer_id: str) -> int:
        return sum(t["amount"] for t in self.s.transfers if t["kind"] == "refund" and t["reference"] == transfer_id)
