# Shared set-up for tests that run the real meshid server and agent with
# workloads under other uids (sourced; needs root for setpriv).
#   mesh_init TD                 work dir, world-readable copies of the binary and
#                                the Node clients, `ca init`; sets M, JS, SRV, SOCK
#   mesh_start_server [ARGS...]  `meshid server --listen 127.0.0.1:0 ARGS`; sets PORT
#   mesh_start_agent AGENT_ID    token bound to AGENT_ID, then the agent on $SOCK
#   mesh_entry UID ID [ARGS...]  a registration entry for unix:uid:UID under the agent
#   start_pair_server UID PEER_ID LOG STATS; stop_pair_server   (mtls_pair.js server)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
MESHID=${MESHID:-$ROOT/build/asan/bin/meshid}
[ -x "$MESHID" ] || { echo "no meshid binary at $MESHID (make build/asan/bin/meshid)"; exit 1; }
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:exitcode=86}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:exitcode=86}

WORK=$(mktemp -d /tmp/meshid-mesh.XXXXXX)
chmod 755 "$WORK"
OUT="$WORK/out"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap 'cleanup; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; [ -f "$OUT" ] && tail -n 30 "$OUT" >&2; exit 1; }
step() { echo "-- $*"; }
as_uid() { local u=$1; shift; setpriv --reuid="$u" --regid="$u" --clear-groups "$@"; }
jq_() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {"d": d}))' "$@"; }

mesh_init() {
  TD=$1
  SRV="$WORK/server"; AG="$WORK/agent"; SOCKDIR="$WORK/sock"; SOCK="$SOCKDIR/agent.sock"
  mkdir -p "$SRV" "$AG" "$SOCKDIR"
  chmod 755 "$SOCKDIR"
  bash "$ROOT/tests/interop/setup.sh" >/dev/null
  JS="$WORK/js"
  mkdir -p "$JS"
  cp -r "$ROOT/tests/interop/"*.js "$ROOT/tests/interop/node_modules" "$JS/"
  chmod -R a+rX "$JS"
  cp "$MESHID" "$WORK/meshid" && chmod 755 "$WORK/meshid"
  M="$WORK/meshid"
  # shellcheck disable=SC2086
  "$M" --data-dir "$SRV" ca init --trust-domain "$TD" ${MESH_CA_INIT_ARGS:-} >/dev/null
  "$M" --data-dir "$SRV" bundle show >"$WORK/bundle.pem"
}

mesh_start_server() {
  rm -f "$WORK/server.out"
  "$M" --data-dir "$SRV" server --listen "127.0.0.1:${MESH_PORT:-0}" "$@" \
    >"$WORK/server.out" 2>"$WORK/server.err" &
  SPID=$!
  pids+=($SPID)
  for _ in $(seq 100); do grep -q 'node API' "$WORK/server.out" 2>/dev/null && break; sleep 0.1; done
  grep -q 'node API' "$WORK/server.out" || { cat "$WORK/server.err"; fail "server did not start"; }
  PORT=$(sed -n 's/.*(port \([0-9]*\)).*/\1/p' "$WORK/server.out")
}

mesh_start_agent() {
  AGENT_ID=$1
  local token
  token=$("$M" --data-dir "$SRV" token generate --spiffe-id "$AGENT_ID" 2>/dev/null)
  [ -n "$token" ] || fail "no token"
  "$M" --data-dir "$AG" agent --server "127.0.0.1:$PORT" --server-name localhost \
    --join-token "$token" --trust-bundle "$WORK/bundle.pem" --socket "$SOCK" \
    >"$WORK/agent.out" 2>"$WORK/agent.err" &
  APID=$!
  pids+=($APID)
  for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
  [ -S "$SOCK" ] || { cat "$WORK/agent.err"; fail "agent socket missing"; }
}

mesh_entry() {
  local uid=$1 id=$2; shift 2
  "$M" --data-dir "$SRV" entry create --spiffe-id "$id" --parent-id "$AGENT_ID" \
    --selector "unix:uid:$uid" "$@" >"$OUT" 2>&1 || fail "entry $id"
  mkdir -p "$WORK/u$uid" && chown "$uid" "$WORK/u$uid"
}

start_pair_server() { # UID PEER_ID LOG STATS; sets PSRV and TLS_PORT
  # setpriv directly (not as_uid) so that $! is node itself
  setpriv --reuid="$1" --regid="$1" --clear-groups node "$JS/mtls_pair.js" server "$SOCK" 0 \
    --expect-peer-id "$2" --stats "$4" >"$3" 2>&1 &
  PSRV=$!
  pids+=($PSRV)
  for _ in $(seq 200); do grep -q '"listening"' "$3" 2>/dev/null && break; sleep 0.1; done
  grep -q '"listening"' "$3" || { OUT=$3; fail "pair server did not start"; }
  TLS_PORT=$(sed -n 's/.*"listening":\([0-9]*\).*/\1/p' "$3")
}
stop_pair_server() { kill -TERM "$PSRV"; local rc=0; wait "$PSRV" || rc=$?; return $rc; }
