/* The node agent against the fake node API server: bootstrap with a join
 * token, the persisted identity reused after a restart, workload SVIDs for
 * locally generated keys, rotation at half life, re-issue on entry change,
 * serving from the cache while the server is down, agent SVID renewal,
 * selector matching (denied / not issued yet / matched, default order),
 * refusals reported to the server (coalesced, bounded, retried), and CA
 * rotation: sds_bundle_sequence_ack waits for a real SDS client's ACK, taint
 * re-issues exactly the affected SVIDs, an SVID that does not verify against
 * the agent's bundle is never served. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "lib/log.h"
#include "sds/agent.h"
#include "sds/agent_int.h"
#include "sds/agent_cache.h"
#include "sds/sds_service.h"
#include "sds/secrets.h"
#include "tests/unit/agent/agent_tests.h"

#define WL_A "spiffe://" FAKE_TD "/a"
#define WL_B "spiffe://" FAKE_TD "/b"
#define WL_OTHER "spiffe://" FAKE_TD "/other"

typedef struct {
    rpc_loop *loop;
    fake_server *f;
    char *dir;
    agent *a;
    char addr[64];
    int fatals;
    char fatal_msg[256];
    char uid_sel[32]; /* "uid:<euid>" */
    char gid_sel[32];
    char sock[4200];  /* SDS / Workload API socket; "" for none */
} env;

static int setup(void **state)
{
    env *e = calloc(1, sizeof *e);
    assert_non_null(e);
    assert_true(mid_is_ok(rpc_loop_new(&e->loop)));
    e->f = fake_new(e->loop);
    e->dir = test_tmpdir();
    snprintf(e->addr, sizeof e->addr, "127.0.0.1:%d", fake_port(e->f));
    snprintf(e->uid_sel, sizeof e->uid_sel, "uid:%lu", (unsigned long)geteuid());
    snprintf(e->gid_sel, sizeof e->gid_sel, "gid:%lu", (unsigned long)getegid());
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    env *e = *state;
    agent_stop(e->a);
    rpc_loop_free(e->loop);
    agent_free(e->a);
    fake_free(e->f);
    test_rmtree(e->dir);
    free(e->dir);
    free(e);
    return 0;
}

static void on_fatal(void *arg, const char *msg)
{
    env *e = arg;
    e->fatals++;
    snprintf(e->fatal_msg, sizeof e->fatal_msg, "%s", msg);
}

static mid_result start_agent(env *e, const char *token)
{
    agent_opts o = {.server_addr = e->addr,
                    .server_name = "localhost",
                    .trust_bundle_pem = fake_root_pem(e->f),
                    .join_token = token,
                    .data_dir = e->dir,
                    .hostname = "node1",
                    .on_fatal = on_fatal,
                    .on_fatal_arg = e,
                    .backoff_min_ms = 100,
                    .backoff_max_ms = 400,
                    .report_interval_ms = 100,
                    .socket_path = e->sock[0] ? e->sock : NULL};
    return agent_start(&o, e->loop, &e->a);
}

static void restart_agent(env *e, const char *token)
{
    agent_stop(e->a);
    agent_free(e->a);
    e->a = NULL;
    assert_true(mid_is_ok(start_agent(e, token)));
}

static bool synced(void *arg)
{
    env *e = arg;
    return e->a && agent_synced(e->a);
}

typedef struct {
    env *e;
    size_t want;
} issued_wait;

static bool issued_n(void *arg)
{
    issued_wait *w = arg;
    agent_cache_stats st;
    agent_cache_get_stats(agent_get_cache(w->e->a), &st);
    return st.issued == w->want && st.entries == w->want;
}

static void wait_issued(env *e, size_t n)
{
    issued_wait w = {e, n};
    assert_true(run_until(e->loop, issued_n, &w, 10000));
}

static void start_seeded(env *e)
{
    fake_seed_identity(e->f, e->dir, 3600);
    assert_true(mid_is_ok(start_agent(e, NULL)));
    assert_true(run_until(e->loop, synced, e, 10000));
}

static bool fake_acked(void *arg)
{
    env *e = arg;
    return fake_get_counts(e->f)->acks >= 1;
}

static const char *serial_of(env *e, const char *entry_id)
{
    const char *serial = NULL;
    if (!mid_is_ok(agent_cache_svid_info(agent_get_cache(e->a), entry_id, NULL, &serial, NULL)))
        return NULL;
    return serial;
}

/* ---- bootstrap and restart ------------------------------------------------------- */

