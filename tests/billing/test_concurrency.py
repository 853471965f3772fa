"""Concurrency on PostgreSQL: the wallet never overdraws and a code redeems once."""

from __future__ import annotations

import asyncio

from services.billing.domain import Billing, HoldIn, SettleIn, UsageIn
from services.runtime.errors import FailedPrecondition

from .ledger_checks import assert_invariants


async def test_500_concurrent_holds_on_one_account_never_overdraw(billing: Billing) -> None:
    await billing.grant("hot", 100_000, "fund", "fund")  # room for exactly 100 holds of 1000
    results = await asyncio.gather(*(billing.hold("hot", 1000, 0, f"h{i}") for i in range(500)), return_exceptions=True)
    granted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(granted) == 100
    assert all(isinstance(r, FailedPrecondition) and r.reason == "insufficient_credit" for r in refused)
    balance = await billing.balance("hot")
    assert (balance.balance_micros, balance.held_micros) == (0, 100_000)
    # Settle half above their hold, concurrently: charges never exceed what exists.
    settles = [
        billing.settle(SettleIn(h.hold_id, 1500, UsageIn("gpt-4o-mini"), f"s{i}")) for i, h in enumerate(granted)
    ]
    settled = await asyncio.gather(*settles)
    assert sum(s.charged_micros for s in settled) == 100_000
    assert sum(s.shortfall_micros for s in settled) == 50_000
    await assert_invariants(billing.engine)


async def test_a_code_redeems_once_under_concurrent_attempts(billing: Billing) -> None:
    batch = await billing.create_codes(1_000_000, 1, None, "batch")
    attempts = [billing.redeem(f"acct{i}", batch.codes[0], f"k{i}") for i in range(50)]
    results = await asyncio.gather(*attempts, return_exceptions=True)
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, FailedPrecondition) for r in results if isinstance(r, BaseException))
    await assert_invariants(billing.engine)


async def test_same_idempotency_key_concurrently_applies_once(billing: Billing) -> None:
    results = await asyncio.gather(*(billing.grant("dup", 7, "x", "same-key") for _ in range(20)))
    assert len({r.transfer_id for r in results}) == 1
    assert (await billing.balance("dup")).balance_micros == 7


async def test_mixed_concurrent_holds_and_settles_above_the_hold_neither_deadlock_nor_overdraw(
    billing: Billing,
) -> None:
    """Holds, settles that charge above their hold, and releases race on one account and one
    API key: every path takes its row locks in one order, so none deadlocks."""
    await billing.grant("mixed", 200_000, "fund", "fund")

    async def call(i: int) -> None:
        hold = await billing.hold("mixed", 1000, 0, f"mh{i}", key_id="mixed-key", key_cap=10**9)
        if i % 3:
            await billing.settle(SettleIn(hold.hold_id, 1000 + i % 7 * 500, UsageIn("gpt-4o-mini"), f"ms{i}"))
        else:
            await billing.release(hold.hold_id, f"mr{i}")

    results = await asyncio.gather(*(call(i) for i in range(150)), return_exceptions=True)
    unexpected = [r for r in results if isinstance(r, BaseException) and not isinstance(r, FailedPrecondition)]
    assert unexpected == [], [repr(r)[:300] for r in unexpected[:3]]
    balance = await billing.balance("mixed")
    assert balance.held_micros == 0 and balance.balance_micros >= 0
    await assert_invariants(billing.engine)


async def test_same_key_hold_and_settle_concurrently_apply_once(billing: Billing) -> None:
    await billing.grant("dup2", 10_000, "x", "fund")
    holds = await asyncio.gather(*(billing.hold("dup2", 1000, 0, "one-hold") for _ in range(20)))
    assert len({h.hold_id for h in holds}) == 1
    assert (await billing.balance("dup2")).balance_micros == 9000
    settle = SettleIn(holds[0].hold_id, 400, UsageIn("gpt-4o-mini"), "one-settle")
    settled = await asyncio.gather(*(billing.settle(settle) for _ in range(20)))
    assert len({s.usage_id for s in settled}) == 1
    assert (await billing.balance("dup2")).balance_micros == 9600
    await assert_invariants(billing.engine)


async def test_500_holds_in_concurrent_batches_and_singles_on_one_account_never_overdraw(billing: Billing) -> None:
    await billing.grant("hot-b", 100_000, "fund", "fund")  # room for exactly 100 holds of 1000
    batches = [billing.hold_batch([HoldIn("hot-b", 1000, 0, f"b{b}-{i}") for i in range(50)]) for b in range(8)]
    singles = [billing.hold("hot-b", 1000, 0, f"s{i}") for i in range(100)]
    outcomes = await asyncio.gather(*batches, *singles, return_exceptions=True)
    flat = [r for group in outcomes[:8] for r in group] + list(outcomes[8:])  # type: ignore[union-attr]
    granted = [r for r in flat if not isinstance(r, BaseException)]
    refused = [r for r in flat if isinstance(r, BaseException)]
    assert (len(granted), len(refused)) == (100, 400)
    assert all(isinstance(r, FailedPrecondition) and r.reason == "insufficient_credit" for r in refused)
    balance = await billing.balance("hot-b")
    assert (balance.balance_micros, balance.held_micros) == (0, 100_000)
    await assert_invariants(billing.engine)
