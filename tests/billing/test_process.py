"""`python -m services.billing` as a real process: migrates PostgreSQL at startup, reads the
price table and the chain settings from the environment, and serves the hot path."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc

from gatemesh.billing.v1 import billing_pb2, billing_pb2_grpc
from services.runtime.access import SERVICE_TOKEN_HEADER
from services.runtime.clients import client_options
from services.runtime.settings import GatemeshSettings
from tests.support import free_port, service_process

from .test_chain import MNEMONIC


async def test_service_process_starts_with_prices_and_chain_config_and_serves_hold_settle(
    pg_database, tmp_path
) -> None:
    url = await pg_database("billing_proc")
    address = f"127.0.0.1:{free_port()}"
    env = {
        "GATEMESH_BILLING_DATABASE_URL": url,
        "GATEMESH_LISTEN": address,
        "GATEMESH_DATA_DIR": str(tmp_path),
        "GATEMESH_SERVICE_TOKEN": "svc",
        "GATEMESH_ADMIN_TOKEN": "adm",
        "GATEMESH_KEY_HMAC_SECRET": "secret",
        "GATEMESH_PRICES": json.dumps({"m": {"input_per_mtok_usd": "1.5", "output_per_mtok_usd": 3}}),
        "GATEMESH_BILLING_DEPOSIT_MNEMONIC": MNEMONIC,
        "GATEMESH_BILLING_CHAIN_TOKENS": json.dumps([{"symbol": "USDC", "contract": "0x" + "ab" * 20, "decimals": 6}]),
    }
    service = (("x-gatemesh-service-token", "svc"),)
    admin = (("authorization", "Bearer adm"),)
    assert service[0][0] == SERVICE_TOKEN_HEADER
    with service_process("services.billing", env, address, tmp_path / "billing.log"):
        async with grpc.aio.insecure_channel(address) as channel:
            stub = billing_pb2_grpc.BillingServiceStub(channel)
            prices = await stub.ListPrices(billing_pb2.ListPricesRequest())
            assert [(p.model, p.input_per_mtok_micros, p.output_per_mtok_micros) for p in prices.prices] == [
                ("m", 1_500_000, 3_000_000)
            ]
            await stub.GrantCredits(
                billing_pb2.GrantCreditsRequest(account_id="p1", amount_micros=10**6, idempotency_key="g"),
                metadata=admin,
            )
            hold = await stub.Hold(
                billing_pb2.HoldRequest(account_id="p1", amount_micros=1000, idempotency_key="h"), metadata=service
            )
            usage = billing_pb2.Usage(model="m", input_tokens=100, output_tokens=100)
            settled = await stub.Settle(
                billing_pb2.SettleRequest(hold_id=hold.hold_id, usage=usage, idempotency_key="s"), metadata=service
            )
            assert settled.charged_micros == 450 and settled.balance_micros == 10**6 - 450
    assert "Traceback" not in (tmp_path / "billing.log").read_text()


def established(port: int) -> int:
    """Established TCP connections to a local port, from /proc/net (gRPC's sockets may be
    IPv6 ones carrying IPv4 addresses)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[2].endswith(f":{port:04X}") and fields[3] == "01":
                count += 1
    return count


async def test_an_extra_instance_shares_the_calls_and_leaves_background_jobs_to_the_first(
    pg_database, tmp_path
) -> None:
    """Billing scales out: a second process on the same database, started with
    GATEMESH_RUN_BACKGROUND=false, answers calls but runs no sweeper; a client whose target
    lists both instances connects to each and keeps working when one stops."""
    url = await pg_database("billing_scale")
    ports = [free_port(), free_port()]
    base = {
        "GATEMESH_BILLING_DATABASE_URL": url,
        "GATEMESH_DATA_DIR": str(tmp_path),
        "GATEMESH_SERVICE_TOKEN": "svc",
        "GATEMESH_ADMIN_TOKEN": "adm",
        "GATEMESH_KEY_HMAC_SECRET": "secret",
        "GATEMESH_PRICES": json.dumps({"m": {"input_per_mtok_usd": 1, "output_per_mtok_usd": 1}}),
        "GATEMESH_BILLING_SWEEP_INTERVAL_S": "0.2",
    }
    service, admin = (("x-gatemesh-service-token", "svc"),), (("authorization", "Bearer adm"),)
    extra = {**base, "GATEMESH_LISTEN": f"127.0.0.1:{ports[1]}", "GATEMESH_RUN_BACKGROUND": "false"}
    first = {**base, "GATEMESH_LISTEN": f"127.0.0.1:{ports[0]}"}
    target = f"ipv4:127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}"
    held = billing_pb2.AdminGetBalanceRequest(account_id="scale")
    with service_process("services.billing", extra, f"127.0.0.1:{ports[1]}", tmp_path / "extra.log"):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ports[1]}") as channel:
            stub = billing_pb2_grpc.BillingServiceStub(channel)
            grant = billing_pb2.GrantCreditsRequest(account_id="scale", amount_micros=10**6, idempotency_key="g")
            await stub.GrantCredits(grant, metadata=admin)
            hold = billing_pb2.HoldRequest(account_id="scale", amount_micros=1000, ttl_seconds=1, idempotency_key="h")
            await stub.Hold(hold, metadata=service)
            await asyncio.sleep(2.0)  # expired; the extra instance's sweeper would have released it by now
            assert (await stub.AdminGetBalance(held, metadata=admin)).held_micros == 1000
        options = client_options(GatemeshSettings())
        with service_process("services.billing", first, f"127.0.0.1:{ports[0]}", tmp_path / "first.log") as one:
            channel = grpc.aio.insecure_channel(target, options=options)
            stub = billing_pb2_grpc.BillingServiceStub(channel)
            for _ in range(10):
                await stub.AdminGetBalance(held, metadata=admin)
            assert established(ports[0]) >= 1 and established(ports[1]) >= 1  # one channel, both instances
            for _ in range(50):  # the first instance runs the sweeper
                if (await stub.AdminGetBalance(held, metadata=admin)).held_micros == 0:
                    break
                await asyncio.sleep(0.1)
            assert (await stub.AdminGetBalance(held, metadata=admin)).held_micros == 0
            one.terminate()
            one.wait(timeout=20)
            for _ in range(10):  # the first instance is gone: the extra one answers every call
                assert (await stub.AdminGetBalance(held, metadata=admin, timeout=5)).balance_micros == 10**6
            await channel.close()
