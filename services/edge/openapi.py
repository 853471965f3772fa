"""An OpenAPI 3 document generated from the descriptor set.

It is derived from the same `google.api.http` rules, message definitions and proto
comments that drive Envoy's transcoder, so the document cannot disagree with the API the
edge serves. JSON field names are the proto names, as the edge prints them
(`preserve_proto_field_names`); 64-bit integers are strings in responses, as proto3 JSON
prints them, and integers in requests (the edge accepts both), so that their ranges can
be stated; a message used both ways gets a `.Input` variant. The request rules the
contracts declare (see `services/runtime/validation.py`) become schema keywords:
`google.api.field_behavior = REQUIRED` -> `required`; buf.validate string `min_len`,
`max_len`, `pattern`, `email`, `in` -> `minLength`, `maxLength`, `pattern`,
`format: email`, `enum`; integer `gt`/`gte`/`lt`/`lte` -> `minimum`/`maximum` (exclusive
for gt/lt); bool `const` -> a one-value `enum`; repeated `min_items`/`max_items`/`items`
-> `minItems`/`maxItems`/`items`. The raw-body OpenAI methods (`google.api.HttpBody`)
are documented with OpenAI's fields (`raw_bodies`), and SSE when server-streaming.
`gatemesh openapi` prints it; the edge serves it at `/openapi.json`.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
from collections.abc import Sequence
from typing import Any

from buf.validate import validate_pb2
from google.api import field_behavior_pb2
from google.protobuf import descriptor_pb2

from gatemesh.common.v1 import common_pb2
from services.runtime.proto_types import option_extension
from services.runtime.settings import GatemeshSettings

from .descriptors import HttpMethod, descriptor_set, http_methods
from .raw_bodies import RAW_BODIES
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
WIDE_INTEGERS = {F.TYPE_INT64, F.TYPE_UINT64, F.TYPE_SINT64, F.TYPE_FIXED64, F.TYPE_SFIXED64}
UNSIGNED = {F.TYPE_UINT32, F.TYPE_UINT64, F.TYPE_FIXED32, F.TYPE_FIXED64}
INBOUND_WIDE = {"type": "integer", "format": "int64"}
INPUT_SUFFIX = ".Input"
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


def is_required(field: descriptor_pb2.FieldDescriptorProto) -> bool:
    """`google.api.field_behavior = REQUIRED`, or buf.validate's own `required`."""
    behaviors: Sequence[int] = option_extension(field.options, field_behavior_pb2.field_behavior)
    return field_behavior_pb2.REQUIRED in behaviors or rules_of(field).required


def rules_of(field: descriptor_pb2.FieldDescriptorProto) -> validate_pb2.FieldRules:
    return option_extension(field.options, validate_pb2.field)


def string_keywords(rules: validate_pb2.StringRules) -> dict[str, Any]:
    keywords: dict[str, Any] = {}
    if rules.HasField("min_len"):
        keywords["minLength"] = rules.min_len
    if rules.HasField("max_len"):
        keywords["maxLength"] = rules.max_len
    if rules.HasField("pattern"):
        keywords["pattern"] = rules.pattern
    if rules.email:
        keywords["format"] = "email"
    if getattr(rules, "in"):
        keywords["enum"] = list(getattr(rules, "in"))
    return keywords


def integer_keywords(rules: Any) -> dict[str, Any]:
    keywords: dict[str, Any] = {}
    for bound, keyword, exclusive in (
        ("gt", "minimum", "exclusiveMinimum"),
        ("gte", "minimum", None),
        ("lt", "maximum", "exclusiveMaximum"),
        ("lte", "maximum", None),
    ):
        if rules.HasField(bound):
            keywords[keyword] = getattr(rules, bound)
            if exclusive:
                keywords[exclusive] = True
    return keywords


def non_empty(schema: dict[str, Any]) -> dict[str, Any]:
    """A REQUIRED field's schema: the runtime takes an empty value for a missing one."""
    schema = dict(schema)
    kind = schema.get("type")
    if kind == "string" and "enum" not in schema:
        schema["minLength"] = max(1, schema.get("minLength", 0))
    elif kind == "array":
        schema["minItems"] = max(1, schema.get("minItems", 0))
    elif kind == "boolean" and "enum" not in schema:
        schema["enum"] = [True]
    elif kind == "integer" and not (schema.get("minimum", -1) > 0 or schema.get("exclusiveMinimum")):
        schema["not"] = {"enum": [0]}
    return schema


