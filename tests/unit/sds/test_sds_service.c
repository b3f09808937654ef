/* The SDS service end to end: a real rpc loop serving sds_service on a Unix
 * socket in a temp dir, driven by the rpc client API on the same loop, with
 * the fake source from test_view.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "lib/rpc.h"
#include "sds/sds_service.h"
#include "sds/secrets.h"
#include "tests/testlib/rpc_wait.h"
#include "tests/unit/sds/sds_tests.h"

typedef Envoy__Service__Discovery__V3__DiscoveryRequest disc_req;
typedef Envoy__Service__Discovery__V3__DiscoveryResponse disc_resp;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryRequest delta_req;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryResponse delta_resp;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry irv_entry;

#define WAIT_MS 10000
#define QUIET_MS 150
#define MAXMSG 4096

typedef struct {
    rpc_loop *loop;
    rpc_server *srv;
    sds_service *svc;
    sdsfx_source src;
    sdsfx_ca *ca, *other;
    char dir[64], sock[100], target[128];
    rpc_channel *ch;
    rpc_stream *st;
    /* what the client received: packed copies */
    uint8_t *msg[MAXMSG];
    size_t len[MAXMSG];
    size_t n;
    bool done;
    rpc_code code;
    char status[512];
    bool stop_on_msg;
} fx;

/* ---- fixture ---------------------------------------------------------------- */

