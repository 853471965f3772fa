"""Privacy's storage: the engine, its sessions and the queries the domain needs.

Only this module (and `tables.py`) knows SQL. The worker's claim uses
`SELECT ... FOR UPDATE SKIP LOCKED` on PostgreSQL, so that several privacy instances on
one database never claim the same step; SQLite has no row locks, and the local default
runs one worker. A claimed step carries a lease (owner, expiry): its result is recorded
only while the lease is still the claimer's, and an expired lease makes the step
claimable again (a worker killed mid-step is resumed by another). Audit events are
appended under a transaction-scoped advisory lock on PostgreSQL, so that concurrent
writers cannot fork the hash chain.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import and_, delete, exists, func, or_, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import aliased
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.runtime.db import session_factory

from . import audit
from .domain import ATTENTION, COMPLETED, DONE, NEEDS_ATTENTION, PENDING, RUNNING, STEP_RUNNING
from .policy_tables import PolicyNotificationRow
from .tables import ApprovalRow, AuditRow, ExportRow, RequestRow, StepRow

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
AUDIT_LOCK = 0x5052_4956  # "PRIV": serializes appends to the hash chain on PostgreSQL
log = logging.getLogger(__name__)
TOUCHED_BY_ERASURE = ("privacy_requests", "privacy_exports", "privacy_steps", "privacy_policy_notifications")


def utcnow() -> datetime:
    """Now, as the naive UTC the tables store."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class RequestView:
    """A request with its steps and approvals."""

    request: RequestRow
    steps: list[StepRow]
    approvals: list[ApprovalRow]


def _blocked() -> Any:
    """A step whose request has an earlier step (lower run order) not yet done."""
    earlier = aliased(StepRow)
    return exists().where(
        earlier.request_id == StepRow.request_id, earlier.run_order < StepRow.run_order, earlier.status != DONE
    )


