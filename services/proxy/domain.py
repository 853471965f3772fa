"""The proxy's rules: one metered call, from key check to settled cost.

Per call: check the key and take the rate limit (one `verify`), hold the largest possible
cost (estimated prompt plus the output limit, at the cached price), call the upstream
(retries and fallback in `router`), then settle the exact cost from the usage the
upstream reports, or from a local count where it reports none, and record the request's
metadata. A failure before the upstream answered releases the hold. A stream the client
leaves, or that the upstream cuts, is settled for what the upstream produced so far, in
a task that outlives the cancelled call. `finish` runs once per call, so no call is
charged twice, and every path that placed a hold ends in a settle or a release.

The ports (`Gatekeeper`, `Ledger`, `RequestLog`) are implemented over gRPC and SQL in
`adapters` and `store`; this module knows neither. Bodies stay raw bytes except where a
field must be read (parsed once) or the request changed (alias, stream usage option).
Nothing here logs or stores content.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp

from services.runtime.errors import (
    BadGateway,
    DeadlineExceeded,
    DomainError,
    InvalidArgument,
    Unauthenticated,
    Unavailable,
    Violations,
)

from .leases import KeyLease, LeaseOffer, Leases, Share
from .router import Route, Router
from .sse import StreamState, error_event
from .tokens import TokenCounter, message_texts

log = logging.getLogger("gatemesh.proxy")

CHAT_PATH = "/chat/completions"
EMBEDDINGS_PATH = "/embeddings"
USAGE_OPTION = b'"stream_options":{"include_usage":true},'
HOLD_RETRY_S = 1.0


@dataclass(frozen=True)
class KeyGrant:
    """What a verified API key may do."""

    account_id: str
    key_id: str
    spend_cap_micros: int = 0
    allowed_models: tuple[str, ...] = ()
    offer: LeaseOffer | None = field(default=None, compare=False)  # a lease, when one was asked and given

    def hold_terms(self) -> tuple[str, str, int]:
        """What a hold placed for this key depends on."""
        return self.account_id, self.key_id, self.spend_cap_micros


class KnownKeys:
    """The grants of keys this proxy has seen verified, by a digest of the key (never the key
    itself), so that the next call's hold can be placed while auth verifies it again. Only
    a hint: every call is still verified, and a refusal forgets the key. Bounded: the oldest
    entry makes room."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._grants: dict[bytes, KeyGrant] = {}
        self._max = max_entries

    @staticmethod
    def _digest(api_key: str) -> bytes:
        return hashlib.blake2b(api_key.encode(), digest_size=16).digest()

    def get(self, api_key: str) -> KeyGrant | None:
        return self._grants.get(self._digest(api_key)) if self._max else None

    def put(self, api_key: str, grant: KeyGrant) -> None:
        if not self._max:
            return
        digest = self._digest(api_key)
        if digest not in self._grants and len(self._grants) >= self._max:
            del self._grants[next(iter(self._grants))]
        self._grants[digest] = grant

    def forget(self, api_key: str) -> None:
        self._grants.pop(self._digest(api_key), None)


