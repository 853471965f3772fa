"""Starting the edge for `gatemesh up` and the tests: `start_edge`, `edge_url`, `wait_edge`.

`start_edge()` runs `python -m services.edge` (which writes the config under the data
directory and execs Envoy, so the returned process is Envoy itself and SIGTERM stops it).
It exposes the REST APIs of the services whose packages exist, unless `edge_services` is
configured. `wait_edge()` polls `/openapi.json`, which Envoy serves itself, until the
listener answers.
"""

from __future__ import annotations

import importlib.util
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from .settings import MESH_SERVICES, EdgeSettings


class EdgeStartError(RuntimeError):
    """The edge exited or did not answer in time."""


def landed(name: str) -> bool:
    """Whether `services/<name>/__main__.py` exists (a missing package counts as absent)."""
    try:
        return importlib.util.find_spec(f"services.{name}.__main__") is not None
    except ModuleNotFoundError:
        return False


def landed_services() -> list[str]:
    """The mesh services whose package is installed."""
    return [name for name in MESH_SERVICES if landed(name)]


def edge_url(settings: EdgeSettings | None = None) -> str:
    """The URL clients use: https when the edge has a certificate; loopback for 0.0.0.0."""
    s = settings or EdgeSettings()
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(s.edge_host, s.edge_host)
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if s.edge_tls else 'http'}://{host}:{s.edge_port}"


def start_edge(
    services: Sequence[str] | None = None, env: Mapping[str, str] | None = None, **popen: Any
) -> subprocess.Popen[bytes]:
    """Start Envoy for the given services (default: those configured and installed).

    `env` replaces the inherited environment (tests pass their own settings)."""
    env = dict(os.environ if env is None else env)
    if services is None and "GATEMESH_EDGE_SERVICES" not in env:
        services = landed_services()
    if services is not None:
        env["GATEMESH_EDGE_SERVICES"] = json.dumps(list(services))
    return subprocess.Popen([sys.executable, "-m", "services.edge"], env=env, **popen)


def edge_ready(url: str) -> bool:
    context = ssl._create_unverified_context() if url.startswith("https") else None  # readiness only
    try:
        with urllib.request.urlopen(f"{url}/openapi.json", timeout=1, context=context) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_edge(process: subprocess.Popen[bytes], deadline: float, url: str | None = None) -> None:
    """Block until the edge serves `/openapi.json`; `deadline` is a time.monotonic() value."""
    url = url or edge_url()
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EdgeStartError(f"the edge (Envoy) exited with code {process.returncode}; see its log above")
        if edge_ready(url):
            return
        time.sleep(0.1)
    raise EdgeStartError(f"the edge did not answer at {url} in time")
