/* storage: mesh resources (storage/store_mesh.h) — round trip, the mesh
 * revision, all-or-nothing applies, conditional writes, validation, faults,
 * audit events, group commit next to other writes, and the migration. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "storage/audit.h"
#include "storage/store_int.h"
#include "storage/store_mesh.h"
#include "storage_test.h"

#define SVC_A "{\"hosts\":[\"a.example.com\"],\"name\":\"a\",\"namespace\":\"default\"}"
#define SVC_A2 "{\"hosts\":[\"a2.example.com\"],\"name\":\"a\",\"namespace\":\"default\"}"
#define SVC_B "{\"hosts\":[\"b.example.com\"],\"name\":\"b\",\"namespace\":\"other\"}"
#define POL_P "{\"action\":\"ALLOW\",\"name\":\"p\",\"namespace\":\"default\"}"

static store_mesh_change put(const char *kind, const char *ns, const char *name,
                             const char *spec)
{
    store_mesh_change c = {STORE_MESH_PUT, kind, ns, name, spec, 0};
    return c;
}

static store_mesh_change del(const char *kind, const char *ns, const char *name)
{
    store_mesh_change c = {STORE_MESH_DELETE, kind, ns, name, NULL, 0};
    return c;
}

static int64_t mesh_rev(store *st)
{
    int64_t rev = -1;
    assert_mid_ok(store_mesh_revision(st, &rev));
    return rev;
}

static size_t mesh_count(store *st)
{
    store_mesh_row *rows = NULL;
    size_t n = 0;
    assert_mid_ok(store_mesh_list(st, NULL, &rows, &n, NULL));
    store_mesh_list_free(rows, n);
    return n;
}

/* Events for n changes: "mesh.apply" with reason "change i". */
typedef struct {
    char reason[8][32];
    store_audit_event ev[8];
} mesh_events;

static void make_events(mesh_events *e, size_t n)
{
    for (size_t i = 0; i < n && i < 8; i++) {
        snprintf(e->reason[i], sizeof e->reason[i], "change %zu", i);
        e->ev[i] = make_event("mesh.apply", NULL, NULL);
        e->ev[i].reason = e->reason[i];
    }
}

/* Nothing of a refused apply is visible: same rows, revision and log. */
typedef struct {
    size_t rows;
    int64_t rev, events;
} mesh_state;

static mesh_state snap(store *st)
{
    mesh_state s = {mesh_count(st), mesh_rev(st), count_events(st)};
    return s;
}

static void assert_unchanged(store *st, mesh_state before)
{
    mesh_state now = snap(st);
    assert_int_equal(now.rows, before.rows);
    assert_int_equal(now.rev, before.rev);
    assert_int_equal(now.events, before.events);
}

