/* Servers: method registration, TCP ports, the grpc_server instances
 * (one main instance for TCP ports, one per accepted Unix connection, all on
 * the loop's completion queue) and their shutdown. */
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "lib/rpc_int.h"

#define RPC_MAX_METHODS 256

static void apply_defaults(rpc_server_opts *o)
{
    if (!o->max_msg_bytes) o->max_msg_bytes = RPC_DEFAULT_MAX_MSG;
    if (!o->max_recv_bytes) o->max_recv_bytes = o->max_msg_bytes;
    if (!o->max_arena_bytes) o->max_arena_bytes = 4 * o->max_recv_bytes;
    if (!o->send_queue_len) o->send_queue_len = RPC_DEFAULT_SENDQ;
    if (!o->max_conns_per_uid) o->max_conns_per_uid = 64;
    if (!o->conn_idle_ms) o->conn_idle_ms = 300000;
    if (!o->keepalive_ms) o->keepalive_ms = 60000;
}

static int clamp_int(int64_t v) { return v > INT32_MAX ? INT32_MAX : (int)v; }

/* One argument set for every grpc_server of a server: message limits,
 * keepalive, no SO_REUSEPORT (a second instance must fail to bind, not
 * silently share the port), an idle limit, which matters for from-fd Unix
 * connections (they have no handshake timeout), and the server's resource
 * quota when it has one (a pointer arg: gRPC takes its own reference when it
 * copies the args; the server keeps srv->quota's). */
grpc_channel_args *rpc_server_make_args(const rpc_server_opts *o, grpc_resource_quota *quota)
{
    enum { N_INT = 7, N_MAX = N_INT + 1 };
    grpc_channel_args *a = calloc(1, sizeof *a);
    grpc_arg *v = calloc(N_MAX, sizeof *v);
    if (!a || !v) {
        free(a);
        free(v);
        return NULL;
    }
    static char k0[] = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, k1[] = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
                k2[] = GRPC_ARG_ALLOW_REUSEPORT, k3[] = GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                k4[] = GRPC_ARG_KEEPALIVE_TIME_MS, k5[] = GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                k6[] = GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, kq[] = GRPC_ARG_RESOURCE_QUOTA;
    char *keys[N_INT] = {k0, k1, k2, k3, k4, k5, k6};
    int vals[N_INT] = {clamp_int((int64_t)o->max_recv_bytes),
                       clamp_int((int64_t)o->max_msg_bytes),
                       0,
                       clamp_int(o->conn_idle_ms),
                       clamp_int(o->keepalive_ms),
                       20000,
                       0};
    size_t n = 0;
    for (; n < N_INT; n++) {
        v[n].type = GRPC_ARG_INTEGER;
        v[n].key = keys[n];
        v[n].value.integer = vals[n];
    }
    if (quota) {
        v[n].type = GRPC_ARG_POINTER;
        v[n].key = kq;
        v[n].value.pointer.p = quota;
        v[n].value.pointer.vtable = grpc_resource_quota_arg_vtable();
        n++;
    }
    a->num_args = n;
    a->args = v;
    return a;
}

static void free_args(grpc_channel_args *a)
{
    if (!a) return;
    free(a->args);
    free(a);
}

mid_result rpc_server_new(rpc_loop *loop, const rpc_server_opts *opts, rpc_server **out)
{
    *out = NULL;
    MID_ENSURE(!loop->closing, MID_E_STATE, "loop is shutting down");
    rpc_server *srv = calloc(1, sizeof *srv);
    MID_ENSURE_MEM(srv);
    if (opts) srv->opts = *opts;
    apply_defaults(&srv->opts);
    if (srv->opts.send_queue_len > RPC_MAX_SENDQ || srv->opts.max_msg_bytes > INT32_MAX ||
        srv->opts.max_recv_bytes > srv->opts.max_msg_bytes ||
        (srv->opts.memory_quota_bytes &&
         (srv->opts.memory_quota_bytes < RPC_MIN_MEMORY_QUOTA ||
          srv->opts.memory_quota_bytes > RPC_MAX_MEMORY_QUOTA))) {
        free(srv);
        MID_BAIL(MID_E_INVALID, "server limits out of range");
    }
    if (srv->opts.memory_quota_bytes) {
        srv->quota = grpc_resource_quota_create("meshid-server");
        if (!srv->quota) {
            free(srv);
            MID_BAIL(MID_E_NOMEM, "out of memory");
        }
        grpc_resource_quota_resize(srv->quota, srv->opts.memory_quota_bytes);
    }
    srv->args = rpc_server_make_args(&srv->opts, srv->quota);
    if (!srv->args) {
        if (srv->quota) grpc_resource_quota_unref(srv->quota);
        free(srv);
        MID_BAIL(MID_E_NOMEM, "out of memory");
    }
    srv->loop = loop;
    rpc_list_init(&srv->gsrvs);
    rpc_list_init(&srv->uconns);
    rpc_list_push(&loop->servers, &srv->link);
    *out = srv;
    return mid_ok();
}

