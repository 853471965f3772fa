import datetime

from buf.validate import validate_pb2 as _validate_pb2
from gatemesh.common.v1 import common_pb2 as _common_pb2
from gatemesh.privacy.v1 import data_pb2 as _data_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import httpbody_pb2 as _httpbody_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SettleBatchRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[SettleRequest]
    def __init__(self, items: _Optional[_Iterable[_Union[SettleRequest, _Mapping]]] = ...) -> None: ...

class SettleBatchItem(_message.Message):
    __slots__ = ("result", "error_code", "error_message", "error_reason")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_REASON_FIELD_NUMBER: _ClassVar[int]
    result: SettleResponse
    error_code: str
    error_message: str
    error_reason: str
    def __init__(self, result: _Optional[_Union[SettleResponse, _Mapping]] = ..., error_code: _Optional[str] = ..., error_message: _Optional[str] = ..., error_reason: _Optional[str] = ...) -> None: ...

class SettleBatchResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[SettleBatchItem]
    def __init__(self, items: _Optional[_Iterable[_Union[SettleBatchItem, _Mapping]]] = ...) -> None: ...

class ReleaseBatchRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ReleaseRequest]
    def __init__(self, items: _Optional[_Iterable[_Union[ReleaseRequest, _Mapping]]] = ...) -> None: ...

class ReleaseBatchItem(_message.Message):
    __slots__ = ("result", "error_code", "error_message", "error_reason")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_REASON_FIELD_NUMBER: _ClassVar[int]
    result: ReleaseResponse
    error_code: str
    error_message: str
    error_reason: str
    def __init__(self, result: _Optional[_Union[ReleaseResponse, _Mapping]] = ..., error_code: _Optional[str] = ..., error_message: _Optional[str] = ..., error_reason: _Optional[str] = ...) -> None: ...

class ReleaseBatchResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ReleaseBatchItem]
    def __init__(self, items: _Optional[_Iterable[_Union[ReleaseBatchItem, _Mapping]]] = ...) -> None: ...

class HoldBatchRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[HoldRequest]
    def __init__(self, items: _Optional[_Iterable[_Union[HoldRequest, _Mapping]]] = ...) -> None: ...

class HoldBatchItem(_message.Message):
    __slots__ = ("result", "error_code", "error_message", "error_reason")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_REASON_FIELD_NUMBER: _ClassVar[int]
    result: HoldResponse
    error_code: str
    error_message: str
    error_reason: str
    def __init__(self, result: _Optional[_Union[HoldResponse, _Mapping]] = ..., error_code: _Optional[str] = ..., error_message: _Optional[str] = ..., error_reason: _Optional[str] = ...) -> None: ...

class HoldBatchResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[HoldBatchItem]
    def __init__(self, items: _Optional[_Iterable[_Union[HoldBatchItem, _Mapping]]] = ...) -> None: ...

class RunRetentionSweepRequest(_message.Message):
    __slots__ = ("retention_days",)
    RETENTION_DAYS_FIELD_NUMBER: _ClassVar[int]
    retention_days: int
    def __init__(self, retention_days: _Optional[int] = ...) -> None: ...

class RunRetentionSweepResponse(_message.Message):
    __slots__ = ("deleted_usage_records", "aggregated_rows", "expired_holds")
    DELETED_USAGE_RECORDS_FIELD_NUMBER: _ClassVar[int]
    AGGREGATED_ROWS_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_HOLDS_FIELD_NUMBER: _ClassVar[int]
    deleted_usage_records: int
    aggregated_rows: int
    expired_holds: int
    def __init__(self, deleted_usage_records: _Optional[int] = ..., aggregated_rows: _Optional[int] = ..., expired_holds: _Optional[int] = ...) -> None: ...

class DepositAddressRecord(_message.Message):
    __slots__ = ("account_id", "chain_id", "address", "created_at")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    chain_id: int
    address: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, account_id: _Optional[str] = ..., chain_id: _Optional[int] = ..., address: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class HoldRequest(_message.Message):
    __slots__ = ("account_id", "amount_micros", "ttl_seconds", "idempotency_key", "key_id", "key_spend_cap_micros")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MICROS_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_SPEND_CAP_MICROS_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    amount_micros: int
    ttl_seconds: int
    idempotency_key: str
    key_id: str
    key_spend_cap_micros: int
    def __init__(self, account_id: _Optional[str] = ..., amount_micros: _Optional[int] = ..., ttl_seconds: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., key_id: _Optional[str] = ..., key_spend_cap_micros: _Optional[int] = ...) -> None: ...

