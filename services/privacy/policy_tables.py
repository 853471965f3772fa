"""Privacy's tables for policy versions (P10), on privacy's own metadata (`tables.METADATA`).

- `privacy_policy_versions`: one published version of the privacy policy, its effective
  date, who published it (a staff account id or "operator") and when every account had
  been notified of it (`notified_at`, unset while the fan-out is unfinished).
- `privacy_policy_notifications`: the outbox a mail sender consumes, one row per version
  and account (the primary key, so a repeated fan-out adds nothing). It holds the account
  id only; the sender resolves the address when it sends and sets `sent_at`. Rows of an
  erased account are deleted with the rest of its data.
Times are naive UTC, as in `tables.py`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, Index, Text
from sqlmodel import Field

from .tables import PrivacyModel, _when


class PolicyVersionRow(PrivacyModel, table=True):
    __tablename__ = "privacy_policy_versions"
    version: str = Field(primary_key=True, max_length=64)
    effective_at: datetime = Field(sa_column=Column(DateTime, nullable=False, index=True))
    summary: str = Field(default="", sa_column=Column(Text, nullable=False))
    published_at: datetime = _when()
    published_by: str = Field(max_length=64)
    notified_at: datetime | None = _when(nullable=True)


class PolicyNotificationRow(PrivacyModel, table=True):
    __tablename__ = "privacy_policy_notifications"
    __table_args__ = (Index("ix_privacy_policy_notifications_unsent", "sent_at"),)
    version: str = Field(primary_key=True, max_length=64, foreign_key="privacy_policy_versions.version")
    account_id: str = Field(primary_key=True, max_length=64)
    created_at: datetime = _when()
    sent_at: datetime | None = _when(nullable=True)
