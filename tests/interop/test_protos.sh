#!/usr/bin/env bash
# Checks that meshid's trimmed .proto files (proto/) match the official Envoy,
# googleapis and SPIFFE definitions field number by field number (see
# tests/interop/check_protos.js and docs/protos.md). Run by `make test`
# through scripts/run-tests.sh.
set -euo pipefail
cd "$(dirname "$0")"
bash ./setup.sh
node ./check_protos.js "$@"
