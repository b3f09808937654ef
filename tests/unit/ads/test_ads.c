/* The ADS server end to end: a real rpc loop serving ads_server on a
 * plaintext loopback TCP port, driven by rpc client streams on the same
 * loop, with fake snapshots (resource bytes are "name=content", so a
 * response's Any values say which resources it carried). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>

#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "lib/rpc.h"
#include "meshcore/ads.h"
#include "meshcore/xds_snapshot.h"
#include "tests/testlib/rpc_wait.h"
#include "tests/unit/ads/ads_tests.h"

typedef Envoy__Service__Discovery__V3__DiscoveryRequest disc_req;
typedef Envoy__Service__Discovery__V3__DiscoveryResponse disc_resp;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryRequest delta_req;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryResponse delta_resp;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry irv_entry;
typedef Envoy__Config__Core__V3__Node node_msg;

#define OK(expr) assert_true(mid_is_ok(expr))
#define WAIT_MS 10000
#define DEBOUNCE_MS 20
#define QUIET_MS 150
#define MAXMSG 128
#define MAXCLI 200
#define MAXNAMES 8

#define CDS XDS_CDS
#define EDS XDS_EDS
#define LDS XDS_LDS
#define RDS XDS_RDS

typedef struct fx fx;

typedef struct {
    fx *f;
    rpc_stream *st;
    bool delta;
    uint8_t *msg[MAXMSG];
    size_t len[MAXMSG];
    size_t n;
    bool done;
    rpc_code code;
    char status[512];
    /* SotW auto-ACK: every response is ACKed with these names */
    bool auto_ack;
    const char *names[XDS_TYPE_COUNT][MAXNAMES];
    size_t nnames[XDS_TYPE_COUNT];
} cli;

struct fx {
    rpc_loop *loop;
    rpc_server *srv;
    ads_server *ads;
    ads_opts o;
    xds_snapshot *cur; /* what the resolver hands out */
    mid_err fail;      /* resolver error, 0 none */
    int resolves;
    char last_node[128];
    bool last_peer_null;
    char target[64];
    rpc_channel *ch[4];
    cli *c[MAXCLI];
    size_t ncli;
    bool stop_on_msg;
    /* ACK hook */
    xds_type want_t;
    char want_ver[XDS_VERSION_LEN + 1];
    size_t acks_seen, acks_want, hook_calls;
    uint64_t last_ack_stream;
};

/* ---- snapshots ------------------------------------------------------------------ */

/* Adds "a=1,b=2" to type t: resource "a" with bytes "a=1", ... */
static void add_spec(xds_snapshot *s, xds_type t, const char *spec)
{
    if (!spec || !spec[0]) return;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", spec);
    char *p = buf;
    while (p) {
        char *comma = strchr(p, ',');
        if (comma) *comma = '\0';
        char name[128];
        const char *eq = strchr(p, '=');
        assert_non_null(eq);
        snprintf(name, sizeof name, "%.*s", (int)(eq - p), p);
        OK(xds_snapshot_add(s, t, name, (const uint8_t *)p, strlen(p)));
        p = comma ? comma + 1 : NULL;
    }
}

static xds_snapshot *mk(const char *cds, const char *eds, const char *lds, const char *rds)
{
    xds_snapshot *s;
    OK(xds_snapshot_new(&s));
    add_spec(s, CDS, cds);
    add_spec(s, EDS, eds);
    add_spec(s, LDS, lds);
    add_spec(s, RDS, rds);
    OK(xds_snapshot_seal(s));
    return s;
}

static void set_snap(fx *f, xds_snapshot *s)
{
    xds_snapshot_unref(f->cur);
    f->cur = s;
}

/* ---- fixture ---------------------------------------------------------------------- */

static MID_RESULT fake_resolve(void *ctx, const node_msg *node, const char *peer, xds_snapshot **out)
{
    fx *f = ctx;
    f->resolves++;
    snprintf(f->last_node, sizeof f->last_node, "%s", node && node->id ? node->id : "");
    f->last_peer_null = peer == NULL;
    if (f->fail) MID_BAIL(f->fail, "no workload registered for node %s", f->last_node);
    *out = xds_snapshot_ref(f->cur);
    return mid_ok();
}

static void ack_hook(void *ctx, uint64_t stream_id, xds_type t, const char *version)
{
    fx *f = ctx;
    f->hook_calls++;
    f->last_ack_stream = stream_id;
    if (t == f->want_t && strcmp(version, f->want_ver) == 0) {
        f->acks_seen++;
        if (f->acks_want && f->acks_seen == f->acks_want) rpc_loop_stop(f->loop);
    }
}

static int fx_setup_opts(void **state, const rpc_server_opts *so, const ads_opts *o)
{
    fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->stop_on_msg = true;
    f->cur = mk("a=1,b=1,c=1", "a=e1,b=e1,c=e1", "l1=1", "r1=1");
    if (o) f->o = *o;
    f->o.resolve = fake_resolve;
    f->o.ctx = f;
    if (!f->o.debounce_ms) f->o.debounce_ms = DEBOUNCE_MS;
    f->o.control_plane_id = "meshid";
    OK(rpc_loop_new(&f->loop));
    OK(rpc_server_new(f->loop, so, &f->srv));
    OK(ads_server_new(f->loop, &f->o, &f->ads));
    OK(ads_server_register(f->ads, f->srv));
    ads_server_set_ack_hook(f->ads, ack_hook, f);
    int port = 0;
    OK(rpc_server_add_tcp(f->srv, "127.0.0.1:0", NULL, &port));
    OK(rpc_server_start(f->srv));
    snprintf(f->target, sizeof f->target, "127.0.0.1:%d", port);
    for (int i = 0; i < 4; i++) OK(rpc_channel_new(f->loop, f->target, NULL, 0, &f->ch[i]));
    *state = f;
    return 0;
}

static int fx_setup(void **state)
{
    return fx_setup_opts(state, NULL, NULL);
}

static int fx_teardown(void **state)
{
    fx *f = *state;
    ads_server_shutdown(f->ads);
    rpc_loop_free(f->loop);
    ads_stats st;
    ads_server_stats(f->ads, &st);
    assert_int_equal(st.streams, 0); /* every stream was freed */
    assert_int_equal(st.names, 0);   /* and gave back its names */
    ads_server_free(f->ads);
    for (size_t i = 0; i < f->ncli; i++) {
        for (size_t k = 0; k < f->c[i]->n; k++) free(f->c[i]->msg[k]);
        free(f->c[i]);
    }
    xds_snapshot_unref(f->cur);
    free(f);
    return 0;
}

static void wait_n(cli *c, size_t n)
{
    tl_wait_count(c->f->loop, &c->n, n, &c->done, WAIT_MS);
}

static void wait_done(cli *c)
{
    tl_wait_end(c->f->loop, &c->done, WAIT_MS);
}

/* Waits for c's stream to end, which must be with `code` and, unless needle
 * is NULL, a status message containing needle. */
static void expect_end(cli *c, rpc_code code, const char *needle)
{
    wait_done(c);
    assert_int_equal(c->code, code);
    if (needle && !strstr(c->status, needle))
        fail_msg("status \"%s\" lacks \"%s\"", c->status, needle);
}

/* Nothing arrives on c for QUIET_MS (longer than the debounce). */
static void quiet(cli *c)
{
    tl_quiet(c->f->loop, &c->n, &c->done, QUIET_MS);
}

static ads_stats stats(fx *f)
{
    ads_stats s;
    ads_server_stats(f->ads, &s);
    return s;
}

static void notify(fx *f, xds_snapshot *s)
{
    if (s) set_snap(f, s);
    ads_server_notify(f->ads);
}

