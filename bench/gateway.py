"""The gateway benchmark: what Gatemesh adds to a model call, next to a peer gateway.

`python -m bench.gateway` runs, on this machine and against the same local upstream
(`python -m tests.fake_upstream`, which is never the bottleneck):

- direct: the upstream itself;
- edge: Gatemesh through the REST edge (Envoy + proxy + auth + billing on PostgreSQL,
  Redis), with a real API key, every call held, settled and recorded;
- grpc: the same mesh, calling the proxy over gRPC (no Envoy);
- nometrics (not in the default set): a second mesh with `metrics_enabled=false`, both
  ways in (`gatemesh -metrics edge`, `gatemesh -metrics grpc`): the cost of the metrics,
  measured beside the mesh with every Prometheus endpoint on;
- twin (not in the default set): a second mesh identical to the first (`gatemesh twin
  edge`, `gatemesh twin grpc`): what two identical meshes differ by in one run, the floor
  under the nometrics and nocredit comparisons;
- nocredit (not in the default set): a second mesh with credit leases off
  (`gatemesh -credit edge`, `gatemesh -credit grpc`): every call holds synchronously;
- main edge, main grpc (`--baseline DIR`): the same two ways into the mesh of another
  checkout (the code before a change), in the same run, so before and after meet the same
  machine load;
- edge xN (`--proxies N`, default 2): the same mesh with N proxy processes behind one edge
  (round robin): each proxy holds its own key lease and rate share;
- floor: the floor of this design: the same Envoy transcoder in front of a bare `grpc.aio`
  relay with the proxy's HTTP client (`bench.floor_relay`: no auth, no billing);
- litellm: the LiteLLM proxy (`litellm[proxy]==1.100.0`, installed by this script into
  `bench/.litellm-venv`), offline, master key, no database (its key and spend tracking
  need Prisma engines that cannot be fetched here, so it does less work than Gatemesh);
- portkey: Portkey's open-source gateway (npm `@portkey-ai/gateway` 1.15.2 on Node.js,
  installed by this script into `bench/.portkey`), a pass-through with no keys and no
  billing: what routing alone costs in a compiled/JIT-run peer. JSON only: its streamed
  calls fail on Node.js 20 whatever the upstream (it appends its own headers to the
  upstream's fetch Response, whose headers are immutable there: `TypeError: immutable` in
  `updateHeaders`, also against a minimal SSE server), so its stream cells are left out.

For each: JSON and streaming chat completions at concurrency 1, 16 and 64 (closed loop),
reporting requests per second, p50/p99 latency of the whole response, and the CPU
milliseconds per request of the target's own processes (from /proc, every child
included). PostgreSQL and Redis CPU per request is shown apart (`infra`). The load comes
from a separate process (aiohttp or grpc.aio), so the generator's CPU is not counted.
Needs PostgreSQL (GATEMESH_TEST_PG) and Redis (GATEMESH_TEST_REDIS), as the tests do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.stats import Result, print_table, process_cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
NAN = float("nan")
LITELLM_VENV = ROOT / "bench" / ".litellm-venv"
LITELLM_VERSION = "1.100.0"
PORTKEY_DIR = ROOT / "bench" / ".portkey"
PORTKEY_VERSION = "1.15.2"
MODEL = "gm-bench"
MASTER_KEY = "sk-bench-master-key"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "say hello please"}], "max_tokens": 16}
# 1 micro-unit per input token and 2 per output token: the mesh bills every call.
PRICE = {"input_per_mtok_usd": 1, "output_per_mtok_usd": 2}


# ---------------------------------------------------------------- load generator (child process)


async def _http_worker(session: Any, url: str, headers: dict[str, str], payload: bytes, stop: float) -> tuple:
    import aiohttp

    latencies, errors = [], 0
    while time.perf_counter() < stop:
        start = time.perf_counter()
        try:
            async with session.post(url, data=payload, headers=headers) as reply:
                await reply.read()
                ok = reply.status == 200
        except aiohttp.ClientError:  # a target that drops connections under load: an error, not a crash
            ok = False
        if ok:
            latencies.append(time.perf_counter() - start)
        else:
            errors += 1
    return latencies, errors


async def _grpc_worker(stub: Any, metadata: list, request: Any, stop: float) -> tuple:
    import grpc

    latencies, errors = [], 0
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
    """Closed loop: `concurrency` workers until `seconds` have passed (after a warm-up)."""
    body = {**BODY, "stream": spec["stream"]}
    payload = json.dumps(body).encode()
    headers = {"content-type": "application/json", "authorization": f"Bearer {spec['key']}"}
    headers |= spec.get("headers", {})
    concurrency = spec["concurrency"]
    if spec["kind"] == "grpc":
        import grpc
        from google.api import httpbody_pb2

        from gatemesh.proxy.v1 import proxy_pb2_grpc

        channel = grpc.aio.insecure_channel(spec["target"])
        stub = proxy_pb2_grpc.ProxyServiceStub(channel)
        request = httpbody_pb2.HttpBody(content_type="application/json", data=payload)
        metadata = [("authorization", f"Bearer {spec['key']}")]

        def worker(stop: float) -> Any:
            return _grpc_worker(stub, metadata, request, stop)
    else:
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))
        url = f"{spec['target']}/chat/completions"

        def worker(stop: float) -> Any:
            return _http_worker(session, url, headers, payload, stop)

    await asyncio.gather(*(worker(time.perf_counter() + spec["warmup"]) for _ in range(concurrency)))
    print("warm", flush=True)  # the parent reads CPU counters now
    sys.stdin.readline()
    start = time.perf_counter()
    results = await asyncio.gather(*(worker(start + spec["seconds"]) for _ in range(concurrency)))
    wall = time.perf_counter() - start
    if spec["kind"] == "grpc":
        await channel.close()
    else:
        await session.close()
    latencies = [value for lat, _ in results for value in lat]
    return {"latencies": latencies, "errors": sum(err for _, err in results), "wall": wall}


def loadgen_main(spec_json: str) -> None:
    result = asyncio.run(_run_load(json.loads(spec_json)))
    print(json.dumps(result), flush=True)


# ---------------------------------------------------------------- processes


def descendants(root: int) -> list[int]:
    """`root` and every process below it, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):  # gone between the listing and the read
                continue
            children.setdefault(parent, []).append(int(entry))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def pids_named(*names: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() in names:
                        found.append(int(entry))
            except OSError:  # gone between the listing and the read
                continue
    return found


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer")


@contextmanager
def process(
    args: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=out, env=env, cwd=cwd, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@dataclass
class Target:
    name: str
    kind: str  # "http" or "grpc"
    address: str
    key: str
    root_pid: int
    infra: bool = False  # PostgreSQL and Redis work for it
    headers: dict[str, str] = field(default_factory=dict)  # sent with every call (the Portkey route)
    json_only: bool = False  # its stream cells are not measured
    extra_pids: list[int] = field(default_factory=list)  # its processes outside root_pid's tree
    rows: list[Row] = field(default_factory=list)


@dataclass
class Row:
    target: str
    stream: bool
    result: Result
    errors: int
    infra_ms: float | None
    by_process: dict[str, float] = field(default_factory=dict)  # CPU ms per request


def label(pid: int) -> str:
    """A short name for a target process: the service module, envoy, or the command."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = [part.decode(errors="replace") for part in f.read().split(b"\0") if part]
    except FileNotFoundError:
        return "gone"
    for arg in args:
        if arg.startswith("services."):
            return arg.removeprefix("services.")
    return Path(args[0]).name if args else "?"


def cpu_by_label(pids: list[int]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for pid in pids:
        name = label(pid)
        totals[name] = totals.get(name, 0.0) + process_cpu_seconds([pid])
    return totals


def measure(target: Target, stream: bool, concurrency: int, seconds: float, warmup: float) -> Row:
    spec = {"kind": target.kind, "target": target.address, "key": target.key, "stream": stream}
    spec["headers"] = target.headers
    spec |= {"concurrency": concurrency, "seconds": seconds, "warmup": warmup}
    gen = subprocess.Popen(
        [sys.executable, "-m", "bench.gateway", "--loadgen", json.dumps(spec)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert gen.stdin is not None and gen.stdout is not None
    assert gen.stdout.readline().strip() == "warm"
    pids = descendants(target.root_pid) + [p for extra in target.extra_pids for p in descendants(extra)]
    infra = pids_named("postgres", "redis-server")
    cpu0, infra0, split0 = process_cpu_seconds(pids), process_cpu_seconds(infra), cpu_by_label(pids)
    gen.stdin.write("go\n")
    gen.stdin.flush()
    data = json.loads(gen.stdout.readline())
    cpu = process_cpu_seconds(pids) - cpu0
    infra_cpu = process_cpu_seconds(infra) - infra0
    split = {name: value - split0.get(name, 0.0) for name, value in cpu_by_label(pids).items()}
    gen.wait()
    count = max(1, len(data["latencies"]))
    by_process = {name: value * 1000 / count for name, value in split.items()}
    result = Result(target.name, concurrency, data["latencies"], data["wall"], cpu * 1000 / count)
    infra_ms = infra_cpu * 1000 / count if target.infra else None
    return Row(target.name, stream, result, data["errors"], infra_ms, by_process)


# ---------------------------------------------------------------- the systems under test


def upstream(stack: ExitStack, tmp: Path) -> tuple[str, int]:
    from tests.support import free_port

    port = free_port()
    proc = stack.enter_context(
        process([sys.executable, "-m", "tests.fake_upstream", "--port", str(port)], tmp / "upstream.log")
    )
    wait_http(f"http://127.0.0.1:{port}/v1/models", proc)
    return f"http://127.0.0.1:{port}/v1", proc.pid


REDIS_DBS = {"": 13, "nometrics_": 12, "main_": 14, "nocredit_": 11, "twin_": 10}  # one Redis database per mesh


def gatemesh(
    stack: ExitStack,
    tmp: Path,
    upstream_url: str,
    code: Path | None = None,
    metrics: bool = True,
    credit: bool = True,
    twin: bool = False,
) -> tuple[Target, Target, dict[str, str]]:
    """`gatemesh up` on PostgreSQL and Redis, a paying user, the two ways in, and the
    mesh's environment (for more proxies). With `code`, the mesh runs that checkout's
    services (PYTHONPATH first: the same interpreter and dependencies, another version of
    the code), on its own databases, Redis database and data directory. Without `metrics`,
    every metric is switched off (`nometrics`: their cost, measured in the same run); without
    `credit`, credit leases are (`nocredit`: every call holds synchronously, as before them);
    a `twin` is the mesh again, unchanged (`twin`: the difference two identical meshes show in
    one run, the floor under any other comparison)."""
    from tests.support import REDIS_SERVER, create_database, drop_database, free_port

    tag = "main_" if code else "twin_" if twin else "nocredit_" if not credit else ("" if metrics else "nometrics_")
    databases = {name: asyncio.run(create_database(f"bench_{tag}{name}")) for name in ("auth", "billing", "proxy")}
    stack.callback(lambda: [asyncio.run(drop_database(url)) for url in databases.values()])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEMESH_", "OTEL_"))}
    env |= {f"GATEMESH_{name.upper()}_DATABASE_URL": url for name, url in databases.items()}
    env |= {f"GATEMESH_{name.upper()}_ADDR": f"127.0.0.1:{free_port()}" for name in ("auth", "billing", "proxy")}
    env |= {
        "GATEMESH_DATA_DIR": str(tmp / f"{tag}data"),
        "GATEMESH_REDIS_URL": f"{REDIS_SERVER}/{REDIS_DBS[tag]}",
        "GATEMESH_LOG_LEVEL": "WARNING",
        "GATEMESH_EDGE_PORT": str(free_port()),
        "GATEMESH_EDGE_SERVICES": json.dumps(["auth", "billing", "proxy"]),
        "GATEMESH_PRIVACY_ADDR": f"127.0.0.1:{free_port()}",
        "GATEMESH_PRICES": json.dumps({MODEL: PRICE}),
        "GATEMESH_PROVIDERS": json.dumps([{"name": "local", "base_url": upstream_url, "models": [MODEL]}]),
        "GATEMESH_AUTH_DEFAULT_RPM": "100000000",
        "GATEMESH_AUTH_DEFAULT_TPM": "100000000000",
        "OTEL_TRACES_EXPORTER": "none",
        "GATEMESH_METRICS_ENABLED": "true" if metrics else "false",
    }
    if not credit:
        env["GATEMESH_PROXY_CREDIT_LEASES"] = "false"
    if code:
        env["PYTHONPATH"] = f"{code}:{code / 'gen'}"
    log = tmp / f"{tag}up.log"
    # `gatemesh up`, with more patience for its children's health than its 60 s (a shared,
    # loaded machine can take longer to import and migrate)
    start = "import services.cli.up as up; up.START_TIMEOUT_S = 300; from services.cli.main import main; main()"
    up = stack.enter_context(process([sys.executable, "-c", start, "up"], log, env, code or ROOT))
    deadline = time.monotonic() + 600
    while "gatemesh is up" not in log.read_text(errors="replace"):
        if up.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("gatemesh up failed:\n" + log.read_text(errors="replace"))
        time.sleep(0.2)
    edge = f"http://127.0.0.1:{env['GATEMESH_EDGE_PORT']}"
    key = paying_key(edge, env)
    name = (
        "main" if code else "gatemesh twin" if twin else "gatemesh -credit" if not credit
        else ("gatemesh" if metrics else "gatemesh -metrics")
    )  # fmt: skip
    return (
        Target(f"{name} edge", "http", f"{edge}/v1", key, up.pid, infra=True),
        Target(f"{name} grpc", "grpc", env["GATEMESH_PROXY_ADDR"], key, up.pid, infra=True),
        env,
    )


def more_proxies(stack: ExitStack, tmp: Path, env: dict[str, str], edge: Target, count: int) -> Target:
    """`count` proxies (the mesh's own and count - 1 more processes on the same auth, billing,
    Redis and request log) behind a second edge that spreads calls over them (round robin):
    throughput, and every proxy holding its own leases and rate shares of the key."""
    from tests.support import free_port, wait_healthy

    extra = []
    for i in range(count - 1):
        address = f"127.0.0.1:{free_port()}"
        proxy_env = {**env, "GATEMESH_PROXY_ADDR": address}
        proc = stack.enter_context(
            process([sys.executable, "-m", "services.proxy"], tmp / f"proxy{i + 2}.log", proxy_env)
        )
        wait_healthy(address, proc)
        extra.append((address, proc.pid))
    port = free_port()
    edge_env = {
        **env,
        "GATEMESH_EDGE_PORT": str(port),
        "GATEMESH_EDGE_SERVICES": json.dumps(["proxy"]),
        "GATEMESH_EDGE_EXTRA_ENDPOINTS": json.dumps({"proxy": [address for address, _ in extra]}),
    }
    envoy = stack.enter_context(process([sys.executable, "-m", "services.edge"], tmp / "edge-multi.log", edge_env))
    wait_http(f"http://127.0.0.1:{port}/openapi.json", envoy)
    target = Target(f"gatemesh edge x{count}", "http", f"http://127.0.0.1:{port}/v1", edge.key, edge.root_pid, True)
    target.extra_pids = [envoy.pid, *(pid for _, pid in extra)]
    return target


def paying_key(edge: str, env: dict[str, str]) -> str:
    """A user signed up through the edge, with a key and plenty of credit."""
    import httpx

    from gatemesh.billing.v1 import billing_pb2, billing_pb2_grpc
    from services.runtime.clients import service_channel
    from services.runtime.settings import GatemeshSettings

    email, password = f"bench-{secrets.token_hex(4)}@example.com", "correct horse battery staple"
    signup = {"email": email, "password": password, "age_attested": True, "accepted_policy_version": "2026-11-01"}
    account = httpx.post(f"{edge}/api/v1/accounts", json=signup).json()["account"]
    session = httpx.post(f"{edge}/api/v1/sessions", json={"email": email, "password": password}).json()
    headers = {"authorization": f"Bearer {session['session_token']}"}
    key = httpx.post(f"{edge}/api/v1/keys", json={"name": "bench"}, headers=headers).json()["api_key"]

    async def grant() -> None:
        settings = GatemeshSettings(data_dir=Path(env["GATEMESH_DATA_DIR"]))
        async with service_channel(env["GATEMESH_BILLING_ADDR"], settings, settings.secret("admin_token")) as ch:
            request = billing_pb2.GrantCreditsRequest(
                account_id=account["account_id"], amount_micros=10**12, reason="bench", idempotency_key=email
            )
            await billing_pb2_grpc.BillingServiceStub(ch).GrantCredits(request)

    asyncio.run(grant())
    return key


def ensure_litellm() -> Path:
    binary = LITELLM_VENV / "bin" / "litellm"
    if not binary.exists():
        print(f"installing litellm[proxy]=={LITELLM_VERSION} into {LITELLM_VENV} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        pip = [str(LITELLM_VENV / "bin" / "pip"), "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"]
        subprocess.run(pip, check=True)
    return binary


def litellm(stack: ExitStack, tmp: Path, upstream_url: str, workers: int) -> Target:
    from tests.support import free_port

    binary = ensure_litellm()
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {"model": f"openai/{MODEL}", "api_base": upstream_url, "api_key": "x"},
            }
        ],
        "litellm_settings": {"telemetry": False, "drop_params": True},
        "general_settings": {"master_key": MASTER_KEY},
    }
    (tmp / "litellm.yaml").write_text(json.dumps(config))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "DATABASE_URL"))}
    env |= {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False", "LITELLM_LOG": "ERROR"}
    args = [str(binary), "--config", str(tmp / "litellm.yaml"), "--port", str(port), "--num_workers", str(workers)]
    proc = stack.enter_context(process(args, tmp / "litellm.log", env))
    wait_http(f"http://127.0.0.1:{port}/health/liveliness", proc)
    return Target(f"litellm ({workers}w)", "http", f"http://127.0.0.1:{port}/v1", MASTER_KEY, proc.pid)


def floor(stack: ExitStack, tmp: Path, upstream_url: str) -> Target:
    """Envoy's transcoder (the mesh's own edge config, proxy routes only) before `bench.floor_relay`."""
    from tests.support import free_port

    relay_port, edge_port = free_port(), free_port()
    relay_args = [sys.executable, "-m", "bench.floor_relay", "--port", str(relay_port), "--upstream", upstream_url]
    relay = stack.enter_context(process(relay_args, tmp / "floor-relay.log"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEMESH_", "OTEL_"))}
    env |= {
        "GATEMESH_DATA_DIR": str(tmp / "floor-data"),
        "GATEMESH_PROXY_ADDR": f"127.0.0.1:{relay_port}",
        "GATEMESH_EDGE_PORT": str(edge_port),
        "GATEMESH_EDGE_SERVICES": json.dumps(["proxy"]),
        "GATEMESH_LOG_LEVEL": "WARNING",
    }
    edge = stack.enter_context(process([sys.executable, "-m", "services.edge"], tmp / "floor-edge.log", env))
    wait_http(f"http://127.0.0.1:{edge_port}/openapi.json", edge)
    if relay.poll() is not None:
        raise RuntimeError("the floor relay exited:\n" + (tmp / "floor-relay.log").read_text(errors="replace"))
    target = Target("floor", "http", f"http://127.0.0.1:{edge_port}/v1", "none", edge.pid)
    target.extra_pids = [relay.pid]
    return target


def ensure_portkey() -> Path:
    script = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    if not script.exists():
        print(f"installing @portkey-ai/gateway@{PORTKEY_VERSION} into {PORTKEY_DIR} ...", file=sys.stderr)
        PORTKEY_DIR.mkdir(parents=True, exist_ok=True)
        npm = ["npm", "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(PORTKEY_DIR)]
        subprocess.run([*npm, f"@portkey-ai/gateway@{PORTKEY_VERSION}"], check=True)
    return script


def portkey(stack: ExitStack, tmp: Path, upstream_url: str) -> Target:
    from tests.support import free_port

    script, port = ensure_portkey(), free_port()
    proc = stack.enter_context(process(["node", str(script), f"--port={port}", "--headless"], tmp / "portkey.log"))
    wait_http(f"http://127.0.0.1:{port}/", proc)
    headers = {"x-portkey-provider": "openai", "x-portkey-custom-host": upstream_url}
    return Target("portkey", "http", f"http://127.0.0.1:{port}/v1", "none", proc.pid, headers=headers, json_only=True)


# ---------------------------------------------------------------- report


Cell = tuple[str, bool, int]  # target, stream, concurrency


def cell(row: Row) -> Cell:
    return row.target, row.stream, row.result.concurrency


def comparisons(rows: list[Row]) -> dict[Cell, tuple[float, ...]]:
    """Within one round, for each cell: added p50 and p99 over direct; requests per second,
    added p99 and CPU per request as ratios to LiteLLM's; p50 over the floor; requests per
    second as a ratio to Portkey's; all at the same mode and concurrency (nan where a side
    is missing)."""
    index = {cell(r): r for r in rows}
    peer_name = next((r.target for r in rows if r.target.startswith("litellm")), None)
    out = {}
    for row in rows:
        res, key = row.result, (row.stream, row.result.concurrency)
        direct = index.get(("direct", *key))
        peer = index.get((peer_name, *key)) if peer_name else None
        floor, portkey = index.get(("floor", *key)), index.get(("portkey", *key))
        added50 = res.p50_ms - direct.result.p50_ms if direct else NAN
        added99 = res.p99_ms - direct.result.p99_ms if direct else NAN
        peer99 = peer.result.p99_ms - direct.result.p99_ms if peer and direct else NAN
        peer_cpu = peer.result.cpu_ms_per_request if peer else None
        out[cell(row)] = (
            added50,
            added99,
            res.rps / peer.result.rps if peer and peer.result.rps else NAN,
            added99 / peer99 if peer99 > 0 else NAN,
            (res.cpu_ms_per_request or 0.0) / peer_cpu if peer_cpu else NAN,
            res.p50_ms - floor.result.p50_ms if floor else NAN,
            res.rps / portkey.result.rps if portkey and portkey.result.rps else NAN,
        )
    return out


def median_of(values: list[float]) -> float:
    found = [v for v in values if not math.isnan(v)]
    return statistics.median(found) if found else NAN


def report(rounds: list[list[Row]]) -> None:
    """One line per cell: the round with the median requests per second, and each ratio as
    the median over rounds of the ratio within a round (both sides measured back to back,
    so a machine that slows down between rounds moves both)."""
    per_round = [comparisons(rows) for rows in rounds]
    headers = ["target", "mode", "c", "rps", "p50 ms", "p99 ms", "added p50", "added p99", "cpu ms/req"]
    headers += ["infra ms/req", "errors", "rps x litellm", "added p99 / litellm", "cpu / litellm"]
    headers += ["p50 over floor", "rps x portkey"]
    if len(rounds) > 1:
        headers.append("rps min-max")
    table, middle_rows = [], []
    for key in [cell(row) for row in rounds[0]]:
        measured = sorted((row for rows in rounds for row in rows if cell(row) == key), key=lambda r: r.result.rps)
        row = measured[(len(measured) - 1) // 2]
        middle_rows.append(row)
        res = row.result
        medians = [median_of([found[key][i] for found in per_round if key in found]) for i in range(7)]
        line = [row.target, "stream" if row.stream else "json", res.concurrency, res.rps, res.p50_ms, res.p99_ms]
        line += [*medians[:2], res.cpu_ms_per_request or 0.0, row.infra_ms if row.infra_ms is not None else "-"]
        line += [sum(r.errors for r in measured), *medians[2:]]
        if len(rounds) > 1:
            line.append(f"{measured[0].result.rps:,.0f}-{measured[-1].result.rps:,.0f}")
        table.append(line)
    title = "Gateway benchmark (same machine, same fake upstream; added = over direct; ratios to LiteLLM"
    title += f", median of {len(rounds)} rounds)" if len(rounds) > 1 else ")"
    print_table(title, headers, table)
    names = sorted({name for row in middle_rows for name in row.by_process})
    split = []
    for row in middle_rows:
        mode = "stream" if row.stream else "json"
        split.append([row.target, mode, row.result.concurrency, *(row.by_process.get(n, 0.0) for n in names)])
    print_table("CPU ms per request by process (the median round)", ["target", "mode", "c", *names], split)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loadgen", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--targets", default="direct,floor,edge,grpc,litellm,portkey")
    parser.add_argument("--modes", default="json,stream")
    parser.add_argument("--litellm-workers", type=int, default=1)
    parser.add_argument(
        "--proxies", type=int, default=2, help="also measure the mesh with this many proxies behind one edge (1: not)"
    )
    parser.add_argument(
        "--baseline",
        help="a checkout of an earlier version (e.g. `git worktree add --detach DIR main`): its mesh is measured "
        "in the same run, cell by cell next to this one ('main edge', 'main grpc')",
    )
    parser.add_argument("--rounds", type=int, default=1, help="measure every cell this many times; report medians")
    parser.add_argument("--workdir", help="keep logs and configs here (default: a temporary directory)")
    args = parser.parse_args()
    if args.loadgen:
        loadgen_main(args.loadgen)
        return
    wanted = args.targets.split(",")
    levels = [int(c) for c in args.concurrency.split(",")]
    modes = [mode == "stream" for mode in args.modes.split(",")]
    rounds: list[list[Row]] = []
    with ExitStack() as stack:
        if args.workdir:
            tmp = Path(args.workdir).resolve()
            tmp.mkdir(parents=True, exist_ok=True)
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gm-bench-")))
        upstream_url, upstream_pid = upstream(stack, tmp)
        targets = [Target("direct", "http", upstream_url, "none", upstream_pid)] if "direct" in wanted else []
        if "edge" in wanted or "grpc" in wanted:
            edge, grpc_target, mesh_env = gatemesh(stack, tmp, upstream_url)
            targets += [t for t, name in ((edge, "edge"), (grpc_target, "grpc")) if name in wanted]
            if args.proxies > 1:
                targets.append(more_proxies(stack, tmp, mesh_env, edge, args.proxies))
            if args.baseline:
                old_edge, old_grpc, _ = gatemesh(stack, tmp, upstream_url, Path(args.baseline).resolve())
                targets += [t for t, name in ((old_edge, "edge"), (old_grpc, "grpc")) if name in wanted]
        if "nometrics" in wanted:  # the same mesh with metrics off: their cost, measured in this run
            targets += list(gatemesh(stack, tmp, upstream_url, metrics=False)[:2])
        if "twin" in wanted:  # the same mesh again: the bias between two identical meshes of one run
            targets += list(gatemesh(stack, tmp, upstream_url, twin=True)[:2])
        if "nocredit" in wanted:  # the same mesh with credit leases off: what they change, in this run
            targets += list(gatemesh(stack, tmp, upstream_url, credit=False)[:2])
        if "floor" in wanted:
            targets.append(floor(stack, tmp, upstream_url))
        if "litellm" in wanted:
            targets.append(litellm(stack, tmp, upstream_url, args.litellm_workers))
        if "portkey" in wanted:
            targets.append(portkey(stack, tmp, upstream_url))
        for round_no in range(args.rounds):
            rounds.append([])
            for stream in modes:  # the targets of a cell one after the other: their ratios compare like with like
                for concurrency in levels:
                    # the order turns every round, so that no target always runs first (or last) in a cell
                    order = targets if round_no % 2 == 0 else targets[::-1]
                    for target in (t for t in order if not (stream and t.json_only)):
                        row = measure(target, stream, concurrency, args.seconds, args.warmup)
                        print(
                            f"round {round_no + 1} {target.name:16} {'stream' if stream else 'json':6} "
                            f"c={concurrency:<3} {row.result.rps:8.1f} rps  p50 {row.result.p50_ms:7.2f} ms  "
                            f"p99 {row.result.p99_ms:7.2f} ms  cpu {row.result.cpu_ms_per_request:6.2f} ms/req  "
                            f"errors {row.errors}",
                            file=sys.stderr,
                            flush=True,
                        )
                        rounds[-1].append(row)
    report(rounds)


if __name__ == "__main__":
    main()
