# Shared helpers for integration tests. Each test script sources this, runs
# the real binary ($MESHID, built with ASan+UBSan by `make test`) in a fresh
# temporary data directory, and exits non-zero on the first failed check.
set -euo pipefail
: "${MESHID:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build/asan/bin/meshid}"
[ -x "$MESHID" ] || { echo "no meshid binary at $MESHID (run make test)"; exit 1; }
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:exitcode=86}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:exitcode=86}

WORK=$(mktemp -d /tmp/meshid-it.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export MESHID_DATA_DIR="$WORK/var"
OUT="$WORK/out"
ERR="$WORK/err"

fail() { echo "FAIL: $*" >&2; echo "--- stdout:" >&2; cat "$OUT" >&2 2>/dev/null || true
         echo "--- stderr:" >&2; cat "$ERR" >&2 2>/dev/null || true; exit 1; }
step() { echo "-- $*"; }

# ok CMD...: runs meshid, expects exit 0.
ok() { "$MESHID" "$@" >"$OUT" 2>"$ERR" || fail "meshid $* exited $?"; }
# fails CODE CMD...: runs meshid, expects exit CODE and a one-line error.
fails() {
  local want=$1; shift
  local rc=0
  "$MESHID" "$@" >"$OUT" 2>"$ERR" || rc=$?
  [ "$rc" -eq "$want" ] || fail "meshid $* exited $rc, wanted $want"
  if [ "$want" -eq 1 ]; then
    grep -q '^meshid: error: ' "$ERR" || fail "meshid $*: no 'meshid: error:' line"
    [ "$(grep -c . "$ERR")" -eq 1 ] || fail "meshid $*: error is not one line"
  fi
}
# has FILE PATTERN: FILE matches the extended regex.
has() { grep -Eq -- "$2" "$1" || fail "$1 lacks /$2/"; }
hasnt() { ! grep -Eq -- "$2" "$1" || fail "$1 has /$2/"; }
sql() { sqlite3 "$MESHID_DATA_DIR/meshid.db" "$@"; }