static void test_round_trip(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    assert_int_equal(mesh_rev(st), 0);

    store_mesh_change ch[3] = {put("service", "default", "a", SVC_A),
                               put("policy", "default", "p", POL_P),
                               put("service", "other", "b", SVC_B)};
    mesh_events ev;
    make_events(&ev, 3);
    int64_t rev = 0;
    assert_mid_ok(store_mesh_apply(st, ch, 3, ev.ev, &rev));
    assert_int_equal(rev, 1);
    assert_int_equal(mesh_rev(st), 1);

    /* All, sorted by (kind, namespace, name), with the snapshot's revision. */
    store_mesh_row *rows = NULL;
    size_t n = 0;
    int64_t lrev = -1;
    assert_mid_ok(store_mesh_list(st, NULL, &rows, &n, &lrev));
    assert_int_equal(n, 3);
    assert_int_equal(lrev, 1);
    assert_string_equal(rows[0].kind, "policy");
    assert_string_equal(rows[0].name, "p");
    assert_string_equal(rows[0].spec_json, POL_P);
    assert_string_equal(rows[1].kind, "service");
    assert_string_equal(rows[1].namespace_, "default");
    assert_string_equal(rows[1].name, "a");
    assert_string_equal(rows[2].namespace_, "other");
    assert_string_equal(rows[2].spec_json, SVC_B);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(rows[i].revision, 1);
        assert_true(rows[i].created_at > 0);
        assert_int_equal(rows[i].updated_at, rows[i].created_at);
    }
    store_mesh_list_free(rows, n);

    /* One kind. */
    assert_mid_ok(store_mesh_list(st, "service", &rows, &n, NULL));
    assert_int_equal(n, 2);
    assert_string_equal(rows[0].name, "a");
    assert_string_equal(rows[1].name, "b");
    store_mesh_list_free(rows, n);
    assert_mid_ok(store_mesh_list(st, "policy", &rows, &n, NULL));
    assert_int_equal(n, 1);
    store_mesh_list_free(rows, n);

    /* get, and a replace keeps created_at and moves revision/updated_at. */
    sqlite3 *db = raw_open(t.db);
    raw_exec(db, "UPDATE mesh_resources SET created_at = 5, updated_at = 5");
    sqlite3_close(db);
    store_mesh_change up = put("service", "default", "a", SVC_A2);
    assert_mid_ok(store_mesh_apply(st, &up, 1, NULL, &rev));
    assert_int_equal(rev, 2);
    store_mesh_row row;
    assert_mid_ok(store_mesh_get(st, "service", "default", "a", &row));
    assert_string_equal(row.spec_json, SVC_A2);
    assert_int_equal(row.revision, 2);
    assert_int_equal(row.created_at, 5);
    assert_true(row.updated_at > 5);
    store_mesh_row_clear(&row);
    assert_null(row.spec_json);
    assert_mid_ok(store_mesh_get(st, "service", "other", "b", &row));
    assert_int_equal(row.revision, 1); /* untouched rows keep theirs */
    store_mesh_row_clear(&row);

    /* A put identical to the stored JSON is still a write. */
    assert_mid_ok(store_mesh_apply(st, &up, 1, NULL, &rev));
    assert_int_equal(rev, 3);

    /* Delete. */
    store_mesh_change d = del("policy", "default", "p");
    assert_mid_ok(store_mesh_apply(st, &d, 1, NULL, NULL));
    assert_int_equal(mesh_rev(st), 4);
    assert_mid_err(store_mesh_get(st, "policy", "default", "p", &row), MID_E_NOT_FOUND);
    assert_non_null(strstr(mid_errmsg(), "policy default/p"));
    assert_null(row.spec_json);
    assert_int_equal(mesh_count(st), 2);

    /* Read argument checks. */
    assert_mid_err(store_mesh_get(st, "gateway", "default", "a", &row), MID_E_INVALID);
    assert_mid_err(store_mesh_get(st, "service", "", "a", &row), MID_E_INVALID);
    assert_mid_err(store_mesh_get(st, "service", "default", NULL, &row), MID_E_INVALID);
    assert_mid_err(store_mesh_list(st, "gateway", &rows, &n, NULL), MID_E_INVALID);
    assert_mid_err(store_mesh_revision(st, NULL), MID_E_INVALID);
    assert_mid_err(store_mesh_revision(NULL, &rev), MID_E_INVALID);

    /* The entries revision is a separate counter. */
    int64_t erev = -1;
    assert_mid_ok(store_entries_revision(st, &erev));
    assert_int_equal(erev, 0);

    /* Durable across a reopen. */
    store_close(st);
    st = open_store(&t, NULL);
    assert_int_equal(mesh_rev(st), 4);
    assert_mid_ok(store_mesh_get(st, "service", "default", "a", &row));
    assert_string_equal(row.spec_json, SVC_A2);
    store_mesh_row_clear(&row);
    store_close(st);
    tmpdb_cleanup(&t);
}

static void test_revision_per_apply(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    char names[5][16];
    for (int i = 0; i < 5; i++) {
        snprintf(names[i], sizeof names[i], "s%d", i);
        store_mesh_change c[2] = {put("service", "ns", names[i], "{}"),
                                  put("policy", "ns", names[i], "{\"x\":[1,2]}")};
        int64_t rev = 0;
        store_stats before, after;
        store_stats_get(st, &before);
        assert_mid_ok(store_mesh_apply(st, c, 2, NULL, &rev));
        store_stats_get(st, &after);
        assert_int_equal(rev, i + 1);
        assert_int_equal(mesh_rev(st), i + 1);
        assert_int_equal(after.writes - before.writes, 2); /* one per change */
        assert_int_equal(after.transactions - before.transactions, 1);
    }
    assert_int_equal(mesh_count(st), 10);
    store_close(st);
    tmpdb_cleanup(&t);
}

