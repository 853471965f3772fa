import datetime

from gatemesh.common.v1 import common_pb2 as _common_pb2
from gatemesh.privacy.v1 import data_pb2 as _data_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import httpbody_pb2 as _httpbody_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RequestType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REQUEST_TYPE_UNSPECIFIED: _ClassVar[RequestType]
    REQUEST_TYPE_ACCESS: _ClassVar[RequestType]
    REQUEST_TYPE_RECTIFICATION: _ClassVar[RequestType]
    REQUEST_TYPE_ERASURE: _ClassVar[RequestType]

class RequestStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REQUEST_STATUS_UNSPECIFIED: _ClassVar[RequestStatus]
    REQUEST_STATUS_AWAITING_APPROVAL: _ClassVar[RequestStatus]
    REQUEST_STATUS_RUNNING: _ClassVar[RequestStatus]
    REQUEST_STATUS_NEEDS_ATTENTION: _ClassVar[RequestStatus]
    REQUEST_STATUS_COMPLETED: _ClassVar[RequestStatus]

class StepStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STEP_STATUS_UNSPECIFIED: _ClassVar[StepStatus]
    STEP_STATUS_PENDING: _ClassVar[StepStatus]
    STEP_STATUS_RUNNING: _ClassVar[StepStatus]
    STEP_STATUS_DONE: _ClassVar[StepStatus]
    STEP_STATUS_NEEDS_ATTENTION: _ClassVar[StepStatus]

