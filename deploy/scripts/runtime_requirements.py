"""Print the exact pins (from this venv) of what the gatemesh package needs at run time:
its dependencies without the dev extra, followed transitively, markers evaluated for the
image's Python (`--python`, Debian bookworm's 3.11.2 by default, which may differ from this
venv's: redis needs async-timeout below 3.11.3). A package the image needs that this venv
lacks is printed as its requirement (pip wheel takes the newest that fits).

The image installs only these (as wheels built on this machine), not the test tools the
lock also pins."""

from __future__ import annotations

import argparse
import importlib.metadata as md

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def runtime_pins(python: str, root: str = "gatemesh") -> dict[str, str]:
    """Canonical name -> '==version' (installed here) or the requirement's specifier."""
    target = {"python_full_version": python, "python_version": ".".join(python.split(".")[:2])}
    seen: dict[str, str] = {}
    todo: list[tuple[Requirement, frozenset[str]]] = [(Requirement(root), frozenset())]
    while todo:
        req, extras = todo.pop()
        key = canonicalize_name(req.name)
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            seen.setdefault(key, str(req.specifier))
            continue
        if key in seen and not extras:
            continue
        seen[key] = f"=={dist.version}"
        for line in dist.requires or []:
            sub = Requirement(line)
            environments = [{**target, "extra": extra} for extra in extras] or [{**target, "extra": ""}]
            if sub.marker is not None and not any(sub.marker.evaluate(env) for env in environments):
                continue
            todo.append((sub, frozenset(sub.extras)))
    seen.pop(canonicalize_name(root))
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default="3.11.2", help="the image's Python version")
    args = parser.parse_args()
    for name, pin in sorted(runtime_pins(args.python).items()):
        print(f"{name}{pin}")


if __name__ == "__main__":
    main()
