"""Privacy's tables (SQLModel, on privacy's own metadata), as the migrations create them.

- `privacy_requests`: one data-subject request. The subject is named by a pseudonymous id
  (`subject_id`, a keyed hash of the account id); `account_id` is kept only while steps
  still need to reach the participants and is cleared when an erasure completes. The only
  email the service ever stores is a rectification's new address in `changes`, cleared
  once every participant has applied it.
- `privacy_approvals`: the second compliance member's approval of a staff-raised erasure.
- `privacy_steps`: one per participant and phase, the unit the worker claims, with its
  lease (owner, expiry) so that a dead worker's step is resumed by another.
- `privacy_audit`: the append-only, hash-chained audit trail (ids and counts only).
- `privacy_exports`: access exports, one row per page of one participant's records,
  compressed and AES-GCM encrypted, deleted after their TTL or when the subject is erased.
Times are naive UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, Integer, LargeBinary, Text
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel


class PrivacyModel(SQLModel, registry=registry()):
    """Privacy's own metadata, so that its tables never meet another service's in one process."""


METADATA = PrivacyModel.metadata


def _when(nullable: bool = False) -> Any:
    return Field(default=None, sa_column=Column(DateTime, nullable=nullable))


def _json(default: Any) -> Any:
    return Field(default_factory=lambda: default.copy(), sa_column=Column(JSON, nullable=False))


class RequestRow(PrivacyModel, table=True):
    __tablename__ = "privacy_requests"
    __table_args__ = (
        Index("ix_privacy_requests_subject", "subject_id"),
        Index("ix_privacy_requests_status_due", "status", "due_at"),
    )
    request_id: str = Field(primary_key=True, max_length=40)
    type: int = Field(sa_column=Column(Integer, nullable=False))
    status: int = Field(sa_column=Column(Integer, nullable=False))
    subject_id: str = Field(max_length=64)
    account_id: str | None = Field(default=None, max_length=64)
    origin: int = Field(sa_column=Column(Integer, nullable=False))
    requested_by: str = Field(max_length=64)
    identity_verification: str = Field(default="", max_length=500)
    reason: str = Field(default="", max_length=500)
    dry_run: bool = False
    # Incremented by a staff retry after verification findings: participants see a new
    # request id (`<id>.<round>`) and apply their strategies again.
    round: int = 0
    # W3C traceparent of the request's trace: every worker's spans for it join this trace.
    trace_context: str = Field(default="", max_length=200)
    # At most one live request per key (an account closure raises one erasure, once).
    dedup_key: str | None = Field(default=None, max_length=100, unique=True)
    changes: dict[str, str] = _json({})
    datamap: dict[str, Any] = _json({})
    findings: list[str] = _json([])
    received_at: datetime = _when()
    due_at: datetime = _when()
    completed_at: datetime | None = _when(nullable=True)
    export_expires_at: datetime | None = _when(nullable=True)
    certificate: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    signature: str | None = Field(default=None, max_length=200)


class ApprovalRow(PrivacyModel, table=True):
    __tablename__ = "privacy_approvals"
    request_id: str = Field(primary_key=True, max_length=40, foreign_key="privacy_requests.request_id")
    staff_id: str = Field(primary_key=True, max_length=64)
    approved_at: datetime = _when()


class StepRow(PrivacyModel, table=True):
    __tablename__ = "privacy_steps"
    __table_args__ = (
        Index("ix_privacy_steps_due", "status", "next_attempt_at"),
        Index("ix_privacy_steps_request", "request_id", "run_order"),
    )
    step_id: int | None = Field(default=None, primary_key=True, sa_type=BigInteger().with_variant(Integer, "sqlite"))
    request_id: str = Field(max_length=40, foreign_key="privacy_requests.request_id")
    participant: str = Field(max_length=40)
    address: str = Field(max_length=300)
    phase: str = Field(max_length=16)
    run_order: int = Field(sa_column=Column(Integer, nullable=False))
    status: int = Field(sa_column=Column(Integer, nullable=False))
    attempts: int = 0
    next_attempt_at: datetime = _when()
    lease_owner: str | None = Field(default=None, max_length=80)
    lease_expires_at: datetime | None = _when(nullable=True)
    last_error: str = Field(default="", max_length=40)
    counts: dict[str, int] = _json({})
    result: dict[str, Any] = _json({})
    started_at: datetime | None = _when(nullable=True)
    finished_at: datetime | None = _when(nullable=True)


class AuditRow(PrivacyModel, table=True):
    __tablename__ = "privacy_audit"
    __table_args__ = (Index("ix_privacy_audit_request", "request_id"),)
    seq: int | None = Field(default=None, primary_key=True, sa_type=BigInteger().with_variant(Integer, "sqlite"))
    at: datetime = _when()
    request_id: str = Field(default="", max_length=40)
    event: str = Field(max_length=40)
    actor: str = Field(default="", max_length=64)
    subject_id: str = Field(default="", max_length=64)
    details: dict[str, Any] = _json({})
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64, unique=True)


class ExportRow(PrivacyModel, table=True):
    """One encrypted chunk (a page of records) of one participant's part of an export."""

    __tablename__ = "privacy_exports"
    __table_args__ = (
        Index("ix_privacy_exports_expires", "expires_at"),
        Index("ix_privacy_exports_subject", "subject_id"),
    )
    request_id: str = Field(primary_key=True, max_length=40, foreign_key="privacy_requests.request_id")
    part: str = Field(primary_key=True, max_length=40)
    seq: int = Field(primary_key=True)
    subject_id: str = Field(max_length=64)
    nonce: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    ciphertext: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = _when()
    expires_at: datetime = _when()


# The policy-version tables (P10) live in their own module, on this metadata.
from . import policy_tables  # noqa: E402, F401
