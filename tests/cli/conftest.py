"""One real `gatemesh up` for the whole tests/cli package (it takes seconds to start; it
stops after the package's last test), with its own ports, data directory and state
directory; tests that need a mesh of their own start one.

Its configuration carries one of each mistake the start-up checks report (see
test_startup_checks.py); none of them stops the mesh from serving `gm-local`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.edge_mesh import fake_upstream
from tests.up_mesh import MODEL, PRICES, running_up, up_env

UNSET_KEY_ENV = "GM_TEST_KEY_NOBODY_SETS"
MISTAKES = {
    "keyless": "gm-keyless",  # served only by a provider whose api_key_env is unset
    "unpriced": "gm-unpriced",  # served, without a price
    "unserved": "gm-nowhere",  # priced, served by nobody
    "alias": "gm-typo",  # alias to a model nobody serves
}


@pytest.fixture(scope="package")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with fake_upstream(tmp_path_factory.mktemp("upstream") / "upstream.log") as url:
        yield url


@pytest.fixture(scope="package")
def mesh_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mesh")


def with_mistakes(env: dict[str, str], upstream: str) -> dict[str, str]:
    providers = [
        {"name": "local", "base_url": f"{upstream}/v1", "models": [MODEL, MISTAKES["unpriced"]], "timeout_s": 10},
        {
            "name": "keyless",
            "base_url": f"{upstream}/v1",
            "models": [MISTAKES["keyless"]],
            "api_key_env": UNSET_KEY_ENV,
        },
    ]
    price = PRICES[MODEL]
    prices = {**PRICES, MISTAKES["keyless"]: price, MISTAKES["unserved"]: price}
    aliases = {"gm-alias": MODEL, MISTAKES["alias"]: "gm-missing"}
    env = {**env, "GATEMESH_PROVIDERS": json.dumps(providers), "GATEMESH_PRICES": json.dumps(prices)}
    env["GATEMESH_MODEL_ALIASES"] = json.dumps(aliases)
    env.pop(UNSET_KEY_ENV, None)
    return env


@pytest.fixture(scope="package")
def mesh(mesh_dir: Path, upstream: str) -> Iterator[dict[str, str]]:
    """The environment `gatemesh up` ran with (which finds it, as any operator's would)."""
    env = with_mistakes(up_env(mesh_dir, upstream), upstream)
    with running_up(env, mesh_dir / "up.log"):
        yield env
