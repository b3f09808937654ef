/* storage: registration entries (with the entries revision), join tokens and
 * agents: round trips, refusals, race-free token consumption. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/store_int.h"
#include "storage_test.h"

#define AGENT1 "spiffe://example.org/meshid/agent/join_token/aa"
#define AGENT2 "spiffe://example.org/meshid/agent/join_token/bb"
#define WEB "spiffe://example.org/ns/default/sa/web"
#define HASH1 "1111111111111111111111111111111111111111111111111111111111111111"
#define HASH2 "2222222222222222222222222222222222222222222222222222222222222222"

static const store_selector SEL_UID = {"unix", "uid:1000"};
static const store_selector SEL_PATH = {"unix", "path:/usr/bin/envoy"};
static const store_selector SEL_GID = {"unix", "gid:50"};

static int64_t raw_count(const char *path, const char *sql)
{
    sqlite3 *db = raw_open(path);
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
        fail_msg("prepare '%s': %s", sql, sqlite3_errmsg(db));
    int64_t v = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

static void assert_msg_has(const char *needle)
{
    if (strstr(mid_errmsg(), needle) == NULL)
        fail_msg("error message \"%s\" does not mention \"%s\"", mid_errmsg(), needle);
}

static int64_t revision(store *st)
{
    int64_t rev = -1;
    assert_mid_ok(store_entries_revision(st, &rev));
    return rev;
}

/* ---- entries ------------------------------------------------------------------ */

static void test_entry_roundtrip(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    assert_int_equal(revision(st), 0);

    store_selector sel[2] = {SEL_UID, SEL_PATH}; /* unsorted: uid > path */
    const char *dns[2] = {"web.example.org", "web"};
    store_entry e = {.spiffe_id = WEB, .parent_id = AGENT1, .selectors = sel, .n_selectors = 2,
                     .dns_names = dns, .n_dns_names = 2, .ttl_seconds = 600};
    store_audit_event ev = make_event("entry.create", WEB, NULL);
    store_entry_row out;
    assert_mid_ok(store_entry_create(st, &e, &ev, &out));
    assert_int_equal(strlen(out.e.id), 32);
    assert_int_equal(strspn(out.e.id, "0123456789abcdef"), 32);
    assert_int_equal(out.e.revision, 1);
    assert_true(out.e.created_at > 0);
    assert_int_equal(out.e.n_selectors, 2);
    assert_string_equal(out.e.selectors[0].value, "path:/usr/bin/envoy"); /* sorted */
    assert_string_equal(out.e.selectors[1].value, "uid:1000");
    assert_int_equal(revision(st), 1);
    assert_int_equal(count_events(st), 1);

    store_entry_row got;
    assert_mid_ok(store_entry_get(st, out.e.id, &got));
    assert_string_equal(got.e.id, out.e.id);
    assert_string_equal(got.e.spiffe_id, WEB);
    assert_string_equal(got.e.parent_id, AGENT1);
    assert_int_equal(got.e.n_selectors, 2);
    assert_string_equal(got.e.selectors[0].type, "unix");
    assert_string_equal(got.e.selectors[0].value, "path:/usr/bin/envoy");
    assert_string_equal(got.e.selectors[1].value, "uid:1000");
    assert_int_equal(got.e.n_dns_names, 2);
    assert_string_equal(got.e.dns_names[0], "web.example.org"); /* order kept */
    assert_string_equal(got.e.dns_names[1], "web");
    assert_int_equal(got.e.ttl_seconds, 600);
    assert_int_equal(got.e.created_at, out.e.created_at);
    assert_int_equal(got.e.revision, 1);
    store_entry_row_clear(&got);

    /* A caller-assigned id (a UUID), no DNS names, under another parent. */
    store_selector one[1] = {SEL_GID};
    store_entry e2 = {.id = "0b6e7c1e-3c1f-4c59-9d3b-7c2b9a3e1f00", .spiffe_id = WEB,
                      .parent_id = AGENT2, .selectors = one, .n_selectors = 1};
    assert_mid_ok(store_entry_create(st, &e2, NULL, NULL));
    assert_mid_ok(store_entry_get(st, e2.id, &got));
    assert_int_equal(got.e.n_dns_names, 0);
    assert_null(got.e.dns_names);
    assert_int_equal(got.e.revision, 2);
    store_entry_row_clear(&got);

    store_entry_row *rows = NULL;
    size_t n = 0;
    int64_t rev = -1;
    assert_mid_ok(store_entry_list(st, NULL, &rows, &n, &rev));
    assert_int_equal(n, 2);
    assert_int_equal(rev, 2);
    assert_string_equal(rows[0].e.id, out.e.id); /* creation order */
    assert_string_equal(rows[1].e.id, e2.id);
    assert_int_equal(rows[0].e.n_dns_names, 2);
    store_entry_list_free(rows, n);
    assert_mid_ok(store_entry_list(st, AGENT2, &rows, &n, NULL));
    assert_int_equal(n, 1);
    assert_string_equal(rows[0].e.parent_id, AGENT2);
    assert_string_equal(rows[0].e.selectors[0].value, "gid:50");
    store_entry_list_free(rows, n);
    assert_mid_ok(store_entry_list(st, "spiffe://example.org/none", &rows, &n, &rev));
    assert_int_equal(n, 0);
    assert_null(rows);
    assert_int_equal(rev, 2);

    assert_mid_err(store_entry_get(st, "ffff", &got), MID_E_NOT_FOUND);
    assert_mid_err(store_entry_get(st, "NOT-HEX", &got), MID_E_INVALID);
    store_entry_row_clear(&out);
    store_close(st);
    tmpdb_cleanup(&t);
}

