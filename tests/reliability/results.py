"""The reliability results table: what every reliability test tried and what it found.

Tests add rows with `record(...)` (one row per fault of `test_process_faults.py`, where
"faults injected" counts the processes killed, the Redis restart and the PostgreSQL
connections terminated); `tests/conftest.py` prints the table at the
end of the run, and `python -m bench.soak` prints the same table for its longer run.
Under pytest-xdist the rows are made in the workers and printed by the controller, so each
row is also appended, one JSON line, to the file `GATEMESH_RESULTS_FILE` names (set by the
controller before the workers start).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

RESULTS_ENV = "GATEMESH_RESULTS_FILE"


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
    path = os.environ.get(RESULTS_ENV)
    if path:
        with open(path, "a") as out:  # one short line per write: appends from two workers do not interleave
            out.write(json.dumps(asdict(row)) + "\n")
    return row


def recorded() -> list[Row]:
    """Every row of the run: from the shared file when there is one, else this process's."""
    path = os.environ.get(RESULTS_ENV)
    if not path or not Path(path).exists():
        return list(ROWS)
    return [Row(**json.loads(line)) for line in Path(path).read_text().splitlines() if line]


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
