/* Server calls: the per-call state machine.
 *
 * Tags per call: t_new (the requested call arrived), t_close
 * (RECV_CLOSE_ON_SERVER, armed as soon as the call starts), t_recv (one
 * RECV_MESSAGE at a time, bidi only), t_send (one send batch at a time:
 * a message, possibly with the final status, or the status alone). `refs`
 * counts the outstanding ones; the call is freed when it is zero and the
 * close tag has come back (or the call never started). */
#include <stdlib.h>
#include <string.h>

#include <grpc/support/time.h>

#include "lib/log.h"
#include "lib/rpc_int.h"

struct rpc_call {
    rpc_tag t_new, t_recv, t_send, t_close;
    rpc_gsrv *g;
    size_t midx;
    const rpc_method *m; /* NULL: unregistered method */
    grpc_call *gc;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_call_details details; /* unregistered only */
    grpc_byte_buffer *payload;
    grpc_byte_buffer *recv_bb;
    arena *arena;
    rpc_peer peer;
    void *user;
    int refs;
    int close_cancelled;
    bool live;     /* t_new succeeded: gc is a call */
    bool started;  /* on_start was called, so on_done will be */
    bool closed;   /* t_close came back */
    bool finishing;
    bool status_sent;
    bool md_sent;
    bool recv_armed;
    bool half_closed;
    bool send_failed;
    rpc_sendq q;
    rpc_code code;
    grpc_slice status_details;
};

rpc_call *rpc_call_from_tag(rpc_tag *t)
{
    switch (t->kind) {
    case RPC_TAG_NEW_CALL:
    case RPC_TAG_NEW_GENERIC:
        return RPC_OWNER(t, rpc_call, t_new);
    case RPC_TAG_CALL_RECV:
        return RPC_OWNER(t, rpc_call, t_recv);
    case RPC_TAG_CALL_SEND:
        return RPC_OWNER(t, rpc_call, t_send);
    case RPC_TAG_CALL_CLOSE:
        return RPC_OWNER(t, rpc_call, t_close);
    default:
        return NULL;
    }
}

static mid_result call_alloc(rpc_gsrv *g, rpc_call **out)
{
    *out = NULL;
    rpc_server *srv = g->srv;
    rpc_call *c = calloc(1, sizeof *c);
    MID_ENSURE_MEM(c);
    mid_result r = arena_new(srv->opts.max_arena_bytes, &c->arena);
    if (mid_is_ok(r)) r = rpc_sendq_init(&c->q, srv->opts.send_queue_len);
    if (!mid_is_ok(r)) {
        arena_free(c->arena);
        free(c);
        return r;
    }
    c->g = g;
    c->t_recv.kind = RPC_TAG_CALL_RECV;
    c->t_send.kind = RPC_TAG_CALL_SEND;
    c->t_close.kind = RPC_TAG_CALL_CLOSE;
    c->status_details = grpc_empty_slice();
    grpc_metadata_array_init(&c->md);
    grpc_call_details_init(&c->details);
    g->ncalls++;
    *out = c;
    return mid_ok();
}

static void call_free(rpc_call *c)
{
    rpc_gsrv *g = c->g;
    if (c->gc) grpc_call_unref(c->gc);
    grpc_metadata_array_destroy(&c->md);
    grpc_call_details_destroy(&c->details);
    if (c->payload) grpc_byte_buffer_destroy(c->payload);
    if (c->recv_bb) grpc_byte_buffer_destroy(c->recv_bb);
    grpc_slice_unref(c->status_details);
    rpc_sendq_free(&c->q);
    arena_free(c->arena);
    free(c);
    rpc_gsrv_call_gone(g);
}

static void maybe_free(rpc_call *c)
{
    if (c->refs > 0) return;
    if (c->live && !c->closed) return;
    if (c->started && c->m->h->on_done) {
        bool cancelled = c->close_cancelled != 0 || !c->status_sent || c->send_failed;
        c->m->h->on_done(c, cancelled, c->m->ctx);
    }
    call_free(c);
}