static void test_all_or_nothing(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    store_mesh_change seed = put("service", "default", "keep", "{}");
    assert_mid_ok(store_mesh_apply(st, &seed, 1, NULL, NULL));
    mesh_state before = snap(st);

    /* The third change fails: the first two are rolled back with it. */
    store_mesh_change ch[3] = {put("service", "default", "a", SVC_A),
                               put("service", "other", "b", SVC_B),
                               del("policy", "default", "missing")};
    mesh_events ev;
    make_events(&ev, 3);
    store_stats s0, s1;
    store_stats_get(st, &s0);
    int64_t rev = 77;
    assert_mid_err(store_mesh_apply(st, ch, 3, ev.ev, &rev), MID_E_NOT_FOUND);
    assert_non_null(strstr(mid_errmsg(), "policy default/missing"));
    assert_int_equal(rev, 77); /* untouched on failure */
    assert_unchanged(st, before);
    store_stats_get(st, &s1);
    assert_int_equal(s1.writes_failed - s0.writes_failed, 3);
    store_mesh_row row;
    assert_mid_err(store_mesh_get(st, "service", "default", "a", &row), MID_E_NOT_FOUND);

    /* A delete of the existing one after a put that then fails: the delete
     * is undone too. */
    store_mesh_change ch2[2] = {del("service", "default", "keep"),
                                del("service", "default", "gone")};
    assert_mid_err(store_mesh_apply(st, ch2, 2, NULL, NULL), MID_E_NOT_FOUND);
    assert_unchanged(st, before);
    assert_mid_ok(store_mesh_get(st, "service", "default", "keep", &row));
    store_mesh_row_clear(&row);

    /* The same apply without the bad change goes through. */
    assert_mid_ok(store_mesh_apply(st, ch, 2, ev.ev, &rev));
    assert_int_equal(rev, before.rev + 1);
    assert_int_equal(count_events(st), before.events + 2);
    store_close(st);
    tmpdb_cleanup(&t);
}

static void test_if_revision(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    store_mesh_change c = put("service", "default", "a", SVC_A);
    c.if_revision = -1; /* create */
    int64_t rev = 0;
    assert_mid_ok(store_mesh_apply(st, &c, 1, NULL, &rev));
    assert_int_equal(rev, 1);
    mesh_state before = snap(st);

    /* -1 on an existing resource. */
    assert_mid_err(store_mesh_apply(st, &c, 1, NULL, NULL), MID_E_STATE);
    assert_non_null(strstr(mid_errmsg(), "changed concurrently"));
    assert_non_null(strstr(mid_errmsg(), "service default/a"));
    assert_unchanged(st, before);

    /* The right revision wins, a stale one is refused. */
    c.spec_json = SVC_A2;
    c.if_revision = 1;
    assert_mid_ok(store_mesh_apply(st, &c, 1, NULL, &rev));
    assert_int_equal(rev, 2);
    before = snap(st);
    assert_mid_err(store_mesh_apply(st, &c, 1, NULL, NULL), MID_E_STATE);
    assert_non_null(strstr(mid_errmsg(), "expected revision 1, it is 2"));
    assert_unchanged(st, before);

    /* A stale revision fails the whole apply, even a valid change before it. */
    store_mesh_change two[2] = {put("service", "default", "new", "{}"), c};
    assert_mid_err(store_mesh_apply(st, two, 2, NULL, NULL), MID_E_STATE);
    assert_unchanged(st, before);

    /* A revision on a resource that does not exist. */
    store_mesh_change m = put("service", "default", "nope", "{}");
    m.if_revision = 1;
    assert_mid_err(store_mesh_apply(st, &m, 1, NULL, NULL), MID_E_STATE);
    assert_non_null(strstr(mid_errmsg(), "deleted"));

    /* Conditional deletes. */
    store_mesh_change d = del("service", "default", "a");
    d.if_revision = 1;
    assert_mid_err(store_mesh_apply(st, &d, 1, NULL, NULL), MID_E_STATE);
    d.if_revision = 2;
    assert_mid_ok(store_mesh_apply(st, &d, 1, NULL, &rev));
    assert_int_equal(rev, 3);
    assert_mid_err(store_mesh_apply(st, &d, 1, NULL, NULL), MID_E_STATE); /* gone since */
    d.if_revision = 0;
    assert_mid_err(store_mesh_apply(st, &d, 1, NULL, NULL), MID_E_NOT_FOUND);
    d.if_revision = -1;
    assert_mid_err(store_mesh_apply(st, &d, 1, NULL, NULL), MID_E_INVALID);
    c.if_revision = -2;
    assert_mid_err(store_mesh_apply(st, &c, 1, NULL, NULL), MID_E_INVALID);
    assert_int_equal(mesh_rev(st), 3);
    store_close(st);
    tmpdb_cleanup(&t);
}

