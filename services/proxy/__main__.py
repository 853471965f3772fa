"""`python -m services.proxy`: the composition root of the proxy service.

`build()` makes every piece from the settings (request-log engine and migrations, the
channels to auth and billing, the providers, the gateway, the servicers) and returns them
with the `ServiceSpec` the runtime serves; tests call it too, so they run exactly what
production runs. `main()` first checks the routing configuration (`checks`: warnings by
setting, refusal when nothing could be called) and warns of price mistakes once the
price list has arrived. Background jobs: the price refresher, the request-log writer, the
retention sweeper (P5.2), the follower of auth's key-change stream (key leases) and, with a
Redis server, the settle outbox's replay.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from gatemesh.privacy.v1 import participant_pb2, participant_pb2_grpc
from gatemesh.proxy.v1 import proxy_pb2, proxy_pb2_grpc
from services.runtime import metrics
from services.runtime.access import SERVICE_TOKEN_HEADER
from services.runtime.background import every
from services.runtime.cache import make_redis, redis_check
from services.runtime.clients import client_credentials, client_options, service_channel
from services.runtime.db import database_check, make_engine, migrate
from services.runtime.server import ServiceSpec, run, serve
from services.runtime.telemetry import setup_logging, setup_telemetry, traces_exported

from . import store
from .adapters import KeyChangeWatcher, Metadata, PriceCache, RemoteGatekeeper, RemoteLedger
from .checks import check_routing, price_findings
from .credit import CreditLeases, CreditTerms
from .gateway import Gateway
from .known_keys import KnownKeys
from .leases import Leases
from .model import Limits
from .outbox import SettleOutbox
from .participant import ProxyParticipant
from .router import Router
from .servicer import ProxyServicer
from .settings import ProxySettings
from .tokens import TokenCounter

log = logging.getLogger("gatemesh.proxy")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SERVICE_NAMES = [
    proxy_pb2.DESCRIPTOR.services_by_name["ProxyService"].full_name,
    participant_pb2.DESCRIPTOR.services_by_name["PrivacyParticipant"].full_name,
]
SWEEP_INTERVAL_S = 6 * 3600


@dataclass
class ProxyApp:
    """Everything the proxy service is made of."""

    settings: ProxySettings
    engine: AsyncEngine
    gateway: Gateway
    writer: store.RequestLogWriter
    spec: ServiceSpec
    watcher: KeyChangeWatcher


def hot_path_channel(target: str, settings: ProxySettings) -> tuple[grpc.aio.Channel, Metadata]:
    """A channel to auth or billing, and the metadata each call must carry. While traces are
    exported it is the runtime's traced service channel; otherwise a channel without Python
    interceptors (their per-call cost exceeds the call's), and the service credential is
    sent as per-call metadata."""
    if traces_exported():
        return service_channel(target, settings), ()
    options, credentials = client_options(settings), client_credentials(settings)
    if credentials is None:
        channel = grpc.aio.insecure_channel(target, options=options)
    else:
        channel = grpc.aio.secure_channel(target, credentials, options=options)
    return channel, ((SERVICE_TOKEN_HEADER, settings.secret("service_token")),)


async def build(settings: ProxySettings) -> ProxyApp:
    engine = make_engine(settings.proxy_database_url or settings.sqlite_url("proxy"))
    await migrate(engine, MIGRATIONS, "proxy")
    auth_channel, metadata = hot_path_channel(settings.auth_addr, settings)
    billing_channel, _ = hot_path_channel(settings.billing_addr, settings)
    router = Router.from_settings(settings)
    writer = store.RequestLogWriter(
        engine, settings.proxy_log_flush_s, settings.proxy_log_batch, settings.proxy_log_queue_max
    )
    ledger = RemoteLedger(
        billing_channel,
        settings.proxy_rpc_timeout_s,
        settings.proxy_price_refresh_s,
        settings.proxy_hold_ttl_s,
        settings.proxy_batch_calls,
        metadata,
        settings.proxy_settle_linger_s,
    )
    redis = None
    if settings.redis_url:  # the outbox's own connection: its write is on the answer's path
        redis = make_redis(settings.redis_url, cluster=settings.redis_cluster, dedicated=True)
        ledger.outbox = SettleOutbox(redis, settings.proxy_outbox_stale_s, settings.proxy_outbox_write_timeout_s)
    limits = Limits(settings.proxy_max_output_tokens, settings.proxy_model_max_output_tokens, settings.proxy_hold_ttl_s)
    counter = TokenCounter(settings.proxy_tokenizer)
    known_keys = KnownKeys(settings.proxy_known_keys)
    leases = Leases(settings.proxy_key_leases)
    gateway = Gateway(router, None, ledger, writer, counter, limits, known_keys, leases)  # type: ignore[arg-type]  # set below: it needs the gateway's task set
    gateway.credit = credit_leases(settings, ledger, gateway)
    watcher = KeyChangeWatcher(auth_channel, leases, metadata)
    gateway.gatekeeper = RemoteGatekeeper(
        auth_channel,
        settings.proxy_rpc_timeout_s,
        gateway.tasks,
        settings.proxy_report_tokens_s,
        metadata,
        settings.proxy_batch_calls,
    )
    participant = ProxyParticipant(engine, writer)
    metrics.breaker_gauge(lambda: [(p.name, p.breaker.state) for p in router.providers])
    if ledger.outbox is not None:
        metrics.add_probe("settle_outbox", ledger.outbox.measure)

    def register(server: grpc.aio.Server) -> None:
        proxy_pb2_grpc.add_ProxyServiceServicer_to_server(ProxyServicer(gateway), server)
        participant_pb2_grpc.add_PrivacyParticipantServicer_to_server(participant, server)

    async def retention() -> None:
        await store.sweep(engine, settings.proxy_log_retention_days)

    sweeper = every(SWEEP_INTERVAL_S, retention, "request-log retention sweep", log)

    async def cleanup() -> None:
        if gateway.credit is not None:
            gateway.credit.close()  # each lease goes back once its calls are settled
        await gateway.tasks.drain()
        await writer.flush()
        await router.close()
        await auth_channel.close()
        await billing_channel.close()
        await engine.dispose()
        if ledger.outbox is not None:
            await ledger.outbox.close()
        if redis is not None:
            await redis.aclose()

    spec = ServiceSpec(
        name="proxy",
        register=register,
        service_names=SERVICE_NAMES,
        cleanups=[cleanup],
        dependencies=[
            database_check(engine),
            *redis_check(settings.redis_url, settings.health_timeout_s, settings.redis_cluster),
        ],
        background=[
            ledger.prices.run,
            lambda: check_prices(settings, ledger.prices),
            writer.run,
            sweeper,
            watcher.run,
            *outbox_replay(ledger),
            *([gateway.credit.run] if gateway.credit is not None else []),
        ],
    )
    return ProxyApp(settings, engine, gateway, writer, spec, watcher)


def credit_leases(settings: ProxySettings, ledger: RemoteLedger, gateway: Gateway) -> CreditLeases | None:
    """The proxy's credit leases, unless turned off."""
    if not settings.proxy_credit_leases or not settings.proxy_credit_lease_max_micros:
        return None
    terms = CreditTerms(
        calls=settings.proxy_credit_lease_calls,
        max_micros=settings.proxy_credit_lease_max_micros,
        share=settings.proxy_credit_lease_share,
        max_age_s=settings.proxy_credit_lease_age_s,
        idle_s=settings.proxy_credit_lease_idle_s,
        retry_s=settings.proxy_credit_lease_retry_s,
        call_ttl_s=settings.proxy_hold_ttl_s,
    )
    return CreditLeases(ledger, terms, gateway.tasks.spawn)


def outbox_replay(ledger: RemoteLedger) -> list[Callable[[], Coroutine[Any, Any, None]]]:
    outbox = ledger.outbox
    return [] if outbox is None else [lambda: outbox.run(ledger.resend)]


def check_configuration(settings: ProxySettings) -> None:
    """Warn of each routing mistake by its setting; refuse to start when nothing could be
    called (see checks)."""
    findings, fatal = check_routing(settings.providers, settings.model_aliases, os.environ)
    for finding in findings:
        log.warning("configuration: %s", finding)
    if fatal:
        raise SystemExit(f"gatemesh proxy: {fatal}")


async def check_prices(settings: ProxySettings, prices: PriceCache) -> None:
    """Background job, once: warn of served models without a price and prices nobody serves."""
    await prices.fetched.wait()
    for finding in price_findings(settings.providers, prices.models()):
        log.warning("configuration: %s", finding)


async def main() -> None:
    settings = ProxySettings()
    setup_logging("proxy", settings.log_level)
    setup_telemetry("proxy")
    check_configuration(settings)
    app = await build(settings)
    await serve(app.spec, settings, settings.listen or settings.proxy_addr)


if __name__ == "__main__":
    run(main)
