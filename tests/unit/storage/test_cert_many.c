/* store_cert_insert_many and its two halves (store_cert_insert_many_start /
 * store_cert_batch_wait): per-certificate outcomes, the notify callback,
 * several requests queued before any is waited for, failures of the whole
 * request, and synchronous and asynchronous callers mixed under load (the
 * wake-up chain of storage/store.c). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage/store_int.h"
#include "storage/sqlite/walbuf.h"
#include "storage/sqlite/walckpt.h"
#include "storage_test.h"

typedef struct {
    atomic_int calls;
} notify_count;

static void count_notify(void *arg)
{
    atomic_fetch_add(&((notify_count *)arg)->calls, 1);
}

/* n certificates "<prefix><i>" with their events; serials and IDs live in
 * the caller's buffers. */
static void make_many(size_t n, const char *prefix, char (*serial)[32], char (*sid)[64],
                      store_cert *certs, store_audit_event *evs)
{
    for (size_t i = 0; i < n; i++) {
        snprintf(serial[i], 32, "%s%02zx", prefix, i);
        snprintf(sid[i], 64, "spiffe://example.org/m/%s%zu", prefix, i);
        certs[i] = make_cert(serial[i], sid[i]);
        evs[i] = make_event("svid.issue", sid[i], serial[i]);
    }
}

static void wait_queued_n(store *st, uint64_t n)
{
    for (int i = 0; i < 10000; i++) {
        store_stats s;
        store_stats_get(st, &s);
        if (s.queued >= n) return;
        usleep(1000);
    }
    fail_msg("requests never queued");
}

/* The synchronous call: one refused on this thread, one refused by the
 * database (duplicate serial), the rest recorded with their events. */
static void test_insert_many_outcomes(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    put_authorities(st);
    char serial[6][32], sid[6][64];
    store_cert certs[6];
    store_audit_event evs[6];
    mid_result res[6];
    make_many(6, "a", serial, sid, certs, evs);
    certs[1].key_fp = "nothex";               /* refused before queueing */
    certs[4].serial = certs[2].serial;        /* duplicate of an earlier one */
    evs[4].serial = certs[2].serial;
    mid_errclear();
    assert_mid_err(store_cert_insert_many(st, certs, evs, 6, res), MID_E_INVALID);
    assert_non_null(strstr(mid_errmsg(), "key_fp")); /* the lowest index's error */
    assert_int_equal(res[0].err, MID_E_OK);
    assert_int_equal(res[1].err, MID_E_INVALID);
    assert_int_equal(res[2].err, MID_E_OK);
    assert_int_equal(res[3].err, MID_E_OK);
    assert_int_equal(res[4].err, MID_E_EXISTS);
    assert_int_equal(res[5].err, MID_E_OK);
    int64_t live = 0;
    assert_mid_ok(store_cert_count_live(st, INTER_ID, 0, &live));
    assert_int_equal(live, 4);
    assert_int_equal(count_events(st), 2 + 4); /* the authorities' and the four */

    /* Arguments. */
    assert_mid_err(store_cert_insert_many(st, certs, evs, 0, res), MID_E_INVALID);
    assert_mid_err(store_cert_insert_many(st, certs, evs, STORE_CERT_MANY_MAX + 1, res),
                   MID_E_INVALID);
    assert_mid_err(store_cert_insert_many(st, NULL, evs, 1, res), MID_E_INVALID);
    assert_mid_err(store_cert_insert_many(st, certs, evs, 1, NULL), MID_E_INVALID);
    store_cert_batch *b = NULL;
    assert_mid_err(store_cert_insert_many_start(st, certs, evs, 1, res, NULL, NULL, NULL),
                   MID_E_INVALID);
    assert_mid_err(store_cert_insert_many_start(NULL, certs, evs, 1, res, NULL, NULL, &b),
                   MID_E_INVALID);
    assert_null(b);
    assert_mid_err(store_cert_batch_wait(NULL), MID_E_INVALID);
    store_close(st);
    tmpdb_cleanup(&t);
}

/* Three requests queued while the writer is held, none waited for yet:
 * nothing is durable and nobody is notified before the writer runs; then
 * each is notified exactly once, and the waits return in any order. */