/* ---- client ------------------------------------------------------------------------ */

static void sotw_send(cli *c, xds_type t, const char *const *names, size_t n, const char *nonce,
                      bool nack, const char *node_id);

static void on_msg(rpc_stream *s, const ProtobufCMessage *m, void *arg)
{
    (void)s;
    cli *c = arg;
    assert_true(c->n < MAXMSG);
    size_t len = protobuf_c_message_get_packed_size(m);
    c->msg[c->n] = malloc(len ? len : 1);
    protobuf_c_message_pack(m, c->msg[c->n]);
    c->len[c->n++] = len;
    if (c->auto_ack && !c->delta) {
        const disc_resp *r = (const disc_resp *)m;
        xds_type t;
        OK(xds_type_from_url(r->type_url, &t));
        sotw_send(c, t, c->names[t], c->nnames[t], r->nonce, false, NULL);
    }
    if (c->f->stop_on_msg) rpc_loop_stop(c->f->loop);
}

static void on_done(rpc_stream *s, const rpc_status *st, void *arg)
{
    (void)s;
    cli *c = arg;
    c->done = true;
    c->code = st->code;
    snprintf(c->status, sizeof c->status, "%s", st->message ? st->message : "");
    c->st = NULL;
    rpc_loop_stop(c->f->loop);
}

static const rpc_stream_handler client_h = {on_msg, on_done};

static cli *cli_open(fx *f, bool delta)
{
    assert_true(f->ncli < MAXCLI);
    cli *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->f = f;
    c->delta = delta;
    f->c[f->ncli] = c;
    OK(rpc_stream_open(f->ch[f->ncli % 4], delta ? ADS_M_DELTA : ADS_M_STREAM, RPC_BIDI, NULL,
                       delta ? &envoy__service__discovery__v3__delta_discovery_response__descriptor
                             : &envoy__service__discovery__v3__discovery_response__descriptor,
                       NULL, &client_h, c, &c->st));
    f->ncli++;
    return c;
}

static const char *NODE = "sidecar~10.0.0.1~web-1.default~default.svc.cluster.local";

/* SotW request: node_id NULL sends no node. */
static void sotw_send(cli *c, xds_type t, const char *const *names, size_t n, const char *nonce,
                      bool nack, const char *node_id)
{
    disc_req r = ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
    Google__Rpc__Status err = GOOGLE__RPC__STATUS__INIT;
    node_msg node = ENVOY__CONFIG__CORE__V3__NODE__INIT;
    r.resource_names = (char **)names;
    r.n_resource_names = n;
    r.type_url = (char *)xds_type_url(t);
    if (nonce) r.response_nonce = (char *)nonce;
    if (nack) {
        err.code = 13;
        err.message = "cluster b: invalid";
        r.error_detail = &err;
    }
    if (node_id) {
        node.id = (char *)node_id;
        node.cluster = "web";
        r.node = &node;
    }
    OK(rpc_stream_send(c->st, &r.base));
}

/* A first request for t on a fresh stream, remembering the names for auto-ACK. */
static void sotw_sub(cli *c, xds_type t, const char *const *names, size_t n, bool with_node)
{
    assert_true(n <= MAXNAMES);
    for (size_t i = 0; i < n; i++) c->names[t][i] = names[i];
    c->nnames[t] = n;
    sotw_send(c, t, names, n, NULL, false, with_node ? NODE : NULL);
}

static disc_resp *sotw_resp(cli *c, size_t i)
{
    assert_true(i < c->n);
    disc_resp *r = envoy__service__discovery__v3__discovery_response__unpack(NULL, c->len[i], c->msg[i]);
    assert_non_null(r);
    assert_true(r->nonce[0] != '\0');
    for (size_t k = 0; k < r->n_resources; k++) assert_string_equal(r->resources[k]->type_url, r->type_url);
    return r;
}

/* Response i: its type (checked), its Any values joined with ',', nonce and version. */
static void sotw_get(cli *c, size_t i, xds_type want, char *vals, size_t cap, char *nonce, char *version)
{
    disc_resp *r = sotw_resp(c, i);
    assert_string_equal(r->type_url, xds_type_url(want));
    if (vals) {
        vals[0] = '\0';
        for (size_t k = 0; k < r->n_resources; k++) {
            size_t o = strlen(vals);
            snprintf(vals + o, cap - o, "%s%.*s", k ? "," : "", (int)r->resources[k]->value.len,
                     (const char *)r->resources[k]->value.data);
        }
    }
    if (nonce) snprintf(nonce, 64, "%s", r->nonce);
    if (version) snprintf(version, XDS_VERSION_LEN + 1, "%s", r->version_info);
    envoy__service__discovery__v3__discovery_response__free_unpacked(r, NULL);
}

static void delta_send(cli *c, xds_type t, const char *const *sub, size_t nsub, const char *const *unsub,
                       size_t nun, const char *nonce, bool nack, irv_entry **irv, size_t nirv,
                       bool with_node)
{
    delta_req r = ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INIT;
    Google__Rpc__Status err = GOOGLE__RPC__STATUS__INIT;
    node_msg node = ENVOY__CONFIG__CORE__V3__NODE__INIT;
    r.type_url = (char *)xds_type_url(t);
    r.resource_names_subscribe = (char **)sub;
    r.n_resource_names_subscribe = nsub;
    r.resource_names_unsubscribe = (char **)unsub;
    r.n_resource_names_unsubscribe = nun;
    r.initial_resource_versions = irv;
    r.n_initial_resource_versions = nirv;
    if (nonce) r.response_nonce = (char *)nonce;
    if (nack) {
        err.code = 13;
        err.message = "rejected";
        r.error_detail = &err;
    }
    if (with_node) {
        node.id = (char *)NODE;
        node.cluster = "web";
        r.node = &node;
    }
    OK(rpc_stream_send(c->st, &r.base));
}

/* Delta response i: "name@content" of each resource, the removed names,
 * the nonce; checks type, versions and Any type URLs. */
static void delta_get(cli *c, size_t i, xds_type want, char *res, char *removed, char *nonce)
{
    assert_true(i < c->n);
    delta_resp *r = envoy__service__discovery__v3__delta_discovery_response__unpack(NULL, c->len[i], c->msg[i]);
    assert_non_null(r);
    assert_string_equal(r->type_url, xds_type_url(want));
    assert_true(r->nonce[0] != '\0');
    res[0] = removed[0] = '\0';
    for (size_t k = 0; k < r->n_resources; k++) {
        const Envoy__Service__Discovery__V3__Resource *x = r->resources[k];
        assert_non_null(x->resource);
        assert_string_equal(x->resource->type_url, xds_type_url(want));
        assert_int_equal(strlen(x->version), XDS_VERSION_LEN);
        size_t o = strlen(res);
        snprintf(res + o, 256 - o, "%s%.*s", k ? "," : "", (int)x->resource->value.len,
                 (const char *)x->resource->value.data);
    }
    for (size_t k = 0; k < r->n_removed_resources; k++) {
        size_t o = strlen(removed);
        snprintf(removed + o, 256 - o, "%s%s", k ? "," : "", r->removed_resources[k]);
    }
    if (nonce) snprintf(nonce, 64, "%s", r->nonce);
    envoy__service__discovery__v3__delta_discovery_response__free_unpacked(r, NULL);
}

/* ---- SotW ---------------------------------------------------------------------------- */

