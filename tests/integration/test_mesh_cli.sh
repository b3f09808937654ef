#!/usr/bin/env bash
# The mesh registry through the real binary and a real server: `meshid apply`
# of Istio's own documents (tests/data/istio-examples), re-apply, refusals that
# name the offending field with nothing applied, service / endpoint / policy
# commands, `policy check` decisions and exit codes for documented Istio
# examples, the audit trail, and persistence across a server restart.
source "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
EX="$ROOT/tests/data/istio-examples"
[ -d "$EX/within" ] && [ -d "$EX/outside" ] || fail "no Istio examples in $EX"

SPID=
cleanup() { [ -n "$SPID" ] && kill "$SPID" 2>/dev/null; wait 2>/dev/null || true; }
trap 'cleanup; rm -rf "$WORK"' EXIT

start_server() {
  rm -f "$WORK/server.out"
  "$MESHID" server --listen 127.0.0.1:0 >"$WORK/server.out" 2>"$WORK/server.err" &
  SPID=$!
  for _ in $(seq 100); do grep -q 'node API' "$WORK/server.out" 2>/dev/null && break; sleep 0.1; done
  grep -q 'node API' "$WORK/server.out" || { cat "$WORK/server.err"; fail "server did not start"; }
}
stop_server() {
  kill "$SPID"
  local rc=0
  wait "$SPID" || rc=$?
  SPID=
  [ "$rc" -eq 0 ] || { cat "$WORK/server.err"; fail "server exited $rc"; }
}
# count FILE PATTERN: number of lines matching.
count() { grep -Ec -- "$2" "$1" || true; }

step "without a server: a clear error"
fails 1 service list
has "$ERR" "is 'meshid server' running"

step "server"
"$MESHID" ca init --trust-domain cluster.local >/dev/null
start_server

step "within/ as it is: two documents are one policy (foo/httpbin), refused, nothing applied"
fails 1 apply -f "$EX/within"
has "$ERR" "foo/httpbin"
has "$ERR" "ap-deny-ns-dev-post.yaml"
has "$ERR" "ap-deny-post-port-8080.yaml"
ok policy list
[ "$(count "$OUT" '^(default|foo) ')" -eq 0 ] || fail "something was applied"

