/* Fixtures shared by the storage tests. */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "storage_test.h"

void tmpdb_init(tmpdb *t)
{
    const char *base = getenv("TMPDIR");
    if (base == NULL || *base == '\0') base = "/tmp";
    snprintf(t->dir, sizeof t->dir, "%s/meshid-store-XXXXXX", base);
    if (mkdtemp(t->dir) == NULL) fail_msg("mkdtemp %s failed", t->dir);
    snprintf(t->db, sizeof t->db, "%s/meshid.db", t->dir);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void tmpdb_cleanup(tmpdb *t)
{
    if (t->dir[0] != '\0') nftw(t->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

store *open_store(const tmpdb *t, const store_options *o)
{
    store *st = NULL;
    assert_mid_ok(store_open(t->db, o, &st));
    assert_non_null(st);
    return st;
}

store_audit_event make_event(const char *event, const char *spiffe_id, const char *serial)
{
    store_audit_event ev = {
        .actor = "test:unit",
        .event = event,
        .spiffe_id = spiffe_id,
        .serial = serial,
        .outcome = "ok",
        .reason = "because",
        .details = "{\"n\":1}",
    };
    return ev;
}

store_authority make_root(void)
{
    store_authority a = {
        .id = ROOT_ID,
        .kind = "root",
        .state = "active",
        .trust_domain = "example.org",
        .parent_id = NULL,
        .cert_pem = "-----BEGIN CERTIFICATE-----\nroot\n-----END CERTIFICATE-----\n",
        .chain_pem = "",
        .key_ref = "keys/root.key",
        .not_before = 1700000000,
        .not_after = 1800000000,
        .upstream = 0,
        .created_at = 1700000000,
    };
    return a;
}

store_authority make_intermediate(void)
{
    store_authority a = make_root();
    a.id = INTER_ID;
    a.kind = "intermediate";
    a.parent_id = ROOT_ID;
    a.cert_pem = "-----BEGIN CERTIFICATE-----\ninter\n-----END CERTIFICATE-----\n";
    a.key_ref = "keys/inter.key";
    a.created_at = 1700000001;
    return a;
}

/* Stands in for a certificate's DER (the store does not parse it); a NUL
 * inside checks that it is kept as bytes, not as a string. */
static const unsigned char LEAF_DER[] = {0x30, 0x06, 0x02, 0x01, 0x00, 0x04, 0x01, 0xff};

store_cert make_cert(const char *serial, const char *spiffe_id)
{
    store_cert c = {
        .serial = serial,
        .spiffe_id = spiffe_id,
        .key_fp = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        .not_before = 1700000000,
        .not_after = 1700003600,
        .authority_id = INTER_ID,
        .status = "valid",
        .issued_at = 1700000000,
        .cert_der = LEAF_DER,
        .cert_der_len = sizeof LEAF_DER,
    };
    return c;
}

void put_authorities(store *st)
{
    store_authority root = make_root(), inter = make_intermediate();
    store_audit_event e1 = make_event("ca.init", NULL, NULL);
    store_audit_event e2 = make_event("ca.init", NULL, NULL);
    assert_mid_ok(store_authority_put(st, &root, &e1));
    assert_mid_ok(store_authority_put(st, &inter, &e2));
}

sqlite3 *raw_open(const char *path)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK)
        fail_msg("raw open %s: %s", path, sqlite3_errmsg(db));
    sqlite3_busy_timeout(db, 5000);
    return db;
}

void raw_exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", err ? err : "?");
        sqlite3_free(err);
        fail_msg("raw exec '%s': %s", sql, msg);
    }
}

void raw_drop_audit_guards(sqlite3 *db)
{
    raw_exec(db, "DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete;");
}

static int count_cb(void *ctx, const store_audit_event *row)
{
    (void)row;
    (*(int64_t *)ctx)++;
    return 0;
}

int64_t count_events(store *st)
{
    int64_t n = 0;
    assert_mid_ok(store_audit_query(st, NULL, count_cb, &n));
    return n;
}
