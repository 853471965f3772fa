"""The queries of policy versions and their notification outbox (P10).

Tables store naive UTC (as all of privacy's); the domain works in aware UTC, so times are
converted here at the edge of the store. The outbox insert skips rows already there
(`ON CONFLICT DO NOTHING`, which both PostgreSQL and SQLite speak), which is what makes a
repeated or resumed fan-out add nothing. An erasure deletes a subject's rows in
`PrivacyStore.forget_subject`, inside the erasure's own transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import func, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.runtime.db import session_factory

from .policy import PolicyVersion
from .policy_tables import PolicyNotificationRow, PolicyVersionRow


def naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _version(row: PolicyVersionRow, notified: int) -> PolicyVersion:
    return PolicyVersion(
        version=row.version,
        effective_at=aware(row.effective_at),
        summary=row.summary,
        published_at=aware(row.published_at),
        published_by=row.published_by,
        notified_at=aware(row.notified_at),
        notified=notified,
    )


class PolicyVersions:
    """The policy versions and the outbox, behind the `PolicyStore` protocol of the domain."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessions = session_factory(engine)

    async def add_version(self, version: PolicyVersion) -> bool:
        """Store a new version; False when that id is already stored (nothing changed)."""
        row = PolicyVersionRow(
            version=version.version,
            effective_at=naive(version.effective_at),
            summary=version.summary,
            published_at=naive(version.published_at),
            published_by=version.published_by,
        )
        try:
            async with self.sessions() as db, db.begin():
                db.add(row)
        except IntegrityError:
            return False
        return True

    async def version(self, version: str) -> PolicyVersion | None:
        async with self.sessions() as db:
            row = await db.get(PolicyVersionRow, version)
            return None if row is None else _version(row, await self._notified(db, version))

    async def versions(self) -> Sequence[PolicyVersion]:
        async with self.sessions() as db:
            rows = (await db.exec(select(PolicyVersionRow))).all()
            counts = await self._counts(db)
        return [_version(r, counts.get(r.version, 0)) for r in rows]

    async def add_notifications(self, version: str, account_ids: Sequence[str], at: datetime) -> int:
        """One outbox row per account not yet notified of `version`; returns rows added."""
        if not account_ids:
            return 0
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        values = [{"version": version, "account_id": a, "created_at": naive(at)} for a in account_ids]
        statement = dialect.insert(PolicyNotificationRow).values(values).on_conflict_do_nothing()
        async with self.engine.begin() as conn:
            return int((await conn.execute(statement)).rowcount)

    async def mark_notified(self, version: str, at: datetime) -> None:
        query = update(PolicyVersionRow).where(PolicyVersionRow.version == version)
        async with self.engine.begin() as conn:
            await conn.execute(query.values(notified_at=naive(at)))

    async def unnotified(self) -> Sequence[str]:
        async with self.sessions() as db:
            query = select(PolicyVersionRow.version).where(PolicyVersionRow.notified_at.is_(None))
            return list((await db.exec(query)).all())

    @staticmethod
    async def _notified(db: AsyncSession, version: str) -> int:
        query = select(func.count()).select_from(PolicyNotificationRow).where(PolicyNotificationRow.version == version)
        return int((await db.exec(query)).one())

    @staticmethod
    async def _counts(db: AsyncSession) -> dict[str, int]:
        query = select(PolicyNotificationRow.version, func.count()).group_by(PolicyNotificationRow.version)
        return {v: int(n) for v, n in (await db.exec(query)).all()}
