"""Prices: exact USD -> micro-unit conversion, effective dates, and the ceiling rounding rule."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.billing.prices import Price, PriceTable, cost_micros, usd_to_micros
from services.runtime.errors import InvalidArgument

from .conftest import PRICES


def test_yaml_floats_convert_exactly_without_float_arithmetic() -> None:
    # 0.1 + 0.2 in float is 0.30000000000000004; Decimal(str(x)) keeps the written value.
    assert usd_to_micros(0.15, "x") == 150_000
    assert usd_to_micros(0.6, "x") == 600_000
    assert usd_to_micros("2.500001", "x") == 2_500_001
    assert usd_to_micros(3, "x") == 3_000_000


@pytest.mark.parametrize("bad", [-1, "0.0000001", "abc", None, True])
def test_malformed_prices_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        usd_to_micros(bad, "prices.m.input")


def test_cost_is_rounded_up_to_the_micro_unit() -> None:
    price = Price("m", input_per_mtok_micros=150_000, output_per_mtok_micros=600_000)
    assert cost_micros(price, 1, 0) == 1  # 0.15 micro rounds up to 1
    assert cost_micros(price, 0, 0) == 0
    assert cost_micros(price, 1_000_000, 0) == 150_000  # exact: no rounding
    assert cost_micros(price, 10, 1) == 3  # 1.5 + 0.6 = 2.1 -> 3 (sum first, then one ceiling)
    assert cost_micros(price, 1_000_001, 0) == 150_001


def test_a_call_is_priced_at_the_version_in_force_when_it_started() -> None:
    table = PriceTable.from_config(PRICES)
    before = datetime(2029, 12, 31, 23, 59, tzinfo=UTC)
    after = datetime(2030, 1, 1, tzinfo=UTC)
    assert table.quote("gpt-4o-mini", 1_000_000, 1_000_000, before)[0] == 750_000
    assert table.quote("gpt-4o-mini", 1_000_000, 1_000_000, after)[0] == 1_500_000


def test_unknown_model_is_invalid_argument() -> None:
    table = PriceTable.from_config(PRICES)
    with pytest.raises(InvalidArgument):
        table.quote("no-such-model", 1, 1, datetime.now(UTC))


def test_time_before_every_version_has_no_price() -> None:
    table = PriceTable.from_config(
        {"m": {"input_per_mtok_usd": 1, "output_per_mtok_usd": 1, "effective_from": "2030-01-01"}}
    )
    with pytest.raises(InvalidArgument):
        table.quote("m", 1, 1, datetime(2029, 1, 1, tzinfo=UTC))
