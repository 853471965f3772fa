"""The billing rules: holds, settles, releases, grants, refunds, codes, usage and statements.

Every mutation runs in one database transaction with its idempotency key: the rarer ones
claim the key first (`store.claim_key`), the hot path (hold, settle, release) stores it with
its result after the work (`Billing._once`, one statement fewer). Either way a retry with the
same key and parameters returns the stored first result, other parameters are refused, and a
failed attempt (insufficient credit, bad input) rolls back with everything else, so nothing
is half-done and the key stays free. Results are
plain dataclasses (JSON-able, so that the first result can be stored and replayed); the
servicer maps them to protos. No gRPC and no SQL text here: queries live in `store`.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.runtime.errors import (
    Aborted,
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
    Violations,
)

from . import store
from .prices import PriceTable
from .store import Code, CodeBatch, Entry, Hold, Idempotency, Transfer, UsageDailyAnonymous, UsageRow, utcnow

ACCOUNT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_KEY_LEN = 200
MAX_MICROS = 10**15  # a billion USD: anything above is a mistake, not a payment
CODE_ALPHABET = re.compile(r"^[A-Z2-7]{20}$")
OptOuts = Callable[[], Awaitable[set[str]]]
TOPUP_KINDS = frozenset({"grant", "topup_card", "topup_crypto", "redeem"})


class _KeyTaken(Exception):
    """The idempotency key was stored by an earlier request: replay its result."""


def new_id() -> str:
    return str(uuid.uuid4())


def iso(moment: datetime) -> str:
    """A naive UTC time as ISO 8601 with its offset (as results are stored and returned)."""
    return moment.replace(tzinfo=UTC).isoformat()


def key_spend_limit() -> FailedPrecondition:
    return FailedPrecondition(
        "the API key's spend limit is reached", reason="key_spend_limit", openai_code="insufficient_quota"
    )


def insufficient_credit() -> FailedPrecondition:
    return FailedPrecondition("insufficient credit", reason="insufficient_credit", openai_code="insufficient_quota")


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
class SettleResult:
    charged_micros: int
    released_micros: int
    shortfall_micros: int
    usage_id: str
    balance_micros: int


@dataclass
class SettleIn:
    hold_id: str
    actual_micros: int
    usage: UsageIn
    idempotency_key: str

    def params(self) -> dict[str, Any]:
        """What its idempotency key is bound to."""
        return {"hold": self.hold_id, "actual": self.actual_micros, "usage": self.usage.params()}


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
class UsagePage:
    records: list[UsageRow]
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
                [line.transfer_id, line.kind, usd(line.amount_micros), line.created_at.isoformat(), line.reference]
            )
        return out.getvalue()


def usd(micros: int) -> str:
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), 1_000_000)
    return f"{sign}{whole}.{frac:06d}"


@dataclass
class UsageQuery:
    account_id: str
    since: datetime | None = None
    until: datetime | None = None
    model: str = ""
    key_id: str = ""
    page_size: int = 0
    page_token: str = ""


def encode_cursor(created_at: datetime, row_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{row_id}".encode()).decode()


def decode_cursor(token: str) -> tuple[datetime, str]:
    try:
        created, row_id = base64.urlsafe_b64decode(token.encode()).decode().split("|", 1)
        return datetime.fromisoformat(created), row_id
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("malformed page token", field_violations={"page.page_token": "not a token"}) from None


class Billing:
    """The ledger and everything that moves money in it."""

    def __init__(
        self,
        engine: AsyncEngine,
        prices: PriceTable,
        secret: str,
        hold_ttl_s: int = 600,
        hold_max_ttl_s: int = 86_400,
        opt_outs: OptOuts | None = None,
        stats_min_accounts: int = 3,
        clock: Callable[[], datetime] = utcnow,
        idempotency_ttl_days: int = 7,
    ) -> None:
        self.engine = engine
        self.prices = prices
        self._secret = secret.encode()
        self.hold_ttl_s = hold_ttl_s
        self.hold_max_ttl_s = hold_max_ttl_s
        self.opt_outs = opt_outs
        self.stats_min_accounts = stats_min_accounts
        self.clock = clock
        self.idempotency_ttl_days = idempotency_ttl_days

    # --- holds -----------------------------------------------------------------------

    async def hold(
        self,
        account_id: str,
        amount: int,
        ttl_s: int,
        idempotency_key: str,
        key_id: str = "",
        key_cap: int = 0,
    ) -> HoldResult:
        item = HoldIn(account_id, amount, ttl_s, idempotency_key, key_id, key_cap)
        self.validate_hold(item)
        one_statement = self.engine.dialect.name == "postgresql"

        async def work(conn: AsyncConnection) -> HoldResult:
            hold_id, now = new_id(), self.clock()
            expires = self.hold_expiry(item, now)
            if one_statement:
                return await self._hold_in_one_statement(conn, item, hold_id, now, expires)
            legs = [(store.wallet(account_id), -amount), (store.holds_account(account_id), amount)]
            await conn.execute(
                store.hot(conn).hold,
                {"id": hold_id, "account_id": account_id, "key_id": key_id, "amount": amount, "status": "open",
                 "created_at": now, "expires_at": expires},
            )  # fmt: skip
            try:
                after = await store.post_transfer(conn, new_id(), "hold", account_id, legs, hold_id, amount, now)
            except store.Overdraft:
                raise insufficient_credit() from None
            if key_id:  # after the ledger rows: every path locks ledger rows, then the key's row
                await self._reserve_key_spend(conn, key_id, amount, key_cap)
            return HoldResult(hold_id, amount, iso(expires), after[store.wallet(account_id)])

        return await self._once(
            "hold", idempotency_key, item.params(), work, lambda first: HoldResult(**first), one_statement
        )

    async def _hold_in_one_statement(
        self, conn: AsyncConnection, item: HoldIn, hold_id: str, now: datetime, expires: datetime
    ) -> HoldResult:
        """The hold on PostgreSQL: one round trip instead of seven (see `store.HOLD_PG`); it
        stores the idempotency key with the result itself. Any refusal raises, so that `_once`
        rolls the transaction back."""
        values = {
            "holds": store.holds_account(item.account_id), "wallet": store.wallet(item.account_id),
            "account": item.account_id, "amount": item.amount, "key_id": item.key_id, "cap": item.key_cap,
            "hold_id": hold_id, "transfer_id": new_id(), "now": now, "expires": expires, "expires_iso": iso(expires),
            "key": item.idempotency_key, "params_hash": store.params_hash(item.params()), "created": utcnow(),
        }  # fmt: skip
        row = (await conn.execute(store.HOLD_PG, values)).one()
        if row.balance is None:
            raise insufficient_credit()
        if item.key_id and (not row.reserved or (item.key_cap and item.amount > item.key_cap)):
            raise key_spend_limit()
        if not row.recorded:
            raise _KeyTaken
        return HoldResult(hold_id, item.amount, iso(expires), int(row.balance))

    def validate_hold(self, item: HoldIn) -> None:
        v = Violations()
        check_account(v, item.account_id)
        check_amount(v, item.amount)
        v.check(0 <= item.ttl_s <= self.hold_max_ttl_s, "ttl_seconds", f"must be between 0 and {self.hold_max_ttl_s}")
        check_key(v, item.idempotency_key)
        v.check(len(item.key_id) <= 64, "key_id", "at most 64 characters")
        v.check(item.key_cap >= 0, "key_spend_cap_micros", "must not be negative")
        v.raise_if_any()

    def hold_expiry(self, item: HoldIn, now: datetime) -> datetime:
        return now + timedelta(seconds=item.ttl_s or self.hold_ttl_s)

    async def hold_batch(self, items: list[HoldIn]) -> list[HoldResult | Exception]:
        """Place many holds in one transaction (see `batch`); one outcome per item. A batch of
        one takes the single hold's path."""
        from .batch import BatchHolder

        if len(items) == 1:
            item = items[0]
            try:
                return [await self.hold(item.account_id, item.amount, item.ttl_s, item.idempotency_key,
                                        item.key_id, item.key_cap)]  # fmt: skip
            except DomainError as error:
                return [error]
        return await BatchHolder(self).run(items)

    async def _once(
        self,
        scope: str,
        key: str,
        params: dict[str, Any],
        work: Callable[[AsyncConnection], Awaitable[Any]],
        load: Callable[[dict[str, Any]], Any],
        key_stored_by_work: bool = False,
    ) -> Any:
        """Run a mutation once per idempotency key, with the key stored in the same statement
        as its result, after the work (one statement instead of claim + finish), or by the
        work itself (`key_stored_by_work`: it raises `_KeyTaken` when the key was taken). A repeat
        either fails in its work (the hold is settled, the credit is spent) or finds the key
        taken when it stores it; both roll back and return the stored first result. A
        concurrent repeat waits on the key's unique index until the first commits."""
        try:
            async with self.engine.begin() as conn:
                result = await work(conn)
                if key_stored_by_work:
                    return result
                if not await store.record_key(conn, scope, key, params, vars(result)):
                    raise _KeyTaken
                return result
        except (_KeyTaken, DomainError) as error:
            async with self.engine.connect() as conn:
                stored = await store.stored_key(conn, scope, key)
            if stored is None or not stored.result:
                if isinstance(error, _KeyTaken):
                    raise Aborted("a concurrent request with this idempotency key is in progress; retry") from None
                raise
            if stored.params_hash != store.params_hash(params):
                raise AlreadyExists(
                    f"idempotency key already used for a different {scope} request",
                    field_violations={"idempotency_key": "reuse a key only to retry the identical request"},
                    reason="idempotency_key_reused",
                ) from None
            return load(json.loads(stored.result))

    async def _reserve_key_spend(self, conn: AsyncConnection, key_id: str, amount: int, cap: int) -> None:
        """Add to the key's held amount, in one upsert whose update applies only within the cap."""
        values = {"key_id": key_id, "spent": 0, "held": amount, "b_cap": cap}
        reserved = (await conn.execute(store.hot(conn).key_reserve, values)).scalar_one_or_none()
        if reserved is None or (cap and amount > cap):
            raise key_spend_limit()

    async def _resolve_key_spend(self, conn: AsyncConnection, key_id: str, held: int, spent: int) -> None:
        if key_id:
            await conn.execute(store.hot(conn).key_resolve, {"b_key": key_id, "b_held": held, "b_spent": spent})

    def validate_settle(self, item: SettleIn, prefix: str = "") -> int:
        """Check a settle; its cost (the actual amount given, or the usage priced)."""
        v = Violations()
        v.check(bool(item.hold_id), f"{prefix}hold_id", "required")
        v.check(0 <= item.actual_micros <= MAX_MICROS, f"{prefix}actual_micros", "must not be negative")
        check_key(v, item.idempotency_key)
        item.usage.validate(v, f"{prefix}usage")
        v.raise_if_any()
        return item.actual_micros or self.price_usage(item.usage)

    def price_usage(self, usage: UsageIn) -> int:
        """The cost of a call at the price in force when it started."""
        when = (usage.started_at or self.clock().replace(tzinfo=UTC)).astimezone(UTC)
        try:
            cost, _ = self.prices.quote(usage.model, usage.input_tokens, usage.output_tokens, when)
        except InvalidArgument as error:
            raise InvalidArgument(error.message, field_violations={"usage.model": "no price for this model"}) from None
        return cost

    async def settle(self, item: SettleIn) -> SettleResult:
        cost = self.validate_settle(item)
        params = item.params()
        one_statement = self.engine.dialect.name == "postgresql"

        async def work(conn: AsyncConnection) -> SettleResult:
            if not one_statement:
                return await self._settle(conn, item, cost)
            done = await self._settle_in_one_statement(conn, item, cost, params)
            if done is None:  # not open, or charged above the hold: step by step, storing the key too
                done = await self._settle(conn, item, cost)
                if not await store.record_key(conn, "settle", item.idempotency_key, params, vars(done)):
                    raise _KeyTaken
            return done

        return await self._once(
            "settle", item.idempotency_key, params, work, lambda first: SettleResult(**first), one_statement
        )

    async def _settle_in_one_statement(
        self, conn: AsyncConnection, item: SettleIn, cost: int, params: dict[str, Any]
    ) -> SettleResult | None:
        """The settle on PostgreSQL when the cost is within the hold: one round trip (see
        `store.SETTLE_PG`), the idempotency key stored with the result. None when it wrote
        nothing: the hold is not open, or the cost exceeds it."""
        u, now, usage_id = item.usage, self.clock(), new_id()
        values = {
            "hold_id": item.hold_id, "cost": cost, "holds_prefix": store.holds_account(""),
            "wallet_prefix": store.wallet(""), "revenue": store.system("revenue"), "usage_id": usage_id,
            "u_key_id": u.key_id, "model": u.model, "provider": u.provider, "input_tokens": u.input_tokens,
            "output_tokens": u.output_tokens, "status": u.status, "latency_ms": u.latency_ms,
            "tokens_estimated": u.tokens_estimated, "created": store.naive(u.started_at) if u.started_at else now,
            "transfer_id": new_id(), "now": now, "key": item.idempotency_key,
            "params_hash": store.params_hash(params), "key_created": utcnow(),
        }  # fmt: skip
        row = (await conn.execute(store.SETTLE_PG, values)).one()
        if row.amount is None:
            return None
        if not row.recorded:
            raise _KeyTaken
        return SettleResult(cost, int(row.amount) - cost, 0, usage_id, int(row.balance))

    async def settle_batch(self, items: list[SettleIn]) -> list[SettleResult | Exception]:
        """Settle many holds in one transaction (see `batch`); one outcome per item. A batch of
        one (a quiet proxy's) takes the single settle's path: fewer statements."""
        from .batch import BatchSettler

        if len(items) == 1:
            try:
                return [await self.settle(items[0])]
            except DomainError as error:
                return [error]
        return await BatchSettler(self).run(items)

    async def _settle(self, conn: AsyncConnection, item: SettleIn, cost: int) -> SettleResult:
        hold = await self._take_open_hold(conn, item.hold_id, "settled")
        account = hold.account_id
        from_hold = min(cost, hold.amount)
        extra = cost - from_hold
        taken = min(extra, await self._available_locked(conn, account)) if extra else 0
        released = hold.amount - from_hold
        legs = [
            (store.holds_account(account), -hold.amount),
            (store.wallet(account), released - taken),
            (store.system("revenue"), from_hold + taken),
        ]
        now = self.clock()
        usage_id = await self._record_usage(conn, account, item.usage, from_hold + taken, extra - taken, now)
        after = await store.post_transfer(conn, new_id(), "usage", account, legs, item.hold_id, from_hold + taken, now)
        await self._resolve_key_spend(conn, hold.key_id, hold.amount, from_hold + taken)
        balance = after.get(store.wallet(account))
        if balance is None:
            balance = await store.balance_of(conn, store.wallet(account))
        return SettleResult(from_hold + taken, released, extra - taken, usage_id, balance)

    async def _available_locked(self, conn: AsyncConnection, account: str) -> int:
        """The wallet balance, with the account's ledger rows locked in id order (as every
        transfer locks them), so that this lock cannot deadlock against a concurrent hold."""
        locked = await store.lock_balances(conn, [store.holds_account(account), store.wallet(account)])
        return locked.get(store.wallet(account), 0)

    async def _take_open_hold(self, conn: AsyncConnection, hold_id: str, status: str) -> Any:
        """Resolve an open hold in one statement (the UPDATE takes the row lock, and a concurrent
        resolver waits, then finds it no longer open); the hold's row as it was."""
        table = Hold.__table__  # type: ignore[attr-defined]
        taken = (await conn.execute(store.hot(conn).take_hold, {"b_id": hold_id, "b_status": status})).one_or_none()
        if taken is not None:
            return taken
        found = (await conn.execute(select(table.c.status).where(table.c.id == hold_id))).scalar_one_or_none()
        if found is None:
            raise NotFound("no such hold", field_violations={"hold_id": "unknown"})
        raise FailedPrecondition(f"the hold is already {found}", reason="hold_resolved")

    async def _close_hold(self, conn: AsyncConnection, hold: Any, status: str) -> None:
        table = Hold.__table__  # type: ignore[attr-defined]
        await conn.execute(update(table).where(table.c.id == hold.id).values(status=status))

    async def _record_usage(
        self, conn: AsyncConnection, account_id: str, usage: UsageIn, cost: int, shortfall: int, now: datetime
    ) -> str:
        usage_id = new_id()
        created = store.naive(usage.started_at) if usage.started_at else now
        await conn.execute(
            store.hot(conn).usage,
            {"id": usage_id, "account_id": account_id, "key_id": usage.key_id, "model": usage.model,
             "provider": usage.provider, "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
             "cost_micros": cost, "shortfall_micros": shortfall, "status": usage.status,
             "latency_ms": usage.latency_ms, "tokens_estimated": usage.tokens_estimated, "created_at": created},
        )  # fmt: skip
        return usage_id

    async def release(self, hold_id: str, idempotency_key: str, usage: UsageIn | None = None) -> ReleaseResult:
        v = Violations()
        v.check(bool(hold_id), "hold_id", "required")
        check_key(v, idempotency_key)
        if usage is not None:
            usage.validate(v)
        v.raise_if_any()
        params = {"hold": hold_id, "usage": usage.params() if usage else None}

        async def work(conn: AsyncConnection) -> ReleaseResult:
            hold = await self._take_open_hold(conn, hold_id, "released")
            return await self._release(conn, hold, None, usage)

        return await self._once("release", idempotency_key, params, work, lambda first: ReleaseResult(**first))

    async def _release(
        self, conn: AsyncConnection, hold: Any, status: str | None, usage: UsageIn | None
    ) -> ReleaseResult:
        """Return a hold's amount to the wallet; `status` closes the hold (None: already closed)."""
        account, now = hold.account_id, self.clock()
        legs = [(store.holds_account(account), -hold.amount), (store.wallet(account), hold.amount)]
        if usage is not None:
            await self._record_usage(conn, account, usage, 0, 0, now)
        after = await store.post_transfer(conn, new_id(), "release", account, legs, hold.id, hold.amount, now)
        if status is not None:
            await self._close_hold(conn, hold, status)
        await self._resolve_key_spend(conn, hold.key_id, hold.amount, 0)
        return ReleaseResult(hold.amount, after[store.wallet(account)])

    async def expire_holds(self, limit: int = 500) -> int:
        """Release open holds past their ttl (the sweeper); returns how many."""
        table = Hold.__table__  # type: ignore[attr-defined]
        async with self.engine.begin() as conn:
            query = select(table).where(table.c.status == "open", table.c.expires_at < self.clock()).limit(limit)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            holds = (await conn.execute(query)).all()
            for hold in holds:
                await self._release(conn, hold, "expired", None)
        return len(holds)

    # --- credits in and out ----------------------------------------------------------------

    async def grant(self, account_id: str, amount: int, reason: str, idempotency_key: str) -> TransferResult:
        v = Violations()
        check_account(v, account_id)
        check_amount(v, amount)
        check_key(v, idempotency_key)
        v.check(len(reason) <= 200, "reason", "at most 200 characters")
        v.raise_if_any()
        params = {"account": account_id, "amount": amount, "reason": reason}
        async with self.engine.begin() as conn:
            first = await store.claim_key(conn, "grant", idempotency_key, params)
            if first is not None:
                return TransferResult(**first)
            result = await self.credit(conn, account_id, amount, "grant", "grants", reason)
            await store.finish_key(conn, "grant", idempotency_key, vars(result))
            return result

    async def credit(
        self, conn: AsyncConnection, account_id: str, amount: int, kind: str, source: str, reference: str
    ) -> TransferResult:
        """Move `amount` from a system source into the account's wallet (inside `conn`)."""
        transfer_id = new_id()
        legs = [(store.system(source), -amount), (store.wallet(account_id), amount)]
        after = await store.post_transfer(conn, transfer_id, kind, account_id, legs, reference, amount, self.clock())
        return TransferResult(transfer_id, after[store.wallet(account_id)], amount)

    async def debit(
        self, conn: AsyncConnection, account_id: str, amount: int, kind: str, sink: str, reference: str
    ) -> TransferResult:
        """Move `amount` out of the wallet to a system account; Overdraft when short."""
        transfer_id = new_id()
        legs = [(store.wallet(account_id), -amount), (store.system(sink), amount)]
        after = await store.post_transfer(conn, transfer_id, kind, account_id, legs, reference, amount, self.clock())
        return TransferResult(transfer_id, after[store.wallet(account_id)], amount)

    async def refund(self, transfer_id: str, amount: int, reason: str, idempotency_key: str) -> TransferResult:
        """Reverse (part of) a top-up: wallet -> refunds. amount 0: all that is left."""
        v = Violations()
        v.check(bool(transfer_id), "transfer_id", "required")
        v.check(0 <= amount <= MAX_MICROS, "amount_micros", "must not be negative (0: the whole remainder)")
        check_key(v, idempotency_key)
        v.check(len(reason) <= 200, "reason", "at most 200 characters")
        v.raise_if_any()
        params = {"transfer": transfer_id, "amount": amount, "reason": reason}
        async with self.engine.begin() as conn:
            first = await store.claim_key(conn, "refund", idempotency_key, params)
            if first is not None:
                return TransferResult(**first)
            result = await self.refund_in(conn, transfer_id, amount)
            await store.finish_key(conn, "refund", idempotency_key, vars(result))
            return result

    async def refund_in(self, conn: AsyncConnection, transfer_id: str, amount: int) -> TransferResult:
        table = Transfer.__table__  # type: ignore[attr-defined]
        original = (await conn.execute(select(table).where(table.c.id == transfer_id).with_for_update())).one_or_none()
        if original is None or original.kind not in TOPUP_KINDS:
            raise NotFound("no such top-up transfer", field_violations={"transfer_id": "not a top-up"})
        done = (
            await conn.execute(
                select(func.coalesce(func.sum(table.c.amount), 0)).where(
                    table.c.kind == "refund", table.c.reference == transfer_id
                )
            )
        ).scalar_one()
        left = original.amount - int(done)
        amount = amount or left
        if amount <= 0 or amount > left:
            raise FailedPrecondition(f"only {usd(left)} USD of this top-up is left to refund", reason="refund_exceeds")
        try:
            return await self.debit(conn, original.account_id, amount, "refund", "refunds", transfer_id)
        except store.Overdraft:
            raise FailedPrecondition(
                "the account's available balance is below the refund", reason="insufficient_credit"
            ) from None

    # --- redemption codes ----------------------------------------------------------------

    def _code(self, batch_id: str, index: int) -> str:
        digest = hmac.new(self._secret, f"gatemesh-code:{batch_id}:{index}".encode(), hashlib.sha256).digest()
        body = base64.b32encode(digest).decode()[:20]
        return "GM-" + "-".join(body[i : i + 5] for i in range(0, 20, 5))

    def code_hash(self, body: str) -> str:
        return hmac.new(self._secret, f"gatemesh-code-hash:{body}".encode(), hashlib.sha256).hexdigest()

    @staticmethod
    def code_body(code: str) -> str | None:
        body = re.sub(r"[\s-]", "", code.upper())
        if body.startswith("GM") and len(body) == 22:
            body = body[2:]
        return body if CODE_ALPHABET.match(body) else None

    async def create_codes(
        self, amount: int, count: int, expires_at: datetime | None, idempotency_key: str
    ) -> CodesResult:
        """A batch of single-use codes. Only their keyed hashes are stored; the codes are
        derived from the batch id with the server secret, so a retry returns them again."""
        v = Violations()
        check_amount(v, amount)
        v.check(0 < count <= 10_000, "count", "must be between 1 and 10000")
        v.check(expires_at is None or expires_at > self.clock().replace(tzinfo=UTC), "expires_at", "in the past")
        check_key(v, idempotency_key)
        v.raise_if_any()
        params = {"amount": amount, "count": count, "expires_at": expires_at}
        async with self.engine.begin() as conn:
            first = await store.claim_key(conn, "codes", idempotency_key, params)
            if first is not None:
                return CodesResult(first["batch_id"], [self._code(first["batch_id"], i) for i in range(count)])
            batch_id = new_id()
            codes = [self._code(batch_id, i) for i in range(count)]
            await conn.execute(
                CodeBatch.__table__.insert().values(  # type: ignore[attr-defined]
                    id=batch_id, amount=amount, count=count, created_at=self.clock(),
                    expires_at=store.naive(expires_at) if expires_at else None,
                )
            )  # fmt: skip
            rows = [{"hash": self.code_hash(self.code_body(c) or ""), "batch_id": batch_id} for c in codes]
            await conn.execute(Code.__table__.insert(), rows)  # type: ignore[attr-defined]
            await store.finish_key(conn, "codes", idempotency_key, {"batch_id": batch_id})
            return CodesResult(batch_id, codes)

    async def redeem(self, account_id: str, code: str, idempotency_key: str) -> TransferResult:
        v = Violations()
        check_account(v, account_id)
        body = self.code_body(code)
        v.check(body is not None, "code", "not a redemption code")
        check_key(v, idempotency_key)
        v.raise_if_any()
        digest = self.code_hash(body or "")
        async with self.engine.begin() as conn:
            first = await store.claim_key(conn, "redeem", f"{account_id}:{idempotency_key}", {"code": digest})
            if first is not None:
                return TransferResult(**first)
            codes, batches = Code.__table__, CodeBatch.__table__  # type: ignore[attr-defined]
            row = (
                await conn.execute(
                    select(batches.c.amount, batches.c.expires_at)
                    .select_from(codes.join(batches, codes.c.batch_id == batches.c.id))
                    .where(codes.c.hash == digest)
                )
            ).one_or_none()
            if row is None:
                raise NotFound("unknown code", field_violations={"code": "no such code"})
            if row.expires_at is not None and row.expires_at <= self.clock():
                raise FailedPrecondition("the code has expired", reason="code_expired")
            taken = await conn.execute(
                update(codes)
                .where(codes.c.hash == digest, codes.c.redeemed_by.is_(None))
                .values(redeemed_by=account_id, redeemed_at=self.clock())
            )
            if taken.rowcount != 1:
                raise FailedPrecondition("the code has already been redeemed", reason="code_redeemed")
            result = await self.credit(conn, account_id, row.amount, "redeem", "promo", digest[:16])
            await store.finish_key(conn, "redeem", f"{account_id}:{idempotency_key}", vars(result))
            return result

    # --- reading -----------------------------------------------------------------------------

    async def balance(self, account_id: str) -> Balance:
        """Available and held credit; an account billing has never seen has none (auth owns
        accounts, so billing cannot tell a new account from an unknown one)."""
        v = Violations()
        check_account(v, account_id)
        v.raise_if_any()
        async with self.engine.connect() as conn:
            found = await store.balances(conn, account_id)
        available, held = found or (0, 0)
        return Balance(account_id, available, held)

    def quote(self, model: str, input_tokens: int, output_tokens: int, at: datetime | None) -> tuple[int, Any]:
        v = Violations()
        v.check(bool(model), "model", "required")
        v.check(input_tokens >= 0, "input_tokens", "must not be negative")
        v.check(output_tokens >= 0, "output_tokens", "must not be negative")
        v.raise_if_any()
        return self.prices.quote(model, input_tokens, output_tokens, at or datetime.now(UTC))

    async def list_usage(self, query: UsageQuery) -> UsagePage:
        v = Violations()
        check_account(v, query.account_id)
        v.check(query.page_size >= 0, "page.page_size", "must not be negative")
        v.raise_if_any()
        size = min(query.page_size or 50, 1000)
        t = UsageRow.__table__  # type: ignore[attr-defined]
        conditions = [t.c.account_id == query.account_id, *self._range(t.c.created_at, query.since, query.until)]
        if query.model:
            conditions.append(t.c.model == query.model)
        if query.key_id:
            conditions.append(t.c.key_id == query.key_id)
        if query.page_token:
            created, row_id = decode_cursor(query.page_token)
            conditions.append((t.c.created_at < created) | ((t.c.created_at == created) & (t.c.id < row_id)))
        stmt = select(t).where(*conditions).order_by(t.c.created_at.desc(), t.c.id.desc()).limit(size + 1)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        token = encode_cursor(rows[size - 1].created_at, rows[size - 1].id) if len(rows) > size else ""
        return UsagePage([UsageRow(**row._mapping) for row in rows[:size]], token)

    @staticmethod
    def _range(column: Any, since: datetime | None, until: datetime | None) -> list[Any]:
        return store.key_range(column, store.naive(since) if since else None, store.naive(until) if until else None)

    def _day(self, conn: AsyncConnection, column: Any) -> Any:
        if conn.dialect.name == "sqlite":
            return func.strftime("%Y-%m-%d", column)
        return func.to_char(column, "YYYY-MM-DD")

    async def usage_stats(self, account_id: str, since: datetime | None, until: datetime | None) -> list[DailyStats]:
        """Daily per-model totals of one account, for its dashboard (P2.4)."""
        t = UsageRow.__table__  # type: ignore[attr-defined]
        async with self.engine.connect() as conn:
            return await self._daily(conn, [t.c.account_id == account_id, *self._range(t.c.created_at, since, until)])

    async def _daily(self, conn: AsyncConnection, conditions: list[Any], min_accounts: int = 0) -> list[DailyStats]:
        t = UsageRow.__table__  # type: ignore[attr-defined]
        day = self._day(conn, t.c.created_at).label("day")
        stmt = (
            select(
                day,
                t.c.model,
                func.count(),
                func.sum(t.c.input_tokens),
                func.sum(t.c.output_tokens),
                func.sum(t.c.cost_micros),
            )
            .where(*conditions)
            .group_by(day, t.c.model)
            .order_by(day, t.c.model)
        )
        if min_accounts > 1:
            stmt = stmt.having(func.count(t.c.account_id.distinct()) >= min_accounts)
        rows = (await conn.execute(stmt)).all()
        return [DailyStats(str(r[0]), r[1], int(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in rows]

    async def aggregate_stats(self, since: datetime | None, until: datetime | None) -> list[DailyStats]:
        """Daily per-model totals across accounts (P2.4): accounts that opted out of analytics
        are left out (P7.3), and groups of fewer than `stats_min_accounts` accounts are
        suppressed so that no row describes one person. Swept days come from the anonymous
        aggregates that outlive the records (P5.2)."""
        opted_out = await self.opt_outs() if self.opt_outs else set()
        t, a = UsageRow.__table__, UsageDailyAnonymous.__table__  # type: ignore[attr-defined]
        conditions = self._range(t.c.created_at, since, until)
        if opted_out:
            conditions.append(t.c.account_id.notin_(sorted(opted_out)))
        async with self.engine.connect() as conn:
            live = await self._daily(conn, conditions, self.stats_min_accounts)
            archived_q = select(a).order_by(a.c.day, a.c.model)
            if since is not None:
                archived_q = archived_q.where(a.c.day >= since.strftime("%Y-%m-%d"))
            if until is not None:
                archived_q = archived_q.where(a.c.day < until.strftime("%Y-%m-%d"))
            archived = (await conn.execute(archived_q)).all()
        merged = {(s.day, s.model): s for s in (DailyStats(**r._mapping) for r in archived)}
        for s in live:
            old = merged.get((s.day, s.model))
            if old is not None:
                s = DailyStats(
                    s.day, s.model, s.requests + old.requests, s.input_tokens + old.input_tokens,
                    s.output_tokens + old.output_tokens, s.cost_micros + old.cost_micros,
                )  # fmt: skip
            merged[(s.day, s.model)] = s
        return [merged[k] for k in sorted(merged)]

    async def retention_sweep(self, retention_days: int) -> tuple[int, int]:
        """Delete usage records older than the retention (P5.2), first rolling them into
        anonymous daily per-model aggregates (without opted-out accounts, P7.3); forget
        idempotency keys older than `idempotency_ttl_days`.
        Returns (deleted records, aggregate rows touched)."""
        v = Violations()
        v.check(retention_days > 0, "retention_days", "must be positive")
        v.raise_if_any()
        cutoff = self.clock() - timedelta(days=retention_days)
        try:
            opted_out: set[str] | None = await self.opt_outs() if self.opt_outs else set()
        except Unavailable:
            opted_out = None  # deleting on time (P5.2) wins over keeping the aggregate
        t = UsageRow.__table__  # type: ignore[attr-defined]
        async with self.engine.begin() as conn:
            conditions = [t.c.created_at < cutoff]
            if opted_out:
                conditions.append(t.c.account_id.notin_(sorted(opted_out)))
            rows = await self._daily(conn, conditions) if opted_out is not None else []
            for s in rows:
                await conn.execute(store.upsert_add(conn, UsageDailyAnonymous, ["day", "model"], asdict(s)))
            deleted = await conn.execute(delete(t).where(t.c.created_at < cutoff))
            keys = Idempotency.__table__  # type: ignore[attr-defined]
            old_keys = self.clock() - timedelta(days=self.idempotency_ttl_days)
            await conn.execute(delete(keys).where(keys.c.created_at < old_keys))
        return deleted.rowcount, len(rows)

    async def statement(self, account_id: str, month: str) -> Statement:
        """The month's movements of the account's credit (available plus held), opening and
        closing balances. Moves between its own wallet and holds net to zero and are left out."""
        v = Violations()
        check_account(v, account_id)
        match = re.fullmatch(r"(\d{4})-(\d{2})", month)
        v.check(match is not None and 1 <= int(match.group(2)) <= 12, "month", "must be YYYY-MM")
        v.raise_if_any()
        start = datetime(int(month[:4]), int(month[5:]), 1)
        end = datetime(start.year + start.month // 12, start.month % 12 + 1, 1)
        mine = [store.wallet(account_id), store.holds_account(account_id)]
        e, t = Entry.__table__, Transfer.__table__  # type: ignore[attr-defined]
        async with self.engine.connect() as conn:
            opening = sum([await store.sum_entries(conn, acct, before=start) for acct in mine])
            net = func.sum(e.c.amount)
            rows = (
                await conn.execute(
                    select(t.c.id, t.c.kind, t.c.created_at, t.c.reference, net)
                    .select_from(e.join(t, e.c.transfer_id == t.c.id))
                    .where(e.c.ledger_account.in_(mine), e.c.created_at >= start, e.c.created_at < end)
                    .group_by(t.c.id, t.c.kind, t.c.created_at, t.c.reference)
                    .having(net != 0)
                    .order_by(t.c.created_at, t.c.id)
                )
            ).all()
        lines = [StatementLine(r[0], r[1], int(r[4]), r[2], r[3]) for r in rows]
        return Statement(month, opening, opening + sum(x.amount_micros for x in lines), lines)
