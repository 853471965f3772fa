import datetime

from gatemesh.common.v1 import common_pb2 as _common_pb2
from gatemesh.privacy.v1 import data_pb2 as _data_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PolicyVersion(_message.Message):
    __slots__ = ("version", "effective_at", "summary", "published_at")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_AT_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_AT_FIELD_NUMBER: _ClassVar[int]
    version: str
    effective_at: _timestamp_pb2.Timestamp
    summary: str
    published_at: _timestamp_pb2.Timestamp
    def __init__(self, version: _Optional[str] = ..., effective_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., summary: _Optional[str] = ..., published_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetCurrentPolicyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetCurrentPolicyResponse(_message.Message):
    __slots__ = ("current", "upcoming")
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    UPCOMING_FIELD_NUMBER: _ClassVar[int]
    current: PolicyVersion
    upcoming: PolicyVersion
    def __init__(self, current: _Optional[_Union[PolicyVersion, _Mapping]] = ..., upcoming: _Optional[_Union[PolicyVersion, _Mapping]] = ...) -> None: ...

class PublishPolicyVersionRequest(_message.Message):
    __slots__ = ("version", "effective_at", "summary")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_AT_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    version: str
    effective_at: _timestamp_pb2.Timestamp
    summary: str
    def __init__(self, version: _Optional[str] = ..., effective_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., summary: _Optional[str] = ...) -> None: ...

class PublishPolicyVersionResponse(_message.Message):
    __slots__ = ("version", "created", "notified")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    NOTIFIED_FIELD_NUMBER: _ClassVar[int]
    version: PolicyVersion
    created: bool
    notified: int
    def __init__(self, version: _Optional[_Union[PolicyVersion, _Mapping]] = ..., created: _Optional[bool] = ..., notified: _Optional[int] = ...) -> None: ...

class ListPolicyVersionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PublishedPolicyVersion(_message.Message):
    __slots__ = ("version", "published_by", "notified", "notified_at")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_BY_FIELD_NUMBER: _ClassVar[int]
    NOTIFIED_FIELD_NUMBER: _ClassVar[int]
    NOTIFIED_AT_FIELD_NUMBER: _ClassVar[int]
    version: PolicyVersion
    published_by: str
    notified: int
    notified_at: _timestamp_pb2.Timestamp
    def __init__(self, version: _Optional[_Union[PolicyVersion, _Mapping]] = ..., published_by: _Optional[str] = ..., notified: _Optional[int] = ..., notified_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListPolicyVersionsResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[PublishedPolicyVersion]
    def __init__(self, versions: _Optional[_Iterable[_Union[PublishedPolicyVersion, _Mapping]]] = ...) -> None: ...

class ListPendingAcceptancesRequest(_message.Message):
    __slots__ = ("version", "page")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    version: str
    page: _common_pb2.PageRequest
    def __init__(self, version: _Optional[str] = ..., page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListPendingAcceptancesResponse(_message.Message):
    __slots__ = ("version", "account_ids", "page")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_IDS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    version: str
    account_ids: _containers.RepeatedScalarFieldContainer[str]
    page: _common_pb2.PageResponse
    def __init__(self, version: _Optional[str] = ..., account_ids: _Optional[_Iterable[str]] = ..., page: _Optional[_Union[_common_pb2.PageResponse, _Mapping]] = ...) -> None: ...

class GetDataMapRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DataMapField(_message.Message):
    __slots__ = ("service", "store", "field", "category", "purpose", "retention", "retention_days", "erasure", "processors")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    RETENTION_FIELD_NUMBER: _ClassVar[int]
    RETENTION_DAYS_FIELD_NUMBER: _ClassVar[int]
    ERASURE_FIELD_NUMBER: _ClassVar[int]
    PROCESSORS_FIELD_NUMBER: _ClassVar[int]
    service: str
    store: str
    field: str
    category: _data_pb2.DataCategory
    purpose: str
    retention: str
    retention_days: int
    erasure: _data_pb2.ErasureStrategy
    processors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, service: _Optional[str] = ..., store: _Optional[str] = ..., field: _Optional[str] = ..., category: _Optional[_Union[_data_pb2.DataCategory, str]] = ..., purpose: _Optional[str] = ..., retention: _Optional[str] = ..., retention_days: _Optional[int] = ..., erasure: _Optional[_Union[_data_pb2.ErasureStrategy, str]] = ..., processors: _Optional[_Iterable[str]] = ...) -> None: ...

class ProcessorEntry(_message.Message):
    __slots__ = ("name", "receives", "categories")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RECEIVES_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    name: str
    receives: _containers.RepeatedScalarFieldContainer[str]
    categories: _containers.RepeatedScalarFieldContainer[_data_pb2.DataCategory]
    def __init__(self, name: _Optional[str] = ..., receives: _Optional[_Iterable[str]] = ..., categories: _Optional[_Iterable[_Union[_data_pb2.DataCategory, str]]] = ...) -> None: ...

class GetDataMapResponse(_message.Message):
    __slots__ = ("generated_at", "services", "fields", "processors", "unavailable", "markdown")
    GENERATED_AT_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    PROCESSORS_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    MARKDOWN_FIELD_NUMBER: _ClassVar[int]
    generated_at: _timestamp_pb2.Timestamp
    services: _containers.RepeatedScalarFieldContainer[str]
    fields: _containers.RepeatedCompositeFieldContainer[DataMapField]
    processors: _containers.RepeatedCompositeFieldContainer[ProcessorEntry]
    unavailable: _containers.RepeatedScalarFieldContainer[str]
    markdown: str
    def __init__(self, generated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., services: _Optional[_Iterable[str]] = ..., fields: _Optional[_Iterable[_Union[DataMapField, _Mapping]]] = ..., processors: _Optional[_Iterable[_Union[ProcessorEntry, _Mapping]]] = ..., unavailable: _Optional[_Iterable[str]] = ..., markdown: _Optional[str] = ...) -> None: ...

class PolicyVersionRecord(_message.Message):
    __slots__ = ("version", "effective_at", "published_by")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_AT_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_BY_FIELD_NUMBER: _ClassVar[int]
    version: str
    effective_at: _timestamp_pb2.Timestamp
    published_by: str
    def __init__(self, version: _Optional[str] = ..., effective_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., published_by: _Optional[str] = ...) -> None: ...

class PolicyNotificationRecord(_message.Message):
    __slots__ = ("version", "account_id", "created_at", "sent_at")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    version: str
    account_id: str
    created_at: _timestamp_pb2.Timestamp
    sent_at: _timestamp_pb2.Timestamp
    def __init__(self, version: _Optional[str] = ..., account_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sent_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
