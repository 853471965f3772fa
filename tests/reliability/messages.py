"""Every RPC of the contracts, and a valid request for any of them, made from the descriptors.

`contract_services()` imports every generated `*_pb2` module under `gen/gatemesh` and
returns each service the protos declare, so a test that walks them covers an RPC added
tomorrow without being edited. `minimal_request(method, fill)` builds the smallest request
that passes the contract's own rules (`services.runtime.validation.RequestRules`): each
required field, and each field whose rules refuse its zero value, gets a value of the
right kind. `Fill` says what to put in fields that name something: whose ids (an account,
a key, a privacy request), which email and password; a field it does not know gets a
well-formed value that names nothing.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api import annotations_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

import gatemesh
from gatemesh.common.v1 import common_pb2
from services.runtime.access import method_access
from services.runtime.validation import RequestRules, field_rules, is_required

RULES = RequestRules()
# A body every OpenAI-style route accepts (chat completions and embeddings read their own fields).
OPENAI_BODY = {"model": "gm-test", "messages": [{"role": "user", "content": "hello"}], "input": "hello"}
# Values tried, in order, for a string field with a pattern (the first that matches wins).
# The shapes of the ids the services mint (auth's `new_id`, privacy's request ids).
ID_PREFIXES = {"account_id": "acct_", "key_id": "key_", "request_id": "pr_"}
PATTERN_SAMPLES = ("matrix-1", "2026-11", "https://example.com/back", "GM" + "A" * 20, "a")


@dataclass
class Fill:
    """What the named fields of a generated request hold."""

    ids: dict[str, str] = field(default_factory=dict)  # field name (key_id, ...) -> value
    email: str = ""
    password: str = ""
    credential: str = ""  # for fields that carry one (Authenticate's)
    json_body: dict[str, Any] = field(default_factory=lambda: dict(OPENAI_BODY))

    def string(self, fd: FieldDescriptor) -> str | None:
        name = fd.name
        if name in self.ids:
            return self.ids[name]
        if name.endswith("_id"):  # well formed, naming nothing
            return ID_PREFIXES.get(name, "") + uuid.uuid4().hex[: 24 if name == "request_id" else 32]
        if name == "new_email" or (name == "email" and not self.email):
            return f"acl-{secrets.token_hex(5)}@example.com"
        if name == "email":
            return self.email
        if name == "new_password":
            return f"another password {secrets.token_hex(4)}"
        if "password" in name:
            return self.password or "a wrong password 1234"
        if name == "credential" and self.credential:
            return self.credential
        if name == "idempotency_key":
            return secrets.token_hex(8)
        return None


def contract_services() -> list[ServiceDescriptor]:
    """Every service of every generated gatemesh proto module."""
    found: dict[str, ServiceDescriptor] = {}
    for module in pkgutil.walk_packages(gatemesh.__path__, "gatemesh."):
        if module.name.endswith("_pb2"):
            for service in importlib.import_module(module.name).DESCRIPTOR.services_by_name.values():
                found[service.full_name] = service
    return [found[name] for name in sorted(found)]


def access_of(method: MethodDescriptor) -> int:
    return method_access(f"/{method.containing_service.full_name}/{method.name}")


def access_name(access: int) -> str:
    return common_pb2.Access.Name(access).removeprefix("ACCESS_")


def http_rule(method: MethodDescriptor) -> tuple[str, str, str] | None:
    """(HTTP verb, path template, body) of the method's google.api.http annotation, if any."""
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return None
    rule = options.Extensions[annotations_pb2.http]
    verb = rule.WhichOneof("pattern")
    return (verb.upper(), getattr(rule, verb), rule.body) if verb and verb != "custom" else None


def message_class(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


def minimal_request(method: MethodDescriptor, fill: Fill) -> Message:
    """The smallest request of `method` that its contract's rules accept."""
    request = message_class(method.input_type)()
    if method.input_type.full_name == "google.api.HttpBody":  # the OpenAI routes: a JSON body for any of them
        request.content_type, request.data = "application/json", json.dumps(fill.json_body).encode()
        return request
    _fill_message(request, fill, depth=0)
    return request


def _fill_message(message: Message, fill: Fill, depth: int) -> None:
    for fd in message.DESCRIPTOR.fields:
        named = fd.name in fill.ids or (fd.name == "credential" and bool(fill.credential))
        wanted = is_required(fd) or _zero_is_refused(message, fd) or named
        if wanted and depth < 4:
            _fill_field(message, fd, fill, depth)


def _zero_is_refused(message: Message, fd: FieldDescriptor) -> bool:
    """Whether the field's own rules refuse an unset value (min_len, gt, const, min_items)."""
    rules = field_rules(fd)
    if rules is None or fd.message_type is not None:
        return False
    return any(path.split(".")[0].split("[")[0] == fd.name for path in RULES.violations(message))


def _fill_field(message: Message, fd: FieldDescriptor, fill: Fill, depth: int) -> None:
    if fd.message_type is not None:
        if fd.message_type.full_name == "google.protobuf.Timestamp":  # a month ahead: never "now"
            getattr(message, fd.name).FromDatetime(datetime.now(UTC) + timedelta(days=30))
            return
        if fd.message_type.full_name.startswith("google.protobuf."):
            return
        target = getattr(message, fd.name).add() if fd.is_repeated else getattr(message, fd.name)
        target.SetInParent()
        _fill_message(target, fill, depth + 1)
        return
    value = _scalar(fd, fill)
    if fd.is_repeated:
        getattr(message, fd.name).append(value)
    else:
        setattr(message, fd.name, value)


def _scalar(fd: FieldDescriptor, fill: Fill) -> Any:
    rules = field_rules(fd)
    kind = rules.WhichOneof("type") if rules is not None else None
    typed = getattr(rules, kind) if kind else None
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return True
    if fd.enum_type is not None:
        return next((v.number for v in fd.enum_type.values if v.number != 0), 0)
    if fd.cpp_type == FieldDescriptor.CPPTYPE_STRING:
        return _string(fd, fill, typed if kind == "string" else None)
    if fd.cpp_type in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
        return 1.0
    return _integer(typed)


def _string(fd: FieldDescriptor, fill: Fill, rules: Any) -> str | bytes:
    named = fill.string(fd)
    value = named if named is not None else _string_by_rules(rules)
    return value.encode() if fd.type == FieldDescriptor.TYPE_BYTES else value


def _string_by_rules(rules: Any) -> str:
    if rules is None:
        return "matrix"
    if len(rules.__getattribute__("in")):
        return rules.__getattribute__("in")[0]
    if rules.pattern:
        return next((s for s in PATTERN_SAMPLES if re.search(rules.pattern, s)), "matrix")
    return "m" * max(rules.min_len, 6)


def _integer(rules: Any) -> int:
    if rules is None:
        return 1
    if rules.HasField("gt"):
        return rules.gt + 1
    if rules.HasField("gte"):
        return max(rules.gte, 1)
    return 1
