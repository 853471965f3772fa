"""Key and rate leases: what lets a known key's call skip auth on the response path.

A key lease is auth's verified grant for a key (account, allowlist, spend cap, expiry),
kept in process by a digest of the key (never the key) and named by the lease tag auth
gave with it. It lasts until auth's key-change stream names that tag (the key was
revoked, rotated, edited, its account closed or erased) or the stream is lost: while
`ready` is false (stream down, or not yet confirmed) nothing is leased and every call is
verified by auth, so a lost push can never leave a stale grant in use (fail closed).

A rate lease (`Share`) is a part of the key's per-minute budget that auth took for this
proxy from the key's own counters; calls spend it here, one request and their estimated
tokens each, and give back the unused estimate after. A share is void at the end of its
minute; a renewal is asked (off the response path) when it runs low or its minute nears
its end. A call the shares cannot cover takes the per-call path, where auth decides (and
answers 429 with Retry-After exactly as without leases).

A grant that raced with a change is never leased: every change bumps `epoch`, and an
answer from auth is leased only if no change arrived while it was on its way.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

RENEW_BELOW = 0.5  # renew when the live shares hold less than this part of the last one
RENEW_AHEAD_S = 2.0  # ... or when the last share's minute ends within this
SAFETY_S = 0.05  # a share is given up this long before auth's minute ends (clocks, transit)


def digest(api_key: str) -> bytes:
    """How the proxy indexes a key in memory: a digest, never the key."""
    return hashlib.blake2b(api_key.encode(), digest_size=16).digest()


@dataclass(slots=True)
class Share:
    """Requests and tokens this proxy may admit until `until` (monotonic)."""

    requests: int
    tokens: int
    unlimited_tokens: bool
    until: float

    def live(self, now: float) -> bool:
        return now < self.until

    def covers(self, tokens: int) -> bool:
        return self.requests >= 1 and (self.unlimited_tokens or self.tokens >= tokens)

    def give_back(self, tokens: int) -> bool:
        """Return unused estimated tokens (or take extra ones); False once the share is void."""
        if not self.live(time.monotonic()):
            return False
        if not self.unlimited_tokens:
            self.tokens += tokens
        return True


@dataclass(frozen=True, slots=True)
class LeaseOffer:
    """What auth granted with a verification asked for a lease."""

    tag: str
    expires_at: float  # the key's expiry, epoch seconds; 0: never
    share: Share | None


@dataclass(slots=True)
class KeyLease:
    grant: Any  # model.KeyGrant (not imported: model imports this module)
    tag: str
    expires_at: float
    shares: list[Share] = field(default_factory=list)
    granted: int = 0  # requests in the last share granted
    renewing: bool = False


class Leases:
    """The key leases of this proxy, with their rate shares."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._max = max_entries
        self._by_digest: dict[bytes, KeyLease] = {}
        self._by_tag: dict[str, bytes] = {}
        self.ready = False
        self.epoch = 0
        self._asking: set[bytes] = set()  # keys with a lease (share) request at auth now

    def ask(self, api_key: str) -> bytes | None:
        """A token to ask auth for a lease of this key with, or None: not ready, or a request
        for this key is already out (one share per key and proxy at a time: concurrent first
        calls of a key must not each take a share of its minute)."""
        if not self.ready:
            return None
        key = digest(api_key)
        if key in self._asking:
            return None
        self._asking.add(key)
        return key

    def answered(self, token: bytes) -> None:
        self._asking.discard(token)

    def __len__(self) -> int:
        return len(self._by_digest)

    def open(self) -> None:
        """Auth's change stream is up: leases may be taken from now on."""
        self._clear()
        self.ready = bool(self._max)

    def close(self) -> None:
        """The stream is down (or ended): every lease goes, calls are verified one by one."""
        self.ready = False
        self._clear()

    def _clear(self) -> None:
        self.epoch += 1
        self._by_digest.clear()
        self._by_tag.clear()

    def drop(self, tags: list[str]) -> int:
        """Auth says these keys changed; returns how many leases went."""
        self.epoch += 1
        dropped = 0
        for tag in tags:
            found = self._by_tag.pop(tag, None)
            if found is not None:
                self._by_digest.pop(found, None)
                dropped += 1
        return dropped

    def forget(self, api_key: str) -> None:
        lease = self._by_digest.pop(digest(api_key), None)
        if lease is not None:
            self._by_tag.pop(lease.tag, None)

    def take(self, api_key: str, model: str, tokens: int) -> tuple[KeyLease, Share] | None:
        """The lease and share a call is admitted on, its request and tokens taken from the
        share; None when auth must decide (no lease, expired, model not allowed, no room)."""
        if not self.ready:
            return None
        lease = self._by_digest.get(digest(api_key))
        if lease is None:
            return None
        if lease.expires_at and lease.expires_at <= time.time():
            self.forget(api_key)
            return None
        allowed = lease.grant.allowed_models
        if model and allowed and model not in allowed:
            return None
        now = time.monotonic()
        if lease.shares and not lease.shares[0].live(now):
            lease.shares = [share for share in lease.shares if share.live(now)]
        for share in lease.shares:
            if share.covers(tokens):
                share.requests -= 1
                if not share.unlimited_tokens:
                    share.tokens -= tokens
                return lease, share
        return None

    def wants_renewal(self, lease: KeyLease) -> bool:
        """True (and marked as renewing) when the shares should be topped up now."""
        if lease.renewing or not self.ready:
            return False
        now = time.monotonic()
        live = [share for share in lease.shares if share.live(now)]
        left = sum(share.requests for share in live)
        low = not live or left < lease.granted * RENEW_BELOW or live[-1].until - now < RENEW_AHEAD_S
        lease.renewing = low
        return low

    def grant(self, api_key: str, grant: Any, offer: LeaseOffer | None, epoch: int) -> bool:
        """Lease (or top up) the key after auth's answer, unless a change arrived meanwhile
        (`epoch` is the value read before asking) or auth gave no lease."""
        key = digest(api_key)
        current = self._by_digest.get(key)
        if not self.ready or epoch != self.epoch or offer is None or not offer.tag:
            if current is not None and epoch == self.epoch:
                self.forget(api_key)  # auth would not lease it now: do not keep an older lease
            return False
        if current is None or current.tag != offer.tag or current.grant != grant:
            if current is None and len(self._by_digest) >= self._max:
                oldest = next(iter(self._by_digest))
                self._by_tag.pop(self._by_digest.pop(oldest).tag, None)
            current = KeyLease(grant, offer.tag, offer.expires_at)
            self._by_digest[key] = current
            self._by_tag[offer.tag] = key
        current.grant, current.expires_at = grant, offer.expires_at
        if offer.share is not None:
            current.shares.append(offer.share)
            current.granted = offer.share.requests
        return True

    def renewed(self, lease: KeyLease) -> None:
        lease.renewing = False

    def shares_held(self) -> tuple[int, int]:
        """(requests, tokens) of the live shares held (for the benchmark and metrics)."""
        now = time.monotonic()
        live = [share for lease in self._by_digest.values() for share in lease.shares if share.live(now)]
        return sum(s.requests for s in live), sum(s.tokens for s in live if not s.unlimited_tokens)


def share_from(requests: int, tokens: int, tpm: int, valid_ms: int, asked_at: float) -> Share | None:
    """A share from auth's answer; its minute is counted from when it was asked (so the
    answer's transit only shortens it) less a safety margin."""
    if requests <= 0:
        return None
    return Share(requests, tokens, tpm <= 0, asked_at + valid_ms / 1000 - SAFETY_S)
