/* The SQLite backend of the store (storage/store_int.h).
 *
 * One database file in WAL mode with synchronous=FULL, so a COMMIT that
 * returned is on disk and readers never block the writer. The file carries
 * application_id 0x6D736964 ("msid") and its schema version in user_version
 * (history in the schema_migrations table). Schema: docs/schema.md.
 *
 * Every SQLite return code goes through one adapter (sq_fail) that maps it to
 * a mid_err and keeps sqlite3_errmsg and the path in the message.
 */
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <openssl/evp.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib/timeutil.h"
#include "storage/audit.h"
#include "storage/sqlite/walbuf.h"
#include "storage/sqlite/walckpt.h"
#include "storage/store_int.h"

#define SQ_APPLICATION_ID 0x6D736964 /* "msid" */

/* ---- schema migrations ------------------------------------------------------ */

typedef struct {
    int version;
    const char *description;
    const char *sql;
} sq_migration;

/* The audit columns as migration 3 copies them (spelled out there so that a
 * later change to SQ_AUDIT_COLS cannot change an old migration). */
#define SQ_AUDIT_COLS_V3                                                                     \
    "seq, ts_ms, actor, event, spiffe_id, serial, outcome, reason, details, prev_hash, hash"

static const sq_migration migrations[] = {
    {1, "authorities, certificates, audit_events",
     "CREATE TABLE schema_migrations (\n"
     "  version     INTEGER PRIMARY KEY,\n"
     "  description TEXT NOT NULL,\n"
     "  applied_at  INTEGER NOT NULL\n"
     ") STRICT;\n"
     "CREATE TABLE authorities (\n"
     "  id           TEXT PRIMARY KEY NOT NULL\n"
     "               CHECK (length(id) BETWEEN 1 AND 128 AND id NOT GLOB '*[^0-9a-f]*'),\n"
     "  kind         TEXT NOT NULL CHECK (kind IN ('root', 'intermediate')),\n"
     "  state        TEXT NOT NULL CHECK (state IN ('prepared', 'active', 'old', 'tainted',\n"
     "                                              'revoked', 'removed')),\n"
     "  trust_domain TEXT NOT NULL CHECK (trust_domain <> ''),\n"
     "  parent_id    TEXT REFERENCES authorities(id),\n"
     "  cert_pem     TEXT NOT NULL,\n"
     "  chain_pem    TEXT NOT NULL DEFAULT '',\n"
     "  key_ref      TEXT NOT NULL DEFAULT '',\n"
     "  not_before   INTEGER NOT NULL,\n"
     "  not_after    INTEGER NOT NULL,\n"
     "  upstream     INTEGER NOT NULL DEFAULT 0 CHECK (upstream IN (0, 1)),\n"
     "  created_at   INTEGER NOT NULL\n"
     ") STRICT;\n"
     "CREATE TABLE certificates (\n"
     "  serial       TEXT PRIMARY KEY NOT NULL\n"
     "               CHECK (length(serial) BETWEEN 1 AND 64 AND serial NOT GLOB '*[^0-9a-f]*'),\n"
     "  spiffe_id    TEXT NOT NULL,\n"
     "  key_fp       TEXT NOT NULL,\n"
     "  not_before   INTEGER NOT NULL,\n"
     "  not_after    INTEGER NOT NULL,\n"
     "  authority_id TEXT NOT NULL REFERENCES authorities(id),\n"
     "  status       TEXT NOT NULL CHECK (status IN ('valid', 'revoked')),\n"
     "  issued_at    INTEGER NOT NULL,\n"
     "  cert_pem     TEXT NOT NULL\n"
     ") STRICT;\n"
     "CREATE INDEX certificates_spiffe_id ON certificates(spiffe_id);\n"
     "CREATE INDEX certificates_authority_id ON certificates(authority_id);\n"
     "CREATE TABLE audit_events (\n"
     "  seq       INTEGER PRIMARY KEY CHECK (seq >= 1),\n"
     "  ts_ms     INTEGER NOT NULL,\n"
     "  actor     TEXT NOT NULL CHECK (actor <> ''),\n"
     "  event     TEXT NOT NULL CHECK (event <> ''),\n"
     "  spiffe_id TEXT,\n"
     "  serial    TEXT,\n"
     "  outcome   TEXT NOT NULL CHECK (outcome IN ('ok', 'denied', 'error')),\n"
     "  reason    TEXT NOT NULL DEFAULT '',\n"
     "  details   TEXT NOT NULL DEFAULT '{}',\n"
     "  prev_hash TEXT NOT NULL\n"
     "            CHECK (length(prev_hash) = 64 AND prev_hash NOT GLOB '*[^0-9a-f]*'),\n"
     "  hash      TEXT NOT NULL CHECK (length(hash) = 64 AND hash NOT GLOB '*[^0-9a-f]*')\n"
     ") STRICT;\n"
     "CREATE INDEX audit_events_ts_ms ON audit_events(ts_ms);\n"
     "CREATE INDEX audit_events_spiffe_id ON audit_events(spiffe_id);\n"
     "CREATE INDEX audit_events_event ON audit_events(event);\n"
     /* Append-only against accidents (an ad-hoc DELETE in the sqlite3 shell);
      * deliberate tampering is caught by the hash chain and the signed head. */
     "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events\n"
     "  BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;\n"
     "CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events\n"
     "  BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;\n"},
    {2, "registration entries, join tokens, agents",
     "CREATE TABLE counters (\n"
     "  name  TEXT PRIMARY KEY NOT NULL,\n"
     "  value INTEGER NOT NULL CHECK (value >= 0)\n"
     ") STRICT;\n"
     "INSERT INTO counters (name, value) VALUES ('entries_revision', 0);\n"
     "CREATE TABLE entries (\n"
     "  id             TEXT PRIMARY KEY NOT NULL\n"
     "                 CHECK (length(id) BETWEEN 1 AND 64 AND id NOT GLOB '*[^0-9a-f-]*'),\n"
     "  spiffe_id      TEXT NOT NULL CHECK (spiffe_id GLOB 'spiffe://?*'),\n"
     "  parent_id      TEXT NOT NULL CHECK (parent_id GLOB 'spiffe://?*'),\n"
     "  selectors_hash TEXT NOT NULL CHECK (length(selectors_hash) = 64\n"
     "                                      AND selectors_hash NOT GLOB '*[^0-9a-f]*'),\n"
     "  ttl_seconds    INTEGER NOT NULL DEFAULT 0 CHECK (ttl_seconds >= 0),\n"
     "  created_at     INTEGER NOT NULL,\n"
     "  revision       INTEGER NOT NULL UNIQUE CHECK (revision >= 1),\n"
     "  UNIQUE (spiffe_id, parent_id, selectors_hash)\n"
     ") STRICT;\n"
     "CREATE INDEX entries_parent_id ON entries(parent_id, revision);\n"
     "CREATE TABLE entry_selectors (\n"
     "  entry_id TEXT NOT NULL REFERENCES entries(id) ON DELETE CASCADE,\n"
     "  type     TEXT NOT NULL CHECK (type <> '' AND type NOT GLOB '*:*'),\n"
     "  value    TEXT NOT NULL CHECK (value <> ''),\n"
     "  PRIMARY KEY (entry_id, type, value)\n"
     ") STRICT, WITHOUT ROWID;\n"
     "CREATE INDEX entry_selectors_type_value ON entry_selectors(type, value);\n"
     "CREATE TABLE entry_dns_names (\n"
     "  entry_id TEXT NOT NULL REFERENCES entries(id) ON DELETE CASCADE,\n"
     "  ord      INTEGER NOT NULL CHECK (ord >= 0),\n"
     "  dns_name TEXT NOT NULL CHECK (dns_name <> ''),\n"
     "  PRIMARY KEY (entry_id, ord)\n"
     ") STRICT, WITHOUT ROWID;\n"
     "CREATE TABLE join_tokens (\n"
     "  token_hash      TEXT PRIMARY KEY NOT NULL\n"
     "                  CHECK (length(token_hash) = 64 AND token_hash NOT GLOB '*[^0-9a-f]*'),\n"
     "  agent_spiffe_id TEXT CHECK (agent_spiffe_id GLOB 'spiffe://?*'),\n"
     "  expires_at      INTEGER NOT NULL,\n"
     "  created_at      INTEGER NOT NULL,\n"
     "  used_at         INTEGER,\n"
     "  CHECK (expires_at >= created_at)\n"
     ") STRICT;\n"
     "CREATE INDEX join_tokens_expires_at ON join_tokens(expires_at);\n"
     "CREATE TABLE agents (\n"
     "  spiffe_id   TEXT PRIMARY KEY NOT NULL CHECK (spiffe_id GLOB 'spiffe://?*'),\n"
     "  serial      TEXT NOT NULL\n"
     "              CHECK (length(serial) BETWEEN 1 AND 64 AND serial NOT GLOB '*[^0-9a-f]*'),\n"
     "  not_after   INTEGER NOT NULL,\n"
     "  hostname    TEXT NOT NULL DEFAULT '',\n"
     "  attested_at INTEGER NOT NULL,\n"
     "  last_seen   INTEGER NOT NULL,\n"
     "  banned      INTEGER NOT NULL DEFAULT 0 CHECK (banned IN (0, 1))\n"
     ") STRICT;\n"},
    /* The two tables every issuance writes, rebuilt (SQLite cannot alter a
     * CHECK) with cheaper constraints: the GLOB hex checks cost ~1.4 us each
     * (three per issuance) and the front end already enforces lowercase hex
     * (storage/store.c check_hex; hashes are the store's own), so the schema
     * keeps the length checks only. certificates_spiffe_id goes: no query of
     * meshid uses it, and it was one of the three b-trees each issuance
     * inserted into at a random position. Rows, columns and the audit chain
     * are copied unchanged. */
    {3, "cheaper CHECKs on certificates and audit_events; drop certificates_spiffe_id",
     "CREATE TABLE certificates_v3 (\n"
     "  serial       TEXT PRIMARY KEY NOT NULL CHECK (length(serial) BETWEEN 1 AND 64),\n"
     "  spiffe_id    TEXT NOT NULL,\n"
     "  key_fp       TEXT NOT NULL,\n"
     "  not_before   INTEGER NOT NULL,\n"
     "  not_after    INTEGER NOT NULL,\n"
     "  authority_id TEXT NOT NULL REFERENCES authorities(id),\n"
     "  status       TEXT NOT NULL CHECK (status IN ('valid', 'revoked')),\n"
     "  issued_at    INTEGER NOT NULL,\n"
     "  cert_pem     TEXT NOT NULL\n"
     ") STRICT;\n"
     "INSERT INTO certificates_v3 SELECT serial, spiffe_id, key_fp, not_before, not_after,\n"
     "  authority_id, status, issued_at, cert_pem FROM certificates ORDER BY rowid;\n"
     "DROP TABLE certificates;\n"
     "ALTER TABLE certificates_v3 RENAME TO certificates;\n"
     "CREATE INDEX certificates_authority_id ON certificates(authority_id);\n"
     "CREATE TABLE audit_events_v3 (\n"
     "  seq       INTEGER PRIMARY KEY CHECK (seq >= 1),\n"
     "  ts_ms     INTEGER NOT NULL,\n"
     "  actor     TEXT NOT NULL CHECK (actor <> ''),\n"
     "  event     TEXT NOT NULL CHECK (event <> ''),\n"
     "  spiffe_id TEXT,\n"
     "  serial    TEXT,\n"
     "  outcome   TEXT NOT NULL CHECK (outcome IN ('ok', 'denied', 'error')),\n"
     "  reason    TEXT NOT NULL DEFAULT '',\n"
     "  details   TEXT NOT NULL DEFAULT '{}',\n"
     "  prev_hash TEXT NOT NULL CHECK (length(prev_hash) = 64),\n"
     "  hash      TEXT NOT NULL CHECK (length(hash) = 64)\n"
     ") STRICT;\n"
     "INSERT INTO audit_events_v3 SELECT " SQ_AUDIT_COLS_V3 " FROM audit_events ORDER BY seq;\n"
     /* the implicit DELETE of DROP TABLE fires no trigger */
     "DROP TABLE audit_events;\n"
     "ALTER TABLE audit_events_v3 RENAME TO audit_events;\n"
     "CREATE INDEX audit_events_ts_ms ON audit_events(ts_ms);\n"
     "CREATE INDEX audit_events_spiffe_id ON audit_events(spiffe_id);\n"
     "CREATE INDEX audit_events_event ON audit_events(event);\n"
     "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events\n"
     "  BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;\n"
     "CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events\n"
     "  BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;\n"},
    /* Mesh resources (services, authorization policies) as JSON validated
     * above the store, keyed by (kind, namespace, name); a rowid table, as
     * a spec may be up to 1 MiB. The JSON CHECK is a backstop for other
     * writers (json_valid: SQLite 3.38+ has the JSON functions built in). */
    {4, "mesh_resources and the mesh_revision counter",
     "CREATE TABLE mesh_resources (\n"
     "  kind       TEXT NOT NULL CHECK (kind IN ('service', 'policy')),\n"
     "  namespace  TEXT NOT NULL CHECK (length(namespace) BETWEEN 1 AND 253),\n"
     "  name       TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 253),\n"
     "  spec       TEXT NOT NULL CHECK (json_valid(spec) AND json_type(spec) = 'object'),\n"
     "  revision   INTEGER NOT NULL CHECK (revision >= 1),\n"
     "  created_at INTEGER NOT NULL,\n"
     "  updated_at INTEGER NOT NULL,\n"
     "  PRIMARY KEY (kind, namespace, name)\n"
     ") STRICT;\n"
     "INSERT INTO counters (name, value) VALUES ('mesh_revision', 0);\n"},
    /* Issued certificates as DER instead of PEM: ~30 % fewer bytes per row
     * for every issuance to write (and the CA has the DER in hand). Rows are
     * converted by meshid_pem_to_der (sq_fn_pem_to_der, registered on the
     * writer connection); a stored text that is not a PEM certificate is
     * kept as its bytes rather than lost. Everything else is copied as it
     * is; no other table changes. */
    {5, "certificates store the DER of the certificate (cert_der) instead of PEM",
     "CREATE TABLE certificates_v5 (\n"
     "  serial       TEXT PRIMARY KEY NOT NULL CHECK (length(serial) BETWEEN 1 AND 64),\n"
     "  spiffe_id    TEXT NOT NULL,\n"
     "  key_fp       TEXT NOT NULL,\n"
     "  not_before   INTEGER NOT NULL,\n"
     "  not_after    INTEGER NOT NULL,\n"
     "  authority_id TEXT NOT NULL REFERENCES authorities(id),\n"
     "  status       TEXT NOT NULL CHECK (status IN ('valid', 'revoked')),\n"
     "  issued_at    INTEGER NOT NULL,\n"
     "  cert_der     BLOB NOT NULL CHECK (length(cert_der) >= 1)\n"
     ") STRICT;\n"
     "INSERT INTO certificates_v5 SELECT serial, spiffe_id, key_fp, not_before, not_after,\n"
     "  authority_id, status, issued_at, meshid_pem_to_der(cert_pem) FROM certificates\n"
     "  ORDER BY rowid;\n"
     "DROP TABLE certificates;\n"
     "ALTER TABLE certificates_v5 RENAME TO certificates;\n"
     "CREATE INDEX certificates_authority_id ON certificates(authority_id);\n"},
    /* The audit log's SPIFFE-ID index as a side table written in bulk
     * instead of an index SQLite updates per event. audit_events_spiffe_id
     * cost every issuance one leaf at a random place in a b-tree as big as
     * the log, written to the WAL once per commit and again at checkpoint
     * (~5 KB and ~5-10 us of the writer per issuance, measured). audit_spiffe
     * is filled by the writer every STORE_AUDIT_INDEX_CHUNK_DEFAULT events,
     * one chunk at a time, keyed first by the chunk (its last seq), so every
     * bulk insert goes to the right-hand end of the tree; counters row
     * 'audit_spiffe_upto' is the last seq indexed. A query by SPIFFE ID
     * seeks each chunk and scans the events after audit_spiffe_upto (at
     * most one chunk). See docs/schema.md. The events already in the log
     * become one chunk here. */
    {6, "audit_spiffe: the audit log's SPIFFE-ID index, written in chunks",
     "CREATE TABLE audit_spiffe (\n"
     "  chunk     INTEGER NOT NULL CHECK (chunk >= 1),\n"
     "  spiffe_id TEXT NOT NULL,\n"
     "  seq       INTEGER NOT NULL CHECK (seq BETWEEN 1 AND chunk),\n"
     "  PRIMARY KEY (chunk, spiffe_id, seq)\n"
     ") STRICT, WITHOUT ROWID;\n"
     "INSERT INTO audit_spiffe (chunk, spiffe_id, seq)\n"
     "  SELECT (SELECT max(seq) FROM audit_events), spiffe_id, seq FROM audit_events\n"
     "  WHERE spiffe_id IS NOT NULL ORDER BY spiffe_id, seq;\n"
     "INSERT INTO counters (name, value)\n"
     "  VALUES ('audit_spiffe_upto', (SELECT coalesce(max(seq), 0) FROM audit_events));\n"
     "DROP INDEX audit_events_spiffe_id;\n"},
};

