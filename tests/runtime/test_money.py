"""USD amounts to micro-units: exact (Decimal, never float arithmetic) or refused, and refused
with a reason each caller can word for its reader (CLI, prices.yaml)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.runtime.money import (
    NegativeAmount,
    NotAnAmount,
    TooManyDecimals,
    UsdAmountError,
    parse_usd,
)


@pytest.mark.parametrize(
    ("value", "micros"),
    [
        ("2.500001", 2_500_001),
        (" 2.5\n", 2_500_000),  # as typed at a prompt
        ("1.0000000", 1_000_000),  # trailing zeros are not decimals of value
        ("0", 0),
        ("-0", 0),
        (0.15, 150_000),  # the float YAML read from `0.15`, by its repr: not 0.1499999...
        (0.6, 600_000),
        (3, 3_000_000),
        (Decimal("1.50"), 1_500_000),
        ("1e3", 1_000_000_000),
    ],
)
def test_amounts_convert_exactly(value: object, micros: int) -> None:
    assert parse_usd(value) == micros


def test_a_long_amount_is_not_rounded_to_the_default_precision() -> None:
    # 32 significant digits once in micro-units: the default 28-digit context would round
    # away the seventh decimal and accept it.
    with pytest.raises(TooManyDecimals):
        parse_usd("1234567890123456789012345.0000001")
    assert parse_usd("1234567890123456789012345.000001") == 1_234_567_890_123_456_789_012_345_000_001


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("abc", NotAnAmount),
        ("", NotAnAmount),
        (None, NotAnAmount),
        (True, NotAnAmount),  # a bool is an int to Python, not an amount
        ([1], NotAnAmount),
        ("nan", NotAnAmount),
        ("sNaN", NotAnAmount),
        (float("nan"), NotAnAmount),
        ("inf", NotAnAmount),
        (float("-inf"), NotAnAmount),
        ("1e999999", NotAnAmount),  # beyond the exponent limits
        ("0.0000001", TooManyDecimals),
        ("1e-7", TooManyDecimals),
        ("-0.0000001", TooManyDecimals),  # decimals are checked before the sign
        ("-1", NegativeAmount),
        (-0.5, NegativeAmount),
    ],
)
def test_non_amounts_are_refused_with_their_reason(value: object, reason: type[UsdAmountError]) -> None:
    with pytest.raises(reason):
        parse_usd(value)


def test_every_refusal_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_usd("nan")