static void test_entry_duplicate_refused(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    store_selector a[2] = {SEL_UID, SEL_PATH}, b[2] = {SEL_PATH, SEL_UID};
    store_entry e = {.spiffe_id = WEB, .parent_id = AGENT1, .selectors = a, .n_selectors = 2};
    store_audit_event ev = make_event("entry.create", WEB, NULL);
    store_entry_row first;
    assert_mid_ok(store_entry_create(st, &e, &ev, &first));

    /* The same set in another order, other DNS names and TTL: still the same entry. */
    const char *dns[1] = {"x.example.org"};
    store_entry dup = {.spiffe_id = WEB, .parent_id = AGENT1, .selectors = b, .n_selectors = 2,
                       .dns_names = dns, .n_dns_names = 1, .ttl_seconds = 60};
    store_entry_row out = {.owned_ = NULL};
    assert_mid_err(store_entry_create(st, &dup, &ev, &out), MID_E_EXISTS);
    assert_msg_has("with the same selectors already exists");
    assert_null(out.owned_);
    assert_int_equal(revision(st), 1); /* the bump was rolled back with it */
    assert_int_equal(count_events(st), 1);

    /* Same id. */
    store_selector c[1] = {SEL_GID};
    store_entry same_id = {.id = first.e.id, .spiffe_id = WEB, .parent_id = AGENT1,
                           .selectors = c, .n_selectors = 1};
    assert_mid_err(store_entry_create(st, &same_id, &ev, NULL), MID_E_EXISTS);
    assert_msg_has("entry id");

    /* A subset, another parent, another SPIFFE ID: all distinct entries. */
    store_entry sub = {.spiffe_id = WEB, .parent_id = AGENT1, .selectors = a, .n_selectors = 1};
    assert_mid_ok(store_entry_create(st, &sub, &ev, NULL));
    store_entry other_parent = e;
    other_parent.parent_id = AGENT2;
    assert_mid_ok(store_entry_create(st, &other_parent, &ev, NULL));
    store_entry other_id = e;
    other_id.spiffe_id = "spiffe://example.org/ns/default/sa/db";
    assert_mid_ok(store_entry_create(st, &other_id, &ev, NULL));
    assert_int_equal(revision(st), 4);

    /* After deleting it, the same entry can be created again. */
    assert_mid_ok(store_entry_delete(st, first.e.id, &ev, NULL));
    assert_mid_ok(store_entry_create(st, &dup, &ev, NULL));
    assert_int_equal(revision(st), 6);
    store_entry_row_clear(&first);
    store_close(st);
    tmpdb_cleanup(&t);
}