#define SQ_SCHEMA_LATEST ((int)(sizeof migrations / sizeof migrations[0]))

const char *store_sqlite_migration_sql(int version)
{
    return version >= 1 && version <= SQ_SCHEMA_LATEST ? migrations[version - 1].sql : NULL;
}

/* ---- connection and cached statements ------------------------------------------- */

typedef enum {
    SQ_BEGIN,
    SQ_COMMIT,
    SQ_ROLLBACK,
    SQ_SAVEPOINT,
    SQ_RELEASE,
    SQ_ROLLBACK_TO,
    SQ_AUDIT_HEAD,
    SQ_AUDIT_INSERT,
    SQ_AUDIT_GET,
    SQ_AUDIT_ITER,
    SQ_AUDIT_INDEX,
    SQ_AUDIT_INDEX_UPTO,
    SQ_AUTH_PUT,
    SQ_AUTH_INSERT,
    SQ_AUTH_SET_STATE,
    SQ_AUTH_GET_STATE,
    SQ_AUTH_LIST,
    SQ_CERT_INSERT,
    SQ_CERT_GET,
    SQ_CERT_COUNT_LIVE,
    SQ_REV_BUMP,
    SQ_REV_GET,
    SQ_ENTRY_INSERT,
    SQ_ENTRY_SEL_INSERT,
    SQ_ENTRY_DNS_INSERT,
    SQ_ENTRY_GET,
    SQ_ENTRY_SEL_GET,
    SQ_ENTRY_DNS_GET,
    SQ_ENTRY_DELETE,
    SQ_ENTRY_LIST_ALL,
    SQ_ENTRY_LIST_PARENT,
    SQ_SNAP_BEGIN,
    SQ_TOKEN_INSERT,
    SQ_TOKEN_CONSUME,
    SQ_TOKEN_GET,
    SQ_AGENT_UPSERT,
    SQ_AGENT_RENEW,
    SQ_AGENT_GET,
    SQ_AGENT_LIST,
    SQ_AGENT_BAN,
    SQ_AGENT_TOUCH,
    SQ_MESH_REV_BUMP,
    SQ_MESH_REV_GET,
    SQ_MESH_REV_OF,
    SQ_MESH_PUT,
    SQ_MESH_DELETE,
    SQ_MESH_GET,
    SQ_MESH_LIST_ALL,
    SQ_MESH_LIST_KIND,
    SQ_STMT_COUNT_
} sq_stmt_id;

#define SQ_AUDIT_COLS                                                                        \
    "seq, ts_ms, actor, event, spiffe_id, serial, outcome, reason, details, prev_hash, hash"
/* The last seq in the SPIFFE-ID index, as a scalar subquery; 0 if its
 * counters row went missing (deleted around meshid): then every event is
 * scanned as not yet indexed, and the next chunk indexes from the start
 * again and puts the row back, so queries stay right either way. */
#define SQ_AUDIT_UPTO                                                                        \
    "(SELECT coalesce(max(value), 0) FROM counters WHERE name = 'audit_spiffe_upto')"
#define SQ_AUTH_COLS                                                                         \
    "id, kind, state, trust_domain, parent_id, cert_pem, chain_pem, key_ref, not_before, "   \
    "not_after, upstream, created_at"
#define SQ_CERT_COLS                                                                         \
    "serial, spiffe_id, key_fp, not_before, not_after, authority_id, status, issued_at, "    \
    "cert_der"

#define SQ_ENTRY_COLS "id, spiffe_id, parent_id, ttl_seconds, created_at, revision"
#define SQ_TOKEN_COLS "token_hash, agent_spiffe_id, expires_at, created_at, used_at"
#define SQ_AGENT_COLS                                                                        \
    "spiffe_id, serial, not_after, hostname, attested_at, last_seen, banned"
#define SQ_MESH_COLS "kind, namespace, name, spec, revision, created_at, updated_at"
#define SQ_MESH_KEY "kind = ?1 AND namespace = ?2 AND name = ?3"

