"""Print the exact pins (from this venv) of what the gatemesh package needs at run time:
its dependencies without the dev extra, followed transitively, markers evaluated here.

The image installs only these (as wheels built on this machine), not the test tools the
lock also pins."""

from __future__ import annotations

import importlib.metadata as md

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def runtime_pins(root: str = "gatemesh") -> dict[str, str]:
    seen: dict[str, str] = {}
    todo = [(root, frozenset[str]())]
    while todo:
        name, extras = todo.pop()
        dist = md.distribution(name)
        key = canonicalize_name(dist.metadata["Name"])
        if key in seen and not extras:
            continue
        seen[key] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            environments = [{"extra": extra} for extra in extras] or [{"extra": ""}]
            if req.marker is not None and not any(req.marker.evaluate(env) for env in environments):
                continue
            todo.append((req.name, frozenset(req.extras)))
    seen.pop(canonicalize_name(root))
    return seen


def main() -> None:
    for name, version in sorted(runtime_pins().items()):
        print(f"{name}=={version}")


if __name__ == "__main__":
    main()
