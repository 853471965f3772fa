"""The hot path's ports over gRPC: auth (`Gatekeeper`) and billing (`Ledger`), and the
follower of auth's key-change stream that keeps the key leases honest (`KeyChangeWatcher`).

Both use one pooled service channel each (HTTP/2 multiplexes every call); when traces
are not exported the channel has no Python interceptors (they cost more CPU than the
call itself) and the service credential travels as per-call `metadata` instead. Prices are
cached locally from `ListPrices` and refreshed in the background, so sizing a hold costs
no round trip. Settles from concurrent calls are coalesced into `SettleBatch` calls
(one billing transaction for all of them): while one batch is in flight the next fills,
so a lone call waits for nothing and a busy proxy makes far fewer commits. Auth's and
billing's verdicts are re-raised as DomainErrors with their code, message and retry delay;
billing's insufficient credit becomes OpenAI's `insufficient_quota` (429).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from gatemesh.auth.v1 import auth_pb2, auth_pb2_grpc
from gatemesh.billing.v1 import billing_pb2, billing_pb2_grpc
from services.runtime import metrics
from services.runtime.background import every
from services.runtime.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from services.runtime.rpc_errors import batch_item_error, domain_error

from .leases import LeaseOffer, Leases, share_from
from .metered_call import Tasks
from .model import CallUsage, KeyGrant, Price
from .outbox import SettleOutbox

log = logging.getLogger("gatemesh.proxy")

# Per-call metadata: the service credential when the channel has no interceptor adding it.
Metadata = tuple[tuple[str, str], ...]


class RemoteGatekeeper:
    """Gatekeeper over auth's VerifyKey (coalesced into VerifyKeyBatch) and ReportTokens."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        timeout_s: float,
        tasks: Tasks,
        report_every_s: float = 0.5,
        metadata: Metadata = (),
        batch: bool = True,
    ) -> None:
        self._stub = auth_pb2_grpc.AuthServiceStub(channel)
        self._timeout = timeout_s
        self._md = metadata
        self._tasks = tasks
        stub = self._stub
        self._verify = Coalescer(stub.VerifyKey, stub.VerifyKeyBatch, verify_batch, timeout_s, batch, metadata, "auth")
        self._report_every_s = report_every_s
        self._pending: dict[str, int] = {}
        self._flushing = False

    async def verify(
        self, api_key: str, model: str, consume: bool, estimated_tokens: int, lease: bool = False
    ) -> KeyGrant:
        request = auth_pb2.VerifyKeyRequest(
            api_key=api_key, model=model, consume_rate_limit=consume, estimated_tokens=estimated_tokens, lease=lease
        )
        asked_at = time.monotonic()
        try:
            reply = await self._verify.call(request)
        except DomainError as error:
            raise key_error(error) from None
        offer = lease_offer(reply, asked_at) if reply.lease_tag else None
        return KeyGrant(reply.account_id, reply.key_id, reply.spend_cap_micros, tuple(reply.allowed_models), offer)

    def report_tokens(self, key_id: str, delta: int) -> None:
        """Queue a tokens-per-minute correction; corrections are summed per key and sent
        every `report_every_s` (one RPC per key, not one per call)."""
        if not delta:
            return
        self._pending[key_id] = self._pending.get(key_id, 0) + delta
        if not self._flushing:
            self._flushing = True
            self._tasks.spawn(self._flush_later())

    async def _flush_later(self) -> None:
        try:
            await asyncio.sleep(self._report_every_s)
        finally:
            self._flushing = False
            pending, self._pending = self._pending, {}
            await asyncio.gather(*(self._report(key, delta) for key, delta in pending.items() if delta))

    async def _report(self, key_id: str, delta: int) -> None:
        try:
            await self._stub.ReportTokens(
                auth_pb2.ReportTokensRequest(key_id=key_id, token_delta=delta), timeout=self._timeout, metadata=self._md
            )
        except grpc.aio.AioRpcError as error:
            log.debug("ReportTokens failed: %s", error.code().name)


