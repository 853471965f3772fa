"""What every CLI command shares: settings, an operator channel, and clear failures.

Operator commands find the running mesh through the same configuration the mesh reads
(`--config` / `GATEMESH_CONFIG`, `--data-dir` / `GATEMESH_DATA_DIR`) and authenticate with
the operator (admin) token from it. Every failure prints one line to stderr and exits
non-zero: 1 for a refused request, 2 for bad usage, 3 when the mesh is not reachable.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import grpc

from services.runtime.clients import service_channel
from services.runtime.settings import GatemeshSettings

EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3


class CliError(Exception):
    """A failure to report to the operator with an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def apply_global_options(config: str | None, data_dir: str | None) -> None:
    """Make --config and --data-dir visible to settings, here and in child processes."""
    if config:
        os.environ["GATEMESH_CONFIG"] = os.path.abspath(config)
    if data_dir:
        os.environ["GATEMESH_DATA_DIR"] = os.path.abspath(data_dir)


def settings() -> GatemeshSettings:
    return GatemeshSettings()


def operator_channel(target_attr: str) -> grpc.aio.Channel:
    """A channel to a service (`auth_addr`, `billing_addr`, ...) as the operator."""
    s = settings()
    return service_channel(getattr(s, target_attr), s, credential=s.secret("admin_token"))


def describe_rpc_error(error: grpc.aio.AioRpcError, service: str) -> CliError:
    """A one-line message for a failed call."""
    code = error.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return CliError(
            f"the {service} service is not reachable ({error.details()}); is `gatemesh up` running?",
            EXIT_UNREACHABLE,
        )
    return CliError(f"{code.name.lower().replace('_', ' ')}: {error.details()}")


def run(coro_fn: Callable[[], Awaitable[Any]], service: str) -> int:
    """Run one async command; map gRPC failures to messages and exit codes."""

    async def main() -> Any:
        try:
            return await coro_fn()
        except grpc.aio.AioRpcError as error:
            raise describe_rpc_error(error, service) from None

    try:
        asyncio.run(main())
    except CliError as error:
        fail(str(error), error.exit_code)
    return 0


def fail(message: str, exit_code: int = EXIT_REFUSED) -> NoReturn:
    print(f"gatemesh: {message}", file=sys.stderr)
    raise SystemExit(exit_code)


def format_micros_usd(micros: int) -> str:
    """Integer micro-units as USD with all six decimals: 2500001 -> '2.500001'."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), 1_000_000)
    return f"{sign}{whole}.{frac:06d}"


def parse_usd_micros(text: str) -> int:
    """'2.5' -> 2500000, exactly (no floats); more than six decimals is an error."""
    from decimal import Decimal, InvalidOperation

    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise CliError(f"not an amount in USD: {text!r}", EXIT_USAGE) from None
    micros = value * 1_000_000
    if micros != micros.to_integral_value():
        raise CliError(f"at most six decimals: {text!r}", EXIT_USAGE)
    return int(micros)