static const char *const sq_sql[SQ_STMT_COUNT_] = {
    [SQ_BEGIN] = "BEGIN IMMEDIATE",
    [SQ_COMMIT] = "COMMIT",
    [SQ_ROLLBACK] = "ROLLBACK",
    [SQ_SAVEPOINT] = "SAVEPOINT req",
    [SQ_RELEASE] = "RELEASE req",
    [SQ_ROLLBACK_TO] = "ROLLBACK TO req",
    [SQ_AUDIT_HEAD] = "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1",
    [SQ_AUDIT_INSERT] = "INSERT INTO audit_events (" SQ_AUDIT_COLS
                        ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    [SQ_AUDIT_GET] = "SELECT " SQ_AUDIT_COLS " FROM audit_events WHERE seq = ?1",
    [SQ_AUDIT_ITER] = "SELECT " SQ_AUDIT_COLS " FROM audit_events WHERE seq > ?1 ORDER BY seq",
    /* One chunk of the SPIFFE-ID index (migration 6): every event after
     * the last one indexed up to ?1, sorted, under chunk ?1. */
    [SQ_AUDIT_INDEX] = "INSERT INTO audit_spiffe (chunk, spiffe_id, seq)"
                       " SELECT ?1, spiffe_id, seq FROM audit_events WHERE seq > " SQ_AUDIT_UPTO
                       " AND seq <= ?1 AND spiffe_id IS NOT NULL ORDER BY spiffe_id, seq",
    [SQ_AUDIT_INDEX_UPTO] = "INSERT INTO counters (name, value) VALUES ('audit_spiffe_upto', ?1)"
                            " ON CONFLICT (name) DO UPDATE SET value = excluded.value"
                            " WHERE value < excluded.value",
    [SQ_AUTH_PUT] = "INSERT INTO authorities (" SQ_AUTH_COLS
                    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
                    " ON CONFLICT (id) DO UPDATE SET kind = excluded.kind,"
                    " state = excluded.state, trust_domain = excluded.trust_domain,"
                    " parent_id = excluded.parent_id, cert_pem = excluded.cert_pem,"
                    " chain_pem = excluded.chain_pem, key_ref = excluded.key_ref,"
                    " not_before = excluded.not_before, not_after = excluded.not_after,"
                    " upstream = excluded.upstream, created_at = excluded.created_at",
    [SQ_AUTH_INSERT] = "INSERT INTO authorities (" SQ_AUTH_COLS
                       ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    [SQ_AUTH_SET_STATE] = "UPDATE authorities SET state = ?3 WHERE id = ?1 AND state = ?2",
    [SQ_AUTH_GET_STATE] = "SELECT state FROM authorities WHERE id = ?1",
    [SQ_AUTH_LIST] = "SELECT " SQ_AUTH_COLS " FROM authorities ORDER BY created_at, rowid",
    [SQ_CERT_INSERT] = "INSERT INTO certificates (" SQ_CERT_COLS
                       ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    [SQ_CERT_GET] = "SELECT " SQ_CERT_COLS " FROM certificates WHERE serial = ?1",
    [SQ_CERT_COUNT_LIVE] = ("SELECT count(*) FROM certificates WHERE authority_id = ?1"
                            " AND status = 'valid' AND not_after > ?2"),
    [SQ_REV_BUMP] = "UPDATE counters SET value = value + 1 WHERE name = 'entries_revision'"
                    " RETURNING value",
    [SQ_REV_GET] = "SELECT value FROM counters WHERE name = 'entries_revision'",
    [SQ_ENTRY_INSERT] = "INSERT INTO entries (" SQ_ENTRY_COLS ", selectors_hash)"
                        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [SQ_ENTRY_SEL_INSERT] = "INSERT INTO entry_selectors (entry_id, type, value)"
                            " VALUES (?1, ?2, ?3)",
    [SQ_ENTRY_DNS_INSERT] = "INSERT INTO entry_dns_names (entry_id, ord, dns_name)"
                            " VALUES (?1, ?2, ?3)",
    [SQ_ENTRY_GET] = "SELECT " SQ_ENTRY_COLS " FROM entries WHERE id = ?1",
    [SQ_ENTRY_SEL_GET] = "SELECT type, value FROM entry_selectors WHERE entry_id = ?1"
                         " ORDER BY type, value",
    [SQ_ENTRY_DNS_GET] = "SELECT dns_name FROM entry_dns_names WHERE entry_id = ?1 ORDER BY ord",
    [SQ_ENTRY_DELETE] = "DELETE FROM entries WHERE id = ?1",
    [SQ_ENTRY_LIST_ALL] = "SELECT " SQ_ENTRY_COLS " FROM entries ORDER BY revision",
    [SQ_ENTRY_LIST_PARENT] = "SELECT " SQ_ENTRY_COLS " FROM entries WHERE parent_id = ?1"
                             " ORDER BY revision",
    [SQ_SNAP_BEGIN] = "BEGIN",
    [SQ_TOKEN_INSERT] = "INSERT INTO join_tokens (" SQ_TOKEN_COLS ") VALUES (?1, ?2, ?3, ?4, NULL)",
    /* The race-free part of consumption: only one UPDATE can see used_at NULL. */
    [SQ_TOKEN_CONSUME] = "UPDATE join_tokens SET used_at = ?2 WHERE token_hash = ?1"
                         " AND used_at IS NULL AND expires_at > ?2 RETURNING " SQ_TOKEN_COLS,
    [SQ_TOKEN_GET] = "SELECT " SQ_TOKEN_COLS " FROM join_tokens WHERE token_hash = ?1",
    [SQ_AGENT_UPSERT] = "INSERT INTO agents (" SQ_AGENT_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                        " ON CONFLICT (spiffe_id) DO UPDATE SET serial = excluded.serial,"
                        " not_after = excluded.not_after, hostname = excluded.hostname,"
                        " attested_at = excluded.attested_at, last_seen = excluded.last_seen,"
                        " banned = excluded.banned",
    [SQ_AGENT_RENEW] = "UPDATE agents SET serial = ?2, not_after = ?3,"
                       " last_seen = max(last_seen, ?4) WHERE spiffe_id = ?1 AND banned = 0",
    [SQ_AGENT_GET] = "SELECT " SQ_AGENT_COLS " FROM agents WHERE spiffe_id = ?1",
    [SQ_AGENT_LIST] = "SELECT " SQ_AGENT_COLS " FROM agents ORDER BY spiffe_id",
    [SQ_AGENT_BAN] = "UPDATE agents SET banned = ?2 WHERE spiffe_id = ?1",
    [SQ_AGENT_TOUCH] = "UPDATE agents SET last_seen = max(last_seen, ?2) WHERE spiffe_id = ?1",
    [SQ_MESH_REV_BUMP] = "UPDATE counters SET value = value + 1 WHERE name = 'mesh_revision'"
                         " RETURNING value",
    [SQ_MESH_REV_GET] = "SELECT value FROM counters WHERE name = 'mesh_revision'",
    [SQ_MESH_REV_OF] = "SELECT revision FROM mesh_resources WHERE " SQ_MESH_KEY,
    [SQ_MESH_PUT] = "INSERT INTO mesh_resources (" SQ_MESH_COLS ")"
                    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)"
                    " ON CONFLICT (kind, namespace, name) DO UPDATE SET spec = excluded.spec,"
                    " revision = excluded.revision, updated_at = excluded.updated_at",
    [SQ_MESH_DELETE] = "DELETE FROM mesh_resources WHERE " SQ_MESH_KEY,
    [SQ_MESH_GET] = "SELECT " SQ_MESH_COLS " FROM mesh_resources WHERE " SQ_MESH_KEY,
    [SQ_MESH_LIST_ALL] = "SELECT " SQ_MESH_COLS " FROM mesh_resources"
                         " ORDER BY kind, namespace, name",
    [SQ_MESH_LIST_KIND] = "SELECT " SQ_MESH_COLS " FROM mesh_resources WHERE kind = ?1"
                          " ORDER BY namespace, name",
};

typedef struct {
    store_conn base; /* first: the front end sees only this */
    sqlite3 *db;
    char *path;
    int busy_ms;
    int audit_chunk; /* index the audit log's SPIFFE IDs every this many events */
    walckpt *ckpt;   /* writer: its background checkpoints */
    sqlite3_stmt *stmt[SQ_STMT_COUNT_];
} sq_conn;

static sq_conn *sq(store_conn *c) { return (sq_conn *)c; }

/* ---- the SQLite -> mid_result adapter ------------------------------------------ */

static int sq_ok(int rc) { return rc == SQLITE_OK || rc == SQLITE_ROW || rc == SQLITE_DONE; }

static mid_err sq_map(int rc)
{
    switch (rc) {
    case SQLITE_CONSTRAINT_PRIMARYKEY:
    case SQLITE_CONSTRAINT_UNIQUE: return MID_E_EXISTS;
    default: break;
    }
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return MID_E_BUSY;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB: return MID_E_CORRUPT;
    case SQLITE_NOMEM: return MID_E_NOMEM;
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_FULL:
    case SQLITE_READONLY:
    case SQLITE_PERM: return MID_E_IO;
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE: return MID_E_INVALID;
    case SQLITE_TOOBIG: return MID_E_TOO_LARGE;
    default: return MID_E_DB;
    }
}

static mid_result sq_fail(const sq_conn *c, int rc, const char *file, int line, const char *what)
{
    const char *msg = c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc);
    mid_err e = sq_map(rc);
    if (e == MID_E_CORRUPT)
        return mid_fail(e, file, line, "%s: damaged or not a meshid database (%s: %s)", c->path,
                        what, msg);
    if (e == MID_E_BUSY)
        return mid_fail(e, file, line, "%s: %s: %s (gave up after %d ms)", c->path, what, msg,
                        c->busy_ms);
    return mid_fail(e, file, line, "%s: %s: %s", c->path, what, msg);
}

/* SQLITE_OK convention: anything but OK/ROW/DONE fails with the message. */
#define SQ_GUARD(c, expr, what)                                                              \
    do {                                                                                     \
        int sq_rc_ = (expr);                                                                 \
        if (!sq_ok(sq_rc_)) return sq_fail((c), sq_rc_, __FILE__, __LINE__, (what));         \
    } while (0)

#define SQ_CHECK(r, c, expr, what)                                                           \
    do {                                                                                     \
        int sq_rc_ = (expr);                                                                 \
        if (!sq_ok(sq_rc_)) {                                                                \
            (r) = sq_fail((c), sq_rc_, __FILE__, __LINE__, (what));                          \
            goto out;                                                                        \
        }                                                                                    \
    } while (0)

/* The cached statement `id`, reset and unbound (prepared on first use). */
static MID_RESULT sq_stmt(sq_conn *c, sq_stmt_id id, sqlite3_stmt **out)
{
    if (c->stmt[id] == NULL)
        SQ_GUARD(c, sqlite3_prepare_v3(c->db, sq_sql[id], -1, SQLITE_PREPARE_PERSISTENT,
                                       &c->stmt[id], NULL),
                 "prepare");
    *out = c->stmt[id];
    return MID_OK_RESULT;
}

/* Makes a cached statement ready for its next use. */
static void sq_done(sqlite3_stmt *s)
{
    if (s == NULL) return;
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
}

/* Runs a statement that returns no rows. */
static MID_RESULT sq_exec_cached(sq_conn *c, sq_stmt_id id, const char *what)
{
    sqlite3_stmt *s = NULL;
    MID_GUARD(sq_stmt(c, id, &s));
    int rc = sqlite3_step(s);
    sq_done(s);
    SQ_GUARD(c, rc, what);
    return MID_OK_RESULT;
}

static MID_RESULT sq_exec(sq_conn *c, const char *sql, const char *what)
{
    SQ_GUARD(c, sqlite3_exec(c->db, sql, NULL, NULL, NULL), what);
    return MID_OK_RESULT;
}

