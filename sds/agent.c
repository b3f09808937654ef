/* The node agent: identity (bootstrap, persistence, renewal), the Sync
 * stream with reconnect backoff, and the local SDS / Workload API socket.
 * See sds/agent.h and docs/agent.md.
 *
 * States: BOOTSTRAP (no identity: AttestAgent with the join token, retried
 * while the server is unreachable) -> RUNNING (Sync stream up or being
 * re-opened with backoff; RenewAgent at half the agent SVID's life). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "ca/keys.h"
#include "ca/x509.h"
#include "identity/spiffe_id.h"
#include "lib/fsutil.h"
#include "lib/log.h"
#include "lib/timeutil.h"
#include "sds/agent.h"
#include "sds/agent_int.h"
#include "sds/node_client.h"
#include "sds/sds_service.h"
#include "sds/workload_api.h"

#define AGENT_DIR "agent"
#define F_SVID "svid.pem"
#define F_KEY "svid.key"
#define F_KEY_NEW "svid.key.new"
#define F_BUNDLE "bundle.pem"
#define RENEW_FRACTION 0.5
#define RENEW_JITTER 0.1
#define ACK_DELAY_MS 50 /* coalesces SDS / Workload API delivery updates into one ack */

typedef enum { ST_BOOTSTRAP, ST_RUNNING, ST_STOPPED } agent_state;

struct agent {
    rpc_loop *loop;
    agent_state state;
    char *server_addr, *server_name, *join_token, *hostname, *socket_path;
    char dir[4096];
    char td[SPIFFE_TD_MAX + 1];
    char spiffe_id[SPIFFE_ID_MAX + 1];
    void (*on_fatal)(void *, const char *);
    void *on_fatal_arg;
    int64_t backoff_min, backoff_max;

    /* identity */
    char *trust_pem;  /* roots used to verify the server (latest bundle) */
    char *svid_pem;   /* agent SVID chain */
    char *key_pem;
    size_t key_len;
    int64_t svid_not_after;

    node_client *nc;
    agent_cache *cache;

    /* Sync */
    rpc_stream *sync;
    bool synced;
    int sync_fails;
    uint64_t acked_seq, acked_rev, acked_sds;
    bool ack_sent;
    rpc_timer *ack_timer; /* debounced ack after local delivery progressed */

    /* timers */
    rpc_timer *retry_timer;  /* bootstrap retry or Sync reconnect */
    rpc_timer *renew_timer;
    int renew_fails;
    int attest_fails;
    bool renewing;

    /* local services (NULL when socket_path is NULL or not wired) */
    rpc_server *srv;
    sds_service *sds;
    workload_api *wl;

    /* calls in flight hold a pointer to this; cleared by agent_stop */
    struct agent_ref *ref;
    agent_stats st;
};

/* Unary callbacks and the Sync stream may outlive agent_stop: they hold a
 * shared ref whose `a` is cleared on stop. */
typedef struct agent_ref {
    agent *a;
    int refs;
} agent_ref;

static agent_ref *ref_get(agent *a)
{
    a->ref->refs++;
    return a->ref;
}

static agent *ref_put(agent_ref *r)
{
    agent *a = r->a;
    if (--r->refs == 0) free(r);
    return a;
}

/* ---- helpers ------------------------------------------------------------------ */

static void free_secret(char *s, size_t len)
{
    if (!s) return;
    OPENSSL_cleanse(s, len);
    free(s);
}

static double rand_unit(void)
{
    uint32_t v = 0;
    if (RAND_bytes((unsigned char *)&v, sizeof v) != 1) {
        ERR_clear_error();
        return 0.5;
    }
    return (double)v / 4294967296.0;
}

static int64_t backoff(const agent *a, int fails)
{
    int64_t d = a->backoff_min;
    for (int i = 1; i < fails && d < a->backoff_max; i++) d *= 2;
    if (d > a->backoff_max) d = a->backoff_max;
    return d + (int64_t)((rand_unit() - 0.5) * 0.4 * (double)d);
}

