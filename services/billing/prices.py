"""The price table: per-model input and output prices per million tokens, with effective dates.

Prices come from configuration in USD (`prices: {gpt-4o-mini: {input_per_mtok_usd: 0.15,
output_per_mtok_usd: 0.60}}`, or a list of versions each with `effective_from`). They are
converted to integer micro-USD per million tokens exactly by the runtime's `parse_usd`
(Decimal, never float arithmetic). A call is priced at the version in force at its start time.

Rounding: the cost of a call is the exact sum of both parts, rounded UP to the next whole
micro-unit (so a 1-token call is never free, and the platform never loses a fraction).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.runtime.errors import InvalidArgument
from services.runtime.money import (
    TOKENS_PER_PRICE_UNIT,
    NotAnAmount,
    UsdAmountError,
    parse_usd,
    token_cost_micros,
)

__all__ = ["TOKENS_PER_PRICE_UNIT", "Price", "PriceTable", "cost_micros", "usd_to_micros"]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Price:
    """One price version of a model, in micro-USD per million tokens."""

    model: str
    input_per_mtok_micros: int
    output_per_mtok_micros: int
    effective_from: datetime = EPOCH


def usd_to_micros(value: Any, where: str) -> int:
    """An exact USD amount (YAML number or string) as integer micro-USD; a ValueError that
    names the setting (`where`) otherwise."""
    try:
        return parse_usd(value)
    except NotAnAmount:
        raise ValueError(f"{where}: not a number") from None
    except UsdAmountError:
        raise ValueError(f"{where}: must be a non-negative USD amount with at most six decimals") from None


def _parse_time(value: Any, where: str) -> datetime:
    if value is None:
        return EPOCH
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_prices(config: dict[str, Any]) -> list[Price]:
    """Every configured price version; ValueError on a malformed entry."""
    prices: list[Price] = []
    for model, spec in config.items():
        versions = spec if isinstance(spec, list) else [spec]
        for i, version in enumerate(versions):
            where = f"prices.{model}[{i}]"
            if not isinstance(version, dict):
                raise ValueError(f"{where}: expected a mapping")
            prices.append(
                Price(
                    model=str(model),
                    input_per_mtok_micros=usd_to_micros(version.get("input_per_mtok_usd"), f"{where}.input"),
                    output_per_mtok_micros=usd_to_micros(version.get("output_per_mtok_usd"), f"{where}.output"),
                    effective_from=_parse_time(version.get("effective_from"), where),
                )
            )
    return prices


def cost_micros(price: Price, input_tokens: int, output_tokens: int) -> int:
    """The exact cost rounded up to the micro-unit (integer ceiling division, no floats)."""
    return token_cost_micros(input_tokens, output_tokens, price.input_per_mtok_micros, price.output_per_mtok_micros)


class PriceTable:
    """Price versions per model, looked up by the time a call happened."""

    def __init__(self, prices: list[Price]) -> None:
        self._versions: dict[str, list[Price]] = {}
        for price in sorted(prices, key=lambda p: p.effective_from):
            self._versions.setdefault(price.model, []).append(price)
        self._starts = {m: [p.effective_from for p in v] for m, v in self._versions.items()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PriceTable:
        return cls(parse_prices(config))

    def all(self) -> list[Price]:
        return [p for versions in self._versions.values() for p in versions]

    def knows(self, model: str) -> bool:
        return model in self._versions

    def at(self, model: str, when: datetime) -> Price:
        """The version of `model` in force at `when`; InvalidArgument if none."""
        versions = self._versions.get(model)
        if not versions:
            raise InvalidArgument("unknown model", field_violations={"model": "no price is configured for it"})
        index = bisect.bisect_right(self._starts[model], when) - 1
        if index < 0:
            raise InvalidArgument("no price in force", field_violations={"model": "no price in force at that time"})
        return versions[index]

    def quote(self, model: str, input_tokens: int, output_tokens: int, when: datetime) -> tuple[int, Price]:
        price = self.at(model, when)
        return cost_micros(price, input_tokens, output_tokens), price
