"""The hot path's ports: what the gateway needs of auth, billing and the request log.

Implemented over gRPC in `adapters` and over SQL in `store`; tests give fakes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .model import CallUsage, KeyGrant, LogEntry, Price


class Gatekeeper(Protocol):
    """Auth's side of the hot path."""

    async def verify(
        self, api_key: str, model: str, consume: bool, estimated_tokens: int, lease: bool = False
    ) -> KeyGrant:
        """Check the key (and take the call from its rate limits). With `lease` the proxy asks
        for a key lease: then the grant carries auth's `offer` (if auth gives one)."""
        ...

    def report_tokens(self, key_id: str, delta: int) -> None: ...


class Ledger(Protocol):
    """Billing's side of the hot path."""

    async def price(self, model: str) -> Price | None: ...

    async def hold(self, grant: KeyGrant, amount_micros: int, idempotency_key: str) -> str: ...

    async def settle(
        self, hold_id: str, usage: CallUsage, idempotency_key: str, durable: Callable[[], None], lease: bool = False
    ) -> int:
        """Settle the hold; call `durable()` as soon as the settle would survive a crash of
        this process (written to the outbox), before waiting for billing. With `lease` the
        hold is a credit lease: the cost is drawn from it and it stays open (see `credit`)."""
        ...

    async def release(self, hold_id: str, usage: CallUsage | None, idempotency_key: str) -> None: ...


class RequestLog(Protocol):
    """Where request metadata goes (buffered; never blocks)."""

    def record(self, entry: LogEntry) -> None: ...


class LeaseLedger(Protocol):
    """What credit leases (`credit`) need of billing: place a slice, return what is left of it."""

    async def lease(self, grant: KeyGrant, amount_micros: int, ttl_s: int, idempotency_key: str) -> tuple[str, int]:
        """Hold `amount_micros` for the key for `ttl_s`; (hold id, wallet balance after)."""
        ...

    async def release(self, hold_id: str, usage: CallUsage | None, idempotency_key: str) -> None: ...
