"""The privacy benchmark's harness at smoke size (the benchmark itself never runs in the
suite): the COPY loader fills the services' real schemas, and the check that other
accounts are untouched notices a change to one of their rows and ignores the subject's."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from bench import privacy
from services.runtime.db import make_engine, migrate
from tests.support import ROOT, create_database, drop_database

SUBJECT = "acct_subject"


async def migrated(service: str) -> str:
    url = await create_database(f"bench_{service}")
    engine = make_engine(url)
    try:
        await migrate(engine, ROOT / "services" / service / "migrations", service)
    finally:
        await engine.dispose()
    return url


async def execute(url: str, sql: str, *args: object) -> None:
    conn = await asyncpg.connect(privacy.plain(url))
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def test_loader_fills_the_schemas_and_the_fingerprint_sees_others_only(tmp_path: Path) -> None:
    databases = {name: await migrated(name) for name in ("auth", "billing", "proxy")}
    try:
        loaded = await privacy.load(databases, SUBJECT, usage=50, others=4, others_usage=3, request_logs=True)
        assert (loaded.subject_usage, loaded.other_usage, loaded.request_logs) == (50, 12, 62)
        assert await privacy.count_rows(databases["billing"], "usage_records", SUBJECT) == 50
        before = await privacy.fingerprint(databases, SUBJECT)
        assert before["billing.usage_records"][0] == 12 and before["auth.accounts"][0] == 4

        await execute(databases["billing"], "DELETE FROM usage_records WHERE account_id = $1", SUBJECT)
        assert await privacy.fingerprint(databases, SUBJECT) == before

        await execute(databases["billing"], "UPDATE usage_records SET cost_micros = 1 WHERE id = 'o000002_0000000001'")
        after = await privacy.fingerprint(databases, SUBJECT)
        assert [k for k in before if before[k] != after[k]] == ["billing.usage_records"]
    finally:
        for url in databases.values():
            await drop_database(url)
