"""`gatemesh privacy datamap` and `gatemesh privacy policy ...`: the data map (P4.4) and the
privacy-policy versions (P10) for compliance staff.

- `gatemesh privacy datamap [--json]`: the data map and processors list, Markdown by default.
- `gatemesh privacy policy current [--json]`: the version in effect (and the next one).
- `gatemesh privacy policy publish VERSION --effective DATE [--summary TEXT]`: publish a
  version; every account is notified through the outbox. Repeating it is harmless.
- `gatemesh privacy policy list [--json]`, `gatemesh privacy policy pending [--version V] [--json]`.

Staff commands act as the local operator, or as a named compliance member with
`--as EMAIL` (the password typed at a prompt or read with `--password-stdin` or `--password-file`; never an
argument), exactly as `privacy_commands` does (its channel and options are reused). These
commands join the `privacy` group that `privacy_commands` makes (`privacy_group` finds it,
or makes it when this module registers first).
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

import grpc

from gatemesh.common.v1 import common_pb2
from gatemesh.privacy.v1 import policy_pb2, policy_pb2_grpc
from services.privacy import datamap
from services.runtime.timestamps import from_timestamp, to_timestamp

from .billing_commands import parse_date
from .common import EXIT_USAGE, operator_channel, run
from .privacy_commands import _channel as staff_channel
from .privacy_commands import _common as staff_options

TIMEOUT_S = 30
GROUP = "privacy"


def privacy_group(subparsers: Any) -> Any:
    """The `gatemesh privacy` subcommands, created by the first module that asks (a group
    another module made without this helper is found by its subcommand action)."""
    parser = subparsers.choices.get(GROUP)
    if parser is None:
        parser = subparsers.add_parser(GROUP, help="data-subject requests, policy versions, the data map")
        parser.set_defaults(func=lambda _args: parser.print_help() or EXIT_USAGE)
    if not hasattr(parser, "gatemesh_commands"):
        found = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser.gatemesh_commands = found[0] if found else parser.add_subparsers(dest="privacy_command")
    return parser.gatemesh_commands


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def stub(channel: grpc.aio.Channel) -> policy_pb2_grpc.PolicyServiceStub:
    return policy_pb2_grpc.PolicyServiceStub(channel)


# --- datamap ---------------------------------------------------------------------------


def datamap_of(reply: policy_pb2.GetDataMapResponse) -> datamap.DataMap:
    """The map the service generated, back in the domain's shape (one rendering for all)."""
    fields = tuple(
        datamap.MapField(
            f.service,
            f.store,
            f.field,
            int(f.category),
            f.purpose,
            f.retention,
            f.retention_days,
            int(f.erasure),
            tuple(f.processors),
        )
        for f in reply.fields
    )
    generated = from_timestamp(reply.generated_at) or datetime.now(UTC)
    return datamap.DataMap(
        generated_at=generated,
        services=tuple(reply.services),
        fields=fields,
        processors=tuple(datamap.processors_of(fields)),
        unavailable=tuple(reply.unavailable),
    )


def datamap_command(args: argparse.Namespace) -> int:
    async def call() -> None:
        async with operator_channel("privacy_addr") as channel:
            reply = await stub(channel).GetDataMap(policy_pb2.GetDataMapRequest(), timeout=TIMEOUT_S)
        found = datamap_of(reply)
        if args.json:
            print_json(datamap.to_json(found))
        else:
            print(datamap.to_markdown(found), end="")

    return run(call, "privacy")


# --- policy ----------------------------------------------------------------------------


def version_json(version: policy_pb2.PolicyVersion) -> dict[str, Any]:
    effective, published = from_timestamp(version.effective_at), from_timestamp(version.published_at)
    return {
        "version": version.version,
        "effective_at": effective.isoformat() if effective else None,
        "published_at": published.isoformat() if published else None,
        "summary": version.summary,
    }


