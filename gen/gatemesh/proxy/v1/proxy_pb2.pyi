import datetime

from gatemesh.common.v1 import common_pb2 as _common_pb2
from gatemesh.privacy.v1 import data_pb2 as _data_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.api import httpbody_pb2 as _httpbody_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RequestLogRecord(_message.Message):
    __slots__ = ("request_id", "account_id", "key_id", "model", "provider", "status_code", "latency_ms", "created_at", "input_tokens", "output_tokens", "cost_micros", "outcome", "tokens_estimated", "endpoint", "stream")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    TOKENS_ESTIMATED_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    account_id: str
    key_id: str
    model: str
    provider: str
    status_code: int
    latency_ms: int
    created_at: _timestamp_pb2.Timestamp
    input_tokens: int
    output_tokens: int
    cost_micros: int
    outcome: str
    tokens_estimated: bool
    endpoint: str
    stream: bool
    def __init__(self, request_id: _Optional[str] = ..., account_id: _Optional[str] = ..., key_id: _Optional[str] = ..., model: _Optional[str] = ..., provider: _Optional[str] = ..., status_code: _Optional[int] = ..., latency_ms: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cost_micros: _Optional[int] = ..., outcome: _Optional[str] = ..., tokens_estimated: _Optional[bool] = ..., endpoint: _Optional[str] = ..., stream: _Optional[bool] = ...) -> None: ...
