#include "tests/testlib/rpc_wait.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

typedef struct {
    bool timed_out;
    rpc_timer *timer;
} run_timer;

static void on_run_timer(rpc_loop *loop, void *arg)
{
    run_timer *t = arg;
    t->timed_out = true;
    t->timer = NULL;
    rpc_loop_stop(loop);
}

bool tl_run_for(rpc_loop *loop, int64_t ms)
{
    run_timer t = {false, NULL};
    assert_true(mid_is_ok(rpc_timer_add(loop, ms, on_run_timer, &t, &t.timer)));
    assert_true(mid_is_ok(rpc_loop_run(loop)));
    if (t.timer) rpc_timer_cancel(loop, t.timer);
    return t.timed_out;
}

void tl_wait_count(rpc_loop *loop, const size_t *count, size_t want, const bool *ended, int64_t ms)
{
    while (*count < want && !*ended) assert_false(tl_run_for(loop, ms));
    assert_true(*count >= want);
}

void tl_wait_end(rpc_loop *loop, const bool *ended, int64_t ms)
{
    while (!*ended) assert_false(tl_run_for(loop, ms));
}

void tl_quiet(rpc_loop *loop, const size_t *count, const bool *ended, int64_t ms)
{
    size_t before = *count;
    bool was_ended = *ended;
    tl_run_for(loop, ms);
    assert_int_equal(*count, before);
    assert_int_equal(*ended, was_ended);
}

static void on_wait_timeout(rpc_loop *loop, void *arg)
{
    (void)arg;
    rpc_loop_stop(loop);
    fail_msg("timed out");
}

void tl_run_while(rpc_loop *loop, const bool *waiting, int64_t ms)
{
    rpc_timer *t;
    assert_true(mid_is_ok(rpc_timer_add(loop, ms, on_wait_timeout, NULL, &t)));
    while (*waiting) assert_true(mid_is_ok(rpc_loop_run(loop)));
    rpc_timer_cancel(loop, t);
}

/* On the heap: a test failing by timeout leaves the call pending until its
 * teardown frees the loop, and the answer must not land on a dead frame. */
typedef struct {
    rpc_loop *loop;
    bool waiting;
    rpc_code code;
    char *msg;
    size_t cap;
    ProtobufCMessage *resp;
} unary_wait;

static void on_unary(const rpc_status *st, const ProtobufCMessage *resp, void *arg)
{
    unary_wait *w = arg;
    w->code = st->code;
    snprintf(w->msg, w->cap, "%s", st->message ? st->message : "");
    w->resp = NULL;
    if (resp) {
        size_t n = protobuf_c_message_get_packed_size(resp);
        uint8_t *buf = malloc(n + 1);
        assert_non_null(buf);
        protobuf_c_message_pack(resp, buf);
        w->resp = protobuf_c_message_unpack(resp->descriptor, NULL, n, buf);
        free(buf);
    }
    w->waiting = false;
    rpc_loop_stop(w->loop);
}

rpc_code tl_unary(rpc_loop *loop, rpc_channel *ch, const char *method, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *desc, int64_t wait_ms, char *msg, size_t cap,
                  void *resp)
{
    unary_wait *w = calloc(1, sizeof *w);
    assert_non_null(w);
    *w = (unary_wait){.loop = loop, .waiting = true, .msg = msg, .cap = cap};
    rpc_call_opts o = {.timeout_ms = 10000};
    assert_true(mid_is_ok(rpc_unary(ch, method, req, desc, &o, on_unary, w)));
    tl_run_while(loop, &w->waiting, wait_ms);
    rpc_code code = w->code;
    if (resp) *(ProtobufCMessage **)resp = w->resp;
    else if (w->resp) protobuf_c_message_free_unpacked(w->resp, NULL);
    free(w);
    return code;
}
