#!/usr/bin/env bash
# CA rotation with zero failed handshakes (issue 4). Two workloads (uids
# 43001 server, 43002 client) keep making mutual-TLS connections at 30/s,
# each always with its latest SDS-delivered certificate and bundle, while
# the test rotates the intermediate (prepare -> activate -> old -> removed),
# then the root (the same), then prepares and activates a third root and
# taints and revokes the second one. Every handshake must succeed; after the
# revoke, a certificate chained to the revoked root must be refused.
source "$(dirname "$0")/lib_mesh.sh"
U1=43001; U2=43002
RATE=${RATE:-30}

mesh_init rotation.test
ID1="spiffe://$TD/rot/server"; ID2="spiffe://$TD/rot/client"
sql() { sqlite3 "$SRV/meshid.db" "$@"; }
id_of() { sql "SELECT id FROM authorities WHERE kind = '$1' AND state = '$2' ORDER BY rowid DESC LIMIT 1"; }
state_of() { sql "SELECT state FROM authorities WHERE id = '$1'"; }
ca() { "$M" --data-dir "$SRV" ca "$@" >"$OUT" 2>&1 || fail "ca $*"; cat "$OUT"; }
wait_state() { # ID STATE SECONDS
  local t0=$SECONDS
  until [ "$(state_of "$1")" = "$2" ]; do
    if [ $((SECONDS - t0)) -ge "$3" ]; then
      echo "certificates still live under ${1:0:16}:"
      sql "SELECT spiffe_id, not_after - strftime('%s','now') FROM certificates
           WHERE authority_id = '$1' AND not_after > strftime('%s','now') - 10"
      fail "authority ${1:0:16} is $(state_of "$1"), not $2 after $3 s"
    fi
    sleep 1
  done
  echo "   ${1:0:16} is $2 after $((SECONDS - t0)) s"
}
signer_of() { # CERT: the leaf's authority key id (= the intermediate's id)
  openssl x509 -in "$1" -noout -ext authorityKeyIdentifier 2>/dev/null \
    | tr -d ' :' | grep -io '[0-9a-f]\{40,\}' | tr 'A-F' 'a-f' | head -1
}
both_signed_by() { # INTERMEDIATE_ID SECONDS: both workloads' current SVIDs come from it
  local t0=$SECONDS
  while :; do
    as_uid $U1 node "$JS/sds_client.js" "$SOCK" write "$WORK/u$U1/now" >/dev/null 2>&1 || true
    as_uid $U2 node "$JS/sds_client.js" "$SOCK" write "$WORK/u$U2/now" >/dev/null 2>&1 || true
    [ "$(signer_of "$WORK/u$U1/now/cert.pem")" = "$1" ] && \
      [ "$(signer_of "$WORK/u$U2/now/cert.pem")" = "$1" ] && break
    [ $((SECONDS - t0)) -lt "$2" ] || fail "workloads not re-issued by ${1:0:16} within $2 s"
    sleep 1
  done
  echo "   both workloads hold SVIDs from ${1:0:16} after $((SECONDS - t0)) s"
}

step "server (retire grace 2s, agent SVIDs 20s), agent, two workloads with 16s SVIDs"
mesh_start_server --retire-grace 2s --svid-ttl 20s   # agent SVIDs rotate too, or they keep old authorities alive
mesh_start_agent "spiffe://$TD/meshid/agent/node1"
mesh_entry $U1 "$ID1" --ttl 16s
mesh_entry $U2 "$ID2" --ttl 16s

step "traffic: $RATE mutual-TLS connections/s from uid $U2 to uid $U1"
start_pair_server $U1 "$ID2" "$WORK/pserver.log" "$WORK/u$U1/stats.json"
# setpriv directly (not the as_uid function) so that $! is node itself
setpriv --reuid=$U2 --regid=$U2 --clear-groups node "$JS/mtls_pair.js" client "$SOCK" "$TLS_PORT" \
  --expect-server-id "$ID1" --rate "$RATE" --duration 900 --stats "$WORK/u$U2/stats.json" >"$WORK/pclient.log" 2>&1 &
PCLI=$!
pids+=($PCLI)
sleep 3
grep -q '"ok":[1-9]' "$WORK/pclient.log" || { OUT="$WORK/pclient.log"; fail "no traffic"; }