def lease_offer(reply: auth_pb2.VerifyKeyResponse, asked_at: float) -> LeaseOffer:
    expires = reply.expires_at.seconds + reply.expires_at.nanos / 1e9 if reply.HasField("expires_at") else 0.0
    share = reply.rate_share
    tpm = reply.limits.tokens_per_minute
    return LeaseOffer(reply.lease_tag, expires, share_from(share.requests, share.tokens, tpm, share.valid_ms, asked_at))


class KeyChangeWatcher:
    """Follows auth's WatchKeyChanges for `Leases`: opens them on the stream's first
    message, drops the tags it names, and closes them all when the stream ends, fails or
    stays silent for three heartbeats; then subscribes again with backoff (jittered, 0.1 s
    doubling to 5 s, back to the start once a stream was up)."""

    def __init__(
        self, channel: grpc.aio.Channel, leases: Leases, metadata: Metadata = (), first_wait_s: float = 5.0
    ) -> None:
        self._stub = auth_pb2_grpc.AuthServiceStub(channel)
        self._leases = leases
        self._md = metadata
        self._first_wait_s = first_wait_s
        self.streams = 0  # streams that reached `ready` (tests and the benchmark read it)
        self.on_drop: Callable[[list[str]], None] | None = None  # the benchmark's probe

    async def run(self) -> None:
        delay = 0.1
        while True:
            try:
                if await self._follow():
                    delay = 0.1
            except grpc.aio.AioRpcError as error:
                log.warning("key-change stream from auth failed (%s); verifying every call", error.code().name)
            except TimeoutError:
                log.warning("key-change stream from auth fell silent; verifying every call")
            finally:
                self._leases.close()
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)

    async def _follow(self) -> bool:
        """One stream, until it ends; True if it got as far as `ready`."""
        call = self._stub.WatchKeyChanges(auth_pb2.WatchKeyChangesRequest(), metadata=self._md)
        silence, ready = self._first_wait_s, False
        try:
            while True:
                message = await asyncio.wait_for(call.read(), silence)
                if message is grpc.aio.EOF:
                    return ready
                if message.ready:
                    ready = True
                    self.streams += 1
                    silence = 3 * max(message.heartbeat_ms, 100) / 1000
                    self._leases.open()
                    log.info("key-change stream from auth is up: known keys are leased")
                elif message.lease_tags:
                    tags = list(message.lease_tags)
                    self._leases.drop(tags)
                    if self.on_drop is not None:
                        self.on_drop(tags)
        finally:
            call.cancel()


class PriceCache:
    """The price list in force, per model, refreshed in the background."""

    def __init__(
        self, stub: billing_pb2_grpc.BillingServiceStub, timeout_s: float, refresh_s: float, metadata: Metadata = ()
    ) -> None:
        self._stub = stub
        self._timeout = timeout_s
        self._refresh_s = refresh_s
        self._md = metadata
        self._prices: dict[str, list[tuple[float, Price]]] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()
        self.fetched = asyncio.Event()  # set once the first price list has arrived

    async def get(self, model: str) -> Price | None:
        price = self._current(model)
        if price is None and time.monotonic() - self._fetched_at > 1.0:
            async with self._lock:
                if time.monotonic() - self._fetched_at > 1.0:
                    await self.refresh()
            price = self._current(model)
        return price

    def _current(self, model: str) -> Price | None:
        now = time.time()
        found: Price | None = None
        for since, price in self._prices.get(model, ()):
            if since <= now:
                found = price
        return found

    async def refresh(self) -> None:
        """Fetch the price list. It waits (within its deadline) for a billing that is still
        connecting: a proxy started beside billing would otherwise fail its first fetches
        inside the channel's reconnect backoff and answer "no price yet" meanwhile."""
        try:
            request = billing_pb2.ListPricesRequest()
            reply = await self._stub.ListPrices(request, timeout=self._timeout, metadata=self._md, wait_for_ready=True)
        except grpc.aio.AioRpcError as error:
            log.warning("price refresh failed: %s", error.code().name)
            return
        prices: dict[str, list[tuple[float, Price]]] = {}
        for item in reply.prices:
            since = item.effective_from.seconds + item.effective_from.nanos / 1e9
            prices.setdefault(item.model, []).append(
                (since, Price(item.input_per_mtok_micros, item.output_per_mtok_micros))
            )
        for entries in prices.values():
            entries.sort(key=lambda entry: entry[0])
        self._prices = prices
        self._fetched_at = time.monotonic()
        self.fetched.set()

    def models(self) -> set[str]:
        """The models the last fetched list prices (at any time)."""
        return set(self._prices)

    async def run(self) -> None:
        """Background job: fetch the list now (the first load), then every `refresh_s`, in the
        runtime's shared loop (a failure other than an RPC error is logged by type only)."""
        await every(self._refresh_s, self.refresh, "price refresh", log)()


