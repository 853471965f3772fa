"""Prints the reliability results table at the end of a run that included these tests."""

from __future__ import annotations

import pytest

from tests.reliability.results import ROWS, table


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if ROWS:
        terminalreporter.section("reliability results")
        terminalreporter.write_line(table(ROWS))