static void test_entry_invalid(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    store_selector ok[1] = {SEL_UID};
    store_entry base = {.spiffe_id = WEB, .parent_id = AGENT1, .selectors = ok, .n_selectors = 1};
    store_entry e;

    e = base;
    e.n_selectors = 0;
    assert_mid_err(store_entry_create(st, &e, NULL, NULL), MID_E_INVALID);
    e = base;
    e.n_selectors = STORE_ENTRY_SELECTORS_MAX + 1;
    assert_mid_err(store_entry_create(st, &e, NULL, NULL), MID_E_TOO_LARGE);
    store_selector colon[1] = {{"unix:uid", "1000"}};
    e = base;
    e.selectors = colon;
    assert_mid_err(store_entry_create(st, &e, NULL, NULL), MID_E_INVALID);
    store_selector empty[1] = {{"unix", ""}};
    e = base;
    e.selectors = empty;
    assert_mid_err(store_entry_create(st, &e, NULL, NULL), MID_E_INVALID);
    store_selector ctl[1] = {{"unix", "user:a\nb"}};
    e = base;
    e.selectors = ctl;
    assert_mid_err(store_entry_create(st, &e, NULL, NULL), MID_E_INVALID);
    store_selector twice[2] = {SEL_UID, SEL_UID};
    e = base;
    e.selectors = twice;
    e.n_selectors = 2;
    assert_mid_err(store_entry_create(st, &e, NULL, NULL), MID_E_INVALID);
    assert_msg_has("listed twice");
    e = base;
    e.spiffe_id = "https://example.org/x";
    assert_mid_err(store_entry_create(st, &e, NULL, NULL), MID_E_INVALID);
    e = base;
    e.parent_id = NULL;
    assert_mid_err(store_entry_create(st, &e, NULL, NULL), MID_E_INVALID);
    e = base;
    e.ttl_seconds = -5;
    assert_mid_err(store_entry_create(st, &e, NULL, NULL), MID_E_INVALID);
    e = base;
    e.id = "XYZ";
    assert_mid_err(store_entry_create(st, &e, NULL, NULL), MID_E_INVALID);
    e = base;
    e.n_dns_names = 1; /* dns_names NULL */
    assert_mid_err(store_entry_create(st, &e, NULL, NULL), MID_E_INVALID);
    store_audit_event bad_ev = make_event("", NULL, NULL);
    assert_mid_err(store_entry_create(st, &base, &bad_ev, NULL), MID_E_INVALID);
    assert_int_equal(revision(st), 0);
    assert_int_equal(raw_count(t.db, "SELECT count(*) FROM entries"), 0);
    store_close(st);
    tmpdb_cleanup(&t);
}

