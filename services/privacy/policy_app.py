"""The policy-version and data-map part of the privacy service, assembled (composition).

`build_policy` makes the store, the auth client, the use cases and the servicer from what
`__main__.build` already has (engine, participants, auth channel, the store whose audit
trail staff actions join), so the service's
composition root only registers the result. The background job finishes any
notification fan-out a crash or an auth outage interrupted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from gatemesh.privacy.v1 import policy_pb2, policy_pb2_grpc
from services.runtime.background import every

from .participants import Participants
from .policy import Policies
from .policy_clients import AuthAcceptances, DataMapSource
from .policy_servicer import PolicyServicer
from .policy_store import PolicyVersions
from .store import PrivacyStore

log = logging.getLogger("gatemesh.privacy")

POLICY_SERVICE = policy_pb2.DESCRIPTOR.services_by_name["PolicyService"].full_name
RESUME_S = 60.0


@dataclass
class PolicyApp:
    store: PolicyVersions
    policies: Policies
    datamaps: DataMapSource
    servicer: PolicyServicer
    background: Callable[[], Coroutine[Any, Any, None]]

    def register(self, server: grpc.aio.Server) -> None:
        policy_pb2_grpc.add_PolicyServiceServicer_to_server(self.servicer, server)


def build_policy(
    engine: AsyncEngine, participants: Participants, auth_channel: grpc.aio.Channel, trail: PrivacyStore
) -> PolicyApp:
    store = PolicyVersions(engine)

    async def audit(event: str, actor: str, details: dict[str, Any]) -> None:
        async with trail.transaction() as db:
            await trail.append_audit(db, event=event, actor=actor, details=details)

    policies = Policies(store, AuthAcceptances(auth_channel), audit)
    datamaps = DataMapSource(participants, lambda: datetime.now(UTC))

    async def resume() -> None:
        await policies.resume_notifications(datetime.now(UTC))

    loop = every(RESUME_S, resume, "policy notifications", log)
    return PolicyApp(store, policies, datamaps, PolicyServicer(policies, datamaps), loop)
