/* The SPIFFE Workload API server (see sds/workload_api.h, docs/sds.md).
 *
 * Every stream keeps the digest of the last message it sent; an evaluation
 * (at start and on every notify) builds a new message only when the digest of
 * the current view's content differs. Each message is the complete state, as
 * the specification requires. */
#include "sds/workload_api.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/arena.h"
#include "lib/log.h"
#include "sds/secrets.h"
#include "spiffe/workload.pb-c.h"

typedef enum { WS_X509_SVID, WS_X509_BUNDLES, WS_JWT_BUNDLES } wl_kind;

typedef struct wl_stream wl_stream;
struct wl_stream {
    workload_api *api;
    rpc_call *call;
    wl_stream *prev, *next;
    sds_workload *wl;
    wl_kind kind;
    bool sent_any;
    sds_digest sent; /* digest of the last message sent */
    /* bundle delivery (workload_api_bundle_sent): the sequence of the view
     * whose content the client has been sent in full (written out: the send
     * queue drained), and that of the message still in the queue */
    uint64_t sent_seq;
    uint64_t pending_seq;
    bool draining;
};

struct workload_api {
    sds_source src;
    wl_stream *streams;
    workload_api_stats st;
    void (*on_sent)(void *arg);
    void *on_sent_arg;
};

/* The spec's own wording for the missing header. */
#define NO_HEADER_MSG "security header missing from request"

static bool header_ok(rpc_call *call)
{
    const char *v = rpc_call_metadata(call, WL_SECURITY_HEADER);
    return v && strcmp(v, "true") == 0;
}

static void deny(workload_api *api, rpc_call *call, const char *why)
{
    char msg[512];
    snprintf(msg, sizeof msg, "no identity issued%s%s", why && why[0] ? ": " : "", why ? why : "");
    api->st.denied++;
    rpc_call_abort(call, RPC_PERMISSION_DENIED, msg);
}

static void stream_abort(wl_stream *s, rpc_code code, const char *msg)
{
    if (rpc_call_is_closed(s->call)) return;
    s->api->st.aborted++;
    rpc_call_abort(s->call, code, msg);
}

/* Streams that carry X.509 bundles and have been sent one count for
 * workload_api_bundle_sent. */
static bool carries_bundle(const wl_stream *s)
{
    return s->kind != WS_JWT_BUNDLES && s->sent_any;
}

static void note_sent(wl_stream *s, uint64_t seq)
{
    if (seq <= s->sent_seq) return;
    s->sent_seq = seq;
    if (s->api->on_sent) s->api->on_sent(s->api->on_sent_arg);
}

static uint64_t view_seq(const sds_view *v)
{
    return sds_view_bundle_count(v) > 0 ? sds_view_bundle(v, 0)->sequence : 0;
}