mid_result rpc_server_register(rpc_server *srv, const char *method, rpc_kind kind,
                               const ProtobufCMessageDescriptor *req_desc, const rpc_handler *h,
                               void *ctx)
{
    MID_ENSURE(!srv->started, MID_E_STATE, "register before rpc_server_start");
    MID_ENSURE(method && method[0] == '/' && req_desc && h && h->on_start, MID_E_INVALID,
               "method path, descriptor and on_start are required");
    MID_ENSURE(kind != RPC_BIDI || h->on_message, MID_E_INVALID, "bidi needs on_message");
    MID_ENSURE(kind == RPC_UNARY || kind == RPC_SERVER_STREAM || kind == RPC_BIDI, MID_E_INVALID,
               "bad method kind");
    MID_ENSURE(srv->nmethods < RPC_MAX_METHODS, MID_E_TOO_LARGE, "too many methods");
    MID_ENSURE(srv->main == NULL, MID_E_STATE, "register methods before adding TCP ports");
    for (size_t i = 0; i < srv->nmethods; i++)
        MID_ENSURE(strcmp(srv->methods[i].path, method) != 0, MID_E_EXISTS, "%s registered twice",
                   method);
    rpc_method *m = realloc(srv->methods, (srv->nmethods + 1) * sizeof *m);
    MID_ENSURE_MEM(m);
    srv->methods = m;
    srv->methods[srv->nmethods++] = (rpc_method){method, kind, req_desc, h, ctx};
    return mid_ok();
}

mid_result rpc_gsrv_new(rpc_server *srv, rpc_uconn *conn, rpc_gsrv **out)
{
    *out = NULL;
    rpc_gsrv *g = calloc(1, sizeof *g);
    MID_ENSURE_MEM(g);
    g->handles = calloc(srv->nmethods ? srv->nmethods : 1, sizeof *g->handles);
    if (!g->handles) {
        free(g);
        MID_BAIL(MID_E_NOMEM, "out of memory");
    }
    g->srv = srv;
    g->conn = conn;
    g->shutdown_tag.kind = RPC_TAG_SERVER_SHUTDOWN;
    g->gs = grpc_server_create(srv->args, NULL);
    for (size_t i = 0; i < srv->nmethods; i++) {
        grpc_server_register_method_payload_handling ph =
            srv->methods[i].kind == RPC_BIDI ? GRPC_SRM_PAYLOAD_NONE
                                             : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER;
        g->handles[i] = grpc_server_register_method(g->gs, srv->methods[i].path, NULL, ph, 0);
    }
    grpc_server_register_completion_queue(g->gs, srv->loop->cq, NULL);
    rpc_list_init(&g->link);
    if (conn) rpc_list_push(&srv->gsrvs, &g->link);
    *out = g;
    return mid_ok();
}

mid_result rpc_gsrv_start(rpc_gsrv *g)
{
    grpc_server_start(g->gs);
    g->started = true;
    for (size_t i = 0; i < g->srv->nmethods; i++) MID_GUARD(rpc_call_request(g, i));
    MID_GUARD(rpc_call_request_generic(g));
    return mid_ok();
}