/* Runs a single-row, single-column integer query. */
static MID_RESULT sq_int(sq_conn *c, const char *sql, int64_t *out)
{
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    SQ_CHECK(r, c, sqlite3_prepare_v2(c->db, sql, -1, &s, NULL), sql);
    int rc = sqlite3_step(s);
    SQ_CHECK(r, c, rc, sql);
    *out = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
out:
    sqlite3_finalize(s);
    return r;
}

/* Runs a single-row, single-column text query into out ("" for no row). */
static MID_RESULT sq_text(sq_conn *c, const char *sql, char *out, size_t cap)
{
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    out[0] = '\0';
    SQ_CHECK(r, c, sqlite3_prepare_v2(c->db, sql, -1, &s, NULL), sql);
    int rc = sqlite3_step(s);
    SQ_CHECK(r, c, rc, sql);
    if (rc == SQLITE_ROW && sqlite3_column_text(s, 0) != NULL)
        snprintf(out, cap, "%s", (const char *)sqlite3_column_text(s, 0));
out:
    sqlite3_finalize(s);
    return r;
}

/* ---- lifecycle ---------------------------------------------------------------- */

static void sq_close(store_conn *cc)
{
    sq_conn *c = sq(cc);
    if (c == NULL) return;
    for (int i = 0; i < SQ_STMT_COUNT_; i++) sqlite3_finalize(c->stmt[i]);
    walckpt_detach(c->ckpt); /* before the close, which checkpoints a last time */
    if (c->db != NULL && sqlite3_close(c->db) != SQLITE_OK)
        sqlite3_close_v2(c->db); /* should not happen: every statement is finalized */
    free(c->path);
    free(c);
}

/* Creates the file 0600 before SQLite does (it would use 0644 and give the
 * -wal and -shm files the same mode). An existing file is left alone. */
static MID_RESULT sq_precreate(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    MID_ENSURE(fd >= 0, MID_E_IO, "%s: cannot open or create the database file", path);
    close(fd);
    return MID_OK_RESULT;
}

/* PRAGMA quick_check: structure of every b-tree, in one line on failure. */
static MID_RESULT sq_quick_check(sq_conn *c)
{
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    SQ_CHECK(r, c, sqlite3_prepare_v2(c->db, "PRAGMA quick_check(1)", -1, &s, NULL), "quick_check");
    int rc = sqlite3_step(s);
    SQ_CHECK(r, c, rc, "quick_check");
    const char *res = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(s, 0) : NULL;
    if (res == NULL || strcmp(res, "ok") != 0) {
        char line[200]; /* quick_check reports span lines; keep the message on one */
        snprintf(line, sizeof line, "%s", res ? res : "no result");
        for (char *p = line; *p; p++)
            if (*p == '\n' || *p == '\r') *p = ' ';
        r = mid_fail(MID_E_CORRUPT, __FILE__, __LINE__, "%s: damaged database (quick_check: %s)",
                     c->path, line);
    }
out:
    sqlite3_finalize(s);
    return r;
}

/* Refuses files that are not ours before anything is written to them, and
 * checks the structure of ours. */
static MID_RESULT sq_check_identity(sq_conn *c)
{
    int64_t app_id = 0, version = 0, objects = 0;
    MID_GUARD(sq_int(c, "PRAGMA application_id", &app_id));
    MID_GUARD(sq_int(c, "PRAGMA user_version", &version));
    MID_GUARD(sq_int(c, "SELECT count(*) FROM sqlite_schema", &objects));
    if (app_id == 0 && version == 0 && objects == 0) return MID_OK_RESULT; /* new */
    MID_ENSURE(app_id == SQ_APPLICATION_ID, MID_E_CORRUPT,
               "%s: not a meshid database (SQLite file with application_id 0x%llx and %lld "
               "schema objects)",
               c->path, (unsigned long long)app_id, (long long)objects);
    return sq_quick_check(c);
}

/* meshid_pem_to_der(text): the DER of the first PEM CERTIFICATE block of
 * `text`, for migration 5. Anything that is not one (text without such a
 * block, bad base64) comes back as the text's own bytes: the migration
 * converts what it can and loses nothing. NULL stays NULL. */
static void sq_fn_pem_to_der(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    static const char begin[] = "-----BEGIN CERTIFICATE-----";
    static const char end[] = "-----END CERTIFICATE-----";
    (void)argc;
    if (sqlite3_value_type(argv[0]) == SQLITE_NULL) {
        sqlite3_result_null(ctx);
        return;
    }
    const char *t = (const char *)sqlite3_value_text(argv[0]);
    int tn = sqlite3_value_bytes(argv[0]);
    if (t == NULL) {
        sqlite3_result_error_nomem(ctx);
        return;
    }
    const char *b = strstr(t, begin), *e = b != NULL ? strstr(b, end) : NULL;
    unsigned char *der = NULL, *b64 = NULL;
    int n = -1;
    if (e != NULL) {
        b += sizeof begin - 1;
        size_t cap = (size_t)(e - b), k = 0, pad = 0;
        b64 = malloc(cap + 1);
        der = malloc(cap / 4 * 3 + 3);
        if (b64 == NULL || der == NULL) {
            free(b64);
            free(der);
            sqlite3_result_error_nomem(ctx);
            return;
        }
        for (const char *p = b; p < e; p++)
            if (*p != '\n' && *p != '\r') b64[k++] = (unsigned char)*p;
        while (pad < k && pad < 2 && b64[k - 1 - pad] == '=') pad++;
        if (k > 0 && k % 4 == 0 && k <= INT_MAX) n = EVP_DecodeBlock(der, b64, (int)k);
        if (n >= 0) n -= (int)pad;
    }
    if (n > 0)
        sqlite3_result_blob(ctx, der, n, SQLITE_TRANSIENT);
    else
        sqlite3_result_blob(ctx, t, tn, SQLITE_TRANSIENT);
    free(b64);
    free(der);
}

static MID_RESULT sq_open_conn(const char *target, const store_options *opts, store_conn_role role,
                               sq_conn *c)
{
    int writer = role == STORE_CONN_WRITER;
    c->path = strdup(target);
    MID_ENSURE_MEM(c->path);
    if (writer) MID_GUARD(sq_precreate(target));
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE;
    /* The writer's WAL writes go out in one call per sync (walbuf.h);
     * readers never write. */
    const char *vfs = NULL;
    if (writer) {
        int vrc = walbuf_register();
        MID_ENSURE(vrc == SQLITE_OK, MID_E_DB, "cannot register the %s VFS: %s", WALBUF_VFS_NAME,
                   sqlite3_errstr(vrc));
        vfs = WALBUF_VFS_NAME;
    }
    SQ_GUARD(c, sqlite3_open_v2(target, &c->db, flags, vfs), "open");
    c->busy_ms = opts->busy_timeout_ms;
    c->audit_chunk = opts->audit_index_chunk > 0 ? opts->audit_index_chunk
                                                 : STORE_AUDIT_INDEX_CHUNK_DEFAULT;
    SQ_GUARD(c, sqlite3_busy_timeout(c->db, opts->busy_timeout_ms), "busy_timeout");
    if (!writer) {
        MID_GUARD(sq_exec(c, "PRAGMA query_only = ON", "query_only"));
        return MID_OK_RESULT;
    }
    MID_GUARD(sq_check_identity(c));
    SQ_GUARD(c,
             sqlite3_create_function_v2(c->db, "meshid_pem_to_der", 1,
                                        SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_DIRECTONLY,
                                        NULL, sq_fn_pem_to_der, NULL, NULL, NULL),
             "register meshid_pem_to_der");
    char mode[16];
    MID_GUARD(sq_text(c, "PRAGMA journal_mode = WAL", mode, sizeof mode));
    MID_ENSURE(strcmp(mode, "wal") == 0, MID_E_IO,
               "%s: cannot switch the database to WAL mode (journal_mode is %s)", c->path, mode);
    MID_GUARD(sq_exec(c, "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON",
                      "durability settings"));
    /* The statement journal (what undoes a savepoint) in memory: a batch of
     * certificates applied under one savepoint (storage/store.c,
     * apply_certs_fast) journals a few hundred KB, which SQLite would
     * otherwise spill to a temporary file past 64 KiB - written, never
     * needed for durability (WAL already is). */
    MID_GUARD(sq_exec(c, "PRAGMA temp_store = MEMORY", "statement journal in memory"));
    /* Checkpoints every walckpt_frames() (10,000) frames instead of
     * SQLite's 1000: a page written by many transactions between two
     * checkpoints (the end of an index, the hot leaves of a random index)
     * is copied into the database once, not once per 1000 frames; and on a
     * thread of their own instead of inside a commit (walckpt.h). See
     * docs/storage.md, "Write cost". */
    MID_GUARD(walckpt_attach(c->db, target, &c->ckpt));
    return MID_OK_RESULT;
}

/* Before SQLite's first use in the process: no memory statistics, so that
 * an allocation inside SQLite takes no process-wide mutex (every
 * connection here is single-threaded, SQLITE_OPEN_NOMUTEX). When something
 * else initialised SQLite first this is refused (SQLITE_MISUSE) and
 * changes nothing. */
static pthread_once_t sq_config_once = PTHREAD_ONCE_INIT;
static void sq_config(void) { (void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); }

static MID_RESULT sq_open(const char *target, const store_options *opts, store_conn_role role,
                          store_conn **out)
{
    pthread_once(&sq_config_once, sq_config);
    sq_conn *c = calloc(1, sizeof *c);
    MID_ENSURE_MEM(c);
    c->base.vt = &store_backend_sqlite;
    mid_result r = sq_open_conn(target, opts, role, c);
    if (!mid_is_ok(r)) {
        sq_close(&c->base);
        return r;
    }
    *out = &c->base;
    return MID_OK_RESULT;
}

/* Applies migration `v` (1-based) inside the open transaction. */
static MID_RESULT sq_apply_migration(sq_conn *c, int v)
{
    const sq_migration *m = &migrations[v - 1];
    char sql[160];
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    MID_TRY(r, sq_exec(c, m->sql, "migration"));
    SQ_CHECK(r, c,
             sqlite3_prepare_v2(c->db,
                                "INSERT INTO schema_migrations (version, description, applied_at)"
                                " VALUES (?1, ?2, ?3)",
                                -1, &s, NULL),
             "record migration");
    sqlite3_bind_int(s, 1, m->version);
    sqlite3_bind_text(s, 2, m->description, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, time_now());
    SQ_CHECK(r, c, sqlite3_step(s), "record migration");
    /* PRAGMA takes no parameters; the values are integers we control. */
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d; PRAGMA application_id = %d", m->version,
             SQ_APPLICATION_ID);
    MID_TRY(r, sq_exec(c, sql, "set schema version"));
out:
    sqlite3_finalize(s);
    return r;
}

/* One migration step in its own transaction, the version read under the
 * write lock so that processes opening the same file at once migrate it only
 * once. Sets *version and *done (1 when already at the latest version). */
