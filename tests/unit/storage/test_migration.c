/* storage: upgrading a database that an older meshid (schema version 1, or
 * 4: certificates as PEM) left behind, with data and an audit chain, to the
 * current schema. */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/audit.h"
#include "storage/store_int.h"
#include "storage_test.h"

static int64_t raw_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
        fail_msg("prepare '%s': %s", sql, sqlite3_errmsg(db));
    int64_t v = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
    sqlite3_finalize(s);
    return v;
}

/* Appends a correctly chained audit event with raw SQL, as version 1 wrote it. */
static void raw_audit(sqlite3 *db, int64_t seq, const char *event, uint8_t prev[STORE_HASH_LEN])
{
    store_audit_event ev = make_event(event, "spiffe://example.org/w", NULL);
    ev.seq = seq;
    ev.ts_ms = 1700000000000 + seq;
    uint8_t hash[STORE_HASH_LEN];
    assert_true(mid_is_ok(audit_hash(&ev, prev, hash)));
    char ph[AUDIT_HEX_LEN + 1], hh[AUDIT_HEX_LEN + 1], sql[1024];
    audit_hex_encode(prev, ph);
    audit_hex_encode(hash, hh);
    snprintf(sql, sizeof sql,
             "INSERT INTO audit_events (seq, ts_ms, actor, event, spiffe_id, serial, outcome,"
             " reason, details, prev_hash, hash) VALUES (%lld, %lld, '%s', '%s', '%s', NULL,"
             " '%s', '%s', '%s', '%s', '%s')",
             (long long)ev.seq, (long long)ev.ts_ms, ev.actor, ev.event, ev.spiffe_id,
             ev.outcome, ev.reason, ev.details, ph, hh);
    raw_exec(db, sql);
    memcpy(prev, hash, STORE_HASH_LEN);
}

/* A schema-1 database exactly as the version-1 migration creates it. */
static void build_v1(const char *path)
{
    const char *v1 = store_sqlite_migration_sql(1);
    assert_non_null(v1);
    assert_non_null(store_sqlite_migration_sql(STORE_TEST_SCHEMA_LATEST));
    assert_null(store_sqlite_migration_sql(STORE_TEST_SCHEMA_LATEST + 1));
    assert_null(store_sqlite_migration_sql(0));
    sqlite3 *db = raw_open(path);
    raw_exec(db, "PRAGMA journal_mode = WAL");
    raw_exec(db, "BEGIN");
    raw_exec(db, v1);
    raw_exec(db, "INSERT INTO schema_migrations VALUES (1, 'authorities, certificates,"
                 " audit_events', 1700000000)");
    raw_exec(db, "PRAGMA user_version = 1; PRAGMA application_id = 1836280164");
    raw_exec(db, "INSERT INTO authorities (id, kind, state, trust_domain, parent_id, cert_pem,"
                 " not_before, not_after, created_at) VALUES ('a1', 'root', 'active',"
                 " 'example.org', NULL, 'PEM', 1700000000, 1800000000, 1700000000)");
    raw_exec(db, "INSERT INTO certificates VALUES ('0f', 'spiffe://example.org/w', '"
                 "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff', 1700000000,"
                 " 1700003600, 'a1', 'valid', 1700000000, 'PEM')");
    uint8_t prev[STORE_HASH_LEN] = {0};
    raw_audit(db, 1, "ca.init", prev);
    raw_audit(db, 2, "svid.issue", prev);
    raw_audit(db, 3, "svid.issue", prev);
    raw_exec(db, "COMMIT");
    assert_int_equal(raw_int(db, "SELECT count(*) FROM sqlite_schema WHERE name = 'entries'"), 0);
    sqlite3_close(db);
}

