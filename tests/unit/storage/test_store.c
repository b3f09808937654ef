/* storage/store.c + storage/sqlite: lifecycle, record round trips, queries,
 * refusals and open-time errors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "lib/timeutil.h"
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

static void raw_text(sqlite3 *db, const char *sql, char *out, size_t cap)
{
    sqlite3_stmt *s = NULL;
    out[0] = '\0';
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
        fail_msg("prepare '%s': %s", sql, sqlite3_errmsg(db));
    if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0))
        snprintf(out, cap, "%s", (const char *)sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
}

static void test_open_migrate_reopen(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    assert_int_equal(store_schema_version(st), STORE_TEST_SCHEMA_LATEST);
    int64_t seq = -1;
    uint8_t h[STORE_HASH_LEN], zero[STORE_HASH_LEN] = {0};
    assert_mid_ok(store_audit_head(st, &seq, h));
    assert_int_equal(seq, 0);
    assert_memory_equal(h, zero, STORE_HASH_LEN);
    store_audit_event ev = make_event("ca.init", NULL, NULL);
    assert_mid_ok(store_audit_append(st, &ev, NULL));
    store_close(st);

    struct stat sb;
    assert_int_equal(stat(t.db, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);

    sqlite3 *db = raw_open(t.db);
    char mode[32];
    raw_text(db, "PRAGMA journal_mode", mode, sizeof mode);
    assert_string_equal(mode, "wal");
    assert_int_equal(raw_int(db, "PRAGMA user_version"), STORE_TEST_SCHEMA_LATEST);
    assert_int_equal(raw_int(db, "PRAGMA application_id"), 0x6D736964);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM schema_migrations"), STORE_TEST_SCHEMA_LATEST);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM audit_events"), 1);
    sqlite3_close(db);

    st = open_store(&t, NULL);
    assert_int_equal(store_schema_version(st), STORE_TEST_SCHEMA_LATEST);
    assert_mid_ok(store_audit_head(st, &seq, h));
    assert_int_equal(seq, 1);
    store_close(st);
    tmpdb_cleanup(&t);
}

static void test_open_bad_arguments(void **state)
{
    (void)state;
    store *st = NULL;
    assert_mid_err(store_open(NULL, NULL, &st), MID_E_INVALID);
    assert_mid_err(store_open("", NULL, &st), MID_E_INVALID);
    assert_mid_err(store_open("sqlite:", NULL, &st), MID_E_INVALID);
    assert_mid_err(store_open("postgres://db/meshid", NULL, &st), MID_E_INVALID);
    store_options o = {.busy_timeout_ms = -1};
    assert_mid_err(store_open("/nonexistent/x.db", &o, &st), MID_E_INVALID);
    assert_mid_err(store_open("/nonexistent-dir-xyz/x.db", NULL, &st), MID_E_IO);
    assert_null(st);
    store_close(NULL);
}

static void test_sqlite_prefix(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    char loc[320];
    snprintf(loc, sizeof loc, "sqlite:%s", t.db);
    store *st = NULL;
    assert_mid_ok(store_open(loc, NULL, &st));
    store_close(st);
    tmpdb_cleanup(&t);
}

static void test_audit_roundtrip(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);

    store_audit_event ev = make_event("svid.issue", "spiffe://example.org/w", "0f");
    ev.ts_ms = 1700000000123;
    store_audit_event out;
    assert_mid_ok(store_audit_append(st, &ev, &out));
    assert_int_equal(out.seq, 1);
    assert_int_equal(out.ts_ms, 1700000000123);
    uint8_t zero[STORE_HASH_LEN] = {0}, h[STORE_HASH_LEN];
    assert_memory_equal(out.prev_hash, zero, STORE_HASH_LEN);
    assert_mid_ok(audit_hash(&out, zero, h));
    assert_memory_equal(out.hash, h, STORE_HASH_LEN);

    /* NULL reason/details/spiffe_id, ts 0 = now. */
    store_audit_event ev2 = {.actor = "system", .event = "x.y", .outcome = "error"};
    store_audit_event out2;
    int64_t before = time_now_ms();
    assert_mid_ok(store_audit_append(st, &ev2, &out2));
    assert_int_equal(out2.seq, 2);
    assert_true(out2.ts_ms >= before && out2.ts_ms <= time_now_ms());
    assert_memory_equal(out2.prev_hash, out.hash, STORE_HASH_LEN);
    assert_string_equal(out2.reason, "");
    assert_string_equal(out2.details, "{}");

    store_audit_row row;
    assert_mid_ok(store_audit_get(st, 1, &row));
    assert_int_equal(row.ev.seq, 1);
    assert_int_equal(row.ev.ts_ms, 1700000000123);
    assert_string_equal(row.ev.actor, "test:unit");
    assert_string_equal(row.ev.event, "svid.issue");
    assert_string_equal(row.ev.spiffe_id, "spiffe://example.org/w");
    assert_string_equal(row.ev.serial, "0f");
    assert_string_equal(row.ev.outcome, "ok");
    assert_string_equal(row.ev.reason, "because");
    assert_string_equal(row.ev.details, "{\"n\":1}");
    assert_memory_equal(row.ev.hash, out.hash, STORE_HASH_LEN);
    store_audit_row_clear(&row);

    assert_mid_ok(store_audit_get(st, 2, &row));
    assert_null(row.ev.spiffe_id);
    assert_null(row.ev.serial);
    assert_string_equal(row.ev.reason, "");
    assert_string_equal(row.ev.details, "{}");
    assert_memory_equal(row.ev.hash, out2.hash, STORE_HASH_LEN);
    store_audit_row_clear(&row);

    assert_mid_err(store_audit_get(st, 3, &row), MID_E_NOT_FOUND);
    assert_mid_err(store_audit_get(st, 0, &row), MID_E_NOT_FOUND);

    int64_t seq;
    assert_mid_ok(store_audit_head(st, &seq, h));
    assert_int_equal(seq, 2);
    assert_memory_equal(h, out2.hash, STORE_HASH_LEN);

    store_audit_verdict v;
    assert_mid_ok(store_audit_verify(st, &v));
    assert_true(v.ok);
    assert_int_equal(v.events, 2);
    assert_int_equal(v.head_seq, 2);
    assert_memory_equal(v.head_hash, out2.hash, STORE_HASH_LEN);
    store_close(st);
    tmpdb_cleanup(&t);
}

