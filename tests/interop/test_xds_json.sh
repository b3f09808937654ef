#!/usr/bin/env bash
# The xDS resources meshid generates, as meshid shows them in JSON
# (lib/pbjson + meshcore/xds_json: proto3 JSON names, every Any opened),
# checked against Envoy's OFFICIAL protos by proto_json_check.js: every key a
# known field, enums valid, every "@type" resolved, the protoc-gen-validate
# rules Envoy enforces met, and a protobufjs round trip. The resources come
# from the xdsjson unit test (a sidecar with inbound RBAC, HTTP/gRPC/TCP
# outbound services, a proxyless gRPC client), dumped as JSON lines. A
# broken copy must be refused (the checker can fail).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
UNIT=${XDS_JSON_UNIT:-$ROOT/build/asan/tests/unit_xdsjson}
[ -x "$UNIT" ] || { echo "no $UNIT (make build/asan/tests/unit_xdsjson)"; exit 1; }
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:exitcode=86}
bash "$HERE/setup.sh" >/dev/null

WORK=$(mktemp -d /tmp/meshid-xdsjson.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; cat "$WORK/err" >&2 2>/dev/null || true; exit 1; }

echo "-- generate and dump the resources"
XDS_JSON_DUMP="$WORK/xds.jsonl" "$UNIT" >"$WORK/unit.out" 2>&1 || { cat "$WORK/unit.out"; fail "unit_xdsjson"; }
n=$(grep -c . "$WORK/xds.jsonl")
[ "$n" -ge 20 ] || fail "only $n resources dumped"
for t in Listener RouteConfiguration Cluster ClusterLoadAssignment; do
  grep -q "\"@type\":\"type.googleapis.com/envoy.config.[a-z]*.v3.$t\"" "$WORK/xds.jsonl" || fail "no $t dumped"
done

echo "-- every resource against the official protos"
node "$HERE/proto_json_check.js" any "$WORK/xds.jsonl" 2>"$WORK/err" || fail "the official protos refuse a resource"

echo "-- a broken resource is refused"
node -e '
  const fs = require("fs");
  const lines = fs.readFileSync(process.argv[1], "utf8").trim().split("\n").map(JSON.parse);
  const i = lines.findIndex((r) => r["@type"].endsWith("v3.Cluster"));
  lines[i].connectTimeout = "-1s";
  fs.writeFileSync(process.argv[2], lines.map((l) => JSON.stringify(l)).join("\n") + "\n");
  const j = lines.findIndex((r) => r["@type"].endsWith("v3.Listener"));
  lines[i].connectTimeout = "5s";
  lines[j].filterChains = [{ filters: [{ name: "x", typedConfig: { "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", bogusKey: 1 } }] }];
  fs.writeFileSync(process.argv[3], lines.map((l) => JSON.stringify(l)).join("\n") + "\n");
' "$WORK/xds.jsonl" "$WORK/bad1.jsonl" "$WORK/bad2.jsonl"
rc=0; node "$HERE/proto_json_check.js" any "$WORK/bad1.jsonl" >/dev/null 2>"$WORK/err" || rc=$?
[ "$rc" -eq 1 ] || fail "negative connect timeout accepted (rc $rc)"
grep -q "connect_timeout must be longer than 0ns" "$WORK/err" || fail "wrong message for the negative timeout"
rc=0; node "$HERE/proto_json_check.js" any "$WORK/bad2.jsonl" >/dev/null 2>"$WORK/err" || rc=$?
[ "$rc" -eq 1 ] || fail "unknown key inside a nested Any accepted (rc $rc)"
grep -q 'unknown field "bogusKey" in envoy.config.cluster.v3.Cluster' "$WORK/err" || fail "wrong message for bogusKey"
echo "PASS test_xds_json ($n resources)"
