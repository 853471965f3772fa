"""Operator commands of the billing service: `gatemesh credits ...`, `gatemesh codes create`,
`gatemesh usage`.

An email is turned into an account id by auth's `AdminGetAccount`, then billing's Admin*
RPCs are called with the operator credential. Amounts are typed and printed in USD with all
six decimals (`2.500001`), converted exactly to and from integer micro-units.
"""

from __future__ import annotations

import argparse
import uuid
from datetime import UTC, datetime

import grpc

from gatemesh.auth.v1 import auth_pb2, auth_pb2_grpc
from gatemesh.billing.v1 import billing_pb2, billing_pb2_grpc
from services.runtime.money import NegativeAmount, TooManyDecimals, UsdAmountError, format_usd, parse_usd
from services.runtime.timestamps import to_timestamp

from .common import (
    EXIT_USAGE,
    CliError,
    add_json_option,
    operator_channel,
    print_json,
    run,
)

TIMEOUT_S = 10
USAGE_HEADERS = ("time (UTC)", "model", "key", "input", "output", "cost USD", "status", "latency ms")


def positive_usd(text: str) -> int:
    """A positive amount typed in USD, as exact micro-units (`parse_usd`); a usage error
    otherwise."""
    try:
        micros = parse_usd(text)
    except TooManyDecimals:
        raise CliError(f"at most six decimals: {text!r}", EXIT_USAGE) from None
    except NegativeAmount:
        micros = 0  # refused below, as zero is
    except UsdAmountError:
        raise CliError(f"not an amount in USD: {text!r}", EXIT_USAGE) from None
    if micros <= 0:
        raise CliError(f"the amount must be positive: {text!r}", EXIT_USAGE)
    return micros