def current_command(args: argparse.Namespace) -> int:
    async def call() -> None:
        async with operator_channel("privacy_addr") as channel:
            reply = await stub(channel).GetCurrentPolicy(policy_pb2.GetCurrentPolicyRequest(), timeout=TIMEOUT_S)
        current = version_json(reply.current) if reply.HasField("current") else None
        upcoming = version_json(reply.upcoming) if reply.HasField("upcoming") else None
        if args.json:
            print_json({"current": current, "upcoming": upcoming})
            return
        print(f"current: {current['version']} (effective {current['effective_at']})" if current else "current: none")
        if upcoming:
            print(f"upcoming: {upcoming['version']} (effective {upcoming['effective_at']})")

    return run(call, "privacy")


def publish_command(args: argparse.Namespace) -> int:
    effective = parse_date(args.effective)

    async def call() -> None:
        request = policy_pb2.PublishPolicyVersionRequest(
            version=args.version, effective_at=to_timestamp(effective), summary=args.summary or ""
        )
        async with await staff_channel(args) as channel:
            reply = await stub(channel).PublishPolicyVersion(request, timeout=TIMEOUT_S)
        what = "published" if reply.created else "already published"
        print(f"{what} {reply.version.version}, effective {version_json(reply.version)['effective_at']};")
        print(f"{reply.notified} account(s) notified through the outbox")

    return run(call, "privacy")


def list_command(args: argparse.Namespace) -> int:
    async def call() -> None:
        async with await staff_channel(args) as channel:
            reply = await stub(channel).ListPolicyVersions(policy_pb2.ListPolicyVersionsRequest(), timeout=TIMEOUT_S)
        rows = [
            {**version_json(v.version), "published_by": v.published_by, "notified": v.notified} for v in reply.versions
        ]
        if args.json:
            print_json(rows)
            return
        for r in rows:
            print(f"{r['version']}\teffective {r['effective_at']}\tnotified {r['notified']}\tby {r['published_by']}")

    return run(call, "privacy")


def pending_command(args: argparse.Namespace) -> int:
    async def call() -> None:
        ids: list[str] = []
        version, token = args.version or "", ""
        async with await staff_channel(args) as channel:
            while True:
                page = common_pb2.PageRequest(page_size=1000, page_token=token)
                request = policy_pb2.ListPendingAcceptancesRequest(version=version, page=page)
                reply = await stub(channel).ListPendingAcceptances(request, timeout=TIMEOUT_S)
                ids += reply.account_ids
                version, token = reply.version, reply.page.next_page_token
                if not token:
                    break
        if args.json:
            print_json({"version": version, "account_ids": ids})
            return
        print(f"{len(ids)} account(s) have not accepted {version}")
        for account_id in ids:
            print(account_id)

    return run(call, "privacy")


def register(subparsers: Any) -> None:
    commands = privacy_group(subparsers)
    p = commands.add_parser("datamap", help="the data map and processors list (P4.4), Markdown or --json")
    add_json(p)
    p.set_defaults(func=datamap_command)

    policy = commands.add_parser("policy", help="privacy-policy versions (P10)")
    policy.set_defaults(func=lambda _args: policy.print_help() or EXIT_USAGE)
    sub = policy.add_subparsers(dest="policy_command")
    p = sub.add_parser("current", help="the version in effect, and the next one")
    add_json(p)
    p.set_defaults(func=current_command)
    p = sub.add_parser("publish", help="publish a version with its effective date; notifies every account")
    p.add_argument("version", help="the version id, e.g. 2026-12-15")
    p.add_argument("--effective", required=True, metavar="DATE", help="YYYY-MM-DD or ISO 8601, UTC by default")
    p.add_argument("--summary", help="what changed, in a few sentences")
    staff_options(p)
    p.set_defaults(func=publish_command)
    p = sub.add_parser("list", help="every published version")
    add_json(p)
    staff_options(p)
    p.set_defaults(func=list_command)
    p = sub.add_parser("pending", help="accounts that have not accepted the current (or --version) version")
    p.add_argument("--version", help="another published version")
    add_json(p)
    staff_options(p)
    p.set_defaults(func=pending_command)
