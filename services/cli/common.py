"""What every CLI command shares: settings, an operator channel, and clear failures.

Operator commands find the running mesh (see `locate`: `--data-dir`, the configuration,
`./.gatemesh`, or the mesh `gatemesh up` last started) and authenticate with the operator
(admin) token from it; they never create state. Every failure prints one line to stderr
and exits non-zero (EXIT_CODES_HELP). A failed call names the service and the address it
was made to, so "not reachable" blames the service that is. Passwords are never
command-line arguments (visible in the process list and shell history): they are typed
at a prompt, or read from standard input or a file (`add_password_options`). Listing
commands take `--json` for scripts (`add_json_option`, `print_json`).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NoReturn, Self

import grpc
from pydantic import SecretStr, model_validator

from services.runtime.clients import service_channel
from services.runtime.settings import LOCAL_SECRETS, GatemeshSettings

from . import locate

EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_NO_MESH = 1, 2, 3, locate.EXIT_NO_MESH
EXIT_CODES_HELP = """exit codes:
  0  done
  1  the mesh refused the request (the message says why)
  2  bad usage (unknown option, malformed value)
  3  a service of the mesh is not reachable (the message names it and its address)
  4  no mesh found, or the data directory's credential is not the running mesh's"""


class CliError(Exception):
    """A failure to report to the operator with an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def apply_global_options(config: str | None, data_dir: str | None) -> None:
    """Make --config and --data-dir visible to settings, here and in child processes; a
    configuration file that is not there is an error, not silently no configuration."""
    if config:
        os.environ["GATEMESH_CONFIG"] = os.path.abspath(config)
    if data_dir:
        os.environ["GATEMESH_DATA_DIR"] = os.path.abspath(data_dir)
    named = os.environ.get("GATEMESH_CONFIG", "").strip()
    if named and not Path(named).is_file():
        raise CliError(f"the configuration file {named} (--config / GATEMESH_CONFIG) does not exist", EXIT_USAGE)


class CliSettings(GatemeshSettings):
    """The shared settings as an operator command reads them: local secrets are read from
    the data directory, never created there."""

    @model_validator(mode="after")
    def _fill_local_secrets(self) -> Self:
        path = self.data_dir / locate.SECRETS_FILE
        local = json.loads(path.read_text()) if path.is_file() else {}
        for name in LOCAL_SECRETS:
            if getattr(self, name) is None and name in local:
                object.__setattr__(self, name, SecretStr(local[name]))
        return self


_found: locate.Located | None = None


def find_mesh() -> locate.Located:
    """Locate the mesh once per command and make its settings the ones read."""
    global _found
    if _found is None:
        configured = all(os.environ.get(f"GATEMESH_{name.upper()}") for name in LOCAL_SECRETS)
        try:
            _found = locate.locate(configured)
        except locate.MeshNotFound as error:
            raise CliError(str(error), EXIT_NO_MESH) from None
        locate.apply(_found)
    return _found


def settings() -> CliSettings:
    """The located mesh's settings (never creating its data directory or secrets)."""
    find_mesh()
    return CliSettings()


def describe_rpc_error(error: grpc.aio.AioRpcError, service: str, address: str) -> CliError:
    """A one-line message for a failed call to `service` at `address`."""
    code = error.code()
    found = find_mesh()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        stale = ""
        if found.run is not None and not found.live:
            stale = f"; the mesh last started from {found.data_dir} (pid {found.run.pid}) is no longer running"
        return CliError(
            f"the {service} service at {address} (setting `{service}_addr`) is not reachable"
            f" ({error.details()}){stale}; is `gatemesh up` running?",
            EXIT_UNREACHABLE,
        )
    if code == grpc.StatusCode.UNAUTHENTICATED:
        source = f"of the data directory {found.data_dir.resolve()} ({found.how})"
        if os.environ.get("GATEMESH_ADMIN_TOKEN"):
            source = "configured as GATEMESH_ADMIN_TOKEN"
        return CliError(
            f"the {service} service at {address} refused the operator credential {source}: it belongs to"
            f" another mesh than the one running there; {locate.HOW_TO_POINT} (`gatemesh status` shows which"
            " mesh the CLI finds)",
            EXIT_NO_MESH,
        )
    return CliError(f"{code.name.lower().replace('_', ' ')}: {error.details()}")


@asynccontextmanager
async def operator_channel(target_attr: str) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to a service (`auth_addr`, `billing_addr`, ...) as the operator; a call
    failing inside the block is reported as that service's failure."""
    s = settings()
    service, address = target_attr.removesuffix("_addr"), getattr(s, target_attr)
    channel = service_channel(address, s, credential=s.secret("admin_token"))
    try:
        yield channel
    except grpc.aio.AioRpcError as error:
        raise describe_rpc_error(error, service, address) from None
    finally:
        await channel.close()


def run(coro_fn: Callable[[], Coroutine[Any, Any, Any]], service: str = "") -> int:
    """Run one async command; failures become their message and exit code. (`service` is
    kept for callers written before channels named their own service.)"""
    del service
    try:
        asyncio.run(coro_fn())
    except CliError as error:
        fail(str(error), error.exit_code)
    return 0


def fail(message: str, exit_code: int = EXIT_REFUSED) -> NoReturn:
    print(f"gatemesh: {message}", file=sys.stderr)
    raise SystemExit(exit_code)


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON (one document on stdout) for scripts")


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


class _RefusePasswordArgument(argparse.Action):
    """`--password VALUE` is refused with the ways that do not leak it."""

    def __call__(self, parser: argparse.ArgumentParser, *_args: object, **_kwargs: object) -> None:
        parser.error(
            "passwords are never command-line arguments (they show in the process list and shell history):"
            " type it at the prompt, or use --password-stdin or --password-file FILE"
        )


def add_password_options(parser: argparse.ArgumentParser, optional: bool) -> None:
    """--password-stdin and --password-file; with neither, a prompt on a terminal."""
    hint = " (empty: a generated password, printed once)" if optional else ""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--password-stdin", action="store_true", help=f"read the password from the first line of standard input{hint}"
    )
    group.add_argument("--password-file", metavar="FILE", help=f"read the password from the first line of FILE{hint}")
    parser.add_argument("--password", nargs="?", action=_RefusePasswordArgument, help=argparse.SUPPRESS)


def read_password(args: argparse.Namespace, optional: bool, sign_in_as: str = "") -> str:
    """The password from --password-stdin, --password-file or a prompt; "" when `optional`
    and none is given (not a terminal, or an empty entry). A new password is typed twice;
    one to sign in as `sign_in_as` is asked once, naming the account."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if args.password_file:
        try:
            first = Path(args.password_file).read_text().splitlines()
        except OSError as error:
            raise CliError(f"cannot read --password-file: {error.strerror}", EXIT_USAGE) from None
        return first[0] if first else ""
    if not sys.stdin.isatty():
        if optional:
            return ""
        raise CliError("no password: use --password-stdin or --password-file FILE", EXIT_USAGE)
    if sign_in_as:
        prompt = f"Password for {sign_in_as}: "
    else:
        prompt = "Password (empty: generate one): " if optional else "Password: "
    typed = getpass.getpass(prompt)
    if typed and not sign_in_as and getpass.getpass("Again: ") != typed:
        raise CliError("the two passwords differ; nothing was changed", EXIT_USAGE)
    if not typed and not optional:
        raise CliError("no password given", EXIT_USAGE)
    return typed
