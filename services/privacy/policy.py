"""The rules of privacy-policy versions (P10.1, P10.2), without gRPC or SQL.

- A version has an id (what auth records as accepted, e.g. "2026-12-15"), an effective
  date and a short summary of what changed. Staff (compliance or admin) publish it.
- The current version is the latest whose effective date has passed; a version published
  with a later date is "upcoming" until then. Effective dates only move forward: a new
  version must take effect after every version already published, so that "current" is
  never ambiguous, and not in the past (a little clock skew is tolerated), so that
  nobody's acceptance is rewritten after the fact.
- Publishing is idempotent: the same id with the same date and summary returns the
  version already stored; the same id with different content is refused.
- Every account is notified of a new version through an outbox (one row per account and
  version, unique, so a repeat adds nothing) that a mail sender consumes; the accounts are
  those auth lists as not having accepted the version. The notification holds the
  account id only: the sender looks the address up when it sends, so no email is copied
  into privacy's tables.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from services.runtime.errors import AlreadyExists, FailedPrecondition, NotFound, PermissionDenied, Violations

VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_SUMMARY = 2000
CLOCK_SKEW = timedelta(minutes=1)
NOTIFY_PAGE = 1000


@dataclass(frozen=True)
class PolicyVersion:
    version: str
    effective_at: datetime
    summary: str
    published_at: datetime
    published_by: str
    notified_at: datetime | None = None
    notified: int = 0

    def same_content(self, effective_at: datetime, summary: str) -> bool:
        return self.effective_at == effective_at and self.summary == summary


@dataclass(frozen=True)
class Published:
    """What `publish` did: the version, whether this call created it, accounts notified."""

    version: PolicyVersion
    created: bool
    notified: int


@dataclass(frozen=True)
class PendingPage:
    account_ids: list[str]
    next_page_token: str


class PolicyStore(Protocol):
    async def add_version(self, version: PolicyVersion) -> bool: ...
    async def version(self, version: str) -> PolicyVersion | None: ...
    async def versions(self) -> Sequence[PolicyVersion]: ...
    async def add_notifications(self, version: str, account_ids: Sequence[str], at: datetime) -> int: ...
    async def mark_notified(self, version: str, at: datetime) -> None: ...
    async def unnotified(self) -> Sequence[str]: ...


Audit = Callable[[str, str, dict[str, Any]], Awaitable[None]]
"""Appends (event, actor, details) to privacy's audit trail: ids and counts only."""


class PolicyAccounts(Protocol):
    """Auth's view of acceptances: active accounts that have not accepted a version."""

    async def not_accepted(self, version: str, page_size: int, page_token: str) -> tuple[list[str], str]: ...


def check_version_id(v: Violations, version: str) -> None:
    if not version:
        v.add("version", "is required")
    elif not VERSION_PATTERN.match(version):
        v.add("version", "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")


def check_publish(
    version: str, effective_at: datetime | None, summary: str, now: datetime, latest: PolicyVersion | None
) -> datetime:
    """Validate a publication; returns the effective date. Raises InvalidArgument."""
    v = Violations()
    check_version_id(v, version)
    v.check(len(summary) <= MAX_SUMMARY, "summary", f"must be at most {MAX_SUMMARY} characters")
    if effective_at is None:
        v.add("effective_at", "is required")
    elif effective_at < now - CLOCK_SKEW:
        v.add("effective_at", "must not be in the past")
    elif latest is not None and latest.version != version and effective_at <= latest.effective_at:
        v.add("effective_at", f"must be after the effective date of version {latest.version}")
    v.raise_if_any()
    assert effective_at is not None
    return effective_at


def current_of(versions: Sequence[PolicyVersion], now: datetime) -> PolicyVersion | None:
    """The latest version whose effective date has passed (P10.1)."""
    effective = [p for p in versions if p.effective_at <= now]
    return max(effective, key=lambda p: p.effective_at, default=None)


