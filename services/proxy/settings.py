"""The proxy's settings: the shared keys plus the providers, aliases and `proxy_*` keys.

`providers` and `model_aliases` are unprefixed because the issue's configuration format
names them so (and an operator may share them with other tools); everything else the
proxy alone reads starts with `proxy_`. In the environment, give `providers` as JSON:
`GATEMESH_PROVIDERS='[{"name": "openai", "base_url": "...", "models": ["gpt-4o-mini"]}]'`.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from services.runtime.settings import GatemeshSettings


class ProviderConfig(BaseModel):
    """One upstream: an OpenAI-compatible base URL serving some models."""

    name: str
    base_url: str
    api_key_env: str = Field("", description="Environment variable holding the provider's API key.")
    models: list[str] = Field(default_factory=list)
    weight: float = Field(1.0, gt=0)
    timeout_s: float = Field(60.0, gt=0, description="Connect and per-read timeout.")
    max_retries: int = Field(1, ge=0, description="Retries on this provider before falling back to the next.")
    max_connections: int = Field(512, ge=1, description="Pooled connections to this provider.")


class ProxySettings(GatemeshSettings):
    """Settings of the proxy service."""

    providers: list[ProviderConfig] = Field(default_factory=list, description="Upstream providers.")
    model_aliases: dict[str, str] = Field(default_factory=dict, description="Public model name -> routed model.")
    proxy_database_url: str = Field("", description="Request-metadata database; default SQLite under data_dir.")
    proxy_max_output_tokens: int = Field(4096, ge=1, description="Hold size for calls that name no max_tokens.")
    proxy_model_max_output_tokens: dict[str, int] = Field(
        default_factory=dict, description="Per-model output limit used instead of proxy_max_output_tokens."
    )
    proxy_tokenizer: str = Field("o200k_base", description="quicktok encoding for models it does not know.")
    proxy_price_refresh_s: float = Field(30.0, gt=0, description="How often the price list is refreshed.")
    proxy_hold_ttl_s: int = Field(900, ge=0, description="Seconds before billing expires an unsettled hold.")
    proxy_rpc_timeout_s: float = Field(5.0, gt=0, description="Deadline of calls to auth and billing.")
    proxy_retry_backoff_s: float = Field(0.05, ge=0, description="First retry delay; doubles per retry.")
    proxy_breaker_failures: int = Field(5, ge=1, description="Consecutive failures that open a provider's circuit.")
    proxy_breaker_reset_s: float = Field(30.0, gt=0, description="Seconds an open circuit waits before a trial call.")
    proxy_log_flush_s: float = Field(1.0, gt=0, description="Request-log writer flush interval.")
    proxy_log_batch: int = Field(1000, ge=1, description="Rows per request-log insert.")
    proxy_log_queue_max: int = Field(100_000, ge=1, description="Buffered rows before new ones are dropped.")
    proxy_log_retention_days: int = Field(365, ge=1, description="Request metadata is deleted after this (P5.2).")
    proxy_report_tokens_s: float = Field(0.5, gt=0, description="Interval of batched ReportTokens corrections.")
    proxy_known_keys: int = Field(
        10_000,
        ge=0,
        description="Keys remembered as verified, whose next hold is placed while auth verifies them again; "
        "0 always waits for auth first.",
    )
    proxy_key_leases: int = Field(
        10_000,
        ge=0,
        description="Verified keys leased in process (served without asking auth while its key-change stream "
        "is up); 0 verifies every call.",
    )
    proxy_credit_leases: bool = Field(
        True,
        description="Hold a slice of a leased key's balance and reserve its calls' costs from it in process "
        "(no Hold round trip per call); off: every call holds synchronously.",
    )
    proxy_credit_lease_calls: int = Field(
        32, ge=2, description="A credit lease covers this many calls of the size of the one that asked for it."
    )
    proxy_credit_lease_max_micros: int = Field(
        5_000_000, ge=0, description="Largest credit lease, in micro-units (0 turns credit leases off)."
    )
    proxy_credit_lease_share: float = Field(
        0.25, gt=0, le=1, description="A credit lease takes at most this share of the balance the last one left."
    )
    proxy_credit_lease_age_s: float = Field(
        30.0, gt=0, description="A credit lease takes new calls for this long; then a new one is asked for."
    )
    proxy_credit_lease_idle_s: float = Field(
        5.0, gt=0, description="A credit lease unused this long is returned (once its calls are settled)."
    )
    proxy_credit_lease_retry_s: float = Field(
        5.0, gt=0, description="After a refused credit lease, the key's calls hold synchronously this long."
    )
    proxy_batch_calls: bool = Field(
        True, description="Coalesce concurrent VerifyKey, Hold and Settle calls into their batch RPCs."
    )
    proxy_settle_linger_s: float = Field(
        0.2,
        ge=0,
        description="How long a batch of fewer than 32 settles waits for others to share its SettleBatch (answers "
        "wait for the outbox write only, never for billing; usage reaches the balance that much later).",
    )
    proxy_outbox_stale_s: float = Field(
        30.0, gt=0, description="Settles unconfirmed this long are replayed from the Redis outbox (needs redis_url)."
    )
    proxy_outbox_write_timeout_s: float = Field(
        1.0, gt=0, description="An answer waits at most this long for its settle's outbox write (then logs and goes)."
    )
