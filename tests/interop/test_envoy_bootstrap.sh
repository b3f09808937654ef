#!/usr/bin/env bash
# `meshid envoy bootstrap` against Envoy's official protos: the generated
# bootstrap must be a valid envoy.config.bootstrap.v3.Bootstrap (every key a
# known field, enums valid, Anys resolved, protoc-gen-validate rules met,
# protobufjs round trip) as checked by proto_json_check.js; deliberately
# broken copies must be refused by the same checker (it can fail). Also the
# command's defaults and refusals. With `envoy` on PATH, also
# `envoy --mode validate`.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
MESHID=${MESHID:-$ROOT/build/asan/bin/meshid}
[ -x "$MESHID" ] || { echo "no meshid binary at $MESHID (make build/asan/bin/meshid)"; exit 1; }
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:exitcode=86}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:exitcode=86}
bash "$HERE/setup.sh" >/dev/null

WORK=$(mktemp -d /tmp/meshid-envoy.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
DATA="$WORK/var"
OUT="$WORK/out"
ERR="$WORK/err"
fail() { echo "FAIL: $*" >&2; cat "$OUT" "$ERR" >&2 2>/dev/null || true; exit 1; }
step() { echo "-- $*"; }
m() { "$MESHID" --data-dir "$DATA" "$@"; }
check() { node "$HERE/proto_json_check.js" envoy.config.bootstrap.v3.Bootstrap "$1"; }
# js FILE EXPR: prints EXPR evaluated with d = the parsed JSON file
js() { node -e 'const d = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); console.log(eval(process.argv[2]));' "$1" "$2"; }
# mutate IN OUT JS: writes OUT = IN after running JS on d
mutate() { node -e 'const fs = require("fs"); const d = JSON.parse(fs.readFileSync(process.argv[1], "utf8")); eval(process.argv[3]); fs.writeFileSync(process.argv[2], JSON.stringify(d, null, 2));' "$1" "$2" "$3"; }
eq() { [ "$1" = "$2" ] || fail "$3: got '$1', want '$2'"; }

TD=example.org
WID="spiffe://$TD/ns/default/sa/x"
step "no trust domain yet: a clear error, no database created"
rc=0; m envoy bootstrap --node n1 >"$OUT" 2>"$ERR" || rc=$?
eq "$rc" 1 "exit code without a CA"
grep -q "pass --trust-domain" "$ERR" || fail "no hint about --trust-domain"
[ ! -e "$DATA/meshid.db" ] || fail "bootstrap created a database"

m ca init --trust-domain "$TD" >/dev/null 2>&1 || fail "ca init"

step "bootstrap for n1 is a valid envoy.config.bootstrap.v3.Bootstrap"
F="$WORK/envoy.json"
m envoy bootstrap --node n1 --spiffe-id "$WID" --out "$F" >"$OUT" 2>"$ERR" || fail "envoy bootstrap"
[ -s "$F" ] || fail "no bootstrap written"
check "$F" || fail "the official protos refuse the bootstrap"
eq "$(js "$F" 'd.node.id')" n1 "node.id"
eq "$(js "$F" 'd.node.cluster')" meshid "node.cluster"
eq "$(js "$F" 'd.node.metadata.SPIFFE_ID')" "$WID" "node.metadata.SPIFFE_ID"
eq "$(js "$F" 'd.static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.pipe.path')" \
  "$DATA/run/agent.sock" "default SDS socket (absolute, from the data dir)"
TLS='d.static_resources.clusters[1].transport_socket.typed_config'
eq "$(js "$F" "$TLS.common_tls_context.combined_validation_context.default_validation_context.match_typed_subject_alt_names[0].matcher.exact")" \
  "spiffe://$TD/meshid/server" "server SAN"
eq "$(js "$F" 'd.static_resources.clusters[1].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value')" \
  15012 "default ADS port"
eq "$(js "$F" 'd.dynamic_resources.ads_config.api_type')" GRPC "api_type"

step "options on a host without the server's database: --trust-domain, --service as a label,"
step "  --delta, DNS xDS address, relative agent socket, stdout"
(cd "$WORK" && "$MESHID" --data-dir "$WORK/agent" envoy bootstrap --node n2 --trust-domain "$TD" \
   --service reviews --delta --xds-address meshid.example.org:443 --agent-socket sock/a.sock \
   --admin-port 19000) >"$WORK/b2.json" 2>"$ERR" || fail "bootstrap with options"
[ ! -e "$WORK/agent/meshid.db" ] || fail "bootstrap created a database in the agent's data dir"
check "$WORK/b2.json" || fail "the official protos refuse the second bootstrap"
eq "$(js "$WORK/b2.json" 'd.node.cluster')" reviews "cluster from --service"
eq "$(js "$WORK/b2.json" 'd.node.metadata.SERVICE')" reviews "metadata SERVICE"
eq "$(js "$WORK/b2.json" 'd.dynamic_resources.ads_config.api_type')" DELTA_GRPC "--delta"
eq "$(js "$WORK/b2.json" 'd.static_resources.clusters[1].type')" STRICT_DNS "DNS cluster type"
eq "$(js "$WORK/b2.json" "$TLS.sni")" meshid.example.org "SNI"
eq "$(js "$WORK/b2.json" 'd.static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.pipe.path')" \
  "$WORK/sock/a.sock" "relative --agent-socket made absolute"
eq "$(js "$WORK/b2.json" 'd.admin.address.socket_address.port_value')" 19000 "--admin-port"
m envoy bootstrap --node n3 --trust-domain other.org --xds-address '[::1]:15012' >"$WORK/b3.json" 2>"$ERR" \
  || fail "bootstrap with --trust-domain and IPv6"
check "$WORK/b3.json" || fail "the official protos refuse the third bootstrap"
eq "$(js "$WORK/b3.json" "$TLS.common_tls_context.combined_validation_context.default_validation_context.match_typed_subject_alt_names[0].matcher.exact")" \
  "spiffe://other.org/meshid/server" "--trust-domain"
eq "$(js "$WORK/b3.json" 'd.static_resources.clusters[1].type')" STATIC "IPv6 literal cluster type"

step "command refusals"
expect_rc() { local want=$1; shift; local rc=0; m "$@" >"$OUT" 2>"$ERR" || rc=$?; eq "$rc" "$want" "meshid $*"; }
expect_rc 2 envoy bootstrap
expect_rc 2 envoy bootstrap --node n1 --xds-address nohostport
expect_rc 2 envoy bootstrap --node n1 --xds-address 127.0.0.1:99999
expect_rc 2 envoy bootstrap --node n1 --admin-port 0
expect_rc 2 envoy bootstrap --node n1 stray
expect_rc 2 envoy frobnicate
expect_rc 1 envoy bootstrap --node n1 --spiffe-id "spiffe://$TD"
grep -q "not a workload ID" "$ERR" || fail "trust-domain-only --spiffe-id not explained"
expect_rc 1 envoy bootstrap --node n1 --spiffe-id not-an-id
expect_rc 1 envoy bootstrap --node n1 --xds-address 'bad host:1'
expect_rc 1 envoy bootstrap --node n1 --trust-domain 'Bad_TD'
expect_rc 1 envoy bootstrap --node n1 --agent-socket "/$(printf 'x%.0s' $(seq 120))"

step "--service takes the identity of the service's endpoints from the registry"
"$MESHID" --data-dir "$DATA" server --listen 127.0.0.1:0 >"$WORK/server.out" 2>"$WORK/server.err" &
SPID=$!
trap 'kill $SPID 2>/dev/null || true; wait $SPID 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do grep -q 'node API' "$WORK/server.out" 2>/dev/null && break; sleep 0.1; done
grep -q 'node API' "$WORK/server.out" || { cat "$WORK/server.err"; fail "server did not start"; }
cat >"$WORK/svc.yaml" <<'YAML'
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 10.0.0.5, serviceAccount: bookinfo-reviews}
  - {address: 10.0.0.6, serviceAccount: bookinfo-reviews}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: mixed, namespace: default}
