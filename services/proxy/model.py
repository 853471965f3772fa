"""What the proxy's hot path works with: a verified key's grant, a model's price, the
metadata recorded for a call (for billing and the request log) and the sizing limits.
Plain values; nothing here knows a transport or a database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.runtime.money import token_cost_micros

from .leases import LeaseOffer


@dataclass(frozen=True)
class KeyGrant:
    """What a verified API key may do."""

    account_id: str
    key_id: str
    spend_cap_micros: int = 0
    allowed_models: tuple[str, ...] = ()
    offer: LeaseOffer | None = field(default=None, compare=False)  # a lease, when one was asked and given

    def hold_terms(self) -> tuple[str, str, int]:
        """What a hold placed for this key depends on."""
        return self.account_id, self.key_id, self.spend_cap_micros


@dataclass(frozen=True)
class Price:
    """Micro-units per million input and output tokens."""

    input_per_mtok: int
    output_per_mtok: int

    def cost(self, input_tokens: int, output_tokens: int) -> int:
        """The cost, rounded up to a whole micro-unit (billing's rule: `runtime.money`)."""
        return token_cost_micros(input_tokens, output_tokens, self.input_per_mtok, self.output_per_mtok)


@dataclass(frozen=True)
class CallUsage:
    """The metadata billing records for a call (P1.4): never content."""

    key_id: str
    model: str
    provider: str
    input_tokens: int
    output_tokens: int
    status: str
    latency_ms: int
    started_at: datetime
    tokens_estimated: bool


@dataclass(frozen=True)
class LogEntry:
    """One row of the proxy's request log (RequestLogRecord)."""

    request_id: str
    account_id: str
    key_id: str
    model: str
    provider: str
    status_code: int
    latency_ms: int
    created_at: datetime
    input_tokens: int
    output_tokens: int
    cost_micros: int
    outcome: str
    tokens_estimated: bool
    endpoint: str
    stream: bool


@dataclass(frozen=True)
class Limits:
    """The proxy's sizing rules."""

    max_output_tokens: int = 4096
    model_max_output_tokens: dict[str, int] = field(default_factory=dict)
    hold_ttl_s: float = 900.0

    def output_limit(self, model: str, body: dict[str, Any]) -> int:
        for key in ("max_completion_tokens", "max_tokens"):
            value = body.get(key)
            if isinstance(value, int) and value > 0:
                return value
        return self.model_max_output_tokens.get(model, self.max_output_tokens)