@dataclass(frozen=True)
class Price:
    """Micro-units per million input and output tokens."""

    input_per_mtok: int
    output_per_mtok: int

    def cost(self, input_tokens: int, output_tokens: int) -> int:
        """The cost, rounded up to a whole micro-unit."""
        return -(-(input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) // 1_000_000)


@dataclass(frozen=True)
class CallUsage:
    """The metadata billing records for a call (P1.4): never content."""

    key_id: str
    model: str
    provider: str
    input_tokens: int
    output_tokens: int
    status: str
    latency_ms: int
    started_at: datetime
    tokens_estimated: bool


@dataclass(frozen=True)
class LogEntry:
    """One row of the proxy's request log (RequestLogRecord)."""

    request_id: str
    account_id: str
    key_id: str
    model: str
    provider: str
    status_code: int
    latency_ms: int
    created_at: datetime
    input_tokens: int
    output_tokens: int
    cost_micros: int
    outcome: str
    tokens_estimated: bool
    endpoint: str
    stream: bool


class Gatekeeper(Protocol):
    """Auth's side of the hot path."""

    async def verify(self, api_key: str, model: str, consume: bool, estimated_tokens: int) -> KeyGrant:
        """Check the key (and take the call from its rate limits). Implementations that
        support leases take `lease=True` too: then the grant carries auth's `offer`."""
        ...

    def report_tokens(self, key_id: str, delta: int) -> None: ...


class Ledger(Protocol):
    """Billing's side of the hot path."""

    async def price(self, model: str) -> Price | None: ...

    async def hold(self, grant: KeyGrant, amount_micros: int, idempotency_key: str) -> str: ...

    async def settle(self, hold_id: str, usage: CallUsage, idempotency_key: str, durable: Callable[[], None]) -> int:
        """Settle the hold; call `durable()` as soon as the settle would survive a crash of
        this process (written to the outbox), before waiting for billing."""
        ...

    async def release(self, hold_id: str, usage: CallUsage | None, idempotency_key: str) -> None: ...


class RequestLog(Protocol):
    """Where request metadata goes (buffered; never blocks)."""

    def record(self, entry: LogEntry) -> None: ...


@dataclass(frozen=True)
class Limits:
    """The proxy's sizing rules."""

    max_output_tokens: int = 4096
    model_max_output_tokens: dict[str, int] = field(default_factory=dict)
    hold_ttl_s: float = 900.0

    def output_limit(self, model: str, body: dict[str, Any]) -> int:
        for key in ("max_completion_tokens", "max_tokens"):
            value = body.get(key)
            if isinstance(value, int) and value > 0:
                return value
        return self.model_max_output_tokens.get(model, self.max_output_tokens)


class Tasks:
    """Background tasks kept alive until done (settles that outlive their call)."""

    def __init__(self) -> None:
        self._running: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return task

    async def drain(self) -> None:
        while self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)


@dataclass
class Reply:
    """A chat answer: a JSON body, or a stream of SSE chunks."""

    body: bytes | None = None
    stream: StreamRelay | None = None