static void test_bootstrap_token_and_restart(void **state)
{
    env *e = *state;
    fake_add_token(e->f, "tok-1");
    assert_true(mid_is_ok(start_agent(e, "tok-1")));
    assert_true(run_until(e->loop, synced, e, 10000));
    assert_int_equal(fake_get_counts(e->f)->attests, 1);
    assert_string_equal(agent_spiffe_id(e->a), FAKE_AGENT_ID);

    char p[4200];
    struct stat sb;
    snprintf(p, sizeof p, "%s/agent/svid.key", e->dir);
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    snprintf(p, sizeof p, "%s/agent/svid.pem", e->dir);
    assert_int_equal(stat(p, &sb), 0);
    snprintf(p, sizeof p, "%s/agent/bundle.pem", e->dir);
    assert_int_equal(stat(p, &sb), 0);
    /* the agent acked the state it applied (the ack travels after the
     * agent counts itself synced: wait for the fake server to see it) */
    assert_true(run_until(e->loop, fake_acked, e, 10000));
    assert_int_equal(fake_get_counts(e->f)->last_bundle_ack, 1);

    /* Restart without a token: the persisted identity is used. */
    restart_agent(e, NULL);
    assert_true(run_until(e->loop, synced, e, 10000));
    assert_int_equal(fake_get_counts(e->f)->attests, 1);
    assert_int_equal(fake_get_counts(e->f)->attest_refused, 0);
    assert_string_equal(agent_spiffe_id(e->a), FAKE_AGENT_ID);

    /* Restart with the (used) token again: still no second attestation. */
    restart_agent(e, "tok-1");
    assert_true(run_until(e->loop, synced, e, 10000));
    assert_int_equal(fake_get_counts(e->f)->attests, 1);
    assert_int_equal(fake_get_counts(e->f)->attest_refused, 0);
    assert_int_equal(fake_get_counts(e->f)->unauthenticated, 0);
    assert_int_equal(e->fatals, 0);
}

static bool got_fatal(void *arg) { return ((env *)arg)->fatals > 0; }

static void test_bad_token_is_fatal(void **state)
{
    env *e = *state;
    assert_true(mid_is_ok(start_agent(e, "not-a-token")));
    assert_true(run_until(e->loop, got_fatal, e, 10000));
    assert_int_equal(fake_get_counts(e->f)->attest_refused, 1);
    assert_non_null(strstr(e->fatal_msg, "join token"));
    assert_false(agent_synced(e->a));
}

static void test_no_identity_no_token(void **state)
{
    env *e = *state;
    mid_result r = start_agent(e, NULL);
    assert_int_equal(r.err, MID_E_USAGE);
    assert_null(e->a);
    assert_non_null(strstr(mid_errmsg(), "--join-token"));
}

/* ---- workload SVIDs ----------------------------------------------------------------- */

static bool spki_recorded(env *e, EVP_PKEY *k)
{
    unsigned char *spki = NULL;
    int n = i2d_PUBKEY(k, &spki);
    assert_true(n > 0);
    bool found = false;
    for (size_t i = 0; i < fake_csr_count(e->f) && !found; i++) {
        size_t len = 0;
        const unsigned char *d = fake_csr_spki(e->f, i, &len);
        found = len == (size_t)n && memcmp(d, spki, len) == 0;
    }
    OPENSSL_free(spki);
    return found;
}

/* The private key never appears in anything the server received: neither
 * its PKCS#8 DER nor the bare scalar. */
static void assert_key_never_sent(env *e, EVP_PKEY *k)
{
    unsigned char *p8 = NULL;
    int n = i2d_PrivateKey(k, &p8);
    assert_true(n > 0);
    assert_false(fake_requests_contain(e->f, p8, (size_t)n));
    OPENSSL_free(p8);
    BIGNUM *priv = NULL;
    assert_int_equal(EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_PRIV_KEY, &priv), 1);
    unsigned char scalar[32];
    assert_int_equal(BN_bn2binpad(priv, scalar, sizeof scalar), 32);
    assert_false(fake_requests_contain(e->f, scalar, sizeof scalar));
    BN_clear_free(priv);
}

static EVP_PKEY *key_of_view(const sds_view *v, size_t i)
{
    const sds_svid *s = sds_view_svid(v, i);
    assert_non_null(s);
    BIO *b = BIO_new_mem_buf(s->key_pem, -1);
    EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    BIO_free(b);
    assert_non_null(k);
    return k;
}

static void test_entries_issued_with_local_keys(void **state)
{
    env *e = *state;
    fake_add_entry(e->f, "e1", WL_A, e->uid_sel, 3600);
    fake_add_entry(e->f, "e2", WL_OTHER, "uid:99999", 3600);
    start_seeded(e);
    wait_issued(e, 2);
    assert_int_equal(fake_csr_count(e->f), 2);
    assert_true(fake_get_counts(e->f)->batches >= 1);
    assert_true(fake_get_counts(e->f)->batches <= 2); /* coalesced */

    char sel[64];
    snprintf(sel, sizeof sel, "unix:%s", e->uid_sel);
    const char *sels[] = {sel};
    sds_view *v = NULL;
    assert_true(mid_is_ok(agent_cache_view_for(agent_get_cache(e->a), sels, 1, &v)));
    assert_int_equal(sds_view_svid_count(v), 1);
    assert_string_equal(sds_view_svid(v, 0)->spiffe_id, WL_A);
    assert_int_equal(sds_view_bundle_count(v), 1);
    assert_string_equal(sds_view_bundle(v, 0)->trust_domain, FAKE_TD);
    EVP_PKEY *k = key_of_view(v, 0);
    assert_true(spki_recorded(e, k));
    assert_key_never_sent(e, k);
    EVP_PKEY_free(k);
    sds_view_unref(v);

    const char *other[] = {"unix:uid:99999"};
    assert_true(mid_is_ok(agent_cache_view_for(agent_get_cache(e->a), other, 1, &v)));
    assert_string_equal(sds_view_svid(v, 0)->spiffe_id, WL_OTHER);
    k = key_of_view(v, 0);
    assert_true(spki_recorded(e, k));
    assert_key_never_sent(e, k);
    EVP_PKEY_free(k);
    sds_view_unref(v);
}

