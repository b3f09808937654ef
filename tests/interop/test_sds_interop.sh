#!/usr/bin/env bash
# Interop: independent clients (Node @grpc/grpc-js with Envoy's official
# protos, and the SPIFFE Workload API) against the real `meshid dev` agent
# socket: StreamSecrets with ACK, NACK and a stale nonce; DeltaSecrets with
# initial versions; FetchSecrets; every resource name; the Workload API with
# and without its security header.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
MESHID=${MESHID:-$ROOT/build/asan/bin/meshid}
bash "$ROOT/tests/interop/setup.sh" >/dev/null
WORK=$(mktemp -d /tmp/meshid-interop.XXXXXX)
DEV_PID=
trap '[ -n "$DEV_PID" ] && kill $DEV_PID 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; [ -f "$WORK/out" ] && cat "$WORK/out" >&2; exit 1; }
SDS="node $ROOT/tests/interop/sds_client.js"
WL="node $ROOT/tests/interop/workload_client.js"

"$MESHID" --data-dir "$WORK/var" dev --trust-domain interop.test --listen 127.0.0.1:0 --xds-listen 127.0.0.1:0 \
  >"$WORK/dev.out" 2>"$WORK/dev.err" &
DEV_PID=$!
SOCK="$WORK/var/run/agent.sock"
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || { cat "$WORK/dev.err"; fail "meshid dev did not start"; }
ME=$(sed -n 's/.*your entry *\(spiffe:[^ ]*\).*/\1/p' "$WORK/dev.out")
[ -n "$ME" ] || fail "no entry line in dev output"
# wait until the SVID is issued
for _ in $(seq 100); do $SDS "$SOCK" fetch default >"$WORK/out" 2>&1 && break; sleep 0.2; done

check() { # python expression over `lines` (parsed JSON lines of $WORK/out)
  python3 - "$WORK/out" "$1" <<'PY' || fail "check failed: $1"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
ok = eval(sys.argv[2], {"lines": lines})
sys.exit(0 if ok else 1)
PY
}
echo "-- StreamSecrets: default, ROOTCA, own SPIFFE ID, trust domain, ALL (one Secret each)"
$SDS "$SOCK" stream default ROOTCA "$ME" spiffe://interop.test ALL >"$WORK/out" 2>&1 || fail stream
check 'sorted(s["name"] for s in lines[0]["resources"]) == sorted(["default","ROOTCA","'"$ME"'","spiffe://interop.test","ALL"])'
check 'lines[0]["nonce"] != "" and lines[0]["version_info"] != "" and lines[0]["resources"][-1]["validation_context"]["custom_validator_config"]["trust_domains"][0]["name"] == "interop.test"'
echo "-- StreamSecrets: NACK keeps state, no resend"
$SDS "$SOCK" stream default --nack-next --quiet-ms 1500 >"$WORK/out" 2>&1 || fail nack
echo "-- StreamSecrets: a stale nonce is ignored"
$SDS "$SOCK" stream default --stale-check --quiet-ms 1500 >"$WORK/out" 2>&1 || fail stale
echo "-- DeltaSecrets: subscribe, then reconnect with initial versions: nothing resent"
$SDS "$SOCK" delta default ROOTCA >"$WORK/out" 2>&1 || fail delta
ver=$(python3 -c 'import json,sys
l=[json.loads(x) for x in open(sys.argv[1]) if x.startswith("{")][0]
print(next(r["version"] for r in l["resources"] if r["name"]=="default"))' "$WORK/out")
[ -n "$ver" ] || fail "no delta version"
$SDS "$SOCK" delta default ROOTCA --initial "default=$ver" --count 1 >"$WORK/out" 2>&1 || fail delta2
check '[r["name"] for l in lines for r in l.get("resources", [])] == ["ROOTCA"]'
echo "-- FetchSecrets: known names, unknown name"
$SDS "$SOCK" fetch default ROOTCA >"$WORK/out" 2>&1 || fail fetch
check 'len(lines[0]["resources"]) == 2'
! $SDS "$SOCK" fetch nosuchthing >"$WORK/out" 2>&1 || fail "unknown name accepted"
grep -q "unknown resource name" "$WORK/out" || fail "unknown name message"
echo "-- Workload API: FetchX509SVID, bundles, JWT bundles, no header, JWT-SVID"
$WL "$SOCK" fetch-x509 >"$WORK/out" 2>&1 || fail fetch-x509
grep -q "$ME" "$WORK/out" || fail "fetch-x509 lacks $ME"
$WL "$SOCK" bundles >"$WORK/out" 2>&1 || fail bundles
grep -q "interop.test" "$WORK/out" || fail "bundles lack the trust domain"
$WL "$SOCK" jwt-bundles >"$WORK/out" 2>&1 || fail jwt-bundles
$WL "$SOCK" no-header >"$WORK/out" 2>&1 || fail "missing header not refused with INVALID_ARGUMENT"
$WL "$SOCK" jwt-svid --expect-code 12 >"$WORK/out" 2>&1 || fail "jwt-svid not UNIMPLEMENTED"
echo "all good"
