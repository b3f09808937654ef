/* Client side: channels, unary calls and streams driven by the loop.
 *
 * A unary call is one batch with every op and one tag. A stream has
 * t_start (initial metadata; for server-streaming also the request and the
 * half-close), t_status (RECV_STATUS_ON_CLIENT, armed at once), t_recv (one
 * RECV_MESSAGE at a time, paused on request) and t_send (one send at a
 * time from the bounded queue). `refs` counts outstanding tags; the stream
 * is freed, after on_done, when it is zero and the status has arrived. */
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "lib/rpc_int.h"

#define RPC_MAX_CLIENT_MD 32

struct rpc_channel {
    rpc_link link;
    rpc_loop *loop;
    grpc_channel *gc;
    size_t max_msg;
};

struct rpc_stream {
    rpc_link link;
    rpc_loop *loop;
    rpc_channel *ch; /* NULL once the channel was freed */
    bool unary;
    rpc_kind kind;
    size_t max_msg;
    rpc_tag t_start, t_recv, t_send, t_status;
    grpc_call *gc;
    int refs;
    const ProtobufCMessageDescriptor *resp_desc;
    grpc_metadata *md;
    size_t n_md;
    grpc_metadata_array init_md, trail_md;
    grpc_status_code status;
    grpc_slice details;
    grpc_byte_buffer *recv_bb;
    grpc_byte_buffer *first; /* unary / server-stream request */
    rpc_sendq q;
    bool start_done, recv_armed, recv_eof, paused, close_pending, close_sent, status_done;
    bool bad_response;
    rpc_code bad_code;
    rpc_stream_handler h;
    rpc_unary_cb cb;
    void *arg;
};

mid_result rpc_channel_new(rpc_loop *loop, const char *target, const rpc_tls *tls,
                           size_t max_msg_bytes, rpc_channel **out)
{
    *out = NULL;
    MID_ENSURE(target && *target, MID_E_INVALID, "no target");
    MID_ENSURE(!loop->closing, MID_E_STATE, "loop is shutting down");
    if (!max_msg_bytes) max_msg_bytes = RPC_DEFAULT_MAX_MSG;
    MID_ENSURE(max_msg_bytes <= INT32_MAX, MID_E_INVALID, "max message size");
    rpc_channel *ch = calloc(1, sizeof *ch);
    MID_ENSURE_MEM(ch);
    grpc_channel_credentials *creds =
        tls ? rpc_tls_client_creds(tls) : grpc_insecure_credentials_create();
    if (!creds) {
        free(ch);
        MID_BAIL(MID_E_CRYPTO, "bad TLS material for %s", target);
    }
    static char k0[] = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, k1[] = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
                k2[] = GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, k3[] = GRPC_ARG_KEEPALIVE_TIME_MS,
                k4[] = GRPC_ARG_KEEPALIVE_TIMEOUT_MS, k5[] = GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
    grpc_arg args[6];
    memset(args, 0, sizeof args);
    /* own connection per channel: a stalled stream on one channel must not
     * share a transport with another by accident */
    char *keys[5] = {k0, k1, k2, k3, k4};
    int vals[5] = {(int)max_msg_bytes, (int)max_msg_bytes, 1, 60000, 20000};
    for (int i = 0; i < 5; i++) {
        args[i].type = GRPC_ARG_INTEGER;
        args[i].key = keys[i];
        args[i].value.integer = vals[i];
    }
    size_t nargs = 5;
    if (tls && tls->server_name) {
        args[5].type = GRPC_ARG_STRING;
        args[5].key = k5;
        args[5].value.string = (char *)tls->server_name;
        nargs = 6;
    }
    grpc_channel_args ca = {nargs, args};
    ch->gc = grpc_channel_create(target, creds, &ca);
    grpc_channel_credentials_release(creds);
    if (!ch->gc) {
        free(ch);
        MID_BAIL(MID_E_INVALID, "cannot create a channel to %s", target);
    }
    ch->loop = loop;
    ch->max_msg = max_msg_bytes;
    rpc_list_push(&loop->channels, &ch->link);
    *out = ch;
    return mid_ok();
}