static void fatal(agent *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fatal(agent *a, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    LOG_ERROR("agent: %s", msg);
    if (a->on_fatal) a->on_fatal(a->on_fatal_arg, msg);
}

static mid_result path_in(const agent *a, const char *name, char *out, size_t cap)
{
    return fs_join(out, cap, a->dir, name);
}

/* ---- persistence ------------------------------------------------------------ */

/* The key goes to svid.key.new first, then the chain, then the key is
 * renamed into place: a crash in between leaves a pair load_identity can
 * still match up. */
static mid_result save_identity(agent *a)
{
    char p[4096], q[4096];
    MID_GUARD(path_in(a, F_KEY_NEW, p, sizeof p));
    MID_GUARD(fs_write_file(p, a->key_pem, a->key_len, 0600));
    MID_GUARD(path_in(a, F_SVID, q, sizeof q));
    MID_GUARD(fs_write_file(q, a->svid_pem, strlen(a->svid_pem), 0644));
    MID_GUARD(path_in(a, F_KEY, q, sizeof q));
    MID_ENSURE(rename(p, q) == 0, MID_E_IO, "rename %s: %s", p, strerror(errno));
    return mid_ok();
}

static mid_result save_bundle(agent *a)
{
    char p[4096];
    MID_GUARD(path_in(a, F_BUNDLE, p, sizeof p));
    return fs_write_file(p, a->trust_pem, strlen(a->trust_pem), 0644);
}

static bool key_matches(const char *key_pem, size_t key_len, const char *cert_pem)
{
    EVP_PKEY *k = NULL;
    STACK_OF(X509) *sk = NULL;
    bool ok = mid_is_ok(ca_key_from_pem(key_pem, key_len, "agent key", &k)) &&
              mid_is_ok(ca_x509_stack_from_pem(cert_pem, strlen(cert_pem), "agent SVID", &sk)) &&
              mid_is_ok(ca_key_matches_cert(k, sk_X509_value(sk, 0), "agent SVID"));
    EVP_PKEY_free(k);
    sk_X509_pop_free(sk, X509_free);
    return ok;
}

/* Loads <dir>/svid.pem + key. MID_E_NOT_FOUND when there is no identity. */
static mid_result load_identity(agent *a)
{
    char p[4096];
    char *svid = NULL, *key = NULL;
    size_t svid_len = 0, key_len = 0;
    mid_result r = MID_OK_RESULT;
    MID_TRY(r, path_in(a, F_SVID, p, sizeof p));
    MID_TRY(r, fs_read_file(p, NODE_PEM_MAX, &svid, &svid_len));
    MID_TRY(r, path_in(a, F_KEY, p, sizeof p));
    r = fs_read_file(p, CA_KEY_FILE_MAX, &key, &key_len);
    if (!mid_is_ok(r) && r.err != MID_E_NOT_FOUND) goto out;
    if (!mid_is_ok(r) || !key_matches(key, key_len, svid)) {
        /* a renewal was interrupted after the chain was written */
        char q[4096];
        free_secret(key, key_len);
        key = NULL;
        MID_TRY(r, path_in(a, F_KEY_NEW, q, sizeof q));
        MID_TRY(r, fs_read_file(q, CA_KEY_FILE_MAX, &key, &key_len));
        MID_CHECK(r, key_matches(key, key_len, svid), MID_E_INVALID,
                  "%s/%s does not match its key; remove %s and attest with a new join token",
                  a->dir, F_SVID, a->dir);
        MID_CHECK(r, rename(q, p) == 0, MID_E_IO, "rename %s: %s", q, strerror(errno));
    }
    MID_TRY(r, node_pem_spiffe_id(svid, a->spiffe_id, sizeof a->spiffe_id));
    int64_t nb = 0;
    MID_TRY(r, node_pem_validity(svid, &nb, &a->svid_not_after));
    a->svid_pem = svid;
    a->key_pem = key;
    a->key_len = key_len;
    svid = NULL;
    key = NULL;
out:
    free(svid);
    free_secret(key, key_len);
    return r;
}

/* ---- local services ------------------------------------------------------------ */

static void notify_services(void *arg)
{
    agent *a = arg;
    if (a->sds) sds_service_notify(a->sds);
    if (a->wl) workload_api_notify(a->wl);
}

static void ack_soon(void *arg);

static mid_result start_services(agent *a)
{
    if (!a->socket_path) return mid_ok();
    char dir[4096];
    size_t n = strlen(a->socket_path);
    MID_ENSURE(n < sizeof dir, MID_E_TOO_LARGE, "socket path too long");
    memcpy(dir, a->socket_path, n + 1);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        MID_GUARD(fs_mkdir_p(dir, 0755));
    }
    MID_GUARD(rpc_server_new(a->loop, NULL, &a->srv));
    MID_GUARD(sds_service_new(a->srv, agent_cache_source_for(a->cache, AGENT_API_SDS), NULL,
                              &a->sds));
    MID_GUARD(workload_api_new(a->srv, agent_cache_source_for(a->cache, AGENT_API_WORKLOAD),
                               &a->wl));
    sds_service_on_bundle_ack(a->sds, ack_soon, a);
    workload_api_on_bundle_sent(a->wl, ack_soon, a);
    MID_GUARD(rpc_server_add_unix(a->srv, a->socket_path, AGENT_SOCKET_MODE));
    MID_GUARD(rpc_server_start(a->srv));
    LOG_INFO("agent: serving SDS and the Workload API on %s", a->socket_path);
    return mid_ok();
}

/* ---- signer for the cache ------------------------------------------------------- */

typedef struct {
    agent_sign_cb cb;
    void *arg;
} sign_call;

static void sign_done(const rpc_status *st, const ProtobufCMessage *resp, void *arg)
{
    sign_call *sc = arg;
    sc->cb(st, (const Meshid__Agent__V1__BatchSignResponse *)resp, sc->arg);
    free(sc);
}

