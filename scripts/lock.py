"""Print requirements.lock: the exact version of every package installed in this venv
(pyproject.toml resolved with the dev extra), the project itself left out.

pip freeze of a venv built from pyproject.toml rather than pip-compile or uv: neither is
installed here, and the venv `make lock` builds is exactly what the resolver chose."""

from __future__ import annotations

import importlib.metadata

HEADER = """\
# Exact versions of every package the project installs (pyproject.toml resolved, dev extra included).
# Regenerate after changing dependencies: make lock. Checked against pyproject.toml by tests/test_lock.py."""


def main() -> None:
    pins = {
        dist.metadata["Name"]: dist.version
        for dist in importlib.metadata.distributions()
        if dist.metadata["Name"] and dist.metadata["Name"].lower() not in ("gatemesh", "pip")
    }
    print(HEADER)
    for name in sorted(pins, key=str.lower):
        print(f"{name}=={pins[name]}")


if __name__ == "__main__":
    main()
