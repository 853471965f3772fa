"""`gatemesh up --config FILE` records the mesh it runs (run file in the data directory,
pointer in $XDG_STATE_HOME/gatemesh) while it runs, and removes both when it stops."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.up_mesh import clean_environ, cli, running_up, up_env

pytestmark = pytest.mark.e2e


def test_up_with_a_config_file_records_itself_and_cleans_up(tmp_path: Path, upstream: str) -> None:
    env = up_env(tmp_path, upstream)
    settings = {
        key.removeprefix("GATEMESH_").lower(): value for key, value in env.items() if key.startswith("GATEMESH_")
    }
    for key in ("providers", "prices"):
        settings[key] = json.loads(settings[key])
    config = tmp_path / "gatemesh.yaml"
    config.write_text(yaml.safe_dump(settings))
    shell = {**clean_environ(), "XDG_STATE_HOME": env["XDG_STATE_HOME"]}  # nothing but the config file
    pointer = Path(env["XDG_STATE_HOME"]) / "gatemesh" / "current.json"
    run_file = Path(env["GATEMESH_DATA_DIR"]) / "run.json"
    with running_up(
        {**shell, "GATEMESH_AUTH_ADDR": env["GATEMESH_AUTH_ADDR"]}, tmp_path / "up.log", ("up", "--config", str(config))
    ):
        run = json.loads(run_file.read_text())
        assert run["config"] == str(config.resolve()) and run["data_dir"] == str(
            Path(env["GATEMESH_DATA_DIR"]).resolve()
        )
        assert run["addresses"]["billing_addr"] == env["GATEMESH_BILLING_ADDR"]
        assert run["addresses"]["edge_port"] == env["GATEMESH_EDGE_PORT"]
        assert json.loads(pointer.read_text()) == {"data_dir": run["data_dir"], "pid": run["pid"]}
        status = cli(shell, "status", "--json", cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["services"]["billing"]["address"] == env["GATEMESH_BILLING_ADDR"]
    assert not run_file.exists() and not pointer.exists()
    gone = cli(shell, "keys", "list", "--email", "a@example.com", cwd=tmp_path)
    assert gone.returncode == 4 and "no local mesh found" in gone.stderr


def test_a_second_mesh_leaves_the_cli_default_to_the_first(mesh: dict[str, str], tmp_path: Path, upstream: str) -> None:
    """A benchmark or test mesh started beside the operator's never takes the pointer."""
    pointer = Path(mesh["XDG_STATE_HOME"]) / "gatemesh" / "current.json"
    first = json.loads(pointer.read_text())
    second = {**up_env(tmp_path, upstream), "XDG_STATE_HOME": mesh["XDG_STATE_HOME"]}
    with running_up(second, tmp_path / "up.log"):
        assert json.loads(pointer.read_text()) == first
        assert f"note: the CLI's default stays the mesh in {first['data_dir']}" in (tmp_path / "up.log").read_text()
        assert (Path(second["GATEMESH_DATA_DIR"]) / "run.json").exists()
    assert json.loads(pointer.read_text()) == first
