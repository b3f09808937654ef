#!/usr/bin/env bash
# Installs the interop test dependencies (tests/interop/package-lock.json) into
# tests/interop/node_modules with `npm ci`. Idempotent: does nothing when
# node_modules was installed from the current lock file (a stamp in
# node_modules records the lock's hash). Exits non-zero with a clear message
# if node/npm are missing or the install fails.
set -euo pipefail
cd "$(dirname "$0")"

stamp=node_modules/.meshid-lock.sha256

die() { echo "tests/interop/setup.sh: $*" >&2; exit 1; }

command -v node >/dev/null 2>&1 || die "node not found (Node 20+ is needed; see scripts/install-deps.sh)"
command -v npm >/dev/null 2>&1 || die "npm not found (Node 20+ with npm is needed)"
[ -f package-lock.json ] || die "package-lock.json missing; it pins the interop dependencies"

want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ -d node_modules ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

echo "tests/interop/setup.sh: installing dependencies (npm ci)"
log=$(mktemp "${TMPDIR:-/tmp}/meshid-npm-ci.XXXXXX")
if ! npm ci --no-audit --no-fund >"$log" 2>&1; then
  tail -n 20 "$log" >&2
  die "npm ci failed (full log: $log); is the npm registry reachable?"
fi
rm -f "$log"
echo "$want" >"$stamp"