static void test_upgrade_from_v1(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    build_v1(t.db);

    store *st = open_store(&t, NULL);
    assert_int_equal(store_schema_version(st), STORE_TEST_SCHEMA_LATEST);
    /* The old log still verifies, and new events continue it. */
    store_audit_verdict v;
    assert_mid_ok(store_audit_verify(st, &v));
    assert_int_equal(v.ok, 1);
    assert_int_equal(v.events, 3);
    store_audit_event ev = make_event("entry.create", "spiffe://example.org/w", NULL);
    store_audit_event out;
    assert_mid_ok(store_audit_append(st, &ev, &out));
    assert_int_equal(out.seq, 4);
    /* The old rows are intact. */
    store_authority_row *auth = NULL;
    size_t n = 0;
    assert_mid_ok(store_authority_list(st, &auth, &n));
    assert_int_equal(n, 1);
    assert_string_equal(auth[0].a.id, "a1");
    store_authority_list_free(auth, n);
    store_cert_row cert;
    assert_mid_ok(store_cert_get(st, "0f", &cert));
    assert_string_equal(cert.c.authority_id, "a1");
    store_cert_row_clear(&cert);
    /* The new tables work, starting from revision 0. */
    int64_t rev = -1;
    assert_mid_ok(store_entries_revision(st, &rev));
    assert_int_equal(rev, 0);
    store_selector sel[1] = {{"unix", "uid:0"}};
    store_entry e = {.spiffe_id = "spiffe://example.org/w", .parent_id = "spiffe://example.org/a",
                     .selectors = sel, .n_selectors = 1};
    assert_mid_ok(store_entry_create(st, &e, &ev, NULL));
    store_join_token tok = {.token_hash = "1111111111111111111111111111111111111111111111111111111111111111",
                            .expires_at = 2000, .created_at = 1000};
    assert_mid_ok(store_join_token_create(st, &tok, &ev));
    store_agent a = {.spiffe_id = "spiffe://example.org/a", .serial = "0f", .not_after = 1};
    assert_mid_ok(store_agent_upsert(st, &a, &ev));
    assert_mid_ok(store_audit_verify(st, &v));
    assert_int_equal(v.ok, 1);
    assert_int_equal(v.events, 7);
    store_close(st);

    sqlite3 *db = raw_open(t.db);
    assert_int_equal(raw_int(db, "PRAGMA user_version"), STORE_TEST_SCHEMA_LATEST);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM schema_migrations"),
                     STORE_TEST_SCHEMA_LATEST);
    assert_int_equal(raw_int(db, "SELECT max(version) FROM schema_migrations"),
                     STORE_TEST_SCHEMA_LATEST);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM entries"), 1);
    sqlite3_close(db);

    /* Reopening migrates nothing more. */
    st = open_store(&t, NULL);
    assert_int_equal(store_schema_version(st), STORE_TEST_SCHEMA_LATEST);
    store_close(st);
    tmpdb_cleanup(&t);
}

/* The CHECK constraints of version 2 stop bad rows written around the store. */
static void test_v2_constraints(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store_close(open_store(&t, NULL));
    sqlite3 *db = raw_open(t.db);
    raw_exec(db, "PRAGMA foreign_keys = ON");
    const char *bad[] = {
        "INSERT INTO entries VALUES ('ZZ', 'spiffe://a/b', 'spiffe://a/c', '" 
        "0000000000000000000000000000000000000000000000000000000000000000', 0, 0, 1)",
        "INSERT INTO entries VALUES ('aa', 'a/b', 'spiffe://a/c', '"
        "0000000000000000000000000000000000000000000000000000000000000000', 0, 0, 1)",
        "INSERT INTO entries VALUES ('aa', 'spiffe://a/b', 'spiffe://a/c', 'xyz', 0, 0, 1)",
        "INSERT INTO entries VALUES ('aa', 'spiffe://a/b', 'spiffe://a/c', '"
        "0000000000000000000000000000000000000000000000000000000000000000', -1, 0, 1)",
        "INSERT INTO entry_selectors VALUES ('nope', 'unix', 'uid:1')",
        "INSERT INTO join_tokens VALUES ('abc', NULL, 10, 1, NULL)",
        "INSERT INTO join_tokens VALUES ('"
        "0000000000000000000000000000000000000000000000000000000000000000', NULL, 1, 10, NULL)",
        "INSERT INTO agents VALUES ('spiffe://a/b', 'XY', 1, '', 1, 1, 0)",
        "INSERT INTO agents VALUES ('spiffe://a/b', '0a', 1, '', 1, 1, 2)",
        "UPDATE counters SET value = -1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *err = NULL;
        int rc = sqlite3_exec(db, bad[i], NULL, NULL, &err);
        sqlite3_free(err);
        if ((rc & 0xff) != SQLITE_CONSTRAINT) fail_msg("accepted: %s (rc %d)", bad[i], rc);
    }
    sqlite3_close(db);
    tmpdb_cleanup(&t);
}

