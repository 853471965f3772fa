"""One real `gatemesh up` per test module (it takes seconds to start), with its own ports,
data directory and state directory; tests that need a mesh of their own start one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.edge_mesh import fake_upstream
from tests.up_mesh import running_up, up_env


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with fake_upstream(tmp_path_factory.mktemp("upstream") / "upstream.log") as url:
        yield url


@pytest.fixture(scope="module")
def mesh_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mesh")


@pytest.fixture(scope="module")
def mesh(mesh_dir: Path, upstream: str) -> Iterator[dict[str, str]]:
    """The environment `gatemesh up` ran with (which finds it, as any operator's would)."""
    env = up_env(mesh_dir, upstream)
    with running_up(env, mesh_dir / "up.log"):
        yield env
