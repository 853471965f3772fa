"""Billing test fixtures: a migrated PostgreSQL database per test and the domain on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.billing.domain import Billing
from services.billing.prices import PriceTable
from services.runtime.db import make_engine, migrate

MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "billing" / "migrations"
SECRET = "test-billing-secret"
PRICES = {
    "gpt-4o-mini": [
        {"input_per_mtok_usd": 0.15, "output_per_mtok_usd": 0.60},
        {"input_per_mtok_usd": "0.30", "output_per_mtok_usd": 1.2, "effective_from": "2030-01-01T00:00:00Z"},
    ],
    "cheap": {"input_per_mtok_usd": 0.000001, "output_per_mtok_usd": 0},
}


@pytest.fixture
async def engine(pg_database: Callable[[str], Awaitable[str]]) -> AsyncIterator[AsyncEngine]:
    url = await pg_database("billing")
    engine = make_engine(url, pool_size=20, max_overflow=40)
    await migrate(engine, MIGRATIONS, "billing")
    yield engine
    await engine.dispose()


class OptOuts:
    """Stands in for auth's ListAnalyticsOptOuts."""

    def __init__(self) -> None:
        self.ids: set[str] = set()

    async def __call__(self) -> set[str]:
        return set(self.ids)


@pytest.fixture
def opt_outs() -> OptOuts:
    return OptOuts()


@pytest.fixture
def billing(engine: AsyncEngine, opt_outs: OptOuts) -> Billing:
    return Billing(engine, PriceTable.from_config(PRICES), SECRET, opt_outs=opt_outs, stats_min_accounts=2)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)