static void test_selector_matching(void **state)
{
    env *e = *state;
    fake_add_entry(e->f, "e-b", WL_B, e->gid_sel, 3600);  /* matches us, sorts second */
    fake_add_entry(e->f, "e-a", WL_A, e->uid_sel, 3600);  /* matches us, default */
    fake_entry *bad = fake_add_entry(e->f, "e-x", WL_OTHER, "uid:4242", 3600);
    bad->fail_code = RPC_PERMISSION_DENIED; /* matched but never issued */
    start_seeded(e);
    issued_wait w = {e, 3};
    (void)run_until(e->loop, issued_n, &w, 1500); /* e-x never issues */
    agent_cache_stats st;
    agent_cache_get_stats(agent_get_cache(e->a), &st);
    assert_int_equal(st.issued, 2);
    assert_true(st.sign_errors >= 1);

    agent_cache *c = agent_get_cache(e->a);
    sds_source src = agent_cache_source(c);
    /* this process, attested by its peer credentials */
    rpc_peer me = {.kind = RPC_PEER_UNIX, .uid = geteuid(), .gid = getegid(), .pid = getpid()};
    sds_workload *wl = NULL;
    assert_true(mid_is_ok(src.ops->attest(src.ctx, &me, &wl)));
    sds_view *v = NULL;
    assert_true(mid_is_ok(src.ops->view(src.ctx, wl, &v)));
    assert_int_equal(sds_view_svid_count(v), 2);
    assert_string_equal(sds_view_svid(v, 0)->spiffe_id, WL_A); /* by SPIFFE ID */
    assert_string_equal(sds_view_svid(v, 1)->spiffe_id, WL_B);
    sds_view *v2 = NULL;
    assert_true(mid_is_ok(src.ops->view(src.ctx, wl, &v2)));
    assert_ptr_equal(v, v2); /* memoised until something changes */
    sds_view_unref(v2);
    sds_view_unref(v);
    src.ops->workload_free(src.ctx, wl);

    /* matched, not issued yet */
    const char *x[] = {"unix:uid:4242"};
    assert_int_equal(agent_cache_view_for(c, x, 1, &v).err, MID_E_NOT_FOUND);
    assert_null(v);
    /* nothing matches */
    const char *none[] = {"unix:uid:5555", "unix:gid:5555"};
    assert_int_equal(agent_cache_view_for(c, none, 2, &v).err, MID_E_DENIED);
    assert_int_equal(agent_cache_view_for(c, NULL, 0, &v).err, MID_E_DENIED);

    /* refusals through the source are counted (and logged) */
    uint64_t before = st.denials;
    rpc_peer tls = {.kind = RPC_PEER_TLS, .spiffe_id = WL_A};
    assert_int_equal(src.ops->attest(src.ctx, &tls, &wl).err, MID_E_DENIED);
    rpc_peer liar = me;
    liar.uid = me.uid + 1; /* our pid, someone else's uid */
    assert_int_equal(src.ops->attest(src.ctx, &liar, &wl).err, MID_E_DENIED);
    rpc_peer stranger = {.kind = RPC_PEER_UNIX, .uid = 5555, .gid = 5555, .pid = 0};
    assert_true(mid_is_ok(src.ops->attest(src.ctx, &stranger, &wl)));
    assert_int_equal(src.ops->view(src.ctx, wl, &v).err, MID_E_DENIED);
    assert_non_null(strstr(mid_errmsg(), "uid 5555"));
    src.ops->workload_free(src.ctx, wl);
    agent_cache_get_stats(c, &st);
    assert_int_equal(st.denials, before + 3);
}

/* ---- rotation and change ---------------------------------------------------------------- */

typedef struct {
    env *e;
    const char *id;
    char old[80];
} serial_wait;

