#!/usr/bin/env bash
# xDS interop: meshid's ADS server driven by independent clients built only
# from Envoy's OFFICIAL protos (@grpc/grpc-js-xds ships them):
#   - tests/interop/ads_client.js as an Envoy sidecar (SotW and Delta), a
#     proxyless client, bad nodes (no identity, identity with no workload), a
#     NACK, a push after a registry change, mutual TLS on the server's port;
#     every resource decoded with the official protos and checked for the
#     fields Envoy / grpc-js require; every decoded resource also checked
#     strictly by proto_json_check.js;
#   - `meshid xds dump` checked the same way;
#   - a real @grpc/grpc-js-xds client (xds_grpc_client.js) resolving
#     xds:///echo.default.svc:7000 through meshid and following endpoint
#     changes without restarting.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
MESHID=${MESHID:-$ROOT/build/asan/bin/meshid}
[ -x "$MESHID" ] || { echo "no meshid binary at $MESHID"; exit 1; }
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:exitcode=86}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:exitcode=86}
bash "$ROOT/tests/interop/setup.sh" >/dev/null
JS="$ROOT/tests/interop"

WORK=$(mktemp -d /tmp/meshid-xds.XXXXXX)
D="$WORK/data"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap 'cleanup; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; for f in "$WORK"/*.out "$WORK"/*.err; do [ -s "$f" ] && { echo "== $f"; tail -n 20 "$f"; }; done >&2; exit 1; }
step() { echo "-- $*"; }
m() { "$MESHID" --data-dir "$D" "$@"; }
TD=xds.test
ID_RATINGS="spiffe://$TD/ns/default/sa/bookinfo-ratings"
ID_REVIEWS="spiffe://$TD/ns/default/sa/bookinfo-reviews"

step "ca init, server with a plaintext xDS port"
m ca init --trust-domain "$TD" >/dev/null
m bundle show >"$WORK/bundle.pem"
"$MESHID" --data-dir "$D" server --listen 127.0.0.1:0 --xds-listen 127.0.0.1:0 >"$WORK/server.out" 2>"$WORK/server.err" &
pids+=($!)
for _ in $(seq 150); do grep -q 'node API' "$WORK/server.out" 2>/dev/null && break; sleep 0.1; done
grep -q 'node API' "$WORK/server.out" || fail "server did not start"
PORT=$(sed -n 's/.*node API.*(port \([0-9]*\)).*/\1/p' "$WORK/server.out")
XDS=$(sed -n 's/.*xDS (plaintext ADS) on \([0-9.:]*\).*/\1/p' "$WORK/server.out")
[ -n "$XDS" ] && [ -n "$PORT" ] || fail "no ports in server output"

step "registry: three services and a policy"
cat >"$WORK/mesh.yaml" <<EOF
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings.default.svc]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP, targetPort: 19080}]
  endpoints:
  - {address: 127.0.0.11, ports: {http: 29080}, labels: {app: ratings}, serviceAccount: bookinfo-ratings}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc]
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints:
  - {address: 127.0.0.12, labels: {app: reviews}, serviceAccount: bookinfo-reviews}
  - {address: 127.0.0.13, labels: {app: reviews}, serviceAccount: bookinfo-reviews}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: mongodb, namespace: default}
spec:
  hosts: [mongodb.default.svc]
  resolution: STATIC
  ports: [{number: 27017, name: mongo, protocol: MONGO}]
  endpoints:
  - {address: 127.0.0.14, labels: {app: mongodb}, serviceAccount: "spiffe://$TD/ns/default/sa/mongodb"}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ratings-viewer, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["$TD/ns/default/sa/bookinfo-reviews"]}}]
    to: [{operation: {methods: ["GET"]}}]
EOF
m apply -f "$WORK/mesh.yaml" >"$WORK/apply.out" 2>&1 || fail "apply: $(cat "$WORK/apply.out")"

ads() { node "$JS/ads_client.js" "$@"; }
check_dump() { # FILE: JSON lines, one resource with "@type" per line
  local n
  n=$(grep -c . "$1" || true)
  [ "$n" -gt 0 ] || fail "$1 is empty"
  node "$JS/proto_json_check.js" any "$1" >"$WORK/check.out" 2>&1 || fail "strict check of $1: $(tail -n 3 "$WORK/check.out")"
  echo "   $n resources pass proto_json_check"
}

