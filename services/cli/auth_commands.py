"""Operator commands of the auth service: `gatemesh accounts ...` and `gatemesh keys ...`.

They call auth's Admin* RPCs with the operator credential from the configuration. A new
API key is printed alone on the last line of `keys create`, so scripts can take it with
`tail -n1`; it is shown this once and never again.
"""

from __future__ import annotations

import argparse
from datetime import UTC

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from gatemesh.auth.v1 import auth_pb2, auth_pb2_grpc

from .common import add_json_option, add_password_options, operator_channel, print_json, read_password, run

ROLES = {"user": auth_pb2.ROLE_USER, "admin": auth_pb2.ROLE_ADMIN, "compliance": auth_pb2.ROLE_COMPLIANCE}
TIMEOUT_S = 10


def _stub(channel: grpc.aio.Channel) -> auth_pb2_grpc.AuthServiceStub:
    return auth_pb2_grpc.AuthServiceStub(channel)


def _when(stamp: Timestamp, present: bool) -> str:
    return stamp.ToDatetime(UTC).strftime("%Y-%m-%d %H:%M:%S") if present else "-"


def key_json(key: auth_pb2.ApiKey) -> dict[str, object]:
    """An API key's listing (never the key) for --json; times in ISO 8601 UTC or null."""

    def moment(name: str) -> str | None:
        return getattr(key, name).ToDatetime(UTC).isoformat() if key.HasField(name) else None

    return {
        "key_id": key.key_id,
        "prefix": key.prefix,
        "name": key.name,
        "status": "revoked" if key.HasField("revoked_at") else "active",
        "created_at": moment("created_at"),
        "last_used_at": moment("last_used_at"),
        "revoked_at": moment("revoked_at"),
    }


def accounts_create(args: argparse.Namespace) -> int:
    password = read_password(args, optional=True)

    async def call() -> None:
        async with operator_channel("auth_addr") as channel:
            request = auth_pb2.AdminCreateAccountRequest(email=args.email, password=password, role=ROLES[args.role])
            reply = await _stub(channel).AdminCreateAccount(request, timeout=TIMEOUT_S)
        account = reply.account
        print(f"account {account.account_id} {account.email} ({args.role})")
        if reply.generated_password:
            print("generated password (shown once):")
            print(reply.generated_password)

    return run(call)


def keys_create(args: argparse.Namespace) -> int:
    async def call() -> None:
        async with operator_channel("auth_addr") as channel:
            request = auth_pb2.AdminCreateApiKeyRequest(
                email=args.email, key=auth_pb2.CreateApiKeyRequest(name=args.name)
            )
            reply = await _stub(channel).AdminCreateApiKey(request, timeout=TIMEOUT_S)
        if args.json:
            print_json({"key_id": reply.key.key_id, "name": reply.key.name, "api_key": reply.api_key})
            return
        print(f"key {reply.key.key_id} {reply.key.name!r} for {args.email}; the key is shown once:")
        print(reply.api_key)

    return run(call)


def keys_list(args: argparse.Namespace) -> int:
    async def call() -> None:
        stub_request = auth_pb2.AdminListApiKeysRequest(email=args.email)
        rows = []
        async with operator_channel("auth_addr") as channel:
            stub = _stub(channel)
            while True:
                reply = await stub.AdminListApiKeys(stub_request, timeout=TIMEOUT_S)
                rows += list(reply.keys)
                if not reply.page.next_page_token:
                    break
                stub_request.page.page_token = reply.page.next_page_token
        if args.json:
            print_json([key_json(key) for key in rows])
            return
        if not rows:
            print(f"no API keys for {args.email}")
            return
        print(f"{'KEY ID':38} {'PREFIX':9} {'STATUS':8} {'CREATED':19} {'LAST USED':19} NAME")
        for key in rows:
            status = "revoked" if key.HasField("revoked_at") else "active"
            created = _when(key.created_at, key.HasField("created_at"))
            used = _when(key.last_used_at, key.HasField("last_used_at"))
            print(f"{key.key_id:38} {key.prefix:9} {status:8} {created:19} {used:19} {key.name}")

    return run(call)


def accounts_close(args: argparse.Namespace) -> int:
    """Close an account on its holder's behalf; the privacy service erases it (P5.4)."""

    async def call() -> None:
        async with operator_channel("auth_addr") as channel:
            request = auth_pb2.AdminCloseAccountRequest(email=args.email)
            reply = await _stub(channel).AdminCloseAccount(request, timeout=TIMEOUT_S)
        print(f"closed {reply.account.account_id}: keys revoked, sessions ended; erasure follows within 30 days")

    return run(call)


def keys_revoke(args: argparse.Namespace) -> int:
    async def call() -> None:
        async with operator_channel("auth_addr") as channel:
            reply = await _stub(channel).AdminRevokeApiKey(
                auth_pb2.RevokeApiKeyRequest(key_id=args.key_id), timeout=TIMEOUT_S
            )
        print(f"revoked {reply.key.key_id} ({reply.key.prefix}...)")

    return run(call)


def register(subparsers: argparse._SubParsersAction) -> None:
    accounts = subparsers.add_parser("accounts", help="manage accounts").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    create = accounts.add_parser(
        "create",
        help="create an account",
        description="Create an account. The password is typed at a prompt (twice), or read with"
        " --password-stdin or --password-file, never taken as an argument; with none (or an empty one) a"
        " password is generated and printed once.",
    )
    create.add_argument("--email", required=True, help="the account's email (its sign-in name)")
    add_password_options(create, optional=True)
    create.add_argument("--role", choices=sorted(ROLES), default="user", help="the account's role (default: user)")
    create.set_defaults(func=accounts_create)
    close = accounts.add_parser(
        "close",
        help="close an account on its holder's behalf",
        description="Close an account for its holder (P8.4): its keys are refused at once, its sessions end,"
        " and the privacy service raises its erasure, due within 30 days (P5.4).",
    )
    close.add_argument("--email", required=True, help="the account's email")
    close.set_defaults(func=accounts_close)

    keys = subparsers.add_parser("keys", help="manage API keys").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    key_create = keys.add_parser("create", help="create an API key (printed once, on the last line)")
    key_create.add_argument("--email", required=True, help="the account's email")
    key_create.add_argument("--name", default="default", help="a name to tell keys apart")
    add_json_option(key_create)
    key_create.set_defaults(func=keys_create)
    key_list = keys.add_parser("list", help="list an account's API keys (never the keys themselves)")
    key_list.add_argument("--email", required=True, help="the account's email")
    add_json_option(key_list)
    key_list.set_defaults(func=keys_list)
    revoke = keys.add_parser("revoke", help="revoke an API key at once")
    revoke.add_argument("key_id", help="the key's id (from `gatemesh keys list`)")
    revoke.set_defaults(func=keys_revoke)
