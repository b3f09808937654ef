#!/usr/bin/env bash
# `meshid server --auto-rotate`: with a 60 s intermediate, the server prepares a
# new intermediate at half its lifetime and activates it when a third remains
# (docs/ca.md), gated on the connected agent's acknowledgement; the workload
# then receives SVIDs from the new intermediate, and `ca status` shows the
# bundle spread while the server runs.
MESH_CA_INIT_ARGS="--intermediate-ttl 60s"
source "$(dirname "$0")/lib_mesh.sh"
U1=45001
mesh_init auto.test
sql() { sqlite3 "$SRV/meshid.db" "$@"; }
mesh_start_server --auto-rotate --svid-ttl 20s --retire-grace 2s
mesh_start_agent "spiffe://$TD/meshid/agent/node1"
mesh_entry $U1 "spiffe://$TD/w" --ttl 10s
I1=$(sql "SELECT id FROM authorities WHERE kind='intermediate' AND state='active'")

step "ca status shows the bundle spread while the server runs"
t0=$SECONDS
until "$M" --data-dir "$SRV" ca status >"$OUT" 2>&1 && grep -q "node1 .* yes" "$OUT"; do
  [ $((SECONDS - t0)) -lt 20 ] || fail "no connected agent in the spread"
  sleep 1
done
grep -q "bundle spread" "$OUT" || fail "no bundle spread section"

step "the server prepares, then activates, a new intermediate by itself"
t0=$SECONDS
until [ "$(sql "SELECT state FROM authorities WHERE id='$I1'")" = old ]; do
  [ $((SECONDS - t0)) -lt 75 ] || { sql "SELECT id, kind, state FROM authorities" >"$OUT"; fail "no automatic activation"; }
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
  aki=$(openssl x509 -in "$WORK/u$U1/now/cert.pem" -noout -ext authorityKeyIdentifier 2>/dev/null \
    | tr -d ' :' | grep -io '[0-9a-f]\{40,\}' | tr 'A-F' 'a-f' | head -1)
  [ "$aki" = "$I2" ] && break
  [ $((SECONDS - t0)) -lt 30 ] || fail "workload still on ${aki:0:16}"
  sleep 1
done
"$M" --data-dir "$SRV" audit verify >"$OUT" || fail "audit verify"
echo "all good"