step "sidecar (SotW): CDS, EDS, LDS, RDS decode with the official protos and have Envoy's fields"
ads "$XDS" sotw --node-id "$ID_RATINGS" --dump "$WORK/sidecar.jsonl" >"$WORK/sotw.out" || fail "sotw: $(tail -n 3 "$WORK/sotw.out")"
S=$(tail -n 1 "$WORK/sotw.out")
py() { python3 -c "import json,sys; d=json.loads(sys.argv[1]); $1" "$S"; }
py 's=d["summary"]; assert s["order"]==["cds","eds","lds","rds"], s["order"]' || fail "order CDS, EDS, LDS, RDS: $S"
py 's=d["summary"]; assert "outbound|9080||reviews.default.svc" in s["clusters"] and "outbound|27017||mongodb.default.svc" in s["clusters"], s' || fail "clusters: $S"
py 's=d["summary"]; assert sorted(s["endpoints"]["outbound|9080||reviews.default.svc"])==["127.0.0.12:9080/HEALTHY","127.0.0.13:9080/HEALTHY"], s["endpoints"]' || fail "endpoints: $S"
py 's=d["summary"]; assert "inbound|29080" in s["listeners"], s["listeners"]' || fail "inbound listener: $S"
grep -q '"envoy.filters.http.rbac"' "$WORK/sidecar.jsonl" || fail "no RBAC filter in the inbound listener"
grep -q "spiffe://$TD/ns/default/sa/bookinfo-reviews" "$WORK/sidecar.jsonl" || fail "no SPIFFE SAN / principal of reviews"

step "sidecar (Delta) gets the same resources"
ads "$XDS" delta --node-id "$ID_RATINGS" >"$WORK/delta.out" || fail "delta: $(tail -n 3 "$WORK/delta.out")"
python3 - "$S" "$(tail -n 1 "$WORK/delta.out")" <<'EOF' || fail "delta and sotw differ"
import json, sys
a, b = (json.loads(x)["summary"] for x in sys.argv[1:3])
for k in ("clusters", "listeners", "routes", "endpoints"):
    assert a[k] == b[k], (k, a[k], b[k])
EOF

step "proxyless gRPC client: api_listener, route, EDS cluster per grpc-js rules"
ads "$XDS" sotw --proxyless --node-id "spiffe://$TD/ns/default/sa/client" --lds ratings.default.svc:9080 \
  >"$WORK/proxyless.out" || fail "proxyless: $(tail -n 3 "$WORK/proxyless.out")"
tail -n 1 "$WORK/proxyless.out" | grep -q '"listeners":\["ratings.default.svc:9080"\]' || fail "proxyless listeners"

step "bad nodes: no identity -> PERMISSION_DENIED; identity with no workload -> FAILED_PRECONDITION"
ads "$XDS" sotw --node-id nobody --expect-error 7 >"$WORK/bad1.out" || fail "no identity: $(cat "$WORK/bad1.out")"
grep -q 'no identity' "$WORK/bad1.out" || fail "no-identity message: $(cat "$WORK/bad1.out")"
ads "$XDS" sotw --node-id "spiffe://$TD/ns/default/sa/ghost" --expect-error 9 >"$WORK/bad2.out" || fail "ghost: $(cat "$WORK/bad2.out")"
ads "$XDS" sotw --node-id "spiffe://Bad Domain/x" --expect-error 3 >"$WORK/bad3.out" || fail "malformed id: $(cat "$WORK/bad3.out")"

step "refused streams are audited: xds.refuse, one event per minute per proxy, node and reason"
ads "$XDS" sotw --node-id nobody --expect-error 7 >"$WORK/bad1b.out" || fail "no identity again: $(cat "$WORK/bad1b.out")"
for _ in $(seq 50); do
  m audit query --event xds.refuse --json >"$WORK/refused.json" 2>&1 || fail "audit query: $(cat "$WORK/refused.json")"
  [ "$(grep -c . "$WORK/refused.json")" -ge 3 ] && break
  sleep 0.1
done
[ "$(grep -c '"node":"nobody"' "$WORK/refused.json")" -eq 1 ] || fail "nobody: not one event: $(cat "$WORK/refused.json")"
grep '"node":"nobody"' "$WORK/refused.json" | grep -q '"outcome":"denied".*"reason":"[^"]*no identity' \
  || fail "nobody: outcome/reason: $(cat "$WORK/refused.json")"
grep -q '"node":"spiffe://'"$TD"'/ns/default/sa/ghost"' "$WORK/refused.json" || fail "ghost not audited"
grep -q '"node":"spiffe://Bad Domain/x"' "$WORK/refused.json" || fail "malformed id not audited"
grep -q '"actor":"proxy:plaintext"' "$WORK/refused.json" || fail "refusal actor"

step "NACK of CDS: not resent; the stream lives on"
ads "$XDS" sotw --node-id "$ID_RATINGS" --nack cds --watch-ms 2000 >"$WORK/nack.out" 2>&1 \
  || fail "nack: $(tail -n 3 "$WORK/nack.out")"
grep -q '"resent":false' "$WORK/nack.out" || fail "nack: $(cat "$WORK/nack.out")"
grep -q "rejected cds version" "$WORK/server.err" || fail "the NACK was not logged by the server"

