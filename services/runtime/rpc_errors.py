"""Turn a failed call to another Gatemesh service back into a DomainError.

A service that calls another (the proxy calling auth and billing) often has to pass the
callee's verdict on to its own caller unchanged: the same code, message, retry delay and
reason. `domain_error` rebuilds the DomainError from the status and its google.rpc
details; a dependency that is down or misbehaving becomes `Unavailable`, never the
callee's internal message.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import error_details_pb2

from .errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    details_of,
)
from .proto_types import descriptor_of

_PASSED_ON: dict[grpc.StatusCode, type[DomainError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
}


def error_reason(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason of a failed call, or ''."""
    return _details(error)[1]


def _details(error: grpc.aio.AioRpcError) -> tuple[dict[str, str], str, int | None]:
    violations: dict[str, str] = {}
    reason = ""
    retry_after: int | None = None
    try:
        status = details_of(error)
    except Exception:  # malformed details must not hide the status itself
        status = None
    for detail in status.details if status is not None else ():
        if detail.Is(descriptor_of(error_details_pb2.BadRequest)):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.update({v.field: v.description for v in bad.field_violations})
        elif detail.Is(descriptor_of(error_details_pb2.ErrorInfo)):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(descriptor_of(error_details_pb2.RetryInfo)):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after = max(1, retry.retry_delay.seconds + (1 if retry.retry_delay.nanos else 0))
    return violations, reason, retry_after


def domain_error(error: grpc.aio.AioRpcError, service: str) -> DomainError:
    """The DomainError to raise for a failed call to `service`."""
    kind = _PASSED_ON.get(error.code())
    if kind is None:
        return Unavailable(f"the {service} service is not available", reason=f"{service}_unavailable")
    violations, reason, retry_after = _details(error)
    message = error.details() or kind.__name__
    # The message is the callee's full message; strip the violations it already lists.
    if violations and message.endswith(")") and " (" in message:
        message = message[: message.rindex(" (")]
    return kind(message, field_violations=violations, reason=reason, retry_after_s=retry_after)


def batch_item_error(item: Any, service: str) -> DomainError:
    """The DomainError a failed item of a batch RPC stands for (see `errors.batch_item`): the
    one the single call would have raised, down to its reason and retry delay."""
    code = getattr(grpc.StatusCode, item.error_code, grpc.StatusCode.UNKNOWN)
    kind = _PASSED_ON.get(code)
    if kind is None:
        return Unavailable(f"the {service} service is not available", reason=f"{service}_unavailable")
    retry_after = getattr(item, "retry_after_seconds", 0) or None
    return kind(item.error_message or kind.__name__, reason=item.error_reason, retry_after_s=retry_after)
