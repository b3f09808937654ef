#!/usr/bin/env bash
# Bad input: invalid SPIFFE IDs, malformed / oversized / badly signed /
# unsupported / overreaching CSRs, a corrupt database, a locked database.
# Each gives a one-line error and exit 1, is audited when an identity was at
# stake, and writes nothing partial.
source "$(dirname "$0")/lib.sh"
TD=bad.test
ok ca init --trust-domain "$TD"
count_certs() { sql "SELECT count(*) FROM certificates"; }
count_refusals() { sql "SELECT count(*) FROM audit_events WHERE event = 'svid.refuse' AND outcome = 'denied'"; }

step "invalid SPIFFE IDs"
refusals=0
for id in "" "spiffe://Bad.Test/x" "spiffe://bad.test" "spiffe://bad.test/" "spiffe://bad.test/a//b" \
          "spiffe://bad.test/a/../b" "spiffe://bad.test/a?q=1" "spiffe://bad.test/a#f" \
          "spiffe://bad.test:8443/a" "spiffe://u@bad.test/a" "spiffe://bad%2etest/a" \
          "https://bad.test/a" "spiffe://other.test/a" "spiffe://bad.test/a%20b"; do
  fails 1 svid mint --spiffe-id "$id" --write "$WORK/never"
  refusals=$((refusals + 1))
done
[ ! -e "$WORK/never" ] || fail "a refused mint created files"
long="spiffe://$TD/$(head -c 2100 /dev/zero | tr '\0' a)"
fails 1 svid mint --spiffe-id "$long" --write "$WORK/never"
refusals=$((refusals + 1))
has "$ERR" "2048|too long"
[ "$(count_refusals)" -eq "$refusals" ] || fail "refusals audited: $(count_refusals) of $refusals"
[ "$(count_certs)" -eq 0 ] || fail "certificates were stored"

step "malformed CSRs"
printf 'not a csr at all' >"$WORK/garbage.csr"
fails 1 svid mint --spiffe-id "spiffe://$TD/w" --csr "$WORK/garbage.csr"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/k" -subj /CN=x \
  -outform DER -out "$WORK/good.der" 2>/dev/null
head -c 60 "$WORK/good.der" >"$WORK/trunc.der"
fails 1 svid mint --spiffe-id "spiffe://$TD/w" --csr "$WORK/trunc.der"
{ echo "-----BEGIN CERTIFICATE REQUEST-----"; head -c 70000 /dev/zero | base64 -w 64
  echo "-----END CERTIFICATE REQUEST-----"; } >"$WORK/huge.csr"
fails 1 svid mint --spiffe-id "spiffe://$TD/w" --csr "$WORK/huge.csr"
has "$ERR" "large|limit|too"

step "a CSR with a bad signature"
python3 - "$WORK/good.der" "$WORK/badsig.der" <<'PY'
import sys
d = bytearray(open(sys.argv[1], "rb").read())
d[-5] ^= 0x01   # inside the signature BIT STRING
open(sys.argv[2], "wb").write(bytes(d))
PY
fails 1 svid mint --spiffe-id "spiffe://$TD/w" --csr "$WORK/badsig.der"
has "$ERR" "signature"

step "unsupported keys"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-521 -nodes -keyout "$WORK/k" -subj /CN=x \
  -out "$WORK/p521.csr" 2>/dev/null
fails 1 svid mint --spiffe-id "spiffe://$TD/w" --csr "$WORK/p521.csr"
has "$ERR" "unsupported"
openssl req -new -newkey rsa:1024 -nodes -keyout "$WORK/k" -subj /CN=x -out "$WORK/rsa1024.csr" 2>/dev/null
fails 1 svid mint --spiffe-id "spiffe://$TD/w" --csr "$WORK/rsa1024.csr"
has "$ERR" "unsupported"
openssl req -new -newkey ed25519 -nodes -keyout "$WORK/k" -subj /CN=x -out "$WORK/ed.csr" 2>/dev/null
fails 1 svid mint --spiffe-id "spiffe://$TD/w" --csr "$WORK/ed.csr"
has "$ERR" "unsupported"

step "a CSR asking for another SPIFFE ID"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/k" -subj /CN=x \
  -addext "subjectAltName=URI:spiffe://$TD/admin" -out "$WORK/other.csr" 2>/dev/null
fails 1 svid mint --spiffe-id "spiffe://$TD/w" --csr "$WORK/other.csr"
has "$ERR" "spiffe://$TD/admin"
# asking for exactly the decided ID is fine
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/k" -subj /CN=x \
  -addext "subjectAltName=URI:spiffe://$TD/w" -out "$WORK/same.csr" 2>/dev/null
ok svid mint --spiffe-id "spiffe://$TD/w" --csr "$WORK/same.csr"
[ "$(count_certs)" -eq 1 ] || fail "exactly one certificate expected"
ok audit query --outcome denied --json
[ "$(wc -l <"$OUT")" -eq $((refusals + 8)) ] || fail "CSR refusals not all audited ($(wc -l <"$OUT"))"
ok audit verify

step "missing files and bad flags"
fails 1 svid mint --spiffe-id "spiffe://$TD/w" --csr "$WORK/nope.csr"
has "$ERR" "nope.csr"
fails 2 svid mint --spiffe-id "spiffe://$TD/w"
fails 2 svid mint --write "$WORK/z"
fails 2 ca init
fails 2 svid mint --spiffe-id "spiffe://$TD/w" --write "$WORK/z" --bogus
fails 2 frobnicate
fails 1 svid mint --spiffe-id "spiffe://$TD/w" --write "$WORK/z" --ttl 5parsecs
fails 1 ca init --trust-domain "UPPER.case" --data-dir "$WORK/v2"

step "a locked database: a clear error within the busy timeout, nothing written"
before=$(count_certs)
python3 - "$MESHID_DATA_DIR/meshid.db" "$WORK/locked" <<'PY' &
import sqlite3, sys, time, pathlib
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("BEGIN EXCLUSIVE")
pathlib.Path(sys.argv[2]).touch()
time.sleep(12)
c.execute("ROLLBACK")
PY
locker=$!
for _ in $(seq 100); do [ -e "$WORK/locked" ] && break; sleep 0.1; done
t0=$(date +%s)
fails 1 svid mint --spiffe-id "spiffe://$TD/locked" --write "$WORK/locked-out"
[ $(( $(date +%s) - t0 )) -le 11 ] || fail "waited too long on the lock"
has "$ERR" "locked|busy"
kill $locker 2>/dev/null || true; wait $locker 2>/dev/null || true
[ "$(count_certs)" -eq "$before" ] || fail "a certificate was written under the lock"
[ ! -e "$WORK/locked-out/svid.pem" ] || fail "svid written although not recorded"
ok audit verify

step "a corrupt database"
mkdir -p "$WORK/corrupt"
head -c 8192 /dev/urandom >"$WORK/corrupt/meshid.db"
fails 1 --data-dir "$WORK/corrupt" ca status
has "$ERR" "meshid.db"
printf 'SQLite format 3\0' >"$WORK/corrupt2.db"; head -c 4096 /dev/urandom >>"$WORK/corrupt2.db"
mkdir -p "$WORK/c2" && mv "$WORK/corrupt2.db" "$WORK/c2/meshid.db"
fails 1 --data-dir "$WORK/c2" audit verify
echo "all good"
