"""The policy store on the local default, SQLite (PostgreSQL runs in test_policy.py): a
version is stored once, and the outbox takes each (version, account) once (P10.2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.privacy.policy import PolicyVersion
from services.privacy.policy_store import PolicyVersions
from services.privacy.store import MIGRATIONS
from services.runtime.db import make_engine, migrate

NOW = datetime(2026, 12, 2, 12, 30, 15, 123456, tzinfo=UTC)


async def test_versions_and_outbox_are_idempotent_on_sqlite_P10_2(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'privacy.db'}")
    try:
        await migrate(engine, MIGRATIONS, "privacy")
        store = PolicyVersions(engine)
        version = PolicyVersion("2026-12-15", NOW + timedelta(days=13), "summary", NOW, "operator")
        assert await store.add_version(version) is True
        assert await store.add_version(version) is False
        assert await store.add_notifications("2026-12-15", ["acct_a", "acct_b", "acct_c"], NOW) == 3
        assert await store.add_notifications("2026-12-15", ["acct_b", "acct_c", "acct_d"], NOW) == 1
        assert await store.unnotified() == ["2026-12-15"]
        await store.mark_notified("2026-12-15", NOW)
        stored = await store.version("2026-12-15")
        assert stored is not None and stored.notified == 4 and stored.notified_at == NOW
        assert stored.effective_at == version.effective_at  # aware UTC in, aware UTC out, to the microsecond
        assert await store.unnotified() == []
    finally:
        await engine.dispose()
