"""The proxy's own tables: request metadata (never content, P3.2) and erasure receipts.

`request_log` mirrors `gatemesh.proxy.v1.RequestLogRecord`: time, account, key, model,
provider, tokens, cost, status, latency (P1.4). Rows are written by `RequestLogWriter`,
a background task that inserts buffered rows in batches, so the hot path never waits for
a disk. When the buffer is full, new rows are dropped and counted (billing's usage records
remain the system of record for money). `erasures` makes erasure idempotent per request id.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from sqlalchemy import BigInteger, Index, delete, insert, select, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import Field, SQLModel

from services.runtime.db import insert_rows
from services.runtime.faults import again_if_connection_lost

from .model import LogEntry

log = logging.getLogger("gatemesh.proxy.store")

metadata = SQLModel.metadata


class RequestLogRow(SQLModel, table=True):
    """One call's metadata."""

    __tablename__ = "request_log"
    # An export pages through one account's rows in time order (StreamExportSubject).
    __table_args__ = (Index("ix_request_log_account_created", "account_id", "created_at", "request_id"),)

    request_id: str = Field(primary_key=True, max_length=64)
    account_id: str = Field(index=True, max_length=64)
    key_id: str = Field(max_length=64)
    model: str = Field(max_length=200)
    provider: str = Field(max_length=100)
    status_code: int
    latency_ms: int
    created_at: datetime = Field(index=True)
    input_tokens: int = Field(sa_type=BigInteger)
    output_tokens: int = Field(sa_type=BigInteger)
    cost_micros: int = Field(sa_type=BigInteger)
    outcome: str = Field(max_length=40)
    tokens_estimated: bool
    endpoint: str = Field(max_length=20)
    stream: bool


class ErasureRow(SQLModel, table=True):
    """The result of an erasure request, so that a repeat replays it."""

    __tablename__ = "erasures"

    request_id: str = Field(primary_key=True, max_length=100)
    deleted: int
    created_at: datetime


class RequestLogWriter:
    """Buffers log entries and inserts them in batches from a background task."""

    def __init__(self, engine: AsyncEngine, flush_s: float, batch: int, max_buffered: int) -> None:
        self._engine = engine
        self._flush_s = flush_s
        self._batch = batch
        self._max = max_buffered
        self._buffer: list[dict[str, object]] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self.dropped = 0

    def record(self, entry: LogEntry) -> None:
        if len(self._buffer) >= self._max:
            self.dropped += 1
            return
        self._buffer.append(dict(entry.__dict__))  # a flat copy (asdict deep-copies)
        if len(self._buffer) >= self._batch:
            self._wake.set()

    async def _insert(self, rows: list[dict[str, object]]) -> None:
        async with self._engine.begin() as connection:
            await insert_rows(connection, RequestLogRow, rows)

    async def flush(self) -> None:
        """Insert everything buffered so far."""
        async with self._lock:
            while self._buffer:
                rows, self._buffer = self._buffer[: self._batch], self._buffer[self._batch :]
                try:
                    await again_if_connection_lost(functools.partial(self._insert, rows))
                except Exception as error:  # parameters (account ids) must not reach the log
                    log.error("request log insert failed (%s); %d rows lost", type(error).__name__, len(rows))

    async def run(self) -> None:
        """Background job: flush every `flush_s`, or sooner when a batch is full."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._flush_s)
            self._wake.clear()
            await self.flush()


async def rows_of(engine: AsyncEngine, account_id: str) -> list[RequestLogRow]:
    async with engine.connect() as connection:
        result = await connection.execute(
            select(RequestLogRow).where(RequestLogRow.account_id == account_id).order_by(RequestLogRow.created_at)
        )
        return [RequestLogRow.model_validate(row._mapping) for row in result]


async def pages_of(engine: AsyncEngine, account_id: str, size: int) -> AsyncIterator[list[RequestLogRow]]:
    """The account's rows in pages of `size`, by (created_at, request_id) keyset: a page is
    one indexed range read however many rows come before it."""
    after: tuple[datetime, str] | None = None
    while True:
        query = select(RequestLogRow).where(RequestLogRow.account_id == account_id)
        if after is not None:
            query = query.where(tuple_(RequestLogRow.created_at, RequestLogRow.request_id) > after)
        query = query.order_by(RequestLogRow.created_at, RequestLogRow.request_id).limit(size)
        async with engine.connect() as connection:
            rows = [RequestLogRow.model_validate(row._mapping) for row in await connection.execute(query)]
        if not rows:
            return
        yield rows
        if len(rows) < size:
            return
        after = (rows[-1].created_at, rows[-1].request_id)


async def erase(engine: AsyncEngine, account_id: str, request_id: str) -> tuple[int, bool]:
    """Delete the account's rows once per request id: (deleted, replayed)."""
    async with engine.begin() as connection:
        done = (await connection.execute(select(ErasureRow.deleted).where(ErasureRow.request_id == request_id))).first()
        if done is not None:
            return int(done[0]), True
        result = await connection.execute(delete(RequestLogRow).where(RequestLogRow.account_id == account_id))
        deleted = int(result.rowcount or 0)
        now = datetime.now(UTC)
        await connection.execute(insert(ErasureRow).values(request_id=request_id, deleted=deleted, created_at=now))
        return deleted, False


async def sweep(engine: AsyncEngine, retention_days: int) -> int:
    """Delete request metadata older than the retention period (P5.2)."""
    cutoff = datetime.now(UTC) - timedelta(days=retention_days)
    async with engine.begin() as connection:
        result = await connection.execute(delete(RequestLogRow).where(RequestLogRow.created_at < cutoff))
        return int(result.rowcount or 0)