class Gateway:
    """The hot path: metered chat completions, embeddings and the model list."""

    def __init__(
        self,
        router: Router,
        gatekeeper: Gatekeeper,
        ledger: Ledger,
        request_log: RequestLog,
        counter: TokenCounter,
        limits: Limits,
        known_keys: KnownKeys | None = None,
        leases: Leases | None = None,
    ) -> None:
        self.router = router
        self.known_keys = known_keys or KnownKeys()
        self.leases = Leases() if leases is None else leases  # never ready without a key-change watcher
        self.gatekeeper = gatekeeper
        self.ledger = ledger
        self.request_log = request_log
        self.counter = counter
        self.limits = limits
        self.tasks = Tasks()

    async def chat(self, api_key: str, raw: bytes) -> Reply:
        require_key(api_key)
        body = parse_object(raw)
        model, stream = validate_chat(body)
        route = self.router.resolve(model)
        prompt = self.counter.prompt_tokens(route.model, body)
        call = await self._admit(api_key, route, prompt, self.limits.output_limit(route.model, body), "chat", stream)
        upstream_body, wants_usage = upstream_chat_body(raw, body, route, stream)
        if not stream:
            attempt = await call.guard(self.router.call(route, CHAT_PATH, upstream_body, read_json))
            call.provider = attempt.provider.name
            data, reply = attempt.primed
            await call.finish_json(reply, self._chat_output)
            return Reply(body=data)
        state = StreamState(client_wants_usage=wants_usage)
        attempt = await call.guard(self.router.call(route, CHAT_PATH, upstream_body, first_events(state)))
        call.provider = attempt.provider.name
        return Reply(stream=StreamRelay(call, state, attempt.response, attempt.primed, self._stream_output))

    async def embeddings(self, api_key: str, raw: bytes) -> bytes:
        require_key(api_key)
        body = parse_object(raw)
        violations = Violations()
        model = body.get("model")
        violations.check(isinstance(model, str) and bool(model), "model", "must be a non-empty string")
        violations.check(
            embedding_input_ok(body.get("input")),
            "input",
            "must be a string, an array of strings, of token ids or of token-id arrays, not empty",
        )
        violations.raise_if_any()
        route = self.router.resolve(str(model))
        if route.model != route.public_model:
            body["model"] = route.model
            raw = json.dumps(body, separators=(",", ":")).encode()
        prompt = self.counter.input_tokens(route.model, body["input"])
        call = await self._admit(api_key, route, prompt, 0, "embeddings", False)
        attempt = await call.guard(self.router.call(route, EMBEDDINGS_PATH, raw, read_json))
        call.provider = attempt.provider.name
        data, reply = attempt.primed
        await call.finish_json(reply, lambda _model, _reply: 0)
        return data

    async def list_models(self, api_key: str) -> bytes:
        """The models the key may use and a call could succeed for (served by a provider
        with its key, and priced), in OpenAI's list shape."""
        require_key(api_key)
        grant = await self.gatekeeper.verify(api_key, "", False, 0)
        allowed = set(grant.allowed_models)
        models = [
            {"id": name, "object": "model", "created": 0, "owned_by": owner}
            for name, owner in sorted(self.router.models().items())
            if (not allowed or name in allowed) and await self.ledger.price(self.router.resolve(name).model)
        ]
        return json.dumps({"object": "list", "data": models}, separators=(",", ":")).encode()

    async def _admit(
        self, api_key: str, route: Route, prompt: int, max_output: int, endpoint: str, stream: bool
    ) -> MeteredCall:
        """Verify the key, take the rate limit and hold the largest possible cost. A leased
        key with room in its rate share is admitted here, without auth (see `leases`). For a
        key this proxy has seen verified, the hold is placed while auth verifies (see
        `_admit_concurrently`); for a new key, and after any refusal, one after the other."""
        estimate = prompt + max_output
        price = await self.ledger.price(route.model)
        cost = max(1, price.cost(prompt, max_output)) if price is not None else 0
        leased = self.leases.take(api_key, route.public_model, estimate) if cost else None
        if leased is not None:
            return await self._admit_leased(api_key, *leased, route, prompt, estimate, cost, endpoint, stream)
        known = self.known_keys.get(api_key) if cost else None
        if known is not None:
            return await self._admit_concurrently(api_key, known, route, prompt, estimate, cost, endpoint, stream)
        grant = await self._verify(api_key, route.public_model, estimate, lease=bool(cost))
        if not cost:  # after auth: a bad key hears 401 before anything about the model
            self.gatekeeper.report_tokens(grant.key_id, -estimate)
            raise Unavailable(f"the model '{route.public_model}' has no price yet", reason="model_not_priced")
        self.known_keys.put(api_key, grant)
        call = MeteredCall(self, grant, route, "", new_request_id(), prompt, estimate, endpoint, stream)
        await call.place_hold(cost)
        return call

    async def _admit_concurrently(
        self, api_key: str, known: KeyGrant, route: Route, prompt: int, estimate: int, cost: int, endpoint: str,
        stream: bool,
    ) -> MeteredCall:  # fmt: skip
        """Verify and hold at once: the call waits for the slower of the two instead of their
        sum. The hold is placed for the account and spend cap the key had when last verified;
        if auth refuses the key (or it changed meanwhile), that hold is released unused and
        nothing is charged or logged, exactly as if auth had refused before any hold. The
        key is then forgotten, so a refused key (say a client hammering past its rate limit)
        places no further holds until it passes auth again."""
        call = MeteredCall(self, known, route, "", new_request_id(), prompt, estimate, endpoint, stream)
        call.tokens_taken = False
        verify = self.tasks.spawn(self._verify(api_key, route.public_model, estimate, lease=True))
        hold = call.hold_task(cost)
        try:
            await asyncio.wait((verify, hold))
        except asyncio.CancelledError:
            self.tasks.spawn(call.abandon_admission(verify, hold))
            raise
        if verify.exception() is not None:
            self.known_keys.forget(api_key)
            call.discard(hold)
            raise verify.exception()  # type: ignore[misc]
        grant: KeyGrant = verify.result()
        call.tokens_taken = True
        if hold.exception() is not None:
            self.gatekeeper.report_tokens(grant.key_id, -estimate)
            call.reclaim_if_unknown(hold.exception())
            raise hold.exception()  # type: ignore[misc]
        call.hold_id = hold.result()
        self.known_keys.put(api_key, grant)
        if grant.hold_terms() == known.hold_terms():
            return call
        call.discard(hold)  # the key's spend cap changed since: hold again under the new one
        call = MeteredCall(self, grant, route, "", new_request_id(), prompt, estimate, endpoint, stream)
        await call.place_hold(cost)
        return call

    async def _admit_leased(
        self, api_key: str, lease: KeyLease, share: Share, route: Route, prompt: int, estimate: int, cost: int,
        endpoint: str, stream: bool,
    ) -> MeteredCall:  # fmt: skip
        """A leased key: its request and tokens came from this proxy's share, so only the
        hold remains. A renewal of the share, when due, goes to auth in the background."""
        if self.leases.wants_renewal(lease):
            self.tasks.spawn(self._renew(api_key, lease, estimate))
        call = MeteredCall(self, lease.grant, route, "", new_request_id(), prompt, estimate, endpoint, stream)
        call.share = share
        await call.place_hold(cost)
        return call

    async def _verify(self, api_key: str, model: str, estimate: int, lease: bool) -> KeyGrant:
        """VerifyKey taking the call from the rate limits; asks for a lease while auth's change
        stream is up (one request per key at a time), and leases the key if auth gives one
        and nothing changed meanwhile."""
        token = self.leases.ask(api_key) if lease else None
        if token is None:
            return await self.gatekeeper.verify(api_key, model, True, estimate)
        try:
            epoch = self.leases.epoch
            grant = await self.gatekeeper.verify(api_key, model, True, estimate, lease=True)  # type: ignore[call-arg]
            self.leases.grant(api_key, grant, grant.offer, epoch)
        finally:
            self.leases.answered(token)
        return grant

    async def _renew(self, api_key: str, lease: KeyLease, tokens: int) -> None:
        """Top up a leased key's rate share (no call taken). A refusal drops the lease; auth
        being unreachable only means the shares run out and calls are checked one by one."""
        token = self.leases.ask(api_key)
        if token is None:
            self.leases.renewed(lease)
            return
        epoch = self.leases.epoch
        try:
            grant = await self.gatekeeper.verify(api_key, "", False, tokens, lease=True)  # type: ignore[call-arg]
        except (Unavailable, DeadlineExceeded):
            return
        except DomainError:
            self.leases.forget(api_key)
            return
        finally:
            self.leases.renewed(lease)
            self.leases.answered(token)
        self.leases.grant(api_key, grant, grant.offer, epoch)

    def _chat_output(self, model: str, reply: dict[str, Any]) -> int:
        texts = [
            text
            for choice in reply.get("choices") or ()
            if isinstance(choice, dict) and isinstance(choice.get("message"), dict)
            for text in message_texts(choice["message"])
        ]
        return self.counter.count(model, "".join(texts))

    def _stream_output(self, model: str, state: StreamState) -> int:
        return self.counter.count(model, state.output_text())


