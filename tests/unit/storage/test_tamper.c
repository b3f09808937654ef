/* Tampering through a second, raw SQLite connection (as someone with the
 * file would): store_audit_verify must name the first broken link. */
#include <stdio.h>
#include <string.h>

#include "storage_test.h"

#define N_EVENTS 10

typedef struct {
    tmpdb t;
    store *st;
    sqlite3 *raw;
} tamper_fx;

static int setup(void **state)
{
    static tamper_fx fx;
    memset(&fx, 0, sizeof fx);
    tmpdb_init(&fx.t);
    fx.st = open_store(&fx.t, NULL);
    for (int i = 1; i <= N_EVENTS; i++) {
        char reason[32];
        snprintf(reason, sizeof reason, "event %d", i);
        store_audit_event e = make_event("test.event", "spiffe://example.org/s", NULL);
        e.reason = reason;
        e.ts_ms = 1700000000000 + i;
        assert_mid_ok(store_audit_append(fx.st, &e, NULL));
    }
    fx.raw = raw_open(fx.t.db);
    *state = &fx;
    return 0;
}

static int teardown(void **state)
{
    tamper_fx *fx = *state;
    sqlite3_close(fx->raw);
    store_close(fx->st);
    tmpdb_cleanup(&fx->t);
    return 0;
}

static store_audit_verdict verify(tamper_fx *fx)
{
    store_audit_verdict v;
    assert_mid_ok(store_audit_verify(fx->st, &v));
    return v;
}

static void expect_broken(const store_audit_verdict *v, int64_t seq, const char *why)
{
    if (v->ok) fail_msg("tampering not detected");
    if (v->broken_seq != seq || strstr(v->reason, why) == NULL)
        fail_msg("expected break at %lld (%s), got %lld: %s", (long long)seq, why,
                 (long long)v->broken_seq, v->reason);
}

static void test_untouched_verifies(void **state)
{
    tamper_fx *fx = *state;
    store_audit_verdict v = verify(fx);
    assert_true(v.ok);
    assert_int_equal(v.events, N_EVENTS);
    assert_int_equal(v.head_seq, N_EVENTS);
}

static void test_triggers_block_casual_edits(void **state)
{
    tamper_fx *fx = *state;
    assert_int_not_equal(
        sqlite3_exec(fx->raw, "DELETE FROM audit_events WHERE seq = 3", NULL, NULL, NULL),
        SQLITE_OK);
    assert_non_null(strstr(sqlite3_errmsg(fx->raw), "append-only"));
    assert_int_not_equal(sqlite3_exec(fx->raw, "UPDATE audit_events SET reason = 'x'", NULL, NULL,
                                      NULL),
                         SQLITE_OK);
    assert_true(verify(fx).ok);
}

static void test_update_reason(void **state)
{
    tamper_fx *fx = *state;
    raw_drop_audit_guards(fx->raw);
    raw_exec(fx->raw, "UPDATE audit_events SET reason = 'nothing happened' WHERE seq = 4");
    store_audit_verdict v = verify(fx);
    expect_broken(&v, 4, "content changed");
    assert_int_equal(v.head_seq, 3); /* the verified prefix */
    assert_int_equal(v.events, 4);
}

static void test_update_null_vs_empty(void **state)
{
    tamper_fx *fx = *state;
    raw_drop_audit_guards(fx->raw);
    raw_exec(fx->raw, "UPDATE audit_events SET serial = '' WHERE seq = 6");
    store_audit_verdict v = verify(fx);
    expect_broken(&v, 6, "content changed");
}

static void test_delete_middle(void **state)
{
    tamper_fx *fx = *state;
    raw_drop_audit_guards(fx->raw);
    raw_exec(fx->raw, "DELETE FROM audit_events WHERE seq = 5");
    store_audit_verdict v = verify(fx);
    expect_broken(&v, 5, "missing");
}

static void test_delete_first(void **state)
{
    tamper_fx *fx = *state;
    raw_drop_audit_guards(fx->raw);
    raw_exec(fx->raw, "DELETE FROM audit_events WHERE seq = 1");
    store_audit_verdict v = verify(fx);
    expect_broken(&v, 1, "does not start at seq 1");
}

static void test_swap_rows(void **state)
{
    tamper_fx *fx = *state;
    raw_drop_audit_guards(fx->raw);
    /* Exchange every column but seq between rows 3 and 7. */
    raw_exec(fx->raw,
             "CREATE TEMP TABLE t AS SELECT * FROM audit_events WHERE seq IN (3, 7);"
             "UPDATE audit_events SET (ts_ms, actor, event, spiffe_id, serial, outcome, reason,"
             " details, prev_hash, hash) = (SELECT ts_ms, actor, event, spiffe_id, serial,"
             " outcome, reason, details, prev_hash, hash FROM t WHERE t.seq = 10 - "
             "audit_events.seq) WHERE seq IN (3, 7);");
    store_audit_verdict v = verify(fx);
    expect_broken(&v, 3, "prev_hash does not match");
}

static void test_reorder_with_recomputed_hash(void **state)
{
    tamper_fx *fx = *state;
    raw_drop_audit_guards(fx->raw);
    /* A row whose prev_hash points at the wrong predecessor. */
    raw_exec(fx->raw, "UPDATE audit_events SET prev_hash = (SELECT hash FROM audit_events WHERE "
                      "seq = 1) WHERE seq = 8");
    store_audit_verdict v = verify(fx);
    expect_broken(&v, 8, "prev_hash does not match");
}

static void test_malformed_hash(void **state)
{
    tamper_fx *fx = *state;
    raw_drop_audit_guards(fx->raw);
    raw_exec(fx->raw, "PRAGMA ignore_check_constraints = ON;"
                      "UPDATE audit_events SET prev_hash = 'zz' WHERE seq = 1");
    store_audit_verdict v = verify(fx);
    expect_broken(&v, 1, "hex digits");
}

static void test_delete_last(void **state)
{
    tamper_fx *fx = *state;
    raw_drop_audit_guards(fx->raw);
    raw_exec(fx->raw, "DELETE FROM audit_events WHERE seq = 10");
    /* Truncation at the tail is invisible to the chain alone: the head seq
     * going backwards is what the signed head (ca_audit_head_verify) catches. */
    store_audit_verdict v = verify(fx);
    assert_true(v.ok);
    assert_int_equal(v.head_seq, N_EVENTS - 1);
    int64_t seq;
    uint8_t h[STORE_HASH_LEN];
    assert_mid_ok(store_audit_head(fx->st, &seq, h));
    assert_int_equal(seq, N_EVENTS - 1);
}

int run_tamper_tests(void)
{
    static const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_untouched_verifies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_triggers_block_casual_edits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_update_reason, setup, teardown),
        cmocka_unit_test_setup_teardown(test_update_null_vs_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_middle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_swap_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reorder_with_recomputed_hash, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_hash, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_last, setup, teardown),
    };
    return cmocka_run_group_tests_name("storage/tamper", tests, NULL, NULL);
}
