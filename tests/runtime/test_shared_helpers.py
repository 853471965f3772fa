"""The runtime's shared helpers: proto timestamps, money formatting and rounding, the
background loop (whose log lines never carry an error's text)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from services.runtime.background import every
from services.runtime.money import format_usd, token_cost_micros
from services.runtime.timestamps import from_timestamp, optional_timestamp, to_timestamp


def test_a_naive_time_is_utc_and_round_trips_aware() -> None:
    naive = datetime(2026, 11, 2, 9, 30, 0, 250000)
    assert to_timestamp(naive) == to_timestamp(naive.replace(tzinfo=UTC))
    assert from_timestamp(to_timestamp(naive)) == naive.replace(tzinfo=UTC)


def test_an_unset_timestamp_is_no_time() -> None:
    assert from_timestamp(Timestamp()) is None
    assert optional_timestamp(None) is None


@pytest.mark.parametrize(("micros", "text"), [(2_500_001, "2.500001"), (-5, "-0.000005"), (0, "0.000000")])
def test_usd_has_all_six_decimals(micros: int, text: str) -> None:
    assert format_usd(micros) == text


def test_cost_is_one_ceiling_over_the_exact_sum() -> None:
    assert token_cost_micros(1, 0, 150_000, 600_000) == 1  # 0.15 micro-units: never free
    assert token_cost_micros(1_000_000, 1_000_000, 150_000, 600_000) == 750_000
    assert token_cost_micros(3, 3, 1, 1) == 1  # 6 millionths, one ceiling, not two


async def test_the_loop_goes_on_after_a_failure_and_logs_no_parameters(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []
    third = asyncio.Event()

    async def job() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("UPDATE ... parameters: acct-secret-id")
        if len(runs) == 3:
            third.set()

    task = asyncio.create_task(every(0.01, job, "sweeper", logging.getLogger("test.background"))())
    await asyncio.wait_for(third.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "sweeper failed (RuntimeError)" in caplog.text
    assert "acct-secret-id" not in caplog.text
