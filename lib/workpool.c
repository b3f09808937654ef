/* Worker pool: a FIFO of waiting jobs under one mutex, N threads popping it,
 * and a list of finished jobs handed to the loop with at most one
 * rpc_loop_wake_post outstanding at a time (so a burst of finished jobs
 * costs one wake-up, and the loop's post ring cannot be flooded by us). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib/workpool.h"

typedef struct wp_job {
    struct wp_job *next;
    workpool_work_fn work;
    workpool_done_fn done;
    void *arg;
} wp_job;

typedef struct {
    wp_job *head, *tail;
} wp_fifo;

struct workpool {
    rpc_loop *loop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t *threads;
    unsigned nthreads;
    size_t queue_max;
    /* under mu */
    wp_fifo waiting;
    size_t nwaiting;
    wp_fifo finished;
    bool post_pending; /* a deliver() post is queued on the loop */
    bool closing;
    /* loop thread only */
    size_t inflight; /* submitted, done not yet called */
    bool zombie;     /* freed while a post was pending: deliver() frees */
};

static void fifo_push(wp_fifo *f, wp_job *j)
{
    j->next = NULL;
    if (f->tail) f->tail->next = j;
    else f->head = j;
    f->tail = j;
}

static wp_job *fifo_pop(wp_fifo *f)
{
    wp_job *j = f->head;
    if (j) {
        f->head = j->next;
        if (!f->head) f->tail = NULL;
    }
    return j;
}

static void run_done_list(workpool *wp, wp_job *j, bool ran)
{
    while (j) {
        wp_job *n = j->next;
        wp->inflight--;
        j->done(j->arg, ran);
        free(j);
        j = n;
    }
}

static void wp_destroy(workpool *wp)
{
    pthread_cond_destroy(&wp->cv);
    pthread_mutex_destroy(&wp->mu);
    free(wp->threads);
    free(wp);
}

/* On the loop thread: hands finished jobs to their done callbacks. */
static void deliver(rpc_loop *loop, void *arg)
{
    (void)loop;
    workpool *wp = arg;
    pthread_mutex_lock(&wp->mu);
    wp_job *list = wp->finished.head;
    wp->finished.head = wp->finished.tail = NULL;
    wp->post_pending = false;
    pthread_mutex_unlock(&wp->mu);
    if (wp->zombie) { /* workpool_free already delivered everything */
        wp_destroy(wp);
        return;
    }
    run_done_list(wp, list, true);
}

/* Worker side: asks the loop to deliver; retries while its post ring is
 * full, gives up once the pool closes (workpool_free delivers then). */
static void request_delivery(workpool *wp)
{
    for (;;) {
        mid_result r = rpc_loop_wake_post(wp->loop, deliver, wp);
        if (mid_is_ok(r)) return;
        pthread_mutex_lock(&wp->mu);
        bool give_up = r.err != MID_E_BUSY || wp->closing;
        if (give_up) wp->post_pending = false;
        pthread_mutex_unlock(&wp->mu);
        if (give_up) return;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

static void *worker(void *arg)
{
    workpool *wp = arg;
    pthread_mutex_lock(&wp->mu);
    for (;;) {
        while (!wp->closing && wp->waiting.head == NULL) pthread_cond_wait(&wp->cv, &wp->mu);
        if (wp->closing) break;
        wp_job *j = fifo_pop(&wp->waiting);
        wp->nwaiting--;
        pthread_mutex_unlock(&wp->mu);
        j->work(j->arg);
        pthread_mutex_lock(&wp->mu);
        fifo_push(&wp->finished, j);
        if (!wp->post_pending && !wp->closing) {
            wp->post_pending = true;
            pthread_mutex_unlock(&wp->mu);
            request_delivery(wp);
            pthread_mutex_lock(&wp->mu);
        }
    }
    pthread_mutex_unlock(&wp->mu);
    return NULL;
}

unsigned workpool_online_cores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) return 1;
    if (n > WORKPOOL_THREADS_MAX) return WORKPOOL_THREADS_MAX;
    return (unsigned)n;
}

