/* The SPIFFE Workload API end to end: a real rpc loop serving workload_api on
 * a Unix socket, called with the rpc client API, with the fake source. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/rpc.h"
#include "sds/workload_api.h"
#include "spiffe/workload.pb-c.h"
#include "tests/testlib/rpc_wait.h"
#include "tests/unit/sds/sds_tests.h"

#define WAIT_MS 10000
#define QUIET_MS 150
#define MAXMSG 64

typedef struct {
    rpc_loop *loop;
    rpc_server *srv;
    workload_api *api;
    sdsfx_source src;
    sdsfx_ca *ca, *other;
    char dir[64], sock[100], target[128];
    rpc_channel *ch;
    rpc_stream *st;
    uint8_t *msg[MAXMSG];
    size_t len[MAXMSG];
    size_t n;
    bool done;
    rpc_code code;
    char status[512];
} wfx;

static int setup(void **state)
{
    wfx *f = calloc(1, sizeof *f);
    f->ca = sdsfx_ca_new("example.org");
    f->other = sdsfx_ca_new("other.org");
    f->src.view = sdsfx_view(f->ca, "spiffe://example.org/web", f->other);
    assert_true(mid_is_ok(rpc_loop_new(&f->loop)));
    assert_true(mid_is_ok(rpc_server_new(f->loop, NULL, &f->srv)));
    sds_source src = {&sdsfx_source_ops, &f->src};
    assert_true(mid_is_ok(workload_api_new(f->srv, src, &f->api)));
    snprintf(f->dir, sizeof f->dir, "/tmp/meshid-wl-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->sock, sizeof f->sock, "%s/agent.sock", f->dir);
    assert_true(mid_is_ok(rpc_server_add_unix(f->srv, f->sock, 0600)));
    assert_true(mid_is_ok(rpc_server_start(f->srv)));
    snprintf(f->target, sizeof f->target, "unix:%s", f->sock);
    assert_true(mid_is_ok(rpc_channel_new(f->loop, f->target, NULL, 0, &f->ch)));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    wfx *f = *state;
    rpc_loop_free(f->loop);
    workload_api_free(f->api);
    assert_int_equal(f->src.live, 0);
    for (size_t i = 0; i < f->n; i++) free(f->msg[i]);
    sdsfx_set_view(&f->src, NULL);
    sdsfx_ca_free(f->ca);
    sdsfx_ca_free(f->other);
    unlink(f->sock);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void wait_n(wfx *f, size_t n)
{
    tl_wait_count(f->loop, &f->n, n, &f->done, WAIT_MS);
}

static void wait_done(wfx *f)
{
    tl_wait_end(f->loop, &f->done, WAIT_MS);
}

static void quiet(wfx *f)
{
    tl_quiet(f->loop, &f->n, &f->done, QUIET_MS);
}

static void on_msg(rpc_stream *s, const ProtobufCMessage *m, void *arg)
{
    (void)s;
    wfx *f = arg;
    assert_true(f->n < MAXMSG);
    size_t len = protobuf_c_message_get_packed_size(m);
    f->msg[f->n] = malloc(len ? len : 1);
    protobuf_c_message_pack(m, f->msg[f->n]);
    f->len[f->n++] = len;
    rpc_loop_stop(f->loop);
}

static void on_done(rpc_stream *s, const rpc_status *st, void *arg)
{
    (void)s;
    wfx *f = arg;
    f->done = true;
    f->code = st->code;
    snprintf(f->status, sizeof f->status, "%s", st->message ? st->message : "");
    f->st = NULL;
    rpc_loop_stop(f->loop);
}

static const rpc_stream_handler client_h = {on_msg, on_done};

/* Opens a server stream; with_header false omits workload.spiffe.io. */
static void open_stream(wfx *f, const char *method, bool with_header)
{
    static X509SVIDRequest x = X509_SVIDREQUEST__INIT;
    static X509BundlesRequest b = X509_BUNDLES_REQUEST__INIT;
    static JWTBundlesRequest j = JWTBUNDLES_REQUEST__INIT;
    const ProtobufCMessage *req;
    const ProtobufCMessageDescriptor *desc;
    if (strcmp(method, WL_M_FETCH_X509_SVID) == 0) {
        req = &x.base;
        desc = &x509_svidresponse__descriptor;
    } else if (strcmp(method, WL_M_FETCH_X509_BUNDLES) == 0) {
        req = &b.base;
        desc = &x509_bundles_response__descriptor;
    } else {
        req = &j.base;
        desc = &jwtbundles_response__descriptor;
    }
    rpc_md md[] = {{WL_SECURITY_HEADER, "true"}};
    rpc_call_opts o = {.md = md, .n_md = with_header ? 1 : 0};
    f->done = false;
    assert_true(mid_is_ok(rpc_stream_open(f->ch, method, RPC_SERVER_STREAM, req, desc, &o, &client_h, f,
                                          &f->st)));
}

