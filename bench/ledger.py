"""Ledger benchmark: `python -m bench.ledger [--seconds S] [--concurrency C]`.

Starts the real billing service (`python -m services.billing`) on a fresh PostgreSQL
database (GATEMESH_TEST_PG, default postgresql://postgres@127.0.0.1:5432) and measures over
gRPC, with the service token, as the proxy calls it:
1. hold + settle round trips (two sequential RPCs, each its own transaction) per second and
   their latency at concurrency 64, spread over 64 accounts and on one hot account;
2. usage records written per second through `SettleBatch` (settles of many holds committed
   in one transaction; a result is returned only after the commit, so no acknowledged
   settle can be lost).
Prints Markdown tables; also the billing process's CPU per operation.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from bench.stats import Result, print_table, process_cpu_seconds
from gatemesh.billing.v1 import billing_pb2, billing_pb2_grpc
from services.runtime.access import SERVICE_TOKEN_HEADER
from tests.support import ROOT, create_database, drop_database, free_port, wait_healthy

SERVICE_TOKEN = "bench-service-token"
ADMIN_TOKEN = "bench-admin-token"
PRICES = '{"gpt-4o-mini": {"input_per_mtok_usd": 0.15, "output_per_mtok_usd": 0.60}}'
AUTH = ((SERVICE_TOKEN_HEADER, SERVICE_TOKEN),)
ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
USAGE = billing_pb2.Usage(model="gpt-4o-mini", provider="bench", input_tokens=500, output_tokens=200, latency_ms=42)


def start_billing(database_url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "GATEMESH_BILLING_DATABASE_URL": database_url,
        "GATEMESH_LISTEN": f"127.0.0.1:{port}",
        "GATEMESH_SERVICE_TOKEN": SERVICE_TOKEN,
        "GATEMESH_ADMIN_TOKEN": ADMIN_TOKEN,
        "GATEMESH_KEY_HMAC_SECRET": "bench-secret",
        "GATEMESH_PRICES": PRICES,
        "GATEMESH_BILLING_DB_POOL_SIZE": "32",
        "GATEMESH_LOG_LEVEL": "WARNING",
        "GATEMESH_DATA_DIR": tempfile.mkdtemp(prefix="gm-bench-"),
        "OTEL_SDK_DISABLED": "true",
    }
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "services.billing"], env=env, stdout=out, stderr=out, cwd=ROOT)


async def fund(stub: billing_pb2_grpc.BillingServiceStub, accounts: list[str]) -> None:
    for account in accounts:
        request = billing_pb2.GrantCreditsRequest(
            account_id=account, amount_micros=10**12, idempotency_key=f"fund-{account}"
        )
        await stub.GrantCredits(request, metadata=ADMIN)


async def round_trips(
    stub: billing_pb2_grpc.BillingServiceStub, accounts: list[str], concurrency: int, seconds: float, tag: str
) -> tuple[list[float], float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(n: int) -> None:
        i = 0
        while time.perf_counter() < deadline:
            key = f"{tag}-{n}-{i}"
            i += 1
            start = time.perf_counter()
            hold = await stub.Hold(
                billing_pb2.HoldRequest(
                    account_id=accounts[n % len(accounts)], amount_micros=10_000, idempotency_key=key
                ),
                metadata=AUTH,
            )
            await stub.Settle(
                billing_pb2.SettleRequest(hold_id=hold.hold_id, usage=USAGE, idempotency_key=key), metadata=AUTH
            )
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return latencies, time.perf_counter() - start


async def batched_settles(
    stub: billing_pb2_grpc.BillingServiceStub, accounts: list[str], total: int, batch: int, concurrency: int
) -> tuple[int, float, float]:
    """Place `total` holds, then settle them all in batches; returns (settled, settle seconds, hold seconds)."""
    holds: list[str] = []
    sem = asyncio.Semaphore(64)

    async def hold(i: int) -> None:
        async with sem:
            reply = await stub.Hold(
                billing_pb2.HoldRequest(
                    account_id=accounts[i % len(accounts)], amount_micros=10_000, idempotency_key=f"b-{i}"
                ),
                metadata=AUTH,
            )
            holds.append(reply.hold_id)

    started = time.perf_counter()
    await asyncio.gather(*(hold(i) for i in range(total)))
    hold_s = time.perf_counter() - started
    chunks = [holds[i : i + batch] for i in range(0, len(holds), batch)]
    queue: asyncio.Queue[list[str]] = asyncio.Queue()
    for chunk in chunks:
        queue.put_nowait(chunk)
    settled = 0

    async def settler() -> None:
        nonlocal settled
        while not queue.empty():
            chunk = queue.get_nowait()
            items = [billing_pb2.SettleRequest(hold_id=h, usage=USAGE, idempotency_key=f"bs-{h}") for h in chunk]
            reply = await stub.SettleBatch(billing_pb2.SettleBatchRequest(items=items), metadata=AUTH, timeout=120)
            settled += sum(1 for item in reply.items if not item.error_code)

    started = time.perf_counter()
    await asyncio.gather(*(settler() for _ in range(concurrency)))
    return settled, time.perf_counter() - started, hold_s


async def main(seconds: float, concurrency: int, batch_total: int, batch_size: int, in_flight: int) -> None:
    url = await create_database("bench_ledger")
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="gm-bench-")) / "billing.log"
    process = start_billing(url, port, log)
    try:
        await asyncio.to_thread(wait_healthy, f"127.0.0.1:{port}", process)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = billing_pb2_grpc.BillingServiceStub(channel)
            spread = [f"bench-{i}" for i in range(64)]
            await fund(stub, [*spread, "bench-hot"])
            await round_trips(stub, spread, concurrency, 2.0, "warm")
            rows = []
            for name, accounts in (
                ("hold+settle, 64 accounts", spread),
                ("hold+settle, one hot account", ["bench-hot"]),
            ):
                cpu0 = process_cpu_seconds([process.pid])
                latencies, wall = await round_trips(stub, accounts, concurrency, seconds, name[-12:])
                cpu = process_cpu_seconds([process.pid]) - cpu0
                result = Result(name, concurrency, latencies, wall, cpu * 1000 / max(1, len(latencies)))
                rows.append((name, concurrency, len(latencies), result.rps, result.p50_ms, result.p99_ms,
                             result.cpu_ms_per_request))  # fmt: skip
            print_table(
                f"Billing hold+settle round trips over gRPC on PostgreSQL ({seconds:.0f} s each)",
                ["scenario", "concurrency", "round trips", "per second", "p50 ms", "p99 ms", "billing CPU ms/op"],
                rows,
            )
            cpu0 = process_cpu_seconds([process.pid])
            settled, settle_s, hold_s = await batched_settles(stub, spread, batch_total, batch_size, in_flight)
            cpu = process_cpu_seconds([process.pid]) - cpu0
            print_table(
                "Usage records written (settles) per second",
                ["path", "events", "seconds", "per second"],
                [
                    ("Hold alone, concurrency 64 (setup for the batch)", batch_total, hold_s, batch_total / hold_s),
                    (
                        f"SettleBatch, {batch_size} per batch, {in_flight} in flight",
                        settled,
                        settle_s,
                        settled / settle_s,
                    ),
                    ("single Settle (from round trips above)", "", "", rows[0][3]),
                ],
            )
            print(f"\nbilling CPU over the batch phase: {cpu:.1f} s for {batch_total} holds + {settled} settles")
    finally:
        process.terminate()
        process.wait(timeout=20)
        await drop_database(url)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--batch-total", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--batches-in-flight", type=int, default=2)
    o = parser.parse_args()
    asyncio.run(main(o.seconds, o.concurrency, o.batch_total, o.batch_size, o.batches_in_flight))
