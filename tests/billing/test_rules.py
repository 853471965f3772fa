"""Billing's rules on the in-memory store (`fakes.FakeStore`): no database, so they run in
milliseconds. The same rules on PostgreSQL are tested by test_ledger and test_concurrency;
test_one_statement_forms checks the SQL fast paths against `rules`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from services.billing.domain import Billing, HoldIn, SettleIn, UsageIn
from services.billing.model import holds_account, wallet
from services.billing.prices import PriceTable
from services.billing.rules import draw_legs, hold_refusal, settle_split
from services.runtime.errors import AlreadyExists, FailedPrecondition, NotFound

from .fakes import FakeStore

USD = 1_000_000


def fake_billing() -> tuple[Billing, FakeStore]:
    storage = FakeStore()
    prices = PriceTable.from_config({"m": {"input_per_mtok_usd": 1, "output_per_mtok_usd": 2}})
    return Billing(None, prices, "secret", storage=storage, clock=lambda: datetime(2026, 11, 2, 9, 0)), storage


def usage() -> UsageIn:
    return UsageIn(model="m", input_tokens=10, output_tokens=5)


@pytest.mark.parametrize(
    ("available", "amount", "committed", "cap", "reason"),
    [
        (100, 100, 0, 0, None),
        (99, 100, 0, 0, "insufficient_credit"),
        (100, 60, 50, 100, "key_spend_limit"),
        (100, 50, 50, 100, None),
        (10, 60, 50, 100, "insufficient_credit"),  # credit is checked first
        (100, 60, 10**9, 0, None),  # cap 0: no cap
    ],
)
def test_hold_refusal(available: int, amount: int, committed: int, cap: int, reason: str | None) -> None:
    refusal = hold_refusal(available, amount, "key1", committed, cap)
    assert (refusal.reason if refusal else None) == reason


@pytest.mark.parametrize(
    ("hold", "cost", "available", "split"),
    [
        (100, 30, 0, (30, 70, 0, 0)),  # within the hold: the rest comes back
        (100, 130, 50, (130, 0, 30, 0)),  # above it: the wallet pays the rest
        (100, 180, 50, (150, 0, 50, 30)),  # the wallet falls short: the shortfall is recorded
        (100, 0, 0, (0, 100, 0, 0)),
    ],
)
def test_settle_split(hold: int, cost: int, available: int, split: tuple[int, int, int, int]) -> None:
    s = settle_split(hold, cost, available)
    assert (s.charged, s.released, s.taken, s.shortfall) == split
    assert s.charged + s.wallet_change == hold  # the hold's amount is all accounted for


async def test_single_and_batch_paths_decide_alike() -> None:
    """The same holds and settles, one at a time and in batches, leave the same ledger."""
    outcomes = []
    for batched in (False, True):
        billing, storage = fake_billing()
        await billing.grant("a", 2 * USD, "", "g")
        holds = [HoldIn("a", USD, 0, f"h{i}", "key", int(2.5 * USD)) for i in range(3)]
        if batched:
            placed = await billing.hold_batch(holds)
        else:
            placed = [(await billing.hold_batch([h]))[0] for h in holds]  # a batch of one: the single path
        assert [getattr(p, "reason", "ok") for p in placed[:2]] == ["ok", "ok"]
        assert getattr(placed[2], "reason", "ok") == "insufficient_credit"
        settles = [SettleIn(placed[0].hold_id, 3 * USD, usage(), "s0"), SettleIn(placed[1].hold_id, 1, usage(), "s1")]
        done = (
            await billing.settle_batch(settles) if batched else [(await billing.settle_batch([s]))[0] for s in settles]
        )
        outcomes.append(
            (
                [(d.charged_micros, d.released_micros, d.shortfall_micros) for d in done],
                storage.state.balances[wallet("a")],
                storage.state.balances[holds_account("a")],
                storage.state.key_spend["key"],
            )
        )
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] == [(USD, 0, 2 * USD), (1, USD - 1, 0)]


@pytest.mark.parametrize("batched", [False, True])
async def test_a_reused_key_is_refused_alike_on_both_paths(batched: bool) -> None:
    billing, _ = fake_billing()
    await billing.grant("a", USD, "", "g")
    first = await billing.hold("a", 10, 0, "k")
    if batched:
        outcomes = await billing.hold_batch([HoldIn("a", 20, 0, "k"), HoldIn("a", 10, 0, "k2")])
        error = outcomes[0]
    else:
        with pytest.raises(AlreadyExists) as caught:
            await billing.hold("a", 20, 0, "k")
        error = caught.value
    assert isinstance(error, AlreadyExists) and error.reason == "idempotency_key_reused"
    assert error.field_violations == {"idempotency_key": "reuse a key only to retry the identical request"}
    assert (await billing.hold("a", 10, 0, "k")).hold_id == first.hold_id  # a true retry replays


async def test_a_refused_hold_changes_nothing_and_keeps_its_key_free() -> None:
    billing, storage = fake_billing()
    await billing.grant("a", 5, "", "g")
    with pytest.raises(FailedPrecondition):
        await billing.hold("a", 10, 0, "k")
    assert storage.state.balances[wallet("a")] == 5 and not storage.state.holds
    await billing.grant("a", 5, "", "g2")
    assert (await billing.hold("a", 10, 0, "k")).balance_micros == 0


async def test_a_hold_resolves_once() -> None:
    billing, _ = fake_billing()
    await billing.grant("a", USD, "", "g")
    hold = await billing.hold("a", 100, 0, "h")
    await billing.release(hold.hold_id, "r")
    with pytest.raises(FailedPrecondition, match="already released"):
        await billing.settle(SettleIn(hold.hold_id, 10, usage(), "s"))
    with pytest.raises(NotFound):
        await billing.settle(SettleIn("nope", 10, usage(), "s2"))
    assert (await billing.balance("a")).balance_micros == USD


# --- credit leases (issue 15): draws that keep their hold open ---------------------------


def lease_state(storage: FakeStore, hold_id: str, account: str = "a", key: str = "key") -> tuple[Any, ...]:
    """(hold's amount, its status, wallet, holds account, key's [spent, held], transfers)."""
    s = storage.state
    hold = s.holds[hold_id]
    spend = s.key_spend.get(key, [0, 0])
    return (
        hold.amount,
        hold.status,
        s.balances[wallet(account)],
        s.balances[holds_account(account)],
        spend,
        len(s.transfers),
    )


def assert_fake_ledger_adds_up(storage: FakeStore) -> None:
    """Every transfer sums to zero, no balance below zero, each holds account and each key's
    held spend equal their open holds' amounts."""
    s = storage.state
    sums: dict[str, int] = {}
    for entry in s.entries:
        sums[entry["transfer_id"]] = sums.get(entry["transfer_id"], 0) + entry["amount"]
    assert set(sums.values()) <= {0} and {e["transfer_id"] for e in s.entries} == {t["id"] for t in s.transfers}
    assert all(balance >= 0 for balance in s.balances.values())
    open_holds = [h for h in s.holds.values() if h.status == "open"]
    for account in {h.account_id for h in s.holds.values()}:
        held = sum(h.amount for h in open_holds if h.account_id == account)
        assert s.balances.get(holds_account(account), 0) == held, account
    for key, (_, key_held) in s.key_spend.items():
        assert key_held == sum(h.amount for h in open_holds if h.key_id == key), key


