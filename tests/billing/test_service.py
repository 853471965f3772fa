"""Billing over gRPC: access levels, error mapping for the edge, the hot-path calls, webhooks
through metadata, batches, and the privacy participant (export, erasure under legal hold)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import grpc
import pytest
from google.api import httpbody_pb2
from sqlalchemy import select, text

from gatemesh.billing.v1 import billing_pb2, billing_pb2_grpc
from gatemesh.common.v1 import common_pb2
from gatemesh.privacy.v1 import data_pb2, participant_pb2, participant_pb2_grpc
from services.billing.cards import CardTopups
from services.billing.domain import Billing
from services.billing.participant import BillingParticipant
from services.billing.servicer import BillingServicer
from services.billing.store import METADATA
from services.runtime.access import SERVICE_TOKEN_HEADER, Principal
from services.runtime.errors import ERROR_JSON_TRAILER, HTTP_STATUS_TRAILER, Unauthenticated
from services.runtime.server import ServiceSpec, bind, build_server
from services.runtime.settings import GatemeshSettings

from .conftest import SECRET
from .ledger_checks import assert_invariants
from .stripe_standin import WEBHOOK_SECRET, StandIn, completed, event, processor, sign

SERVICE, ADMIN, USER, OTHER = "svc-token", "admin-token", "user-token", "other-token"
USD = 1_000_000


async def authenticate(credential: str) -> Principal:
    """Stands in for auth's Authenticate: two users."""
    users = {USER: "alice", OTHER: "bob"}
    if credential in users:
        return Principal(account_id=users[credential])
    raise Unauthenticated("invalid credential")


@pytest.fixture
def standin() -> Iterator[tuple[str, StandIn]]:
    with processor() as found:
        yield found


@pytest.fixture
async def address(billing: Billing, tmp_path, standin: tuple[str, StandIn]) -> AsyncIterator[str]:
    settings = GatemeshSettings(data_dir=tmp_path, service_token=SERVICE, admin_token=ADMIN, key_hmac_secret=SECRET)
    cards = CardTopups(billing, "sk_test", WEBHOOK_SECRET, api_base=standin[0])
    servicer, participant = BillingServicer(billing, cards), BillingParticipant(billing, SECRET)

    def register(server: grpc.aio.Server) -> None:
        billing_pb2_grpc.add_BillingServiceServicer_to_server(servicer, server)
        participant_pb2_grpc.add_PrivacyParticipantServicer_to_server(participant, server)

    spec = ServiceSpec("billing", register, ["gatemesh.billing.v1.BillingService"], authenticator=authenticate)
    server, _ = build_server(spec, settings)
    port = bind(server, "127.0.0.1:0", settings)
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(0)


def as_service() -> tuple[tuple[str, str], ...]:
    return ((SERVICE_TOKEN_HEADER, SERVICE),)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
async def stub(address: str) -> AsyncIterator[billing_pb2_grpc.BillingServiceStub]:
    async with grpc.aio.insecure_channel(address) as channel:
        yield billing_pb2_grpc.BillingServiceStub(channel)


async def grant(stub: billing_pb2_grpc.BillingServiceStub, account: str, amount: int, key: str) -> None:
    request = billing_pb2.GrantCreditsRequest(account_id=account, amount_micros=amount, idempotency_key=key)
    await stub.GrantCredits(request, metadata=bearer(ADMIN))


