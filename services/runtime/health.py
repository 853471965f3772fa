"""Health that says whether a service can do its work, not only that its process runs.

Each service names the stores it cannot serve without (`Dependency`: its database, its
Redis); `DependencyWatch` checks them every `health_interval_s` and sets the standard gRPC
health service to SERVING while every check passes and NOT_SERVING while one fails, for
the whole server ("") and each of its services, and back to SERVING once it passes again.
A load balancer or a readiness probe then stops sending calls to an instance that would
only fail them, and the service itself needs no restart: its pools reconnect on their own
(`db.ping_when_idle`, redis-py's reconnect on the next command).

The checks use connections of their own (`db.database_check`, `cache.redis_check`), so a
pool busy under load cannot make a healthy instance look down. `LIVENESS` stays SERVING for
as long as the process serves: a liveness probe asks for it, so a Redis outage takes an
instance out of rotation without having it restarted.

A failure is logged once when the state changes, naming the dependency and the error's
type only (a driver's error text can carry connection parameters).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from grpc_health.v1 import health, health_pb2

from .metrics import DEPENDENCY_UP

log = logging.getLogger("gatemesh.health")

LIVENESS = "liveness"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True)
class Dependency:
    """A store the service cannot serve without, and an awaitable that raises when it is
    unreachable."""

    name: str
    check: Callable[[], Awaitable[object]]
    close: Callable[[], Awaitable[None]] | None = None  # the check's own connection, at shutdown


class DependencyWatch:
    """Keeps the health service's statuses in line with the dependencies' checks."""

    def __init__(
        self,
        servicer: health.aio.HealthServicer,
        service_names: Sequence[str],
        dependencies: Sequence[Dependency],
        timeout_s: float = 2.0,
    ) -> None:
        self._servicer = servicer
        self._names = ["", *service_names]
        self._dependencies = list(dependencies)
        self._timeout_s = timeout_s
        self._down: dict[str, str] = {}  # dependency name -> the error type that took it down
        self.serving: bool | None = None

    async def check(self) -> bool:
        """Check every dependency at once, set the statuses; True when all passed."""
        results = await asyncio.gather(*(self._check(d) for d in self._dependencies))
        await self._set(all(results))
        return self.serving is True

    async def _check(self, dependency: Dependency) -> bool:
        try:
            async with asyncio.timeout(self._timeout_s):
                await dependency.check()
        except Exception as error:  # any failure means "cannot serve now"
            if dependency.name not in self._down:
                log.error("health: %s unreachable (%s): NOT_SERVING", dependency.name, type(error).__name__)
            self._down[dependency.name] = type(error).__name__
            DEPENDENCY_UP.labels(dependency.name).set(0)
            return False
        if self._down.pop(dependency.name, None) is not None:
            log.info("health: %s reachable again", dependency.name)
        DEPENDENCY_UP.labels(dependency.name).set(1)
        return True

    async def _set(self, serving: bool) -> None:
        if serving == self.serving:
            return
        self.serving = serving
        status = SERVING if serving else NOT_SERVING
        for name in self._names:
            await self._servicer.set(name, status)
        if serving:
            log.info("health: every dependency reachable: SERVING")

    async def close(self) -> None:
        for dependency in self._dependencies:
            if dependency.close is not None:
                await dependency.close()

    async def run(self, interval_s: float) -> None:
        """Check, then sleep, until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            await self.check()