step "intermediate: prepare -> activate -> old -> removed"
I1=$(id_of intermediate active); R1=$(id_of root active)
ca prepare
I2=$(id_of intermediate prepared)
ca activate "${I2:0:16}" --timeout 30s
[ "$(state_of "$I1")" = old ] || fail "I1 is $(state_of "$I1")"
both_signed_by "$I2" 30
wait_state "$I1" removed 60

step "root: prepare -> activate -> old -> removed"
ca prepare --root
R2=$(id_of root prepared); I3=$(id_of intermediate prepared)
"$M" --data-dir "$SRV" bundle show | grep -c 'BEGIN CERTIFICATE' | grep -qx 2 || fail "2 roots expected"
sleep 2   # the new root spreads to the agent and both workloads before anything is signed by it
ca activate "${I3:0:16}" --timeout 30s
both_signed_by "$I3" 30
wait_state "$I2" removed 60
wait_state "$R1" removed 60

step "taint and revoke: a third root, then R2 tainted (immediate re-issue) and revoked"
"$M" --data-dir "$SRV" svid mint --spiffe-id "$ID2" --ttl 1h --write "$WORK/r2cert" >"$OUT" 2>&1 \
  || fail "mint under R2"
node "$JS/mtls_pair.js" probe "$TLS_PORT" --cert "$WORK/r2cert/svid.pem" --key "$WORK/r2cert/svid.key" \
  --ca "$WORK/r2cert/bundle.pem" >"$OUT" 2>&1 || fail "control probe chained to R2 refused before revoke"
ca prepare --root
R3=$(id_of root prepared); I4=$(id_of intermediate prepared)
sleep 2
ca activate "${I4:0:16}" --timeout 30s
ca taint "${R2:0:16}"
both_signed_by "$I4" 15
sleep 2
ca revoke "${R2:0:16}"
[ "$(state_of "$R2")" = revoked ] || fail "R2 is $(state_of "$R2")"
"$M" --data-dir "$SRV" bundle show >"$WORK/bundle-after.pem"
[ "$(grep -c 'BEGIN CERTIFICATE' "$WORK/bundle-after.pem")" -eq 1 ] || fail "bundle should hold only R3"
sleep 3   # traffic continues on the new bundle
rc=0
node "$JS/mtls_pair.js" probe "$TLS_PORT" --cert "$WORK/r2cert/svid.pem" --key "$WORK/r2cert/svid.key" \
  --ca "$WORK/bundle-after.pem" >"$OUT" 2>&1 || rc=$?
[ "$rc" -eq 1 ] || fail "a certificate chained to the revoked root was accepted (exit $rc)"

step "zero failed handshakes on either side"
kill -TERM "$PCLI"; crc=0; wait "$PCLI" || crc=$?
src=0; stop_pair_server || src=$?
C="$WORK/u$U2/stats.json"; S="$WORK/u$U1/stats.json"
echo "   client: $(jq_ "$C" '"ok=%d failed=%d rotations=%d" % (d["ok"], d["failed"], d["rotations"])')"
echo "   server: $(jq_ "$S" '"ok=%d failed=%d" % (d["ok"], d["failed"])')"
OUT="$C"
[ "$(jq_ "$C" 'd["failed"]')" = 0 ] || fail "the client saw failed handshakes"
[ "$crc" -eq 0 ] || { OUT="$WORK/pclient.log"; fail "pair client exited $crc"; }
[ "$(jq_ "$C" 'd["ok"] >= 1000')" = True ] || fail "too little traffic"
# the server counted exactly one refusal: the revoked-root probe
OUT="$S"
[ "$(jq_ "$S" 'd["failed"]')" = 1 ] || fail "the server saw failures other than the revoked-root probe"

step "every transition is in the audit log, and the log verifies"
for ev in ca.prepare ca.activate ca.taint ca.revoke ca.retire; do
  "$M" --data-dir "$SRV" audit query --event "$ev" --json >"$OUT" || fail "audit query"
  [ -s "$OUT" ] || fail "no $ev event"
done
"$M" --data-dir "$SRV" audit verify >"$OUT" || fail "audit verify"
echo "all good"