def value_keywords(rules: validate_pb2.FieldRules) -> dict[str, Any]:
    """The schema keywords of one value's buf.validate rules."""
    kind = rules.WhichOneof("type")
    if kind == "string":
        return string_keywords(rules.string)
    if kind in ("int32", "int64", "uint32", "uint64", "sint32", "sint64"):
        return integer_keywords(getattr(rules, kind))
    if kind == "bool" and rules.bool.HasField("const"):
        return {"enum": [rules.bool.const]}
    return {}


class SchemaBuilder:
    """Turns messages into `components.schemas` entries, following references.

    `inbound` schemas describe what a request may send (64-bit integers as integers); the
    others, what the edge prints. A message that is printed somewhere and differs inbound
    gets a second component, `<name>.Input`."""

    def __init__(self, catalog: Catalog, outbound: set[str] | None = None) -> None:
        self.catalog = catalog
        self.outbound = outbound or set()
        self.schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}

    def ref(self, type_name: str, inbound: bool = False) -> dict[str, Any]:
        if type_name in WELL_KNOWN:
            return dict(WELL_KNOWN[type_name])
        if type_name == HTTP_BODY:
            return dict(FREE_JSON)
        name = schema_name(type_name)
        inbound = inbound and self.has_wide_integers(type_name)
        if inbound and type_name in self.outbound:
            name += INPUT_SUFFIX
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder: breaks recursion
            self.schemas[name] = self.message_schema(type_name, inbound)
        return {"$ref": f"#/components/schemas/{name}"}

    def body_schema(self, type_name: str, path_fields: set[str]) -> dict[str, Any]:
        """The body of a `body: "*"` rule with path parameters: the fields the path binds
        are not in it (grpc-gateway's rule; a body value would override the path)."""
        schema = self.message_schema(type_name, inbound=True)
        schema["properties"] = {k: v for k, v in schema["properties"].items() if k not in path_fields}
        required = [name for name in schema.pop("required", []) if name not in path_fields]
        if required:
            schema["required"] = required
        return schema

    def named(self, name: str, schema: dict[str, Any]) -> dict[str, Any]:
        """A component written by hand (the raw OpenAI bodies), by reference."""
        self.schemas[name] = schema
        return {"$ref": f"#/components/schemas/{name}"}

    def has_wide_integers(self, type_name: str, seen: frozenset[str] = frozenset()) -> bool:
        """Whether the message (or one it holds) has a 64-bit integer field."""
        if type_name in seen or type_name not in self.catalog.messages:
            return False
        message, _ = self.catalog.messages[type_name]
        return any(
            f.type in WIDE_INTEGERS
            or (f.type == F.TYPE_MESSAGE and self.has_wide_integers(f.type_name, seen | {type_name}))
            for f in message.field
        )

    def message_schema(self, type_name: str, inbound: bool = False) -> dict[str, Any]:
        message, key = self.catalog.messages[type_name]
        properties = {}
        for index, field in enumerate(message.field):
            prop = self.field_schema(field, inbound)
            if is_required(field):
                prop = non_empty(prop)
            doc = self.catalog.comment(f"{key},2,{index}")
            if doc:
                prop = {**prop, "description": doc} if "$ref" not in prop else {"allOf": [prop], "description": doc}
            properties[field.name] = prop
        # The edge prints only the message's fields, and refuses a request body with others
        # (errors.lua: the transcoder alone would drop them silently).
        schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
        required = [field.name for field in message.field if is_required(field)]
        if required:
            schema["required"] = required
        doc = self.catalog.comment(key)
        if doc:
            schema["description"] = doc
        return schema

    def field_schema(self, field: descriptor_pb2.FieldDescriptorProto, inbound: bool = False) -> dict[str, Any]:
        rules = rules_of(field)
        if field.type == F.TYPE_MESSAGE:
            entry = self.catalog.messages.get(field.type_name)
            if entry is not None and entry[0].options.map_entry:
                value_field = entry[0].field[1]
                return {"type": "object", "additionalProperties": self.field_schema(value_field, inbound)}
            single = self.ref(field.type_name, inbound)
        elif field.type == F.TYPE_ENUM:
            enum = self.catalog.enums[field.type_name]
            single = {"type": "string", "enum": [value.name for value in enum.value]}
        elif inbound and field.type in WIDE_INTEGERS:
            single = dict(INBOUND_WIDE)
        else:
            single = dict(SCALARS[field.type])
        if field.type in UNSIGNED and single.get("type") == "integer":
            single["minimum"] = 0
        if field.label != F.LABEL_REPEATED:
            return {**single, **value_keywords(rules)} if "$ref" not in single else single
        repeated = rules.repeated if rules.WhichOneof("type") == "repeated" else validate_pb2.RepeatedRules()
        items = {**single, **value_keywords(repeated.items)} if "$ref" not in single else single
        schema: dict[str, Any] = {"type": "array", "items": items}
        if repeated.HasField("min_items"):
            schema["minItems"] = repeated.min_items
        if repeated.HasField("max_items"):
            schema["maxItems"] = repeated.max_items
        return schema


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
        param: dict[str, Any] = {"name": name, "in": "query", "required": is_required(field)}
        param["schema"] = builder.field_schema(field, inbound=True)
        if is_required(field):
            param["schema"] = non_empty(param["schema"])
        doc = builder.catalog.comment(f"{key},2,{index}")
        if doc:
            param["description"] = doc
        params.append(param)
    return params


