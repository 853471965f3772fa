"""The settle outbox: a settle that billing has not yet confirmed survives a proxy crash.

The proxy settles in the background (see `metered_call`), retrying until billing confirms. Until
then the settle would live only in this process: a crash would leave the call unbilled
once its hold expired. So each settle is first written to a Redis hash (field: its
idempotency key; value: when it was written and the SettleRequest), and the last byte of
the call's answer (a JSON body, a stream's [DONE] or final error event) leaves only once
that write is stored; the entry is removed when billing has answered it for good. A crash
can then lose only settles of calls whose answer never completed. A write that Redis does
not acknowledge within `write_timeout_s` is given up (logged): the answer is not held
hostage by a Redis outage, and that settle is as exposed as without an outbox. Every
proxy replays, at start and then every `stale_s`, the entries older than `stale_s`: those
of a proxy that crashed. Replaying is safe because every settle carries its idempotency
key, so billing applies it once however often it arrives; a replay that meets a settled
hold gets the stored result.

Writes from concurrent calls are combined: whatever entries were added or removed while the
last write was in flight go to Redis together, as one HSET and one HDEL in one pipeline
(one round trip and two commands per batch of calls instead of two of each per call), and
an add still returns only once its entry is stored.

Only with a Redis server: the in-process substitute of the local default dies with the
process it would have to outlive, so there the outbox is off.

Written here because it is a few lines over `redis.asyncio`; a task queue (Celery, arq,
RQ) would bring a worker model, serialization and a second retry policy for what is one
hash and one replay loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from redis.asyncio import Redis

from gatemesh.billing.v1 import billing_pb2
from services.runtime import metrics
from services.runtime.errors import Aborted, DeadlineExceeded, DomainError, Unavailable

log = logging.getLogger("gatemesh.proxy.outbox")

OUTBOX_KEY = "gatemesh:proxy:settle-outbox"
TRANSIENT = (Unavailable, DeadlineExceeded, Aborted)  # billing will answer later: keep the entry
Send = Callable[[billing_pb2.SettleRequest], Awaitable[Any]]


class SettleOutbox:
    def __init__(self, redis: Redis, stale_s: float, write_timeout_s: float = 1.0) -> None:
        self._redis = redis
        self._stale_s = stale_s
        self._write_timeout_s = write_timeout_s
        self._pending: list[tuple[str, bytes | None, asyncio.Future[None]]] = []  # (field, value or removal)
        self._writing = False

    async def add(self, request: billing_pb2.SettleRequest) -> None:
        """Write (or refresh) the entry; returns once it is stored. Redis being down must
        not stop the settle itself."""
        value = f"{time.time():.3f}:".encode() + request.SerializeToString()
        await self._write(request.idempotency_key, value)

    async def remove(self, idempotency_key: str) -> None:
        await self._write(idempotency_key, None)  # a failed removal is replayed later, harmlessly

    async def _write(self, field: str, value: bytes | None) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((field, value, done))
        if not self._writing:
            self._writing = True
            asyncio.get_running_loop().create_task(self._flush())
        await done

    async def _flush(self) -> None:
        """Write what is pending, one pipeline at a time, until nothing is."""
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    async with asyncio.timeout(self._write_timeout_s):
                        await self._store(batch)
                except Exception as error:
                    log.error("settle outbox write failed (%s)", type(error).__name__)
                for _, _, done in batch:
                    if not done.done():
                        done.set_result(None)
        finally:
            self._writing = False

    async def _store(self, batch: list[tuple[str, bytes | None, asyncio.Future[None]]]) -> None:
        """One HSET of the entries added and one HDEL of those removed: within a batch the
        last write of a field wins (an add then its removal is a removal)."""
        final = {field: value for field, value, _ in batch}
        added = {field: value for field, value in final.items() if value is not None}
        removed = [field for field, value in final.items() if value is None]
        async with self._redis.pipeline(transaction=False) as pipe:
            if added:
                pipe.hset(OUTBOX_KEY, mapping=added)  # type: ignore[arg-type]  # an invariant key union in redis-py
            if removed:
                pipe.hdel(OUTBOX_KEY, *removed)
            await pipe.execute()

    async def settle(
        self, request: billing_pb2.SettleRequest, send: Send, stored: Callable[[], None] = lambda: None
    ) -> Any:
        """Send a settle with its entry in place until billing has answered it for good;
        `stored()` once the entry is written (the answer's last byte waits for it)."""
        await self.add(request)
        stored()
        try:
            reply = await send(request)
        except TRANSIENT:
            raise
        except DomainError:
            await self.remove(request.idempotency_key)
            raise
        await self.remove(request.idempotency_key)
        return reply

    async def replay(self, send: Send) -> int:
        """Send every entry older than `stale_s` again; the number billing answered for good."""
        cutoff = time.time() - self._stale_s
        answered = 0
        # redis-py types every answer as bytes | str; this client's are bytes (decode_responses is off)
        entries = cast("dict[bytes, bytes]", await self._redis.hgetall(OUTBOX_KEY))
        for key, value in entries.items():
            written, _, payload = value.partition(b":")
            if float(written) > cutoff:
                continue
            request = billing_pb2.SettleRequest.FromString(payload)
            try:
                await send(request)
            except TRANSIENT:
                continue  # billing is down or busy: the next round tries again
            except DomainError as error:  # a hold that billing expired or never had
                log.warning("outbox settle %s refused: %s", request.idempotency_key, error.message)
            await self._redis.hdel(OUTBOX_KEY, key)
            answered += 1
        return answered

    async def measure(self, exact_up_to: int = 1000) -> None:
        """Set the outbox's depth and oldest age (a metrics probe). Exact up to `exact_up_to`
        entries; beyond, the age is the oldest of a random sample (HRANDFIELD), so a probe
        never reads a huge hash."""
        depth = int(await self._redis.hlen(OUTBOX_KEY))
        if depth == 0:
            values: list[bytes] = []
        elif depth <= exact_up_to:
            entries = cast("dict[bytes, bytes]", await self._redis.hgetall(OUTBOX_KEY))
            values = list(entries.values())
        else:
            pairs = cast("list[bytes]", await self._redis.hrandfield(OUTBOX_KEY, exact_up_to, withvalues=True))
            values = list(pairs[1::2])
        written = [float(value.partition(b":")[0]) for value in values]
        metrics.OUTBOX_DEPTH.set(depth)
        metrics.OUTBOX_AGE.set(max(0.0, time.time() - min(written)) if written else 0.0)

    async def run(self, send: Send) -> None:
        """Replay at start, then every `stale_s`, for as long as the proxy runs."""
        while True:
            try:
                if count := await self.replay(send):
                    log.info("replayed %d settles of a stopped proxy", count)
            except Exception as error:  # Redis unreachable: the next round tries again
                log.error("settle outbox replay failed (%s)", type(error).__name__)
            await asyncio.sleep(self._stale_s)
