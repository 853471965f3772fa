"""Rate leases in auth's limiter (real Redis): shares of a key's per-minute budget taken by
several holders at once never add up, with the calls checked one by one, to more than the
limit; a key near its limit gets no share; renewals near a minute's end come from the next."""

from __future__ import annotations

import asyncio
import random

from services.auth.leases import ChangeFeed, lease_tag
from services.auth.limits import RateAsk, RateLimiter


async def fresh_minute(redis, margin: int = 10) -> None:
    seconds, _ = await redis.time()
    if seconds % 60 > 60 - margin:
        await asyncio.sleep(61 - seconds % 60)


async def test_shares_and_single_calls_never_pass_the_limit(redis) -> None:
    limiter = RateLimiter(redis)
    await fresh_minute(redis)
    rpm, tpm = 50, 10_000
    rng = random.Random(7)

    async def holder() -> tuple[int, int]:
        """A proxy: asks for shares (with a call, or alone) or sends single calls."""
        requests = tokens = 0
        for _ in range(30):
            kind = rng.choice(["call", "lease", "renew"])
            ask = (
                RateAsk("k", rpm, tpm, 40) if kind == "call" else RateAsk("k", rpm, tpm, 40, kind == "lease", 5, 1_000)
            )
            (decision,) = await limiter.consume_many([ask])
            if decision.allowed and ask.take:
                requests, tokens = requests + 1, tokens + 40
            requests += decision.share_requests
            tokens += decision.share_tokens
        return requests, tokens

    outcomes = await asyncio.gather(*(holder() for _ in range(6)))
    assert sum(r for r, _ in outcomes) <= rpm
    assert sum(t for _, t in outcomes) <= tpm
    assert sum(r for r, _ in outcomes) >= rpm - 3  # near the limit shares stop; single calls fill the rest


async def test_a_key_near_its_limit_gets_no_share_and_the_429_stays(redis) -> None:
    limiter = RateLimiter(redis)
    await fresh_minute(redis)
    (first,) = await limiter.consume_many([RateAsk("k", 4, 0, 1, True, 10, 0)])
    assert (first.allowed and first.share_requests == 1) or first.share_requests == 0
    assert first.share_requests == 0  # 3 left: half of it is below a share of two
    for _ in range(3):
        assert (await limiter.consume("k", 4, 0, 1)).allowed
    over = await limiter.consume("k", 4, 0, 1)
    assert not over.allowed and 1 <= over.retry_after_s <= 60


async def test_a_share_lasts_to_its_minutes_end_and_a_late_renewal_takes_the_next(redis) -> None:
    limiter = RateLimiter(redis)
    await fresh_minute(redis, margin=15)
    seconds, micros = await redis.time()
    left_ms = (60 - seconds % 60) * 1000 - micros // 1000
    (now,) = await limiter.consume_many([RateAsk("k", 100, 0, 1, True, 10, 0)])
    assert now.share_requests == 10 and now.share_tokens == 0  # no tokens-per-minute limit
    assert left_ms - 200 <= now.share_ms <= left_ms
    ahead = 60.0  # any renewal is then "near the end": its share comes from the next minute
    (late,) = await limiter.consume_many([RateAsk("k", 100, 0, 0, False, 10, 0, ahead)])
    assert late.share_requests == 10
    assert left_ms + 59_000 <= late.share_ms <= left_ms + 60_000
    window = seconds // 60
    assert int(await redis.get(f"gm:auth:rl:{{k}}:r:{window}")) == 11
    assert int(await redis.get(f"gm:auth:rl:{{k}}:r:{window + 1}")) == 10


async def test_change_feed_reaches_every_watcher_and_reset_ends_them() -> None:
    feed = ChangeFeed(heartbeat_s=0.05)
    watchers = [feed.subscribe(), feed.subscribe()]
    streams = [feed.stream(w) for w in watchers]
    written = feed.changed(["hash-1"])
    assert len(written) == 2
    for stream in streams:
        tags, done = await anext(stream)
        assert tags == [lease_tag("hash-1")] and "hash-1" not in tags[0]
        done.set_result(None)
    await feed.wait_written(written)
    assert all(f.done() for f in written)
    assert await anext(streams[0]) == ([], None)  # a heartbeat when nothing changed
    feed.reset()
    for stream in streams:
        assert [item async for item in stream] == []
    assert feed.watchers == 0
