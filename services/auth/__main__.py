"""`python -m services.auth`: the composition root of the auth service.

`build()` makes every piece from the settings (engine and migrations, Redis, the caches,
the domain, the servicers) and returns them with the `ServiceSpec` the runtime serves;
tests and the benchmark call it too, so they run exactly what production runs. Background
jobs: the revocation listener, the last-used flush and the retention sweeper (P5.3).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from gatemesh.auth.v1 import auth_pb2, auth_pb2_grpc
from gatemesh.privacy.v1 import participant_pb2, participant_pb2_grpc
from services.runtime.background import every
from services.runtime.cache import make_redis, redis_check
from services.runtime.clients import service_channel
from services.runtime.db import database_check, make_engine, migrate
from services.runtime.server import ServiceSpec, run, serve
from services.runtime.telemetry import setup_logging, setup_telemetry

from .credentials import local_authenticator
from .domain import AccountPolicy, Accounts, Hmac, Passwords
from .keycache import KeyCache
from .keys import KeyDefaults, Keys, LeaseTerms
from .leases import ChangeFeed
from .limits import RateLimiter, SignInThrottle
from .participant import AuthParticipant
from .policy_version import PublishedPolicy
from .servicer import AuthServicer
from .settings import AuthSettings
from .store import MIGRATIONS, AuthStore

log = logging.getLogger("gatemesh.auth")

SERVICE_NAMES = [
    auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name,
    participant_pb2.DESCRIPTOR.services_by_name["PrivacyParticipant"].full_name,
]


@dataclass
class AuthApp:
    """Everything the auth service is made of."""

    settings: AuthSettings
    engine: AsyncEngine
    redis: Redis
    store: AuthStore
    cache: KeyCache
    accounts: Accounts
    keys: Keys
    spec: ServiceSpec


async def build(settings: AuthSettings) -> AuthApp:
    engine = make_engine(settings.database_url())
    await migrate(engine, MIGRATIONS, "auth")
    redis = make_redis(settings.redis_url, cluster=settings.redis_cluster)
    store = AuthStore(engine)
    hmac_of = Hmac(settings.secret("key_hmac_secret"))
    feed = ChangeFeed(settings.auth_watch_heartbeat_s)
    cache = KeyCache(redis, settings.auth_local_cache_ttl_s, settings.auth_key_cache_ttl_s, feed=feed)
    throttle = SignInThrottle(
        redis,
        settings.secret("key_hmac_secret"),
        settings.auth_signin_max_failures_account,
        settings.auth_signin_max_failures_ip,
        settings.auth_signin_window_s,
    )
    passwords = Passwords(
        settings.auth_argon2_time_cost, settings.auth_argon2_memory_kib, settings.auth_argon2_parallelism
    )
    privacy_channel = service_channel(settings.privacy_addr, settings)
    published = PublishedPolicy(privacy_channel, settings.auth_policy_version, settings.auth_policy_cache_s)
    policy = AccountPolicy(
        settings.auth_policy_version,
        settings.auth_session_ttl_s,
        settings.auth_security_log_retention_days,
        published,
    )
    accounts = Accounts(store, passwords, hmac_of, throttle, policy, cache.revoke, cache.invalidate)
    keys = Keys(
        store,
        cache,
        RateLimiter(redis),
        hmac_of,
        KeyDefaults(settings.auth_default_rpm, settings.auth_default_tpm),
        accounts.log,
        LeaseTerms(settings.auth_rate_lease_parts, settings.auth_rate_lease_ahead_s),
    )
    authenticate = local_authenticator(accounts, keys, settings.secret("admin_token"))
    servicer = AuthServicer(accounts, keys, authenticate)
    participant = AuthParticipant(accounts, cache)

    def register(server: grpc.aio.Server) -> None:
        auth_pb2_grpc.add_AuthServiceServicer_to_server(servicer, server)
        participant_pb2_grpc.add_PrivacyParticipantServicer_to_server(participant, server)

    async def close() -> None:
        await keys.flush_last_used()
        await redis.aclose()
        await privacy_channel.close()
        await engine.dispose()

    spec = ServiceSpec(
        name="auth",
        register=register,
        service_names=SERVICE_NAMES,
        authenticator=authenticate,
        cleanups=[close],
        dependencies=[
            database_check(engine),
            *redis_check(settings.redis_url, settings.health_timeout_s, settings.redis_cluster),
        ],
        background=[
            cache.listen,
            every(settings.auth_last_used_flush_s, keys.flush_last_used, "last-used flush", log),
            every(settings.auth_sweep_interval_s, accounts.sweep, "retention sweep", log),
        ],
    )
    return AuthApp(settings, engine, redis, store, cache, accounts, keys, spec)


async def main() -> None:
    settings = AuthSettings()
    setup_logging("auth", settings.log_level)
    setup_telemetry("auth")
    app = await build(settings)
    await serve(app.spec, settings, settings.listen or settings.auth_addr)


if __name__ == "__main__":
    run(main)