static void test_entry_delete_and_revision(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    store_selector sel[2] = {SEL_UID, SEL_GID};
    const char *dns[1] = {"web"};
    char ids[3][STORE_ENTRY_ID_MAX + 1];
    int64_t last = 0;
    for (int i = 0; i < 3; i++) {
        char sid[64];
        snprintf(sid, sizeof sid, "%s%d", WEB, i);
        store_entry e = {.spiffe_id = sid, .parent_id = AGENT1, .selectors = sel,
                         .n_selectors = 2, .dns_names = dns, .n_dns_names = 1};
        store_entry_row out;
        assert_mid_ok(store_entry_create(st, &e, NULL, &out));
        assert_true(out.e.revision > last); /* monotonic */
        last = out.e.revision;
        snprintf(ids[i], sizeof ids[i], "%s", out.e.id);
        store_entry_row_clear(&out);
    }
    assert_int_equal(revision(st), 3);

    store_audit_event ev = make_event("entry.delete", NULL, NULL);
    store_entry_row gone;
    assert_mid_ok(store_entry_delete(st, ids[1], &ev, &gone));
    assert_string_equal(gone.e.id, ids[1]);
    assert_string_equal(gone.e.spiffe_id, WEB "1");
    assert_int_equal(gone.e.revision, 2);
    assert_int_equal(gone.e.n_selectors, 2);
    assert_int_equal(gone.e.n_dns_names, 1);
    store_entry_row_clear(&gone);
    assert_int_equal(revision(st), 4); /* a delete moves it too */
    assert_int_equal(count_events(st), 1);
    store_entry_row row;
    assert_mid_err(store_entry_get(st, ids[1], &row), MID_E_NOT_FOUND);
    /* Selectors and DNS names went with it (ON DELETE CASCADE). */
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM entry_selectors WHERE entry_id = '%s'", ids[1]);
    assert_int_equal(raw_count(t.db, sql), 0);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM entry_dns_names WHERE entry_id = '%s'", ids[1]);
    assert_int_equal(raw_count(t.db, sql), 0);
    assert_int_equal(raw_count(t.db, "SELECT count(*) FROM entry_selectors"), 4);

    /* Deleting it again: not found, nothing written, revision unchanged. */
    gone.owned_ = (char *)1; /* must be reset by the call */
    assert_mid_err(store_entry_delete(st, ids[1], &ev, &gone), MID_E_NOT_FOUND);
    assert_null(gone.owned_);
    assert_int_equal(revision(st), 4);
    assert_int_equal(count_events(st), 1);

    /* A commit that fails leaves the revision and the entry; the row the
     * writer had filled is released. */
    store_fault_set(st, STORE_FAULT_COMMIT, 1, MID_E_IO);
    assert_mid_err(store_entry_delete(st, ids[0], &ev, &gone), MID_E_IO);
    assert_null(gone.owned_);
    assert_int_equal(revision(st), 4);
    assert_mid_ok(store_entry_get(st, ids[0], &row));
    store_entry_row_clear(&row);

    /* The revision never goes back, even after every entry is gone; a new
     * entry gets a revision above every earlier one. */
    assert_mid_ok(store_entry_delete(st, ids[0], NULL, NULL));
    assert_mid_ok(store_entry_delete(st, ids[2], NULL, NULL));
    assert_int_equal(revision(st), 6);
    store_entry e = {.spiffe_id = WEB, .parent_id = AGENT1, .selectors = sel, .n_selectors = 1};
    store_entry_row out;
    assert_mid_ok(store_entry_create(st, &e, NULL, &out));
    assert_int_equal(out.e.revision, 7);
    store_entry_row_clear(&out);
    store_close(st);

    /* And it survives a reopen. */
    st = open_store(&t, NULL);
    assert_int_equal(revision(st), 7);
    store_close(st);
    tmpdb_cleanup(&t);
}

/* ---- join tokens ----------------------------------------------------------------- */