mid_result rpc_call_request(rpc_gsrv *g, size_t midx)
{
    rpc_call *c;
    MID_GUARD(call_alloc(g, &c));
    c->midx = midx;
    c->m = &g->srv->methods[midx];
    c->t_new.kind = RPC_TAG_NEW_CALL;
    grpc_call_error e = grpc_server_request_registered_call(
        g->gs, g->handles[midx], &c->gc, &c->deadline, &c->md,
        c->m->kind == RPC_BIDI ? NULL : &c->payload, g->srv->loop->cq, g->srv->loop->cq, &c->t_new);
    if (e != GRPC_CALL_OK) {
        call_free(c);
        MID_BAIL(MID_E_INTERNAL, "request_registered_call failed (%d)", (int)e);
    }
    c->refs = 1;
    return mid_ok();
}

mid_result rpc_call_request_generic(rpc_gsrv *g)
{
    rpc_call *c;
    MID_GUARD(call_alloc(g, &c));
    c->t_new.kind = RPC_TAG_NEW_GENERIC;
    grpc_call_error e = grpc_server_request_call(g->gs, &c->gc, &c->details, &c->md,
                                                 g->srv->loop->cq, g->srv->loop->cq, &c->t_new);
    if (e != GRPC_CALL_OK) {
        call_free(c);
        MID_BAIL(MID_E_INTERNAL, "request_call failed (%d)", (int)e);
    }
    c->refs = 1;
    return mid_ok();
}

static bool start_batch(rpc_call *c, const grpc_op *ops, size_t n, rpc_tag *tag)
{
    grpc_call_error e = grpc_call_start_batch(c->gc, ops, n, tag, NULL);
    if (e != GRPC_CALL_OK) {
        LOG_ERROR("rpc: start_batch on %s failed (%d)", c->m ? c->m->path : "?", (int)e);
        return false;
    }
    c->refs++;
    return true;
}

static void arm_close(rpc_call *c)
{
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->close_cancelled;
    if (!start_batch(c, &op, 1, &c->t_close)) {
        /* cannot happen short of a bug; treat the call as closed */
        c->closed = true;
        c->close_cancelled = 1;
        grpc_call_cancel(c->gc, NULL);
    }
}

static void add_initial_md(rpc_call *c, grpc_op *ops, size_t *n)
{
    if (c->md_sent) return;
    c->md_sent = true;
    memset(&ops[*n], 0, sizeof ops[*n]);
    ops[*n].op = GRPC_OP_SEND_INITIAL_METADATA;
    (*n)++;
}

