"""What every PrivacyParticipant shares: the data map read from the contracts.

Personal fields are declared on the proto fields themselves (`gatemesh.privacy.v1.personal`,
on record messages that carry `gatemesh.privacy.v1.store`). `describe_data` walks a proto
file's messages and answers `DescribeData` from those declarations, so the data map can
never drift from the contracts. `to_record` renders a record message for an export.

A streamed export page may instead carry its records already rendered as JSON bytes
(`json_page`): `JsonRenderer` turns a row's values straight into the proto JSON mapping of
its record message (what `json_format.MessageToDict` gives, without building the message),
which is what lets an account with a million records export in seconds. `purge` makes an
erasure's deleted values leave the storage files (VACUUM on PostgreSQL).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from gatemesh.privacy.v1 import data_pb2, participant_pb2


def record_messages(files: Iterable[FileDescriptor]) -> list[Descriptor]:
    """The record messages (those declaring a store) of the given proto files."""
    found = []
    for file in files:
        for message in file.message_types_by_name.values():
            if message.GetOptions().HasExtension(data_pb2.store):
                found.append(message)
    return found


def describe_data(service: str, files: Iterable[FileDescriptor]) -> participant_pb2.DescribeDataResponse:
    """The DescribeData answer, generated from the field options."""
    response = participant_pb2.DescribeDataResponse(service=service)
    for message in record_messages(files):
        store = message.GetOptions().Extensions[data_pb2.store]
        for field in message.fields:
            options = field.GetOptions()
            if options.HasExtension(data_pb2.personal):
                response.fields.add(
                    message=message.full_name,
                    store=store,
                    field=field.name,
                    personal=options.Extensions[data_pb2.personal],
                )
    return response


DEFAULT_PAGE, MAX_PAGE = 1000, 10_000


def page_size(requested: int) -> int:
    """A StreamExportSubject page size: the default for 0, capped."""
    return min(requested or DEFAULT_PAGE, MAX_PAGE) if requested >= 0 else DEFAULT_PAGE


def to_record(message: Message) -> participant_pb2.ExportedRecord:
    """One exported record: the message in the proto JSON mapping (int64 as strings)."""
    data = struct_pb2.Struct()
    data.update(json_format.MessageToDict(message, preserving_proto_field_name=True))
    return participant_pb2.ExportedRecord(message=message.DESCRIPTOR.full_name, data=data)


# --- records rendered as JSON bytes -------------------------------------------------------

_INT64 = {
    FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64,
}  # fmt: skip
_INT32 = {
    FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_SFIXED32,
}  # fmt: skip


def rfc3339(moment: datetime) -> str:
    """A datetime (naive = UTC) as the JSON mapping renders a Timestamp: 0, 3 or 6 digits."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    rendered = moment.isoformat()
    if moment.microsecond and moment.microsecond % 1000 == 0:
        rendered = rendered[:-3]
    return rendered + "Z"


