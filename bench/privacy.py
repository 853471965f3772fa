"""Export and erasure at scale: `python -m bench.privacy [--usage 1000000] [--others 10000]`.

The privacy issue's targets on a 2-core machine: an account with 1,000,000 usage records,
among 10,000 other accounts, exports in under 10 s and is erased, with the verification
pass, in under 30 s, and nobody else's data changes. This benchmark starts the real mesh
(auth, billing, proxy and privacy processes on fresh PostgreSQL databases, Redis, a fake
upstream), signs the subject up through auth, then bulk-loads the rest straight into the
services' tables with COPY (the services' own write paths would take hours for a million
rows, and loading is not what is measured): the other accounts in auth, the subject's
usage records and `--others-usage` records for each other account in billing, and (with
`--request-logs`) the matching proxy request logs. Then, as the subject would:

1. access: raise a self-service access request, wait until it completes (every
   participant's records streamed, paged, encrypted at rest), download the JSON export
   and count its usage records;
2. erasure: raise a self-service erasure and wait until it completes: the erasure phases
   (proxy, billing, auth; each participant vacuums the tables its erasure touched), the
   verification export from every participant, the signed certificate and the privacy
   service's own vacuum.

Before and after the erasure it fingerprints every other account's rows (count and an md5
over them, per table) and checks they are identical. The setup is timed but not judged.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc

from bench.stats import print_table
from gatemesh.auth.v1 import auth_pb2
from gatemesh.privacy.v1 import privacy_pb2
from tests.proxy.conftest import wait_port
from tests.support import ROOT, free_port

EXPORT_TARGET_S, ERASURE_TARGET_S = 10.0, 30.0
# How long one participant call and one request may take before the run gives up: far above the
# targets, so that a slow run still reports its figure instead of retrying a cut-off stream.
LIMIT_S = 3600
MODELS = ("gm-test", "gm-other", "gm-embed", "gm-fallback")
# The tables that hold per-account rows, with the column naming the account and a stable order.
FINGERPRINTED = {
    "auth": [("accounts", "account_id", "account_id"), ("policy_acceptances", "account_id", "account_id, version")],
    "billing": [("usage_records", "account_id", "id")],
    "proxy": [("request_log", "account_id", "request_id")],
}


def plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


# --- bulk load ---------------------------------------------------------------------------


def other_ids(count: int) -> list[str]:
    return [f"acct_bench{n:08d}" for n in range(count)]


def account_rows(ids: list[str], policy: str, at: datetime) -> Iterator[tuple[Any, ...]]:
    """auth.accounts rows: no usable password (nobody signs in as them)."""
    for n, account_id in enumerate(ids):
        yield (account_id, f"other{n}@bench.example", "", 1, 1, True, False, policy, at)


def usage_rows(account_id: str, count: int, end: datetime, prefix: str) -> Iterator[tuple[Any, ...]]:
    """billing.usage_records rows spread over the last 30 days (naive UTC, as stored)."""
    step = timedelta(days=30) / max(count, 1)
    for n in range(count):
        created = end - step * n
        yield (f"{prefix}{n:010d}", account_id, f"key_{prefix}", MODELS[n % 4], "bench",
               500 + n % 1000, 200 + n % 500, 1000 + n % 5000, 0, "ok", 40 + n % 200, False, created)  # fmt: skip


USAGE_COLUMNS = (
    "id", "account_id", "key_id", "model", "provider", "input_tokens", "output_tokens", "cost_micros",
    "shortfall_micros", "status", "latency_ms", "tokens_estimated", "created_at",
)  # fmt: skip
ACCOUNT_COLUMNS = (
    "account_id", "email", "password_hash", "role", "status", "age_attested", "analytics_opt_out",
    "accepted_policy_version", "created_at",
)  # fmt: skip


async def copy_rows(url: str, table: str, columns: tuple[str, ...], rows: Iterator[tuple[Any, ...]]) -> int:
    """COPY rows into a table in batches (bounded memory); returns rows written."""
    conn = await asyncpg.connect(plain(url))
    total = 0
    try:
        batch: list[tuple[Any, ...]] = []
        for row in rows:
            batch.append(row)
            if len(batch) == 100_000:
                await conn.copy_records_to_table(table, records=batch, columns=columns)
                total, batch = total + len(batch), []
        if batch:
            await conn.copy_records_to_table(table, records=batch, columns=columns)
            total += len(batch)
        await conn.execute(f"ANALYZE {table}")
    finally:
        await conn.close()
    return total


LOG_COLUMNS = (
    "request_id", "account_id", "key_id", "model", "provider", "status_code", "latency_ms", "created_at",
    "input_tokens", "output_tokens", "cost_micros", "outcome", "tokens_estimated", "endpoint", "stream",
)  # fmt: skip


def request_log_rows(
    columns: tuple[str, ...], account_id: str, count: int, end: datetime, prefix: str
) -> Iterator[tuple]:
    """proxy.request_log rows: metadata only (time, model, tokens), as the proxy stores them."""
    step = timedelta(days=30) / max(count, 1)
    for n in range(count):
        values = {
            "request_id": f"{prefix}{n:010d}", "account_id": account_id, "key_id": f"key_{prefix}",
            "model": MODELS[n % 4], "provider": "bench", "status_code": 200, "latency_ms": 40,
            "created_at": end - step * n, "input_tokens": 500, "output_tokens": 200, "cost_micros": 2600,
            "outcome": "ok", "tokens_estimated": False, "endpoint": "chat", "stream": False,
        }  # fmt: skip
        yield tuple(values.get(c) for c in columns)


@dataclass
class Loaded:
    others: int
    subject_usage: int
    other_usage: int
    request_logs: int
    seconds: float


async def load(
    databases: dict[str, str], subject: str, usage: int, others: int, others_usage: int, request_logs: bool
) -> Loaded:
    """Everything but the subject's account itself, with COPY."""
    start = time.perf_counter()
    end = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=1)
    ids = other_ids(others)
    await copy_rows(databases["auth"], "accounts", ACCOUNT_COLUMNS, account_rows(ids, "2026-11-01", end))
    billing = databases["billing"]
    subject_usage = await copy_rows(billing, "usage_records", USAGE_COLUMNS, usage_rows(subject, usage, end, "us_"))

    def others_rows(make: Callable[..., Iterator[tuple]], *head: Any) -> Iterator[tuple]:
        for n, account_id in enumerate(ids):
            yield from make(*head, account_id, others_usage, end, f"o{n:06d}_")

    other_usage = await copy_rows(billing, "usage_records", USAGE_COLUMNS, others_rows(usage_rows))
    logs = 0
    if request_logs:
        proxy, columns = databases["proxy"], LOG_COLUMNS
        logs = await copy_rows(proxy, "request_log", columns, request_log_rows(columns, subject, usage, end, "rs_"))
        logs += await copy_rows(proxy, "request_log", columns, others_rows(request_log_rows, columns))
    return Loaded(others, subject_usage, other_usage, logs, time.perf_counter() - start)


