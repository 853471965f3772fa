"""Per-key rate limits and failed sign-in throttling, both counted in Redis.

Rate limits use fixed one-minute windows keyed by the Redis server's clock (`TIME`), so
every auth instance agrees on the window. One Lua script checks and takes a request and
the estimated tokens atomically, for one call or a whole batch of them in order: under any
concurrency exactly `rpm` calls pass a minute.
ReportTokens later moves the token count by the difference between actual and estimate.

Sign-in throttling counts failures per account and per IP for a window; the counter keys
hold an HMAC of the email or IP, never the value itself.

Redis Cluster: a key's two counters share a hash slot (`{key_id}` tag); a batch spanning
keys is split into one script call per slot when the client is a cluster client.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.crc import key_slot

CONSUME = """
local t = redis.call('TIME')
local now = tonumber(t[1])
local window = math.floor(now / 60)
local reset = (window + 1) * 60 - now
local out = {}
for i = 1, #KEYS / 2 do
  local rkey = KEYS[2 * i - 1] .. ':' .. window
  local tkey = KEYS[2 * i] .. ':' .. window
  local rpm = tonumber(ARGV[3 * i - 2])
  local tpm = tonumber(ARGV[3 * i - 1])
  local tokens = tonumber(ARGV[3 * i])
  local used_r = tonumber(redis.call('GET', rkey) or '0')
  local used_t = tonumber(redis.call('GET', tkey) or '0')
  if used_r + 1 > rpm or (tpm > 0 and used_t + tokens > tpm) then
    out[i] = {0, reset, rpm - used_r, tpm - used_t}
  else
    redis.call('INCR', rkey)
    redis.call('EXPIRE', rkey, 120)
    if tokens > 0 then
      redis.call('INCRBY', tkey, tokens)
      redis.call('EXPIRE', tkey, 120)
    end
    out[i] = {1, reset, rpm - used_r - 1, tpm - used_t - tokens}
  end
end
return out
"""

ADJUST = """
local t = redis.call('TIME')
local window = math.floor(tonumber(t[1]) / 60)
local tkey = KEYS[1] .. ':' .. window
local value = redis.call('INCRBY', tkey, tonumber(ARGV[1]))
redis.call('EXPIRE', tkey, 120)
return value
"""


COUNT_FAILURE = """
local value = redis.call('INCR', KEYS[1])
if redis.call('TTL', KEYS[1]) < 0 then
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
end
return value
"""


def is_cluster(redis: Redis) -> bool:
    from redis.asyncio.cluster import RedisCluster

    return isinstance(redis, RedisCluster)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: int
    remaining_requests: int
    remaining_tokens: int


class RateLimiter:
    """Requests and tokens per minute per key, atomic in Redis."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._cluster = is_cluster(redis)
        self._consume = redis.register_script(CONSUME)
        self._adjust = redis.register_script(ADJUST)

    @staticmethod
    def _keys(key_id: str) -> list[str]:
        """A key's two counters, in one hash slot (the `{key_id}` tag): the scripts derive
        each window's key from these, which Redis Cluster allows within the slot."""
        return [f"gm:auth:rl:{{{key_id}}}:r", f"gm:auth:rl:{{{key_id}}}:t"]

    async def consume(self, key_id: str, rpm: int, tpm: int, tokens: int) -> Decision:
        return (await self.consume_many([(key_id, rpm, tpm, tokens)]))[0]

    async def consume_many(self, requests: list[tuple[str, int, int, int]]) -> list[Decision]:
        """Take a request and its tokens for each (key id, rpm, tpm, tokens), in order (two
        requests of one key count as they would one after the other), in one script call:
        one command and one round trip however many requests. (A pipeline of one script
        call per request cost a SCRIPT EXISTS round trip before each batch, and the client's
        packing and parsing per command were most of auth's CPU for a batch.)"""
        if self._cluster:
            return await self._consume_by_slot(requests)
        keys: list[str] = []
        args: list[int] = []
        for key_id, rpm, tpm, tokens in requests:
            keys += self._keys(key_id)
            args += (rpm, tpm, tokens)
        replies = await self._consume(keys=keys, args=args)
        return [Decision(bool(a), max(1, int(reset)), max(0, int(r)), max(0, int(t))) for a, reset, r, t in replies]

    async def _consume_by_slot(self, requests: list[tuple[str, int, int, int]]) -> list[Decision]:
        """On a Redis Cluster a script's keys must share a slot: one call per slot (the
        requests of one key stay together, in order), concurrently."""
        groups: dict[int, list[int]] = {}
        for index, (key_id, *_rest) in enumerate(requests):
            groups.setdefault(key_slot(self._keys(key_id)[0].encode()), []).append(index)
        parts = await asyncio.gather(
            *(self._consume_one_slot([requests[i] for i in indexes]) for indexes in groups.values())
        )
        decisions: list[Decision | None] = [None] * len(requests)
        for indexes, part in zip(groups.values(), parts, strict=True):
            for index, decision in zip(indexes, part, strict=True):
                decisions[index] = decision
        return [d for d in decisions if d is not None]

    async def _consume_one_slot(self, requests: list[tuple[str, int, int, int]]) -> list[Decision]:
        keys: list[str] = []
        args: list[int] = []
        for key_id, rpm, tpm, tokens in requests:
            keys += self._keys(key_id)
            args += (rpm, tpm, tokens)
        replies = await self._consume(keys=keys, args=args)
        return [Decision(bool(a), max(1, int(reset)), max(0, int(r)), max(0, int(t))) for a, reset, r, t in replies]

    async def adjust_tokens(self, key_id: str, delta: int) -> None:
        if delta:
            await self._adjust(keys=self._keys(key_id)[1:], args=[delta])


class SignInThrottle:
    """Counts failed sign-ins per account and per IP; refuses while either is over its cap."""

    def __init__(self, redis: Redis, secret: str, max_account: int, max_ip: int, window_s: int) -> None:
        self._redis = redis
        self._secret = secret.encode()
        self._caps = {"acct": max_account, "ip": max_ip}
        self._window = window_s
        self._count = redis.register_script(COUNT_FAILURE)

    def _names(self, email: str, ip: str) -> dict[str, str]:
        names = {"acct": self._name("acct", email)}
        if ip:
            names["ip"] = self._name("ip", ip)
        return names

    def _name(self, kind: str, value: str) -> str:
        digest = hmac.new(self._secret, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()[:32]
        return f"gm:auth:signin:{kind}:{digest}"

    async def retry_after(self, email: str, ip: str) -> int | None:
        """Seconds until sign-in may be tried again, or None when not throttled."""
        names = self._names(email, ip)
        async with self._redis.pipeline(transaction=False) as pipe:
            for name in names.values():
                pipe.get(name)
                pipe.ttl(name)
            replies = await pipe.execute()
        waits = [
            int(replies[2 * i + 1])
            for i, kind in enumerate(names)
            if replies[2 * i] is not None and int(replies[2 * i]) >= self._caps[kind]
        ]
        return max(1, *waits) if waits else None

    async def failed(self, email: str, ip: str) -> None:
        """Count the failure on each counter, each in one script (INCR and its first EXPIRE
        atomic per key: the account and IP counters live in different hash slots)."""
        await asyncio.gather(
            *(self._count(keys=[name], args=[self._window]) for name in self._names(email, ip).values())
        )

    async def succeeded(self, email: str) -> None:
        await self._redis.delete(self._name("acct", email))