static void test_sotw_wildcard_cds_ack(void **state)
{
    fx *f = *state;
    cli *c = cli_open(f, false);
    sotw_sub(c, CDS, NULL, 0, true); /* legacy wildcard: empty names */
    wait_n(c, 1);
    char vals[256], nonce[64], version[XDS_VERSION_LEN + 1];
    sotw_get(c, 0, CDS, vals, sizeof vals, nonce, version);
    assert_string_equal(vals, "a=1,b=1,c=1");
    assert_string_equal(version, xds_snapshot_version(f->cur, CDS));
    disc_resp *r = sotw_resp(c, 0);
    assert_non_null(r->control_plane);
    assert_string_equal(r->control_plane->identifier, "meshid");
    envoy__service__discovery__v3__discovery_response__free_unpacked(r, NULL);
    assert_string_equal(f->last_node, NODE);
    assert_true(f->last_peer_null); /* plaintext: no peer identity */

    /* ACK: counted, hooked, nothing resent */
    f->want_t = CDS;
    snprintf(f->want_ver, sizeof f->want_ver, "%s", version);
    sotw_send(c, CDS, NULL, 0, nonce, false, NULL);
    quiet(c);
    assert_int_equal(stats(f).acks, 1);
    assert_int_equal(f->acks_seen, 1);
    assert_int_equal(f->last_ack_stream, 1);
    assert_int_equal(stats(f).responses, 1);
    assert_int_equal(stats(f).streams, 1);
    assert_int_equal(f->resolves, 1);

    /* explicit "*" plus a name is still everything, once */
    cli *d = cli_open(f, false);
    const char *star[] = {"b", "*"};
    sotw_sub(d, CDS, star, 2, true);
    wait_n(d, 1);
    sotw_get(d, 0, CDS, vals, sizeof vals, NULL, NULL);
    assert_string_equal(vals, "a=1,b=1,c=1");
}

static void test_sotw_eds_by_name_and_late_names(void **state)
{
    fx *f = *state;
    cli *c = cli_open(f, false);
    const char *names[] = {"b", "zz", "b"};
    sotw_sub(c, EDS, names, 3, true);
    wait_n(c, 1);
    char vals[256], nonce[64];
    sotw_get(c, 0, EDS, vals, sizeof vals, nonce, NULL);
    assert_string_equal(vals, "b=e1"); /* zz does not exist yet; b once */
    sotw_send(c, EDS, names, 3, nonce, false, NULL);
    quiet(c);
    /* zz appears: sent (only what changed) */
    notify(f, mk("a=1,b=1,c=1", "a=e1,b=e1,c=e1,zz=e1", "l1=1", "r1=1"));
    wait_n(c, 2);
    sotw_get(c, 1, EDS, vals, sizeof vals, nonce, NULL);
    assert_string_equal(vals, "zz=e1");
    sotw_send(c, EDS, names, 3, nonce, false, NULL);
    quiet(c);
    /* an unsubscribed endpoint set changes: nothing */
    notify(f, mk("a=1,b=1,c=1", "a=e2,b=e1,c=e1,zz=e1", "l1=1", "r1=1"));
    quiet(c);
    /* b goes away (silently for EDS) and comes back: sent again */
    notify(f, mk("a=1,b=1,c=1", "a=e2,c=e1,zz=e1", "l1=1", "r1=1"));
    quiet(c);
    notify(f, mk("a=1,b=1,c=1", "a=e2,b=e1,c=e1,zz=e1", "l1=1", "r1=1"));
    wait_n(c, 3);
    sotw_get(c, 2, EDS, vals, sizeof vals, nonce, NULL);
    assert_string_equal(vals, "b=e1");
    /* re-requesting with a newly added name sends it even though... new */
    const char *more[] = {"b", "zz", "a"};
    sotw_send(c, EDS, more, 3, nonce, false, NULL);
    wait_n(c, 4);
    sotw_get(c, 3, EDS, vals, sizeof vals, NULL, NULL);
    assert_string_equal(vals, "a=e2");
    assert_int_equal(stats(f).pushes, 2);
}

static int full_setup(void **state)
{
    ads_opts o = {.sotw_full_eds_rds = true};
    return fx_setup_opts(state, NULL, &o);
}

static void test_sotw_full_eds_option(void **state)
{
    fx *f = *state;
    cli *c = cli_open(f, false);
    const char *names[] = {"a", "b"};
    sotw_sub(c, EDS, names, 2, true);
    wait_n(c, 1);
    char vals[256], nonce[64];
    sotw_get(c, 0, EDS, vals, sizeof vals, nonce, NULL);
    assert_string_equal(vals, "a=e1,b=e1");
    sotw_send(c, EDS, names, 2, nonce, false, NULL);
    notify(f, mk("a=1,b=1,c=1", "a=e2,b=e1,c=e1", "l1=1", "r1=1"));
    wait_n(c, 2);
    sotw_get(c, 1, EDS, vals, sizeof vals, NULL, NULL);
    assert_string_equal(vals, "a=e2,b=e1"); /* every subscribed one */
}

static void test_sotw_nack(void **state)
{
    fx *f = *state;
    cli *c = cli_open(f, false);
    sotw_sub(c, CDS, NULL, 0, true);
    wait_n(c, 1);
    char nonce[64], vals[256], version[XDS_VERSION_LEN + 1];
    sotw_get(c, 0, CDS, NULL, 0, nonce, NULL);
    sotw_send(c, CDS, NULL, 0, nonce, true, NULL); /* NACK */
    quiet(c);                                     /* not resent */
    assert_int_equal(stats(f).nacks, 1);
    assert_int_equal(stats(f).acks, 0);
    assert_int_equal(f->hook_calls, 0);
    notify(f, mk("a=1,b=1,c=1", "a=e1,b=e1,c=e1", "l1=1", "r1=1")); /* same content */
    quiet(c);
    notify(f, mk("a=1,b=2,c=1", "a=e1,b=e1,c=e1", "l1=1", "r1=1")); /* a fix */
    wait_n(c, 2);
    sotw_get(c, 1, CDS, vals, sizeof vals, nonce, version);
    assert_string_equal(vals, "a=1,b=2,c=1");
    assert_false(c->done);
    sotw_send(c, CDS, NULL, 0, nonce, false, NULL);
    quiet(c);
    assert_int_equal(stats(f).acks, 1);
}

static void test_sotw_stale_nonce_ignored(void **state)
{
    fx *f = *state;
    cli *c = cli_open(f, false);
    const char *a[] = {"a"}, *ab[] = {"a", "b"};
    sotw_sub(c, EDS, a, 1, true);
    wait_n(c, 1);
    char n1[64], n2[64], vals[256];
    sotw_get(c, 0, EDS, NULL, 0, n1, NULL);
    notify(f, mk("a=1,b=1,c=1", "a=e2,b=e1,c=e1", "l1=1", "r1=1"));
    wait_n(c, 2);
    sotw_get(c, 1, EDS, vals, sizeof vals, n2, NULL);
    assert_string_equal(vals, "a=e2");
    /* answering the superseded response: ignored entirely (also its names) */
    sotw_send(c, EDS, ab, 2, n1, false, NULL);
    quiet(c);
    sotw_send(c, EDS, ab, 2, "garbage", true, NULL);
    quiet(c);
    sotw_send(c, EDS, ab, 2, "", false, NULL);
    quiet(c);
    assert_int_equal(stats(f).stale, 3);
    assert_int_equal(stats(f).acks, 0);
    assert_int_equal(stats(f).nacks, 0);
    /* with the latest nonce: ACK and the new name */
    sotw_send(c, EDS, ab, 2, n2, false, NULL);
    wait_n(c, 3);
    sotw_get(c, 2, EDS, vals, sizeof vals, NULL, NULL);
    assert_string_equal(vals, "b=e1");
    assert_int_equal(stats(f).acks, 1);
}

