"""Request rules declared on the protos, checked before any handler runs.

The contracts declare what a request must look like, once: `google.api.field_behavior =
REQUIRED` for fields that must be set (non-empty), and `buf.validate` rules (protovalidate)
for the rest: string lengths, formats (`email`), patterns and allowed values, numeric
ranges, enum values that must be defined, list sizes. The server interceptor calls
`RequestRules.violations` for every request and answers INVALID_ARGUMENT with one
google.rpc field violation per field (`page.page_size`, `allowed_models[2]`); the OpenAPI
generator exports the same rules, so the document and the server agree.

Why not `protovalidate.Validator` on every call: its rules are CEL expressions, and
cel-python evaluates each by walking its parse tree: about 10 ms per rule here, 30 ms for
a VerifyKey request, on a hot path whose whole budget is a millisecond. So the rules
the contracts use (required, string min_len/max_len/email/pattern/in, integer
gt/gte/lt/lte, bool const, enum defined_only, repeated min_items/max_items/items,
ignore) are compiled here, once per message type, into plain comparisons that give
protovalidate's own messages; a message type that uses any other rule (CEL, message or
oneof rules, other types) is validated by protovalidate itself, slowly but correctly.
`tests/runtime/test_validation.py` checks that both agree on every request type of the
contracts, with values at and around every bound.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, cast

from buf.validate import validate_pb2
from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from .errors import InvalidArgument
from .proto_types import descriptor_of, has_option_extension, option_extension

REQUIRED_MESSAGE = "is required"
# protovalidate's `isEmail`: the HTML standard's definition of a valid email address.
EMAIL = re.compile(
    r"[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*"
)
INTEGER_RULES = ("int32", "int64", "uint32", "uint64")
SUPPORTED = {
    "string": {"min_len", "max_len", "email", "pattern", "in"},
    "bool": {"const"},
    "enum": {"defined_only"},
    "repeated": {"min_items", "max_items", "items"},
    **{kind: {"gt", "gte", "lt", "lte"} for kind in INTEGER_RULES},
}
IGNORE_IF_ZERO = validate_pb2.IGNORE_IF_ZERO_VALUE
IGNORE_ALWAYS = validate_pb2.IGNORE_ALWAYS

ValueCheck = Callable[[Any], str | None]


class Unsupported(Exception):
    """A rule the compiled checks do not cover: protovalidate validates the message."""


def field_rules(fd: FieldDescriptor) -> validate_pb2.FieldRules | None:
    options = fd.GetOptions()
    return option_extension(options, validate_pb2.field) if has_option_extension(options, validate_pb2.field) else None


def is_required(fd: FieldDescriptor) -> bool:
    """`google.api.field_behavior = REQUIRED` (or buf.validate's own `required`)."""
    behaviors: Sequence[int] = option_extension(fd.GetOptions(), field_behavior_pb2.field_behavior)
    rules = field_rules(fd)
    return field_behavior_pb2.REQUIRED in behaviors or bool(rules is not None and rules.required)


def is_empty(message: Message, fd: FieldDescriptor) -> bool:
    """protovalidate's notion of an unset field: absent, an empty list, or the zero value."""
    if fd.is_repeated:
        return len(getattr(message, fd.name)) == 0
    if fd.has_presence:
        return not message.HasField(fd.name)
    return getattr(message, fd.name) == fd.default_value


def _integer_check(rules: Any) -> ValueCheck:
    """gt/gte/lt/lte as protovalidate words them (inclusive ranges only; exclusive ones are CEL's)."""
    lower = ("gt", rules.gt, "greater than") if rules.HasField("gt") else None
    if rules.HasField("gte"):
        lower = ("gte", rules.gte, "greater than or equal to")
    upper = ("lt", rules.lt, "less than") if rules.HasField("lt") else None
    if rules.HasField("lte"):
        upper = ("lte", rules.lte, "less than or equal to")
    if lower and upper and upper[1] < lower[1]:
        raise Unsupported("an exclusive range")
    words = " and ".join(f"{bound[2]} {bound[1]}" for bound in (lower, upper) if bound)
    message = f"must be {words}"

    def check(value: int) -> str | None:
        if lower and (value <= lower[1] if lower[0] == "gt" else value < lower[1]):
            return message
        if upper and (value >= upper[1] if upper[0] == "lt" else value > upper[1]):
            return message
        return None

    return check


def _string_checks(rules: validate_pb2.StringRules) -> list[ValueCheck]:
    checks: list[ValueCheck] = []
    if rules.HasField("min_len"):
        least = rules.min_len
        checks.append(lambda v: f"must be at least {least} characters" if len(v) < least else None)
    if rules.HasField("max_len"):
        most = rules.max_len
        checks.append(lambda v: f"must be at most {most} characters" if len(v) > most else None)
    if rules.HasField("pattern"):
        pattern, text = re.compile(rules.pattern), rules.pattern
        checks.append(lambda v: None if pattern.search(v) else f"does not match regex pattern `{text}`")
    if rules.email:
        checks.append(_email_check)
    allowed = list(getattr(rules, "in"))
    if allowed:
        listed = "[" + ", ".join(allowed) + "]"
        checks.append(lambda v: None if v in allowed else f"must be in list {listed}")
    return checks


def _email_check(value: str) -> str | None:
    if value == "":
        return "value is empty, which is not a valid email address"
    return None if EMAIL.fullmatch(value) else "must be a valid email address"


def value_checks(fd: FieldDescriptor, rules: validate_pb2.FieldRules, item: bool = False) -> list[ValueCheck]:
    """The checks of one value (a field's, or a list item's) from its rules."""
    kind = rules.WhichOneof("type")
    if rules.cel or rules.cel_expression:
        raise Unsupported("CEL rules")
    if kind is None:
        return []
    typed = getattr(rules, kind)
    if {f.name for f, _ in typed.ListFields()} - SUPPORTED.get(kind, set()):
        raise Unsupported(f"{kind} rules beyond {sorted(SUPPORTED.get(kind, ()))}")
    if kind == "repeated" and item:
        raise Unsupported("nested repeated rules")
    if kind == "string":
        return _string_checks(typed)
    if kind in INTEGER_RULES:
        return [_integer_check(typed)]
    if kind == "bool":
        want = typed.const
        return [lambda v: None if v == want else f"must equal {str(want).lower()}"]
    if kind == "enum":
        defined = set(fd.enum_type.values_by_number) if typed.defined_only and fd.enum_type else None
        return [lambda v: None if defined is None or v in defined else "value must be one of the defined enum values"]
    return []  # repeated: see FieldPlan


@dataclass
class FieldPlan:
    """What to check on one field of a message type."""

    fd: FieldDescriptor
    required: bool
    ignore_if_zero: bool
    checks: list[ValueCheck] = field(default_factory=list)
    item_checks: list[ValueCheck] = field(default_factory=list)
    list_checks: list[ValueCheck] = field(default_factory=list)
    nested: MessagePlan | None = None

    def violations(self, message: Message, path: str) -> Iterator[tuple[str, str]]:
        fd = self.fd
        if is_empty(message, fd):
            if self.required:
                yield path, REQUIRED_MESSAGE
                return
            # Like protovalidate: fields with presence (messages, `optional`) are skipped when unset.
            if self.ignore_if_zero or (fd.has_presence and not fd.is_repeated):
                return
        value = getattr(message, fd.name)
        if not fd.is_repeated:
            yield from _failing(self.checks, value, path)
            if self.nested is not None:
                yield from self.nested.violations(value, f"{path}.")
            return
        yield from _failing(self.list_checks, value, path)
        for index, item in enumerate(value):
            yield from _failing(self.item_checks, item, f"{path}[{index}]")
            if self.nested is not None:
                yield from self.nested.violations(item, f"{path}[{index}].")


def _failing(checks: list[ValueCheck], value: Any, path: str) -> Iterator[tuple[str, str]]:
    for check in checks:
        problem = check(value)
        if problem is not None:
            yield path, problem


@dataclass
class MessagePlan:
    """The compiled checks of one message type (empty for types without rules)."""

    fields: list[FieldPlan]

    def violations(self, message: Message, prefix: str = "") -> Iterator[tuple[str, str]]:
        for plan in self.fields:
            yield from plan.violations(message, prefix + plan.fd.name)


def _plan_field(fd: FieldDescriptor, building: set[str]) -> FieldPlan | None:
    rules = field_rules(fd) or validate_pb2.FieldRules()
    if rules.ignore == IGNORE_ALWAYS:
        return None
    plan = FieldPlan(fd, required=is_required(fd), ignore_if_zero=rules.ignore == IGNORE_IF_ZERO)
    if fd.is_repeated and rules.WhichOneof("type") == "repeated":
        repeated = rules.repeated
        if repeated.HasField("min_items"):
            least = repeated.min_items
            plan.list_checks.append(lambda v: f"must contain at least {least} item(s)" if len(v) < least else None)
        if repeated.HasField("max_items"):
            most = repeated.max_items
            plan.list_checks.append(lambda v: f"must contain no more than {most} item(s)" if len(v) > most else None)
        if repeated.HasField("items"):
            if repeated.items.required or repeated.items.ignore:
                raise Unsupported("required or ignored items")
            plan.item_checks = value_checks(fd, repeated.items, item=True)
    elif fd.is_repeated and rules.WhichOneof("type") is not None:
        raise Unsupported("non-repeated rules on a repeated field")
    else:
        plan.checks = value_checks(fd, rules)
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        raise Unsupported("maps")
    if fd.message_type is not None:
        nested = _plan(fd.message_type, building)
        plan.nested = nested if nested.fields else None
    if not (plan.required or plan.checks or plan.item_checks or plan.list_checks or plan.nested):
        return None
    return plan


def _plan(descriptor: Descriptor, building: set[str]) -> MessagePlan:
    if descriptor.full_name in building:
        raise Unsupported("recursive message types")
    options = descriptor.GetOptions()
    if has_option_extension(options, validate_pb2.message) or any(
        has_option_extension(o.GetOptions(), validate_pb2.oneof) for o in descriptor.oneofs
    ):
        raise Unsupported("message or oneof rules")
    building = building | {descriptor.full_name}
    fields = [plan for fd in descriptor.fields if (plan := _plan_field(fd, building)) is not None]
    return MessagePlan(fields)


@cache
def _protovalidate() -> Any:
    import protovalidate

    return protovalidate.Validator()


def _slow_violations(message: Message) -> Iterator[tuple[str, str]]:
    """protovalidate's own verdict, for message types the compiled checks do not cover (after
    the REQUIRED fields, which protovalidate does not read)."""
    for fd in descriptor_of(message).fields:
        if is_required(fd) and is_empty(message, fd):
            yield fd.name, REQUIRED_MESSAGE
    for violation in _protovalidate().collect_violations(message):
        yield field_path(violation.proto.field), violation.proto.message


def field_path(path: validate_pb2.FieldPath) -> str:
    """`page.page_size`, `allowed_models[2]`: the field names of the google.rpc violations."""
    parts: list[str] = []
    for element in path.elements:
        parts.append(("." if parts else "") + element.field_name)
        subscript = element.WhichOneof("subscript")
        if subscript == "index":
            parts.append(f"[{element.index}]")
        elif subscript is not None:
            parts.append(f"[{getattr(element, subscript)!r}]")
    return "".join(parts)


NUL_MESSAGE = "must not contain NUL characters (U+0000)"
TIME_MESSAGE = "must be a time between 0001-01-01 and 9999-12-31 (UTC)"
DURATION_MESSAGE = "must be a duration of at most 10,000 years"
# google.protobuf.Timestamp and Duration's documented ranges (what ToDatetime can convert).
TIME_SECONDS = (-62_135_596_800, 253_402_300_799)
DURATION_SECONDS = 315_576_000_000
NANOS = range(-999_999_999, 1_000_000_000)


def _well_known(message: Message) -> str | None:
    """What is wrong with a Timestamp or Duration out of its type's range, else None."""
    name = message.DESCRIPTOR.full_name
    if name == "google.protobuf.Timestamp":
        low, high = TIME_SECONDS
        time = cast(Timestamp, message)  # its full name says so
        ok = low <= time.seconds <= high and 0 <= time.nanos < 1_000_000_000
        return None if ok else TIME_MESSAGE
    if name == "google.protobuf.Duration":
        span = cast(Duration, message)  # its full name says so
        ok = abs(span.seconds) <= DURATION_SECONDS and span.nanos in NANOS
        return None if ok else DURATION_MESSAGE
    return None


def wire_violations(message: Message, prefix: str = "") -> Iterator[tuple[str, str]]:
    """Values no contract means, whatever its rules, at any depth: U+0000 in text
    (PostgreSQL text cannot store it) and Timestamps or Durations outside their type's
    range (they cannot become a datetime). The driver's or the converter's error would
    surface as INTERNAL. Only set fields are walked (`ListFields`), so the cost is that
    of the fields a request carries."""
    for fd, value in message.ListFields():
        path = prefix + fd.name
        rules = field_rules(fd)
        if rules is not None and rules.ignore == IGNORE_ALWAYS:
            continue  # a batch's items: each is judged alone, as its single call would be
        if fd.type == FieldDescriptor.TYPE_STRING:
            items = value if fd.is_repeated else [value]
            if any("\x00" in item for item in items):
                yield path, NUL_MESSAGE
        elif fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            for key, item in value.items():
                texts = [key, item] if isinstance(item, str) else [key]
                if any(isinstance(text, str) and "\x00" in text for text in texts):
                    yield f"{path}[{key!r}]", NUL_MESSAGE
                elif isinstance(item, Message):
                    yield from _message_violations(item, f"{path}[{key!r}]")
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            items = enumerate(value) if fd.is_repeated else [(None, value)]
            for index, item in items:
                yield from _message_violations(item, path if index is None else f"{path}[{index}]")


def _message_violations(message: Message, path: str) -> Iterator[tuple[str, str]]:
    problem = _well_known(message)
    if problem is not None:
        yield path, problem
    else:
        yield from wire_violations(message, f"{path}.")


def item_errors(items: Sequence[Message]) -> list[InvalidArgument | None]:
    """Per item of a batch (its items are marked IGNORE_ALWAYS, so that each fails alone, as
    its single call would): INVALID_ARGUMENT for values no contract means
    (`wire_violations`: a NUL would otherwise fail the whole batch's statement), else None."""
    errors: list[InvalidArgument | None] = []
    for item in items:
        found = dict(wire_violations(item))
        errors.append(InvalidArgument("invalid request", field_violations=found) if found else None)
    return errors


async def each_alone(
    items: Sequence[Message], convert: Callable[[Any], Any], run: Callable[[list[Any]], Awaitable[list[Any]]]
) -> list[Any]:
    """One outcome per item: `item_errors` for the items that have one, `run`'s outcomes
    (in order) for the others, which go to it as one batch, converted."""
    errors = item_errors(items)
    good = [convert(item) for item, error in zip(items, errors, strict=True) if error is None]
    done = iter(await run(good) if good else [])
    return [error or next(done) for error in errors]


class RequestRules:
    """The declared rules of request messages, compiled once per message type."""

    def __init__(self) -> None:
        self._plans: dict[str, MessagePlan | None] = {}

    def plan(self, descriptor: Descriptor) -> MessagePlan | None:
        """The compiled checks, or None when protovalidate must validate this type."""
        name = descriptor.full_name
        if name not in self._plans:
            try:
                self._plans[name] = _plan(descriptor, set())
            except Unsupported:
                self._plans[name] = None
        return self._plans[name]

    def violations(self, message: Message) -> dict[str, str]:
        """{field path: what is wrong}, the first problem of each field; empty when valid."""
        plan = self.plan(descriptor_of(message))
        found = plan.violations(message) if plan is not None else _slow_violations(message)
        result: dict[str, str] = {}
        for path, why in itertools.chain(found, wire_violations(message)):
            result.setdefault(path, why)
        return result
