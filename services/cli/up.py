"""`gatemesh up`: run every service that exists, and the edge, on embedded defaults.

Each service runs as its own process (`python -m services.<name>`), exactly as in
production, with SQLite files and the in-process cache under the data directory unless
the configuration names PostgreSQL and Redis.

Before any process starts it refuses a data directory a live mesh already runs from, and
any address that is taken (naming the setting: with grpc's default SO_REUSEPORT a second
mesh would otherwise share the port and get half the connections), and runs the routing
checks (`checks`). Then it records itself (`locate.write_run`: run file and pointer, so
the other commands find this mesh from any directory), starts the services one by one,
printing a line when each starts and when it reports SERVING on its health endpoint,
then the edge, and stops everything on Ctrl-C or SIGTERM (SIGTERM to each child, which
drains in-flight calls), removing the run file and pointer.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.edge.settings import EdgeSettings
from services.runtime.server import taken_port_message
from services.runtime.settings import GatemeshSettings

from .checks import preflight
from .common import CliError
from .locate import RunInfo, read_run, remove_run, write_run

SERVICES = ["auth", "billing", "proxy", "privacy"]
START_TIMEOUT_S = 120.0  # per process: on a busy machine imports and migrations take tens of seconds
PATIENCE_S = 10.0  # how often a slow start says it is still waiting
PROBE_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


@dataclass
class Child:
    name: str
    address: str
    process: subprocess.Popen[bytes]


def _has_module(name: str) -> bool:
    """True when `name` can be imported; a missing parent package counts as absent."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def available_services() -> list[str]:
    """The services whose package has landed (`services/<name>/__main__.py`)."""
    return [name for name in SERVICES if _has_module(f"services.{name}.__main__")]


def edge_available() -> bool:
    return _has_module("services.edge.__main__")


def wait_serving(child: Child, deadline: float, waiting: Callable[[float], None]) -> None:
    """Block until the child's gRPC health check says SERVING; `waiting(seconds)` is
    called every PATIENCE_S meanwhile. Reconnect backoff stays short: grpc's default grows
    to minutes, and a service that binds late would be noticed only after the deadline."""
    began = last_said = time.monotonic()
    with grpc.insecure_channel(child.address, options=PROBE_OPTIONS) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if child.process.poll() is not None:
                raise CliError(f"{child.name} exited with code {child.process.returncode}; see its log above")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)  # type: ignore[attr-defined]  # types-grpcio-health-checking's HealthStub declares no methods
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() - last_said >= PATIENCE_S:
                last_said = time.monotonic()
                waiting(last_said - began)
            time.sleep(0.1)
    raise CliError(f"{child.name} did not become healthy within {START_TIMEOUT_S:.0f}s")


def split_host_port(address: str) -> tuple[str, int]:
    """'127.0.0.1:50051' -> ('127.0.0.1', 50051); '[::1]:50051' -> ('::1', 50051)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def port_free(host: str, port: int) -> bool:
    """Whether a listening socket could bind host:port now (SO_REUSEADDR as grpc and Envoy
    set it, so connections in TIME_WAIT do not count; another listener does)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return False
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(sockaddr)
        except OSError:
            return False
    return True


def listen_addresses(s: GatemeshSettings, names: list[str], with_edge: bool) -> dict[str, str]:
    """Setting name -> the host:port the mesh is about to bind."""
    found = {f"{name}_addr": getattr(s, f"{name}_addr") for name in names}
    if with_edge:
        edge = EdgeSettings()
        found["edge_port"] = f"{edge.edge_host}:{edge.edge_port}"
        if edge.edge_admin_port:
            found["edge_admin_port"] = f"127.0.0.1:{edge.edge_admin_port}"
    return found


def run_addresses(s: GatemeshSettings, names: list[str], with_edge: bool) -> dict[str, str]:
    """The address settings as the CLI applies them from the run file (see `locate`)."""
    found = {f"{name}_addr": getattr(s, f"{name}_addr") for name in names}
    if with_edge:
        edge = EdgeSettings()
        found |= {"edge_host": edge.edge_host, "edge_port": str(edge.edge_port)}
    return found


def check_ports(addresses: dict[str, str]) -> None:
    """Refuse to start, before any process, when an address of the mesh is taken: with a
    second mesh sharing a port, calls would reach either mesh at random."""
    for setting, address in addresses.items():
        host, port = split_host_port(address)
        if not port_free(host, port):
            raise CliError(taken_port_message(address, setting))