def upcoming_of(versions: Sequence[PolicyVersion], now: datetime) -> PolicyVersion | None:
    """The next version to take effect, if one is scheduled."""
    later = [p for p in versions if p.effective_at > now]
    return min(later, key=lambda p: p.effective_at, default=None)


def require_staff(is_staff: bool) -> None:
    if not is_staff:
        raise PermissionDenied("publishing a policy version needs the compliance or admin role")


class Policies:
    """Publishing, reading and notifying policy versions."""

    def __init__(self, store: PolicyStore, accounts: PolicyAccounts, audit: Audit) -> None:
        self.store = store
        self.accounts = accounts
        self.audit = audit

    async def publish(
        self, staff_id: str, version: str, effective_at: datetime | None, summary: str, now: datetime
    ) -> Published:
        """Publish a version and notify every account; a repeat returns the first result."""
        summary = summary.strip()
        versions = await self.store.versions()
        existing = next((p for p in versions if p.version == version), None)
        if existing is None:
            latest = max(versions, key=lambda p: p.effective_at, default=None)
            effective = check_publish(version, effective_at, summary, now, latest)
            draft = PolicyVersion(version, effective, summary, now, staff_id)
            if await self.store.add_version(draft):
                await self.audit("policy_published", staff_id, {"version": version})
                return Published(draft, True, await self.notify(version, now))
            existing = await self.store.version(version)  # a concurrent publish won
        assert existing is not None
        if effective_at is None or not existing.same_content(effective_at, summary):
            raise AlreadyExists(
                f"policy version {version} is already published with another date or summary",
                field_violations={"version": "is already published"},
            )
        notified = existing.notified if existing.notified_at else await self.notify(version, now)
        return Published(existing, False, notified)

    async def notify(self, version: str, now: datetime) -> int:
        """One outbox row per account that has not accepted `version` (resumable, idempotent)."""
        added = 0
        async for page in self._not_accepted(version):
            added += await self.store.add_notifications(version, page, now)
        await self.store.mark_notified(version, now)
        stored = await self.store.version(version)
        return stored.notified if stored else added

    async def resume_notifications(self, now: datetime) -> int:
        """Finish the fan-out of versions whose notification was interrupted (a crash, auth down)."""
        done = 0
        for version in await self.store.unnotified():
            done += await self.notify(version, now)
        return done

    async def _not_accepted(self, version: str) -> AsyncIterator[list[str]]:
        token = ""
        while True:
            ids, token = await self.accounts.not_accepted(version, NOTIFY_PAGE, token)
            if ids:
                yield ids
            if not token:
                return

    async def current(self, now: datetime) -> tuple[PolicyVersion | None, PolicyVersion | None]:
        """(current, upcoming) at `now`."""
        versions = await self.store.versions()
        return current_of(versions, now), upcoming_of(versions, now)

    async def versions(self) -> Sequence[PolicyVersion]:
        return sorted(await self.store.versions(), key=lambda p: p.effective_at, reverse=True)

    async def pending(
        self, staff_id: str, version: str, page_size: int, page_token: str, now: datetime
    ) -> tuple[str, PendingPage]:
        """Accounts that have not accepted `version` (default: the current one); a staff
        read of account data, so it is audited (P6.3)."""
        v = Violations()
        if version:
            check_version_id(v, version)
        v.check(0 <= page_size <= 10000, "page_size", "must be between 0 and 10000")
        v.check(len(page_token) <= 200, "page_token", "must be at most 200 characters")
        v.raise_if_any()
        if version:
            if await self.store.version(version) is None:
                raise NotFound(f"no policy version {version} is published", reason="UNKNOWN_POLICY_VERSION")
        else:
            current, _ = await self.current(now)
            if current is None:
                raise FailedPrecondition("no policy version is in effect yet", reason="NO_POLICY_VERSION")
            version = current.version
        ids, token = await self.accounts.not_accepted(version, page_size or NOTIFY_PAGE, page_token)
        await self.audit("policy_pending_listed", staff_id, {"version": version, "accounts": len(ids)})
        return version, PendingPage(ids, token)
