"""The CLI follows conventions: help on every command and option, `--version`, global
options before or after the command, passwords never as arguments."""

from __future__ import annotations

import argparse
import subprocess

import pytest

from services.cli.main import build_parser, walk
from tests.support import ROOT
from tests.up_mesh import clean_environ, cli


def test_every_command_and_option_has_help() -> None:
    missing = []
    for path, parser in walk(build_parser()):
        if not parser.description:
            missing.append(f"{path}: no description")
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{path} {c.dest}" for c in action._choices_actions if not c.help]
            elif action.help is None or not str(action.help).strip():
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, f"without help text: {missing}"


def test_the_walk_reaches_every_leaf_command() -> None:
    paths = {path for path, _ in walk(build_parser())}
    assert {"gatemesh up", "gatemesh keys list", "gatemesh credits balance", "gatemesh usage"} <= paths


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "a.yaml", "--data-dir", "d", "up"],
        ["up", "--config", "a.yaml", "--data-dir", "d"],
        ["--config", "a.yaml", "up", "--data-dir", "d"],
    ],
)
def test_global_options_work_before_and_after_the_command(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.command, args.config, args.data_dir) == ("up", "a.yaml", "d")


def test_a_global_option_before_a_nested_command_is_not_overwritten() -> None:
    args = build_parser().parse_args(["--data-dir", "d", "keys", "list", "--email", "a@example.com"])
    assert args.data_dir == "d" and args.email == "a@example.com"


def test_version_and_up_help_from_the_console_script() -> None:
    version = cli(clean_environ(), "--version")
    assert version.returncode == 0 and version.stdout.startswith("gatemesh ")
    helped = cli(clean_environ(), "up", "--help")
    assert helped.returncode == 0
    text = " ".join(helped.stdout.split())
    for started in ("auth", "billing", "proxy", "privacy", "edge (Envoy"):
        assert started in text
    assert "--config" in text


def test_a_password_argument_is_refused_without_echoing_it() -> None:
    """Passwords on the command line show in the process list and shell history."""
    refused = cli(clean_environ(), "accounts", "create", "--email", "a@example.com", "--password", "hunter2hunter2")
    assert refused.returncode == 2
    assert "--password-stdin" in refused.stderr and "hunter2hunter2" not in refused.stderr


def test_listing_commands_take_json() -> None:
    parser = build_parser()
    listing = [["keys", "list"], ["usage"], ["credits", "balance"], ["codes", "create"], ["status"]]
    for command in listing:
        path = "gatemesh " + " ".join(command)
        sub = dict(walk(parser))[path]
        assert any("--json" in a.option_strings for a in sub._actions), path


@pytest.mark.parametrize(
    ("make_args", "environ", "expected"),
    [
        (["CONFIG=gatemesh.yaml"], {}, "gatemesh --config gatemesh.yaml up"),
        ([], {"GATEMESH_CONFIG": "/etc/gatemesh.yaml"}, "gatemesh --config /etc/gatemesh.yaml up"),
        ([], {}, "gatemesh up"),
    ],
)
def test_make_up_passes_the_config_through(make_args: list[str], environ: dict[str, str], expected: str) -> None:
    env = {k: v for k, v in clean_environ().items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")} | environ
    planned = subprocess.run(
        ["make", "--no-print-directory", "-n", "up", *make_args],
        env=env, capture_output=True, text=True, cwd=ROOT, timeout=30,
    )  # fmt: skip
    assert planned.returncode == 0, planned.stderr
    commands = [line for line in planned.stdout.splitlines() if "bin/gatemesh" in line]
    assert commands and commands[-1].endswith(expected), planned.stdout


def test_a_missing_configuration_file_is_named(tmp_path) -> None:
    missing = tmp_path / "gatemesh.yaml"
    for env, args in (({}, ["--config", str(missing), "status"]), ({"GATEMESH_CONFIG": str(missing)}, ["up"])):
        result = cli({**clean_environ(), **env}, *args, cwd=tmp_path)
        assert result.returncode == 2 and f"{missing} (--config / GATEMESH_CONFIG) does not exist" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_invalid_setting_is_named_without_its_value(tmp_path) -> None:
    env = {
        **clean_environ(),
        "GATEMESH_DATA_DIR": str(tmp_path / "data"),
        "GATEMESH_SHUTDOWN_GRACE_S": "sk-not-a-number",
    }
    env["GATEMESH_PROVIDERS"] = '[{"name": "p"}]'
    result = cli(env, "up", cwd=tmp_path)
    assert result.returncode == 2 and "invalid configuration: shutdown_grace_s:" in result.stderr
    assert "sk-not-a-number" not in result.stderr and "Traceback" not in result.stderr