class MeteredCall:
    """The billing state of one admitted call; `finish` settles or releases exactly once."""

    def __init__(
        self,
        gateway: Gateway,
        grant: KeyGrant,
        route: Route,
        hold_id: str,
        request_id: str,
        prompt: int,
        estimate: int,
        endpoint: str,
        stream: bool,
    ) -> None:
        self.gateway = gateway
        self.grant = grant
        self.route = route
        self.hold_id = hold_id
        self.request_id = request_id
        self.prompt = prompt
        self.estimate = estimate
        self.endpoint = endpoint
        self.stream = stream
        self.provider = ""
        self.started_at = datetime.now(UTC)
        self._started = time.monotonic()
        self._done: asyncio.Task[Any] | None = None
        self._durable = asyncio.Event()
        self.tokens_taken = True  # auth counted the estimate against the key's tokens per minute
        self.hold_amount = 0
        self.share: Share | None = None  # the rate share the call was admitted on, if leased

    def correct_tokens(self, delta: int) -> None:
        """Actual minus estimated tokens: back to the share the call came from while its
        minute lasts, else to auth. A void share's unused estimate is not given back (its
        minute is over: returning it to the next one could let that one pass its limit)."""
        share = self.share
        if share is None or (not share.give_back(-delta) and delta > 0):
            self.gateway.gatekeeper.report_tokens(self.grant.key_id, delta)

    @property
    def finished(self) -> bool:
        return self._done is not None

    def hold_task(self, amount_micros: int) -> asyncio.Task[str]:
        """Place the hold in a task of its own (retried while billing is briefly away,
        before any byte is sent): if the call is cancelled meanwhile, the task still ends
        and its hold can be released as soon as billing's reply arrives, instead of staying
        open until it expires."""
        place, grant, request_id = self.gateway.ledger.hold, self.grant, self.request_id
        retry_until = time.monotonic() + HOLD_RETRY_S
        self.hold_amount = amount_micros
        return self.gateway.tasks.spawn(with_retries(lambda: place(grant, amount_micros, request_id), retry_until))

    async def place_hold(self, amount_micros: int) -> None:
        """Hold the amount (after the key was verified and its tokens taken)."""
        hold = self.hold_task(amount_micros)
        try:
            self.hold_id = await asyncio.shield(hold)
        except asyncio.CancelledError:
            hold.add_done_callback(self._abandoned_hold)
            raise
        except BaseException as error:
            self.correct_tokens(-self.estimate)
            self.reclaim_if_unknown(error)
            raise

    def reclaim_if_unknown(self, error: BaseException | None) -> None:
        """A hold that failed as unavailable may have been placed all the same (billing
        committed it after the proxy's deadline): ask again, in the background, with the same
        idempotency key, which returns that hold (or places one), and release it. Retried
        until billing answers or the hold would have expired. Before, such holds stayed open,
        the customer's credit reserved, until they expired (found by tests/reliability)."""
        if isinstance(error, Unavailable | DeadlineExceeded) and self._done is None:
            self._done = self.gateway.tasks.spawn(self._reclaim())

    async def _reclaim(self) -> None:
        place, grant, amount, request_id = self.gateway.ledger.hold, self.grant, self.hold_amount, self.request_id
        try:
            hold_id = await with_retries(lambda: place(grant, amount, request_id), self._until())
        except DomainError as error:  # refused now (no credit): nothing was held
            log.info("no hold to reclaim for request %s: %s", request_id, error.message)
            return
        await self._discard(hold_id)

    def _abandoned_hold(self, hold: asyncio.Task[Any]) -> None:
        if hold.cancelled() or hold.exception() is not None:
            if self.tokens_taken:
                self.correct_tokens(-self.estimate)
            if not hold.cancelled():
                self.reclaim_if_unknown(hold.exception())
            return
        self.hold_id = hold.result()
        self.release(499, "client_disconnected")

    async def abandon_admission(self, verify: asyncio.Task[KeyGrant], hold: asyncio.Task[str]) -> None:
        """The client left while its key was verified and its hold placed at once: once both
        answered, release the hold and give back the tokens auth took, if it took them."""
        await asyncio.wait((verify, hold))
        if verify.cancelled() or verify.exception() is not None:
            self.discard(hold)
            return
        self.tokens_taken = True
        self._abandoned_hold(hold)

    def discard(self, hold: asyncio.Task[str]) -> None:
        """Release a hold placed for a call that never started (auth refused it): no usage
        record, no request-log row, no tokens to give back."""
        if self._done is None and not hold.cancelled() and hold.exception() is None:
            self._done = self.gateway.tasks.spawn(self._discard(hold.result()))
        elif not hold.cancelled():
            self.reclaim_if_unknown(hold.exception())

    async def _discard(self, hold_id: str) -> None:
        release = self.gateway.ledger.release
        try:
            await with_retries(lambda: release(hold_id, None, self.request_id), self._until())
        except DomainError as error:
            log.warning("release of unused hold %s failed: %s", self.request_id, error.message)

    async def guard(self, upstream: Awaitable[Any]) -> Any:
        """Await the upstream call; on any failure release the hold, then re-raise."""
        try:
            return await upstream
        except DomainError as error:
            self.release(error.http_status, "upstream_error")
            raise
        except BaseException:
            self.release(499, "client_disconnected")
            raise

    async def finish_json(self, reply: Any, count_output: Callable[[str, dict[str, Any]], int]) -> None:
        """Settle a JSON answer from its usage, or a local count where it has none. The
        settle runs in the background: the answer waits only until the settle is durable
        (in the outbox), not for billing."""
        usage = reply.get("usage") if isinstance(reply, dict) else None
        tokens = usage_tokens(usage)
        if tokens is None:
            output = count_output(self.route.model, reply) if isinstance(reply, dict) else 0
            tokens = (self.prompt, output, True)
        self.settle(*tokens, outcome="ok")
        await self.durable()

    async def durable(self) -> None:
        """Wait until the settle would survive a crash of this process (the last byte of an
        answer leaves only after this; see `Ledger.settle`). A client that leaves meanwhile
        cancels only this wait, never the settle."""
        await self._durable.wait()

    def settle(self, input_tokens: int, output_tokens: int, estimated: bool, outcome: str) -> asyncio.Task[Any]:
        """Charge for the tokens (once; later calls return the first task)."""
        if self._done is None:
            usage = self._usage(input_tokens, output_tokens, estimated, outcome)
            self._done = self.gateway.tasks.spawn(self._settle(usage))
        return self._done

    def release(self, status_code: int, outcome: str) -> asyncio.Task[Any]:
        """Release the hold without charging (once)."""
        if self._done is None:
            usage = self._usage(0, 0, False, outcome)
            self._done = self.gateway.tasks.spawn(self._release(usage, status_code))
        return self._done

    def _usage(self, input_tokens: int, output_tokens: int, estimated: bool, outcome: str) -> CallUsage:
        return CallUsage(
            key_id=self.grant.key_id,
            model=self.route.model,
            provider=self.provider,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            status=outcome,
            latency_ms=int((time.monotonic() - self._started) * 1000),
            started_at=self.started_at,
            tokens_estimated=estimated,
        )

    def _until(self) -> float:
        """Retrying a settle or release makes no sense once billing has expired the hold."""
        return self._started + self.gateway.limits.hold_ttl_s

    async def _settle(self, usage: CallUsage) -> None:
        charged = 0
        try:
            settle = self.gateway.ledger.settle
            stored = self._durable.set
            charged = await with_retries(lambda: settle(self.hold_id, usage, self.request_id, stored), self._until())
        except DomainError as error:
            log.error("settle of request %s failed: %s", self.request_id, error.message)
        finally:
            self._durable.set()  # settled, refused or failed: nothing left for an answer to wait for
        self._after(usage, 200, charged)

    async def _release(self, usage: CallUsage, status_code: int) -> None:
        try:
            release = self.gateway.ledger.release
            await with_retries(lambda: release(self.hold_id, usage, self.request_id), self._until())
        except DomainError as error:
            log.warning("release of request %s failed: %s", self.request_id, error.message)
        self._after(usage, status_code, 0)

    def _after(self, usage: CallUsage, status_code: int, charged: int) -> None:
        gateway = self.gateway
        if self.tokens_taken:
            self.correct_tokens(usage.input_tokens + usage.output_tokens - self.estimate)
        gateway.request_log.record(
            LogEntry(
                request_id=self.request_id,
                account_id=self.grant.account_id,
                key_id=self.grant.key_id,
                model=usage.model,
                provider=usage.provider,
                status_code=status_code,
                latency_ms=usage.latency_ms,
                created_at=self.started_at,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cost_micros=charged,
                outcome=usage.status,
                tokens_estimated=usage.tokens_estimated,
                endpoint=self.endpoint,
                stream=self.stream,
            )
        )


