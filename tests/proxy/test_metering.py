"""The metering rules of one call, in process: the Gateway against a real (fake) upstream,
with auth and billing replaced by recording stand-ins so that their timing and failures
can be chosen: a hold whose reply arrives after the client left, a settle that billing
cannot take at first, an answer that must not wait for billing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from services.proxy.gateway import Gateway
from services.proxy.model import CallUsage, KeyGrant, Limits, LogEntry, Price
from services.proxy.router import Router
from services.proxy.settings import ProviderConfig
from services.proxy.tokens import TokenCounter
from services.proxy.upstream import CircuitBreaker, Provider
from services.runtime.errors import PermissionDenied, ResourceExhausted, Unavailable

BODY = {"model": "m", "messages": [{"role": "user", "content": "say hello please"}], "max_tokens": 16}


@dataclass
class Gatekeeper:
    """Auth stand-in: `verify_gate` delays verdicts, `refusal` refuses the key, `grant` is what
    a verified key may do; `events` (shared with the ledger) records the order of calls."""

    reported: list[int] = field(default_factory=list)
    verify_gate: asyncio.Event | None = None
    refusal: Exception | None = None
    grant: KeyGrant = field(default_factory=lambda: KeyGrant("acct", "key"))
    events: list[str] = field(default_factory=list)

    async def verify(
        self, api_key: str, model: str, consume: bool, estimated_tokens: int, lease: bool = False
    ) -> KeyGrant:
        self.events.append("verify")
        if self.verify_gate is not None:
            await self.verify_gate.wait()
        self.events.append("verified")
        if self.refusal is not None:
            raise self.refusal
        return self.grant

    def report_tokens(self, key_id: str, delta: int) -> None:
        self.reported.append(delta)


@dataclass
class Ledger:
    """Billing stand-in: `hold_gate` delays hold replies, `settle_failures` fail settles first."""

    hold_gate: asyncio.Event | None = None
    settle_gate: asyncio.Event | None = None
    settle_failures: int = 0
    holds: list[str] = field(default_factory=list)
    settled: list[tuple[str, CallUsage]] = field(default_factory=list)
    released: list[tuple[str, CallUsage | None]] = field(default_factory=list)
    settle_attempts: int = 0
    hold_refusal: Exception | None = None
    events: list[str] = field(default_factory=list)
    held_for: list[KeyGrant] = field(default_factory=list)
    hold_replies_lost: bool = False  # holds are placed but their replies lost (a deadline)

    async def price(self, model: str) -> Price | None:
        return Price(1_000_000, 2_000_000)

    async def hold(self, grant: KeyGrant, amount_micros: int, idempotency_key: str) -> str:
        self.events.append("hold")
        if self.hold_gate is not None:
            await self.hold_gate.wait()
        if self.hold_refusal is not None:
            raise self.hold_refusal
        hold_id = f"hold-{idempotency_key}"
        if hold_id not in self.holds:  # idempotent, as billing's Hold is
            self.held_for.append(grant)
            self.holds.append(hold_id)
        if self.hold_replies_lost:
            raise Unavailable("the billing service is not available")
        return hold_id

    async def settle(
        self,
        hold_id: str,
        usage: CallUsage,
        idempotency_key: str,
        durable: Callable[[], None] = lambda: None,
        lease: bool = False,
    ) -> int:
        durable()  # as the outbox does: stored before billing is asked
        self.settle_attempts += 1
        if self.settle_gate is not None:
            await self.settle_gate.wait()
        if self.settle_failures:
            self.settle_failures -= 1
            raise Unavailable("billing is restarting")
        self.settled.append((hold_id, usage))
        return usage.input_tokens + 2 * usage.output_tokens

    async def release(self, hold_id: str, usage: CallUsage | None, idempotency_key: str) -> None:
        self.released.append((hold_id, usage))


@dataclass
class RequestLog:
    entries: list[LogEntry] = field(default_factory=list)

    def record(self, entry: LogEntry) -> None:
        self.entries.append(entry)


@pytest.fixture
async def parts(upstreams: Callable[[str], str]) -> AsyncIterator[tuple[Gateway, Ledger, Gatekeeper, RequestLog]]:
    config = ProviderConfig(name="up", base_url=upstreams(""), models=["m"])
    router = Router([Provider(config, CircuitBreaker(5, 30))], {}, 0.0)
    ledger, gatekeeper, log = Ledger(), Gatekeeper(), RequestLog()
    ledger.events = gatekeeper.events
    gateway = Gateway(router, gatekeeper, ledger, log, TokenCounter(), Limits())
    yield gateway, ledger, gatekeeper, log
    await gateway.tasks.drain()
    await router.close()


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


async def test_hold_placed_after_the_client_left_is_released_when_its_reply_arrives(parts: Any) -> None:
    gateway, ledger, gatekeeper, log = parts
    ledger.hold_gate = asyncio.Event()
    call = asyncio.ensure_future(gateway.chat("gm-key", json.dumps(BODY).encode()))
    await asyncio.sleep(0.05)  # the hold request is with billing
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    ledger.hold_gate.set()  # billing placed it after all
    await until(lambda: bool(ledger.released))
    (hold_id,) = ledger.holds
    assert [held for held, _ in ledger.released] == [hold_id]
    assert ledger.released[0][1].status == "client_disconnected"
    assert not ledger.settled
    assert sum(gatekeeper.reported) == -(gateway.counter.prompt_tokens("m", BODY) + 16)
    assert [entry.outcome for entry in log.entries] == ["client_disconnected"]


async def test_hold_whose_reply_was_lost_is_found_and_released(parts: Any) -> None:
    """Billing placed the hold but its reply never came (the deadline passed while billing was
    overloaded): the call fails with 503, and the proxy asks again with the same idempotency
    key until billing answers, then releases that hold. Before, it stayed open, the
    customer's credit reserved, until it expired (found by tests/reliability)."""
    gateway, ledger, _, log = parts
    ledger.hold_replies_lost = True
    with pytest.raises(Unavailable):
        await gateway.chat("gm-key", json.dumps(BODY).encode())
    assert len(ledger.holds) == 1 and not ledger.released
    ledger.hold_replies_lost = False  # billing is back
    await until(lambda: bool(ledger.released))
    await gateway.tasks.drain()
    assert ledger.released == [(ledger.holds[0], None)] and len(ledger.holds) == 1
    assert not ledger.settled and not log.entries


