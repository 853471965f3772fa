#!/usr/bin/env bash
# The whole check: protos, lint, then every test against real PostgreSQL and Redis.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/proto_check.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