class StreamRelay:
    """Forwards an accepted upstream stream to the client and settles it when it ends."""

    def __init__(
        self,
        call: MeteredCall,
        state: StreamState,
        response: aiohttp.ClientResponse,
        first: bytes,
        count_output: Callable[[str, StreamState], int],
    ) -> None:
        self.call = call
        self.state = state
        self.response = response
        self.first = first
        self._count_output = count_output

    async def chunks(self) -> AsyncIterator[bytes]:
        """The SSE bytes for the client; an upstream failure mid-stream becomes an error event."""
        outcome = "client_disconnected"
        try:
            if self.state.done:  # the whole stream came in the first read: settle before [DONE] leaves
                await self.finish_durably("ok")
            yield self.first
            try:
                async for data in upstream_chunks(self.response):
                    out = self.state.feed(data)
                    if self.state.done and not self.call.finished:
                        await self.finish_durably("ok")  # before [DONE] leaves
                    if out:
                        yield out
            except (aiohttp.ClientError, TimeoutError):
                pass
            if self.state.done:
                outcome = "ok"
            else:
                outcome = "upstream_error"
                await self.finish_durably(outcome)  # before the final (error) event leaves
                failure = BadGateway("the upstream provider failed mid-stream", reason="upstream_error")
                yield error_event(failure.openai_body())
        finally:
            self.response.close()
            self.finish(outcome)

    def abandon(self) -> None:
        """The client went away (or the call ended): settle what was produced, if not yet done."""
        if not self.call.finished:
            self.response.close()
            self.finish("client_disconnected")

    def finish(self, outcome: str) -> asyncio.Task[Any] | None:
        if self.call.finished:
            return None
        tokens = usage_tokens(self.state.usage)
        if tokens is None:
            tokens = (self.call.prompt, self._count_output(self.call.route.model, self.state), True)
        return self.call.settle(*tokens, outcome=outcome)

    async def finish_durably(self, outcome: str) -> None:
        """Settle in the background, and wait only until the settle is durable: a stream's
        final chunk leaves after it, so a crash can lose only streams that never ended."""
        self.finish(outcome)
        await self.call.durable()


