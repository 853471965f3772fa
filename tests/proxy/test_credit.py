"""Credit leases in process (issue 15): when a call's cost is reserved from a slice, how
slices are sized, replaced, retired and returned, against a billing stand-in and a clock the
test moves. The mesh tests (tests/proxy/test_credit_mesh.py) run them against real billing."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.proxy.credit import CreditLeases, CreditTerms, Slice
from services.proxy.model import KeyGrant
from services.runtime.errors import FailedPrecondition

GRANT = KeyGrant("acct", "key", 0)


@dataclass
class Billing:
    """Holds slices up to `balance` and records returns (their idempotency keys)."""

    balance: int = 10_000_000
    asked: list[int] = field(default_factory=list)
    returned: list[tuple[str, str]] = field(default_factory=list)
    held: dict[str, int] = field(default_factory=dict)

    async def lease(self, grant: KeyGrant, amount_micros: int, ttl_s: int, idempotency_key: str) -> tuple[str, int]:
        self.asked.append(amount_micros)
        if amount_micros > self.balance:
            raise FailedPrecondition("insufficient credit", reason="insufficient_credit")
        self.balance -= amount_micros
        hold_id = f"lease-{len(self.asked)}"
        self.held[hold_id] = amount_micros
        return hold_id, self.balance

    async def release(self, hold_id: str, usage: Any, idempotency_key: str) -> None:
        self.returned.append((hold_id, idempotency_key))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Leases:
    """CreditLeases with its background tasks run to completion by `settle()`."""

    def __init__(self, terms: CreditTerms | None = None, balance: int = 10_000_000) -> None:
        self.billing = Billing(balance)
        self.clock = Clock()
        self.tasks: list[asyncio.Task[Any]] = []
        self.credit = CreditLeases(self.billing, terms or CreditTerms(), self._spawn, self.clock)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.tasks.append(task)
        return task

    async def settle(self) -> None:
        while self.tasks:
            tasks, self.tasks = self.tasks, []
            await asyncio.gather(*tasks)

    async def slice_for(self, cost: int, grant: KeyGrant = GRANT) -> Slice:
        """Ask (the first call goes synchronously) and wait for the slice."""
        assert self.credit.reserve(grant, cost) is None
        await self.settle()
        piece = self.credit.reserve(grant, cost)
        assert piece is not None
        return piece


async def test_a_keys_first_call_holds_synchronously_and_asks_for_a_slice_the_next_ones_reserve_from() -> None:
    leases = Leases(CreditTerms(calls=10))
    piece = await leases.slice_for(100)
    assert leases.billing.asked == [1000]  # ten calls like the one that asked
    assert (piece.granted, piece.reserved, piece.calls, piece.free) == (1000, 100, 1, 900)
    second = leases.credit.reserve(GRANT, 300)
    assert second is piece and piece.free == 600
    leases.credit.finish(piece, 100, 40)  # the exact cost is below the reservation
    assert (piece.drawn, piece.reserved, piece.calls, piece.free) == (40, 300, 1, 660)


async def test_a_call_that_does_not_fit_the_slice_takes_the_synchronous_path() -> None:
    leases = Leases(CreditTerms(calls=4))
    piece = await leases.slice_for(100)  # 400 granted, 100 reserved
    assert leases.credit.reserve(GRANT, 301) is None
    assert piece.reserved == 100 and piece.calls == 1


async def test_slices_are_bounded_by_the_largest_lease_and_by_a_share_of_the_balance_left() -> None:
    leases = Leases(CreditTerms(calls=1000, max_micros=50_000, share=0.25), balance=120_000)
    await leases.slice_for(100)
    assert leases.billing.asked == [50_000]  # 1000 calls would be 100,000: the largest lease is 50,000
    leases.clock.now += 31  # past its age: the next call asks for a new one
    assert leases.credit.reserve(GRANT, 100) is None
    await leases.settle()
    assert leases.billing.asked[1] == 70_000 // 4  # a quarter of the 70,000 the first one left


async def test_an_account_that_cannot_lease_is_served_synchronously_and_asked_less_after_a_cool_down() -> None:
    """A nearly empty account still gets exactly what it can pay for: the lease is refused,
    its calls hold one by one, and no slice is asked for again until the cool-down ends."""
    leases = Leases(CreditTerms(calls=32, retry_s=5), balance=1000)
    assert leases.credit.reserve(GRANT, 100) is None
    await leases.settle()
    assert leases.billing.asked == [3200] and leases.credit.refused == 1
    assert leases.credit.reserve(GRANT, 100) is None
    await leases.settle()
    assert leases.billing.asked == [3200]  # cooling down: not asked again
    leases.clock.now += 6
    leases.credit.sweep()
    assert leases.credit.reserve(GRANT, 100) is None
    await leases.settle()
    assert leases.billing.asked == [3200, 800]  # a quarter of what was refused; this fits
    assert leases.credit.reserve(GRANT, 100) is not None


async def test_give_back_returns_the_accounts_idle_slices_at_once_and_leases_its_keys_nothing_for_a_while() -> None:
    """A synchronous hold refused for credit while a slice holds some of the account's
    balance: the idle slices of that account go back now (a slice with a call in flight,
    and other accounts' slices, stay), and its keys are leased nothing until the cool-down
    ends, so the hold tried again finds the credit."""
    leases = Leases(CreditTerms(calls=4, retry_s=5))
    other_key, other_account = KeyGrant("acct", "key-2", 0), KeyGrant("acct-2", "key-3", 0)
    idle = await leases.slice_for(100)
    leases.credit.finish(idle, 100, 30)  # its call is settled: nothing draws on it
    busy = await leases.slice_for(100, other_key)  # a call in flight on it
    elsewhere = await leases.slice_for(100, other_account)
    leases.credit.finish(elsewhere, 100, 30)
    assert await leases.credit.give_back("acct") is True
    assert leases.billing.returned == [(idle.hold_id, f"{idle.hold_id}:return")]
    assert idle.retired and not busy.retired and not elsewhere.retired
    assert leases.credit.reserve(GRANT, 100) is None  # no slice, and none asked for while cooling
    await leases.settle()
    assert len(leases.billing.asked) == 3
    assert await leases.credit.give_back("acct") is False  # nothing idle is left to give
    leases.clock.now += 6
    assert leases.credit.reserve(GRANT, 100) is None
    await leases.settle()
    assert len(leases.billing.asked) == 4  # after the cool-down, asked again


async def test_no_slice_is_asked_for_when_it_could_not_cover_two_calls() -> None:
    leases = Leases(CreditTerms(calls=32, share=0.25), balance=10_000)
    await leases.slice_for(100)  # 3,200 held, 6,800 left
    leases.clock.now += 31
    assert leases.credit.reserve(GRANT, 1000) is None  # a quarter of 6,800 is 1,700 < 2 x 1,000
    await leases.settle()
    assert leases.billing.asked == [3200]


async def test_a_slice_running_low_is_replaced_ahead_of_need_and_returned_after_its_last_call() -> None:
    leases = Leases(CreditTerms(calls=4))
    first = await leases.slice_for(100)  # 400: 100 reserved
    assert leases.credit.reserve(GRANT, 100) is first
    assert leases.credit.reserve(GRANT, 100) is first  # 100 free: below a quarter, a new one is asked for
    await leases.settle()
    assert len(leases.billing.asked) == 2 and first.retired
    second = leases.credit.reserve(GRANT, 100)
    assert second is not None and second is not first
    for _ in range(2):
        leases.credit.finish(first, 100, 90)
    await leases.settle()
    assert leases.billing.returned == []  # one call of the first slice is still unsettled
    leases.credit.finish(first, 100, 90)
    await leases.settle()
    assert leases.billing.returned == [(first.hold_id, f"{first.hold_id}:return")]


async def test_an_idle_slice_is_returned_and_a_changed_spend_cap_retires_it() -> None:
    leases = Leases(CreditTerms(calls=4, idle_s=5))
    piece = await leases.slice_for(100)
    leases.credit.finish(piece, 100, 100)
    leases.clock.now += 4
    leases.credit.sweep()
    assert not piece.retired
    leases.clock.now += 1
    leases.credit.sweep()
    await leases.settle()
    assert piece.retired and [hold for hold, _ in leases.billing.returned] == [piece.hold_id]
    capped = await leases.slice_for(100)
    assert leases.credit.reserve(KeyGrant("acct", "key", 5_000), 100) is None  # other terms: not this slice
    assert capped.retired
    leases.credit.finish(capped, 100, 100)
    await leases.settle()
    assert [hold for hold, _ in leases.billing.returned] == [piece.hold_id, capped.hold_id]


async def test_close_returns_every_slice_once_its_calls_are_settled() -> None:
    leases = Leases()
    piece = await leases.slice_for(100)
    other = await leases.slice_for(100, KeyGrant("acct2", "key2"))
    leases.credit.finish(other, 100, 100)
    leases.credit.close()
    await leases.settle()
    assert [hold for hold, _ in leases.billing.returned] == [other.hold_id]
    leases.credit.finish(piece, 100, 100)
    await leases.settle()
    assert {hold for hold, _ in leases.billing.returned} == {piece.hold_id, other.hold_id}
    assert leases.credit.outstanding == 0


operations = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), st.integers(1, 500), st.sampled_from([0, 1])),
        st.tuples(st.just("finish"), st.integers(0, 20), st.integers(0, 600)),
        st.tuples(st.just("wait"), st.floats(0, 10), st.just(0)),
        st.tuples(st.just("settle"), st.just(0), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(operations, st.integers(0, 20_000))
def test_random_calls_never_overdraw_a_slice_and_each_slice_is_returned_once_after_its_last_call(
    ops: list[tuple[str, Any, Any]], balance: int
) -> None:
    """Whatever the order of calls, settles, waits and lease replies: a call is reserved from a
    slice only if the slice's free amount covers it, never from a retired one; a slice goes
    back only when no call on it is unsettled, and only once; after close, all go back."""
    asyncio.run(_random_run(ops, balance))


async def _random_run(ops: list[tuple[str, Any, Any]], balance: int) -> None:
    leases = Leases(CreditTerms(calls=8, max_age_s=20, idle_s=5), balance)
    credit, grants = leases.credit, [GRANT, KeyGrant("acct", "key2")]
    open_calls: list[tuple[Slice, int]] = []
    for op, a, b in ops:
        if op == "reserve":
            before = {id(p): p.free for p in credit._slices.values()}
            piece = credit.reserve(grants[b], a)
            if piece is not None:
                assert before.get(id(piece), -1) >= a and not piece.retired
                open_calls.append((piece, a))
        elif op == "finish" and open_calls:
            piece, cost = open_calls.pop(a % len(open_calls))
            credit.finish(piece, cost, b)
        elif op == "wait":
            leases.clock.now += a
            credit.sweep()
        else:
            await leases.settle()
        returned = [hold for hold, _ in leases.billing.returned]
        assert len(returned) == len(set(returned))
        assert not {hold for hold in returned} & {p.hold_id for p, _ in open_calls}
    for piece, cost in open_calls:
        credit.finish(piece, cost, cost)
    await leases.settle()
    credit.close()
    await leases.settle()
    assert sorted(hold for hold, _ in leases.billing.returned) == sorted(leases.billing.held)


@pytest.mark.parametrize("cost", [1, 250])
async def test_a_slice_covers_exactly_what_it_holds(cost: int) -> None:
    leases = Leases(CreditTerms(calls=4))
    piece = await leases.slice_for(cost)
    taken = 1
    while leases.credit.reserve(GRANT, cost) is piece:
        taken += 1
    assert taken * cost <= piece.granted < (taken + 1) * cost