def draw(hold_id: str, cost: int, key: str, call: UsageIn | None = None) -> SettleIn:
    return SettleIn(hold_id, cost, call or usage(), key, lease=True)


@pytest.mark.parametrize(
    ("remaining", "cost", "available", "legs"),
    [
        (100, 30, 0, [("holds:a", -30), ("system:revenue", 30)]),  # within the lease
        (100, 130, 50, [("holds:a", -100), ("wallet:a", -30), ("system:revenue", 130)]),  # above it
        (0, 40, 50, [("wallet:a", -40), ("system:revenue", 40)]),  # the lease has ended
        (0, 40, 0, []),  # ended, and nothing in the wallet: all shortfall, no money moves
        (100, 0, 0, []),  # a failed call's usage
    ],
)
def test_draw_legs_take_from_the_lease_then_the_wallet(
    remaining: int, cost: int, available: int, legs: list[tuple[str, int]]
) -> None:
    """Issue 15: a draw's transfer has no zero legs and releases nothing."""
    split = settle_split(remaining, cost, available)
    assert list(draw_legs("a", split)) == legs
    assert sum(delta for _, delta in legs) == 0


def test_a_plain_settles_key_binds_the_same_parameters_as_before_credit_leases() -> None:
    """Issue 15: `lease` joins a settle's idempotency parameters only when set, so that keys
    stored before credit leases keep their hashes."""
    plain = SettleIn("h", 10, usage(), "k")
    assert "lease" not in plain.params()
    assert draw("h", 10, "k").params() == {**plain.params(), "lease": True}