static mid_result agent_batch_sign(void *ctx, const Meshid__Agent__V1__BatchSignRequest *req,
                                   agent_sign_cb cb, void *arg)
{
    agent *a = ctx;
    MID_ENSURE(a->state == ST_RUNNING && a->nc, MID_E_STATE, "agent not running");
    sign_call *sc = malloc(sizeof *sc);
    MID_ENSURE_MEM(sc);
    sc->cb = cb;
    sc->arg = arg;
    mid_result r = node_client_batch_sign(a->nc, req, sign_done, sc);
    if (!mid_is_ok(r)) free(sc);
    return r;
}

typedef struct {
    agent_report_cb cb;
    void *arg;
} report_call;

static void report_done(const rpc_status *st, const ProtobufCMessage *resp, void *arg)
{
    report_call *rc = arg;
    rc->cb(st, (const Meshid__Agent__V1__ReportDenialsResponse *)resp, rc->arg);
    free(rc);
}

/* Reports need the agent's own SVID: MID_E_STATE until it has one (the
 * cache keeps the denials and retries). */
static mid_result agent_report_denials(void *ctx, const Meshid__Agent__V1__ReportDenialsRequest *req,
                                       agent_report_cb cb, void *arg)
{
    agent *a = ctx;
    MID_ENSURE(a->state == ST_RUNNING && a->nc, MID_E_STATE, "agent not running");
    report_call *rc = malloc(sizeof *rc);
    MID_ENSURE_MEM(rc);
    rc->cb = cb;
    rc->arg = arg;
    mid_result r = node_client_report_denials(a->nc, req, report_done, rc);
    if (!mid_is_ok(r)) free(rc);
    return r;
}

static const agent_signer_ops signer_ops = {.batch_sign = agent_batch_sign,
                                            .report_denials = agent_report_denials};

/* ---- Sync ----------------------------------------------------------------------- */

static void sync_open(agent *a);
static void schedule_renew(agent *a);

static void retry_fn(rpc_loop *loop, void *arg);

static void arm_retry(agent *a, int64_t delay_ms)
{
    if (a->retry_timer || a->state == ST_STOPPED) return;
    if (!mid_is_ok(rpc_timer_add(a->loop, delay_ms, retry_fn, a, &a->retry_timer))) {
        LOG_ERROR("agent: cannot arm the retry timer: %s", mid_errmsg());
        a->retry_timer = NULL;
    }
}

/* After a call or the Sync stream failed to reach the server (UNAVAILABLE:
 * no connection, or a TLS handshake that failed) while no Sync stream keeps
 * a connection up, the next attempt uses a new channel. On the old one gRPC
 * would fail every call at once, without connecting, until its own
 * reconnect backoff (1 s growing by 1.6x) has passed: after a server outage
 * of ten seconds the agent stayed cut off for seconds more, past its own
 * SVID's expiry. Retries stay paced by the agent's backoff. */
static void reconnect_afresh(agent *a, rpc_code code)
{
    if (code == RPC_UNAVAILABLE && !a->sync && a->nc) node_client_reset(a->nc);
}

/* sds_bundle_sequence_ack: the newest bundle every local stream that
 * carries bundles holds (SDS: ACKed; Workload API: written out), never
 * above what the cache applied (`seq`); `seq` itself with no such stream. */
static uint64_t local_bundle_ack(const agent *a, uint64_t seq)
{
    uint64_t m = seq, x = 0;
    if (a->sds && sds_service_bundle_acked(a->sds, &x) > 0 && x < m) m = x;
    if (a->wl && workload_api_bundle_sent(a->wl, &x) > 0 && x < m) m = x;
    return m;
}

/* Sends {bundle_sequence_ack, entries_revision_ack, sds_bundle_sequence_ack}
 * when any of them changed since the last one sent on this stream. The
 * bundle ack is what the cache applied: applying notifies the services
 * synchronously, so it is queued on every open stream by then. */
static void send_ack(agent *a)
{
    uint64_t seq = agent_cache_bundle_sequence(a->cache);
    uint64_t rev = agent_cache_entries_revision(a->cache);
    uint64_t sds = local_bundle_ack(a, seq);
    if (!a->sync ||
        (a->ack_sent && seq == a->acked_seq && rev == a->acked_rev && sds == a->acked_sds))
        return;
    Meshid__Agent__V1__AgentSyncRequest req = MESHID__AGENT__V1__AGENT_SYNC_REQUEST__INIT;
    req.bundle_sequence_ack = seq;
    req.entries_revision_ack = rev;
    req.sds_bundle_sequence_ack = sds;
    mid_result r = rpc_stream_send(a->sync, &req.base);
    if (!mid_is_ok(r)) {
        LOG_WARN("agent: cannot ack Sync: %s", mid_errmsg());
        return;
    }
    if (sds != a->acked_sds && sds == seq)
        LOG_DEBUG("agent: every local stream holds trust bundle #%llu", (unsigned long long)seq);
    a->acked_seq = seq;
    a->acked_rev = rev;
    a->acked_sds = sds;
    a->ack_sent = true;
    a->st.acks++;
    a->st.last_sds_ack = sds;
}

