#!/usr/bin/env bash
# Contracts first: lint the protos with buf, check them for breaking changes against the
# previous commit on main, and fail when the generated code in gen/ has drifted from them.
set -euo pipefail
cd "$(dirname "$0")/.."

node_modules/.bin/buf lint

# The vendored buf/validate/validate.proto must be what the pinned npm package carries.
.venv/bin/python scripts/vendor_protovalidate.py --check

if git rev-parse --verify --quiet HEAD~1 >/dev/null && git cat-file -e HEAD~1:buf.yaml 2>/dev/null; then
  node_modules/.bin/buf breaking --against '.git#ref=HEAD~1'
else
  echo "proto-check: no previous commit with protos; breaking-change check skipped"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r gen "$tmp/committed"
.venv/bin/python scripts/gen_protos.py
if ! diff -r -q "$tmp/committed" gen >/dev/null; then
  diff -r -q "$tmp/committed" gen || true
  echo "proto-check: gen/ is out of date with protos/: run 'make gen' and commit the result" >&2
  exit 1
fi
echo "proto-check: lint, breaking and codegen drift OK"
