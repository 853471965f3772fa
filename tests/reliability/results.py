"""The reliability results table: what every reliability test tried and what it found.

Tests add rows with `record(...)` (one row per fault of `test_process_faults.py`, where
"faults injected" counts the processes killed, the Redis restart and the PostgreSQL
connections terminated); `tests/conftest.py` prints the table at the
end of the run, and `python -m bench.soak` prints the same table for its longer run.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Row:
    test: str
    calls: int = 0
    faults: int = 0
    survived: int = 0
    inputs: int = 0
    checks: int = 0
    passed: int = 0
    lost: int = 0


ROWS: list[Row] = []

HEADER = ("test", "calls under load", "faults injected", "faults survived", "inputs tried", "checks", "passed", "lost")


def record(row: Row) -> Row:
    ROWS.append(row)
    return row


def table(rows: list[Row]) -> str:
    """A Markdown table, with a total row."""
    total = Row("total")
    for row in rows:
        for name in ("calls", "faults", "survived", "inputs", "checks", "passed", "lost"):
            setattr(total, name, getattr(total, name) + getattr(row, name))
    lines = ["| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
    for row in [*rows, total]:
        cells = [row.test, row.calls, row.faults, row.survived, row.inputs, row.checks, row.passed, row.lost]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join(lines)