/* Builds and sends the stream's message if its content changed. */
static void evaluate(wl_stream *s, bool push)
{
    workload_api *api = s->api;
    if (rpc_call_is_closed(s->call)) return;
    sds_view *v = NULL;
    if (!mid_is_ok(api->src.ops->view(api->src.ctx, s->wl, &v))) {
        v = NULL;
        mid_err e = mid_errcode();
        if (e == MID_E_NOT_FOUND) return; /* attested, not issued yet: wait */
        if (e == MID_E_DENIED) deny(api, s->call, mid_errmsg());
        else stream_abort(s, RPC_UNAVAILABLE, "identity source unavailable");
        return;
    }
    arena *a = NULL;
    sds_digest d;
    const ProtobufCMessage *msg = NULL;
    mid_result r = MID_OK_RESULT;
    JWTBundlesResponse jwt = JWTBUNDLES_RESPONSE__INIT;
    switch (s->kind) {
    case WS_X509_SVID:
        if (sds_view_svid_count(v) == 0) {
            /* matched, but nothing to hand out: the spec's PERMISSION_DENIED */
            deny(api, s->call, "the workload has no X.509-SVID");
            goto out;
        }
        r = sds_x509_svid_digest(v, &d);
        break;
    case WS_X509_BUNDLES:
        r = sds_x509_bundles_digest(v, &d);
        break;
    case WS_JWT_BUNDLES:
        /* no JWT authorities yet: one empty map, then silence */
        memcpy(d.hex, "jwt-empty", sizeof "jwt-empty");
        break;
    }
    if (!mid_is_ok(r)) goto fail;
    if (s->sent_any && strcmp(d.hex, s->sent.hex) == 0) {
        /* what the client has (or is being sent) is this view's content */
        if (s->draining) {
            if (view_seq(v) > s->pending_seq) s->pending_seq = view_seq(v);
        } else {
            note_sent(s, view_seq(v));
        }
        goto out;
    }
    if (!mid_is_ok(r = arena_new(0, &a))) goto fail;
    if (s->kind == WS_X509_SVID) {
        X509SVIDResponse *m;
        if (!mid_is_ok(r = sds_x509_svid_response(v, a, &m))) goto fail;
        msg = &m->base;
    } else if (s->kind == WS_X509_BUNDLES) {
        X509BundlesResponse *m;
        if (!mid_is_ok(r = sds_x509_bundles_response(v, a, &m))) goto fail;
        msg = &m->base;
    } else {
        msg = &jwt.base;
    }
    if (!mid_is_ok(rpc_call_send(s->call, msg))) {
        switch (mid_errcode()) {
        case MID_E_BUSY:
            LOG_WARN("workload api: %s: client is not reading, ending the stream",
                     rpc_call_method(s->call));
            stream_abort(s, RPC_RESOURCE_EXHAUSTED, "client is not reading");
            break;
        case MID_E_TOO_LARGE:
            stream_abort(s, RPC_RESOURCE_EXHAUSTED, "response over the message size limit");
            break;
        case MID_E_STATE:
            break; /* client gone */
        default:
            stream_abort(s, RPC_INTERNAL, "cannot send response");
        }
        goto out;
    }
    s->sent = d;
    bool first = !carries_bundle(s);
    s->sent_any = true;
    if (first && carries_bundle(s) && api->on_sent) api->on_sent(api->on_sent_arg);
    s->pending_seq = view_seq(v);
    s->draining = true; /* counted as delivered once on_drain says it was written */
    api->st.responses++;
    if (push) api->st.pushes++;
    goto out;
fail:
    LOG_WARN("workload api: cannot build response: %s", mid_errmsg());
    stream_abort(s, RPC_INTERNAL, "cannot build response");
out:
    arena_free(a);
    sds_view_unref(v);
}

/* ---- calls -------------------------------------------------------------- */