static int fx_setup_opts(void **state, const rpc_server_opts *so, const sds_service_opts *o)
{
    fx *f = calloc(1, sizeof *f);
    f->ca = sdsfx_ca_new("example.org");
    f->other = sdsfx_ca_new("other.org");
    f->src.view = sdsfx_view(f->ca, "spiffe://example.org/web", f->other);
    f->stop_on_msg = true;
    assert_true(mid_is_ok(rpc_loop_new(&f->loop)));
    assert_true(mid_is_ok(rpc_server_new(f->loop, so, &f->srv)));
    sds_source src = {&sdsfx_source_ops, &f->src};
    assert_true(mid_is_ok(sds_service_new(f->srv, src, o, &f->svc)));
    snprintf(f->dir, sizeof f->dir, "/tmp/meshid-sds-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->sock, sizeof f->sock, "%s/agent.sock", f->dir);
    assert_true(mid_is_ok(rpc_server_add_unix(f->srv, f->sock, 0600)));
    assert_true(mid_is_ok(rpc_server_start(f->srv)));
    snprintf(f->target, sizeof f->target, "unix:%s", f->sock);
    assert_true(mid_is_ok(rpc_channel_new(f->loop, f->target, NULL, 0, &f->ch)));
    *state = f;
    return 0;
}

static int fx_setup(void **state) { return fx_setup_opts(state, NULL, NULL); }

static int fx_teardown(void **state)
{
    fx *f = *state;
    rpc_loop_free(f->loop);
    sds_service_free(f->svc);
    assert_int_equal(f->src.live, 0); /* every attested workload was freed */
    for (size_t i = 0; i < f->n; i++) free(f->msg[i]);
    sdsfx_set_view(&f->src, NULL);
    sdsfx_ca_free(f->ca);
    sdsfx_ca_free(f->other);
    unlink(f->sock);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void wait_n(fx *f, size_t n)
{
    tl_wait_count(f->loop, &f->n, n, &f->done, WAIT_MS);
}

static void wait_done(fx *f)
{
    tl_wait_end(f->loop, &f->done, WAIT_MS);
}

/* Nothing arrives for QUIET_MS. */
static void quiet(fx *f)
{
    tl_quiet(f->loop, &f->n, &f->done, QUIET_MS);
}

static void on_msg(rpc_stream *s, const ProtobufCMessage *m, void *arg)
{
    (void)s;
    fx *f = arg;
    assert_true(f->n < MAXMSG);
    size_t len = protobuf_c_message_get_packed_size(m);
    f->msg[f->n] = malloc(len ? len : 1);
    protobuf_c_message_pack(m, f->msg[f->n]);
    f->len[f->n++] = len;
    if (f->stop_on_msg) rpc_loop_stop(f->loop);
}

static void on_done(rpc_stream *s, const rpc_status *st, void *arg)
{
    (void)s;
    fx *f = arg;
    f->done = true;
    f->code = st->code;
    snprintf(f->status, sizeof f->status, "%s", st->message ? st->message : "");
    f->st = NULL;
    rpc_loop_stop(f->loop);
}

static const rpc_stream_handler client_h = {on_msg, on_done};

static void open_stream(fx *f, const char *method)
{
    f->done = false;
    assert_true(mid_is_ok(rpc_stream_open(f->ch, method, RPC_BIDI, NULL,
                                          strcmp(method, SDS_M_DELTA) == 0
                                              ? &envoy__service__discovery__v3__delta_discovery_response__descriptor
                                              : &envoy__service__discovery__v3__discovery_response__descriptor,
                                          NULL, &client_h, f, &f->st)));
}

/* SotW request: names, the nonce being answered (NULL: none), NACK or not. */
static void sotw_send(fx *f, const char *const *names, size_t n, const char *nonce, bool nack,
                      const char *type_url)
{
    disc_req r = ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
    Google__Rpc__Status err = GOOGLE__RPC__STATUS__INIT;
    r.resource_names = (char **)names;
    r.n_resource_names = n;
    r.type_url = (char *)(type_url ? type_url : SDS_SECRET_TYPE_URL);
    if (nonce) r.response_nonce = (char *)nonce;
    if (nack) {
        err.code = 13;
        err.message = "bad certificate";
        r.error_detail = &err;
    }
    assert_true(mid_is_ok(rpc_stream_send(f->st, &r.base)));
}

static disc_resp *sotw_resp(fx *f, size_t i)
{
    assert_true(i < f->n);
    disc_resp *r = envoy__service__discovery__v3__discovery_response__unpack(NULL, f->len[i], f->msg[i]);
    assert_non_null(r);
    assert_string_equal(r->type_url, SDS_SECRET_TYPE_URL);
    assert_true(r->nonce[0] != '\0');
    return r;
}

static sds_secret_msg *any_secret(const Google__Protobuf__Any *a)
{
    assert_string_equal(a->type_url, SDS_SECRET_TYPE_URL);
    sds_secret_msg *s =
        envoy__extensions__transport_sockets__tls__v3__secret__unpack(NULL, a->value.len, a->value.data);
    assert_non_null(s);
    return s;
}

/* The resource names of response i, joined with ',' in order. */
static void sotw_names(fx *f, size_t i, char *out, size_t cap)
{
    disc_resp *r = sotw_resp(f, i);
    out[0] = '\0';
    for (size_t k = 0; k < r->n_resources; k++) {
        sds_secret_msg *s = any_secret(r->resources[k]);
        size_t o = strlen(out);
        snprintf(out + o, cap - o, "%s%s", k ? "," : "", s->name);
        envoy__extensions__transport_sockets__tls__v3__secret__free_unpacked(s, NULL);
    }
    envoy__service__discovery__v3__discovery_response__free_unpacked(r, NULL);
}

static void sotw_nonce(fx *f, size_t i, char *nonce, size_t cap, char *version, size_t vcap)
{
    disc_resp *r = sotw_resp(f, i);
    snprintf(nonce, cap, "%s", r->nonce);
    if (version) snprintf(version, vcap, "%s", r->version_info);
    envoy__service__discovery__v3__discovery_response__free_unpacked(r, NULL);
}

static void rotate(fx *f)
{
    sdsfx_set_view(&f->src, sdsfx_view(f->ca, "spiffe://example.org/web", f->other));
    sds_service_notify(f->svc);
}

static sds_service_stats stats(fx *f)
{
    sds_service_stats s;
    sds_service_stats_get(f->svc, &s);
    return s;
}

/* ---- SotW ------------------------------------------------------------------- */

static void test_sotw_initial_then_ack(void **state)
{
    fx *f = *state;
    open_stream(f, SDS_M_STREAM);
    const char *names[] = {"default", "ROOTCA", "default"}; /* duplicates collapse */
    sotw_send(f, names, 3, NULL, false, NULL);
    wait_n(f, 1);
    char got[512], nonce[64], version[64];
    sotw_names(f, 0, got, sizeof got);
    assert_string_equal(got, "default,ROOTCA");
    sotw_nonce(f, 0, nonce, sizeof nonce, version, sizeof version);
    assert_string_equal(version, "1");

    /* the default secret is the SVID, ROOTCA the own trust domain's roots */
    disc_resp *r = sotw_resp(f, 0);
    sds_secret_msg *s = any_secret(r->resources[0]);
    const sds_svid *svid = sds_view_svid(f->src.view, 0);
    assert_int_equal(s->tls_certificate->certificate_chain->inline_bytes.len, strlen(svid->chain_pem));
    envoy__extensions__transport_sockets__tls__v3__secret__free_unpacked(s, NULL);
    s = any_secret(r->resources[1]);
    assert_memory_equal(s->validation_context->trusted_ca->inline_bytes.data,
                        sds_view_bundle(f->src.view, 0)->roots_pem,
                        strlen(sds_view_bundle(f->src.view, 0)->roots_pem));
    envoy__extensions__transport_sockets__tls__v3__secret__free_unpacked(s, NULL);
    envoy__service__discovery__v3__discovery_response__free_unpacked(r, NULL);

    /* ACK: nothing is resent */
    sotw_send(f, names, 2, nonce, false, NULL);
    quiet(f);
    assert_int_equal(stats(f).acks, 1);
    assert_int_equal(stats(f).streams, 1);
    assert_int_equal(f->src.attests, 1);
}

static void test_sotw_nack_keeps_state(void **state)
{
    fx *f = *state;
    open_stream(f, SDS_M_STREAM);
    const char *names[] = {"default"};
    sotw_send(f, names, 1, NULL, false, NULL);
    wait_n(f, 1);
    char nonce[64], version[64];
    sotw_nonce(f, 0, nonce, sizeof nonce, NULL, 0);
    sotw_send(f, names, 1, nonce, true, NULL); /* NACK */
    quiet(f);                                 /* the rejected version is not resent */
    assert_int_equal(stats(f).nacks, 1);
    assert_int_equal(stats(f).acks, 0);
    sds_service_notify(f->svc); /* unchanged content: still nothing */
    quiet(f);
    rotate(f); /* new content: pushed */
    wait_n(f, 2);
    sotw_nonce(f, 1, nonce, sizeof nonce, version, sizeof version);
    assert_string_equal(version, "2");
    sotw_send(f, names, 1, nonce, false, NULL);
    quiet(f);
    assert_int_equal(stats(f).acks, 1);
    assert_int_equal(stats(f).pushes, 1);
}

static void test_sotw_stale_nonce_ignored(void **state)
{
    fx *f = *state;
    open_stream(f, SDS_M_STREAM);
    const char *one[] = {"default"}, *two[] = {"default", "ROOTCA"};
    sotw_send(f, one, 1, NULL, false, NULL);
    wait_n(f, 1);
    char n1[64], n2[64];
    sotw_nonce(f, 0, n1, sizeof n1, NULL, 0);
    rotate(f);
    wait_n(f, 2);
    sotw_nonce(f, 1, n2, sizeof n2, NULL, 0);
    assert_string_not_equal(n1, n2);
    /* a request answering the superseded response is ignored entirely */
    sotw_send(f, two, 2, n1, false, NULL);
    quiet(f);
    assert_int_equal(stats(f).stale, 1);
    sotw_send(f, one, 1, "garbage-nonce", true, NULL);
    quiet(f);
    assert_int_equal(stats(f).stale, 2);
    assert_int_equal(stats(f).nacks, 0);
    /* the same request with the latest nonce: only the new name comes */
    sotw_send(f, two, 2, n2, false, NULL);
    wait_n(f, 3);
    char got[256];
    sotw_names(f, 2, got, sizeof got);
    assert_string_equal(got, "ROOTCA");
}

static void test_sotw_push_only_changes(void **state)
{
    fx *f = *state;
    open_stream(f, SDS_M_STREAM);
    const char *names[] = {"default", "ROOTCA", "ALL"};
    sotw_send(f, names, 3, NULL, false, NULL);
    wait_n(f, 1);
    char nonce[64], got[256], version[64];
    sotw_nonce(f, 0, nonce, sizeof nonce, NULL, 0);
    sotw_send(f, names, 3, nonce, false, NULL);
    quiet(f);
    /* the same content in a new view object: no push */
    sdsfx_set_view(&f->src, sds_view_ref(f->src.view));
    sds_service_notify(f->svc);
    quiet(f);
    /* SVID rotation: only "default" changed */
    rotate(f);
    wait_n(f, 2);
    sotw_names(f, 1, got, sizeof got);
    assert_string_equal(got, "default");
    sotw_nonce(f, 1, nonce, sizeof nonce, version, sizeof version);
    assert_string_equal(version, "2");
    /* federated bundle gone: ALL changes, ROOTCA does not */
    sotw_send(f, names, 3, nonce, false, NULL);
    quiet(f);
    sdsfx_set_view(&f->src, sdsfx_view(f->ca, "spiffe://example.org/web", NULL));
    sds_service_notify(f->svc);
    wait_n(f, 3);
    sotw_names(f, 2, got, sizeof got);
    assert_string_equal(got, "default,ALL");
    assert_int_equal(stats(f).pushes, 2);
}

static void test_sotw_added_and_readded_names(void **state)
{
    fx *f = *state;
    open_stream(f, SDS_M_STREAM);
    const char *a[] = {"default"}, *ab[] = {"default", "spiffe://other.org"};
    sotw_send(f, a, 1, NULL, false, NULL);
    wait_n(f, 1);
    char nonce[64], got[256];
    sotw_nonce(f, 0, nonce, sizeof nonce, NULL, 0);
    sotw_send(f, ab, 2, nonce, false, NULL); /* ACK + new name */
    wait_n(f, 2);
    sotw_names(f, 1, got, sizeof got);
    assert_string_equal(got, "spiffe://other.org");
    sotw_nonce(f, 1, nonce, sizeof nonce, NULL, 0);
    /* unsubscribe everything (empty list means nothing, not wildcard) */
    sotw_send(f, NULL, 0, nonce, false, NULL);
    quiet(f);
    rotate(f);
    quiet(f);
    /* re-adding a name sends it again */
    sotw_send(f, a, 1, nonce, false, NULL);
    wait_n(f, 3);
    sotw_names(f, 2, got, sizeof got);
    assert_string_equal(got, "default");
}

static void test_sotw_unknown_name_waits(void **state)
{
    fx *f = *state;
    open_stream(f, SDS_M_STREAM);
    const char *names[] = {"spiffe://third.org"};
    sotw_send(f, names, 1, NULL, false, NULL);
    quiet(f); /* not sent; the client waits */
    assert_int_equal(stats(f).unknown_names, 1);
    rotate(f);
    quiet(f);
    assert_int_equal(stats(f).unknown_names, 1); /* logged once */
    /* the trust domain appears (federation): now it is sent */
    sdsfx_ca *third = sdsfx_ca_new("third.org");
    sdsfx_set_view(&f->src, sdsfx_view(f->ca, "spiffe://example.org/web", third));
    sds_service_notify(f->svc);
    wait_n(f, 1);
    char got[256];
    sotw_names(f, 0, got, sizeof got);
    assert_string_equal(got, "spiffe://third.org");
    sdsfx_ca_free(third);
    assert_false(f->done);
}

static void test_sotw_wrong_type_url(void **state)
{
    fx *f = *state;
    open_stream(f, SDS_M_STREAM);
    const char *names[] = {"default"};
    sotw_send(f, names, 1, NULL, false, "type.googleapis.com/envoy.config.cluster.v3.Cluster");
    wait_done(f);
    assert_int_equal(f->code, RPC_INVALID_ARGUMENT);
    assert_non_null(strstr(f->status, "type_url"));
    assert_int_equal(f->n, 0);
    /* an empty type_url is the implied Secret type */
    open_stream(f, SDS_M_STREAM);
    sotw_send(f, names, 1, NULL, false, "");
    wait_n(f, 1);
}

static void test_sotw_waits_for_issue(void **state)
{
    fx *f = *state;
    sds_view *v = f->src.view;
    f->src.view = NULL; /* attested, not issued */
    open_stream(f, SDS_M_STREAM);
    const char *names[] = {"default"};
    sotw_send(f, names, 1, NULL, false, NULL);
    quiet(f);
    f->src.view = v;
    sds_service_notify(f->svc);
    wait_n(f, 1);
    char got[64];
    sotw_names(f, 0, got, sizeof got);
    assert_string_equal(got, "default");
}

static void test_sotw_denied(void **state)
{
    fx *f = *state;
    f->src.deny_attest = 1;
    open_stream(f, SDS_M_STREAM);
    const char *names[] = {"default"};
    sotw_send(f, names, 1, NULL, false, NULL);
    wait_done(f);
    assert_int_equal(f->code, RPC_PERMISSION_DENIED);
    assert_non_null(strstr(f->status, "no registration entry"));
    /* the entry goes away while a stream is open */
    f->src.deny_attest = 0;
    open_stream(f, SDS_M_STREAM);
    sotw_send(f, names, 1, NULL, false, NULL);
    wait_n(f, 1);
    f->src.deny_view = 1;
    sds_service_notify(f->svc);
    wait_done(f);
    assert_int_equal(f->code, RPC_PERMISSION_DENIED);
}

static void test_sotw_limits(void **state)
{
    fx *f = *state;
    open_stream(f, SDS_M_STREAM);
    const char *names[] = {"a", "b", "c", "d", "e"};
    sotw_send(f, names, 5, NULL, false, NULL); /* max_names is 4 in this test */
    wait_done(f);
    assert_int_equal(f->code, RPC_INVALID_ARGUMENT);
    /* a name over SDS_NAME_MAX */
    char *big = malloc(SDS_NAME_MAX + 10);
    memset(big, 'x', SDS_NAME_MAX + 9);
    big[SDS_NAME_MAX + 9] = '\0';
    const char *one[] = {big};
    open_stream(f, SDS_M_STREAM);
    sotw_send(f, one, 1, NULL, false, NULL);
    wait_done(f);
    assert_int_equal(f->code, RPC_INVALID_ARGUMENT);
    free(big);
    /* a client half-close ends the stream cleanly */
    open_stream(f, SDS_M_STREAM);
    const char *d[] = {"default"};
    sotw_send(f, d, 1, NULL, false, NULL);
    wait_n(f, 1);
    assert_true(mid_is_ok(rpc_stream_close_send(f->st)));
    wait_done(f);
    assert_int_equal(f->code, RPC_OK);
}

static int limits_setup(void **state)
{
    sds_service_opts o = {.max_names = 4};
    return fx_setup_opts(state, NULL, &o);
}

static void test_sotw_slow_reader_aborted(void **state)
{
    fx *f = *state;
    open_stream(f, SDS_M_STREAM);
    const char *names[] = {"default", "ALL"};
    sotw_send(f, names, 2, NULL, false, NULL);
    wait_n(f, 1);
    f->stop_on_msg = false;
    rpc_stream_pause(f->st, true);
    /* alternate two views with a big ALL secret: every notify is a change */
    sdsfx_ca *many[40];
    sds_view *views[2];
    for (int k = 0; k < 2; k++) {
        assert_true(mid_is_ok(sds_view_new(&views[k])));
        char *chain, *key;
        sdsfx_issue(f->ca, "spiffe://example.org/web", &chain, &key);
        assert_true(mid_is_ok(sds_view_add_svid(views[k], "spiffe://example.org/web", chain, key, 0)));
        free(chain);
        free(key);
    }
    for (int i = 0; i < 40; i++) {
        char td[32];
        snprintf(td, sizeof td, "td%d.org", i);
        many[i] = sdsfx_ca_new(td);
        for (int k = 0; k < 2; k++)
            assert_true(mid_is_ok(sds_view_add_bundle(views[k], td, sdsfx_ca_pem(many[i]), 1)));
    }
    for (int i = 0; i < 2000 && stats(f).aborted == 0; i++) {
        sdsfx_set_view(&f->src, sds_view_ref(views[i % 2]));
        sds_service_notify(f->svc);
        if (i % 8 == 0) tl_run_for(f->loop, 1);
    }
    assert_int_equal(stats(f).aborted, 1);
    rpc_stream_pause(f->st, false);
    wait_done(f);
    assert_int_equal(f->code, RPC_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(f->status, "not reading"));
    for (int i = 0; i < 40; i++) sdsfx_ca_free(many[i]);
    sds_view_unref(views[0]);
    sds_view_unref(views[1]);
}

static int slow_setup(void **state)
{
    rpc_server_opts so = {.send_queue_len = 4};
    return fx_setup_opts(state, &so, NULL);
}

/* ---- delta ------------------------------------------------------------------ */

static void delta_send(fx *f, const char *const *sub, size_t nsub, const char *const *unsub,
                       size_t nunsub, const char *nonce, bool nack, irv_entry **irv, size_t nirv)
{
    delta_req r = ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INIT;
    Google__Rpc__Status err = GOOGLE__RPC__STATUS__INIT;
    r.type_url = SDS_SECRET_TYPE_URL;
    r.resource_names_subscribe = (char **)sub;
    r.n_resource_names_subscribe = nsub;
    r.resource_names_unsubscribe = (char **)unsub;
    r.n_resource_names_unsubscribe = nunsub;
    r.initial_resource_versions = irv;
    r.n_initial_resource_versions = nirv;
    if (nonce) r.response_nonce = (char *)nonce;
    if (nack) {
        err.code = 13;
        err.message = "rejected";
        r.error_detail = &err;
    }
    assert_true(mid_is_ok(rpc_stream_send(f->st, &r.base)));
}

/* "name@version,...|removed,..." for delta response i; nonce copied out. */
static void delta_summary(fx *f, size_t i, char *out, size_t cap, char *nonce, size_t ncap,
                          bool with_versions)
{
    delta_resp *r =
        envoy__service__discovery__v3__delta_discovery_response__unpack(NULL, f->len[i], f->msg[i]);
    assert_non_null(r);
    assert_string_equal(r->type_url, SDS_SECRET_TYPE_URL);
    assert_true(r->nonce[0] != '\0');
    if (nonce) snprintf(nonce, ncap, "%s", r->nonce);
    out[0] = '\0';
    for (size_t k = 0; k < r->n_resources; k++) {
        sds_secret_msg *s = any_secret(r->resources[k]->resource);
        assert_string_equal(s->name, r->resources[k]->name);
        assert_int_equal(strlen(r->resources[k]->version), SDS_DIGEST_HEX);
        size_t o = strlen(out);
        snprintf(out + o, cap - o, "%s%s%s%s", k ? "," : "", s->name, with_versions ? "@" : "",
                 with_versions ? r->resources[k]->version : "");
        envoy__extensions__transport_sockets__tls__v3__secret__free_unpacked(s, NULL);
    }
    size_t o = strlen(out);
    snprintf(out + o, cap - o, "|");
    for (size_t k = 0; k < r->n_removed_resources; k++) {
        o = strlen(out);
        snprintf(out + o, cap - o, "%s%s", k ? "," : "", r->removed_resources[k]);
    }
    envoy__service__discovery__v3__delta_discovery_response__free_unpacked(r, NULL);
}

static void test_delta_subscribe_ack_push_unsubscribe(void **state)
{
    fx *f = *state;
    open_stream(f, SDS_M_DELTA);
    const char *sub[] = {"default", "ROOTCA"};
    delta_send(f, sub, 2, NULL, 0, NULL, false, NULL, 0);
    wait_n(f, 1);
    char got[512], nonce[64];
    delta_summary(f, 0, got, sizeof got, nonce, sizeof nonce, false);
    assert_string_equal(got, "default,ROOTCA|");
    delta_send(f, NULL, 0, NULL, 0, nonce, false, NULL, 0); /* ACK */
    quiet(f);
    assert_int_equal(stats(f).acks, 1);
    sds_service_notify(f->svc);
    quiet(f);
    /* rotation: only default, with its new version */
    rotate(f);
    wait_n(f, 2);
    delta_summary(f, 1, got, sizeof got, nonce, sizeof nonce, true);
    sds_digest d;
    assert_true(mid_is_ok(sds_secret_digest(f->src.view, "default", &d)));
    char want[128];
    snprintf(want, sizeof want, "default@%s|", d.hex);
    assert_string_equal(got, want);
    /* NACK: counted, not resent */
    delta_send(f, NULL, 0, NULL, 0, nonce, true, NULL, 0);
    quiet(f);
    assert_int_equal(stats(f).nacks, 1);
    /* unsubscribe default: a rotation no longer reaches us */
    const char *unsub[] = {"default"};
    delta_send(f, NULL, 0, unsub, 1, NULL, false, NULL, 0);
    quiet(f);
    rotate(f);
    quiet(f);
    /* an unknown name is answered once as removed */
    const char *unknown[] = {"nope"};
    delta_send(f, unknown, 1, NULL, 0, NULL, false, NULL, 0);
    wait_n(f, 3);
    delta_summary(f, 2, got, sizeof got, nonce, sizeof nonce, false);
    assert_string_equal(got, "|nope");
    rotate(f);
    quiet(f);
}

static void test_delta_initial_resource_versions(void **state)
{
    fx *f = *state;
    sds_digest d;
    assert_true(mid_is_ok(sds_secret_digest(f->src.view, "default", &d)));
    irv_entry e1 = ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INITIAL_RESOURCE_VERSIONS_ENTRY__INIT;
    e1.key = "default";
    e1.value = d.hex;
    irv_entry e2 = ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INITIAL_RESOURCE_VERSIONS_ENTRY__INIT;
    e2.key = "ROOTCA";
    e2.value = "some-old-version";
    irv_entry e3 = ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INITIAL_RESOURCE_VERSIONS_ENTRY__INIT;
    e3.key = "spiffe://gone.org";
    e3.value = "v1";
    irv_entry *irv[] = {&e1, &e2, &e3};
    open_stream(f, SDS_M_DELTA);
    const char *sub[] = {"default", "ROOTCA", "spiffe://gone.org"};
    delta_send(f, sub, 3, NULL, 0, NULL, false, irv, 3);
    wait_n(f, 1);
    char got[512];
    delta_summary(f, 0, got, sizeof got, NULL, 0, false);
    /* default is current: not resent; ROOTCA is old: sent; the client holds
     * a resource that no longer exists: removed */
    assert_string_equal(got, "ROOTCA|spiffe://gone.org");
    /* everything current: no response at all */
    open_stream(f, SDS_M_DELTA);
    delta_send(f, sub, 1, NULL, 0, NULL, false, irv, 1);
    quiet(f);
    /* and a later change still comes */
    rotate(f);
    wait_n(f, 2);
    delta_summary(f, 1, got, sizeof got, NULL, 0, false);
    assert_true(strncmp(got, "default", 7) == 0);
}

static void test_delta_removal(void **state)
{
    fx *f = *state;
    open_stream(f, SDS_M_DELTA);
    const char *sub[] = {"spiffe://other.org", "ALL"};
    delta_send(f, sub, 2, NULL, 0, NULL, false, NULL, 0);
    wait_n(f, 1);
    /* the federation ends */
    sdsfx_set_view(&f->src, sdsfx_view(f->ca, "spiffe://example.org/web", NULL));
    sds_service_notify(f->svc);
    wait_n(f, 2);
    char got[512];
    delta_summary(f, 1, got, sizeof got, NULL, 0, false);
    assert_string_equal(got, "ALL|spiffe://other.org");
    /* and comes back */
    sdsfx_set_view(&f->src, sdsfx_view(f->ca, "spiffe://example.org/web", f->other));
    sds_service_notify(f->svc);
    wait_n(f, 3);
    delta_summary(f, 2, got, sizeof got, NULL, 0, false);
    assert_string_equal(got, "spiffe://other.org,ALL|");
}

/* ---- fetch ------------------------------------------------------------------- */

typedef struct {
    fx *f;
    bool done;
    rpc_code code;
    char msg[512];
    disc_resp *resp;
} unary_res;

static void on_unary(const rpc_status *st, const ProtobufCMessage *resp, void *arg)
{
    unary_res *u = arg;
    u->done = true;
    u->code = st->code;
    snprintf(u->msg, sizeof u->msg, "%s", st->message ? st->message : "");
    if (resp) {
        size_t n = protobuf_c_message_get_packed_size(resp);
        uint8_t *b = malloc(n ? n : 1);
        protobuf_c_message_pack(resp, b);
        u->resp = envoy__service__discovery__v3__discovery_response__unpack(NULL, n, b);
        free(b);
    }
    rpc_loop_stop(u->f->loop);
}

static void fetch(fx *f, const char *const *names, size_t n, const char *type_url, unary_res *u)
{
    memset(u, 0, sizeof *u);
    u->f = f;
    disc_req r = ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
    r.resource_names = (char **)names;
    r.n_resource_names = n;
    r.type_url = (char *)(type_url ? type_url : SDS_SECRET_TYPE_URL);
    rpc_call_opts o = {.timeout_ms = WAIT_MS};
    assert_true(mid_is_ok(rpc_unary(f->ch, SDS_M_FETCH, &r.base,
                                    &envoy__service__discovery__v3__discovery_response__descriptor, &o,
                                    on_unary, u)));
    while (!u->done) assert_false(tl_run_for(f->loop, WAIT_MS));
}

static void unary_free(unary_res *u)
{
    if (u->resp) envoy__service__discovery__v3__discovery_response__free_unpacked(u->resp, NULL);
    u->resp = NULL;
}

static void test_fetch(void **state)
{
    fx *f = *state;
    unary_res u;
    const char *names[] = {"default", "ALL"};
    fetch(f, names, 2, NULL, &u);
    assert_int_equal(u.code, RPC_OK);
    assert_int_equal(u.resp->n_resources, 2);
    sds_secret_msg *s = any_secret(u.resp->resources[1]);
    assert_string_equal(s->name, "ALL");
    envoy__extensions__transport_sockets__tls__v3__secret__free_unpacked(s, NULL);
    char v1[64];
    snprintf(v1, sizeof v1, "%s", u.resp->version_info);
    unary_free(&u);
    fetch(f, names, 2, NULL, &u); /* same content, same version */
    assert_string_equal(u.resp->version_info, v1);
    unary_free(&u);

    const char *bad[] = {"default", "nope"};
    fetch(f, bad, 2, NULL, &u);
    assert_int_equal(u.code, RPC_INVALID_ARGUMENT);
    assert_string_equal(u.msg, "unknown resource name nope");
    fetch(f, names, 1, "type.googleapis.com/envoy.config.listener.v3.Listener", &u);
    assert_int_equal(u.code, RPC_INVALID_ARGUMENT);
    fetch(f, NULL, 0, NULL, &u); /* nothing asked, nothing given */
    assert_int_equal(u.code, RPC_OK);
    assert_int_equal(u.resp->n_resources, 0);
    unary_free(&u);

    sds_view *v = f->src.view;
    f->src.view = NULL;
    fetch(f, names, 1, NULL, &u);
    assert_int_equal(u.code, RPC_UNAVAILABLE);
    f->src.view = v;
    f->src.deny_attest = 1;
    fetch(f, names, 1, NULL, &u);
    assert_int_equal(u.code, RPC_PERMISSION_DENIED);
}

/* ---- bundle ACK tracking ------------------------------------------------------- */

/* A view for the web workload with a new SVID and own-domain roots `roots`
 * (PEM) at bundle sequence `seq`. */
static void set_bundle_view(fx *f, const char *roots, uint64_t seq)
{
    sds_view *v;
    char *chain, *key;
    assert_true(mid_is_ok(sds_view_new(&v)));
    sdsfx_issue(f->ca, "spiffe://example.org/web", &chain, &key);
    assert_true(mid_is_ok(sds_view_add_svid(v, "spiffe://example.org/web", chain, key, 0)));
    free(chain);
    free(key);
    assert_true(mid_is_ok(sds_view_add_bundle(v, "example.org", roots, seq)));
    sdsfx_set_view(&f->src, v);
    sds_service_notify(f->svc);
}

static size_t acked(fx *f, uint64_t *min)
{
    return sds_service_bundle_acked(f->svc, min);
}

static void count_hook(void *arg) { (*(int *)arg)++; }

static void test_ack_min_sotw(void **state)
{
    fx *f = *state;
    int hooks = 0;
    sds_service_on_bundle_ack(f->svc, count_hook, &hooks);
    char roots_b[8192], roots_c[8192], roots_d[8192];
    snprintf(roots_b, sizeof roots_b, "%s%s", sdsfx_ca_pem(f->ca), sdsfx_ca_pem(f->other));
    snprintf(roots_c, sizeof roots_c, "%s%s", sdsfx_ca_pem(f->other), sdsfx_ca_pem(f->ca));
    snprintf(roots_d, sizeof roots_d, "%s%s%s", sdsfx_ca_pem(f->ca), sdsfx_ca_pem(f->other),
             sdsfx_ca_pem(f->ca));
    uint64_t min = 0;
    /* no streams */
    assert_int_equal(acked(f, &min), 0);
    assert_true(min == UINT64_MAX);
    set_bundle_view(f, sdsfx_ca_pem(f->ca), 1);

    /* a stream without a validation context does not count */
    open_stream(f, SDS_M_STREAM);
    const char *svid_only[] = {"default"};
    sotw_send(f, svid_only, 1, NULL, false, NULL);
    wait_n(f, 1);
    assert_int_equal(acked(f, &min), 0);

    /* subscribing ROOTCA: counts once sent, holds nothing until ACKed */
    const char *names[] = {"default", "ROOTCA"};
    char n1[64], n2[64], n3[64];
    sotw_nonce(f, 0, n1, sizeof n1, NULL, 0);
    sotw_send(f, names, 2, n1, false, NULL);
    wait_n(f, 2);
    assert_int_equal(acked(f, &min), 1);
    assert_true(min == 0);
    sotw_nonce(f, 1, n2, sizeof n2, NULL, 0);
    sotw_send(f, names, 2, n2, false, NULL); /* ACK */
    quiet(f);
    assert_int_equal(acked(f, &min), 1);
    assert_true(min == 1);
    assert_true(hooks >= 1);

    /* new roots at #2: pushed; a stale ACK does not count, the real one does */
    set_bundle_view(f, roots_b, 2);
    wait_n(f, 3);
    assert_true(acked(f, &min) == 1 && min == 1);
    sotw_send(f, names, 2, n2, false, NULL); /* stale */
    quiet(f);
    assert_true(acked(f, &min) == 1 && min == 1);
    sotw_nonce(f, 2, n3, sizeof n3, NULL, 0);
    sotw_send(f, names, 2, n3, false, NULL);
    quiet(f);
    assert_true(acked(f, &min) == 1 && min == 2);

    /* #3 NACKed: not held, also not once a later response (SVID only) is ACKed */
    set_bundle_view(f, roots_c, 3);
    wait_n(f, 4);
    sotw_nonce(f, 3, n3, sizeof n3, NULL, 0);
    sotw_send(f, names, 2, n3, true, NULL);
    quiet(f);
    assert_true(acked(f, &min) == 1 && min == 2);
    set_bundle_view(f, roots_c, 4); /* same roots, new SVID: only "default" is sent */
    wait_n(f, 5);
    char got[256];
    sotw_names(f, 4, got, sizeof got);
    assert_string_equal(got, "default");
    sotw_nonce(f, 4, n3, sizeof n3, NULL, 0);
    sotw_send(f, names, 2, n3, false, NULL);
    quiet(f);
    assert_true(acked(f, &min) == 1 && min == 2);

    /* #5 with new roots, ACKed */
    set_bundle_view(f, roots_d, 5);
    wait_n(f, 6);
    sotw_nonce(f, 5, n3, sizeof n3, NULL, 0);
    sotw_send(f, names, 2, n3, false, NULL);
    quiet(f);
    assert_true(acked(f, &min) == 1 && min == 5);

    /* #6 with the same roots: nothing to send, the client holds #6 already */
    sds_view *v = f->src.view;
    sds_view_ref(v);
    sds_view *v6;
    assert_true(mid_is_ok(sds_view_new(&v6)));
    const sds_svid *sv = sds_view_svid(v, 0);
    assert_true(mid_is_ok(sds_view_add_svid(v6, sv->spiffe_id, sv->chain_pem, sv->key_pem, 0)));
    assert_true(mid_is_ok(sds_view_add_bundle(v6, "example.org", roots_d, 6)));
    sds_view_unref(v);
    sdsfx_set_view(&f->src, v6);
    sds_service_notify(f->svc);
    quiet(f);
    assert_true(acked(f, &min) == 1 && min == 6);

    /* the stream ends: nothing counts any more, the hook is told */
    int before = hooks;
    assert_true(mid_is_ok(rpc_stream_close_send(f->st)));
    wait_done(f);
    assert_int_equal(acked(f, &min), 0);
    assert_true(min == UINT64_MAX);
    assert_true(hooks > before);
}

static void test_ack_min_waiting_and_delta(void **state)
{
    fx *f = *state;
    uint64_t min = 0;
    /* a stream waiting for its identity does not count */
    sdsfx_set_view(&f->src, NULL);
    open_stream(f, SDS_M_STREAM);
    const char *names[] = {"ROOTCA"};
    sotw_send(f, names, 1, NULL, false, NULL);
    quiet(f);
    assert_int_equal(acked(f, &min), 0);
    rpc_stream_cancel(f->st);
    wait_done(f);

    /* delta: per-resource ACK */
    set_bundle_view(f, sdsfx_ca_pem(f->ca), 7);
    open_stream(f, SDS_M_DELTA);
    const char *sub[] = {"ROOTCA", "spiffe://example.org"};
    delta_send(f, sub, 2, NULL, 0, NULL, false, NULL, 0);
    wait_n(f, 1);
    char got[512], nonce[64];
    delta_summary(f, 0, got, sizeof got, nonce, sizeof nonce, false);
    assert_string_equal(got, "ROOTCA,spiffe://example.org|");
    assert_true(acked(f, &min) == 1 && min == 0);
    delta_send(f, NULL, 0, NULL, 0, nonce, false, NULL, 0);
    quiet(f);
    assert_true(acked(f, &min) == 1 && min == 7);
    char roots_b[8192];
    snprintf(roots_b, sizeof roots_b, "%s%s", sdsfx_ca_pem(f->ca), sdsfx_ca_pem(f->other));
    set_bundle_view(f, roots_b, 8);
    wait_n(f, 2);
    assert_true(acked(f, &min) == 1 && min == 7);
    delta_summary(f, 1, got, sizeof got, nonce, sizeof nonce, false);
    delta_send(f, NULL, 0, NULL, 0, nonce, true, NULL, 0); /* NACK */
    quiet(f);
    assert_true(acked(f, &min) == 1 && min == 7);
    set_bundle_view(f, sdsfx_ca_pem(f->ca), 9); /* back to what the client holds */
    wait_n(f, 3);
    assert_true(acked(f, &min) == 1 && min == 9); /* held already (ACKed at #7) */
    delta_summary(f, 2, got, sizeof got, nonce, sizeof nonce, false);
    delta_send(f, NULL, 0, NULL, 0, nonce, false, NULL, 0);
    quiet(f);
    assert_true(acked(f, &min) == 1 && min == 9);
    /* unsubscribing every validation context: no longer counts */
    delta_send(f, NULL, 0, sub, 2, NULL, false, NULL, 0);
    quiet(f);
    assert_int_equal(acked(f, &min), 0);
}

int run_sds_service_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sotw_initial_then_ack, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sotw_nack_keeps_state, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sotw_stale_nonce_ignored, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sotw_push_only_changes, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sotw_added_and_readded_names, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sotw_unknown_name_waits, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sotw_wrong_type_url, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sotw_waits_for_issue, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sotw_denied, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sotw_limits, limits_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sotw_slow_reader_aborted, slow_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_delta_subscribe_ack_push_unsubscribe, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_delta_initial_resource_versions, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_delta_removal, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_fetch, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_ack_min_sotw, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_ack_min_waiting_and_delta, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests_name("sds_service", tests, NULL, NULL);
}