static void test_start_then_wait(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    put_authorities(st);
    enum { R = 3, N = 10 };
    char serial[R][N][32], sid[R][N][64];
    store_cert certs[R][N];
    store_audit_event evs[R][N];
    mid_result res[R][N];
    notify_count nc[R];
    store_cert_batch *b[R];
    store_writer_pause(st, 1);
    for (int r = 0; r < R; r++) {
        char prefix[16];
        snprintf(prefix, sizeof prefix, "b%d", r);
        make_many(N, prefix, serial[r], sid[r], certs[r], evs[r]);
        atomic_init(&nc[r].calls, 0);
        assert_mid_ok(store_cert_insert_many_start(st, certs[r], evs[r], N, res[r],
                                                   count_notify, &nc[r], &b[r]));
    }
    wait_queued_n(st, R);
    for (int r = 0; r < R; r++) assert_int_equal(atomic_load(&nc[r].calls), 0);
    int64_t live = -1;
    assert_mid_ok(store_cert_count_live(st, INTER_ID, 0, &live));
    assert_int_equal(live, 0);
    store_writer_pause(st, 0);
    assert_mid_ok(store_cert_batch_wait(b[2])); /* out of order on purpose */
    assert_mid_ok(store_cert_batch_wait(b[0]));
    assert_mid_ok(store_cert_batch_wait(b[1]));
    for (int r = 0; r < R; r++) {
        assert_int_equal(atomic_load(&nc[r].calls), 1);
        for (int i = 0; i < N; i++) assert_int_equal(res[r][i].err, MID_E_OK);
    }
    assert_mid_ok(store_cert_count_live(st, INTER_ID, 0, &live));
    assert_int_equal(live, R * N);
    store_stats s;
    store_stats_get(st, &s);
    assert_true(s.max_batch_seen >= R * N); /* the three went in one transaction */
    store_audit_verdict v;
    assert_mid_ok(store_audit_verify(st, &v));
    assert_true(v.ok);
    assert_int_equal(v.events, 2 + R * N);
    store_close(st);
    tmpdb_cleanup(&t);
}

/* A failed commit fails every certificate of the request with its error,
 * still notifies, and writes nothing; a request with nothing valid is
 * never queued and is finished (notified) at once. */
static void test_start_failures(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    put_authorities(st);
    char serial[4][32], sid[4][64];
    store_cert certs[4];
    store_audit_event evs[4];
    mid_result res[4];
    notify_count nc;
    atomic_init(&nc.calls, 0);
    make_many(4, "f", serial, sid, certs, evs);
    store_cert_batch *b = NULL;
    store_fault_set(st, STORE_FAULT_COMMIT, 1, MID_E_IO);
    assert_mid_ok(store_cert_insert_many_start(st, certs, evs, 4, res, count_notify, &nc, &b));
    mid_errclear();
    assert_mid_err(store_cert_batch_wait(b), MID_E_IO);
    assert_non_null(strstr(mid_errmsg(), "injected fault"));
    assert_int_equal(atomic_load(&nc.calls), 1);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(res[i].err, MID_E_IO);
        store_cert_row row;
        assert_mid_err(store_cert_get(st, serial[i], &row), MID_E_NOT_FOUND);
    }
    assert_int_equal(count_events(st), 2);

    for (int i = 0; i < 4; i++) certs[i].status = "unknown";
    atomic_store(&nc.calls, 0);
    assert_mid_ok(store_cert_insert_many_start(st, certs, evs, 4, res, count_notify, &nc, &b));
    assert_int_equal(atomic_load(&nc.calls), 1); /* nothing to wait for */
    assert_mid_err(store_cert_batch_wait(b), MID_E_INVALID);
    for (int i = 0; i < 4; i++) assert_int_equal(res[i].err, MID_E_INVALID);

    /* And the store carries on. */
    make_many(4, "e", serial, sid, certs, evs);
    assert_mid_ok(store_cert_insert_many(st, certs, evs, 4, res));
    store_audit_verdict v;
    assert_mid_ok(store_audit_verify(st, &v));
    assert_true(v.ok);
    assert_int_equal(v.events, 2 + 4);
    store_close(st);
    tmpdb_cleanup(&t);
}

/* Synchronous callers (woken along the chain) and asynchronous ones
 * (posted directly, possibly long after their request committed) in the
 * same transactions: every call returns, every certificate is there once. */
#define MIX_THREADS 12
#define MIX_ROUNDS 60