def _is_timestamp(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.full_name == Timestamp.DESCRIPTOR.full_name


def _converter(field: FieldDescriptor) -> Callable[[Any], Any]:
    """value -> JSON value of one singular field, as `json_format` renders it."""
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if not _is_timestamp(field):
            raise TypeError(f"{field.full_name}: only Timestamp message fields render directly")
        return rfc3339
    if field.type in _INT64:
        return lambda v: str(int(v))
    if field.type in _INT32:
        return int
    if field.type == FieldDescriptor.TYPE_ENUM:
        names = {v.number: v.name for v in field.enum_type.values} if field.enum_type else {}
        return lambda v: names.get(int(v), int(v))
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return float
    if field.type == FieldDescriptor.TYPE_BOOL:
        return bool
    if field.type == FieldDescriptor.TYPE_STRING:
        return str
    raise TypeError(f"{field.full_name}: type {field.type} does not render directly")


class JsonRenderer:
    """Renders a record message's field values (by field name) to its proto JSON mapping
    with proto field names, as `json_format.MessageToDict(..., preserving_proto_field_name
    =True)` would, without building the message: default values (None, 0, "", False) are
    left out, 64-bit integers are strings, timestamps RFC 3339. Singular scalar, enum and
    Timestamp fields only (what the record messages use); anything else fails at once."""

    def __init__(self, descriptor: Descriptor) -> None:
        if any(f.is_repeated for f in descriptor.fields):
            raise TypeError(f"{descriptor.full_name}: repeated fields do not render directly")
        self.message = descriptor.full_name
        self.fields = [(f.name, _converter(f)) for f in descriptor.fields]

    def data(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The JSON mapping of one record; names missing from `values` are defaults."""
        return {name: convert(v) for name, convert in self.fields if (v := values.get(name))}

    def records(self, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """ExportedRecords in the JSON mapping, one per row."""
        message, data = self.message, self.data
        return [{"message": message, "data": data(row)} for row in rows]


def _sql_pair(field: FieldDescriptor, column: str) -> str:
    """A PostgreSQL text expression `"name":value` for one field, NULL for the default value
    (which `concat_ws` then leaves out, as the JSON mapping does). Plain concatenation:
    `json_build_object` and `json_strip_nulls` cost several times more per row."""
    key = f'\'"{field.name}":'
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if not _is_timestamp(field):
            raise TypeError(f"{field.full_name}: only Timestamp message fields render directly")
        fraction = (
            f"CASE WHEN date_trunc('second', {column}) = {column} THEN '' "
            f"WHEN to_char({column}, 'US') LIKE '%000' THEN to_char({column}, '.MS') "
            f"ELSE to_char({column}, '.US') END"
        )
        return f"""{key}"' || to_char({column}, 'YYYY-MM-DD"T"HH24:MI:SS') || {fraction} || 'Z"'"""
    if field.type in _INT64:
        return f"""{key}"' || NULLIF({column}, 0) || '"'"""
    if field.type in _INT32 or field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return f"{key}' || NULLIF({column}, 0)"
    if field.type == FieldDescriptor.TYPE_BOOL:
        return f"{key}' || NULLIF({column}, false)"
    if field.type == FieldDescriptor.TYPE_STRING:
        return f"{key}' || to_json(NULLIF({column}, ''))::text"
    raise TypeError(f"{field.full_name}: type {field.type} does not render in SQL")


def json_sql(descriptor: Descriptor, columns: Mapping[str, str]) -> str:
    """A PostgreSQL text expression rendering a row as an ExportedRecord in the JSON mapping
    (the same JSON `JsonRenderer` gives; timestamps from naive UTC columns), so that the
    database, not Python, renders the pages of a million-row export. `columns` maps field
    names to column expressions (trusted SQL, written by the participant); fields left out
    are defaults."""
    pairs = ", ".join(_sql_pair(f, columns[f.name]) for f in descriptor.fields if f.name in columns)
    return f"""'{{"message":"{descriptor.full_name}","data":{{' || concat_ws(',', {pairs}) || '}}}}'"""


def encode_records(records: Sequence[Mapping[str, Any]]) -> bytes:
    """ExportedRecords in the JSON mapping as `records_json` bytes (comma-separated)."""
    return json.dumps(records, separators=(",", ":")).encode()[1:-1] if records else b""


def json_page(service: str, records: Sequence[Mapping[str, Any]]) -> participant_pb2.StreamExportSubjectResponse:
    """One streamed export page in the rendered form: `records` are ExportedRecords in the
    JSON mapping ({"message": ..., "data": {...}}), encoded once, here."""
    counts: dict[str, int] = {}
    for record in records:
        counts[record["message"]] = counts.get(record["message"], 0) + 1
    return participant_pb2.StreamExportSubjectResponse(
        service=service, records_json=encode_records(records), record_counts=counts
    )


def message_records(messages: Iterable[Message]) -> list[dict[str, Any]]:
    """Record messages as ExportedRecords in the JSON mapping (the few-records path)."""
    return [
        {"message": m.DESCRIPTOR.full_name, "data": json_format.MessageToDict(m, preserving_proto_field_name=True)}
        for m in messages
    ]


# --- erased values out of the storage files -----------------------------------------------


async def purge(engine: AsyncEngine, tables: Sequence[str]) -> tuple[Timestamp, str]:
    """After an erasure: VACUUM the tables it touched on PostgreSQL, so that the dead row
    versions (which still hold the erased values) leave the heap and index pages, not only
    query results. SQLite runs with secure_delete on (`runtime.db`): deleted values were
    overwritten when deleted. Returns when it was done and how, for EraseSubjectResponse."""
    if engine.dialect.name == "postgresql":
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f"VACUUM {', '.join(tables)}"))
        how = f"postgresql vacuum: {', '.join(tables)}"
    else:
        how = "sqlite secure_delete: overwritten when deleted"
    done = Timestamp()
    done.GetCurrentTime()
    return done, how