static void test_empty_log_verifies(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    store_audit_verdict v;
    assert_mid_ok(store_audit_verify(st, &v));
    assert_true(v.ok);
    assert_int_equal(v.events, 0);
    assert_int_equal(v.head_seq, 0);
    store_close(st);
    tmpdb_cleanup(&t);
}

static void test_authority_roundtrip_and_state(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);

    /* Intermediate before its parent: foreign key refused. */
    store_authority inter = make_intermediate();
    assert_mid_err(store_authority_put(st, &inter, NULL), MID_E_INVALID);
    assert_int_equal(count_events(st), 0);

    put_authorities(st);
    store_authority_row *rows = NULL;
    size_t n = 0;
    assert_mid_ok(store_authority_list(st, &rows, &n));
    assert_int_equal(n, 2);
    assert_string_equal(rows[0].a.id, ROOT_ID);
    assert_string_equal(rows[0].a.kind, "root");
    assert_null(rows[0].a.parent_id);
    assert_string_equal(rows[0].a.key_ref, "keys/root.key");
    assert_string_equal(rows[0].a.trust_domain, "example.org");
    assert_int_equal(rows[0].a.not_after, 1800000000);
    assert_string_equal(rows[1].a.id, INTER_ID);
    assert_string_equal(rows[1].a.parent_id, ROOT_ID);
    assert_string_equal(rows[1].a.chain_pem, "");
    assert_int_equal(rows[1].a.upstream, 0);
    store_authority_list_free(rows, n);

    /* Replace by id: upstream adopted, NULL chain/key_ref stored as "". */
    inter.upstream = 1;
    inter.parent_id = NULL;
    inter.chain_pem = NULL;
    inter.key_ref = NULL;
    assert_mid_ok(store_authority_put(st, &inter, NULL));
    assert_mid_ok(store_authority_list(st, &rows, &n));
    assert_int_equal(n, 2);
    assert_int_equal(rows[1].a.upstream, 1);
    assert_null(rows[1].a.parent_id);
    assert_string_equal(rows[1].a.chain_pem, "");
    assert_string_equal(rows[1].a.key_ref, "");
    store_authority_list_free(rows, n);

    int64_t events = count_events(st);
    store_audit_event ev = make_event("ca.rotate", NULL, NULL);
    assert_mid_ok(store_authority_set_state(st, INTER_ID, "active", "old", &ev));
    assert_int_equal(count_events(st), events + 1);
    /* Stale from_state: refused, nothing written (not even the event). */
    assert_mid_err(store_authority_set_state(st, INTER_ID, "active", "tainted", &ev), MID_E_STATE);
    assert_non_null(strstr(mid_errmsg(), "old"));
    assert_mid_err(store_authority_set_state(st, "ff", "active", "old", &ev), MID_E_NOT_FOUND);
    assert_mid_err(store_authority_set_state(st, INTER_ID, "old", "bogus", &ev), MID_E_INVALID);
    assert_int_equal(count_events(st), events + 1);
    assert_mid_ok(store_authority_list(st, &rows, &n));
    assert_string_equal(rows[1].a.state, "old");
    store_authority_list_free(rows, n);

    /* Invalid records. */
    store_authority bad = make_root();
    bad.kind = "leaf";
    assert_mid_err(store_authority_put(st, &bad, NULL), MID_E_INVALID);
    bad = make_root();
    bad.id = "NotHex";
    assert_mid_err(store_authority_put(st, &bad, NULL), MID_E_INVALID);
    bad = make_root();
    bad.state = "asleep";
    assert_mid_err(store_authority_put(st, &bad, NULL), MID_E_INVALID);
    bad = make_root();
    bad.cert_pem = NULL;
    assert_mid_err(store_authority_put(st, &bad, NULL), MID_E_INVALID);
    store_close(st);
    tmpdb_cleanup(&t);
}

