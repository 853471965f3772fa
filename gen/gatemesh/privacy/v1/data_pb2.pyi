from google.protobuf import descriptor_pb2 as _descriptor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DataCategory(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATA_CATEGORY_UNSPECIFIED: _ClassVar[DataCategory]
    DATA_CATEGORY_ACCOUNT: _ClassVar[DataCategory]
    DATA_CATEGORY_CREDENTIAL: _ClassVar[DataCategory]
    DATA_CATEGORY_PAYMENT: _ClassVar[DataCategory]
    DATA_CATEGORY_LEDGER: _ClassVar[DataCategory]
    DATA_CATEGORY_USAGE: _ClassVar[DataCategory]
    DATA_CATEGORY_TECHNICAL: _ClassVar[DataCategory]
    DATA_CATEGORY_SUPPORT: _ClassVar[DataCategory]
    DATA_CATEGORY_CONSENT: _ClassVar[DataCategory]

class ErasureStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERASURE_STRATEGY_UNSPECIFIED: _ClassVar[ErasureStrategy]
    ERASURE_STRATEGY_DELETE: _ClassVar[ErasureStrategy]
    ERASURE_STRATEGY_ANONYMIZE: _ClassVar[ErasureStrategy]
    ERASURE_STRATEGY_LEGAL_HOLD: _ClassVar[ErasureStrategy]
DATA_CATEGORY_UNSPECIFIED: DataCategory
DATA_CATEGORY_ACCOUNT: DataCategory
DATA_CATEGORY_CREDENTIAL: DataCategory
DATA_CATEGORY_PAYMENT: DataCategory
DATA_CATEGORY_LEDGER: DataCategory
DATA_CATEGORY_USAGE: DataCategory
DATA_CATEGORY_TECHNICAL: DataCategory
DATA_CATEGORY_SUPPORT: DataCategory
DATA_CATEGORY_CONSENT: DataCategory
ERASURE_STRATEGY_UNSPECIFIED: ErasureStrategy
ERASURE_STRATEGY_DELETE: ErasureStrategy
ERASURE_STRATEGY_ANONYMIZE: ErasureStrategy
ERASURE_STRATEGY_LEGAL_HOLD: ErasureStrategy
PERSONAL_FIELD_NUMBER: _ClassVar[int]
personal: _descriptor.FieldDescriptor
STORE_FIELD_NUMBER: _ClassVar[int]
store: _descriptor.FieldDescriptor

class PersonalData(_message.Message):
    __slots__ = ("category", "purpose", "retention", "retention_days", "erasure", "processors")
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    RETENTION_FIELD_NUMBER: _ClassVar[int]
    RETENTION_DAYS_FIELD_NUMBER: _ClassVar[int]
    ERASURE_FIELD_NUMBER: _ClassVar[int]
    PROCESSORS_FIELD_NUMBER: _ClassVar[int]
    category: DataCategory
    purpose: str
    retention: str
    retention_days: int
    erasure: ErasureStrategy
    processors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, category: _Optional[_Union[DataCategory, str]] = ..., purpose: _Optional[str] = ..., retention: _Optional[str] = ..., retention_days: _Optional[int] = ..., erasure: _Optional[_Union[ErasureStrategy, str]] = ..., processors: _Optional[_Iterable[str]] = ...) -> None: ...