def refuse_shared_data_dir(data_dir: Path) -> None:
    """Two meshes on one data directory would share SQLite files and secrets."""
    running = read_run(data_dir)
    if running is not None and running.pid != os.getpid() and running.alive():
        raise CliError(
            f"a mesh is already running from {data_dir.resolve()} (`gatemesh up`, pid {running.pid}); stop it"
            " first, or give this one its own data directory (--data-dir or GATEMESH_DATA_DIR) and addresses"
        )


def start(name: str, address: str, module: str) -> Child:
    process = subprocess.Popen([sys.executable, "-m", module], env=os.environ.copy())
    return Child(name, address, process)


def stop_all(children: list[Child]) -> None:
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.process.kill()


def start_services(s: GatemeshSettings, names: list[str], total: int, children: list[Child]) -> None:
    """Start each service in turn, saying so, and wait until it serves."""
    for step, name in enumerate(names, 1):
        address = getattr(s, f"{name}_addr")
        progress(step, total, f"starting {name} on {address} ...")
        began = time.monotonic()
        child = start(name, address, f"services.{name}")
        children.append(child)

        def waiting(seconds: float, step: int = step, name: str = name) -> None:
            progress(step, total, f"still waiting for {name} to serve ({seconds:.0f} s)")

        wait_serving(child, began + START_TIMEOUT_S, waiting)
        progress(step, total, f"{name:8} grpc://{address} (ready in {time.monotonic() - began:.1f} s)")


def start_edge_process(step: int, children: list[Child]) -> None:
    from services.edge.launch import EdgeStartError, edge_url, start_edge, wait_edge

    progress(step, step, f"starting the edge (Envoy) on {edge_url()} ...")
    began = time.monotonic()
    edge = start_edge()
    children.append(Child("edge", edge_url(), edge))
    try:
        wait_edge(edge, time.monotonic() + START_TIMEOUT_S)
    except EdgeStartError as error:  # the edge knows no CLI: its failure becomes the CLI's here
        raise CliError(str(error)) from None
    progress(step, step, f"{'edge':8} {edge_url()} (ready in {time.monotonic() - began:.1f} s)")


def progress(step: int, total: int, text: str) -> None:
    print(f"[{step}/{total}] {text}", flush=True)


def watch(children: list[Child]) -> NoReturn:
    """Wait while every process runs; one that stops stops the mesh."""
    while all(child.process.poll() is None for child in children):
        time.sleep(0.5)
    dead = [c.name for c in children if c.process.poll() is not None]
    raise CliError(f"{', '.join(dead)} stopped unexpectedly; stopping the mesh")


def record(s: GatemeshSettings, names: list[str], with_edge: bool) -> RunInfo:
    """Write the run file and pointer; say so when another live mesh keeps the pointer."""
    run, default = write_run(s.data_dir, run_addresses(s, names, with_edge))
    if default is not None:
        print(
            f"note: the CLI's default stays the mesh in {default.data_dir} (pid {default.pid});"
            f" point it at this one with --data-dir {s.data_dir.resolve()}",
            flush=True,
        )
    return run


def cmd_up(_args: argparse.Namespace) -> int:
    s = GatemeshSettings()  # creates the data directory and the local secrets once
    refuse_shared_data_dir(s.data_dir)
    names, with_edge = available_services(), edge_available()
    check_ports(listen_addresses(s, names, with_edge))
    preflight()
    children: list[Child] = []
    stopping = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    run = record(s, names, with_edge)
    try:
        start_services(s, names, len(names) + with_edge, children)
        if with_edge:
            start_edge_process(len(names) + 1, children)
        print(f"gatemesh is up (data in {s.data_dir.resolve()}); Ctrl-C stops it", flush=True)
        watch(children)
    except KeyboardInterrupt:
        return 0
    finally:
        stop_all(children)
        remove_run(run)
        if stopping:
            print("gatemesh stopped", flush=True)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "up",
        help="run every service and the edge locally",
        description="Start the whole mesh on this machine: one process each for auth, billing, proxy and privacy"
        " (those installed; gRPC on auth_addr, billing_addr, proxy_addr, privacy_addr), then the REST edge"
        " (Envoy, on edge_host:edge_port). State lives in the data directory (SQLite files and local secrets"
        " unless the configuration names PostgreSQL and Redis). Before starting, it checks that every port is"
        " free and that the configured providers, prices and aliases can serve a model. It prints progress,"
        " then the addresses, and runs until Ctrl-C or SIGTERM, which stop every process gracefully.",
    )
    parser.set_defaults(func=cmd_up)
