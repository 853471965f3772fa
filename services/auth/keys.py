"""The rules of API keys: creation (shown once), listing, revocation, rotation, and
verification on the proxy's hot path with rate limits.

A key is `gm-` plus 32 random bytes from `secrets` (43 URL-safe characters). Only its
HMAC-SHA-256 under the server secret and a short display prefix are stored (P1.6, P6.2).
Verification HMACs the presented key and finds the row by that hash (unique index); the
database path also compares the hashes in constant time. Lookups go through `KeyCache`
(in process, then Redis); last-used times are buffered in memory and written by a
background flush, so a verified call costs no database write.
"""

from __future__ import annotations

import base64
import builtins
import hmac
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError

from services.runtime import metrics
from services.runtime.access import Principal
from services.runtime.errors import (
    DomainError,
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Violations,
)

from .domain import ACTIVE, Hmac, Origin, new_id
from .keycache import REVOKED, UNKNOWN, Cached, KeyCache, KeyEntry
from .leases import lease_tag
from .limits import Decision, RateAsk, RateLimiter
from .store import ApiKeyRow, AuthStore, KeyRecord, now, utc

KEY_PREFIX = "gm-"
KEY_RE = re.compile(r"gm-[A-Za-z0-9_-]{43}")
DISPLAY_CHARS = 7  # "gm-AbC1"
MAX_NAME, MAX_MODELS, MAX_MODEL_NAME = 100, 100, 200
DEFAULT_PAGE, MAX_PAGE = 50, 1000

EventLog = Callable[[str, str | None, Origin], Awaitable[None]]
"""Writes a security-log event: (event, account_id, origin)."""


@dataclass(frozen=True)
class KeySpec:
    name: str
    allowed_models: list[str] = field(default_factory=list)
    expires_at: datetime | None = None
    spend_cap_micros: int = 0
    rpm: int = 0
    tpm: int = 0

    def check(self, v: Violations, prefix: str = "") -> None:
        v.check(0 < len(self.name) <= MAX_NAME, f"{prefix}name", f"must be 1 to {MAX_NAME} characters")
        v.check(len(self.allowed_models) <= MAX_MODELS, f"{prefix}allowed_models", f"at most {MAX_MODELS} models")
        v.check(
            all(0 < len(m) <= MAX_MODEL_NAME for m in self.allowed_models),
            f"{prefix}allowed_models",
            f"each model name must be 1 to {MAX_MODEL_NAME} characters",
        )
        v.check(self.spend_cap_micros >= 0, f"{prefix}spend_cap_micros", "must not be negative")
        v.check(self.rpm >= 0, f"{prefix}limits.requests_per_minute", "must not be negative")
        v.check(self.tpm >= 0, f"{prefix}limits.tokens_per_minute", "must not be negative")
        if self.expires_at is not None:
            v.check(self.expires_at > now(), f"{prefix}expires_at", "must be in the future")


@dataclass(frozen=True)
class NewKey:
    """A freshly made key: `api_key` is shown once and never stored."""

    api_key: str
    row: ApiKeyRow


@dataclass(frozen=True)
class Verified:
    entry: KeyEntry
    remaining_requests: int = 0
    remaining_tokens: int = 0
    lease_tag: str = ""  # set when a lease was asked for and this instance hears every change
    share: Decision | None = None  # the rate share taken with the lease (share_requests 0: none)


@dataclass(frozen=True)
class VerifyIn:
    """One VerifyKey request."""

    api_key: str
    model: str
    consume: bool
    estimated_tokens: int
    lease: bool = False


