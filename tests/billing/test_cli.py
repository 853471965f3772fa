"""The operator CLI (`gatemesh credits|codes|usage`) as a real subprocess against a billing
server, with a stand-in for auth's AdminGetAccount (auth is tested on its own)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator

import grpc
import pytest

from gatemesh.auth.v1 import auth_pb2, auth_pb2_grpc
from gatemesh.billing.v1 import billing_pb2_grpc
from services.billing.domain import Billing, SettleIn, UsageIn
from services.billing.servicer import BillingServicer
from services.runtime.server import ServiceSpec, bind, build_server
from services.runtime.settings import GatemeshSettings

from .conftest import SECRET, at

SERVICE, ADMIN = "svc-token", "admin-token"


class Accounts(auth_pb2_grpc.AuthServiceServicer):
    async def AdminGetAccount(self, request, context):
        if request.email == "ann@example.com":
            return auth_pb2.AdminGetAccountResponse(account=auth_pb2.Account(account_id="ann", email=request.email))
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such account")


@pytest.fixture
async def mesh(billing: Billing, tmp_path) -> AsyncIterator[dict[str, str]]:
    settings = GatemeshSettings(data_dir=tmp_path, service_token=SERVICE, admin_token=ADMIN, key_hmac_secret=SECRET)

    def register(server: grpc.aio.Server) -> None:
        billing_pb2_grpc.add_BillingServiceServicer_to_server(BillingServicer(billing), server)
        auth_pb2_grpc.add_AuthServiceServicer_to_server(Accounts(), server)

    spec = ServiceSpec("billing+auth", register, ["gatemesh.billing.v1.BillingService"])
    server, _ = build_server(spec, settings)
    port = bind(server, "127.0.0.1:0", settings)
    await server.start()
    yield {
        "GATEMESH_BILLING_ADDR": f"127.0.0.1:{port}",
        "GATEMESH_AUTH_ADDR": f"127.0.0.1:{port}",
        "GATEMESH_ADMIN_TOKEN": ADMIN,
        "GATEMESH_SERVICE_TOKEN": SERVICE,
        "GATEMESH_KEY_HMAC_SECRET": SECRET,
        "GATEMESH_DATA_DIR": str(tmp_path),
    }
    await server.stop(0)


async def gatemesh(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli.main", *args,
        env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


async def test_grant_balance_codes_and_usage(mesh: dict[str, str], billing: Billing) -> None:
    code, out, _ = await gatemesh(mesh, "credits", "grant", "--email", "ann@example.com", "--usd", "2.500001")
    assert code == 0 and "granted 2.500001 USD" in out
    code, out, _ = await gatemesh(mesh, "credits", "balance", "--email", "ann@example.com")
    assert (code, out.strip()) == (0, "2.500001")
    hold = await billing.hold("ann", 1000, 0, "h")
    usage = UsageIn("gpt-4o-mini", input_tokens=1000, output_tokens=10, started_at=at("2026-11-20T08:00:00"))
    await billing.settle(SettleIn(hold.hold_id, 0, usage, "s"))
    code, out, _ = await gatemesh(mesh, "usage", "--email", "ann@example.com", "--since", "2026-11-01")
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("time (UTC)")
    assert "2026-11-20 08:00:00" in lines[1] and "gpt-4o-mini" in lines[1] and "0.000156" in lines[1]
    code, out, _ = await gatemesh(mesh, "usage", "--email", "ann@example.com", "--since", "2026-11-21")
    assert code == 0 and out.splitlines()[-1] == "0 calls, 0.000000 USD"
    code, out, _ = await gatemesh(mesh, "codes", "create", "--usd", "5", "--count", "3")
    codes = out.split()
    assert code == 0 and len(codes) == 3 and all(c.startswith("GM-") for c in codes)
    redeemed = await billing.redeem("ann", codes[0], "r")
    assert redeemed.amount_micros == 5_000_000


@pytest.mark.parametrize(
    ("args", "exit_code", "message"),
    [
        (("credits", "grant", "--email", "who@example.com", "--usd", "1"), 1, "no account with email"),
        (("credits", "grant", "--email", "ann@example.com", "--usd", "-1"), 2, "must be positive"),
        (("credits", "grant", "--email", "ann@example.com", "--usd", "0.0000001"), 2, "six decimals"),
        (("codes", "create", "--usd", "abc", "--count", "1"), 2, "not an amount"),
        (("usage", "--email", "ann@example.com", "--since", "yesterday"), 2, "not a date"),
    ],
)
async def test_clear_errors_and_non_zero_exit(
    mesh: dict[str, str], args: tuple[str, ...], exit_code: int, message: str
) -> None:
    code, out, err = await gatemesh(mesh, *args)
    assert code == exit_code and message in err and out == ""


async def test_unreachable_billing_exits_3(mesh: dict[str, str]) -> None:
    from tests.support import free_port

    down = {**mesh, "GATEMESH_BILLING_ADDR": f"127.0.0.1:{free_port()}"}
    code, _, err = await gatemesh(down, "codes", "create", "--usd", "1")
    assert code == 3 and "not reachable" in err