async def fingerprint(databases: dict[str, str], subject: str) -> dict[str, tuple[int, str]]:
    """(rows, md5 over the rows in a stable order) of every other account, per table."""
    found = {}
    for service, tables in FINGERPRINTED.items():
        conn = await asyncpg.connect(plain(databases[service]))
        try:
            for table, column, order in tables:
                sql = (
                    f"SELECT count(*) AS n, coalesce(md5(string_agg(t::text, ',' ORDER BY {order})), '') AS h "
                    f"FROM {table} t WHERE {column} <> $1"
                )
                row = await conn.fetchrow(sql, subject)
                found[f"{service}.{table}"] = (int(row["n"]), str(row["h"]))
        finally:
            await conn.close()
    return found


async def count_rows(url: str, table: str, subject: str) -> int:
    conn = await asyncpg.connect(plain(url))
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table} WHERE account_id = $1", subject))
    finally:
        await conn.close()


# --- the measured part -------------------------------------------------------------------


ACCESS, ERASURE = privacy_pb2.REQUEST_TYPE_ACCESS, privacy_pb2.REQUEST_TYPE_ERASURE
COMPLETED, ATTENTION = privacy_pb2.REQUEST_STATUS_COMPLETED, privacy_pb2.REQUEST_STATUS_NEEDS_ATTENTION