class HoldResponse(_message.Message):
    __slots__ = ("hold_id", "amount_micros", "expires_at", "balance_micros")
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MICROS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    BALANCE_MICROS_FIELD_NUMBER: _ClassVar[int]
    hold_id: str
    amount_micros: int
    expires_at: _timestamp_pb2.Timestamp
    balance_micros: int
    def __init__(self, hold_id: _Optional[str] = ..., amount_micros: _Optional[int] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., balance_micros: _Optional[int] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("key_id", "model", "provider", "input_tokens", "output_tokens", "status", "latency_ms", "started_at", "tokens_estimated")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_ESTIMATED_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    model: str
    provider: str
    input_tokens: int
    output_tokens: int
    status: str
    latency_ms: int
    started_at: _timestamp_pb2.Timestamp
    tokens_estimated: bool
    def __init__(self, key_id: _Optional[str] = ..., model: _Optional[str] = ..., provider: _Optional[str] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., status: _Optional[str] = ..., latency_ms: _Optional[int] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tokens_estimated: _Optional[bool] = ...) -> None: ...

class SettleRequest(_message.Message):
    __slots__ = ("hold_id", "actual_micros", "usage", "idempotency_key", "lease")
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_MICROS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    hold_id: str
    actual_micros: int
    usage: Usage
    idempotency_key: str
    lease: bool
    def __init__(self, hold_id: _Optional[str] = ..., actual_micros: _Optional[int] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., idempotency_key: _Optional[str] = ..., lease: _Optional[bool] = ...) -> None: ...

class SettleResponse(_message.Message):
    __slots__ = ("charged_micros", "released_micros", "shortfall_micros", "usage_id", "balance_micros")
    CHARGED_MICROS_FIELD_NUMBER: _ClassVar[int]
    RELEASED_MICROS_FIELD_NUMBER: _ClassVar[int]
    SHORTFALL_MICROS_FIELD_NUMBER: _ClassVar[int]
    USAGE_ID_FIELD_NUMBER: _ClassVar[int]
    BALANCE_MICROS_FIELD_NUMBER: _ClassVar[int]
    charged_micros: int
    released_micros: int
    shortfall_micros: int
    usage_id: str
    balance_micros: int
    def __init__(self, charged_micros: _Optional[int] = ..., released_micros: _Optional[int] = ..., shortfall_micros: _Optional[int] = ..., usage_id: _Optional[str] = ..., balance_micros: _Optional[int] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("hold_id", "idempotency_key", "usage")
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    hold_id: str
    idempotency_key: str
    usage: Usage
    def __init__(self, hold_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("released_micros", "balance_micros")
    RELEASED_MICROS_FIELD_NUMBER: _ClassVar[int]
    BALANCE_MICROS_FIELD_NUMBER: _ClassVar[int]
    released_micros: int
    balance_micros: int
    def __init__(self, released_micros: _Optional[int] = ..., balance_micros: _Optional[int] = ...) -> None: ...

class QuoteRequest(_message.Message):
    __slots__ = ("model", "input_tokens", "output_tokens", "at")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    model: str
    input_tokens: int
    output_tokens: int
    at: _timestamp_pb2.Timestamp
    def __init__(self, model: _Optional[str] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class QuoteResponse(_message.Message):
    __slots__ = ("cost_micros", "input_per_mtok_micros", "output_per_mtok_micros")
    COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    INPUT_PER_MTOK_MICROS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PER_MTOK_MICROS_FIELD_NUMBER: _ClassVar[int]
    cost_micros: int
    input_per_mtok_micros: int
    output_per_mtok_micros: int
    def __init__(self, cost_micros: _Optional[int] = ..., input_per_mtok_micros: _Optional[int] = ..., output_per_mtok_micros: _Optional[int] = ...) -> None: ...

class GetBalanceRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetBalanceResponse(_message.Message):
    __slots__ = ("account_id", "balance_micros", "held_micros")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    BALANCE_MICROS_FIELD_NUMBER: _ClassVar[int]
    HELD_MICROS_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    balance_micros: int
    held_micros: int
    def __init__(self, account_id: _Optional[str] = ..., balance_micros: _Optional[int] = ..., held_micros: _Optional[int] = ...) -> None: ...

class AdminGetBalanceRequest(_message.Message):
    __slots__ = ("account_id",)
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    def __init__(self, account_id: _Optional[str] = ...) -> None: ...

class UsageRecord(_message.Message):
    __slots__ = ("usage_id", "account_id", "key_id", "model", "provider", "input_tokens", "output_tokens", "cost_micros", "status", "latency_ms", "created_at", "tokens_estimated", "shortfall_micros")
    USAGE_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_ESTIMATED_FIELD_NUMBER: _ClassVar[int]
    SHORTFALL_MICROS_FIELD_NUMBER: _ClassVar[int]
    usage_id: str
    account_id: str
    key_id: str
    model: str
    provider: str
    input_tokens: int
    output_tokens: int
    cost_micros: int
    status: str
    latency_ms: int
    created_at: _timestamp_pb2.Timestamp
    tokens_estimated: bool
    shortfall_micros: int
    def __init__(self, usage_id: _Optional[str] = ..., account_id: _Optional[str] = ..., key_id: _Optional[str] = ..., model: _Optional[str] = ..., provider: _Optional[str] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cost_micros: _Optional[int] = ..., status: _Optional[str] = ..., latency_ms: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tokens_estimated: _Optional[bool] = ..., shortfall_micros: _Optional[int] = ...) -> None: ...

class ListUsageRequest(_message.Message):
    __slots__ = ("since", "until", "model", "key_id", "page")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    model: str
    key_id: str
    page: _common_pb2.PageRequest
    def __init__(self, since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., model: _Optional[str] = ..., key_id: _Optional[str] = ..., page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class AdminListUsageRequest(_message.Message):
    __slots__ = ("account_id", "filter")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    filter: ListUsageRequest
    def __init__(self, account_id: _Optional[str] = ..., filter: _Optional[_Union[ListUsageRequest, _Mapping]] = ...) -> None: ...

class ListUsageResponse(_message.Message):
    __slots__ = ("records", "page")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[UsageRecord]
    page: _common_pb2.PageResponse
    def __init__(self, records: _Optional[_Iterable[_Union[UsageRecord, _Mapping]]] = ..., page: _Optional[_Union[_common_pb2.PageResponse, _Mapping]] = ...) -> None: ...

class GetUsageStatsRequest(_message.Message):
    __slots__ = ("since", "until")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    def __init__(self, since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DailyModelStats(_message.Message):
    __slots__ = ("day", "model", "requests", "input_tokens", "output_tokens", "cost_micros")
    DAY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    day: str
    model: str
    requests: int
    input_tokens: int
    output_tokens: int
    cost_micros: int
    def __init__(self, day: _Optional[str] = ..., model: _Optional[str] = ..., requests: _Optional[int] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cost_micros: _Optional[int] = ...) -> None: ...

class GetUsageStatsResponse(_message.Message):
    __slots__ = ("days",)
    DAYS_FIELD_NUMBER: _ClassVar[int]
    days: _containers.RepeatedCompositeFieldContainer[DailyModelStats]
    def __init__(self, days: _Optional[_Iterable[_Union[DailyModelStats, _Mapping]]] = ...) -> None: ...

class GetAggregateStatsRequest(_message.Message):
    __slots__ = ("since", "until")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    def __init__(self, since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetAggregateStatsResponse(_message.Message):
    __slots__ = ("days",)
    DAYS_FIELD_NUMBER: _ClassVar[int]
    days: _containers.RepeatedCompositeFieldContainer[DailyModelStats]
    def __init__(self, days: _Optional[_Iterable[_Union[DailyModelStats, _Mapping]]] = ...) -> None: ...

class GetStatementRequest(_message.Message):
    __slots__ = ("month", "format")
    MONTH_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    month: str
    format: str
    def __init__(self, month: _Optional[str] = ..., format: _Optional[str] = ...) -> None: ...

class LedgerEntry(_message.Message):
    __slots__ = ("transfer_id", "kind", "amount_micros", "created_at", "reference")
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MICROS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    transfer_id: str
    kind: str
    amount_micros: int
    created_at: _timestamp_pb2.Timestamp
    reference: str
    def __init__(self, transfer_id: _Optional[str] = ..., kind: _Optional[str] = ..., amount_micros: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reference: _Optional[str] = ...) -> None: ...

class GetStatementResponse(_message.Message):
    __slots__ = ("month", "opening_balance_micros", "closing_balance_micros", "entries", "csv")
    MONTH_FIELD_NUMBER: _ClassVar[int]
    OPENING_BALANCE_MICROS_FIELD_NUMBER: _ClassVar[int]
    CLOSING_BALANCE_MICROS_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    CSV_FIELD_NUMBER: _ClassVar[int]
    month: str
    opening_balance_micros: int
    closing_balance_micros: int
    entries: _containers.RepeatedCompositeFieldContainer[LedgerEntry]
    csv: str
    def __init__(self, month: _Optional[str] = ..., opening_balance_micros: _Optional[int] = ..., closing_balance_micros: _Optional[int] = ..., entries: _Optional[_Iterable[_Union[LedgerEntry, _Mapping]]] = ..., csv: _Optional[str] = ...) -> None: ...

class CreateCheckoutSessionRequest(_message.Message):
    __slots__ = ("amount_micros", "success_url", "cancel_url", "idempotency_key")
    AMOUNT_MICROS_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_URL_FIELD_NUMBER: _ClassVar[int]
    CANCEL_URL_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    amount_micros: int
    success_url: str
    cancel_url: str
    idempotency_key: str
    def __init__(self, amount_micros: _Optional[int] = ..., success_url: _Optional[str] = ..., cancel_url: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class CreateCheckoutSessionResponse(_message.Message):
    __slots__ = ("session_id", "url")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    url: str
    def __init__(self, session_id: _Optional[str] = ..., url: _Optional[str] = ...) -> None: ...

class GetDepositAddressRequest(_message.Message):
    __slots__ = ("chain_id",)
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    chain_id: int
    def __init__(self, chain_id: _Optional[int] = ...) -> None: ...

class GetDepositAddressResponse(_message.Message):
    __slots__ = ("address", "chain_id", "tokens", "confirmations")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    CONFIRMATIONS_FIELD_NUMBER: _ClassVar[int]
    address: str
    chain_id: int
    tokens: _containers.RepeatedCompositeFieldContainer[DepositToken]
    confirmations: int
    def __init__(self, address: _Optional[str] = ..., chain_id: _Optional[int] = ..., tokens: _Optional[_Iterable[_Union[DepositToken, _Mapping]]] = ..., confirmations: _Optional[int] = ...) -> None: ...

class DepositToken(_message.Message):
    __slots__ = ("symbol", "contract", "decimals")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_FIELD_NUMBER: _ClassVar[int]
    DECIMALS_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    contract: str
    decimals: int
    def __init__(self, symbol: _Optional[str] = ..., contract: _Optional[str] = ..., decimals: _Optional[int] = ...) -> None: ...

class CardPaymentRecord(_message.Message):
    __slots__ = ("payment_id", "account_id", "customer_ref", "session_ref", "payment_ref", "amount_micros", "created_at")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_REF_FIELD_NUMBER: _ClassVar[int]
    SESSION_REF_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_REF_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MICROS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    account_id: str
    customer_ref: str
    session_ref: str
    payment_ref: str
    amount_micros: int
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, payment_id: _Optional[str] = ..., account_id: _Optional[str] = ..., customer_ref: _Optional[str] = ..., session_ref: _Optional[str] = ..., payment_ref: _Optional[str] = ..., amount_micros: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ChainDepositRecord(_message.Message):
    __slots__ = ("deposit_id", "account_id", "chain_id", "tx_hash", "log_index", "from_address", "to_address", "token", "token_amount", "amount_micros", "created_at")
    DEPOSIT_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    TX_HASH_FIELD_NUMBER: _ClassVar[int]
    LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    FROM_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TO_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOKEN_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MICROS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    deposit_id: str
    account_id: str
    chain_id: int
    tx_hash: str
    log_index: int
    from_address: str
    to_address: str
    token: str
    token_amount: str
    amount_micros: int
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, deposit_id: _Optional[str] = ..., account_id: _Optional[str] = ..., chain_id: _Optional[int] = ..., tx_hash: _Optional[str] = ..., log_index: _Optional[int] = ..., from_address: _Optional[str] = ..., to_address: _Optional[str] = ..., token: _Optional[str] = ..., token_amount: _Optional[str] = ..., amount_micros: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class LedgerTransferRecord(_message.Message):
    __slots__ = ("transfer_id", "account_id", "kind", "amount_micros", "created_at")
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MICROS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    transfer_id: str
    account_id: str
    kind: str
    amount_micros: int
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, transfer_id: _Optional[str] = ..., account_id: _Optional[str] = ..., kind: _Optional[str] = ..., amount_micros: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RedeemCodeRequest(_message.Message):
    __slots__ = ("code", "idempotency_key")
    CODE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    code: str
    idempotency_key: str
    def __init__(self, code: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class RedeemCodeResponse(_message.Message):
    __slots__ = ("credited_micros", "balance_micros")
    CREDITED_MICROS_FIELD_NUMBER: _ClassVar[int]
    BALANCE_MICROS_FIELD_NUMBER: _ClassVar[int]
    credited_micros: int
    balance_micros: int
    def __init__(self, credited_micros: _Optional[int] = ..., balance_micros: _Optional[int] = ...) -> None: ...

class GrantCreditsRequest(_message.Message):
    __slots__ = ("account_id", "amount_micros", "reason", "idempotency_key")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MICROS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    amount_micros: int
    reason: str
    idempotency_key: str
    def __init__(self, account_id: _Optional[str] = ..., amount_micros: _Optional[int] = ..., reason: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class GrantCreditsResponse(_message.Message):
    __slots__ = ("transfer_id", "balance_micros")
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    BALANCE_MICROS_FIELD_NUMBER: _ClassVar[int]
    transfer_id: str
    balance_micros: int
    def __init__(self, transfer_id: _Optional[str] = ..., balance_micros: _Optional[int] = ...) -> None: ...

class RefundRequest(_message.Message):
    __slots__ = ("transfer_id", "amount_micros", "reason", "idempotency_key")
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MICROS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    transfer_id: str
    amount_micros: int
    reason: str
    idempotency_key: str
    def __init__(self, transfer_id: _Optional[str] = ..., amount_micros: _Optional[int] = ..., reason: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class RefundResponse(_message.Message):
    __slots__ = ("transfer_id", "balance_micros", "refunded_micros")
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    BALANCE_MICROS_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_MICROS_FIELD_NUMBER: _ClassVar[int]
    transfer_id: str
    balance_micros: int
    refunded_micros: int
    def __init__(self, transfer_id: _Optional[str] = ..., balance_micros: _Optional[int] = ..., refunded_micros: _Optional[int] = ...) -> None: ...

class CreateCodesRequest(_message.Message):
    __slots__ = ("amount_micros", "count", "expires_at", "idempotency_key")
    AMOUNT_MICROS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    amount_micros: int
    count: int
    expires_at: _timestamp_pb2.Timestamp
    idempotency_key: str
    def __init__(self, amount_micros: _Optional[int] = ..., count: _Optional[int] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class CreateCodesResponse(_message.Message):
    __slots__ = ("batch_id", "codes")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    CODES_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    codes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, batch_id: _Optional[str] = ..., codes: _Optional[_Iterable[str]] = ...) -> None: ...

class ListPricesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelPrice(_message.Message):
    __slots__ = ("model", "input_per_mtok_micros", "output_per_mtok_micros", "effective_from")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUT_PER_MTOK_MICROS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PER_MTOK_MICROS_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_FROM_FIELD_NUMBER: _ClassVar[int]
    model: str
    input_per_mtok_micros: int
    output_per_mtok_micros: int
    effective_from: _timestamp_pb2.Timestamp
    def __init__(self, model: _Optional[str] = ..., input_per_mtok_micros: _Optional[int] = ..., output_per_mtok_micros: _Optional[int] = ..., effective_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListPricesResponse(_message.Message):
    __slots__ = ("prices",)
    PRICES_FIELD_NUMBER: _ClassVar[int]
    prices: _containers.RepeatedCompositeFieldContainer[ModelPrice]
    def __init__(self, prices: _Optional[_Iterable[_Union[ModelPrice, _Mapping]]] = ...) -> None: ...