/* store_authority_put_all writes every authority and event, or none. */
static void test_authority_put_all_atomic(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    store_authority two[2] = {make_root(), make_intermediate()};
    store_audit_event evs[2] = {make_event("ca.init", NULL, NULL), make_event("ca.init", NULL, NULL)};

    /* The intermediate names a parent that does not exist: the whole write fails. */
    two[1].parent_id = "ffff";
    assert_mid_err(store_authority_put_all(st, two, evs, 2), MID_E_INVALID);
    store_authority_row *rows = NULL;
    size_t n = 0;
    int64_t seq = -1;
    uint8_t hash[STORE_HASH_LEN];
    assert_mid_ok(store_authority_list(st, &rows, &n));
    assert_int_equal(n, 0);
    store_authority_list_free(rows, n);
    assert_mid_ok(store_audit_head(st, &seq, hash));
    assert_int_equal(seq, 0);

    /* Fixed, both land with two chained events. */
    two[1].parent_id = ROOT_ID;
    assert_mid_ok(store_authority_put_all(st, two, evs, 2));
    assert_mid_ok(store_authority_list(st, &rows, &n));
    assert_int_equal(n, 2);
    store_authority_list_free(rows, n);
    assert_mid_ok(store_audit_head(st, &seq, hash));
    assert_int_equal(seq, 2);
    store_audit_verdict v;
    assert_mid_ok(store_audit_verify(st, &v));
    assert_true(v.ok);
    assert_mid_err(store_authority_put_all(st, two, evs, 0), MID_E_INVALID);
    store_close(st);
    tmpdb_cleanup(&t);
}

