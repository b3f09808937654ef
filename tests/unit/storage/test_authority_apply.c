/* store_authority_apply: one lifecycle step as one checked transaction. */
#include <stdio.h>
#include <string.h>

#include "storage_test.h"

static int64_t head_seq(store *st)
{
    int64_t seq = -1;
    uint8_t hash[STORE_HASH_LEN];
    assert_mid_ok(store_audit_head(st, &seq, hash));
    return seq;
}

static const char *state_of(store *st, const char *id, char *buf, size_t cap)
{
    store_authority_row *rows = NULL;
    size_t n = 0;
    buf[0] = '\0';
    assert_mid_ok(store_authority_list(st, &rows, &n));
    for (size_t i = 0; i < n; i++)
        if (strcmp(rows[i].a.id, id) == 0) snprintf(buf, cap, "%s", rows[i].a.state);
    store_authority_list_free(rows, n);
    return buf;
}

static size_t count_authorities(store *st)
{
    store_authority_row *rows = NULL;
    size_t n = 0;
    assert_mid_ok(store_authority_list(st, &rows, &n));
    store_authority_list_free(rows, n);
    return n;
}

/* A new prepared intermediate under ROOT_ID with id `id`. */
static store_authority make_prepared(const char *id)
{
    store_authority a = make_intermediate();
    a.id = id;
    a.state = "prepared";
    return a;
}

/* Transitions and puts land together, events chained transitions first. */
static void test_apply_ok(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    put_authorities(st); /* root and intermediate, active */
    int64_t before = head_seq(st);
    store_authority put = make_prepared("c3");
    store_audit_event put_ev = make_event("ca.prepare", NULL, NULL);
    store_authority_transition tr = {INTER_ID, "active", "old"};
    store_audit_event tr_ev = make_event("ca.activate", NULL, NULL);
    assert_mid_ok(store_authority_apply(st, &put, &put_ev, 1, &tr, &tr_ev, 1));
    char buf[32];
    assert_string_equal(state_of(st, INTER_ID, buf, sizeof buf), "old");
    assert_string_equal(state_of(st, "c3", buf, sizeof buf), "prepared");
    assert_int_equal(head_seq(st), before + 2);
    store_audit_row row = {0};
    assert_mid_ok(store_audit_get(st, before + 1, &row));
    assert_string_equal(row.ev.event, "ca.activate");
    store_audit_row_clear(&row);
    assert_mid_ok(store_audit_get(st, before + 2, &row));
    assert_string_equal(row.ev.event, "ca.prepare");
    store_audit_row_clear(&row);
    store_audit_verdict v;
    assert_mid_ok(store_audit_verify(st, &v));
    assert_true(v.ok);

    /* transitions only, and puts only */
    store_authority_transition back = {INTER_ID, "old", "removed"};
    assert_mid_ok(store_authority_apply(st, NULL, NULL, 0, &back, &tr_ev, 1));
    assert_string_equal(state_of(st, INTER_ID, buf, sizeof buf), "removed");
    store_authority p2 = make_prepared("d4");
    assert_mid_ok(store_authority_apply(st, &p2, &put_ev, 1, NULL, NULL, 0));
    assert_int_equal(count_authorities(st), 4);
    store_close(st);
    tmpdb_cleanup(&t);
}

/* A transition whose row moved on (a second process won the race), an unknown
 * id, or a put whose id exists: nothing of the step is written. */
static void test_apply_all_or_nothing(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    put_authorities(st);
    int64_t before = head_seq(st);
    store_authority put = make_prepared("c3");
    store_audit_event evs[2] = {make_event("ca.activate", NULL, NULL),
                                make_event("ca.activate", NULL, NULL)};
    store_audit_event put_ev = make_event("ca.prepare", NULL, NULL);
    char buf[32];

    /* the second transition sees a stale state */
    store_authority_transition stale[2] = {{INTER_ID, "active", "old"},
                                           {ROOT_ID, "prepared", "active"}};
    assert_mid_err(store_authority_apply(st, &put, &put_ev, 1, stale, evs, 2), MID_E_STATE);
    assert_non_null(strstr(mid_errmsg(), "is active, not prepared"));
    assert_string_equal(state_of(st, INTER_ID, buf, sizeof buf), "active");
    assert_int_equal(count_authorities(st), 2);
    assert_int_equal(head_seq(st), before);

    /* unknown id */
    store_authority_transition unknown = {"ffee", "old", "removed"};
    assert_mid_err(store_authority_apply(st, &put, &put_ev, 1, &unknown, evs, 1),
                   MID_E_NOT_FOUND);
    assert_int_equal(count_authorities(st), 2);

    /* a put of an existing id is refused, with the transition undone */
    store_authority dup = make_intermediate();
    store_authority_transition ok = {INTER_ID, "active", "old"};
    assert_mid_err(store_authority_apply(st, &dup, &put_ev, 1, &ok, evs, 1), MID_E_EXISTS);
    assert_string_equal(state_of(st, INTER_ID, buf, sizeof buf), "active");

    /* a put whose parent is unknown */
    store_authority orphan = make_prepared("c3");
    orphan.parent_id = "eeee";
    assert_mid_err(store_authority_apply(st, &orphan, &put_ev, 1, &ok, evs, 1), MID_E_INVALID);
    assert_string_equal(state_of(st, INTER_ID, buf, sizeof buf), "active");
    assert_int_equal(head_seq(st), before);

    /* the same step applied twice: the second fails, the first stays */
    assert_mid_ok(store_authority_apply(st, &put, &put_ev, 1, &ok, evs, 1));
    assert_mid_err(store_authority_apply(st, NULL, NULL, 0, &ok, evs, 1), MID_E_STATE);
    assert_int_equal(head_seq(st), before + 2);
    store_close(st);
    tmpdb_cleanup(&t);
}

/* Bad arguments are refused before anything is queued. */
static void test_apply_bad_input(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    put_authorities(st);
    store_authority_transition tr[STORE_PUT_ALL_MAX + 1];
    store_audit_event evs[STORE_PUT_ALL_MAX + 1];
    for (size_t i = 0; i <= STORE_PUT_ALL_MAX; i++) {
        tr[i] = (store_authority_transition){INTER_ID, "active", "old"};
        evs[i] = make_event("ca.activate", NULL, NULL);
    }
    assert_mid_err(store_authority_apply(st, NULL, NULL, 0, NULL, NULL, 0), MID_E_INVALID);
    assert_mid_err(store_authority_apply(st, NULL, NULL, 0, tr, evs, STORE_PUT_ALL_MAX + 1),
                   MID_E_INVALID);
    store_authority_transition bad = {"XYZ", "active", "old"};
    assert_mid_err(store_authority_apply(st, NULL, NULL, 0, &bad, evs, 1), MID_E_INVALID);
    store_authority_transition bad_state = {INTER_ID, "active", "gone"};
    assert_mid_err(store_authority_apply(st, NULL, NULL, 0, &bad_state, evs, 1), MID_E_INVALID);
    assert_mid_err(store_authority_apply(st, NULL, NULL, 1, NULL, NULL, 0), MID_E_INVALID);
    assert_mid_err(store_authority_apply(NULL, NULL, NULL, 0, tr, evs, 1), MID_E_INVALID);
    store_close(st);
    tmpdb_cleanup(&t);
}

int run_authority_apply_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_apply_ok),
        cmocka_unit_test(test_apply_all_or_nothing),
        cmocka_unit_test(test_apply_bad_input),
    };
    return cmocka_run_group_tests_name("authority_apply", tests, NULL, NULL);
}
