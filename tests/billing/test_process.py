"""`python -m services.billing` as a real process: migrates PostgreSQL at startup, reads the
price table and the chain settings from the environment, and serves the hot path."""

from __future__ import annotations

import json

import grpc

from gatemesh.billing.v1 import billing_pb2, billing_pb2_grpc
from services.runtime.access import SERVICE_TOKEN_HEADER
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