static MID_RESULT sq_migrate_step(sq_conn *c, int *version, int *done)
{
    mid_result r = MID_OK_RESULT;
    int64_t v = 0;
    *done = 0;
    MID_TRY(r, sq_exec_cached(c, SQ_BEGIN, "begin migration"));
    MID_TRY(r, sq_int(c, "PRAGMA user_version", &v));
    MID_CHECK(r, v <= SQ_SCHEMA_LATEST, MID_E_STATE,
              "%s: schema version %lld is newer than this meshid supports (%d); upgrade meshid",
              c->path, (long long)v, SQ_SCHEMA_LATEST);
    MID_CHECK(r, v >= 0, MID_E_CORRUPT, "%s: negative schema version %lld", c->path,
              (long long)v);
    if (v < SQ_SCHEMA_LATEST) {
        MID_TRY(r, sq_apply_migration(c, (int)v + 1));
        v++;
        LOG_INFO("%s: migrated the schema to version %lld", c->path, (long long)v);
    } else {
        *done = 1;
    }
    MID_TRY(r, sq_exec_cached(c, SQ_COMMIT, "commit migration"));
    *version = (int)v;
out:
    if (!mid_is_ok(r) && !sqlite3_get_autocommit(c->db))
        (void)sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    return r;
}

static MID_RESULT sq_migrate(store_conn *cc, int *version)
{
    sq_conn *c = sq(cc);
    /* The first BEGIN IMMEDIATE also proves the file is writable now:
     * locked beyond the busy timeout -> MID_E_BUSY at open. */
    for (int done = 0; !done;) MID_GUARD(sq_migrate_step(c, version, &done));
    return MID_OK_RESULT;
}

/* ---- transactions --------------------------------------------------------------- */

static MID_RESULT sq_begin(store_conn *cc)
{
    sq_conn *c = sq(cc);
    walckpt_before_write(c->ckpt);
    return sq_exec_cached(c, SQ_BEGIN, "begin");
}
static MID_RESULT sq_commit(store_conn *c) { return sq_exec_cached(sq(c), SQ_COMMIT, "commit"); }

static MID_RESULT sq_rollback(store_conn *cc)
{
    sq_conn *c = sq(cc);
    if (sqlite3_get_autocommit(c->db)) return MID_OK_RESULT; /* nothing open */
    return sq_exec_cached(c, SQ_ROLLBACK, "rollback");
}

static MID_RESULT sq_savepoint(store_conn *c)
{
    return sq_exec_cached(sq(c), SQ_SAVEPOINT, "savepoint");
}

static MID_RESULT sq_release(store_conn *c) { return sq_exec_cached(sq(c), SQ_RELEASE, "release"); }

static MID_RESULT sq_rollback_to(store_conn *cc)
{
    sq_conn *c = sq(cc);
    MID_GUARD(sq_exec_cached(c, SQ_ROLLBACK_TO, "rollback to savepoint"));
    return sq_exec_cached(c, SQ_RELEASE, "release savepoint");
}

/* ---- audit events --------------------------------------------------------------- */

static const char *col_text(sqlite3_stmt *s, int i)
{
    return (const char *)sqlite3_column_text(s, i);
}

/* Borrows the current row of an SQ_AUDIT_COLS statement. */
static void read_audit(sqlite3_stmt *s, store_audit_event *ev, int *hashes_ok)
{
    memset(ev, 0, sizeof *ev);
    ev->seq = sqlite3_column_int64(s, 0);
    ev->ts_ms = sqlite3_column_int64(s, 1);
    ev->actor = col_text(s, 2);
    ev->event = col_text(s, 3);
    ev->spiffe_id = col_text(s, 4);
    ev->serial = col_text(s, 5);
    ev->outcome = col_text(s, 6);
    ev->reason = col_text(s, 7);
    ev->details = col_text(s, 8);
    int a = audit_hex_decode(col_text(s, 9), ev->prev_hash);
    int b = audit_hex_decode(col_text(s, 10), ev->hash);
    *hashes_ok = a && b;
}

static MID_RESULT sq_audit_head(store_conn *cc, int64_t *seq, uint8_t hash[STORE_HASH_LEN])
{
    sq_conn *c = sq(cc);
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    MID_TRY(r, sq_stmt(c, SQ_AUDIT_HEAD, &s));
    int rc = sqlite3_step(s);
    SQ_CHECK(r, c, rc, "read audit head");
    *seq = 0;
    memset(hash, 0, STORE_HASH_LEN);
    if (rc == SQLITE_ROW) {
        *seq = sqlite3_column_int64(s, 0);
        MID_CHECK(r, audit_hex_decode(col_text(s, 1), hash), MID_E_CORRUPT,
                  "%s: audit event %lld has a malformed hash", c->path, (long long)*seq);
    }
out:
    sq_done(s);
    return r;
}

/* Adds the events after the last indexed one, up to `upto` (just inserted),
 * to audit_spiffe as one chunk, in the transaction (and savepoint) of the
 * event that completes it: a rolled-back event takes its chunk along. */
static MID_RESULT sq_audit_index(sq_conn *c, int64_t upto)
{
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    MID_TRY(r, sq_stmt(c, SQ_AUDIT_INDEX, &s));
    sqlite3_bind_int64(s, 1, upto);
    SQ_CHECK(r, c, sqlite3_step(s), "index audit events by SPIFFE ID");
    sq_done(s);
    s = NULL;
    MID_TRY(r, sq_stmt(c, SQ_AUDIT_INDEX_UPTO, &s));
    sqlite3_bind_int64(s, 1, upto);
    SQ_CHECK(r, c, sqlite3_step(s), "advance the audit SPIFFE-ID index");
out:
    sq_done(s);
    return r;
}

static MID_RESULT sq_audit_insert(store_conn *cc, const store_audit_event *ev)
{
    sq_conn *c = sq(cc);
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    char prev[AUDIT_HEX_LEN + 1], hash[AUDIT_HEX_LEN + 1];
    audit_hex_encode(ev->prev_hash, prev);
    audit_hex_encode(ev->hash, hash);
    MID_TRY(r, sq_stmt(c, SQ_AUDIT_INSERT, &s));
    sqlite3_bind_int64(s, 1, ev->seq);
    sqlite3_bind_int64(s, 2, ev->ts_ms);
    sqlite3_bind_text(s, 3, ev->actor, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, ev->event, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 5, ev->spiffe_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 6, ev->serial, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 7, ev->outcome, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 8, ev->reason, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 9, ev->details, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 10, prev, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 11, hash, -1, SQLITE_STATIC);
    SQ_CHECK(r, c, sqlite3_step(s), "insert audit event");
    sq_done(s);
    s = NULL;
    if (ev->seq % c->audit_chunk == 0) MID_TRY(r, sq_audit_index(c, ev->seq));
out:
    sq_done(s);
    return r;
}

static MID_RESULT sq_audit_get(store_conn *cc, int64_t seq, store_audit_row *out)
{
    sq_conn *c = sq(cc);
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    store_audit_event ev;
    int hashes_ok;
    MID_TRY(r, sq_stmt(c, SQ_AUDIT_GET, &s));
    sqlite3_bind_int64(s, 1, seq);
    int rc = sqlite3_step(s);
    SQ_CHECK(r, c, rc, "read audit event");
    MID_CHECK(r, rc == SQLITE_ROW, MID_E_NOT_FOUND, "no audit event with seq %lld",
              (long long)seq);
    read_audit(s, &ev, &hashes_ok);
    MID_TRY(r, store_audit_row_copy(&ev, out));
out:
    sq_done(s);
    return r;
}

/* Steps a SQ_AUDIT_COLS statement to the end, or until fn asks to stop. */
static MID_RESULT sq_audit_walk(sq_conn *c, sqlite3_stmt *s, store_audit_row_fn fn, void *ctx)
{
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        store_audit_event ev;
        int hashes_ok;
        read_audit(s, &ev, &hashes_ok);
        if (fn(ctx, &ev, hashes_ok) != 0) return MID_OK_RESULT;
    }
    SQ_GUARD(c, rc, "read audit events");
    return MID_OK_RESULT;
}

static MID_RESULT sq_audit_iterate(store_conn *cc, int64_t after_seq, store_audit_row_fn fn,
                                   void *ctx)
{
    sq_conn *c = sq(cc);
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    MID_TRY(r, sq_stmt(c, SQ_AUDIT_ITER, &s));
    sqlite3_bind_int64(s, 1, after_seq);
    MID_TRY(r, sq_audit_walk(c, s, fn, ctx));
out:
    sq_done(s);
    return r;
}

/* Appends to a bounded SQL buffer; the fragments are constants. */
static MID_RESULT sql_add(char *buf, size_t cap, size_t *len, const char *frag)
{
    int n = snprintf(buf + *len, cap - *len, "%s", frag);
    MID_ENSURE(n >= 0 && (size_t)n < cap - *len, MID_E_INTERNAL, "audit query too long");
    *len += (size_t)n;
    return MID_OK_RESULT;
}

static MID_RESULT sq_audit_query(store_conn *cc, const store_audit_filter *f,
                                 store_audit_row_fn fn, void *ctx)
{
    sq_conn *c = sq(cc);
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    char sql[2048];
    size_t len = 0;
    int limit = f->limit > 0;
    /* Only the filters in use appear, so SQLite can pick an index. */
    if (limit) MID_TRY(r, sql_add(sql, sizeof sql, &len, "SELECT * FROM ("));
    MID_TRY(r, sql_add(sql, sizeof sql, &len,
                       "SELECT " SQ_AUDIT_COLS " FROM audit_events WHERE seq > ?1"));
    if (f->since_ms > 0) MID_TRY(r, sql_add(sql, sizeof sql, &len, " AND ts_ms >= ?2"));
    if (f->until_ms > 0) MID_TRY(r, sql_add(sql, sizeof sql, &len, " AND ts_ms < ?3"));
    /* By SPIFFE ID: the chunks of audit_spiffe after ?1 (enumerated by a
     * recursive skip over the chunk keys, one seek each), then the events
     * not indexed yet. The event's own column is checked too, so a row
     * edited around meshid is never reported under a subject it lacks. */
    if (f->spiffe_id)
        MID_TRY(r, sql_add(sql, sizeof sql, &len,
                           " AND spiffe_id = ?4 AND seq IN (WITH RECURSIVE ch(c) AS ("
                           "SELECT min(chunk) FROM audit_spiffe WHERE chunk > ?1 UNION ALL "
                           "SELECT (SELECT min(chunk) FROM audit_spiffe WHERE chunk > ch.c)"
                           " FROM ch WHERE ch.c IS NOT NULL) "
                           "SELECT x.seq FROM ch JOIN audit_spiffe x"
                           " ON x.chunk = ch.c AND x.spiffe_id = ?4 UNION ALL "
                           "SELECT seq FROM audit_events WHERE seq > " SQ_AUDIT_UPTO
                           " AND spiffe_id = ?4)"));
    if (f->event) MID_TRY(r, sql_add(sql, sizeof sql, &len, " AND event = ?5"));
    if (f->outcome) MID_TRY(r, sql_add(sql, sizeof sql, &len, " AND outcome = ?6"));
    if (limit)
        MID_TRY(r, sql_add(sql, sizeof sql, &len, " ORDER BY seq DESC LIMIT ?7) ORDER BY seq"));
    else
        MID_TRY(r, sql_add(sql, sizeof sql, &len, " ORDER BY seq"));

    SQ_CHECK(r, c, sqlite3_prepare_v2(c->db, sql, -1, &s, NULL), "prepare audit query");
    sqlite3_bind_int64(s, 1, f->after_seq);
    if (f->since_ms > 0) sqlite3_bind_int64(s, 2, f->since_ms);
    if (f->until_ms > 0) sqlite3_bind_int64(s, 3, f->until_ms);
    if (f->spiffe_id) sqlite3_bind_text(s, 4, f->spiffe_id, -1, SQLITE_STATIC);
    if (f->event) sqlite3_bind_text(s, 5, f->event, -1, SQLITE_STATIC);
    if (f->outcome) sqlite3_bind_text(s, 6, f->outcome, -1, SQLITE_STATIC);
    if (limit) sqlite3_bind_int64(s, 7, f->limit);
    MID_TRY(r, sq_audit_walk(c, s, fn, ctx));
out:
    sqlite3_finalize(s);
    return r;
}

