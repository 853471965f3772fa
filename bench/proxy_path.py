"""The proxy's hot path, measured alone: where each request's CPU goes, process by process.

`python -m bench.proxy_path` starts the fake upstream (`tests.fake_upstream`), auth,
billing and proxy as real processes on PostgreSQL and Redis (the same mesh the proxy's
integration tests run, `tests.proxy.mesh.start_mesh`), makes paying users, and drives the
proxy over gRPC (generated stubs) from a load generator in a separate process, so the
generator's CPU is not counted. For JSON and streaming chat completions at concurrency 1,
16 and 64, with one API key or many (one per worker), it prints requests per second,
p50/p99 latency and the CPU milliseconds per request of every process (from /proc):
proxy, auth, billing, PostgreSQL, Redis, and the upstream apart (it is not the mesh).
This is the bench to profile the proxy under (`py-spy top --pid <proxy>`); the full
comparison with the edge and LiteLLM is `bench.gateway`.
Needs PostgreSQL (GATEMESH_TEST_PG) and Redis (GATEMESH_TEST_REDIS), as the tests do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.gateway import pids_named, process, wait_http
from bench.stats import Result, print_table, process_cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
CREDIT = 10**12
PROCESSES = ("proxy", "auth", "billing", "postgres", "redis", "upstream")


# ---------------------------------------------------------------- load generator (child process)


async def _worker(stub: Any, key: str, request: Any, stop: float) -> tuple[list[float], int]:
    import grpc

    metadata = (("authorization", f"Bearer {key}"),)
    latencies: list[float] = []
    errors = 0
    while time.perf_counter() < stop:
        start = time.perf_counter()
        try:
            async for _message in stub.ChatCompletions(request, metadata=metadata):
                pass
            latencies.append(time.perf_counter() - start)
        except grpc.aio.AioRpcError:
            errors += 1
    return latencies, errors


async def _run_load(spec: dict[str, Any]) -> dict[str, Any]:
    """Closed loop: `concurrency` workers (worker i uses key i mod keys) for `seconds`."""
    import grpc
    from google.api import httpbody_pb2

    from gatemesh.proxy.v1 import proxy_pb2_grpc
    from tests.proxy.mesh import chat_body

    body = chat_body(max_tokens=16, stream=spec["stream"])
    request = httpbody_pb2.HttpBody(content_type="application/json", data=json.dumps(body).encode())
    channel = grpc.aio.insecure_channel(spec["target"])
    stub = proxy_pb2_grpc.ProxyServiceStub(channel)
    keys = spec["keys"]

    def workers(stop: float) -> list[Any]:
        return [_worker(stub, keys[i % len(keys)], request, stop) for i in range(spec["concurrency"])]

    await asyncio.gather(*workers(time.perf_counter() + spec["warmup"]))
    print("warm", flush=True)  # the parent reads the CPU counters now
    sys.stdin.readline()
    start = time.perf_counter()
    results = await asyncio.gather(*workers(start + spec["seconds"]))
    wall = time.perf_counter() - start
    await channel.close()
    latencies = [value for found, _ in results for value in found]
    return {"latencies": latencies, "errors": sum(errors for _, errors in results), "wall": wall}


# ---------------------------------------------------------------- the mesh


def start(stack: ExitStack, tmp: Path) -> tuple[Any, dict[str, list[int]]]:
    """Upstream, databases, and the auth, billing and proxy processes."""
    from tests.proxy.mesh import start_mesh
    from tests.support import create_database, drop_database, free_port

    port = free_port()
    args = [sys.executable, "-m", "tests.fake_upstream", "--port", str(port)]
    upstream = stack.enter_context(process(args, tmp / "upstream.log"))
    wait_http(f"http://127.0.0.1:{port}/v1/models", upstream)
    databases = {name: asyncio.run(create_database(f"bench_{name}")) for name in ("auth", "billing", "proxy")}
    stack.callback(lambda: [asyncio.run(drop_database(url)) for url in databases.values()])
    os.environ.update(
        {
            "GATEMESH_AUTH_DEFAULT_RPM": "100000000",
            "GATEMESH_AUTH_DEFAULT_TPM": "100000000000",
            "OTEL_TRACES_EXPORTER": "none",
        }
    )
    url = f"http://127.0.0.1:{port}/v1"
    production = {"GATEMESH_PROXY_LOG_FLUSH_S": "1"}  # the tests flush every 0.1 s; production every 1 s
    mesh = start_mesh(stack, tmp, databases, lambda _mode: url, log_level="WARNING", proxy_env=production)
    pids = {name: [pid] for name, pid in mesh.pids.items()}
    pids["upstream"] = [upstream.pid]
    pids["postgres"] = pids_named("postgres")
    pids["redis"] = pids_named("redis-server")
    return mesh, pids


async def make_keys(mesh: Any, count: int) -> list[str]:
    keys = [(await mesh.user(credit_micros=CREDIT)).api_key for _ in range(count)]
    for channel in mesh.channels.values():
        await channel.close()
    mesh.channels.clear()
    return keys


def measure(address: str, keys: list[str], pids: dict[str, list[int]], spec: dict[str, Any]) -> dict[str, Any]:
    """One cell: run the generator, read every process's CPU around the measured window."""
    spec = {**spec, "target": address, "keys": keys}
    gen = subprocess.Popen(
        [sys.executable, "-m", "bench.proxy_path", "--loadgen", json.dumps(spec)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert gen.stdin is not None and gen.stdout is not None
    assert gen.stdout.readline().strip() == "warm"
    before = {name: process_cpu_seconds(found) for name, found in pids.items()}
    gen.stdin.write("go\n")
    gen.stdin.flush()
    data = json.loads(gen.stdout.readline())
    after = {name: process_cpu_seconds(found) for name, found in pids.items()}
    gen.wait()
    count = max(1, len(data["latencies"]))
    cpu = {name: (after[name] - before[name]) * 1000 / count for name in pids}
    result = Result("proxy", spec["concurrency"], data["latencies"], data["wall"], sum(cpu.values()))
    return {"result": result, "errors": data["errors"], "cpu": cpu}


def row(mode: str, keys: int, cell: dict[str, Any]) -> list[object]:
    result, cpu = cell["result"], cell["cpu"]
    mesh = sum(cpu[name] for name in PROCESSES if name != "upstream")
    per_process = [cpu[name] for name in PROCESSES]
    return [
        mode,
        keys,
        result.concurrency,
        result.rps,
        result.p50_ms,
        result.p99_ms,
        *per_process,
        mesh,
        cell["errors"],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loadgen", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--modes", default="json,stream")
    parser.add_argument("--keys", default="1,64", help="API keys (accounts) in use, e.g. 1,64")
    parser.add_argument("--workdir", help="keep logs here (default: a temporary directory)")
    parser.add_argument("--hold", action="store_true", help="keep the mesh up after the run (for profiling)")
    args = parser.parse_args()
    if args.loadgen:
        print(json.dumps(asyncio.run(_run_load(json.loads(args.loadgen)))), flush=True)
        return
    levels = [int(c) for c in args.concurrency.split(",")]
    key_counts = [int(k) for k in args.keys.split(",")]
    rows: list[list[object]] = []
    with ExitStack() as stack:
        if args.workdir:
            tmp = Path(args.workdir).resolve()
            tmp.mkdir(parents=True, exist_ok=True)
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gm-proxy-bench-")))
        mesh, pids = start(stack, tmp)
        keys = asyncio.run(make_keys(mesh, max(key_counts)))
        print(f"pids: {json.dumps({name: found for name, found in pids.items() if len(found) == 1})}", flush=True)
        for key_count in key_counts:
            for mode in args.modes.split(","):
                for concurrency in levels:
                    spec = {"stream": mode == "stream", "concurrency": concurrency}
                    spec |= {"seconds": args.seconds, "warmup": args.warmup}
                    cell = measure(mesh.proxy_addr, keys[:key_count], pids, spec)
                    rows.append(row(mode, key_count, cell))
                    print(" ".join(str(value) for value in rows[-1]), file=sys.stderr, flush=True)
        headers = ["mode", "keys", "c", "rps", "p50 ms", "p99 ms", *(f"{n} ms/req" for n in PROCESSES)]
        headers += ["mesh ms/req", "errors"]
        print_table("Proxy hot path over gRPC (CPU ms per request per process; mesh = all but upstream)", headers, rows)
        if args.hold:
            hold(tmp, mesh.proxy_addr, keys)


def hold(tmp: Path, address: str, keys: list[str]) -> None:
    """Keep the mesh up for profiling until SIGTERM or SIGINT; `<workdir>/mesh.json` says where."""
    (tmp / "mesh.json").write_text(json.dumps({"proxy": address, "keys": keys}))
    print(f"holding (mesh in {tmp / 'mesh.json'}); send SIGTERM to stop", flush=True)
    signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    signal.sigwait(signals)


if __name__ == "__main__":
    main()