static void test_cert_roundtrip_and_count(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    put_authorities(st);

    store_cert c = make_cert("0123abcd", "spiffe://example.org/ns/a/sa/b");
    store_audit_event ev = make_event("svid.issue", c.spiffe_id, c.serial);
    assert_mid_ok(store_cert_insert(st, &c, &ev));
    store_cert_row row;
    assert_mid_ok(store_cert_get(st, "0123abcd", &row));
    assert_string_equal(row.c.serial, "0123abcd");
    assert_string_equal(row.c.spiffe_id, "spiffe://example.org/ns/a/sa/b");
    assert_string_equal(row.c.key_fp, c.key_fp);
    assert_int_equal(row.c.not_before, c.not_before);
    assert_int_equal(row.c.not_after, c.not_after);
    assert_string_equal(row.c.authority_id, INTER_ID);
    assert_string_equal(row.c.status, "valid");
    assert_int_equal(row.c.issued_at, c.issued_at);
    assert_int_equal(row.c.cert_der_len, c.cert_der_len);
    assert_memory_equal(row.c.cert_der, c.cert_der, c.cert_der_len);
    store_cert_row_clear(&row);
    assert_mid_err(store_cert_get(st, "ffff", &row), MID_E_NOT_FOUND);

    store_cert c2 = make_cert("02", "spiffe://example.org/b");
    c2.not_after = 1700000100;
    store_cert c3 = make_cert("03", "spiffe://example.org/c");
    c3.status = "revoked";
    assert_mid_ok(store_cert_insert(st, &c2, NULL));
    assert_mid_ok(store_cert_insert(st, &c3, NULL));
    int64_t n = -1;
    assert_mid_ok(store_cert_count_live(st, INTER_ID, 1700000050, &n));
    assert_int_equal(n, 2); /* 0123abcd and 02; 03 is revoked */
    assert_mid_ok(store_cert_count_live(st, INTER_ID, 1700000100, &n));
    assert_int_equal(n, 1); /* 02 expired (not_after > now is false) */
    assert_mid_ok(store_cert_count_live(st, ROOT_ID, 0, &n));
    assert_int_equal(n, 0);

    /* Duplicate serial: MID_E_EXISTS with a message naming it, on this thread. */
    mid_errclear();
    assert_mid_err(store_cert_insert(st, &c, &ev), MID_E_EXISTS);
    assert_int_equal(mid_errcode(), MID_E_EXISTS);
    assert_non_null(strstr(mid_errmsg(), "0123abcd"));

    /* Unknown authority, bad fields. */
    store_cert bad = make_cert("04", "spiffe://example.org/d");
    bad.authority_id = "cc";
    assert_mid_err(store_cert_insert(st, &bad, NULL), MID_E_INVALID);
    bad = make_cert("04", "spiffe://example.org/d");
    bad.status = "expired";
    assert_mid_err(store_cert_insert(st, &bad, NULL), MID_E_INVALID);
    bad = make_cert("0X", "spiffe://example.org/d");
    assert_mid_err(store_cert_insert(st, &bad, NULL), MID_E_INVALID);
    bad = make_cert("04", "spiffe://example.org/d");
    bad.key_fp = "abcd";
    assert_mid_err(store_cert_insert(st, &bad, NULL), MID_E_INVALID);
    bad = make_cert("04", NULL);
    assert_mid_err(store_cert_insert(st, &bad, NULL), MID_E_INVALID);
    bad = make_cert("04", "spiffe://example.org/d");
    bad.not_after = bad.not_before - 1;
    assert_mid_err(store_cert_insert(st, &bad, NULL), MID_E_INVALID);
    unsigned char *der = calloc(1, STORE_CERT_DER_MAX + 1);
    assert_non_null(der);
    bad = make_cert("04", "spiffe://example.org/d");
    bad.cert_der = der;
    bad.cert_der_len = STORE_CERT_DER_MAX + 1;
    assert_mid_err(store_cert_insert(st, &bad, NULL), MID_E_TOO_LARGE);
    bad.cert_der_len = STORE_CERT_DER_MAX; /* the limit itself is fine */
    assert_mid_ok(store_cert_insert(st, &bad, NULL));
    free(der);
    bad = make_cert("06", "spiffe://example.org/d");
    bad.cert_der = NULL;
    assert_mid_err(store_cert_insert(st, &bad, NULL), MID_E_INVALID);
    bad = make_cert("06", "spiffe://example.org/d");
    bad.cert_der_len = 0;
    assert_mid_err(store_cert_insert(st, &bad, NULL), MID_E_INVALID);
    /* The event is validated before anything is queued. */
    store_audit_event bad_ev = make_event("svid.issue", NULL, NULL);
    bad_ev.details = "[]";
    bad = make_cert("05", "spiffe://example.org/e");
    assert_mid_err(store_cert_insert(st, &bad, &bad_ev), MID_E_INVALID);
    assert_mid_err(store_cert_get(st, "05", &row), MID_E_NOT_FOUND);

    store_audit_verdict v;
    assert_mid_ok(store_audit_verify(st, &v));
    assert_true(v.ok);
    assert_int_equal(v.events, 3); /* two ca.init + one svid.issue */
    store_close(st);
    tmpdb_cleanup(&t);
}

