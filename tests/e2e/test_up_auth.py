"""End to end: `gatemesh up` as a real process on embedded defaults (SQLite, in-process
cache), driven with the generated stubs and the `gatemesh` operator CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from gatemesh.auth.v1 import auth_pb2, auth_pb2_grpc
from services.runtime.access import SERVICE_TOKEN_HEADER
from tests.support import ROOT, free_port, wait_healthy

pytestmark = pytest.mark.e2e

GATEMESH = str(Path(sys.executable).parent / "gatemesh")
PASSWORD = "a long enough password"


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A running `gatemesh up`; yields the environment that finds it."""
    env = {
        **os.environ,
        "GATEMESH_DATA_DIR": str(tmp_path / "data"),
        "GATEMESH_AUTH_ADDR": f"127.0.0.1:{free_port()}",
        "GATEMESH_BILLING_ADDR": f"127.0.0.1:{free_port()}",
        "GATEMESH_PROXY_ADDR": f"127.0.0.1:{free_port()}",
        "GATEMESH_PRIVACY_ADDR": f"127.0.0.1:{free_port()}",
        "GATEMESH_EDGE_PORT": str(free_port()),
        "GATEMESH_AUTH_ARGON2_MEMORY_KIB": "8192",
    }
    env.pop("GATEMESH_CONFIG", None)
    log_path = tmp_path / "up.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([GATEMESH, "up"], env=env, stdout=log, stderr=log, cwd=ROOT)
        try:
            wait_up(process, log_path)
            wait_healthy(env["GATEMESH_AUTH_ADDR"], process)
            yield env
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_up(process: subprocess.Popen[bytes], log_path: Path, timeout_s: float = 120.0) -> None:
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


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GATEMESH, *args], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)


def service_metadata(env: dict[str, str]) -> list[tuple[str, str]]:
    secrets = json.loads((Path(env["GATEMESH_DATA_DIR"]) / "secrets.json").read_text())
    return [(SERVICE_TOKEN_HEADER, secrets["service_token"])]


def test_up_runs_auth_and_the_cli_operates_it(mesh: dict[str, str]) -> None:
    created = cli(mesh, "accounts", "create", "--email", "ops@example.com", "--password", PASSWORD)
    assert created.returncode == 0, created.stderr
    assert "ops@example.com" in created.stdout

    duplicate = cli(mesh, "accounts", "create", "--email", "ops@example.com")
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr

    bad = cli(mesh, "accounts", "create", "--email", "not-an-email")
    assert bad.returncode == 1 and "email" in bad.stderr

    generated = cli(mesh, "accounts", "create", "--email", "gen@example.com", "--role", "compliance")
    assert generated.returncode == 0 and "generated password" in generated.stdout

    made = cli(mesh, "keys", "create", "--email", "ops@example.com", "--name", "e2e")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("gm-") and len(key) == 46

    with grpc.insecure_channel(mesh["GATEMESH_AUTH_ADDR"]) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        verified = stub.VerifyKey(auth_pb2.VerifyKeyRequest(api_key=key), metadata=service_metadata(mesh))
        assert verified.key_id

        listed = cli(mesh, "keys", "list", "--email", "ops@example.com")
        assert listed.returncode == 0 and verified.key_id in listed.stdout and key[7:] not in listed.stdout

        revoked = cli(mesh, "keys", "revoke", verified.key_id)
        assert revoked.returncode == 0, revoked.stderr
        with pytest.raises(grpc.RpcError) as refused:
            stub.VerifyKey(auth_pb2.VerifyKeyRequest(api_key=key), metadata=service_metadata(mesh))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

        # The public API works through the same process.
        session = stub.SignIn(auth_pb2.SignInRequest(email="ops@example.com", password=PASSWORD))
        me = stub.GetMe(auth_pb2.GetMeRequest(), metadata=[("authorization", f"Bearer {session.session_token}")])
        assert me.account.email == "ops@example.com"

    missing = cli(mesh, "keys", "revoke", "key_doesnotexist")
    assert missing.returncode == 1 and "not found" in missing.stderr
    unknown = cli(mesh, "keys", "list", "--email", "nobody@example.com")
    assert unknown.returncode == 1


def test_cli_says_when_the_mesh_is_down(tmp_path: Path) -> None:
    env = {**os.environ, "GATEMESH_DATA_DIR": str(tmp_path), "GATEMESH_AUTH_ADDR": f"127.0.0.1:{free_port()}"}
    result = cli(env, "keys", "list", "--email", "a@example.com")
    assert result.returncode == 3
    assert "gatemesh up" in result.stderr
