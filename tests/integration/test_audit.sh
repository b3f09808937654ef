#!/usr/bin/env bash
# The audit database: events for issuance and refusals, queries, the hash
# chain, signed heads, and tampering with sqlite3 (edit, delete, reorder,
# truncate, rewrite) caught by `meshid audit verify`.
source "$(dirname "$0")/lib.sh"
TD=audit.test

ok ca init --trust-domain "$TD"
ok svid mint --spiffe-id "spiffe://$TD/a" --write "$WORK/a"
ok svid mint --spiffe-id "spiffe://$TD/b" --write "$WORK/b"
fails 1 svid mint --spiffe-id "spiffe://other.test/x" --write "$WORK/x"
ok svid mint --spiffe-id "spiffe://$TD/a" --write "$WORK/a2"
[ ! -e "$WORK/x" ] || fail "refused mint wrote files"

step "every issuance and refusal is an event"
ok audit query
has "$OUT" "ca.init"
[ "$(grep -c 'svid.issue' "$OUT")" -eq 3 ] || fail "want 3 svid.issue"
grep 'svid.refuse' "$OUT" | grep -q 'denied' || fail "refusal not audited as denied"
has "$OUT" "spiffe://other.test/x"
has "$OUT" "\(5 events\)|\(6 events\)"

step "query filters"
ok audit query --spiffe-id "spiffe://$TD/a" --json
[ "$(wc -l <"$OUT")" -eq 2 ] || fail "want 2 events for /a"
python3 - "$OUT" <<'PY' || fail "json lines"
import json, sys
for line in open(sys.argv[1]):
    e = json.loads(line)
    assert e["spiffe_id"].endswith("/a") and e["event"] == "svid.issue" and e["outcome"] == "ok"
    assert len(e["serial"]) == 32 and len(e["hash"]) == 64 and isinstance(e["details"], dict)
    assert e["time"].endswith("Z") and e["actor"].startswith("cli:uid=")
PY
ok audit query --outcome denied --json
[ "$(wc -l <"$OUT")" -eq 1 ] || fail "want 1 denied"
has "$OUT" '"reason":"[^"]+'
ok audit query --event svid.issue --limit 1 --json
[ "$(wc -l <"$OUT")" -eq 1 ] || fail "limit 1"
has "$OUT" "spiffe://$TD/a\""
ok audit query --since 1h --json
n_all=$(wc -l <"$OUT")
[ "$n_all" -ge 6 ] || fail "since 1h: $n_all"
ok audit query --until 1h --json
[ "$(wc -l <"$OUT")" -eq 0 ] || fail "until 1h ago should be empty"
ok audit query --since 2000-01-01T00:00:00Z --until 2999-01-01T00:00:00+02:00 --json
[ "$(wc -l <"$OUT")" -eq "$n_all" ] || fail "rfc3339 range"
fails 2 audit query --outcome maybe
fails 1 audit query --since yesterday
has "$ERR" "RFC 3339"

step "intact chain verifies; a signed head verifies"
ok audit verify
has "$OUT" "audit log intact: $n_all events"
ok audit head --out "$WORK/head.json"
ok audit verify --head "$WORK/head.json"
has "$OUT" "extends the signed head"
ok bundle show
cp "$OUT" "$WORK/anchors.pem"
ok audit verify --head "$WORK/head.json" --bundle "$WORK/anchors.pem"
# new events after the head still extend it
ok svid mint --spiffe-id "spiffe://$TD/c" --write "$WORK/c"
ok audit verify --head "$WORK/head.json"
head_seq=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["seq"])' "$WORK/head.json")

DB="$MESHID_DATA_DIR/meshid.db"
step "append-only triggers stop casual edits in the sqlite3 shell"
! sql "UPDATE audit_events SET reason = 'x' WHERE seq = 2" 2>/dev/null || fail "UPDATE allowed"
! sql "DELETE FROM audit_events WHERE seq = 2" 2>/dev/null || fail "DELETE allowed"
ok audit verify
# An attacker drops the triggers first; from here on every edit is deliberate.
for t in $(sql "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_events'"); do
  sql "DROP TRIGGER $t"
done
cp "$DB" "$WORK/pristine.db"
restore() { cp "$WORK/pristine.db" "$DB"; rm -f "$DB-wal" "$DB-shm"; }
broken_at() { # SEQ: verify must fail naming event SEQ
  fails 4 audit verify
  has "$OUT" "BROKEN at event $1:"
}

step "tamper: edit one field of event 3"
sql "UPDATE audit_events SET reason = 'nothing to see' WHERE seq = 3"
broken_at 3
restore
sql "UPDATE audit_events SET spiffe_id = 'spiffe://$TD/evil' WHERE seq = 4"
broken_at 4
restore

step "tamper: delete a middle event"
sql "DELETE FROM audit_events WHERE seq = 3"
broken_at 3
restore

step "tamper: reorder two events"
sql "BEGIN; UPDATE audit_events SET seq = 1000000 WHERE seq = 3; UPDATE audit_events SET seq = 3 WHERE seq = 4;
     UPDATE audit_events SET seq = 4 WHERE seq = 1000000; COMMIT;"
broken_at 3
restore

step "tamper: truncate the log; plain verify cannot see it, the signed head does"
sql "DELETE FROM audit_events WHERE seq >= $head_seq"
ok audit verify
fails 4 audit verify --head "$WORK/head.json"
has "$OUT" "truncated"
restore

step "tamper: rewrite history and recompute every hash; only the head catches it"
python3 "$(dirname "$0")/rehash_audit.py" "$DB" 2 "reason" "rewritten" || fail "rehash helper"
ok audit verify
fails 4 audit verify --head "$WORK/head.json"
has "$OUT" "differs from the signed head|rewritten"
restore

step "a forged head (edited seq) is refused"
python3 - "$WORK/head.json" "$WORK/forged.json" <<'PY'
import json, sys
h = json.load(open(sys.argv[1])); h["seq"] = h["seq"] - 1
json.dump(h, open(sys.argv[2], "w"))
PY
fails 1 audit verify --head "$WORK/forged.json"
has "$ERR" "signature"
fails 1 audit verify --head /nonexistent/head.json
echo '{"seq": "x"' >"$WORK/bad.json"
fails 1 audit verify --head "$WORK/bad.json"

step "a head checked against a foreign bundle is refused"
ok --data-dir "$WORK/other" ca init --trust-domain other.test
ok --data-dir "$WORK/other" bundle show
cp "$OUT" "$WORK/foreign.pem"
fails 1 audit verify --head "$WORK/head.json" --bundle "$WORK/foreign.pem"
echo "all good"