static void test_join_token_consume_once(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    store_join_token tok = {.token_hash = HASH1, .agent_spiffe_id = AGENT1,
                            .expires_at = 2000, .created_at = 1000};
    store_audit_event ev = make_event("join_token.create", AGENT1, NULL);
    assert_mid_ok(store_join_token_create(st, &tok, &ev));
    assert_mid_err(store_join_token_create(st, &tok, &ev), MID_E_EXISTS);

    store_audit_event use = make_event("agent.attest", AGENT1, NULL);
    store_join_token_row row;
    assert_mid_ok(store_join_token_consume(st, HASH1, 1500, &use, &row));
    assert_string_equal(row.t.token_hash, HASH1);
    assert_string_equal(row.t.agent_spiffe_id, AGENT1);
    assert_int_equal(row.t.used_at, 1500);
    assert_int_equal(row.t.expires_at, 2000);
    assert_int_equal(row.t.created_at, 1000);
    store_join_token_row_clear(&row);
    assert_int_equal(count_events(st), 2);

    /* Second use: denied, nothing written, used_at unchanged. */
    assert_mid_err(store_join_token_consume(st, HASH1, 1600, &use, &row), MID_E_DENIED);
    assert_msg_has("join token was already used");
    assert_null(row.owned_);
    assert_int_equal(count_events(st), 2);
    assert_int_equal(raw_count(t.db, "SELECT used_at FROM join_tokens"), 1500);

    /* Unknown. */
    assert_mid_err(store_join_token_consume(st, HASH2, 1500, &use, NULL), MID_E_DENIED);
    assert_msg_has("join token is unknown");
    /* Malformed hash: a caller error, not a denial. */
    assert_mid_err(store_join_token_consume(st, "abc", 1500, &use, NULL), MID_E_INVALID);

    /* Expired: expires_at is the first second it is no longer valid. */
    store_join_token tok2 = {.token_hash = HASH2, .expires_at = 2000, .created_at = 1000};
    assert_mid_ok(store_join_token_create(st, &tok2, NULL));
    assert_mid_err(store_join_token_consume(st, HASH2, 2000, &use, NULL), MID_E_DENIED);
    assert_msg_has("join token expired");
    assert_mid_err(store_join_token_consume(st, HASH2, 99999, &use, NULL), MID_E_DENIED);
    assert_msg_has("join token expired");
    /* Still consumable before then, and with no pre-assigned identity. */
    assert_mid_ok(store_join_token_consume(st, HASH2, 1999, NULL, &row));
    assert_null(row.t.agent_spiffe_id);
    store_join_token_row_clear(&row);
    /* Used and expired: "already used" wins. */
    assert_mid_err(store_join_token_consume(st, HASH2, 5000, NULL, NULL), MID_E_DENIED);
    assert_msg_has("already used");

    /* Bad tokens at creation. */
    store_join_token bad = {.token_hash = "ABCD", .expires_at = 10, .created_at = 1};
    assert_mid_err(store_join_token_create(st, &bad, NULL), MID_E_INVALID);
    bad.token_hash = HASH1;
    bad.expires_at = 0;
    bad.created_at = 5;
    assert_mid_err(store_join_token_create(st, &bad, NULL), MID_E_INVALID);
    store_join_token bad_id = {.token_hash = "3333333333333333333333333333333333333333333333333333333333333333",
                               .agent_spiffe_id = "example.org/agent", .expires_at = 10};
    assert_mid_err(store_join_token_create(st, &bad_id, NULL), MID_E_INVALID);
    store_close(st);
    tmpdb_cleanup(&t);
}

#define RACERS 8

typedef struct {
    store *st;
    const char *hash;
    pthread_barrier_t *go;
    mid_err result;
    char msg[256];
} racer;

static void *race_consume(void *arg)
{
    racer *r = arg;
    store_audit_event ev = make_event("agent.attest", AGENT1, NULL);
    store_join_token_row row;
    pthread_barrier_wait(r->go);
    mid_result res = store_join_token_consume(r->st, r->hash, 1500, &ev, &row);
    r->result = res.err;
    snprintf(r->msg, sizeof r->msg, "%s", mid_is_ok(res) ? "" : mid_errmsg());
    if (mid_is_ok(res)) store_join_token_row_clear(&row);
    return NULL;
}

static void test_join_token_race(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    /* Two store handles on one file stand in for two server processes: each
     * has its own writer thread and connection, so only the database's
     * write lock and the conditional UPDATE keep consumption single. */
    store *a = open_store(&t, NULL), *b = open_store(&t, NULL);
    char hash[65];
    for (int round = 0; round < 10; round++) {
        snprintf(hash, sizeof hash, "%064x", round + 1);
        store_join_token tok = {.token_hash = hash, .expires_at = 2000, .created_at = 1000};
        assert_mid_ok(store_join_token_create(a, &tok, NULL));
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, RACERS);
        racer r[RACERS];
        pthread_t th[RACERS];
        for (int i = 0; i < RACERS; i++) {
            r[i] = (racer){.st = i % 2 ? b : a, .hash = hash, .go = &go};
            assert_int_equal(pthread_create(&th[i], NULL, race_consume, &r[i]), 0);
        }
        int wins = 0;
        for (int i = 0; i < RACERS; i++) {
            pthread_join(th[i], NULL);
            if (r[i].result == MID_E_OK) {
                wins++;
            } else {
                assert_int_equal(r[i].result, MID_E_DENIED);
                if (strstr(r[i].msg, "already used") == NULL) fail_msg("loser: %s", r[i].msg);
            }
        }
        pthread_barrier_destroy(&go);
        assert_int_equal(wins, 1);
    }
    /* One audit event per winner, and the chain is intact across both writers. */
    assert_int_equal(count_events(a), 10);
    store_audit_verdict v;
    assert_mid_ok(store_audit_verify(a, &v));
    assert_int_equal(v.ok, 1);
    store_close(a);
    store_close(b);
    tmpdb_cleanup(&t);
}

