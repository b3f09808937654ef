/* Group commit: per-request savepoints inside one batch, concurrency,
 * injected faults, draining on close, two writers sharing one file. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "storage/store_int.h"
#include "storage_test.h"

/* One thread doing one cert insert (with event) and keeping its result. */
typedef struct {
    store *st;
    char serial[32];
    char sid[64];
    mid_err err;
    char msg[256];
    pthread_t th;
} one_insert;

static void *one_insert_main(void *arg)
{
    one_insert *w = arg;
    store_cert c = make_cert(w->serial, w->sid);
    store_audit_event ev = make_event("svid.issue", w->sid, w->serial);
    mid_result r = store_cert_insert(w->st, &c, &ev);
    w->err = r.err;
    snprintf(w->msg, sizeof w->msg, "%s", mid_is_ok(r) ? "" : mid_errmsg());
    return NULL;
}

/* Waits until the paused writer has `n` requests queued. */
static void wait_queued(store *st, uint64_t n)
{
    for (int i = 0; i < 10000; i++) {
        store_stats s;
        store_stats_get(st, &s);
        if (s.queued >= n) return;
        usleep(1000);
    }
    fail_msg("requests never queued");
}

/* Starts n single-insert threads against a paused writer, then releases them
 * as one batch. */
static void run_one_batch(store *st, one_insert *w, size_t n)
{
    store_writer_pause(st, 1);
    for (size_t i = 0; i < n; i++) {
        w[i].st = st;
        assert_int_equal(pthread_create(&w[i].th, NULL, one_insert_main, &w[i]), 0);
    }
    wait_queued(st, n);
    store_writer_pause(st, 0);
    for (size_t i = 0; i < n; i++) pthread_join(w[i].th, NULL);
}

static void test_duplicate_in_batch(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    put_authorities(st);
    store_cert c = make_cert("dd", "spiffe://example.org/first");
    assert_mid_ok(store_cert_insert(st, &c, NULL));
    int64_t events_before = count_events(st);
    store_stats s0, s1;
    store_stats_get(st, &s0);

    one_insert w[6];
    memset(w, 0, sizeof w);
    for (int i = 0; i < 6; i++) {
        if (i == 3)
            snprintf(w[i].serial, sizeof w[i].serial, "dd"); /* the duplicate */
        else
            snprintf(w[i].serial, sizeof w[i].serial, "1%d", i);
        snprintf(w[i].sid, sizeof w[i].sid, "spiffe://example.org/w%d", i);
    }
    run_one_batch(st, w, 6);

    store_stats_get(st, &s1);
    assert_int_equal(s1.transactions - s0.transactions, 1); /* one group commit */
    assert_int_equal(s1.writes - s0.writes, 6);
    assert_int_equal(s1.writes_failed - s0.writes_failed, 1);
    /* tried under one savepoint, undone, then applied request by request */
    assert_int_equal(s1.fast_fallbacks - s0.fast_fallbacks, 1);
    assert_int_equal(s1.fast_batches - s0.fast_batches, 0);
    for (int i = 0; i < 6; i++) {
        store_cert_row row;
        if (i == 3) {
            assert_int_equal(w[i].err, MID_E_EXISTS);
            assert_non_null(strstr(w[i].msg, "dd"));
            continue;
        }
        assert_int_equal(w[i].err, MID_E_OK);
        assert_mid_ok(store_cert_get(st, w[i].serial, &row));
        store_cert_row_clear(&row);
    }
    /* The failed request's event was rolled back with it; the chain has no hole. */
    assert_int_equal(count_events(st), events_before + 5);
    store_audit_verdict v;
    assert_mid_ok(store_audit_verify(st, &v));
    assert_true(v.ok);
    assert_int_equal(v.events, events_before + 5);
    store_close(st);
    tmpdb_cleanup(&t);
}

/* A batch of certificate writes that all succeed is applied under one
 * savepoint (the fast path): one commit, every row and event recorded, the
 * chain intact. */
