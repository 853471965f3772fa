"""End to end with the real auth service: auth and billing as processes on PostgreSQL, the
operator CLI turning emails into accounts, and a signed-in user reaching billing's USER
methods through auth's Authenticate."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from gatemesh.auth.v1 import auth_pb2, auth_pb2_grpc
from gatemesh.billing.v1 import billing_pb2, billing_pb2_grpc
from tests.support import free_port, service_process

pytestmark = pytest.mark.e2e
PASSWORD = "a long enough password"


@pytest.fixture
async def env(pg_database, tmp_path: Path) -> dict[str, str]:
    return {
        "GATEMESH_AUTH_DATABASE_URL": await pg_database("e2e_auth"),
        "GATEMESH_BILLING_DATABASE_URL": await pg_database("e2e_billing"),
        "GATEMESH_AUTH_ADDR": f"127.0.0.1:{free_port()}",
        "GATEMESH_BILLING_ADDR": f"127.0.0.1:{free_port()}",
        "GATEMESH_DATA_DIR": str(tmp_path),
        "GATEMESH_SERVICE_TOKEN": "e2e-service",
        "GATEMESH_ADMIN_TOKEN": "e2e-admin",
        "GATEMESH_KEY_HMAC_SECRET": "e2e-secret",
        "GATEMESH_AUTH_ARGON2_MEMORY_KIB": "8192",
        "GATEMESH_AUTH_ARGON2_TIME_COST": "1",
        "GATEMESH_BILLING_STATS_MIN_ACCOUNTS": "1",
        "GATEMESH_PRICES": '{"gpt-4o-mini": {"input_per_mtok_usd": 0.15, "output_per_mtok_usd": 0.6}}',
    }


@pytest.fixture
def mesh(env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, str]]:
    with (
        service_process("services.auth", env, env["GATEMESH_AUTH_ADDR"], tmp_path / "auth.log"),
        service_process("services.billing", env, env["GATEMESH_BILLING_ADDR"], tmp_path / "billing.log"),
    ):
        yield env


async def gatemesh(env: dict[str, str], *args: str, stdin: str = "") -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli.main", *args, stdin=asyncio.subprocess.PIPE,
        env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate(stdin.encode())
    return process.returncode or 0, out.decode(), err.decode()


async def test_operator_grants_by_email_and_the_user_sees_and_spends_it(mesh: dict[str, str]) -> None:
    code, _, err = await gatemesh(
        mesh, "accounts", "create", "--email", "eve@example.com", "--password-stdin", stdin=PASSWORD
    )
    assert code == 0, err
    code, out, err = await gatemesh(mesh, "credits", "grant", "--email", "eve@example.com", "--usd", "2.500001")
    assert code == 0, err
    code, out, _ = await gatemesh(mesh, "credits", "balance", "--email", "eve@example.com")
    assert out.strip() == "2.500001"
    code, out, _ = await gatemesh(mesh, "codes", "create", "--usd", "1", "--count", "1")
    voucher = out.strip()
    code, _, err = await gatemesh(mesh, "credits", "balance", "--email", "nobody@example.com")
    assert code == 1 and "no account with email nobody@example.com" in err
    async with (
        grpc.aio.insecure_channel(mesh["GATEMESH_AUTH_ADDR"]) as auth_channel,
        grpc.aio.insecure_channel(mesh["GATEMESH_BILLING_ADDR"]) as billing_channel,
    ):
        session = await auth_pb2_grpc.AuthServiceStub(auth_channel).SignIn(
            auth_pb2.SignInRequest(email="eve@example.com", password=PASSWORD)
        )
        user = (("authorization", f"Bearer {session.session_token}"),)
        billing = billing_pb2_grpc.BillingServiceStub(billing_channel)
        redeemed = await billing.RedeemCode(
            billing_pb2.RedeemCodeRequest(code=voucher, idempotency_key="r"), metadata=user
        )
        assert redeemed.balance_micros == 3_500_001
        balance = await billing.GetBalance(billing_pb2.GetBalanceRequest(), metadata=user)
        assert (balance.account_id, balance.balance_micros) == (session.account.account_id, 3_500_001)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await billing.GetBalance(billing_pb2.GetBalanceRequest(), metadata=(("authorization", "Bearer nope"),))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_aggregate_stats_honour_an_opt_out_made_at_auth_at_once_P7_3(mesh: dict[str, str]) -> None:
    """P7.3 across services: the opt-out is set at auth; billing's aggregate statistics leave
    the account out on the very next call."""
    code, _, err = await gatemesh(
        mesh, "accounts", "create", "--email", "zoe@example.com", "--password-stdin", stdin=PASSWORD
    )
    assert code == 0, err
    service = (("x-gatemesh-service-token", mesh["GATEMESH_SERVICE_TOKEN"]),)
    admin = (("authorization", f"Bearer {mesh['GATEMESH_ADMIN_TOKEN']}"),)
    async with (
        grpc.aio.insecure_channel(mesh["GATEMESH_AUTH_ADDR"]) as auth_channel,
        grpc.aio.insecure_channel(mesh["GATEMESH_BILLING_ADDR"]) as billing_channel,
    ):
        auth = auth_pb2_grpc.AuthServiceStub(auth_channel)
        session = await auth.SignIn(auth_pb2.SignInRequest(email="zoe@example.com", password=PASSWORD))
        account = session.account.account_id
        billing = billing_pb2_grpc.BillingServiceStub(billing_channel)
        grant = billing_pb2.GrantCreditsRequest(account_id=account, amount_micros=10**6, idempotency_key="g")
        await billing.GrantCredits(grant, metadata=admin)
        hold = await billing.Hold(
            billing_pb2.HoldRequest(account_id=account, amount_micros=1000, idempotency_key="h"), metadata=service
        )
        usage = billing_pb2.Usage(model="gpt-4o-mini", input_tokens=100, output_tokens=100)
        await billing.Settle(
            billing_pb2.SettleRequest(hold_id=hold.hold_id, usage=usage, idempotency_key="s"), metadata=service
        )
        stats = await billing.GetAggregateStats(billing_pb2.GetAggregateStatsRequest(), metadata=admin)
        assert [(d.model, d.requests) for d in stats.days] == [("gpt-4o-mini", 1)]
        user = (("authorization", f"Bearer {session.session_token}"),)
        await auth.SetAnalyticsOptOut(auth_pb2.SetAnalyticsOptOutRequest(opt_out=True), metadata=user)
        stats = await billing.GetAggregateStats(billing_pb2.GetAggregateStatsRequest(), metadata=admin)
        assert list(stats.days) == []
        own = await billing.GetUsageStats(billing_pb2.GetUsageStatsRequest(), metadata=user)
        assert [d.requests for d in own.days] == [1]  # the account's own dashboard still shows it
