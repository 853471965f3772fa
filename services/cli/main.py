"""`gatemesh`: the console script. Subcommands live in modules that register themselves.

Each command module exposes `register(subparsers)`; adding a command means adding a
module to COMMAND_MODULES, nothing else.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .common import CliError, apply_global_options, fail

COMMAND_MODULES = [
    "services.cli.up",
    "services.cli.auth_commands",
    "services.cli.billing_commands",
    "services.cli.edge_commands",
    "services.cli.privacy_commands",
    "services.cli.privacy_policy_commands",  # joins the `privacy` group made above
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gatemesh", description="Run and operate a Gatemesh mesh.")
    parser.add_argument("--config", help="YAML configuration file (default: $GATEMESH_CONFIG)")
    parser.add_argument("--data-dir", help="local state directory (default: $GATEMESH_DATA_DIR or ./.gatemesh)")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name == name:  # that command group has not landed yet
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    apply_global_options(args.config, args.data_dir)
    try:
        return int(args.func(args) or 0)
    except CliError as error:
        fail(str(error), error.exit_code)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
