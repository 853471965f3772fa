"""A second mesh on the same machine fails its start naming the taken port and its setting,
instead of sharing the port with SO_REUSEPORT (grpc's default, and Envoy's): the kernel
would then split connections between two meshes holding different secrets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, free_port
from tests.up_mesh import cli

pytestmark = pytest.mark.e2e


def test_a_second_gatemesh_up_on_the_same_ports_refuses_to_start(mesh: dict[str, str], tmp_path: Path) -> None:
    second = {**mesh, "GATEMESH_DATA_DIR": str(tmp_path / "other"), "XDG_STATE_HOME": str(tmp_path / "state")}
    result = cli(second, "up", timeout=60)
    assert result.returncode != 0
    assert f"cannot listen on {mesh['GATEMESH_AUTH_ADDR']} (setting `auth_addr`)" in result.stderr
    assert "GATEMESH_AUTH_ADDR" in result.stderr
    assert not (tmp_path / "other" / "auth.db").exists()  # refused before any service started


@pytest.mark.parametrize(("service", "setting"), [("auth", "auth_addr"), ("billing", "billing_addr")])
def test_a_service_on_a_taken_port_exits_naming_it(mesh: dict[str, str], tmp_path: Path, service, setting) -> None:
    env = {**mesh, "GATEMESH_DATA_DIR": str(tmp_path / "other")}
    result = subprocess.run(
        [sys.executable, "-m", f"services.{service}"], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 1
    address = mesh[f"GATEMESH_{setting.upper()}"]
    assert f"cannot listen on {address} (setting `{setting}`)" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_service_started_with_listen_names_that_setting(mesh: dict[str, str], tmp_path: Path) -> None:
    env = {**mesh, "GATEMESH_DATA_DIR": str(tmp_path / "other"), "GATEMESH_LISTEN": mesh["GATEMESH_AUTH_ADDR"]}
    env["GATEMESH_AUTH_ADDR"] = f"127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "services.auth"], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 1 and "(setting `listen`)" in result.stderr


def test_an_edge_on_a_taken_port_exits(mesh: dict[str, str], tmp_path: Path) -> None:
    env = {**mesh, "GATEMESH_DATA_DIR": str(tmp_path / "other")}
    result = subprocess.run(
        [sys.executable, "-m", "services.edge"], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode != 0
    assert f"127.0.0.1:{mesh['GATEMESH_EDGE_PORT']}" in result.stderr


def test_a_second_gatemesh_up_on_the_same_data_directory_refuses_to_start(mesh: dict[str, str]) -> None:
    """Even on free ports: two meshes would share SQLite files and secrets."""
    moved = {key: f"127.0.0.1:{free_port()}" for key in mesh if key.endswith("_ADDR")}
    result = cli({**mesh, **moved, "GATEMESH_EDGE_PORT": str(free_port())}, "up", timeout=60)
    assert result.returncode == 1
    assert f"a mesh is already running from {Path(mesh['GATEMESH_DATA_DIR']).resolve()}" in result.stderr