@dataclass(frozen=True)
class LeaseTerms:
    """How rate shares are sized: a share is at most 1/`parts` of a key's limits; a renewal
    (a share asked without a call) within `ahead_s` of a window's end comes from the next."""

    parts: int = 10
    ahead_s: float = 3.0

    def ask(self, entry: KeyEntry, request: VerifyIn) -> RateAsk:
        if not request.lease:
            return RateAsk(entry.key_id, entry.rpm, entry.tpm, request.estimated_tokens, request.consume)
        want_r = max(2, -(-entry.rpm // self.parts))
        want_t = max(request.estimated_tokens, -(-entry.tpm // self.parts)) if entry.tpm > 0 else 0
        ahead = 0.0 if request.consume else self.ahead_s
        return RateAsk(
            entry.key_id, entry.rpm, entry.tpm, request.estimated_tokens, request.consume, want_r, want_t, ahead
        )


def admitted(entry: KeyEntry, decision: Decision, lease_tag: str = "") -> Verified:
    """The key's request, let through by its rate limit or refused with the wait."""
    if not decision.allowed:
        metrics.RATE_LIMIT_REFUSALS.labels("auth").inc()
        raise ResourceExhausted(
            "rate limit reached for this API key; retry later",
            retry_after_s=decision.retry_after_s,
            reason="rate_limit_exceeded",
            openai_code="rate_limit_exceeded",
        )
    return Verified(entry, decision.remaining_requests, decision.remaining_tokens, lease_tag, decision)


def rate_limits_unavailable() -> Unavailable:
    return Unavailable("rate limiting is unavailable; retry shortly", retry_after_s=1)


@dataclass(frozen=True)
class KeyDefaults:
    rpm: int
    tpm: int


def encode_page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode()


def decode_page(page_size: int, token: str) -> tuple[int, int]:
    v = Violations()
    v.check(page_size >= 0, "page.page_size", "must not be negative")
    offset = 0
    if token:
        try:
            kind, _, value = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
            offset = int(value)
            if kind != "o" or offset < 0:
                raise ValueError
        except ValueError:
            v.add("page.page_token", "is not a token from a previous page")
    v.raise_if_any()
    return offset, min(page_size or DEFAULT_PAGE, MAX_PAGE)


def check_key_format(v: Violations, name: str, api_key: str) -> None:
    if not api_key:
        v.add(name, "is required")
    elif not KEY_RE.fullmatch(api_key):
        v.add(name, "must be a Gatemesh API key: 'gm-' followed by 43 URL-safe characters")


def _no_lease(request: VerifyIn) -> VerifyIn:
    return VerifyIn(request.api_key, request.model, request.consume, request.estimated_tokens)


def invalid_key(message: str = "invalid API key") -> Unauthenticated:
    return Unauthenticated(message, reason="invalid_api_key", openai_code="invalid_api_key")


class Keys:
    """API key lifecycle and verification."""

    def __init__(
        self,
        store: AuthStore,
        cache: KeyCache,
        limiter: RateLimiter,
        hmac_of: Hmac,
        defaults: KeyDefaults,
        log: EventLog,
        lease_terms: LeaseTerms | None = None,
    ) -> None:
        self.lease_terms = lease_terms or LeaseTerms()
        self.store = store
        self.cache = cache
        self.limiter = limiter
        self.hmac_of = hmac_of
        self.defaults = defaults
        self._log = log
        self._used: dict[str, float] = {}

    # lifecycle --------------------------------------------------------------------------

    def _make(self, account_id: str, spec: KeySpec) -> NewKey:
        api_key = KEY_PREFIX + secrets.token_urlsafe(32)
        row = ApiKeyRow(
            key_id=new_id("key"),
            account_id=account_id,
            name=spec.name,
            prefix=api_key[:DISPLAY_CHARS],
            key_hash=self.hmac_of(api_key),
            created_at=now(),
            expires_at=spec.expires_at,
            allowed_models=list(dict.fromkeys(spec.allowed_models)),
            spend_cap_micros=spec.spend_cap_micros,
            rpm=spec.rpm,
            tpm=spec.tpm,
        )
        return NewKey(api_key, row)

    async def create(self, account_id: str, account_status: int, spec: KeySpec, origin: Origin) -> NewKey:
        v = Violations()
        spec.check(v)
        v.raise_if_any()
        if account_status != ACTIVE:
            raise PermissionDenied("the account is closed")
        made = self._make(account_id, spec)
        await self.store.add_key(made.row)
        await self._log("key_created", account_id, origin)
        return made

    async def list(self, account_id: str, page_size: int, page_token: str) -> tuple[list[ApiKeyRow], str]:
        offset, limit = decode_page(page_size, page_token)
        rows = await self.store.keys_of(account_id, offset, limit + 1)
        more = len(rows) > limit
        return rows[:limit], encode_page_token(offset + limit) if more else ""

    async def _owned(self, key_id: str, account_id: str | None) -> ApiKeyRow:
        v = Violations()
        v.check(0 < len(key_id) <= 40, "key_id", "must be a key id like key_...")
        v.raise_if_any()
        key = await self.store.key_by_id(key_id)
        if key is None or (account_id is not None and key.account_id != account_id):
            raise NotFound("no such API key")
        return key

    async def revoke(self, key_id: str, account_id: str | None, origin: Origin) -> ApiKeyRow:
        """Revoke a key (account_id None: any account, for admins); idempotent."""
        await self._owned(key_id, account_id)
        key = await self.store.revoke_key(key_id, now())
        assert key is not None
        await self.cache.revoke([key.key_hash])
        await self._log("key_revoked", key.account_id, origin)
        return key

    async def update(
        self, key_id: str, allowed_models: builtins.list[str], spend_cap_micros: int, origin: Origin
    ) -> ApiKeyRow:  # builtins.: `list` here is Keys.list
        """Replace a key's allowlist and spend cap (admins); every cache and lease of it goes."""
        old = await self._owned(key_id, None)
        spec = KeySpec(name=old.name, allowed_models=allowed_models, spend_cap_micros=spend_cap_micros)
        v = Violations()
        spec.check(v)
        v.raise_if_any()
        key = await self.store.update_key(key_id, list(dict.fromkeys(allowed_models)), spend_cap_micros)
        assert key is not None
        await self.cache.invalidate([key.key_hash])
        await self._log("key_updated", key.account_id, origin)
        return key

    async def rotate(self, key_id: str, account_id: str, origin: Origin) -> NewKey:
        old = await self._owned(key_id, account_id)
        if old.revoked_at is not None:
            raise NotFound("no such active API key")
        expires = utc(old.expires_at)
        if expires is not None and expires <= now():
            raise FailedPrecondition("this API key has expired; create a new one instead")
        spec = KeySpec(
            name=old.name,
            allowed_models=list(old.allowed_models),
            expires_at=expires,
            spend_cap_micros=old.spend_cap_micros,
            rpm=old.rpm,
            tpm=old.tpm,
        )
        made = self._make(account_id, spec)
        revoked = await self.store.add_key(made.row, replaces=old.key_id, at=now())
        await self.cache.revoke([revoked] if revoked else [])
        await self._log("key_rotated", account_id, origin)
        return made

    # verification -----------------------------------------------------------------------

    async def _load(self, key_hash: str) -> Cached:
        """The database path of a lookup: the row by hash, compared in constant time."""
        return self._cached(key_hash, await self.store.key_for_verification(key_hash))

    async def _load_many(self, key_hashes: Sequence[str]) -> dict[str, Cached]:
        """`_load` for many hashes, in one query."""
        found = await self.store.keys_for_verification(key_hashes)
        return {key_hash: self._cached(key_hash, found.get(key_hash)) for key_hash in key_hashes}

    def _cached(self, key_hash: str, found: KeyRecord | None) -> Cached:
        """What the cache keeps for a hash: its entry, or why there is none."""
        if found is None or not hmac.compare_digest(found.key.key_hash, key_hash):
            return UNKNOWN
        key, account = found.key, found.account
        if key.revoked_at is not None or account.status != ACTIVE:
            return REVOKED
        expires = utc(key.expires_at)
        return KeyEntry(
            account_id=account.account_id,
            key_id=key.key_id,
            role=account.role,
            allowed_models=tuple(key.allowed_models),
            spend_cap_micros=key.spend_cap_micros,
            rpm=key.rpm or self.defaults.rpm,
            tpm=key.tpm or self.defaults.tpm,
            expires_at=expires.timestamp() if expires else 0.0,
            analytics_opt_out=account.analytics_opt_out,
        )

    async def entry(self, api_key: str) -> KeyEntry:
        """The valid, unexpired key behind `api_key`, or Unauthenticated."""
        key_hash = self.hmac_of(api_key)
        return self._valid(self.cache.local(key_hash) or await self.cache.lookup(key_hash, self._load))

    def _valid(self, found: Cached) -> KeyEntry:
        if isinstance(found, str):
            raise invalid_key()
        if found.expires_at and found.expires_at <= time.time():
            raise invalid_key("this API key has expired")
        self._used[found.key_id] = time.time()
        return found

    async def verify(
        self, api_key: str, model: str, consume: bool, estimated_tokens: int, lease: bool = False
    ) -> Verified:
        (outcome,) = await self.verify_many([VerifyIn(api_key, model, consume, estimated_tokens, lease)])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def verify_many(self, requests: Sequence[VerifyIn]) -> builtins.list[Verified | Exception]:
        """`verify` for many requests, their rate limits (and rate shares) taken in one Redis
        round trip (in request order: two requests of one key count as they would one after
        the other). Keys in this process's cache are checked on the spot; the others are
        looked up together (one Redis MGET, one database query for what Redis lacks): looked
        up one by one, a burst of 500 keys no cache held took 4-13 s, past the proxy's
        deadline, so every call of the burst failed and nothing got cached
        (tests/reliability). A lease is granted only while this instance hears every key
        change (its revocation listener is up), so that its WatchKeyChanges misses none."""
        outcomes: list[Any] = [self._checked_here(r) for r in requests]
        elsewhere = [i for i, outcome in enumerate(outcomes) if outcome is None]
        if elsewhere:
            hashes = [self.hmac_of(requests[i].api_key) for i in elsewhere]
            found = await self.cache.lookup_many(hashes, self._load_many)
            for i, key_hash in zip(elsewhere, hashes, strict=True):
                try:
                    outcomes[i] = self._allowed(self._valid(found[key_hash]), requests[i].model)
                except DomainError as error:
                    outcomes[i] = error
        leasing = self.cache.listening.is_set()
        counted = [
            i
            for i, r in enumerate(requests)
            if (r.consume or (r.lease and leasing)) and isinstance(outcomes[i], KeyEntry)
        ]
        entries: dict[int, KeyEntry] = {i: outcomes[i] for i in counted}
        for i, outcome in enumerate(outcomes):
            if isinstance(outcome, KeyEntry):
                outcomes[i] = Verified(outcome)
        if not counted:
            return outcomes
        asks, sharing = [], set()
        for i, entry in entries.items():
            request = requests[i]
            if not leasing or entry.key_id in sharing:  # one share per key and batch
                request = _no_lease(request)
            if request.lease:
                sharing.add(entry.key_id)
            asks.append(self.lease_terms.ask(entry, request))
        try:
            decisions = await self.limiter.consume_many(asks)
        except RedisError:
            for i in counted:
                outcomes[i] = rate_limits_unavailable()
            return outcomes
        for i, decision in zip(counted, decisions, strict=True):
            tag = lease_tag(self.hmac_of(requests[i].api_key)) if leasing and requests[i].lease else ""
            try:
                outcomes[i] = admitted(entries[i], decision, tag)
            except DomainError as error:
                outcomes[i] = error
        return outcomes

    def _checked_here(self, request: VerifyIn) -> KeyEntry | Exception | None:
        """`checked` without I/O: the outcome when the request is malformed or its key is in
        this process's cache, else None."""
        try:
            self._validate(request.api_key, request.model, request.estimated_tokens)
            found = self.cache.local(self.hmac_of(request.api_key))
            return None if found is None else self._allowed(self._valid(found), request.model)
        except DomainError as error:
            return error

    async def checked(self, api_key: str, model: str, estimated_tokens: int) -> KeyEntry:
        """The key behind `api_key` if the request is well formed and the key may use `model`."""
        self._validate(api_key, model, estimated_tokens)
        return self._allowed(await self.entry(api_key), model)

    @staticmethod
    def _validate(api_key: str, model: str, estimated_tokens: int) -> None:
        v = Violations()
        check_key_format(v, "api_key", api_key)
        v.check(len(model) <= MAX_MODEL_NAME, "model", f"must be at most {MAX_MODEL_NAME} characters")
        v.check(estimated_tokens >= 0, "estimated_tokens", "must not be negative")
        v.raise_if_any()

    @staticmethod
    def _allowed(entry: KeyEntry, model: str) -> KeyEntry:
        if model and entry.allowed_models and model not in entry.allowed_models:
            raise PermissionDenied(
                "this API key may not use this model",
                reason="model_not_allowed",
                openai_code="model_not_allowed",
                param="model",
            )
        return entry

    async def report_tokens(self, key_id: str, token_delta: int) -> None:
        v = Violations()
        v.check(0 < len(key_id) <= 40, "key_id", "is required")
        v.check(abs(token_delta) <= 10**12, "token_delta", "is out of range")
        v.raise_if_any()
        try:
            await self.limiter.adjust_tokens(key_id, token_delta)
        except RedisError:
            raise rate_limits_unavailable() from None

    async def principal(self, api_key: str) -> Principal:
        if not KEY_RE.fullmatch(api_key):
            raise invalid_key()
        entry = await self.entry(api_key)
        return Principal(account_id=entry.account_id, role=entry.role, key_id=entry.key_id)

    async def flush_last_used(self) -> None:
        """Write the buffered last-used times (one statement per key, not per call)."""
        used, self._used = self._used, {}
        await self.store.record_last_used({k: datetime.fromtimestamp(t, UTC) for k, t in used.items()})
