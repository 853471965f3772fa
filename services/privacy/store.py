"""Privacy's storage: the engine, its sessions and the queries the domain needs.

Only this module (and `tables.py`) knows SQL. The worker's claim uses
`SELECT ... FOR UPDATE SKIP LOCKED` on PostgreSQL, so that several privacy instances on
one database never claim the same step; SQLite has no row locks, and the local default
runs one worker.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from services.runtime.db import session_factory

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def utcnow() -> datetime:
    """Now, as the naive UTC the tables store."""
    return datetime.now(UTC).replace(tzinfo=None)


class PrivacyStore:
    """The privacy service's tables behind the queries its domain uses."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessions = session_factory(engine)

    @property
    def postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"
