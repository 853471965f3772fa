"""Compliance staff commands: `gatemesh privacy export|rectify|erase|approve|retry|status|list|
certificate|audit`.

They call the privacy service's staff RPCs. By default they act as the local operator (the
admin token of the configuration), who counts as one compliance member; `--as EMAIL` signs
in as a named compliance member instead, the password typed at a prompt or read from the
first line of standard input (`--password-stdin`) or of a file (`--password-file FILE`),
the CLI's one way (`common.read_password`), never given as an argument. A
staff-raised erasure still needs a second, different member's `approve`.

Every command prints the request id first. `--wait` follows the request, printing each
step as it changes, and exits non-zero if the request needs attention.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from contextlib import AbstractAsyncContextManager
from datetime import UTC
from typing import Any

import grpc
from google.protobuf import json_format

from gatemesh.auth.v1 import auth_pb2, auth_pb2_grpc
from gatemesh.common.v1 import common_pb2
from gatemesh.privacy.v1 import privacy_pb2, privacy_pb2_grpc
from services.runtime.clients import service_channel

from .common import CliError, add_password_options, operator_channel, read_password, run, settings

TIMEOUT_S = 30
POLL_S = 0.3
TYPES = {
    privacy_pb2.REQUEST_TYPE_ACCESS: "access",
    privacy_pb2.REQUEST_TYPE_RECTIFICATION: "rectification",
    privacy_pb2.REQUEST_TYPE_ERASURE: "erasure",
}
STATUSES = {
    privacy_pb2.REQUEST_STATUS_AWAITING_APPROVAL: "awaiting approval",
    privacy_pb2.REQUEST_STATUS_RUNNING: "running",
    privacy_pb2.REQUEST_STATUS_NEEDS_ATTENTION: "needs attention",
    privacy_pb2.REQUEST_STATUS_COMPLETED: "completed",
}
STEP_STATUSES = {1: "pending", 2: "running", 3: "done", 4: "needs attention"}
DEFAULT_IDENTITY = "identity checked by compliance staff (gatemesh CLI)"
CHILD_REASON = "child account (P9.2)"


async def _channel(args: argparse.Namespace) -> AbstractAsyncContextManager[grpc.aio.Channel]:
    """The privacy channel as the operator, or as the compliance member named by --as."""
    if not args.as_email:
        return operator_channel("privacy_addr")
    s = settings()
    password = read_password(args, optional=False, sign_in_as=args.as_email)
    async with service_channel(s.auth_addr, s, credential="") as auth:
        request = auth_pb2.SignInRequest(email=args.as_email, password=password)
        reply = await auth_pb2_grpc.AuthServiceStub(auth).SignIn(request, timeout=TIMEOUT_S)
    return service_channel(s.privacy_addr, s, credential=reply.session_token)


def _stub(channel: grpc.aio.Channel) -> privacy_pb2_grpc.PrivacyServiceStub:
    return privacy_pb2_grpc.PrivacyServiceStub(channel)


def _describe(request: privacy_pb2.PrivacyRequest) -> str:
    due = request.due_at.ToDatetime(UTC).strftime("%Y-%m-%d")
    return (
        f"request {request.request_id} ({TYPES.get(request.type, '?')}, {STATUSES.get(request.status, '?')}, due {due})"
    )


def _step_line(step: privacy_pb2.Step) -> str:
    counts = ", ".join(f"{k}={v}" for k, v in sorted(step.counts.items()))
    error = f" last error {step.last_error}" if step.last_error else ""
    attempts = f" attempt {step.attempts}" if step.attempts > 1 else ""
    tail = f" ({counts})" if counts else ""
    return f"  {step.participant:10} {step.phase:8} {STEP_STATUSES.get(step.status, '?')}{attempts}{error}{tail}"


async def _follow(stub: privacy_pb2_grpc.PrivacyServiceStub, request: privacy_pb2.PrivacyRequest) -> None:
    """Print each step as it changes until the request completes; fail if it needs attention."""
    seen: dict[tuple[str, str], str] = {}
    while True:
        for step in request.steps:
            line = _step_line(step)
            if seen.get((step.participant, step.phase)) != line:
                seen[(step.participant, step.phase)] = line
                print(line, flush=True)
        if request.status == privacy_pb2.REQUEST_STATUS_COMPLETED:
            print(f"{request.request_id} completed", flush=True)
            return
        if request.status == privacy_pb2.REQUEST_STATUS_NEEDS_ATTENTION:
            for finding in request.findings:
                print(f"  finding: {finding}")
            raise CliError(f"{request.request_id} needs attention; `gatemesh privacy retry {request.request_id}`")
        if request.status == privacy_pb2.REQUEST_STATUS_AWAITING_APPROVAL:
            print(f"{request.request_id} awaits approval by a second compliance member", flush=True)
            print(f"  `gatemesh privacy approve {request.request_id} --as OTHER-MEMBER --wait`", flush=True)
            return
        await asyncio.sleep(POLL_S)
        reply = await stub.GetRequest(privacy_pb2.GetRequestRequest(request_id=request.request_id), timeout=TIMEOUT_S)
        request = reply.request


def _raise(args: argparse.Namespace, **fields: Any) -> int:
    async def call() -> None:
        async with await _channel(args) as channel:
            stub = _stub(channel)
            request = privacy_pb2.CreateRequestRequest(
                subject=common_pb2.SubjectRef(email=args.email), identity_verification=args.identity, **fields
            )
            created = (await stub.CreateRequest(request, timeout=TIMEOUT_S)).request
            print(_describe(created), flush=True)
            if args.wait:
                await _follow(stub, created)

    return run(call, "privacy")


def cmd_export(args: argparse.Namespace) -> int:
    return _raise(args, type=privacy_pb2.REQUEST_TYPE_ACCESS)


def cmd_rectify(args: argparse.Namespace) -> int:
    return _raise(args, type=privacy_pb2.REQUEST_TYPE_RECTIFICATION, new_email=args.new_email)


def cmd_erase(args: argparse.Namespace) -> int:
    reason = CHILD_REASON if args.child else args.reason
    return _raise(args, type=privacy_pb2.REQUEST_TYPE_ERASURE, reason=reason, dry_run=args.dry_run)


def _on_request(method: str, args: argparse.Namespace) -> int:
    async def call() -> None:
        async with await _channel(args) as channel:
            stub = _stub(channel)
            message = getattr(privacy_pb2, f"{method}Request")(request_id=args.request_id)
            request = (await getattr(stub, method)(message, timeout=TIMEOUT_S)).request
            print(_describe(request), flush=True)
            if getattr(args, "wait", False):
                await _follow(stub, request)
            elif method == "GetRequest":
                if request.reason:
                    print(f"  reason: {request.reason}")
                for step in request.steps:
                    print(_step_line(step))
                for finding in request.findings:
                    print(f"  finding: {finding}")

    return run(call, "privacy")


def cmd_approve(args: argparse.Namespace) -> int:
    return _on_request("ApproveRequest", args)


def cmd_retry(args: argparse.Namespace) -> int:
    return _on_request("RetryRequest", args)


def cmd_status(args: argparse.Namespace) -> int:
    return _on_request("GetRequest", args)


def cmd_list(args: argparse.Namespace) -> int:
    async def call() -> None:
        found: list[privacy_pb2.PrivacyRequest] = []
        async with await _channel(args) as channel:
            stub = _stub(channel)
            request = privacy_pb2.ListRequestsRequest(overdue=args.overdue, attention=args.attention)
            while True:
                reply = await stub.ListRequests(request, timeout=TIMEOUT_S)
                found += list(reply.requests)
                if not reply.page.next_page_token:
                    break
                request.page.page_token = reply.page.next_page_token
        if args.json:
            print(json.dumps([json_format.MessageToDict(r, preserving_proto_field_name=True) for r in found], indent=2))
            return
        if not found:
            print("no requests")
        for item in found:
            print(_describe(item))

    return run(call, "privacy")


def cmd_certificate(args: argparse.Namespace) -> int:
    async def call() -> None:
        async with await _channel(args) as channel:
            stub = _stub(channel)
            request = privacy_pb2.GetCertificateRequest(request_id=args.request_id)
            cert = (await stub.GetCertificate(request, timeout=TIMEOUT_S)).certificate
            print(f"request {cert.request_id} certificate")
            print(json.dumps(json.loads(cert.document), indent=2))
            print(f"signature {cert.signature}")
            if args.verify:
                check = privacy_pb2.VerifyCertificateRequest(document=cert.document, signature=cert.signature)
                if not (await stub.VerifyCertificate(check, timeout=TIMEOUT_S)).valid:
                    raise CliError("the certificate's signature does NOT verify")
                print("signature verifies (Ed25519, the privacy service's key)")

    return run(call, "privacy")


def cmd_audit(args: argparse.Namespace) -> int:
    async def call() -> None:
        async with await _channel(args) as channel:
            reply = await _stub(channel).VerifyAuditTrail(privacy_pb2.VerifyAuditTrailRequest(), timeout=TIMEOUT_S)
        if not reply.intact:
            raise CliError(f"the audit trail is broken at event {reply.broken_at} (of {reply.events} read)")
        print(f"audit trail intact: {reply.events} events, each chained to the one before")

    return run(call, "privacy")


def _common(parser: argparse.ArgumentParser, wait: bool = False) -> None:
    parser.add_argument("--as", dest="as_email", metavar="EMAIL", help="act as this compliance member (signs in)")
    add_password_options(parser, optional=False)
    if wait:
        parser.add_argument("--wait", action="store_true", help="follow the request; non-zero exit if it fails")


def register(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser("privacy", help="data-subject requests (compliance staff)")
    actions = group.add_subparsers(dest="action", required=True)

    def raising(name: str, help_: str) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=help_)
        parser.add_argument("--email", required=True, help="the data subject's email")
        parser.add_argument("--identity", default=DEFAULT_IDENTITY, help="how the subject's identity was verified")
        _common(parser, wait=True)
        return parser

    raising("export", help_="raise an access request (P8.1)").set_defaults(func=cmd_export)
    rectify = raising("rectify", help_="raise a correction of the email address (P8.2)")
    rectify.add_argument("--new-email", required=True, help="the corrected email address")
    rectify.set_defaults(func=cmd_rectify)
    erase = raising("erase", help_="raise an erasure (P8.3); a second member must approve it")
    why = erase.add_mutually_exclusive_group(required=True)
    why.add_argument("--reason", help="why, recorded with the request and in its certificate")
    why.add_argument(
        "--child", action="store_true", help=f"the account belongs to a child: the reason is {CHILD_REASON!r} (P9.2)"
    )
    erase.add_argument("--dry-run", action="store_true", help="report what would be erased, change nothing")
    erase.set_defaults(func=cmd_erase)
    for name, func, help_, wait in (
        ("approve", cmd_approve, "approve a staff-raised erasure (not your own)", True),
        ("retry", cmd_retry, "put a request needing attention back in the queue", True),
        ("status", cmd_status, "a request and its steps", False),
    ):
        parser = actions.add_parser(name, help=help_)
        parser.add_argument("request_id", metavar="ID", help="the request id that raising it printed")
        _common(parser, wait=wait)
        parser.set_defaults(func=func)
    listing = actions.add_parser("list", help="requests, newest first")
    listing.add_argument("--overdue", action="store_true", help="only those past due or due within 7 days")
    listing.add_argument("--attention", action="store_true", help="only those needing attention")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    _common(listing)
    listing.set_defaults(func=cmd_list)
    certificate = actions.add_parser("certificate", help="an erasure's signed certificate")
    certificate.add_argument("request_id", metavar="ID", help="the erasure request id")
    certificate.add_argument("--verify", action="store_true", help="check the signature; non-zero exit if invalid")
    _common(certificate)
    certificate.set_defaults(func=cmd_certificate)
    audit = actions.add_parser("audit", help="verify the hash-chained audit trail")
    _common(audit)
    audit.set_defaults(func=cmd_audit)
