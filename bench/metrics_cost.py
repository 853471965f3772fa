"""What the metrics cost per call: `python -m bench.metrics_cost`.

The same `grpc.aio` server (the runtime's `build_server`: every shared interceptor, a
unary method and a server-streaming one) with `metrics_enabled` false and true, driven by a
client in the same process, alternating rounds so both see the same machine; CPU time of
the process per call (client and server together: the difference is the interceptor's cost
alone). Then the hot path's other metric calls (an upstream attempt, its latency, a batch
size) timed on their own. Prints a table; compare the added microseconds with the mesh's
CPU per call in docs/benchmarks.md (3.8-4.2 ms through the edge at concurrency 64).

`bench.gateway --targets edge,grpc,nometrics` measures the same through the whole mesh; on a
machine shared by several busy sessions its meshes did not start within `gatemesh up`'s
60 s, hence this narrower benchmark too.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import timeit
from pathlib import Path

import grpc

from bench.stats import print_table
from gatemesh.auth.v1 import auth_pb2, auth_pb2_grpc
from services.runtime import metrics
from services.runtime.access import Principal
from services.runtime.server import ServiceSpec, bind, build_server
from services.runtime.settings import GatemeshSettings

USER = "bench-user-token"


class Accounts(auth_pb2_grpc.AuthServiceServicer):
    async def GetMe(self, request, context):  # type: ignore[no-untyped-def]
        return auth_pb2.GetMeResponse()


async def authenticate(credential: str) -> Principal:
    return Principal(account_id="bench")


async def cpu_per_call(enabled: bool, calls: int, concurrency: int, data_dir: Path) -> float:
    """CPU microseconds of this process per GetMe call, server and client together."""
    settings = GatemeshSettings(
        data_dir=data_dir, service_token="s", admin_token="a", key_hmac_secret="k", metrics_enabled=enabled
    )
    spec = ServiceSpec(
        name="bench",
        register=lambda srv: auth_pb2_grpc.add_AuthServiceServicer_to_server(Accounts(), srv),
        service_names=["gatemesh.auth.v1.AuthService"],
        authenticator=authenticate,
    )
    server, _ = build_server(spec, settings)
    port = bind(server, "127.0.0.1:0", settings)
    await server.start()
    metadata = [("authorization", f"Bearer {USER}")]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            await stub.GetMe(auth_pb2.GetMeRequest(), metadata=metadata)

            async def worker(n: int) -> None:
                for _ in range(n):
                    await stub.GetMe(auth_pb2.GetMeRequest(), metadata=metadata)

            start = time.process_time()
            await asyncio.gather(*(worker(calls // concurrency) for _ in range(concurrency)))
            return (time.process_time() - start) * 1e6 / (calls // concurrency * concurrency)
    finally:
        await server.stop(0)
        metrics.enable(True)


def hot_path_calls_us(repeat: int = 200_000) -> dict[str, float]:
    """Microseconds per call of the metric calls a proxied chat call makes besides the interceptor."""
    return {
        "upstream attempt (counter)": timeit.timeit(
            lambda: metrics.upstream_attempt("primary", "gm-test"), number=repeat
        )
        * 1e6
        / repeat,
        "upstream answered (histogram)": timeit.timeit(
            lambda: metrics.upstream_answered("primary", "gm-test", 0.01, False), number=repeat
        )
        * 1e6
        / repeat,
        "batch size (histogram)": timeit.timeit(lambda: metrics.batch_size("HoldBatch", 4), number=repeat)
        * 1e6
        / repeat,
    }


async def main_async(rounds: int, calls: int, concurrency: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        off: list[float] = []
        on: list[float] = []
        for _ in range(rounds):
            off.append(await cpu_per_call(False, calls, concurrency, Path(tmp)))
            on.append(await cpu_per_call(True, calls, concurrency, Path(tmp)))
    added = statistics.median(on) - statistics.median(off)
    print_table(
        f"gRPC server, CPU us per unary call (median of {rounds} alternating rounds, {calls} calls, c={concurrency})",
        ["metrics", "median", "min", "max"],
        [
            ["off", f"{statistics.median(off):.1f}", f"{min(off):.1f}", f"{max(off):.1f}"],
            ["on", f"{statistics.median(on):.1f}", f"{min(on):.1f}", f"{max(on):.1f}"],
            ["added", f"{added:.1f}", "", ""],
        ],
    )
    others = hot_path_calls_us()
    print_table(
        "Other metric calls on the hot path, us per call", ["call", "us"], [[k, f"{v:.2f}"] for k, v in others.items()]
    )
    # A chat call through the mesh crosses 3 metered servers (proxy, auth, billing; batched
    # calls share theirs) and makes about 2 upstream metric calls and 2 batch observations.
    per_chat = 3 * added + 2 * others["upstream attempt (counter)"] + others["upstream answered (histogram)"]
    per_chat += 2 * others["batch size (histogram)"]
    print_table(
        "Per chat call through the mesh (upper bound: every hop unbatched)",
        ["added CPU us", "of 3,800 us (edge, c=64)", "of 10,800 us (edge, c=1)"],
        [[f"{per_chat:.1f}", f"{per_chat / 3800:.2%}", f"{per_chat / 10800:.2%}"]],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(main_async(args.rounds, args.calls, args.concurrency))


if __name__ == "__main__":
    main()
