"""Domain errors and their mapping to gRPC status with `google.rpc` details.

The domain raises `DomainError` subclasses; the server interceptor turns them into a gRPC
status with details (BadRequest field violations, RetryInfo, ErrorInfo) via grpcio-status,
and adds two ASCII trailers for the REST edge: `gm-error-json`, the finished OpenAI-style
error body that the edge's Lua filter makes the HTTP body, `gm-http-status`, the HTTP status it sets
(so that an upstream failure is a 502 although gRPC has no such code), and `retry-after`
where it applies. Messages never carry content, secrets or keys: they say what is wrong, not what
was sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_JSON_TRAILER = "gm-error-json"
HTTP_STATUS_TRAILER = "gm-http-status"


@dataclass
class DomainError(Exception):
    """A failure the caller can act on. Subclasses fix the gRPC code and the OpenAI type."""

    message: str
    field_violations: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    openai_code: str | None = None
    param: str | None = None
    retry_after_s: int | None = None

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN
    openai_type: ClassVar[str] = "api_error"
    http_status: ClassVar[int] = 500

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message

    def openai_body(self) -> dict[str, object]:
        """The error in OpenAI's shape, as the SDKs parse it."""
        param = self.param or (next(iter(self.field_violations)) if self.field_violations else None)
        return {
            "error": {
                "message": self.full_message(),
                "type": self.openai_type,
                "param": param,
                "code": self.openai_code or self.reason or None,
            }
        }

    def full_message(self) -> str:
        if not self.field_violations:
            return self.message
        details = "; ".join(f"{name}: {why}" for name, why in self.field_violations.items())
        return f"{self.message} ({details})"

    def to_status(self) -> grpc.Status:
        """The gRPC status, with google.rpc details packed in `grpc-status-details-bin`."""
        status = status_pb2.Status(code=_RPC_CODES[self.code], message=self.full_message())
        if self.field_violations:
            bad = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=name, description=why)
                    for name, why in self.field_violations.items()
                ]
            )
            status.details.add().Pack(bad)
        if self.retry_after_s is not None:
            retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=self.retry_after_s))
            status.details.add().Pack(retry)
        if self.reason:
            status.details.add().Pack(error_details_pb2.ErrorInfo(reason=self.reason, domain="gatemesh"))
        return rpc_status.to_status(status)

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        """Status details plus the edge's trailers."""
        status = self.to_status()
        extra: list[tuple[str, str | bytes]] = [
            (ERROR_JSON_TRAILER, json.dumps(self.openai_body(), ensure_ascii=True, separators=(",", ":"))),
            (HTTP_STATUS_TRAILER, str(self.http_status)),
        ]
        if self.retry_after_s is not None:
            extra.append(("retry-after", str(max(1, self.retry_after_s))))
        return tuple(status.trailing_metadata) + tuple(extra)


class InvalidArgument(DomainError):
    """The request is malformed; field_violations say where."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    openai_type = "invalid_request_error"
    http_status = 400


class NotFound(DomainError):
    """The named thing does not exist (or is not the caller's)."""

    code = grpc.StatusCode.NOT_FOUND
    openai_type = "not_found_error"
    http_status = 404


class AlreadyExists(DomainError):
    """It exists already, or an idempotency key was reused with other parameters."""

    code = grpc.StatusCode.ALREADY_EXISTS
    openai_type = "invalid_request_error"
    http_status = 409


class FailedPrecondition(DomainError):
    """The system is not in a state that allows this."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    openai_type = "invalid_request_error"
    http_status = 400


class Unauthenticated(DomainError):
    """No valid credential."""

    code = grpc.StatusCode.UNAUTHENTICATED
    openai_type = "authentication_error"
    http_status = 401


class PermissionDenied(DomainError):
    """The credential does not allow this."""

    code = grpc.StatusCode.PERMISSION_DENIED
    openai_type = "permission_error"
    http_status = 403


class ResourceExhausted(DomainError):
    """A rate limit or quota is used up; retry_after_s says when to retry."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    openai_type = "rate_limit_error"
    http_status = 429


class Unavailable(DomainError):
    """A dependency is down; retrying may help."""

    code = grpc.StatusCode.UNAVAILABLE
    openai_type = "api_error"
    http_status = 503


class DeadlineExceeded(DomainError):
    """A dependency took too long."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    openai_type = "api_error"
    http_status = 504


class Internal(DomainError):
    """A bug or broken invariant; never caused by the caller."""

    code = grpc.StatusCode.INTERNAL
    openai_type = "api_error"
    http_status = 500


class Aborted(DomainError):
    """A concurrent change won; retrying may help."""

    code = grpc.StatusCode.ABORTED
    openai_type = "api_error"
    http_status = 409


class BadGateway(DomainError):
    """An upstream provider failed (the edge maps it to 502)."""

    code = grpc.StatusCode.UNKNOWN
    openai_type = "api_error"
    http_status = 502


_RPC_CODES = {code: getattr(code_pb2, code.name) for code in grpc.StatusCode}


class Violations:
    """Collects field violations so that every problem in a request is reported at once.

    Usage: `v = Violations(); v.check(cond, "email", "must be an email address"); v.raise_if_any()`.
    """

    def __init__(self) -> None:
        self.items: dict[str, str] = {}

    def check(self, ok: bool, field_name: str, why: str) -> None:
        if not ok and field_name not in self.items:
            self.items[field_name] = why

    def add(self, field_name: str, why: str) -> None:
        self.check(False, field_name, why)

    def raise_if_any(self, message: str = "invalid request") -> None:
        if self.items:
            raise InvalidArgument(message, field_violations=dict(self.items))


def details_of(error: grpc.aio.AioRpcError | grpc.RpcError) -> status_pb2.Status | None:
    """The google.rpc.Status of a failed call, for clients that want the field violations."""
    return rpc_status.from_call(error)  # type: ignore[arg-type]  # its stubs want a sync grpc.Call


def batch_item(item_type: Any, outcome: Any, response_of: Callable[[Any], Any]) -> Any:
    """One outcome of a batch RPC (HoldBatch, SettleBatch, VerifyKeyBatch) as its proto item:
    the response, or what a single call would have raised (status name, message, reason and,
    where the item has the field, the retry delay); an unexpected error says no more."""
    if not isinstance(outcome, Exception):  # the common case first: batches are mostly successes
        return item_type(result=response_of(outcome))
    if isinstance(outcome, DomainError):
        error: dict[str, Any] = {
            "error_code": outcome.code.name,
            "error_message": outcome.full_message(),
            "error_reason": outcome.reason,
        }
        if outcome.retry_after_s and "retry_after_seconds" in item_type.DESCRIPTOR.fields_by_name:
            error["retry_after_seconds"] = outcome.retry_after_s
        return item_type(**error)
    return item_type(error_code="INTERNAL", error_message="internal error")