static void test_invalid_events_refused(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    store_audit_event e = make_event("x", NULL, NULL);
    e.outcome = "maybe";
    assert_mid_err(store_audit_append(st, &e, NULL), MID_E_INVALID);
    e = make_event("x", NULL, NULL);
    e.actor = "";
    assert_mid_err(store_audit_append(st, &e, NULL), MID_E_INVALID);
    e = make_event("", NULL, NULL);
    assert_mid_err(store_audit_append(st, &e, NULL), MID_E_INVALID);
    e = make_event("x", NULL, NULL);
    e.details = "{\"unterminated\": ";
    assert_mid_err(store_audit_append(st, &e, NULL), MID_E_INVALID);
    e.details = "[\"array\"]";
    assert_mid_err(store_audit_append(st, &e, NULL), MID_E_INVALID);
    char *big = malloc(STORE_AUDIT_DETAILS_MAX + 16);
    assert_non_null(big);
    memset(big, ' ', STORE_AUDIT_DETAILS_MAX + 10);
    big[0] = '{';
    big[STORE_AUDIT_DETAILS_MAX + 10] = '}';
    big[STORE_AUDIT_DETAILS_MAX + 11] = '\0';
    e.details = big;
    assert_mid_err(store_audit_append(st, &e, NULL), MID_E_TOO_LARGE);
    free(big);
    assert_mid_err(store_audit_append(st, NULL, NULL), MID_E_INVALID);
    assert_int_equal(count_events(st), 0);
    store_close(st);
    tmpdb_cleanup(&t);
}

/* ---- queries ---- */

typedef struct {
    int64_t seqs[64];
    size_t n;
    size_t stop_after; /* 0: never */
} collected;

static int collect(void *ctx, const store_audit_event *row)
{
    collected *c = ctx;
    if (c->n < 64) c->seqs[c->n++] = row->seq;
    return c->stop_after != 0 && c->n >= c->stop_after;
}

static size_t run_query(store *st, const store_audit_filter *f, collected *c)
{
    memset(c, 0, sizeof *c);
    assert_mid_ok(store_audit_query(st, f, collect, c));
    return c->n;
}

typedef struct {
    store *st;
    int rows, errors;
} nested_ctx;

static int nested_read(void *ctx, const store_audit_event *row)
{
    nested_ctx *c = ctx;
    store_audit_row again;
    store_audit_verdict v;
    if (!mid_is_ok(store_audit_get(c->st, row->seq, &again))) {
        c->errors++;
        return 1;
    }
    if (memcmp(again.ev.hash, row->hash, STORE_HASH_LEN) != 0) c->errors++;
    store_audit_row_clear(&again);
    if (!mid_is_ok(store_audit_verify(c->st, &v)) || !v.ok) c->errors++;
    c->rows++;
    return 0;
}

static void test_query_filters(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    /* seq i has ts 1000*i; A on odd seqs, B on even; event issue except every
     * third (refuse, outcome denied). */
    for (int i = 1; i <= 12; i++) {
        store_audit_event e = make_event(i % 3 == 0 ? "svid.refuse" : "svid.issue",
                                         i % 2 ? "spiffe://td/A" : "spiffe://td/B", NULL);
        e.ts_ms = 1000 * i;
        e.outcome = i % 3 == 0 ? "denied" : "ok";
        assert_mid_ok(store_audit_append(st, &e, NULL));
    }
    collected c;
    assert_int_equal(run_query(st, NULL, &c), 12);
    for (size_t i = 0; i < 12; i++) assert_int_equal(c.seqs[i], (int64_t)i + 1);

    store_audit_filter f = {.since_ms = 3000, .until_ms = 6000};
    assert_int_equal(run_query(st, &f, &c), 3); /* 3, 4, 5: until is exclusive */
    assert_int_equal(c.seqs[0], 3);
    assert_int_equal(c.seqs[2], 5);

    f = (store_audit_filter){.spiffe_id = "spiffe://td/B"};
    assert_int_equal(run_query(st, &f, &c), 6);
    assert_int_equal(c.seqs[0], 2);

    f = (store_audit_filter){.event = "svid.refuse"};
    assert_int_equal(run_query(st, &f, &c), 4);
    f = (store_audit_filter){.outcome = "denied", .spiffe_id = "spiffe://td/A"};
    assert_int_equal(run_query(st, &f, &c), 2); /* 3, 9 */
    assert_int_equal(c.seqs[0], 3);
    assert_int_equal(c.seqs[1], 9);

    /* limit: the newest N, in ascending order. */
    f = (store_audit_filter){.limit = 3};
    assert_int_equal(run_query(st, &f, &c), 3);
    assert_int_equal(c.seqs[0], 10);
    assert_int_equal(c.seqs[1], 11);
    assert_int_equal(c.seqs[2], 12);
    f = (store_audit_filter){.limit = 2, .event = "svid.issue"};
    assert_int_equal(run_query(st, &f, &c), 2);
    assert_int_equal(c.seqs[0], 10);
    assert_int_equal(c.seqs[1], 11);

    f = (store_audit_filter){.after_seq = 10};
    assert_int_equal(run_query(st, &f, &c), 2);
    assert_int_equal(c.seqs[0], 11);
    f = (store_audit_filter){.after_seq = 4, .limit = 100, .until_ms = 7000};
    assert_int_equal(run_query(st, &f, &c), 2); /* 5, 6 */

    f = (store_audit_filter){.event = "nope"};
    assert_int_equal(run_query(st, &f, &c), 0);

    /* Early stop is not an error. */
    memset(&c, 0, sizeof c);
    c.stop_after = 4;
    assert_mid_ok(store_audit_query(st, NULL, collect, &c));
    assert_int_equal(c.n, 4);

    /* A callback may read the store again (its own read connection). */
    nested_ctx nc = {.st = st};
    f = (store_audit_filter){.after_seq = 8};
    assert_mid_ok(store_audit_query(st, &f, nested_read, &nc));
    assert_int_equal(nc.rows, 4);
    assert_int_equal(nc.errors, 0);

    f = (store_audit_filter){.limit = -1};
    assert_mid_err(store_audit_query(st, &f, collect, &c), MID_E_INVALID);
    assert_mid_err(store_audit_query(st, NULL, NULL, NULL), MID_E_INVALID);
    store_close(st);
    tmpdb_cleanup(&t);
}

