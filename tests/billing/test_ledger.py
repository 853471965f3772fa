"""The ledger on PostgreSQL: holds, settles, releases, grants, refunds, codes, idempotency,
bad input, statements, usage queries, statistics and retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from services.billing.domain import Billing, HoldIn, ReleaseIn, ReleaseResult, SettleIn, UsageIn, UsageQuery
from services.billing.store import METADATA, Code, Hold, KeySpend, Transfer, UsageDailyAnonymous, UsageRow
from services.runtime.db import make_engine
from services.runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

from .conftest import SECRET, OptOuts, at
from .ledger_checks import assert_holds_add_up, assert_invariants, ledger_snapshot

USD = 1_000_000


def usage(model: str = "gpt-4o-mini", tokens: tuple[int, int] = (1000, 1000), **kw: object) -> UsageIn:
    return UsageIn(model=model, input_tokens=tokens[0], output_tokens=tokens[1], **kw)  # type: ignore[arg-type]


async def funded(billing: Billing, account: str, amount: int = 5 * USD) -> None:
    await billing.grant(account, amount, "test", f"fund-{account}")


async def test_hold_then_settle_charges_the_priced_cost_and_releases_the_rest(billing: Billing) -> None:
    await funded(billing, "acct1")
    hold = await billing.hold("acct1", USD, 0, "h1")
    assert hold.balance_micros == 4 * USD
    assert (await billing.balance("acct1")).held_micros == USD
    result = await billing.settle(SettleIn(hold.hold_id, 0, usage(tokens=(1000, 1000)), "s1"))
    # 1000 * 0.15 + 1000 * 0.60 USD per million tokens = 750 micro-USD
    assert (result.charged_micros, result.released_micros, result.shortfall_micros) == (750, USD - 750, 0)
    balance = await billing.balance("acct1")
    assert (balance.balance_micros, balance.held_micros) == (5 * USD - 750, 0)
    page = await billing.list_usage(UsageQuery("acct1"))
    assert [(r.cost_micros, r.model, r.input_tokens) for r in page.records] == [(750, "gpt-4o-mini", 1000)]
    await assert_invariants(billing.engine)


async def test_usage_record_holds_the_P1_4_metadata_and_nothing_else(billing: Billing) -> None:
    """P1.4: per request, time, account, key, model, token counts, cost, status and latency
    (plus the provider and whether tokens were counted locally), read back from the table;
    no column could hold request or response content."""
    await funded(billing, "acct-p14")
    started = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
    hold = await billing.hold("acct-p14", USD, 0, "h-p14", key_id="key-p14")
    call = usage(
        tokens=(1000, 1000), key_id="key-p14", provider="prov", status="ok", latency_ms=321, started_at=started
    )
    await billing.settle(SettleIn(hold.hold_id, 0, call, "s-p14"))
    table = UsageRow.__table__
    async with billing.engine.connect() as conn:
        row = (await conn.execute(select(table).where(table.c.account_id == "acct-p14"))).one()._asdict()
    assert set(row) == {
        "id", "account_id", "key_id", "model", "provider", "input_tokens", "output_tokens", "cost_micros",
        "shortfall_micros", "status", "latency_ms", "tokens_estimated", "created_at",
    }  # fmt: skip
    assert {k: v for k, v in row.items() if k != "id"} == {
        "account_id": "acct-p14", "key_id": "key-p14", "model": "gpt-4o-mini", "provider": "prov",
        "input_tokens": 1000, "output_tokens": 1000, "cost_micros": 750, "shortfall_micros": 0, "status": "ok",
        "latency_ms": 321, "tokens_estimated": False, "created_at": started.replace(tzinfo=None),
    }  # fmt: skip


async def test_actual_amount_overrides_pricing_and_above_the_hold_is_charged_up_to_the_balance(
    billing: Billing,
) -> None:
    await funded(billing, "acct2", 3 * USD)
    hold = await billing.hold("acct2", USD, 0, "h")
    result = await billing.settle(SettleIn(hold.hold_id, 5 * USD, usage(), "s"))
    # 1 USD from the hold + the 2 USD left in the wallet; 2 USD could not be covered.
    assert (result.charged_micros, result.released_micros, result.shortfall_micros) == (3 * USD, 0, 2 * USD)
    assert result.balance_micros == 0
    page = await billing.list_usage(UsageQuery("acct2"))
    assert page.records[0].shortfall_micros == 2 * USD
    await assert_invariants(billing.engine)


async def test_insufficient_credit_is_failed_precondition_with_openai_code(billing: Billing) -> None:
    await funded(billing, "acct3", USD)
    with pytest.raises(FailedPrecondition) as caught:
        await billing.hold("acct3", USD + 1, 0, "too-much")
    assert caught.value.openai_code == "insufficient_quota"
    assert caught.value.reason == "insufficient_credit"
    with pytest.raises(FailedPrecondition):
        await billing.hold("never-seen", 1, 0, "nobody")
    assert (await billing.balance("acct3")).balance_micros == USD
    # The refused key was not consumed: the same key works once credit is there.
    await billing.grant("acct3", USD, "more", "more")
    assert (await billing.hold("acct3", USD + 1, 0, "too-much")).amount_micros == USD + 1


async def test_each_hold_resolves_exactly_once(billing: Billing) -> None:
    await funded(billing, "acct4")
    hold = await billing.hold("acct4", USD, 0, "h")
    first = await billing.settle(SettleIn(hold.hold_id, 100, usage(), "settle-1"))
    assert await billing.settle(SettleIn(hold.hold_id, 100, usage(), "settle-1")) == first  # retry: same result
    with pytest.raises(FailedPrecondition):
        await billing.settle(SettleIn(hold.hold_id, 100, usage(), "settle-2"))
    with pytest.raises(FailedPrecondition):
        await billing.release(hold.hold_id, "release-1")
    with pytest.raises(AlreadyExists):
        await billing.settle(SettleIn(hold.hold_id, 999, usage(), "settle-1"))
    assert (await billing.balance("acct4")).balance_micros == 5 * USD - 100
    await assert_invariants(billing.engine)


async def test_release_returns_everything_and_records_zero_cost_usage(billing: Billing) -> None:
    await funded(billing, "acct5")
    hold = await billing.hold("acct5", 2 * USD, 0, "h")
    failed = usage(status="upstream_error")
    released = await billing.release(hold.hold_id, "r", failed)
    assert (released.released_micros, released.balance_micros) == (2 * USD, 5 * USD)
    assert await billing.release(hold.hold_id, "r", failed) == released
    records = (await billing.list_usage(UsageQuery("acct5"))).records
    assert [(r.status, r.cost_micros) for r in records] == [("upstream_error", 0)]


async def test_expired_holds_are_released_by_the_sweeper(billing: Billing) -> None:
    await funded(billing, "acct6")
    hold = await billing.hold("acct6", USD, 1, "h")
    async with billing.engine.begin() as conn:
        past = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=5)
        await conn.execute(update(Hold.__table__).where(Hold.__table__.c.id == hold.hold_id).values(expires_at=past))
    assert await billing.expire_holds() == 1
    assert await billing.expire_holds() == 0
    assert (await billing.balance("acct6")).balance_micros == 5 * USD
    with pytest.raises(FailedPrecondition, match="expired"):
        await billing.settle(SettleIn(hold.hold_id, 1, usage(), "late"))
    await assert_invariants(billing.engine)


async def test_key_spend_cap_limits_holds_per_key(billing: Billing) -> None:
    await funded(billing, "acct7")
    with pytest.raises(FailedPrecondition, match="spend limit"):
        await billing.hold("acct7", 2 * USD, 0, "k0", key_id="key-new", key_cap=USD)  # a new key, over its cap
    first = await billing.hold("acct7", 600_000, 0, "k1", key_id="key-a", key_cap=USD)
    with pytest.raises(FailedPrecondition) as caught:
        await billing.hold("acct7", 600_000, 0, "k2", key_id="key-a", key_cap=USD)
    assert caught.value.reason == "key_spend_limit"
    await billing.settle(SettleIn(first.hold_id, 300_000, usage(key_id="key-a"), "k1s"))
    await billing.hold("acct7", 600_000, 0, "k3", key_id="key-a", key_cap=USD)  # 300k spent + 600k held <= 1 USD
    with pytest.raises(FailedPrecondition):
        await billing.hold("acct7", 200_000, 0, "k4", key_id="key-a", key_cap=USD)


async def test_every_mutation_is_idempotent(billing: Billing) -> None:
    grant = await billing.grant("acct8", 10 * USD, "g", "g")
    assert await billing.grant("acct8", 10 * USD, "g", "g") == grant
    hold = await billing.hold("acct8", USD, 0, "h")
    assert await billing.hold("acct8", USD, 0, "h") == hold
    refund = await billing.refund(grant.transfer_id, USD, "r", "r")
    assert await billing.refund(grant.transfer_id, USD, "r", "r") == refund
    codes = await billing.create_codes(USD, 2, None, "c")
    assert await billing.create_codes(USD, 2, None, "c") == codes  # the same codes again, re-derived
    redeemed = await billing.redeem("acct8", codes.codes[0], "x")
    assert await billing.redeem("acct8", codes.codes[0], "x") == redeemed
    assert (await billing.balance("acct8")).balance_micros == 10 * USD - USD - USD + USD
    for call in (
        billing.grant("acct8", 11 * USD, "g", "g"),
        billing.hold("acct8", 2 * USD, 0, "h"),
        billing.refund(grant.transfer_id, 2 * USD, "r", "r"),
        billing.create_codes(USD, 3, None, "c"),
        billing.redeem("acct8", codes.codes[1], "x"),
    ):
        with pytest.raises(AlreadyExists, match="idempotency key"):
            await call
    await assert_invariants(billing.engine)


@pytest.mark.parametrize(
    "call",
    [
        lambda b: b.grant("acct9", 0, "", "k"),
        lambda b: b.grant("acct9", -5, "", "k"),
        lambda b: b.grant("bad account!", 5, "", "k"),
        lambda b: b.grant("acct9", 5, "", ""),
        lambda b: b.hold("acct9", -1, 0, "k"),
        lambda b: b.hold("acct9", 0, 0, "k"),
        lambda b: b.hold("acct9", 1, -3, "k"),
        lambda b: b.refund("", 1, "", "k"),
        lambda b: b.refund("t", -1, "", "k"),
        lambda b: b.create_codes(0, 1, None, "k"),
        lambda b: b.create_codes(1, 0, None, "k"),
        lambda b: b.redeem("acct9", "not a code", "k"),
        lambda b: b.list_usage(UsageQuery("acct9", page_token="@@@")),
        lambda b: b.statement("acct9", "2026-13"),
    ],
)
async def test_bad_input_is_invalid_argument_and_changes_nothing(billing: Billing, call: object) -> None:
    await funded(billing, "acct9")
    before = await ledger_snapshot(billing.engine)
    with pytest.raises(InvalidArgument):
        await call(billing)  # type: ignore[operator]
    assert await ledger_snapshot(billing.engine) == before


async def test_unknown_model_or_hold_or_transfer_changes_nothing(billing: Billing) -> None:
    await funded(billing, "acct10")
    hold = await billing.hold("acct10", USD, 0, "h")
    before = await ledger_snapshot(billing.engine)
    with pytest.raises(InvalidArgument, match="model"):
        await billing.settle(SettleIn(hold.hold_id, 0, usage(model="no-such-model"), "s"))
    with pytest.raises(InvalidArgument):
        await billing.settle(SettleIn(hold.hold_id, 0, usage(tokens=(-1, 0)), "s"))
    with pytest.raises(NotFound):
        await billing.settle(SettleIn("no-such-hold", 1, usage(), "s"))
    with pytest.raises(NotFound):
        await billing.refund("no-such-transfer", 1, "", "r")
    with pytest.raises(NotFound):
        await billing.redeem("acct10", "GM-AAAAA-AAAAA-AAAAA-AAAAA", "r")
    assert await ledger_snapshot(billing.engine) == before


async def test_refund_reverses_at_most_the_top_up_and_never_overdraws(billing: Billing) -> None:
    grant = await billing.grant("acct11", 3 * USD, "g", "g")
    await billing.refund(grant.transfer_id, USD, "part", "r1")
    with pytest.raises(FailedPrecondition):
        await billing.refund(grant.transfer_id, 3 * USD, "too much", "r2")
    await billing.hold("acct11", USD + 500_000, 0, "h")  # leaves 0.5 USD available
    with pytest.raises(FailedPrecondition):
        await billing.refund(grant.transfer_id, USD, "more than available", "r3")
    rest = await billing.refund(grant.transfer_id, 500_000, "the rest available", "r4")
    assert rest.balance_micros == 0
    await assert_invariants(billing.engine)


async def test_codes_redeem_once_expire_and_are_stored_only_as_hashes(billing: Billing) -> None:
    batch = await billing.create_codes(2 * USD, 3, None, "batch")
    assert len(set(batch.codes)) == 3
    assert (await billing.redeem("acct12", batch.codes[0].lower(), "a")).balance_micros == 2 * USD
    with pytest.raises(FailedPrecondition, match="already been redeemed"):
        await billing.redeem("acct13", batch.codes[0], "b")
    async with billing.engine.connect() as conn:
        stored = (await conn.execute(select(func.count()).select_from(UsageRow.__table__))).scalar_one()
        hashes = list((await conn.execute(select(Code.hash))).scalars())
    assert stored == 0
    assert all(code.replace("-", "")[2:] not in h for code in batch.codes for h in hashes)
    soon = datetime.now(UTC) + timedelta(seconds=60)
    expiring = await billing.create_codes(USD, 1, soon, "expiring")
    billing.clock = lambda: datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=120)
    with pytest.raises(FailedPrecondition, match="expired"):
        await billing.redeem("acct12", expiring.codes[0], "late")


async def test_monthly_statement_json_and_csv(billing: Billing) -> None:
    billing.clock = lambda: datetime(2026, 10, 15, 12, 0)
    grant = await billing.grant("acct14", 5 * USD, "welcome", "g")
    billing.clock = lambda: datetime(2026, 11, 2, 9, 0)
    hold = await billing.hold("acct14", USD, 0, "h")  # wallet -> holds: nets to zero, not a line
    await billing.settle(SettleIn(hold.hold_id, 250_001, usage(), "s"))
    statement = await billing.statement("acct14", "2026-11")
    assert statement.opening_balance_micros == 5 * USD
    assert [(e.kind, e.amount_micros) for e in statement.entries] == [("usage", -250_001)]
    assert statement.closing_balance_micros == 5 * USD - 250_001
    csv = statement.csv().splitlines()
    assert csv[0] == "transfer_id,kind,amount_usd,created_at,reference"
    assert csv[1].split(",")[1:3] == ["usage", "-0.250001"]
    october = await billing.statement("acct14", "2026-10")
    assert [(e.transfer_id, e.amount_micros) for e in october.entries] == [(grant.transfer_id, 5 * USD)]


async def record(billing: Billing, account: str, when: str, model: str = "gpt-4o-mini", key: str = "") -> None:
    if not (await billing.balance(account)).balance_micros:
        await funded(billing, account, USD)
    hold = await billing.hold(account, 1000, 0, f"h-{account}-{when}-{model}-{key}")
    u = usage(model=model, tokens=(100, 100), key_id=key, started_at=at(when))
    await billing.settle(SettleIn(hold.hold_id, 0, u, f"s-{account}-{when}-{model}-{key}"))


async def test_usage_listing_filters_and_keyset_pagination(billing: Billing) -> None:
    for day in range(1, 8):
        await record(billing, "acct15", f"2026-11-0{day}T10:00:00", key="k1" if day % 2 else "k2")
    await record(billing, "acct15", "2026-11-03T11:00:00", model="cheap")
    await record(billing, "other", "2026-11-03T11:00:00")
    seen, token = [], ""
    while True:
        page = await billing.list_usage(UsageQuery("acct15", page_size=3, page_token=token))
        seen += page.records
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == 8 and len({r.id for r in seen}) == 8
    assert [r.created_at for r in seen] == sorted((r.created_at for r in seen), reverse=True)
    since = at("2026-11-03T00:00:00")
    ranged = await billing.list_usage(UsageQuery("acct15", since=since, until=at("2026-11-05T00:00:00")))
    assert len(ranged.records) == 3
    assert len((await billing.list_usage(UsageQuery("acct15", model="cheap"))).records) == 1
    assert len((await billing.list_usage(UsageQuery("acct15", key_id="k2"))).records) == 3


async def test_daily_stats_per_model_for_the_dashboard(billing: Billing) -> None:
    await record(billing, "acct16", "2026-11-01T10:00:00")
    await record(billing, "acct16", "2026-11-01T23:00:00")
    await record(billing, "acct16", "2026-11-02T01:00:00", model="cheap")
    stats = await billing.usage_stats("acct16", None, None)
    assert [(s.day, s.model, s.requests, s.input_tokens) for s in stats] == [
        ("2026-11-01", "gpt-4o-mini", 2, 200),
        ("2026-11-02", "cheap", 1, 100),
    ]


async def test_aggregate_stats_leave_out_opted_out_accounts_P7_3(billing: Billing, opt_outs: OptOuts) -> None:
    """P7.3: an account that opted out is not counted; P2.4: groups too small to hide
    one person (fewer than stats_min_accounts=2 accounts) are suppressed."""
    for account in ("a-in-1", "a-in-2", "a-out"):
        await record(billing, account, "2026-11-01T10:00:00")
    await record(billing, "a-alone", "2026-11-01T10:00:00", model="cheap")
    stats = await billing.aggregate_stats(None, None)
    assert [(s.model, s.requests) for s in stats] == [("gpt-4o-mini", 3)]
    opt_outs.ids.add("a-out")  # honoured at once, no cache
    stats = await billing.aggregate_stats(None, None)
    assert [(s.model, s.requests) for s in stats] == [("gpt-4o-mini", 2)]


async def test_retention_sweep_deletes_old_usage_and_keeps_anonymous_aggregates_P5_2(billing: Billing) -> None:
    """P5.2: usage records older than 12 months are deleted; aggregates that identify nobody stay."""
    old = (datetime.now(UTC) - timedelta(days=400)).strftime("%Y-%m-%dT10:00:00")
    recent = (datetime.now(UTC) - timedelta(days=10)).strftime("%Y-%m-%dT10:00:00")
    await record(billing, "acct17", old)
    await record(billing, "acct18", old)
    await record(billing, "acct17", recent)
    deleted, aggregated = await billing.retention_sweep(365)
    assert (deleted, aggregated) == (2, 1)
    assert len((await billing.list_usage(UsageQuery("acct17"))).records) == 1
    async with billing.engine.connect() as conn:
        rows = (await conn.execute(select(UsageDailyAnonymous.__table__))).all()
    assert [(r.day, r.requests) for r in rows] == [(old[:10], 2)]
    assert all("acct" not in str(value) for r in rows for value in r)
    stats = await billing.aggregate_stats(None, None)
    assert (old[:10], 2) in [(s.day, s.requests) for s in stats]


async def test_retention_sweep_forgets_old_idempotency_keys(billing: Billing) -> None:
    first = await billing.grant("acct19", 5, "x", "old-key")
    billing.clock = lambda: datetime.now(UTC).replace(tzinfo=None) + timedelta(days=8)
    await billing.retention_sweep(365)
    second = await billing.grant("acct19", 5, "x", "old-key")  # a new grant: the key was forgotten
    assert second.transfer_id != first.transfer_id and second.balance_micros == 10


async def test_release_batch_matches_single_releases_and_is_idempotent(billing: Billing) -> None:
    """Each item of a ReleaseBatch gives its hold back as Release would (usage recorded at no
    cost when given), fails alone (unknown hold, resolved hold, bad usage), reports its
    wallet's running balance, and shares Release's idempotency keys both ways."""
    await funded(billing, "rel1", 2 * USD)
    await funded(billing, "rel2", USD)
    h1 = await billing.hold("rel1", USD, 0, "rh1", key_id="key-r", key_cap=2 * USD)
    h2 = await billing.hold("rel2", 300_000, 0, "rh2")
    h3 = await billing.hold("rel2", 200_000, 0, "rh3")
    single = await billing.release(h3.hold_id, "rr3")
    items = [
        ReleaseIn(h1.hold_id, "rr1", usage(tokens=(10, 0), key_id="key-r", status="upstream_error")),
        ReleaseIn(h2.hold_id, "rr2"),
        ReleaseIn(h2.hold_id, "rr2b"),  # the same hold again in the batch
        ReleaseIn("missing", "rr4"),
        ReleaseIn(h1.hold_id, "rr5", usage(model="")),
        ReleaseIn(h3.hold_id, "rr3"),  # replays the single release
        ReleaseIn(h2.hold_id, "rr2"),  # a repeat of rr2 within the batch
    ]
    results = await billing.release_batch(items)
    assert [type(r).__name__ for r in results] == [
        "ReleaseResult", "ReleaseResult", "FailedPrecondition", "NotFound", "InvalidArgument", "ReleaseResult",
        "ReleaseResult",
    ]  # fmt: skip
    assert results[0] == ReleaseResult(USD, 2 * USD)
    assert results[1] == ReleaseResult(300_000, USD)  # rel2's wallet: 1 USD - 300k + 300k (h3's came back before)
    assert results[5] == single and results[6] == results[1]
    assert await billing.release_batch(items[:2]) == results[:2]  # replays return the first results
    assert await billing.release(h2.hold_id, "rr2") == results[1]  # and the single path replays the batch's
    for account, amount in (("rel1", 2 * USD), ("rel2", USD)):
        assert (await billing.balance(account)).balance_micros == amount
        assert (await billing.balance(account)).held_micros == 0
    (record,) = (await billing.list_usage(UsageQuery("rel1"))).records
    assert (record.cost_micros, record.status) == (0, "upstream_error")
    assert (await billing.list_usage(UsageQuery("rel2"))).records == []
    # key-r's hold is resolved with nothing spent: its whole cap may be reserved again.
    assert (await billing.hold("rel1", 2 * USD, 0, "rh6", key_id="key-r", key_cap=2 * USD)).amount_micros == 2 * USD
    await assert_invariants(billing.engine)


async def test_settle_batch_matches_single_settles_and_is_idempotent(billing: Billing) -> None:
    await funded(billing, "batch1", 2 * USD)
    await funded(billing, "batch2", USD)
    h1 = await billing.hold("batch1", USD, 0, "bh1", key_id="key-b", key_cap=10 * USD)
    h2 = await billing.hold("batch2", 500_000, 0, "bh2")
    h3 = await billing.hold("batch2", 100_000, 0, "bh3")
    items = [
        SettleIn(h1.hold_id, 0, usage(tokens=(1000, 1000), key_id="key-b"), "bs1"),
        SettleIn(h2.hold_id, 900_000, usage(), "bs2"),  # 400k above the hold: all 400k available taken
        SettleIn(h3.hold_id, 300_000, usage(), "bs3"),  # 200k above, nothing left: 200k shortfall
        SettleIn(h3.hold_id, 1, usage(), "bs4"),  # the same hold again in the batch
        SettleIn("missing", 1, usage(), "bs5"),
        SettleIn(h1.hold_id, 0, usage(model="unknown"), "bs6"),
        SettleIn(h2.hold_id, 900_000, usage(), "bs2"),  # a repeat of bs2 within the batch
    ]
    results = await billing.settle_batch(items)
    assert [type(r).__name__ for r in results] == [
        "SettleResult", "SettleResult", "SettleResult", "FailedPrecondition", "NotFound", "InvalidArgument",
        "SettleResult",
    ]  # fmt: skip
    first, second, third = results[0], results[1], results[2]
    assert (first.charged_micros, first.released_micros) == (750, USD - 750)
    assert (second.charged_micros, second.shortfall_micros, second.balance_micros) == (900_000, 0, 0)
    assert (third.charged_micros, third.shortfall_micros, third.balance_micros) == (100_000, 200_000, 0)
    assert results[6] == second
    again = await billing.settle_batch(items[:3])
    assert again == results[:3]  # replays return the first results
    retried = await billing.settle_batch([SettleIn("missing", 1, usage(), "bs5")])
    assert isinstance(retried[0], NotFound)  # the failed item's key was given back, not burnt
    assert (await billing.balance("batch2")).balance_micros == 0
    assert len((await billing.list_usage(UsageQuery("batch2"))).records) == 2
    await assert_invariants(billing.engine)
    # The key's spend is 750 and nothing is held any more: 10 USD - 750 is the most it may still reserve.
    await billing.grant("batch1", 20 * USD, "more", "more-batch1")
    with pytest.raises(FailedPrecondition) as caught:
        await billing.hold("batch1", 10 * USD - 749, 0, "cap1", key_id="key-b", key_cap=10 * USD)
    assert caught.value.reason == "key_spend_limit"
    assert (await billing.hold("batch1", 10 * USD - 750, 0, "cap2", key_id="key-b", key_cap=10 * USD)).hold_id


async def test_hold_batch_matches_single_holds_and_is_idempotent(billing: Billing) -> None:
    await funded(billing, "hb1", 2 * USD)
    await funded(billing, "hb2", USD)
    items = [
        HoldIn("hb1", USD, 0, "hb-a", key_id="key-hb", key_cap=int(1.5 * USD)),
        HoldIn("hb2", 600_000, 0, "hb-b"),
        HoldIn("hb2", 600_000, 0, "hb-c"),  # 400k left after hb-b: insufficient credit
        HoldIn("hb1", 600_000, 0, "hb-d", key_id="key-hb", key_cap=int(1.5 * USD)),  # over the key's cap
        HoldIn("hb1", 0, 0, "hb-e"),  # bad input
        HoldIn("hb2", 400_000, 0, "hb-f"),  # exactly what is left
        HoldIn("hb2", 600_000, 0, "hb-b"),  # a repeat of hb-b within the batch
        HoldIn("hb2", 1, 0, "hb-b"),  # the same key with other parameters
    ]
    results = await billing.hold_batch(items)
    assert [type(r).__name__ for r in results] == [
        "HoldResult", "HoldResult", "FailedPrecondition", "FailedPrecondition", "InvalidArgument", "HoldResult",
        "HoldResult", "AlreadyExists",
    ]  # fmt: skip
    assert (results[2].reason, results[3].reason) == ("insufficient_credit", "key_spend_limit")
    assert [r.balance_micros for r in (results[0], results[1], results[5])] == [USD, 400_000, 0]
    assert results[6] == results[1]
    assert (await billing.balance("hb2")).held_micros == USD
    again = await billing.hold_batch(items[:2])
    assert again == results[:2]  # replays return the first results
    with pytest.raises(AlreadyExists):
        await billing.hold("hb1", 2, 0, "hb-a")  # a batch's key binds the single path too
    assert await billing.hold("hb1", USD, 0, "hb-a", key_id="key-hb", key_cap=int(1.5 * USD)) == results[0]
    await billing.grant("hb2", USD, "more", "more-hb2")
    retried = await billing.hold_batch([items[2], HoldIn("hb2", 1, 0, "hb-g")])
    assert [r.amount_micros for r in retried] == [600_000, 1]  # hb-c's key was given back, not burnt
    settled = await billing.settle(SettleIn(results[0].hold_id, 0, usage(key_id="key-hb"), "hb-s"))
    assert settled.charged_micros == 750  # batch holds settle like any other
    await assert_invariants(billing.engine)


async def test_single_settle_within_and_above_the_hold_matches_and_replays(billing: Billing) -> None:
    """A settle within its hold runs as one statement on PostgreSQL; one above its hold, or
    on a hold no longer open, runs step by step. Both charge, release, record usage, move the
    key's spend and store the key with the result alike; replays return the first result, the
    key with other parameters is refused, and a settled hold cannot be settled again."""
    await funded(billing, "one1", 2 * USD)
    within = await billing.hold("one1", 1000, 0, "oh1", key_id="key-one", key_cap=USD)
    above = await billing.hold("one1", 1000, 0, "oh2", key_id="key-one", key_cap=USD)
    first = await billing.settle(SettleIn(within.hold_id, 400, usage(key_id="key-one"), "os1"))
    assert (first.charged_micros, first.released_micros, first.shortfall_micros) == (400, 600, 0)
    assert first.balance_micros == 2 * USD - 1000 - 400  # the other hold is still held
    second = await billing.settle(SettleIn(above.hold_id, 1500, usage(key_id="key-one"), "os2"))
    assert (second.charged_micros, second.released_micros, second.shortfall_micros) == (1500, 0, 0)
    assert second.balance_micros == 2 * USD - 1900
    assert await billing.settle(SettleIn(within.hold_id, 400, usage(key_id="key-one"), "os1")) == first
    assert await billing.settle(SettleIn(above.hold_id, 1500, usage(key_id="key-one"), "os2")) == second
    with pytest.raises(AlreadyExists):
        await billing.settle(SettleIn(within.hold_id, 401, usage(key_id="key-one"), "os1"))
    with pytest.raises(FailedPrecondition):
        await billing.settle(SettleIn(within.hold_id, 400, usage(key_id="key-one"), "os3"))
    records = (await billing.list_usage(UsageQuery("one1"))).records
    assert sorted((r.cost_micros, r.key_id) for r in records) == [(400, "key-one"), (1500, "key-one")]
    assert (await billing.balance("one1")).held_micros == 0
    # The key's spend is 1900 and nothing of it is held: the cap leaves exactly USD - 1900.
    with pytest.raises(FailedPrecondition):
        await billing.hold("one1", USD - 1899, 0, "oh3", key_id="key-one", key_cap=USD)
    assert (await billing.hold("one1", USD - 1900, 0, "oh4", key_id="key-one", key_cap=USD)).hold_id
    await assert_invariants(billing.engine)


async def test_batches_post_one_transfer_per_account_and_statements_add_up(billing: Billing) -> None:
    """A hold batch and a settle batch each post one transfer per account whose entries sum
    the calls' legs; the statement shows the batch's usage as one line per account, and its
    opening balance plus its lines is its closing balance."""
    billing.clock = lambda: datetime(2026, 11, 2, 9, 0)
    for account in ("post1", "post2"):
        await funded(billing, account, USD)
    placed = await billing.hold_batch([HoldIn(("post1", "post2")[i % 2], 10_000, 0, f"ph{i}") for i in range(6)])
    holds = [h.hold_id for h in placed]  # type: ignore[union-attr]
    settles = [SettleIn(h, 1000 * (i + 1), usage(), f"ps{i}") for i, h in enumerate(holds)]
    settled = await billing.settle_batch(settles)
    charged = {"post1": 1000 + 3000 + 5000, "post2": 2000 + 4000 + 6000}
    assert [r.charged_micros for r in settled] == [1000, 2000, 3000, 4000, 5000, 6000]  # type: ignore[union-attr]
    async with billing.engine.connect() as conn:
        kinds = (await conn.execute(select(Transfer.kind, func.count()).group_by(Transfer.kind))).all()
    assert sorted(kinds) == [("grant", 2), ("hold", 2), ("usage", 2)]  # per account, not per call
    for account, amount in charged.items():
        statement = await billing.statement(account, "2026-11")
        lines = [(e.kind, e.amount_micros) for e in statement.entries]
        assert ("usage", -amount) in lines and len([k for k, _ in lines if k == "usage"]) == 1
        assert statement.opening_balance_micros + sum(a for _, a in lines) == statement.closing_balance_micros
        assert statement.closing_balance_micros == USD - amount == (await billing.balance(account)).balance_micros
    await assert_invariants(billing.engine)


# --- credit leases (issue 15) ------------------------------------------------------------


def draw(hold_id: str, cost: int, key: str, call: UsageIn | None = None) -> SettleIn:
    return SettleIn(hold_id, cost, call or usage(key_id="key-lease"), key, lease=True)


async def hold_row(billing: Billing, hold_id: str) -> tuple[int, str]:
    table = Hold.__table__
    async with billing.engine.connect() as conn:
        row = (await conn.execute(select(table.c.amount, table.c.status).where(table.c.id == hold_id))).one()
    return int(row.amount), row.status


async def key_spend(billing: Billing, key_id: str) -> tuple[int, int]:
    table = KeySpend.__table__
    async with billing.engine.connect() as conn:
        row = (await conn.execute(select(table.c.spent, table.c.held).where(table.c.key_id == key_id))).one()
    return int(row.spent), int(row.held)


def outcome(result: object) -> tuple[int, int, int, int]:
    r = result
    return r.charged_micros, r.released_micros, r.shortfall_micros, r.balance_micros  # type: ignore[attr-defined]


async def test_lease_draws_keep_the_lease_open_until_a_release_or_the_sweeper_returns_the_rest(
    billing: Billing,
) -> None:
    """Issue 15 (credit leases) on PostgreSQL: draws within the lease take from it and keep it
    open (never the one-statement settle), a draw past it takes the wallet, then records a
    shortfall; cost 0 moves no money; a repeated key charges once; the Release and the sweeper
    return exactly what is left; a late draw on an ended lease pays from the wallet alone."""
    await funded(billing, "lease1", 3 * USD)
    lease = await billing.hold("lease1", USD, 3600, "lh1", key_id="key-lease", key_cap=10 * USD)
    first = await billing.settle(draw(lease.hold_id, 300_000, "ld1"))
    assert outcome(first) == (300_000, 0, 0, 2 * USD)
    assert await billing.settle(draw(lease.hold_id, 300_000, "ld1")) == first  # a retry charges once
    with pytest.raises(AlreadyExists):
        await billing.settle(SettleIn(lease.hold_id, 300_000, usage(key_id="key-lease"), "ld1"))
    failed = usage(tokens=(0, 0), key_id="key-lease", status="upstream_error")
    transfers = (await ledger_snapshot(billing.engine))[0]
    assert outcome(await billing.settle(draw(lease.hold_id, 0, "ld0", failed))) == (0, 0, 0, 2 * USD)
    assert (await ledger_snapshot(billing.engine))[0] == transfers  # cost 0: the usage row alone
    assert outcome(await billing.settle(draw(lease.hold_id, 900_000, "ld2"))) == (900_000, 0, 0, 1_800_000)
    assert await hold_row(billing, lease.hold_id) == (0, "open")
    assert await key_spend(billing, "key-lease") == (1_200_000, 0)
    await assert_holds_add_up(billing.engine)
    released = await billing.release(lease.hold_id, "lr1")
    assert (released.released_micros, released.balance_micros) == (0, 1_800_000)
    second = await billing.hold("lease1", USD, 60, "lh2", key_id="key-lease", key_cap=10 * USD)
    assert outcome(await billing.settle(draw(second.hold_id, 250_000, "ld3"))) == (250_000, 0, 0, 800_000)
    async with billing.engine.begin() as conn:
        past = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=5)
        await conn.execute(update(Hold.__table__).where(Hold.__table__.c.id == second.hold_id).values(expires_at=past))
    assert await billing.expire_holds() == 1
    assert await hold_row(billing, second.hold_id) == (750_000, "expired")
    assert (await billing.balance("lease1")).balance_micros == 1_550_000  # exactly the rest came back
    late = await billing.settle(draw(second.hold_id, 2 * USD, "ld4"))  # the outbox replay after expiry
    assert outcome(late) == (1_550_000, 0, 450_000, 0)
    assert await key_spend(billing, "key-lease") == (3 * USD, 0)
    with pytest.raises(NotFound):
        await billing.settle(draw("missing", 1, "ld5"))
    records = (await billing.list_usage(UsageQuery("lease1"))).records
    assert sorted((r.cost_micros, r.shortfall_micros) for r in records) == [
        (0, 0), (250_000, 0), (300_000, 0), (900_000, 0), (1_550_000, 450_000),
    ]  # fmt: skip
    await assert_invariants(billing.engine)
    await assert_holds_add_up(billing.engine)


def lease_batch(lease: str, other: str, ended: str) -> list[SettleIn]:
    """Draws on one lease (the third past it), a repeat, a plain settle of another hold, a
    draw on an ended lease and a cost-0 draw, in one SettleBatch."""
    return [
        draw(lease, 300_000, f"{lease}-1"),
        draw(lease, 400_000, f"{lease}-2"),
        SettleIn(other, 250_000, usage(key_id="key-lease"), f"{other}-s"),
        draw(lease, 500_000, f"{lease}-3"),
        draw(lease, 300_000, f"{lease}-1"),
        draw(ended, 50_000, f"{ended}-1"),
        draw(lease, 0, f"{lease}-0", usage(tokens=(0, 0), status="upstream_error")),
    ]


LEASE_BATCH_OUTCOME = (
    [(300_000, 0, 0, USD), (400_000, 0, 0, USD), (250_000, 750_000, 0, 1_750_000), (500_000, 0, 0, 1_550_000),
     (300_000, 0, 0, USD), (50_000, 0, 0, 1_500_000), (0, 0, 0, 1_500_000)],
    (0, "open"),
    (1_500_000, 0),
)  # fmt: skip
"""`lease_batch`'s results, then the lease's (amount, status) and the key's (spent, held)."""


