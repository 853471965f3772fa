"""Domain errors become gRPC statuses with google.rpc details and the edge's trailers."""

from __future__ import annotations

import json

import grpc
from google.rpc import error_details_pb2

from services.runtime.errors import InvalidArgument, ResourceExhausted, Violations


def test_invalid_argument_carries_field_violations() -> None:
    violations = Violations()
    violations.check(False, "email", "must be an email address")
    violations.check(True, "password", "unused")
    try:
        violations.raise_if_any()
    except InvalidArgument as error:
        status = error.to_status()
        assert status.code == grpc.StatusCode.INVALID_ARGUMENT
        trailers = dict(error.trailing_metadata())
        body = json.loads(trailers["gm-error-json"])
        assert body["error"]["type"] == "invalid_request_error"
        assert body["error"]["param"] == "email"
        assert trailers["gm-http-status"] == "400"
        from google.rpc import status_pb2

        parsed = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
        bad = error_details_pb2.BadRequest()
        assert parsed.details[0].Unpack(bad)
        assert [(v.field, v.description) for v in bad.field_violations] == [("email", "must be an email address")]
    else:
        raise AssertionError("no error raised")


def test_rate_limit_error_has_retry_after() -> None:
    error = ResourceExhausted("rate limit reached", retry_after_s=7, openai_code="rate_limit_exceeded")
    trailers = dict(error.trailing_metadata())
    assert trailers["retry-after"] == "7"
    assert trailers["gm-http-status"] == "429"
    assert json.loads(trailers["gm-error-json"])["error"]["code"] == "rate_limit_exceeded"