/* ---- agents ---------------------------------------------------------------------------- */

static store_agent make_agent(const char *id, const char *serial)
{
    store_agent a = {.spiffe_id = id, .serial = serial, .not_after = 5000, .hostname = "node-1",
                     .attested_at = 1000, .last_seen = 1000};
    return a;
}

static void test_agent_lifecycle(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    store_audit_event ev = make_event("agent.attest", AGENT1, "0a");
    store_agent a1 = make_agent(AGENT1, "0a");
    store_agent a2 = make_agent(AGENT2, "0b");
    a2.hostname = NULL;
    a2.attested_at = 0; /* now */
    a2.last_seen = 0;   /* = attested_at */
    assert_mid_ok(store_agent_upsert(st, &a2, &ev));
    assert_mid_ok(store_agent_upsert(st, &a1, &ev));

    store_agent_row row;
    assert_mid_ok(store_agent_get(st, AGENT1, &row));
    assert_string_equal(row.a.spiffe_id, AGENT1);
    assert_string_equal(row.a.serial, "0a");
    assert_string_equal(row.a.hostname, "node-1");
    assert_int_equal(row.a.not_after, 5000);
    assert_int_equal(row.a.attested_at, 1000);
    assert_int_equal(row.a.last_seen, 1000);
    assert_int_equal(row.a.banned, 0);
    store_agent_row_clear(&row);
    assert_mid_ok(store_agent_get(st, AGENT2, &row));
    assert_string_equal(row.a.hostname, "");
    assert_true(row.a.attested_at > 1000);
    assert_int_equal(row.a.last_seen, row.a.attested_at);
    store_agent_row_clear(&row);

    store_agent_row *rows = NULL;
    size_t n = 0;
    assert_mid_ok(store_agent_list(st, &rows, &n));
    assert_int_equal(n, 2);
    assert_string_equal(rows[0].a.spiffe_id, AGENT1); /* by spiffe_id */
    assert_string_equal(rows[1].a.spiffe_id, AGENT2);
    store_agent_list_free(rows, n);

    /* Touch: no audit event; last_seen only moves forward. */
    int64_t events = count_events(st);
    assert_mid_ok(store_agent_touch(st, AGENT1, 1200));
    assert_mid_ok(store_agent_touch(st, AGENT1, 1100));
    assert_mid_ok(store_agent_get(st, AGENT1, &row));
    assert_int_equal(row.a.last_seen, 1200);
    store_agent_row_clear(&row);
    assert_int_equal(count_events(st), events);
    assert_mid_err(store_agent_touch(st, "spiffe://example.org/nobody", 1), MID_E_NOT_FOUND);

    /* Renew. */
    assert_mid_ok(store_agent_renew(st, AGENT1, "0c", 9000, 1300, &ev));
    assert_mid_ok(store_agent_get(st, AGENT1, &row));
    assert_string_equal(row.a.serial, "0c");
    assert_int_equal(row.a.not_after, 9000);
    assert_int_equal(row.a.last_seen, 1300);
    assert_int_equal(row.a.attested_at, 1000);
    store_agent_row_clear(&row);

    /* Ban: renewals are refused, nothing written; unknown agents are not found. */
    store_audit_event ban = make_event("agent.evict", AGENT1, NULL);
    assert_mid_ok(store_agent_set_banned(st, AGENT1, 1, &ban));
    assert_mid_ok(store_agent_get(st, AGENT1, &row));
    assert_int_equal(row.a.banned, 1);
    store_agent_row_clear(&row);
    events = count_events(st);
    assert_mid_err(store_agent_renew(st, AGENT1, "0d", 9999, 1400, &ev), MID_E_DENIED);
    assert_msg_has("banned");
    assert_int_equal(count_events(st), events);
    assert_mid_err(store_agent_renew(st, "spiffe://example.org/nobody", "0d", 1, 1, &ev),
                   MID_E_NOT_FOUND);
    assert_mid_err(store_agent_set_banned(st, "spiffe://example.org/nobody", 1, &ban),
                   MID_E_NOT_FOUND);
    assert_mid_err(store_agent_set_banned(st, AGENT1, 2, &ban), MID_E_INVALID);
    assert_mid_ok(store_agent_get(st, AGENT1, &row));
    assert_string_equal(row.a.serial, "0c");
    store_agent_row_clear(&row);

    /* A fresh attestation (upsert) replaces the row and lifts the ban. */
    store_agent again = make_agent(AGENT1, "0e");
    again.attested_at = 2000;
    again.last_seen = 2000;
    assert_mid_ok(store_agent_upsert(st, &again, &ev));
    assert_mid_ok(store_agent_get(st, AGENT1, &row));
    assert_int_equal(row.a.banned, 0);
    assert_string_equal(row.a.serial, "0e");
    assert_int_equal(row.a.attested_at, 2000);
    store_agent_row_clear(&row);

    /* Refusals. */
    store_agent bad = make_agent("node-1", "0a");
    assert_mid_err(store_agent_upsert(st, &bad, &ev), MID_E_INVALID);
    bad = make_agent(AGENT1, "XYZ");
    assert_mid_err(store_agent_upsert(st, &bad, &ev), MID_E_INVALID);
    bad = make_agent(AGENT1, "0a");
    bad.banned = 7;
    assert_mid_err(store_agent_upsert(st, &bad, &ev), MID_E_INVALID);
    assert_mid_err(store_agent_get(st, "spiffe://example.org/nobody", &row), MID_E_NOT_FOUND);
    store_close(st);
    tmpdb_cleanup(&t);
}