/* Threads creating the same resource with if_revision -1: one wins. */
typedef struct {
    store *st;
    mid_err err;
    pthread_t th;
} creator;

static void *creator_main(void *arg)
{
    creator *w = arg;
    store_mesh_change c = put("policy", "default", "race", POL_P);
    c.if_revision = -1;
    w->err = store_mesh_apply(w->st, &c, 1, NULL, NULL).err;
    return NULL;
}

static void test_create_race(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    creator w[6];
    for (size_t i = 0; i < 6; i++) {
        w[i].st = st;
        assert_int_equal(pthread_create(&w[i].th, NULL, creator_main, &w[i]), 0);
    }
    int ok = 0;
    for (size_t i = 0; i < 6; i++) {
        pthread_join(w[i].th, NULL);
        if (w[i].err == MID_E_OK)
            ok++;
        else
            assert_int_equal(w[i].err, MID_E_STATE);
    }
    assert_int_equal(ok, 1);
    assert_int_equal(mesh_rev(st), 1);
    store_close(st);
    tmpdb_cleanup(&t);
}

static void test_validation(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    store_mesh_change seed = put("service", "default", "keep", "{}");
    assert_mid_ok(store_mesh_apply(st, &seed, 1, NULL, NULL));
    mesh_state before = snap(st);

    char longname[STORE_MESH_NAME_MAX + 2];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    struct {
        store_mesh_change c;
        mid_err want;
        const char *msg;
    } bad[] = {
        {put("gateway", "default", "a", "{}"), MID_E_INVALID, "kind"},
        {put(NULL, "default", "a", "{}"), MID_E_INVALID, "kind"},
        {put("Service", "default", "a", "{}"), MID_E_INVALID, "kind"},
        {put("service", "", "a", "{}"), MID_E_INVALID, "namespace"},
        {put("service", NULL, "a", "{}"), MID_E_INVALID, "namespace"},
        {put("service", "default", "", "{}"), MID_E_INVALID, "name"},
        {put("service", "default", "a\nb", "{}"), MID_E_INVALID, "control byte"},
        {put("service", "default", longname, "{}"), MID_E_TOO_LARGE, "name"},
        {put("service", "default", "a", NULL), MID_E_INVALID, "spec"},
        {put("service", "default", "a", ""), MID_E_INVALID, "not valid JSON"},
        {put("service", "default", "a", "[1,2]"), MID_E_INVALID, "JSON object"},
        {put("service", "default", "a", "\"text\""), MID_E_INVALID, "spec"},
        {put("service", "default", "a", "42"), MID_E_INVALID, "spec"},
        {put("service", "default", "a", "{\"a\":1"), MID_E_INVALID, "not valid JSON"},
        {put("service", "default", "a", "{\"a\":1,\"a\":2}"), MID_E_INVALID, "not valid JSON"},
        {put("service", "default", "a", "{} {}"), MID_E_INVALID, "not valid JSON"},
        {{(store_mesh_op)7, "service", "default", "a", "{}", 0}, MID_E_INVALID, "op"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mid_result r = store_mesh_apply(st, &bad[i].c, 1, NULL, NULL);
        if (r.err != bad[i].want || strstr(mid_errmsg(), bad[i].msg) == NULL)
            fail_msg("case %zu: got %s (%s), want %s mentioning '%s'", i, mid_errname(r.err),
                     mid_errmsg(), mid_errname(bad[i].want), bad[i].msg);
        assert_non_null(strstr(mid_errmsg(), "mesh change 1"));
    }
    /* A bad change in the middle names its position and stops all of them. */
    store_mesh_change mix[3] = {put("service", "default", "x", "{}"),
                                put("service", "default", "y", "{}"),
                                put("service", "default", "z", "[]")};
    assert_mid_err(store_mesh_apply(st, mix, 3, NULL, NULL), MID_E_INVALID);
    assert_non_null(strstr(mid_errmsg(), "mesh change 3"));
    assert_non_null(strstr(mid_errmsg(), "service default/z"));

    /* The same (kind, namespace, name) twice, in any order and op. */
    store_mesh_change dup[3] = {put("service", "default", "a", "{}"),
                                put("policy", "default", "a", "{}"),
                                del("service", "default", "a")};
    assert_mid_err(store_mesh_apply(st, dup, 3, NULL, NULL), MID_E_INVALID);
    assert_non_null(strstr(mid_errmsg(), "service default/a appears more than once"));
    /* Same name in another kind or namespace is not a duplicate. */
    store_mesh_change nodup[3] = {put("service", "default", "a", "{}"),
                                  put("policy", "default", "a", "{}"),
                                  put("service", "other", "a", "{}")};

    /* Call-level arguments. */
    assert_mid_err(store_mesh_apply(st, nodup, 0, NULL, NULL), MID_E_INVALID);
    assert_mid_err(store_mesh_apply(st, NULL, 1, NULL, NULL), MID_E_INVALID);
    assert_mid_err(store_mesh_apply(NULL, nodup, 1, NULL, NULL), MID_E_INVALID);
    assert_mid_err(store_mesh_apply(st, nodup, STORE_MESH_APPLY_MAX + 1, NULL, NULL),
                   MID_E_TOO_LARGE);

    /* A malformed audit event refuses the apply. */
    mesh_events ev;
    make_events(&ev, 3);
    ev.ev[1].outcome = "maybe";
    assert_mid_err(store_mesh_apply(st, nodup, 3, ev.ev, NULL), MID_E_INVALID);
    assert_non_null(strstr(mid_errmsg(), "mesh change 2"));
    assert_unchanged(st, before);

    make_events(&ev, 3);
    assert_mid_ok(store_mesh_apply(st, nodup, 3, ev.ev, NULL));
    assert_int_equal(mesh_count(st), 4);
    store_close(st);
    tmpdb_cleanup(&t);
}

static void test_spec_size(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    /* {"a":"xxx..."}: exactly STORE_MESH_SPEC_MAX bytes, then one more. */
    size_t max = STORE_MESH_SPEC_MAX;
    char *spec = malloc(max + 2);
    assert_non_null(spec);
    memcpy(spec, "{\"a\":\"", 6);
    memset(spec + 6, 'x', max - 8);
    memcpy(spec + max - 2, "\"}", 3);
    assert_int_equal(strlen(spec), max);
    store_mesh_change c = put("service", "default", "big", spec);
    assert_mid_ok(store_mesh_apply(st, &c, 1, NULL, NULL));
    store_mesh_row row;
    assert_mid_ok(store_mesh_get(st, "service", "default", "big", &row));
    assert_int_equal(strlen(row.spec_json), max);
    store_mesh_row_clear(&row);

    mesh_state before = snap(st);
    memcpy(spec + max - 2, "x\"}", 4);
    assert_int_equal(strlen(spec), max + 1);
    assert_mid_err(store_mesh_apply(st, &c, 1, NULL, NULL), MID_E_TOO_LARGE);
    assert_non_null(strstr(mid_errmsg(), "service default/big"));
    assert_unchanged(st, before);
    free(spec);
    store_close(st);
    tmpdb_cleanup(&t);
}

static void test_faults(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    store_mesh_change seed = put("service", "default", "keep", "{}");
    assert_mid_ok(store_mesh_apply(st, &seed, 1, NULL, NULL));
    mesh_state before = snap(st);
    store_mesh_change ch[3] = {put("service", "default", "a", SVC_A),
                               del("service", "default", "keep"),
                               put("policy", "default", "p", POL_P)};
    mesh_events ev;
    make_events(&ev, 3);

    /* APPLY fails at each change in turn (the earlier ones are written by
     * then), and at the commit: nothing remains each time. */
    for (int nth = 1; nth <= 3; nth++) {
        store_fault_set(st, STORE_FAULT_APPLY, nth, MID_E_IO);
        assert_mid_err(store_mesh_apply(st, ch, 3, ev.ev, NULL), MID_E_IO);
        assert_non_null(strstr(mid_errmsg(), "injected fault (apply)"));
        assert_unchanged(st, before);
    }
    store_fault_set(st, STORE_FAULT_COMMIT, 1, MID_E_IO);
    assert_mid_err(store_mesh_apply(st, ch, 3, ev.ev, NULL), MID_E_IO);
    assert_unchanged(st, before);
    store_fault_set(st, STORE_FAULT_BEGIN, 1, MID_E_BUSY);
    assert_mid_err(store_mesh_apply(st, ch, 3, ev.ev, NULL), MID_E_BUSY);
    assert_unchanged(st, before);
    store_mesh_row row;
    assert_mid_ok(store_mesh_get(st, "service", "default", "keep", &row));
    store_mesh_row_clear(&row);

    /* After the faults the same apply works and the chain is whole. */
    int64_t rev = 0;
    assert_mid_ok(store_mesh_apply(st, ch, 3, ev.ev, &rev));
    assert_int_equal(rev, before.rev + 1);
    assert_int_equal(count_events(st), before.events + 3);
    store_audit_verdict v;
    assert_mid_ok(store_audit_verify(st, &v));
    assert_int_equal(v.ok, 1);
    store_close(st);
    tmpdb_cleanup(&t);
}

static void test_audit_chain(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    store_audit_event first = make_event("ca.init", NULL, NULL);
    assert_mid_ok(store_audit_append(st, &first, NULL));

    store_mesh_change ch[3] = {put("service", "default", "a", SVC_A),
                               put("service", "other", "b", SVC_B),
                               put("policy", "default", "p", POL_P)};
    mesh_events ev;
    make_events(&ev, 3);
    assert_mid_ok(store_mesh_apply(st, ch, 3, ev.ev, NULL));
    store_mesh_change d = del("service", "other", "b");
    store_audit_event dev = make_event("mesh.delete", NULL, NULL);
    assert_mid_ok(store_mesh_apply(st, &d, 1, &dev, NULL));

    /* Events 2..4 are the changes in call order, then the delete. */
    assert_int_equal(count_events(st), 5);
    for (int64_t seq = 2; seq <= 4; seq++) {
        store_audit_row row;
        char want[32];
        assert_mid_ok(store_audit_get(st, seq, &row));
        snprintf(want, sizeof want, "change %lld", (long long)(seq - 2));
        assert_string_equal(row.ev.event, "mesh.apply");
        assert_string_equal(row.ev.reason, want);
        store_audit_row_clear(&row);
    }
    store_audit_row row;
    assert_mid_ok(store_audit_get(st, 5, &row));
    assert_string_equal(row.ev.event, "mesh.delete");
    store_audit_row_clear(&row);
    store_audit_verdict v;
    assert_mid_ok(store_audit_verify(st, &v));
    assert_int_equal(v.ok, 1);
    assert_int_equal(v.events, 5);
    assert_int_equal(v.head_seq, 5);
    store_close(st);
    tmpdb_cleanup(&t);
}

/* One batch: a mesh apply that fails, a certificate insert and a mesh apply
 * that succeed. Only the bad one fails. */
typedef struct {
    store *st;
    int what; /* 0: bad mesh apply, 1: cert insert, 2: good mesh apply */
    mid_err err;
    char msg[256];
    pthread_t th;
} batch_member;

static void *batch_member_main(void *arg)
{
    batch_member *m = arg;
    mid_result r;
    if (m->what == 1) {
        store_cert c = make_cert("0abc", "spiffe://example.org/w");
        store_audit_event ev = make_event("svid.issue", "spiffe://example.org/w", "0abc");
        r = store_cert_insert(m->st, &c, &ev);
    } else if (m->what == 0) {
        store_mesh_change ch[2] = {put("service", "default", "bad1", "{}"),
                                   del("service", "default", "missing")};
        mesh_events ev;
        make_events(&ev, 2);
        r = store_mesh_apply(m->st, ch, 2, ev.ev, NULL);
    } else {
        store_mesh_change ch[2] = {put("service", "default", "good1", "{}"),
                                   put("policy", "default", "good2", POL_P)};
        mesh_events ev;
        make_events(&ev, 2);
        r = store_mesh_apply(m->st, ch, 2, ev.ev, NULL);
    }
    m->err = r.err;
    snprintf(m->msg, sizeof m->msg, "%s", mid_is_ok(r) ? "" : mid_errmsg());
    return NULL;
}

static void test_batch_isolation(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    put_authorities(st);
    int64_t events0 = count_events(st);
    store_stats s0, s1;
    store_stats_get(st, &s0);

    store_writer_pause(st, 1);
    batch_member m[3];
    for (int i = 0; i < 3; i++) {
        m[i].st = st;
        m[i].what = i;
        assert_int_equal(pthread_create(&m[i].th, NULL, batch_member_main, &m[i]), 0);
    }
    for (int i = 0; i < 10000; i++) {
        store_stats q;
        store_stats_get(st, &q);
        if (q.queued >= 3) break;
        usleep(1000);
    }
    store_writer_pause(st, 0);
    for (int i = 0; i < 3; i++) pthread_join(m[i].th, NULL);
    store_stats_get(st, &s1);

    assert_int_equal(s1.transactions - s0.transactions, 1); /* one group commit */
    assert_int_equal(m[0].err, MID_E_NOT_FOUND);
    assert_non_null(strstr(m[0].msg, "service default/missing"));
    if (m[1].err != MID_E_OK) fail_msg("cert insert: %s", m[1].msg);
    if (m[2].err != MID_E_OK) fail_msg("good mesh apply: %s", m[2].msg);

    store_cert_row cert;
    assert_mid_ok(store_cert_get(st, "0abc", &cert));
    store_cert_row_clear(&cert);
    store_mesh_row row;
    assert_mid_err(store_mesh_get(st, "service", "default", "bad1", &row), MID_E_NOT_FOUND);
    assert_mid_ok(store_mesh_get(st, "service", "default", "good1", &row));
    assert_int_equal(row.revision, 1); /* the failed apply's bump was undone */
    store_mesh_row_clear(&row);
    assert_int_equal(mesh_rev(st), 1);
    assert_int_equal(count_events(st), events0 + 3);
    store_audit_verdict v;
    assert_mid_ok(store_audit_verify(st, &v));
    assert_int_equal(v.ok, 1);
    store_close(st);
    tmpdb_cleanup(&t);
}

/* The schema's CHECKs refuse bad rows written around the store. */
static void test_schema_constraints(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store_close(open_store(&t, NULL));
    sqlite3 *db = raw_open(t.db);
    const char *bad[] = {
        "INSERT INTO mesh_resources VALUES ('gateway', 'ns', 'n', '{}', 1, 0, 0)",
        "INSERT INTO mesh_resources VALUES ('service', '', 'n', '{}', 1, 0, 0)",
        "INSERT INTO mesh_resources VALUES ('service', 'ns', '', '{}', 1, 0, 0)",
        "INSERT INTO mesh_resources VALUES ('service', 'ns', 'n', '[1]', 1, 0, 0)",
        "INSERT INTO mesh_resources VALUES ('service', 'ns', 'n', '{bad', 1, 0, 0)",
        "INSERT INTO mesh_resources VALUES ('service', 'ns', 'n', '{}', 0, 0, 0)",
        "INSERT INTO mesh_resources VALUES ('service', 'ns', 'n', NULL, 1, 0, 0)",
        "UPDATE counters SET value = -1 WHERE name = 'mesh_revision'",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *err = NULL;
        int rc = sqlite3_exec(db, bad[i], NULL, NULL, &err);
        sqlite3_free(err);
        if ((rc & 0xff) != SQLITE_CONSTRAINT) fail_msg("accepted: %s (rc %d)", bad[i], rc);
    }
    raw_exec(db, "INSERT INTO mesh_resources VALUES ('service', 'ns', 'n', '{\"a\":[1]}', 1, 0, 0)");
    raw_exec(db, "INSERT INTO mesh_resources VALUES ('policy', 'ns', 'n', '{}', 1, 0, 0)");
    sqlite3_close(db);
    tmpdb_cleanup(&t);
}

static int64_t raw_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
        fail_msg("prepare '%s': %s", sql, sqlite3_errmsg(db));
    int64_t v = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
    sqlite3_finalize(s);
    return v;
}