static void stream_start(rpc_call *call, wl_kind kind, workload_api *api)
{
    if (!header_ok(call)) {
        api->st.no_header++;
        rpc_call_abort(call, RPC_INVALID_ARGUMENT, NO_HEADER_MSG);
        return;
    }
    sds_workload *wl = NULL;
    if (!mid_is_ok(api->src.ops->attest(api->src.ctx, rpc_call_peer(call), &wl))) {
        if (mid_errcode() == MID_E_DENIED) deny(api, call, mid_errmsg());
        else rpc_call_abort(call, RPC_UNAVAILABLE, "attestation failed");
        return;
    }
    wl_stream *s = calloc(1, sizeof *s);
    if (!s) {
        api->src.ops->workload_free(api->src.ctx, wl);
        rpc_call_abort(call, RPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    s->api = api;
    s->call = call;
    s->wl = wl;
    s->kind = kind;
    s->next = api->streams;
    if (api->streams) api->streams->prev = s;
    api->streams = s;
    api->st.streams++;
    rpc_call_set_user(call, s);
    evaluate(s, false);
}

static void on_x509_svid(rpc_call *call, const ProtobufCMessage *req, void *ctx)
{
    (void)req;
    stream_start(call, WS_X509_SVID, ctx);
}

static void on_x509_bundles(rpc_call *call, const ProtobufCMessage *req, void *ctx)
{
    (void)req;
    stream_start(call, WS_X509_BUNDLES, ctx);
}

static void on_jwt_bundles(rpc_call *call, const ProtobufCMessage *req, void *ctx)
{
    (void)req;
    stream_start(call, WS_JWT_BUNDLES, ctx);
}

static void on_stream_drain(rpc_call *call, void *ctx)
{
    (void)ctx;
    wl_stream *s = rpc_call_user(call);
    if (!s || !s->draining) return;
    s->draining = false;
    note_sent(s, s->pending_seq);
}

static void on_stream_done(rpc_call *call, bool cancelled, void *ctx)
{
    (void)cancelled;
    workload_api *api = ctx;
    wl_stream *s = rpc_call_user(call);
    if (!s) return;
    bool counted = carries_bundle(s);
    if (s->prev) s->prev->next = s->next;
    else api->streams = s->next;
    if (s->next) s->next->prev = s->prev;
    api->st.streams--;
    api->src.ops->workload_free(api->src.ctx, s->wl);
    free(s);
    rpc_call_set_user(call, NULL);
    if (counted && api->on_sent) api->on_sent(api->on_sent_arg);
}

static void on_jwt_unimplemented(rpc_call *call, const ProtobufCMessage *req, void *ctx)
{
    (void)req;
    workload_api *api = ctx;
    if (!header_ok(call)) {
        api->st.no_header++;
        rpc_call_abort(call, RPC_INVALID_ARGUMENT, NO_HEADER_MSG);
        return;
    }
    rpc_call_abort(call, RPC_UNIMPLEMENTED,
                   "JWT-SVIDs are not supported by this agent yet (X.509-SVIDs only)");
}

static const rpc_handler x509_svid_h = {.on_start = on_x509_svid, .on_drain = on_stream_drain,
                                        .on_done = on_stream_done};
static const rpc_handler x509_bundles_h = {.on_start = on_x509_bundles, .on_drain = on_stream_drain,
                                           .on_done = on_stream_done};
static const rpc_handler jwt_bundles_h = {.on_start = on_jwt_bundles, .on_done = on_stream_done};
static const rpc_handler jwt_unimpl_h = {.on_start = on_jwt_unimplemented};

mid_result workload_api_new(rpc_server *srv, sds_source src, workload_api **out)
{
    *out = NULL;
    MID_ENSURE(srv && src.ops && src.ops->attest && src.ops->view && src.ops->workload_free,
               MID_E_INVALID, "workload_api_new: incomplete arguments");
    workload_api *api = calloc(1, sizeof *api);
    MID_ENSURE_MEM(api);
    api->src = src;
    mid_result r = rpc_server_register(srv, WL_M_FETCH_X509_SVID, RPC_SERVER_STREAM,
                                       &x509_svidrequest__descriptor, &x509_svid_h, api);
    if (mid_is_ok(r))
        r = rpc_server_register(srv, WL_M_FETCH_X509_BUNDLES, RPC_SERVER_STREAM,
                                &x509_bundles_request__descriptor, &x509_bundles_h, api);
    if (mid_is_ok(r))
        r = rpc_server_register(srv, WL_M_FETCH_JWT_BUNDLES, RPC_SERVER_STREAM,
                                &jwtbundles_request__descriptor, &jwt_bundles_h, api);
    if (mid_is_ok(r))
        r = rpc_server_register(srv, WL_M_FETCH_JWT_SVID, RPC_UNARY, &jwtsvidrequest__descriptor,
                                &jwt_unimpl_h, api);
    if (mid_is_ok(r))
        r = rpc_server_register(srv, WL_M_VALIDATE_JWT_SVID, RPC_UNARY,
                                &validate_jwtsvidrequest__descriptor, &jwt_unimpl_h, api);
    if (!mid_is_ok(r)) {
        free(api);
        return r;
    }
    *out = api;
    return mid_ok();
}

void workload_api_notify(workload_api *api)
{
    if (!api) return;
    for (wl_stream *s = api->streams, *next; s; s = next) {
        next = s->next;
        evaluate(s, true);
    }
}

size_t workload_api_bundle_sent(const workload_api *api, uint64_t *min_seq)
{
    uint64_t m = UINT64_MAX;
    size_t n = 0;
    for (const wl_stream *s = api->streams; s; s = s->next) {
        if (!carries_bundle(s) || rpc_call_is_closed(s->call)) continue;
        n++;
        if (s->sent_seq < m) m = s->sent_seq;
    }
    *min_seq = m;
    return n;
}

void workload_api_on_bundle_sent(workload_api *api, void (*fn)(void *arg), void *arg)
{
    api->on_sent = fn;
    api->on_sent_arg = arg;
}

void workload_api_stats_get(const workload_api *api, workload_api_stats *out) { *out = api->st; }

void workload_api_free(workload_api *api)
{
    if (!api) return;
    if (api->streams)
        LOG_ERROR("workload api: freed with %" PRIu64 " open streams (call it after rpc_loop_free)",
                  api->st.streams);
    free(api);
}