typedef struct {
    store *st;
    int id;
    int failures;
} mix_arg;

static void *mix_thread(void *arg)
{
    mix_arg *a = arg;
    for (int round = 0; round < MIX_ROUNDS; round++) {
        char prefix[16];
        snprintf(prefix, sizeof prefix, "%02x%02x", a->id, round);
        if (a->id % 3 == 0) { /* asynchronous, two requests in flight, waited late */
            char serial[2][4][32], sid[2][4][64];
            store_cert certs[2][4];
            store_audit_event evs[2][4];
            mid_result res[2][4];
            store_cert_batch *b[2] = {NULL, NULL};
            for (int k = 0; k < 2; k++) {
                prefix[4] = (char)('a' + k);
                prefix[5] = '\0';
                make_many(4, prefix, serial[k], sid[k], certs[k], evs[k]);
                if (!mid_is_ok(store_cert_insert_many_start(a->st, certs[k], evs[k], 4, res[k],
                                                            NULL, NULL, &b[k])))
                    a->failures++;
            }
            usleep((useconds_t)(round % 4) * 200); /* "signing" meanwhile */
            for (int k = 1; k >= 0; k--)
                if (b[k] != NULL && !mid_is_ok(store_cert_batch_wait(b[k]))) a->failures++;
        } else { /* synchronous, one certificate */
            char serial[1][32], sid[1][64];
            store_cert c;
            store_audit_event e;
            make_many(1, prefix, serial, sid, &c, &e);
            if (!mid_is_ok(store_cert_insert(a->st, &c, &e))) a->failures++;
        }
    }
    return NULL;
}

static void test_sync_and_async_mixed(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    put_authorities(st);
    pthread_t th[MIX_THREADS];
    mix_arg args[MIX_THREADS];
    for (int i = 0; i < MIX_THREADS; i++) {
        args[i] = (mix_arg){.st = st, .id = i};
        assert_int_equal(pthread_create(&th[i], NULL, mix_thread, &args[i]), 0);
    }
    int64_t expect = 0;
    for (int i = 0; i < MIX_THREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].failures, 0);
        expect += i % 3 == 0 ? MIX_ROUNDS * 8 : MIX_ROUNDS;
    }
    int64_t live = 0;
    assert_mid_ok(store_cert_count_live(st, INTER_ID, 0, &live));
    assert_int_equal(live, expect);
    store_audit_verdict v;
    assert_mid_ok(store_audit_verify(st, &v));
    assert_true(v.ok);
    assert_int_equal(v.events, 2 + expect);
    store_stats s;
    store_stats_get(st, &s);
    assert_int_equal(s.writes_failed, 0);
    assert_true(s.transactions < (uint64_t)expect); /* grouped */
    store_close(st);
    tmpdb_cleanup(&t);
}

/* The writer's WAL writes are gathered (storage/sqlite/walbuf.h): a
 * commit of 256 certificates is hundreds of frame writes for SQLite and a
 * handful of pwrites for the kernel. Nothing is lost by it: every row and
 * event is there after the commit, to another connection on the default
 * VFS (the WAL read as SQLite wrote it), and after closing and reopening. */
static void test_wal_writes_gathered(void **state)
{
    (void)state;
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    put_authorities(st);
    enum { N = 256 };
    static char serial[N][32], sid[N][64];
    static store_cert certs[N];
    static store_audit_event evs[N];
    static mid_result res[N];
    make_many(N, "ee", serial, sid, certs, evs);
    walbuf_stats w0, w1;
    walbuf_stats_get(&w0);
    assert_mid_ok(store_cert_insert_many(st, certs, evs, N, res));
    walbuf_stats_get(&w1);
    uint64_t wal = w1.wal_writes - w0.wal_writes, os = w1.os_writes - w0.os_writes;
    assert_true(wal >= 40); /* two per frame, dozens of frames (74 here) */
    assert_true(os >= 1);
    assert_true(os * 10 <= wal);

    sqlite3 *raw = raw_open(t.db); /* default VFS, its own WAL reader */
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_prepare_v2(raw, "SELECT count(*) FROM certificates WHERE serial "
                                             "LIKE 'ee%'", -1, &s, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(s, 0), N);
    sqlite3_finalize(s);
    sqlite3_close(raw);
    store_close(st);

    st = open_store(&t, NULL);
    int64_t live = 0;
    assert_mid_ok(store_cert_count_live(st, INTER_ID, 0, &live));
    assert_int_equal(live, N);
    store_audit_verdict v;
    assert_mid_ok(store_audit_verify(st, &v));
    assert_true(v.ok);
    assert_int_equal(v.events, 2 + N);
    store_close(st);
    tmpdb_cleanup(&t);
}