static void add_status(rpc_call *c, grpc_op *ops, size_t *n)
{
    c->status_sent = true;
    memset(&ops[*n], 0, sizeof ops[*n]);
    ops[*n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[*n].data.send_status_from_server.status = (grpc_status_code)c->code;
    ops[*n].data.send_status_from_server.status_details = &c->status_details;
    (*n)++;
}

/* Starts the next send batch if none is in flight. */
static void pump(rpc_call *c)
{
    if (c->q.inflight || c->closed || c->send_failed || c->status_sent) return;
    grpc_op ops[3];
    size_t n = 0;
    grpc_byte_buffer *bb = rpc_sendq_pop(&c->q);
    if (!bb && !c->finishing) return;
    add_initial_md(c, ops, &n);
    if (bb) {
        memset(&ops[n], 0, sizeof ops[n]);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = bb;
        n++;
    }
    if (c->finishing && c->q.count == 0) add_status(c, ops, &n);
    c->q.inflight = bb;
    if (!start_batch(c, ops, n, &c->t_send)) {
        c->send_failed = true;
        grpc_call_cancel(c->gc, NULL);
    }
}

/* Ends a call before its handler saw it (bad request, unauthenticated). */
static void reject(rpc_call *c, rpc_code code, const char *msg)
{
    c->finishing = true;
    c->code = code;
    c->status_details = rpc_details_slice(msg);
    pump(c);
}

static rpc_code unpack_code(rpc_unpack_res r)
{
    return r == RPC_UNPACK_TOO_LARGE ? RPC_RESOURCE_EXHAUSTED : RPC_INVALID_ARGUMENT;
}

static void arm_recv(rpc_call *c)
{
    if (c->recv_armed || c->half_closed || c->closed || c->finishing) return;
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv_bb;
    if (start_batch(c, &op, 1, &c->t_recv)) c->recv_armed = true;
}

static bool set_peer(rpc_call *c)
{
    rpc_uconn *u = c->g->conn;
    if (u) {
        c->peer = (rpc_peer){.kind = RPC_PEER_UNIX, .uid = u->uid, .gid = u->gid, .pid = u->pid};
        return true;
    }
    const char *id = NULL;
    bool tls = false;
    mid_result r = rpc_tls_call_peer(c->gc, c->arena, &tls, &id);
    if (!mid_is_ok(r)) {
        LOG_INFO("rpc: %s refused: %s", c->m->path, mid_errmsg());
        reject(c, RPC_UNAUTHENTICATED, "client certificate must carry exactly one SPIFFE ID");
        return false;
    }
    c->peer.kind = tls || id ? RPC_PEER_TLS : RPC_PEER_INSECURE;
    c->peer.spiffe_id = id;
    return true;
}

void rpc_on_new_call(rpc_call *c, bool ok)
{
    rpc_gsrv *g = c->g;
    c->refs--;
    if (!ok) { /* server shutting down: the request is returned unused */
        call_free(c);
        return;
    }
    c->live = true;
    if (!g->shutdown_sent && !mid_is_ok(rpc_call_request(g, c->midx)))
        LOG_ERROR("rpc: cannot re-arm %s: %s", c->m->path, mid_errmsg());
    arm_close(c);
    if (g->srv->shutting_down) {
        grpc_call_cancel(c->gc, NULL);
        maybe_free(c);
        return;
    }
    if (!set_peer(c)) return;
    const ProtobufCMessage *req = NULL;
    if (c->m->kind != RPC_BIDI) {
        if (!c->payload) {
            reject(c, RPC_INVALID_ARGUMENT, "missing request message");
            return;
        }
        ProtobufCMessage *msg;
        rpc_unpack_res ur =
            rpc_unpack(c->payload, c->m->desc, g->srv->opts.max_recv_bytes, c->arena, &msg);
        grpc_byte_buffer_destroy(c->payload);
        c->payload = NULL;
        if (ur != RPC_UNPACK_OK) {
            reject(c, unpack_code(ur),
                   ur == RPC_UNPACK_TOO_LARGE ? "request too large" : "malformed request message");
            return;
        }
        req = msg;
    }
    c->started = true;
    c->m->h->on_start(c, req, c->m->ctx);
    if (c->m->kind == RPC_BIDI) arm_recv(c);
}

void rpc_on_new_generic(rpc_call *c, bool ok)
{
    rpc_gsrv *g = c->g;
    c->refs--;
    if (!ok) {
        call_free(c);
        return;
    }
    c->live = true;
    if (!g->shutdown_sent && !mid_is_ok(rpc_call_request_generic(g)))
        LOG_ERROR("rpc: cannot re-arm the unknown-method request: %s", mid_errmsg());
    arm_close(c);
    reject(c, RPC_UNIMPLEMENTED, "unknown method");
}

void rpc_on_call_recv(rpc_call *c, bool ok)
{
    c->refs--;
    c->recv_armed = false;
    grpc_byte_buffer *bb = c->recv_bb;
    c->recv_bb = NULL;
    if (!ok || !bb) {
        if (bb) grpc_byte_buffer_destroy(bb);
        bool notify = ok && !c->half_closed && !c->closed && !c->finishing;
        c->half_closed = true;
        if (notify) c->m->h->on_message(c, NULL, c->m->ctx);
        maybe_free(c);
        return;
    }
    if (!c->closed && !c->finishing) {
        rpc_server *srv = c->g->srv;
        arena *a = NULL;
        ProtobufCMessage *msg = NULL;
        rpc_unpack_res ur = RPC_UNPACK_TOO_LARGE;
        if (mid_is_ok(arena_new(srv->opts.max_arena_bytes, &a)))
            ur = rpc_unpack(bb, c->m->desc, srv->opts.max_recv_bytes, a, &msg);
        grpc_byte_buffer_destroy(bb);
        if (ur == RPC_UNPACK_OK) {
            c->m->h->on_message(c, msg, c->m->ctx);
            arm_recv(c);
        } else {
            rpc_call_abort(c, unpack_code(ur),
                           ur == RPC_UNPACK_TOO_LARGE ? "message too large" : "malformed message");
        }
        arena_free(a);
    } else {
        grpc_byte_buffer_destroy(bb);
    }
    maybe_free(c);
}

void rpc_on_call_send(rpc_call *c, bool ok)
{
    c->refs--;
    if (c->q.inflight) grpc_byte_buffer_destroy(c->q.inflight);
    c->q.inflight = NULL;
    if (!ok) {
        c->send_failed = true; /* client gone or call cancelled */
        rpc_sendq_clear(&c->q);
    } else if (c->q.count > 0 || (c->finishing && !c->status_sent)) {
        pump(c);
    } else if (c->started && !c->finishing && !c->closed && c->m->h->on_drain) {
        c->m->h->on_drain(c, c->m->ctx);
    }
    maybe_free(c);
}

void rpc_on_call_close(rpc_call *c, bool ok)
{
    c->refs--;
    c->closed = true;
    if (!ok) c->close_cancelled = 1;
    rpc_sendq_clear(&c->q);
    maybe_free(c);
}

/* ---- public ---- */

const rpc_peer *rpc_call_peer(const rpc_call *c) { return &c->peer; }
arena *rpc_call_arena(rpc_call *c) { return c->arena; }
const char *rpc_call_method(const rpc_call *c) { return c->m ? c->m->path : ""; }
void rpc_call_set_user(rpc_call *c, void *user) { c->user = user; }
void *rpc_call_user(const rpc_call *c) { return c->user; }
bool rpc_call_is_closed(const rpc_call *c) { return c->closed || c->finishing || c->send_failed; }
size_t rpc_call_queued(const rpc_call *c) { return c->q.count + (c->q.inflight ? 1 : 0); }

const char *rpc_call_metadata(rpc_call *c, const char *key)
{
    size_t klen = strlen(key);
    if (klen >= 4 && strcmp(key + klen - 4, "-bin") == 0) return NULL;
    for (size_t i = 0; i < c->md.count; i++) {
        const grpc_metadata *m = &c->md.metadata[i];
        if (GRPC_SLICE_LENGTH(m->key) != klen ||
            memcmp(GRPC_SLICE_START_PTR(m->key), key, klen) != 0)
            continue;
        size_t vlen = GRPC_SLICE_LENGTH(m->value);
        const unsigned char *v = GRPC_SLICE_START_PTR(m->value);
        if (vlen > RPC_MAX_MD_VALUE) return NULL;
        for (size_t j = 0; j < vlen; j++)
            if (v[j] < 0x20 || v[j] > 0x7e) return NULL;
        return arena_strndup(c->arena, (const char *)v, vlen);
    }
    return NULL;
}

int64_t rpc_call_deadline_ms(const rpc_call *c)
{
    gpr_timespec d = gpr_convert_clock_type(c->deadline, GPR_CLOCK_MONOTONIC);
    if (gpr_time_cmp(d, gpr_inf_future(GPR_CLOCK_MONOTONIC)) == 0 || d.tv_sec == INT64_MAX)
        return INT64_MAX;
    gpr_timespec left = gpr_time_sub(d, gpr_now(GPR_CLOCK_MONOTONIC));
    int64_t ms = left.tv_sec * 1000 + left.tv_nsec / 1000000;
    return ms < 0 ? 0 : ms;
}

mid_result rpc_call_send(rpc_call *c, const ProtobufCMessage *msg)
{
    MID_ENSURE(c->live && !c->closed && !c->finishing && !c->send_failed, MID_E_STATE,
               "call is finished");
    grpc_byte_buffer *bb;
    MID_GUARD(rpc_pack(msg, c->g->srv->opts.max_msg_bytes, &bb));
    mid_result r = rpc_sendq_push(&c->q, bb);
    if (!mid_is_ok(r)) {
        grpc_byte_buffer_destroy(bb);
        return r;
    }
    pump(c);
    return mid_ok();
}

mid_result rpc_call_finish(rpc_call *c, rpc_code code, const char *message)
{
    MID_ENSURE(c->live && !c->finishing, MID_E_STATE, "call already finished");
    MID_ENSURE((int)code >= 0 && (int)code <= 16, MID_E_INVALID, "bad status code %d", (int)code);
    c->finishing = true;
    c->code = code;
    c->status_details = rpc_details_slice(message);
    pump(c);
    return mid_ok();
}

void rpc_call_abort(rpc_call *c, rpc_code code, const char *message)
{
    if (!c->live || c->closed || c->status_sent) return;
    c->finishing = true;
    c->code = code;
    rpc_sendq_clear(&c->q);
    char buf[RPC_MAX_DETAILS + 1];
    size_t n = message ? strnlen(message, RPC_MAX_DETAILS) : 0;
    if (n) memcpy(buf, message, n);
    buf[n] = '\0';
    grpc_call_cancel_with_status(c->gc, (grpc_status_code)code, buf, NULL);
}
