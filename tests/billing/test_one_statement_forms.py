"""PostgreSQL's one-statement hold and settle (`pg.HOLD_PG`, `pg.SETTLE_PG`) decide exactly as
the rules they stand for (`rules.hold_refusal`, `rules.settle_split`), on the same inputs, on
real PostgreSQL: the fast SQL cannot drift from the rule the step and batch paths call."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert

from services.billing.domain import Billing, SettleIn, UsageIn
from services.billing.model import new_id
from services.billing.rules import hold_refusal, settle_split
from services.billing.store import KeySpend
from services.runtime.errors import FailedPrecondition

from .ledger_checks import assert_invariants

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