/* ---- authorities ------------------------------------------------------------------ */

/* SQ_AUTH_PUT (upsert) or SQ_AUTH_INSERT (MID_E_EXISTS for a taken id). */
static MID_RESULT sq_authority_write(store_conn *cc, const store_authority *a, sq_stmt_id id)
{
    sq_conn *c = sq(cc);
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    MID_TRY(r, sq_stmt(c, id, &s));
    sqlite3_bind_text(s, 1, a->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, a->kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, a->state, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, a->trust_domain, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 5, a->parent_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 6, a->cert_pem, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 7, a->chain_pem ? a->chain_pem : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 8, a->key_ref ? a->key_ref : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 9, a->not_before);
    sqlite3_bind_int64(s, 10, a->not_after);
    sqlite3_bind_int(s, 11, a->upstream);
    sqlite3_bind_int64(s, 12, a->created_at);
    int rc = sqlite3_step(s);
    MID_CHECK(r, rc != SQLITE_CONSTRAINT_FOREIGNKEY, MID_E_INVALID,
              "%s: authority %s: parent authority %s does not exist", c->path, a->id,
              a->parent_id ? a->parent_id : "(null)");
    MID_CHECK(r, rc != SQLITE_CONSTRAINT_PRIMARYKEY && rc != SQLITE_CONSTRAINT_UNIQUE,
              MID_E_EXISTS, "%s: authority %s already exists", c->path, a->id);
    SQ_CHECK(r, c, rc, "store authority");
out:
    sq_done(s);
    return r;
}

static MID_RESULT sq_authority_put(store_conn *cc, const store_authority *a)
{
    return sq_authority_write(cc, a, SQ_AUTH_PUT);
}

static MID_RESULT sq_authority_insert(store_conn *cc, const store_authority *a)
{
    return sq_authority_write(cc, a, SQ_AUTH_INSERT);
}

static MID_RESULT sq_authority_set_state(store_conn *cc, const char *id, const char *from_state,
                                         const char *to_state)
{
    sq_conn *c = sq(cc);
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    MID_TRY(r, sq_stmt(c, SQ_AUTH_SET_STATE, &s));
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, from_state, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, to_state, -1, SQLITE_STATIC);
    SQ_CHECK(r, c, sqlite3_step(s), "change authority state");
    if (sqlite3_changes(c->db) == 1) goto out;
    /* Nothing changed: tell a missing authority from one in another state. */
    sq_done(s);
    MID_TRY(r, sq_stmt(c, SQ_AUTH_GET_STATE, &s));
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    SQ_CHECK(r, c, rc, "read authority state");
    MID_CHECK(r, rc == SQLITE_ROW, MID_E_NOT_FOUND, "no authority %s", id);
    r = mid_fail(MID_E_STATE, __FILE__, __LINE__, "authority %s is %s, not %s", id,
                 col_text(s, 0), from_state);
out:
    sq_done(s);
    return r;
}

static MID_RESULT sq_authority_list(store_conn *cc, store_authority_row **rows, size_t *n)
{
    sq_conn *c = sq(cc);
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    store_authority_row *v = NULL;
    size_t len = 0, cap = 0;
    int rc;
    MID_TRY(r, sq_stmt(c, SQ_AUTH_LIST, &s));
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            store_authority_row *nv = realloc(v, ncap * sizeof *nv);
            MID_CHECK_MEM(r, nv);
            v = nv;
            cap = ncap;
        }
        store_authority a = {
            .id = col_text(s, 0),
            .kind = col_text(s, 1),
            .state = col_text(s, 2),
            .trust_domain = col_text(s, 3),
            .parent_id = col_text(s, 4),
            .cert_pem = col_text(s, 5),
            .chain_pem = col_text(s, 6),
            .key_ref = col_text(s, 7),
            .not_before = sqlite3_column_int64(s, 8),
            .not_after = sqlite3_column_int64(s, 9),
            .upstream = sqlite3_column_int(s, 10),
            .created_at = sqlite3_column_int64(s, 11),
        };
        MID_TRY(r, store_authority_row_copy(&a, &v[len]));
        len++;
    }
    SQ_CHECK(r, c, rc, "list authorities");
    *rows = v;
    *n = len;
    v = NULL;
out:
    sq_done(s);
    if (v != NULL) store_authority_list_free(v, len);
    return r;
}

/* ---- certificates ----------------------------------------------------------------- */

