"""Resolve a caller's bearer credential by asking the auth service.

Billing, proxy and privacy serve USER-level RPCs (balance, usage, privacy requests) but
own no credentials: their access policy hands the credential to `remote_authenticator`,
which calls `AuthService.Authenticate` over the pooled service channel. No cache: a
revoked key or ended session is refused at once, and these RPCs are not the hot path
(the proxy's hot path uses `VerifyKey`, which auth caches in Redis).
"""

from __future__ import annotations

import grpc

from gatemesh.auth.v1 import auth_pb2, auth_pb2_grpc

from .access import Authenticator, Principal
from .clients import service_channel
from .errors import Unauthenticated, Unavailable
from .settings import GatemeshSettings


def principal_from_proto(message: auth_pb2.Principal) -> Principal:
    return Principal(
        account_id=message.account_id,
        role=message.role,
        key_id=message.key_id,
        session_id=message.session_id,
        operator=message.operator,
    )


def remote_authenticator(settings: GatemeshSettings, channel: grpc.aio.Channel | None = None) -> Authenticator:
    """An Authenticator backed by auth's `Authenticate` RPC."""
    stub = auth_pb2_grpc.AuthServiceStub(channel or service_channel(settings.auth_addr, settings))

    async def authenticate(credential: str) -> Principal:
        try:
            reply = await stub.Authenticate(auth_pb2.AuthenticateRequest(credential=credential), timeout=5)
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                raise Unauthenticated("invalid or expired credential") from None
            raise Unavailable("the auth service is not available") from None
        return principal_from_proto(reply.principal)

    return authenticate
