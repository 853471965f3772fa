"""The settle outbox against real Redis: entries from concurrent settles are written and
removed together, and each is stored before its settle goes to billing."""

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
    assert await checks.hkeys(OUTBOX_KEY) == [b"s48-busy"]  # only the settle billing has not answered
    # 100 writes in a handful of pipelined round trips, not a command each
    assert round_trips["commands"] == 0 and 2 <= round_trips["pipelines"] <= 6
    await checks.delete(OUTBOX_KEY)
    await redis.aclose()
    await checks.aclose()


async def test_within_one_write_the_last_change_of_an_entry_wins() -> None:
    """An add and a removal of one entry queued while no write was in flight go out in the
    same write (one HSET, one HDEL): the later of the two decides whether the entry stays."""
    redis = Redis.from_url(REDIS_OUTBOX)
    await redis.delete(OUTBOX_KEY)
    outbox = SettleOutbox(redis, stale_s=60)
    added_then_removed = billing_pb2.SettleRequest(hold_id="h", idempotency_key="gone")
    removed_then_added = billing_pb2.SettleRequest(hold_id="h", idempotency_key="kept")
    await asyncio.gather(
        outbox.add(added_then_removed),
        outbox.remove("gone"),
        outbox.remove("kept"),
        outbox.add(removed_then_added),
    )
    assert await redis.hkeys(OUTBOX_KEY) == [b"kept"]
    await redis.delete(OUTBOX_KEY)