void rpc_channel_free(rpc_channel *ch)
{
    if (!ch) return;
    rpc_loop *loop = ch->loop;
    for (rpc_link *l = loop->streams.next; l != &loop->streams; l = l->next) {
        rpc_stream *s = RPC_OWNER(l, rpc_stream, link);
        if (s->ch != ch) continue;
        s->ch = NULL;
        if (!s->status_done) grpc_call_cancel(s->gc, NULL);
    }
    rpc_list_del(&ch->link);
    grpc_channel_destroy(ch->gc); /* calls keep what they need alive */
    free(ch);
}

void rpc_channels_cancel_all(rpc_loop *loop)
{
    for (rpc_link *l = loop->streams.next; l != &loop->streams; l = l->next) {
        rpc_stream *s = RPC_OWNER(l, rpc_stream, link);
        if (!s->status_done) grpc_call_cancel(s->gc, NULL);
    }
}

void rpc_channels_free_all(rpc_loop *loop)
{
    while (!rpc_list_empty(&loop->channels))
        rpc_channel_free(RPC_OWNER(loop->channels.next, rpc_channel, link));
}

/* ---- streams ---- */

static void stream_free(rpc_stream *s)
{
    rpc_list_del(&s->link);
    if (s->gc) grpc_call_unref(s->gc);
    for (size_t i = 0; i < s->n_md; i++) {
        grpc_slice_unref(s->md[i].key);
        grpc_slice_unref(s->md[i].value);
    }
    free(s->md);
    grpc_metadata_array_destroy(&s->init_md);
    grpc_metadata_array_destroy(&s->trail_md);
    grpc_slice_unref(s->details);
    if (s->recv_bb) grpc_byte_buffer_destroy(s->recv_bb);
    if (s->first) grpc_byte_buffer_destroy(s->first);
    rpc_sendq_free(&s->q);
    free(s);
}

static mid_result stream_new(rpc_channel *ch, const char *method, const rpc_call_opts *opts,
                             const ProtobufCMessageDescriptor *resp_desc, rpc_stream **out)
{
    *out = NULL;
    MID_ENSURE(!ch->loop->closing, MID_E_STATE, "loop is shutting down");
    MID_ENSURE(method && method[0] == '/' && resp_desc, MID_E_INVALID, "method and descriptor");
    rpc_call_opts o = {0};
    if (opts) o = *opts;
    MID_ENSURE(o.n_md <= RPC_MAX_CLIENT_MD, MID_E_TOO_LARGE, "too much metadata");
    rpc_stream *s = calloc(1, sizeof *s);
    MID_ENSURE_MEM(s);
    s->loop = ch->loop;
    s->ch = ch;
    s->max_msg = ch->max_msg;
    s->resp_desc = resp_desc;
    s->details = grpc_empty_slice();
    s->t_start.kind = RPC_TAG_STREAM_START;
    s->t_recv.kind = RPC_TAG_STREAM_RECV;
    s->t_send.kind = RPC_TAG_STREAM_SEND;
    s->t_status.kind = RPC_TAG_STREAM_STATUS;
    grpc_metadata_array_init(&s->init_md);
    grpc_metadata_array_init(&s->trail_md);
    rpc_list_init(&s->link);
    mid_result r = rpc_sendq_init(&s->q, o.send_queue_len ? o.send_queue_len : RPC_DEFAULT_SENDQ);
    if (mid_is_ok(r) && o.n_md) {
        s->md = calloc(o.n_md, sizeof *s->md);
        if (!s->md) r = mid_fail(MID_E_NOMEM, __FILE__, __LINE__, "out of memory");
        for (size_t i = 0; s->md && i < o.n_md; i++) {
            s->md[i].key = grpc_slice_from_copied_string(o.md[i].key);
            s->md[i].value = grpc_slice_from_copied_string(o.md[i].value);
            s->n_md++;
        }
    }
    if (!mid_is_ok(r)) {
        stream_free(s);
        return r;
    }
    grpc_slice m = grpc_slice_from_copied_string(method);
    s->gc = grpc_channel_create_call(ch->gc, NULL, GRPC_PROPAGATE_DEFAULTS, ch->loop->cq, m, NULL,
                                     rpc_deadline_ts(o.timeout_ms), NULL);
    grpc_slice_unref(m);
    if (!s->gc) {
        stream_free(s);
        MID_BAIL(MID_E_INTERNAL, "cannot create a call to %s", method);
    }
    rpc_list_push(&ch->loop->streams, &s->link);
    *out = s;
    return mid_ok();
}

