"""What every PrivacyParticipant shares: the data map read from the contracts.

Personal fields are declared on the proto fields themselves (`gatemesh.privacy.v1.personal`,
on record messages that carry `gatemesh.privacy.v1.store`). `describe_data` walks a proto
file's messages and answers `DescribeData` from those declarations, so the data map can
never drift from the contracts. `to_record` renders a record message for an export.
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf import json_format, struct_pb2
from google.protobuf.descriptor import Descriptor, FileDescriptor
from google.protobuf.message import Message

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
