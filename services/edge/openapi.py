"""An OpenAPI 3 document generated from the descriptor set.

It is derived from the same `google.api.http` rules, message definitions and proto
comments that drive Envoy's transcoder, so the document cannot disagree with the API the
edge serves. JSON field names are the proto names, as the edge prints them
(`preserve_proto_field_names`); 64-bit integers are strings, as proto3 JSON has them.
Raw-body methods (`google.api.HttpBody`) take and return free-form JSON, and SSE when
they are server-streaming. `gatemesh openapi` prints it; the edge serves it at
`/openapi.json`.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
from collections.abc import Sequence
from typing import Any

from google.protobuf import descriptor_pb2

from gatemesh.common.v1 import common_pb2

from .descriptors import HttpMethod, descriptor_set, http_methods
from .settings import MESH_SERVICES

F = descriptor_pb2.FieldDescriptorProto
HTTP_BODY = ".google.api.HttpBody"
SCALARS: dict[int, dict[str, Any]] = {
    F.TYPE_DOUBLE: {"type": "number", "format": "double"},
    F.TYPE_FLOAT: {"type": "number", "format": "float"},
    F.TYPE_INT64: {"type": "string", "format": "int64"},
    F.TYPE_UINT64: {"type": "string", "format": "uint64"},
    F.TYPE_SINT64: {"type": "string", "format": "int64"},
    F.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    F.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    F.TYPE_INT32: {"type": "integer", "format": "int32"},
    F.TYPE_SINT32: {"type": "integer", "format": "int32"},
    F.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    F.TYPE_UINT32: {"type": "integer", "format": "int64"},
    F.TYPE_FIXED32: {"type": "integer", "format": "int64"},
    F.TYPE_BOOL: {"type": "boolean"},
    F.TYPE_STRING: {"type": "string"},
    F.TYPE_BYTES: {"type": "string", "format": "byte"},
}
WELL_KNOWN: dict[str, dict[str, Any]] = {
    ".google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    ".google.protobuf.Duration": {"type": "string", "example": "1.5s"},
    ".google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    ".google.protobuf.Value": {},
    ".google.protobuf.Empty": {"type": "object"},
    ".google.protobuf.FieldMask": {"type": "string"},
    ".google.protobuf.StringValue": {"type": "string", "nullable": True},
    ".google.protobuf.BoolValue": {"type": "boolean", "nullable": True},
    ".google.protobuf.Int64Value": {"type": "string", "format": "int64", "nullable": True},
    ".google.protobuf.Int32Value": {"type": "integer", "format": "int32", "nullable": True},
    ".google.protobuf.DoubleValue": {"type": "number", "nullable": True},
}
FREE_JSON = {"type": "object", "additionalProperties": True}
ERROR_SCHEMA = {
    "type": "object",
    "description": "OpenAI's error shape, used for every error the edge returns.",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string", "example": "invalid_request_error"},
                "param": {"type": "string", "nullable": True},
                "code": {"type": "string", "nullable": True},
            },
        }
    },
}
ERROR_REF = {"$ref": "#/components/schemas/Error"}
PATH_PARAM = re.compile(r"\{([^}=]+)(=[^}]*)?\}")


class Catalog:
    """Messages, enums and comments of a descriptor set, by full name."""

    def __init__(self, fds: descriptor_pb2.FileDescriptorSet) -> None:
        self.messages: dict[str, tuple[descriptor_pb2.DescriptorProto, str]] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self.comments: dict[tuple[str, tuple[int, ...]], str] = {}
        for file in fds.file:
            for loc in file.source_code_info.location:
                if loc.leading_comments.strip():
                    self.comments[(file.name, tuple(loc.path))] = loc.leading_comments.strip()
            for index, message in enumerate(file.message_type):
                self._add_message(file, f".{file.package}", message, (4, index))
            for enum in file.enum_type:
                self.enums[f".{file.package}.{enum.name}"] = enum

    def _add_message(self, file: Any, scope: str, message: Any, path: tuple[int, ...]) -> None:
        name = f"{scope}.{message.name}"
        self.messages[name] = (message, self.comments_key(file.name, path))
        for index, nested in enumerate(message.nested_type):
            self._add_message(file, name, nested, (*path, 3, index))
        for enum in message.enum_type:
            self.enums[f"{name}.{enum.name}"] = enum

    @staticmethod
    def comments_key(file_name: str, path: tuple[int, ...]) -> str:
        return f"{file_name}|{','.join(map(str, path))}"

    def comment(self, key: str) -> str:
        file_name, _, path = key.partition("|")
        return self.comments.get((file_name, tuple(int(p) for p in path.split(",") if p)), "")


def schema_name(full_name: str) -> str:
    return full_name.lstrip(".")


class SchemaBuilder:
    """Turns messages into `components.schemas` entries, following references."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}

    def ref(self, type_name: str) -> dict[str, Any]:
        if type_name in WELL_KNOWN:
            return dict(WELL_KNOWN[type_name])
        if type_name == HTTP_BODY:
            return dict(FREE_JSON)
        name = schema_name(type_name)
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder: breaks recursion
            self.schemas[name] = self.message_schema(type_name)
        return {"$ref": f"#/components/schemas/{name}"}

    def message_schema(self, type_name: str) -> dict[str, Any]:
        message, key = self.catalog.messages[type_name]
        properties = {}
        for index, field in enumerate(message.field):
            prop = self.field_schema(field)
            doc = self.catalog.comment(f"{key},2,{index}")
            if doc:
                prop = {**prop, "description": doc} if "$ref" not in prop else {"allOf": [prop], "description": doc}
            properties[field.name] = prop
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        doc = self.catalog.comment(key)
        if doc:
            schema["description"] = doc
        return schema

    def field_schema(self, field: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        if field.type == F.TYPE_MESSAGE:
            entry = self.catalog.messages.get(field.type_name)
            if entry is not None and entry[0].options.map_entry:
                value_field = entry[0].field[1]
                return {"type": "object", "additionalProperties": self.field_schema(value_field)}
            single = self.ref(field.type_name)
        elif field.type == F.TYPE_ENUM:
            enum = self.catalog.enums[field.type_name]
            single = {"type": "string", "enum": [value.name for value in enum.value]}
        else:
            single = dict(SCALARS[field.type])
        if field.label == F.LABEL_REPEATED:
            return {"type": "array", "items": single}
        return single


def openapi_path(template: str) -> str:
    return PATH_PARAM.sub(lambda m: "{" + m.group(1) + "}", template)


def query_parameters(builder: SchemaBuilder, type_name: str, skip: set[str], prefix: str = "") -> list[dict[str, Any]]:
    """grpc-gateway's rule: fields not bound by the path or body are query parameters."""
    if type_name not in builder.catalog.messages:
        return []
    message, key = builder.catalog.messages[type_name]
    params = []
    for index, field in enumerate(message.field):
        name = f"{prefix}{field.name}"
        if name in skip:
            continue
        if field.type == F.TYPE_MESSAGE and field.type_name not in WELL_KNOWN:
            params.extend(query_parameters(builder, field.type_name, skip, f"{name}."))
            continue
        param: dict[str, Any] = {"name": name, "in": "query", "required": False}
        param["schema"] = builder.field_schema(field)
        doc = builder.catalog.comment(f"{key},2,{index}")
        if doc:
            param["description"] = doc
        params.append(param)
    return params


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def operation(builder: SchemaBuilder, item: HttpMethod) -> dict[str, Any]:
    method = item.method
    _verb, template = item.verb_and_path()
    path_fields = [m.group(1) for m in PATH_PARAM.finditer(template)]
    op: dict[str, Any] = {"operationId": f"{item.service.name}_{method.name}", "tags": [item.service.name]}
    doc = builder.catalog.comment(Catalog.comments_key(item.file.name, (6, item.service_index, 2, item.method_index)))
    if doc:
        op["summary"] = doc.splitlines()[0]
        op["description"] = doc
    parameters = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in path_fields]
    if item.rule.body == "*":
        op["requestBody"] = json_body(builder.ref(method.input_type))
    elif item.rule.body:
        message, _ = builder.catalog.messages[method.input_type]
        field = next(f for f in message.field if f.name == item.rule.body)
        op["requestBody"] = json_body(builder.field_schema(field))
        parameters += query_parameters(builder, method.input_type, {*path_fields, item.rule.body})
    else:
        parameters += query_parameters(builder, method.input_type, set(path_fields))
    if parameters:
        op["parameters"] = parameters
    content = {"application/json": {"schema": builder.ref(method.output_type)}}
    if method.server_streaming:
        content["text/event-stream"] = {"schema": {"type": "string", "description": "Server-sent events."}}
    error = {"description": "An error in OpenAI's shape.", "content": {"application/json": {"schema": ERROR_REF}}}
    op["responses"] = {"200": {"description": "OK", "content": content}, "default": error}
    if item.access != common_pb2.ACCESS_PUBLIC:
        op["security"] = [{"bearer": []}]
    return op


def document(mesh_services: Sequence[str] = MESH_SERVICES) -> dict[str, Any]:
    """The OpenAPI 3.0 document of the REST API of the given services."""
    builder = SchemaBuilder(Catalog(descriptor_set()))
    paths: dict[str, dict[str, Any]] = {}
    for item in http_methods():
        if item.mesh_service not in mesh_services:
            continue
        verb, template = item.verb_and_path()
        paths.setdefault(openapi_path(template), {})[verb] = operation(builder, item)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Gatemesh API",
            "version": importlib.metadata.version("gatemesh"),
            "description": "OpenAI-compatible model API and account, key and billing APIs, "
            "generated from the gRPC contracts' google.api.http annotations.",
        },
        "paths": paths,
        "components": {
            "schemas": builder.schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "API key or session"}},
        },
    }


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"
