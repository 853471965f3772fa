"""Usage queries at scale: `python -m bench.usage_queries [--rows 10000000]`.

The billing issue asks for usage records indexed for 10 million rows. This benchmark makes
a fresh PostgreSQL database with billing's migrations, fills `usage_records` server-side
(`generate_series`, so Python is not the bottleneck) with `--rows` records over 12 months:
one heavy account with a tenth of them, the rest spread over `--accounts` accounts, 4
models and 4 keys per account; then ANALYZEs and times the queries the product makes,
through the real `Billing` domain methods: the usage listing (first page, a later page by
cursor, filtered by model and by key, a time range), the per-account daily statistics of a
dashboard (P2.4), and the cross-account aggregate (P7.3). Each query runs `--repeat` times;
the table shows the median and the slowest, and the plan's access path from EXPLAIN.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from bench.stats import print_table
from services.billing.domain import Billing, UsageQuery
from services.billing.prices import PriceTable
from services.runtime.db import make_engine, migrate
from tests.support import create_database, drop_database

MIGRATIONS = Path(__file__).resolve().parent.parent / "services" / "billing" / "migrations"
END = datetime(2026, 11, 30, tzinfo=UTC)
HEAVY = "acct-heavy"

FILL = """
INSERT INTO usage_records (id, account_id, key_id, model, provider, input_tokens, output_tokens,
                           cost_micros, shortfall_micros, status, latency_ms, tokens_estimated, created_at)
SELECT md5(i::text),
       CASE WHEN i % 10 = 0 THEN 'acct-heavy' ELSE 'acct-' || (i % $2) END,
       'key-' || (i % 4),
       (ARRAY['gpt-4o-mini', 'gpt-4o', 'claude-haiku', 'llama-3'])[1 + (i / 7) % 4],
       'bench', 500 + i % 1000, 200 + i % 500, 1000 + i % 5000, 0, 'ok', 40 + i % 200, false,
       $3::timestamp - make_interval(secs => (i::bigint * 31536000 / $1))
FROM generate_series($4::bigint, $5::bigint) AS i
"""


async def fill(url: str, rows: int, accounts: int) -> float:
    """Insert the rows in chunks (one transaction each); seconds taken."""
    start = time.perf_counter()
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        chunk = 1_000_000
        for first in range(1, rows + 1, chunk):
            last = min(rows, first + chunk - 1)
            await conn.execute(FILL, rows, accounts, END.replace(tzinfo=None), first, last)
            print(f"  {last:,} rows", flush=True)
        await conn.execute("ANALYZE usage_records")
    finally:
        await conn.close()
    return time.perf_counter() - start


async def timed(repeat: int, run: Callable[[], Awaitable[Any]]) -> tuple[float, float, int]:
    """(median ms, slowest ms, rows) over `repeat` runs after one warm-up."""
    result = await run()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = await run()
        samples.append((time.perf_counter() - start) * 1000)
    count = len(result.records) if hasattr(result, "records") else len(result)
    return statistics.median(samples), max(samples), count


async def access_path(url: str, sql: str) -> str:
    """The first scan node of the plan (e.g. 'Index Scan using ix_usage_account_created')."""
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {sql}"))
    finally:
        await conn.close()
    for line in plan.splitlines():
        text = line.strip().lstrip("-> ").strip()
        if "Scan" in text:
            return text.split("  (")[0]
    return plan.splitlines()[0]


def scenarios(billing: Billing, accounts: int) -> list[tuple[str, Callable[[], Awaitable[Any]], str]]:
    """(name, the domain call, the SQL whose plan is shown)."""
    month = END - timedelta(days=30)
    typical = f"acct-{accounts // 2 + 1}"

    async def later_page() -> Any:
        first = await billing.list_usage(UsageQuery(HEAVY, page_size=100))
        return await billing.list_usage(UsageQuery(HEAVY, page_size=100, page_token=first.next_page_token))

    heavy = f"SELECT * FROM usage_records WHERE account_id = '{HEAVY}'"
    newest = "ORDER BY created_at DESC, id DESC LIMIT 101"
    since = f"created_at >= '{month:%Y-%m-%d}'"
    return [
        ("list, heavy account, first page (100)", lambda: billing.list_usage(UsageQuery(HEAVY, page_size=100)),
         f"{heavy} {newest}"),
        ("list, heavy account, second page by cursor", later_page, f"{heavy} AND created_at < now() {newest}"),
        ("list, heavy account, one model", lambda: billing.list_usage(UsageQuery(HEAVY, model="gpt-4o", page_size=100)),
         f"{heavy} AND model = 'gpt-4o' {newest}"),
        ("list, heavy account, one key", lambda: billing.list_usage(UsageQuery(HEAVY, key_id="key-2", page_size=100)),
         f"{heavy} AND key_id = 'key-2' {newest}"),
        ("list, heavy account, a key it never used", lambda: billing.list_usage(UsageQuery(HEAVY, key_id="key-3")),
         f"{heavy} AND key_id = 'key-3' {newest}"),
        ("list, typical account, last 30 days", lambda: billing.list_usage(UsageQuery(typical, since=month)),
         f"SELECT * FROM usage_records WHERE account_id = '{typical}' AND {since} {newest}"),
        ("daily stats, typical account, 30 days", lambda: billing.usage_stats(typical, month, END),
         f"SELECT count(*) FROM usage_records WHERE account_id = '{typical}' AND {since}"),
        ("daily stats, heavy account, 30 days", lambda: billing.usage_stats(HEAVY, month, END),
         f"SELECT count(*) FROM usage_records WHERE account_id = '{HEAVY}' AND {since}"),
        ("aggregate, all accounts, 1 day", lambda: billing.aggregate_stats(END - timedelta(days=1), END),
         f"SELECT count(*) FROM usage_records WHERE created_at >= '{END - timedelta(days=1):%Y-%m-%d}'"),
        ("aggregate, all accounts, 30 days", lambda: billing.aggregate_stats(month, END),
         f"SELECT count(*) FROM usage_records WHERE {since}"),
    ]  # fmt: skip


async def main(rows: int, accounts: int, repeat: int, keep: bool) -> None:
    url = await create_database("usage_bench")
    engine = make_engine(url)
    try:
        await migrate(engine, MIGRATIONS, "billing")
        print(f"filling {rows:,} usage records ...", flush=True)
        seconds = await fill(url, rows, accounts)
        billing = Billing(engine, PriceTable.from_config({}), "bench", stats_min_accounts=3)
        table = []
        for name, run, sql in scenarios(billing, accounts):
            median, slowest, count = await timed(repeat, run)
            table.append([name, count, median, slowest, await access_path(url, sql)])
        print_table(
            f"Usage queries on {rows:,} records ({accounts:,} accounts + one with a tenth; filled in {seconds:.0f} s)",
            ["query", "rows out", "median ms", "slowest ms", "plan's scan"],
            table,
        )
    finally:
        await engine.dispose()
        if not keep:
            await drop_database(url)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    asyncio.run(main(args.rows, args.accounts, args.repeat, args.keep))