mid_result workpool_new(rpc_loop *loop, unsigned threads, size_t queue_max, workpool **out)
{
    *out = NULL;
    MID_ENSURE(loop != NULL, MID_E_INVALID, "workpool needs a loop");
    MID_ENSURE(threads <= WORKPOOL_THREADS_MAX, MID_E_INVALID, "%u worker threads is over %d",
               threads, WORKPOOL_THREADS_MAX);
    workpool *wp = calloc(1, sizeof *wp);
    MID_ENSURE_MEM(wp);
    wp->loop = loop;
    wp->nthreads = threads ? threads : workpool_online_cores();
    wp->queue_max = queue_max ? queue_max : WORKPOOL_QUEUE_DEFAULT;
    wp->threads = calloc(wp->nthreads, sizeof *wp->threads);
    if (!wp->threads) {
        free(wp);
        MID_BAIL(MID_E_NOMEM, "out of memory");
    }
    pthread_mutex_init(&wp->mu, NULL);
    pthread_cond_init(&wp->cv, NULL);
    for (unsigned i = 0; i < wp->nthreads; i++) {
        int rc = pthread_create(&wp->threads[i], NULL, worker, wp);
        if (rc != 0) {
            wp->nthreads = i;
            workpool_free(wp);
            MID_BAIL(MID_E_IO, "cannot start worker thread: %s", strerror(rc));
        }
    }
    *out = wp;
    return mid_ok();
}

mid_result workpool_submit(workpool *wp, workpool_work_fn work, workpool_done_fn done, void *arg)
{
    MID_ENSURE(wp != NULL && work != NULL && done != NULL, MID_E_INVALID,
               "workpool_submit needs a pool, work and done");
    wp_job *j = malloc(sizeof *j);
    MID_ENSURE_MEM(j);
    *j = (wp_job){.work = work, .done = done, .arg = arg};
    pthread_mutex_lock(&wp->mu);
    if (wp->closing || wp->nwaiting >= wp->queue_max) {
        bool closing = wp->closing;
        pthread_mutex_unlock(&wp->mu);
        free(j);
        if (closing) MID_BAIL(MID_E_STATE, "worker pool is shutting down");
        MID_BAIL(MID_E_BUSY, "worker pool queue is full (%zu jobs waiting)", wp->queue_max);
    }
    fifo_push(&wp->waiting, j);
    wp->nwaiting++;
    wp->inflight++;
    pthread_cond_signal(&wp->cv);
    pthread_mutex_unlock(&wp->mu);
    return mid_ok();
}

unsigned workpool_threads(const workpool *wp) { return wp->nthreads; }

size_t workpool_pending(const workpool *wp) { return wp->inflight; }

void workpool_free(workpool *wp)
{
    if (!wp) return;
    pthread_mutex_lock(&wp->mu);
    wp->closing = true;
    pthread_cond_broadcast(&wp->cv);
    pthread_mutex_unlock(&wp->mu);
    for (unsigned i = 0; i < wp->nthreads; i++) pthread_join(wp->threads[i], NULL);

    /* No worker runs any more: deliver what finished, cancel what waited. */
    pthread_mutex_lock(&wp->mu);
    wp_job *fin = wp->finished.head, *wait = wp->waiting.head;
    wp->finished.head = wp->finished.tail = NULL;
    wp->waiting.head = wp->waiting.tail = NULL;
    wp->nwaiting = 0;
    bool pending = wp->post_pending;
    pthread_mutex_unlock(&wp->mu);
    run_done_list(wp, fin, true);
    run_done_list(wp, wait, false);
    if (wp->inflight != 0) LOG_ERROR("workpool: %zu jobs unaccounted for at shutdown", wp->inflight);
    if (pending) wp->zombie = true; /* deliver() will free it */
    else wp_destroy(wp);
}