spec:
  hosts: [mixed.default.svc]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 10.0.0.7, serviceAccount: a}
  - {address: 10.0.0.8, serviceAccount: b}
YAML
m apply -f "$WORK/svc.yaml" >"$OUT" 2>"$ERR" || fail "apply services"
for name in reviews reviews.default.svc default/reviews; do
  m envoy bootstrap --node n4 --service "$name" >"$WORK/b4.json" 2>"$ERR" || fail "bootstrap --service $name"
  eq "$(js "$WORK/b4.json" 'd.node.metadata.SPIFFE_ID')" "spiffe://$TD/ns/default/sa/bookinfo-reviews" \
    "identity derived for --service $name"
done
check "$WORK/b4.json" || fail "the official protos refuse the --service bootstrap"
rc=0; m envoy bootstrap --node n4 --service mixed >"$OUT" 2>"$ERR" || rc=$?
eq "$rc" 1 "--service with several identities"
grep -q "several identities" "$ERR" || fail "several identities not explained"
m envoy bootstrap --node n4 --service mixed --spiffe-id "spiffe://$TD/ns/default/sa/b" >"$WORK/b5.json" 2>"$ERR" \
  || fail "--service with a matching --spiffe-id"
eq "$(js "$WORK/b5.json" 'd.node.metadata.SPIFFE_ID')" "spiffe://$TD/ns/default/sa/b" "--spiffe-id wins"
rc=0; m envoy bootstrap --node n4 --service nosuch >"$OUT" 2>"$ERR" || rc=$?
eq "$rc" 1 "--service unknown"
grep -q "no service 'nosuch'" "$ERR" || fail "unknown service not explained"
kill $SPID; wait $SPID 2>/dev/null || true

