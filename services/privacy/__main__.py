"""`python -m services.privacy`: the composition root of the privacy service.

`build()` makes every piece from the settings (engine and migrations, the participant
clients, the domain, the servicer) and returns them with the `ServiceSpec` the runtime
serves; tests and the benchmark call it too, so they run exactly what production runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from gatemesh.privacy.v1 import privacy_pb2, privacy_pb2_grpc
from services.runtime.authn import remote_authenticator
from services.runtime.clients import service_channel
from services.runtime.db import make_engine, migrate
from services.runtime.server import ServiceSpec, run, serve
from services.runtime.telemetry import setup_logging, setup_telemetry

from .servicer import PrivacyServicer
from .settings import PrivacySettings
from .store import MIGRATIONS, PrivacyStore

log = logging.getLogger("gatemesh.privacy")

SERVICE_NAMES = [privacy_pb2.DESCRIPTOR.services_by_name["PrivacyService"].full_name]


@dataclass
class PrivacyApp:
    """Everything the privacy service is made of."""

    settings: PrivacySettings
    engine: AsyncEngine
    store: PrivacyStore
    servicer: PrivacyServicer
    spec: ServiceSpec


async def build(settings: PrivacySettings) -> PrivacyApp:
    engine = make_engine(settings.database_url())
    await migrate(engine, MIGRATIONS, "privacy")
    store = PrivacyStore(engine)
    auth_channel = service_channel(settings.auth_addr, settings)
    servicer = PrivacyServicer(None)

    def register(server: grpc.aio.Server) -> None:
        privacy_pb2_grpc.add_PrivacyServiceServicer_to_server(servicer, server)

    async def close() -> None:
        await auth_channel.close()
        await engine.dispose()

    spec = ServiceSpec(
        name="privacy",
        register=register,
        service_names=SERVICE_NAMES,
        authenticator=remote_authenticator(settings, auth_channel),
        cleanups=[close],
        background=[],
    )
    return PrivacyApp(settings, engine, store, servicer, spec)


async def main() -> None:
    settings = PrivacySettings()
    setup_logging("privacy", settings.log_level)
    setup_telemetry("privacy")
    app = await build(settings)
    await serve(app.spec, settings, settings.listen or settings.privacy_addr)


if __name__ == "__main__":
    run(main)
