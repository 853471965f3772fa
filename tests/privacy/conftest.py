"""Privacy test fixtures: the proxy tests' fake upstreams (providers are outside the
platform) and one mesh with one privacy process shared by a module's tests that leave
the processes running (tests that kill or stop processes make their own)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import ExitStack

import pytest

from tests.privacy.mesh import PrivacyMesh, open_mesh
from tests.proxy.conftest import upstreams  # noqa: F401 - a fixture, re-exported


@pytest.fixture(scope="module")
async def shared_mesh(tmp_path_factory: pytest.TempPathFactory, upstreams) -> AsyncIterator[PrivacyMesh]:  # noqa: F811
    with ExitStack() as stack:
        pm = await open_mesh(stack, tmp_path_factory.mktemp("privacy"), upstreams)
        pm.start_privacy()
        yield pm