static void op_initial_md(rpc_stream *s, grpc_op *op, bool wait_for_ready)
{
    memset(op, 0, sizeof *op);
    op->op = GRPC_OP_SEND_INITIAL_METADATA;
    op->data.send_initial_metadata.count = s->n_md;
    op->data.send_initial_metadata.metadata = s->md;
    if (wait_for_ready)
        op->flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY |
                    GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET;
}

static bool batch(rpc_stream *s, const grpc_op *ops, size_t n, rpc_tag *tag)
{
    grpc_call_error e = grpc_call_start_batch(s->gc, ops, n, tag, NULL);
    if (e != GRPC_CALL_OK) {
        LOG_ERROR("rpc: client start_batch failed (%d)", (int)e);
        grpc_call_cancel(s->gc, NULL);
        return false;
    }
    s->refs++;
    return true;
}

mid_result rpc_unary(rpc_channel *ch, const char *method, const ProtobufCMessage *req,
                     const ProtobufCMessageDescriptor *resp_desc, const rpc_call_opts *opts,
                     rpc_unary_cb cb, void *arg)
{
    MID_ENSURE(cb != NULL, MID_E_INVALID, "no callback");
    grpc_byte_buffer *bb;
    MID_GUARD(rpc_pack(req, ch->max_msg, &bb));
    rpc_stream *s;
    mid_result r = stream_new(ch, method, opts, resp_desc, &s);
    if (!mid_is_ok(r)) {
        grpc_byte_buffer_destroy(bb);
        return r;
    }
    s->unary = true;
    s->kind = RPC_UNARY;
    s->cb = cb;
    s->arg = arg;
    s->first = bb;
    s->t_start.kind = RPC_TAG_CLIENT_UNARY;
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    op_initial_md(s, &ops[0], opts && opts->wait_for_ready);
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->init_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &s->recv_bb;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &s->trail_md;
    ops[5].data.recv_status_on_client.status = &s->status;
    ops[5].data.recv_status_on_client.status_details = &s->details;
    if (!batch(s, ops, 6, &s->t_start)) {
        stream_free(s);
        MID_BAIL(MID_E_INTERNAL, "cannot start %s", method);
    }
    return mid_ok();
}

static void arm_recv(rpc_stream *s)
{
    if (s->recv_armed || s->recv_eof || s->paused || s->status_done) return;
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    if (!s->start_done) { /* first read also takes the initial metadata */
        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[n++].data.recv_initial_metadata.recv_initial_metadata = &s->init_md;
        s->start_done = true;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n++].data.recv_message.recv_message = &s->recv_bb;
    if (batch(s, ops, n, &s->t_recv)) s->recv_armed = true;
}

static void pump(rpc_stream *s)
{
    if (s->q.inflight || s->status_done || s->t_start.kind == RPC_TAG_CLIENT_UNARY) return;
    if (s->refs > 0 && s->first) return; /* start batch still owns the send slot */
    grpc_op op;
    memset(&op, 0, sizeof op);
    grpc_byte_buffer *bb = rpc_sendq_pop(&s->q);
    if (bb) {
        op.op = GRPC_OP_SEND_MESSAGE;
        op.data.send_message.send_message = bb;
        s->q.inflight = bb;
    } else if (s->close_pending && !s->close_sent) {
        op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        s->close_sent = true;
    } else {
        return;
    }
    if (!batch(s, &op, 1, &s->t_send)) {
        if (bb) grpc_byte_buffer_destroy(bb);
        s->q.inflight = NULL;
    }
}

