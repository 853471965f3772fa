"""The gRPC entrypoint of the privacy service: proto <-> domain, nothing else.

Each method validates the shape of its request, calls the domain and maps the result;
domain errors become gRPC statuses in the runtime's interceptor.
"""

from __future__ import annotations

from typing import Any

from gatemesh.privacy.v1 import privacy_pb2_grpc


class PrivacyServicer(privacy_pb2_grpc.PrivacyServiceServicer):
    """PrivacyService over the request domain."""

    def __init__(self, requests: Any) -> None:
        self.requests = requests
