"""Billing's own settings (flat keys prefixed `billing_`), plus the shared `prices` key.

Defaults run a local mesh: SQLite under the data directory, no card processor and no chain
watcher until their keys are configured.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr

from services.runtime.settings import GatemeshSettings


class BillingSettings(GatemeshSettings):
    """Settings of the billing service."""

    prices: dict[str, Any] = Field(
        default_factory=dict,
        description="Per-model prices in USD per million tokens; a mapping or a list of versions "
        "with `effective_from` (see docs/billing.md).",
    )
    billing_database_url: str = Field("", description="Billing's database; empty: SQLite under data_dir.")
    billing_db_pool_size: int = Field(20, description="Database connections kept open.")
    billing_hold_ttl_s: int = Field(600, description="Default lifetime of an unsettled hold.")
    billing_hold_max_ttl_s: int = Field(86_400, description="Longest hold a caller may ask for.")
    billing_sweep_interval_s: float = Field(60.0, description="How often expired holds are released.")
    billing_usage_retention_days: int = Field(365, description="Usage-record retention (P5.2).")
    billing_idempotency_ttl_days: int = Field(7, description="How long idempotency keys (and replays) are kept.")
    billing_retention_interval_s: float = Field(3600.0, description="How often the retention sweep runs.")
    billing_stats_min_accounts: int = Field(
        3, description="Aggregate statistics leave out day/model groups with fewer distinct accounts."
    )
    billing_stripe_api_key: SecretStr | None = Field(None, description="Card processor API key; unset: no cards.")
    billing_stripe_api_base: str = Field("https://api.stripe.com", description="Card processor API base URL.")
    billing_stripe_webhook_secret: SecretStr | None = Field(None, description="Webhook signing secret (whsec_...).")
    billing_stripe_tolerance_s: int = Field(300, description="Accepted webhook signature age.")
    billing_checkout_min_micros: int = Field(1_000_000, description="Smallest card top-up.")
    billing_checkout_max_micros: int = Field(10_000_000_000, description="Largest card top-up.")
    billing_deposit_mnemonic: SecretStr | None = Field(
        None, description="BIP-39 mnemonic deposit addresses are derived from (m/44'/60'/0'/0/i)."
    )
    billing_deposit_xpub: str = Field(
        "", description="Account-level xpub (m/44'/60'/0'); preferred over the mnemonic: no spending key."
    )
    billing_chain_rpc_url: str = Field("", description="JSON-RPC URL of the chain; empty: no watcher.")
    billing_chain_id: int = Field(1, description="The chain deposits are accepted on.")
    billing_chain_tokens: list[dict[str, Any]] = Field(
        default_factory=list, description="Tokens credited: [{symbol, contract, decimals}]."
    )
    billing_chain_confirmations: int = Field(12, description="Blocks a deposit waits before it is credited.")
    billing_chain_max_block_range: int = Field(2_000, description="Blocks per eth_getLogs call.")
    billing_chain_start_block: int = Field(0, description="First block scanned on a fresh database.")
    billing_chain_poll_s: float = Field(5.0, description="Seconds between chain scans.")

    def database_url(self) -> str:
        return self.billing_database_url or self.sqlite_url("billing")