mid_result rpc_stream_open(rpc_channel *ch, const char *method, rpc_kind kind,
                           const ProtobufCMessage *first,
                           const ProtobufCMessageDescriptor *resp_desc, const rpc_call_opts *opts,
                           const rpc_stream_handler *h, void *arg, rpc_stream **out)
{
    *out = NULL;
    MID_ENSURE(h && h->on_done && h->on_message, MID_E_INVALID, "stream handlers required");
    MID_ENSURE(kind == RPC_SERVER_STREAM || kind == RPC_BIDI, MID_E_INVALID, "stream kind");
    MID_ENSURE(kind == RPC_BIDI || first, MID_E_INVALID, "server streaming needs a request");
    grpc_byte_buffer *bb = NULL;
    if (first) MID_GUARD(rpc_pack(first, ch->max_msg, &bb));
    rpc_stream *s;
    mid_result r = stream_new(ch, method, opts, resp_desc, &s);
    if (!mid_is_ok(r)) {
        if (bb) grpc_byte_buffer_destroy(bb);
        return r;
    }
    s->kind = kind;
    s->h = *h;
    s->arg = arg;
    grpc_op ops[3];
    size_t n = 0;
    op_initial_md(s, &ops[n++], opts && opts->wait_for_ready);
    if (bb) {
        s->first = bb;
        memset(&ops[n], 0, sizeof ops[n]);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = bb;
    }
    if (kind == RPC_SERVER_STREAM) {
        memset(&ops[n], 0, sizeof ops[n]);
        ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        s->close_pending = s->close_sent = true;
    }
    grpc_op st;
    memset(&st, 0, sizeof st);
    st.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    st.data.recv_status_on_client.trailing_metadata = &s->trail_md;
    st.data.recv_status_on_client.status = &s->status;
    st.data.recv_status_on_client.status_details = &s->details;
    if (!batch(s, ops, n, &s->t_start) || !batch(s, &st, 1, &s->t_status)) {
        /* the call was cancelled by batch(); let the completions free it */
        if (s->refs == 0) {
            stream_free(s);
            MID_BAIL(MID_E_INTERNAL, "cannot start %s", method);
        }
    }
    arm_recv(s);
    *out = s;
    return mid_ok();
}

mid_result rpc_stream_send(rpc_stream *s, const ProtobufCMessage *msg)
{
    MID_ENSURE(!s->status_done && !s->close_pending, MID_E_STATE, "stream closed for sending");
    grpc_byte_buffer *bb;
    MID_GUARD(rpc_pack(msg, s->max_msg, &bb));
    mid_result r = rpc_sendq_push(&s->q, bb);
    if (!mid_is_ok(r)) {
        grpc_byte_buffer_destroy(bb);
        return r;
    }
    pump(s);
    return mid_ok();
}

mid_result rpc_stream_close_send(rpc_stream *s)
{
    MID_ENSURE(!s->status_done && !s->close_pending, MID_E_STATE, "stream closed for sending");
    s->close_pending = true;
    pump(s);
    return mid_ok();
}

void rpc_stream_pause(rpc_stream *s, bool paused)
{
    s->paused = paused;
    if (!paused) arm_recv(s);
}

void rpc_stream_cancel(rpc_stream *s)
{
    if (!s->status_done) grpc_call_cancel(s->gc, NULL);
}

/* ---- completions ---- */

static void final_status(rpc_stream *s, rpc_status *st, char *buf, size_t cap)
{
    size_t n = GRPC_SLICE_LENGTH(s->details);
    if (n >= cap) n = cap - 1;
    memcpy(buf, GRPC_SLICE_START_PTR(s->details), n);
    buf[n] = '\0';
    st->code = (rpc_code)s->status;
    st->message = buf;
    if (s->bad_response && s->status == GRPC_STATUS_OK) {
        st->code = s->bad_code;
        st->message = "malformed or oversized response";
    }
}