async def with_retries(
    action: Callable[[], Awaitable[Any]], until: float, delay_s: float = 0.1, max_delay_s: float = 5.0
) -> Any:
    """Retry an idempotent ledger call while billing is unavailable or slow, until it
    answers or the monotonic deadline `until` (the hold's expiry) has passed."""
    while True:
        try:
            return await action()
        except (Unavailable, DeadlineExceeded):
            if time.monotonic() + delay_s >= until:
                raise
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, max_delay_s)


async def upstream_chunks(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The body of a streamed upstream answer as it arrives. When the upstream cuts the
    stream, aiohttp raises before handing out bytes it had already received (its reader
    checks for the error first); those bytes are yielded before the error is raised, so the
    client gets, and is charged for, everything the upstream sent before the cut."""
    try:
        async for data in response.content.iter_any():
            yield data
    except aiohttp.ClientPayloadError:
        rest = response.content._read_nowait(-1)  # no public call returns them once failed
        if rest:
            yield rest
        raise


async def read_json(response: aiohttp.ClientResponse) -> tuple[bytes, Any]:
    """Prime for JSON answers: the whole body, and its parsed form (to read usage)."""
    data = await response.read()
    response.release()
    return data, json.loads(data)


def first_events(state: StreamState) -> Callable[[aiohttp.ClientResponse], Awaitable[bytes]]:
    """Prime for streams: read until the first complete event (nothing has reached the client)."""

    async def prime(response: aiohttp.ClientResponse) -> bytes:
        async for data in response.content.iter_any():
            out = state.feed(data)
            if out:
                return out
        raise aiohttp.ClientPayloadError("the upstream stream ended before its first event")

    return prime


def usage_tokens(usage: Any) -> tuple[int, int, bool] | None:
    """(input, output, estimated=False) from an OpenAI usage object, or None."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens", 0))
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return prompt, completion, False


