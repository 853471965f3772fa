"""Start-up checks of `gatemesh up` (filled in by the start-up checks change)."""

from __future__ import annotations


def preflight() -> None:
    """Nothing checked yet."""
