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

Writes are combined and kept off the answer's way. The entries of concurrent calls added
while the last write was in flight go to Redis together, as one HSET (a command, not a
pipeline), and an add returns only once its entry is stored. Removals wait: they are
written together, one HDEL every `removal_linger_s` (0.1 s) at most, by the same writer
after any add that is queued, so at one call at a time a call costs one Redis round trip
instead of two. A removal not yet written when the proxy stops leaves its entry to be
replayed: billing answers it from the stored result (idempotency), nothing is charged twice.

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
REPLAY_AT_ONCE = 200


async def _answered_for_good(send: Send, request: billing_pb2.SettleRequest) -> bool:
    """Send a replayed settle: True once billing answered it for good (applied, or refused
    for a hold it expired or never had), False when it should be tried again later."""
    try:
        await send(request)
    except TRANSIENT:
        return False  # billing is down or busy: the next round tries again
    except DomainError as error:
        log.warning("outbox settle %s refused: %s", request.idempotency_key, error.message)
    return True


class SettleOutbox:
    def __init__(
        self, redis: Redis, stale_s: float, write_timeout_s: float = 1.0, removal_linger_s: float = 0.1
    ) -> None:
        self._redis = redis
        self._stale_s = stale_s
        self._write_timeout_s = write_timeout_s
        self._removal_linger_s = removal_linger_s
        self._pending: list[tuple[str, bytes, asyncio.Future[None]]] = []  # adds, in order
        self._removals: set[str] = set()
        self._removals_due = False  # the linger has passed: write them
        self._linger: asyncio.TimerHandle | None = None
        self._writer: asyncio.Task[None] | None = None

    async def add(self, request: billing_pb2.SettleRequest) -> None:
        """Write (or refresh) the entry; returns once it is stored. Redis being down must
        not stop the settle itself."""
        value = f"{time.time():.3f}:".encode() + request.SerializeToString()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._removals.discard(request.idempotency_key)  # the later change wins
        self._pending.append((request.idempotency_key, value, done))
        self._wake()
        await done

    def remove(self, idempotency_key: str) -> None:
        """Queue the entry's removal (written within `removal_linger_s`; a removal that is
        lost only makes a harmless replay)."""
        self._removals.add(idempotency_key)
        if self._linger is None and not self._removals_due:
            self._linger = asyncio.get_running_loop().call_later(self._removal_linger_s, self._removals_ripe)

    async def close(self) -> None:
        """Write the queued removals now and wait for every write (at shutdown)."""
        self._removals_ripe()
        while self._writer is not None:
            await asyncio.shield(self._writer)

    def _removals_ripe(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._removals_due = True
        self._wake()

    def _wake(self) -> None:
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        """The one writer: the queued adds first (calls wait for them), then the removals
        once due, one round trip at a time, until nothing is left to write."""
        try:
            while True:
                if self._pending:
                    batch, self._pending = self._pending, []
                    await self._stored(self._hset({field: value for field, value, _ in batch}))
                    for _, _, done in batch:
                        if not done.done():
                            done.set_result(None)
                elif self._removals and self._removals_due:
                    fields, self._removals, self._removals_due = list(self._removals), set(), False
                    await self._stored(self._redis.hdel(OUTBOX_KEY, *fields))
                else:
                    self._removals_due = False
                    return
        finally:
            self._writer = None

    async def _hset(self, entries: dict[str, bytes]) -> None:
        await self._redis.hset(OUTBOX_KEY, mapping=entries)  # type: ignore[arg-type]  # an invariant key union in redis-py

    async def _stored(self, write: Awaitable[Any]) -> None:
        """One write, given up after `write_timeout_s` or on any error (logged by type only)."""
        try:
            async with asyncio.timeout(self._write_timeout_s):
                await write
        except Exception as error:
            log.error("settle outbox write failed (%s)", type(error).__name__)

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
            self.remove(request.idempotency_key)
            raise
        self.remove(request.idempotency_key)
        return reply

    async def replay(self, send: Send) -> int:
        """Send every entry older than `stale_s` again, up to `REPLAY_AT_ONCE` at a time
        (they share settle batches: one at a time, each waited for its batch's linger, and a
        crashed proxy's backlog took a linger per entry); the number billing answered for good."""
        cutoff = time.time() - self._stale_s
        # redis-py types every answer as bytes | str; this client's are bytes (decode_responses is off)
        entries = cast("dict[bytes, bytes]", await self._redis.hgetall(OUTBOX_KEY))
        due = []
        for key, value in entries.items():
            written, _, payload = value.partition(b":")
            if float(written) <= cutoff:
                due.append((key, billing_pb2.SettleRequest.FromString(payload)))
        answered = 0
        for start in range(0, len(due), REPLAY_AT_ONCE):
            chunk = due[start : start + REPLAY_AT_ONCE]
            final = await asyncio.gather(*(_answered_for_good(send, request) for _, request in chunk))
            done = [key for (key, _), answer in zip(chunk, final, strict=True) if answer]
            if done:
                await self._redis.hdel(OUTBOX_KEY, *done)
            answered += len(done)
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