async def raise_and_wait(stub: Any, kind: int, session: Any, within: float) -> tuple[Any, float]:
    """Raise a self-service request and poll it until it completes (or needs attention).
    An erasure ends the subject's sessions midway: from then on staff (the operator) poll."""
    from tests.privacy.mesh import OPERATOR

    start = time.perf_counter()
    raised = await stub.CreateMyRequest(privacy_pb2.CreateMyRequestRequest(type=kind), metadata=session)
    request_id = raised.request.request_id
    while True:
        try:
            get = privacy_pb2.GetMyRequestRequest(request_id=request_id)
            request = (await stub.GetMyRequest(get, metadata=session)).request
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAUTHENTICATED:
                raise
            request = (
                await stub.GetRequest(privacy_pb2.GetRequestRequest(request_id=request_id), metadata=OPERATOR)
            ).request
        if request.status in (COMPLETED, ATTENTION):
            return request, time.perf_counter() - start
        if time.perf_counter() - start > within:
            raise SystemExit(f"request {request_id} did not finish within {within:.0f} s: {request}")
        await asyncio.sleep(0.05)


async def download(stub: Any, request_id: str, session: Any) -> tuple[int, int, float]:
    """(bytes, usage records, seconds) of the JSON export, counted as it streams."""
    start, size, usage, tail = time.perf_counter(), 0, 0, b""
    needle = b'"gatemesh.billing.v1.UsageRecord"'
    call = stub.DownloadMyExport(privacy_pb2.DownloadMyExportRequest(request_id=request_id), metadata=session)
    async for chunk in call:
        data = tail + chunk.data
        usage += data.count(needle)
        tail = data[-(len(needle) - 1) :]
        size += len(chunk.data)
    return size, usage, time.perf_counter() - start


def fake_upstream(stack: ExitStack, logs: Path) -> Callable[[str], str]:
    """The tests' fake model provider (the proxy needs one to start), one per mode."""
    started: dict[str, str] = {}

    def get(mode: str = "") -> str:
        if mode not in started:
            port = free_port()
            log = stack.enter_context((logs / f"upstream{mode or 'ok'}.log").open("wb"))
            args = [sys.executable, "-m", "tests.fake_upstream", "--port", str(port), "--mode", mode]
            process = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=log)
            stack.callback(process.wait, 10)
            stack.callback(process.terminate)
            wait_port(port, process)
            started[mode] = f"http://127.0.0.1:{port}/v1"
        return started[mode]

    return get


@dataclass
class Measured:
    loaded: Loaded
    access: Any
    export_s: float
    export_bytes: int
    exported_usage: int
    download_s: float
    erasure: Any
    erasure_s: float
    left: int
    changed: list[str]


def steps_table(request: Any) -> list[list[Any]]:
    """Each step's attempts and when it finished, seconds after the request was received."""
    received = request.received_at.ToDatetime()
    return [
        [s.participant, s.phase, s.attempts, s.last_error or "-",
         f"{(s.finished_at.ToDatetime() - received).total_seconds():.1f}" if s.HasField("finished_at") else "-"]
        for s in sorted(request.steps, key=lambda s: (s.order, s.participant))
    ]  # fmt: skip


