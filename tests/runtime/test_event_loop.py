"""Services run on uvloop unless `event_loop` says asyncio."""

from __future__ import annotations

import asyncio

import pytest

from services.runtime.server import run


@pytest.mark.parametrize(("setting", "loop_module"), [("uvloop", "uvloop"), ("asyncio", "asyncio")])
def test_run_starts_main_on_the_configured_event_loop(
    monkeypatch: pytest.MonkeyPatch, setting: str, loop_module: str
) -> None:
    monkeypatch.setenv("GATEMESH_EVENT_LOOP", setting)
    seen: list[str] = []

    async def main() -> None:
        seen.append(type(asyncio.get_running_loop()).__module__.split(".")[0])

    run(main)
    assert seen == [loop_module]