static void ack_fn(rpc_loop *loop, void *arg)
{
    (void)loop;
    agent *a = arg;
    a->ack_timer = NULL;
    if (a->state == ST_RUNNING) send_ack(a);
}

/* Local delivery progressed (an SDS client ACKed, a Workload API message
 * was written, a stream ended): ack within ACK_DELAY_MS, coalescing the
 * burst of ACKs one bundle push causes. */
static void ack_soon(void *arg)
{
    agent *a = arg;
    if (a->ack_timer || a->state != ST_RUNNING || !a->sync) return;
    if (!mid_is_ok(rpc_timer_add(a->loop, ACK_DELAY_MS, ack_fn, a, &a->ack_timer))) {
        LOG_WARN("agent: cannot arm the ack timer: %s", mid_errmsg());
        a->ack_timer = NULL;
    }
}

static void sync_message(rpc_stream *s, const ProtobufCMessage *msg, void *arg)
{
    (void)s;
    agent_ref *ref = arg;
    agent *a = ref->a;
    if (!a) return;
    const Meshid__Agent__V1__AgentSyncResponse *m =
        (const Meshid__Agent__V1__AgentSyncResponse *)msg;
    a->synced = true;
    a->sync_fails = 0;
    a->st.sync_msgs++;
    /* The bundle first: SVIDs issued for new entries must chain to it, and
     * peers must trust a new authority before anything it signed is served.
     * The cache's on_change has notified the services before we ack. */
    if (m->n_bundle > 0) {
        mid_result r = agent_cache_set_bundle(a->cache, m->bundle, m->n_bundle, m->bundle_sequence);
        if (!mid_is_ok(r)) {
            LOG_WARN("agent: ignoring a bad bundle from the server: %s", mid_errmsg());
        } else if (!a->trust_pem || strcmp(a->trust_pem, agent_cache_bundle_pem(a->cache)) != 0) {
            char *t = strdup(agent_cache_bundle_pem(a->cache));
            if (t) {
                /* used for the next connection; the current one stays up */
                free(a->trust_pem);
                a->trust_pem = t;
                if (!mid_is_ok(save_bundle(a)))
                    LOG_WARN("agent: cannot persist the bundle: %s", mid_errmsg());
            }
        }
    }
    /* Then taint: the new bundle is out, re-issue what chains to a tainted
     * authority (one batch, in the cache's coalescing window). */
    size_t tainted = 0;
    if (!mid_is_ok(agent_cache_set_tainted(a->cache, m->tainted_authority_ids,
                                           m->n_tainted_authority_ids, &tainted)))
        LOG_WARN("agent: ignoring the tainted authorities from the server: %s", mid_errmsg());
    else if (tainted > 0)
        LOG_WARN("agent: %zu SVIDs chain to a tainted authority; re-issuing them now", tainted);
    if (!mid_is_ok(agent_cache_set_entries(a->cache, m->entries, m->n_entries, m->entries_revision)))
        LOG_WARN("agent: ignoring the entries from the server: %s", mid_errmsg());
    /* Signing was held since the stream (re)opened: the state is applied. */
    agent_cache_hold_issuing(a->cache, false);
    send_ack(a);
}

static void sync_done(rpc_stream *s, const rpc_status *st, void *arg)
{
    agent_ref *ref = arg;
    agent *a = ref_put(ref);
    if (!a) return;
    if (a->sync == s) a->sync = NULL;
    a->synced = false;
    if (a->ack_timer) rpc_timer_cancel(a->loop, a->ack_timer);
    a->ack_timer = NULL;
    if (a->state != ST_RUNNING) return;
    /* No signing until the next stream's first state is applied: a server
     * that rotated meanwhile may sign with an authority whose bundle we
     * have not seen (the cache would refuse such SVIDs anyway). */
    agent_cache_hold_issuing(a->cache, true);
    a->st.reconnects++;
    if (a->renewing) {
        /* the channel was rebuilt for a new identity: reconnect at once */
        a->renewing = false;
        arm_retry(a, 0);
        return;
    }
    reconnect_afresh(a, st->code);
    a->sync_fails++;
    int64_t d = backoff(a, a->sync_fails);
    if (st->code == RPC_PERMISSION_DENIED || st->code == RPC_UNAUTHENTICATED)
        LOG_ERROR("agent: the server refused the Sync stream (%d: %s); serving cached SVIDs, "
                  "retrying in %lld ms",
                  (int)st->code, st->message ? st->message : "", (long long)d);
    else
        LOG_WARN("agent: Sync stream ended (%d: %s); serving cached SVIDs, reconnecting in %lld ms",
                 (int)st->code, st->message ? st->message : "", (long long)d);
    arm_retry(a, d);
}

static const rpc_stream_handler sync_handler = {.on_message = sync_message, .on_done = sync_done};

