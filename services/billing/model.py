"""Billing's values: what goes into a hold, a settle, a credit, a report, and what comes out.

Results are plain dataclasses (JSON-able, so that the first result of an idempotency key can
be stored and replayed); the servicer maps them to protos. Also the checks every request
shares (account ids, idempotency keys, amounts) and the names of ledger accounts.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.runtime.errors import NotFound, Violations
from services.runtime.money import format_usd

ACCOUNT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_KEY_LEN = 200
MAX_MICROS = 10**15  # a billion USD: anything above is a mistake, not a payment
SYSTEM_PREFIX = "system:"


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    """Now as naive UTC, the stored form."""
    return datetime.now(UTC).replace(tzinfo=None)


def naive(moment: datetime) -> datetime:
    """A datetime as naive UTC, the stored form."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def iso(moment: datetime) -> str:
    """A naive UTC time as ISO 8601 with its offset (as results are stored and returned)."""
    return moment.replace(tzinfo=UTC).isoformat()


def wallet(account_id: str) -> str:
    """The ledger account of an account's available credit."""
    return f"wallet:{account_id}"


def holds_account(account_id: str) -> str:
    """The ledger account of the credit an account's open holds reserve."""
    return f"holds:{account_id}"


def system(name: str) -> str:
    """A system ledger account (revenue, grants, top-ups, refunds): no running balance."""
    return f"{SYSTEM_PREFIX}{name}"


def scoped_key(account_id: str, idempotency_key: str) -> str:
    """An idempotency key stored per account (two people may pick the same key), within the
    column's 200 characters: a long caller key is kept as its SHA-256."""
    key = f"{account_id}:{idempotency_key}"
    if len(key) <= MAX_KEY_LEN:
        return key
    return f"{account_id}:sha256:{hashlib.sha256(idempotency_key.encode()).hexdigest()}"


def not_offered(feature: str) -> NotFound:
    """A top-up method this deployment has not configured: for the caller, a route that
    leads nowhere (404), not a request to fix (400)."""
    return NotFound(f"{feature} are not offered here (not configured)", reason="not_configured")


def check_account(v: Violations, account_id: str, name: str = "account_id") -> None:
    v.check(bool(ACCOUNT_ID.match(account_id)), name, "must be an account id (1-64 letters, digits, - or _)")


def check_key(v: Violations, key: str) -> None:
    v.check(0 < len(key) <= MAX_KEY_LEN, "idempotency_key", f"required, at most {MAX_KEY_LEN} characters")


def check_amount(v: Violations, amount: int, name: str = "amount_micros") -> None:
    v.check(0 < amount <= MAX_MICROS, name, "must be a positive amount of micro-units")


@dataclass
class UsageIn:
    """The metadata of one call (P1.4); never content."""

    model: str
    key_id: str = ""
    provider: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    status: str = "ok"
    latency_ms: int = 0
    started_at: datetime | None = None
    tokens_estimated: bool = False

    def validate(self, v: Violations, prefix: str = "usage") -> None:
        v.check(0 < len(self.model) <= 128, f"{prefix}.model", "required, at most 128 characters")
        v.check(0 <= self.input_tokens <= 10**12, f"{prefix}.input_tokens", "must not be negative")
        v.check(0 <= self.output_tokens <= 10**12, f"{prefix}.output_tokens", "must not be negative")
        v.check(self.latency_ms >= 0, f"{prefix}.latency_ms", "must not be negative")
        v.check(len(self.key_id) <= 64, f"{prefix}.key_id", "at most 64 characters")
        v.check(len(self.provider) <= 64, f"{prefix}.provider", "at most 64 characters")
        v.check(len(self.status) <= 32, f"{prefix}.status", "at most 32 characters")

    def params(self) -> dict[str, Any]:
        """What an idempotency key is bound to. Flat (cheaper than asdict's deep copy), the
        time already as the text `json.dumps(default=str)` made of it before: the same hash,
        without the encoder calling back into Python."""
        params = dict(vars(self))
        if self.started_at is not None:
            params["started_at"] = str(self.started_at)
        return params