def parse_date(text: str) -> datetime:
    """YYYY-MM-DD or an ISO 8601 time; UTC unless it says otherwise."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CliError(f"not a date (YYYY-MM-DD or ISO 8601): {text!r}", EXIT_USAGE) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def account_id_of(email: str) -> str:
    async with operator_channel("auth_addr") as channel:
        try:
            reply = await auth_pb2_grpc.AuthServiceStub(channel).AdminGetAccount(
                auth_pb2.AdminGetAccountRequest(email=email), timeout=TIMEOUT_S
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise CliError(f"no account with email {email}") from None
            raise
    return reply.account.account_id


def billing_stub(channel: grpc.aio.Channel) -> billing_pb2_grpc.BillingServiceStub:
    return billing_pb2_grpc.BillingServiceStub(channel)


def credits_grant(args: argparse.Namespace) -> int:
    amount = positive_usd(args.usd)

    async def call() -> None:
        account_id = await account_id_of(args.email)
        request = billing_pb2.GrantCreditsRequest(
            account_id=account_id,
            amount_micros=amount,
            reason=args.reason,
            idempotency_key=args.idempotency_key or f"cli-{uuid.uuid4()}",
        )
        async with operator_channel("billing_addr") as channel:
            reply = await billing_stub(channel).GrantCredits(request, timeout=TIMEOUT_S)
        if args.json:
            print_json({"email": args.email, "granted_micros": amount, **money("balance", reply.balance_micros)})
            return
        balance = format_usd(reply.balance_micros)
        print(f"granted {format_usd(amount)} USD to {args.email}; balance {balance}")

    return run(call)


def credits_balance(args: argparse.Namespace) -> int:
    async def call() -> None:
        account_id = await account_id_of(args.email)
        async with operator_channel("billing_addr") as channel:
            reply = await billing_stub(channel).AdminGetBalance(
                billing_pb2.AdminGetBalanceRequest(account_id=account_id), timeout=TIMEOUT_S
            )
        if args.json:
            print_json({"email": args.email, **money("balance", reply.balance_micros)})
            return
        print(format_usd(reply.balance_micros))

    return run(call)


def codes_create(args: argparse.Namespace) -> int:
    amount = positive_usd(args.usd)
    if not 0 < args.count <= 10_000:
        raise CliError("--count must be between 1 and 10000", EXIT_USAGE)
    request = billing_pb2.CreateCodesRequest(
        amount_micros=amount, count=args.count, idempotency_key=args.idempotency_key or f"cli-{uuid.uuid4()}"
    )
    if args.expires:
        request.expires_at.CopyFrom(to_timestamp(parse_date(args.expires)))

    async def call() -> None:
        async with operator_channel("billing_addr") as channel:
            reply = await billing_stub(channel).CreateCodes(request, timeout=TIMEOUT_S)
        if args.json:
            print_json({**money("amount", amount), "codes": list(reply.codes)})
            return
        for code in reply.codes:
            print(code)

    return run(call)


def money(name: str, micros: int) -> dict[str, object]:
    """An amount for --json: exact integer micro-units and the USD text."""
    return {f"{name}_micros": micros, f"{name}_usd": format_usd(micros)}


def usage_json(r: billing_pb2.UsageRecord) -> dict[str, object]:
    return {
        "time": r.created_at.ToDatetime(UTC).isoformat(),
        "model": r.model,
        "key_id": r.key_id or None,
        "input_tokens": r.input_tokens,
        "output_tokens": r.output_tokens,
        **money("cost", r.cost_micros),
        "status": r.status,
        "latency_ms": r.latency_ms,
    }


def usage_rows(records: list[billing_pb2.UsageRecord]) -> list[tuple[str, ...]]:
    return [
        (
            r.created_at.ToDatetime(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            r.model,
            r.key_id or "-",
            str(r.input_tokens),
            str(r.output_tokens),
            format_usd(r.cost_micros),
            r.status,
            str(r.latency_ms),
        )
        for r in records
    ]


def render_table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def usage(args: argparse.Namespace) -> int:
    since = parse_date(args.since) if args.since else None

    async def call() -> None:
        account_id = await account_id_of(args.email)
        records: list[billing_pb2.UsageRecord] = []
        token = ""
        async with operator_channel("billing_addr") as channel:
            while len(records) < args.limit:
                query = billing_pb2.ListUsageRequest(
                    page={"page_size": min(1000, args.limit - len(records)), "page_token": token}
                )
                if since is not None:
                    query.since.CopyFrom(to_timestamp(since))
                request = billing_pb2.AdminListUsageRequest(account_id=account_id, filter=query)
                reply = await billing_stub(channel).AdminListUsage(request, timeout=TIMEOUT_S)
                records += reply.records
                token = reply.page.next_page_token
                if not token:
                    break
        if args.json:
            print_json([usage_json(r) for r in records])
            return
        print(render_table(USAGE_HEADERS, usage_rows(records)))
        total = sum(r.cost_micros for r in records)
        print(f"{len(records)} calls, {format_usd(total)} USD")

    return run(call)


def register(subparsers: argparse._SubParsersAction) -> None:
    credits = subparsers.add_parser("credits", help="grant credit and read balances").add_subparsers(
        dest="credits_command", required=True, metavar="ACTION"
    )
    grant = credits.add_parser("grant", help="grant credit to an account")
    grant.add_argument("--email", required=True, help="the account's email")
    grant.add_argument("--usd", required=True, help="amount in USD, up to six decimals")
    grant.add_argument("--reason", default="operator grant", help="recorded with the ledger entry")
    grant.add_argument("--idempotency-key", help="makes a retried grant safe (default: a new key)")
    add_json_option(grant)
    grant.set_defaults(func=credits_grant)
    balance = credits.add_parser("balance", help="an account's available balance in USD")
    balance.add_argument("--email", required=True, help="the account's email")
    add_json_option(balance)
    balance.set_defaults(func=credits_balance)

    codes = subparsers.add_parser("codes", help="redemption codes").add_subparsers(
        dest="codes_command", required=True, metavar="ACTION"
    )
    create = codes.add_parser("create", help="create a batch of single-use codes (printed once)")
    create.add_argument("--usd", required=True, help="value of each code in USD")
    create.add_argument("--count", type=int, default=1, help="how many codes (1 to 10000; default 1)")
    create.add_argument("--expires", help="expiry date (YYYY-MM-DD or ISO 8601, UTC)")
    create.add_argument("--idempotency-key", help="a retry with the same key prints the same codes")
    add_json_option(create)
    create.set_defaults(func=codes_create)

    listing = subparsers.add_parser("usage", help="an account's usage records, newest first")
    listing.add_argument("--email", required=True, help="the account's email")
    listing.add_argument("--since", help="only calls from this date (YYYY-MM-DD or ISO 8601, UTC)")
    listing.add_argument("--limit", type=int, default=1000, help="at most this many records (default 1000)")
    add_json_option(listing)
    listing.set_defaults(func=usage)