def table(m: Measured, usage: int) -> list[list[Any]]:
    export_ok = m.access.status == COMPLETED and m.export_s < EXPORT_TARGET_S
    erase_ok = m.erasure.status == COMPLETED and m.left == 0 and m.erasure_s < ERASURE_TARGET_S
    loaded = m.loaded
    counts = f"{loaded.subject_usage:,} + {loaded.other_usage:,} usage, {loaded.request_logs:,} request logs"
    exported = f"{m.export_bytes / 1e6:.0f} MB, {m.exported_usage:,} usage records"
    return [
        ["setup: COPY bulk load (not judged)", f"{loaded.seconds:.1f}", "-", f"{counts}, {loaded.others:,} accounts"],
        ["access: raise to completed", f"{m.export_s:.1f}", f"< {EXPORT_TARGET_S:.0f}",
         "ok" if export_ok else "MISSED"],
        ["access: download the JSON export", f"{m.download_s:.1f}", "-",
         exported + ("" if m.exported_usage == usage else " (MISMATCH)")],
        ["erasure + verification + certificate", f"{m.erasure_s:.1f}", f"< {ERASURE_TARGET_S:.0f}",
         "ok" if erase_ok else f"MISSED (status {m.erasure.status}, {m.left} usage rows left)"],
        ["other accounts' rows after erasure", "-", "identical", "ok" if not m.changed else f"CHANGED: {m.changed}"],
    ]  # fmt: skip


async def run(usage: int, others: int, others_usage: int, request_logs: bool, tmp: Path) -> Measured:
    from tests.privacy.mesh import PASSWORD, POLICY, open_mesh
    from tests.privacy.mesh import PrivacyProcess as Process

    with ExitStack() as stack:
        pm = await open_mesh(stack, tmp, fake_upstream(stack, tmp))
        email = f"subject-{secrets.token_hex(4)}@bench.example"
        signup = auth_pb2.SignUpRequest(email=email, password=PASSWORD, age_attested=True)
        signup.accepted_policy_version = POLICY
        subject = (await pm.mesh.auth.SignUp(signup)).account.account_id
        session = await pm.session(email)
        print(f"loading {usage:,} usage records for the subject and {others:,} other accounts ...", flush=True)
        databases = pm.mesh.databases
        loaded = await load(databases, subject, usage, others, others_usage, request_logs)
        print(f"  loaded in {loaded.seconds:.1f} s; measuring ...", flush=True)
        address = pm.mesh.envs["auth"]["GATEMESH_PRIVACY_ADDR"]
        env = pm.privacy_env(address, GATEMESH_PRIVACY_CALL_TIMEOUT_S=str(LIMIT_S), GATEMESH_LOG_LEVEL="warning")
        instance = Process(env, address, tmp / "privacy.log").start()
        stack.callback(instance.stop)
        pm.instances.append(instance)
        stub = pm.stub()
        before = await fingerprint(databases, subject)
        access, export_s = await raise_and_wait(stub, ACCESS, session, LIMIT_S)
        size, exported, download_s = await download(stub, access.request_id, session)
        erasure, erasure_s = await raise_and_wait(stub, ERASURE, session, LIMIT_S)
        after = await fingerprint(databases, subject)
        left = await count_rows(databases["billing"], "usage_records", subject)
        changed = [k for k in before if before[k] != after.get(k)]
        return Measured(loaded, access, export_s, size, exported, download_s, erasure, erasure_s, left, changed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--usage", type=int, default=1_000_000, help="the subject's usage records")
    parser.add_argument("--others", type=int, default=10_000, help="other accounts")
    parser.add_argument("--others-usage", type=int, default=10, help="usage records of each other account")
    parser.add_argument("--request-logs", action="store_true", help="also load matching proxy request logs")
    parser.add_argument("--tmp", default="", help="directory for logs (default: a new one under /tmp)")
    args = parser.parse_args()
    tmp = Path(args.tmp or f"/tmp/gatemesh-bench-privacy-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    measured = asyncio.run(run(args.usage, args.others, args.others_usage, args.request_logs, tmp))
    print_table(
        f"Privacy requests on PostgreSQL: one account with {args.usage:,} usage records among {args.others:,}",
        ["phase", "seconds", "target", "result"],
        table(measured, args.usage),
    )
    for name, request in (("access", measured.access), ("erasure", measured.erasure)):
        headers = ["participant", "phase", "attempts", "last error", "finished at s"]
        print_table(f"Steps of the {name} request", headers, steps_table(request))


if __name__ == "__main__":
    main()
