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

from services.proxy.domain import CallUsage, Gateway, KeyGrant, Limits, LogEntry, Price
from services.proxy.router import Router
from services.proxy.settings import ProviderConfig
from services.proxy.tokens import TokenCounter
from services.proxy.upstream import CircuitBreaker, Provider
from services.runtime.errors import Unavailable

BODY = {"model": "m", "messages": [{"role": "user", "content": "say hello please"}], "max_tokens": 16}


@dataclass
class Gatekeeper:
    reported: list[int] = field(default_factory=list)

    async def verify(self, api_key: str, model: str, consume: bool, estimated_tokens: int) -> KeyGrant:
        return KeyGrant("acct", "key")

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
    released: list[tuple[str, CallUsage]] = field(default_factory=list)
    settle_attempts: int = 0

    async def price(self, model: str) -> Price | None:
        return Price(1_000_000, 2_000_000)

    async def hold(self, grant: KeyGrant, amount_micros: int, idempotency_key: str) -> str:
        if self.hold_gate is not None:
            await self.hold_gate.wait()
        self.holds.append(f"hold-{idempotency_key}")
        return self.holds[-1]

    async def settle(self, hold_id: str, usage: CallUsage, idempotency_key: str) -> int:
        self.settle_attempts += 1
        if self.settle_gate is not None:
            await self.settle_gate.wait()
        if self.settle_failures:
            self.settle_failures -= 1
            raise Unavailable("billing is restarting")
        self.settled.append((hold_id, usage))
        return usage.input_tokens + 2 * usage.output_tokens

    async def release(self, hold_id: str, usage: CallUsage, idempotency_key: str) -> None:
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