static MID_RESULT sq_cert_insert(store_conn *cc, const store_cert *ct)
{
    sq_conn *c = sq(cc);
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    MID_TRY(r, sq_stmt(c, SQ_CERT_INSERT, &s));
    sqlite3_bind_text(s, 1, ct->serial, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, ct->spiffe_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, ct->key_fp, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, ct->not_before);
    sqlite3_bind_int64(s, 5, ct->not_after);
    sqlite3_bind_text(s, 6, ct->authority_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 7, ct->status, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 8, ct->issued_at);
    sqlite3_bind_blob(s, 9, ct->cert_der, (int)ct->cert_der_len, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    MID_CHECK(r, rc != SQLITE_CONSTRAINT_PRIMARYKEY, MID_E_EXISTS,
              "certificate serial %s already exists", ct->serial);
    MID_CHECK(r, rc != SQLITE_CONSTRAINT_FOREIGNKEY, MID_E_INVALID,
              "certificate %s: authority %s does not exist", ct->serial, ct->authority_id);
    SQ_CHECK(r, c, rc, "insert certificate");
out:
    sq_done(s);
    return r;
}

static MID_RESULT sq_cert_get(store_conn *cc, const char *serial, store_cert_row *out)
{
    sq_conn *c = sq(cc);
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    MID_TRY(r, sq_stmt(c, SQ_CERT_GET, &s));
    sqlite3_bind_text(s, 1, serial, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    SQ_CHECK(r, c, rc, "read certificate");
    MID_CHECK(r, rc == SQLITE_ROW, MID_E_NOT_FOUND, "no certificate with serial %.128s", serial);
    store_cert ct = {
        .serial = col_text(s, 0),
        .spiffe_id = col_text(s, 1),
        .key_fp = col_text(s, 2),
        .not_before = sqlite3_column_int64(s, 3),
        .not_after = sqlite3_column_int64(s, 4),
        .authority_id = col_text(s, 5),
        .status = col_text(s, 6),
        .issued_at = sqlite3_column_int64(s, 7),
        .cert_der = sqlite3_column_blob(s, 8),
        .cert_der_len = (size_t)sqlite3_column_bytes(s, 8),
    };
    MID_TRY(r, store_cert_row_copy(&ct, out));
out:
    sq_done(s);
    return r;
}

static MID_RESULT sq_cert_count_live(store_conn *cc, const char *authority_id, int64_t now,
                                     int64_t *n)
{
    sq_conn *c = sq(cc);
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    MID_TRY(r, sq_stmt(c, SQ_CERT_COUNT_LIVE, &s));
    sqlite3_bind_text(s, 1, authority_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, now);
    SQ_CHECK(r, c, sqlite3_step(s), "count certificates");
    *n = sqlite3_column_int64(s, 0);
out:
    sq_done(s);
    return r;
}

/* ---- registration entries ----------------------------------------------------------- */

static MID_RESULT sq_entries_revision_bump(store_conn *cc, int64_t *revision)
{
    sq_conn *c = sq(cc);
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    MID_TRY(r, sq_stmt(c, SQ_REV_BUMP, &s));
    int rc = sqlite3_step(s);
    SQ_CHECK(r, c, rc, "bump entries revision");
    MID_CHECK(r, rc == SQLITE_ROW, MID_E_CORRUPT, "%s: the entries_revision counter is missing",
              c->path);
    *revision = sqlite3_column_int64(s, 0);
    SQ_CHECK(r, c, sqlite3_step(s), "bump entries revision");
out:
    sq_done(s);
    return r;
}

static MID_RESULT sq_entries_revision(store_conn *cc, int64_t *revision)
{
    sq_conn *c = sq(cc);
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    MID_TRY(r, sq_stmt(c, SQ_REV_GET, &s));
    int rc = sqlite3_step(s);
    SQ_CHECK(r, c, rc, "read entries revision");
    MID_CHECK(r, rc == SQLITE_ROW, MID_E_CORRUPT, "%s: the entries_revision counter is missing",
              c->path);
    *revision = sqlite3_column_int64(s, 0);
out:
    sq_done(s);
    return r;
}

static MID_RESULT sq_entry_insert(store_conn *cc, const store_entry *e, const char *selectors_hash)
{
    sq_conn *c = sq(cc);
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    MID_TRY(r, sq_stmt(c, SQ_ENTRY_INSERT, &s));
    sqlite3_bind_text(s, 1, e->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, e->spiffe_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, e->parent_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, e->ttl_seconds);
    sqlite3_bind_int64(s, 5, e->created_at);
    sqlite3_bind_int64(s, 6, e->revision);
    sqlite3_bind_text(s, 7, selectors_hash, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    MID_CHECK(r, rc != SQLITE_CONSTRAINT_PRIMARYKEY, MID_E_EXISTS, "entry id %s already exists",
              e->id);
    MID_CHECK(r, rc != SQLITE_CONSTRAINT_UNIQUE, MID_E_EXISTS,
              "an entry for %.256s under parent %.256s with the same selectors already exists",
              e->spiffe_id, e->parent_id);
    SQ_CHECK(r, c, rc, "insert entry");
    for (size_t i = 0; i < e->n_selectors; i++) {
        sq_done(s);
        MID_TRY(r, sq_stmt(c, SQ_ENTRY_SEL_INSERT, &s));
        sqlite3_bind_text(s, 1, e->id, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, e->selectors[i].type, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 3, e->selectors[i].value, -1, SQLITE_STATIC);
        SQ_CHECK(r, c, sqlite3_step(s), "insert entry selector");
    }
    for (size_t i = 0; i < e->n_dns_names; i++) {
        sq_done(s);
        MID_TRY(r, sq_stmt(c, SQ_ENTRY_DNS_INSERT, &s));
        sqlite3_bind_text(s, 1, e->id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, (int64_t)i);
        sqlite3_bind_text(s, 3, e->dns_names[i], -1, SQLITE_STATIC);
        SQ_CHECK(r, c, sqlite3_step(s), "insert entry DNS name");
    }
out:
    sq_done(s);
    return r;
}

/* Selectors and DNS names of one entry, copied out of their statements
 * (a column's text lives only until the next step). */
typedef struct {
    store_selector *sel;
    size_t nsel, capsel;
    const char **dns;
    size_t ndns, capdns;
} sq_entry_parts;

static void sq_entry_parts_free(sq_entry_parts *p)
{
    for (size_t i = 0; i < p->nsel; i++) {
        free((char *)p->sel[i].type);
        free((char *)p->sel[i].value);
    }
    for (size_t i = 0; i < p->ndns; i++) free((char *)p->dns[i]);
    free(p->sel);
    free(p->dns);
    memset(p, 0, sizeof *p);
}

static MID_RESULT sq_entry_parts_load(sq_conn *c, const char *id, sq_entry_parts *p)
{
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    void *slot;
    int rc;
    MID_TRY(r, sq_stmt(c, SQ_ENTRY_SEL_GET, &s));
    sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        MID_TRY(r, store_rows_grow((void **)&p->sel, sizeof *p->sel, &p->nsel, &p->capsel, &slot));
        store_selector *sel = slot;
        sel->type = strdup(col_text(s, 0) ? col_text(s, 0) : "");
        sel->value = strdup(col_text(s, 1) ? col_text(s, 1) : "");
        MID_CHECK_MEM(r, sel->type);
        MID_CHECK_MEM(r, sel->value);
    }
    SQ_CHECK(r, c, rc, "read entry selectors");
    sq_done(s);
    MID_TRY(r, sq_stmt(c, SQ_ENTRY_DNS_GET, &s));
    sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        MID_TRY(r, store_rows_grow((void **)&p->dns, sizeof *p->dns, &p->ndns, &p->capdns, &slot));
        const char **dns = slot;
        *dns = strdup(col_text(s, 0) ? col_text(s, 0) : "");
        MID_CHECK_MEM(r, *dns);
    }
    SQ_CHECK(r, c, rc, "read entry DNS names");
out:
    sq_done(s);
    return r;
}

/* Copies the current row of an SQ_ENTRY_COLS statement, with its selectors
 * and DNS names, into *out. */
static MID_RESULT sq_entry_load(sq_conn *c, sqlite3_stmt *row, store_entry_row *out)
{
    sq_entry_parts p = {0};
    mid_result r = sq_entry_parts_load(c, col_text(row, 0), &p);
    if (mid_is_ok(r)) {
        store_entry e = {
            .id = col_text(row, 0),
            .spiffe_id = col_text(row, 1),
            .parent_id = col_text(row, 2),
            .selectors = p.sel,
            .n_selectors = p.nsel,
            .dns_names = p.dns,
            .n_dns_names = p.ndns,
            .ttl_seconds = sqlite3_column_int64(row, 3),
            .created_at = sqlite3_column_int64(row, 4),
            .revision = sqlite3_column_int64(row, 5),
        };
        r = store_entry_row_copy(&e, out);
    }
    sq_entry_parts_free(&p);
    return r;
}

static MID_RESULT sq_entry_get(store_conn *cc, const char *id, store_entry_row *out)
{
    sq_conn *c = sq(cc);
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    int snap = 0;
    /* Entry, selectors and DNS names from one snapshot. */
    if (sqlite3_get_autocommit(c->db)) {
        MID_TRY(r, sq_exec_cached(c, SQ_SNAP_BEGIN, "begin read"));
        snap = 1;
    }
    MID_TRY(r, sq_stmt(c, SQ_ENTRY_GET, &s));
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    SQ_CHECK(r, c, rc, "read entry");
    MID_CHECK(r, rc == SQLITE_ROW, MID_E_NOT_FOUND, "no entry with id %.64s", id);
    MID_TRY(r, sq_entry_load(c, s, out));
out:
    sq_done(s);
    if (snap) (void)sqlite3_exec(c->db, "COMMIT", NULL, NULL, NULL);
    return r;
}

static MID_RESULT sq_entry_delete(store_conn *cc, const char *id, store_entry_row *out)
{
    sq_conn *c = sq(cc);
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    MID_TRY(r, sq_entry_get(cc, id, out));
    MID_TRY(r, sq_stmt(c, SQ_ENTRY_DELETE, &s));
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    SQ_CHECK(r, c, sqlite3_step(s), "delete entry");
    MID_CHECK(r, sqlite3_changes(c->db) == 1, MID_E_NOT_FOUND, "no entry with id %.64s", id);
out:
    sq_done(s);
    if (!mid_is_ok(r)) store_entry_row_clear(out);
    return r;
}

static MID_RESULT sq_entry_list(store_conn *cc, const char *parent_id, store_entry_row **rows,
                                size_t *n, int64_t *revision)
{
    sq_conn *c = sq(cc);
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    store_entry_row *v = NULL;
    size_t len = 0, cap = 0;
    void *slot;
    int rc, snap = 0;
    if (sqlite3_get_autocommit(c->db)) {
        MID_TRY(r, sq_exec_cached(c, SQ_SNAP_BEGIN, "begin read"));
        snap = 1;
    }
    MID_TRY(r, sq_entries_revision(cc, revision));
    MID_TRY(r, sq_stmt(c, parent_id ? SQ_ENTRY_LIST_PARENT : SQ_ENTRY_LIST_ALL, &s));
    if (parent_id) sqlite3_bind_text(s, 1, parent_id, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        MID_TRY(r, store_rows_grow((void **)&v, sizeof *v, &len, &cap, &slot));
        r = sq_entry_load(c, s, slot);
        if (!mid_is_ok(r)) {
            len--; /* the slot holds nothing */
            goto out;
        }
    }
    SQ_CHECK(r, c, rc, "list entries");
    *rows = v;
    *n = len;
    v = NULL;
out:
    sq_done(s);
    if (snap) (void)sqlite3_exec(c->db, "COMMIT", NULL, NULL, NULL);
    if (v != NULL) store_entry_list_free(v, len);
    return r;
}

/* ---- join tokens ------------------------------------------------------------------- */

static void read_token(sqlite3_stmt *s, store_join_token *t)
{
    t->token_hash = col_text(s, 0);
    t->agent_spiffe_id = col_text(s, 1);
    t->expires_at = sqlite3_column_int64(s, 2);
    t->created_at = sqlite3_column_int64(s, 3);
    t->used_at = sqlite3_column_int64(s, 4); /* NULL reads as 0 */
}

static MID_RESULT sq_join_token_insert(store_conn *cc, const store_join_token *t)
{
    sq_conn *c = sq(cc);
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    MID_TRY(r, sq_stmt(c, SQ_TOKEN_INSERT, &s));
    sqlite3_bind_text(s, 1, t->token_hash, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, t->agent_spiffe_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, t->expires_at);
    sqlite3_bind_int64(s, 4, t->created_at);
    int rc = sqlite3_step(s);
    MID_CHECK(r, rc != SQLITE_CONSTRAINT_PRIMARYKEY, MID_E_EXISTS, "join token already exists");
    SQ_CHECK(r, c, rc, "insert join token");
out:
    sq_done(s);
    return r;
}

static MID_RESULT sq_join_token_consume(store_conn *cc, const char *token_hash, int64_t now,
                                        store_join_token_row *out)
{
    sq_conn *c = sq(cc);
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    store_join_token t = {0};
    MID_TRY(r, sq_stmt(c, SQ_TOKEN_CONSUME, &s));
    sqlite3_bind_text(s, 1, token_hash, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, now);
    int rc = sqlite3_step(s);
    SQ_CHECK(r, c, rc, "consume join token");
    if (rc == SQLITE_ROW) {
        read_token(s, &t);
        MID_TRY(r, store_join_token_row_copy(&t, out));
        goto out;
    }
    /* Nothing matched: say why. The hash is not secret, but it is not
     * repeated in messages either: they reach peers as gRPC statuses. */
    sq_done(s);
    MID_TRY(r, sq_stmt(c, SQ_TOKEN_GET, &s));
    sqlite3_bind_text(s, 1, token_hash, -1, SQLITE_STATIC);
    rc = sqlite3_step(s);
    SQ_CHECK(r, c, rc, "read join token");
    MID_CHECK(r, rc == SQLITE_ROW, MID_E_DENIED, "join token is unknown");
    read_token(s, &t);
    MID_CHECK(r, t.used_at == 0 && sqlite3_column_type(s, 4) == SQLITE_NULL, MID_E_DENIED,
              "join token was already used");
    r = mid_fail(MID_E_DENIED, __FILE__, __LINE__, "join token expired");
out:
    sq_done(s);
    return r;
}

/* ---- agents --------------------------------------------------------------------------- */

static void read_agent(sqlite3_stmt *s, store_agent *a)
{
    a->spiffe_id = col_text(s, 0);
    a->serial = col_text(s, 1);
    a->not_after = sqlite3_column_int64(s, 2);
    a->hostname = col_text(s, 3);
    a->attested_at = sqlite3_column_int64(s, 4);
    a->last_seen = sqlite3_column_int64(s, 5);
    a->banned = sqlite3_column_int(s, 6);
}

static MID_RESULT sq_agent_upsert(store_conn *cc, const store_agent *a)
{
    sq_conn *c = sq(cc);
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    MID_TRY(r, sq_stmt(c, SQ_AGENT_UPSERT, &s));
    sqlite3_bind_text(s, 1, a->spiffe_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, a->serial, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, a->not_after);
    sqlite3_bind_text(s, 4, a->hostname ? a->hostname : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 5, a->attested_at);
    sqlite3_bind_int64(s, 6, a->last_seen);
    sqlite3_bind_int(s, 7, a->banned);
    SQ_CHECK(r, c, sqlite3_step(s), "store agent");
out:
    sq_done(s);
    return r;
}

static MID_RESULT sq_agent_get(store_conn *cc, const char *spiffe_id, store_agent_row *out)
{
    sq_conn *c = sq(cc);
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    store_agent a;
    MID_TRY(r, sq_stmt(c, SQ_AGENT_GET, &s));
    sqlite3_bind_text(s, 1, spiffe_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    SQ_CHECK(r, c, rc, "read agent");
    MID_CHECK(r, rc == SQLITE_ROW, MID_E_NOT_FOUND, "no agent %.256s", spiffe_id);
    read_agent(s, &a);
    MID_TRY(r, store_agent_row_copy(&a, out));
out:
    sq_done(s);
    return r;
}

/* Runs an UPDATE of one agent; MID_E_NOT_FOUND when no row changed. */
static MID_RESULT sq_agent_update(sq_conn *c, sqlite3_stmt *s, const char *spiffe_id,
                                  const char *what)
{
    SQ_GUARD(c, sqlite3_step(s), what);
    MID_ENSURE(sqlite3_changes(c->db) == 1, MID_E_NOT_FOUND, "no agent %.256s", spiffe_id);
    return MID_OK_RESULT;
}

static MID_RESULT sq_agent_renew(store_conn *cc, const char *spiffe_id, const char *serial,
                                 int64_t not_after, int64_t now)
{
    sq_conn *c = sq(cc);
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    MID_TRY(r, sq_stmt(c, SQ_AGENT_RENEW, &s));
    sqlite3_bind_text(s, 1, spiffe_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, serial, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, not_after);
    sqlite3_bind_int64(s, 4, now);
    r = sq_agent_update(c, s, spiffe_id, "renew agent");
    if (r.err != MID_E_NOT_FOUND) goto out;
    /* Nothing changed: tell a missing agent from a banned one. */
    sq_done(s);
    MID_TRY(r, sq_stmt(c, SQ_AGENT_GET, &s));
    sqlite3_bind_text(s, 1, spiffe_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    SQ_CHECK(r, c, rc, "read agent");
    MID_CHECK(r, rc == SQLITE_ROW, MID_E_NOT_FOUND, "no agent %.256s", spiffe_id);
    r = mid_fail(MID_E_DENIED, __FILE__, __LINE__, "agent %.256s is banned", spiffe_id);
out:
    sq_done(s);
    return r;
}

static MID_RESULT sq_agent_set_banned(store_conn *cc, const char *spiffe_id, int banned)
{
    sq_conn *c = sq(cc);
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    MID_TRY(r, sq_stmt(c, SQ_AGENT_BAN, &s));
    sqlite3_bind_text(s, 1, spiffe_id, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 2, banned);
    r = sq_agent_update(c, s, spiffe_id, "ban agent");
out:
    sq_done(s);
    return r;
}

static MID_RESULT sq_agent_touch(store_conn *cc, const char *spiffe_id, int64_t now)
{
    sq_conn *c = sq(cc);
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    MID_TRY(r, sq_stmt(c, SQ_AGENT_TOUCH, &s));
    sqlite3_bind_text(s, 1, spiffe_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, now);
    r = sq_agent_update(c, s, spiffe_id, "touch agent");
out:
    sq_done(s);
    return r;
}

static MID_RESULT sq_agent_list(store_conn *cc, store_agent_row **rows, size_t *n)
{
    sq_conn *c = sq(cc);
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    store_agent_row *v = NULL;
    size_t len = 0, cap = 0;
    void *slot;
    int rc;
    MID_TRY(r, sq_stmt(c, SQ_AGENT_LIST, &s));
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        store_agent a;
        read_agent(s, &a);
        MID_TRY(r, store_rows_grow((void **)&v, sizeof *v, &len, &cap, &slot));
        r = store_agent_row_copy(&a, slot);
        if (!mid_is_ok(r)) {
            len--;
            goto out;
        }
    }
    SQ_CHECK(r, c, rc, "list agents");
    *rows = v;
    *n = len;
    v = NULL;
out:
    sq_done(s);
    if (v != NULL) store_agent_list_free(v, len);
    return r;
}

/* ---- mesh resources ------------------------------------------------------------------- */

/* Runs a cached single-row, single-integer statement (a counter read or a
 * RETURNING bump); MID_E_CORRUPT when it returns no row. */
static MID_RESULT sq_counter(sq_conn *c, sq_stmt_id id, const char *what, int64_t *value)
{
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    MID_TRY(r, sq_stmt(c, id, &s));
    int rc = sqlite3_step(s);
    SQ_CHECK(r, c, rc, what);
    MID_CHECK(r, rc == SQLITE_ROW, MID_E_CORRUPT, "%s: %s: the counter row is missing", c->path,
              what);
    *value = sqlite3_column_int64(s, 0);
    SQ_CHECK(r, c, sqlite3_step(s), what); /* finishes a RETURNING statement */
out:
    sq_done(s);
    return r;
}

static MID_RESULT sq_mesh_revision_bump(store_conn *cc, int64_t *revision)
{
    return sq_counter(sq(cc), SQ_MESH_REV_BUMP, "bump mesh revision", revision);
}

static MID_RESULT sq_mesh_revision(store_conn *cc, int64_t *revision)
{
    return sq_counter(sq(cc), SQ_MESH_REV_GET, "read mesh revision", revision);
}

static void sq_bind_mesh_key(sqlite3_stmt *s, const char *kind, const char *namespace_,
                             const char *name)
{
    sqlite3_bind_text(s, 1, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, namespace_, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, name, -1, SQLITE_STATIC);
}

static MID_RESULT sq_mesh_revision_of(store_conn *cc, const char *kind, const char *namespace_,
                                      const char *name, int64_t *revision)
{
    sq_conn *c = sq(cc);
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    MID_TRY(r, sq_stmt(c, SQ_MESH_REV_OF, &s));
    sq_bind_mesh_key(s, kind, namespace_, name);
    int rc = sqlite3_step(s);
    SQ_CHECK(r, c, rc, "read mesh resource revision");
    *revision = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
out:
    sq_done(s);
    return r;
}

static MID_RESULT sq_mesh_put(store_conn *cc, const char *kind, const char *namespace_,
                              const char *name, const char *spec_json, int64_t revision,
                              int64_t now)
{
    sq_conn *c = sq(cc);
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    MID_TRY(r, sq_stmt(c, SQ_MESH_PUT, &s));
    sq_bind_mesh_key(s, kind, namespace_, name);
    sqlite3_bind_text(s, 4, spec_json, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 5, revision);
    sqlite3_bind_int64(s, 6, now);
    int rc = sqlite3_step(s);
    MID_CHECK(r, (rc & 0xff) != SQLITE_CONSTRAINT, MID_E_INVALID,
              "%s: %s %.253s/%.253s refused by the schema: %s", c->path, kind, namespace_, name,
              sqlite3_errmsg(c->db));
    SQ_CHECK(r, c, rc, "store mesh resource");
out:
    sq_done(s);
    return r;
}

static MID_RESULT sq_mesh_delete(store_conn *cc, const char *kind, const char *namespace_,
                                 const char *name)
{
    sq_conn *c = sq(cc);
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    MID_TRY(r, sq_stmt(c, SQ_MESH_DELETE, &s));
    sq_bind_mesh_key(s, kind, namespace_, name);
    SQ_CHECK(r, c, sqlite3_step(s), "delete mesh resource");
    MID_CHECK(r, sqlite3_changes(c->db) == 1, MID_E_NOT_FOUND, "%s %.253s/%.253s does not exist",
              kind, namespace_, name);
out:
    sq_done(s);
    return r;
}

/* Copies the current row of an SQ_MESH_COLS statement. */
static MID_RESULT sq_mesh_load(sqlite3_stmt *s, store_mesh_row *out)
{
    return store_mesh_row_fill(out, col_text(s, 0), col_text(s, 1), col_text(s, 2),
                               col_text(s, 3), sqlite3_column_int64(s, 4),
                               sqlite3_column_int64(s, 5), sqlite3_column_int64(s, 6));
}

static MID_RESULT sq_mesh_get(store_conn *cc, const char *kind, const char *namespace_,
                              const char *name, store_mesh_row *out)
{
    sq_conn *c = sq(cc);
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    MID_TRY(r, sq_stmt(c, SQ_MESH_GET, &s));
    sq_bind_mesh_key(s, kind, namespace_, name);
    int rc = sqlite3_step(s);
    SQ_CHECK(r, c, rc, "read mesh resource");
    MID_CHECK(r, rc == SQLITE_ROW, MID_E_NOT_FOUND, "%s %.253s/%.253s does not exist", kind,
              namespace_, name);
    MID_TRY(r, sq_mesh_load(s, out));
out:
    sq_done(s);
    return r;
}

static MID_RESULT sq_mesh_list(store_conn *cc, const char *kind, store_mesh_row **rows,
                               size_t *n, int64_t *revision)
{
    sq_conn *c = sq(cc);
    mid_result r = MID_OK_RESULT;
    sqlite3_stmt *s = NULL;
    store_mesh_row *v = NULL;
    size_t len = 0, cap = 0;
    void *slot;
    int rc, snap = 0;
    /* The rows and the revision from one snapshot. */
    if (sqlite3_get_autocommit(c->db)) {
        MID_TRY(r, sq_exec_cached(c, SQ_SNAP_BEGIN, "begin read"));
        snap = 1;
    }
    MID_TRY(r, sq_mesh_revision(cc, revision));
    MID_TRY(r, sq_stmt(c, kind ? SQ_MESH_LIST_KIND : SQ_MESH_LIST_ALL, &s));
    if (kind) sqlite3_bind_text(s, 1, kind, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        MID_TRY(r, store_rows_grow((void **)&v, sizeof *v, &len, &cap, &slot));
        r = sq_mesh_load(s, slot);
        if (!mid_is_ok(r)) {
            len--; /* the slot holds nothing */
            goto out;
        }
    }
    SQ_CHECK(r, c, rc, "list mesh resources");
    *rows = v;
    *n = len;
    v = NULL;
out:
    sq_done(s);
    if (snap) (void)sqlite3_exec(c->db, "COMMIT", NULL, NULL, NULL);
    if (v != NULL) store_mesh_list_free(v, len);
    return r;
}

const store_backend store_backend_sqlite = {
    .name = "sqlite",
    .prefix = "sqlite:",
    .open = sq_open,
    .close = sq_close,
    .migrate = sq_migrate,
    .begin_immediate = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .savepoint = sq_savepoint,
    .release = sq_release,
    .rollback_to = sq_rollback_to,
    .audit_head = sq_audit_head,
    .audit_insert = sq_audit_insert,
    .audit_get = sq_audit_get,
    .audit_iterate = sq_audit_iterate,
    .audit_query = sq_audit_query,
    .authority_put = sq_authority_put,
    .authority_insert = sq_authority_insert,
    .authority_set_state = sq_authority_set_state,
    .authority_list = sq_authority_list,
    .cert_insert = sq_cert_insert,
    .cert_get = sq_cert_get,
    .cert_count_live = sq_cert_count_live,
    .entries_revision_bump = sq_entries_revision_bump,
    .entries_revision = sq_entries_revision,
    .entry_insert = sq_entry_insert,
    .entry_get = sq_entry_get,
    .entry_delete = sq_entry_delete,
    .entry_list = sq_entry_list,
    .join_token_insert = sq_join_token_insert,
    .join_token_consume = sq_join_token_consume,
    .agent_upsert = sq_agent_upsert,
    .agent_renew = sq_agent_renew,
    .agent_get = sq_agent_get,
    .agent_list = sq_agent_list,
    .agent_set_banned = sq_agent_set_banned,
    .agent_touch = sq_agent_touch,
    .mesh_revision_bump = sq_mesh_revision_bump,
    .mesh_revision = sq_mesh_revision,
    .mesh_revision_of = sq_mesh_revision_of,
    .mesh_put = sq_mesh_put,
    .mesh_delete = sq_mesh_delete,
    .mesh_get = sq_mesh_get,
    .mesh_list = sq_mesh_list,
};