@dataclass
class HoldIn:
    """One hold request; `params` is what its idempotency key is bound to."""

    account_id: str
    amount: int
    ttl_s: int
    idempotency_key: str
    key_id: str = ""
    key_cap: int = 0

    def params(self) -> dict[str, Any]:
        return {"account": self.account_id, "amount": self.amount, "ttl": self.ttl_s, "key_id": self.key_id,
                "cap": self.key_cap}  # fmt: skip


@dataclass
class HoldResult:
    hold_id: str
    amount_micros: int
    expires_at: str
    balance_micros: int


@dataclass
class SettleIn:
    hold_id: str
    actual_micros: int
    usage: UsageIn
    idempotency_key: str
    lease: bool = False  # a draw on a credit lease (issue 15): the hold stays open with the rest

    def params(self) -> dict[str, Any]:
        """What its idempotency key is bound to; `lease` only when set, so that the keys of
        plain settles hash as they always did."""
        params: dict[str, Any] = {"hold": self.hold_id, "actual": self.actual_micros, "usage": self.usage.params()}
        if self.lease:
            params["lease"] = True
        return params


@dataclass
class SettleResult:
    charged_micros: int
    released_micros: int
    shortfall_micros: int
    usage_id: str
    balance_micros: int


@dataclass
class ReleaseIn:
    hold_id: str
    idempotency_key: str
    usage: UsageIn | None = None  # a failed call's usage, recorded at no cost

    def params(self) -> dict[str, Any]:
        """What its idempotency key is bound to."""
        return {"hold": self.hold_id, "usage": self.usage.params() if self.usage else None}


@dataclass
class ReleaseResult:
    released_micros: int
    balance_micros: int


@dataclass
class TransferResult:
    transfer_id: str
    balance_micros: int
    amount_micros: int = 0


@dataclass
class CodesResult:
    batch_id: str
    codes: list[str]


@dataclass
class Balance:
    account_id: str
    balance_micros: int
    held_micros: int


@dataclass
class UsageQuery:
    account_id: str
    since: datetime | None = None
    until: datetime | None = None
    model: str = ""
    key_id: str = ""
    page_size: int = 0
    page_token: str = ""


@dataclass
class UsagePage:
    records: list[Any]  # the store's usage rows
    next_page_token: str


@dataclass
class DailyStats:
    day: str
    model: str
    requests: int
    input_tokens: int
    output_tokens: int
    cost_micros: int


@dataclass
class StatementLine:
    transfer_id: str
    kind: str
    amount_micros: int
    created_at: datetime
    reference: str


@dataclass
class Statement:
    month: str
    opening_balance_micros: int
    closing_balance_micros: int
    entries: list[StatementLine] = field(default_factory=list)

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["transfer_id", "kind", "amount_usd", "created_at", "reference"])
        for line in self.entries:
            writer.writerow(
                [line.transfer_id, line.kind, format_usd(line.amount_micros), line.created_at.isoformat(),
                 line.reference]
            )  # fmt: skip
        return out.getvalue()


USAGE_COLUMNS = (
    "id", "account_id", "key_id", "model", "provider", "input_tokens", "output_tokens", "cost_micros",
    "shortfall_micros", "status", "latency_ms", "tokens_estimated", "created_at",
)  # fmt: skip
"""A usage record's fields, in the order its tuples are written in (`ports.HoldRows.insert_usages`)."""


def usage_row(
    usage_id: str, account_id: str, usage: UsageIn, cost: int, shortfall: int, now: datetime
) -> tuple[Any, ...]:
    """A call's usage record, in `USAGE_COLUMNS` order; its time is the call's start."""
    created = naive(usage.started_at) if usage.started_at else now
    return (usage_id, account_id, usage.key_id, usage.model, usage.provider, usage.input_tokens, usage.output_tokens,
            cost, shortfall, usage.status, usage.latency_ms, usage.tokens_estimated, created)  # fmt: skip
