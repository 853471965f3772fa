"""Property-based tests: the ledger invariants hold under random sequences of holds, settles,
releases, top-ups, refunds, redemptions and credit leases (issue 15: leases, draws single and
batched, their returns and expiries) (hypothesis), on PostgreSQL."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import update

from services.billing.domain import Billing, SettleIn, UsageIn
from services.billing.store import Hold
from services.runtime.errors import DomainError

from .ledger_checks import assert_holds_add_up, assert_invariants

COUNTER = itertools.count()
amounts = st.integers(min_value=1, max_value=3_000_000)
LEASE_STEPS = (  # credit leases (issue 15)
    st.tuples(st.just("lease"), amounts),
    st.tuples(st.just("draw"), st.integers(min_value=0, max_value=2_000_000)),
    st.tuples(st.just("draws"), st.integers(min_value=0, max_value=2_000_000)),
    st.tuples(st.just("return"), st.integers(min_value=0, max_value=10)),
    st.tuples(st.just("expire"), st.integers(min_value=0, max_value=10)),
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("grant"), amounts),
        st.tuples(st.just("hold"), amounts),
        st.tuples(st.just("settle"), st.integers(min_value=0, max_value=5_000_000)),
        st.tuples(st.just("release"), st.just(0)),
        st.tuples(st.just("refund"), st.integers(min_value=0, max_value=2_000_000)),
        st.tuples(st.just("redeem"), amounts),
        st.tuples(st.just("retry"), st.just(0)),
        *LEASE_STEPS,
    ),
    min_size=1,
    max_size=25,
)
lease_operations = st.lists(  # mostly leases and their draws, with plain holds and settles among them
    st.one_of(
        st.tuples(st.just("hold"), amounts),
        st.tuples(st.just("settle"), st.integers(min_value=0, max_value=5_000_000)),
        *LEASE_STEPS,
        st.tuples(st.just("draw"), st.integers(min_value=0, max_value=2_000_000)),
        st.tuples(st.just("draws"), st.integers(min_value=0, max_value=2_000_000)),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
async def test_ledger_invariants_hold_under_random_sequences(billing: Billing, ops: list[tuple[str, int]]) -> None:
    """P1.3: the credit balance is exactly the ledger behind it (every balance equals the sum
    of its entries, every transfer sums to zero, no wallet below zero) after any sequence of
    holds, settles, releases, top-ups, refunds, redemptions and credit leases (issue 15); each
    holds account and each key's held spend stay their open holds' amounts."""
    await run_sequence(billing, ops)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=lease_operations)
async def test_ledger_invariants_hold_under_random_credit_leases(billing: Billing, ops: list[tuple[str, int]]) -> None:
    """Issue 15: the same invariants under sequences made mostly of credit leases, draws on
    them (single, and batched with repeats), their returns and expiries, and late draws on
    leases that have ended."""
    await run_sequence(billing, ops)


async def run_sequence(billing: Billing, ops: list[tuple[str, int]]) -> None:
    run = next(COUNTER)
    account = f"prop{run}"
    holds: list[str] = []
    grants: list[str] = []
    last: tuple[str, object] | None = None
    leases = Leases(account, f"propkey{run}")
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
            elif op in LEASE_OPS:
                await leases.step(billing, op, amount, key)
            if op == "grant" and last is None:
                last = ("grant", await billing.grant(account, 1, "p", f"{run}-retry"))
        except DomainError:
            pass  # refusals (insufficient credit, over-refund) are allowed; they must change nothing
        balance = await billing.balance(account)
        assert balance.balance_micros >= 0 and balance.held_micros >= 0
        if op in LEASE_OPS:
            await assert_holds_add_up(billing.engine)
    await assert_invariants(billing.engine)
    await assert_holds_add_up(billing.engine)


LEASE_OPS = {"lease", "draw", "draws", "return", "expire"}


@dataclass
class Leases:
    """One run's credit leases (issue 15), ended ones included: a draw on an ended lease is a
    proxy's outbox replay, charged to the wallet alone."""

    account: str
    key_id: str
    ids: list[str] = field(default_factory=list)

    def pick(self, n: int) -> str:
        return self.ids[n % len(self.ids)]

    def draw(self, n: int, cost: int, key: str) -> SettleIn:
        return SettleIn(self.pick(n), cost, UsageIn("gpt-4o-mini", key_id=self.key_id), key, lease=True)

    async def step(self, billing: Billing, op: str, amount: int, key: str) -> None:
        if op == "lease":  # funded first, so that leases are placed and draws run past them now and then
            await billing.grant(self.account, amount, "p", f"{key}-fund")
            self.ids.append((await billing.hold(self.account, amount // 2 + 1, 3600, key, key_id=self.key_id)).hold_id)
        elif not self.ids:
            return
        elif op == "draw":
            await billing.settle(self.draw(amount, amount, key))
        elif op == "draws":  # several draws on one lease and another, and a repeat, in one batch
            items = [self.draw(amount, amount // 3, f"{key}-{i}") for i in range(3)] + [
                self.draw(amount + 1, amount // 2, f"{key}-3")
            ]
            await billing.settle_batch([*items, items[0]])
        elif op == "return":
            await billing.release(self.pick(amount), key)
        elif op == "expire":
            await self.expire(billing, self.pick(amount))

    async def expire(self, billing: Billing, hold_id: str) -> None:
        past = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=5)
        async with billing.engine.begin() as conn:
            await conn.execute(update(Hold.__table__).where(Hold.__table__.c.id == hold_id).values(expires_at=past))
        await billing.expire_holds()