/* ---- version 4 -> 5: certificates as DER ------------------------------------ */

/* Migration 5 converts rows with the writer's meshid_pem_to_der; building
 * an empty database at version >= 5 needs only the name (no rows to convert). */
static void no_rows_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    (void)argv;
    sqlite3_result_error(ctx, "build_version converts no rows", -1);
}

/* A database at version `v` exactly as migrations 1..v create it. */
static sqlite3 *build_version(const char *path, int v)
{
    sqlite3 *db = raw_open(path);
    assert_int_equal(sqlite3_create_function_v2(db, "meshid_pem_to_der", 1, SQLITE_UTF8, NULL,
                                                no_rows_fn, NULL, NULL, NULL),
                     SQLITE_OK);
    raw_exec(db, "PRAGMA journal_mode = WAL");
    raw_exec(db, "BEGIN");
    for (int i = 1; i <= v; i++) {
        const char *sql = store_sqlite_migration_sql(i);
        assert_non_null(sql);
        raw_exec(db, sql);
        char rec[160];
        snprintf(rec, sizeof rec,
                 "INSERT INTO schema_migrations VALUES (%d, 'v%d', 1700000000);"
                 " PRAGMA user_version = %d; PRAGMA application_id = 1836280164",
                 i, i, i);
        raw_exec(db, rec);
    }
    return db;
}

/* `len` bytes of DER-like content that hit every byte value. */
static void fake_der(unsigned char *out, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++) out[i] = (unsigned char)(i * 7u + seed);
}

/* PEM as meshid wrote it (64-character lines, `eol` after each). */
static char *to_pem(const unsigned char *der, size_t len, const char *eol)
{
    size_t cap = 128 + (len + 2) / 3 * 4 * 2;
    char *pem = malloc(cap);
    assert_non_null(pem);
    size_t o = (size_t)snprintf(pem, cap, "-----BEGIN CERTIFICATE-----%s", eol);
    for (size_t at = 0; at < len; at += 48) {
        size_t chunk = len - at < 48 ? len - at : 48;
        o += (size_t)EVP_EncodeBlock((unsigned char *)pem + o, der + at, (int)chunk);
        o += (size_t)snprintf(pem + o, cap - o, "%s", eol);
    }
    snprintf(pem + o, cap - o, "-----END CERTIFICATE-----%s", eol);
    return pem;
}

static void raw_cert(sqlite3 *db, const char *serial, const char *cert_pem)
{
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "INSERT INTO certificates VALUES (?1,"
                                        " 'spiffe://example.org/w', '00112233445566778899aabbccdd"
                                        "eeff00112233445566778899aabbccddeeff', 1700000000,"
                                        " 4000000000, 'a1', 'valid', 1700000000, ?2)",
                                        -1, &s, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(s, 1, serial, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, cert_pem, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(s), SQLITE_DONE);
    sqlite3_finalize(s);
}