def new_request_id() -> str:
    """128 random bits as hex (the request id and the root of its idempotency keys); a tenth
    of uuid4's cost, which matters on a path that counts microseconds."""
    return os.urandom(16).hex()


def require_key(api_key: str) -> None:
    if not api_key:
        raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>'", openai_code="invalid_api_key")


def parse_object(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying why not (never quoting it)."""
    try:
        body = json.loads(raw)
    except ValueError as error:
        where = f"line {error.lineno} column {error.colno}" if isinstance(error, json.JSONDecodeError) else ""
        raise InvalidArgument(f"the request body is not valid JSON ({where})".replace(" ()", "")) from None
    except RecursionError:  # nesting past the parser's depth: a hostile body, not our fault
        raise InvalidArgument("the request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise InvalidArgument("the request body must be a JSON object")
    return body


def embedding_input_ok(value: Any) -> bool:
    """OpenAI's embeddings input: text, texts, token ids or token-id arrays, none empty (the
    upstream would refuse anything else, after a hold was placed for it)."""

    def token_ids(items: Any) -> bool:
        return isinstance(items, list) and bool(items) and all(type(t) is int and t >= 0 for t in items)

    if isinstance(value, str):
        return bool(value)
    if not isinstance(value, list) or not value:
        return False
    return all(isinstance(v, str) for v in value) or token_ids(value) or all(token_ids(v) for v in value)


def validate_chat(body: dict[str, Any]) -> tuple[str, bool]:
    """(model, stream) of a chat body; every problem reported at once."""
    violations = Violations()
    model = body.get("model")
    violations.check(isinstance(model, str) and bool(model), "model", "must be a non-empty string")
    messages = body.get("messages")
    violations.check(isinstance(messages, list) and bool(messages), "messages", "must be a non-empty array")
    if isinstance(messages, list):
        violations.check(all(isinstance(m, dict) for m in messages), "messages", "each message must be an object")
    stream = body.get("stream", False)
    violations.check(stream is None or isinstance(stream, bool), "stream", "must be a boolean")
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        ok = value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0)
        violations.check(ok, key, "must be a positive integer")
    violations.raise_if_any()
    return str(model), bool(stream)


def upstream_chat_body(raw: bytes, body: dict[str, Any], route: Route, stream: bool) -> tuple[bytes, bool]:
    """The body for the upstream (the client's bytes unless the model or stream options
    must change) and whether the client itself asked for usage on its stream."""
    changed = route.model != route.public_model
    if changed:
        body["model"] = route.model
    wants_usage = False
    if stream:
        options = body.get("stream_options")
        wants_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        if not wants_usage:
            if "stream_options" not in body and not changed:
                start = raw.index(b"{") + 1
                return raw[:start] + USAGE_OPTION + raw[start:], False
            body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
            changed = True
    return (json.dumps(body, separators=(",", ":")).encode() if changed else raw), wants_usage
