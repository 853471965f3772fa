import datetime

from gatemesh.common.v1 import common_pb2 as _common_pb2
from gatemesh.privacy.v1 import data_pb2 as _data_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DescribeDataRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DataField(_message.Message):
    __slots__ = ("message", "store", "field", "personal")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    PERSONAL_FIELD_NUMBER: _ClassVar[int]
    message: str
    store: str
    field: str
    personal: _data_pb2.PersonalData
    def __init__(self, message: _Optional[str] = ..., store: _Optional[str] = ..., field: _Optional[str] = ..., personal: _Optional[_Union[_data_pb2.PersonalData, _Mapping]] = ...) -> None: ...

class DescribeDataResponse(_message.Message):
    __slots__ = ("service", "fields")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    service: str
    fields: _containers.RepeatedCompositeFieldContainer[DataField]
    def __init__(self, service: _Optional[str] = ..., fields: _Optional[_Iterable[_Union[DataField, _Mapping]]] = ...) -> None: ...

class ExportSubjectRequest(_message.Message):
    __slots__ = ("subject", "request_id")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    subject: _common_pb2.SubjectRef
    request_id: str
    def __init__(self, subject: _Optional[_Union[_common_pb2.SubjectRef, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ExportedRecord(_message.Message):
    __slots__ = ("message", "data")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    message: str
    data: _struct_pb2.Struct
    def __init__(self, message: _Optional[str] = ..., data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ExportSubjectResponse(_message.Message):
    __slots__ = ("service", "records")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    service: str
    records: _containers.RepeatedCompositeFieldContainer[ExportedRecord]
    def __init__(self, service: _Optional[str] = ..., records: _Optional[_Iterable[_Union[ExportedRecord, _Mapping]]] = ...) -> None: ...

class StreamExportSubjectRequest(_message.Message):
    __slots__ = ("subject", "request_id", "page_size")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    subject: _common_pb2.SubjectRef
    request_id: str
    page_size: int
    def __init__(self, subject: _Optional[_Union[_common_pb2.SubjectRef, _Mapping]] = ..., request_id: _Optional[str] = ..., page_size: _Optional[int] = ...) -> None: ...

class StreamExportSubjectResponse(_message.Message):
    __slots__ = ("service", "records", "records_json", "record_counts")
    class RecordCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    RECORDS_JSON_FIELD_NUMBER: _ClassVar[int]
    RECORD_COUNTS_FIELD_NUMBER: _ClassVar[int]
    service: str
    records: _containers.RepeatedCompositeFieldContainer[ExportedRecord]
    records_json: bytes
    record_counts: _containers.ScalarMap[str, int]
    def __init__(self, service: _Optional[str] = ..., records: _Optional[_Iterable[_Union[ExportedRecord, _Mapping]]] = ..., records_json: _Optional[bytes] = ..., record_counts: _Optional[_Mapping[str, int]] = ...) -> None: ...

class RectifySubjectRequest(_message.Message):
    __slots__ = ("subject", "request_id", "changes")
    class ChangesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    subject: _common_pb2.SubjectRef
    request_id: str
    changes: _containers.ScalarMap[str, str]
    def __init__(self, subject: _Optional[_Union[_common_pb2.SubjectRef, _Mapping]] = ..., request_id: _Optional[str] = ..., changes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RectifySubjectResponse(_message.Message):
    __slots__ = ("service", "updated")
    class UpdatedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    service: str
    updated: _containers.ScalarMap[str, int]
    def __init__(self, service: _Optional[str] = ..., updated: _Optional[_Mapping[str, int]] = ...) -> None: ...

class EraseSubjectRequest(_message.Message):
    __slots__ = ("subject", "request_id")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    subject: _common_pb2.SubjectRef
    request_id: str
    def __init__(self, subject: _Optional[_Union[_common_pb2.SubjectRef, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ErasureAction(_message.Message):
    __slots__ = ("store", "strategy", "count")
    STORE_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    store: str
    strategy: _data_pb2.ErasureStrategy
    count: int
    def __init__(self, store: _Optional[str] = ..., strategy: _Optional[_Union[_data_pb2.ErasureStrategy, str]] = ..., count: _Optional[int] = ...) -> None: ...

class EraseSubjectResponse(_message.Message):
    __slots__ = ("service", "actions", "replayed", "purged_at", "purge")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    PURGED_AT_FIELD_NUMBER: _ClassVar[int]
    PURGE_FIELD_NUMBER: _ClassVar[int]
    service: str
    actions: _containers.RepeatedCompositeFieldContainer[ErasureAction]
    replayed: bool
    purged_at: _timestamp_pb2.Timestamp
    purge: str
    def __init__(self, service: _Optional[str] = ..., actions: _Optional[_Iterable[_Union[ErasureAction, _Mapping]]] = ..., replayed: _Optional[bool] = ..., purged_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., purge: _Optional[str] = ...) -> None: ...
