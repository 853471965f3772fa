"""Hypothesis strategies for any protobuf message, built from its descriptor.

Every field may be absent or set; scalars range over their whole type (64-bit extremes,
NaN and infinities, unassigned enum numbers, text with NUL and astral characters, 10,000
characters) and nested messages, lists and maps go three levels deep. Nothing here knows
the mesh's contracts: a new RPC or field is covered without editing this file.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

F = FieldDescriptor
MAX_DEPTH = 3
# Values a generator rarely reaches but a server must survive.
NASTY_TEXT = (
    "",
    " ",
    "\x00",
    "x" * 10_000,
    "acct_0000000000",
    "key_0000000000",
    "gm-test",
    "../../etc/passwd",
    "' OR 1=1 --",
    "%s%n%x",
    "\u202e\ufeff",
    "\U0001f600" * 50,
    "2026-13-45",
    "ada@example.com",
    "-1",
)
INT_RANGES = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}


def integers(low: int, high: int) -> st.SearchStrategy[int]:
    """The whole range, with its edges and the small numbers servers branch on."""
    edges = [v for v in (low, high, -1, 0, 1, 2, 100, 10**6) if low <= v <= high]
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in INT_RANGES:
        return integers(*INT_RANGES[kind])
    if kind == F.TYPE_BOOL:
        return st.booleans()
    if kind in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return st.floats(width=64 if kind == F.TYPE_DOUBLE else 32)
    if kind == F.TYPE_STRING:
        return st.one_of(st.sampled_from(NASTY_TEXT), st.text(max_size=40))
    if kind == F.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == F.TYPE_ENUM:
        numbers = [value.number for value in field.enum_type.values]
        return st.one_of(st.sampled_from(numbers), st.integers(-3, 1000))
    raise TypeError(f"unexpected field type {kind}")


def single(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == F.TYPE_MESSAGE:
        return messages(field.message_type, depth + 1)
    return scalar(field)


def field_values(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == F.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
        key, value = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
        return st.dictionaries(scalar(key), single(value, depth), max_size=3)
    if field.is_repeated:
        return st.lists(single(field, depth), max_size=3)
    return single(field, depth)


def assign(message: Message, field: FieldDescriptor, value: Any) -> None:
    """Put a drawn value into `message` the way the Python API wants each kind."""
    target = getattr(message, field.name) if field.is_repeated else None
    if isinstance(value, dict):
        entry = field.message_type.fields_by_name["value"]
        for key, item in value.items():
            if entry.type == F.TYPE_MESSAGE:
                target[key].CopyFrom(item)
            else:
                target[key] = item
    elif isinstance(value, list):
        if field.type == F.TYPE_MESSAGE:
            for item in value:
                target.add().CopyFrom(item)
        else:
            target.extend(value)
    elif field.type == F.TYPE_MESSAGE:
        getattr(message, field.name).CopyFrom(value)
    else:
        setattr(message, field.name, value)


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Instances of `descriptor`'s message: any subset of its fields set (none past MAX_DEPTH)."""
    cls = message_factory.GetMessageClass(descriptor)
    if depth > MAX_DEPTH:
        return st.just(cls())
    optional = {field.name: field_values(field, depth) for field in descriptor.fields}

    def build(values: dict[str, Any]) -> Message:
        message = cls()
        for name, value in values.items():
            assign(message, descriptor.fields_by_name[name], value)
        return message

    return st.fixed_dictionaries({}, optional=optional).map(build)