static X509SVIDResponse *svid_resp(wfx *f, size_t i)
{
    X509SVIDResponse *r = x509_svidresponse__unpack(NULL, f->len[i], f->msg[i]);
    assert_non_null(r);
    return r;
}

static void rotate(wfx *f, sdsfx_ca *fed)
{
    sdsfx_set_view(&f->src, sdsfx_view(f->ca, "spiffe://example.org/web", fed));
    workload_api_notify(f->api);
}

static void test_header_required(void **state)
{
    wfx *f = *state;
    const char *methods[] = {WL_M_FETCH_X509_SVID, WL_M_FETCH_X509_BUNDLES, WL_M_FETCH_JWT_BUNDLES};
    for (size_t i = 0; i < 3; i++) {
        open_stream(f, methods[i], false);
        wait_done(f);
        assert_int_equal(f->code, RPC_INVALID_ARGUMENT);
        assert_string_equal(f->status, "security header missing from request");
    }
    assert_int_equal(f->n, 0);
    assert_int_equal(f->src.attests, 0); /* refused before attestation */
    workload_api_stats st;
    workload_api_stats_get(f->api, &st);
    assert_int_equal(st.no_header, 3);
}

static void test_denied(void **state)
{
    wfx *f = *state;
    f->src.deny_attest = 1;
    open_stream(f, WL_M_FETCH_X509_SVID, true);
    wait_done(f);
    assert_int_equal(f->code, RPC_PERMISSION_DENIED);
    assert_non_null(strstr(f->status, "no identity issued"));
    f->src.deny_attest = 0;
    /* matched, but the view holds no SVID */
    sdsfx_set_view(&f->src, sdsfx_view(f->ca, NULL, NULL));
    open_stream(f, WL_M_FETCH_X509_SVID, true);
    wait_done(f);
    assert_int_equal(f->code, RPC_PERMISSION_DENIED);
    assert_int_equal(f->n, 0);
}

static void test_x509_svid_stream(void **state)
{
    wfx *f = *state;
    open_stream(f, WL_M_FETCH_X509_SVID, true);
    wait_n(f, 1);
    X509SVIDResponse *r = svid_resp(f, 0);
    const sds_svid *svid = sds_view_svid(f->src.view, 0);
    assert_int_equal(r->n_svids, 1);
    assert_string_equal(r->svids[0]->spiffe_id, "spiffe://example.org/web");
    assert_int_equal(r->svids[0]->x509_svid.len, svid->chain_der_len);
    assert_memory_equal(r->svids[0]->x509_svid_key.data, svid->key_der, svid->key_der_len);
    assert_int_equal(r->svids[0]->bundle.len, sds_view_bundle(f->src.view, 0)->roots_der_len);
    assert_int_equal(r->n_federated_bundles, 1);
    assert_string_equal(r->federated_bundles[0]->key, "spiffe://other.org");
    x509_svidresponse__free_unpacked(r, NULL);
    /* unchanged: nothing; rotation: pushed */
    sdsfx_set_view(&f->src, sds_view_ref(f->src.view));
    workload_api_notify(f->api);
    quiet(f);
    rotate(f, f->other);
    wait_n(f, 2);
    r = svid_resp(f, 1);
    assert_memory_equal(r->svids[0]->x509_svid.data, sds_view_svid(f->src.view, 0)->chain_der,
                        sds_view_svid(f->src.view, 0)->chain_der_len);
    x509_svidresponse__free_unpacked(r, NULL);
    /* the entry goes away: the stream ends */
    f->src.deny_view = 1;
    workload_api_notify(f->api);
    wait_done(f);
    assert_int_equal(f->code, RPC_PERMISSION_DENIED);
    assert_non_null(strstr(f->status, "no identity issued"));
}