async def test_draws_within_a_lease_keep_it_open_and_a_release_returns_the_rest() -> None:
    """Issue 15: each draw takes its cost from the lease (holds account, key's held spend) and
    releases nothing; the Release returns exactly what is left."""
    billing, storage = fake_billing()
    await billing.grant("a", 10 * USD, "", "g")
    lease = await billing.hold("a", USD, 3600, "lease", key_id="key", key_cap=20 * USD)
    first = await billing.settle(draw(lease.hold_id, 300_000, "d1"))
    second = await billing.settle(draw(lease.hold_id, 200_000, "d2"))
    assert [(r.charged_micros, r.released_micros, r.shortfall_micros, r.balance_micros) for r in (first, second)] == [
        (300_000, 0, 0, 9 * USD),
        (200_000, 0, 0, 9 * USD),
    ]
    assert lease_state(storage, lease.hold_id) == (500_000, "open", 9 * USD, 500_000, [500_000, 500_000], 4)
    assert [u["cost_micros"] for u in storage.state.usage] == [300_000, 200_000]
    assert_fake_ledger_adds_up(storage)
    released = await billing.release(lease.hold_id, "r")
    assert (released.released_micros, released.balance_micros) == (500_000, 9_500_000)
    assert lease_state(storage, lease.hold_id) == (500_000, "released", 9_500_000, 0, [500_000, 0], 5)
    assert_fake_ledger_adds_up(storage)


async def test_a_draw_above_the_lease_takes_the_wallet_then_records_a_shortfall() -> None:
    """Issue 15: past what the lease has left, a draw takes what the wallet has (locked first)
    and records the rest as shortfall; a lease drawn to nothing is released without a transfer."""
    billing, storage = fake_billing()
    await billing.grant("a", 1_500_000, "", "g")
    lease = await billing.hold("a", USD, 3600, "lease", key_id="key")
    above = await billing.settle(draw(lease.hold_id, 1_200_000, "d1"))
    assert (above.charged_micros, above.released_micros, above.shortfall_micros, above.balance_micros) == (
        1_200_000, 0, 0, 300_000,
    )  # fmt: skip
    assert lease_state(storage, lease.hold_id) == (0, "open", 300_000, 0, [1_200_000, 0], 3)
    short = await billing.settle(draw(lease.hold_id, 500_000, "d2"))
    assert (short.charged_micros, short.shortfall_micros, short.balance_micros) == (300_000, 200_000, 0)
    assert storage.state.usage[-1]["shortfall_micros"] == 200_000
    released = await billing.release(lease.hold_id, "r")
    assert (released.released_micros, released.balance_micros) == (0, 0)
    assert lease_state(storage, lease.hold_id) == (0, "released", 0, 0, [1_500_000, 0], 4)  # no new transfer
    assert_fake_ledger_adds_up(storage)


@pytest.mark.parametrize("ended", ["released", "expired"])
async def test_a_draw_after_the_lease_ended_charges_the_wallet_alone(ended: str) -> None:
    """Issue 15: the outbox replay after a proxy's lease ended (returned, or expired and swept):
    the lease gives back exactly what it had left, and the late draw is charged to the wallet,
    as far as it goes; an unknown hold is still not found."""
    billing, storage = fake_billing()
    await billing.grant("a", 2 * USD, "", "g")
    lease = await billing.hold("a", USD, 60, "lease", key_id="key")
    await billing.settle(draw(lease.hold_id, 100_000, "d0"))
    if ended == "released":
        assert (await billing.release(lease.hold_id, "r")).released_micros == 900_000
    else:
        billing.clock = lambda: datetime(2026, 11, 2, 9, 5)
        assert await billing.expire_holds() == 1
    assert lease_state(storage, lease.hold_id) == (900_000, ended, 1_900_000, 0, [100_000, 0], 4)
    late = await billing.settle(draw(lease.hold_id, 300_000, "d1"))
    assert (late.charged_micros, late.released_micros, late.shortfall_micros, late.balance_micros) == (
        300_000, 0, 0, 1_600_000,
    )  # fmt: skip
    assert lease_state(storage, lease.hold_id) == (900_000, ended, 1_600_000, 0, [400_000, 0], 5)
    broke = await billing.settle(draw(lease.hold_id, 2 * USD, "d2"))
    assert (broke.charged_micros, broke.shortfall_micros, broke.balance_micros) == (1_600_000, 400_000, 0)
    with pytest.raises(NotFound):
        await billing.settle(draw("nope", 1, "d3"))
    assert_fake_ledger_adds_up(storage)