static void test_sotw_bad_requests(void **state)
{
    fx *f = *state;
    /* unknown type */
    cli *c = cli_open(f, false);
    disc_req r = ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
    node_msg node = ENVOY__CONFIG__CORE__V3__NODE__INIT;
    node.id = (char *)NODE;
    r.node = &node;
    r.type_url = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
    OK(rpc_stream_send(c->st, &r.base));
    expect_end(c, RPC_INVALID_ARGUMENT, "envoy.extensions.transport_sockets.tls.v3.Secret");
    /* empty type */
    c = cli_open(f, false);
    r.type_url = "";
    OK(rpc_stream_send(c->st, &r.base));
    expect_end(c, RPC_INVALID_ARGUMENT, NULL);
    /* no node on the first request */
    c = cli_open(f, false);
    sotw_send(c, CDS, NULL, 0, NULL, false, NULL);
    expect_end(c, RPC_INVALID_ARGUMENT, "node");
    /* a different node later */
    c = cli_open(f, false);
    sotw_sub(c, CDS, NULL, 0, true);
    wait_n(c, 1);
    sotw_send(c, LDS, NULL, 0, NULL, false, NODE); /* the same node again is fine */
    wait_n(c, 2);
    sotw_send(c, RDS, NULL, 0, NULL, false, "other-node");
    expect_end(c, RPC_INVALID_ARGUMENT, "node changed");
    /* over-long name */
    c = cli_open(f, false);
    char *longname = malloc(ADS_NAME_MAX + 2);
    memset(longname, 'x', ADS_NAME_MAX + 1);
    longname[ADS_NAME_MAX + 1] = '\0';
    const char *ln[] = {longname};
    sotw_sub(c, EDS, ln, 1, true);
    wait_done(c);
    free(longname);
    assert_int_equal(c->code, RPC_INVALID_ARGUMENT);
    assert_int_equal(stats(f).aborted, 5);
    assert_int_equal(f->resolves, 2); /* only the node-change and long-name streams got that far */
}

static int limits_setup(void **state)
{
    ads_opts o = {.max_names = 2};
    return fx_setup_opts(state, NULL, &o);
}

static void test_sotw_max_names(void **state)
{
    fx *f = *state;
    cli *c = cli_open(f, false);
    const char *two[] = {"a", "b"}, *three[] = {"a", "b", "c"};
    sotw_sub(c, EDS, two, 2, true);
    wait_n(c, 1);
    char nonce[64];
    sotw_get(c, 0, EDS, NULL, 0, nonce, NULL);
    sotw_send(c, EDS, three, 3, nonce, false, NULL);
    expect_end(c, RPC_INVALID_ARGUMENT, "too many eds");
}

static void test_sotw_resolve_errors(void **state)
{
    fx *f = *state;
    f->fail = MID_E_DENIED;
    cli *c = cli_open(f, false);
    sotw_sub(c, CDS, NULL, 0, true);
    expect_end(c, RPC_PERMISSION_DENIED, "no workload registered for node sidecar~10.0.0.1");
    f->fail = MID_E_NOT_FOUND;
    c = cli_open(f, false);
    sotw_sub(c, CDS, NULL, 0, true);
    expect_end(c, RPC_FAILED_PRECONDITION, NULL);
    f->fail = MID_E_INVALID;
    c = cli_open(f, false);
    sotw_sub(c, CDS, NULL, 0, true);
    expect_end(c, RPC_INVALID_ARGUMENT, NULL);
    f->fail = MID_E_DB;
    c = cli_open(f, false);
    sotw_sub(c, CDS, NULL, 0, true);
    expect_end(c, RPC_UNAVAILABLE, NULL);
    assert_null(strstr(c->status, "no workload")); /* internal details stay in the log */
    /* a working stream whose proxy disappears later is ended on the push */
    f->fail = 0;
    c = cli_open(f, false);
    sotw_sub(c, CDS, NULL, 0, true);
    wait_n(c, 1);
    f->fail = MID_E_NOT_FOUND;
    notify(f, NULL);
    expect_end(c, RPC_FAILED_PRECONDITION, NULL);
    assert_int_equal(stats(f).aborted, 5);
}

static void test_sotw_push_only_what_changed(void **state)
{
    fx *f = *state;
    cli *c = cli_open(f, false);
    const char *eds[] = {"a"};
    sotw_sub(c, CDS, NULL, 0, true);
    wait_n(c, 1);
    sotw_sub(c, EDS, eds, 1, false);
    wait_n(c, 2);
    char nonce[64], vals[256];
    sotw_get(c, 0, CDS, NULL, 0, nonce, NULL);
    sotw_send(c, CDS, NULL, 0, nonce, false, NULL);
    sotw_get(c, 1, EDS, NULL, 0, nonce, NULL);
    sotw_send(c, EDS, eds, 1, nonce, false, NULL);
    quiet(c);
    int resolves = f->resolves;
    /* the same content in a new snapshot object: nothing */
    notify(f, mk("a=1,b=1,c=1", "a=e1,b=e1,c=e1", "l1=1", "r1=1"));
    quiet(c);
    assert_int_equal(f->resolves, resolves + 1);
    /* cluster b and its endpoints change: complete CDS; EDS b is not subscribed */
    notify(f, mk("a=1,b=2,c=1", "a=e1,b=e2,c=e1", "l1=1", "r1=1"));
    wait_n(c, 3);
    sotw_get(c, 2, CDS, vals, sizeof vals, nonce, NULL);
    assert_string_equal(vals, "a=1,b=2,c=1");
    sotw_send(c, CDS, NULL, 0, nonce, false, NULL);
    quiet(c);
    /* a cluster removed: the complete set without it */
    notify(f, mk("a=1,b=2", "a=e1,b=e2,c=e1", "l1=1", "r1=1"));
    wait_n(c, 4);
    sotw_get(c, 3, CDS, vals, sizeof vals, nonce, NULL);
    assert_string_equal(vals, "a=1,b=2");
    sotw_send(c, CDS, NULL, 0, nonce, false, NULL);
    /* endpoints of a change: EDS a only */
    notify(f, mk("a=1,b=2", "a=e3,b=e2,c=e1", "l1=1", "r1=1"));
    wait_n(c, 5);
    sotw_get(c, 4, EDS, vals, sizeof vals, NULL, NULL);
    assert_string_equal(vals, "a=e3");
    quiet(c);
    assert_int_equal(stats(f).pushes, 3);
}

static void test_sotw_named_lds_and_empty_list(void **state)
{
    fx *f = *state;
    cli *c = cli_open(f, false);
    /* gRPC style: LDS by exact name; unknown names wait */
    const char *l[] = {"l1", "l2"};
    sotw_sub(c, LDS, l, 2, true);
    wait_n(c, 1);
    char nonce[64], vals[256];
    sotw_get(c, 0, LDS, vals, sizeof vals, nonce, NULL);
    assert_string_equal(vals, "l1=1");
    sotw_send(c, LDS, l, 2, nonce, false, NULL);
    quiet(c);
    notify(f, mk("a=1,b=1,c=1", "a=e1,b=e1,c=e1", "l1=1,l2=1,l3=1", "r1=1"));
    wait_n(c, 2);
    sotw_get(c, 1, LDS, vals, sizeof vals, nonce, NULL);
    assert_string_equal(vals, "l1=1,l2=1"); /* complete requested set, not l3 */
    sotw_send(c, LDS, l, 2, nonce, false, NULL);
    /* the listener is deleted: an LDS response without it */
    notify(f, mk("a=1,b=1,c=1", "a=e1,b=e1,c=e1", "l2=1", "r1=1"));
    wait_n(c, 3);
    sotw_get(c, 2, LDS, vals, sizeof vals, nonce, NULL);
    assert_string_equal(vals, "l2=1");
    /* after naming resources an empty list means nothing, not wildcard */
    sotw_send(c, LDS, NULL, 0, nonce, false, NULL);
    quiet(c);
    notify(f, mk("a=1,b=1,c=1", "a=e1,b=e1,c=e1", "l2=2,l3=1", "r1=1"));
    quiet(c);
}

