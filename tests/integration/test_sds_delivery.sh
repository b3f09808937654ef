#!/usr/bin/env bash
# SDS delivery end to end with the real binaries: meshid server, meshid agent
# (join token, then its own SVID), registration entries for two uids, each
# uid receiving its own identity over the Workload API and SDS, an
# unregistered uid refused (and the refusal audited by the server), a mutual-TLS handshake with openssl using only
# what SDS delivered, rotation seen on an open SDS stream, and the agent
# surviving a server restart.
source "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TD=sds.test
SRV="$WORK/server"
AG="$WORK/agent"
SOCKDIR="$WORK/sock"
mkdir -p "$SRV" "$AG" "$SOCKDIR"
chmod 755 "$WORK" "$SOCKDIR"
SOCK="$SOCKDIR/agent.sock"
U1=41001; U2=41002; U3=41003
as_uid() { local u=$1; shift; setpriv --reuid="$u" --regid="$u" --clear-groups "$@"; }

# Interop clients must be readable by the test uids: use a world-readable copy.
bash "$ROOT/tests/interop/setup.sh" >/dev/null
JS="$WORK/js"
mkdir -p "$JS"
cp -r "$ROOT/tests/interop/"*.js "$ROOT/tests/interop/node_modules" "$JS/"
chmod -R a+rX "$JS"
# the binary too (the checkout may not be traversable by other uids)
cp "$MESHID" "$WORK/meshid" && chmod 755 "$WORK/meshid"
M="$WORK/meshid"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap 'cleanup; rm -rf "$WORK"' EXIT

start_server() { # PORT (0 picks one)
  rm -f "$WORK/server.out"   # so the wait below cannot see a previous run's ready line
  "$M" --data-dir "$SRV" server --listen "127.0.0.1:$1" >"$WORK/server.out" 2>"$WORK/server.err" &
  SPID=$!
  pids+=("$SPID")
  for _ in $(seq 100); do grep -q 'node API' "$WORK/server.out" 2>/dev/null && break; sleep 0.1; done
  grep -q 'node API' "$WORK/server.out" || { cat "$WORK/server.err"; fail "server did not start"; }
  PORT=$(sed -n 's/.*(port \([0-9]*\)).*/\1/p' "$WORK/server.out")
}

step "server with a fresh trust domain"
"$M" --data-dir "$SRV" ca init --trust-domain "$TD" >/dev/null
"$M" --data-dir "$SRV" bundle show >"$WORK/bundle.pem"
start_server 0
step "server listening on port $PORT"

step "join token and entries for two uids"
AGENT_ID="spiffe://$TD/meshid/agent/node1"
TOKEN=$("$M" --data-dir "$SRV" token generate --spiffe-id "$AGENT_ID" 2>/dev/null)
[ -n "$TOKEN" ] || fail "no token"
"$M" --data-dir "$SRV" entry create --spiffe-id "spiffe://$TD/w1" --parent-id "$AGENT_ID" \
  --selector "unix:uid:$U1" --ttl 20s >"$OUT" 2>"$ERR" || fail "entry w1"
"$M" --data-dir "$SRV" entry create --spiffe-id "spiffe://$TD/w2" --parent-id "$AGENT_ID" \
  --selector "unix:uid:$U2" --dns w2.local >"$OUT" 2>"$ERR" || fail "entry w2"
"$M" --data-dir "$SRV" entry list >"$OUT"
has "$OUT" "spiffe://$TD/w1"

step "agent attests with the token and serves the socket"
"$M" --data-dir "$AG" agent --server "127.0.0.1:$PORT" --server-name localhost \
  --join-token "$TOKEN" --trust-bundle "$WORK/bundle.pem" --socket "$SOCK" \
  >"$WORK/agent.out" 2>"$WORK/agent.err" &
APID=$!
pids+=("$APID")
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || { cat "$WORK/agent.err"; fail "agent socket missing"; }
[ "$(stat -c %a "$SOCK")" = 666 ] || fail "agent socket mode $(stat -c %a "$SOCK")"

step "each uid gets its own identity over the Workload API"
ok_fetch() { # UID ID DIR
  local t0=$SECONDS
  until as_uid "$1" "$M" svid fetch --socket "$SOCK" --write "$3" >"$OUT" 2>"$ERR"; do
    [ $((SECONDS - t0)) -lt 20 ] || fail "uid $1 got no SVID"
    sleep 0.3
  done
  openssl x509 -in "$3/svid.pem" -noout -ext subjectAltName >"$WORK/san" 2>&1
  has "$WORK/san" "URI:$2"
  openssl verify -CAfile "$3/bundle.pem" -untrusted "$3/svid.pem" "$3/svid.pem" >/dev/null 2>&1 \
    || fail "uid $1 SVID does not verify"
}
mkdir -p "$WORK/u1" "$WORK/u2" && chown $U1 "$WORK/u1" && chown $U2 "$WORK/u2"
ok_fetch $U1 "spiffe://$TD/w1" "$WORK/u1"
ok_fetch $U2 "spiffe://$TD/w2" "$WORK/u2"
has "$WORK/san" "DNS:w2.local"
[ "$(stat -c %a "$WORK/u1/svid.key")" = 600 ] || fail "svid.key mode"

