"""Auth's tables (SQLModel) and the queries the domain needs, one transaction per use case.

Auth owns its own registry (and so its own metadata), so its tables never mix with another
service's even when tests import several services into one process. Nothing here stores a
secret in the clear: passwords as argon2id hashes, API keys and session tokens as HMACs.
Timestamps are timezone-aware UTC; SQLite hands them back naive, `utc()` fixes that.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from services.runtime.db import transaction
from services.runtime.errors import AlreadyExists

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def utc(value: datetime | None) -> datetime | None:
    """The same instant, timezone-aware (SQLite returns naive UTC)."""
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def now() -> datetime:
    return datetime.now(UTC)


def _ts(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=nullable, index=index))


class AuthTable(SQLModel, registry=registry()):
    """Base of auth's tables: a registry (and metadata) of their own."""


metadata = AuthTable.metadata


class AccountRow(AuthTable, table=True):
    __tablename__ = "accounts"

    account_id: str = Field(primary_key=True, max_length=40)
    email: str = Field(unique=True, index=True, max_length=320)
    password_hash: str = Field(default="", max_length=512)
    role: int = 1
    status: int = 1
    age_attested: bool = False
    analytics_opt_out: bool = False
    accepted_policy_version: str = Field(default="", max_length=64)
    created_at: datetime = _ts(nullable=False)
    closed_at: datetime | None = _ts()
    erased_at: datetime | None = _ts()


class SessionRow(AuthTable, table=True):
    __tablename__ = "sessions"

    session_id: str = Field(primary_key=True, max_length=40)
    account_id: str = Field(foreign_key="accounts.account_id", index=True, max_length=40)
    token_hash: str = Field(unique=True, max_length=64)
    created_at: datetime = _ts(nullable=False)
    expires_at: datetime = _ts(nullable=False, index=True)
    ip: str = Field(default="", max_length=64)
    user_agent: str = Field(default="", max_length=512)


class ApiKeyRow(AuthTable, table=True):
    __tablename__ = "api_keys"

    key_id: str = Field(primary_key=True, max_length=40)
    account_id: str = Field(foreign_key="accounts.account_id", index=True, max_length=40)
    name: str = Field(max_length=100)
    prefix: str = Field(max_length=16)
    key_hash: str = Field(unique=True, max_length=64)
    created_at: datetime = _ts(nullable=False)
    last_used_at: datetime | None = _ts()
    expires_at: datetime | None = _ts()
    revoked_at: datetime | None = _ts()
    allowed_models: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    spend_cap_micros: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    rpm: int = 0
    tpm: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))


class SecurityEventRow(AuthTable, table=True):
    __tablename__ = "security_events"

    event_id: str = Field(primary_key=True, max_length=40)
    account_id: str | None = Field(default=None, index=True, max_length=40)
    event: str = Field(max_length=40)
    ip: str = Field(default="", max_length=64)
    user_agent: str = Field(default="", max_length=512)
    created_at: datetime = _ts(nullable=False, index=True)


class PolicyAcceptanceRow(AuthTable, table=True):
    __tablename__ = "policy_acceptances"

    account_id: str = Field(foreign_key="accounts.account_id", primary_key=True, max_length=40)
    version: str = Field(primary_key=True, max_length=64)
    accepted_at: datetime = _ts(nullable=False)


class ErasureRow(AuthTable, table=True):
    """One applied erasure request and its result, so a repeat replays it (idempotency)."""

    __tablename__ = "erasure_requests"

    request_id: str = Field(primary_key=True, max_length=128)
    account_id: str = Field(default="", max_length=40)
    result: str = Field(default="[]")
    created_at: datetime = _ts(nullable=False)


class KeyRecord:
    """A key joined with what verification needs of its account."""

    __slots__ = ("account", "key")

    def __init__(self, key: ApiKeyRow, account: AccountRow) -> None:
        self.key = key
        self.account = account