static void test_sotw_push_order(void **state)
{
    fx *f = *state;
    cli *c = cli_open(f, false);
    const char *eds[] = {"a"}, *rds[] = {"r1"};
    /* subscribe in reverse order */
    sotw_sub(c, RDS, rds, 1, true);
    sotw_sub(c, LDS, NULL, 0, false);
    sotw_sub(c, EDS, eds, 1, false);
    sotw_sub(c, CDS, NULL, 0, false);
    wait_n(c, 4);
    char nonce[64];
    const xds_type rev[] = {RDS, LDS, EDS, CDS};
    for (size_t i = 0; i < 4; i++) {
        sotw_get(c, i, rev[i], NULL, 0, nonce, NULL);
        sotw_send(c, rev[i], c->names[rev[i]], c->nnames[rev[i]], nonce, false, NULL);
    }
    quiet(c);
    assert_int_equal(stats(f).acks, 4);
    /* everything changes: pushed CDS, EDS, LDS, RDS */
    notify(f, mk("a=2,b=1,c=1", "a=e2,b=e1,c=e1", "l1=2", "r1=2"));
    wait_n(c, 8);
    char vals[256];
    const xds_type order[] = {CDS, EDS, LDS, RDS};
    const char *want[] = {"a=2,b=1,c=1", "a=e2", "l1=2", "r1=2"};
    for (size_t i = 0; i < 4; i++) {
        sotw_get(c, 4 + i, order[i], vals, sizeof vals, NULL, NULL);
        assert_string_equal(vals, want[i]);
    }
    assert_int_equal(stats(f).pushes, 4);
}

static void test_debounce(void **state)
{
    fx *f = *state;
    cli *c1 = cli_open(f, false), *c2 = cli_open(f, true);
    sotw_sub(c1, CDS, NULL, 0, true);
    delta_send(c2, CDS, NULL, 0, NULL, 0, NULL, false, NULL, 0, true);
    wait_n(c1, 1);
    wait_n(c2, 1);
    int before = f->resolves;
    assert_int_equal(before, 2);
    for (int i = 0; i < 10; i++) notify(f, mk("a=9,b=1,c=1", "", "", ""));
    wait_n(c1, 2);
    wait_n(c2, 2);
    tl_run_for(f->loop, QUIET_MS);
    assert_int_equal(f->resolves, before + 2); /* one per stream */
    assert_int_equal(c1->n, 2);
    assert_int_equal(c2->n, 2);
    assert_int_equal(stats(f).resolves, 4);
}

typedef struct {
    ads_server *a;
} async_arg;

static void *async_worker(void *p)
{
    async_arg *x = p;
    for (int i = 0; i < 50; i++) ads_server_notify_async(x->a);
    return NULL;
}