static void sync_open(agent *a)
{
    if (a->sync || a->state != ST_RUNNING) return;
    mid_result r = node_client_set_credentials(a->nc, a->trust_pem, a->svid_pem, a->key_pem);
    Meshid__Agent__V1__AgentSyncRequest first = MESHID__AGENT__V1__AGENT_SYNC_REQUEST__INIT;
    first.bundle_sequence_ack = agent_cache_bundle_sequence(a->cache);
    first.entries_revision_ack = agent_cache_entries_revision(a->cache);
    first.sds_bundle_sequence_ack = local_bundle_ack(a, first.bundle_sequence_ack);
    agent_ref *ref = ref_get(a);
    if (mid_is_ok(r)) r = node_client_sync_open(a->nc, &first, &sync_handler, ref, &a->sync);
    if (!mid_is_ok(r)) {
        ref_put(ref);
        a->sync = NULL;
        a->sync_fails++;
        LOG_WARN("agent: cannot open Sync: %s", mid_errmsg());
        arm_retry(a, backoff(a, a->sync_fails));
        return;
    }
    a->ack_sent = false;
    a->st.syncs++;
}

/* ---- renewal -------------------------------------------------------------------- */

typedef struct {
    agent_ref *ref;
    EVP_PKEY *key;
} renew_call;

static void renew_fn(rpc_loop *loop, void *arg);

static void arm_renew(agent *a, int64_t delay_ms)
{
    if (a->renew_timer) rpc_timer_cancel(a->loop, a->renew_timer);
    a->renew_timer = NULL;
    if (a->state == ST_STOPPED) return;
    if (!mid_is_ok(rpc_timer_add(a->loop, delay_ms, renew_fn, a, &a->renew_timer))) {
        LOG_ERROR("agent: cannot arm the renewal timer: %s", mid_errmsg());
        a->renew_timer = NULL;
    }
}

static void schedule_renew(agent *a)
{
    int64_t now = time_now_ms();
    int64_t life = a->svid_not_after * 1000 - now;
    if (life < 0) life = 0;
    double f = RENEW_FRACTION + RENEW_JITTER * (2.0 * rand_unit() - 1.0);
    int64_t d = (int64_t)((double)life * f);
    char when[TIME_RFC3339_LEN];
    time_format_rfc3339((now + d) / 1000, when);
    LOG_INFO("agent: SVID %s renews at %s", a->spiffe_id, when);
    arm_renew(a, d);
}

/* Adopts a new chain for `key` (from AttestAgent or RenewAgent). */
static mid_result adopt_identity(agent *a, EVP_PKEY *key, const ProtobufCBinaryData *chain,
                                 size_t n_chain, const ProtobufCBinaryData *bundle, size_t n_bundle)
{
    char *svid = NULL, *trust = NULL, *kpem = NULL;
    size_t klen = 0;
    char id[SPIFFE_ID_MAX + 1];
    int64_t nb = 0, na = 0;
    STACK_OF(X509) *sk = NULL;
    mid_result r = MID_OK_RESULT;
    MID_TRY(r, node_der_to_pem(chain, n_chain, &svid));
    if (n_bundle > 0) MID_TRY(r, node_der_to_pem(bundle, n_bundle, &trust));
    MID_TRY(r, ca_x509_stack_from_pem(svid, strlen(svid), "agent SVID", &sk));
    MID_TRY(r, ca_key_matches_cert(key, sk_X509_value(sk, 0), "agent SVID"));
    MID_TRY(r, node_pem_spiffe_id(svid, id, sizeof id));
    MID_CHECK(r, a->spiffe_id[0] == '\0' || strcmp(id, a->spiffe_id) == 0, MID_E_INVALID,
              "server renewed '%s' as '%s'", a->spiffe_id, id);
    MID_TRY(r, node_pem_validity(svid, &nb, &na));
    MID_TRY(r, ca_key_to_pem(key, &kpem, &klen));

    free(a->svid_pem);
    free_secret(a->key_pem, a->key_len);
    a->svid_pem = svid;
    a->key_pem = kpem;
    a->key_len = klen;
    svid = NULL;
    kpem = NULL;
    if (trust) {
        free(a->trust_pem);
        a->trust_pem = trust;
        trust = NULL;
    }
    snprintf(a->spiffe_id, sizeof a->spiffe_id, "%s", id);
    a->svid_not_after = na;
    MID_TRY(r, save_identity(a));
    MID_TRY(r, save_bundle(a));
out:
    sk_X509_pop_free(sk, X509_free);
    free(svid);
    free(trust);
    if (kpem) ca_key_pem_free(kpem, klen);
    return r;
}

int64_t agent_renew_retry_ms(int64_t backoff_ms, int64_t left_ms, int64_t floor_ms)
{
    int64_t d = backoff_ms;
    if (left_ms > 0 && d > left_ms / 2) d = left_ms / 2;
    return d < floor_ms ? floor_ms : d;
}

