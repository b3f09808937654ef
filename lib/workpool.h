/* A fixed pool of worker threads for blocking work (signing, durable store
 * writes) whose results are delivered back on an rpc loop.
 *
 * The loop thread submits a job: `work(arg)` runs on a worker thread, then
 * `done(arg, ran)` runs on the loop thread (through rpc_loop_wake_post), so
 * a service never touches its calls off the loop and never blocks the loop.
 * Jobs start in submission order; they finish in any order.
 *
 * Shutdown: workpool_free stops accepting jobs, lets running jobs finish,
 * calls `done(arg, false)` for queued jobs that never ran, and delivers every
 * outstanding `done` before it returns (on the calling thread), so nothing
 * of a job outlives it. Call it on the loop thread, or after rpc_loop_run
 * returned and before rpc_loop_free.
 */
#ifndef MESHID_LIB_WORKPOOL_H
#define MESHID_LIB_WORKPOOL_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/result.h"
#include "lib/rpc.h"

typedef struct workpool workpool;

#define WORKPOOL_THREADS_MAX 256
#define WORKPOOL_QUEUE_DEFAULT 1024

/* Runs on a worker thread; must not call rpc_* functions other than
 * rpc_loop_wake_post / rpc_loop_stop. */
typedef void (*workpool_work_fn)(void *arg);
/* Runs on the loop thread after work (ran == true) or instead of it when the
 * pool shut down first (ran == false). Owns arg from then on. */
typedef void (*workpool_done_fn)(void *arg, bool ran);

/* Starts `threads` workers (0: one per online core, at most
 * WORKPOOL_THREADS_MAX) with room for `queue_max` waiting jobs (0:
 * WORKPOOL_QUEUE_DEFAULT). MID_E_INVALID for bad sizes, MID_E_NOMEM, MID_E_IO
 * when a thread cannot be created. */
MID_RESULT workpool_new(rpc_loop *loop, unsigned threads, size_t queue_max, workpool **out);

/* Online CPUs, 1..WORKPOOL_THREADS_MAX. */
unsigned workpool_online_cores(void);

/* Queues a job; loop thread only. `work` and `done` are required. On
 * failure nothing is called and the caller keeps arg: MID_E_BUSY when
 * queue_max jobs are already waiting, MID_E_STATE after workpool_free
 * started. */
MID_RESULT workpool_submit(workpool *wp, workpool_work_fn work, workpool_done_fn done, void *arg);

/* Number of worker threads. */
unsigned workpool_threads(const workpool *wp);

/* Jobs waiting or running (loop thread; for tests and metrics). */
size_t workpool_pending(const workpool *wp);

/* See the header comment. NULL is a no-op. */
void workpool_free(workpool *wp);

#endif