static void test_notify_async(void **state)
{
    fx *f = *state;
    cli *c = cli_open(f, false);
    sotw_sub(c, CDS, NULL, 0, true);
    wait_n(c, 1);
    set_snap(f, mk("a=3,b=1,c=1", "", "", ""));
    pthread_t th;
    async_arg x = {f->ads};
    assert_int_equal(pthread_create(&th, NULL, async_worker, &x), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    wait_n(c, 2);
    char vals[256];
    sotw_get(c, 1, CDS, vals, sizeof vals, NULL, NULL);
    assert_string_equal(vals, "a=3,b=1,c=1");
    tl_run_for(f->loop, QUIET_MS);
    assert_true(f->resolves <= 3); /* merged */
}

static void test_half_close_and_shutdown(void **state)
{
    fx *f = *state;
    cli *c = cli_open(f, false);
    sotw_sub(c, CDS, NULL, 0, true);
    wait_n(c, 1);
    OK(rpc_stream_close_send(c->st));
    expect_end(c, RPC_OK, NULL);
    cli *d = cli_open(f, true);
    delta_send(d, CDS, NULL, 0, NULL, 0, NULL, false, NULL, 0, true);
    wait_n(d, 1);
    ads_server_notify(f->ads);
    ads_server_shutdown(f->ads);
    ads_server_notify(f->ads); /* no-op */
    expect_end(d, RPC_UNAVAILABLE, NULL);
    cli *e = cli_open(f, false); /* refused after shutdown */
    sotw_sub(e, CDS, NULL, 0, true);
    expect_end(e, RPC_UNAVAILABLE, NULL);
    tl_run_for(f->loop, QUIET_MS);
    assert_int_equal(stats(f).streams, 0);
}

static int slow_setup(void **state)
{
    rpc_server_opts so = {.send_queue_len = 2};
    return fx_setup_opts(state, &so, NULL);
}

/* A snapshot with two 1 MiB clusters filled with `fill`. */
static xds_snapshot *big(char fill)
{
    static uint8_t buf[1 << 20];
    memset(buf, fill, sizeof buf);
    xds_snapshot *s;
    OK(xds_snapshot_new(&s));
    OK(xds_snapshot_add(s, CDS, "big1", buf, sizeof buf));
    OK(xds_snapshot_add(s, CDS, "big2", buf, sizeof buf));
    OK(xds_snapshot_seal(s));
    return s;
}

static void test_slow_reader_aborted(void **state)
{
    fx *f = *state;
    set_snap(f, big('x'));
    cli *c = cli_open(f, false);
    sotw_sub(c, CDS, NULL, 0, true);
    wait_n(c, 1);
    f->stop_on_msg = false;
    rpc_stream_pause(c->st, true);
    for (int i = 0; i < 400 && stats(f).aborted == 0; i++) {
        notify(f, big(i % 2 ? 'x' : 'y'));
        tl_run_for(f->loop, DEBOUNCE_MS + 10);
    }
    assert_int_equal(stats(f).aborted, 1);
    rpc_stream_pause(c->st, false);
    expect_end(c, RPC_RESOURCE_EXHAUSTED, "not reading");
}

static int budget_setup(void **state)
{
    ads_opts o = {.max_queued_bytes = 6u << 20, .stall_ms = 500};
    return fx_setup_opts(state, NULL, &o);
}

/* The first byte of the first resource of SotW response i. */
static char first_byte(cli *c, size_t i)
{
    disc_resp *r = sotw_resp(c, i);
    assert_true(r->n_resources > 0);
    char b = (char)r->resources[0]->value.data[0];
    envoy__service__discovery__v3__discovery_response__free_unpacked(r, NULL);
    return b;
}

/* Runs the loop until cond(f) or WAIT_MS. */
static void wait_until(fx *f, bool (*cond)(fx *f))
{
    for (int i = 0; i < WAIT_MS / 50 && !cond(f); i++) tl_run_for(f->loop, 50);
    assert_true(cond(f));
}

static bool three_initial(fx *f)
{
    return f->c[0]->n >= 1 && f->c[1]->n >= 1 && f->c[2]->n >= 1;
}

static bool bc_have(fx *f, char fill)
{
    for (int k = 1; k < 3; k++) {
        cli *x = f->c[k];
        if (x->n < 2 || first_byte(x, x->n - 1) != fill) return false;
    }
    return true;
}

static bool bc_have_z(fx *f)
{
    return bc_have(f, 'z');
}

static void test_queue_budget(void **state)
{
    fx *f = *state;
    f->stop_on_msg = false;
    for (int i = 0; i < 3; i++) sotw_sub(cli_open(f, false), CDS, NULL, 0, true);
    wait_until(f, three_initial);
    /* a stops reading: once socket buffers are full its pushes stay queued,
     * exceed the budget and b and c have to wait; the stall check ends a */
    cli *a = f->c[0];
    rpc_stream_pause(a->st, true);
    int pushes = 0;
    uint64_t max_waiting = 0;
    for (int i = 0; i < 600 && stats(f).aborted == 0; i++) {
        notify(f, big(i % 2 ? 'p' : 'q'));
        pushes++;
        tl_run_for(f->loop, DEBOUNCE_MS + 10);
        if (stats(f).waiting > max_waiting) max_waiting = stats(f).waiting;
    }
    assert_int_equal(stats(f).aborted, 1);
    assert_true(max_waiting >= 1);
    assert_true(stats(f).waits >= 2);
    /* b and c end with the latest state, and got fewer responses than
     * there were pushes: changes merged while they waited */
    notify(f, big('z'));
    pushes++;
    wait_until(f, bc_have_z);
    tl_run_for(f->loop, QUIET_MS);
    for (int k = 1; k < 3; k++) {
        assert_int_equal(first_byte(f->c[k], f->c[k]->n - 1), 'z');
        assert_true(f->c[k]->n < (size_t)pushes);
    }
    rpc_stream_pause(a->st, false);
    expect_end(a, RPC_RESOURCE_EXHAUSTED, "not reading");
    assert_int_equal(stats(f).aborted, 1);
    assert_int_equal(stats(f).waiting, 0);
}

static void test_many_streams_one_push(void **state)
{
    fx *f = *state;
    f->stop_on_msg = false;
    f->want_t = CDS;
    snprintf(f->want_ver, sizeof f->want_ver, "%s", xds_snapshot_version(f->cur, CDS));
    f->acks_want = MAXCLI;
    const char *eds[] = {"a", "b", "zz"};
    for (size_t i = 0; i < MAXCLI; i++) {
        cli *c = cli_open(f, false);
        c->auto_ack = true;
        sotw_sub(c, CDS, NULL, 0, true);
        sotw_sub(c, EDS, eds, 3, false);
    }
    while (f->acks_seen < MAXCLI) assert_false(tl_run_for(f->loop, WAIT_MS));
    assert_int_equal(stats(f).names, 3); /* stored once for all streams */
    /* one registry change, one notify: every client gets and ACKs it */
    set_snap(f, mk("a=1,b=7,c=1", "", "", ""));
    f->acks_seen = 0;
    snprintf(f->want_ver, sizeof f->want_ver, "%s", xds_snapshot_version(f->cur, CDS));
    ads_server_notify(f->ads);
    while (f->acks_seen < MAXCLI) assert_false(tl_run_for(f->loop, WAIT_MS));
    assert_int_equal(stats(f).pushes, MAXCLI);
    assert_int_equal(stats(f).streams, MAXCLI);
    assert_int_equal(f->resolves, 2 * MAXCLI);
    for (size_t i = 0; i < MAXCLI; i++) {
        char vals[256];
        assert_int_equal(f->c[i]->n, 3); /* CDS, EDS, pushed CDS */
        sotw_get(f->c[i], 2, CDS, vals, sizeof vals, NULL, NULL);
        assert_string_equal(vals, "a=1,b=7,c=1");
    }
}

/* ---- shared parts and the push-cycle diff --------------------------------------------- */

#define BIG 80 /* resources in the big part: over the diff cache's threshold */

/* EDS part "e00=1" .. "e79=1", without `drop`, e05 and e06 with the given
 * contents. */
static xds_rset *big_part(const char *drop, const char *v05, const char *v06)
{
    xds_rset *r;
    OK(xds_rset_new(&r));
    for (int i = 0; i < BIG; i++) {
        char name[16], bytes[40];
        snprintf(name, sizeof name, "e%02d", i);
        if (drop && strcmp(name, drop) == 0) continue;
        snprintf(bytes, sizeof bytes, "%s=%s", name, i == 5 ? v05 : i == 6 ? v06 : "1");
        OK(xds_rset_add(r, name, (const uint8_t *)bytes, strlen(bytes)));
    }
    xds_rset_seal(r);
    return r;
}

/* A small part from a "name=content,..." spec. */
static xds_rset *small_part(const char *spec)
{
    xds_snapshot *tmp = mk("", spec, "", ""); /* parses the spec into own EDS */
    xds_rset *r;
    OK(xds_rset_new(&r));
    for (size_t i = 0; i < xds_snapshot_count(tmp, EDS); i++) {
        const xds_resource *x = xds_snapshot_at(tmp, EDS, i);
        OK(xds_rset_add(r, x->name, x->bytes, x->len));
    }
    xds_rset_seal(r);
    xds_snapshot_unref(tmp);
    return r;
}

/* CDS "a=1"; EDS = the parts p1, p2, then own resources `own`. */
static xds_snapshot *mk_parts(xds_rset *p1, xds_rset *p2, const char *own)
{
    xds_snapshot *s;
    OK(xds_snapshot_new(&s));
    add_spec(s, CDS, "a=1");
    OK(xds_snapshot_add_set(s, EDS, p1));
    OK(xds_snapshot_add_set(s, EDS, p2));
    add_spec(s, EDS, own);
    OK(xds_snapshot_seal(s));
    return s;
}

static void expect_eds(cli *c, size_t i, const char *want)
{
    char vals[256];
    wait_n(c, i + 1);
    sotw_get(c, i, EDS, vals, sizeof vals, NULL, NULL);
    assert_string_equal(vals, want);
}

/* Streams re-evaluated after a push look only at the sets that changed
 * (one diff per replaced shared part, shared by every stream): a changed
 * shared part, a changed second part, changed own resources, a resource
 * that leaves and comes back, one that moves between sets. */
static void test_sotw_shared_parts_push(void **state)
{
    fx *f = *state;
    xds_rset *p1 = big_part(NULL, "1", "1"), *p2 = small_part("x=1,y=1");
    set_snap(f, mk_parts(p1, p2, "z=1"));
    const char *eds[] = {"e05", "e70", "x", "z"};
    cli *cl[2];
    for (int k = 0; k < 2; k++) {
        cli *c = cl[k] = cli_open(f, false);
        c->auto_ack = true;
        sotw_sub(c, CDS, NULL, 0, true);
        wait_n(c, 1);
        sotw_sub(c, EDS, eds, 4, false);
        expect_eds(c, 1, "e05=1,e70=1,x=1,z=1");
    }
    quiet(cl[0]);
    /* the big shared part replaced, one subscribed resource changed */
    xds_rset *p1b = big_part(NULL, "2", "1");
    notify(f, mk_parts(p1b, p2, "z=1"));
    for (int k = 0; k < 2; k++) expect_eds(cl[k], 2, "e05=2");
    /* the second part replaced; the first one is the same object */
    xds_rset *p2b = small_part("x=2,y=1");
    notify(f, mk_parts(p1b, p2b, "z=1"));
    for (int k = 0; k < 2; k++) expect_eds(cl[k], 3, "x=2");
    /* own resources changed */
    notify(f, mk_parts(p1b, p2b, "z=2"));
    for (int k = 0; k < 2; k++) expect_eds(cl[k], 4, "z=2");
    /* an unsubscribed resource of the big part changed: nothing */
    xds_rset *p1c = big_part(NULL, "2", "2");
    notify(f, mk_parts(p1c, p2b, "z=2"));
    quiet(cl[0]);
    assert_int_equal(cl[0]->n, 5);
    assert_int_equal(cl[1]->n, 5);
    /* e70 leaves (no response: a parent drops it) and comes back (sent) */
    xds_rset *p1d = big_part("e70", "2", "2");
    notify(f, mk_parts(p1d, p2b, "z=2"));
    quiet(cl[0]);
    assert_int_equal(cl[0]->n, 5);
    notify(f, mk_parts(p1c, p2b, "z=2"));
    for (int k = 0; k < 2; k++) expect_eds(cl[k], 5, "e70=1");
    /* x moves from the second part to the own resources, same bytes: nothing */
    xds_rset *p2c = small_part("y=1");
    notify(f, mk_parts(p1c, p2c, "x=2,z=2"));
    quiet(cl[0]);
    assert_int_equal(cl[0]->n, 6);
    assert_int_equal(cl[1]->n, 6);
    /* and changes there */
    notify(f, mk_parts(p1c, p2c, "x=3,z=2"));
    for (int k = 0; k < 2; k++) expect_eds(cl[k], 6, "x=3");
    quiet(cl[0]);
    assert_int_equal(stats(f).pushes, 2 * 5);
    assert_int_equal(stats(f).nacks, 0);
    xds_rset *all[] = {p1, p2, p1b, p2b, p1c, p1d, p2c};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) xds_rset_unref(all[i]);
}