static void renew_done(const rpc_status *st, const ProtobufCMessage *resp, void *arg)
{
    renew_call *rc = arg;
    agent *a = ref_put(rc->ref);
    if (!a || a->state != ST_RUNNING) goto out;
    if (st->code != RPC_OK) {
        reconnect_afresh(a, st->code);
        a->renew_fails++;
        int64_t left = a->svid_not_after * 1000 - time_now_ms();
        int64_t floor_ms = a->backoff_min < AGENT_RENEW_RETRY_FLOOR_MS
                               ? a->backoff_min
                               : AGENT_RENEW_RETRY_FLOOR_MS;
        int64_t d = agent_renew_retry_ms(backoff(a, a->renew_fails), left, floor_ms);
        LOG_WARN("agent: RenewAgent failed (%d: %s); retry in %lld ms", (int)st->code,
                 st->message ? st->message : "", (long long)d);
        arm_renew(a, d);
        goto out;
    }
    const Meshid__Agent__V1__RenewAgentResponse *m =
        (const Meshid__Agent__V1__RenewAgentResponse *)resp;
    if (!mid_is_ok(adopt_identity(a, rc->key, m->svid_chain, m->n_svid_chain, m->bundle,
                                  m->n_bundle))) {
        a->renew_fails++;
        LOG_ERROR("agent: cannot use the renewed SVID: %s", mid_errmsg());
        arm_renew(a, backoff(a, a->renew_fails));
        goto out;
    }
    a->renew_fails = 0;
    a->st.renewals++;
    LOG_INFO("agent: renewed SVID %s", a->spiffe_id);
    schedule_renew(a);
    /* New client certificate: rebuild the channel and the Sync stream. */
    if (a->sync) {
        a->renewing = true;
        rpc_stream_cancel(a->sync);
    }
    if (!mid_is_ok(node_client_set_credentials(a->nc, a->trust_pem, a->svid_pem, a->key_pem)))
        LOG_WARN("agent: cannot set new credentials: %s", mid_errmsg());
out:
    EVP_PKEY_free(rc->key);
    free(rc);
}

static void renew_fn(rpc_loop *loop, void *arg)
{
    (void)loop;
    agent *a = arg;
    a->renew_timer = NULL;
    if (a->state != ST_RUNNING) return;
    renew_call *rc = calloc(1, sizeof *rc);
    uint8_t *csr = NULL;
    size_t csr_len = 0;
    mid_result r = MID_OK_RESULT;
    MID_CHECK_MEM(r, rc);
    MID_TRY(r, ca_key_generate(CA_KEY_EC_P256, &rc->key));
    MID_TRY(r, node_csr_der(rc->key, &csr, &csr_len));
    Meshid__Agent__V1__RenewAgentRequest req = MESHID__AGENT__V1__RENEW_AGENT_REQUEST__INIT;
    req.csr.data = csr;
    req.csr.len = csr_len;
    MID_TRY(r, node_client_set_credentials(a->nc, a->trust_pem, a->svid_pem, a->key_pem));
    rc->ref = ref_get(a);
    r = node_client_renew(a->nc, &req, renew_done, rc);
    if (!mid_is_ok(r)) {
        ref_put(rc->ref);
        goto out;
    }
    rc = NULL;
out:
    free(csr);
    if (rc) {
        EVP_PKEY_free(rc->key);
        free(rc);
    }
    if (!mid_is_ok(r)) {
        a->renew_fails++;
        LOG_WARN("agent: cannot start RenewAgent: %s", mid_errmsg());
        arm_renew(a, backoff(a, a->renew_fails));
    }
}

/* ---- bootstrap -------------------------------------------------------------- */

static mid_result enter_running(agent *a)
{
    a->state = ST_RUNNING;
    MID_GUARD(node_client_set_credentials(a->nc, a->trust_pem, a->svid_pem, a->key_pem));
    schedule_renew(a);
    sync_open(a);
    return mid_ok();
}

static void attest_start(agent *a);

static void attest_done(const rpc_status *st, const ProtobufCMessage *resp, void *arg)
{
    renew_call *rc = arg;
    agent *a = ref_put(rc->ref);
    if (!a || a->state != ST_BOOTSTRAP) goto out;
    if (st->code == RPC_UNAVAILABLE || st->code == RPC_DEADLINE_EXCEEDED ||
        st->code == RPC_CANCELLED) {
        reconnect_afresh(a, st->code);
        a->attest_fails++;
        int64_t d = backoff(a, a->attest_fails);
        LOG_WARN("agent: server unreachable for AttestAgent (%d: %s); retry in %lld ms",
                 (int)st->code, st->message ? st->message : "", (long long)d);
        arm_retry(a, d);
        goto out;
    }
    if (st->code != RPC_OK) {
        fatal(a, "node attestation refused (%d: %s); create a new join token",
              (int)st->code, st->message ? st->message : "");
        goto out;
    }
    const Meshid__Agent__V1__AttestAgentResponse *m =
        (const Meshid__Agent__V1__AttestAgentResponse *)resp;
    if (!mid_is_ok(adopt_identity(a, rc->key, m->svid_chain, m->n_svid_chain, m->bundle,
                                  m->n_bundle))) {
        fatal(a, "cannot use the SVID from AttestAgent: %s", mid_errmsg());
        goto out;
    }
    if (m->agent_spiffe_id && *m->agent_spiffe_id && strcmp(m->agent_spiffe_id, a->spiffe_id) != 0)
        LOG_WARN("agent: server reported %s but the SVID says %s", m->agent_spiffe_id, a->spiffe_id);
    a->st.attests++;
    LOG_INFO("agent: attested as %s", a->spiffe_id);
    /* a used token is worthless; forget it */
    if (a->join_token) {
        OPENSSL_cleanse(a->join_token, strlen(a->join_token));
        free(a->join_token);
        a->join_token = NULL;
    }
    if (!mid_is_ok(enter_running(a))) fatal(a, "cannot start: %s", mid_errmsg());
out:
    EVP_PKEY_free(rc->key);
    free(rc);
}

