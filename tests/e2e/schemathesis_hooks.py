"""schemathesis hooks of tests/e2e/test_schemathesis.py (loaded with SCHEMATHESIS_HOOKS):
a check that a refused request (any 4xx or 5xx) wrote nothing.

Before each call every table of every service database is hashed
(`tests/reliability/snapshots.py`); after a refusal the hashes must be the same, except
for the tables in WRITTEN_WHEN_REFUSED, each for a reason. The databases come from
GATEMESH_TEST_SNAPSHOT_DATABASES (JSON, service -> URL); each refusal checked is counted
in the file GATEMESH_TEST_SNAPSHOT_REPORT names. schemathesis runs with one
worker, so calls and checks alternate; after a served model call, whose settle reaches
billing just after the answer, the next snapshot waits for the tables to be quiet.
"""

from __future__ import annotations

import json
import os
from typing import Any

import schemathesis

from tests.reliability.snapshots import Snapshots

# Operation -> tables a refused call may write to.
WRITTEN_WHEN_REFUSED: dict[str, set[str]] = {
    # A failed sign-in is itself the event auth's security log is for.
    "POST /api/v1/sessions": {"auth.security_events"},
}
_snapshots: list[Snapshots] = []
_before: dict[int, dict[str, str]] = {}
_served_model_call: list[bool] = [False]


def snapshots() -> Snapshots:
    if not _snapshots:
        _snapshots.append(Snapshots(json.loads(os.environ["GATEMESH_TEST_SNAPSHOT_DATABASES"])))
    return _snapshots[0]


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: schemathesis.Case, kwargs: dict[str, Any]) -> None:
    _before[id(case)] = snapshots().settled() if _served_model_call[0] else snapshots().take()


@schemathesis.hook
def after_call(context: schemathesis.HookContext, case: schemathesis.Case, response: schemathesis.Response) -> None:
    _served_model_call[0] = case.operation.path.startswith("/v1/") and response.status_code < 400


@schemathesis.check
def refused_requests_write_nothing(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    before = _before.pop(id(case), None)
    if before is None or response.status_code < 400:
        return None
    name = f"{case.operation.method.upper()} {case.operation.path}"
    changed = Snapshots.changed(before, snapshots().take()) - WRITTEN_WHEN_REFUSED.get(name, set())
    if changed:
        raise AssertionError(f"refused with {response.status_code} but wrote to {sorted(changed)}")
    tally(response.status_code)
    return True


def tally(status: int) -> None:
    """Count a checked refusal in GATEMESH_TEST_SNAPSHOT_REPORT (one status a line), so the
    test knows the check ran and how often."""
    with open(os.environ["GATEMESH_TEST_SNAPSHOT_REPORT"], "a") as report:
        report.write(f"{status}\n")