class Origin(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ORIGIN_UNSPECIFIED: _ClassVar[Origin]
    ORIGIN_SELF_SERVICE: _ClassVar[Origin]
    ORIGIN_STAFF: _ClassVar[Origin]
    ORIGIN_ACCOUNT_CLOSED: _ClassVar[Origin]
REQUEST_TYPE_UNSPECIFIED: RequestType
REQUEST_TYPE_ACCESS: RequestType
REQUEST_TYPE_RECTIFICATION: RequestType
REQUEST_TYPE_ERASURE: RequestType
REQUEST_STATUS_UNSPECIFIED: RequestStatus
REQUEST_STATUS_AWAITING_APPROVAL: RequestStatus
REQUEST_STATUS_RUNNING: RequestStatus
REQUEST_STATUS_NEEDS_ATTENTION: RequestStatus
REQUEST_STATUS_COMPLETED: RequestStatus
STEP_STATUS_UNSPECIFIED: StepStatus
STEP_STATUS_PENDING: StepStatus
STEP_STATUS_RUNNING: StepStatus
STEP_STATUS_DONE: StepStatus
STEP_STATUS_NEEDS_ATTENTION: StepStatus
ORIGIN_UNSPECIFIED: Origin
ORIGIN_SELF_SERVICE: Origin
ORIGIN_STAFF: Origin
ORIGIN_ACCOUNT_CLOSED: Origin

class Step(_message.Message):
    __slots__ = ("participant", "phase", "order", "status", "attempts", "next_attempt_at", "last_error", "counts", "finished_at")
    class CountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    PARTICIPANT_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    participant: str
    phase: str
    order: int
    status: StepStatus
    attempts: int
    next_attempt_at: _timestamp_pb2.Timestamp
    last_error: str
    counts: _containers.ScalarMap[str, int]
    finished_at: _timestamp_pb2.Timestamp
    def __init__(self, participant: _Optional[str] = ..., phase: _Optional[str] = ..., order: _Optional[int] = ..., status: _Optional[_Union[StepStatus, str]] = ..., attempts: _Optional[int] = ..., next_attempt_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_error: _Optional[str] = ..., counts: _Optional[_Mapping[str, int]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Approval(_message.Message):
    __slots__ = ("staff_id", "approved_at")
    STAFF_ID_FIELD_NUMBER: _ClassVar[int]
    APPROVED_AT_FIELD_NUMBER: _ClassVar[int]
    staff_id: str
    approved_at: _timestamp_pb2.Timestamp
    def __init__(self, staff_id: _Optional[str] = ..., approved_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PrivacyRequest(_message.Message):
    __slots__ = ("request_id", "type", "status", "subject_id", "origin", "requested_by", "identity_verification", "reason", "dry_run", "received_at", "due_at", "completed_at", "approvals", "steps", "findings", "export_expires_at")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_BY_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_FIELD_NUMBER: _ClassVar[int]
    DUE_AT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    EXPORT_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    type: RequestType
    status: RequestStatus
    subject_id: str
    origin: Origin
    requested_by: str
    identity_verification: str
    reason: str
    dry_run: bool
    received_at: _timestamp_pb2.Timestamp
    due_at: _timestamp_pb2.Timestamp
    completed_at: _timestamp_pb2.Timestamp
    approvals: _containers.RepeatedCompositeFieldContainer[Approval]
    steps: _containers.RepeatedCompositeFieldContainer[Step]
    findings: _containers.RepeatedScalarFieldContainer[str]
    export_expires_at: _timestamp_pb2.Timestamp
    def __init__(self, request_id: _Optional[str] = ..., type: _Optional[_Union[RequestType, str]] = ..., status: _Optional[_Union[RequestStatus, str]] = ..., subject_id: _Optional[str] = ..., origin: _Optional[_Union[Origin, str]] = ..., requested_by: _Optional[str] = ..., identity_verification: _Optional[str] = ..., reason: _Optional[str] = ..., dry_run: _Optional[bool] = ..., received_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., due_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., completed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., approvals: _Optional[_Iterable[_Union[Approval, _Mapping]]] = ..., steps: _Optional[_Iterable[_Union[Step, _Mapping]]] = ..., findings: _Optional[_Iterable[str]] = ..., export_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateMyRequestRequest(_message.Message):
    __slots__ = ("type", "new_email", "reason", "dry_run")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NEW_EMAIL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    type: RequestType
    new_email: str
    reason: str
    dry_run: bool
    def __init__(self, type: _Optional[_Union[RequestType, str]] = ..., new_email: _Optional[str] = ..., reason: _Optional[str] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class CreateMyRequestResponse(_message.Message):
    __slots__ = ("request",)
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    request: PrivacyRequest
    def __init__(self, request: _Optional[_Union[PrivacyRequest, _Mapping]] = ...) -> None: ...

class GetMyRequestRequest(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class GetMyRequestResponse(_message.Message):
    __slots__ = ("request",)
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    request: PrivacyRequest
    def __init__(self, request: _Optional[_Union[PrivacyRequest, _Mapping]] = ...) -> None: ...

class ListMyRequestsRequest(_message.Message):
    __slots__ = ("page",)
    PAGE_FIELD_NUMBER: _ClassVar[int]
    page: _common_pb2.PageRequest
    def __init__(self, page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListMyRequestsResponse(_message.Message):
    __slots__ = ("requests", "page")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[PrivacyRequest]
    page: _common_pb2.PageResponse
    def __init__(self, requests: _Optional[_Iterable[_Union[PrivacyRequest, _Mapping]]] = ..., page: _Optional[_Union[_common_pb2.PageResponse, _Mapping]] = ...) -> None: ...

class DownloadMyExportRequest(_message.Message):
    __slots__ = ("request_id", "format")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    format: str
    def __init__(self, request_id: _Optional[str] = ..., format: _Optional[str] = ...) -> None: ...

class DownloadExportRequest(_message.Message):
    __slots__ = ("request_id", "format")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    format: str
    def __init__(self, request_id: _Optional[str] = ..., format: _Optional[str] = ...) -> None: ...

class CreateRequestRequest(_message.Message):
    __slots__ = ("type", "subject", "identity_verification", "reason", "new_email", "dry_run")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    NEW_EMAIL_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    type: RequestType
    subject: _common_pb2.SubjectRef
    identity_verification: str
    reason: str
    new_email: str
    dry_run: bool
    def __init__(self, type: _Optional[_Union[RequestType, str]] = ..., subject: _Optional[_Union[_common_pb2.SubjectRef, _Mapping]] = ..., identity_verification: _Optional[str] = ..., reason: _Optional[str] = ..., new_email: _Optional[str] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class CreateRequestResponse(_message.Message):
    __slots__ = ("request",)
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    request: PrivacyRequest
    def __init__(self, request: _Optional[_Union[PrivacyRequest, _Mapping]] = ...) -> None: ...

class ApproveRequestRequest(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class ApproveRequestResponse(_message.Message):
    __slots__ = ("request",)
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    request: PrivacyRequest
    def __init__(self, request: _Optional[_Union[PrivacyRequest, _Mapping]] = ...) -> None: ...

class GetRequestRequest(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class GetRequestResponse(_message.Message):
    __slots__ = ("request",)
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    request: PrivacyRequest
    def __init__(self, request: _Optional[_Union[PrivacyRequest, _Mapping]] = ...) -> None: ...

class ListRequestsRequest(_message.Message):
    __slots__ = ("overdue", "attention", "page")
    OVERDUE_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    overdue: bool
    attention: bool
    page: _common_pb2.PageRequest
    def __init__(self, overdue: _Optional[bool] = ..., attention: _Optional[bool] = ..., page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListRequestsResponse(_message.Message):
    __slots__ = ("requests", "page")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[PrivacyRequest]
    page: _common_pb2.PageResponse
    def __init__(self, requests: _Optional[_Iterable[_Union[PrivacyRequest, _Mapping]]] = ..., page: _Optional[_Union[_common_pb2.PageResponse, _Mapping]] = ...) -> None: ...

class RetryRequestRequest(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class RetryRequestResponse(_message.Message):
    __slots__ = ("request",)
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    request: PrivacyRequest
    def __init__(self, request: _Optional[_Union[PrivacyRequest, _Mapping]] = ...) -> None: ...

class ErasureEntry(_message.Message):
    __slots__ = ("service", "store", "strategy", "count", "legal_basis", "applied_at")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    LEGAL_BASIS_FIELD_NUMBER: _ClassVar[int]
    APPLIED_AT_FIELD_NUMBER: _ClassVar[int]
    service: str
    store: str
    strategy: _data_pb2.ErasureStrategy
    count: int
    legal_basis: str
    applied_at: _timestamp_pb2.Timestamp
    def __init__(self, service: _Optional[str] = ..., store: _Optional[str] = ..., strategy: _Optional[_Union[_data_pb2.ErasureStrategy, str]] = ..., count: _Optional[int] = ..., legal_basis: _Optional[str] = ..., applied_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Certificate(_message.Message):
    __slots__ = ("request_id", "subject_id", "entries", "issued_at", "document", "signature", "public_key", "details")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    subject_id: str
    entries: _containers.RepeatedCompositeFieldContainer[ErasureEntry]
    issued_at: _timestamp_pb2.Timestamp
    document: str
    signature: str
    public_key: str
    details: _struct_pb2.Struct
    def __init__(self, request_id: _Optional[str] = ..., subject_id: _Optional[str] = ..., entries: _Optional[_Iterable[_Union[ErasureEntry, _Mapping]]] = ..., issued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., document: _Optional[str] = ..., signature: _Optional[str] = ..., public_key: _Optional[str] = ..., details: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class GetCertificateRequest(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class GetCertificateResponse(_message.Message):
    __slots__ = ("certificate",)
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    certificate: Certificate
    def __init__(self, certificate: _Optional[_Union[Certificate, _Mapping]] = ...) -> None: ...

class VerifyCertificateRequest(_message.Message):
    __slots__ = ("document", "signature")
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    document: str
    signature: str
    def __init__(self, document: _Optional[str] = ..., signature: _Optional[str] = ...) -> None: ...

class VerifyCertificateResponse(_message.Message):
    __slots__ = ("valid", "request_id")
    VALID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    valid: bool
    request_id: str
    def __init__(self, valid: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class VerifyAuditTrailRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VerifyAuditTrailResponse(_message.Message):
    __slots__ = ("intact", "events", "broken_at")
    INTACT_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    BROKEN_AT_FIELD_NUMBER: _ClassVar[int]
    intact: bool
    events: int
    broken_at: int
    def __init__(self, intact: _Optional[bool] = ..., events: _Optional[int] = ..., broken_at: _Optional[int] = ...) -> None: ...

class ExportRecord(_message.Message):
    __slots__ = ("request_id", "part", "subject_id", "ciphertext", "expires_at")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    part: str
    subject_id: str
    ciphertext: bytes
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, request_id: _Optional[str] = ..., part: _Optional[str] = ..., subject_id: _Optional[str] = ..., ciphertext: _Optional[bytes] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PrivacyRequestRecord(_message.Message):
    __slots__ = ("request_id", "subject_id", "account_id", "changes", "received_at")
    class ChangesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    subject_id: str
    account_id: str
    changes: _containers.ScalarMap[str, str]
    received_at: _timestamp_pb2.Timestamp
    def __init__(self, request_id: _Optional[str] = ..., subject_id: _Optional[str] = ..., account_id: _Optional[str] = ..., changes: _Optional[_Mapping[str, str]] = ..., received_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
