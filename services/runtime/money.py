"""Money as integer micro-units (1,000,000 = 1 USD): formatting and rounded-up prices.

Every amount in the mesh is an integer of micro-USD; floats never touch it. Prices are
micro-units per million tokens, and a call's cost is one ceiling over the exact sum of its
parts (integer arithmetic), so a one-token call costs at least a micro-unit and the platform
never gives a fraction away. The proxy sizes holds and billing charges with this one rule.
Amounts written in USD (prices.yaml, the CLI's `--usd`) become micro-units with `parse_usd`,
exactly or not at all.
"""

from __future__ import annotations

from decimal import MAX_PREC, Context, Decimal, Inexact, InvalidOperation, Overflow

MICROS_PER_USD = 1_000_000
TOKENS_PER_PRICE_UNIT = 1_000_000

# Shifting by six decimals in this context never rounds: the default 28 digits would round a
# long amount silently. The exponent limits stay the default ones (an absurd exponent is an
# Overflow, not a gigantic integer).
_EXACT = Context(prec=MAX_PREC, traps=[InvalidOperation, Overflow, Inexact])


class UsdAmountError(ValueError):
    """A value that is not a USD amount. Its subclasses say why, so that each caller words
    the refusal for its own reader (an operator at the CLI, a line of prices.yaml)."""


class NotAnAmount(UsdAmountError):
    """Not a finite decimal number: another type (a bool too), bad syntax, NaN, infinity."""


class TooManyDecimals(UsdAmountError):
    """Finer than a micro-unit: more than six decimals."""


class NegativeAmount(UsdAmountError):
    """Below zero."""


def parse_usd(value: object) -> int:
    """A USD amount as integer micro-units, exactly: '2.500001' -> 2500001, 0.15 -> 150000.

    A str or Decimal is read as written; a float by its shortest repr (what YAML read from
    `0.15`), never by float arithmetic. Refused by a subclass of UsdAmountError, in this
    order: not a finite number, more than six decimals, negative."""
    amount = _decimal(value)
    try:
        micros = amount.scaleb(6, _EXACT)
    except ArithmeticError:  # beyond the exponent limits
        raise NotAnAmount(f"not a USD amount: {value!r}") from None
    if micros != micros.to_integral_value():
        raise TooManyDecimals(f"more than six decimals: {value!r}")
    if micros < 0:
        raise NegativeAmount(f"a negative amount: {value!r}")
    return int(micros)


def _decimal(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise NotAnAmount(f"not a USD amount: {value!r}")
    try:
        amount = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except ArithmeticError:  # decimal.InvalidOperation: bad syntax
        raise NotAnAmount(f"not a USD amount: {value!r}") from None
    if not amount.is_finite():
        raise NotAnAmount(f"not a USD amount: {value!r}")
    return amount


def format_usd(micros: int) -> str:
    """Micro-units as USD with all six decimals: 2500001 -> '2.500001', -5 -> '-0.000005'."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS_PER_USD)
    return f"{sign}{whole}.{frac:06d}"


def token_cost_micros(input_tokens: int, output_tokens: int, input_per_mtok: int, output_per_mtok: int) -> int:
    """The cost of a call at prices per million tokens, rounded up to a whole micro-unit."""
    numerator = input_tokens * input_per_mtok + output_tokens * output_per_mtok
    return -(-numerator // TOKENS_PER_PRICE_UNIT)
