"""The operator CLI against a real `gatemesh up`, from any working directory: passwords by
prompt, standard input or file (never an argument), `--json` for scripts, progress while
the mesh starts, and messages that name the real cause when the mesh cannot be reached or
the data directory is the wrong one."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import termios
import time
from pathlib import Path

import grpc
import pytest

from gatemesh.auth.v1 import auth_pb2, auth_pb2_grpc
from tests.support import free_port
from tests.up_mesh import GATEMESH, PASSWORD, clean_environ, cli

pytestmark = pytest.mark.e2e


def elsewhere(mesh: dict[str, str]) -> dict[str, str]:
    """An operator's shell: no GATEMESH_ setting at all, only the state directory in which
    `gatemesh up` left its pointer (their ~/.local/state)."""
    return {**clean_environ(), "XDG_STATE_HOME": mesh["XDG_STATE_HOME"]}


def signs_in(mesh: dict[str, str], email: str, password: str) -> bool:
    with grpc.insecure_channel(mesh["GATEMESH_AUTH_ADDR"]) as channel:
        try:
            auth_pb2_grpc.AuthServiceStub(channel).SignIn(auth_pb2.SignInRequest(email=email, password=password))
        except grpc.RpcError:
            return False
    return True


def test_up_shows_progress_per_service(mesh: dict[str, str], mesh_dir: Path) -> None:
    log = (mesh_dir / "up.log").read_text()
    for name in ("auth", "billing", "proxy"):
        assert f"starting {name} on {mesh[f'GATEMESH_{name.upper()}_ADDR']}" in log
        assert f"grpc://{mesh[f'GATEMESH_{name.upper()}_ADDR']} (ready in" in log
    assert "starting the edge" in log and "[1/" in log


def test_the_cli_finds_the_mesh_from_another_directory_and_creates_nothing(mesh: dict[str, str], tmp_path) -> None:
    created = cli(
        elsewhere(mesh), "accounts", "create", "--email", "far@example.com", "--password-stdin",
        stdin=PASSWORD + "\n", cwd=tmp_path,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert signs_in(mesh, "far@example.com", PASSWORD)
    listed = cli(elsewhere(mesh), "keys", "list", "--email", "far@example.com", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert list(tmp_path.iterdir()) == []  # no .gatemesh appeared in the working directory


def test_status_reports_the_mesh_found(mesh: dict[str, str], tmp_path) -> None:
    done = cli(elsewhere(mesh), "status", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["data_dir"] == str(Path(mesh["GATEMESH_DATA_DIR"]).resolve())
    assert report["up_running"] and report["operator_credential"] == "accepted"
    assert report["services"]["auth"] == {"address": mesh["GATEMESH_AUTH_ADDR"], "health": "SERVING"}
    edge = {"address": f"http://127.0.0.1:{mesh['GATEMESH_EDGE_PORT']}", "health": "SERVING"}
    assert report["services"]["edge"] == edge


def test_an_unknown_data_directory_says_so_and_how_to_point_at_the_mesh(tmp_path) -> None:
    env = {**clean_environ(), "XDG_STATE_HOME": str(tmp_path / "state")}
    nothing = cli(env, "keys", "list", "--email", "a@example.com", cwd=tmp_path)
    assert nothing.returncode == 4
    assert "no local mesh found" in nothing.stderr and "--data-dir" in nothing.stderr
    named = cli(env, "--data-dir", str(tmp_path / "nope"), "credits", "balance", "--email", "a@example.com")
    assert named.returncode == 4 and f"{tmp_path / 'nope'}" in named.stderr and "does not exist" in named.stderr
    assert not (tmp_path / "nope").exists() and not (tmp_path / ".gatemesh").exists()


def test_a_data_directory_of_another_mesh_is_named_as_the_cause(mesh: dict[str, str], tmp_path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    secrets = {"service_token": "x" * 43, "admin_token": "y" * 43, "key_hmac_secret": "z" * 43}
    (other / "secrets.json").write_text(json.dumps(secrets))
    env = {**elsewhere(mesh), "GATEMESH_AUTH_ADDR": mesh["GATEMESH_AUTH_ADDR"]}
    refused = cli(env, "--data-dir", str(other), "keys", "list", "--email", "a@example.com")
    assert refused.returncode == 4
    assert "refused the operator credential" in refused.stderr and str(other) in refused.stderr
    assert "--data-dir" in refused.stderr
    status = cli(env, "status", "--data-dir", str(other), "--json")
    assert status.returncode == 4 and json.loads(status.stdout)["operator_credential"] == "refused"


def test_not_reachable_names_the_service_and_address_that_is_not(mesh: dict[str, str]) -> None:
    """`credits balance` asks auth first, then billing: each failure blames its own service."""
    assert (
        cli(mesh, "accounts", "create", "--email", "down@example.com", "--password-stdin", stdin=PASSWORD).returncode
        == 0
    )
    dead = f"127.0.0.1:{free_port()}"
    billing_down = cli({**mesh, "GATEMESH_BILLING_ADDR": dead}, "credits", "balance", "--email", "down@example.com")
    assert billing_down.returncode == 3
    assert f"the billing service at {dead} (setting `billing_addr`) is not reachable" in billing_down.stderr
    auth_down = cli({**mesh, "GATEMESH_AUTH_ADDR": dead}, "credits", "balance", "--email", "down@example.com")
    assert auth_down.returncode == 3 and f"the auth service at {dead}" in auth_down.stderr


def test_passwords_from_a_file_and_standard_input(mesh: dict[str, str], tmp_path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from a file, long enough\n")
    done = cli(mesh, "accounts", "create", "--email", "file@example.com", "--password-file", str(secret))
    assert done.returncode == 0, done.stderr
    assert signs_in(mesh, "file@example.com", "from a file, long enough")
    piped = cli(mesh, "accounts", "create", "--email", "pipe@example.com", "--password-stdin", stdin="piped and long\n")
    assert piped.returncode == 0 and signs_in(mesh, "pipe@example.com", "piped and long")
    for result in (done, piped):
        assert "long enough" not in result.stdout + result.stderr and "generated" not in result.stdout


def test_the_password_prompt_on_a_terminal(mesh: dict[str, str]) -> None:
    """On a terminal the password is typed (twice, not echoed), as `passwd` asks for it."""
    leader, follower = os.openpty()

    def take_terminal() -> None:  # the child's controlling terminal, which getpass opens
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(
        [GATEMESH, "accounts", "create", "--email", "tty@example.com"],
        env=mesh, stdin=follower, stdout=follower, stderr=follower, preexec_fn=take_terminal,
    )  # fmt: skip
    os.close(follower)
    seen = read_until(leader, b"Password")
    os.write(leader, b"typed at the prompt\n")
    seen += read_until(leader, b"Again")
    os.write(leader, b"typed at the prompt\n")
    assert process.wait(timeout=60) == 0
    os.close(leader)
    assert b"typed at the prompt" not in seen  # not echoed
    assert signs_in(mesh, "tty@example.com", "typed at the prompt")


def read_until(fd: int, marker: bytes, timeout_s: float = 30) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout_s
    while marker not in seen and time.monotonic() < deadline:
        seen += os.read(fd, 1024)
    assert marker in seen, seen
    return seen


def test_listing_commands_print_json(mesh: dict[str, str]) -> None:
    email = "json@example.com"
    assert cli(mesh, "accounts", "create", "--email", email, "--password-stdin", stdin=PASSWORD).returncode == 0
    assert cli(mesh, "credits", "grant", "--email", email, "--usd", "1.000001").returncode == 0
    made = json.loads(cli(mesh, "keys", "create", "--email", email, "--name", "ci", "--json").stdout)
    assert made["api_key"].startswith("gm-") and made["name"] == "ci"
    keys = json.loads(cli(mesh, "keys", "list", "--email", email, "--json").stdout)
    assert [(k["key_id"], k["status"], k["last_used_at"]) for k in keys] == [(made["key_id"], "active", None)]
    assert made["api_key"] not in json.dumps(keys)
    balance = json.loads(cli(mesh, "credits", "balance", "--email", email, "--json").stdout)
    assert balance == {"email": email, "balance_micros": 1_000_001, "balance_usd": "1.000001"}
    assert json.loads(cli(mesh, "usage", "--email", email, "--json").stdout) == []
    codes = json.loads(cli(mesh, "codes", "create", "--usd", "2", "--count", "2", "--json").stdout)
    assert codes["amount_micros"] == 2_000_000 and len(codes["codes"]) == 2
