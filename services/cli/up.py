"""`gatemesh up`: run every service that exists, and the edge, on embedded defaults.

Each service runs as its own process (`python -m services.<name>`), exactly as in
production, with SQLite files and the in-process cache under the data directory unless
the configuration names PostgreSQL and Redis. The command waits until each service
reports SERVING on its health endpoint, prints the addresses, and stops everything on
Ctrl-C or SIGTERM (SIGTERM to each child, which drains in-flight calls).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .common import CliError, settings

SERVICES = ["auth", "billing", "proxy", "privacy"]
START_TIMEOUT_S = 60.0


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


def wait_serving(child: Child, deadline: float) -> None:
    """Block until the child's gRPC health check says SERVING."""
    with grpc.insecure_channel(child.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if child.process.poll() is not None:
                raise CliError(f"{child.name} exited with code {child.process.returncode}; see its log above")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise CliError(f"{child.name} did not become healthy within {START_TIMEOUT_S:.0f}s")


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


def cmd_up(_args: argparse.Namespace) -> int:
    s = settings()  # also creates the data directory and the local secrets once
    children: list[Child] = []
    stopping = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        for name in available_services():
            child = start(name, getattr(s, f"{name}_addr"), f"services.{name}")
            children.append(child)
            deadline = time.monotonic() + START_TIMEOUT_S  # each service gets its own minute
            wait_serving(child, deadline)
            print(f"{name:8} grpc://{child.address}", flush=True)
        if edge_available():
            from services.edge.launch import edge_url, start_edge, wait_edge

            edge = start_edge()
            children.append(Child("edge", edge_url(), edge))
            wait_edge(edge, time.monotonic() + START_TIMEOUT_S)
            print(f"{'edge':8} {edge_url()}", flush=True)
        print(f"gatemesh is up (data in {s.data_dir.resolve()}); Ctrl-C stops it", flush=True)
        while all(child.process.poll() is None for child in children):
            time.sleep(0.5)
        dead = [c.name for c in children if c.process.poll() is not None]
        raise CliError(f"{', '.join(dead)} stopped unexpectedly; stopping the mesh")
    except KeyboardInterrupt:
        return 0
    finally:
        stop_all(children)
        if stopping:
            print("gatemesh stopped", flush=True)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("up", help="run every service and the edge locally")
    parser.set_defaults(func=cmd_up)