async def test_json_answer_does_not_wait_for_the_settle(parts: Any) -> None:
    gateway, ledger, _, log = parts
    ledger.settle_gate = asyncio.Event()
    reply = await asyncio.wait_for(gateway.chat("gm-key", json.dumps(BODY).encode()), 10)
    assert json.loads(reply.body)["usage"]["completion_tokens"] == 8
    assert ledger.settle_attempts == 1 and not ledger.settled and not log.entries
    ledger.settle_gate.set()
    await until(lambda: bool(log.entries))
    ((hold_id, usage),) = ledger.settled
    assert hold_id == ledger.holds[0] and usage.output_tokens == 8 and not usage.tokens_estimated
    assert log.entries[0].cost_micros == usage.input_tokens + 16


async def test_settle_is_retried_until_billing_confirms_it(parts: Any) -> None:
    gateway, ledger, _, log = parts
    ledger.settle_failures = 3
    await gateway.chat("gm-key", json.dumps(BODY).encode())
    await until(lambda: bool(log.entries))
    assert ledger.settle_attempts == 4
    assert len(ledger.settled) == 1 and not ledger.released
    assert log.entries[0].outcome == "ok" and log.entries[0].cost_micros > 0


async def test_stream_ends_without_waiting_for_the_settle_and_is_settled_once(parts: Any) -> None:
    gateway, ledger, _, log = parts
    ledger.settle_gate = asyncio.Event()
    reply = await gateway.chat("gm-key", json.dumps({**BODY, "stream": True}).encode())
    chunks = [chunk async for chunk in reply.stream.chunks()]
    assert b"".join(chunks).endswith(b"data: [DONE]\n\n")
    assert not ledger.settled
    reply.stream.abandon()  # the call's end is reported too: no second settle
    ledger.settle_gate.set()
    await until(lambda: bool(log.entries))
    await gateway.tasks.drain()
    assert len(ledger.settled) == 1 and ledger.settle_attempts == 1
    assert ledger.settled[0][1].output_tokens == 8 and ledger.settled[0][1].status == "ok"


# ---------------------------------------------------------------- admission of a known key


def estimate() -> int:
    return TokenCounter().prompt_tokens("m", BODY) + 16


async def known_key(gateway: Gateway, ledger: Ledger, gatekeeper: Gatekeeper, log: RequestLog) -> None:
    """One call that lets the proxy learn the key; the stand-ins' records start afresh."""
    await gateway.chat("gm-key", json.dumps(BODY).encode())
    await until(lambda: bool(log.entries))
    gatekeeper.events.clear()
    gatekeeper.reported.clear()
    ledger.holds.clear()
    ledger.settled.clear()
    ledger.held_for.clear()
    log.entries.clear()