/* A database as the previous schema version (3) left it, with data and a
 * chained audit log written by the store of that version's tables. */
static void test_upgrade_from_previous(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    const int prev = 3; /* the version before mesh_resources */
    sqlite3 *db = raw_open(t.db);
    raw_exec(db, "PRAGMA journal_mode = WAL");
    raw_exec(db, "BEGIN");
    for (int v = 1; v <= prev; v++) {
        const char *sql = store_sqlite_migration_sql(v);
        assert_non_null(sql);
        raw_exec(db, sql);
        char rec[160];
        snprintf(rec, sizeof rec,
                 "INSERT INTO schema_migrations VALUES (%d, 'v%d', 1700000000);"
                 " PRAGMA user_version = %d; PRAGMA application_id = 1836280164",
                 v, v, v);
        raw_exec(db, rec);
    }
    raw_exec(db, "INSERT INTO authorities (id, kind, state, trust_domain, parent_id, cert_pem,"
                 " not_before, not_after, created_at) VALUES ('a1', 'root', 'active',"
                 " 'example.org', NULL, 'PEM', 1700000000, 1800000000, 1700000000)");
    raw_exec(db, "UPDATE counters SET value = 7 WHERE name = 'entries_revision'");
    raw_exec(db, "COMMIT");
    assert_int_equal(
        raw_int(db, "SELECT count(*) FROM sqlite_schema WHERE name = 'mesh_resources'"), 0);
    sqlite3_close(db);

    /* Audit events through the store would need the new schema, so write
     * one chained event by hand as the old version would have. */
    db = raw_open(t.db);
    store_audit_event ev = make_event("ca.init", NULL, NULL);
    ev.seq = 1;
    ev.ts_ms = 1700000000000;
    uint8_t zero[STORE_HASH_LEN] = {0}, hash[STORE_HASH_LEN];
    assert_true(mid_is_ok(audit_hash(&ev, zero, hash)));
    char ph[AUDIT_HEX_LEN + 1], hh[AUDIT_HEX_LEN + 1], sql[1024];
    audit_hex_encode(zero, ph);
    audit_hex_encode(hash, hh);
    snprintf(sql, sizeof sql,
             "INSERT INTO audit_events (seq, ts_ms, actor, event, spiffe_id, serial, outcome,"
             " reason, details, prev_hash, hash) VALUES (1, %lld, '%s', '%s', NULL, NULL,"
             " '%s', '%s', '%s', '%s', '%s')",
             (long long)ev.ts_ms, ev.actor, ev.event, ev.outcome, ev.reason, ev.details, ph, hh);
    raw_exec(db, sql);
    sqlite3_close(db);

    store *st = open_store(&t, NULL);
    assert_int_equal(store_schema_version(st), STORE_TEST_SCHEMA_LATEST);
    store_authority_row *auth = NULL;
    size_t n = 0;
    assert_mid_ok(store_authority_list(st, &auth, &n));
    assert_int_equal(n, 1);
    store_authority_list_free(auth, n);
    int64_t erev = 0;
    assert_mid_ok(store_entries_revision(st, &erev));
    assert_int_equal(erev, 7);
    assert_int_equal(mesh_rev(st), 0);
    store_mesh_change c = put("service", "default", "a", SVC_A);
    store_audit_event mev = make_event("mesh.apply", NULL, NULL);
    int64_t rev = 0;
    assert_mid_ok(store_mesh_apply(st, &c, 1, &mev, &rev));
    assert_int_equal(rev, 1);
    store_audit_verdict v;
    assert_mid_ok(store_audit_verify(st, &v));
    assert_int_equal(v.ok, 1);
    assert_int_equal(v.events, 2);
    store_close(st);

    db = raw_open(t.db);
    assert_int_equal(raw_int(db, "PRAGMA user_version"), STORE_TEST_SCHEMA_LATEST);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM schema_migrations"),
                     STORE_TEST_SCHEMA_LATEST);
    assert_int_equal(raw_int(db, "SELECT value FROM counters WHERE name = 'mesh_revision'"), 1);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM mesh_resources"), 1);
    sqlite3_close(db);
    tmpdb_cleanup(&t);
}

int run_mesh_store_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_revision_per_apply),
        cmocka_unit_test(test_all_or_nothing),
        cmocka_unit_test(test_if_revision),
        cmocka_unit_test(test_create_race),
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_spec_size),
        cmocka_unit_test(test_faults),
        cmocka_unit_test(test_audit_chain),
        cmocka_unit_test(test_batch_isolation),
        cmocka_unit_test(test_schema_constraints),
        cmocka_unit_test(test_upgrade_from_previous),
    };
    return cmocka_run_group_tests_name("mesh_store", tests, NULL, NULL);
}
