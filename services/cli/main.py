"""`gatemesh`: the console script. Subcommands live in modules that register themselves.

Each command module exposes `register(subparsers)`; adding a command means adding a
module to COMMAND_MODULES, nothing else.

Why argparse and not click or typer: argparse is in the standard library (no dependency
for a console script every service image carries), and it does what the CLI needs with
less code than either: `--config` and `--data-dir` are accepted before or after the
command (`gatemesh --config F up` and `gatemesh up --config F`) by adding them to every
subparser with `default=SUPPRESS`, so the value typed anywhere wins and an absent one never
overwrites it. click (and typer, built on it) binds a group's options to the group, so
`gatemesh up --config F` would need the option declared on every command or a custom
command class. Help text, `--version` and usage errors (exit code 2) come with argparse;
a test walks the whole parser and fails when a command or option has no help.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version

from pydantic import ValidationError

from .common import EXIT_CODES_HELP, EXIT_USAGE, CliError, apply_global_options, fail

COMMAND_MODULES = [
    "services.cli.up",
    "services.cli.status",
    "services.cli.auth_commands",
    "services.cli.billing_commands",
    "services.cli.privacy_commands",
    "services.cli.edge_commands",
    "services.cli.privacy_policy_commands",  # joins the `privacy` group made above
]

GLOBAL_OPTIONS = {
    "--config": "YAML configuration file (default: $GATEMESH_CONFIG)",
    "--data-dir": "the mesh's local state directory (default: $GATEMESH_DATA_DIR, else ./.gatemesh, "
    "else the mesh `gatemesh up` last started); read commands never create it",
}


def package_version() -> str:
    try:
        return version("gatemesh")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown"


def add_global_options(parser: argparse.ArgumentParser, default: object) -> None:
    """--config and --data-dir; subparsers get default=SUPPRESS so they never clobber a
    value given before the command."""
    group = parser.add_argument_group("global options")
    for flag, text in GLOBAL_OPTIONS.items():
        group.add_argument(flag, default=default, metavar=flag[2:].replace("-", "_").upper(), help=text)


def subparsers_of(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str | None, argparse.ArgumentParser]]:
    """Every (name, help, subparser) one level below `parser`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name), sub


def walk(parser: argparse.ArgumentParser, path: str = "gatemesh") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """The parser and every subparser below it, with the command path that reaches it."""
    yield path, parser
    for name, _help, sub in subparsers_of(parser):
        yield from walk(sub, f"{path} {name}")


def finish_subparsers(parser: argparse.ArgumentParser) -> None:
    """Global options on every subcommand; a subcommand's --help opens with its one-line
    help where its module gave no longer description."""
    for _name, text, sub in subparsers_of(parser):
        sub.description = sub.description or text
        add_global_options(sub, argparse.SUPPRESS)
        finish_subparsers(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gatemesh",
        description="Run and operate a Gatemesh mesh.\n\n`gatemesh up` starts one locally; the other commands"
        " operate the mesh it started\n(found from any directory) or the one --config / --data-dir name.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"gatemesh {package_version()}")
    add_global_options(parser, None)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name == name:  # that command group has not landed yet
                continue
            raise
        module.register(subparsers)
    finish_subparsers(parser)
    return parser


def configuration_errors(error: ValidationError) -> str:
    """Each invalid setting by its key and what is wrong, never the value (it may be a secret)."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        apply_global_options(args.config, args.data_dir)
        return int(args.func(args) or 0)
    except CliError as error:
        fail(str(error), error.exit_code)
    except ValidationError as error:
        fail(f"invalid configuration: {configuration_errors(error)}", EXIT_USAGE)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