static void test_upgrade_from_v4(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    /* Lengths that give 0, 1 and 2 padding characters, one line and many. */
    static const size_t lens[] = {1, 2, 3, 47, 48, 49, 300, 301, 302, 1500};
    enum { NL = sizeof lens / sizeof lens[0] };
    unsigned char der[NL][1500];
    char serial[NL][8];

    sqlite3 *db = build_version(t.db, 4);
    raw_exec(db, "INSERT INTO authorities (id, kind, state, trust_domain, parent_id, cert_pem,"
                 " not_before, not_after, created_at) VALUES ('a1', 'root', 'active',"
                 " 'example.org', NULL, 'PEM', 1700000000, 1800000000, 1700000000)");
    for (size_t i = 0; i < NL; i++) {
        fake_der(der[i], lens[i], (unsigned)i);
        char *pem = to_pem(der[i], lens[i], i % 2 ? "\r\n" : "\n");
        snprintf(serial[i], sizeof serial[i], "%02zx", i + 1);
        raw_cert(db, serial[i], pem);
        free(pem);
    }
    /* Not PEM at all (written around meshid): kept as its bytes. */
    raw_cert(db, "ee", "not a certificate");
    raw_cert(db, "ef", "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n");
    uint8_t prev[STORE_HASH_LEN] = {0};
    for (int64_t seq = 1; seq <= 4; seq++) raw_audit(db, seq, "svid.issue", prev);
    raw_exec(db, "COMMIT");
    assert_int_equal(raw_int(db, "SELECT count(*) FROM pragma_table_info('certificates')"
                                 " WHERE name = 'cert_pem'"),
                     1);
    sqlite3_close(db);

    store *st = open_store(&t, NULL);
    assert_int_equal(store_schema_version(st), STORE_TEST_SCHEMA_LATEST);
    for (size_t i = 0; i < NL; i++) {
        store_cert_row row;
        assert_mid_ok(store_cert_get(st, serial[i], &row));
        assert_int_equal(row.c.cert_der_len, lens[i]);
        assert_memory_equal(row.c.cert_der, der[i], lens[i]);
        assert_string_equal(row.c.spiffe_id, "spiffe://example.org/w");
        assert_string_equal(row.c.authority_id, "a1");
        assert_int_equal(row.c.not_after, 4000000000);
        store_cert_row_clear(&row);
    }
    store_cert_row row;
    assert_mid_ok(store_cert_get(st, "ee", &row));
    assert_int_equal(row.c.cert_der_len, strlen("not a certificate"));
    assert_memory_equal(row.c.cert_der, "not a certificate", row.c.cert_der_len);
    store_cert_row_clear(&row);
    assert_mid_ok(store_cert_get(st, "ef", &row));
    assert_int_equal(row.c.cert_der_len, strlen("-----BEGIN CERTIFICATE-----\n!!!!\n"
                                                "-----END CERTIFICATE-----\n"));
    store_cert_row_clear(&row);
    int64_t live = 0;
    assert_mid_ok(store_cert_count_live(st, "a1", 1700000000, &live));
    assert_int_equal(live, NL + 2);

    /* The chain is intact and continues; new certificates go in as DER. */
    store_audit_verdict v;
    assert_mid_ok(store_audit_verify(st, &v));
    assert_int_equal(v.ok, 1);
    assert_int_equal(v.events, 4);
    store_cert c = make_cert("abcd", "spiffe://example.org/new");
    c.authority_id = "a1";
    store_audit_event ev = make_event("svid.issue", c.spiffe_id, c.serial);
    assert_mid_ok(store_cert_insert(st, &c, &ev));
    assert_mid_err(store_cert_insert(st, &c, &ev), MID_E_EXISTS); /* the key survived */
    assert_mid_ok(store_audit_verify(st, &v));
    assert_int_equal(v.ok, 1);
    assert_int_equal(v.events, 5);
    store_close(st);

    db = raw_open(t.db);
    assert_int_equal(raw_int(db, "PRAGMA user_version"), STORE_TEST_SCHEMA_LATEST);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM schema_migrations WHERE version = 5"), 1);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM certificates WHERE typeof(cert_der) <>"
                                 " 'blob'"),
                     0);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM pragma_table_info('certificates')"
                                 " WHERE name = 'cert_pem'"),
                     0);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM sqlite_schema WHERE type = 'index'"
                                 " AND name = 'certificates_authority_id'"),
                     1);
    /* The schema refuses what the store refuses. */
    char *err = NULL;
    int rc = sqlite3_exec(db, "INSERT INTO certificates VALUES ('ab', 'spiffe://e/w', 'f', 1, 2,"
                              " 'a1', 'valid', 1, 'text, not a blob')",
                          NULL, NULL, &err);
    sqlite3_free(err);
    assert_int_equal(rc & 0xff, SQLITE_CONSTRAINT);
    rc = sqlite3_exec(db, "INSERT INTO certificates VALUES ('ab', 'spiffe://e/w', 'f', 1, 2,"
                          " 'a1', 'valid', 1, x'')",
                      NULL, NULL, &err);
    sqlite3_free(err);
    assert_int_equal(rc & 0xff, SQLITE_CONSTRAINT);
    sqlite3_close(db);

    /* Reopening migrates nothing more. */
    st = open_store(&t, NULL);
    assert_int_equal(store_schema_version(st), STORE_TEST_SCHEMA_LATEST);
    store_close(st);
    tmpdb_cleanup(&t);
}

/* ---- version 5 -> 6: the audit log's SPIFFE-ID index as chunks ------------- */