static void attest_start(agent *a)
{
    renew_call *rc = calloc(1, sizeof *rc);
    uint8_t *csr = NULL;
    size_t csr_len = 0;
    mid_result r = MID_OK_RESULT;
    MID_CHECK_MEM(r, rc);
    MID_TRY(r, ca_key_generate(CA_KEY_EC_P256, &rc->key));
    MID_TRY(r, node_csr_der(rc->key, &csr, &csr_len));
    Meshid__Agent__V1__AttestAgentRequest req = MESHID__AGENT__V1__ATTEST_AGENT_REQUEST__INIT;
    req.join_token = a->join_token;
    req.csr.data = csr;
    req.csr.len = csr_len;
    req.hostname = a->hostname;
    MID_TRY(r, node_client_set_credentials(a->nc, a->trust_pem, NULL, NULL));
    rc->ref = ref_get(a);
    r = node_client_attest(a->nc, &req, attest_done, rc);
    if (!mid_is_ok(r)) {
        ref_put(rc->ref);
        goto out;
    }
    rc = NULL;
out:
    free(csr);
    if (rc) {
        EVP_PKEY_free(rc->key);
        free(rc);
    }
    if (!mid_is_ok(r)) {
        a->attest_fails++;
        LOG_WARN("agent: cannot start AttestAgent: %s", mid_errmsg());
        arm_retry(a, backoff(a, a->attest_fails));
    }
}

static void retry_fn(rpc_loop *loop, void *arg)
{
    (void)loop;
    agent *a = arg;
    a->retry_timer = NULL;
    if (a->state == ST_BOOTSTRAP) attest_start(a);
    else if (a->state == ST_RUNNING) sync_open(a);
}

/* ---- lifecycle ---------------------------------------------------------------- */

static char *dup_opt(const char *s, bool *oom)
{
    if (!s) return NULL;
    char *d = strdup(s);
    if (!d) *oom = true;
    return d;
}

