"""The Coalescer alone: how concurrent calls become batch calls, and how a batch's outcome
goes back to each caller. The RPCs are plain async functions here (the real HoldBatch and
SettleBatch are exercised end to end in `test_hot_path.py`)."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import grpc

from gatemesh.billing.v1 import billing_pb2
from services.proxy.adapters import Coalescer, hold_batch
from services.runtime.errors import FailedPrecondition, Unavailable

CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="")


def rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=code.name)


class Billing:
    """Answers holds: an amount above 100 cannot be covered. Records how it was called."""

    def __init__(self, batch_error: grpc.StatusCode | None = None) -> None:
        self.batches: list[int] = []
        self.singles = 0
        self.batch_error = batch_error

    def answer(self, request: billing_pb2.HoldRequest) -> billing_pb2.HoldBatchItem:
        if request.amount_micros > 100:
            error = {"error_code": "FAILED_PRECONDITION", "error_message": "insufficient credit"}
            return billing_pb2.HoldBatchItem(**error, error_reason="insufficient_credit")
        return billing_pb2.HoldBatchItem(result=billing_pb2.HoldResponse(hold_id=request.idempotency_key))

    async def single(self, request: billing_pb2.HoldRequest, **_: Any) -> billing_pb2.HoldResponse:
        self.singles += 1
        await asyncio.sleep(0.01)
        item = self.answer(request)
        if item.error_code:
            raise rpc_error(grpc.StatusCode.FAILED_PRECONDITION)
        return item.result

    async def batch(self, request: billing_pb2.HoldBatchRequest, **_: Any) -> billing_pb2.HoldBatchResponse:
        self.batches.append(len(request.items))
        await asyncio.sleep(0.01)  # the batch is in flight while more calls queue up
        if self.batch_error is not None:
            raise rpc_error(self.batch_error)
        return billing_pb2.HoldBatchResponse(items=[self.answer(r) for r in request.items])


def holds(n: int, big: tuple[int, ...] = ()) -> list[billing_pb2.HoldRequest]:
    return [billing_pb2.HoldRequest(idempotency_key=f"k{i}", amount_micros=500 if i in big else 10) for i in range(n)]


async def test_concurrent_calls_go_out_together_and_each_gets_its_own_outcome() -> None:
    billing = Billing()
    coalescer = Coalescer(billing.single, billing.batch, hold_batch, timeout_s=1, enabled=True)
    outcomes = await asyncio.gather(*(coalescer.call(r) for r in holds(10, big=(3, 7))), return_exceptions=True)
    alone = asyncio.create_task(coalescer.call(holds(1)[0]))
    await asyncio.sleep(0.002)  # its batch is in flight (billing takes 10 ms)
    queued = await asyncio.gather(*(coalescer.call(r) for r in holds(3)[1:]))
    assert billing.batches == [10, 1, 2]  # what queued while a batch was in flight goes out next, together
    assert billing.singles == 0
    for i, outcome in enumerate(outcomes):
        if i in (3, 7):
            assert isinstance(outcome, FailedPrecondition) and outcome.reason == "insufficient_credit"
        else:
            assert outcome.hold_id == f"k{i}"
    assert ((await alone).hold_id, [r.hold_id for r in queued]) == ("k0", ["k1", "k2"])


async def test_with_a_linger_calls_arriving_one_by_one_share_a_batch() -> None:
    """Settles (linger_s > 0): calls that arrive a few milliseconds apart, none of them while a
    batch is in flight, still go out together; without a linger each goes alone."""

    async def one_by_one(coalescer: Coalescer) -> list[str]:
        calls = []
        for request in holds(4):
            calls.append(asyncio.create_task(coalescer.call(request)))
            await asyncio.sleep(0.02)  # longer than a batch takes: nothing is in flight when the next arrives
        return [reply.hold_id for reply in await asyncio.gather(*calls)]

    alone, lingering = Billing(), Billing()
    assert await one_by_one(Coalescer(alone.single, alone.batch, hold_batch, timeout_s=1, enabled=True)) == [
        "k0", "k1", "k2", "k3"
    ]  # fmt: skip
    assert alone.batches == [1, 1, 1, 1]
    coalescer = Coalescer(lingering.single, lingering.batch, hold_batch, timeout_s=1, enabled=True, linger_s=0.2)
    assert await one_by_one(coalescer) == ["k0", "k1", "k2", "k3"]
    assert lingering.batches == [4]


async def test_with_a_linger_every_small_batch_waits_for_company_not_only_the_first() -> None:
    """A steady trickle (a call every 10 ms, batches taking 10 ms): without lingering before
    each batch, every batch after the first would find one call queued and go alone."""
    billing = Billing()
    coalescer = Coalescer(billing.single, billing.batch, hold_batch, timeout_s=1, enabled=True, linger_s=0.05)
    calls = []
    for request in holds(30):
        calls.append(asyncio.create_task(coalescer.call(request)))
        await asyncio.sleep(0.01)
    await asyncio.gather(*calls)
    assert sum(billing.batches) == 30
    assert len(billing.batches) <= 8, billing.batches  # about one batch per linger, not one per call


async def test_a_billing_without_the_batch_rpc_gets_single_calls_from_then_on() -> None:
    billing = Billing(batch_error=grpc.StatusCode.UNIMPLEMENTED)
    coalescer = Coalescer(billing.single, billing.batch, hold_batch, timeout_s=1, enabled=True)
    first = await asyncio.gather(*(coalescer.call(r) for r in holds(3)))
    assert [r.hold_id for r in first] == ["k0", "k1", "k2"]
    later = await coalescer.call(holds(1)[0])
    assert later.hold_id == "k0"
    assert (billing.batches, billing.singles) == ([3], 4)  # one batch refused, then single calls only


async def test_a_failed_batch_fails_every_caller_in_it_and_nothing_hangs() -> None:
    billing = Billing(batch_error=grpc.StatusCode.UNAVAILABLE)
    coalescer = Coalescer(billing.single, billing.batch, hold_batch, timeout_s=1, enabled=True)
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(coalescer.call(r) for r in holds(5)), return_exceptions=True), timeout=5
    )
    assert all(isinstance(o, Unavailable) for o in outcomes)
    billing.batch_error = None  # billing is back: the next calls go through
    assert (await coalescer.call(holds(1)[0])).hold_id == "k0"


async def test_coalescing_switched_off_sends_single_calls() -> None:
    billing = Billing()
    coalescer = Coalescer(billing.single, billing.batch, hold_batch, timeout_s=1, enabled=False)
    await asyncio.gather(*(coalescer.call(r) for r in holds(4)))
    assert (billing.batches, billing.singles) == ([], 4)


async def test_an_unexpected_failure_of_a_batch_leaves_no_caller_waiting() -> None:
    async def broken(request: Any, **_: Any) -> Any:
        raise RuntimeError("a bug in the batch path")

    billing = Billing()
    coalescer = Coalescer(billing.single, broken, hold_batch, timeout_s=1, enabled=True)
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(coalescer.call(r) for r in holds(3)), return_exceptions=True), timeout=5
    )
    assert all(isinstance(o, Unavailable) for o in outcomes)


async def test_the_batch_rpc_runs_in_the_context_of_the_call_that_opened_the_batch() -> None:
    """So that its spans join that call's trace (OpenTelemetry keeps the current span in a
    context variable)."""
    seen: list[str] = []
    billing = Billing()

    async def batch(request: billing_pb2.HoldBatchRequest, **kw: Any) -> billing_pb2.HoldBatchResponse:
        seen.append(CALLER.get())
        return await billing.batch(request, **kw)

    coalescer = Coalescer(billing.single, batch, hold_batch, timeout_s=1, enabled=True)

    async def call_as(name: str, request: billing_pb2.HoldRequest) -> Any:
        CALLER.set(name)
        return await coalescer.call(request)

    first = asyncio.create_task(call_as("first", holds(1)[0]))
    await asyncio.sleep(0.002)  # its batch is in flight
    await asyncio.gather(call_as("second", holds(2)[1]), call_as("third", holds(3)[2]))
    await first
    assert seen == ["first", "second"]
