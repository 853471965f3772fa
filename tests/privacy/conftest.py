"""Privacy test fixtures: the proxy tests' fake upstreams (providers are outside the
platform) and one mesh with one privacy process shared by a module's tests that leave
the processes running (tests that kill or stop processes make their own)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import ExitStack

import pytest

from tests.privacy.mesh import PrivacyMesh, open_mesh
from tests.proxy.conftest import upstreams  # noqa: F401 - a fixture, re-exported
from tests.support import create_database, drop_database


@pytest.fixture(scope="module")
async def base_mesh(tmp_path_factory: pytest.TempPathFactory, upstreams) -> AsyncIterator[PrivacyMesh]:  # noqa: F811
    """auth, billing and proxy for a module; no privacy process yet."""
    with ExitStack() as stack:
        yield await open_mesh(stack, tmp_path_factory.mktemp("privacy"), upstreams)


@pytest.fixture(scope="module")
async def shared_mesh(base_mesh: PrivacyMesh) -> PrivacyMesh:
    """The module's mesh with one privacy process."""
    base_mesh.start_privacy()
    return base_mesh


@pytest.fixture
async def fresh(base_mesh: PrivacyMesh) -> AsyncIterator[PrivacyMesh]:
    """The module's mesh with a new, empty privacy database; the test starts privacy
    processes itself, and they are stopped afterwards."""
    base_mesh.database = await create_database("pv_privacy")
    yield base_mesh
    for instance in base_mesh.instances:
        instance.stop()
    base_mesh.instances.clear()
    await drop_database(base_mesh.database)
