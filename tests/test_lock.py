"""Dependencies: every package the code imports is declared in pyproject.toml, and
requirements.lock (what `make install` installs) pins every declared package at a version
its specifier allows, so a dependency added without `make lock` fails here."""

from __future__ import annotations

import ast
import importlib.metadata
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support import ROOT

OWN = {"services", "gatemesh", "buf", "tests", "bench", "scripts"}  # buf: generated from the vendored validate.proto


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [item for group in project["optional-dependencies"].values() for item in group]
    return [Requirement(item) for item in project["dependencies"] + extras]


def locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return pins


def imported() -> set[str]:
    """The top-level third-party modules imported by the code, the tests and the tools."""
    modules: set[str] = set()
    for folder in ("services", "bench", "tests", "scripts"):
        for path in (ROOT / folder).rglob("*.py"):
            if any(part.startswith(".") for part in path.relative_to(ROOT).parts):
                continue  # the peers the benchmark installs (bench/.litellm-venv, bench/.portkey), caches
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules.add(node.module.split(".")[0])
    return {module for module in modules if module not in sys.stdlib_module_names and module not in OWN}


def test_every_imported_package_is_declared() -> None:
    names = {canonicalize_name(requirement.name) for requirement in declared()}
    providers = importlib.metadata.packages_distributions()
    undeclared = {
        module: providers.get(module)
        for module in imported()
        if not names & {canonicalize_name(dist) for dist in providers.get(module, [])}
    }
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_the_lock_pins_every_declared_package_within_its_bounds() -> None:
    pins = locked()
    for requirement in declared():
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in requirements.lock: run make lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {requirement.name}=={pins[name]}, outside {requirement.specifier}: run make lock"
        )


def test_the_lock_matches_this_install() -> None:
    """The venv the tests run in was installed from the lock (no drift)."""
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    drift = {
        name: (version, installed.get(name)) for name, version in locked().items() if installed.get(name) != version
    }
    assert not drift, f"installed versions differ from requirements.lock: {drift}"
