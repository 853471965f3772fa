"""Ledger benchmark: `python -m bench.ledger [--seconds S] [--concurrency C]`.

Starts the real billing service (`python -m services.billing`) on a fresh PostgreSQL
database (GATEMESH_TEST_PG, default postgresql://postgres@127.0.0.1:5432) and measures over
gRPC, with the service token, as the proxy calls it:
1. hold + settle round trips (two sequential RPCs, each its own transaction) per second and
   their latency at concurrency 64, spread over 64 accounts and on one hot account;
2. single holds per second at concurrency 64;
3. in rounds (the median is printed, with the slowest and fastest round: a single round
   of a few seconds moves with the machine's noise), holds placed per second through
   `HoldBatch`, then usage records written per second through `SettleBatch` (settles of
   many holds committed in one transaction; a result is returned only after the commit,
   so no acknowledged settle can be lost), against one billing instance and then against
   two (`--instances`): the second runs without background jobs
   (`GATEMESH_RUN_BACKGROUND=false`) and the client spreads batches over both round-robin,
   as every Gatemesh client does when a service's address lists several instances.
Prints Markdown tables; the round trips also the billing process's CPU per operation.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

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


def start_billing(database_url: str, port: int, log: Path, background: bool = True) -> subprocess.Popen[bytes]:
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
    env["GATEMESH_RUN_BACKGROUND"] = "true" if background else "false"
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


async def single_holds(stub: billing_pb2_grpc.BillingServiceStub, accounts: list[str], total: int) -> float:
    """Place `total` holds with single Hold calls at concurrency 64; returns the seconds taken."""
    sem = asyncio.Semaphore(64)

    async def hold(i: int) -> None:
        async with sem:
            request = billing_pb2.HoldRequest(
                account_id=accounts[i % len(accounts)], amount_micros=10_000, idempotency_key=f"single-{i}"
            )
            await stub.Hold(request, metadata=AUTH)

    started = time.perf_counter()
    await asyncio.gather(*(hold(i) for i in range(total)))
    return time.perf_counter() - started


async def in_batches(chunks: list[list[Any]], call: Callable[[list[Any]], Awaitable[Any]], in_flight: int) -> float:
    """Run `call` over the chunks, `in_flight` at a time; returns the seconds taken."""
    queue: asyncio.Queue[list[Any]] = asyncio.Queue()
    for chunk in chunks:
        queue.put_nowait(chunk)

    async def worker() -> None:
        while not queue.empty():
            await call(queue.get_nowait())

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return time.perf_counter() - started


async def batch_round(
    stub: billing_pb2_grpc.BillingServiceStub, accounts: list[str], total: int, size: int, in_flight: int, tag: str
) -> tuple[float, float, int]:
    """Place `total` holds with HoldBatch, then settle them all with SettleBatch, `size` per
    batch and `in_flight` batches at a time; returns (hold seconds, settle seconds, settled)."""
    holds: list[str] = []
    settled = 0

    async def hold(chunk: list[int]) -> None:
        items = [
            billing_pb2.HoldRequest(account_id=accounts[i % len(accounts)], amount_micros=10_000,
                                    idempotency_key=f"{tag}-h{i}")
            for i in chunk
        ]  # fmt: skip
        reply = await stub.HoldBatch(billing_pb2.HoldBatchRequest(items=items), metadata=AUTH, timeout=120)
        holds.extend(item.result.hold_id for item in reply.items if not item.error_code)

    async def settle(chunk: list[str]) -> None:
        nonlocal settled
        items = [billing_pb2.SettleRequest(hold_id=h, usage=USAGE, idempotency_key=f"{tag}-s{h}") for h in chunk]
        reply = await stub.SettleBatch(billing_pb2.SettleBatchRequest(items=items), metadata=AUTH, timeout=120)
        settled += sum(1 for item in reply.items if not item.error_code)

    numbers = list(range(total))
    hold_s = await in_batches([numbers[i : i + size] for i in range(0, total, size)], hold, in_flight)
    settle_s = await in_batches([holds[i : i + size] for i in range(0, len(holds), size)], settle, in_flight)
    return hold_s, settle_s, settled


async def round_trip_table(stub: billing_pb2_grpc.BillingServiceStub, pid: int, o: argparse.Namespace) -> float:
    """Hold+settle round trips on 64 accounts and on one; prints the table, returns the first rate."""
    spread = [f"bench-{i}" for i in range(64)]
    await round_trips(stub, spread, o.concurrency, 2.0, "warm")
    rows = []
    for name, accounts in (("hold+settle, 64 accounts", spread), ("hold+settle, one hot account", ["bench-hot"])):
        cpu0 = process_cpu_seconds([pid])
        latencies, wall = await round_trips(stub, accounts, o.concurrency, o.seconds, name[-12:])
        cpu = process_cpu_seconds([pid]) - cpu0
        result = Result(name, o.concurrency, latencies, wall, cpu * 1000 / max(1, len(latencies)))
        rows.append((name, o.concurrency, len(latencies), result.rps, result.p50_ms, result.p99_ms,
                     result.cpu_ms_per_request))  # fmt: skip
    print_table(
        f"Billing hold+settle round trips over gRPC on PostgreSQL ({o.seconds:.0f} s each)",
        ["scenario", "concurrency", "round trips", "per second", "p50 ms", "p99 ms", "billing CPU ms/op"],
        rows,
    )
    return float(rows[0][3])


async def batch_rounds(target: str, pids: list[int], o: argparse.Namespace, tag: str) -> list[tuple[Any, ...]]:
    """`o.batch_rounds` rounds of HoldBatch then SettleBatch against `target` (one instance, or
    several spread round-robin); rows of (path, median, slowest, fastest, billing CPU ms/event)."""
    options = [("grpc.lb_policy_name", "round_robin")]
    spread = [f"bench-{i}" for i in range(64)]
    rounds = []
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = billing_pb2_grpc.BillingServiceStub(channel)
        for r in range(o.batch_rounds):
            cpu0 = process_cpu_seconds(pids)
            hold_s, settle_s, settled = await batch_round(
                stub, spread, o.batch_total, o.batch_size, o.batches_in_flight, f"{tag}{r}"
            )
            cpu = (process_cpu_seconds(pids) - cpu0) * 1000 / (o.batch_total + settled)
            rounds.append((o.batch_total / hold_s, settled / settle_s, cpu))
            print(f"{tag} round {r + 1}: HoldBatch {rounds[-1][0]:,.0f}/s, SettleBatch {rounds[-1][1]:,.0f}/s")
    per_batch = f"{o.batch_size} per batch, {o.batches_in_flight} in flight, {len(pids)} billing instance(s)"
    holds, settles = sorted(r[0] for r in rounds), sorted(r[1] for r in rounds)
    cpu = sorted(r[2] for r in rounds)[len(rounds) // 2]
    middle = len(rounds) // 2
    return [
        (f"HoldBatch, {per_batch}", holds[middle], holds[0], holds[-1], cpu),
        (f"SettleBatch, {per_batch}", settles[middle], settles[0], settles[-1], cpu),
    ]


async def main(o: argparse.Namespace) -> None:
    url = await create_database("bench_ledger")
    logs = Path(tempfile.mkdtemp(prefix="gm-bench-"))
    ports = [free_port() for _ in range(max(o.instances))]
    processes = [start_billing(url, ports[0], logs / "billing-0.log")]
    try:
        await asyncio.to_thread(wait_healthy, f"127.0.0.1:{ports[0]}", processes[0])
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ports[0]}") as channel:
            stub = billing_pb2_grpc.BillingServiceStub(channel)
            await fund(stub, [*(f"bench-{i}" for i in range(64)), "bench-hot"])
            single_settle = await round_trip_table(stub, processes[0].pid, o)
            hold_s = await single_holds(stub, [f"bench-{i}" for i in range(64)], o.holds_total)
        rows: list[tuple[Any, ...]] = [("Hold, single calls, concurrency 64", o.holds_total / hold_s, "", "", "")]
        for count in sorted(o.instances):
            while len(processes) < count:  # an extra instance answers calls only: no background jobs
                index = len(processes)
                extra = start_billing(url, ports[index], logs / f"billing-{index}.log", background=False)
                processes.append(extra)
                await asyncio.to_thread(wait_healthy, f"127.0.0.1:{ports[index]}", extra)
            target = "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in ports[:count])
            rows += await batch_rounds(target, [p.pid for p in processes], o, f"x{count}-")
        rows.append(("single Settle (from round trips above)", single_settle, "", "", ""))
        print_table(
            f"Holds and usage records written per second ({o.batch_rounds} rounds of {o.batch_total:,} in batches)",
            ["path", "per second (median)", "slowest round", "fastest round", "billing CPU ms/event"],
            rows,
        )
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=20)
        await drop_database(url)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--holds-total", type=int, default=10_000, help="single holds placed at concurrency 64")
    parser.add_argument("--batch-total", type=int, default=20_000, help="holds placed and settled per round")
    parser.add_argument("--batch-rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--batches-in-flight", type=int, default=4)
    parser.add_argument(
        "--instances", type=int, nargs="+", default=[1, 2], help="billing instances the batch rounds run against"
    )
    asyncio.run(main(parser.parse_args()))
