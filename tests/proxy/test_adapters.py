"""The proxy's price cache: loaded at once by its background job (waiting for a billing still
connecting), kept fresh by the runtime's shared loop, which outlives a failed refresh."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gatemesh.billing.v1 import billing_pb2
from services.proxy.adapters import PriceCache
from services.proxy.model import Price


class FakeBilling:
    """ListPrices only: one price, after `failures` unexpected errors."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls: list[dict[str, Any]] = []

    async def ListPrices(self, request: billing_pb2.ListPricesRequest, **kwargs: Any) -> billing_pb2.ListPricesResponse:
        self.calls.append(kwargs)
        if len(self.calls) <= self.failures:
            raise RuntimeError("reply parameters: acct-secret-id")
        price = billing_pb2.ModelPrice(model="m", input_per_mtok_micros=150_000, output_per_mtok_micros=600_000)
        return billing_pb2.ListPricesResponse(prices=[price])


async def run_until_fetched(cache: PriceCache) -> None:
    task = asyncio.create_task(cache.run())
    try:
        await asyncio.wait_for(cache.fetched.wait(), 5)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_the_first_load_is_at_once_and_waits_for_ready() -> None:
    billing = FakeBilling()
    cache = PriceCache(billing, timeout_s=2.0, refresh_s=3600.0)  # type: ignore[arg-type]  # a fake stub
    await run_until_fetched(cache)
    assert billing.calls[0]["wait_for_ready"] is True
    assert await cache.get("m") == Price(150_000, 600_000)
    assert cache.models() == {"m"}


async def test_a_failed_refresh_is_logged_by_type_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    billing = FakeBilling(failures=1)
    cache = PriceCache(billing, timeout_s=2.0, refresh_s=0.01)  # type: ignore[arg-type]  # a fake stub
    await run_until_fetched(cache)
    assert len(billing.calls) == 2
    assert "price refresh failed (RuntimeError)" in caplog.text
    assert "acct-secret-id" not in caplog.text
