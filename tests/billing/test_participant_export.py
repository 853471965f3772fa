"""Billing's participant at the storage level: streamed export pages rendered by PostgreSQL
match the proto JSON mapping exactly, and an erasure leaves no row version of the subject
in the touched tables' heap pages (read with pageinspect), not only no query result."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from google.protobuf import json_format
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from gatemesh.billing.v1 import billing_pb2
from gatemesh.common.v1 import common_pb2
from gatemesh.privacy.v1 import participant_pb2
from services.billing import store
from services.billing.domain import Billing
from services.billing.participant import USAGE_JSON, BillingParticipant, usage_record, usage_values
from services.runtime.db import make_engine

from .conftest import SECRET

SUBJECT, OTHER = "acct_purge_subject", "acct_purge_other"
MESSAGE = "gatemesh.billing.v1.UsageRecord"
BASE = datetime(2026, 11, 1, 12, 0, 0)
# Edge values of the JSON mapping: defaults left out, int64 as strings, timestamps with 0, 3
# or 6 fraction digits, strings needing escapes (quote, backslash, newline, non-ASCII).
ROWS: list[dict[str, Any]] = [
    {"id": "u1", "key_id": "", "model": 'gm "quoted" \\ model', "provider": "", "input_tokens": 0,
     "output_tokens": 0, "cost_micros": 0, "shortfall_micros": 0, "status": "", "latency_ms": 0,
     "tokens_estimated": False, "created_at": BASE},
    {"id": "u2", "key_id": "key_1", "model": "gm-ünïcode\nline", "provider": "bench", "input_tokens": 2**40,
     "output_tokens": 7, "cost_micros": 123, "shortfall_micros": 5, "status": "ok", "latency_ms": 41,
     "tokens_estimated": True, "created_at": BASE + timedelta(microseconds=250_000)},
    {"id": "u3", "key_id": "key_1", "model": "gm-test", "provider": "bench", "input_tokens": 1, "output_tokens": 2,
     "cost_micros": 3, "shortfall_micros": 0, "status": "ok", "latency_ms": 1, "tokens_estimated": False,
     "created_at": BASE + timedelta(microseconds=250_001)},
]  # fmt: skip


async def add_usage(engine: AsyncEngine, account: str, rows: list[dict[str, Any]], prefix: str = "") -> None:
    usage = store.UsageRow.__table__  # type: ignore[attr-defined]
    async with engine.begin() as conn:
        await conn.execute(usage.insert(), [r | {"id": prefix + r["id"], "account_id": account} for r in rows])


async def stream(participant: BillingParticipant, account: str, page: int) -> list[Any]:
    request = participant_pb2.StreamExportSubjectRequest(
        subject=common_pb2.SubjectRef(account_id=account), page_size=page
    )
    return [p async for p in participant.StreamExportSubject(request, None)]


async def test_streamed_usage_pages_are_the_proto_json_mapping_P8_1(billing: Billing) -> None:
    """P8.1: the pages PostgreSQL renders (at most two rows a page, time slices by keyset)
    parse, in order, to exactly what json_format gives for each UsageRecord, as does the
    Python renderer SQLite uses."""
    await add_usage(billing.engine, SUBJECT, ROWS)
    await add_usage(billing.engine, OTHER, ROWS, prefix="o")
    pages = await stream(BillingParticipant(billing, SECRET), SUBJECT, page=2)
    assert all(not p.records for p in pages)  # the rendered form only
    counts = [p.record_counts[MESSAGE] for p in pages]
    assert sum(counts) == 3 and max(counts) <= 2 and {m for p in pages for m in p.record_counts} == {MESSAGE}
    exported = [r for p in pages for r in json.loads(b"[" + p.records_json + b"]")]
    async with billing.engine.connect() as conn:
        rows = await store.usage_export_rows(conn, SUBJECT, None, 10)
    mapped = [json_format.MessageToDict(usage_record(r), preserving_proto_field_name=True) for r in rows]
    expected = [{"message": MESSAGE, "data": data} for data in mapped]
    assert [e["data"]["usage_id"] for e in expected] == ["u1", "u2", "u3"]
    assert exported == expected
    assert USAGE_JSON.records(usage_values(r) for r in rows) == expected
    parsed = json_format.ParseDict(exported[1]["data"], billing_pb2.UsageRecord())
    assert parsed.input_tokens == 2**40 and parsed.created_at.nanos == 250_000_000


HEAP_ITEMS_WITH = """
SELECT count(*)
FROM generate_series(0, pg_relation_size(CAST(:t AS regclass)) / current_setting('block_size')::int - 1) AS p,
     heap_page_items(get_raw_page(CAST(:t AS text), p::int)) AS i
