"""The settle outbox against real Redis: entries from concurrent settles are written
together, each is stored before its settle goes to billing, and removals follow later in
one command."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from gatemesh.billing.v1 import billing_pb2
from services.proxy.outbox import OUTBOX_KEY, SettleOutbox
from services.runtime.errors import FailedPrecondition, Unavailable
from tests.support import REDIS_OUTBOX


async def test_concurrent_settles_share_writes_and_each_entry_is_stored_before_its_settle() -> None:
    redis, checks = Redis.from_url(REDIS_OUTBOX), Redis.from_url(REDIS_OUTBOX)
    await checks.delete(OUTBOX_KEY)
    outbox = SettleOutbox(redis, stale_s=60)
    release, all_sent = asyncio.Event(), asyncio.Event()
    stored_before_send: list[bool] = []
    round_trips = {"pipelines": 0, "commands": 0}
    pipeline, command = redis.pipeline, redis.execute_command

    def counted_pipeline(*args: object, **kwargs: object) -> object:
        round_trips["pipelines"] += 1
        return pipeline(*args, **kwargs)  # type: ignore[arg-type]

    async def counted_command(*args: object, **kwargs: object) -> object:
        round_trips["commands"] += 1
        return await command(*args, **kwargs)

    redis.pipeline, redis.execute_command = counted_pipeline, counted_command  # type: ignore[method-assign]

    async def send(request: billing_pb2.SettleRequest) -> str:
        stored_before_send.append(bool(await checks.hexists(OUTBOX_KEY, request.idempotency_key)))
        if len(stored_before_send) == 50:
            all_sent.set()
        await release.wait()
        if request.idempotency_key.endswith("-busy"):
            raise Unavailable("billing is busy")  # transient: the entry must stay for a replay
        if request.idempotency_key.endswith("-refused"):
            raise FailedPrecondition("the hold is already settled")  # final: the entry goes
        return request.idempotency_key

    keys = [f"s{i}" for i in range(48)] + ["s48-busy", "s49-refused"]
    calls = [
        asyncio.create_task(outbox.settle(billing_pb2.SettleRequest(hold_id="h", idempotency_key=k), send))
        for k in keys
    ]
    await asyncio.wait_for(all_sent.wait(), 10)
    assert all(stored_before_send)
    assert await checks.hlen(OUTBOX_KEY) == 50
    release.set()
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert outcomes[:48] == keys[:48]
    assert isinstance(outcomes[48], Unavailable) and isinstance(outcomes[49], FailedPrecondition)
    for _ in range(50):  # the removals linger (0.1 s), then go out together
        if await checks.hlen(OUTBOX_KEY) == 1:
            break
        await asyncio.sleep(0.02)
    assert await checks.hkeys(OUTBOX_KEY) == [b"s48-busy"]  # only the settle billing has not answered
    # 50 adds and 49 removals: a few HSETs and one HDEL, single commands, no pipelines
    assert round_trips["pipelines"] == 0 and 2 <= round_trips["commands"] <= 5
    await checks.delete(OUTBOX_KEY)
    await redis.aclose()
    await checks.aclose()


async def test_the_last_change_of_an_entry_wins() -> None:
    """Adds and removals of entries queued together: the later change of each entry decides
    whether it stays (a removal queued before a new add of its entry is dropped)."""
    redis = Redis.from_url(REDIS_OUTBOX)
    await redis.delete(OUTBOX_KEY)
    outbox = SettleOutbox(redis, stale_s=60)
    added_then_removed = billing_pb2.SettleRequest(hold_id="h", idempotency_key="gone")
    removed_then_added = billing_pb2.SettleRequest(hold_id="h", idempotency_key="kept")
    await outbox.add(added_then_removed)
    outbox.remove("gone")
    outbox.remove("kept")
    await outbox.add(removed_then_added)  # drops the removal queued before it
    await outbox.close()  # the queued removals are written now
    assert await redis.hkeys(OUTBOX_KEY) == [b"kept"]
    await redis.delete(OUTBOX_KEY)


async def test_one_settle_at_a_time_costs_one_round_trip_and_removals_follow_together() -> None:
    """At one call at a time each settle writes its entry (one HSET) before it is sent; the
    removals of the answered ones go out later, together (one HDEL)."""
    redis, checks = Redis.from_url(REDIS_OUTBOX), Redis.from_url(REDIS_OUTBOX)
    await checks.delete(OUTBOX_KEY)
    outbox = SettleOutbox(redis, stale_s=60, removal_linger_s=0.2)
    commands: list[bytes] = []
    command = redis.execute_command

    async def counted_command(*args: object, **kwargs: object) -> object:
        commands.append(str(args[0]).encode())
        return await command(*args, **kwargs)

    redis.execute_command = counted_command  # type: ignore[method-assign]

    async def send(request: billing_pb2.SettleRequest) -> str:
        return request.idempotency_key

    for i in range(5):
        await outbox.settle(billing_pb2.SettleRequest(hold_id="h", idempotency_key=f"one-{i}"), send)
    assert commands == [b"HSET"] * 5
    assert await checks.hlen(OUTBOX_KEY) == 5  # answered, their removals not yet due
    await asyncio.sleep(0.4)
    assert commands == [b"HSET"] * 5 + [b"HDEL"]
    assert await checks.hlen(OUTBOX_KEY) == 0
    await redis.aclose()
    await checks.aclose()


async def test_a_stopped_proxys_entries_are_replayed_together_and_kept_while_billing_is_busy() -> None:
    """Replayed settles go out together (they share settle batches, instead of one batch's
    linger each); billing's transient refusals stay for the next round, final answers go."""
    redis = Redis.from_url(REDIS_OUTBOX)
    await redis.delete(OUTBOX_KEY)
    stale = SettleOutbox(redis, stale_s=0)
    for i in range(60):
        await stale.add(billing_pb2.SettleRequest(hold_id="h", idempotency_key=f"r{i}" + ("-busy" if i < 5 else "")))
    await asyncio.sleep(0.01)  # entries are stamped to the millisecond: let the last one be older than now
    in_flight, most = 0, 0

    async def send(request: billing_pb2.SettleRequest) -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        if request.idempotency_key.endswith("-busy"):
            raise Unavailable("billing is busy")
        if request.idempotency_key == "r9":
            raise FailedPrecondition("the hold expired")  # answered for good: the entry goes

    assert await stale.replay(send) == 55
    assert most == 60  # all at once, not one after the other
    assert sorted(await redis.hkeys(OUTBOX_KEY)) == sorted(f"r{i}-busy".encode() for i in range(5))
    await redis.delete(OUTBOX_KEY)
    await redis.aclose()