async def test_hot_path_hold_settle_over_grpc_and_balance_for_the_user(stub) -> None:
    await grant(stub, "alice", 2 * USD, "g1")
    hold = await stub.Hold(
        billing_pb2.HoldRequest(account_id="alice", amount_micros=USD, idempotency_key="h1"), metadata=as_service()
    )
    assert hold.balance_micros == USD and hold.expires_at.seconds > 0
    started = datetime(2026, 11, 20, 12, tzinfo=UTC)
    usage = billing_pb2.Usage(model="gpt-4o-mini", input_tokens=2000, output_tokens=500, provider="p", latency_ms=80)
    usage.started_at.FromDatetime(started)
    settled = await stub.Settle(
        billing_pb2.SettleRequest(hold_id=hold.hold_id, usage=usage, idempotency_key="s1"), metadata=as_service()
    )
    assert settled.charged_micros == 600  # 2000 * 0.15 + 500 * 0.60 micro-USD
    balance = await stub.GetBalance(billing_pb2.GetBalanceRequest(), metadata=bearer(USER))
    assert (balance.account_id, balance.balance_micros) == ("alice", 2 * USD - 600)
    usage_page = await stub.ListUsage(billing_pb2.ListUsageRequest(), metadata=bearer(USER))
    assert [(r.model, r.cost_micros, r.latency_ms) for r in usage_page.records] == [("gpt-4o-mini", 600, 80)]
    assert usage_page.records[0].created_at.ToDatetime(tzinfo=UTC) == started
    others = await stub.ListUsage(billing_pb2.ListUsageRequest(), metadata=bearer(OTHER))
    assert list(others.records) == []  # a user sees only their own
    stats = await stub.GetUsageStats(billing_pb2.GetUsageStatsRequest(), metadata=bearer(USER))
    assert [(d.day, d.requests) for d in stats.days] == [("2026-11-20", 1)]


