#!/usr/bin/env bash
# Runs the whole test suite against already-built binaries (see `make test`):
# unit tests (cmocka, ASan+UBSan), fuzz corpus replay, integration tests
# (the real binary, built with ASan+UBSan) and lint. Ends with one summary
# line; exits non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:exitcode=86"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=86"
export LSAN_OPTIONS="exitcode=86"

pass=0
fail=0
failed=()
logdir=build/test-logs
rm -rf "$logdir"
mkdir -p "$logdir"

run() { # name, command...
  local name=$1; shift
  local log="$logdir/${name//\//_}.log"
  local t0=$SECONDS
  if "$@" >"$log" 2>&1; then
    pass=$((pass + 1))
    printf 'PASS  %-44s %3ds\n' "$name" $((SECONDS - t0))
  else
    fail=$((fail + 1))
    failed+=("$name")
    printf 'FAIL  %-44s %3ds  (log: %s)\n' "$name" $((SECONDS - t0)) "$log"
    tail -n 30 "$log" | sed 's/^/      | /'
  fi
}

echo "== unit tests"
for t in build/asan/tests/unit_*; do
  [ -x "$t" ] || continue
  run "unit/$(basename "$t" | sed 's/^unit_//')" "$t"
done

echo "== fuzz corpus replay"
for f in build/fuzz/bin/fuzz_*; do
  [ -x "$f" ] || continue
  n=$(basename "$f")
  corpus=tests/fuzz/corpus/$n
  if [ -d "$corpus" ] && [ -n "$(ls -A "$corpus")" ]; then
    run "fuzz/$n" bash -c "find '$corpus' -type f -print0 | xargs -0 '$f' -runs=1"
  else
    run "fuzz/$n" bash -c "echo 'no corpus in $corpus'; false"
  fi
done

echo "== integration tests"
export MESHID="$PWD/build/asan/bin/meshid"
export MESHID_REL="$PWD/bin/meshid"
for t in tests/integration/test_*.sh; do
  [ -f "$t" ] || continue
  run "integration/$(basename "$t" .sh)" bash "$t"
done

echo "== interop tests"
for t in tests/interop/test_*.sh; do
  [ -f "$t" ] || continue
  run "interop/$(basename "$t" .sh)" bash "$t"
done

echo "== lint"
run "lint" bash scripts/lint.sh

echo
if [ "$fail" -eq 0 ]; then
  echo "make test: all $pass passed"
  exit 0
fi
echo "make test: $fail of $((pass + fail)) FAILED: ${failed[*]}"
exit 1
