"""The two-level cache of verified API keys, and revocation across auth instances.

VerifyKey is on every model call, so a key's verification is cached twice, both indexed by
the key's HMAC (never by the key):

- in process, for `auth_local_cache_ttl_s` (default 1 s): a hit costs no I/O at all;
- in Redis (`gm:auth:key:<hmac>`, `auth_key_cache_ttl_s`), shared by every auth instance.

A revocation writes a tombstone over the Redis entry (so a Redis-only reader sees it at
once, and `SET NX` fills by slower readers cannot resurrect the key), drops the local entry,
and publishes the hash on `gm:auth:revocations`; every instance's listener drops its local
entry on receipt, well within a second. If the listener loses its connection it clears the
whole local cache, since it may have missed messages, and ends every proxy's key-change
stream (`leases.ChangeFeed`) for the same reason. An epoch counter stops a lookup that
raced with a revocation from caching what it read before it.

Tombstones are strings: "revoked" (revoked key, closed account) and "unknown" (no such key,
cached briefly so that floods of random keys do not reach the database).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.runtime.errors import Unavailable

from .leases import ChangeFeed

log = logging.getLogger("gatemesh.auth.keycache")

KEY_PREFIX = "gm:auth:key:"
REVOCATIONS = "gm:auth:revocations"
REVOKED, UNKNOWN = "revoked", "unknown"
UNKNOWN_TTL_S = 30


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """What verification needs to know about a valid key (limits already defaulted)."""

    account_id: str
    key_id: str
    role: int
    allowed_models: tuple[str, ...]
    spend_cap_micros: int
    rpm: int
    tpm: int
    expires_at: float  # epoch seconds; 0: never
    analytics_opt_out: bool

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def loads(cls, raw: str) -> KeyEntry:
        data = json.loads(raw)
        data["allowed_models"] = tuple(data["allowed_models"])
        return cls(**data)


Cached = KeyEntry | str
Loader = Callable[[str], Awaitable[Cached]]
ManyLoader = Callable[[Sequence[str]], Awaitable[dict[str, Cached]]]


def _parse(raw: bytes | str) -> Cached:
    """A Redis value: a tombstone string or a key entry's JSON."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    return text if text in (REVOKED, UNKNOWN) else KeyEntry.loads(text)


