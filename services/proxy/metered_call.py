"""The billing state of one admitted call: its hold, and the settle or release that ends it.

A failure before the upstream answered releases the hold. A stream the client leaves, or
that the upstream cuts, is settled for what the upstream produced so far, in a task that
outlives the cancelled call (`Tasks`). `settle` and `release` run once per call, so no call
is charged twice, and every path that placed a hold ends in a settle or a release. Ledger
calls are idempotent (keyed by the request id) and retried while billing is briefly away,
until the hold would have expired.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from services.runtime.errors import DeadlineExceeded, DomainError, ResourceExhausted, Unavailable

from .bodies import usage_tokens
from .credit import Slice
from .leases import Share
from .model import CallUsage, KeyGrant, LogEntry
from .router import Route

if TYPE_CHECKING:
    from .gateway import Gateway

log = logging.getLogger("gatemesh.proxy")

HOLD_RETRY_S = 1.0


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
        self.slice: Slice | None = None  # the credit lease its cost was reserved from, if any

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

    def draw_from_lease(self, amount_micros: int) -> bool:
        """Reserve the amount from the key's credit lease, in process (see `credit`); False
        when there is none or it cannot cover the amount (then the call holds as before)."""
        credit = self.gateway.credit
        piece = credit.reserve(self.grant, amount_micros) if credit is not None else None
        if piece is None:
            return False
        self.slice, self.hold_id, self.hold_amount = piece, piece.hold_id, amount_micros
        return True

    def hold_task(self, amount_micros: int) -> asyncio.Task[str]:
        """Place the hold in a task of its own (retried while billing is briefly away,
        before any byte is sent): if the call is cancelled meanwhile, the task still ends
        and its hold can be released as soon as billing's reply arrives, instead of staying
        open until it expires."""
        place, grant, request_id = self.gateway.ledger.hold, self.grant, self.request_id
        retry_until = time.monotonic() + HOLD_RETRY_S
        self.hold_amount = amount_micros
        return self.gateway.tasks.spawn(with_retries(lambda: place(grant, amount_micros, request_id), retry_until))

    async def place_hold(self, amount_micros: int, again: bool = True) -> None:
        """Hold the amount (after the key was verified and its tokens taken). Refused for
        credit while this proxy leases some of the account's balance, it is tried once more
        after those slices went back (see `CreditLeases.give_back`)."""
        hold = self.hold_task(amount_micros)
        try:
            self.hold_id = await asyncio.shield(hold)
        except asyncio.CancelledError:
            hold.add_done_callback(self._abandoned_hold)
            raise
        except BaseException as error:
            credit = self.gateway.credit
            refused = isinstance(error, ResourceExhausted) and again
            if refused and credit is not None and await credit.give_back(self.grant.account_id):
                await self.place_hold(amount_micros, again=False)
                return
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
            charged = await self._charge(usage, self._durable.set)
        except DomainError as error:
            log.error("settle of request %s failed: %s", self.request_id, error.message)
        finally:
            self._durable.set()  # settled, refused or failed: nothing left for an answer to wait for
        self._after(usage, 200, charged)

    async def _charge(self, usage: CallUsage, stored: Callable[[], None]) -> int:
        """Settle the call's hold, or draw its cost from the credit lease it was reserved on
        (then the lease learns the cost once billing confirmed it, or gave up)."""
        settle, piece, credit = self.gateway.ledger.settle, self.slice, self.gateway.credit
        lease, charged = piece is not None, 0
        try:
            charged = await with_retries(
                lambda: settle(self.hold_id, usage, self.request_id, stored, lease=lease), self._until()
            )
            return charged
        finally:
            if piece is not None and credit is not None:
                credit.finish(piece, self.hold_amount, charged)

    async def _release(self, usage: CallUsage, status_code: int) -> None:
        """Release the hold with the failed call's usage (recorded at no cost); a call on a
        credit lease draws nothing from it instead (its usage, no tokens, costs nothing)."""
        try:
            if self.slice is not None:
                await self._charge(usage, lambda: None)
            else:
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


def new_request_id() -> str:
    """128 random bits as hex (the request id and the root of its idempotency keys); a tenth
    of uuid4's cost, which matters on a path that counts microseconds."""
    return os.urandom(16).hex()
