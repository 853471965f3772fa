"""Property-based tests: the ledger invariants hold under random sequences of holds, settles,
releases, top-ups, refunds and redemptions (hypothesis), on PostgreSQL."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.billing.domain import Billing, SettleIn, UsageIn
from services.runtime.errors import DomainError

from .ledger_checks import assert_invariants

COUNTER = itertools.count()
amounts = st.integers(min_value=1, max_value=3_000_000)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("grant"), amounts),
        st.tuples(st.just("hold"), amounts),
        st.tuples(st.just("settle"), st.integers(min_value=0, max_value=5_000_000)),
        st.tuples(st.just("release"), st.just(0)),
        st.tuples(st.just("refund"), st.integers(min_value=0, max_value=2_000_000)),
        st.tuples(st.just("redeem"), amounts),
        st.tuples(st.just("retry"), st.just(0)),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
async def test_ledger_invariants_hold_under_random_sequences(billing: Billing, ops: list[tuple[str, int]]) -> None:
    """P1.3: the credit balance is exactly the ledger behind it (every balance equals the sum
    of its entries, every transfer sums to zero, no wallet below zero) after any sequence of
    holds, settles, releases, top-ups, refunds and redemptions."""
    run = next(COUNTER)
    account = f"prop{run}"
    holds: list[str] = []
    grants: list[str] = []
    last: tuple[str, object] | None = None
    for step, (op, amount) in enumerate(ops):
        key = f"{run}-{step}"
        try:
            if op == "grant":
                grants.append((await billing.grant(account, amount, "p", key)).transfer_id)
            elif op == "hold":
                holds.append((await billing.hold(account, amount, 0, key)).hold_id)
            elif op == "settle" and holds:
                await billing.settle(SettleIn(holds.pop(0), amount, UsageIn("gpt-4o-mini", input_tokens=10), key))
            elif op == "release" and holds:
                await billing.release(holds.pop(), key)
            elif op == "refund" and grants:
                await billing.refund(grants[-1], amount, "p", key)
            elif op == "redeem":
                batch = await billing.create_codes(amount, 1, None, key)
                await billing.redeem(account, batch.codes[0], key)
            elif op == "retry" and last is not None:
                assert await billing.grant(account, 1, "p", f"{run}-retry") == last[1]
            if op == "grant" and last is None:
                last = ("grant", await billing.grant(account, 1, "p", f"{run}-retry"))
        except DomainError:
            pass  # refusals (insufficient credit, over-refund) are allowed; they must change nothing
        balance = await billing.balance(account)
        assert balance.balance_micros >= 0 and balance.held_micros >= 0
    await assert_invariants(billing.engine)
