"""Privacy test fixtures: the proxy tests' fake upstreams (providers are outside the platform)."""

from tests.proxy.conftest import upstreams  # noqa: F401 - a fixture, re-exported
