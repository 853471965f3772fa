"""`gatemesh status`: which mesh the CLI finds, whether each service answers, and whether
the mesh accepts the operator credential of that data directory.

It answers the operator's first question when a command fails ("which mesh am I talking
to?"): the data directory and how it was found, the `gatemesh up` process that runs it,
each service's address and health, and one authenticated probe (auth's AdminGetAccount
for an address that cannot exist: NOT_FOUND means the credential was accepted,
UNAUTHENTICATED that the directory belongs to another mesh). Exit code 0 when all is
well, 3 when a service is not reachable, 4 when the credential is refused.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gatemesh.auth.v1 import auth_pb2, auth_pb2_grpc
from services.runtime.clients import service_channel

from .common import EXIT_NO_MESH, EXIT_UNREACHABLE, CliSettings, add_json_option, find_mesh, print_json, settings
from .up import available_services, edge_available

PROBE_EMAIL = "status-probe@invalid"
TIMEOUT_S = 3


async def health(address: str, s: CliSettings) -> str:
    """SERVING, NOT_SERVING, or `unreachable`."""
    async with service_channel(address, s, credential=s.secret("admin_token")) as channel:
        try:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S)  # type: ignore[attr-defined]  # types-grpcio-health-checking's HealthStub declares no methods
        except grpc.aio.AioRpcError:
            return "unreachable"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


async def credential_accepted(s: CliSettings) -> bool | None:
    """Whether auth accepts the operator credential; None when auth cannot be asked."""
    async with service_channel(s.auth_addr, s, credential=s.secret("admin_token")) as channel:
        try:
            await auth_pb2_grpc.AuthServiceStub(channel).AdminGetAccount(
                auth_pb2.AdminGetAccountRequest(email=PROBE_EMAIL), timeout=TIMEOUT_S
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAUTHENTICATED:
                return False
            if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return None
    return True


async def gather(s: CliSettings) -> tuple[dict[str, dict[str, str]], bool | None]:
    names = available_services()
    addresses = [getattr(s, f"{name}_addr") for name in names]
    states = await asyncio.gather(*(health(address, s) for address in addresses))
    rows = zip(names, addresses, states, strict=True)
    services = {name: {"address": address, "health": state} for name, address, state in rows}
    if edge_available():
        services["edge"] = await asyncio.to_thread(edge_health)
    return services, await credential_accepted(s)


def edge_health() -> dict[str, str]:
    """The edge answers when Envoy serves its own /openapi.json (secrets exist by now:
    `find_mesh` found them, so EdgeSettings creates nothing)."""
    from services.edge.launch import edge_ready, edge_url
    from services.edge.settings import EdgeSettings

    url = edge_url(EdgeSettings())
    return {"address": url, "health": "SERVING" if edge_ready(url) else "unreachable"}


def cmd_status(args: argparse.Namespace) -> int:
    found = find_mesh()
    s = settings()
    services, accepted = asyncio.run(gather(s))
    run = found.run
    report = {
        "data_dir": str(found.data_dir.resolve()),
        "found_by": found.how,
        "up_pid": run.pid if run is not None else None,
        "up_running": found.live,
        "config": (run.config if run is not None else "") or None,
        "services": services,
        "operator_credential": {True: "accepted", False: "refused", None: "unknown"}[accepted],
    }
    if args.json:
        print_json(report)
    else:
        print_report(report)
    if accepted is False:
        return EXIT_NO_MESH
    return EXIT_UNREACHABLE if any(v["health"] == "unreachable" for v in services.values()) else 0


def print_report(report: Mapping[str, object]) -> None:
    up = "not started by `gatemesh up`"
    if report["up_pid"] is not None:
        up = f"pid {report['up_pid']} ({'running' if report['up_running'] else 'no longer running'})"
    print(f"data dir   {report['data_dir']} (found by {report['found_by']})")
    print(f"gatemesh   {up}")
    services = report["services"]
    assert isinstance(services, dict)
    for name, row in services.items():
        print(f"{name:10} {row['address']:22} {row['health']}")
    print(f"credential {report['operator_credential']}")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "status",
        help="which mesh the CLI finds, each service's health, and whether it accepts the credential",
    )
    add_json_option(parser)
    parser.set_defaults(func=cmd_status)
