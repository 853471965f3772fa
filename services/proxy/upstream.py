"""Upstream providers: one pooled aiohttp session each, and a circuit breaker each.

A provider is any OpenAI-compatible base URL. Its session keeps connections alive across
calls (no TLS or TCP handshake per request). `post` returns the response only when the
upstream accepted the call (HTTP 200); everything else becomes an `UpstreamFailure` that
says whether another attempt may help. The breaker stops sending calls to a provider that
failed `threshold` times in a row, for `reset_s`, then lets one trial call through.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import aiohttp

from .settings import ProviderConfig

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
    """Closed -> open after `threshold` consecutive failures -> half-open after `reset_s`."""

    def __init__(self, threshold: int, reset_s: float) -> None:
        self.threshold = threshold
        self.reset_s = reset_s
        self.failures = 0
        self.opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if time.monotonic() - self.opened_at >= self.reset_s else "open"

    def allow(self) -> bool:
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._trial_running:
            self._trial_running = True
            return True
        return False

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self._trial_running = False

    def failure(self) -> None:
        self.failures += 1
        self._trial_running = False
        if self.failures >= self.threshold or self.opened_at is not None:
            self.opened_at = time.monotonic()


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
                connector=connector, timeout=self._timeout, auto_decompress=True, skip_auto_headers=("User-Agent",)
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