static bool serial_changed(void *arg)
{
    serial_wait *w = arg;
    const char *s = serial_of(w->e, w->id);
    return s && strcmp(s, w->old) != 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_rotation_at_half_life(void **state)
{
    env *e = *state;
    fake_add_entry(e->f, "e1", WL_A, e->uid_sel, 4);
    start_seeded(e);
    wait_issued(e, 1);
    int64_t issued_at = now_ms(), na = 0;
    assert_true(mid_is_ok(agent_cache_svid_info(agent_get_cache(e->a), "e1", NULL, NULL, &na)));
    serial_wait w = {.e = e, .id = "e1"};
    snprintf(w.old, sizeof w.old, "%s", serial_of(e, "e1"));
    assert_true(run_until(e->loop, serial_changed, &w, 6000));
    int64_t took = now_ms() - issued_at;
    /* half of ~4 s, +-10% jitter, and well before the old one expired */
    assert_true(took >= 1000);
    assert_true(now_ms() < na * 1000);
    /* and again for the new one */
    snprintf(w.old, sizeof w.old, "%s", serial_of(e, "e1"));
    assert_true(run_until(e->loop, serial_changed, &w, 6000));
    assert_true(fake_get_counts(e->f)->signs >= 3);
}

static bool acked_newest(void *arg)
{
    env *e = arg;
    return fake_get_counts(e->f)->last_rev_ack == agent_cache_entries_revision(agent_get_cache(e->a));
}

static void test_entry_change_reissues(void **state)
{
    env *e = *state;
    fake_entry *fe = fake_add_entry(e->f, "e1", WL_A, e->uid_sel, 3600);
    fake_add_entry(e->f, "e2", WL_B, "uid:99999", 3600);
    start_seeded(e);
    wait_issued(e, 2);
    serial_wait w = {.e = e, .id = "e1"};
    snprintf(w.old, sizeof w.old, "%s", serial_of(e, "e1"));
    char e2_serial[80];
    snprintf(e2_serial, sizeof e2_serial, "%s", serial_of(e, "e2"));

    /* TTL change */
    fe->ttl = 1800;
    fe->revision++;
    fake_push(e->f);
    assert_true(run_until(e->loop, serial_changed, &w, 2000));
    assert_string_equal(serial_of(e, "e2"), e2_serial); /* untouched */

    /* DNS change */
    snprintf(w.old, sizeof w.old, "%s", serial_of(e, "e1"));
    snprintf(fe->dns, sizeof fe->dns, "a.example.org");
    fe->revision++;
    fake_push(e->f);
    assert_true(run_until(e->loop, serial_changed, &w, 2000));

    /* a selector-only change needs no new certificate */
    snprintf(w.old, sizeof w.old, "%s", serial_of(e, "e1"));
    int signs = fake_get_counts(e->f)->signs;
    snprintf(fe->selector, sizeof fe->selector, "%s", e->gid_sel);
    fe->revision++;
    fake_push(e->f);
    run_for(e->loop, 300);
    assert_int_equal(fake_get_counts(e->f)->signs, signs);
    char sel[64];
    snprintf(sel, sizeof sel, "unix:%s", e->gid_sel);
    const char *sels[] = {sel};
    sds_view *v = NULL;
    assert_true(mid_is_ok(agent_cache_view_for(agent_get_cache(e->a), sels, 1, &v)));
    assert_string_equal(sds_view_svid(v, 0)->spiffe_id, WL_A);
    sds_view_unref(v);

    /* removal drops the SVID */
    fake_remove_entry(e->f, "e1");
    fake_push(e->f);
    wait_issued(e, 1);
    assert_null(serial_of(e, "e1"));
    assert_int_equal(agent_cache_view_for(agent_get_cache(e->a), sels, 1, &v).err, MID_E_DENIED);
    /* the agent acks the newest revision */
    assert_true(run_until(e->loop, acked_newest, e, 2000));
}

/* ---- server down ------------------------------------------------------------------------ */

static bool not_synced(void *arg) { return !synced(arg); }

typedef struct {
    env *e;
    int syncs;
} sync_wait;

static bool resynced(void *arg)
{
    sync_wait *w = arg;
    return agent_synced(w->e->a) && fake_get_counts(w->e->f)->syncs_total > w->syncs;
}

static void test_server_down_serves_cache(void **state)
{
    env *e = *state;
    fake_add_entry(e->f, "e1", WL_A, e->uid_sel, 3600);
    start_seeded(e);
    wait_issued(e, 1);
    char serial[80];
    snprintf(serial, sizeof serial, "%s", serial_of(e, "e1"));
    int syncs = fake_get_counts(e->f)->syncs_total;

    fake_set_down(e->f, true);
    assert_true(run_until(e->loop, not_synced, e, 5000));
    run_for(e->loop, 1000); /* several reconnect attempts fail */
    char sel[64];
    snprintf(sel, sizeof sel, "unix:%s", e->uid_sel);
    const char *sels[] = {sel};
    sds_view *v = NULL;
    assert_true(mid_is_ok(agent_cache_view_for(agent_get_cache(e->a), sels, 1, &v)));
    assert_string_equal(sds_view_svid(v, 0)->spiffe_id, WL_A);
    sds_view_unref(v);
    assert_string_equal(serial_of(e, "e1"), serial);
    agent_stats as;
    agent_get_stats(e->a, &as);
    assert_true(as.reconnects >= 2);

    fake_set_down(e->f, false);
    sync_wait w = {e, syncs};
    assert_true(run_until(e->loop, resynced, &w, 5000));
    assert_string_equal(serial_of(e, "e1"), serial); /* nothing to re-issue */
}

/* The server's certificate fails verification for 11 s (as meshid's server
 * served an expired SVID for 10 s before its renewal timer was fixed): every
 * attempt fails the handshake. Once it is valid again the agent is back
 * within its own backoff (400 ms here). Reusing the channel it would wait
 * for gRPC's reconnect backoff instead, which by then is ~6 s long (1 s
 * growing by 1.6x) and fails every call at once meanwhile: that is how a
 * short outage outlived the agent's SVID in tests/interop/
 * test_auto_rotation.sh. */
static void test_reconnects_after_failed_handshakes(void **state)
{
    env *e = *state;
    fake_add_entry(e->f, "e1", WL_A, e->uid_sel, 3600);
    fake_set_tls_expired(e->f, true);
    fake_seed_identity(e->f, e->dir, 3600);
    assert_true(mid_is_ok(start_agent(e, NULL)));
    run_for(e->loop, 11000);
    assert_false(agent_synced(e->a));
    assert_int_equal(fake_get_counts(e->f)->syncs_total, 0);
    agent_stats as;
    agent_get_stats(e->a, &as);
    assert_true(as.reconnects >= 10);

    fake_set_tls_expired(e->f, false);
    assert_true(run_until(e->loop, synced, e, 1500));
    wait_issued(e, 1);
}

static bool renewed(void *arg)
{
    env *e = arg;
    agent_stats st;
    agent_get_stats(e->a, &st);
    return st.renewals >= 1 && agent_synced(e->a);
}

static void test_agent_renewal(void **state)
{
    env *e = *state;
    fake_add_entry(e->f, "e1", WL_A, e->uid_sel, 3600);
    fake_add_token(e->f, "tok-r");
    fake_set_agent_ttl(e->f, 3);
    assert_true(mid_is_ok(start_agent(e, "tok-r")));
    wait_issued(e, 1);
    int syncs = fake_get_counts(e->f)->syncs_total;
    assert_true(run_until(e->loop, renewed, e, 6000));
    assert_true(fake_get_counts(e->f)->renews >= 1);
    sync_wait w = {e, syncs};
    assert_true(run_until(e->loop, resynced, &w, 5000)); /* Sync reopened with the new cert */
    assert_int_equal(fake_get_counts(e->f)->unauthenticated, 0);
    /* the renewed identity is what a restart picks up */
    fake_set_agent_ttl(e->f, 3600);
    restart_agent(e, NULL);
    assert_true(run_until(e->loop, synced, e, 10000));
    assert_int_equal(fake_get_counts(e->f)->attests, 1);
}

/* ---- denial reports ------------------------------------------------------------------ */

/* A workload of `uid` (pid 0: no executable selectors) asks through the
 * `api` source and is refused: no entry matches it. */
static void refuse_uid(env *e, agent_api api, uid_t uid)
{
    sds_source src = agent_cache_source_for(agent_get_cache(e->a), api);
    rpc_peer p = {.kind = RPC_PEER_UNIX, .uid = uid, .gid = uid, .pid = 0};
    sds_workload *wl = NULL;
    assert_true(mid_is_ok(src.ops->attest(src.ctx, &p, &wl)));
    sds_view *v = NULL;
    assert_int_equal(src.ops->view(src.ctx, wl, &v).err, MID_E_DENIED);
    assert_null(v);
    src.ops->workload_free(src.ctx, wl);
}

typedef struct {
    env *e;
    int want;
} denial_wait;

/* The fake audited `want` denials and the agent has seen the answers. */
static bool denials_at_least(void *arg)
{
    denial_wait *w = arg;
    agent_cache_stats st;
    agent_cache_get_stats(agent_get_cache(w->e->a), &st);
    return fake_get_counts(w->e->f)->denials >= w->want && st.denials_reported >= (uint64_t)w->want;
}

static const fake_denial *denial_of(env *e, uint32_t uid, size_t nth)
{
    size_t n = 0;
    const fake_denial *d = fake_denials(e->f, &n);
    for (size_t i = 0; i < n; i++)
        if (d[i].uid == uid && nth-- == 0) return &d[i];
    return NULL;
}

static agent_cache_stats cache_stats(env *e)
{
    agent_cache_stats st;
    agent_cache_get_stats(agent_get_cache(e->a), &st);
    return st;
}

static void test_denials_reported_coalesced(void **state)
{
    env *e = *state;
    fake_add_entry(e->f, "e1", WL_A, e->uid_sel, 3600);
    start_seeded(e);
    refuse_uid(e, AGENT_API_WORKLOAD, 5555);
    refuse_uid(e, AGENT_API_WORKLOAD, 5555);
    refuse_uid(e, AGENT_API_WORKLOAD, 5555);
    refuse_uid(e, AGENT_API_WORKLOAD, 5556);
    /* attestation fails: our pid, someone else's uid */
    sds_source sds = agent_cache_source_for(agent_get_cache(e->a), AGENT_API_SDS);
    rpc_peer liar = {.kind = RPC_PEER_UNIX, .uid = geteuid() + 1, .gid = getegid(),
                     .pid = getpid()};
    sds_workload *wl = NULL;
    assert_int_equal(sds.ops->attest(sds.ctx, &liar, &wl).err, MID_E_DENIED);
    agent_cache_stats st = cache_stats(e);
    assert_int_equal(st.denials, 5);
    assert_int_equal(st.denials_queued, 3); /* 5555 three times is one report */

    denial_wait w = {e, 3};
    assert_true(run_until(e->loop, denials_at_least, &w, 5000));
    const fake_denial *d = denial_of(e, 5555, 0);
    assert_non_null(d);
    assert_int_equal(d->count, 3);
    assert_int_equal(d->gid, 5555);
    assert_string_equal(d->api, "workload");
    assert_non_null(strstr(d->reason, "no registration entry"));
    assert_non_null(strstr(d->selectors, "unix:uid:5555"));
    assert_true(d->time_ms > 0 && d->time_ms <= now_ms());
    d = denial_of(e, 5556, 0);
    assert_non_null(d);
    assert_int_equal(d->count, 1);
    d = denial_of(e, (uint32_t)liar.uid, 0);
    assert_non_null(d);
    assert_string_equal(d->api, "sds");
    assert_non_null(strstr(d->reason, "attestation failed"));
    assert_int_equal(d->pid, (int32_t)getpid());
    assert_string_equal(d->selectors, "");
    st = cache_stats(e);
    assert_int_equal(st.denials_reported, 3);
    assert_int_equal(st.denials_queued, 0);
    assert_int_equal(st.denials_dropped, 0);
    assert_int_equal(fake_get_counts(e->f)->denials, 3);

    /* once reported, the same workload again is a new report */
    refuse_uid(e, AGENT_API_WORKLOAD, 5555);
    w.want = 4;
    assert_true(run_until(e->loop, denials_at_least, &w, 5000));
    d = denial_of(e, 5555, 1);
    assert_non_null(d);
    assert_int_equal(d->count, 1);
    assert_int_equal(fake_get_counts(e->f)->unauthenticated, 0);
}

static void test_denials_retried(void **state)
{
    env *e = *state;
    start_seeded(e);
    fake_set_down(e->f, true);
    assert_true(run_until(e->loop, not_synced, e, 5000));
    refuse_uid(e, AGENT_API_WORKLOAD, 5555);
    refuse_uid(e, AGENT_API_SDS, 5556);
    run_for(e->loop, 700); /* several attempts fail */
    agent_cache_stats st = cache_stats(e);
    assert_true(st.report_errors >= 1);
    assert_int_equal(st.denials_queued, 2);
    assert_int_equal(st.denials_reported, 0);
    assert_true(fake_get_counts(e->f)->report_failures >= 1);
    assert_int_equal(fake_get_counts(e->f)->denials, 0);

    /* back, but auditing one per call: the rest is re-sent */
    fake_set_denial_accept_limit(e->f, 1);
    fake_set_down(e->f, false);
    denial_wait w = {e, 2};
    assert_true(run_until(e->loop, denials_at_least, &w, 10000));
    size_t n = 0;
    const fake_denial *d = fake_denials(e->f, &n);
    assert_int_equal(n, 2);
    assert_int_equal(d[0].uid, 5555); /* in order */
    assert_int_equal(d[1].uid, 5556);
    assert_true(fake_get_counts(e->f)->reports >= 2);
    st = cache_stats(e);
    assert_int_equal(st.denials_reported, 2);
    assert_int_equal(st.denials_queued, 0);
}

static void test_denial_queue_bounded(void **state)
{
    env *e = *state;
    start_seeded(e);
    fake_set_down(e->f, true);
    assert_true(run_until(e->loop, not_synced, e, 5000));
    for (uid_t u = 0; u < AGENT_DENIALS_QUEUE_MAX + 5; u++)
        refuse_uid(e, AGENT_API_WORKLOAD, 20000 + u);
    agent_cache_stats st = cache_stats(e);
    assert_int_equal(st.denials_queued, AGENT_DENIALS_QUEUE_MAX);
    assert_int_equal(st.denials_dropped, 5);

    fake_set_down(e->f, false);
    denial_wait w = {e, AGENT_DENIALS_QUEUE_MAX};
    assert_true(run_until(e->loop, denials_at_least, &w, 15000));
    /* at most AGENT_DENIALS_BATCH_MAX per call; the drops named once */
    assert_true(fake_get_counts(e->f)->reports >= AGENT_DENIALS_QUEUE_MAX / AGENT_DENIALS_BATCH_MAX);
    assert_int_equal(fake_get_counts(e->f)->drop_notes, 1);
    size_t n = 0;
    const fake_denial *d = fake_denials(e->f, &n);
    assert_true(n >= 1);
    assert_int_equal(d[0].uid, 20000);
    assert_non_null(strstr(d[0].reason, "5 more denials dropped"));
    st = cache_stats(e);
    assert_int_equal(st.denials_reported, AGENT_DENIALS_QUEUE_MAX);
    assert_int_equal(st.denials_queued, 0);
}

/* ---- CA rotation: bundle acks, taint, verification ----------------------------------- */

typedef Envoy__Service__Discovery__V3__DiscoveryRequest disc_req;
typedef Envoy__Service__Discovery__V3__DiscoveryResponse disc_resp;

/* An SDS client (StreamSecrets) on the agent's socket, on the test loop. */
typedef struct {
    rpc_channel *ch;
    rpc_stream *st;
    int n;           /* responses received */
    char nonce[128]; /* of the last one */
    bool done;
} sds_client;

static void sdsc_msg(rpc_stream *s, const ProtobufCMessage *m, void *arg)
{
    (void)s;
    sds_client *c = arg;
    const disc_resp *r = (const disc_resp *)m;
    snprintf(c->nonce, sizeof c->nonce, "%s", r->nonce);
    c->n++;
}

static void sdsc_done(rpc_stream *s, const rpc_status *st, void *arg)
{
    (void)s;
    (void)st;
    sds_client *c = arg;
    c->done = true;
    c->st = NULL;
}

static const rpc_stream_handler sdsc_h = {sdsc_msg, sdsc_done};

static void sdsc_send(sds_client *c, const char *nonce)
{
    const char *names[] = {"default", "ROOTCA"};
    disc_req r = ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
    r.resource_names = (char **)names;
    r.n_resource_names = 2;
    r.type_url = (char *)SDS_SECRET_TYPE_URL;
    if (nonce) r.response_nonce = (char *)nonce;
    assert_true(mid_is_ok(rpc_stream_send(c->st, &r.base)));
}

static void sdsc_open(env *e, sds_client *c)
{
    char target[4300];
    snprintf(target, sizeof target, "unix:%s", e->sock);
    assert_true(mid_is_ok(rpc_channel_new(e->loop, target, NULL, 0, &c->ch)));
    assert_true(mid_is_ok(rpc_stream_open(c->ch, SDS_M_STREAM, RPC_BIDI, NULL,
                                          &envoy__service__discovery__v3__discovery_response__descriptor,
                                          NULL, &sdsc_h, c, &c->st)));
    sdsc_send(c, NULL);
}

typedef struct {
    env *e;
    sds_client *c;
    int n;
    uint64_t seq;
} ack_wait;

static bool sdsc_got(void *arg)
{
    ack_wait *w = arg;
    return w->c->n >= w->n;
}

static bool sds_acked(void *arg)
{
    ack_wait *w = arg;
    return fake_get_counts(w->e->f)->last_sds_ack == w->seq;
}

static bool bundle_acked(void *arg)
{
    ack_wait *w = arg;
    return fake_get_counts(w->e->f)->last_bundle_ack == w->seq;
}

/* A bundle change is acked in sds_bundle_sequence_ack only once the SDS
 * client subscribed to ROOTCA has ACKed the response carrying it. */
static void test_sds_ack_waits_for_client(void **state)
{
    env *e = *state;
    snprintf(e->sock, sizeof e->sock, "%s/agent.sock", e->dir);
    fake_add_entry(e->f, "e1", WL_A, e->uid_sel, 3600);
    start_seeded(e);
    wait_issued(e, 1);
    /* no local stream: the SDS ack is the bundle ack */
    ack_wait w = {.e = e, .seq = 1};
    assert_true(run_until(e->loop, sds_acked, &w, 2000));

    sds_client c = {0};
    sdsc_open(e, &c);
    w.c = &c;
    w.n = 1;
    assert_true(run_until(e->loop, sdsc_got, &w, 5000));
    /* sent, not ACKed yet: the stream holds nothing */
    w.seq = 0;
    assert_true(run_until(e->loop, sds_acked, &w, 2000));
    sdsc_send(&c, c.nonce); /* ACK */
    w.seq = 1;
    assert_true(run_until(e->loop, sds_acked, &w, 2000));

    /* a new root: the agent acks the bundle at once, the SDS ack waits */
    fake_add_root(e->f, true);
    fake_push(e->f);
    w.seq = 2;
    assert_true(run_until(e->loop, bundle_acked, &w, 5000));
    w.n = 2;
    assert_true(run_until(e->loop, sdsc_got, &w, 5000));
    run_for(e->loop, 300);
    assert_int_equal(fake_get_counts(e->f)->last_sds_ack, 1);
    sdsc_send(&c, c.nonce);
    assert_true(run_until(e->loop, sds_acked, &w, 2000));
    assert_int_equal(fake_get_counts(e->f)->sds_ack_above, 0);

    /* the client goes away: nothing holds the ack back */
    fake_add_root(e->f, true);
    fake_push(e->f);
    w.seq = 3;
    assert_true(run_until(e->loop, bundle_acked, &w, 5000));
    run_for(e->loop, 200);
    assert_int_equal(fake_get_counts(e->f)->last_sds_ack, 2);
    rpc_channel_free(c.ch);
    assert_true(run_until(e->loop, sds_acked, &w, 5000));
}

static bool chain_issued_by(env *e, const char *entry_id, int root)
{
    const char *chain = NULL;
    if (!mid_is_ok(agent_cache_svid_info(agent_get_cache(e->a), entry_id, &chain, NULL, NULL)))
        return false;
    BIO *b = BIO_new_mem_buf(chain, -1);
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    assert_non_null(x);
    const ASN1_OCTET_STRING *aki = X509_get0_authority_key_id(x);
    char hex[200] = "", want[200];
    for (int i = 0; aki && i < aki->length; i++) snprintf(hex + 2 * i, 3, "%02x", aki->data[i]);
    X509_free(x);
    fake_root_id(e->f, root, want, sizeof want);
    return strcmp(hex, want) == 0;
}

/* Taint: the SVIDs chained to the tainted authority are re-issued at once,
 * the others are left alone, and nothing is re-issued again afterwards. */
static void test_taint_reissues_affected_only(void **state)
{
    env *e = *state;
    int old_root = fake_add_root(e->f, true);
    fake_add_entry(e->f, "e1", WL_A, e->uid_sel, 3600);
    fake_entry *fe2 = fake_add_entry(e->f, "e2", WL_B, "uid:99999", 3600);
    fe2->root = old_root;
    start_seeded(e);
    wait_issued(e, 2);
    assert_true(chain_issued_by(e, "e2", old_root));
    char e1_serial[80];
    snprintf(e1_serial, sizeof e1_serial, "%s", serial_of(e, "e1"));
    serial_wait w = {.e = e, .id = "e2"};
    snprintf(w.old, sizeof w.old, "%s", serial_of(e, "e2"));
    int signs = fake_get_counts(e->f)->signs;

    char id[200];
    fake_root_id(e->f, old_root, id, sizeof id);
    fake_set_tainted(e->f, id);
    fe2->root = 0; /* the server signs with the active authority now */
    fake_push(e->f);
    assert_true(run_until(e->loop, serial_changed, &w, 1000)); /* at once: no backoff */
    assert_true(chain_issued_by(e, "e2", 0));
    assert_string_equal(serial_of(e, "e1"), e1_serial);
    assert_int_equal(fake_get_counts(e->f)->signs, signs + 1);
    agent_cache_stats st;
    agent_cache_get_stats(agent_get_cache(e->a), &st);
    assert_int_equal(st.taint_reissues, 1);

    /* the same taint again (any new state): nothing left to re-issue */
    fake_push(e->f);
    run_for(e->loop, 400);
    assert_int_equal(fake_get_counts(e->f)->signs, signs + 1);
    assert_string_equal(serial_of(e, "e1"), e1_serial);
}

/* An SVID that does not verify against the agent's bundle is never served:
 * none at first, the previous one later; a bundle that makes it verify is
 * retried at once. */
static void test_unverifiable_svid_not_served(void **state)
{
    env *e = *state;
    int hidden = fake_add_root(e->f, false);
    fake_entry *fe = fake_add_entry(e->f, "e1", WL_A, e->uid_sel, 3600);
    fe->root = hidden;
    start_seeded(e);
    run_for(e->loop, 800);
    agent_cache_stats st;
    agent_cache_get_stats(agent_get_cache(e->a), &st);
    assert_int_equal(st.issued, 0);
    assert_true(st.unverified >= 1);
    assert_true(fake_get_counts(e->f)->signs >= 1);
    char sel[64];
    snprintf(sel, sizeof sel, "unix:%s", e->uid_sel);
    const char *sels[] = {sel};
    sds_view *v = NULL;
    assert_int_equal(agent_cache_view_for(agent_get_cache(e->a), sels, 1, &v).err, MID_E_NOT_FOUND);

    /* the root reaches the bundle: retried at once and served */
    fake_set_root_in_bundle(e->f, hidden, true);
    fake_push(e->f);
    wait_issued(e, 1);
    assert_true(chain_issued_by(e, "e1", hidden));

    /* a re-issue through an authority the agent does not trust: the
     * current SVID stays */
    int other = fake_add_root(e->f, false);
    serial_wait w = {.e = e, .id = "e1"};
    snprintf(w.old, sizeof w.old, "%s", serial_of(e, "e1"));
    fe->root = other;
    fe->ttl = 1800;
    fe->revision++;
    int signs = fake_get_counts(e->f)->signs;
    fake_push(e->f);
    run_for(e->loop, 800);
    assert_true(fake_get_counts(e->f)->signs > signs);
    assert_string_equal(serial_of(e, "e1"), w.old);
    assert_true(chain_issued_by(e, "e1", hidden));
    assert_true(mid_is_ok(agent_cache_view_for(agent_get_cache(e->a), sels, 1, &v)));
    sds_view_unref(v);
}

/* The retry delay after a failed RenewAgent: the backoff, cut to half of
 * what the SVID has left, never under the floor (no burst of retries a
 * millisecond apart just before expiry). */
static void test_renew_retry_schedule(void **state)
{
    (void)state;
    assert_int_equal(agent_renew_retry_ms(2000, 60000, 100), 2000);   /* plenty left */
    assert_int_equal(agent_renew_retry_ms(2000, 3000, 100), 1500);    /* half of what is left */
    assert_int_equal(agent_renew_retry_ms(2000, 150, 100), 100);      /* the floor, not 75 */
    assert_int_equal(agent_renew_retry_ms(2000, 2, 100), 100);        /* not 1 ms */
    assert_int_equal(agent_renew_retry_ms(2000, 0, 100), 2000);       /* expired: plain backoff */
    assert_int_equal(agent_renew_retry_ms(2000, -5000, 100), 2000);
    assert_int_equal(agent_renew_retry_ms(20, 10, 20), 20);           /* a short backoff is its own floor */
    /* what the agent's fails would give near expiry: all at least the floor */
    for (int64_t left = 1000; left > 0; left -= 7)
        assert_true(agent_renew_retry_ms(500, left, AGENT_RENEW_RETRY_FLOOR_MS) >=
                    AGENT_RENEW_RETRY_FLOOR_MS);
}

int run_agent_tests(void)
{
    if (getenv("MESHID_TEST_LOG")) log_set_level(LOG_LVL_DEBUG);
    else log_set_level(LOG_LVL_OFF);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bootstrap_token_and_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_token_is_fatal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_identity_no_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_entries_issued_with_local_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_selector_matching, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rotation_at_half_life, setup, teardown),
        cmocka_unit_test_setup_teardown(test_entry_change_reissues, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_down_serves_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconnects_after_failed_handshakes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_renewal, setup, teardown),
        cmocka_unit_test(test_renew_retry_schedule),
        cmocka_unit_test_setup_teardown(test_denials_reported_coalesced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_denials_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_denial_queue_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sds_ack_waits_for_client, setup, teardown),
        cmocka_unit_test_setup_teardown(test_taint_reissues_affected_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unverifiable_svid_not_served, setup, teardown),
    };
    return cmocka_run_group_tests_name("sds/agent", tests, NULL, NULL);
}
