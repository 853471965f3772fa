"""Auth's own settings (flat keys prefixed `auth_`), on top of the shared ones.

Defaults run a local mesh; tests lower the argon2 cost so that hashing stays cheap there.
"""

from __future__ import annotations

from pydantic import Field

from services.runtime.settings import GatemeshSettings


class AuthSettings(GatemeshSettings):
    """Settings of the auth service."""

    auth_database_url: str = Field("", description="Auth's database; empty: SQLite under data_dir.")
    auth_policy_cache_s: float = Field(
        30.0, ge=0, description="How long the current policy version asked of privacy is reused; 0: ask each time."
    )
    auth_default_rpm: int = Field(600, description="Requests per minute of a key without its own limit.")
    auth_default_tpm: int = Field(1_000_000, description="Tokens per minute of a key without its own limit.")
    auth_session_ttl_s: int = Field(7 * 24 * 3600, description="Lifetime of a dashboard session.")
    auth_local_cache_ttl_s: float = Field(1.0, description="In-process key cache TTL; 0 disables it.")
    auth_key_cache_ttl_s: int = Field(300, description="Redis key cache TTL; 0 disables it.")
    auth_signin_max_failures_account: int = Field(5, description="Failed sign-ins per account per window.")
    auth_signin_max_failures_ip: int = Field(20, description="Failed sign-ins per IP per window.")
    auth_signin_window_s: int = Field(900, description="Failed sign-in throttling window.")
    auth_security_log_retention_days: int = Field(90, description="Security-log retention (P5.3).")
    auth_sweep_interval_s: float = Field(3600.0, description="How often expired rows are swept.")
    auth_last_used_flush_s: float = Field(10.0, description="How often key last-used times are written.")
    auth_watch_heartbeat_s: float = Field(
        1.0, gt=0, description="Longest silence on a proxy's key-change stream (heartbeats in between)."
    )
    auth_rate_lease_parts: int = Field(
        10, ge=1, description="A proxy's rate share is at most 1/this of a key's per-minute limits."
    )
    auth_rate_lease_ahead_s: float = Field(
        3.0, ge=0, description="A share renewed this close to a minute's end is taken from the next minute."
    )
    auth_argon2_time_cost: int = Field(3, description="argon2id passes.")
    auth_argon2_memory_kib: int = Field(65536, description="argon2id memory in KiB.")
    auth_argon2_parallelism: int = Field(4, description="argon2id lanes.")

    def database_url(self) -> str:
        return self.auth_database_url or self.sqlite_url("auth")
