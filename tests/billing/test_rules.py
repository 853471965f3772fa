"""Billing's rules on the in-memory store (`fakes.FakeStore`): no database, so they run in
milliseconds. The same rules on PostgreSQL are tested by test_ledger and test_concurrency;
test_one_statement_forms checks the SQL fast paths against `rules`."""

from __future__ import annotations

from datetime import datetime

import pytest

from services.billing.domain import Billing, HoldIn, SettleIn, UsageIn
from services.billing.model import holds_account, wallet
from services.billing.prices import PriceTable
from services.billing.rules import hold_refusal, settle_split
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
