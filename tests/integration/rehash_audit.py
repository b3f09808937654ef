#!/usr/bin/env python3
"""Test helper: an attacker who rewrites one audit event and recomputes every
hash after it, following the format documented in docs/storage.md.
usage: rehash_audit.py DB SEQ COLUMN NEW_VALUE"""
import hashlib
import sqlite3
import struct
import sys


def s(x):
    if x is None:
        return b"\x00"
    b = x.encode()
    return b"\x01" + struct.pack(">I", len(b)) + b


db_path, seq, column, value = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
assert column in ("actor", "event", "spiffe_id", "serial", "outcome", "reason", "details")
db = sqlite3.connect(db_path, isolation_level=None)
db.execute("BEGIN")
for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"
                          " AND tbl_name = 'audit_events'").fetchall():
    db.execute(f'DROP TRIGGER "{name}"')
db.execute(f"UPDATE audit_events SET {column} = ? WHERE seq = ?", (value, seq))
prev = bytes(32)
rows = db.execute("SELECT seq, ts_ms, actor, event, spiffe_id, serial, outcome, reason, details"
                  " FROM audit_events ORDER BY seq").fetchall()
for seq_i, ts, *text in rows:
    canon = s("meshid.audit.v1") + struct.pack(">qq", seq_i, ts) + b"".join(map(s, text))
    h = hashlib.sha256(prev + canon).digest()
    db.execute("UPDATE audit_events SET prev_hash = ?, hash = ? WHERE seq = ?",
               (prev.hex(), h.hex(), seq_i))
    prev = h
db.execute("COMMIT")
