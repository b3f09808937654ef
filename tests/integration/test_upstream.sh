#!/usr/bin/env bash
# ca init --upstream-dir adopts an intermediate in Istio's plug-in CA layout;
# mismatched, broken or unreadable inputs are refused with a clear error.
source "$(dirname "$0")/lib.sh"
TD=corp.example
P="$WORK/plugin"
mkdir -p "$P"

step "make an upstream root and an intermediate with the openssl CLI"
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/root.key" \
  -subj "/O=Corp/CN=Corp Root" -days 3650 -out "$P/root-cert.pem" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$P/ca-key.pem" \
  -subj "/O=Corp/CN=meshid intermediate" -out "$WORK/int.csr" 2>/dev/null
cat >"$WORK/int.ext" <<EXT
basicConstraints=critical,CA:TRUE,pathlen:0
keyUsage=critical,keyCertSign,cRLSign
subjectAltName=URI:spiffe://$TD
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EXT
openssl x509 -req -in "$WORK/int.csr" -CA "$P/root-cert.pem" -CAkey "$WORK/root.key" \
  -CAcreateserial -days 365 -extfile "$WORK/int.ext" -out "$P/ca-cert.pem" 2>/dev/null
cat "$P/ca-cert.pem" "$P/root-cert.pem" >"$P/cert-chain.pem"

step "refusals: missing dir, missing file, key mismatch, broken chain, not a CA"
fails 1 ca init --upstream-dir "$WORK/nowhere"
cp -r "$P" "$WORK/nokey" && rm "$WORK/nokey/ca-key.pem"
fails 1 ca init --upstream-dir "$WORK/nokey"
has "$ERR" "ca-key.pem"
cp -r "$P" "$WORK/mismatch"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/mismatch/ca-key.pem" 2>/dev/null
fails 1 ca init --upstream-dir "$WORK/mismatch"
has "$ERR" "match"
cp -r "$P" "$WORK/otherroot"
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/o.key" \
  -subj "/CN=Other Root" -days 30 -out "$WORK/otherroot/root-cert.pem" 2>/dev/null
fails 1 ca init --upstream-dir "$WORK/otherroot"
has "$ERR" "chain|verif"
cp -r "$P" "$WORK/garbled" && echo "garbage" >"$WORK/garbled/ca-cert.pem"
fails 1 ca init --upstream-dir "$WORK/garbled"
has "$ERR" "ca-cert.pem"
mkdir -p "$WORK/leaf"
cp "$P/root-cert.pem" "$WORK/leaf/"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/leaf/ca-key.pem" \
  -subj "/CN=leaf" -out "$WORK/leaf.csr" 2>/dev/null
printf 'basicConstraints=critical,CA:FALSE\nsubjectAltName=URI:spiffe://%s\n' "$TD" >"$WORK/leaf.ext"
openssl x509 -req -in "$WORK/leaf.csr" -CA "$P/root-cert.pem" -CAkey "$WORK/root.key" \
  -CAcreateserial -days 30 -extfile "$WORK/leaf.ext" -out "$WORK/leaf/ca-cert.pem" 2>/dev/null
cat "$WORK/leaf/ca-cert.pem" "$P/root-cert.pem" >"$WORK/leaf/cert-chain.pem"
fails 1 ca init --upstream-dir "$WORK/leaf"
has "$ERR" "CA"
[ "$(sql 'SELECT count(*) FROM authorities')" -eq 0 ] || fail "a refused adoption left authorities"

step "adopt the good directory and mint"
ok ca init --upstream-dir "$P"
has "$OUT" "corp.example"
ok ca status
has "$OUT" "upstream"
ok svid mint --spiffe-id "spiffe://$TD/billing" --write "$WORK/svid"
openssl verify -CAfile "$P/root-cert.pem" -untrusted "$WORK/svid/svid.pem" "$WORK/svid/svid.pem" \
  >"$OUT" 2>&1 || fail "svid does not verify against the upstream root"
cmp -s <(openssl x509 -in "$WORK/svid/bundle.pem") <(openssl x509 -in "$P/root-cert.pem") \
  || fail "bundle is not the upstream root"
key=$(find "$MESHID_DATA_DIR/keys" -name '*.key' | head -1)
[ "$(stat -c %a "$key")" = 600 ] || fail "adopted key not 0600"
echo "all good"