static void test_clean_batch_fast(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    put_authorities(st);
    int64_t events_before = count_events(st);
    store_stats s0, s1;
    store_stats_get(st, &s0);
    one_insert w[6];
    memset(w, 0, sizeof w);
    for (int i = 0; i < 6; i++) {
        snprintf(w[i].serial, sizeof w[i].serial, "c%d", i);
        snprintf(w[i].sid, sizeof w[i].sid, "spiffe://example.org/c%d", i);
    }
    run_one_batch(st, w, 6);
    store_stats_get(st, &s1);
    assert_int_equal(s1.transactions - s0.transactions, 1);
    assert_int_equal(s1.fast_batches - s0.fast_batches, 1);
    assert_int_equal(s1.fast_fallbacks - s0.fast_fallbacks, 0);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(w[i].err, MID_E_OK);
        store_cert_row row;
        assert_mid_ok(store_cert_get(st, w[i].serial, &row));
        store_cert_row_clear(&row);
    }
    assert_int_equal(count_events(st), events_before + 6);
    store_audit_verdict v;
    assert_mid_ok(store_audit_verify(st, &v));
    assert_true(v.ok);
    store_close(st);
    tmpdb_cleanup(&t);
}

static void test_fault_apply_fails_one(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    put_authorities(st);
    one_insert w[4];
    memset(w, 0, sizeof w);
    for (int i = 0; i < 4; i++) {
        snprintf(w[i].serial, sizeof w[i].serial, "a%d", i);
        snprintf(w[i].sid, sizeof w[i].sid, "spiffe://example.org/f%d", i);
    }
    store_fault_set(st, STORE_FAULT_APPLY, 2, MID_E_IO); /* the 2nd request of the batch */
    run_one_batch(st, w, 4);
    int failed = 0;
    for (int i = 0; i < 4; i++) {
        if (w[i].err == MID_E_OK) continue;
        assert_int_equal(w[i].err, MID_E_IO);
        assert_non_null(strstr(w[i].msg, "injected"));
        failed++;
    }
    assert_int_equal(failed, 1);
    assert_int_equal(count_events(st), 2 + 3);
    store_audit_verdict v;
    assert_mid_ok(store_audit_verify(st, &v));
    assert_true(v.ok);
    store_close(st);
    tmpdb_cleanup(&t);
}

static void test_fault_commit_fails_batch(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    put_authorities(st);
    int64_t seq0;
    uint8_t h0[STORE_HASH_LEN], h1[STORE_HASH_LEN];
    assert_mid_ok(store_audit_head(st, &seq0, h0));

    one_insert w[5];
    memset(w, 0, sizeof w);
    for (int i = 0; i < 5; i++) {
        snprintf(w[i].serial, sizeof w[i].serial, "c%d", i);
        snprintf(w[i].sid, sizeof w[i].sid, "spiffe://example.org/c%d", i);
    }
    store_fault_set(st, STORE_FAULT_COMMIT, 1, MID_E_IO);
    run_one_batch(st, w, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(w[i].err, MID_E_IO);
        store_cert_row row;
        assert_mid_err(store_cert_get(st, w[i].serial, &row), MID_E_NOT_FOUND);
    }
    int64_t seq1;
    assert_mid_ok(store_audit_head(st, &seq1, h1));
    assert_int_equal(seq1, seq0);
    assert_memory_equal(h1, h0, STORE_HASH_LEN);

    /* BEGIN failing fails the batch too; then the store carries on. */
    store_fault_set(st, STORE_FAULT_BEGIN, 1, MID_E_BUSY);
    store_audit_event e = make_event("x", NULL, NULL);
    assert_mid_err(store_audit_append(st, &e, NULL), MID_E_BUSY);
    store_audit_event out;
    assert_mid_ok(store_audit_append(st, &e, &out));
    assert_int_equal(out.seq, seq0 + 1);
    assert_memory_equal(out.prev_hash, h0, STORE_HASH_LEN);
    store_stats s;
    store_stats_get(st, &s);
    assert_int_equal(s.commit_failures, 2);
    store_audit_verdict v;
    assert_mid_ok(store_audit_verify(st, &v));
    assert_true(v.ok);
    store_close(st);
    tmpdb_cleanup(&t);
}