/* ---- the SPIFFE-ID index (audit_spiffe, written in chunks) ---- */

/* What a query by SPIFFE ID must return, worked out from the subjects
 * appended: subj[seq] (NULL: no subject), events[seq] the type. */
typedef struct {
    const char *subj[64];
    const char *event[64];
    int64_t n;
} spiffe_log;

static void log_append(store *st, spiffe_log *lg, const char *event, const char *subj)
{
    store_audit_event e = make_event(event, subj, NULL);
    store_audit_event out;
    assert_mid_ok(store_audit_append(st, &e, &out));
    assert_int_equal(out.seq, lg->n + 1);
    lg->n++;
    lg->subj[lg->n] = subj;
    lg->event[lg->n] = event;
}

/* Compares every query by SPIFFE ID (with after_seq, event and limit) with
 * the expectation. */
static void check_spiffe_queries(store *st, const spiffe_log *lg)
{
    static const char *const ids[] = {"spiffe://td/A", "spiffe://td/B", "spiffe://td/C",
                                      "spiffe://td/none"};
    static const int64_t afters[] = {0, 1, 4, 5, 9, 13, 40};
    static const int64_t limits[] = {0, 1, 3};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        for (size_t a = 0; a < sizeof afters / sizeof afters[0]; a++)
            for (size_t l = 0; l < sizeof limits / sizeof limits[0]; l++)
                for (int ev = 0; ev < 2; ev++) {
                    store_audit_filter f = {.spiffe_id = ids[i], .after_seq = afters[a],
                                            .limit = limits[l],
                                            .event = ev ? "svid.refuse" : NULL};
                    int64_t want[64];
                    size_t nw = 0;
                    for (int64_t s = afters[a] + 1; s <= lg->n; s++)
                        if (lg->subj[s] && strcmp(lg->subj[s], ids[i]) == 0 &&
                            (!ev || strcmp(lg->event[s], "svid.refuse") == 0))
                            want[nw++] = s;
                    size_t from = limits[l] > 0 && nw > (size_t)limits[l] ? nw - (size_t)limits[l]
                                                                         : 0;
                    collected c;
                    size_t got = run_query(st, &f, &c);
                    if (got != nw - from)
                        fail_msg("%s after %lld limit %lld event %d: %zu rows, want %zu", ids[i],
                                 (long long)afters[a], (long long)limits[l], ev, got, nw - from);
                    for (size_t k = 0; k < got; k++) assert_int_equal(c.seqs[k], want[from + k]);
                }
}