static void test_registry_audit_chain(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    store_selector sel[1] = {SEL_UID};
    store_entry e = {.spiffe_id = WEB, .parent_id = AGENT1, .selectors = sel, .n_selectors = 1};
    store_audit_event ev = make_event("entry.create", WEB, NULL);
    store_entry_row out;
    assert_mid_ok(store_entry_create(st, &e, &ev, &out));
    store_join_token tok = {.token_hash = HASH1, .expires_at = 2000, .created_at = 1000};
    assert_mid_ok(store_join_token_create(st, &tok, &ev));
    assert_mid_ok(store_join_token_consume(st, HASH1, 1500, &ev, NULL));
    store_agent a = make_agent(AGENT1, "0a");
    assert_mid_ok(store_agent_upsert(st, &a, &ev));
    assert_mid_ok(store_agent_set_banned(st, AGENT1, 1, &ev));
    assert_mid_ok(store_entry_delete(st, out.e.id, &ev, NULL));
    store_entry_row_clear(&out);
    assert_int_equal(count_events(st), 6);
    store_audit_verdict v;
    assert_mid_ok(store_audit_verify(st, &v));
    assert_int_equal(v.ok, 1);
    assert_int_equal(v.events, 6);
    store_close(st);
    tmpdb_cleanup(&t);
}

int run_registry_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_entry_roundtrip),
        cmocka_unit_test(test_entry_duplicate_refused),
        cmocka_unit_test(test_entry_invalid),
        cmocka_unit_test(test_entry_delete_and_revision),
        cmocka_unit_test(test_join_token_consume_once),
        cmocka_unit_test(test_join_token_race),
        cmocka_unit_test(test_agent_lifecycle),
        cmocka_unit_test(test_registry_audit_chain),
    };
    return cmocka_run_group_tests_name("registry", tests, NULL, NULL);
}