/* ---- many writers ---- */

#define N_THREADS 8
#define N_PER_THREAD 500

typedef struct {
    store *st;
    int id;
    int failures;
} writer_arg;

static void *writer_thread(void *arg)
{
    writer_arg *a = arg;
    char serial[32], sid[96];
    for (int i = 0; i < N_PER_THREAD; i++) {
        snprintf(serial, sizeof serial, "%02x%06x", a->id, i);
        snprintf(sid, sizeof sid, "spiffe://example.org/ns/t%d/sa/w%d", a->id, i);
        store_cert c = make_cert(serial, sid);
        store_audit_event ev = make_event("svid.issue", sid, serial);
        if (!mid_is_ok(store_cert_insert(a->st, &c, &ev))) a->failures++;
    }
    return NULL;
}

/* Reads while the writers write: the head never goes backwards. */
typedef struct {
    store *st;
    atomic_int *stop;
    long reads;
    int errors;
} reader_arg;

static void *reader_thread(void *arg)
{
    reader_arg *a = arg;
    int64_t last = 0;
    while (!atomic_load(a->stop)) {
        int64_t seq = 0, n = 0;
        uint8_t h[STORE_HASH_LEN];
        if (!mid_is_ok(store_audit_head(a->st, &seq, h)) || seq < last) a->errors++;
        if (!mid_is_ok(store_cert_count_live(a->st, INTER_ID, 0, &n))) a->errors++;
        last = seq;
        a->reads += 2;
        usleep(500);
    }
    return NULL;
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_concurrent_writers(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    put_authorities(st);
    store_stats s0, s1;
    store_stats_get(st, &s0);

    pthread_t th[N_THREADS], rth[2];
    writer_arg args[N_THREADS];
    reader_arg rargs[2];
    atomic_int stop;
    atomic_init(&stop, 0);
    for (int i = 0; i < 2; i++) {
        rargs[i] = (reader_arg){.st = st, .stop = &stop};
        assert_int_equal(pthread_create(&rth[i], NULL, reader_thread, &rargs[i]), 0);
    }
    double t0 = mono_s();
    for (int i = 0; i < N_THREADS; i++) {
        args[i] = (writer_arg){.st = st, .id = i};
        assert_int_equal(pthread_create(&th[i], NULL, writer_thread, &args[i]), 0);
    }
    for (int i = 0; i < N_THREADS; i++) pthread_join(th[i], NULL);
    double dt = mono_s() - t0;
    atomic_store(&stop, 1);
    for (int i = 0; i < 2; i++) {
        pthread_join(rth[i], NULL);
        assert_int_equal(rargs[i].errors, 0);
        assert_true(rargs[i].reads > 0);
    }
    for (int i = 0; i < N_THREADS; i++) assert_int_equal(args[i].failures, 0);

    store_stats_get(st, &s1);
    uint64_t writes = s1.writes - s0.writes, txns = s1.transactions - s0.transactions;
    assert_int_equal(writes, N_THREADS * N_PER_THREAD);
    printf("    concurrent: %d writes in %.2fs = %.0f writes/s, %llu transactions, "
           "%.1f writes/transaction (largest batch %llu)\n",
           N_THREADS * N_PER_THREAD, dt, writes / dt, (unsigned long long)txns,
           (double)writes / (double)txns, (unsigned long long)s1.max_batch_seen);
    assert_true(txns * 2 <= writes); /* group commit actually groups */

    int64_t n = 0;
    assert_mid_ok(store_cert_count_live(st, INTER_ID, 0, &n));
    assert_int_equal(n, N_THREADS * N_PER_THREAD);
    store_audit_verdict v;
    assert_mid_ok(store_audit_verify(st, &v));
    assert_true(v.ok);
    assert_int_equal(v.events, 2 + N_THREADS * N_PER_THREAD);
    assert_int_equal(v.head_seq, 2 + N_THREADS * N_PER_THREAD);
    store_close(st);
    tmpdb_cleanup(&t);
}

/* Two stores (two writers, as two processes would have) on one file: the
 * head is read inside each write transaction, so the chain stays whole. */
typedef struct {
    store *st;
    int n;
    int failures;
} appender_arg;

static void *appender(void *arg)
{
    appender_arg *a = arg;
    for (int i = 0; i < a->n; i++) {
        store_audit_event e = make_event("test.append", NULL, NULL);
        if (!mid_is_ok(store_audit_append(a->st, &e, NULL))) a->failures++;
    }
    return NULL;
}

static void test_two_writers_one_file(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *a = open_store(&t, NULL), *b = open_store(&t, NULL);
    pthread_t th[4];
    appender_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (appender_arg){.st = i % 2 ? a : b, .n = 100};
        assert_int_equal(pthread_create(&th[i], NULL, appender, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++) assert_int_equal(args[i].failures, 0);
    store_audit_verdict v;
    assert_mid_ok(store_audit_verify(a, &v));
    assert_true(v.ok);
    assert_int_equal(v.events, 400);
    store_close(a);
    store_close(b);
    tmpdb_cleanup(&t);
}

static void test_close_drains_queue(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    put_authorities(st);
    one_insert w[5];
    memset(w, 0, sizeof w);
    store_writer_pause(st, 1);
    for (int i = 0; i < 5; i++) {
        snprintf(w[i].serial, sizeof w[i].serial, "e%d", i);
        snprintf(w[i].sid, sizeof w[i].sid, "spiffe://example.org/e%d", i);
        w[i].st = st;
        assert_int_equal(pthread_create(&w[i].th, NULL, one_insert_main, &w[i]), 0);
    }
    wait_queued(st, 5);
    store_close(st); /* unpauses, commits the queued writes, waits for the callers */
    for (int i = 0; i < 5; i++) {
        pthread_join(w[i].th, NULL);
        assert_int_equal(w[i].err, MID_E_OK);
    }
    st = open_store(&t, NULL);
    assert_int_equal(count_events(st), 2 + 5);
    store_close(st);
    tmpdb_cleanup(&t);
}

static void test_max_batch_respected(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store_options o = {.max_batch = 2};
    store *st = open_store(&t, &o);
    put_authorities(st);
    store_stats s0, s1;
    store_stats_get(st, &s0);
    one_insert w[5];
    memset(w, 0, sizeof w);
    for (int i = 0; i < 5; i++) {
        snprintf(w[i].serial, sizeof w[i].serial, "b%d", i);
        snprintf(w[i].sid, sizeof w[i].sid, "spiffe://example.org/b%d", i);
    }
    run_one_batch(st, w, 5);
    store_stats_get(st, &s1);
    assert_int_equal(s1.transactions - s0.transactions, 3); /* 2 + 2 + 1 */
    assert_int_equal(s1.max_batch_seen, 2);
    for (int i = 0; i < 5; i++) assert_int_equal(w[i].err, MID_E_OK);
    store_close(st);
    tmpdb_cleanup(&t);
}

int run_batch_tests(void)
{
    static const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duplicate_in_batch),
        cmocka_unit_test(test_clean_batch_fast),
        cmocka_unit_test(test_fault_apply_fails_one),
        cmocka_unit_test(test_fault_commit_fails_batch),
        cmocka_unit_test(test_concurrent_writers),
        cmocka_unit_test(test_two_writers_one_file),
        cmocka_unit_test(test_close_drains_queue),
        cmocka_unit_test(test_max_batch_respected),
    };
    return cmocka_run_group_tests_name("storage/batch", tests, NULL, NULL);
}
