"""The privacy service's settings (flat keys prefixed `privacy_`), on top of the shared ones.

Participants come from configuration (name, address, phase), so a fifth service joins the
fan-out by being listed here, with no change to the orchestrator. In the environment give
them as JSON: `GATEMESH_PRIVACY_PARTICIPANTS='[{"name": "auth", "address": "127.0.0.1:50051",
"phase": 3}]'`. An empty list means the mesh's own three, on their configured addresses.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr

from services.runtime.settings import GatemeshSettings


class ParticipantConfig(BaseModel):
    """One PrivacyParticipant: where it is and when its erasure runs."""

    name: str = Field(min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9_-]*$")
    address: str = Field(min_length=1)
    # Erasure phases run in ascending order; participants of one phase run side by side.
    # Auth is last so that keys stay valid (and revocable) until every other store is clean.
    phase: int = Field(2, ge=1, le=100)
    # Whether the service credential is sent (a foreign participant may need none).
    service_token: bool = True


class PrivacySettings(GatemeshSettings):
    """Settings of the privacy service."""

    privacy_database_url: str = Field("", description="Privacy's database; empty: SQLite under data_dir.")
    privacy_participants: list[ParticipantConfig] = Field(
        default_factory=list,
        description="Participants (name, address, phase); empty: proxy (1), billing (2), auth (3) on their *_addr.",
    )
    privacy_due_days: int = Field(30, ge=1, description="Days a request may take: due_at = received_at + this.")
    privacy_export_ttl_days: int = Field(7, ge=1, description="Days a completed export can be downloaded.")
    privacy_worker_interval_s: float = Field(
        2.0,
        gt=0,
        description="The longest an idle worker waits before it looks for due steps again (steps queued by this "
        "instance, retries and expiring leases wake it when due; this bounds how late it sees other instances' "
        "steps).",
    )
    privacy_worker_batch: int = Field(8, ge=1, description="Steps one worker claims at a time.")
    privacy_lease_s: float = Field(30.0, gt=0, description="How long a claimed step is leased to its worker.")
    privacy_call_timeout_s: float = Field(60.0, gt=0, description="Deadline of one participant call.")
    privacy_max_attempts: int = Field(8, ge=1, description="Attempts before a step needs attention.")
    privacy_backoff_s: float = Field(0.5, gt=0, description="First retry delay; doubles per attempt, with jitter.")
    privacy_backoff_max_s: float = Field(300.0, gt=0, description="Longest retry delay.")
    privacy_closed_poll_s: float = Field(
        10.0, gt=0, description="How often auth's closed accounts are turned into erasures (P5.4)."
    )
    privacy_export_key: SecretStr | None = Field(
        None, description="AES-256-GCM key (base64) for exports at rest; empty: generated under data_dir."
    )
    privacy_signing_key: SecretStr | None = Field(
        None, description="Ed25519 private key (base64, raw 32 bytes) for certificates; empty: generated."
    )

    def database_url(self) -> str:
        return self.privacy_database_url or self.sqlite_url("privacy")

    def participants(self) -> list[ParticipantConfig]:
        """The configured participants, or the mesh's own three in erasure order."""
        if self.privacy_participants:
            return list(self.privacy_participants)
        return [
            ParticipantConfig(name="proxy", address=self.proxy_addr, phase=1),
            ParticipantConfig(name="billing", address=self.billing_addr, phase=2),
            ParticipantConfig(name="auth", address=self.auth_addr, phase=3),
        ]
