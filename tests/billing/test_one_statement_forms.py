"""PostgreSQL's one-statement hold, settle and lease draw (`pg.HOLD_PG`, `pg.SETTLE_PG`,
`pg.DRAW_PG`) decide exactly as the rules they stand for (`rules.hold_refusal`,
`rules.settle_split`, `rules.draw_legs`), on the same inputs, on real PostgreSQL: the fast SQL
cannot drift from the rule the step and batch paths call."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import insert, select

from services.billing.domain import Billing, SettleIn, SettleResult, UsageIn
from services.billing.model import holds_account, new_id, wallet
from services.billing.rules import Split, draw_legs, hold_refusal, settle_split
from services.billing.sqlstore import SqlStore, SqlTransaction
from services.billing.store import Entry, Hold, KeySpend, Transfer, UsageRow
from services.runtime.errors import FailedPrecondition

from .conftest import SECRET
from .ledger_checks import assert_holds_add_up, assert_invariants, ledger_snapshot

HOLD_CASES = [  # (available, amount, key (spent, held) or None for no key, cap)
    (100, 100, None, 0),
    (99, 100, None, 0),
    (0, 1, None, 0),  # an account billing never credited
    (100, 60, (30, 20), 100),
    (100, 50, (30, 20), 100),
    (10, 60, (30, 20), 100),
    (100, 60, (0, 0), 50),  # a key's first hold above its cap
    (100, 60, (500, 500), 0),  # no cap
]
SETTLE_CASES = [(100, 30, 0), (100, 100, 5), (100, 130, 50), (100, 180, 50), (100, 0, 0)]  # (hold, cost, available)


async def test_hold_pg_decides_as_the_rule(billing: Billing) -> None:
    assert billing.storage.one_statement  # billing.hold is HOLD_PG here
    for i, (available, amount, spend, cap) in enumerate(HOLD_CASES):
        account, key_id = f"h{i}", f"key{i}" if spend else ""
        if available:
            await billing.grant(account, available, "", f"g{i}")
        if spend and spend != (0, 0):
            async with billing.engine.begin() as conn:
                await conn.execute(insert(KeySpend.__table__).values(key_id=key_id, spent=spend[0], held=spend[1]))  # type: ignore[attr-defined]
        committed = sum(spend) if spend else 0
        expected = hold_refusal(available, amount, key_id, committed, cap)
        try:
            done = await billing.hold(account, amount, 0, f"k{i}", key_id, cap)
        except FailedPrecondition as refusal:
            assert expected is not None and refusal.reason == expected.reason, HOLD_CASES[i]
            assert (await billing.balance(account)).balance_micros == available  # nothing changed
            continue
        assert expected is None, HOLD_CASES[i]
        assert done.balance_micros == available - amount
    await assert_invariants(billing.engine)


async def test_settle_pg_splits_as_the_rule(billing: Billing) -> None:
    usage = UsageIn(model="cheap")
    for i, (hold_amount, cost, available) in enumerate(SETTLE_CASES):
        account = f"s{i}"
        await billing.grant(account, hold_amount + available, "", f"g{i}")
        hold = await billing.hold(account, hold_amount, 0, f"h{i}")
        split = settle_split(hold_amount, cost, available)
        async with billing.storage.begin() as tx:
            item = SettleIn(hold.hold_id, cost, usage, f"s{i}")
            row = await tx.settle_in_one_statement(item, cost, new_id(), new_id(), datetime(2026, 11, 2), "digest")
        if split.taken or split.shortfall:  # above the hold: the statement leaves it to the step path
            assert row.amount is None, SETTLE_CASES[i]
            assert (await billing.balance(account)).held_micros == hold_amount  # nothing written
            continue
        assert (row.amount - cost, int(row.balance)) == (split.released, available + split.wallet_change)
        after = await billing.balance(account)
        assert (after.balance_micros, after.held_micros) == (available + split.released, 0)
    await assert_invariants(billing.engine)


DRAW_CASES = [  # (lease, cost, the wallet beside it, the lease has ended)
    (100, 30, 50, False),  # within what is left of the lease
    (100, 100, 50, False),  # exactly what is left
    (100, 130, 50, False),  # above it: the wallet pays the rest
    (100, 180, 50, False),  # above it and the wallet: a shortfall
    (100, 30, 50, True),  # an ended lease: the wallet alone
    (100, 0, 50, False),  # a failed call: no money moves
]


async def leased(billing: Billing, account: str, lease: int, beside: int, ended: bool) -> tuple[str, int]:
    """A funded account with a lease on key `key-<account>`: (the hold's id, the wallet at the draw)."""
    await billing.grant(account, lease + beside, "", f"g-{account}")
    hold = await billing.hold(account, lease, 3600, f"l-{account}", key_id=f"key-{account}")
    if ended:
        await billing.release(hold.hold_id, f"r-{account}")
    return hold.hold_id, beside + (lease if ended else 0)


def draw_split(lease: int, cost: int, available: int, ended: bool) -> Split:
    """The rule's split of a draw, as `Holds._draw_steps` computes it."""
    remaining = 0 if ended else lease
    return settle_split(remaining, cost, available if cost > remaining else 0)


async def draw_state(billing: Billing, account: str, hold_id: str) -> tuple[Any, ...]:
    """(available, held), the lease's (amount, status), the key's (spent, held), the usage
    rows' (cost, shortfall) and the usage transfers' legs (accounts named by kind)."""
    h, k, u, t, e = (x.__table__ for x in (Hold, KeySpend, UsageRow, Transfer, Entry))  # type: ignore[attr-defined]
    names = {holds_account(account): "holds", wallet(account): "wallet"}
    balance = await billing.balance(account)
    async with billing.engine.connect() as conn:
        hold = (await conn.execute(select(h.c.amount, h.c.status).where(h.c.id == hold_id))).one()
        spend = (await conn.execute(select(k.c.spent, k.c.held).where(k.c.key_id == f"key-{account}"))).one()
        usages = await conn.execute(select(u.c.cost_micros, u.c.shortfall_micros).where(u.c.account_id == account))
        legs = await conn.execute(
            select(e.c.ledger_account, e.c.amount)
            .select_from(e.join(t, e.c.transfer_id == t.c.id))
            .where(t.c.account_id == account, t.c.kind == "usage")
        )
        return (
            (balance.balance_micros, balance.held_micros), tuple(hold), tuple(spend),
            sorted(tuple(r) for r in usages.all()), sorted((names.get(a, a), int(v)) for a, v in legs.all()),
        )  # fmt: skip


def named(account: str, split: Split) -> list[tuple[str, int]]:
    names = {holds_account(account): "holds", wallet(account): "wallet"}
    return sorted((names.get(a, a), v) for a, v in draw_legs(account, split))


async def test_draw_pg_draws_as_the_rule(billing: Billing) -> None:
    """DRAW_PG writes exactly `settle_split`'s draw within the lease (the legs of `draw_legs`,
    the lease and the key's held spend lowered by the cost, the key stored with the result),
    and nothing at all where the rule goes past the lease, on an ended lease or for cost 0."""
    usage = UsageIn(model="cheap")
    for i, (lease, cost, beside, ended) in enumerate(DRAW_CASES):
        account, key = f"d{i}", f"dk{i}"
        hold_id, available = await leased(billing, account, lease, beside, ended)
        split = draw_split(lease, cost, available, ended)
        before, state = await ledger_snapshot(billing.engine), await draw_state(billing, account, hold_id)
        item, usage_id = SettleIn(hold_id, cost, usage, key, lease=True), new_id()
        async with billing.storage.begin() as tx:
            row = await tx.draw_in_one_statement(item, cost, usage_id, new_id(), datetime(2026, 11, 2), "digest")
        if ended or split.taken or split.shortfall or not cost:  # left to the step path
            assert row.amount is None, DRAW_CASES[i]
            assert await ledger_snapshot(billing.engine) == before  # nothing written
            assert await draw_state(billing, account, hold_id) == state
            continue
        assert (row.amount, int(row.balance), row.recorded) == (split.released, available, 1), DRAW_CASES[i]
        assert await draw_state(billing, account, hold_id) == (
            (available, split.released), (split.released, "open"), (split.charged, split.released),
            [(split.charged, split.shortfall)], named(account, split),
        )  # fmt: skip
        async with billing.storage.read() as tx:
            stored = await tx.stored_key("settle", key)
        assert json.loads(stored.result) == vars(SettleResult(cost, 0, 0, usage_id, available))
        async with billing.engine.connect() as conn:  # the same key again: drawn, not recorded
            trans = await conn.begin()
            again = await billing.storage.bind(conn).draw_in_one_statement(
                item, cost, new_id(), new_id(), datetime(2026, 11, 2), "digest"
            )
            if split.released >= cost:  # the rest covers it again: the caller rolls back on `recorded` 0
                assert (again.amount, again.recorded) == (split.released - cost, 0)
            else:
                assert again.amount is None
            await trans.rollback()
    await assert_invariants(billing.engine)
    await assert_holds_add_up(billing.engine)


async def test_single_draws_end_as_step_by_step(billing: Billing, monkeypatch: pytest.MonkeyPatch) -> None:
    """The single draw (`Holds.settle` with `lease`, DRAW_PG where it applies, else the step
    path in the same transaction) and the step path alone (SQLite's) give the same results,
    balances, lease, key spend, usage rows and legs on the same inputs, those of the rule; a
    repeated key returns the first result and charges once."""
    one_statement_draws: list[bool] = []
    draw_in_one_statement = SqlTransaction.draw_in_one_statement

    async def counted(self: SqlTransaction, *args: Any) -> Any:
        row = await draw_in_one_statement(self, *args)
        one_statement_draws.append(row.amount is not None)
        return row

    monkeypatch.setattr(SqlTransaction, "draw_in_one_statement", counted)
    store = SqlStore(billing.engine)
    store.one_statement = False
    steps = Billing(billing.engine, billing.prices, SECRET, storage=store)
    usage = UsageIn(model="cheap")
    for i, (lease, cost, beside, ended) in enumerate(DRAW_CASES):
        ends = []
        for name, path in (("p", billing), ("s", steps)):
            account = f"{name}{i}"
            hold_id, available = await leased(path, account, lease, beside, ended)
            item = SettleIn(hold_id, cost, usage, f"{account}-d", lease=True)
            first = await path.settle(item)
            assert await path.settle(item) == first  # a repeat: the first result, charged once
            outcome = (first.charged_micros, first.released_micros, first.shortfall_micros, first.balance_micros)
            ends.append((outcome, await draw_state(path, account, hold_id)))
        split = draw_split(lease, cost, available, ended)
        assert ends[0] == ends[1], DRAW_CASES[i]
        assert ends[0][0] == (split.charged, 0, split.shortfall, available - split.taken), DRAW_CASES[i]
        lease_row, key_spend = ((lease, "released"), 0) if ended else ((split.released, "open"), split.released)
        assert ends[0][1][1:3] == (lease_row, (split.charged, key_spend)), DRAW_CASES[i]
        assert ends[0][1][3:] == ([(split.charged, split.shortfall)], named(f"p{i}", split)), DRAW_CASES[i]
    assert one_statement_draws == [True, True, True] + [False] * 7  # the writes: within the rest; cost 0 calls none
    await assert_invariants(billing.engine)
    await assert_holds_add_up(billing.engine)
