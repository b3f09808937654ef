/* Rotation spread: how long a CA rotation takes to reach every SDS stream.
 *
 * One process, one rpc loop on the main thread carrying a real server, a real
 * agent (as `meshid dev` runs them) and N StreamSecrets (SotW) clients on the
 * agent's Unix socket, each subscribed to ["default", "ROOTCA"] and ACKing
 * every response the way Envoy does. A driver thread with its own store
 * handle (as the CLI would) rotates the CA:
 *
 *   1. ca_prepare with a new root. In meshid the trust bundle changes at
 *      prepare (the new root is published before anything is signed by it),
 *      so this is the step that has to spread: measured until the last of the
 *      N streams has received and ACKed a ROOTCA with 2 roots, and until the
 *      agent's sds_bundle_sequence_ack (what the server's activation gate
 *      waits for) reached the new bundle's sequence.
 *   2. ca_activate the prepared intermediate (and its root), then ca_taint
 *      the old root, which makes agents re-issue at once: measured until the
 *      last stream holds a `default` certificate signed by the new
 *      intermediate (the leaf's authority key id is the intermediate's id).
 *
 * Environment:
 *   BENCH_STREAMS             SDS streams (default 1000)
 *   BENCH_STREAMS_PER_CHANNEL streams multiplexed on one client connection
 *                             (default 100; the agent accepts at most 64
 *                             connections per uid, so at most 60 channels)
 *   BENCH_SYNC_POLL_MS        the server's Sync poll interval (default: the
 *                             server's own, 1000 ms): how soon it notices
 *                             a change another store handle wrote
 *
 * Exit status: 0 whatever the figures (timing is never asserted); 1 on a
 * functional failure: setup or a CA call failed, a stream ended or was
 * refused, or the streams did not converge within BENCH_CONVERGE_S (120 s).
 * See docs/bench.md, "Rotation spread".
 */
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "ca/ca.h"
#include "ca/rotation.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "identity/join_token.h"
#include "lib/log.h"
#include "lib/result.h"
#include "lib/rpc.h"
#include "sds/agent.h"
#include "sds/agent_cache.h"
#include "sds/sds_service.h"
#include "sds/secrets.h"
#include "sds/server.h"
#include "storage/store.h"

#define BENCH_TD "bench.test"
#define BENCH_AGENT_ID "spiffe://" BENCH_TD "/meshid/agent/bench"
#define BENCH_WORKLOAD_ID "spiffe://" BENCH_TD "/bench/workload"
#define BENCH_MAX_STREAMS 100000
#define BENCH_MAX_CHANNELS 60   /* the agent's per-uid cap is 64 connections */
#ifndef BENCH_CONVERGE_S
#define BENCH_CONVERGE_S 120 /* a wait longer than this is a functional failure */
#endif
#define SAMPLE_MS 2             /* how often the loop samples the agent's acks */
#define PEM_CERT_BEGIN "-----BEGIN CERTIFICATE-----"

typedef Envoy__Service__Discovery__V3__DiscoveryRequest disc_req;
typedef Envoy__Service__Discovery__V3__DiscoveryResponse disc_resp;

typedef struct bench bench;

/* One client stream. Loop-thread fields are read by other threads only after
 * the loop has stopped; the *_ns fields are written once by the loop and
 * read by the driver. */
typedef struct {
    bench *b;
    int idx;
    rpc_stream *s;
    int roots;                          /* certificates in the last ROOTCA */
    char issuer[CA_AUTHORITY_ID_MAX];   /* key id of the last default leaf's issuer */
    bool ready;                         /* initial state held */
    uint64_t responses;
    uint64_t default_updates;           /* `default` secrets received */
    uint64_t old_signer_phase2;         /* defaults after activate not from the new signer */
    _Atomic int64_t roots2_ns;          /* ACKed a ROOTCA with 2 roots (0: not yet) */
    _Atomic int64_t newcert_ns;         /* holds a default from the new intermediate */
} bstream;

