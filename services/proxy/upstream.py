"""Upstream providers: one pooled aiohttp session each, and a circuit breaker each.

A provider is any OpenAI-compatible base URL. Its session keeps connections alive across
calls (no TLS or TCP handshake per request). `post` returns the response only when the
upstream accepted the call (HTTP 200); everything else becomes an `UpstreamFailure` that
says whether another attempt may help. The breaker stops sending calls to a provider that
failed `threshold` times in a row, for `reset_s`, then lets one trial call through.

Reading an accepted answer is here too: `read_json` and `first_events` are the primes the
router awaits before a call counts as a success, `upstream_chunks` the rest of a stream.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from .settings import ProviderConfig
from .sse import StreamState

RETRYABLE_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))


@dataclass
class UpstreamFailure(Exception):
    """One failed attempt. kind: status, connect, timeout or protocol."""

    kind: str
    status: int = 0
    message: str = ""
    retry_after_s: float | None = None

    def __post_init__(self) -> None:
        super().__init__(self.kind)

    @property
    def retryable(self) -> bool:
        return self.kind != "status" or self.status in RETRYABLE_STATUS

    @property
    def counts_against_provider(self) -> bool:
        """Client mistakes (400, 404...) say nothing about the provider's health."""
        return self.retryable and self.status != 429


class CircuitBreaker:
    """Closed -> open after `threshold` consecutive failures -> half-open after `reset_s`,
    when one trial call goes through. Whatever the trial's outcome, the breaker moves on:
    an answer from the provider (success, or a 4xx that is the request's fault) closes it;
    a 429, 5xx, timeout or broken connection opens it again, each failed trial doubling
    the wait (up to `max_reset_s`); a trial the client cancelled frees the slot for the next
    call. The trial is tied to the `Admission` that started it, so a call admitted while the
    circuit was closed cannot end somebody else's trial."""

    def __init__(self, threshold: int, reset_s: float, max_reset_s: float | None = None) -> None:
        self.threshold = threshold
        self.reset_s = reset_s
        self.max_reset_s = max_reset_s if max_reset_s is not None else reset_s * 16
        self.failures = 0
        self.failed_trials = 0
        self.opened_at: float | None = None
        self._trial: Admission | None = None

    @property
    def wait_s(self) -> float:
        """How long the circuit stays open before the next trial (exponential backoff)."""
        return min(self.reset_s * 2**self.failed_trials, self.max_reset_s)

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if time.monotonic() - self.opened_at >= self.wait_s else "open"

    def admit(self) -> Admission | None:
        """Permission for one call (its attempts and retries), or None while open or while a
        trial is running."""
        state = self.state
        if state == "closed":
            return Admission(self, trial=False)
        if state == "half_open" and self._trial is None:
            self._trial = Admission(self, trial=True)
            return self._trial
        return None

    def _close(self) -> None:
        self.failures = 0
        self.failed_trials = 0
        self.opened_at = None
        self._trial = None

    def _open(self, admission: Admission) -> None:
        if admission.trial:
            self.failed_trials += 1
            self._trial = None
        self.failures += 1
        if admission.trial or self.failures >= self.threshold or self.opened_at is not None:
            self.opened_at = time.monotonic()


@dataclass(eq=False)
class Admission:
    """One call's pass through a breaker; its attempts report how they ended."""

    breaker: CircuitBreaker
    trial: bool

    @property
    def current(self) -> bool:
        """False once this trial has been decided (its verdict is in)."""
        return not self.trial or self.breaker._trial is self

    def answered(self) -> None:
        """The provider answered (a success, or a 4xx that is the request's fault): healthy."""
        if self.current:
            self.breaker._close()

    def failed(self, failure: UpstreamFailure) -> None:
        """A failed attempt. Outside a trial 429s do not count (an overloaded provider is not
        a broken one); a trial that meets a 429 has shown the provider is not back yet."""
        if not self.current:
            return
        if failure.counts_against_provider or (self.trial and failure.retryable):
            self.breaker._open(self)
        elif not failure.retryable:
            self.answered()

    def abandoned(self) -> None:
        """The call ended without a verdict (the client left): the next call may try."""
        if self.trial and self.current:
            self.breaker._trial = None


class Provider:
    """One upstream provider with its pooled session."""

    def __init__(self, config: ProviderConfig, breaker: CircuitBreaker) -> None:
        self.config = config
        self.name = config.name
        self.weight = config.weight
        self.max_retries = config.max_retries
        self.breaker = breaker
        self._base = config.base_url.rstrip("/")
        key = os.environ.get(config.api_key_env, "") if config.api_key_env else ""
        self._headers = {"content-type": "application/json"}
        if key:
            self._headers["authorization"] = f"Bearer {key}"
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=config.timeout_s, sock_connect=config.timeout_s, sock_read=config.timeout_s
        )
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.config.max_connections, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
                # one session serves every tenant: a cookie an upstream sets on one user's call
                # must not ride along on the next user's (aiohttp's default jar would send it)
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def post(self, path: str, body: bytes) -> aiohttp.ClientResponse:
        """POST the raw body; the response if the upstream accepted the call."""
        try:
            response = await self.session().post(self._base + path, data=body, headers=self._headers)
        except TimeoutError:
            raise UpstreamFailure("timeout") from None
        except aiohttp.ClientError:
            raise UpstreamFailure("connect") from None
        if response.status == 200:
            return response
        raise await _status_failure(response)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


async def _status_failure(response: aiohttp.ClientResponse) -> UpstreamFailure:
    """The failure for a non-200 answer, with the upstream's own error message."""
    message = ""
    try:
        payload = json.loads(await response.read())
        error = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            message = error["message"][:500]
    except (TimeoutError, ValueError, aiohttp.ClientError):
        pass
    finally:
        response.release()
    retry_after = response.headers.get("retry-after", "")
    return UpstreamFailure(
        "status", response.status, message, float(retry_after) if retry_after.replace(".", "", 1).isdigit() else None
    )


async def upstream_chunks(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The body of a streamed upstream answer as it arrives. When the upstream cuts the
    stream, aiohttp raises before handing out bytes it had already received (its reader
    checks for the error first); those bytes are yielded before the error is raised, so the
    client gets, and is charged for, everything the upstream sent before the cut."""
    try:
        async for data in response.content.iter_any():
            yield data
    except aiohttp.ClientPayloadError:
        rest = response.content._read_nowait(-1)  # no public call returns them once failed
        if rest:
            yield rest
        raise


async def read_json(response: aiohttp.ClientResponse) -> tuple[bytes, Any]:
    """Prime for JSON answers: the whole body, and its parsed form (to read usage)."""
    data = await response.read()
    response.release()
    return data, json.loads(data)


def first_events(state: StreamState) -> Callable[[aiohttp.ClientResponse], Awaitable[bytes]]:
    """Prime for streams: read until the first complete event (nothing has reached the client)."""

    async def prime(response: aiohttp.ClientResponse) -> bytes:
        async for data in response.content.iter_any():
            out = state.feed(data)
            if out:
                return out
        raise aiohttp.ClientPayloadError("the upstream stream ended before its first event")

    return prime