class PrivacyStore:
    """The privacy service's tables behind the queries its domain uses."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessions = session_factory(engine)
        # set once steps were queued or released here (committed), so that this instance's
        # idle worker runs them at once instead of at its next look (see `Worker`)
        self.queued = asyncio.Event()

    @property
    def postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as db, db.begin():
            yield db

    # --- requests -----------------------------------------------------------------------

    async def create(self, request: RequestRow, steps: Sequence[StepRow], event: dict[str, Any]) -> bool:
        """Store a request, its steps and its audit event at once; False when its dedup key
        is already taken (nothing stored)."""
        try:
            async with self.transaction() as db:
                db.add(request)
                await db.flush()
                for step in steps:
                    db.add(step)
                await self.append_audit(db, **event)
        except IntegrityError:
            if request.dedup_key is None:
                raise
            return False
        self.queued.set()
        return True

    async def lock_request(self, db: AsyncSession, request_id: str) -> RequestRow | None:
        """The request row, locked until the transaction ends (PostgreSQL)."""
        query = select(RequestRow).where(RequestRow.request_id == request_id)
        if self.postgres:
            query = query.with_for_update()
        return (await db.exec(query)).first()

    async def view(self, request_id: str) -> RequestView | None:
        async with self.sessions() as db:
            request = await db.get(RequestRow, request_id)
            if request is None:
                return None
            return RequestView(request, await self._steps(db, request_id), await self._approvals(db, request_id))

    @staticmethod
    async def _steps(db: AsyncSession, request_id: str) -> list[StepRow]:
        query = select(StepRow).where(StepRow.request_id == request_id).order_by(StepRow.run_order, StepRow.participant)
        return list((await db.exec(query)).all())

    @staticmethod
    async def _approvals(db: AsyncSession, request_id: str) -> list[ApprovalRow]:
        query = select(ApprovalRow).where(ApprovalRow.request_id == request_id).order_by(ApprovalRow.approved_at)
        return list((await db.exec(query)).all())

    async def steps(self, db: AsyncSession, request_id: str) -> list[StepRow]:
        return await self._steps(db, request_id)

    async def approvals(self, db: AsyncSession, request_id: str) -> list[ApprovalRow]:
        return await self._approvals(db, request_id)

    async def list_views(
        self,
        *,
        subject_id: str | None = None,
        due_before: datetime | None = None,
        attention: bool = False,
        offset: int = 0,
        limit: int = 50,
    ) -> list[RequestView]:
        query = select(RequestRow)
        if subject_id is not None:
            query = query.where(RequestRow.subject_id == subject_id)
        if due_before is not None:
            query = query.where(RequestRow.due_at <= due_before, RequestRow.status != COMPLETED)
        if attention:
            query = query.where(RequestRow.status == NEEDS_ATTENTION)
        query = query.order_by(RequestRow.received_at.desc(), RequestRow.request_id).offset(offset).limit(limit)
        async with self.sessions() as db:
            rows = list((await db.exec(query)).all())
            return [
                RequestView(r, await self._steps(db, r.request_id), await self._approvals(db, r.request_id))
                for r in rows
            ]

    # --- the worker's queue -------------------------------------------------------------

    async def claim(self, owner: str, now: datetime, lease_until: datetime, limit: int) -> list[StepRow]:
        """Lease up to `limit` due steps: pending ones whose time has come, or running ones
        whose lease expired, of running requests, whose earlier steps are all done."""
        due = or_(
            and_(StepRow.status == PENDING, StepRow.next_attempt_at <= now),
            and_(StepRow.status == STEP_RUNNING, StepRow.lease_expires_at < now),
        )
        query = (
            select(StepRow.step_id)
            .join(RequestRow, RequestRow.request_id == StepRow.request_id)
            .where(RequestRow.status == RUNNING, due, ~_blocked())
            .order_by(StepRow.next_attempt_at)
            .limit(limit)
        )
        if self.postgres:
            query = query.with_for_update(of=StepRow, skip_locked=True)
        async with self.transaction() as db:
            ids = list((await db.exec(query)).all())
            if not ids:
                return []
            await db.execute(
                update(StepRow)
                .where(StepRow.step_id.in_(ids))
                .values(
                    status=STEP_RUNNING,
                    lease_owner=owner,
                    lease_expires_at=lease_until,
                    attempts=StepRow.attempts + 1,
                    started_at=now,
                )
            )
            query_rows = select(StepRow).where(StepRow.step_id.in_(ids)).execution_options(populate_existing=True)
            return list((await db.exec(query_rows)).all())

    async def next_due_s(self, now: datetime) -> float | None:
        """Seconds until a step could next be claimed (a pending step's retry time, or a
        running step's lease expiry), at least 0; None when no step waits for a time (blocked
        steps wait for an earlier step, which this instance's worker runs or is told of)."""
        pending = (
            select(func.min(StepRow.next_attempt_at))
            .join(RequestRow, RequestRow.request_id == StepRow.request_id)
            .where(RequestRow.status == RUNNING, StepRow.status == PENDING, ~_blocked())
        )
        leased = select(func.min(StepRow.lease_expires_at)).where(StepRow.status == STEP_RUNNING)
        async with self.sessions() as db:
            times = [(await db.exec(query)).first() for query in (pending, leased)]
        known = [moment for moment in times if moment is not None]
        return max(0.0, (min(known) - now).total_seconds()) if known else None

    async def settle_step(self, db: AsyncSession, step: StepRow, owner: str, **values: Any) -> bool:
        """Record a step's outcome if the caller still holds its lease (else nothing: another
        worker took the step over after the lease expired)."""
        result = await db.execute(
            update(StepRow)
            .where(StepRow.step_id == step.step_id, StepRow.lease_owner == owner, StepRow.status == STEP_RUNNING)
            .values(lease_owner=None, lease_expires_at=None, **values)
        )
        return bool(result.rowcount)

    async def reset_steps(self, db: AsyncSession, request_id: str, phases: Sequence[str], now: datetime) -> int:
        """Put steps back in the queue (staff retry): attempts start again."""
        which = StepRow.phase.in_(phases) if phases else StepRow.status == ATTENTION
        query = update(StepRow).where(StepRow.request_id == request_id, which)
        result = await db.execute(
            query.values(status=PENDING, attempts=0, next_attempt_at=now, last_error="", lease_owner=None)
        )
        return int(result.rowcount)

    async def release_waiting_steps(self, db: AsyncSession, request_id: str, now: datetime) -> None:
        await db.execute(update(StepRow).where(StepRow.request_id == request_id).values(next_attempt_at=now))

    # --- exports ------------------------------------------------------------------------

    async def drop_export_part(self, request_id: str, part: str) -> None:
        async with self.transaction() as db:
            await db.execute(delete(ExportRow).where(ExportRow.request_id == request_id, ExportRow.part == part))

    async def add_export_chunk(self, row: ExportRow) -> None:
        async with self.transaction() as db:
            db.add(row)

    async def export_parts(self, request_id: str) -> list[str]:
        async with self.sessions() as db:
            query = select(ExportRow.part).where(ExportRow.request_id == request_id).distinct().order_by(ExportRow.part)
            return list((await db.exec(query)).all())

    async def export_chunks(self, request_id: str, part: str) -> AsyncIterator[ExportRow]:
        """One part's chunks in order, read one at a time (an export may be large)."""
        seq = -1
        while True:
            async with self.sessions() as db:
                query = (
                    select(ExportRow)
                    .where(ExportRow.request_id == request_id, ExportRow.part == part, ExportRow.seq > seq)
                    .order_by(ExportRow.seq)
                    .limit(16)
                )
                rows = list((await db.exec(query)).all())
            if not rows:
                return
            for row in rows:
                yield row
            seq = rows[-1].seq

    async def sweep_exports(self, now: datetime) -> int:
        """Delete exports past their download window (7 days)."""
        async with self.transaction() as db:
            result = await db.execute(delete(ExportRow).where(ExportRow.expires_at < now))
            return int(result.rowcount)

    async def forget_subject(self, db: AsyncSession, subject_id: str) -> dict[str, int]:
        """After an erasure: the subject's exports deleted, their requests keep only the
        pseudonymous id (account id and pending changes cleared)."""
        exports = await db.execute(delete(ExportRow).where(ExportRow.subject_id == subject_id))
        accounts = select(RequestRow.account_id).where(RequestRow.subject_id == subject_id)
        notices = await db.execute(delete(PolicyNotificationRow).where(PolicyNotificationRow.account_id.in_(accounts)))
        requests = await db.execute(
            update(RequestRow).where(RequestRow.subject_id == subject_id).values(account_id=None, changes={})
        )
        return {
            "privacy.privacy_exports": int(exports.rowcount),
            "privacy.privacy_requests": int(requests.rowcount),
            "privacy.privacy_policy_notifications": int(notices.rowcount),
        }

    async def vacuum(self) -> str:
        """Make erased values leave the storage files, not only query results: VACUUM the
        touched tables on PostgreSQL. SQLite runs with secure_delete on, but its write-ahead
        log still holds the pages as they were before the erasure until a checkpoint: copy
        it into the database and truncate it."""
        if not self.postgres:
            await self._checkpoint_wal()
            return "sqlite secure_delete: deleted values overwritten; write-ahead log checkpointed and truncated"
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f"VACUUM {', '.join(TOUCHED_BY_ERASURE)}"))
        return "postgresql: touched tables vacuumed, dead row versions removed"

    async def _checkpoint_wal(self, attempts: int = 50) -> None:
        """`PRAGMA wal_checkpoint(TRUNCATE)` until no reader blocks it (its first column is
        1 while one does); a reader holds it only for one query."""
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            for _ in range(attempts):
                busy = (await conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))).first()
                if busy is None or not busy[0]:
                    return
                await asyncio.sleep(0.05)
        log.warning("the write-ahead log stayed busy; erased values leave it at the next checkpoint")

    # --- audit --------------------------------------------------------------------------

    async def append_audit(
        self,
        db: AsyncSession,
        *,
        event: str,
        request_id: str = "",
        actor: str = "",
        subject_id: str = "",
        details: dict[str, Any] | None = None,
        at: datetime | None = None,
    ) -> None:
        """Append one event to the hash chain, inside the caller's transaction."""
        if self.postgres:
            await db.execute(text("SELECT pg_advisory_xact_lock(:k)").bindparams(k=AUDIT_LOCK))
        last = (await db.exec(select(AuditRow.hash).order_by(AuditRow.seq.desc()).limit(1))).first()
        prev = last or audit.GENESIS
        moment = at or utcnow()
        body = audit.event_body(moment, request_id, event, actor, subject_id, details or {})
        db.add(
            AuditRow(
                at=moment,
                request_id=request_id,
                event=event,
                actor=actor,
                subject_id=subject_id,
                details=details or {},
                prev_hash=prev,
                hash=audit.chain_hash(prev, body),
            )
        )

    async def audit_events(self) -> AsyncIterator[tuple[int, str, str, dict[str, Any]]]:
        """(seq, prev_hash, hash, body) of every event in order, in pages."""
        seq = 0
        while True:
            async with self.sessions() as db:
                query = select(AuditRow).where(AuditRow.seq > seq).order_by(AuditRow.seq).limit(1000)
                rows = list((await db.exec(query)).all())
            if not rows:
                return
            for r in rows:
                body = audit.event_body(r.at, r.request_id, r.event, r.actor, r.subject_id, r.details)
                yield int(r.seq), r.prev_hash, r.hash, body
            seq = int(rows[-1].seq)

    async def audit_count(self, request_id: str) -> int:
        async with self.sessions() as db:
            query = select(func.count()).select_from(AuditRow).where(AuditRow.request_id == request_id)
            return int((await db.exec(query)).one())
