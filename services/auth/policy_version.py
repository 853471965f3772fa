"""The policy version accounts must accept: the one the privacy service publishes (P10.2).

Auth asks privacy's public `GetCurrentPolicy` and keeps the answer for a short while
(`auth_policy_cache_s`, and never past the moment a scheduled version takes effect), so
sign-ups and acceptances do not make a call each. While privacy has no version published,
the configured `auth_policy_version` is the current one. When privacy cannot be reached,
the last version it gave is kept (a privacy outage must not stop sign-ups); only if it was
never reached does the configured version stand in.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import grpc

from gatemesh.privacy.v1 import policy_pb2, policy_pb2_grpc
from services.runtime.timestamps import from_timestamp

log = logging.getLogger("gatemesh.auth")

TIMEOUT_S = 2.0
RETRY_S = 5.0  # after a failure, how long the fallback stands before privacy is asked again


class PublishedPolicy:
    """`await PublishedPolicy(...)()` is the current version, cached briefly."""

    def __init__(self, channel: grpc.aio.Channel, fallback: str, cache_s: float) -> None:
        self.stub = policy_pb2_grpc.PolicyServiceStub(channel)
        self.fallback = fallback
        self.cache_s = cache_s
        self._version = ""
        self._until = 0.0

    async def __call__(self) -> str:
        if self._version and time.monotonic() < self._until:
            return self._version
        try:
            reply = await self.stub.GetCurrentPolicy(policy_pb2.GetCurrentPolicyRequest(), timeout=TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            log.warning("privacy did not give the current policy version (%s)", error.code().name)
            self._version = self._version or self.fallback
            self._until = time.monotonic() + min(self.cache_s, RETRY_S)
            return self._version
        self._version = reply.current.version if reply.HasField("current") else self.fallback
        self._until = time.monotonic() + self._ttl(reply)
        return self._version

    def _ttl(self, reply: policy_pb2.GetCurrentPolicyResponse) -> float:
        """The cache lifetime, cut short so a scheduled version is honoured when it starts."""
        ttl = self.cache_s
        starts = from_timestamp(reply.upcoming.effective_at) if reply.HasField("upcoming") else None
        if starts is not None:
            ttl = min(ttl, max(0.0, (starts - datetime.now(UTC)).total_seconds()))
        return ttl
