#!/usr/bin/env bash
# Wheels for the image, built on this machine (pip inside `docker build` cannot verify the
# registry's certificate here): the exact runtime pins of the lock, then the project itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=deploy/.wheels
mkdir -p "$out"
.venv/bin/python deploy/scripts/runtime_requirements.py >"$out/requirements.txt"
.venv/bin/python -m pip wheel --quiet --no-deps -r "$out/requirements.txt" -w "$out" 2>&1 | grep -v "^WARNING: Location" || true
rm -f "$out"/gatemesh-*.whl
rm -rf build
.venv/bin/python -m pip wheel --quiet --no-deps --no-build-isolation . -w "$out" 2>&1 | grep -v "^WARNING: Location" || true
rm -rf build
ls "$out"/gatemesh-*.whl >/dev/null
