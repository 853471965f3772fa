"""Credit leases end to end (issue 15): real auth, billing and two proxies on PostgreSQL and
Redis. A leased key's calls reserve their cost from a slice billing holds for each proxy and
are each charged exactly once; with several proxies competing for one account no balance
goes below zero, no key above its spend cap, and an account is served exactly what it can
pay for; a proxy killed with slices open leaves them to expire, and every call it answered
is still charged once."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack

import asyncpg
import grpc
import pytest
from redis import Redis

from gatemesh.proxy.v1 import proxy_pb2_grpc
from tests.support import REDIS_PROXY

from .mesh import (
    Mesh,
    User,
    add_proxy,
    call,
    cost,
    fresh_channels,
    leased,
    mesh_databases,
    pg_plain,
    proxies,
    start_mesh,
)

pytestmark = pytest.mark.e2e

# Short lives, so that the test sees slices returned and expired: a slice takes calls for 2 s
# and goes back after 1 s unused; a call's hold (and so a slice's ttl, 2 + 3 + 1 s) is short.
CREDIT_ENV = {
    "GATEMESH_PROXY_CREDIT_LEASES": "true",
    "GATEMESH_PROXY_CREDIT_LEASE_AGE_S": "2",
    "GATEMESH_PROXY_CREDIT_LEASE_IDLE_S": "1",
    "GATEMESH_PROXY_CREDIT_LEASE_RETRY_S": "0.5",
    "GATEMESH_PROXY_HOLD_TTL_S": "3",
    "GATEMESH_PROXY_OUTBOX_STALE_S": "1",  # a killed proxy's settles are replayed before its holds expire
    "GATEMESH_PROXY_RPC_TIMEOUT_S": "2",
}
MAX_TOKENS = 20
# A call's largest cost as the proxy reserves it: its counted prompt (a few tokens of the
# test's short message, and the chat format's own) plus MAX_TOKENS of output, at most this.
LARGEST_COST = cost(100, MAX_TOKENS)


@pytest.fixture(scope="module")
def databases() -> Iterator[dict[str, str]]:
    yield from mesh_databases("credit")


@pytest.fixture(scope="module")
def mesh(
    tmp_path_factory: pytest.TempPathFactory, databases: dict[str, str], upstreams: Callable[[str], str]
) -> Iterator[Mesh]:
    """The mesh with credit leases on, a second proxy, and billing sweeping every second."""
    Redis.from_url(REDIS_PROXY).flushdb()
    tmp = tmp_path_factory.mktemp("credit-mesh")
    with ExitStack() as stack:
        mesh = start_mesh(
            stack, tmp, databases, upstreams, "INFO", CREDIT_ENV, billing_env={"GATEMESH_BILLING_SWEEP_INTERVAL_S": "1"}
        )
        add_proxy(stack, mesh, tmp)
        yield mesh


@pytest.fixture
async def live(mesh: Mesh) -> AsyncIterator[Mesh]:
    async for value in fresh_channels(mesh):
        yield value


async def holds_of(mesh: Mesh, account_id: str) -> list[dict[str, object]]:
    connection = await asyncpg.connect(pg_plain(mesh.databases["billing"]))
    try:
        rows = await connection.fetch("SELECT amount, status FROM holds WHERE account_id = $1", account_id)
    finally:
        await connection.close()
    return [dict(row) for row in rows]


async def served(stub: proxy_pb2_grpc.ProxyServiceStub, user: User) -> bool:
    """One call: True if answered, False if refused for credit (429's gRPC twin)."""
    try:
        await call(stub, user, max_tokens=MAX_TOKENS)
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
        return False
    return True


async def settled(user: User, timeout_s: float = 20) -> int:
    """The available balance once no hold or lease is open (slices go back when idle)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        available, held = await user.balance()
        if held == 0:
            return available
        await asyncio.sleep(0.1)
    raise AssertionError("a hold or lease is still open")


async def charged_once(user: User, answered: int, granted: int) -> int:
    """Every answered call has exactly one usage record, and the ledger took exactly their
    costs: the balance is what was granted less the sum of the records' costs."""
    balance = await settled(user)
    records = [r for r in await user.usage() if r.status == "ok"]
    assert len(records) == answered
    assert all(r.cost_micros == cost(r.input_tokens, r.output_tokens) for r in records)
    assert balance == granted - sum(r.cost_micros for r in records)
    return balance


async def test_a_leased_keys_calls_draw_on_one_slice_and_are_each_charged_once(live: Mesh) -> None:
    granted = 10_000_000
    user = await live.user(granted)
    answered = await leased(live, user)
    stub = proxies(live)[0]
    for _ in range(40):
        await call(stub, user, max_tokens=MAX_TOKENS)
    answered += 40
    holds = await holds_of(live, user.account_id)
    # the warm-up calls and each proxy's first leased call hold one by one; the rest drew on slices
    assert len(holds) < answered - 30, holds
    _, held = await user.balance()
    assert held > 0  # the slice is still out
    await charged_once(user, answered=answered, granted=granted)
    assert all(h["status"] != "open" for h in await holds_of(live, user.account_id))


async def test_two_proxies_on_one_small_account_never_overdraw_it_and_serve_what_it_can_pay_for(
    live: Mesh,
) -> None:
    """Eighty calls at once through two proxies on an account whose credit covers the largest
    cost of about fifteen: the balance never goes below zero, nothing is charged twice or
    lost, and once the burst is over the account is served call by call until it cannot pay
    for the next one's largest cost."""
    user = await live.user(3_000)
    await leased(live, user)
    stubs = proxies(live)
    outcomes = await asyncio.gather(*(served(stubs[i % 2], user) for i in range(80)))
    assert any(outcomes) and not all(outcomes)
    while True:  # the rest, one call at a time, until refused with nothing held anywhere
        if await served(stubs[0], user):
            continue
        await settled(user)
        if not await served(stubs[0], user):
            break
    await settled(user)
    records = [r for r in await user.usage() if r.status == "ok"]
    balance = await charged_once(user, answered=len(records), granted=3_000)
    assert 0 <= balance < LARGEST_COST  # not enough left for the next call's largest cost
    assert all(r.shortfall_micros == 0 for r in records)


async def test_a_keys_spend_cap_holds_across_proxies_with_slices(live: Mesh) -> None:
    cap = 3_000
    user = await live.user(10_000_000, spend_cap_micros=cap)
    answered = await leased(live, user)
    stubs = proxies(live)
    for _ in range(3):
        answered += sum(await asyncio.gather(*(served(stubs[i % 2], user) for i in range(40))))
    assert answered < 120  # refused once the cap was reached
    await charged_once(user, answered=answered, granted=10_000_000)
    records = [r for r in await user.usage() if r.status == "ok"]
    assert sum(r.cost_micros for r in records) <= cap


async def test_a_killed_proxy_leaves_its_slices_to_expire_and_its_answered_calls_charged_once(
    live: Mesh,
) -> None:
    granted = 5_000_000
    user = await live.user(granted)
    with ExitStack() as stack:
        process = add_proxy(stack, live, live.logs["proxy"].parent, "proxy3")
        third = grpc.aio.insecure_channel(live.envs["proxy3"]["addr"])
        stub = proxy_pb2_grpc.ProxyServiceStub(third)
        answered = 0
        for _ in range(30):
            answered += await served(stub, user)
        assert len(await holds_of(live, user.account_id)) < answered - 20  # the calls drew on slices
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        await third.close()
    # the slice expires (billing's sweeper), the answered calls' settles are confirmed or replayed
    await charged_once(user, answered=answered, granted=granted)