static int64_t raw_count(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return n;
}

/* Checkpoints run on the checkpointer thread and the writer finishes them
 * (storage/sqlite/walckpt.h), so the WAL starts over instead of growing:
 * with a 64-frame threshold, thousands of frames are written through a WAL
 * file a fraction of their size. A reader holding a snapshot meanwhile
 * keeps seeing it (checkpoints skip the frames it needs), and every row and
 * event is there afterwards, to the store and after reopening. */
static void test_background_checkpoints(void **state)
{
    (void)state;
    walckpt_set_frames(64);
    tmpdb t;
    tmpdb_init(&t);
    store *st = open_store(&t, NULL);
    put_authorities(st);
    enum { N = 64, MIN_ROUNDS = 30, MAX_ROUNDS = 400 };
    static char serial[N][32], sid[N][64];
    static store_cert certs[N];
    static store_audit_event evs[N];
    static mid_result res[N];
    walckpt_stats k0, k1;
    walbuf_stats w0, w1;
    walckpt_stats_get(&k0);
    walbuf_stats_get(&w0);
    sqlite3 *reader = raw_open(t.db);
    int rounds = 0;
    for (; rounds < MAX_ROUNDS; rounds++) {
        char prefix[8];
        snprintf(prefix, sizeof prefix, "%03x", rounds + 0x100);
        make_many(N, prefix, serial, sid, certs, evs);
        assert_mid_ok(store_cert_insert_many(st, certs, evs, N, res));
        if (rounds == 5) { /* a snapshot of 6 rounds, held for 10 more */
            raw_exec(reader, "BEGIN");
            assert_int_equal(raw_count(reader, "SELECT count(*) FROM certificates"), 6 * N);
        }
        if (rounds == 15) {
            assert_int_equal(raw_count(reader, "SELECT count(*) FROM certificates"), 6 * N);
            raw_exec(reader, "COMMIT");
        }
        walckpt_stats_get(&k1);
        walbuf_stats_get(&w1);
        if (rounds + 1 >= MIN_ROUNDS && k1.passes > k0.passes && k1.finishes > k0.finishes &&
            (w1.wal_writes - w0.wal_writes) / 2 > 3000)
            break;
    }
    rounds++;
    assert_true(k1.passes > k0.passes);
    assert_true(k1.finishes > k0.finishes);
    /* two writes per frame; each frame is a 24-byte header and a 4 KiB page */
    uint64_t frames = (w1.wal_writes - w0.wal_writes) / 2;
    char wal[320];
    snprintf(wal, sizeof wal, "%s-wal", t.db);
    struct stat sb;
    assert_int_equal(stat(wal, &sb), 0);
    assert_true(frames > 2000);
    assert_true((uint64_t)sb.st_size * 4 < frames * 4120);

    assert_int_equal(raw_count(reader, "SELECT count(*) FROM certificates"), (int64_t)rounds * N);
    sqlite3_close(reader);
    store_close(st);
    walckpt_set_frames(0);

    st = open_store(&t, NULL);
    int64_t live = 0;
    assert_mid_ok(store_cert_count_live(st, INTER_ID, 0, &live));
    assert_int_equal(live, (int64_t)rounds * N);
    store_audit_verdict v;
    assert_mid_ok(store_audit_verify(st, &v));
    assert_true(v.ok);
    assert_int_equal(v.events, 2 + (int64_t)rounds * N);
    store_close(st);
    tmpdb_cleanup(&t);
}

int run_cert_many_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_insert_many_outcomes),
        cmocka_unit_test(test_start_then_wait),
        cmocka_unit_test(test_start_failures),
        cmocka_unit_test(test_sync_and_async_mixed),
        cmocka_unit_test(test_wal_writes_gathered),
        cmocka_unit_test(test_background_checkpoints),
    };
    return cmocka_run_group_tests_name("storage/cert_many", tests, NULL, NULL);
}
