"""The background loop every service runs its sweepers in.

A job runs at start and then every `interval_s` (an instance restarted more often than the
interval must still sweep). A failure is logged and the loop goes on. The log line names the
job and the error's type only, never its text or traceback: a database error's text carries
the statement's parameters (account ids, keys), which must not reach a log line. Each run is
a trace of its own and is counted (`run_once`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from .metrics import SWEEPS
from .telemetry import root_span


def every(
    interval_s: float, job: Callable[[], Awaitable[object]], name: str, log: logging.Logger
) -> Callable[[], Coroutine[Any, Any, None]]:
    """A loop running `job` now and every `interval_s`, until cancelled."""

    async def loop() -> None:
        while True:
            await run_once(job, name, log)
            await asyncio.sleep(interval_s)

    return loop


async def run_once(job: Callable[[], Awaitable[object]], name: str, log: logging.Logger) -> bool:
    """One run of a background job in its own trace, counted in
    `gatemesh_background_runs_total{job, outcome}`; False when it failed."""
    with root_span(name):
        try:
            await job()
        except Exception as error:  # parameters must not reach the log
            log.error("%s failed (%s); retrying at the next interval", name, type(error).__name__)
            SWEEPS.labels(name, "error").inc()
            return False
    SWEEPS.labels(name, "ok").inc()
    return True