async def test_insufficient_credit_reaches_the_edge_as_openai_insufficient_quota(stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Hold(
            billing_pb2.HoldRequest(account_id="nobody", amount_micros=5, idempotency_key="h"), metadata=as_service()
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    trailers = dict(caught.value.trailing_metadata())
    body = json.loads(trailers[ERROR_JSON_TRAILER])
    assert body["error"]["code"] == "insufficient_quota"
    assert trailers[HTTP_STATUS_TRAILER] == "400"


async def test_access_levels_are_enforced(stub) -> None:
    hold = billing_pb2.HoldRequest(account_id="alice", amount_micros=5, idempotency_key="h")
    for metadata, code in ((bearer(USER), grpc.StatusCode.UNAUTHENTICATED), ((), grpc.StatusCode.UNAUTHENTICATED)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Hold(hold, metadata=metadata)
        assert caught.value.code() == code
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await grant(stub, "alice", 5, "g")  # the admin token works...
        await stub.GrantCredits(
            billing_pb2.GrantCreditsRequest(account_id="bob", amount_micros=5, idempotency_key="x"),
            metadata=bearer(USER),
        )  # ...a user's does not
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    prices = await stub.ListPrices(billing_pb2.ListPricesRequest())  # public
    assert {p.model for p in prices.prices} == {"gpt-4o-mini", "cheap"}


async def test_bad_input_gets_invalid_argument_with_field_violations(stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GrantCredits(
            billing_pb2.GrantCreditsRequest(account_id="alice", amount_micros=-1, idempotency_key=""),
            metadata=bearer(ADMIN),
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "amount_micros" in caught.value.details() and "idempotency_key" in caught.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Quote(billing_pb2.QuoteRequest(model="unknown", input_tokens=1), metadata=as_service())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    balance = await stub.AdminGetBalance(billing_pb2.AdminGetBalanceRequest(account_id="alice"), metadata=bearer(ADMIN))
    assert balance.balance_micros == 0


async def test_settle_batch_commits_good_items_and_reports_bad_ones(stub) -> None:
    await grant(stub, "alice", USD, "g")
    holds = [
        await stub.Hold(
            billing_pb2.HoldRequest(account_id="alice", amount_micros=1000, idempotency_key=f"h{i}"),
            metadata=as_service(),
        )
        for i in range(3)
    ]
    usage = billing_pb2.Usage(model="gpt-4o-mini", input_tokens=10)
    items = [billing_pb2.SettleRequest(hold_id=h.hold_id, actual_micros=100, usage=usage, idempotency_key=f"s{i}")
             for i, h in enumerate(holds)]  # fmt: skip
    items.append(billing_pb2.SettleRequest(hold_id="missing", actual_micros=1, usage=usage, idempotency_key="sx"))
    items.append(
        billing_pb2.SettleRequest(hold_id=holds[0].hold_id, actual_micros=1, usage=usage, idempotency_key="sy")
    )
    reply = await stub.SettleBatch(billing_pb2.SettleBatchRequest(items=items), metadata=as_service())
    codes = [item.error_code for item in reply.items]
    assert codes == ["", "", "", "NOT_FOUND", "FAILED_PRECONDITION"]
    balance = await stub.AdminGetBalance(billing_pb2.AdminGetBalanceRequest(account_id="alice"), metadata=bearer(ADMIN))
    assert (balance.balance_micros, balance.held_micros) == (USD - 300, 0)


async def test_release_batch_releases_good_items_and_reports_bad_ones(stub) -> None:
    await grant(stub, "carol", USD, "g-carol")
    holds = [
        await stub.Hold(
            billing_pb2.HoldRequest(account_id="carol", amount_micros=1000, idempotency_key=f"rh{i}"),
            metadata=as_service(),
        )
        for i in range(2)
    ]
    items = [billing_pb2.ReleaseRequest(hold_id=h.hold_id, idempotency_key=f"rl{i}") for i, h in enumerate(holds)]
    items.append(billing_pb2.ReleaseRequest(hold_id="missing", idempotency_key="rlx"))
    items.append(billing_pb2.ReleaseRequest(hold_id=holds[0].hold_id, idempotency_key="rly"))
    reply = await stub.ReleaseBatch(billing_pb2.ReleaseBatchRequest(items=items), metadata=as_service())
    assert [(i.error_code, i.error_reason) for i in reply.items] == [
        ("", ""), ("", ""), ("NOT_FOUND", ""), ("FAILED_PRECONDITION", "hold_resolved"),
    ]  # fmt: skip
    assert [i.result.released_micros for i in reply.items[:2]] == [1000, 1000]
    assert reply.items[1].result.balance_micros == USD
    balance = await stub.AdminGetBalance(billing_pb2.AdminGetBalanceRequest(account_id="carol"), metadata=bearer(ADMIN))
    assert (balance.balance_micros, balance.held_micros) == (USD, 0)


async def test_a_nul_in_one_batch_item_fails_that_item_alone(stub) -> None:
    """Batch items are judged alone (the contract ignores them as a whole): a NUL, which
    PostgreSQL text cannot store, fails its item with INVALID_ARGUMENT naming the field and
    leaves the rest of the batch to commit (it failed the whole batch's statement before)."""
    await grant(stub, "dora", USD, "g-dora")
    holds = [billing_pb2.HoldRequest(account_id="dora", amount_micros=1000, idempotency_key=f"nh{i}") for i in range(2)]
    holds.append(billing_pb2.HoldRequest(account_id="dora", amount_micros=1000, idempotency_key="nh\x00x"))
    reply = await stub.HoldBatch(billing_pb2.HoldBatchRequest(items=holds), metadata=as_service())
    assert [i.error_code for i in reply.items] == ["", "", "INVALID_ARGUMENT"]
    assert "idempotency_key" in reply.items[2].error_message
    usage = billing_pb2.Usage(model="gpt-4o-mini", input_tokens=10, provider="bad\x00provider")
    settles = [
        billing_pb2.SettleRequest(hold_id=reply.items[0].result.hold_id, actual_micros=100, idempotency_key="ns0"),
        billing_pb2.SettleRequest(hold_id=reply.items[1].result.hold_id, usage=usage, idempotency_key="ns1"),
    ]
    settles[0].usage.CopyFrom(billing_pb2.Usage(model="gpt-4o-mini", input_tokens=10))
    settled = await stub.SettleBatch(billing_pb2.SettleBatchRequest(items=settles), metadata=as_service())
    assert [i.error_code for i in settled.items] == ["", "INVALID_ARGUMENT"]
    assert "usage.provider" in settled.items[1].error_message
    release = billing_pb2.ReleaseRequest(hold_id=reply.items[1].result.hold_id, idempotency_key="nr\x00")
    released = await stub.ReleaseBatch(billing_pb2.ReleaseBatchRequest(items=[release]), metadata=as_service())
    assert released.items[0].error_code == "INVALID_ARGUMENT"
    balance = await stub.AdminGetBalance(billing_pb2.AdminGetBalanceRequest(account_id="dora"), metadata=bearer(ADMIN))
    assert (balance.balance_micros, balance.held_micros) == (USD - 100 - 1000, 1000)


async def test_hold_batch_places_what_fits_and_reports_the_rest_with_reasons(stub) -> None:
    await grant(stub, "bob", 2500, "g-bob")
    items = [billing_pb2.HoldRequest(account_id="bob", amount_micros=1000, idempotency_key=f"hb{i}") for i in range(3)]
    items.append(billing_pb2.HoldRequest(account_id="bob", amount_micros=-1, idempotency_key="hbx"))
    reply = await stub.HoldBatch(billing_pb2.HoldBatchRequest(items=items), metadata=as_service())
    assert [(i.error_code, i.error_reason) for i in reply.items] == [
        ("", ""), ("", ""), ("FAILED_PRECONDITION", "insufficient_credit"), ("INVALID_ARGUMENT", ""),
    ]  # fmt: skip
    assert [i.result.balance_micros for i in reply.items[:2]] == [1500, 500]
    assert reply.items[0].result.expires_at.seconds > 0
    balance = await stub.AdminGetBalance(billing_pb2.AdminGetBalanceRequest(account_id="bob"), metadata=bearer(ADMIN))
    assert (balance.balance_micros, balance.held_micros) == (500, 2000)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.HoldBatch(billing_pb2.HoldBatchRequest(items=items))  # no service credential
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.HoldBatch(billing_pb2.HoldBatchRequest(), metadata=as_service())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_codes_statement_and_webhook_over_grpc(stub, standin: tuple[str, StandIn]) -> None:
    codes = await stub.CreateCodes(
        billing_pb2.CreateCodesRequest(amount_micros=3 * USD, count=2, idempotency_key="c"), metadata=bearer(ADMIN)
    )
    redeemed = await stub.RedeemCode(
        billing_pb2.RedeemCodeRequest(code=codes.codes[0], idempotency_key="r"), metadata=bearer(USER)
    )
    assert (redeemed.credited_micros, redeemed.balance_micros) == (3 * USD, 3 * USD)
    checkout = await stub.CreateCheckoutSession(
        billing_pb2.CreateCheckoutSessionRequest(
            amount_micros=10 * USD, success_url="https://x/ok", cancel_url="https://x/no", idempotency_key="k"
        ),
        metadata=bearer(USER),
    )
    session = standin[1].sessions[checkout.session_id]
    payload = event("evt_1", "checkout.session.completed", completed(session))
    webhook = httpbody_pb2.HttpBody(content_type="application/json", data=payload)
    reply = await stub.HandleStripeWebhook(webhook, metadata=(("stripe-signature", sign(payload)),))
    assert json.loads(reply.data)["outcome"] == "applied"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.HandleStripeWebhook(webhook, metadata=(("stripe-signature", "t=1,v1=00"),))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    month = datetime.now(UTC).strftime("%Y-%m")
    statement = await stub.GetStatement(
        billing_pb2.GetStatementRequest(month=month, format="csv"), metadata=bearer(USER)
    )
    assert statement.closing_balance_micros == 13 * USD
    assert sorted(e.kind for e in statement.entries) == ["redeem", "topup_card"]
    assert statement.csv.count("\n") == 3


async def test_export_and_erasure_pseudonymize_ledger_under_legal_hold_P5_5(stub, address: str, billing) -> None:
    """P8.1 export of everything; P8.3/P5.2 usage deleted; P5.5 payment and ledger records kept
    with amounts and dates, their link to the person replaced by a keyed pseudonym."""
    await grant(stub, "alice", 2 * USD, "g")
    hold = await stub.Hold(
        billing_pb2.HoldRequest(account_id="alice", amount_micros=USD, idempotency_key="h"), metadata=as_service()
    )
    usage = billing_pb2.Usage(model="gpt-4o-mini", input_tokens=10)
    await stub.Settle(
        billing_pb2.SettleRequest(hold_id=hold.hold_id, actual_micros=5, usage=usage, idempotency_key="s"),
        metadata=as_service(),
    )
    async with grpc.aio.insecure_channel(address) as channel:
        privacy = participant_pb2_grpc.PrivacyParticipantStub(channel)
        subject = common_pb2.SubjectRef(account_id="alice")
        described = await privacy.DescribeData(participant_pb2.DescribeDataRequest(), metadata=as_service())
        strategies = {(f.store, f.field): f.personal.erasure for f in described.fields}
        assert strategies[("billing.usage_records", "account_id")] == data_pb2.ERASURE_STRATEGY_DELETE
        assert strategies[("billing.transfers", "account_id")] == data_pb2.ERASURE_STRATEGY_LEGAL_HOLD
        exported = await privacy.ExportSubject(
            participant_pb2.ExportSubjectRequest(subject=subject), metadata=as_service()
        )
        kinds = sorted(r.message.rsplit(".", 1)[1] for r in exported.records)
        assert kinds == ["LedgerTransferRecord"] * 3 + ["UsageRecord"]
        erase = participant_pb2.EraseSubjectRequest(subject=subject, request_id="req-1")
        first = await privacy.EraseSubject(erase, metadata=as_service())
        again = await privacy.EraseSubject(erase, metadata=as_service())
        assert again.replayed and list(again.actions) == list(first.actions)
        counts = {a.store: (a.strategy, a.count) for a in first.actions}
        assert counts["billing.usage_records"] == (data_pb2.ERASURE_STRATEGY_DELETE, 1)
        assert counts["billing.transfers"] == (data_pb2.ERASURE_STRATEGY_LEGAL_HOLD, 3)
        after = await privacy.ExportSubject(
            participant_pb2.ExportSubjectRequest(subject=subject), metadata=as_service()
        )
        assert list(after.records) == []
    async with billing.engine.connect() as conn:
        for table in METADATA.sorted_tables:
            for row in (await conn.execute(select(table))).all():
                assert "alice" not in " ".join(str(v) for v in row), table.name
        total = (await conn.execute(text("SELECT sum(amount) FROM transfers WHERE kind = 'grant'"))).scalar_one()
    assert total == 2 * USD  # amounts remain
    await assert_invariants(billing.engine)


async def test_lease_draws_over_grpc_keep_the_lease_open_single_and_batched(stub) -> None:
    """Issue 15 (credit leases): Settle and SettleBatch with `lease` take each call's cost from
    the lease and keep it open; the Release returns what is left."""
    await grant(stub, "dora", 2 * USD, "g-dora")
    lease = await stub.Hold(
        billing_pb2.HoldRequest(account_id="dora", amount_micros=USD, ttl_seconds=3600, idempotency_key="dora-l"),
        metadata=as_service(),
    )
    usage = billing_pb2.Usage(model="gpt-4o-mini", input_tokens=10)

    def draw(cost: int, key: str) -> billing_pb2.SettleRequest:
        return billing_pb2.SettleRequest(
            hold_id=lease.hold_id, actual_micros=cost, usage=usage, idempotency_key=key, lease=True
        )

    single = await stub.Settle(draw(100_000, "dora-d1"), metadata=as_service())
    assert (single.charged_micros, single.released_micros, single.balance_micros) == (100_000, 0, USD)
    items = [draw(200_000, "dora-d2"), draw(300_000, "dora-d3"), draw(100_000, "dora-d1")]
    reply = await stub.SettleBatch(billing_pb2.SettleBatchRequest(items=items), metadata=as_service())
    assert [(i.error_code, i.result.charged_micros, i.result.released_micros) for i in reply.items] == [
        ("", 200_000, 0), ("", 300_000, 0), ("", 100_000, 0),
    ]  # fmt: skip
    admin = billing_pb2.AdminGetBalanceRequest(account_id="dora")
    balance = await stub.AdminGetBalance(admin, metadata=bearer(ADMIN))
    assert (balance.balance_micros, balance.held_micros) == (USD, 400_000)  # the lease is open with the rest
    release = billing_pb2.ReleaseRequest(hold_id=lease.hold_id, idempotency_key="dora-r")
    assert (await stub.Release(release, metadata=as_service())).released_micros == 400_000
    balance = await stub.AdminGetBalance(admin, metadata=bearer(ADMIN))
    assert (balance.balance_micros, balance.held_micros) == (1_400_000, 0)
