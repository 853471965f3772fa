"""A real `gatemesh up` for tests, and the real `gatemesh` console script to drive it.

`up_env()` gives a mesh of its own (free loopback ports, a data directory under the test's
tmp directory, a fake upstream serving `gm-local` at a whole-micro-unit price, a state
directory of its own so the pointer file of the developer's mesh is never touched).
`running_up()` starts `gatemesh up` as a process and stops it with SIGTERM, as Ctrl-C would.
`cli()` runs the console script in a subprocess, from any working directory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support import ROOT, free_port, wait_healthy

GATEMESH = str(Path(sys.executable).parent / "gatemesh")
PASSWORD = "a long enough password"
MODEL = "gm-local"
# Whole micro-units per token: 3 per input token, 5 per output token.
PRICES = {MODEL: {"input_per_mtok_usd": 3, "output_per_mtok_usd": 5}}


def clean_environ() -> dict[str, str]:
    """The test process's environment without any GATEMESH_ setting or XDG state dir."""
    return {k: v for k, v in os.environ.items() if not k.startswith("GATEMESH_") and k != "XDG_STATE_HOME"}


def up_env(tmp: Path, upstream: str) -> dict[str, str]:
    """The environment of a mesh of its own, on embedded defaults."""
    providers = [{"name": "local", "base_url": f"{upstream}/v1", "models": [MODEL], "timeout_s": 10}]
    return {
        **clean_environ(),
        "XDG_STATE_HOME": str(tmp / "state"),
        "GATEMESH_DATA_DIR": str(tmp / "data"),
        "GATEMESH_AUTH_ADDR": f"127.0.0.1:{free_port()}",
        "GATEMESH_BILLING_ADDR": f"127.0.0.1:{free_port()}",
        "GATEMESH_PROXY_ADDR": f"127.0.0.1:{free_port()}",
        "GATEMESH_PRIVACY_ADDR": f"127.0.0.1:{free_port()}",
        "GATEMESH_EDGE_PORT": str(free_port()),
        "GATEMESH_AUTH_ARGON2_MEMORY_KIB": "8192",
        "GATEMESH_PROVIDERS": json.dumps(providers),
        "GATEMESH_PRICES": json.dumps(PRICES),
    }


@contextmanager
def running_up(env: dict[str, str], log_path: Path, args: Sequence[str] = ("up",), cwd: Path = ROOT) -> Iterator[None]:
    """`gatemesh up` running until the block ends; fails the test with its log if it dies."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen([GATEMESH, *args], env=env, stdout=log, stderr=log, cwd=cwd)
        try:
            wait_up(process, log_path)
            wait_healthy(env["GATEMESH_AUTH_ADDR"], process)
            yield
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_up(process: subprocess.Popen[bytes], log_path: Path, timeout_s: float = 300.0) -> None:
    """Wait until `gatemesh up` reports the whole mesh up; fail with its log if it exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if "gatemesh is up" in log_path.read_text(errors="replace"):
            return
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            pytest.fail(f"gatemesh up exited with {process.returncode} before the mesh was up:\n{tail}")
        time.sleep(0.2)
    pytest.fail("gatemesh up did not report the mesh up in time")


def cli(
    env: dict[str, str], *args: str, cwd: Path = ROOT, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The `gatemesh` console script, as an operator runs it."""
    return subprocess.run(
        [GATEMESH, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd, input=stdin
    )