class KeyCache:
    """Local and Redis caching of key verifications, with revocation by pub/sub."""

    def __init__(
        self,
        redis: Redis,
        local_ttl_s: float,
        redis_ttl_s: int,
        max_local: int = 100_000,
        feed: ChangeFeed | None = None,
    ) -> None:
        self.feed = feed or ChangeFeed()
        self._redis = redis
        self._local_ttl = local_ttl_s
        self._redis_ttl = redis_ttl_s
        self._max_local = max_local
        self._local: dict[str, tuple[float, Cached]] = {}
        self._epoch = 0
        self.listening = asyncio.Event()

    def local(self, key_hash: str) -> Cached | None:
        """The in-process entry, if fresh: the hot path, no I/O."""
        hit = self._local.get(key_hash)
        if hit is None:
            return None
        if hit[0] < time.monotonic():
            self._local.pop(key_hash, None)
            return None
        return hit[1]

    async def lookup(self, key_hash: str, load: Loader) -> Cached:
        """Local, then Redis, then `load` (the database); fills the levels it missed."""
        hit = self.local(key_hash)
        if hit is not None:
            return hit
        epoch = self._epoch
        value = await self._from_redis(key_hash)
        if value is None:
            value = await load(key_hash)
            await self._to_redis(key_hash, value)
        if epoch == self._epoch:
            self._remember(key_hash, value)
        return value

    async def lookup_many(self, key_hashes: Sequence[str], load_many: ManyLoader) -> dict[str, Cached]:
        """`lookup` for many hashes: local, then one Redis MGET, then one `load_many` for the
        rest; fills the levels each missed (one pipeline)."""
        found: dict[str, Cached] = {}
        for key_hash in dict.fromkeys(key_hashes):
            hit = self.local(key_hash)
            if hit is not None:
                found[key_hash] = hit
        missing = [key_hash for key_hash in dict.fromkeys(key_hashes) if key_hash not in found]
        if not missing:
            return found
        epoch = self._epoch
        in_redis = await self._many_from_redis(missing)
        unknown = [key_hash for key_hash in missing if key_hash not in in_redis]
        loaded = await load_many(unknown) if unknown else {}
        await self._many_to_redis(loaded)
        for key_hash in missing:
            found[key_hash] = in_redis.get(key_hash) or loaded[key_hash]
            if epoch == self._epoch:
                self._remember(key_hash, found[key_hash])
        return found

    async def _many_from_redis(self, key_hashes: list[str]) -> dict[str, Cached]:
        if self._redis_ttl <= 0:
            return {}
        try:
            raws = await self._redis.mget([KEY_PREFIX + key_hash for key_hash in key_hashes])
        except RedisError:
            log.warning("redis unavailable for the key cache; reading the database")
            return {}
        return {key_hash: _parse(raw) for key_hash, raw in zip(key_hashes, raws, strict=True) if raw is not None}

    async def _many_to_redis(self, values: dict[str, Cached]) -> None:
        if self._redis_ttl <= 0 or not values:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key_hash, value in values.items():
                    ttl = min(self._redis_ttl, UNKNOWN_TTL_S) if value == UNKNOWN else self._redis_ttl
                    raw = value if isinstance(value, str) else value.dumps()
                    pipe.set(KEY_PREFIX + key_hash, raw, ex=ttl, nx=True)
                await pipe.execute()
        except RedisError:
            log.warning("redis unavailable for the key cache; not caching")

    async def _from_redis(self, key_hash: str) -> Cached | None:
        if self._redis_ttl <= 0:
            return None
        try:
            raw = await self._redis.get(KEY_PREFIX + key_hash)
        except RedisError:
            log.warning("redis unavailable for the key cache; reading the database")
            return None
        return None if raw is None else _parse(raw)

    async def _to_redis(self, key_hash: str, value: Cached) -> None:
        if self._redis_ttl <= 0:
            return
        ttl = min(self._redis_ttl, UNKNOWN_TTL_S) if value == UNKNOWN else self._redis_ttl
        raw = value if isinstance(value, str) else value.dumps()
        try:
            await self._redis.set(KEY_PREFIX + key_hash, raw, ex=ttl, nx=True)
        except RedisError:
            log.warning("redis unavailable for the key cache; not caching")

    def _remember(self, key_hash: str, value: Cached) -> None:
        if self._local_ttl <= 0:
            return
        if len(self._local) >= self._max_local:
            self._local.pop(next(iter(self._local)))
        self._local[key_hash] = (time.monotonic() + self._local_ttl, value)

    def drop_local(self, hashes: Iterable[str]) -> None:
        self._epoch += 1
        for key_hash in hashes:
            self._local.pop(key_hash, None)

    async def revoke(self, hashes: Iterable[str]) -> None:
        """Tombstone in Redis, drop locally, tell every instance."""
        await self._broadcast(list(hashes), tombstone=True)

    async def invalidate(self, hashes: Iterable[str]) -> None:
        """Forget cached entries (their data changed) everywhere; the next call reloads."""
        await self._broadcast(list(hashes), tombstone=False)

    async def _broadcast(self, hashes: list[str], tombstone: bool) -> None:
        if not hashes:
            return
        self.drop_local(hashes)
        written = self.feed.changed(hashes)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key_hash in hashes:
                    if tombstone:
                        pipe.set(KEY_PREFIX + key_hash, REVOKED, ex=max(self._redis_ttl, 60))
                    else:
                        pipe.delete(KEY_PREFIX + key_hash)
                await pipe.execute()
            # After the tombstones, not in their pipeline: a cluster client refuses PUBLISH there.
            await self._redis.publish(REVOCATIONS, " ".join(hashes))
        except RedisError:
            # The database change is done; repeating the call (idempotent) re-broadcasts.
            raise Unavailable("the change is saved but could not reach every cache yet; retry") from None
        finally:
            await self.feed.wait_written(written)

    async def listen(self) -> None:
        """Background task: drop local entries that any instance revoked (reconnects)."""
        while True:
            try:
                await self._redis.initialize()  # a cluster client learns its slots before pub/sub
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(REVOCATIONS)
                    self.drop_local(list(self._local))  # anything may have been missed
                    self.listening.set()
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            data = message["data"]
                            hashes = (data.decode() if isinstance(data, bytes) else data).split()
                            self.drop_local(hashes)
                            self.feed.changed(hashes)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError):
                log.warning("revocation listener lost redis; retrying")
                self.listening.clear()
                self.feed.reset()  # the proxies' leases may have missed changes too
                self.drop_local(list(self._local))
                await asyncio.sleep(0.5)