async def test_first_call_of_a_key_is_verified_before_its_hold(parts: Any) -> None:
    gateway, _, gatekeeper, _ = parts
    await gateway.chat("gm-key", json.dumps(BODY).encode())
    assert gatekeeper.events[:3] == ["verify", "verified", "hold"]


async def test_known_key_is_held_while_auth_verifies_it(parts: Any) -> None:
    gateway, ledger, gatekeeper, log = parts
    await known_key(gateway, ledger, gatekeeper, log)
    gatekeeper.verify_gate = asyncio.Event()
    call = asyncio.ensure_future(gateway.chat("gm-key", json.dumps(BODY).encode()))
    await until(lambda: bool(ledger.holds))  # the hold is placed while the key is still with auth
    assert gatekeeper.events == ["verify", "hold"] and not call.done()
    gatekeeper.verify_gate.set()
    reply = await call
    assert json.loads(reply.body)["usage"]["completion_tokens"] == 8
    await until(lambda: bool(log.entries))
    assert [hold for hold, _ in ledger.settled] == ledger.holds and not ledger.released


async def test_known_key_refused_by_auth_releases_its_hold_unused(parts: Any) -> None:
    """A key revoked after its last call: the hold placed meanwhile is released with no
    usage recorded, nothing is logged or charged, no tokens are given back that auth never
    took, and the next call waits for auth before holding anything."""
    gateway, ledger, gatekeeper, log = parts
    await known_key(gateway, ledger, gatekeeper, log)
    gatekeeper.refusal = PermissionDenied("the key was revoked")
    with pytest.raises(PermissionDenied):
        await gateway.chat("gm-key", json.dumps(BODY).encode())
    await until(lambda: bool(ledger.released))
    assert ledger.released == [(ledger.holds[0], None)]
    assert not ledger.settled and not log.entries and not gatekeeper.reported
    gatekeeper.events.clear()
    with pytest.raises(PermissionDenied):
        await gateway.chat("gm-key", json.dumps(BODY).encode())
    assert gatekeeper.events == ["verify", "verified"] and len(ledger.holds) == 1


async def test_known_key_over_its_rate_limit_places_no_more_holds(parts: Any) -> None:
    gateway, ledger, gatekeeper, log = parts
    await known_key(gateway, ledger, gatekeeper, log)
    gatekeeper.refusal = ResourceExhausted("rate limit reached", retry_after_s=3)
    for _ in range(5):
        with pytest.raises(ResourceExhausted):
            await gateway.chat("gm-key", json.dumps(BODY).encode())
    await gateway.tasks.drain()
    assert len(ledger.holds) == 1 and [usage for _, usage in ledger.released] == [None]


async def test_known_key_whose_spend_cap_changed_is_held_again_under_the_new_cap(parts: Any) -> None:
    gateway, ledger, gatekeeper, log = parts
    await known_key(gateway, ledger, gatekeeper, log)
    gatekeeper.grant = KeyGrant("acct", "key", spend_cap_micros=500)
    await gateway.chat("gm-key", json.dumps(BODY).encode())
    await until(lambda: bool(log.entries))
    first, second = ledger.holds
    assert [grant.spend_cap_micros for grant in ledger.held_for] == [0, 500]
    assert ledger.released == [(first, None)]
    assert [hold for hold, _ in ledger.settled] == [second]
    assert len(log.entries) == 1 and log.entries[0].outcome == "ok"


async def test_known_key_without_credit_gets_its_tokens_back(parts: Any) -> None:
    gateway, ledger, gatekeeper, log = parts
    await known_key(gateway, ledger, gatekeeper, log)
    ledger.hold_refusal = ResourceExhausted("insufficient credit", openai_code="insufficient_quota")
    with pytest.raises(ResourceExhausted):
        await gateway.chat("gm-key", json.dumps(BODY).encode())
    assert gatekeeper.reported == [-estimate()]
    assert not ledger.holds and not ledger.released and not log.entries


async def test_client_leaving_during_concurrent_admission_releases_the_hold_once_both_answer(parts: Any) -> None:
    gateway, ledger, gatekeeper, log = parts
    await known_key(gateway, ledger, gatekeeper, log)
    gatekeeper.verify_gate = asyncio.Event()
    call = asyncio.ensure_future(gateway.chat("gm-key", json.dumps(BODY).encode()))
    await until(lambda: bool(ledger.holds))
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert not ledger.released  # auth has not answered yet
    gatekeeper.verify_gate.set()
    await until(lambda: bool(log.entries))
    assert [(hold, usage.status) for hold, usage in ledger.released] == [(ledger.holds[0], "client_disconnected")]
    assert gatekeeper.reported == [-estimate()] and not ledger.settled
