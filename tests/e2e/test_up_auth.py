"""End to end: `gatemesh up` as a real process on embedded defaults (SQLite, in-process
cache), driven with the generated stubs, the `gatemesh` operator CLI and the `openai` SDK
through the edge: the local mesh a newcomer starts with `make up` bills a call exactly."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import openai
import pytest

from gatemesh.auth.v1 import auth_pb2, auth_pb2_grpc
from services.runtime.access import SERVICE_TOKEN_HEADER
from tests.e2e.edge_mesh import fake_upstream
from tests.up_mesh import MODEL, PASSWORD, cli, running_up, up_env

pytestmark = pytest.mark.e2e


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[str]:
    with fake_upstream(tmp_path / "upstream.log") as url:
        yield url


@pytest.fixture
def mesh(tmp_path: Path, upstream: str) -> Iterator[dict[str, str]]:
    """A running `gatemesh up` on embedded defaults; yields the environment that finds it."""
    env = up_env(tmp_path, upstream)
    with running_up(env, tmp_path / "up.log"):
        yield env


def service_metadata(env: dict[str, str]) -> list[tuple[str, str]]:
    secrets = json.loads((Path(env["GATEMESH_DATA_DIR"]) / "secrets.json").read_text())
    return [(SERVICE_TOKEN_HEADER, secrets["service_token"])]


def test_up_runs_auth_and_the_cli_operates_it(mesh: dict[str, str]) -> None:
    created = cli(mesh, "accounts", "create", "--email", "ops@example.com", "--password-stdin", stdin=PASSWORD)
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


def test_a_paid_call_through_the_edge_on_embedded_defaults(mesh: dict[str, str], upstream: str) -> None:
    """SQLite and the in-process cache: sign-up by the CLI, credit, a key, one chat call with
    the openai SDK through the edge, and the balance down by exactly the call's price."""
    assert (
        cli(mesh, "accounts", "create", "--email", "local@example.com", "--password-stdin", stdin=PASSWORD).returncode
        == 0
    )
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
