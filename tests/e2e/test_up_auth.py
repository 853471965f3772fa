"""End to end: `gatemesh up` as a real process on embedded defaults (SQLite, in-process
cache), driven with the generated stubs, the `gatemesh` operator CLI and the `openai` SDK
through the edge: the local mesh a newcomer starts with `make up` bills a call exactly."""

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
import openai
import pytest

from gatemesh.auth.v1 import auth_pb2, auth_pb2_grpc
from services.runtime.access import SERVICE_TOKEN_HEADER
from tests.e2e.edge_mesh import fake_upstream
from tests.support import ROOT, free_port, wait_healthy

pytestmark = pytest.mark.e2e

GATEMESH = str(Path(sys.executable).parent / "gatemesh")
PASSWORD = "a long enough password"


MODEL = "gm-local"
# Whole micro-units per token: 3 per input token, 5 per output token.
PRICES = {MODEL: {"input_per_mtok_usd": 3, "output_per_mtok_usd": 5}}


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[str]:
    with fake_upstream(tmp_path / "upstream.log") as url:
        yield url


@pytest.fixture
def mesh(tmp_path: Path, upstream: str) -> Iterator[dict[str, str]]:
    """A running `gatemesh up` on embedded defaults; yields the environment that finds it."""
    providers = [{"name": "local", "base_url": f"{upstream}/v1", "models": [MODEL], "timeout_s": 10}]
    env = {
        **os.environ,
        "GATEMESH_DATA_DIR": str(tmp_path / "data"),
        "GATEMESH_AUTH_ADDR": f"127.0.0.1:{free_port()}",
        "GATEMESH_BILLING_ADDR": f"127.0.0.1:{free_port()}",
        "GATEMESH_PROXY_ADDR": f"127.0.0.1:{free_port()}",
        "GATEMESH_PRIVACY_ADDR": f"127.0.0.1:{free_port()}",
        "GATEMESH_EDGE_PORT": str(free_port()),
        "GATEMESH_AUTH_ARGON2_MEMORY_KIB": "8192",
        "GATEMESH_PROVIDERS": json.dumps(providers),
        "GATEMESH_PRICES": json.dumps(PRICES),
    }
    for name in ("CONFIG", "REDIS_URL", "AUTH_DATABASE_URL", "BILLING_DATABASE_URL", "PROXY_DATABASE_URL"):
        env.pop(f"GATEMESH_{name}", None)
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


def test_a_paid_call_through_the_edge_on_embedded_defaults(mesh: dict[str, str], upstream: str) -> None:
    """SQLite and the in-process cache: sign-up by the CLI, credit, a key, one chat call with
    the openai SDK through the edge, and the balance down by exactly the call's price."""
    assert cli(mesh, "accounts", "create", "--email", "local@example.com", "--password", PASSWORD).returncode == 0
    assert cli(mesh, "credits", "grant", "--email", "local@example.com", "--usd", "1").returncode == 0
    key = cli(mesh, "keys", "create", "--email", "local@example.com").stdout.strip().splitlines()[-1]
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{mesh['GATEMESH_EDGE_PORT']}/v1", api_key=key)
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi there"}])
    assert reply.choices[0].message.content
    price = 3 * reply.usage.prompt_tokens + 5 * reply.usage.completion_tokens
    expected = f"{(1_000_000 - price) / 1_000_000:.6f}"
    for _ in range(100):  # the settle runs just after the answer
        balance = cli(mesh, "credits", "balance", "--email", "local@example.com")
        if expected in balance.stdout:
            break
        time.sleep(0.1)
    assert expected in balance.stdout, balance.stdout
    assert (Path(mesh["GATEMESH_DATA_DIR"]) / "billing.db").exists()  # the embedded default was used
