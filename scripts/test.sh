#!/usr/bin/env bash
# The whole check: protos, lint, types (mypy over services/, [tool.mypy] in pyproject.toml),
# then every test against real PostgreSQL and Redis.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/proto_check.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# Two workers, a test file each at a time (module-scoped meshes stay on one worker): most of
# the suite waits on real processes starting, so two workers on two cores halve its time.
.venv/bin/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile "$@"
