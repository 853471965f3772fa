"""Per-key rate limits and failed sign-in throttling, both counted in Redis.

Rate limits use fixed one-minute windows keyed by the Redis server's clock (`TIME`), so
every auth instance agrees on the window. One Lua script checks and takes a request and
the estimated tokens atomically, for one call or a whole batch of them in order: under any
concurrency exactly `rpm` calls pass a minute.
ReportTokens later moves the token count by the difference between actual and estimate.

Rate leases (`RateAsk`): the same script takes a proxy's share of a window from the same
counters, so shares and single calls together never pass the limit, however many proxies
hold shares. A share is at most what was asked and at most half of what is left (so
several proxies get one), and none is given below two requests or one call's tokens: a
key near its limit is then checked call by call, with today's 429 and Retry-After. A
renewal asked within `ahead_s` of the window's end takes its share from the next window.

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
local now_s = tonumber(t[1])
local now = now_s + tonumber(t[2]) / 1000000
local window = math.floor(now_s / 60)
local reset = (window + 1) * 60 - now_s
local out = {}
for i = 1, #KEYS / 2 do
  local rbase, tbase = KEYS[2 * i - 1], KEYS[2 * i]
  local a = 7 * (i - 1)
  local rpm, tpm, tokens = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local take, want_r, want_t = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6])
  local ahead = tonumber(ARGV[a + 7])
  local rkey, tkey = rbase .. ':' .. window, tbase .. ':' .. window
  local used_r = tonumber(redis.call('GET', rkey) or '0')
  local used_t = tonumber(redis.call('GET', tkey) or '0')
  local allowed = 1
  if take == 1 then
    if used_r + 1 > rpm or (tpm > 0 and used_t + tokens > tpm) then
      allowed = 0
    else
      redis.call('INCR', rkey)
      redis.call('EXPIRE', rkey, 120)
      if tokens > 0 then
        redis.call('INCRBY', tkey, tokens)
        redis.call('EXPIRE', tkey, 120)
      end
      used_r, used_t = used_r + 1, used_t + tokens
    end
  end
  local share_r, share_t, share_ms = 0, 0, 0
  if allowed == 1 and want_r > 0 then
    local sw = math.floor((now + ahead) / 60)
    local srkey, stkey, s_used_r, s_used_t = rkey, tkey, used_r, used_t
    if sw ~= window then
      srkey, stkey = rbase .. ':' .. sw, tbase .. ':' .. sw
      s_used_r = tonumber(redis.call('GET', srkey) or '0')
      s_used_t = tonumber(redis.call('GET', stkey) or '0')
    end
    share_r = math.min(want_r, math.floor((rpm - s_used_r) / 2))
    if tpm > 0 then share_t = math.min(want_t, math.floor((tpm - s_used_t) / 2)) end
    if share_r >= 2 and (tpm <= 0 or share_t >= math.max(1, tokens)) then
      redis.call('INCRBY', srkey, share_r)
      redis.call('EXPIRE', srkey, 180)
      if share_t > 0 then
        redis.call('INCRBY', stkey, share_t)
        redis.call('EXPIRE', stkey, 180)
      end
      share_ms = math.floor(((sw + 1) * 60 - now) * 1000)
      if sw == window then used_r, used_t = used_r + share_r, used_t + share_t end
    else
      share_r, share_t = 0, 0
    end
  end
  out[i] = {allowed, reset, rpm - used_r, tpm - used_t, share_r, share_t, share_ms}
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
    share_requests: int = 0
    share_tokens: int = 0
    share_ms: int = 0  # from the script's clock reading until the share's window ends


@dataclass(frozen=True)
class RateAsk:
    """One request to the script: take a call (`take`) and/or a share of the window."""

    key_id: str
    rpm: int
    tpm: int
    tokens: int
    take: bool = True
    share_requests: int = 0  # 0: no share wanted
    share_tokens: int = 0
    ahead_s: float = 0.0

    def args(self) -> tuple[int | float, ...]:
        return (self.rpm, self.tpm, self.tokens, int(self.take), self.share_requests, self.share_tokens, self.ahead_s)


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
        return (await self.consume_many([RateAsk(key_id, rpm, tpm, tokens)]))[0]

    async def consume_many(self, requests: list[RateAsk]) -> list[Decision]:
        """Take a request and its tokens for each (key id, rpm, tpm, tokens), in order (two
        requests of one key count as they would one after the other), in one script call:
        one command and one round trip however many requests. (A pipeline of one script
        call per request cost a SCRIPT EXISTS round trip before each batch, and the client's
        packing and parsing per command were most of auth's CPU for a batch.)"""
        if self._cluster:
            return await self._consume_by_slot(requests)
        return await self._consume_one_slot(requests)

    async def _consume_by_slot(self, requests: list[RateAsk]) -> list[Decision]:
        """On a Redis Cluster a script's keys must share a slot: one call per slot (the
        requests of one key stay together, in order), concurrently."""
        groups: dict[int, list[int]] = {}
        for index, ask in enumerate(requests):
            groups.setdefault(key_slot(self._keys(ask.key_id)[0].encode()), []).append(index)
        parts = await asyncio.gather(
            *(self._consume_one_slot([requests[i] for i in indexes]) for indexes in groups.values())
        )
        decisions: list[Decision | None] = [None] * len(requests)
        for indexes, part in zip(groups.values(), parts, strict=True):
            for index, decision in zip(indexes, part, strict=True):
                decisions[index] = decision
        return [d for d in decisions if d is not None]

    async def _consume_one_slot(self, requests: list[RateAsk]) -> list[Decision]:
        keys: list[str] = []
        args: list[int | float] = []
        for ask in requests:
            keys += self._keys(ask.key_id)
            args += ask.args()
        replies = await self._consume(keys=keys, args=args)
        return [
            Decision(bool(a), max(1, int(reset)), max(0, int(r)), max(0, int(t)), int(sr), int(st), int(ms))
            for a, reset, r, t, sr, st, ms in replies
        ]

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
