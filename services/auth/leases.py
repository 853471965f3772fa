"""Key leases: the push of key changes to the proxies that lease verified keys.

A proxy that leases a key serves it without asking auth on each call, so every change
that affects a grant must reach it: revocation, rotation, account closure, erasure, and
any edit of the key's data. The push is auth's server-streaming RPC `WatchKeyChanges`
rather than Redis pub/sub because:

- it needs nothing the proxy does not already have: the proxy talks to auth over its
  service channel (credential or mutual TLS, INTERNAL access), while a proxy may run
  without Redis at all (`make up` gives each process its own in-process stand-in);
- its liveness is the stream's: a proxy knows when it may have missed a change (the stream
  ended, or heartbeats stopped) and then drops every lease (fail closed); a Redis
  subscriber cannot tell a quiet channel from a publisher that stopped publishing;
- it names keys by a lease tag, a digest of the key's HMAC that is neither the key nor the
  stored hash, so nothing that could look a key up leaves auth.

Auth instances still learn each other's changes over Redis (`gm:auth:revocations`, see
`keycache`); each forwards what it hears, and its own changes at once, to its watchers.
An instance whose Redis listener is down may have missed changes: it ends every stream
(the proxies fall back to per-call checks and resubscribe) and grants no leases until the
listener is back. A change is written to every stream before the RPC that made it answers
(bounded by `WRITE_WAIT_S`), so a client that saw its revocation succeed finds the key
refused by every proxy that had it leased.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Iterable

log = logging.getLogger("gatemesh.auth.leases")

WRITE_WAIT_S = 0.2
QUEUE_MAX = 10_000


def lease_tag(key_hash: str) -> str:
    """The name a key's lease goes by outside auth (a one-way digest of its HMAC)."""
    return hashlib.blake2b(key_hash.encode(), digest_size=12, person=b"gm-lease").hexdigest()


class _Watcher:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[list[str], asyncio.Future[None]] | None] = asyncio.Queue(QUEUE_MAX)


class ChangeFeed:
    """Fan-out of key changes to the open WatchKeyChanges streams of this instance."""

    def __init__(self, heartbeat_s: float = 1.0) -> None:
        self.heartbeat_s = heartbeat_s
        self._watchers: set[_Watcher] = set()

    @property
    def watchers(self) -> int:
        return len(self._watchers)

    def changed(self, key_hashes: Iterable[str]) -> list[asyncio.Future[None]]:
        """Queue the change for every stream; the futures resolve once each has written it."""
        tags = [lease_tag(h) for h in key_hashes]
        if not tags or not self._watchers:
            return []
        loop = asyncio.get_running_loop()
        written = []
        for watcher in list(self._watchers):
            future: asyncio.Future[None] = loop.create_future()
            try:
                watcher.queue.put_nowait((tags, future))
                written.append(future)
            except asyncio.QueueFull:  # a stream this far behind is ended: its proxy drops all
                self._end(watcher)
        return written

    async def wait_written(self, written: list[asyncio.Future[None]]) -> None:
        if written:
            await asyncio.wait(written, timeout=WRITE_WAIT_S)

    def reset(self) -> None:
        """End every stream: this instance may have missed changes."""
        for watcher in list(self._watchers):
            self._end(watcher)

    def _end(self, watcher: _Watcher) -> None:
        self._watchers.discard(watcher)
        while not watcher.queue.empty():
            item = watcher.queue.get_nowait()
            if item is not None and not item[1].done():
                item[1].set_result(None)
        watcher.queue.put_nowait(None)

    def subscribe(self) -> _Watcher:
        """A new stream's place in the feed: changes queue for it from now on."""
        watcher = _Watcher()
        self._watchers.add(watcher)
        return watcher

    async def stream(self, watcher: _Watcher) -> AsyncIterator[tuple[list[str], asyncio.Future[None] | None]]:
        """A subscribed watcher's messages: ([], None) for the heartbeats, (tags, written)
        for a change; returns when the feed ends the stream."""
        try:
            while True:
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), self.heartbeat_s)
                except TimeoutError:
                    yield [], None
                    continue
                if item is None:
                    return
                yield item
        finally:
            self._watchers.discard(watcher)