async def run_lease_batch(billing: Billing, account: str, batched: bool) -> tuple[Any, ...]:
    """`lease_batch` on a funded account with a lease, another hold and an ended lease, as one
    SettleBatch or one call at a time; a batch is replayed, and must charge nothing more."""
    await funded(billing, account, 3 * USD)
    key = f"key-{account}"
    lease = await billing.hold(account, USD, 3600, f"{account}-l", key_id=key)
    other = await billing.hold(account, USD, 0, f"{account}-o", key_id=key)
    ended = await billing.hold(account, 100_000, 0, f"{account}-e", key_id=key)
    await billing.release(ended.hold_id, f"{account}-r")
    items = lease_batch(lease.hold_id, other.hold_id, ended.hold_id)
    done = await billing.settle_batch(items) if batched else [await billing.settle(i) for i in items]
    state = await hold_row(billing, lease.hold_id), await key_spend(billing, key)
    if batched:
        assert await billing.settle_batch(items) == done
        assert (await hold_row(billing, lease.hold_id), await key_spend(billing, key)) == state
    return ([outcome(r) for r in done], *state)


async def test_a_settle_batch_of_lease_draws_matches_single_draws_and_replays(billing: Billing) -> None:
    """Issue 15 on PostgreSQL: in one SettleBatch, draws on one lease take from its running
    remainder and write its new amount once; the results, the reported running balances, the
    lease and the key's spend are those of the same calls one at a time, and a replay of the
    batch charges nothing more."""
    assert await run_lease_batch(billing, "lb-single", False) == LEASE_BATCH_OUTCOME
    assert await run_lease_batch(billing, "lb-batch", True) == LEASE_BATCH_OUTCOME
    await assert_invariants(billing.engine)
    await assert_holds_add_up(billing.engine)


async def test_lease_draws_on_sqlite_match_postgresql(tmp_path, billing: Billing) -> None:
    """Issue 15: the same draws, one at a time and batched, on SQLite (a local mesh's store,
    `take_from_holds` as SQLite runs it) end as on PostgreSQL."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'billing.db'}")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(METADATA.create_all)
        local = Billing(engine, billing.prices, SECRET)
        assert await run_lease_batch(local, "ls-single", False) == LEASE_BATCH_OUTCOME
        assert await run_lease_batch(local, "ls-batch", True) == LEASE_BATCH_OUTCOME
        await assert_invariants(engine)
        await assert_holds_add_up(engine)
    finally:
        await engine.dispose()
