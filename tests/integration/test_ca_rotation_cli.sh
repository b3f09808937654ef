#!/usr/bin/env bash
# The authority lifecycle from the command line: ca prepare / activate /
# rotate / taint / revoke / retire. Every SVID is checked with `openssl
# verify` against `bundle show`; every refusal exits 1 with one line and
# leaves the authorities exactly as they were.
source "$(dirname "$0")/lib.sh"
TD=example.org

# The authorities table, whole (what a refusal must not change).
table() { sql "SELECT id, kind, state, parent_id, cert_pem, chain_pem, key_ref, created_at,
               upstream FROM authorities ORDER BY rowid" | sha256sum; }
# refused PATTERN ARGS...: exit 1, one line matching PATTERN, nothing changed.
refused() {
  local pat=$1; shift
  local before; before=$(table)
  fails 1 "$@"
  has "$ERR" "$pat"
  [ "$(table)" = "$before" ] || fail "meshid $* changed the authorities"
}
# id_of KIND STATE: the full id of the newest such authority.
id_of() { sql "SELECT id FROM authorities WHERE kind = '$1' AND state = '$2' ORDER BY rowid DESC LIMIT 1"; }
state_of() { sql "SELECT state FROM authorities WHERE id = '$1'"; }
bundle() { "$MESHID" bundle show >"$WORK/bundle.pem" 2>"$ERR" || fail "bundle show"; }
roots_in_bundle() { bundle; grep -c 'BEGIN CERTIFICATE' "$WORK/bundle.pem"; }
# verifies DIR: the SVID in DIR/svid.pem verifies against the current bundle.
verifies() {
  bundle
  openssl verify -CAfile "$WORK/bundle.pem" -untrusted "$1/svid.pem" "$1/svid.pem" >"$OUT" 2>&1
}
# signer_of DIR: the leaf's authority key id as lowercase hex (= the intermediate's id).
signer_of() {
  openssl x509 -in "$1/svid.pem" -noout -ext authorityKeyIdentifier 2>/dev/null \
    | tr -d ' :' | grep -io '[0-9a-f]\{40,\}' | tr 'A-F' 'a-f' | head -1
}
mint() { ok svid mint --spiffe-id "spiffe://$TD/$1" --write "$WORK/$1"; }
events() { "$MESHID" audit query --json --event "$1" | grep -c '"event"' || true; }

step "init and a first SVID"
ok ca init --trust-domain "$TD"
mint w1
R1=$(id_of root active)
I1=$(id_of intermediate active)
[ "$(signer_of "$WORK/w1")" = "$I1" ] || fail "w1 not signed by $I1"

step "ca prepare: a prepared intermediate under the active root; bundle unchanged"
ok ca prepare
has "$OUT" "prepared intermediate [0-9a-f]{16} under root ${R1:0:16}"
has "$OUT" "meshid ca activate"
I2=$(id_of intermediate prepared)
ok ca status
has "$OUT" "intermediate +prepared"
awk -v id="${I2:0:16}" '$1 == id {print $8}' "$OUT" | grep -qx "${R1:0:16}" || fail "ROOT column"
[ "$(roots_in_bundle)" -eq 1 ] || fail "intermediate prepare changed the bundle"
[ "$(stat -c %a "$MESHID_DATA_DIR/keys/$I2.key")" = 600 ] || fail "key not 0600"

step "bad inputs are refused with one line and change nothing"
refused "already prepared" ca prepare
refused "already prepared" ca prepare --root
refused "no authority with id" ca activate 0123456789abcdef0123
refused "not hexadecimal" ca activate zz
refused "already active" ca activate "${I1:0:12}"
refused "already active" ca activate "$R1"
refused "activate a replacement first" ca taint "$I1"
refused "activate a replacement first" ca taint "$R1"
refused "taint it first" ca revoke "$R1"
refused "revoke its root|peers trust roots" ca revoke "$I1"
fails 2 ca activate
fails 2 ca activate "$I2" extra
fails 2 ca prepare --root --upstream-dir /tmp
cp "$MESHID_DATA_DIR/keys/$I2.key" "$WORK/saved.key"
echo "garbage" >"$MESHID_DATA_DIR/keys/$I2.key"
refused "key of intermediate" ca activate "$I2"
rm "$MESHID_DATA_DIR/keys/$I2.key"
refused "key of intermediate" ca activate "$I2"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$MESHID_DATA_DIR/keys/$I2.key" 2>/dev/null
refused "match" ca activate "$I2"
cp "$WORK/saved.key" "$MESHID_DATA_DIR/keys/$I2.key"
chmod 600 "$MESHID_DATA_DIR/keys/$I2.key"
# an ambiguous prefix: a one-digit prefix shared by two ids (if the ids so far have one)
dup=$(sql "SELECT substr(id,1,1) FROM authorities GROUP BY 1 HAVING count(*) > 1 LIMIT 1")
if [ -n "$dup" ]; then refused "ambiguous" ca activate "$dup"; fi

step "ca activate by prefix: new intermediate signs, old one is old"
ok ca activate "${I2:0:8}"
has "$OUT" "activated intermediate ${I2:0:16}"
[ "$(state_of "$I2")" = active ] && [ "$(state_of "$I1")" = old ] || fail "states after activate"
[ "$(state_of "$R1")" = active ] || fail "root changed"
mint w2
[ "$(signer_of "$WORK/w2")" = "$I2" ] || fail "w2 not signed by the new intermediate"
verifies "$WORK/w2" || fail "w2 does not verify against the bundle"
verifies "$WORK/w1" || fail "w1 (old intermediate) no longer verifies"
ok ca status
awk -v id="${I1:0:16}" '$1 == id {print $3, $6}' "$OUT" | grep -qx "old 1" || fail "old row"
awk '$2 == "intermediate" && $3 == "active" {print $6}' "$OUT" | grep -qx 1 || fail "active row"
refused "is old; only a prepared" ca activate "$I1"

step "ca prepare --root: a new root, in the bundle before it signs"
ok ca prepare --root
has "$OUT" "under new root"
R2=$(id_of root prepared)
I3=$(id_of intermediate prepared)
ok ca status
has "$OUT" "root +prepared"
[ "$(roots_in_bundle)" -eq 2 ] || fail "want 2 roots after prepare --root"
refused "already prepared" ca prepare

step "ca activate ROOT: root and its intermediate become active; old ones old"
ok ca activate "${R2:0:10}"
[ "$(state_of "$R2")" = active ] && [ "$(state_of "$I3")" = active ] || fail "new pair not active"
[ "$(state_of "$R1")" = old ] && [ "$(state_of "$I2")" = old ] || fail "old pair not old"
[ "$(roots_in_bundle)" -eq 2 ] || fail "old root left the bundle too early"
mint w3
[ "$(signer_of "$WORK/w3")" = "$I3" ] || fail "w3 not signed by $I3"
verifies "$WORK/w3" || fail "w3 does not verify"
verifies "$WORK/w1" || fail "w1 no longer verifies after root rotation"
verifies "$WORK/w2" || fail "w2 no longer verifies after root rotation"

step "revoke needs taint; taint + revoke drops the old root and its SVIDs"
refused "taint it first" ca revoke "$R1"
has "$ERR" "live SVIDs chain to it"
ok ca taint "${R1:0:16}"
has "$OUT" "tainted ${R1:0:16}"
refused "already tainted" ca taint "$R1"
[ "$(roots_in_bundle)" -eq 2 ] || fail "a tainted root must stay in the bundle"
ok ca revoke "$R1"
has "$OUT" "revoked root ${R1:0:16}"
[ "$(roots_in_bundle)" -eq 1 ] || fail "revoked root still in the bundle"
bundle
openssl x509 -in "$WORK/bundle.pem" -noout -ext subjectKeyIdentifier | tr -d ' :' | tr 'A-F' 'a-f' \
  | grep -q "$R2" || fail "bundle is not the new root"
if verifies "$WORK/w1"; then fail "w1 still verifies after its root was revoked"; fi
if verifies "$WORK/w2"; then fail "w2 still verifies after its root was revoked"; fi
verifies "$WORK/w3" || fail "w3 stopped verifying"
refused "already revoked" ca revoke "$R1"
refused "is revoked" ca activate "$R1"

step "ca rotate: prepare and activate in one go"
ok ca rotate
has "$OUT" "activated intermediate"
I4=$(id_of intermediate active)
[ "$I4" != "$I3" ] && [ "$(state_of "$I3")" = old ] || fail "rotate did not switch"
mint w4
[ "$(signer_of "$WORK/w4")" = "$I4" ] || fail "w4 not signed by $I4"
verifies "$WORK/w4" || fail "w4 does not verify"
verifies "$WORK/w3" || fail "w3 stopped verifying after rotate"
ok ca rotate --root
[ "$(roots_in_bundle)" -eq 2 ] || fail "rotate --root: want old and new root"
mint w5
verifies "$WORK/w5" && verifies "$WORK/w4" || fail "after rotate --root"

step "ca retire: nothing to retire while old authorities still have live SVIDs"
ok ca retire
has "$OUT" "retired 0 old authorities"

step "to an upstream (plug-in) CA and back"
P="$WORK/plugin"
mkdir -p "$P"
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/up-root.key" \
  -subj "/O=Corp/CN=Corp Root" -days 3650 -out "$P/root-cert.pem" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$P/ca-key.pem" \
  -subj "/O=Corp/CN=meshid intermediate" -out "$WORK/int.csr" 2>/dev/null
printf 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectAltName=URI:spiffe://%s\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' "$TD" >"$WORK/int.ext"
openssl x509 -req -in "$WORK/int.csr" -CA "$P/root-cert.pem" -CAkey "$WORK/up-root.key" \
  -CAcreateserial -days 365 -extfile "$WORK/int.ext" -out "$P/ca-cert.pem" 2>/dev/null
cat "$P/ca-cert.pem" "$P/root-cert.pem" >"$P/cert-chain.pem"
refused "cannot read ca-cert.pem" ca prepare --upstream-dir "$WORK/nowhere"
ok ca prepare --upstream-dir "$P"
has "$OUT" "under new root"
[ "$(roots_in_bundle)" -eq 3 ] || fail "upstream root not in the bundle"
ok ca activate "$(id_of intermediate prepared)"
ok ca status
awk '$2 == "root" && $3 == "active" {print $7}' "$OUT" | grep -qx upstream || fail "upstream root not active"
mint w6
verifies "$WORK/w6" || fail "w6 (upstream) does not verify"
refused "upstream-dir" ca prepare
ok ca rotate --root
mint w7
verifies "$WORK/w7" && verifies "$WORK/w6" || fail "back to self-signed"
ls -a "$MESHID_DATA_DIR" | grep -q '^\.upstream-' && fail "scratch directory left behind"

step "every transition is in the audit log"
[ "$(events ca.prepare)" -eq 10 ] || fail "ca.prepare events: $(events ca.prepare)"
[ "$(events ca.activate)" -eq 20 ] || fail "ca.activate events: $(events ca.activate)"
[ "$(events ca.taint)" -eq 1 ] || fail "ca.taint events"
[ "$(events ca.revoke)" -eq 1 ] || fail "ca.revoke events"
ok audit verify
"$MESHID" audit query --json --event ca.revoke >"$OUT"
has "$OUT" "\"actor\":\"cli:uid="
has "$OUT" "\"id\":\"$R1\""

step "ca status still has the columns other tests parse"
ok ca status
has "$OUT" "root +active"
has "$OUT" "intermediate +active"
awk '$2 == "intermediate" && $3 == "active" {print $6}' "$OUT" | grep -qx 1 || fail "LIVE SVID column"
echo "all good"
