"""Reliability soak: `python -m bench.soak [--accounts A] [--keys K] [--concurrency C] [--rounds R]`.

The CI test `tests/reliability/test_load.py` with larger numbers and for longer: the same
chaos mesh (auth, billing and proxy as separate processes on fresh PostgreSQL databases, a
private redis-server, Envoy, the fake upstream drawing 500 / 429 / hangs / cut streams /
missing usage at random), `R` rounds of `A x K` calls (one API key each) at concurrency `C`
through the edge, with clients leaving at random, and after every round the same billing
invariants (`tests.reliability.load.check_billing`). Prints the results table and, per
round, what the clients saw. Defaults: 10 accounts x 100 keys, all 1,000 at once, 1 round.
Exits non-zero when any invariant failed.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from tests.reliability.harness import chaos_mesh
from tests.reliability.load import check_billing, load_row, outcomes, plan_calls, run_load, wait_no_open_hold
from tests.reliability.results import table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10)
    parser.add_argument("--keys", type=int, default=100, help="keys (= calls) per account and round")
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--leave-rate", type=float, default=0.1, help="share of clients that leave early")
    parser.add_argument("--hold-wait-s", type=float, default=120, help="how long holds may take to close")
    args = parser.parse_args()
    rows, failed = [], 0
    with tempfile.TemporaryDirectory(prefix="gm-soak-") as tmp, chaos_mesh(Path(tmp), traces=False) as mesh:
        drawn_before: Counter[str] = Counter()
        for number in range(1, args.rounds + 1):
            accounts = asyncio.run(mesh.accounts(args.accounts, args.keys, 50_000_000))
            calls = plan_calls(accounts, random.Random(number), args.leave_rate)
            seconds = asyncio.run(run_load(mesh, calls, args.concurrency))
            seen = outcomes(calls)
            waited = time.monotonic()
            still_open = asyncio.run(wait_no_open_hold(mesh, args.hold_wait_s))
            closed_s = time.monotonic() - waited
            verdicts = asyncio.run(check_billing(mesh, accounts, calls, args.hold_wait_s))
            drawn = Counter(mesh.upstream_stats()["drawn"])
            name = f"soak round {number}: {len(calls)} calls, concurrency {args.concurrency}"
            rows.append(load_row(name, calls, dict(drawn - drawn_before), verdicts))
            drawn_before = drawn
            bad = [v for v in verdicts if not v.passed]
            failed += len(bad)
            print(f"round {number}: {len(calls)} calls in {seconds:.1f} s, clients saw {dict(seen)}", flush=True)
            print(f"  open holds: {still_open} after {closed_s:.1f} s (all holds closed when 0)", flush=True)
            for verdict in bad:
                print(f"  FAILED {verdict.name}: {verdict.failures[:5]}", flush=True)
    print(table(rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
