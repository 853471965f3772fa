"""The OpenAPI document tells the truth: schemathesis, with all of its checks, against the
whole mesh (`gatemesh up`: auth, billing, proxy and Envoy on PostgreSQL and Redis, the fake
upstream) through the edge, every operation of the document.

Its checks include, beyond "no server error": valid data per the schema is accepted
(positive_data_acceptance), invalid data is rejected (negative_data_rejection), statuses,
content types, headers and bodies conform to the document, methods the document does not
list are 405 with `Allow`, and authentication is not ignored. Kept small for CI: a few
examples per operation, deterministic generation, no example database.

It runs twice: with a user's API key, and with no credential at all (every response must
still be the documented one, 401s included; only positive_data_acceptance is left out,
as valid data without a credential must be refused). In both runs a hook
(`schemathesis_hooks.py`) hashes every table of every service database before each
call and fails any refused request (4xx/5xx) that changed one, and no refusal may be a
5xx.

Configured exceptions, each for a reason a schema cannot carry (`schemathesis.toml`): page
tokens are the server's to issue (the run asks for first pages), and the models are the
mesh's configuration. One probe is left out: the draft HTTP method QUERY, which Envoy's
HTTP/1 codec refuses with a bare 400 before any filter can answer 405 (every other
undeclared method, TRACE included, is checked).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.edge_mesh import Mesh, running_mesh
from tests.reliability.results import Row, record
from tests.support import ROOT

pytestmark = pytest.mark.e2e
SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
CONFIG = Path(__file__).with_name("schemathesis.toml")
MAX_EXAMPLES = 5
ANONYMOUS_EXAMPLES = 3  # without a credential most operations stop at the 401


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory.mktemp("schemathesis")) as running:
        yield running


def run_schemathesis(mesh: Mesh, tmp_path: Path, examples: int, *options: str) -> Counter[int]:
    """One schemathesis run over the whole document, with our hooks: the refusals that
    were checked to have written nothing, by status."""
    report = tmp_path / "refusals.txt"
    command = [
        SCHEMATHESIS,
        "--config-file",
        str(CONFIG),
        "run",
        f"{mesh.url}/openapi.json",
        "--max-examples",
        str(examples),
        "--generation-deterministic",
        "--exclude-method",
        "QUERY",
        "--seed",
        "20261202",
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
        *options,
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.e2e.schemathesis_hooks",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "GATEMESH_TEST_SNAPSHOT_DATABASES": json.dumps(mesh.databases),
        "GATEMESH_TEST_SNAPSHOT_REPORT": str(report),
    }
    # In tmp_path: schemathesis keeps a cache (.schemathesis/) in its working directory.
    done = subprocess.run(command, capture_output=True, text=True, timeout=1500, cwd=tmp_path, env=env, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-20000:]
    operations = sum(len(methods) for methods in httpx.get(f"{mesh.url}/openapi.json").json()["paths"].values())
    assert f"Tested: {operations}" in output, output[-5000:]
    refusals = Counter(int(line) for line in report.read_text().split())
    assert refusals, "the refused_requests_write_nothing check never ran"
    assert not any(status >= 500 for status in refusals), refusals
    return refusals


def test_every_operation_passes_all_of_schemathesis_checks(mesh: Mesh, tmp_path: Path) -> None:
    user = mesh.rest_user(credit_micros=50_000_000)
    refusals = run_schemathesis(
        mesh, tmp_path, MAX_EXAMPLES, "--checks", "all", "--header", f"Authorization: Bearer {user.api_key}"
    )
    record(Row("schemathesis, API key: refusals checked to write nothing", inputs=refusals.total(), checks=1, passed=1))


def test_every_operation_without_credentials_is_refused_in_the_documented_shape(mesh: Mesh, tmp_path: Path) -> None:
    """The same run with no credential at all: every response still conforms to the
    document (401s included), nothing crashes, and the refusals write nothing. Only
    `positive_data_acceptance` is left out: valid data without a credential is refused
    (401) on every operation that needs one, as it must be."""
    refusals = run_schemathesis(
        mesh,
        tmp_path,
        ANONYMOUS_EXAMPLES,
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        # Stateful chains need what a credential creates: without one each stops at its first 401.
        "--phases",
        "examples,coverage,fuzzing",
    )
    assert refusals[401] > 0, refusals
    record(
        Row(
            "schemathesis, no credential: refusals checked to write nothing",
            inputs=refusals.total(),
            checks=2,
            passed=2,
        )
    )