struct bench {
    int n;
    rpc_loop *loop;
    server *srv;
    agent *ag;
    rpc_timer *sampler;
    rpc_channel **ch;
    int nch;
    bstream *st;
    /* loop -> driver */
    atomic_int n_ready, n_roots2, n_newcert, n_ended;
    atomic_int fatal_claim, fatal;       /* fatal is set once fatal_msg is written */
    atomic_bool stopping;
    _Atomic uint64_t cur_seq;            /* agent cache's bundle sequence */
    _Atomic uint64_t new_seq;            /* the first sequence after seq0 */
    _Atomic int64_t agent_bundle_ns;     /* the agent applied the new bundle */
    _Atomic int64_t agent_sds_ack_ns;    /* its sds_bundle_sequence_ack reached it */
    _Atomic uint64_t last_sds_ack;
    _Atomic uint64_t cur_taint_reissues, cur_signed_ok; /* agent cache counters */
    _Atomic int64_t agent_taint_ns;      /* the agent marked SVIDs for re-issue */
    _Atomic int64_t agent_signed_ns;     /* ... and received the re-issued SVID */
    /* driver -> loop */
    atomic_int phase;                    /* 0 initial, 1 from prepare, 2 from activate */
    _Atomic uint64_t seq0;               /* bundle sequence before prepare */
    _Atomic uint64_t base_taint_reissues, base_signed_ok; /* before activate */
    char target_issuer[CA_AUTHORITY_ID_MAX]; /* written before phase 2 is published */
    char fatal_msg[512];
    int64_t client_ns[3];                /* loop thread: time spent in on_message per phase */
    /* loop thread: the last chain parsed and its issuer. Every stream gets
     * the same SVID, and one X.509 parse (OpenSSL 3.0's PEM decoder: ~100 us)
     * per stream would make the bench's clients, which share the agent's
     * thread, dominate the fan-out figure; real clients parse in their own
     * processes. */
    unsigned char *chain_cache;
    size_t chain_cache_len;
    char chain_issuer[CA_AUTHORITY_ID_MAX];
    uint64_t x509_parses;
};

/* ---- small helpers ------------------------------------------------------- */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double ms(int64_t ns) { return (double)ns / 1e6; }

static long env_long(const char *name, long def, long max)
{
    const char *s = getenv(name);
    if (s == NULL || *s == '\0') return def;
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v <= 0 || v > max) return -1;
    return v;
}

static void report_err(const char *what, mid_result r)
{
    fprintf(stderr, "bench_rotation: %s: %s: %s (%s:%d)\n", what, mid_errname(r.err), mid_errmsg(),
            mid_errfile(), mid_errline());
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0) fprintf(stderr, "bench_rotation: cannot remove %s: %s\n", path, strerror(errno));
    return 0;
}