static void test_x509_bundles_stream(void **state)
{
    wfx *f = *state;
    open_stream(f, WL_M_FETCH_X509_BUNDLES, true);
    wait_n(f, 1);
    X509BundlesResponse *r = x509_bundles_response__unpack(NULL, f->len[0], f->msg[0]);
    assert_non_null(r);
    assert_int_equal(r->n_bundles, 2);
    assert_string_equal(r->bundles[0]->key, "spiffe://example.org");
    assert_string_equal(r->bundles[1]->key, "spiffe://other.org");
    x509_bundles_response__free_unpacked(r, NULL);
    rotate(f, f->other); /* SVID only: bundles unchanged */
    quiet(f);
    rotate(f, NULL); /* federation ends */
    wait_n(f, 2);
    r = x509_bundles_response__unpack(NULL, f->len[1], f->msg[1]);
    assert_int_equal(r->n_bundles, 1);
    x509_bundles_response__free_unpacked(r, NULL);
}

typedef struct {
    bool done;
    rpc_code code;
    char msg[256];
    rpc_loop *loop;
} unary_res;

static void on_unary(const rpc_status *st, const ProtobufCMessage *resp, void *arg)
{
    (void)resp;
    unary_res *u = arg;
    u->done = true;
    u->code = st->code;
    snprintf(u->msg, sizeof u->msg, "%s", st->message ? st->message : "");
    rpc_loop_stop(u->loop);
}

static void test_jwt(void **state)
{
    wfx *f = *state;
    open_stream(f, WL_M_FETCH_JWT_BUNDLES, true);
    wait_n(f, 1);
    JWTBundlesResponse *r = jwtbundles_response__unpack(NULL, f->len[0], f->msg[0]);
    assert_non_null(r);
    assert_int_equal(r->n_bundles, 0);
    jwtbundles_response__free_unpacked(r, NULL);
    rotate(f, NULL);
    quiet(f); /* stays open, nothing new */
    assert_false(f->done);

    /* unary JWT methods: header first, then UNIMPLEMENTED */
    unary_res u;
    const char *methods[] = {WL_M_FETCH_JWT_SVID, WL_M_VALIDATE_JWT_SVID};
    JWTSVIDRequest jr = JWTSVIDREQUEST__INIT;
    ValidateJWTSVIDRequest vr = VALIDATE_JWTSVIDREQUEST__INIT;
    const ProtobufCMessage *reqs[] = {&jr.base, &vr.base};
    const ProtobufCMessageDescriptor *descs[] = {&jwtsvidresponse__descriptor,
                                                 &validate_jwtsvidresponse__descriptor};
    for (int hdr = 0; hdr < 2; hdr++) {
        for (size_t i = 0; i < 2; i++) {
            memset(&u, 0, sizeof u);
            u.loop = f->loop;
            rpc_md md[] = {{WL_SECURITY_HEADER, "true"}};
            rpc_call_opts o = {.timeout_ms = WAIT_MS, .md = md, .n_md = (size_t)hdr};
            assert_true(mid_is_ok(rpc_unary(f->ch, methods[i], reqs[i], descs[i], &o, on_unary, &u)));
            while (!u.done) assert_false(tl_run_for(f->loop, WAIT_MS));
            assert_int_equal(u.code, hdr ? RPC_UNIMPLEMENTED : RPC_INVALID_ARGUMENT);
            if (hdr) assert_non_null(strstr(u.msg, "JWT-SVID"));
        }
    }
}

static void test_waits_for_issue(void **state)
{
    wfx *f = *state;
    sds_view *v = f->src.view;
    f->src.view = NULL;
    open_stream(f, WL_M_FETCH_X509_SVID, true);
    quiet(f);
    f->src.view = v;
    workload_api_notify(f->api);
    wait_n(f, 1);
    workload_api_stats st;
    workload_api_stats_get(f->api, &st);
    assert_int_equal(st.streams, 1);
    assert_int_equal(st.pushes, 1);
}