static void test_query_spiffe_chunks(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store_options o = {.audit_index_chunk = 4};
    store *st = open_store(&t, &o);
    spiffe_log lg = {.n = 0};
    static const char *const cycle[] = {"spiffe://td/A", "spiffe://td/B", NULL,
                                        "spiffe://td/A", "spiffe://td/C"};
    for (int i = 0; i < 14; i++) {
        log_append(st, &lg, i % 3 ? "svid.issue" : "svid.refuse", cycle[i % 5]);
        check_spiffe_queries(st, &lg); /* indexed part + tail, at every length */
    }
    /* A commit that fails takes the chunk its event completed along: seq 16
     * goes to B after a failed try for A, and the index agrees. */
    log_append(st, &lg, "svid.issue", "spiffe://td/C"); /* 15 */
    store_fault_set(st, STORE_FAULT_COMMIT, 1, MID_E_IO);
    store_audit_event e = make_event("svid.issue", "spiffe://td/A", NULL);
    assert_mid_err(store_audit_append(st, &e, NULL), MID_E_IO);
    log_append(st, &lg, "svid.refuse", "spiffe://td/B"); /* 16, completes a chunk */
    check_spiffe_queries(st, &lg);
    store_close(st);

    sqlite3 *db = raw_open(t.db);
    assert_int_equal(raw_int(db, "SELECT value FROM counters WHERE name = 'audit_spiffe_upto'"),
                     16);
    assert_int_equal(raw_int(db, "SELECT count(DISTINCT chunk) FROM audit_spiffe"), 4);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM audit_spiffe WHERE chunk = 16 AND seq = 16"
                                 " AND spiffe_id = 'spiffe://td/B'"),
                     1);
    /* Exactly the events with a subject, each once, in its own chunk. */
    assert_int_equal(raw_int(db, "SELECT count(*) FROM audit_events WHERE spiffe_id IS NOT NULL"),
                     raw_int(db, "SELECT count(*) FROM audit_spiffe x JOIN audit_events e"
                                 " ON e.seq = x.seq AND e.spiffe_id = x.spiffe_id"
                                 " WHERE x.chunk - 4 < x.seq"));
    assert_int_equal(raw_int(db, "SELECT count(*) FROM sqlite_schema"
                                 " WHERE name = 'audit_events_spiffe_id'"),
                     0);
    /* An event edited around meshid (audit verify reports it) is reported
     * under the subject it has now, not the one its index row names. */
    raw_drop_audit_guards(db);
    raw_exec(db, "UPDATE audit_events SET spiffe_id = 'spiffe://td/Z' WHERE seq = 2");
    lg.subj[2] = "spiffe://td/Z";
    /* and with the index's high-water mark gone, queries scan and the next
     * chunk re-indexes from the start and puts the mark back */
    raw_exec(db, "DELETE FROM counters WHERE name = 'audit_spiffe_upto'");
    sqlite3_close(db);

    /* Another chunk size later (chunks then end off the old boundaries). */
    o.audit_index_chunk = 7;
    st = open_store(&t, &o);
    for (int i = 0; i < 13; i++) {
        log_append(st, &lg, "svid.issue", cycle[(i + 2) % 5]);
        check_spiffe_queries(st, &lg);
    }
    store_close(st);
    db = raw_open(t.db);
    assert_int_equal(raw_int(db, "SELECT value FROM counters WHERE name = 'audit_spiffe_upto'"),
                     28);
    sqlite3_close(db);

    o.audit_index_chunk = STORE_AUDIT_INDEX_CHUNK_MAX + 1;
    store *bad = NULL;
    assert_mid_err(store_open(t.db, &o, &bad), MID_E_INVALID);
    assert_null(bad);
    tmpdb_cleanup(&t);
}

/* ---- open-time errors ---- */

static void test_not_a_database(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    FILE *f = fopen(t.db, "wb");
    assert_non_null(f);
    for (int i = 0; i < 512; i++) fputs("this is not a database. ", f);
    fclose(f);
    store *st = NULL;
    assert_mid_err(store_open(t.db, NULL, &st), MID_E_CORRUPT);
    assert_null(st);
    assert_non_null(strstr(mid_errmsg(), t.db));
    assert_null(strchr(mid_errmsg(), '\n'));
    tmpdb_cleanup(&t);
}

