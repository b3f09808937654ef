#!/usr/bin/env bash
# An agent that is offline while a new root is prepared and activated never
# serves an SVID its peers cannot verify (issue 4). Agent A stays online,
# agent B is stopped; the root is rotated (B, disconnected, does not block
# activation); B comes back, receives the new bundle before any new SVID, and
# from then on every SVID either agent serves verifies against the bundle the
# other agent's workload holds, in both directions.
source "$(dirname "$0")/lib_mesh.sh"
UA=44001; UB=44002
mesh_init offline.test
IDA="spiffe://$TD/a"; IDB="spiffe://$TD/b"
mesh_start_server --svid-ttl 20s
mesh_start_agent "spiffe://$TD/meshid/agent/a"
mesh_entry $UA "$IDA" --ttl 16s
SOCK_A=$SOCK

# agent B: its own token, data dir and socket
SOCK_B="$SOCKDIR/agent-b.sock"
AGENT_B="spiffe://$TD/meshid/agent/b"
start_agent_b() { # [TOKEN]
  "$M" --data-dir "$WORK/agent-b" agent --server "127.0.0.1:$PORT" --server-name localhost \
    ${1:+--join-token "$1"} --trust-bundle "$WORK/bundle.pem" --socket "$SOCK_B" \
    >>"$WORK/agent-b.out" 2>>"$WORK/agent-b.err" &
  BPID=$!
  pids+=($BPID)
  for _ in $(seq 100); do [ -S "$SOCK_B" ] && break; sleep 0.1; done
  [ -S "$SOCK_B" ] || { cat "$WORK/agent-b.err"; fail "agent B socket missing"; }
}
TOKEN_B=$("$M" --data-dir "$SRV" token generate --spiffe-id "$AGENT_B" 2>/dev/null)
start_agent_b "$TOKEN_B"
"$M" --data-dir "$SRV" entry create --spiffe-id "$IDB" --parent-id "$AGENT_B" \
  --selector "unix:uid:$UB" --ttl 16s >"$OUT" 2>&1 || fail "entry b"
mkdir -p "$WORK/u$UB" && chown $UB "$WORK/u$UB"

fetch() { # UID SOCKET DIR: that workload's current SVID and bundle via SDS
  local t0=$SECONDS
  until as_uid "$1" node "$JS/sds_client.js" "$2" write "$3" >"$OUT" 2>&1; do
    [ $((SECONDS - t0)) -lt 20 ] || fail "uid $1 got nothing from $2"
    sleep 0.5
  done
}
cross_verify() { # both directions: each side's SVID against the other's bundle
  fetch $UA "$SOCK_A" "$WORK/u$UA/a"
  fetch $UB "$SOCK_B" "$WORK/u$UB/b"
  openssl verify -CAfile "$WORK/u$UA/a/ca.pem" -untrusted "$WORK/u$UB/b/cert.pem" "$WORK/u$UB/b/cert.pem" \
    >"$OUT" 2>&1 || fail "A's workload cannot verify B's SVID ($1)"
  openssl verify -CAfile "$WORK/u$UB/b/ca.pem" -untrusted "$WORK/u$UA/a/cert.pem" "$WORK/u$UA/a/cert.pem" \
    >"$OUT" 2>&1 || fail "B's workload cannot verify A's SVID ($1)"
}

step "both agents online: SVIDs cross-verify"
cross_verify "before"

step "agent B goes offline; a new root is prepared and activated"
kill -TERM "$BPID"; wait "$BPID" 2>/dev/null || true
"$M" --data-dir "$SRV" ca prepare --root >"$OUT" 2>&1 || fail "prepare --root"
I2=$(sqlite3 "$SRV/meshid.db" "SELECT id FROM authorities WHERE kind='intermediate' AND state='prepared'")
sleep 2
"$M" --data-dir "$SRV" ca activate "${I2:0:16}" --timeout 20s >"$OUT" 2>&1 \
  || fail "activation blocked by the disconnected agent"
grep -q "FORCED" "$OUT" && fail "activation needed --force"

step "B comes back: it gets the new bundle first, then SVIDs its peers can verify"
start_agent_b
for i in $(seq 8); do cross_verify "after reconnect, round $i"; sleep 2; done
# by now B's workload holds an SVID from the new intermediate
signer=$(openssl x509 -in "$WORK/u$UB/b/cert.pem" -noout -ext authorityKeyIdentifier 2>/dev/null \
  | tr -d ' :' | grep -io '[0-9a-f]\{40,\}' | tr 'A-F' 'a-f' | head -1)
[ "$signer" = "$I2" ] || fail "B still serves an SVID from ${signer:0:16}, not ${I2:0:16}"
grep -c 'BEGIN CERTIFICATE' "$WORK/u$UB/b/ca.pem" | grep -qx 2 || fail "B's bundle lacks one of the roots"
echo "all good"