static void rm_tree(const char *dir)
{
    if (nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        fprintf(stderr, "bench_rotation: cannot walk %s: %s\n", dir, strerror(errno));
}

static void set_fatal(bench *b, const char *msg)
{
    int expected = 0;
    if (atomic_compare_exchange_strong(&b->fatal_claim, &expected, 1)) {
        snprintf(b->fatal_msg, sizeof b->fatal_msg, "%s", msg);
        atomic_store_explicit(&b->fatal, 1, memory_order_release);
    }
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted array. */
static int64_t pct(const int64_t *v, size_t n, double p)
{
    size_t k = (size_t)((p / 100.0) * (double)n + 0.999999);
    if (k < 1) k = 1;
    if (k > n) k = n;
    return v[k - 1];
}

/* ---- the agent sampler (loop thread) ------------------------------------------------ */

static void sample_agent(bench *b)
{
    if (b->ag == NULL) return;
    uint64_t seq = agent_cache_bundle_sequence(agent_get_cache(b->ag));
    agent_stats as;
    agent_get_stats(b->ag, &as);
    agent_cache_stats cs;
    agent_cache_get_stats(agent_get_cache(b->ag), &cs);
    atomic_store(&b->cur_seq, seq);
    atomic_store(&b->last_sds_ack, as.last_sds_ack);
    atomic_store(&b->cur_taint_reissues, cs.taint_reissues);
    atomic_store(&b->cur_signed_ok, cs.signed_ok);
    int phase = atomic_load_explicit(&b->phase, memory_order_acquire);
    if (phase >= 2) {
        if (atomic_load(&b->agent_taint_ns) == 0 && cs.taint_reissues > atomic_load(&b->base_taint_reissues))
            atomic_store(&b->agent_taint_ns, now_ns());
        if (atomic_load(&b->agent_taint_ns) != 0 && atomic_load(&b->agent_signed_ns) == 0 &&
            cs.signed_ok > atomic_load(&b->base_signed_ok))
            atomic_store(&b->agent_signed_ns, now_ns());
    }
    if (phase < 1) return;
    uint64_t s0 = atomic_load(&b->seq0);
    if (atomic_load(&b->new_seq) == 0 && seq != s0) {
        atomic_store(&b->new_seq, seq);
        atomic_store(&b->agent_bundle_ns, now_ns());
    }
    uint64_t ns = atomic_load(&b->new_seq);
    if (ns != 0 && atomic_load(&b->agent_sds_ack_ns) == 0 && as.last_sds_ack >= ns)
        atomic_store(&b->agent_sds_ack_ns, now_ns());
}

static void sampler_tick(rpc_loop *loop, void *arg)
{
    bench *b = arg;
    b->sampler = NULL;
    if (atomic_load(&b->stopping)) return;
    sample_agent(b);
    if (!mid_is_ok(rpc_timer_add(loop, SAMPLE_MS, sampler_tick, b, &b->sampler)))
        set_fatal(b, "cannot re-arm the sampler timer");
}

/* ---- the SDS clients (loop thread) -------------------------------------------------- */

static const char *const sub_names[] = {"default", "ROOTCA"};

static mid_result send_req(bstream *s, const char *version, const char *nonce)
{
    disc_req r = ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
    r.resource_names = (char **)sub_names;
    r.n_resource_names = 2;
    r.type_url = (char *)SDS_SECRET_TYPE_URL;
    if (version) r.version_info = (char *)version;
    if (nonce) r.response_nonce = (char *)nonce;
    return rpc_stream_send(s->s, &r.base);
}

static int count_pem_certs(const ProtobufCBinaryData *d)
{
    int n = 0;
    const unsigned char *p = d->data, *end = d->data + d->len;
    size_t kl = strlen(PEM_CERT_BEGIN);
    while (p != NULL && (size_t)(end - p) >= kl) {
        const unsigned char *hit = memmem(p, (size_t)(end - p), PEM_CERT_BEGIN, kl);
        if (hit == NULL) break;
        n++;
        p = hit + kl;
    }
    return n;
}

/* The authority key id of the first certificate of a PEM chain, as lowercase
 * hex (= the issuing authority's id); false when it cannot be read. */
static bool leaf_issuer(const ProtobufCBinaryData *d, char out[CA_AUTHORITY_ID_MAX])
{
    if (d->len == 0 || d->len > INT_MAX) return false;
    BIO *bio = BIO_new_mem_buf(d->data, (int)d->len);
    X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    bool ok = false;
    const ASN1_OCTET_STRING *akid = x ? X509_get0_authority_key_id(x) : NULL;
    if (akid != NULL && (size_t)ASN1_STRING_length(akid) * 2 < CA_AUTHORITY_ID_MAX) {
        const unsigned char *k = ASN1_STRING_get0_data(akid);
        for (int i = 0; i < ASN1_STRING_length(akid); i++) snprintf(out + 2 * i, 3, "%02x", k[i]);
        ok = true;
    }
    X509_free(x);
    BIO_free(bio);
    return ok;
}

static void on_message(rpc_stream *rs, const ProtobufCMessage *m, void *arg)
{
    (void)rs;
    bstream *s = arg;
    bench *b = s->b;
    const disc_resp *r = (const disc_resp *)m;
    int64_t t_in = now_ns();
    bool got_default = false;
    char issuer[CA_AUTHORITY_ID_MAX] = "";
    s->responses++;
    for (size_t i = 0; i < r->n_resources; i++) {
        const Google__Protobuf__Any *a = r->resources[i];
        if (a == NULL || strcmp(a->type_url, SDS_SECRET_TYPE_URL) != 0) {
            set_fatal(b, "response carries a resource of an unexpected type");
            continue;
        }
        sds_secret_msg *sec =
            envoy__extensions__transport_sockets__tls__v3__secret__unpack(NULL, a->value.len, a->value.data);
        if (sec == NULL) {
            set_fatal(b, "cannot decode a Secret");
            continue;
        }
        if (strcmp(sec->name, "ROOTCA") == 0 &&
            sec->type_case == ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_VALIDATION_CONTEXT &&
            sec->validation_context->trusted_ca != NULL) {
            s->roots = count_pem_certs(&sec->validation_context->trusted_ca->inline_bytes);
        } else if (strcmp(sec->name, "default") == 0 &&
                   sec->type_case ==
                       ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE &&
                   sec->tls_certificate->certificate_chain != NULL) {
            const ProtobufCBinaryData *chain = &sec->tls_certificate->certificate_chain->inline_bytes;
            if (b->chain_cache != NULL && chain->len == b->chain_cache_len &&
                memcmp(chain->data, b->chain_cache, chain->len) == 0) {
                snprintf(issuer, sizeof issuer, "%s", b->chain_issuer);
                got_default = true;
            } else if (leaf_issuer(chain, issuer)) {
                got_default = true;
                b->x509_parses++;
                unsigned char *copy = malloc(chain->len ? chain->len : 1);
                if (copy != NULL) {
                    memcpy(copy, chain->data, chain->len);
                    free(b->chain_cache);
                    b->chain_cache = copy;
                    b->chain_cache_len = chain->len;
                    snprintf(b->chain_issuer, sizeof b->chain_issuer, "%s", issuer);
                }
            } else {
                set_fatal(b, "default certificate without a readable authority key id");
            }
        }
        envoy__extensions__transport_sockets__tls__v3__secret__free_unpacked(sec, NULL);
    }
    /* ACK at once, as Envoy does once it applied the secrets */
    mid_result sr = send_req(s, r->version_info, r->nonce);
    if (!mid_is_ok(sr)) {
        char msg[256];
        snprintf(msg, sizeof msg, "stream %d: cannot ACK: %s", s->idx, mid_errmsg());
        set_fatal(b, msg);
        return;
    }
    int64_t t = now_ns();
    int phase = atomic_load_explicit(&b->phase, memory_order_acquire);
    if (got_default) {
        s->default_updates++;
        snprintf(s->issuer, sizeof s->issuer, "%s", issuer);
        if (phase >= 2 && strcmp(issuer, b->target_issuer) != 0) s->old_signer_phase2++;
    }
    if (!s->ready && s->roots >= 1 && s->issuer[0] != '\0') {
        s->ready = true;
        atomic_fetch_add(&b->n_ready, 1);
    }
    if (phase >= 1 && s->roots == 2 && atomic_load(&s->roots2_ns) == 0) {
        atomic_store(&s->roots2_ns, t);
        atomic_fetch_add(&b->n_roots2, 1);
    }
    if (phase >= 2 && atomic_load(&s->newcert_ns) == 0 && strcmp(s->issuer, b->target_issuer) == 0) {
        atomic_store(&s->newcert_ns, t);
        atomic_fetch_add(&b->n_newcert, 1);
    }
    if (phase >= 1) sample_agent(b);
    b->client_ns[phase] += now_ns() - t_in;
}

static void on_done(rpc_stream *rs, const rpc_status *st, void *arg)
{
    (void)rs;
    bstream *s = arg;
    s->s = NULL;
    atomic_fetch_add(&s->b->n_ended, 1);
    if (atomic_load(&s->b->stopping)) return;
    char msg[512];
    snprintf(msg, sizeof msg, "stream %d ended: code %d %s", s->idx, (int)st->code,
             st->message ? st->message : "");
    set_fatal(s->b, msg);
}

static const rpc_stream_handler stream_h = {on_message, on_done};

static void on_agent_fatal(void *arg, const char *msg)
{
    char m[512];
    snprintf(m, sizeof m, "agent: %s", msg);
    set_fatal(arg, m);
}

/* Opens the N streams once the agent has its first Sync state: before that it
 * knows no entry and would refuse them (PERMISSION_DENIED). */
static void open_when_synced(rpc_loop *loop, void *arg)
{
    bench *b = arg;
    if (atomic_load(&b->stopping)) return;
    if (!agent_synced(b->ag)) {
        if (!mid_is_ok(rpc_timer_add(loop, 10, open_when_synced, b, NULL)))
            set_fatal(b, "cannot re-arm the start timer");
        return;
    }
    rpc_call_opts copts = {.wait_for_ready = true};
    for (int i = 0; i < b->n; i++) {
        bstream *s = &b->st[i];
        s->b = b;
        s->idx = i;
        disc_req first = ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
        first.resource_names = (char **)sub_names;
        first.n_resource_names = 2;
        first.type_url = (char *)SDS_SECRET_TYPE_URL;
        mid_result r = rpc_stream_open(b->ch[i % b->nch], SDS_M_STREAM, RPC_BIDI, &first.base,
                                       &envoy__service__discovery__v3__discovery_response__descriptor,
                                       &copts, &stream_h, s, &s->s);
        if (!mid_is_ok(r)) {
            char msg[256];
            snprintf(msg, sizeof msg, "rpc_stream_open %d: %s", i, mid_errmsg());
            set_fatal(b, msg);
            return;
        }
    }
}

/* Posted by the driver when it is done: stop everything on the loop. */
static void shutdown_fn(rpc_loop *loop, void *arg)
{
    bench *b = arg;
    atomic_store(&b->stopping, true);
    if (b->sampler) rpc_timer_cancel(loop, b->sampler);
    b->sampler = NULL;
    agent_stop(b->ag);
    server_stop(b->srv);
    rpc_loop_stop(loop);
}

/* ---- setup (main thread, before the loop runs) -------------------------------------------- */

/* Trust domain, a join token for the agent and an entry for the current uid. */
static mid_result seed_store(const char *dir, const char *db, char token[JOIN_TOKEN_LEN + 1],
                             char *old_root, char *old_inter)
{
    store *st = NULL;
    mid_result r = store_open(db, NULL, &st);
    if (!mid_is_ok(r)) return r;
    ca_init_opts io = {.trust_domain = BENCH_TD, .key_type = CA_KEY_EC_P256, .actor = "bench"};
    r = ca_init(st, dir, &io);
    char hash[JOIN_TOKEN_HASH_LEN + 1];
    if (mid_is_ok(r)) r = join_token_generate(token, hash);
    if (mid_is_ok(r)) {
        int64_t now = time(NULL);
        store_join_token t = {.token_hash = hash, .agent_spiffe_id = BENCH_AGENT_ID,
                              .expires_at = now + 600, .created_at = now};
        store_audit_event ev = {.actor = "bench", .event = "token.create",
                                .spiffe_id = BENCH_AGENT_ID, .outcome = "ok",
                                .reason = "bench agent"};
        r = store_join_token_create(st, &t, &ev);
    }
    if (mid_is_ok(r)) {
        char uidv[32];
        snprintf(uidv, sizeof uidv, "uid:%ld", (long)getuid());
        store_selector sel = {.type = "unix", .value = uidv};
        store_entry e = {.spiffe_id = BENCH_WORKLOAD_ID, .parent_id = BENCH_AGENT_ID,
                         .selectors = &sel, .n_selectors = 1};
        store_audit_event ev = {.actor = "bench", .event = "entry.create",
                                .spiffe_id = BENCH_WORKLOAD_ID, .outcome = "ok",
                                .reason = "bench workload"};
        r = store_entry_create(st, &e, &ev, NULL);
    }
    if (mid_is_ok(r)) {
        store_authority_row *rows = NULL;
        size_t n = 0;
        r = store_authority_list(st, &rows, &n);
        for (size_t i = 0; mid_is_ok(r) && i < n; i++) {
            const store_authority *a = &rows[i].a;
            if (strcmp(a->state, "active") != 0) continue;
            snprintf(strcmp(a->kind, "root") == 0 ? old_root : old_inter, CA_AUTHORITY_ID_MAX, "%s",
                     a->id);
        }
        if (mid_is_ok(r)) store_authority_list_free(rows, n);
    }
    store_close(st);
    return r;
}

/* Raises the soft RLIMIT_NOFILE to `need` (up to the hard limit). */
static long raise_nofile(long need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
    if (rl.rlim_cur != RLIM_INFINITY && (long)rl.rlim_cur < need) {
        rlim_t want = (rlim_t)need;
        if (rl.rlim_max != RLIM_INFINITY && want > rl.rlim_max) want = rl.rlim_max;
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            fprintf(stderr, "bench_rotation: setrlimit(NOFILE): %s\n", strerror(errno));
        if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
    }
    return rl.rlim_cur == RLIM_INFINITY ? LONG_MAX : (long)rl.rlim_cur;
}

/* ---- the driver (its own thread, its own store handle) ----------------------------------- */

typedef struct {
    bench *b;
    const char *dir, *db;
    const char *old_root, *old_inter;
    int ok;            /* 1: every step done */
    int phase2_skipped;
    char new_root[CA_AUTHORITY_ID_MAX], new_inter[CA_AUTHORITY_ID_MAX];
    int64_t t_start, t_ready;
    int64_t t_prepare0, t_prepare1;   /* ca_prepare called / returned */
    int64_t t_activate0, t_activate1; /* ca_activate called / returned */
    int64_t t_taint1;                 /* ca_taint returned */
    int64_t t_end1, t_end2;           /* driver saw phase 1 / 2 complete */
    struct rusage ru_before, ru_after;
} driver;

/* Waits until *counter reaches n, a fatal error, or BENCH_CONVERGE_S from
 * `from`; returns true when reached. */
static bool wait_count(bench *b, atomic_int *counter, int n, int64_t from)
{
    while (atomic_load(counter) < n) {
        if (atomic_load(&b->fatal)) return false;
        if (now_ns() - from > (int64_t)BENCH_CONVERGE_S * 1000000000) return false;
        struct timespec d = {0, 1000000};
        nanosleep(&d, NULL);
    }
    return true;
}

static void *driver_main(void *arg)
{
    driver *d = arg;
    bench *b = d->b;
    store *st = NULL;
    mid_result r;

    if (!wait_count(b, &b->n_ready, b->n, d->t_start)) {
        if (!atomic_load(&b->fatal))
            fprintf(stderr, "bench_rotation: only %d of %d streams reached the initial state in %d s\n",
                    atomic_load(&b->n_ready), b->n, BENCH_CONVERGE_S);
        goto out;
    }
    d->t_ready = now_ns();
    /* let the agent's acks settle: the baseline sequence must be stable */
    {
        int64_t until = now_ns() + 300 * 1000000LL;
        while (now_ns() < until) {
            struct timespec s = {0, 10000000};
            nanosleep(&s, NULL);
        }
    }
    if (!mid_is_ok(r = store_open(d->db, NULL, &st))) {
        report_err("driver: store_open", r);
        goto out;
    }
    getrusage(RUSAGE_SELF, &d->ru_before);

    /* (1) prepare a new root: the bundle grows to 2 roots */
    atomic_store(&b->seq0, atomic_load(&b->cur_seq));
    atomic_store_explicit(&b->phase, 1, memory_order_release);
    ca_prepared prep;
    ca_prepare_opts po = {.new_root = 1, .actor = "bench"};
    d->t_prepare0 = now_ns();
    r = ca_prepare(st, d->dir, &po, &prep);
    d->t_prepare1 = now_ns();
    if (!mid_is_ok(r)) {
        report_err("ca_prepare --root", r);
        goto out;
    }
    snprintf(d->new_root, sizeof d->new_root, "%s", prep.root_id);
    snprintf(d->new_inter, sizeof d->new_inter, "%s", prep.intermediate_id);
    if (!wait_count(b, &b->n_roots2, b->n, d->t_prepare1)) {
        if (!atomic_load(&b->fatal))
            fprintf(stderr, "bench_rotation: after prepare only %d of %d streams ACKed 2 roots in %d s\n",
                atomic_load(&b->n_roots2), b->n, BENCH_CONVERGE_S);
        goto out;
    }
    d->t_end1 = now_ns();
    /* the agent's sds ack follows within its 50 ms coalescing delay */
    {
        int64_t until = now_ns() + 5000 * 1000000LL;
        while (atomic_load(&b->agent_sds_ack_ns) == 0 && now_ns() < until && !atomic_load(&b->fatal)) {
            struct timespec s = {0, 1000000};
            nanosleep(&s, NULL);
        }
    }

    /* (2) activate the prepared pair, taint the old root: every SVID is re-issued */
    snprintf(b->target_issuer, sizeof b->target_issuer, "%s", d->new_inter);
    /* nothing is issued between phase 1 and the taint: a stable baseline */
    atomic_store(&b->base_taint_reissues, atomic_load(&b->cur_taint_reissues));
    atomic_store(&b->base_signed_ok, atomic_load(&b->cur_signed_ok));
    d->t_activate0 = now_ns();
    r = ca_activate(st, d->dir, d->new_inter, NULL, "bench");
    d->t_activate1 = now_ns();
    if (!mid_is_ok(r)) {
        report_err("ca_activate", r);
        goto out;
    }
    atomic_store_explicit(&b->phase, 2, memory_order_release);
    r = ca_taint(st, d->old_root, "bench", NULL);
    d->t_taint1 = now_ns();
    if (!mid_is_ok(r)) {
        report_err("ca_taint (old root)", r);
        goto out;
    }
    if (!wait_count(b, &b->n_newcert, b->n, d->t_taint1)) {
        if (!atomic_load(&b->fatal))
            fprintf(stderr,
                "bench_rotation: after activate + taint only %d of %d streams hold a certificate "
                "from the new intermediate %.16s in %d s\n",
                atomic_load(&b->n_newcert), b->n, d->new_inter, BENCH_CONVERGE_S);
        goto out;
    }
    d->t_end2 = now_ns();
    getrusage(RUSAGE_SELF, &d->ru_after);
    d->ok = 1;
out:
    if (!d->ok && atomic_load(&b->fatal)) fprintf(stderr, "bench_rotation: %s\n", b->fatal_msg);
    store_close(st);
    mid_result pr;
    /* the loop may be momentarily full of posts: retry */
    for (int i = 0; i < 1000; i++) {
        pr = rpc_loop_wake_post(b->loop, shutdown_fn, b);
        if (pr.err != MID_E_BUSY) break;
        struct timespec s = {0, 1000000};
        nanosleep(&s, NULL);
    }
    if (!mid_is_ok(pr)) report_err("cannot stop the loop", pr);
    return NULL;
}

/* ---- report ---------------------------------------------------------------------------- */

/* Prints min/p50/p99/max of the per-stream times of phase 1 or 2, from t0. */
static void print_spread(const char *label, const bench *b, bool phase2, int64_t t0)
{
    int64_t *v = malloc((size_t)b->n * sizeof *v);
    size_t k = 0;
    if (v == NULL) return;
    for (int i = 0; i < b->n; i++) {
        int64_t t = phase2 ? atomic_load(&b->st[i].newcert_ns) : atomic_load(&b->st[i].roots2_ns);
        if (t != 0) v[k++] = t - t0;
    }
    qsort(v, k, sizeof *v, cmp_i64);
    if (k == 0)
        printf("| %-44s | %8s | %8s | %8s | %8s | %5zu/%d |\n", label, "-", "-", "-", "-", k, b->n);
    else
        printf("| %-44s | %8.1f | %8.1f | %8.1f | %8.1f | %5zu/%d |\n", label, ms(v[0]),
               ms(pct(v, k, 50)), ms(pct(v, k, 99)), ms(v[k - 1]), k, b->n);
    free(v);
}

/* A single figure (in the max column); negative: not observed. */
static void print_one(const char *label, int64_t ns)
{
    if (ns < 0)
        printf("| %-44s | %8s | %8s | %8s | %8s | %9s |\n", label, "", "", "", "not seen", "");
    else
        printf("| %-44s | %8s | %8s | %8s | %8.1f | %9s |\n", label, "", "", "", ms(ns), "");
}

static double tv_s(struct timeval t) { return (double)t.tv_sec + (double)t.tv_usec / 1e6; }

int main(void)
{
    long n = env_long("BENCH_STREAMS", 1000, BENCH_MAX_STREAMS);
    long per = env_long("BENCH_STREAMS_PER_CHANNEL", 100, BENCH_MAX_STREAMS);
    long poll_ms = env_long("BENCH_SYNC_POLL_MS", 0, 60000);
    if (n < 1 || per < 1 || poll_ms < 0) {
        fprintf(stderr, "bench_rotation: BENCH_STREAMS and BENCH_STREAMS_PER_CHANNEL must be 1..%d, "
                        "BENCH_SYNC_POLL_MS 1..60000\n", BENCH_MAX_STREAMS);
        return 2;
    }
    long nch = (n + per - 1) / per;
    if (nch > BENCH_MAX_CHANNELS) {
        nch = BENCH_MAX_CHANNELS;
        per = (n + nch - 1) / nch;
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    /* per channel: the client socket and the agent's end; plus the server,
     * the agent's node client, SQLite, gRPC's own */
    long nofile = raise_nofile(2 * nch + 256);

    int fail = 1;
    char dir[] = "/tmp/meshid-bench-rot-XXXXXX";
    char db[sizeof dir + 16], run[sizeof dir + 16], sock[sizeof dir + 32], target[sizeof sock + 8];
    char addr[64], token[JOIN_TOKEN_LEN + 1];
    char old_root[CA_AUTHORITY_ID_MAX] = "", old_inter[CA_AUTHORITY_ID_MAX] = "";
    int have_dir = 0, have_thread = 0;
    bench b = {.n = (int)n};
    driver d = {.b = &b, .dir = dir, .db = db, .old_root = old_root, .old_inter = old_inter};
    rpc_channel **ch = calloc((size_t)nch, sizeof *ch);
    pthread_t tid;
    mid_result r;

    b.st = calloc((size_t)n, sizeof *b.st);
    if (b.st == NULL || ch == NULL) {
        fprintf(stderr, "bench_rotation: out of memory\n");
        goto out;
    }
    log_set_level(LOG_LVL_WARN);
    if (mkdtemp(dir) == NULL) {
        fprintf(stderr, "bench_rotation: mkdtemp: %s\n", strerror(errno));
        goto out;
    }
    have_dir = 1;
    snprintf(db, sizeof db, "%s/meshid.db", dir);
    snprintf(run, sizeof run, "%s/run", dir);
    snprintf(sock, sizeof sock, "%s/agent.sock", dir);
    snprintf(target, sizeof target, "unix:%s", sock);
    if (mkdir(run, 0755) != 0) {
        fprintf(stderr, "bench_rotation: mkdir %s: %s\n", run, strerror(errno));
        goto out;
    }
    if (!mid_is_ok(r = seed_store(dir, db, token, old_root, old_inter))) {
        report_err("setup", r);
        goto out;
    }
    printf("bench_rotation: %ld SDS streams on %ld channel(s) (%ld per channel), %ld online CPUs, "
           "RLIMIT_NOFILE %ld, server Sync poll %s%ld ms, data dir %s\n",
           n, nch, per, ncpu, nofile, poll_ms ? "" : "(default) ", poll_ms ? poll_ms : 1000L, dir);
    fflush(stdout);

    d.t_start = now_ns();
    if (!mid_is_ok(r = rpc_loop_new(&b.loop))) {
        report_err("rpc_loop_new", r);
        goto out;
    }
    server_opts so = {.data_dir = dir, .listen = "127.0.0.1:0", .sync_poll_ms = poll_ms};
    if (!mid_is_ok(r = server_start(&so, b.loop, &b.srv))) {
        report_err("server_start", r);
        goto out;
    }
    snprintf(addr, sizeof addr, "127.0.0.1:%d", server_port(b.srv));
    agent_opts ao = {.server_addr = addr, .server_name = "localhost",
                     .trust_bundle_pem = server_bundle_pem(b.srv), .trust_domain = BENCH_TD,
                     .join_token = token, .data_dir = dir, .socket_path = sock,
                     .on_fatal = on_agent_fatal, .on_fatal_arg = &b};
    if (!mid_is_ok(r = agent_start(&ao, b.loop, &b.ag))) {
        report_err("agent_start", r);
        goto out;
    }
    for (long i = 0; i < nch; i++) {
        if (!mid_is_ok(r = rpc_channel_new(b.loop, target, NULL, 0, &ch[i]))) {
            report_err("rpc_channel_new", r);
            goto out;
        }
    }
    b.ch = ch;
    b.nch = (int)nch;
    if (!mid_is_ok(r = rpc_timer_add(b.loop, 10, open_when_synced, &b, NULL))) {
        report_err("rpc_timer_add", r);
        goto out;
    }
    if (!mid_is_ok(r = rpc_timer_add(b.loop, SAMPLE_MS, sampler_tick, &b, &b.sampler))) {
        report_err("rpc_timer_add", r);
        goto out;
    }
    if (pthread_create(&tid, NULL, driver_main, &d) != 0) {
        fprintf(stderr, "bench_rotation: cannot start the driver thread\n");
        goto out;
    }
    have_thread = 1;
    if (!mid_is_ok(r = rpc_loop_run(b.loop))) report_err("rpc_loop_run", r);
    pthread_join(tid, NULL);
    have_thread = 0;
    fail = !d.ok || atomic_load(&b.fatal);

    struct rusage ru_end;
    getrusage(RUSAGE_SELF, &ru_end);
    printf("bench_rotation: all %d streams held the initial state %.0f ms after start\n",
           atomic_load(&b.n_ready), d.t_ready ? ms(d.t_ready - d.t_start) : -1.0);
    printf("\nTimes in ms; per stream: when its client had received and ACKed the new state.\n\n");
    printf("| %-44s | %8s | %8s | %8s | %8s | %9s |\n", "measure", "min", "p50", "p99", "max",
           "streams");
    printf("|%s|%s|%s|%s|%s|%s|\n", "----------------------------------------------",
           "----------", "----------", "----------", "----------", "-----------");
    if (d.t_prepare1) {
        int64_t ab = atomic_load(&b.agent_bundle_ns), aa = atomic_load(&b.agent_sds_ack_ns);
        print_one("(1) ca_prepare --root call itself", d.t_prepare1 - d.t_prepare0);
        print_one("(1) prepare -> agent applied the new bundle", ab ? ab - d.t_prepare1 : -1);
        print_spread("(1) prepare -> stream ACKed ROOTCA, 2 roots", &b, false, d.t_prepare1);
        if (ab) print_spread("(1) agent applied bundle -> stream ACKed", &b, false, ab);
        print_one("(1) prepare -> agent sds_bundle_seq_ack", aa ? aa - d.t_prepare1 : -1);
    }
    if (d.t_activate1) {
        print_one("(2) ca_activate call itself", d.t_activate1 - d.t_activate0);
        print_one("(2) ca_taint call itself", d.t_taint1 ? d.t_taint1 - d.t_activate1 : -1);
        int64_t at = atomic_load(&b.agent_taint_ns), as = atomic_load(&b.agent_signed_ns);
        print_one("(2) taint -> agent marked SVIDs for re-issue", at && d.t_taint1 ? at - d.t_taint1 : -1);
        print_one("(2) taint -> agent got the re-issued SVID", as && d.t_taint1 ? as - d.t_taint1 : -1);
        print_spread("(2) activate -> stream holds new-signer SVID", &b, true, d.t_activate1);
        if (d.t_taint1) print_spread("(2) taint -> stream holds new-signer SVID", &b, true, d.t_taint1);
        if (as) print_spread("(2) agent got SVID -> stream holds it", &b, true, as);
    }
    uint64_t stale = 0, updates = 0, resp = 0;
    for (int i = 0; i < b.n; i++) {
        stale += b.st[i].old_signer_phase2;
        updates += b.st[i].default_updates;
        resp += b.st[i].responses;
    }
    printf("\nN %d streams, %ld CPUs; %" PRIu64 " responses, %" PRIu64
           " default certificates received;\n",
           b.n, ncpu, resp, updates);
    if (stale)
        printf("after the activation %" PRIu64
               " default(s) arrived NOT signed by the new intermediate\n",
               stale);
    printf("agent: bundle sequence %" PRIu64 " -> %" PRIu64 ", last sds_bundle_sequence_ack %" PRIu64
           "\n",
           atomic_load(&b.seq0), atomic_load(&b.new_seq), atomic_load(&b.last_sds_ack));
    printf("bench clients (decode, check, ACK) on the shared loop thread: %.1f ms after "
           "prepare, %.1f ms after activate (%" PRIu64 " distinct chains parsed)\n",
           ms(b.client_ns[1]), ms(b.client_ns[2]), b.x509_parses);
    printf("process: peak RSS %.1f MiB, CPU %.2f s user + %.2f s system in total",
           (double)ru_end.ru_maxrss / 1024.0, tv_s(ru_end.ru_utime), tv_s(ru_end.ru_stime));
    if (d.ok)
        printf(", %.2f s during the rotation (prepare to the last new SVID)",
               tv_s(d.ru_after.ru_utime) + tv_s(d.ru_after.ru_stime) - tv_s(d.ru_before.ru_utime) -
                   tv_s(d.ru_before.ru_stime));
    printf("\n");
    if (fail) fprintf(stderr, "bench_rotation: FAILED%s%s\n", atomic_load(&b.fatal) ? ": " : "",
                      atomic_load(&b.fatal) ? b.fatal_msg : "");
out:
    if (have_thread) pthread_join(tid, NULL);
    if (!atomic_load(&b.stopping)) { /* failed before the loop ran */
        atomic_store(&b.stopping, true);
        agent_stop(b.ag);
        server_stop(b.srv);
    }
    rpc_loop_free(b.loop); /* ends the streams (on_done runs) */
    agent_free(b.ag);
    server_free(b.srv);
    free(ch);
    free(b.st);
    free(b.chain_cache);
    if (have_dir) rm_tree(dir);
    return fail ? 1 : 0;
}