step "push: a new service and a new endpoint while a sidecar watches: CDS before LDS, EDS follows"
ads "$XDS" sotw --node-id "$ID_RATINGS" --watch-ms 8000 >"$WORK/push.out" 2>&1 &
WP=$!
for _ in $(seq 100); do grep -q '"summary"' "$WORK/push.out" 2>/dev/null && break; sleep 0.1; done
cat >"$WORK/details.yaml" <<EOF
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: details, namespace: default}
spec:
  hosts: [details.default.svc]
  ports: [{number: 9081, name: http, protocol: HTTP}]
  endpoints:
  - {address: 127.0.0.16, labels: {app: details}, serviceAccount: bookinfo-details}
EOF
m apply -f "$WORK/details.yaml" >/dev/null || fail "apply details"
sleep 1
m endpoint add --service default/reviews --address 127.0.0.15 --label app=reviews --service-account bookinfo-reviews >/dev/null \
  || fail "endpoint add"
wait $WP || fail "watcher: $(tail -n 3 "$WORK/push.out")"
python3 - "$WORK/push.out" <<'EOF' || fail "pushes: $(cat "$WORK/push.out")"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
pushed = [l for l in lines if l.get("pushed")]
types = [l["type"] for l in pushed]
assert types and types[0] == "cds", types
assert "lds" in types and types.index("cds") < types.index("lds"), types
cds = [l for l in pushed if l["type"] == "cds"][0]
assert "outbound|9081||details.default.svc" in cds["names"], cds
lds = [l for l in pushed if l["type"] == "lds"][0]
assert "127.0.0.1_9081" in lds["names"], lds
eds = [l for l in pushed if l["type"] == "eds"]
assert any("outbound|9081||details.default.svc" in l["names"] for l in eds), eds
print("   pushed:", " ".join(types))
EOF

step "mutual TLS on the server port: the SVID is the identity"
m svid mint --spiffe-id "$ID_RATINGS" --write "$WORK/svid" >/dev/null
TLS="$WORK/bundle.pem,$WORK/svid/svid.pem,$WORK/svid/svid.key"
ads "127.0.0.1:$PORT" sotw --tls "$TLS" --node-id some-node >"$WORK/tls.out" || fail "tls: $(tail -n 3 "$WORK/tls.out")"
tail -n 1 "$WORK/tls.out" | grep -q '"inbound|29080"' || fail "tls: not served as ratings"
ads "127.0.0.1:$PORT" sotw --tls "$TLS" --node-id some-node --meta "SPIFFE_ID=$ID_REVIEWS" --expect-error 7 \
  >"$WORK/tls2.out" || fail "tls claim mismatch: $(cat "$WORK/tls2.out")"
ads "127.0.0.1:$PORT" sotw --tls "$WORK/bundle.pem,-,-" --node-id "$ID_RATINGS" --expect-error 16 \
  >"$WORK/tls3.out" || fail "tls without client cert: $(cat "$WORK/tls3.out")"

step "meshid xds dump: the same resources as over ADS, and every one passes the strict check"
m xds dump --node "$ID_RATINGS" >"$WORK/dump.json" || fail "xds dump"
m xds dump --node "$ID_RATINGS" --type eds >"$WORK/dump_eds.json" || fail "xds dump --type eds"
ads "$XDS" sotw --node-id "$ID_RATINGS" >"$WORK/sotw2.out" || fail "sotw again"
python3 - "$WORK/dump.json" "$WORK/dump_eds.json" "$(tail -n 1 "$WORK/sotw2.out")" "$WORK/dump.jsonl" <<'EOF' || fail "xds dump shape"
import json, sys
d = json.load(open(sys.argv[1]))
e = json.load(open(sys.argv[2]))
s = json.loads(sys.argv[3])["summary"]
assert set(e) == {"node", "identity", "proxyless", "revision", "eds"}, sorted(e)
names = lambda t: sorted(r.get("name") or r.get("clusterName") for r in d[t]["resources"])
assert names("cds") == s["clusters"], (names("cds"), s["clusters"])
assert names("lds") == s["listeners"], (names("lds"), s["listeners"])
assert names("rds") == s["routes"], (names("rds"), s["routes"])
assert names("eds") == sorted(s["endpoints"]), (names("eds"), sorted(s["endpoints"]))
with open(sys.argv[4], "w") as f:
    for t in ("cds", "eds", "lds", "rds"):
        for r in d[t]["resources"]:
            f.write(json.dumps(r) + "\n")
EOF
check_dump "$WORK/dump.jsonl"

step "grpc-js-xds resolves xds:///echo.default.svc:7000 and follows endpoint changes"
node "$JS/xds_grpc_client.js" --meshid "$MESHID" --data-dir "$D" --xds "$XDS" --host echo.default.svc \
  --port 7000 --spiffe-id "spiffe://$TD/ns/default/sa/client" --proto-root "$ROOT/proto" \
  >"$WORK/grpcxds.out" 2>&1 || fail "grpc-js-xds: $(tail -n 5 "$WORK/grpcxds.out")"
cat "$WORK/grpcxds.out"

step "audit chain intact"
m audit verify >/dev/null || fail "audit verify"
echo "PASS test_xds_interop"