static void maybe_done(rpc_stream *s)
{
    if (s->refs > 0 || !s->status_done) return;
    char buf[RPC_MAX_DETAILS + 1];
    rpc_status st;
    final_status(s, &st, buf, sizeof buf);
    s->h.on_done(s, &st, s->arg);
    stream_free(s);
}

static void on_unary(rpc_stream *s)
{
    s->refs--;
    s->status_done = true;
    char buf[RPC_MAX_DETAILS + 1];
    rpc_status st;
    final_status(s, &st, buf, sizeof buf);
    arena *a = NULL;
    ProtobufCMessage *resp = NULL;
    if (st.code == RPC_OK) {
        rpc_unpack_res ur = RPC_UNPACK_TOO_LARGE;
        if (!s->recv_bb) {
            st.code = RPC_INTERNAL;
            st.message = "no response message";
        } else if (mid_is_ok(arena_new(4 * s->max_msg, &a)) &&
                   (ur = rpc_unpack(s->recv_bb, s->resp_desc, s->max_msg, a, &resp)) !=
                       RPC_UNPACK_OK) {
            st.code = ur == RPC_UNPACK_TOO_LARGE ? RPC_RESOURCE_EXHAUSTED : RPC_INTERNAL;
            st.message = "malformed or oversized response";
        } else if (!a) {
            st.code = RPC_RESOURCE_EXHAUSTED;
            st.message = "out of memory";
        }
    }
    s->cb(&st, st.code == RPC_OK ? resp : NULL, s->arg);
    arena_free(a);
    stream_free(s);
}

static void on_recv(rpc_stream *s, bool ok)
{
    s->refs--;
    s->recv_armed = false;
    grpc_byte_buffer *bb = s->recv_bb;
    s->recv_bb = NULL;
    if (!ok || !bb) {
        s->recv_eof = true;
    } else {
        arena *a = NULL;
        ProtobufCMessage *msg = NULL;
        rpc_unpack_res ur = RPC_UNPACK_TOO_LARGE;
        if (mid_is_ok(arena_new(4 * s->max_msg, &a)))
            ur = rpc_unpack(bb, s->resp_desc, s->max_msg, a, &msg);
        if (ur == RPC_UNPACK_OK && !s->status_done) {
            s->h.on_message(s, msg, s->arg);
        } else if (ur != RPC_UNPACK_OK) {
            s->bad_response = true;
            s->bad_code = ur == RPC_UNPACK_TOO_LARGE ? RPC_RESOURCE_EXHAUSTED : RPC_INTERNAL;
            s->recv_eof = true;
            grpc_call_cancel_with_status(s->gc, (grpc_status_code)s->bad_code,
                                         "malformed or oversized response", NULL);
        }
        arena_free(a);
    }
    if (bb) grpc_byte_buffer_destroy(bb);
    arm_recv(s);
    maybe_done(s);
}

void rpc_on_stream_event(rpc_tag *t, bool ok)
{
    rpc_stream *s;
    switch (t->kind) {
    case RPC_TAG_CLIENT_UNARY:
        on_unary(RPC_OWNER(t, rpc_stream, t_start));
        return;
    case RPC_TAG_STREAM_START:
        s = RPC_OWNER(t, rpc_stream, t_start);
        s->refs--;
        if (s->first) grpc_byte_buffer_destroy(s->first);
        s->first = NULL;
        if (ok) pump(s);
        break;
    case RPC_TAG_STREAM_RECV:
        on_recv(RPC_OWNER(t, rpc_stream, t_recv), ok);
        return;
    case RPC_TAG_STREAM_SEND:
        s = RPC_OWNER(t, rpc_stream, t_send);
        s->refs--;
        if (s->q.inflight) grpc_byte_buffer_destroy(s->q.inflight);
        s->q.inflight = NULL;
        if (ok) pump(s);
        else rpc_sendq_clear(&s->q);
        break;
    case RPC_TAG_STREAM_STATUS:
        s = RPC_OWNER(t, rpc_stream, t_status);
        s->refs--;
        s->status_done = true;
        rpc_sendq_clear(&s->q);
        break;
    default:
        return;
    }
    maybe_done(s);
}
