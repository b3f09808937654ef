#!/usr/bin/env bash
# ca init, svid mint (generated key and CSR), bundle show, ca status:
# every SVID verified by `openssl verify` and checked field by field.
source "$(dirname "$0")/lib.sh"
TD=example.org

step "ca status before init is a clear error"
fails 1 ca status
has "$ERR" "no trust domain"

step "ca init creates a root and an intermediate with 0600 keys"
ok ca init --trust-domain "$TD"
has "$OUT" "initialised trust domain example.org"
[ "$(find "$MESHID_DATA_DIR/keys" -name '*.key' | wc -l)" -eq 2 ] || fail "want 2 key files"
for k in "$MESHID_DATA_DIR"/keys/*.key; do
  [ "$(stat -c %a "$k")" = 600 ] || fail "$k mode $(stat -c %a "$k")"
done
fails 1 ca init --trust-domain "$TD"
has "$ERR" "already"

step "ca status lists both authorities as active"
ok ca status
has "$OUT" "trust domain: example.org"
has "$OUT" "root +active"
has "$OUT" "intermediate +active"

# check_svid CERT_PEM ID [DNS]: field-by-field X.509-SVID conformance.
check_svid() {
  local pem=$1 id=$2 dns=${3:-}
  local txt="$WORK/x509.txt"
  openssl x509 -in "$pem" -noout -text >"$txt" 2>&1 || fail "openssl cannot read $pem"
  [ "$(grep -o 'URI:[^, ]*' "$txt" | wc -l)" -eq 1 ] || fail "not exactly one URI SAN"
  has "$txt" "URI:$id(,|$)"
  grep -A1 'X509v3 Basic Constraints: critical' "$txt" | grep -q 'CA:FALSE' || fail "CA:FALSE critical"
  grep -A1 'X509v3 Key Usage: critical' "$txt" >"$WORK/ku"
  has "$WORK/ku" "Digital Signature"
  hasnt "$WORK/ku" "Certificate Sign|CRL Sign"
  grep -A1 'X509v3 Extended Key Usage' "$txt" >"$WORK/eku"
  has "$WORK/eku" "TLS Web Server Authentication"
  has "$WORK/eku" "TLS Web Client Authentication"
  has "$txt" "X509v3 Subject Key Identifier"
  has "$txt" "X509v3 Authority Key Identifier"
  local serial
  serial=$(openssl x509 -in "$pem" -noout -serial | cut -d= -f2)
  [ "${#serial}" -ge 30 ] && [ "${#serial}" -le 32 ] || fail "serial $serial is not 128-bit"
  if [ -n "$dns" ]; then has "$txt" "DNS:$dns"; fi
}

step "svid mint --write: generated key, chain, bundle; openssl verify"
ok svid mint --spiffe-id "spiffe://$TD/ns/web" --write "$WORK/web" --dns web.local
has "$OUT" "minted spiffe://example.org/ns/web"
[ "$(stat -c %a "$WORK/web/svid.key")" = 600 ] || fail "svid.key not 0600"
[ "$(grep -c 'BEGIN CERTIFICATE' "$WORK/web/svid.pem")" -eq 2 ] || fail "svid.pem: leaf + intermediate"
openssl verify -CAfile "$WORK/web/bundle.pem" -untrusted "$WORK/web/svid.pem" "$WORK/web/svid.pem" \
  >"$OUT" 2>&1 || fail "openssl verify failed"
check_svid "$WORK/web/svid.pem" "spiffe://$TD/ns/web" web.local
# key matches certificate
[ "$(openssl x509 -in "$WORK/web/svid.pem" -noout -pubkey)" = \
  "$(openssl pkey -in "$WORK/web/svid.key" -pubout)" ] || fail "key does not match cert"

step "default TTL is 1h; --ttl is honoured and capped at 7 days"
end=$(date -d "$(openssl x509 -in "$WORK/web/svid.pem" -noout -enddate | cut -d= -f2)" +%s)
left=$((end - $(date +%s)))
[ "$left" -gt 3500 ] && [ "$left" -le 3600 ] || fail "default ttl: $left s"
ok svid mint --spiffe-id "spiffe://$TD/ns/long" --write "$WORK/long" --ttl 30d
end=$(date -d "$(openssl x509 -in "$WORK/long/svid.pem" -noout -enddate | cut -d= -f2)" +%s)
left=$((end - $(date +%s)))
[ "$left" -gt $((7 * 86400 - 100)) ] && [ "$left" -le $((7 * 86400)) ] || fail "capped ttl: $left s"

step "svid mint --csr: the CA decides the SPIFFE ID"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/c.key" \
  -subj "/CN=ignored" -out "$WORK/c.csr" 2>/dev/null
ok svid mint --spiffe-id "spiffe://$TD/ns/csr" --csr "$WORK/c.csr"
cp "$OUT" "$WORK/csr-chain.pem"
ok bundle show
cp "$OUT" "$WORK/bundle.pem"
openssl verify -CAfile "$WORK/bundle.pem" -untrusted "$WORK/csr-chain.pem" "$WORK/csr-chain.pem" \
  >"$OUT" 2>&1 || fail "csr svid does not verify"
check_svid "$WORK/csr-chain.pem" "spiffe://$TD/ns/csr"
[ "$(openssl x509 -in "$WORK/csr-chain.pem" -noout -pubkey)" = \
  "$(openssl pkey -in "$WORK/c.key" -pubout)" ] || fail "csr key not in cert"

step "RSA-2048 SVID has keyEncipherment too"
ok svid mint --spiffe-id "spiffe://$TD/ns/rsa" --write "$WORK/rsa" --key-type rsa-2048
openssl x509 -in "$WORK/rsa/svid.pem" -noout -text | grep -A1 'Key Usage: critical' \
  | grep -q 'Digital Signature, Key Encipherment' || fail "rsa key usage"
openssl verify -CAfile "$WORK/rsa/bundle.pem" -untrusted "$WORK/rsa/svid.pem" "$WORK/rsa/svid.pem" \
  >/dev/null 2>&1 || fail "rsa svid does not verify"

step "a real TLS handshake with two minted SVIDs (openssl s_server/s_client, both verify)"
ok svid mint --spiffe-id "spiffe://$TD/ns/client" --write "$WORK/client"
port=$((20000 + RANDOM % 20000))
openssl s_server -accept "127.0.0.1:$port" -cert "$WORK/web/svid.pem" -key "$WORK/web/svid.key" \
  -cert_chain "$WORK/web/svid.pem" -CAfile "$WORK/web/bundle.pem" -Verify 2 -verify_return_error \
  -www >"$WORK/server.log" 2>&1 &
spid=$!
for _ in $(seq 50); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
echo | openssl s_client -connect "127.0.0.1:$port" -cert "$WORK/client/svid.pem" \
  -key "$WORK/client/svid.key" -cert_chain "$WORK/client/svid.pem" -CAfile "$WORK/client/bundle.pem" \
  -verify_return_error >"$WORK/client.log" 2>&1 || { kill $spid; cat "$WORK/server.log"; fail "handshake failed"; }
kill $spid 2>/dev/null || true
has "$WORK/client.log" "Verify return code: 0 \(ok\)"

step "bundle show --format spiffe is a JWK set whose x5c is the root"
ok bundle show --format spiffe
python3 - "$OUT" "$WORK/bundle.pem" <<'PY' || fail "spiffe bundle"
import json, sys, base64, subprocess
b = json.load(open(sys.argv[1]))
assert isinstance(b["keys"], list) and len(b["keys"]) == 1, b
k = b["keys"][0]
assert k["use"] == "x509-svid" and "kid" not in k and k["kty"] == "EC" and k["crv"] == "P-256", k
der = base64.b64decode(k["x5c"][0], validate=True)
pem = subprocess.run(["openssl", "x509", "-inform", "DER", "-outform", "PEM"], input=der,
                     capture_output=True, check=True).stdout.decode()
assert pem.strip() == open(sys.argv[2]).read().strip(), "x5c is not the bundle root"
assert isinstance(b.get("spiffe_sequence"), int)
PY

step "ca status counts live SVIDs of the intermediate"
ok ca status
awk '$2 == "intermediate" {print $6}' "$OUT" | grep -qx 5 || fail "want 5 live SVIDs"

step "--data-dir overrides MESHID_DATA_DIR"
ok --data-dir "$WORK/other" ca init --trust-domain other.test
ok ca status --data-dir "$WORK/other"
has "$OUT" "trust domain: other.test"
echo "all good"
