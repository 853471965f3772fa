"""The one server interceptor every service runs: access control, request rules, error mapping.

For each call it resolves the caller (see `access`), checks the request against the rules
its proto declares (see `validation`: INVALID_ARGUMENT with a field violation per bad field,
before the handler sees it), runs the handler with the Principal set, and turns a raised
`DomainError` into a gRPC status with details and the edge's trailers. An unexpected
exception becomes INTERNAL with a generic message (the traceback goes to the log, never to
the caller). Both unary and server-streaming handlers are
wrapped; these are the only shapes the contracts use.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import grpc

from .access import AccessPolicy, set_principal
from .errors import DomainError, Internal, InvalidArgument, Unavailable
from .faults import store_unreachable
from .validation import RequestRules

log = logging.getLogger("gatemesh.rpc")


async def abort_with(context: grpc.aio.ServicerContext, error: DomainError) -> None:
    """End the call with the error's status, details and edge trailers."""
    await context.abort(error.code, error.full_message(), trailing_metadata=error.trailing_metadata())


async def _fail(context: grpc.aio.ServicerContext, method: str, exc: BaseException) -> None:
    if isinstance(exc, DomainError):
        await abort_with(context, exc)
    if store_unreachable(exc):
        # Logged by type only: a driver's error text carries the statement's parameters.
        log.error("%s: a store was unreachable (%s); answered UNAVAILABLE", method, type(exc).__name__)
        await abort_with(context, Unavailable("a store of this service was briefly unreachable; retry"))
    log.exception("unhandled error in %s", method)
    await abort_with(context, Internal("internal error"))


def check_request(rules: RequestRules, request: Any) -> None:
    """Raise INVALID_ARGUMENT naming every field that breaks its declared rules."""
    problems = rules.violations(request)
    if problems:
        raise InvalidArgument("invalid request", field_violations=problems)


class HandlerWrapper(grpc.aio.ServerInterceptor):
    """Wraps each method's unary or server-streaming behaviour (`_wrap_unary`,
    `_wrap_stream`), once per (method, handler): the hot path pays no per-call wrapping."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:
            return handler
        cached = self._wrapped.get(details.method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(details.method, handler)
        self._wrapped[details.method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                # types-grpcio types unary_stream as the sync server's (an Iterator); on grpc.aio it is async
                self._wrap_stream(method, cast(Callable[..., AsyncIterator[Any]], handler.unary_stream)),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    @abc.abstractmethod
    def _wrap_unary(self, method: str, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        """The unary behaviour around `behavior` (each interceptor says what it adds)."""

    @abc.abstractmethod
    def _wrap_stream(
        self, method: str, behavior: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        """The server-streaming behaviour around `behavior`."""


class ServerInterceptor(HandlerWrapper):
    """Access control, request rules and domain-error mapping around every handler."""

    def __init__(self, policy: AccessPolicy, rules: RequestRules | None = None) -> None:
        super().__init__()
        self._policy = policy
        self._rules = rules or RequestRules()

    def _wrap_unary(self, method: str, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                set_principal(await self._policy.resolve(method, context))
                check_request(self._rules, request)
                return await behavior(request, context)
            except (grpc.aio.AbortError, grpc.aio.UsageError):
                raise
            except Exception as exc:
                await _fail(context, method, exc)

        return unary

    def _wrap_stream(
        self, method: str, behavior: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                set_principal(await self._policy.resolve(method, context))
                check_request(self._rules, request)
                async for response in behavior(request, context):
                    yield response
            except (grpc.aio.AbortError, grpc.aio.UsageError):
                raise
            except Exception as exc:
                await _fail(context, method, exc)

        return stream
