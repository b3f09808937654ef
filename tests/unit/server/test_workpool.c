/* lib/workpool: jobs run off the loop, results come back on it, the queue
 * is bounded, and shutdown accounts for every job. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "lib/rpc.h"
#include "lib/workpool.h"
#include "tests/unit/server/server_tests.h"

typedef struct {
    rpc_loop *loop;
    pthread_t loop_thread;
    int done, ran, not_ran, expected;
    bool wrong_thread;
    pthread_mutex_t gate_mu;
    pthread_cond_t gate_cv;
    bool gate_open;
} wp_fx;

typedef struct {
    wp_fx *f;
    pthread_t worker;
    bool blocks;
} job;

static void work(void *arg)
{
    job *j = arg;
    j->worker = pthread_self();
    if (j->blocks) {
        pthread_mutex_lock(&j->f->gate_mu);
        while (!j->f->gate_open) pthread_cond_wait(&j->f->gate_cv, &j->f->gate_mu);
        pthread_mutex_unlock(&j->f->gate_mu);
    }
}

static void done(void *arg, bool ran)
{
    job *j = arg;
    wp_fx *f = j->f;
    if (!pthread_equal(pthread_self(), f->loop_thread)) f->wrong_thread = true;
    if (ran && pthread_equal(j->worker, f->loop_thread)) f->wrong_thread = true;
    f->done++;
    if (ran) f->ran++;
    else f->not_ran++;
    free(j);
    if (f->done == f->expected) rpc_loop_stop(f->loop);
}

static void on_timeout(rpc_loop *loop, void *arg)
{
    (void)arg;
    rpc_loop_stop(loop);
}

static job *new_job(wp_fx *f, bool blocks)
{
    job *j = calloc(1, sizeof *j);
    j->f = f;
    j->blocks = blocks;
    return j;
}

static void fx_init(wp_fx *f)
{
    memset(f, 0, sizeof *f);
    assert_true(mid_is_ok(rpc_loop_new(&f->loop)));
    f->loop_thread = pthread_self();
    pthread_mutex_init(&f->gate_mu, NULL);
    pthread_cond_init(&f->gate_cv, NULL);
}

static void fx_free(wp_fx *f)
{
    rpc_loop_free(f->loop);
    pthread_cond_destroy(&f->gate_cv);
    pthread_mutex_destroy(&f->gate_mu);
}

static void test_many_jobs(void **state)
{
    (void)state;
    wp_fx f;
    fx_init(&f);
    workpool *wp;
    assert_true(mid_is_ok(workpool_new(f.loop, 0, 0, &wp)));
    assert_true(workpool_threads(wp) >= 1);
    f.expected = 2000;
    for (int i = 0; i < f.expected; i++) {
        job *j = new_job(&f, false);
        mid_result r = workpool_submit(wp, work, done, j);
        if (!mid_is_ok(r)) { /* bounded: wait for room */
            free(j);
            assert_int_equal(r.err, MID_E_BUSY);
            rpc_timer *t;
            assert_true(mid_is_ok(rpc_timer_add(f.loop, 5, on_timeout, NULL, &t)));
            assert_true(mid_is_ok(rpc_loop_run(f.loop)));
            i--;
        }
    }
    rpc_timer *t;
    assert_true(mid_is_ok(rpc_timer_add(f.loop, 20000, on_timeout, NULL, &t)));
    assert_true(mid_is_ok(rpc_loop_run(f.loop)));
    rpc_timer_cancel(f.loop, t);
    assert_int_equal(f.done, f.expected);
    assert_int_equal(f.ran, f.expected);
    assert_false(f.wrong_thread);
    assert_int_equal(workpool_pending(wp), 0);
    workpool_free(wp);
    fx_free(&f);
}

static void test_busy_and_shutdown(void **state)
{
    (void)state;
    wp_fx f;
    fx_init(&f);
    workpool *wp;
    assert_true(mid_is_ok(workpool_new(f.loop, 1, 2, &wp)));
    assert_false(mid_is_ok(workpool_submit(wp, NULL, done, NULL)));
    /* one job blocks the only worker; two wait; the fourth is refused */
    job *jobs[4];
    for (int i = 0; i < 4; i++) jobs[i] = new_job(&f, i == 0);
    assert_true(mid_is_ok(workpool_submit(wp, work, done, jobs[0])));
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL); /* let the worker take it */
    assert_true(mid_is_ok(workpool_submit(wp, work, done, jobs[1])));
    assert_true(mid_is_ok(workpool_submit(wp, work, done, jobs[2])));
    mid_result r = workpool_submit(wp, work, done, jobs[3]);
    assert_int_equal(r.err, MID_E_BUSY);
    free(jobs[3]);
    assert_int_equal(workpool_pending(wp), 3);
    /* open the gate from "another thread" just before shutdown: the running
     * job finishes (ran), the waiting ones are cancelled (not ran) */
    pthread_mutex_lock(&f.gate_mu);
    f.gate_open = true;
    pthread_cond_broadcast(&f.gate_cv);
    pthread_mutex_unlock(&f.gate_mu);
    workpool_free(wp);
    /* whatever ran was delivered; whatever did not was refused */
    assert_int_equal(f.done, 3);
    assert_int_equal(f.ran + f.not_ran, 3);
    assert_true(f.ran >= 1);
    assert_false(f.wrong_thread);
    fx_free(&f); /* runs a pending delivery post, if any, which frees the pool */
}

static void test_bad_args(void **state)
{
    (void)state;
    wp_fx f;
    fx_init(&f);
    workpool *wp = NULL;
    assert_false(mid_is_ok(workpool_new(f.loop, WORKPOOL_THREADS_MAX + 1, 0, &wp)));
    assert_null(wp);
    workpool_free(NULL);
    fx_free(&f);
}

int run_workpool_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_many_jobs),
        cmocka_unit_test(test_busy_and_shutdown),
        cmocka_unit_test(test_bad_args),
    };
    return cmocka_run_group_tests_name("workpool", tests, NULL, NULL);
}
