#!/usr/bin/env bash
# The mutual-TLS traffic harness (tests/interop/mtls_pair.js) against the real
# binaries: a meshid server and agent, two workloads (uids 42001, 42002) with
# 20 s SVIDs, so the agent rotates them during the run. The pair runs ~25 s at
# 30 connections/s and must have zero failed handshakes on either side, with
# every side seeing at least one rotation of its own SVID, and each side seeing
# the other's rotated SVID in real handshakes. Then the harness is shown to
# fail when it should: a probe with SDS-delivered files succeeds, a probe with
# a certificate from an unrelated CA is refused (exit 1, counted by the
# server), and a client expecting the wrong server ID fails.
# Needs root (setpriv to the test uids). $MESHID picks the binary.
source "$(dirname "$0")/lib_mesh.sh"
RATE=${RATE:-30}
DURATION=${DURATION:-25}
U1=42001; U2=42002

step "server, join token, entries for uids $U1 and $U2 (TTL 20s), agent"
mesh_init mtls.test
ID1="spiffe://$TD/pair/server"; ID2="spiffe://$TD/pair/client"
mesh_start_server
mesh_start_agent "spiffe://$TD/meshid/agent/node1"
mesh_entry $U1 "$ID1" --ttl 20s
mesh_entry $U2 "$ID2" --ttl 20s

step "pair server as uid $U1"
start_pair_server $U1 "$ID2" "$WORK/pserver.log" "$WORK/u$U1/stats.json"
echo "   listening on 127.0.0.1:$TLS_PORT"

step "pair client as uid $U2: $RATE connections/s for ${DURATION}s"
rc=0
as_uid $U2 node "$JS/mtls_pair.js" client "$SOCK" "$TLS_PORT" --expect-server-id "$ID1" \
  --rate "$RATE" --duration "$DURATION" --stats "$WORK/u$U2/stats.json" >"$WORK/pclient.log" 2>&1 || rc=$?
OUT="$WORK/pclient.log"
[ "$rc" -eq 0 ] || fail "pair client exited $rc"
src=0; stop_pair_server || src=$?
C="$WORK/u$U2/stats.json"; S="$WORK/u$U1/stats.json"
echo "   client: $(jq_ "$C" '"ok=%d failed=%d rotations=%d elapsed=%.1fs" % (d["ok"], d["failed"], d["rotations"], d["elapsed_s"])')"
echo "   server: $(jq_ "$S" '"ok=%d failed=%d rotations=%d" % (d["ok"], d["failed"], d["rotations"])')"
[ "$(jq_ "$C" 'd["failed"]')" = 0 ] || fail "client counted failures"
[ "$(jq_ "$C" 'd["ok"] >= 0.8 * '"$RATE * $DURATION")" = True ] || fail "client stalled"
OUT="$WORK/pserver.log"
[ "$src" -eq 0 ] || fail "pair server exited $src"
[ "$(jq_ "$S" 'd["failed"]')" = 0 ] || fail "server counted failures"
[ "$(jq_ "$S" 'd["ok"]')" -ge "$(jq_ "$C" 'd["ok"]')" ] || fail "server accepted fewer than the client completed"

step "both sides rotated, and each saw the other's new SVID in handshakes"
[ "$(jq_ "$C" 'd["rotations"]')" -ge 1 ] || { OUT=$C; fail "client SVID never rotated"; }
[ "$(jq_ "$S" 'd["rotations"]')" -ge 1 ] || { OUT=$S; fail "server SVID never rotated"; }
# (a subset, not equality: an SVID that arrives in the last second may not
# have been used in a handshake before the run ended)
seen_rotated() { # WHO PEER_STATS OWN_STATS: PEER saw >= 2 of OWN's serials, none foreign
  python3 - "$2" "$3" <<'PY' || fail "$1 did not handshake with the rotated SVID"
import json, sys
peer, own = (json.load(open(f)) for f in sys.argv[1:3])
sys.exit(0 if len(peer["peer_serials"]) >= 2 and set(peer["peer_serials"]) <= set(own["own_serials"]) else 1)
PY
}
seen_rotated "client (server's SVIDs)" "$C" "$S"
seen_rotated "server (client's SVIDs)" "$S" "$C"

step "the harness detects failures"
start_pair_server $U1 "$ID2" "$WORK/pserver2.log" "$WORK/u$U1/stats2.json"
# a probe with the client's SDS-delivered files succeeds ...
as_uid $U2 node "$JS/sds_client.js" "$SOCK" write "$WORK/u$U2/sds" >"$OUT" 2>&1 || fail "sds write"
node "$JS/mtls_pair.js" probe "$TLS_PORT" --cert "$WORK/u$U2/sds/cert.pem" --key "$WORK/u$U2/sds/key.pem" \
  --ca "$WORK/u$U2/sds/ca.pem" --expect-server-id "$ID1" >"$OUT" 2>&1 || fail "probe with SDS files"
# ... one from an unrelated CA (same SPIFFE ID) is refused by the server
X="$WORK/x"; mkdir -p "$X"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=rogue-ca \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
  -keyout "$X/ca.key" -out "$X/ca.pem" >/dev/null 2>&1
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=rogue \
  -keyout "$X/key.pem" -out "$X/req.csr" >/dev/null 2>&1
printf 'subjectAltName=URI:%s\nextendedKeyUsage=clientAuth,serverAuth\nkeyUsage=critical,digitalSignature\n' \
  "$ID2" >"$X/ext"
openssl x509 -req -in "$X/req.csr" -CA "$X/ca.pem" -CAkey "$X/ca.key" -CAcreateserial -days 1 \
  -extfile "$X/ext" -out "$X/cert.pem" >/dev/null 2>&1
rc=0
node "$JS/mtls_pair.js" probe "$TLS_PORT" --cert "$X/cert.pem" --key "$X/key.pem" \
  --ca "$WORK/u$U2/sds/ca.pem" >"$OUT" 2>&1 || rc=$?
[ "$rc" -eq 1 ] || fail "probe with a rogue certificate: exit $rc, wanted 1"
grep -q '"ok":false,"error":"..*"' "$OUT" || fail "probe printed no error"
echo "   rogue probe refused: $(tr -d '\n' <"$OUT")"
# a client expecting another server identity fails (and says why)
rc=0
as_uid $U2 node "$JS/mtls_pair.js" client "$SOCK" "$TLS_PORT" --expect-server-id "spiffe://$TD/other" \
  --rate 10 --duration 1 >"$OUT" 2>&1 || rc=$?
[ "$rc" -eq 1 ] || fail "client with the wrong server ID: exit $rc, wanted 1"
grep -q '"ok":0,"failed":10,' "$OUT" || fail "wrong-ID client did not count 10 failures"
grep -q "expected spiffe://$TD/other" "$OUT" || fail "wrong-ID client error"
src=0; stop_pair_server || src=$?
OUT="$WORK/pserver2.log"
[ "$src" -eq 1 ] || fail "pair server saw no failure (exit $src)"
[ "$(jq_ "$WORK/u$U1/stats2.json" 'd["failed"] >= 1')" = True ] || fail "server did not count the rogue handshake"
grep -q 'peer certificate refused: UNABLE_TO_' "$WORK/u$U1/stats2.json" \
  || { OUT="$WORK/u$U1/stats2.json"; fail "server did not record why it refused the rogue certificate"; }
echo "all good"
