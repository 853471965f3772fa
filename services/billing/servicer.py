"""The gRPC entrypoint of billing: proto <-> domain only.

USER methods act on the caller's own account (`principal().account_id`); ADMIN methods name
the account. Failures are raised as DomainErrors, which the shared interceptor maps to a
status with details; no method returns an empty message on failure.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import grpc
from google.api import httpbody_pb2

from gatemesh.billing.v1 import billing_pb2, billing_pb2_grpc
from services.runtime.access import principal
from services.runtime.errors import InvalidArgument, Unauthenticated, batch_item
from services.runtime.timestamps import from_timestamp, to_timestamp
from services.runtime.validation import each_alone

from .cards import CardTopups
from .chain import ChainDeposits
from .domain import Billing, HoldIn, HoldResult, ReleaseIn, ReleaseResult, SettleIn, SettleResult, UsageIn, UsageQuery
from .model import not_offered
from .participant import usage_record


def usage_in(usage: billing_pb2.Usage) -> UsageIn:
    return UsageIn(
        model=usage.model,
        key_id=usage.key_id,
        provider=usage.provider,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        status=usage.status or "ok",
        latency_ms=usage.latency_ms,
        started_at=from_timestamp(usage.started_at),
        tokens_estimated=usage.tokens_estimated,
    )


def check_batch_size(count: int) -> None:
    if not 0 < count <= 1000:
        raise InvalidArgument("a batch holds 1 to 1000 items", field_violations={"items": "1 to 1000 items"})


def hold_in(request: billing_pb2.HoldRequest) -> HoldIn:
    return HoldIn(
        request.account_id,
        request.amount_micros,
        request.ttl_seconds,
        request.idempotency_key,
        request.key_id,
        request.key_spend_cap_micros,
    )


def hold_response(r: HoldResult) -> billing_pb2.HoldResponse:
    expires = to_timestamp(datetime.fromisoformat(r.expires_at))
    return billing_pb2.HoldResponse(
        hold_id=r.hold_id, amount_micros=r.amount_micros, expires_at=expires, balance_micros=r.balance_micros
    )


def settle_in(request: billing_pb2.SettleRequest) -> SettleIn:
    return SettleIn(
        request.hold_id, request.actual_micros, usage_in(request.usage), request.idempotency_key, request.lease
    )


def settle_response(r: SettleResult) -> billing_pb2.SettleResponse:
    return billing_pb2.SettleResponse(**vars(r))


def release_in(request: billing_pb2.ReleaseRequest) -> ReleaseIn:
    usage = usage_in(request.usage) if request.HasField("usage") else None
    return ReleaseIn(request.hold_id, request.idempotency_key, usage)


def release_response(r: ReleaseResult) -> billing_pb2.ReleaseResponse:
    return billing_pb2.ReleaseResponse(released_micros=r.released_micros, balance_micros=r.balance_micros)


def caller_account() -> str:
    account = principal().account_id
    if not account:
        raise Unauthenticated("this method needs an account's credential")
    return account


def usage_query(account_id: str, request: billing_pb2.ListUsageRequest) -> UsageQuery:
    return UsageQuery(
        account_id=account_id,
        since=from_timestamp(request.since),
        until=from_timestamp(request.until),
        model=request.model,
        key_id=request.key_id,
        page_size=request.page.page_size,
        page_token=request.page.page_token,
    )


def daily(rows: list[Any]) -> list[billing_pb2.DailyModelStats]:
    return [
        billing_pb2.DailyModelStats(
            day=r.day,
            model=r.model,
            requests=r.requests,
            input_tokens=r.input_tokens,
            output_tokens=r.output_tokens,
            cost_micros=r.cost_micros,
        )
        for r in rows
    ]


class BillingServicer(billing_pb2_grpc.BillingServiceServicer):
    def __init__(
        self,
        billing: Billing,
        cards: CardTopups | None = None,
        chain: ChainDeposits | None = None,
        retention_days: int = 365,
    ) -> None:
        self.billing = billing
        self.cards = cards
        self.chain = chain
        self.retention_days = retention_days

    async def Hold(
        self, request: billing_pb2.HoldRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.HoldResponse:
        item = hold_in(request)
        r = await self.billing.hold(
            item.account_id, item.amount, item.ttl_s, item.idempotency_key, item.key_id, item.key_cap
        )
        return hold_response(r)

    async def HoldBatch(
        self, request: billing_pb2.HoldBatchRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.HoldBatchResponse:
        check_batch_size(len(request.items))
        results = await each_alone(request.items, hold_in, self.billing.hold_batch)
        return billing_pb2.HoldBatchResponse(
            items=[batch_item(billing_pb2.HoldBatchItem, r, hold_response) for r in results]
        )

    async def Settle(
        self, request: billing_pb2.SettleRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.SettleResponse:
        return settle_response(await self.billing.settle(settle_in(request)))

    async def SettleBatch(
        self, request: billing_pb2.SettleBatchRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.SettleBatchResponse:
        check_batch_size(len(request.items))
        results = await each_alone(request.items, settle_in, self.billing.settle_batch)
        return billing_pb2.SettleBatchResponse(
            items=[batch_item(billing_pb2.SettleBatchItem, r, settle_response) for r in results]
        )

    async def Release(
        self, request: billing_pb2.ReleaseRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.ReleaseResponse:
        item = release_in(request)
        return release_response(await self.billing.release(item.hold_id, item.idempotency_key, item.usage))

    async def ReleaseBatch(
        self, request: billing_pb2.ReleaseBatchRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.ReleaseBatchResponse:
        check_batch_size(len(request.items))
        results = await each_alone(request.items, release_in, self.billing.release_batch)
        return billing_pb2.ReleaseBatchResponse(
            items=[batch_item(billing_pb2.ReleaseBatchItem, r, release_response) for r in results]
        )

    async def Quote(
        self, request: billing_pb2.QuoteRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.QuoteResponse:
        at = from_timestamp(request.at)
        cost, price = self.billing.quote(request.model, request.input_tokens, request.output_tokens, at)
        return billing_pb2.QuoteResponse(
            cost_micros=cost,
            input_per_mtok_micros=price.input_per_mtok_micros,
            output_per_mtok_micros=price.output_per_mtok_micros,
        )

    async def ListPrices(
        self, request: billing_pb2.ListPricesRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.ListPricesResponse:
        prices = [
            billing_pb2.ModelPrice(
                model=p.model,
                input_per_mtok_micros=p.input_per_mtok_micros,
                output_per_mtok_micros=p.output_per_mtok_micros,
                effective_from=to_timestamp(p.effective_from),
            )
            for p in self.billing.prices.all()
        ]
        return billing_pb2.ListPricesResponse(prices=prices)

    async def _balance(self, account_id: str) -> billing_pb2.GetBalanceResponse:
        b = await self.billing.balance(account_id)
        return billing_pb2.GetBalanceResponse(
            account_id=b.account_id, balance_micros=b.balance_micros, held_micros=b.held_micros
        )

    async def GetBalance(
        self, request: billing_pb2.GetBalanceRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.GetBalanceResponse:
        return await self._balance(caller_account())

    async def AdminGetBalance(
        self, request: billing_pb2.AdminGetBalanceRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.GetBalanceResponse:
        return await self._balance(request.account_id)

    async def _usage(self, query: UsageQuery) -> billing_pb2.ListUsageResponse:
        page = await self.billing.list_usage(query)
        return billing_pb2.ListUsageResponse(
            records=[usage_record(r) for r in page.records],
            page={"next_page_token": page.next_page_token},
        )

    async def ListUsage(
        self, request: billing_pb2.ListUsageRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.ListUsageResponse:
        return await self._usage(usage_query(caller_account(), request))

    async def AdminListUsage(
        self, request: billing_pb2.AdminListUsageRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.ListUsageResponse:
        return await self._usage(usage_query(request.account_id, request.filter))

    async def GetUsageStats(
        self, request: billing_pb2.GetUsageStatsRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.GetUsageStatsResponse:
        since, until = from_timestamp(request.since), from_timestamp(request.until)
        rows = await self.billing.usage_stats(caller_account(), since, until)
        return billing_pb2.GetUsageStatsResponse(days=daily(rows))

    async def GetAggregateStats(
        self, request: billing_pb2.GetAggregateStatsRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.GetAggregateStatsResponse:
        rows = await self.billing.aggregate_stats(from_timestamp(request.since), from_timestamp(request.until))
        return billing_pb2.GetAggregateStatsResponse(days=daily(rows))

    async def GetStatement(
        self, request: billing_pb2.GetStatementRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.GetStatementResponse:
        if request.format not in ("", "json", "csv"):
            raise InvalidArgument("unknown format", field_violations={"format": "json or csv"})
        s = await self.billing.statement(caller_account(), request.month)
        entries = [
            billing_pb2.LedgerEntry(
                transfer_id=e.transfer_id,
                kind=e.kind,
                amount_micros=e.amount_micros,
                created_at=to_timestamp(e.created_at),
                reference=e.reference,
            )
            for e in s.entries
        ]
        return billing_pb2.GetStatementResponse(
            month=s.month,
            opening_balance_micros=s.opening_balance_micros,
            closing_balance_micros=s.closing_balance_micros,
            entries=entries,
            csv=s.csv() if request.format == "csv" else "",
        )

    async def GrantCredits(
        self, request: billing_pb2.GrantCreditsRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.GrantCreditsResponse:
        r = await self.billing.grant(request.account_id, request.amount_micros, request.reason, request.idempotency_key)
        return billing_pb2.GrantCreditsResponse(transfer_id=r.transfer_id, balance_micros=r.balance_micros)

    async def Refund(
        self, request: billing_pb2.RefundRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.RefundResponse:
        r = await self.billing.refund(
            request.transfer_id, request.amount_micros, request.reason, request.idempotency_key
        )
        return billing_pb2.RefundResponse(
            transfer_id=r.transfer_id, balance_micros=r.balance_micros, refunded_micros=r.amount_micros
        )

    async def CreateCodes(
        self, request: billing_pb2.CreateCodesRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.CreateCodesResponse:
        r = await self.billing.create_codes(
            request.amount_micros, request.count, from_timestamp(request.expires_at), request.idempotency_key
        )
        return billing_pb2.CreateCodesResponse(batch_id=r.batch_id, codes=r.codes)

    async def RedeemCode(
        self, request: billing_pb2.RedeemCodeRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.RedeemCodeResponse:
        r = await self.billing.redeem(caller_account(), request.code, request.idempotency_key)
        return billing_pb2.RedeemCodeResponse(credited_micros=r.amount_micros, balance_micros=r.balance_micros)

    async def RunRetentionSweep(
        self, request: billing_pb2.RunRetentionSweepRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.RunRetentionSweepResponse:
        days = request.retention_days or self.retention_days
        deleted, aggregated = await self.billing.retention_sweep(days)
        expired = await self.billing.expire_holds()
        return billing_pb2.RunRetentionSweepResponse(
            deleted_usage_records=deleted, aggregated_rows=aggregated, expired_holds=expired
        )

    async def CreateCheckoutSession(
        self, request: billing_pb2.CreateCheckoutSessionRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.CreateCheckoutSessionResponse:
        if self.cards is None:
            raise not_offered("card top-ups")
        r = await self.cards.create_checkout(
            caller_account(), request.amount_micros, request.success_url, request.cancel_url, request.idempotency_key
        )
        return billing_pb2.CreateCheckoutSessionResponse(session_id=r.session_id, url=r.url)

    async def HandleStripeWebhook(
        self, request: httpbody_pb2.HttpBody, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        signature = metadata.get("stripe-signature", "")
        if not signature:
            raise InvalidArgument("missing Stripe-Signature header", field_violations={"stripe-signature": "required"})
        if self.cards is None:
            raise not_offered("card top-ups")
        outcome = await self.cards.handle_webhook(request.data, signature)
        body = f'{{"received": true, "outcome": "{outcome}"}}'.encode()
        return httpbody_pb2.HttpBody(content_type="application/json", data=body)

    async def GetDepositAddress(
        self, request: billing_pb2.GetDepositAddressRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.GetDepositAddressResponse:
        if self.chain is None:
            raise not_offered("on-chain top-ups")
        address = await self.chain.deposit_address(caller_account(), request.chain_id)
        tokens = [
            billing_pb2.DepositToken(symbol=t.symbol, contract=t.contract, decimals=t.decimals)
            for t in self.chain.token_list()
        ]
        return billing_pb2.GetDepositAddressResponse(
            address=address, chain_id=self.chain.chain_id, tokens=tokens, confirmations=self.chain.confirmations
        )