class AuthStore:
    """The queries of the auth domain; each public method is one transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # SQLAlchemy's own AsyncSession: these queries are Core statements, not SQLModel `exec`.
        self.sessions: async_sessionmaker[AsyncSession] = async_sessionmaker(engine, expire_on_commit=False)

    # accounts ---------------------------------------------------------------------------

    async def create_account(self, account: AccountRow, acceptance: PolicyAcceptanceRow | None) -> AccountRow:
        try:
            async with transaction(self.sessions) as db:
                if await db.scalar(select(AccountRow.account_id).where(AccountRow.email == account.email)):
                    raise AlreadyExists("an account with this email exists", field_violations={"email": "is taken"})
                db.add(account)
                await db.flush()
                if acceptance is not None:
                    db.add(acceptance)
        except IntegrityError:
            raise AlreadyExists("an account with this email exists") from None
        return account

    async def account_by_email(self, email: str) -> AccountRow | None:
        async with self.sessions() as db:
            return await db.scalar(select(AccountRow).where(AccountRow.email == email))

    async def account_by_id(self, account_id: str) -> AccountRow | None:
        async with self.sessions() as db:
            return await db.get(AccountRow, account_id)

    async def update_account(self, account_id: str, **values: Any) -> AccountRow | None:
        try:
            async with transaction(self.sessions) as db:
                await db.execute(update(AccountRow).where(AccountRow.account_id == account_id).values(**values))
                row = await db.get(AccountRow, account_id)
        except IntegrityError:
            raise AlreadyExists("an account with this email exists") from None
        return row

    async def email_taken(self, email: str) -> bool:
        async with self.sessions() as db:
            return bool(await db.scalar(select(AccountRow.account_id).where(AccountRow.email == email)))

    async def accept_policy(self, account_id: str, version: str, at: datetime) -> AccountRow | None:
        async with transaction(self.sessions) as db:
            if await db.get(PolicyAcceptanceRow, (account_id, version)) is None:
                db.add(PolicyAcceptanceRow(account_id=account_id, version=version, accepted_at=at))
            await db.execute(
                update(AccountRow).where(AccountRow.account_id == account_id).values(accepted_policy_version=version)
            )
            return await db.get(AccountRow, account_id)

    async def close_account(self, account_id: str, at: datetime) -> list[str]:
        """Status CLOSED, every key revoked, every session ended; returns the revoked key hashes."""
        async with transaction(self.sessions) as db:
            hashes = await self._revoke_all_keys(db, account_id, at)
            await db.execute(delete(SessionRow).where(SessionRow.account_id == account_id))
            await db.execute(
                update(AccountRow).where(AccountRow.account_id == account_id).values(status=2, closed_at=at)
            )
        return hashes

    @staticmethod
    async def _revoke_all_keys(db: AsyncSession, account_id: str, at: datetime) -> list[str]:
        live = (ApiKeyRow.account_id == account_id) & ApiKeyRow.revoked_at.is_(None)
        hashes = list((await db.scalars(select(ApiKeyRow.key_hash).where(live))).all())
        await db.execute(update(ApiKeyRow).where(live).values(revoked_at=at))
        return hashes

    async def opted_out_accounts(self) -> list[str]:
        async with self.sessions() as db:
            query = select(AccountRow.account_id).where(AccountRow.analytics_opt_out.is_(True))
            return list((await db.scalars(query.order_by(AccountRow.account_id))).all())

    async def closed_accounts(self, limit: int) -> list[tuple[str, datetime]]:
        """Accounts closed and not yet erased, oldest closure first (P5.4)."""
        async with self.sessions() as db:
            query = select(AccountRow.account_id, AccountRow.closed_at).where(AccountRow.status == 2)
            rows = await db.execute(query.order_by(AccountRow.closed_at).limit(limit))
            return [(account_id, utc(at)) for account_id, at in rows.all()]  # type: ignore[misc]  # SQLModel: see pyproject

    async def accounts_by_policy(self, version: str, accepted: bool, after: str, limit: int) -> list[str]:
        """Active accounts with (or without) an acceptance of `version`, by id after `after`."""
        acceptances = select(PolicyAcceptanceRow.account_id).where(PolicyAcceptanceRow.version == version)
        chosen = AccountRow.account_id.in_(acceptances) if accepted else AccountRow.account_id.not_in(acceptances)
        query = select(AccountRow.account_id).where(AccountRow.status == 1, AccountRow.account_id > after, chosen)
        async with self.sessions() as db:
            return list((await db.scalars(query.order_by(AccountRow.account_id).limit(limit))).all())

    async def key_hashes_of(self, account_id: str) -> list[str]:
        async with self.sessions() as db:
            query = select(ApiKeyRow.key_hash).where(ApiKeyRow.account_id == account_id)
            return list((await db.scalars(query)).all())

    # sessions ---------------------------------------------------------------------------

    async def add_session(self, session: SessionRow) -> None:
        async with transaction(self.sessions) as db:
            db.add(session)

    async def session_by_hash(self, token_hash: str) -> tuple[SessionRow, AccountRow] | None:
        async with self.sessions() as db:
            query = (
                select(SessionRow, AccountRow)
                .join(AccountRow, AccountRow.account_id == SessionRow.account_id)
                .where(SessionRow.token_hash == token_hash)
            )
            row = (await db.execute(query)).first()
            return (row[0], row[1]) if row else None

    async def end_sessions(self, account_id: str, *, session_id: str = "", keep: str = "") -> int:
        """End one session (session_id) or all of an account's but `keep`."""
        async with transaction(self.sessions) as db:
            query = delete(SessionRow).where(SessionRow.account_id == account_id)
            if session_id:
                query = query.where(SessionRow.session_id == session_id)
            if keep:
                query = query.where(SessionRow.session_id != keep)
            return (await db.execute(query)).rowcount or 0

    # api keys ---------------------------------------------------------------------------

    async def add_key(self, key: ApiKeyRow, replaces: str = "", at: datetime | None = None) -> str:
        """Insert a key; with `replaces`, revoke that key in the same transaction (rotation).
        Returns the revoked key's hash ('' when none)."""
        async with transaction(self.sessions) as db:
            revoked = ""
            if replaces:
                old = await db.get(ApiKeyRow, replaces)
                if old is not None and old.revoked_at is None:
                    old.revoked_at = at
                    revoked = old.key_hash
            db.add(key)
        return revoked

    async def key_by_id(self, key_id: str) -> ApiKeyRow | None:
        async with self.sessions() as db:
            return await db.get(ApiKeyRow, key_id)

    async def keys_of(self, account_id: str, offset: int, limit: int) -> list[ApiKeyRow]:
        async with self.sessions() as db:
            query = (
                select(ApiKeyRow)
                .where(ApiKeyRow.account_id == account_id)
                .order_by(ApiKeyRow.created_at, ApiKeyRow.key_id)
                .offset(offset)
                .limit(limit)
            )
            return list((await db.scalars(query)).all())

    async def revoke_key(self, key_id: str, at: datetime) -> ApiKeyRow | None:
        async with transaction(self.sessions) as db:
            key = await db.get(ApiKeyRow, key_id)
            if key is not None and key.revoked_at is None:
                key.revoked_at = at
            return key

    async def update_key(self, key_id: str, allowed_models: list[str], spend_cap_micros: int) -> ApiKeyRow | None:
        async with transaction(self.sessions) as db:
            key = await db.get(ApiKeyRow, key_id)
            if key is not None:
                key.allowed_models = allowed_models
                key.spend_cap_micros = spend_cap_micros
            return key

    async def key_for_verification(self, key_hash: str) -> KeyRecord | None:
        async with self.sessions() as db:
            query = (
                select(ApiKeyRow, AccountRow)
                .join(AccountRow, AccountRow.account_id == ApiKeyRow.account_id)
                .where(ApiKeyRow.key_hash == key_hash)
            )
            row = (await db.execute(query)).first()
            return KeyRecord(row[0], row[1]) if row else None

    async def keys_for_verification(self, key_hashes: Sequence[str]) -> dict[str, KeyRecord]:
        """`key_for_verification` for many hashes in one query (a burst of keys no cache
        holds yet, as after a restart, costs one round trip instead of one each)."""
        async with self.sessions() as db:
            query = (
                select(ApiKeyRow, AccountRow)
                .join(AccountRow, AccountRow.account_id == ApiKeyRow.account_id)
                .where(ApiKeyRow.key_hash.in_(key_hashes))
            )
            return {row[0].key_hash: KeyRecord(row[0], row[1]) for row in await db.execute(query)}

    async def record_last_used(self, used: dict[str, datetime]) -> None:
        """Write buffered last-used times (only ever moving them forward)."""
        if not used:
            return
        async with transaction(self.sessions) as db:
            for key_id, at in used.items():
                column = ApiKeyRow.last_used_at
                await db.execute(
                    update(ApiKeyRow)
                    .where(ApiKeyRow.key_id == key_id)
                    .where(column.is_(None) | (column < at))
                    .values(last_used_at=at)
                )

    # security log -----------------------------------------------------------------------

    async def add_event(self, event: SecurityEventRow) -> None:
        async with transaction(self.sessions) as db:
            db.add(event)

    async def sweep(self, events_before: datetime, sessions_before: datetime) -> tuple[int, int]:
        """Delete security events older than the retention and expired sessions (P5.3)."""
        async with transaction(self.sessions) as db:
            events = await db.execute(delete(SecurityEventRow).where(SecurityEventRow.created_at < events_before))
            sessions = await db.execute(delete(SessionRow).where(SessionRow.expires_at < sessions_before))
            return events.rowcount or 0, sessions.rowcount or 0

    # privacy ----------------------------------------------------------------------------

    async def subject_rows(self, account_id: str) -> dict[str, Sequence[Any]]:
        """Every row about an account, per table, for an export."""
        async with self.sessions() as db:
            rows: dict[str, Sequence[Any]] = {}
            for table in (ApiKeyRow, SessionRow, SecurityEventRow, PolicyAcceptanceRow):
                query = select(table).where(table.account_id == account_id)
                rows[table.__tablename__] = (await db.scalars(query)).all()
            return rows

    async def erasure_result(self, request_id: str) -> list[dict[str, Any]] | None:
        async with self.sessions() as db:
            row = await db.get(ErasureRow, request_id)
            return json.loads(row.result) if row else None

    async def erase(
        self, request_id: str, account_id: str, at: datetime
    ) -> tuple[list[dict[str, Any]], list[str]] | None:
        """Apply every field's strategy in one transaction and record the result under
        `request_id`. Returns the actions and the key hashes whose caches must be dropped,
        or None when a concurrent call with the same request_id won (replay its result)."""
        try:
            return await self._erase(request_id, account_id, at)
        except IntegrityError:
            return None

    async def _erase(self, request_id: str, account_id: str, at: datetime) -> tuple[list[dict[str, Any]], list[str]]:
        async with transaction(self.sessions) as db:
            actions: list[dict[str, Any]] = []
            hashes: list[str] = []
            if account_id:
                hashes = list(
                    (await db.scalars(select(ApiKeyRow.key_hash).where(ApiKeyRow.account_id == account_id))).all()
                )
                for table in (ApiKeyRow, SessionRow, SecurityEventRow, PolicyAcceptanceRow):
                    result = await db.execute(delete(table).where(table.account_id == account_id))
                    actions.append({"store": f"auth.{table.__tablename__}", "strategy": 1, "count": result.rowcount})
                result = await db.execute(
                    update(AccountRow)
                    .where(AccountRow.account_id == account_id)
                    .values(
                        email=f"erased-{account_id}@invalid",
                        password_hash="",
                        age_attested=False,
                        analytics_opt_out=False,
                        status=3,
                        closed_at=func.coalesce(AccountRow.closed_at, at),
                        erased_at=at,
                    )
                )
                actions.append({"store": "auth.accounts", "strategy": 2, "count": result.rowcount})
            db.add(ErasureRow(request_id=request_id, account_id=account_id, result=json.dumps(actions), created_at=at))
        return actions, hashes

    async def counts(self) -> dict[str, int]:
        """Rows per table (tests and health reports)."""
        async with self.sessions() as db:
            return {
                table.name: int(await db.scalar(select(func.count()).select_from(table)) or 0)
                for table in metadata.sorted_tables
            }