static void test_foreign_sqlite_database(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    sqlite3 *db = raw_open(t.db);
    raw_exec(db, "CREATE TABLE recipes (name TEXT); INSERT INTO recipes VALUES ('soup');");
    sqlite3_close(db);
    store *st = NULL;
    assert_mid_err(store_open(t.db, NULL, &st), MID_E_CORRUPT);
    assert_non_null(strstr(mid_errmsg(), "not a meshid database"));
    /* Untouched: still not WAL, no meshid tables. */
    db = raw_open(t.db);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM sqlite_schema"), 1);
    sqlite3_close(db);
    tmpdb_cleanup(&t);
}

static void test_damaged_database(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    put_authorities(st);
    char serial[32], sid[64];
    for (int i = 0; i < 300; i++) {
        snprintf(serial, sizeof serial, "%04x", i);
        snprintf(sid, sizeof sid, "spiffe://example.org/w%d", i);
        store_cert c = make_cert(serial, sid);
        assert_mid_ok(store_cert_insert(st, &c, NULL));
    }
    store_close(st); /* checkpoints: everything is in the main file */

    /* Scribble over the middle of the file: b-tree pages, not the header. */
    FILE *f = fopen(t.db, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long size = ftell(f);
    assert_true(size > 8 * 4096);
    for (long off = 4096; off < size; off += 4096) {
        assert_int_equal(fseek(f, off, SEEK_SET), 0);
        for (int i = 0; i < 16; i++) fputc(0xA5, f);
    }
    fclose(f);
    assert_mid_err(store_open(t.db, NULL, &st), MID_E_CORRUPT);
    assert_non_null(strstr(mid_errmsg(), t.db));
    assert_null(strchr(mid_errmsg(), '\n'));
    tmpdb_cleanup(&t);
}

static void test_future_schema(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    store_close(st);
    sqlite3 *db = raw_open(t.db);
    raw_exec(db, "PRAGMA user_version = 99");
    sqlite3_close(db);
    assert_mid_err(store_open(t.db, NULL, &st), MID_E_STATE);
    assert_non_null(strstr(mid_errmsg(), "newer"));
    assert_non_null(strstr(mid_errmsg(), "99"));
    tmpdb_cleanup(&t);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_locked_database_busy(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    store_close(st);

    sqlite3 *db = raw_open(t.db);
    raw_exec(db, "BEGIN EXCLUSIVE");
    store_options o = {.busy_timeout_ms = 200};
    double t0 = now_s();
    assert_mid_err(store_open(t.db, &o, &st), MID_E_BUSY);
    double dt = now_s() - t0;
    assert_true(dt >= 0.15 && dt < 5.0);
    assert_non_null(strstr(mid_errmsg(), t.db));
    raw_exec(db, "ROLLBACK");

    /* A write on an open store while another connection holds the lock. */
    st = open_store(&t, &o);
    raw_exec(db, "BEGIN EXCLUSIVE");
    store_audit_event e = make_event("x", NULL, NULL);
    assert_mid_err(store_audit_append(st, &e, NULL), MID_E_BUSY);
    raw_exec(db, "ROLLBACK");
    assert_mid_ok(store_audit_append(st, &e, NULL)); /* recovers */
    store_audit_verdict v;
    assert_mid_ok(store_audit_verify(st, &v));
    assert_true(v.ok);
    assert_int_equal(v.events, 1);
    store_close(st);
    sqlite3_close(db);
    tmpdb_cleanup(&t);
}

int run_store_tests(void)
{
    static const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_migrate_reopen),
        cmocka_unit_test(test_open_bad_arguments),
        cmocka_unit_test(test_sqlite_prefix),
        cmocka_unit_test(test_audit_roundtrip),
        cmocka_unit_test(test_empty_log_verifies),
        cmocka_unit_test(test_authority_roundtrip_and_state),
        cmocka_unit_test(test_authority_put_all_atomic),
        cmocka_unit_test(test_cert_roundtrip_and_count),
        cmocka_unit_test(test_invalid_events_refused),
        cmocka_unit_test(test_query_filters),
        cmocka_unit_test(test_query_spiffe_chunks),
        cmocka_unit_test(test_not_a_database),
        cmocka_unit_test(test_foreign_sqlite_database),
        cmocka_unit_test(test_damaged_database),
        cmocka_unit_test(test_future_schema),
        cmocka_unit_test(test_locked_database_busy),
    };
    return cmocka_run_group_tests_name("storage/store", tests, NULL, NULL);
}