mid_result agent_start(const agent_opts *o, rpc_loop *loop, agent **out)
{
    *out = NULL;
    MID_ENSURE(o && loop, MID_E_INVALID, "agent: options and loop required");
    MID_ENSURE(o->server_addr && *o->server_addr, MID_E_USAGE, "--server HOST:PORT is required");
    MID_ENSURE(o->data_dir && *o->data_dir, MID_E_USAGE, "a data directory is required");
    agent *a = calloc(1, sizeof *a);
    MID_ENSURE_MEM(a);
    mid_result r = MID_OK_RESULT;
    bool oom = false;
    a->loop = loop;
    a->state = ST_BOOTSTRAP;
    a->ref = calloc(1, sizeof *a->ref);
    if (a->ref) {
        a->ref->a = a;
        a->ref->refs = 1;
    }
    a->server_addr = dup_opt(o->server_addr, &oom);
    a->server_name = dup_opt(o->server_name, &oom);
    a->join_token = dup_opt(o->join_token, &oom);
    a->socket_path = dup_opt(o->socket_path, &oom);
    a->on_fatal = o->on_fatal;
    a->on_fatal_arg = o->on_fatal_arg;
    a->backoff_min = o->backoff_min_ms > 0 ? o->backoff_min_ms : AGENT_BACKOFF_MIN_MS;
    a->backoff_max = o->backoff_max_ms > 0 ? o->backoff_max_ms : AGENT_BACKOFF_MAX_MS;
    if (o->hostname) {
        a->hostname = dup_opt(o->hostname, &oom);
    } else {
        char h[256] = "";
        if (gethostname(h, sizeof h - 1) != 0) h[0] = '\0';
        a->hostname = dup_opt(h, &oom);
    }
    MID_CHECK(r, !oom && a->ref, MID_E_NOMEM, "out of memory");
    MID_TRY(r, fs_join(a->dir, sizeof a->dir, o->data_dir, AGENT_DIR));
    MID_TRY(r, fs_mkdir_p(a->dir, 0700));

    /* Trust: the persisted bundle (newest the server sent) wins over the
     * bootstrap bundle, which may have been rotated away since. */
    {
        char p[4096];
        size_t len = 0;
        MID_TRY(r, path_in(a, F_BUNDLE, p, sizeof p));
        r = fs_read_file(p, NODE_PEM_MAX, &a->trust_pem, &len);
        if (r.err == MID_E_NOT_FOUND) {
            MID_CHECK(r, o->trust_bundle_pem && *o->trust_bundle_pem, MID_E_USAGE,
                      "--trust-bundle FILE is required for the first start");
            a->trust_pem = strdup(o->trust_bundle_pem);
            MID_CHECK_MEM(r, a->trust_pem);
            r = mid_ok();
        }
        MID_TRY(r, r);
    }
    {
        STACK_OF(X509) *sk = NULL;
        MID_TRY(r, ca_x509_stack_from_pem(a->trust_pem, strlen(a->trust_pem), "trust bundle", &sk));
        if (o->trust_domain) {
            r = spiffe_trust_domain_parse(o->trust_domain, a->td);
        } else {
            r = ca_x509_signing_trust_domain(sk_X509_value(sk, 0), a->td);
            if (!mid_is_ok(r))
                r = mid_fail(MID_E_INVALID, __FILE__, __LINE__,
                             "cannot tell the trust domain from the trust bundle (%s); "
                             "give it explicitly",
                             mid_errmsg());
        }
        sk_X509_pop_free(sk, X509_free);
        if (!mid_is_ok(r)) goto out;
    }

    r = load_identity(a);
    if (r.err == MID_E_NOT_FOUND) {
        MID_CHECK(r, a->join_token && *a->join_token, MID_E_USAGE,
                  "no agent identity in %s: --join-token is required", a->dir);
        r = mid_ok();
    } else if (mid_is_ok(r) && a->svid_not_after <= time_now()) {
        char na[TIME_RFC3339_LEN];
        time_format_rfc3339(a->svid_not_after, na);
        MID_CHECK(r, a->join_token && *a->join_token, MID_E_STATE,
                  "the agent SVID in %s expired at %s: attest again with a new --join-token",
                  a->dir, na);
        LOG_WARN("agent: persisted SVID expired at %s; attesting with the join token", na);
        free(a->svid_pem);
        free_secret(a->key_pem, a->key_len);
        a->svid_pem = a->key_pem = NULL;
        a->spiffe_id[0] = '\0';
    }
    MID_TRY(r, r);
    {
        char server_id[SPIFFE_ID_MAX + 1];
        snprintf(server_id, sizeof server_id, "spiffe://%s/meshid/server", a->td);
        node_client_cfg cfg = {.server_addr = a->server_addr,
                               .server_name = a->server_name,
                               .server_spiffe_id = server_id};
        MID_TRY(r, node_client_new(loop, &cfg, &a->nc));
    }
    {
        agent_cache_opts co = {.loop = loop,
                               .trust_domain = a->td,
                               .signer = &signer_ops,
                               .signer_ctx = a,
                               .on_change = notify_services,
                               .on_change_arg = a,
                               .rotate_fraction = o->rotate_fraction,
                               .rotate_jitter = o->rotate_jitter,
                               .report_interval_ms = o->report_interval_ms};
        MID_TRY(r, agent_cache_new(&co, &a->cache));
        agent_cache_hold_issuing(a->cache, true); /* until the first Sync state */
    }
    MID_TRY(r, start_services(a));

    if (a->svid_pem) {
        LOG_INFO("agent: resuming as %s", a->spiffe_id);
        MID_TRY(r, enter_running(a));
    } else {
        attest_start(a);
    }
    *out = a;
    a = NULL;
out:
    /* start_services is the last step that can fail, so the socket
     * server never started and no handler can run: freeing is safe. */
    agent_free(a);
    return r;
}

void agent_stop(agent *a)
{
    if (!a || a->state == ST_STOPPED) return;
    a->state = ST_STOPPED;
    if (a->ref) a->ref->a = NULL;
    if (a->retry_timer) rpc_timer_cancel(a->loop, a->retry_timer);
    if (a->renew_timer) rpc_timer_cancel(a->loop, a->renew_timer);
    if (a->ack_timer) rpc_timer_cancel(a->loop, a->ack_timer);
    a->retry_timer = a->renew_timer = a->ack_timer = NULL;
    if (a->sync) rpc_stream_cancel(a->sync);
    a->sync = NULL;
    agent_cache_stop(a->cache);
    node_client_free(a->nc);
    a->nc = NULL;
}

void agent_free(agent *a)
{
    if (!a) return;
    agent_stop(a);
    sds_service_free(a->sds);
    workload_api_free(a->wl);
    agent_cache_free(a->cache);
    if (a->ref) ref_put(a->ref);
    free(a->server_addr);
    free(a->server_name);
    if (a->join_token) {
        OPENSSL_cleanse(a->join_token, strlen(a->join_token));
        free(a->join_token);
    }
    free(a->hostname);
    free(a->socket_path);
    free(a->trust_pem);
    free(a->svid_pem);
    free_secret(a->key_pem, a->key_len);
    free(a);
}

const char *agent_spiffe_id(const agent *a) { return a->spiffe_id; }
agent_cache *agent_get_cache(agent *a) { return a->cache; }
sds_source agent_source(agent *a) { return agent_cache_source(a->cache); }
bool agent_synced(const agent *a) { return a->synced; }
void agent_get_stats(const agent *a, agent_stats *out) { *out = a->st; }