/* Bundle delivery: streams that were sent a bundle count, with the sequence
 * of the newest content written out; waiting streams and JWT bundle streams
 * do not. */
static void set_seq_view(wfx *f, sdsfx_ca *fed, uint64_t seq)
{
    sds_view *v;
    char *chain, *key;
    assert_true(mid_is_ok(sds_view_new(&v)));
    sdsfx_issue(f->ca, "spiffe://example.org/web", &chain, &key);
    assert_true(mid_is_ok(sds_view_add_svid(v, "spiffe://example.org/web", chain, key, 0)));
    free(chain);
    free(key);
    assert_true(mid_is_ok(sds_view_add_bundle(v, "example.org", sdsfx_ca_pem(f->ca), seq)));
    if (fed) assert_true(mid_is_ok(sds_view_add_bundle(v, sdsfx_ca_td(fed), sdsfx_ca_pem(fed), seq)));
    sdsfx_set_view(&f->src, v);
    workload_api_notify(f->api);
}

static void count_hook(void *arg) { (*(int *)arg)++; }

static void test_bundle_sent_min(void **state)
{
    wfx *f = *state;
    int hooks = 0;
    workload_api_on_bundle_sent(f->api, count_hook, &hooks);
    uint64_t min = 0;
    assert_int_equal(workload_api_bundle_sent(f->api, &min), 0);
    assert_true(min == UINT64_MAX);

    /* waiting for an identity: does not count */
    sdsfx_set_view(&f->src, NULL);
    open_stream(f, WL_M_FETCH_X509_SVID, true);
    quiet(f);
    assert_int_equal(workload_api_bundle_sent(f->api, &min), 0);

    /* issued at #3: sent and written out */
    set_seq_view(f, NULL, 3);
    wait_n(f, 1);
    quiet(f); /* on_drain */
    assert_int_equal(workload_api_bundle_sent(f->api, &min), 1);
    assert_true(min == 3);
    assert_true(hooks >= 1);

    /* a FetchX509Bundles stream joins at #3; a JWT bundles stream never counts */
    rpc_stream *svid_stream = f->st;
    open_stream(f, WL_M_FETCH_X509_BUNDLES, true);
    wait_n(f, 2);
    rpc_stream *bundles_stream = f->st;
    open_stream(f, WL_M_FETCH_JWT_BUNDLES, true);
    wait_n(f, 3);
    quiet(f);
    assert_int_equal(workload_api_bundle_sent(f->api, &min), 2);
    assert_true(min == 3);

    /* #4 with a federated bundle: both streams get it */
    set_seq_view(f, f->other, 4);
    wait_n(f, 5);
    quiet(f);
    assert_int_equal(workload_api_bundle_sent(f->api, &min), 2);
    assert_true(min == 4);

    /* #5 with the same bundles: the bundles stream has nothing new to send
     * but holds #5; the SVID stream gets its new SVID */
    set_seq_view(f, f->other, 5);
    wait_n(f, 6);
    quiet(f);
    assert_int_equal(workload_api_bundle_sent(f->api, &min), 2);
    assert_true(min == 5);

    /* ending the streams: nothing counts */
    int before = hooks;
    rpc_stream_cancel(svid_stream);
    rpc_stream_cancel(bundles_stream);
    for (int i = 0; i < 5 && workload_api_bundle_sent(f->api, &min) > 0; i++)
        tl_run_for(f->loop, QUIET_MS);
    assert_int_equal(workload_api_bundle_sent(f->api, &min), 0);
    assert_true(hooks > before);
}

int run_workload_api_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_header_required, setup, teardown),
        cmocka_unit_test_setup_teardown(test_denied, setup, teardown),
        cmocka_unit_test_setup_teardown(test_x509_svid_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_x509_bundles_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jwt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_waits_for_issue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bundle_sent_min, setup, teardown),
    };
    return cmocka_run_group_tests_name("workload_api", tests, NULL, NULL);
}