static void delta_send(cli *c, xds_type t, const char *const *sub, size_t nsub, const char *const *unsub,
                       size_t nun, const char *nonce, bool nack, irv_entry **irv, size_t nirv,
                       bool with_node);
static void delta_get(cli *c, size_t i, xds_type want, char *res, char *removed, char *nonce);

/* The same for a delta named subscription: changes of shared parts and own
 * resources, a removal (removed_resources) and the return. */
static void test_delta_shared_parts_push(void **state)
{
    fx *f = *state;
    xds_rset *p1 = big_part(NULL, "1", "1"), *p2 = small_part("x=1,y=1");
    set_snap(f, mk_parts(p1, p2, "z=1"));
    cli *c = cli_open(f, true);
    const char *eds[] = {"e05", "e70", "x", "z"};
    char res[256], rem[256], nonce[64];
    delta_send(c, EDS, eds, 4, NULL, 0, NULL, false, NULL, 0, true);
    wait_n(c, 1);
    delta_get(c, 0, EDS, res, rem, nonce);
    assert_string_equal(res, "e05=1,e70=1,x=1,z=1");
    delta_send(c, EDS, NULL, 0, NULL, 0, nonce, false, NULL, 0, false);
    quiet(c);
    xds_rset *p1b = big_part(NULL, "2", "2"); /* e05 subscribed, e06 not */
    notify(f, mk_parts(p1b, p2, "z=1"));
    wait_n(c, 2);
    delta_get(c, 1, EDS, res, rem, nonce);
    assert_string_equal(res, "e05=2");
    assert_string_equal(rem, "");
    xds_rset *p1c = big_part("e70", "2", "2");
    notify(f, mk_parts(p1c, p2, "z=1"));
    wait_n(c, 3);
    delta_get(c, 2, EDS, res, rem, nonce);
    assert_string_equal(res, "");
    assert_string_equal(rem, "e70");
    notify(f, mk_parts(p1b, p2, "z=2"));
    wait_n(c, 4);
    delta_get(c, 3, EDS, res, rem, nonce);
    assert_string_equal(res, "e70=1,z=2");
    xds_rset *p2b = small_part("y=1");
    notify(f, mk_parts(p1b, p2b, "x=1,z=2")); /* x moves, same bytes */
    quiet(c);
    assert_int_equal(c->n, 4);
    assert_int_equal(stats(f).pushes, 3);
    xds_rset *all[] = {p1, p2, p1b, p1c, p2b};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) xds_rset_unref(all[i]);
}

/* ACKs that repeat the subscription take a shortcut; any other set of the
 * same size (reordered, a duplicate, another name) must still count. */
static void test_sotw_ack_same_names(void **state)
{
    fx *f = *state;
    cli *c = cli_open(f, false);
    char nonce[64], vals[256];
    sotw_sub(c, CDS, NULL, 0, true);
    wait_n(c, 1);
    sotw_get(c, 0, CDS, NULL, 0, nonce, NULL);
    sotw_send(c, CDS, NULL, 0, nonce, false, NULL);
    const char *ab[] = {"a", "b"}, *ba[] = {"b", "a"}, *bb[] = {"b", "b"}, *ca[] = {"c", "a"};
    sotw_send(c, EDS, ab, 2, NULL, false, NULL);
    wait_n(c, 2);
    sotw_get(c, 1, EDS, vals, sizeof vals, nonce, NULL);
    assert_string_equal(vals, "a=e1,b=e1");
    /* the same names, in order and reordered: ACKs, nothing sent */
    sotw_send(c, EDS, ab, 2, nonce, false, NULL);
    sotw_send(c, EDS, ba, 2, nonce, false, NULL);
    quiet(c);
    assert_int_equal(stats(f).acks, 3);
    assert_int_equal(c->n, 2);
    /* a duplicate: the subscription is {b} now; a is new again afterwards */
    sotw_send(c, EDS, bb, 2, nonce, false, NULL);
    quiet(c);
    assert_int_equal(c->n, 2);
    sotw_send(c, EDS, ba, 2, nonce, false, NULL);
    wait_n(c, 3);
    sotw_get(c, 2, EDS, vals, sizeof vals, nonce, NULL);
    assert_string_equal(vals, "a=e1");
    /* the same count, another name */
    sotw_send(c, EDS, ca, 2, nonce, false, NULL);
    wait_n(c, 4);
    sotw_get(c, 3, EDS, vals, sizeof vals, nonce, NULL);
    assert_string_equal(vals, "c=e1");
    sotw_send(c, EDS, ca, 2, nonce, false, NULL);
    /* b is no longer subscribed: its change is not pushed; c's is */
    notify(f, mk("a=1,b=1,c=1", "a=e1,b=e2,c=e1", "l1=1", "r1=1"));
    quiet(c);
    assert_int_equal(c->n, 4);
    notify(f, mk("a=1,b=1,c=1", "a=e1,b=e2,c=e2", "l1=1", "r1=1"));
    wait_n(c, 5);
    sotw_get(c, 4, EDS, vals, sizeof vals, NULL, NULL);
    assert_string_equal(vals, "c=e2");
}

/* ---- delta ------------------------------------------------------------------------------ */

static void test_delta_named(void **state)
{
    fx *f = *state;
    cli *c = cli_open(f, true);
    const char *sub[] = {"a", "nope"};
    delta_send(c, EDS, sub, 2, NULL, 0, NULL, false, NULL, 0, true);
    wait_n(c, 1);
    char res[256], rem[256], nonce[64];
    delta_get(c, 0, EDS, res, rem, nonce);
    assert_string_equal(res, "a=e1");
    assert_string_equal(rem, "nope"); /* answered: does not exist */
    delta_send(c, EDS, NULL, 0, NULL, 0, nonce, false, NULL, 0, false);
    quiet(c);
    assert_int_equal(stats(f).acks, 1);
    /* a changes: pushed; b (not subscribed) changes: nothing */
    notify(f, mk("a=1,b=1,c=1", "a=e2,b=e1,c=e1", "l1=1", "r1=1"));
    wait_n(c, 2);
    delta_get(c, 1, EDS, res, rem, nonce);
    assert_string_equal(res, "a=e2");
    assert_string_equal(rem, "");
    notify(f, mk("a=1,b=1,c=1", "a=e2,b=e2,c=e1", "l1=1", "r1=1"));
    quiet(c);
    /* nope appears: sent; a disappears: removed */
    notify(f, mk("a=1,b=1,c=1", "b=e2,c=e1,nope=e1", "l1=1", "r1=1"));
    wait_n(c, 3);
    delta_get(c, 2, EDS, res, rem, nonce);
    assert_string_equal(res, "nope=e1");
    assert_string_equal(rem, "a");
    /* NACK: counted, not resent */
    delta_send(c, EDS, NULL, 0, NULL, 0, nonce, true, NULL, 0, false);
    quiet(c);
    assert_int_equal(stats(f).nacks, 1);
    /* unsubscribe: no answer, no more pushes for it */
    const char *un[] = {"nope"};
    delta_send(c, EDS, NULL, 0, un, 1, NULL, false, NULL, 0, false);
    quiet(c);
    notify(f, mk("a=1,b=1,c=1", "b=e2,c=e1,nope=e2", "l1=1", "r1=1"));
    quiet(c);
    /* subscribing with a stale nonce still applies */
    const char *sb[] = {"b"};
    delta_send(c, EDS, sb, 1, NULL, 0, "old-nonce", false, NULL, 0, false);
    wait_n(c, 4);
    delta_get(c, 3, EDS, res, rem, nonce);
    assert_string_equal(res, "b=e2");
    assert_int_equal(stats(f).stale, 1);
    /* an explicit re-subscribe of a held name is answered again */
    delta_send(c, EDS, sb, 1, NULL, 0, nonce, false, NULL, 0, false);
    wait_n(c, 5);
    delta_get(c, 4, EDS, res, rem, NULL);
    assert_string_equal(res, "b=e2");
}

