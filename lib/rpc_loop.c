/* The event loop: one completion queue, one thread, timers, cross-thread
 * wake-ups, the single tag dispatch switch, and the shutdown drain.
 *
 * Wake-ups: gRPC core's C API cannot post a tag to a queue. We park a client
 * call with WAIT_FOR_READY on a channel to a Unix path nobody can listen on
 * (/dev/null is not a directory), with RECV_STATUS_ON_CLIENT pending on our
 * queue. Any thread may grpc_call_cancel() it; its tag then pops out of
 * grpc_completion_queue_next and we run the posted functions. Cancel and
 * unref are guarded by wake_mu; the call is re-armed before the posts are
 * taken, so a post that races with the drain kicks the new call. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/support/log.h>
#include <grpc/support/time.h>

#include "lib/log.h"
#include "lib/rpc_int.h"

#define RPC_WAKE_TARGET "unix:/dev/null/meshid-wake"
#define RPC_DRAIN_WARN_MS 10000

/* ---- gRPC logging -> lib/log.h ---- */

static void grpc_log_to_ours(gpr_log_func_args *a)
{
    /* gRPC's INFO is chatty and its ERROR mostly reports peers' mistakes
     * (failed handshakes): shift both down one level. */
    log_level lvl = a->severity == GPR_LOG_SEVERITY_ERROR ? LOG_LVL_WARN : LOG_LVL_DEBUG;
    log_msg(lvl, a->file ? a->file : "grpc", a->line, "grpc: %s", a->message ? a->message : "");
}

static pthread_once_t log_once = PTHREAD_ONCE_INIT;
static void route_logs(void)
{
    gpr_set_log_function(grpc_log_to_ours);
    gpr_set_log_verbosity(GPR_LOG_SEVERITY_INFO);
}

/* ---- time ---- */

