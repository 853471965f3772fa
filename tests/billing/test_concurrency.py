"""Concurrency on PostgreSQL: the wallet never overdraws and a code redeems once."""

from __future__ import annotations

import asyncio
import itertools

from services.billing.domain import Billing, HoldIn, ReleaseIn, SettleIn, UsageIn
from services.runtime.errors import FailedPrecondition

from .ledger_checks import assert_holds_add_up, assert_invariants


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


async def test_settle_batches_race_holds_settles_and_releases_without_deadlock_or_drift(billing: Billing) -> None:
    """Settle batches within their holds (which lock the ledger rows only at the end), a batch
    with items above their hold (which locks them first), a concurrent replay of a batch,
    single settles, single and batched releases and new holds race on two accounts and one API key: nothing
    deadlocks, each hold resolves once, the replay answers like the first, every balance an
    item reports is its batch's running balance, and the ledger adds up."""
    accounts = ["race-a", "race-b"]
    for account in accounts:
        await billing.grant(account, 1_000_000, "fund", f"fund-{account}")
    placed = await billing.hold_batch(
        [HoldIn(accounts[i % 2], 1000, 0, f"rh{i}", key_id="race-key", key_cap=10**9) for i in range(200)]
    )
    holds = [h.hold_id for h in placed]  # type: ignore[union-attr]

    def settle(i: int, actual: int) -> SettleIn:
        return SettleIn(holds[i], actual, UsageIn("gpt-4o-mini"), f"rs{i}")

    within = [[settle(i, 600) for i in range(b * 40, b * 40 + 40)] for b in range(3)]
    above = [settle(i, 1500 if i % 2 else 600) for i in range(120, 160)]
    work = [billing.settle_batch(batch) for batch in (*within, above, within[0])]
    work += [billing.settle(settle(i, 300)) for i in range(160, 180)]
    work += [billing.release(holds[i], f"rr{i}") for i in range(180, 190)]
    work += [billing.release_batch([ReleaseIn(holds[i], f"rr{i}") for i in range(190, 200)])]
    work += [billing.hold(accounts[i % 2], 500, 0, f"rn{i}", key_id="race-key", key_cap=10**9) for i in range(40)]
    outcomes = await asyncio.gather(*work, return_exceptions=True)
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    errors += [r for o in outcomes[:5] if isinstance(o, list) for r in o if isinstance(r, BaseException)]
    errors += [r for r in outcomes[35] if isinstance(r, BaseException)]  # type: ignore[union-attr]
    assert errors == [], [repr(e)[:300] for e in errors[:3]]
    assert outcomes[4] == outcomes[0]  # the concurrent replay of the first batch
    for batch in outcomes[:3]:
        for account_results in (batch[0::2], batch[1::2]):  # type: ignore[index]
            steps = {b.balance_micros - a.balance_micros for a, b in itertools.pairwise(account_results)}
            assert steps == {400}  # 1000 held, 600 charged: each item adds 400 to its wallet
    charged = (
        sum(r.charged_micros for batch in outcomes[:4] for r in batch)
        + sum(  # type: ignore[union-attr]
            r.charged_micros
            for r in outcomes[5:25]  # type: ignore[union-attr]
        )
    )
    balances = [await billing.balance(a) for a in accounts]
    assert sum(b.held_micros for b in balances) == 40 * 500  # only the new holds are open
    assert sum(b.balance_micros for b in balances) == 2_000_000 - charged - 40 * 500
    await assert_invariants(billing.engine)


async def test_concurrent_draws_on_one_lease_and_holds_on_its_account_lose_nothing(billing: Billing) -> None:
    """Issue 15 (credit leases): single and batched draws on one lease (together past it, so
    the last take the wallet), concurrent repeats of some draws' keys, and new holds on the
    same account and API key race: every draw is charged once, nothing is lost or counted
    twice, and the lease, the holds account and the key's spend add up."""
    await billing.grant("lease-hot", 1_000_000, "fund", "fund")
    lease = await billing.hold("lease-hot", 500_000, 3600, "lease", key_id="lease-key")

    def draw(key: str, cost: int) -> SettleIn:
        return SettleIn(lease.hold_id, cost, UsageIn("gpt-4o-mini"), key, lease=True)

    singles = [billing.settle(draw(f"d{i}", 3000)) for i in range(200)]  # 600,000
    batches = [billing.settle_batch([draw(f"b{b}-{i}", 1000) for i in range(20)]) for b in range(5)]  # 100,000
    repeats = [billing.settle(draw(f"d{i}", 3000)) for i in range(20)]
    holds = [billing.hold("lease-hot", 1000, 0, f"h{i}", key_id="lease-key") for i in range(100)]  # 100,000
    outcomes = await asyncio.gather(*singles, *batches, *repeats, *holds, return_exceptions=True)
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    errors += [r for o in outcomes[200:205] if isinstance(o, list) for r in o if isinstance(r, BaseException)]
    assert errors == [], [repr(e)[:300] for e in errors[:3]]
    drawn = list(outcomes[:200]) + [r for o in outcomes[200:205] for r in o]  # type: ignore[union-attr]
    assert len({d.usage_id for d in drawn}) == 300  # type: ignore[union-attr]
    assert [r.usage_id for r in outcomes[205:225]] == [d.usage_id for d in drawn[:20]]  # type: ignore[union-attr]
    assert sum(d.charged_micros for d in drawn) == 700_000  # type: ignore[union-attr]
    assert sum(d.shortfall_micros + d.released_micros for d in drawn) == 0  # type: ignore[union-attr]
    balance = await billing.balance("lease-hot")
    assert (balance.balance_micros, balance.held_micros) == (200_000, 100_000)  # the lease is drawn to 0
    await assert_invariants(billing.engine)
    await assert_holds_add_up(billing.engine)
