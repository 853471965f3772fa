"""Proxy test fixtures: fake upstream processes (the model providers are outside the platform)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT, free_port


def wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"fake upstream exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"fake upstream on {port} did not start")


@pytest.fixture(scope="session")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], str]]:
    """A factory of fake upstreams by server-wide mode ('' healthy, '500', ...): base URLs."""
    started: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    logs: Path = tmp_path_factory.mktemp("upstreams")

    def get(mode: str = "") -> str:
        if mode not in started:
            port = free_port()
            args = [sys.executable, "-m", "tests.fake_upstream", "--port", str(port), "--mode", mode]
            log = open(logs / f"upstream{mode or 'ok'}.log", "wb")  # noqa: SIM115 - closed with the process
            process = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=log)
            wait_port(port, process)
            started[mode] = (process, f"http://127.0.0.1:{port}/v1")
        return started[mode][1]

    yield get
    for process, _ in started.values():
        process.terminate()
        process.wait(timeout=10)


def received(base_url: str) -> list[dict]:
    """The bodies a fake upstream received (kept in its memory only)."""
    return httpx.get(f"{base_url}/../_fake/requests".replace("/v1/../", "/")).json()


def clear(base_url: str) -> None:
    httpx.delete(f"{base_url}/../_fake/requests".replace("/v1/../", "/"))
