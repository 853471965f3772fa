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
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.runtime.server import taken_port_message

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


def listen_addresses(names: list[str], with_edge: bool) -> dict[str, str]:
    """Setting name -> the host:port the mesh is about to bind."""
    s = settings()
    found = {f"{name}_addr": getattr(s, f"{name}_addr") for name in names}
    if with_edge:
        from services.edge.settings import EdgeSettings

        edge = EdgeSettings()
        found["edge_port"] = f"{edge.edge_host}:{edge.edge_port}"
        if edge.edge_admin_port:
            found["edge_admin_port"] = f"127.0.0.1:{edge.edge_admin_port}"
    return found


def check_ports(addresses: dict[str, str]) -> None:
    """Refuse to start, before any process, when an address of the mesh is taken: with a
    second mesh sharing a port, calls would reach either mesh at random."""
    for setting, address in addresses.items():
        host, port = split_host_port(address)
        if not port_free(host, port):
            raise CliError(taken_port_message(address, setting))


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
        names, with_edge = available_services(), edge_available()
        check_ports(listen_addresses(names, with_edge))
        deadline = time.monotonic() + START_TIMEOUT_S
        for name in names:
            child = start(name, getattr(s, f"{name}_addr"), f"services.{name}")
            children.append(child)
            wait_serving(child, deadline)
            print(f"{name:8} grpc://{child.address}", flush=True)
        if with_edge:
            from services.edge.launch import edge_url, start_edge, wait_edge

            edge = start_edge()
            children.append(Child("edge", edge_url(), edge))
            wait_edge(edge, deadline)
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
