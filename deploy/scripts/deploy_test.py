"""`make deploy-test`: the compose stack run for real, driven as a customer would drive it.

Starts `deploy/compose.yaml` (the images `make images` built) with fresh secrets, the fake
upstream on the host (tests/fake_upstream.py, the provider deploy/gatemesh.yaml names),
waits until every container's health check passes, then through the containerized edge
with the official `openai` SDK: a paid chat call and a streamed one, each charged exactly
price x tokens; stops the billing container, starts it again, and checks that the mesh
recovers (a paid call succeeds and is charged exactly). Checks that Prometheus scrapes
every endpoint. Always takes the stack down (`docker-compose down -v`) at the end.

Run from the repository root with the project's venv: `.venv/bin/python deploy/scripts/deploy_test.py`.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.e2e.edge_mesh import Mesh, fake_upstream  # noqa: E402
from tests.fake_upstream import plan_chat  # noqa: E402

COMPOSE = ["docker-compose", "-f", str(ROOT / "deploy" / "compose.yaml"), "-p", "gatemesh-deploy-test"]
EDGE = "http://127.0.0.1:18080"
BILLING = "127.0.0.1:51052"
UPSTREAM_PORT = 18999
MODEL = "gm-test"
INPUT_MICROS, OUTPUT_MICROS = 2, 8  # deploy/gatemesh.yaml's price: whole micro-units per token
CONTAINERS = ("postgres", "redis", "auth", "billing", "proxy", "privacy", "edge")
METRICS_TARGETS = 5


def log(message: str) -> None:
    print(f"deploy-test: {message}", flush=True)


def compose(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*COMPOSE, *args], env=env, text=True, capture_output=True)
    if check and done.returncode != 0:
        raise SystemExit(f"deploy-test: docker-compose {' '.join(args)} failed:\n{done.stderr[-4000:]}")
    return done


def stack_env() -> dict[str, str]:
    """Fresh secrets for this run (never written to a file)."""
    key32 = lambda: base64.b64encode(secrets.token_bytes(32)).decode()  # noqa: E731
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("GATEMESH_")},
        "DOCKER_HOST": os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"),
        "GATEMESH_SERVICE_TOKEN": secrets.token_urlsafe(32),
        "GATEMESH_ADMIN_TOKEN": secrets.token_urlsafe(32),
        "GATEMESH_KEY_HMAC_SECRET": secrets.token_urlsafe(32),
        "GATEMESH_PRIVACY_EXPORT_KEY": key32(),
        "GATEMESH_PRIVACY_SIGNING_KEY": key32(),
    }


def health(env: dict[str, str]) -> dict[str, str]:
    """Each container's health status."""
    found = {}
    for name in CONTAINERS:
        ids = compose("ps", "-q", name, env=env).stdout.split()
        if not ids:
            found[name] = "absent"
            continue
        inspect = subprocess.run(
            ["/usr/bin/docker", "inspect", "-f", "{{.State.Health.Status}}", ids[0]], text=True, capture_output=True
        )
        found[name] = inspect.stdout.strip() or "unknown"
    return found


def wait_healthy(env: dict[str, str], names: tuple[str, ...] = CONTAINERS, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = health(env)
        if all(status[name] == "healthy" for name in names):
            return
        time.sleep(2)
    raise SystemExit(f"deploy-test: not healthy in time: {health(env)}\n{compose('logs', env=env).stdout[-6000:]}")


def cost(usage: object) -> int:
    return usage.prompt_tokens * INPUT_MICROS + usage.completion_tokens * OUTPUT_MICROS  # type: ignore[attr-defined]


def paid_calls(mesh: Mesh, label: str) -> None:
    """A chat call and a streamed one, each charged exactly."""
    user = mesh.rest_user(credit_micros=1_000_000)
    client = openai.OpenAI(base_url=f"{EDGE}/v1", api_key=user.api_key, max_retries=0)
    messages = [{"role": "user", "content": f"hello from the {label} containers"}]
    reply = client.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == plan_chat({"messages": messages}).text
    after_chat = user.settled_balance()
    assert after_chat == 1_000_000 - cost(reply.usage), (after_chat, reply.usage)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=messages,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = next(c.usage for c in chunks if c.usage)
    assert text == plan_chat({"messages": messages}).text
    assert user.settled_balance() == after_chat - cost(usage)
    log(f"{label}: chat and stream charged exactly ({cost(reply.usage)} + {cost(usage)} micro-units)")


def prometheus_targets_up() -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            active = httpx.get("http://127.0.0.1:19090/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        except (httpx.HTTPError, ValueError, KeyError):
            active = []
        if len(active) == METRICS_TARGETS and all(t["health"] == "up" for t in active):
            log(f"prometheus scrapes all {len(active)} endpoints")
            return
        time.sleep(2)
    raise SystemExit(f"deploy-test: prometheus targets not all up: {[(t['scrapeUrl'], t['health']) for t in active]}")


def restart_recovers(mesh: Mesh, env: dict[str, str]) -> None:
    compose("stop", "billing", env=env)
    user = mesh.rest_user(credit_micros=0)
    client = openai.OpenAI(base_url=f"{EDGE}/v1", api_key=user.api_key, max_retries=0)
    try:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "billing is down"}])
    except openai.APIStatusError as error:
        assert error.status_code >= 500 or error.status_code == 429, error.status_code
    else:
        raise SystemExit("deploy-test: a paid call succeeded while billing was stopped")
    log("billing stopped: paid calls refused")
    compose("start", "billing", env=env)
    wait_healthy(env, ("billing",))
    deadline = time.monotonic() + 60
    while True:  # the proxy's channel reconnects on its own
        try:
            paid_calls(mesh, "restarted")
            return
        except (openai.APIError, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def main() -> int:
    env = stack_env()
    os.environ.update({k: env[k] for k in ("GATEMESH_ADMIN_TOKEN", "GATEMESH_SERVICE_TOKEN")})
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="gm-deploy-") as tmp,
        fake_upstream(Path(tmp) / "upstream.log", port=UPSTREAM_PORT) as upstream,
    ):
        compose("down", "-v", "--remove-orphans", env=env, check=False)
        try:
            compose("up", "-d", env=env)
            wait_healthy(env)
            log(f"every container healthy after {time.monotonic() - started:.0f} s: {json.dumps(health(env))}")
            mesh_env = {"GATEMESH_DATA_DIR": tmp, "GATEMESH_BILLING_ADDR": BILLING}
            mesh = Mesh(EDGE, mesh_env, {}, Path(tmp) / "none.log", upstream, None)  # type: ignore[arg-type]
            paid_calls(mesh, "containerized")
            prometheus_targets_up()
            restart_recovers(mesh, env)
        except BaseException:
            print(compose("logs", "--tail", "40", env=env, check=False).stdout, file=sys.stderr)
            raise
        finally:
            compose("down", "-v", "--remove-orphans", env=env, check=False)
    log(f"passed in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