async def test_a_draw_of_cost_zero_writes_the_usage_row_alone() -> None:
    """Issue 15: a failed call's usage (no tokens) on a lease moves no money: no transfer."""
    billing, storage = fake_billing()
    await billing.grant("a", USD, "", "g")
    lease = await billing.hold("a", 500_000, 3600, "lease", key_id="key")
    failed = UsageIn(model="m", status="upstream_error")
    result = await billing.settle(draw(lease.hold_id, 0, "d0", failed))
    assert (result.charged_micros, result.released_micros, result.shortfall_micros, result.balance_micros) == (
        0, 0, 0, 500_000,
    )  # fmt: skip
    assert lease_state(storage, lease.hold_id) == (500_000, "open", 500_000, 500_000, [0, 500_000], 2)
    assert [(u["status"], u["cost_micros"]) for u in storage.state.usage] == [("upstream_error", 0)]


async def test_a_repeated_draw_returns_its_first_result_and_charges_once() -> None:
    """Issue 15: a draw is idempotent like a settle (scope "settle"): the same key replays the
    first result, even once the lease has ended; other parameters are refused."""
    billing, storage = fake_billing()
    await billing.grant("a", 2 * USD, "", "g")
    lease = await billing.hold("a", USD, 3600, "lease", key_id="key")
    first = await billing.settle(draw(lease.hold_id, 300_000, "d1"))
    assert await billing.settle(draw(lease.hold_id, 300_000, "d1")) == first
    assert (await billing.settle_batch([draw(lease.hold_id, 300_000, "d1")] * 2)) == [first, first]
    assert lease_state(storage, lease.hold_id) == (700_000, "open", USD, 700_000, [300_000, 700_000], 3)
    with pytest.raises(AlreadyExists):
        await billing.settle(draw(lease.hold_id, 400_000, "d1"))
    with pytest.raises(AlreadyExists):  # the same hold and cost as a plain settle: other parameters
        await billing.settle(SettleIn(lease.hold_id, 300_000, usage(), "d1"))
    await billing.release(lease.hold_id, "r")
    assert await billing.settle(draw(lease.hold_id, 300_000, "d1")) == first
    assert lease_state(storage, lease.hold_id) == (700_000, "released", 1_700_000, 0, [300_000, 0], 4)
    assert len(storage.state.usage) == 1


async def test_a_batch_of_draws_on_one_lease_and_a_settle_matches_the_single_path() -> None:
    """Issue 15: in one SettleBatch, draws on the same lease take from its running remainder
    (the last goes past it, into the wallet), a repeat of a key answers like its first, a
    plain settle of another hold settles as ever, and a draw on a lease that has ended pays
    from the wallet: the same results, balances and state as one call at a time."""
    outcomes = []
    for batched in (False, True):
        billing, storage = fake_billing()
        await billing.grant("a", 3 * USD, "", "g")
        lease = await billing.hold("a", USD, 3600, "lease", key_id="key")
        other = await billing.hold("a", USD, 0, "other", key_id="key")
        ended = await billing.hold("a", 100_000, 0, "ended", key_id="key")
        await billing.release(ended.hold_id, "r-ended")
        items = [
            draw(lease.hold_id, 300_000, "d1"),
            draw(lease.hold_id, 400_000, "d2"),
            SettleIn(other.hold_id, 250_000, usage(), "s1"),
            draw(lease.hold_id, 500_000, "d3"),  # 200k past the lease: from the wallet
            draw(lease.hold_id, 300_000, "d1"),  # a repeat of d1
            draw(ended.hold_id, 50_000, "d4"),
            draw(lease.hold_id, 0, "d5", UsageIn(model="m", status="upstream_error")),
        ]
        done = await billing.settle_batch(items) if batched else [(await billing.settle_batch([i]))[0] for i in items]
        results = [(r.charged_micros, r.released_micros, r.shortfall_micros, r.balance_micros) for r in done]
        outcomes.append((results, lease_state(storage, lease.hold_id)[:5], storage.state.holds[other.hold_id].status))
        assert_fake_ledger_adds_up(storage)
        if batched:
            assert await billing.settle_batch(items) == done  # a replay of the batch charges nothing more
            assert lease_state(storage, lease.hold_id)[:5] == outcomes[1][1]
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] == [
        (300_000, 0, 0, USD),
        (400_000, 0, 0, USD),
        (250_000, 750_000, 0, 1_750_000),
        (500_000, 0, 0, 1_550_000),
        (300_000, 0, 0, USD),
        (50_000, 0, 0, 1_500_000),
        (0, 0, 0, 1_500_000),
    ]
    assert outcomes[0][1] == (0, "open", 1_500_000, 0, [1_500_000, 0])
