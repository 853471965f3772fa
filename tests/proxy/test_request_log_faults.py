"""The request-log writer on PostgreSQL when the server ends its connection (a restart,
`pg_terminate_backend`): the batch is written on a new connection, not lost (found by
`tests/reliability/test_process_faults.py`: "request log insert failed; 9 rows lost")."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg

from services.proxy.__main__ import MIGRATIONS
from services.proxy.model import LogEntry
from services.proxy.store import RequestLogWriter, rows_of
from services.runtime.db import make_engine, migrate
from tests.support import PG_SERVER


def entry(request_id: str) -> LogEntry:
    return LogEntry(
        request_id=request_id,
        account_id="acct-faults",
        key_id="key-1",
        model="gm-test",
        provider="primary",
        status_code=200,
        latency_ms=5,
        created_at=datetime.now(UTC),
        input_tokens=3,
        output_tokens=4,
        cost_micros=38,
        outcome="ok",
        tokens_estimated=False,
        endpoint="chat",
        stream=False,
    )


async def terminate_all(database: str) -> int:
    connection = await asyncpg.connect(f"{PG_SERVER}/postgres")
    try:
        rows = await connection.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
    finally:
        await connection.close()
    return len(rows)


async def test_a_batch_whose_connection_was_terminated_is_written_on_a_new_one(
    pg_database: Callable[[str], Awaitable[str]],
) -> None:
    url = await pg_database("proxy_log_faults")
    engine = make_engine(url, pool_size=1, max_overflow=0)
    try:
        await migrate(engine, MIGRATIONS, "proxy")
        writer = RequestLogWriter(engine, flush_s=60, batch=100, max_buffered=1000)
        writer.record(entry("req-before"))
        await writer.flush()  # the pool now holds one connection, just used (not pinged again)
        assert await terminate_all(url.rsplit("/", 1)[1]) >= 1
        writer.record(entry("req-after"))
        await writer.flush()
        rows = await rows_of(engine, "acct-faults")
        assert sorted(row.request_id for row in rows) == ["req-after", "req-before"]
    finally:
        await engine.dispose()
