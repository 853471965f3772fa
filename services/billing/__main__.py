"""`python -m services.billing`: the composition root of the billing service.

Builds the engine (and migrates), the price table, the card processor client and the chain
watcher when configured, the servicers, and the background sweepers (expired holds,
retention), then serves until SIGTERM.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from gatemesh.auth.v1 import auth_pb2, auth_pb2_grpc
from gatemesh.billing.v1 import billing_pb2_grpc
from gatemesh.privacy.v1 import participant_pb2_grpc
from services.runtime import metrics
from services.runtime.authn import remote_authenticator
from services.runtime.background import every
from services.runtime.clients import service_channel
from services.runtime.db import database_check, make_engine, migrate
from services.runtime.errors import Unavailable
from services.runtime.server import ServiceSpec, run, serve
from services.runtime.telemetry import setup_logging, setup_telemetry

from .cards import CardTopups
from .chain import ChainDeposits, Token, address_deriver
from .domain import Billing
from .participant import BillingParticipant
from .prices import PriceTable
from .servicer import BillingServicer
from .settings import BillingSettings
from .sqlstore import open_holds

log = logging.getLogger("gatemesh.billing")
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def auth_opt_outs(channel: grpc.aio.Channel) -> Callable[[], Awaitable[set[str]]]:
    """The accounts that opted out of analytics (P7.3), asked of auth at each use."""
    stub = auth_pb2_grpc.AuthServiceStub(channel)

    async def opt_outs() -> set[str]:
        try:
            reply = await stub.ListAnalyticsOptOuts(auth_pb2.ListAnalyticsOptOutsRequest(), timeout=10)
        except grpc.aio.AioRpcError:
            raise Unavailable("the auth service is not available to list analytics opt-outs") from None
        return set(reply.account_ids)

    return opt_outs


def build_cards(settings: BillingSettings, billing: Billing) -> CardTopups | None:
    if settings.billing_stripe_api_key is None or settings.billing_stripe_webhook_secret is None:
        return None
    return CardTopups(
        billing,
        settings.secret("billing_stripe_api_key"),
        settings.secret("billing_stripe_webhook_secret"),
        api_base=settings.billing_stripe_api_base,
        tolerance_s=settings.billing_stripe_tolerance_s,
        min_micros=settings.billing_checkout_min_micros,
        max_micros=settings.billing_checkout_max_micros,
    )


def build_chain(settings: BillingSettings, billing: Billing) -> ChainDeposits | None:
    deriver = address_deriver(settings.secret("billing_deposit_mnemonic"), settings.billing_deposit_xpub)
    if deriver is None:
        return None
    w3 = None
    if settings.billing_chain_rpc_url:
        from web3 import Web3

        w3 = Web3(Web3.HTTPProvider(settings.billing_chain_rpc_url, request_kwargs={"timeout": 30}))
    return ChainDeposits(
        billing,
        w3,
        settings.billing_chain_id,
        [Token.parse(t) for t in settings.billing_chain_tokens],
        deriver,
        confirmations=settings.billing_chain_confirmations,
        max_block_range=settings.billing_chain_max_block_range,
        start_block=settings.billing_chain_start_block,
    )


async def main() -> None:
    settings = BillingSettings()
    setup_logging("billing", settings.log_level)
    setup_telemetry("billing")
    engine = make_engine(settings.database_url(), pool_size=settings.billing_db_pool_size)
    await migrate(engine, MIGRATIONS, "billing")
    auth_channel = service_channel(settings.auth_addr, settings)
    billing = Billing(
        engine,
        PriceTable.from_config(settings.prices),
        settings.secret("key_hmac_secret"),
        hold_ttl_s=settings.billing_hold_ttl_s,
        hold_max_ttl_s=settings.billing_hold_max_ttl_s,
        opt_outs=auth_opt_outs(auth_channel),
        stats_min_accounts=settings.billing_stats_min_accounts,
        idempotency_ttl_days=settings.billing_idempotency_ttl_days,
    )
    cards, chain = build_cards(settings, billing), build_chain(settings, billing)
    servicer = BillingServicer(billing, cards, chain, settings.billing_usage_retention_days)
    participant = BillingParticipant(billing, settings.secret("key_hmac_secret"))

    def register(server: grpc.aio.Server) -> None:
        billing_pb2_grpc.add_BillingServiceServicer_to_server(servicer, server)
        participant_pb2_grpc.add_PrivacyParticipantServicer_to_server(participant, server)

    async def retention() -> None:
        await billing.retention_sweep(settings.billing_usage_retention_days)

    background = [
        every(settings.billing_sweep_interval_s, billing.expire_holds, "hold sweeper", log),
        every(settings.billing_retention_interval_s, retention, "retention sweep", log),
    ]
    if chain is not None and chain.w3 is not None:
        background.append(lambda: chain.run_forever(settings.billing_chain_poll_s))

    async def measure_holds() -> None:
        count, amount = await open_holds(engine)
        metrics.HOLDS_OUTSTANDING.set(count)
        metrics.HOLDS_OUTSTANDING_MICROS.set(amount)

    metrics.add_probe("open_holds", measure_holds)

    async def close() -> None:
        await auth_channel.close()
        await engine.dispose()

    spec = ServiceSpec(
        name="billing",
        register=register,
        service_names=["gatemesh.billing.v1.BillingService", "gatemesh.privacy.v1.PrivacyParticipant"],
        authenticator=remote_authenticator(settings, auth_channel),
        cleanups=[close],
        background=background,
        dependencies=[database_check(engine)],
    )
    await serve(spec, settings, settings.listen or settings.billing_addr)


if __name__ == "__main__":
    run(main)
