"""Money as integer micro-units (1,000,000 = 1 USD): formatting and rounded-up prices.

Every amount in the mesh is an integer of micro-USD; floats never touch it. Prices are
micro-units per million tokens, and a call's cost is one ceiling over the exact sum of its
parts (integer arithmetic), so a one-token call costs at least a micro-unit and the platform
never gives a fraction away. The proxy sizes holds and billing charges with this one rule.
"""

from __future__ import annotations

MICROS_PER_USD = 1_000_000
TOKENS_PER_PRICE_UNIT = 1_000_000


def format_usd(micros: int) -> str:
    """Micro-units as USD with all six decimals: 2500001 -> '2.500001', -5 -> '-0.000005'."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS_PER_USD)
    return f"{sign}{whole}.{frac:06d}"


def token_cost_micros(input_tokens: int, output_tokens: int, input_per_mtok: int, output_per_mtok: int) -> int:
    """The cost of a call at prices per million tokens, rounded up to a whole micro-unit."""
    numerator = input_tokens * input_per_mtok + output_tokens * output_per_mtok
    return -(-numerator // TOKENS_PER_PRICE_UNIT)