LINGER_UNTIL = 32  # a lingering Coalescer sends at once when this many calls are queued


class Coalescer:
    """Coalesces concurrent calls of one RPC into calls of its batch twin (VerifyKey into
    VerifyKeyBatch, Hold into HoldBatch, Settle into SettleBatch, Release into ReleaseBatch): whatever queued while the
    last batch was in flight goes out together, so a quiet proxy sends batches of one at
    once and a busy one sends few large ones. With `linger_s` (settles, which no answer waits
    for) a batch of fewer than `LINGER_UNTIL` calls waits that long for others first: at low
    concurrency a few calls share one batch instead of one RPC and one billing transaction each. Each
    caller gets its own item's result or the error its single call would have raised, only
    once the service answered the batch (for billing, after its commit). Falls back to the
    single RPC if the service has no batch RPC."""

    def __init__(
        self,
        single: Any,
        batch: Any,
        batch_request: Callable[[list[Any]], Any],
        timeout_s: float,
        enabled: bool,
        metadata: Metadata = (),
        service: str = "billing",
        linger_s: float = 0.0,
    ) -> None:
        self._service = service
        self._linger_s = linger_s
        self._single_rpc = single
        self._batch_rpc = batch
        self._batch_request = batch_request
        self._timeout = timeout_s
        self._enabled = enabled
        self._md = metadata
        self._queue: list[tuple[Any, asyncio.Future[Any], contextvars.Context]] = []
        self._draining = False
        self._rpc_name = rpc_name(batch)

    async def call(self, request: Any) -> Any:
        """The reply to `request`; raises DomainError (a failed call or a refused item)."""
        if not self._enabled:
            return await self._single(request)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((request, future, contextvars.copy_context()))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _single(self, request: Any) -> Any:
        try:
            return await self._single_rpc(request, timeout=self._timeout, metadata=self._md)
        except grpc.aio.AioRpcError as error:
            raise domain_error(error, self._service) from None

    async def _drain(self) -> None:
        try:
            while self._queue:
                if self._linger_s and len(self._queue) < LINGER_UNTIL:
                    # Off the response path (settles): wait for company instead of going alone.
                    # Before every small batch, not only the first: at concurrency 1 each batch
                    # came back to find one or two calls queued, so after the first one every
                    # batch was of one or two, one billing transaction per call.
                    await asyncio.sleep(self._linger_s)
                queued, self._queue = self._queue[:500], self._queue[500:]
                batch = [(request, future) for request, future, _ in queued]
                # Run in the context of the call that opened this batch, so that the batch RPC's
                # spans join that call's trace (not the trace of whichever call started the drain).
                send = asyncio.get_running_loop().create_task(self._send(batch), context=queued[0][2])
                try:
                    await send
                except Exception as error:  # whatever went wrong, no caller may be left waiting
                    log.error("%s batch failed (%s)", self._service, type(error).__name__)
                    for _, future in batch:
                        _resolve(future, error=Unavailable(f"the {self._service} service is not available"))
        finally:
            self._draining = False

    async def _send(self, batch: list[tuple[Any, asyncio.Future[Any]]]) -> None:
        metrics.batch_size(self._rpc_name, len(batch))
        if not self._enabled:  # queued before billing turned out to lack the batch RPC
            await asyncio.gather(*(self._call_one(request, future) for request, future in batch))
            return
        try:
            reply = await self._batch_rpc(
                self._batch_request([request for request, _ in batch]), timeout=self._timeout, metadata=self._md
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNIMPLEMENTED:
                self._enabled = False
                await asyncio.gather(*(self._call_one(request, future) for request, future in batch))
                return
            for _, future in batch:
                _resolve(future, error=domain_error(error, self._service))
            return
        for (_, future), item in zip(batch, reply.items, strict=False):
            if item.error_code:
                _resolve(future, error=batch_item_error(item, self._service))
            else:
                _resolve(future, result=item.result)

    async def _call_one(self, request: Any, future: asyncio.Future[Any]) -> None:
        try:
            _resolve(future, result=await self._single(request))
        except DomainError as error:
            _resolve(future, error=error)


def rpc_name(multicallable: Any) -> str:
    """'HoldBatch' from a stub's multicallable (its method path), for the batch-size metric."""
    method = getattr(multicallable, "_method", b"") or b""
    name = method.decode() if isinstance(method, bytes) else str(method)
    return name.rsplit("/", 1)[-1] or "unknown"


def _resolve(future: asyncio.Future[Any], result: Any = None, error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class RemoteLedger:
    """Ledger over billing's Hold(Batch), Settle(Batch), Release(Batch) and ListPrices. Releases
    are coalesced like the rest: sent one by one, hundreds at once (a burst of failed calls),
    each a transaction on the same few wallet rows, they queued on those rows past their
    deadline, were retried and missed it again, so holds stayed open (tests/reliability)."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        timeout_s: float,
        refresh_s: float,
        hold_ttl_s: int,
        batch: bool,
        metadata: Metadata = (),
        settle_linger_s: float = 0.0,
    ) -> None:
        self._stub = billing_pb2_grpc.BillingServiceStub(channel)
        self._timeout = timeout_s
        self._ttl = hold_ttl_s
        self._md = metadata
        self.prices = PriceCache(self._stub, timeout_s, refresh_s, metadata)
        stub = self._stub
        self._holds = Coalescer(stub.Hold, stub.HoldBatch, hold_batch, timeout_s, batch, metadata)
        self._settles = Coalescer(
            stub.Settle, stub.SettleBatch, settle_batch, timeout_s, batch, metadata, linger_s=settle_linger_s
        )
        self._releases = Coalescer(stub.Release, stub.ReleaseBatch, release_batch, timeout_s, batch, metadata)
        self.outbox: SettleOutbox | None = None

    async def price(self, model: str) -> Price | None:
        return await self.prices.get(model)

    async def hold(self, grant: KeyGrant, amount_micros: int, idempotency_key: str) -> str:
        request = hold_request(grant, amount_micros, self._ttl, f"{idempotency_key}:hold")
        try:
            reply = await self._holds.call(request)
        except DomainError as error:
            raise hold_error(error) from None
        return reply.hold_id

    async def lease(self, grant: KeyGrant, amount_micros: int, ttl_s: int, idempotency_key: str) -> tuple[str, int]:
        """A credit lease (see `credit`): a hold for the key like a call's, larger and longer;
        (hold id, wallet balance after). Refusals raise billing's DomainError as it is."""
        reply = await self._holds.call(hold_request(grant, amount_micros, ttl_s, idempotency_key))
        return reply.hold_id, reply.balance_micros

    async def settle(
        self, hold_id: str, usage: CallUsage, idempotency_key: str, durable: Callable[[], None], lease: bool = False
    ) -> int:
        """Settle through the outbox: `durable()` once its entry is stored. Without Redis
        there is nothing that outlives the process, so it is called at once. With `lease`,
        a draw on a credit lease."""
        request = billing_pb2.SettleRequest(
            hold_id=hold_id,
            actual_micros=0,
            usage=usage_proto(usage),
            idempotency_key=f"{idempotency_key}:settle",
            lease=lease,
        )
        if self.outbox is None:
            durable()
            reply = await self._settles.call(request)
        else:
            reply = await self.outbox.settle(request, self._settles.call, durable)
        return reply.charged_micros

    async def resend(self, request: billing_pb2.SettleRequest) -> Any:
        """A settle replayed from the outbox, exactly as it was first sent."""
        return await self._settles.call(request)

    async def release(self, hold_id: str, usage: CallUsage | None, idempotency_key: str) -> None:
        """Release a hold; with the call's usage (recorded at no cost), or with none for a
        hold whose call never started."""
        request = billing_pb2.ReleaseRequest(hold_id=hold_id, idempotency_key=f"{idempotency_key}:release")
        if usage is not None:
            request.usage.CopyFrom(usage_proto(usage))
        await self._releases.call(request)


def hold_request(grant: KeyGrant, amount_micros: int, ttl_s: int, idempotency_key: str) -> billing_pb2.HoldRequest:
    """A hold for the key's account under its spend cap (a call's, or a credit lease)."""
    return billing_pb2.HoldRequest(
        account_id=grant.account_id,
        amount_micros=amount_micros,
        ttl_seconds=ttl_s,
        idempotency_key=idempotency_key,
        key_id=grant.key_id,
        key_spend_cap_micros=grant.spend_cap_micros,
    )


def verify_batch(items: list[auth_pb2.VerifyKeyRequest]) -> auth_pb2.VerifyKeyBatchRequest:
    return auth_pb2.VerifyKeyBatchRequest(items=items)


def hold_batch(items: list[billing_pb2.HoldRequest]) -> billing_pb2.HoldBatchRequest:
    return billing_pb2.HoldBatchRequest(items=items)


def settle_batch(items: list[billing_pb2.SettleRequest]) -> billing_pb2.SettleBatchRequest:
    return billing_pb2.SettleBatchRequest(items=items)


def release_batch(items: list[billing_pb2.ReleaseRequest]) -> billing_pb2.ReleaseBatchRequest:
    return billing_pb2.ReleaseBatchRequest(items=items)


def key_error(error: DomainError) -> DomainError:
    """A malformed or unknown key is OpenAI's 401 invalid_api_key."""
    if isinstance(error, InvalidArgument | Unauthenticated):
        return Unauthenticated("Incorrect API key provided", reason=error.reason, openai_code="invalid_api_key")
    return error


def hold_error(error: DomainError) -> DomainError:
    """Billing's 'cannot cover this' becomes OpenAI's insufficient_quota (429)."""
    if isinstance(error, FailedPrecondition):
        return ResourceExhausted(
            error.message or "insufficient credit",
            reason=error.reason or "insufficient_credit",
            openai_code="insufficient_quota",
        )
    return error


def usage_proto(usage: CallUsage) -> billing_pb2.Usage:
    seconds, micros = divmod(round(usage.started_at.timestamp() * 1_000_000), 1_000_000)
    started = timestamp_pb2.Timestamp(seconds=seconds, nanos=micros * 1000)
    return billing_pb2.Usage(
        key_id=usage.key_id,
        model=usage.model,
        provider=usage.provider,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        status=usage.status,
        latency_ms=usage.latency_ms,
        started_at=started,
        tokens_estimated=usage.tokens_estimated,
    )
