"""Who may call what: the `gatemesh.common.v1.access` method option, enforced.

Each RPC declares its access level in the proto (PUBLIC, USER, ADMIN, COMPLIANCE,
INTERNAL; unset means INTERNAL). The server interceptor reads the declaration from the
descriptor pool once per method, checks the caller's credential, and puts the resolved
`Principal` in a context variable that servicers read with `principal()`.

- INTERNAL: the service credential, `x-gatemesh-service-token` metadata compared in
  constant time, or a client certificate when mutual TLS is configured.
- USER / ADMIN / COMPLIANCE: `authorization: Bearer <credential>`; the operator token from
  the settings is an admin; anything else goes to the service's `Authenticator` (auth
  resolves locally, the other services ask auth's `Authenticate` RPC). ADMIN and
  COMPLIANCE methods take a dashboard session of a staff account (or the operator token),
  never an API key, whatever the key's account's role.
"""

from __future__ import annotations

import contextvars
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
from google.protobuf import descriptor_pool

from gatemesh.common.v1 import common_pb2

from .errors import PermissionDenied, Unauthenticated
from .proto_types import has_option_extension, option_extension

SERVICE_TOKEN_HEADER = "x-gatemesh-service-token"

ROLE_USER, ROLE_ADMIN, ROLE_COMPLIANCE = 1, 2, 3  # gatemesh.auth.v1.Role values
# Staff methods. An API key of a staff account does not reach them: keys live in scripts and
# clients, so a leaked one must not grant credit or open anyone's personal data (P6.3).
STAFF = frozenset({common_pb2.ACCESS_ADMIN, common_pb2.ACCESS_COMPLIANCE})

# Standard services every server carries: probes and tools must reach them without credentials.
OPEN_SERVICES = frozenset(
    {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"}
)


@dataclass(frozen=True)
class Principal:
    """The caller of an RPC."""

    account_id: str = ""
    role: int = ROLE_USER
    key_id: str = ""
    session_id: str = ""
    operator: bool = False
    service: bool = False

    @property
    def is_admin(self) -> bool:
        return self.operator or self.role == ROLE_ADMIN

    @property
    def is_compliance(self) -> bool:
        return self.is_admin or self.role == ROLE_COMPLIANCE


ANONYMOUS = Principal(role=0)
_current: contextvars.ContextVar[Principal] = contextvars.ContextVar("gatemesh_principal", default=ANONYMOUS)

Authenticator = Callable[[str], Awaitable[Principal]]
"""Resolves a bearer credential to a Principal, or raises Unauthenticated."""


def principal() -> Principal:
    """The caller of the RPC being served."""
    return _current.get()


def set_principal(value: Principal) -> contextvars.Token[Principal]:
    return _current.set(value)


def method_access(full_method: str) -> int:
    """The declared access of '/pkg.Service/Method'; INTERNAL when undeclared or unknown."""
    service_name, _, method_name = full_method.lstrip("/").rpartition("/")
    if service_name in OPEN_SERVICES:
        return common_pb2.ACCESS_PUBLIC
    try:
        service = descriptor_pool.Default().FindServiceByName(service_name)
    except KeyError:
        return common_pb2.ACCESS_INTERNAL
    method = service.methods_by_name.get(method_name)
    if method is None:
        return common_pb2.ACCESS_INTERNAL
    options = method.GetOptions()
    if has_option_extension(options, common_pb2.access):
        return option_extension(options, common_pb2.access) or common_pb2.ACCESS_INTERNAL
    return common_pb2.ACCESS_INTERNAL


def bearer(metadata: dict[str, str]) -> str:
    """The credential of an `authorization: Bearer X` header, or ''."""
    value = metadata.get("authorization", "")
    scheme, _, credential = value.partition(" ")
    return credential.strip() if scheme.lower() == "bearer" else ""


class AccessPolicy:
    """Checks a call's credential against its method's declared access."""

    def __init__(
        self,
        service_token: str,
        admin_token: str,
        authenticator: Authenticator | None = None,
        mtls: bool = False,
    ) -> None:
        self._service_token = service_token.encode()
        self._admin_token = admin_token.encode()
        self._authenticator = authenticator
        self._mtls = mtls
        self._cache: dict[str, int] = {}

    def access_of(self, full_method: str) -> int:
        access = self._cache.get(full_method)
        if access is None:
            access = self._cache[full_method] = method_access(full_method)
        return access

    def is_service(self, metadata: dict[str, str], context: grpc.aio.ServicerContext) -> bool:
        token = metadata.get(SERVICE_TOKEN_HEADER, "").encode()
        if token and hmac.compare_digest(token, self._service_token):
            return True
        return self._mtls and bool(context.peer_identities())

    async def resolve(self, full_method: str, context: grpc.aio.ServicerContext) -> Principal:
        """The caller's Principal, or a DomainError when the method is not theirs to call."""
        access = self.access_of(full_method)
        if access == common_pb2.ACCESS_PUBLIC:
            return ANONYMOUS
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        if access == common_pb2.ACCESS_INTERNAL:
            if self.is_service(metadata, context):
                return Principal(role=0, service=True)
            raise Unauthenticated("this method is for Gatemesh services only: a service credential is required")
        caller = await self._user(metadata)
        if access in STAFF and caller.key_id:
            raise PermissionDenied("staff methods need a dashboard session or the operator credential, not an API key")
        if access == common_pb2.ACCESS_ADMIN and not caller.is_admin:
            raise PermissionDenied("this method needs the admin role")
        if access == common_pb2.ACCESS_COMPLIANCE and not caller.is_compliance:
            raise PermissionDenied("this method needs the compliance or admin role")
        return caller

    async def _user(self, metadata: dict[str, str]) -> Principal:
        credential = bearer(metadata)
        if not credential:
            raise Unauthenticated("missing credential: send 'Authorization: Bearer <token>'")
        if hmac.compare_digest(credential.encode(), self._admin_token):
            return Principal(role=ROLE_ADMIN, operator=True)
        if self._authenticator is None:
            raise Unauthenticated("invalid credential")
        return await self._authenticator(credential)