int64_t rpc_now_ms(void)
{
    gpr_timespec t = gpr_now(GPR_CLOCK_MONOTONIC);
    return t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

gpr_timespec rpc_deadline_ts(int64_t timeout_ms)
{
    if (timeout_ms <= 0) return gpr_inf_future(GPR_CLOCK_MONOTONIC);
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                        gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
}

/* ---- wake-up call ---- */

/* Arms a fresh wake call. Caller holds wake_mu. */
static void wake_arm_locked(rpc_loop *loop)
{
    if (loop->wake_closed) return;
    grpc_call *c = grpc_channel_create_call(loop->wake_ch, NULL, GRPC_PROPAGATE_DEFAULTS, loop->cq,
                                            grpc_slice_from_static_string("/meshid.Wake/Wait"),
                                            NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (!c) {
        LOG_ERROR("rpc: cannot create the wake-up call");
        return;
    }
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY |
                   GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET;
    ops[1].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    grpc_metadata_array_init(&loop->wake_md);
    ops[1].data.recv_status_on_client.trailing_metadata = &loop->wake_md;
    ops[1].data.recv_status_on_client.status = &loop->wake_status;
    ops[1].data.recv_status_on_client.status_details = &loop->wake_details;
    grpc_call_error e = grpc_call_start_batch(c, ops, 2, &loop->wake_tag, NULL);
    if (e != GRPC_CALL_OK) {
        LOG_ERROR("rpc: wake-up batch failed (%d)", (int)e);
        grpc_metadata_array_destroy(&loop->wake_md);
        grpc_call_unref(c);
        return;
    }
    loop->wake_call = c;
    loop->wake_pending = true;
    loop->wake_kicked = false;
}

/* Caller holds wake_mu. */
static void wake_kick_locked(rpc_loop *loop)
{
    if (loop->wake_call && !loop->wake_kicked) {
        loop->wake_kicked = true;
        grpc_call_cancel(loop->wake_call, NULL);
    }
}

static void on_wake(rpc_loop *loop)
{
    pthread_mutex_lock(&loop->wake_mu);
    if (loop->wake_call) grpc_call_unref(loop->wake_call);
    loop->wake_call = NULL;
    loop->wake_pending = false;
    grpc_metadata_array_destroy(&loop->wake_md);
    grpc_slice_unref(loop->wake_details);
    loop->wake_details = grpc_empty_slice();
    wake_arm_locked(loop);
    pthread_mutex_unlock(&loop->wake_mu);
    rpc_run_posts(loop);
}

void rpc_run_posts(rpc_loop *loop)
{
    /* Run at most the posts present now, so a post that re-posts itself
     * cannot starve the queue. */
    pthread_mutex_lock(&loop->wake_mu);
    size_t n = loop->post_count;
    pthread_mutex_unlock(&loop->wake_mu);
    for (size_t i = 0; i < n; i++) {
        pthread_mutex_lock(&loop->wake_mu);
        rpc_post p = loop->posts[loop->post_head];
        loop->post_head = (loop->post_head + 1) % RPC_WAKE_QUEUE_MAX;
        loop->post_count--;
        pthread_mutex_unlock(&loop->wake_mu);
        p.fn(loop, p.arg);
    }
}

mid_result rpc_loop_wake_post(rpc_loop *loop, rpc_fn fn, void *arg)
{
    MID_ENSURE(fn != NULL, MID_E_INVALID, "no function");
    pthread_mutex_lock(&loop->wake_mu);
    if (loop->wake_closed) {
        pthread_mutex_unlock(&loop->wake_mu);
        MID_BAIL(MID_E_STATE, "loop is shutting down");
    }
    if (loop->post_count == RPC_WAKE_QUEUE_MAX) {
        pthread_mutex_unlock(&loop->wake_mu);
        MID_BAIL(MID_E_BUSY, "wake-up queue full");
    }
    loop->posts[(loop->post_head + loop->post_count) % RPC_WAKE_QUEUE_MAX] = (rpc_post){fn, arg};
    loop->post_count++;
    wake_kick_locked(loop);
    pthread_mutex_unlock(&loop->wake_mu);
    return mid_ok();
}

/* ---- timers: a sorted list; O(n) insert is fine for the few we use ---- */

mid_result rpc_timer_add(rpc_loop *loop, int64_t delay_ms, rpc_fn fn, void *arg, rpc_timer **out)
{
    if (out) *out = NULL;
    MID_ENSURE(fn != NULL && delay_ms >= 0, MID_E_INVALID, "bad timer");
    MID_ENSURE(!loop->closing, MID_E_STATE, "loop is shutting down");
    rpc_timer *t = calloc(1, sizeof *t);
    MID_ENSURE_MEM(t);
    /* round now up: a timer may fire late, never early */
    gpr_timespec now = gpr_now(GPR_CLOCK_MONOTONIC);
    t->due_ms = now.tv_sec * 1000 + (now.tv_nsec + 999999) / 1000000 + delay_ms;
    t->seq = loop->timer_seq++;
    t->fn = fn;
    t->arg = arg;
    rpc_link *pos = loop->timers.next;
    while (pos != &loop->timers && RPC_OWNER(pos, rpc_timer, link)->due_ms <= t->due_ms)
        pos = pos->next;
    rpc_list_push(pos, &t->link); /* inserts before pos */
    if (out) *out = t;
    return mid_ok();
}

void rpc_timer_cancel(rpc_loop *loop, rpc_timer *t)
{
    (void)loop;
    if (!t) return;
    rpc_list_del(&t->link);
    free(t);
}

static void run_timers(rpc_loop *loop)
{
    int64_t now = rpc_now_ms();
    /* Fire only timers due now; ones added by callbacks wait a turn. */
    while (!rpc_list_empty(&loop->timers)) {
        rpc_timer *t = RPC_OWNER(loop->timers.next, rpc_timer, link);
        if (t->due_ms > now) break;
        rpc_list_del(&t->link);
        rpc_fn fn = t->fn;
        void *arg = t->arg;
        free(t);
        fn(loop, arg);
        if (atomic_load(&loop->stop)) break;
    }
}

/* ---- the dispatch switch ---- */

static void dispatch(rpc_loop *loop, rpc_tag *t, bool ok)
{
    switch (t->kind) {
    case RPC_TAG_WAKE:
        on_wake(loop);
        break;
    case RPC_TAG_SERVER_SHUTDOWN:
        rpc_on_server_shutdown(RPC_OWNER(t, rpc_gsrv, shutdown_tag), ok);
        break;
    case RPC_TAG_NEW_CALL:
        rpc_on_new_call(rpc_call_from_tag(t), ok);
        break;
    case RPC_TAG_NEW_GENERIC:
        rpc_on_new_generic(rpc_call_from_tag(t), ok);
        break;
    case RPC_TAG_CALL_RECV:
        rpc_on_call_recv(rpc_call_from_tag(t), ok);
        break;
    case RPC_TAG_CALL_SEND:
        rpc_on_call_send(rpc_call_from_tag(t), ok);
        break;
    case RPC_TAG_CALL_CLOSE:
        rpc_on_call_close(rpc_call_from_tag(t), ok);
        break;
    case RPC_TAG_CLIENT_UNARY:
    case RPC_TAG_STREAM_START:
    case RPC_TAG_STREAM_RECV:
    case RPC_TAG_STREAM_SEND:
    case RPC_TAG_STREAM_STATUS:
        rpc_on_stream_event(t, ok);
        break;
    default:
        LOG_ERROR("rpc: unknown completion tag kind %d", (int)t->kind);
        break;
    }
}

/* ---- lifecycle ---- */

mid_result rpc_loop_new(rpc_loop **out)
{
    *out = NULL;
    pthread_once(&log_once, route_logs);
    rpc_loop *loop = calloc(1, sizeof *loop);
    MID_ENSURE_MEM(loop);
    grpc_init();
    pthread_mutex_init(&loop->wake_mu, NULL);
    rpc_list_init(&loop->timers);
    rpc_list_init(&loop->servers);
    rpc_list_init(&loop->channels);
    rpc_list_init(&loop->streams);
    atomic_init(&loop->stop, false);
    loop->wake_tag.kind = RPC_TAG_WAKE;
    loop->wake_details = grpc_empty_slice();
    loop->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    loop->wake_ch = grpc_channel_create(RPC_WAKE_TARGET, creds, NULL);
    grpc_channel_credentials_release(creds);
    pthread_mutex_lock(&loop->wake_mu);
    wake_arm_locked(loop);
    bool armed = loop->wake_call != NULL;
    pthread_mutex_unlock(&loop->wake_mu);
    if (!armed) {
        rpc_loop_free(loop);
        MID_BAIL(MID_E_INTERNAL, "cannot arm the wake-up call");
    }
    *out = loop;
    return mid_ok();
}

mid_result rpc_loop_run(rpc_loop *loop)
{
    MID_ENSURE(!loop->running && !loop->closing, MID_E_STATE, "loop already running or closing");
    loop->running = true;
    while (!atomic_load(&loop->stop)) {
        gpr_timespec deadline = gpr_inf_future(GPR_CLOCK_MONOTONIC);
        if (!rpc_list_empty(&loop->timers))
            deadline = gpr_time_from_millis(RPC_OWNER(loop->timers.next, rpc_timer, link)->due_ms,
                                            GPR_CLOCK_MONOTONIC);
        grpc_event ev = grpc_completion_queue_next(loop->cq, deadline, NULL);
        if (ev.type == GRPC_OP_COMPLETE) dispatch(loop, ev.tag, ev.success != 0);
        if (!atomic_load(&loop->stop)) run_timers(loop);
    }
    atomic_store(&loop->stop, false);
    loop->running = false;
    return mid_ok();
}

void rpc_loop_stop(rpc_loop *loop)
{
    atomic_store(&loop->stop, true);
    pthread_mutex_lock(&loop->wake_mu);
    wake_kick_locked(loop);
    pthread_mutex_unlock(&loop->wake_mu);
}

static bool drained(rpc_loop *loop)
{
    return !loop->wake_pending && rpc_list_empty(&loop->streams) && rpc_servers_all_gone(loop);
}

void rpc_loop_free(rpc_loop *loop)
{
    if (!loop) return;
    loop->closing = true;
    /* Listeners and acceptor threads first, so nothing new arrives; then
     * cancel everything and pump the queue until every owner is gone. */
    rpc_servers_shutdown_all(loop);
    rpc_channels_cancel_all(loop);
    pthread_mutex_lock(&loop->wake_mu);
    loop->wake_closed = true;
    if (loop->wake_call) grpc_call_cancel(loop->wake_call, NULL);
    pthread_mutex_unlock(&loop->wake_mu);

    int64_t start = rpc_now_ms();
    bool warned = false;
    while (!drained(loop)) {
        grpc_event ev = grpc_completion_queue_next(loop->cq, rpc_deadline_ts(200), NULL);
        if (ev.type == GRPC_OP_COMPLETE) {
            rpc_tag *t = ev.tag;
            if (t->kind == RPC_TAG_WAKE) {
                pthread_mutex_lock(&loop->wake_mu);
                if (loop->wake_call) grpc_call_unref(loop->wake_call);
                loop->wake_call = NULL;
                loop->wake_pending = false;
                grpc_metadata_array_destroy(&loop->wake_md);
                grpc_slice_unref(loop->wake_details);
                loop->wake_details = grpc_empty_slice();
                pthread_mutex_unlock(&loop->wake_mu);
            } else {
                dispatch(loop, t, ev.success != 0);
            }
        }
        rpc_run_posts(loop);
        if (!warned && rpc_now_ms() - start > RPC_DRAIN_WARN_MS) {
            warned = true;
            LOG_WARN("rpc: shutdown drain still waiting after %d ms", RPC_DRAIN_WARN_MS);
        }
    }
    rpc_run_posts(loop);
    rpc_server_free_all(loop);
    rpc_channels_free_all(loop);
    if (loop->wake_ch) grpc_channel_destroy(loop->wake_ch);
    grpc_completion_queue_shutdown(loop->cq);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(loop->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type == GRPC_OP_COMPLETE) LOG_WARN("rpc: completion after drain (tag kind %d)",
                                                  (int)((rpc_tag *)ev.tag)->kind);
    }
    grpc_completion_queue_destroy(loop->cq);
    while (!rpc_list_empty(&loop->timers)) {
        rpc_timer *t = RPC_OWNER(loop->timers.next, rpc_timer, link);
        rpc_list_del(&t->link);
        free(t);
    }
    pthread_mutex_destroy(&loop->wake_mu);
    free(loop);
    grpc_shutdown();
}
