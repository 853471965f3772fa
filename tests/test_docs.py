"""The configuration reference is generated from the settings classes and must not drift."""

from __future__ import annotations

from scripts.config_reference import OUTPUT, render


def test_configuration_reference_is_current() -> None:
    assert OUTPUT.read_text() == render(), "docs/configuration.md is stale: run `make docs` and commit it"