mid_result rpc_server_add_tcp(rpc_server *srv, const char *addr, const rpc_tls *tls, int *port_out)
{
    if (port_out) *port_out = 0;
    MID_ENSURE(!srv->started, MID_E_STATE, "add ports before rpc_server_start");
    MID_ENSURE(addr && *addr, MID_E_INVALID, "no address");
    if (!srv->main) MID_GUARD(rpc_gsrv_new(srv, NULL, &srv->main));
    grpc_server_credentials *creds;
    if (tls) {
        rpc_tls_cfg *cfg = NULL;
        creds = rpc_tls_server_creds(tls, &cfg);
        MID_ENSURE(creds != NULL, MID_E_CRYPTO, "bad TLS material for %s", addr);
        /* the fetcher may run until the grpc_server is destroyed */
        rpc_tls_cfg_push(&srv->tls_cfgs, cfg);
    } else {
        creds = grpc_insecure_server_credentials_create();
    }
    int port = grpc_server_add_http2_port(srv->main->gs, addr, creds);
    grpc_server_credentials_release(creds);
    MID_ENSURE(port > 0, MID_E_IO, "cannot listen on %s", addr);
    if (port_out) *port_out = port;
    return mid_ok();
}

mid_result rpc_server_set_tls(rpc_server *srv, const rpc_tls *tls)
{
    MID_ENSURE(srv && tls, MID_E_INVALID, "missing arguments");
    MID_ENSURE(srv->tls_cfgs != NULL, MID_E_STATE, "server has no TLS port");
    return rpc_tls_cfg_update(srv->tls_cfgs, tls);
}

mid_result rpc_server_start(rpc_server *srv)
{
    MID_ENSURE(!srv->started, MID_E_STATE, "server already started");
    MID_ENSURE(!srv->loop->closing, MID_E_STATE, "loop is shutting down");
    srv->started = true;
    if (srv->main) MID_GUARD(rpc_gsrv_start(srv->main));
    MID_GUARD(rpc_unix_start(srv));
    return mid_ok();
}

static void gsrv_maybe_destroy(rpc_gsrv *g)
{
    if (!g->shutdown_done || g->ncalls > 0) return;
    rpc_server *srv = g->srv;
    grpc_server_destroy(g->gs);
    if (g->conn) {
        rpc_list_del(&g->link);
        rpc_unix_conn_gone(g->conn);
    } else {
        srv->main = NULL;
    }
    free(g->handles);
    free(g);
}

void rpc_gsrv_shutdown(rpc_gsrv *g)
{
    if (g->shutdown_sent) return;
    g->shutdown_sent = true;
    if (!g->started) {
        /* never started: no requests outstanding, nothing to notify */
        g->shutdown_done = true;
        gsrv_maybe_destroy(g);
        return;
    }
    grpc_server_shutdown_and_notify(g->gs, g->srv->loop->cq, &g->shutdown_tag);
    grpc_server_cancel_all_calls(g->gs);
}

void rpc_on_server_shutdown(rpc_gsrv *g, bool ok)
{
    (void)ok;
    g->shutdown_done = true;
    gsrv_maybe_destroy(g);
}

void rpc_gsrv_call_gone(rpc_gsrv *g)
{
    g->ncalls--;
    gsrv_maybe_destroy(g);
}

void rpc_servers_shutdown_all(rpc_loop *loop)
{
    for (rpc_link *l = loop->servers.next; l != &loop->servers; l = l->next) {
        rpc_server *srv = RPC_OWNER(l, rpc_server, link);
        srv->shutting_down = true;
        rpc_unix_stop(srv);
        if (srv->main) rpc_gsrv_shutdown(srv->main);
        /* shutting down a never-started instance destroys it at once */
        rpc_link *n;
        for (rpc_link *c = srv->gsrvs.next; c != &srv->gsrvs; c = n) {
            n = c->next;
            rpc_gsrv_shutdown(RPC_OWNER(c, rpc_gsrv, link));
        }
    }
}

bool rpc_servers_all_gone(rpc_loop *loop)
{
    for (rpc_link *l = loop->servers.next; l != &loop->servers; l = l->next) {
        rpc_server *srv = RPC_OWNER(l, rpc_server, link);
        if (srv->main || !rpc_list_empty(&srv->gsrvs)) return false;
    }
    return true;
}

void rpc_server_free_all(rpc_loop *loop)
{
    while (!rpc_list_empty(&loop->servers)) {
        rpc_server *srv = RPC_OWNER(loop->servers.next, rpc_server, link);
        rpc_list_del(&srv->link);
        rpc_unix_free(srv);
        free_args(srv->args);
        /* every grpc_server is destroyed by now; gRPC's transports hold
         * their own references until they are gone */
        if (srv->quota) grpc_resource_quota_unref(srv->quota);
        rpc_tls_cfg_free(srv->tls_cfgs);
        free(srv->methods);
        free(srv);
    }
}