static void test_delta_wildcard(void **state)
{
    fx *f = *state;
    cli *c = cli_open(f, true);
    delta_send(c, CDS, NULL, 0, NULL, 0, NULL, false, NULL, 0, true); /* legacy wildcard */
    wait_n(c, 1);
    char res[256], rem[256], nonce[64];
    delta_get(c, 0, CDS, res, rem, nonce);
    assert_string_equal(res, "a=1,b=1,c=1");
    assert_string_equal(rem, "");
    delta_send(c, CDS, NULL, 0, NULL, 0, nonce, false, NULL, 0, false);
    quiet(c);
    /* b removed, a changed, d added */
    notify(f, mk("a=2,c=1,d=1", "", "", ""));
    wait_n(c, 2);
    delta_get(c, 1, CDS, res, rem, nonce);
    assert_string_equal(res, "a=2,d=1");
    assert_string_equal(rem, "b");
    notify(f, mk("a=2,c=1,d=1", "x=1", "", "")); /* CDS unchanged */
    quiet(c);
    /* wildcard LDS on an empty type is still answered (empty) */
    set_snap(f, mk("a=2,c=1,d=1", "", "", ""));
    const char *star[] = {"*"};
    delta_send(c, LDS, star, 1, NULL, 0, NULL, false, NULL, 0, false);
    wait_n(c, 3);
    delta_get(c, 2, LDS, res, rem, NULL);
    assert_string_equal(res, "");
    assert_string_equal(rem, "");
    /* "*" plus a name; unsubscribing the name still gets an answer */
    const char *cn[] = {"c", "zz"};
    delta_send(c, CDS, cn, 2, NULL, 0, NULL, false, NULL, 0, false);
    wait_n(c, 4);
    delta_get(c, 3, CDS, res, rem, nonce);
    assert_string_equal(res, "c=1");
    assert_string_equal(rem, "zz");
    const char *uc[] = {"c"};
    delta_send(c, CDS, NULL, 0, uc, 1, nonce, false, NULL, 0, false);
    wait_n(c, 5);
    delta_get(c, 4, CDS, res, rem, nonce);
    assert_string_equal(res, "c=1");
    /* leaving the wildcard: only the named ones are followed */
    const char *us[] = {"*"};
    delta_send(c, CDS, NULL, 0, us, 1, nonce, false, NULL, 0, false);
    quiet(c);
    notify(f, mk("a=3,c=1,d=1", "", "", ""));
    quiet(c);
    notify(f, mk("a=3,c=1,d=1,zz=1", "", "", ""));
    wait_n(c, 6);
    delta_get(c, 5, CDS, res, rem, NULL);
    assert_string_equal(res, "zz=1");
}

static void test_delta_initial_versions(void **state)
{
    fx *f = *state;
    const char *va = xds_snapshot_find(f->cur, CDS, "a")->version;
    const char *vea = xds_snapshot_find(f->cur, EDS, "a")->version;
    irv_entry e[4];
    irv_entry *pe[4];
    for (int i = 0; i < 4; i++) {
        e[i] = (irv_entry)ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INITIAL_RESOURCE_VERSIONS_ENTRY__INIT;
        pe[i] = &e[i];
    }
    e[0].key = "a";
    e[0].value = (char *)va;              /* current: skipped */
    e[1].key = "b";
    e[1].value = "0123456789abcdef";      /* outdated: resent */
    e[2].key = "gone";
    e[2].value = (char *)va;              /* does not exist: removed */
    e[3].key = "c";
    e[3].value = "not-a-meshid-version";  /* foreign: resent */
    cli *c = cli_open(f, true);
    delta_send(c, CDS, NULL, 0, NULL, 0, NULL, false, pe, 4, true);
    wait_n(c, 1);
    char res[256], rem[256];
    delta_get(c, 0, CDS, res, rem, NULL);
    assert_string_equal(res, "b=1,c=1");
    assert_string_equal(rem, "gone");
    /* named: held at the current version -> not resent */
    e[0].value = (char *)vea;
    const char *sub[] = {"a", "b"};
    delta_send(c, EDS, sub, 2, NULL, 0, NULL, false, pe, 1, false);
    wait_n(c, 2);
    delta_get(c, 1, EDS, res, rem, NULL);
    assert_string_equal(res, "b=e1");
    assert_string_equal(rem, "");
    /* everything held: nothing to send at all */
    cli *d = cli_open(f, true);
    const char *onlya[] = {"a"};
    delta_send(d, EDS, onlya, 1, NULL, 0, NULL, false, pe, 1, true);
    quiet(d);
}

static void test_delta_bad_requests(void **state)
{
    fx *f = *state;
    cli *c = cli_open(f, true);
    delta_req r = ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INIT;
    node_msg node = ENVOY__CONFIG__CORE__V3__NODE__INIT;
    node.id = (char *)NODE;
    r.node = &node;
    r.type_url = "type.googleapis.com/envoy.config.cluster.v3.Clusters";
    OK(rpc_stream_send(c->st, &r.base));
    expect_end(c, RPC_INVALID_ARGUMENT, "Clusters");
    c = cli_open(f, true);
    delta_send(c, CDS, NULL, 0, NULL, 0, NULL, false, NULL, 0, false); /* no node */
    expect_end(c, RPC_INVALID_ARGUMENT, NULL);
    f->fail = MID_E_DENIED;
    c = cli_open(f, true);
    delta_send(c, CDS, NULL, 0, NULL, 0, NULL, false, NULL, 0, true);
    expect_end(c, RPC_PERMISSION_DENIED, NULL);
}

int run_ads_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sotw_wildcard_cds_ack, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sotw_eds_by_name_and_late_names, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sotw_full_eds_option, full_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sotw_nack, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sotw_stale_nonce_ignored, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sotw_bad_requests, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sotw_max_names, limits_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sotw_resolve_errors, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sotw_push_only_what_changed, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sotw_named_lds_and_empty_list, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sotw_push_order, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_debounce, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_notify_async, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_half_close_and_shutdown, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_slow_reader_aborted, slow_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_queue_budget, budget_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_many_streams_one_push, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sotw_shared_parts_push, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sotw_ack_same_names, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_delta_shared_parts_push, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_delta_named, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_delta_wildcard, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_delta_initial_versions, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_delta_bad_requests, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests_name("ads", tests, NULL, NULL);
}
