"""Start-up catches configuration mistakes and names the setting: a provider whose key
variable is unset, a served model without a price, a price nobody serves, an alias to an
unknown model (warnings), and a configuration that could serve nothing (refused). And
`/v1/models` lists only models a call could succeed for."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

from tests.cli.conftest import MISTAKES, UNSET_KEY_ENV
from tests.support import ROOT
from tests.up_mesh import MODEL, PASSWORD, cli, up_env

pytestmark = pytest.mark.e2e

WARNINGS = [
    f"providers[keyless].api_key_env: the environment variable {UNSET_KEY_ENV} is unset or empty",
    f"providers[local].models: '{MISTAKES['unpriced']}' has no price in `prices`",
    f"prices.{MISTAKES['unserved']}: '{MISTAKES['unserved']}' is priced but no provider",
    f"model_aliases.{MISTAKES['alias']}: points to 'gm-missing', which no provider",
]


def test_gatemesh_up_warns_of_each_mistake_by_setting(mesh: dict[str, str], mesh_dir: Path) -> None:
    log = (mesh_dir / "up.log").read_text()
    before_start = log.split("[1/")[0]  # reported before any service starts
    for warning in WARNINGS:
        assert f"gatemesh: warning: {warning}" in before_start, warning


def test_models_lists_only_what_can_be_called(mesh: dict[str, str]) -> None:
    email = "models@example.com"
    assert cli(mesh, "accounts", "create", "--email", email, "--password-stdin", stdin=PASSWORD).returncode == 0
    key = cli(mesh, "keys", "create", "--email", email).stdout.strip().splitlines()[-1]
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{mesh['GATEMESH_EDGE_PORT']}/v1", api_key=key)
    listed: set[str] = set()
    for _ in range(50):  # the proxy's first price list arrives just after it starts
        listed = {model.id for model in client.models.list()}
        if MODEL in listed:
            break
        time.sleep(0.2)
    assert listed == {MODEL, "gm-alias"}


def proxy_start(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.proxy"], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_the_proxy_warns_by_setting_when_started_on_its_own(mesh: dict[str, str], tmp_path: Path) -> None:
    """The checks that need no price list run in the proxy itself (a mesh not started by
    `gatemesh up`); it refuses to start when no provider could be called."""
    log = (Path(mesh["GATEMESH_DATA_DIR"]).parent / "up.log").read_text()
    assert f"configuration: {WARNINGS[0]}" in log and f"configuration: {WARNINGS[3]}" in log
    assert f"configuration: {WARNINGS[1]}" in log  # after its first price list
    only_keyless = [
        {"name": "keyless", "base_url": "http://127.0.0.1:9/v1", "models": ["m"], "api_key_env": UNSET_KEY_ENV}
    ]
    env = {**mesh, "GATEMESH_DATA_DIR": str(tmp_path), "GATEMESH_PROVIDERS": json.dumps(only_keyless)}
    refused = proxy_start(env)
    assert refused.returncode == 1 and "no model could be called" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_gatemesh_up_refuses_a_configuration_that_serves_nothing(tmp_path: Path, upstream: str) -> None:
    env = up_env(tmp_path, upstream)
    providers = json.loads(env["GATEMESH_PROVIDERS"])
    providers[0]["api_key_env"] = UNSET_KEY_ENV
    env["GATEMESH_PROVIDERS"] = json.dumps(providers)
    refused = cli(env, "up", timeout=60)
    assert refused.returncode == 1
    assert f"providers[local].api_key_env: the environment variable {UNSET_KEY_ENV}" in refused.stderr
    assert "not starting: no model could be called" in refused.stderr
    assert not (tmp_path / "data" / "auth.db").exists()
