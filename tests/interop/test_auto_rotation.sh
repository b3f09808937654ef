#!/usr/bin/env bash
# `meshid server --auto-rotate`: with a 60 s intermediate, the server prepares a
# new intermediate at half its lifetime and activates it when a third remains
# (docs/ca.md), gated on the connected agent's acknowledgement; the workload
# then receives SVIDs from the new intermediate, and `ca status` shows the
# bundle spread while the server runs. Server and agent SVIDs live 20 s, so
# both are renewed many times: from start until past the old intermediate's
# expiry, every handshake with the server verifies (a new connection probed
# every second, as an agent makes one after each renewal) and the agent's log
# shows no failed handshake or call. The server once renewed its own SVID only
# every 30 s whatever its lifetime, serving it expired for 10 s of every 30.
MESH_CA_INIT_ARGS="--intermediate-ttl 60s"
source "$(dirname "$0")/lib_mesh.sh"
U1=45001
mesh_init auto.test
sql() { sqlite3 "$SRV/meshid.db" "$@"; }
# A new TLS connection to the node API, verified as an agent verifies it
# (trust bundle, host name); the server's leaf goes to $WORK/served.pem.
probe_server() {
  openssl s_client -connect "127.0.0.1:$PORT" -servername localhost -alpn h2 \
    -CAfile "$WORK/bundle.pem" -verify_return_error </dev/null >"$WORK/probe.out" 2>&1 \
    || { OUT="$WORK/probe.out"; fail "handshake with the server failed ($1)"; }
  openssl x509 -in "$WORK/probe.out" -out "$WORK/served.pem" 2>/dev/null || fail "no server certificate"
}
aki_of() { # the authority key id of a PEM certificate, lowercase hex
  openssl x509 -in "$1" -noout -ext authorityKeyIdentifier 2>/dev/null \
    | tr -d ' :' | grep -io '[0-9a-f]\{40,\}' | tr 'A-F' 'a-f' | head -1
}
mesh_start_server --auto-rotate --svid-ttl 20s --retire-grace 2s
mesh_start_agent "spiffe://$TD/meshid/agent/node1"
mesh_entry $U1 "spiffe://$TD/w" --ttl 10s
I1=$(sql "SELECT id FROM authorities WHERE kind='intermediate' AND state='active'")

step "ca status shows the bundle spread while the server runs"
t0=$SECONDS
until "$M" --data-dir "$SRV" ca status >"$OUT" 2>&1 && grep -q "node1 .* yes" "$OUT"; do
  [ $((SECONDS - t0)) -lt 20 ] || fail "no connected agent in the spread"
  probe_server "start"
  sleep 1
done
grep -q "bundle spread" "$OUT" || fail "no bundle spread section"

step "the server prepares, then activates, a new intermediate by itself"
t0=$SECONDS
until [ "$(sql "SELECT state FROM authorities WHERE id='$I1'")" = old ]; do
  [ $((SECONDS - t0)) -lt 75 ] || { sql "SELECT id, kind, state FROM authorities" >"$OUT"; fail "no automatic activation"; }
  probe_server "before the activation"
  sleep 1
done
I2=$(sql "SELECT id FROM authorities WHERE kind='intermediate' AND state='active'")
[ -n "$I2" ] && [ "$I2" != "$I1" ] || fail "no new active intermediate"
echo "   ${I1:0:16} -> ${I2:0:16} after $((SECONDS - t0)) s"
for ev in ca.prepare ca.activate; do
  "$M" --data-dir "$SRV" audit query --event "$ev" --json >"$OUT" || fail "audit query"
  grep -q '"actor":"system' "$OUT" || fail "$ev not audited as the server's own action"
done

step "the workload gets SVIDs from the new intermediate"
t0=$SECONDS
while :; do
  as_uid $U1 node "$JS/sds_client.js" "$SOCK" write "$WORK/u$U1/now" >/dev/null 2>&1 || true
  aki=$(aki_of "$WORK/u$U1/now/cert.pem")
  [ "$aki" = "$I2" ] && break
  [ $((SECONDS - t0)) -lt 30 ] || fail "workload still on ${aki:0:16}"
  probe_server "after the activation"
  sleep 1
done
echo "   after $((SECONDS - t0)) s"

step "past the old intermediate's expiry: every handshake verifies, the workload stays served"
I1_END=$(sql "SELECT not_after FROM authorities WHERE id='$I1'")
while [ "$(date +%s)" -le $((I1_END + 5)) ]; do
  probe_server "$(( $(date +%s) - I1_END )) s from the old intermediate's expiry"
  [ "$(aki_of "$WORK/served.pem")" = "$I2" ] || fail "the server still sends a chain through ${I1:0:16}"
  as_uid $U1 node "$JS/sds_client.js" "$SOCK" write "$WORK/u$U1/now" >"$OUT" 2>&1 || fail "SDS fetch"
  openssl x509 -in "$WORK/u$U1/now/cert.pem" -noout -checkend 0 >/dev/null || fail "workload served an expired SVID"
  [ "$(aki_of "$WORK/u$U1/now/cert.pem")" = "$I2" ] || fail "workload back on another intermediate"
  sleep 1
done
if grep -E "Handshake failed|certificate verify failed|RenewAgent failed|Sync stream ended" \
    "$WORK/agent.err" >"$OUT"; then
  fail "the agent lost the server for a while"
fi
"$M" --data-dir "$SRV" audit verify >"$OUT" || fail "audit verify"
echo "all good"