WHERE position(convert_to(:needle, 'UTF8') in i.t_data) > 0
"""


async def heap_versions(engine: AsyncEngine, needle: str) -> dict[str, int]:
    """Row versions (live or dead) holding `needle`, per touched table, read from the pages."""
    found = {}
    async with engine.begin() as conn:
        await conn.execute(text("CREATE EXTENSION IF NOT EXISTS pageinspect"))
        for table in store.TOUCHED_BY_ERASURE:
            n = (await conn.execute(text(HEAP_ITEMS_WITH), {"t": table, "needle": needle})).scalar_one()
            if n:
                found[table] = int(n)
    return found


async def test_erasure_purges_the_subjects_row_versions_from_the_heap_pages_P8_3(billing: Billing) -> None:
    """P8.3: after EraseSubject no heap page of a table it touched holds a version (dead or
    alive) of a row naming the subject; the reply says when and how it was purged. Another
    account's rows stay."""
    await add_usage(billing.engine, SUBJECT, ROWS)
    await add_usage(billing.engine, OTHER, ROWS, prefix="o")
    participant = BillingParticipant(billing, SECRET)
    erase = participant_pb2.EraseSubjectRequest(subject=common_pb2.SubjectRef(account_id=SUBJECT), request_id="r-1")
    assert (await heap_versions(billing.engine, SUBJECT)) == {"usage_records": 3}
    reply = await participant.EraseSubject(erase, None)
    assert {a.store: a.count for a in reply.actions}["billing.usage_records"] == 3
    assert reply.HasField("purged_at") and reply.purge.startswith("postgresql vacuum: usage_records")
    assert await heap_versions(billing.engine, SUBJECT) == {}
    assert await heap_versions(billing.engine, OTHER) == {"usage_records": 3}
    again = await participant.EraseSubject(erase, None)
    assert again.replayed and again.HasField("purged_at")


async def test_on_sqlite_pages_are_rendered_by_python_to_the_same_mapping(tmp_path, billing: Billing) -> None:
    """The same pages from billing on SQLite (rendered by `JsonRenderer`), and erasure there
    reports SQLite's secure_delete as its purge."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'billing.db'}")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(store.METADATA.create_all)
        await add_usage(engine, SUBJECT, ROWS)
        await add_usage(billing.engine, SUBJECT, ROWS)
        local = BillingParticipant(Billing(engine, billing.prices, SECRET), SECRET)
        on_sqlite = await stream(local, SUBJECT, page=2)
        on_postgres = await stream(BillingParticipant(billing, SECRET), SUBJECT, page=2)
        assert [p.record_counts[MESSAGE] for p in on_sqlite] == [2, 1]

        def parsed(pages: list[Any]) -> list[Any]:
            return [r for p in pages for r in json.loads(b"[" + p.records_json + b"]")]

        assert parsed(on_sqlite) == parsed(on_postgres) and len(parsed(on_sqlite)) == 3
        erase = participant_pb2.EraseSubjectRequest(subject=common_pb2.SubjectRef(account_id=SUBJECT), request_id="r")
        reply = await local.EraseSubject(erase, None)
        assert reply.purge.startswith("sqlite secure_delete") and reply.HasField("purged_at")
    finally:
        await engine.dispose()
