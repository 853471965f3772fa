"""The policy service's adapters: auth's acceptances, and the participants' DescribeData.

`AuthAcceptances` pages auth's internal `ListAccountsByPolicyVersion` (ids only, never an
email). `DataMapSource` asks every configured participant for its data, adds privacy's own
record messages, and keeps the result for a minute: the map is public, and a public route
must not turn each hit into a fan-out over the mesh.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import grpc
from google.protobuf import json_format

from gatemesh.auth.v1 import auth_pb2, auth_pb2_grpc
from gatemesh.common.v1 import common_pb2
from gatemesh.privacy.v1 import participant_pb2, policy_pb2, privacy_pb2
from services.runtime.errors import Unavailable
from services.runtime.participant import describe_data

from . import datamap
from .participants import Participants

CACHE_S = 60.0
DESCRIBE_S = 5.0
OWN_FILES = (privacy_pb2.DESCRIPTOR, policy_pb2.DESCRIPTOR)


class AuthAcceptances:
    """Auth's list of active accounts that have not accepted a version."""

    def __init__(self, channel: grpc.aio.Channel, timeout_s: float = 30.0) -> None:
        self.stub = auth_pb2_grpc.AuthServiceStub(channel)
        self.timeout = timeout_s

    async def not_accepted(self, version: str, page_size: int, page_token: str) -> tuple[list[str], str]:
        request = auth_pb2.ListAccountsByPolicyVersionRequest(
            version=version, accepted=False, page=common_pb2.PageRequest(page_size=page_size, page_token=page_token)
        )
        try:
            reply = await self.stub.ListAccountsByPolicyVersion(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as error:
            raise Unavailable(f"auth did not list the accounts ({error.code().name})") from None
        return list(reply.account_ids), reply.page.next_page_token


def own_data() -> dict[str, Any]:
    """The privacy service's own personal fields, declared on its protos like everyone's."""
    described = describe_data("privacy", OWN_FILES)
    return json_format.MessageToDict(described, preserving_proto_field_name=True, use_integers_for_enums=True)


class DataMapSource:
    """The data map as the participants describe it now, cached for `cache_s`."""

    def __init__(self, participants: Participants, clock: Callable[[], datetime], cache_s: float = CACHE_S) -> None:
        self.participants = participants
        self.clock = clock
        self.cache_s = cache_s
        self._map: datamap.DataMap | None = None
        self._until = 0.0

    async def get(self) -> datamap.DataMap:
        if self._map is not None and time.monotonic() < self._until:
            return self._map
        names = [p.name for p in self.participants.configured]
        answers = await asyncio.gather(*(self._describe(name) for name in names))
        described = {name: answer for name, answer in zip(names, answers, strict=True) if answer is not None}
        unavailable = [name for name, answer in zip(names, answers, strict=True) if answer is None]
        described.setdefault("privacy", own_data())
        self._map = datamap.build(described, unavailable, self.clock())
        # An incomplete map is kept only briefly, so a participant back up shows up soon.
        self._until = time.monotonic() + (self.cache_s if not unavailable else min(self.cache_s, 5.0))
        return self._map

    async def _describe(self, name: str) -> dict[str, Any] | None:
        """One participant's answer, or None when it does not answer within DESCRIBE_S: a
        public route must not hang on one slow service."""
        try:
            reply = await self.participants.stub(name).DescribeData(
                participant_pb2.DescribeDataRequest(), timeout=DESCRIBE_S
            )
        except grpc.aio.AioRpcError:
            return None
        return json_format.MessageToDict(reply, preserving_proto_field_name=True, use_integers_for_enums=True)