def path_parameter(builder: SchemaBuilder, type_name: str, name: str) -> dict[str, Any]:
    """A path parameter, with the rules of the field it binds."""
    schema: dict[str, Any] = {"type": "string"}
    message, _ = builder.catalog.messages[type_name]
    field = next((f for f in message.field if f.name == name), None)
    if field is not None:
        schema = non_empty(builder.field_schema(field, inbound=True))
    return {"name": name, "in": "path", "required": True, "schema": schema}


def outbound_types(catalog: Catalog, methods: list[HttpMethod]) -> set[str]:
    """Every message a response prints, directly or inside another."""
    found: set[str] = set()
    pending = [item.method.output_type for item in methods]
    while pending:
        name = pending.pop()
        if name in found or name not in catalog.messages:
            continue
        found.add(name)
        pending.extend(f.type_name for f in catalog.messages[name][0].field if f.type == F.TYPE_MESSAGE)
    return found


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
    parameters = [path_parameter(builder, method.input_type, n) for n in path_fields]
    raw = RAW_BODIES.get(f"{item.service_full_name}.{method.name}")
    if raw is not None:
        parameters += [dict(header) for header in raw.headers]
    if raw is not None and raw.request is not None:
        op["requestBody"] = json_body(builder.named(f"{raw.name}Request", raw.request))
    elif item.rule.body == "*" and path_fields:
        op["requestBody"] = json_body(builder.body_schema(method.input_type, set(path_fields)))
    elif item.rule.body == "*":
        op["requestBody"] = json_body(builder.ref(method.input_type, inbound=True))
    elif item.rule.body:
        message, _ = builder.catalog.messages[method.input_type]
        field = next(f for f in message.field if f.name == item.rule.body)
        op["requestBody"] = json_body(builder.field_schema(field, inbound=True))
        parameters += query_parameters(builder, method.input_type, {*path_fields, item.rule.body})
    else:
        parameters += query_parameters(builder, method.input_type, set(path_fields))
    if parameters:
        op["parameters"] = parameters
    output = builder.named(f"{raw.name}Response", raw.response) if raw is not None else builder.ref(method.output_type)
    content = {"application/json": {"schema": output}}
    if method.server_streaming:
        content["text/event-stream"] = {"schema": {"type": "string", "description": "Server-sent events."}}
    error = {"description": "An error in OpenAI's shape.", "content": {"application/json": {"schema": ERROR_REF}}}
    op["responses"] = {"200": {"description": "OK", "content": content}, "default": error}
    if item.access != common_pb2.ACCESS_PUBLIC:
        op["security"] = [{"bearer": []}]
    return op


# Fields whose one accepted value is configuration, not contract: the current policy version.
POLICY_VERSION_FIELDS = (
    ("gatemesh.auth.v1.SignUpRequest", "accepted_policy_version"),
    ("gatemesh.auth.v1.AcceptPolicyRequest", "version"),
)


def state_policy_version(schemas: dict[str, Any], version: str) -> None:
    """Sign-up and policy acceptance take only the current version: say which it is."""
    for name, field in POLICY_VERSION_FIELDS:
        prop = schemas.get(name, {}).get("properties", {}).get(field)
        if prop is not None:
            prop["enum"] = [version]


def document(mesh_services: Sequence[str] = MESH_SERVICES, policy_version: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.0 document of the REST API of the given services; `policy_version`
    (default: the configured one) is stated as the only value sign-up accepts."""
    if policy_version is None:
        policy_version = GatemeshSettings.model_fields["auth_policy_version"].default
    catalog = Catalog(descriptor_set())
    methods = [item for item in http_methods() if item.mesh_service in mesh_services]
    builder = SchemaBuilder(catalog, outbound_types(catalog, methods))
    paths: dict[str, dict[str, Any]] = {}
    for item in methods:
        verb, template = item.verb_and_path()
        paths.setdefault(openapi_path(template), {})[verb] = operation(builder, item)
    state_policy_version(builder.schemas, policy_version)
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