static int count_rows(void *ctx, const store_audit_event *row)
{
    (void)row;
    (*(int *)ctx)++;
    return 0;
}

static int query_count(store *st, const char *spiffe_id, int64_t after_seq)
{
    store_audit_filter f = {.spiffe_id = spiffe_id, .after_seq = after_seq};
    int n = 0;
    assert_mid_ok(store_audit_query(st, &f, count_rows, &n));
    return n;
}

static void test_upgrade_from_v5(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    sqlite3 *db = build_version(t.db, 5);
    uint8_t prev[STORE_HASH_LEN] = {0};
    for (int64_t seq = 1; seq <= 5; seq++) raw_audit(db, seq, "svid.issue", prev);
    raw_exec(db, "COMMIT");
    assert_int_equal(raw_int(db, "SELECT count(*) FROM sqlite_schema"
                                 " WHERE name = 'audit_events_spiffe_id'"),
                     1);
    sqlite3_close(db);

    store_options o = {.audit_index_chunk = 4};
    store *st = open_store(&t, &o);
    assert_int_equal(store_schema_version(st), STORE_TEST_SCHEMA_LATEST);
    /* The old events are one chunk; new ones go to the tail, then to a chunk
     * of their own at the next multiple of 4. */
    assert_int_equal(query_count(st, "spiffe://example.org/w", 0), 5);
    assert_int_equal(query_count(st, "spiffe://example.org/w", 3), 2);
    store_audit_event ev = make_event("svid.issue", "spiffe://example.org/w", NULL);
    for (int i = 0; i < 4; i++) assert_mid_ok(store_audit_append(st, &ev, NULL)); /* 6..9 */
    ev = make_event("svid.issue", "spiffe://example.org/other", NULL);
    assert_mid_ok(store_audit_append(st, &ev, NULL)); /* 10 */
    assert_int_equal(query_count(st, "spiffe://example.org/w", 0), 9);
    assert_int_equal(query_count(st, "spiffe://example.org/w", 7), 2);
    assert_int_equal(query_count(st, "spiffe://example.org/other", 0), 1);
    store_audit_verdict v;
    assert_mid_ok(store_audit_verify(st, &v));
    assert_int_equal(v.ok, 1);
    assert_int_equal(v.events, 10);
    store_close(st);

    db = raw_open(t.db);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM sqlite_schema"
                                 " WHERE name = 'audit_events_spiffe_id'"),
                     0);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM audit_spiffe WHERE chunk = 5"), 5);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM audit_spiffe WHERE chunk = 8"), 3);
    assert_int_equal(raw_int(db, "SELECT value FROM counters WHERE name = 'audit_spiffe_upto'"),
                     8);
    /* The schema refuses a row that points past its chunk. */
    char *err = NULL;
    int rc = sqlite3_exec(db, "INSERT INTO audit_spiffe VALUES (8, 'spiffe://e/w', 9)", NULL, NULL,
                          &err);
    sqlite3_free(err);
    assert_int_equal(rc & 0xff, SQLITE_CONSTRAINT);
    sqlite3_close(db);
    tmpdb_cleanup(&t);
}

/* An empty log upgrades to an empty index that starts at 0. */
static void test_upgrade_empty_v5(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    sqlite3 *db = build_version(t.db, 5);
    raw_exec(db, "COMMIT");
    sqlite3_close(db);
    store_options o = {.audit_index_chunk = 2};
    store *st = open_store(&t, &o);
    store_audit_event ev = make_event("svid.issue", "spiffe://example.org/w", NULL);
    for (int i = 0; i < 3; i++) assert_mid_ok(store_audit_append(st, &ev, NULL));
    assert_int_equal(query_count(st, "spiffe://example.org/w", 0), 3);
    store_close(st);
    db = raw_open(t.db);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM audit_spiffe WHERE chunk = 2"), 2);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM audit_spiffe"), 2);
    sqlite3_close(db);
    tmpdb_cleanup(&t);
}

int run_migration_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_upgrade_from_v1),
        cmocka_unit_test(test_upgrade_from_v4),
        cmocka_unit_test(test_upgrade_from_v5),
        cmocka_unit_test(test_upgrade_empty_v5),
        cmocka_unit_test(test_v2_constraints),
    };
    return cmocka_run_group_tests_name("migration", tests, NULL, NULL);
}