step "every other document of within/ as one directory: all created"
DIR="$WORK/within"
mkdir -p "$DIR"
cp "$EX/within/"*.yaml "$DIR/"
chmod u+w "$DIR"/*
rm "$DIR/ap-deny-post-port-8080.yaml"
NDOCS=$(ls "$DIR"/*.yaml | wc -l)
ok apply -f "$DIR" --dry-run
[ "$(count "$OUT" ' created \(dry run\)$')" -eq "$NDOCS" ] || fail "dry run: not $NDOCS created"
ok service list
[ "$(count "$OUT" '^none ')" -eq 0 ] || fail "the dry run wrote"
ok apply -f "$DIR"
[ "$(count "$OUT" ' created$')" -eq "$NDOCS" ] || fail "not $NDOCS created"
has "$OUT" '^service none/s1tcp created$'
has "$OUT" '^service testns/external-svc-ep created$'
has "$OUT" '^policy default/allow-nothing created$'
has "$OUT" '^policy default/deny-all created$'
has "$OUT" '^policy default/details-viewer created$'
has "$OUT" '^policy foo/deny-method-get created$'
has "$OUT" '^policy foo/httpbin created$'

step "re-apply: unchanged"
ok apply -f "$DIR"
[ "$(count "$OUT" ' unchanged$')" -eq "$NDOCS" ] || fail "not $NDOCS unchanged"
step "the other foo/httpbin: updated"
ok apply -f "$EX/within/ap-deny-post-port-8080.yaml"
has "$OUT" '^policy foo/httpbin updated$'
ok audit query --event mesh.apply --outcome ok --json
[ "$(count "$OUT" '"event":"mesh.apply"')" -eq $((NDOCS + 1)) ] || fail "mesh.apply events"
has "$OUT" '"actor":"admin:uid=[0-9]+"'
has "$OUT" '"details":\{"action":"created","kind":"service","name":"s1tcp","namespace":"none"\}'
# within/ as it is was refused by the CLI's own check: it never reached the
# server, so there is nothing to audit
ok audit query --event mesh.apply --outcome denied --json
[ "$(count "$OUT" '"event":"mesh.apply"')" -eq 0 ] || fail "refused mesh.apply events"

step "outside/: each refused, naming its field; nothing changes"
ok service list
cp "$OUT" "$WORK/services.before"
ok policy list
cp "$OUT" "$WORK/policies.before"
for f in "$EX/outside/"*.yaml; do
  fails 1 apply -f "$f"
  has "$ERR" "$(basename "$f"):[0-9]+:[0-9]+: spec\."
  case "$(basename "$f")" in
    ap-custom-ext-authz.yaml) has "$ERR" "spec.action" ;;
    ap-ip-blocks.yaml) has "$ERR" "ipBlocks" ;;
    ap-request-principals-not-paths.yaml) has "$ERR" "requestPrincipals|notPaths" ;;
    ap-when-jwt-claims.yaml) has "$ERR" "spec.rules\[0\]\.when" ;;
    se-dns-external-https.yaml) has "$ERR" "spec.resolution" ;;
    *) fail "unexpected file $f" ;;
  esac
done
ok service list
cmp -s "$OUT" "$WORK/services.before" || fail "service list changed"
ok policy list
cmp -s "$OUT" "$WORK/policies.before" || fail "policy list changed"

step "a two-document file whose second document is bad: nothing applied"
cat >"$WORK/two.yaml" <<'EOF'
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: first
  namespace: bar
spec:
  hosts: [first.bar.svc]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  resolution: STATIC
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: second
  namespace: bar
spec:
  hosts: [second.bar.svc]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  resolution: STATIC
  endpoints:
  - address: 10.0.0.1
    weight: 3
EOF
fails 1 apply -f "$WORK/two.yaml"
has "$ERR" "two.yaml:24:[0-9]+: spec.endpoints\[0\]\.weight"
# the second document valid on its own but claiming a host already taken:
# only the server can tell; still nothing applied
sed -i 's/^    weight: 3$//; s/second.bar.svc/ep.extsvc.com/' "$WORK/two.yaml"
fails 1 apply -f "$WORK/two.yaml"
has "$ERR" "two.yaml:12: spec.hosts\[0\]: host \"ep.extsvc.com\" .*testns/external-svc-ep"
# the server's refusal is audited, with the message the caller got
ok audit query --event mesh.apply --outcome denied --json
[ "$(count "$OUT" '"event":"mesh.apply"')" -eq 1 ] || fail "refused mesh.apply events"
has "$OUT" '"reason":"[^"]*two.yaml:12: spec.hosts\[0\]: host \\"ep.extsvc.com\\"'
has "$OUT" '"actor":"admin:uid=[0-9]+"'
ok service list
cmp -s "$OUT" "$WORK/services.before" || fail "something of two.yaml was applied"

step "invalid YAML: file and line"
printf 'apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: x\nspec: [\n' \
  >"$WORK/broken.yaml"
fails 1 apply -f "$WORK/broken.yaml"
has "$ERR" "broken.yaml:[0-9]+:[0-9]+: "
fails 1 apply -f "$WORK/missing.yaml"
fails 2 apply
fails 2 apply -f "$WORK/broken.yaml" extra

step "service apply takes only ServiceEntry documents"
fails 1 service apply -f "$EX/within/ap-deny-all.yaml"
has "$ERR" "AuthorizationPolicy is refused"
cat >"$WORK/svc.yaml" <<'EOF'
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: details
  namespace: default
spec:
  hosts: [details.default.svc.cluster.local]
  ports:
  - {number: 9080, name: http, protocol: HTTP}
  resolution: STATIC
  endpoints:
  - address: 10.1.0.1
    labels: {app: details, version: v1}
    serviceAccount: bookinfo-details
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: httpbin
  namespace: foo
spec:
  hosts: [httpbin.foo.svc.cluster.local]
  ports:
  - {number: 8000, name: http, protocol: HTTP}
  resolution: STATIC
  endpoints:
  - address: 10.2.0.1
    labels: {app: httpbin}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports:
  - {number: 9080, name: http, protocol: HTTP}
  resolution: STATIC
  endpoints:
  - address: 10.3.0.1
    labels: {app: reviews}
EOF
ok service apply -f "$WORK/svc.yaml"
has "$OUT" '^service default/details created$'
fails 2 service apply -f "$WORK/svc.yaml" -f "$WORK/svc.yaml"

step "service list / show / delete"
ok service list
has "$OUT" '^NAMESPACE +NAME +HOSTS +PORTS +ENDPOINTS'
has "$OUT" '^testns +external-svc-ep +ep.extsvc.com +8002/HTTP +2$'
has "$OUT" '^none +s1tcp +s1tcp.none +2000/TCP +1$'
ok service show ep.extsvc.com
has "$OUT" '"name": "external-svc-ep"'
has "$OUT" '"address": "127.0.0.3"'
ok service show testns/external-svc-ep
ok service show details
has "$OUT" '"serviceAccount": "bookinfo-details"'
fails 1 service show nope
has "$ERR" 'no service "nope"'
fails 2 service show
ok service delete seexamples/workload
has "$OUT" '^service seexamples/workload deleted$'
ok service list
hasnt "$OUT" '^seexamples '
fails 1 service delete seexamples/workload
fails 2 service frobnicate

step "endpoint add / list / remove"
fails 1 endpoint add --service ep.extsvc.com --address 10.0.0
has "$ERR" 'not an IPv4 or IPv6 address'
fails 1 endpoint add --service ep.extsvc.com --address example.com
fails 1 endpoint add --service nope --address 10.0.0.9
has "$ERR" 'no service "nope"'
fails 2 endpoint add --service ep.extsvc.com --address 10.0.0.9 --port http
fails 2 endpoint add --service ep.extsvc.com --address 10.0.0.9 --port x=70000
fails 2 endpoint add --address 10.0.0.9
fails 1 endpoint add --service ep.extsvc.com --address 10.0.0.9 --health SICK
fails 1 endpoint add --service ep.extsvc.com --address 10.0.0.9 --port nope=80
has "$ERR" 'spec.endpoints\[2\]\.ports'
ok endpoint add --service ep.extsvc.com --address 127.0.0.4 --port extsvc-http=9000 \
  --label app=ext --label tier=back --service-account ext-sa --health DRAINING
has "$OUT" '^endpoint 127.0.0.4 added to service testns/external-svc-ep$'
ok endpoint list --service ep.extsvc.com
has "$OUT" '127\.0\.0\.4 +extsvc-http=9000 +app=ext,tier=back +DRAINING +spiffe://cluster.local/ns/testns/sa/ext-sa'
[ "$(count "$OUT" '^testns/external-svc-ep ')" -eq 3 ] || fail "not 3 endpoints"
ok endpoint add --service testns/external-svc-ep --address 127.0.0.4 \
  --spiffe-id spiffe://cluster.local/ext
has "$OUT" '^endpoint 127.0.0.4 replaced in service testns/external-svc-ep$'
ok endpoint list
has "$OUT" '127\.0\.0\.4 .* HEALTHY +spiffe://cluster.local/ext$'
has "$OUT" '^none/s1tcp '
ok endpoint remove --service ep.extsvc.com --address 127.0.0.4
has "$OUT" '^endpoint 127.0.0.4 removed from service testns/external-svc-ep$'
fails 1 endpoint remove --service ep.extsvc.com --address 127.0.0.4
has "$ERR" 'has no endpoint 127.0.0.4'
ok audit query --event mesh.endpoint.add --json
[ "$(count "$OUT" '"address":"127.0.0.4"')" -eq 2 ] || fail "mesh.endpoint.add events"
ok audit query --event mesh.endpoint.remove --outcome denied --json
has "$OUT" '"reason":"[^"]*has no endpoint 127.0.0.4'
ok audit query --event mesh.endpoint.remove --json
has "$OUT" '"details":\{"action":"updated","address":"127.0.0.4","kind":"service","name":"external-svc-ep","namespace":"testns"\}'

step "policy list / show"
ok policy list
has "$OUT" '^default +details-viewer +ALLOW +app=details +1$'
has "$OUT" '^default +allow-nothing +ALLOW +\(all\) +0$'
ok policy show foo/deny-method-get
has "$OUT" '"action": "DENY"'
fails 1 policy show foo/nope

step "policy check: Istio's documented decisions"
PP=spiffe://cluster.local/ns/default/sa/bookinfo-productpage
# deny-all (DENY, rules [{}]) denies everything in default, first
fails 3 policy check --from "$PP" --to details --method GET
has "$OUT" 'default/details: DENY by default/deny-all rule 0'
ok policy delete deny-all
has "$OUT" '^policy default/deny-all deleted$'
# details-viewer: the productpage principal may GET, not POST
ok policy check --from "$PP" --to details --method GET
has "$OUT" '^default/details: ALLOW by default/details-viewer rule 0 .*\(HTTP\)$'
fails 3 policy check --from "$PP" --to details.default.svc.cluster.local --method POST
has "$OUT" '^default/details: DENY \('
fails 3 policy check --from spiffe://cluster.local/ns/default/sa/other --to details --method GET
# allow-nothing: an ALLOW policy without rules selecting reviews: nothing allowed
fails 3 policy check --from "$PP" --to reviews --method GET
has "$OUT" '^default/reviews: DENY \(.*ALLOW'
# deny-method-get in foo: GET to httpbin denied, another method allowed by
# ns-isolation-except-ingress for a caller of namespace foo
fails 3 policy check --from spiffe://cluster.local/ns/foo/sa/sleep --to httpbin.foo.svc.cluster.local --method GET
has "$OUT" 'DENY by foo/deny-method-get rule 0'
ok policy check --from spiffe://cluster.local/ns/foo/sa/sleep --to foo/httpbin --method PUT
has "$OUT" 'ALLOW by foo/ns-isolation-except-ingress rule 0'
# require-mtls: no peer identity at all
fails 3 policy check --to foo/httpbin --method PUT
has "$OUT" 'DENY by foo/require-mtls rule 0'
# one line per distinct label set when they disagree
ok endpoint add --service details --address 10.1.0.2 --label app=other
fails 3 policy check --from "$PP" --to details --method GET
has "$OUT" '^default/details \{app=details,version=v1\} \[10.1.0.1\]: ALLOW by default/details-viewer'
has "$OUT" '^default/details \{app=other\} \[10.1.0.2\]: DENY'
# bad input
fails 1 policy check --from not-a-spiffe-id --to details
has "$ERR" 'from: '
fails 1 policy check --from "$PP" --to nope
fails 2 policy check --from "$PP"
fails 2 policy check --from "$PP" --to details --port 0
fails 2 policy frobnicate

step "audit: mesh events, chain intact"
ok audit query --event mesh.delete --outcome ok --json
[ "$(count "$OUT" '"event":"mesh.delete"')" -eq 2 ] || fail "mesh.delete events"
ok audit query --event mesh.delete --outcome denied --json
[ "$(count "$OUT" '"event":"mesh.delete"')" -eq 1 ] || fail "refused mesh.delete events"
ok audit verify

step "server restart: everything still there"
ok service list
cp "$OUT" "$WORK/services.before"
ok policy list
cp "$OUT" "$WORK/policies.before"
ok endpoint list
cp "$OUT" "$WORK/endpoints.before"
stop_server
fails 1 endpoint list
start_server
ok service list
cmp -s "$OUT" "$WORK/services.before" || fail "services differ after restart"
ok policy list
cmp -s "$OUT" "$WORK/policies.before" || fail "policies differ after restart"
ok endpoint list
cmp -s "$OUT" "$WORK/endpoints.before" || fail "endpoints differ after restart"
ok apply -f "$DIR"
has "$OUT" '^policy default/deny-all created$'
has "$OUT" '^service seexamples/workload created$'
[ "$(count "$OUT" ' unchanged$')" -eq $((NDOCS - 3)) ] || fail "re-apply after restart"
stop_server
echo "ok: mesh registry CLI"
