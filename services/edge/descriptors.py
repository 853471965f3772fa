"""The descriptor set generated from `protos/` and the HTTP rules in it.

Both the Envoy config (which services to transcode, how to route them) and the OpenAPI
document read the same `gen/gatemesh/descriptor.pb`, installed as package data of
`gatemesh`, so the REST surface follows the contracts and nothing else.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from buf.validate import validate_pb2  # noqa: F401 (registers the rules' extensions)
from google.api import annotations_pb2, field_behavior_pb2, http_pb2  # noqa: F401
from google.protobuf import descriptor_pb2

from gatemesh.common.v1 import common_pb2
from services.runtime.proto_types import has_option_extension, option_extension

DESCRIPTOR_RESOURCE = "descriptor.pb"
TIMESTAMP = ".google.protobuf.Timestamp"
HTTP_BODY = ".google.api.HttpBody"


def descriptor_path() -> Path:
    """The descriptor set's file (the editable install and wheels both keep it on disk)."""
    resource = importlib.resources.files("gatemesh") / DESCRIPTOR_RESOURCE
    return Path(str(resource))


@cache
def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    # The annotations_pb2, common_pb2, validate_pb2 and field_behavior_pb2 imports register
    # the extensions read from it (HTTP rules, access, request rules).
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
        return option_extension(self.method.options, common_pb2.access)

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
                if has_option_extension(method.options, annotations_pb2.http):
                    rule: http_pb2.HttpRule = option_extension(method.options, annotations_pb2.http)
                    yield HttpMethod(file, service, s_index, method, m_index, rule)


def rest_services(mesh_services: list[str] | tuple[str, ...]) -> dict[str, list[str]]:
    """{mesh service: [full gRPC service names with HTTP rules]} for the given services."""
    found: dict[str, list[str]] = {}
    for item in http_methods():
        if item.mesh_service in mesh_services and item.service_full_name not in found.get(item.mesh_service, []):
            found.setdefault(item.mesh_service, []).append(item.service_full_name)
    return found


def messages(fds: descriptor_pb2.FileDescriptorSet | None = None) -> dict[str, descriptor_pb2.DescriptorProto]:
    """Every message of the descriptor set by full name (`.gatemesh.auth.v1.SignUpRequest`)."""
    found: dict[str, descriptor_pb2.DescriptorProto] = {}

    def add(scope: str, message: descriptor_pb2.DescriptorProto) -> None:
        found[f"{scope}.{message.name}"] = message
        for nested in message.nested_type:
            add(f"{scope}.{message.name}", nested)

    for file in (fds or descriptor_set()).file:
        for message in file.message_type:
            add(f".{file.package}", message)
    return found


def query_fields(item: HttpMethod, type_name: str = TIMESTAMP) -> list[str]:
    """The query parameters of a method (grpc-gateway's rule: the request fields neither the
    path nor the body binds) whose type is `type_name`, by their dotted names."""
    if item.rule.body == "*":
        return []
    bound = {m.split("=")[0] for m in re.findall(r"\{([^}]+)\}", item.verb_and_path()[1])} | {item.rule.body}
    index = messages()
    found: list[str] = []

    def walk(message_type: str, prefix: str, depth: int) -> None:
        for field in index[message_type].field if message_type in index else ():
            name = f"{prefix}{field.name}"
            if name in bound or depth > 4:
                continue
            if field.type_name == type_name:
                found.append(name)
            elif field.type == descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE:
                walk(field.type_name, f"{name}.", depth + 1)

    walk(item.method.input_type, "", 0)
    return found
