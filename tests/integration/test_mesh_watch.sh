#!/usr/bin/env bash
# `meshid server --watch-dir DIR`: the directory's YAML files are applied at
# start and re-applied when they change (as `meshid apply -f DIR` would: all
# or nothing); a broken file changes nothing and is reported in the server's
# log; every applied change is audited with actor "watch:DIR".
source "$(dirname "$0")/lib.sh"

SPID=
cleanup() { [ -n "$SPID" ] && kill "$SPID" 2>/dev/null; wait 2>/dev/null || true; }
trap 'cleanup; rm -rf "$WORK"' EXIT
W="$WORK/watch"
mkdir -p "$W"

# wait_for SECONDS CMD...: until the command succeeds.
wait_for() {
  local n=$(( $1 * 10 )); shift
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}
listed() { "$MESHID" service list 2>/dev/null | grep -Eq -- "$1"; }
has_endpoint() { "$MESHID" endpoint list --service "$1" 2>/dev/null | grep -q -- " $2 "; }

svc() { # NAME ADDRESS...
  local name=$1; shift
  printf 'apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: %s, namespace: web}\n' "$name"
  printf 'spec:\n  hosts: [%s.web.svc]\n  ports: [{number: 8080, name: http, protocol: HTTP}]\n  endpoints:\n' "$name"
  for a in "$@"; do printf '  - {address: %s, labels: {app: %s}}\n' "$a" "$name"; done
}

step "a directory with one service, then the server"
svc shop 10.1.0.1 >"$W/shop.yaml"
echo "# not YAML for meshid: ignored" >"$W/README.txt"
"$MESHID" ca init --trust-domain watch.test >/dev/null
"$MESHID" server --listen 127.0.0.1:0 --xds-listen off --watch-dir "$W" >"$WORK/server.out" 2>"$WORK/server.err" &
SPID=$!
for _ in $(seq 100); do grep -q 'node API' "$WORK/server.out" 2>/dev/null && break; sleep 0.1; done
grep -q 'node API' "$WORK/server.out" || { cat "$WORK/server.err"; fail "server did not start"; }
wait_for 10 listed '^web +shop ' || fail "shop not applied from the watched directory"

step "a changed file is re-applied"
sleep 1.1 # a different mtime second on coarse file systems
svc shop 10.1.0.1 10.1.0.2 >"$W/shop.yaml"
wait_for 10 has_endpoint web/shop 10.1.0.2 || { "$MESHID" endpoint list --service web/shop; fail "shop not updated"; }

step "a new file is applied"
svc cart 10.2.0.1 >"$W/cart.yml"
wait_for 10 listed '^web +cart ' || fail "cart not applied"

step "a broken file: nothing applied, the reason logged"
svc pay 10.3.0.1 >"$W/pay.yaml"
printf 'spec:\n  bogus: [\n' >>"$W/pay.yaml"
sleep 3
listed '^web +pay ' && fail "a broken directory was partly applied"
grep -q 'not applied' "$WORK/server.err" || fail "no log line for the broken file"
grep -q 'pay.yaml' "$WORK/server.err" || fail "the log does not name the broken file"

step "fixed: applied"
svc pay 10.3.0.1 >"$W/pay.yaml"
wait_for 10 listed '^web +pay ' || fail "pay not applied after the fix"

step "audited as the watcher"
ok audit query --event mesh.apply --json
has "$OUT" "watch:$W"
ok audit verify
echo "PASS test_mesh_watch"
