"""`python -m services.privacy`: the composition root of the privacy service.

`build()` makes every piece from the settings (engine and migrations, the participant
clients, the keys, the use cases, the worker, the servicer) and returns them with the
`ServiceSpec` the runtime serves; tests and the benchmark call it too, so they run exactly
what production runs. Background jobs: the worker, the closed-account poller (P5.4) and
the export sweeper (exports live 7 days).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from gatemesh.privacy.v1 import privacy_pb2, privacy_pb2_grpc
from services.runtime.authn import remote_authenticator
from services.runtime.background import every
from services.runtime.clients import service_channel
from services.runtime.db import database_check, make_engine, migrate
from services.runtime.server import ServiceSpec, run, serve
from services.runtime.telemetry import setup_logging, setup_telemetry

from .participants import Participants, Subjects
from .policy_app import POLICY_SERVICE, build_policy
from .requests import Requests
from .servicer import PrivacyServicer
from .settings import PrivacySettings
from .store import MIGRATIONS, PrivacyStore, utcnow
from .vault import Vault
from .worker import Worker

log = logging.getLogger("gatemesh.privacy")

SERVICE_NAMES = [privacy_pb2.DESCRIPTOR.services_by_name["PrivacyService"].full_name, POLICY_SERVICE]


@dataclass
class PrivacyApp:
    """Everything the privacy service is made of."""

    settings: PrivacySettings
    engine: AsyncEngine
    store: PrivacyStore
    participants: Participants
    requests: Requests
    worker: Worker
    servicer: PrivacyServicer
    spec: ServiceSpec


EXPORT_SWEEP_S = 3600.0


async def raise_closure_erasures(requests: Requests, subjects: Subjects) -> int:
    """One erasure per closed account not yet erased (P5.4); auth waits for none of this."""
    raised = 0
    for account_id, closed_at in await subjects.closed_accounts():
        raised += await requests.raise_for_closure(account_id, closed_at)
    return raised


async def build(settings: PrivacySettings) -> PrivacyApp:
    engine = make_engine(settings.database_url())
    await migrate(engine, MIGRATIONS, "privacy")
    store = PrivacyStore(engine)
    auth_channel = service_channel(settings.auth_addr, settings)
    participants = Participants(settings)
    subjects = Subjects(auth_channel)
    vault = Vault.from_settings(settings)
    requests = Requests(settings, store, participants, subjects, vault)
    worker = Worker(settings, store, participants, vault)
    servicer = PrivacyServicer(requests, vault)
    policy = build_policy(engine, participants, auth_channel, store)  # policy versions and data map (P10, P4.4)

    async def closures() -> None:
        await raise_closure_erasures(requests, subjects)

    async def sweep() -> None:
        await store.sweep_exports(utcnow())

    def register(server: grpc.aio.Server) -> None:
        privacy_pb2_grpc.add_PrivacyServiceServicer_to_server(servicer, server)
        policy.register(server)

    async def close() -> None:
        await participants.close()
        await auth_channel.close()
        await engine.dispose()

    spec = ServiceSpec(
        name="privacy",
        register=register,
        service_names=SERVICE_NAMES,
        authenticator=remote_authenticator(settings, auth_channel),
        cleanups=[close],
        dependencies=[database_check(engine)],
        background=[
            worker.run_forever,
            every(settings.privacy_closed_poll_s, closures, "closed-account erasures", log),
            every(EXPORT_SWEEP_S, sweep, "export sweep", log),
            policy.background,
        ],
    )
    return PrivacyApp(settings, engine, store, participants, requests, worker, servicer, spec)


async def main() -> None:
    settings = PrivacySettings()
    setup_logging("privacy", settings.log_level)
    setup_telemetry("privacy")
    app = await build(settings)
    await serve(app.spec, settings, settings.listen or settings.privacy_addr)


if __name__ == "__main__":
    run(main)
