"""The descriptor set generated from `protos/` and the HTTP rules in it.

Both the Envoy config (which services to transcode, how to route them) and the OpenAPI
document read the same `gen/gatemesh/descriptor.pb`, installed as package data of
`gatemesh`, so the REST surface follows the contracts and nothing else.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

from gatemesh.common.v1 import common_pb2

DESCRIPTOR_RESOURCE = "descriptor.pb"


def descriptor_path() -> Path:
    """The descriptor set's file (the editable install and wheels both keep it on disk)."""
    resource = importlib.resources.files("gatemesh") / DESCRIPTOR_RESOURCE
    return Path(str(resource))


@cache
def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    # The annotations_pb2 and common_pb2 imports register the extensions read below.
    return descriptor_pb2.FileDescriptorSet.FromString(descriptor_path().read_bytes())


@dataclass(frozen=True)
class HttpMethod:
    """One RPC with its `google.api.http` rule."""

    file: descriptor_pb2.FileDescriptorProto
    service: descriptor_pb2.ServiceDescriptorProto
    service_index: int
    method: descriptor_pb2.MethodDescriptorProto
    method_index: int
    rule: http_pb2.HttpRule

    @property
    def service_full_name(self) -> str:
        return f"{self.file.package}.{self.service.name}"

    @property
    def mesh_service(self) -> str:
        """The Gatemesh service that serves it: `gatemesh.<name>.v1` -> `<name>`."""
        return self.file.package.split(".")[1]

    @property
    def access(self) -> int:
        return self.method.options.Extensions[common_pb2.access]

    def verb_and_path(self) -> tuple[str, str]:
        verb = self.rule.WhichOneof("pattern") or "custom"
        if verb == "custom":
            return self.rule.custom.kind.lower(), self.rule.custom.path
        return verb, getattr(self.rule, verb)


def http_methods(fds: descriptor_pb2.FileDescriptorSet | None = None) -> Iterator[HttpMethod]:
    """Every gatemesh RPC that carries an HTTP rule, in descriptor order."""
    for file in (fds or descriptor_set()).file:
        if not file.package.startswith("gatemesh."):
            continue
        for s_index, service in enumerate(file.service):
            for m_index, method in enumerate(service.method):
                if method.options.HasExtension(annotations_pb2.http):
                    rule = method.options.Extensions[annotations_pb2.http]
                    yield HttpMethod(file, service, s_index, method, m_index, rule)


def rest_services(mesh_services: list[str] | tuple[str, ...]) -> dict[str, list[str]]:
    """{mesh service: [full gRPC service names with HTTP rules]} for the given services."""
    found: dict[str, list[str]] = {}
    for item in http_methods():
        if item.mesh_service in mesh_services and item.service_full_name not in found.get(item.mesh_service, []):
            found.setdefault(item.mesh_service, []).append(item.service_full_name)
    return found