step "the checker refuses broken copies (it can fail)"
broken() { # name, js mutation, expected message part
  mutate "$F" "$WORK/bad.json" "$2"
  local rc=0
  check "$WORK/bad.json" >"$OUT" 2>"$ERR" || rc=$?
  eq "$rc" 1 "checker exit code for $1"
  grep -q -- "$3" "$ERR" || fail "checker message for $1 lacks '$3'"
}
broken "unknown field" 'd.static_resources.clusters[0].bogus_field = 1' 'unknown field "bogus_field" in envoy.config.cluster.v3.Cluster'
broken "bad enum" 'd.static_resources.clusters[0].type = "STATICK"' '"STATICK" is not a value of enum'
broken "bad ApiType" 'd.dynamic_resources.ads_config.api_type = "GRPC2"' 'api_type: "GRPC2"'
broken "unknown field inside an Any" "$TLS.common_tls_context.bogus = {}" 'unknown field "bogus" in envoy.extensions.transport_sockets.tls.v3.CommonTlsContext'
broken "unknown @type" "$TLS[\"@type\"] = \"type.googleapis.com/envoy.NoSuchType\"" 'names no message'
broken "missing cluster name" 'delete d.static_resources.clusters[1].name' 'Cluster.name must have at least 1'
broken "bad duration" 'd.dynamic_resources.cds_config.initial_fetch_timeout = "5"' 'expected a Duration'
broken "two oneof members" 'd.dynamic_resources.lds_config.path = "/x"' 'at most one may be set'
broken "port out of range" 'd.admin.address.socket_address.port_value = 70000' 'must be <= 65535'
broken "wrong value type" 'd.dynamic_resources.ads_config.set_node_on_first_message_only = "yes"' 'expected true or false'

if command -v envoy >/dev/null 2>&1; then
  step "envoy --mode validate"
  envoy --mode validate -c "$F" >"$OUT" 2>&1 || fail "envoy --mode validate refused the bootstrap"
  grep -qi "OK" "$OUT" || fail "envoy --mode validate did not say OK"
else
  echo "-- envoy not installed: skipped 'envoy --mode validate'"
fi
echo "PASS test_envoy_bootstrap"