step "an unregistered uid is refused"
rc=0; as_uid $U3 "$M" svid fetch --socket "$SOCK" >"$OUT" 2>"$ERR" || rc=$?
[ "$rc" -eq 1 ] || fail "uid $U3: exit $rc"
has "$ERR" "no identity issued"
# the agent reports the refusal (ReportDenials, about every second)
t0=$SECONDS
until "$M" --data-dir "$SRV" audit query --event workload.deny --json >"$OUT" 2>"$ERR" \
    && grep -q '"outcome":"denied"' "$OUT" && grep -q "\"uid\":$U3" "$OUT"; do
  [ $((SECONDS - t0)) -lt 5 ] || { cat "$OUT"; fail "refusal of uid $U3 not audited"; }
  sleep 0.3
done
has "$OUT" "\"actor\":\"agent:$AGENT_ID\""
has "$OUT" "unix:uid:$U3"
has "$OUT" '"api":"workload"'

step "issuance is audited with the agent, the entry and its selectors"
"$M" --data-dir "$SRV" audit query --spiffe-id "spiffe://$TD/w1" --json >"$OUT"
has "$OUT" '"event":"svid.issue"'
has "$OUT" "agent:$AGENT_ID"
has "$OUT" "unix:uid:$U1"
"$M" --data-dir "$SRV" audit query --event agent.attest --json >"$OUT"
has "$OUT" '"outcome":"ok"'

step "the token cannot be used twice"
rc=0; "$M" --data-dir "$WORK/agent2" agent --server "127.0.0.1:$PORT" --server-name localhost \
  --join-token "$TOKEN" --trust-bundle "$WORK/bundle.pem" --socket "$WORK/a2.sock" \
  >"$OUT" 2>"$ERR" || rc=$?
[ "$rc" -eq 1 ] || fail "reused token: exit $rc"
has "$ERR" "already used"

step "mutual TLS with openssl using only SDS-delivered certificates"
mkdir -p "$WORK/s1" "$WORK/s2" && chown $U1 "$WORK/s1" && chown $U2 "$WORK/s2"
as_uid $U1 node "$JS/sds_client.js" "$SOCK" write "$WORK/s1" >"$OUT" 2>"$ERR" || fail "sds write u1"
as_uid $U2 node "$JS/sds_client.js" "$SOCK" write "$WORK/s2" >"$OUT" 2>"$ERR" || fail "sds write u2"
tls_port=$((20000 + RANDOM % 20000))
openssl s_server -accept "127.0.0.1:$tls_port" -cert "$WORK/s1/cert.pem" -key "$WORK/s1/key.pem" \
  -cert_chain "$WORK/s1/cert.pem" -CAfile "$WORK/s1/ca.pem" -Verify 2 -verify_return_error \
  -www >"$WORK/s_server.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do (echo >/dev/tcp/127.0.0.1/$tls_port) 2>/dev/null && break; sleep 0.1; done
echo | openssl s_client -connect "127.0.0.1:$tls_port" -cert "$WORK/s2/cert.pem" \
  -key "$WORK/s2/key.pem" -cert_chain "$WORK/s2/cert.pem" -CAfile "$WORK/s2/ca.pem" \
  -verify_return_error >"$WORK/s_client.log" 2>&1 || { cat "$WORK/s_server.log"; fail "handshake"; }
has "$WORK/s_client.log" "Verify return code: 0 \(ok\)"
grep -q "spiffe://$TD/w1" <(openssl x509 -in "$WORK/s1/cert.pem" -noout -ext subjectAltName) \
  || fail "server cert is not w1"

step "rotation reaches an open SDS stream without asking again (TTL 20s)"
as_uid $U1 node "$JS/sds_client.js" "$SOCK" watch-rotation 16 >"$WORK/rot.out" 2>"$WORK/rot.err" \
  || { cat "$WORK/rot.err"; fail "watch-rotation"; }
n=$( (grep -o '"serial":"[0-9A-Fa-f]*"' "$WORK/rot.out" || true) | sort -u | wc -l)
[ "$n" -ge 2 ] || { cat "$WORK/rot.out"; fail "no rotation seen on the open stream ($n serials)"; }

step "server restart: the agent keeps serving, then reconnects"
kill "$SPID"; wait "$SPID" 2>/dev/null || true
sleep 1
ok_fetch $U2 "spiffe://$TD/w2" "$WORK/u2"
start_server "$PORT"
"$M" --data-dir "$SRV" entry create --spiffe-id "spiffe://$TD/w3" --parent-id "$AGENT_ID" \
  --selector "unix:uid:$U3" >"$OUT" 2>"$ERR" || fail "entry w3"
mkdir -p "$WORK/u3" && chown $U3 "$WORK/u3"
ok_fetch $U3 "spiffe://$TD/w3" "$WORK/u3"
kill -0 "$APID" || fail "agent died"

step "audit chain intact"
"$M" --data-dir "$SRV" audit verify >"$OUT" || fail "audit verify"
echo "all good"
