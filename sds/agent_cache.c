/* The agent cache: entries, SVIDs, bundle, rotation, and the sds_source
 * built on them. See sds/agent_cache.h and docs/agent.md.
 *
 * Entries are kept sorted by id (lookup by bsearch when a new entry set or a
 * batch result arrives). One "tick" timer fires at the earliest rotation or
 * retry point; one "flush" timer coalesces everything that needs a
 * (re)issue within AGENT_BATCH_DELAY_MS into batches of AGENT_BATCH_MAX.
 * Every batch in flight holds its own keys; the entry's `gen` tells whether
 * a result still answers the entry as it is now (a TTL or DNS change while
 * signing makes the result stale, and it is dropped).
 *
 * Refusals go to a FIFO of denial records. A "report" timer sends its head
 * (at most AGENT_DENIALS_BATCH_MAX) with one ReportDenials call at a time;
 * the server answers how many leading records it audited, those are removed
 * and the rest stay at the head for the next attempt. Records in flight are
 * never coalesced into, so a count the server saw is never changed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "ca/keys.h"
#include "ca/x509.h"
#include "identity/entry.h"
#include "identity/spiffe_id.h"
#include "lib/log.h"
#include "lib/timeutil.h"
#include "sds/agent_cache.h"
#include "sds/node_client.h"

#define RETRY_MIN_MS 500
#define RETRY_MAX_MS 30000
#define MEMO_MAX 256
#define SEL_LOG_MAX 1024
/* Denial report limits, within the server's (sds/node_service.h). */
#define DENY_SELECTORS_MAX 32
#define DENY_SEL_TYPE_MAX 64
#define DENY_SEL_VALUE_MAX 1024
#define DENY_REASON_MAX 900 /* leaves room for the "dropped" note (server: 1024) */

typedef struct {
    char *id, *spiffe_id;
    entry_selector *sels; /* strings owned here (cast away const at free) */
    size_t n_sels;
    char **dns;
    size_t n_dns;
    int64_t ttl;
    uint64_t revision;
    uint64_t gen; /* bumped when what the SVID must carry changes */

    /* the current SVID, if any */
    char *chain_pem;
    char *key_pem;
    size_t key_len;
    char serial[CA_SERIAL_HEX_LEN + 8];
    int64_t not_after;
    int64_t rotate_at_ms;

    /* issuance */
    bool want;       /* needs a (re)issue */
    bool inflight;   /* a batch carries it */
    bool unverified; /* the last SVID received did not verify against the bundle */
    int fails;
    int64_t retry_at_ms;
} cent;

typedef struct batch batch;
struct batch {
    agent_cache *cache; /* NULL once the cache is freed */
    batch *next;
    uint64_t taint_epoch; /* the cache's taint_epoch when the batch was sent */
    size_t n;
    struct {
        char *id;
        EVP_PKEY *key;
        uint64_t gen;
    } items[];
};

typedef struct {
    char *key;
    sds_view *v;
} memo_slot;

/* One refusal waiting to be reported (strings owned). */
typedef struct {
    int64_t time_ms;
    uint32_t uid, gid;
    int32_t pid;
    agent_api api;
    uint32_t count;
    char *reason;
    entry_selector *sels;
    size_t n_sels;
} denial_rec;

/* A ReportDenials call in flight; `cache` is NULL once the cache stopped. */
typedef struct {
    agent_cache *cache;
    size_t n;            /* records sent: the queue's first n */
    uint64_t dropped;    /* drop count named in the first record's reason */
} report_call;

/* What an sds_source's ctx points at: the cache and the API it serves. */
typedef struct {
    agent_cache *c;
    agent_api api;
} src_tag;

struct agent_cache {
    rpc_loop *loop;
    char *td;
    const agent_signer_ops *signer;
    void *signer_ctx;
    void (*on_change)(void *);
    void *on_change_arg;
    attest_unix_ctx *attestor;
    bool own_attestor;
    double rot_frac, rot_jitter;

    cent **ents; /* sorted by id */
    size_t n_ents;
    entry *match_tbl; /* borrowed views of ents, same order */
    uint64_t entries_rev;

    char *bundle_pem;
    STACK_OF(X509) *anchors;
    uint64_t bundle_seq;

    rpc_timer *tick, *flush;
    int64_t tick_due_ms;
    bool stopped;
    bool hold; /* no signing until the agent has applied the server's first state */

    /* tainted authorities (lowercase hex key ids), the server's complete list;
     * taint_epoch grows whenever an id is added */
    char **tainted;
    size_t n_tainted;
    uint64_t taint_epoch;
    batch *batches;

    memo_slot memo[MEMO_MAX];
    size_t n_memo;

    /* refusals to report: dq[0..inflight) are in the call in flight */
    denial_rec **dq;
    size_t n_dq;
    size_t inflight;
    report_call *report;
    rpc_timer *report_timer;
    int64_t report_ms;
    int report_fails;
    uint64_t dropped_unreported; /* drops not named in a report yet */
    src_tag tags[3];

    agent_cache_stats st;
};

struct sds_workload {
    agent_api api;
    uid_t uid;
    gid_t gid;
    pid_t pid;
    attest_selectors *raw;
    entry_selector *sels;
    size_t n;
};

/* ---- small helpers ---------------------------------------------------------- */

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

static int64_t backoff_ms(int fails)
{
    int64_t d = RETRY_MIN_MS;
    for (int i = 1; i < fails && d < RETRY_MAX_MS; i++) d *= 2;
    if (d > RETRY_MAX_MS) d = RETRY_MAX_MS;
    /* +-20% so that many agents do not retry in step */
    return d + (int64_t)((rand_unit() - 0.5) * 0.4 * (double)d);
}

static void svid_clear(cent *e)
{
    free(e->chain_pem);
    free_secret(e->key_pem, e->key_len);
    e->chain_pem = NULL;
    e->key_pem = NULL;
    e->key_len = 0;
    e->serial[0] = '\0';
    e->not_after = 0;
    e->rotate_at_ms = 0;
}

static void sels_free(entry_selector *s, size_t n)
{
    for (size_t i = 0; s && i < n; i++) {
        free((char *)s[i].type);
        free((char *)s[i].value);
    }
    free(s);
}

static void strv_free(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) free(v[i]);
    free(v);
}

static void cent_free(cent *e)
{
    if (!e) return;
    free(e->id);
    free(e->spiffe_id);
    sels_free(e->sels, e->n_sels);
    strv_free(e->dns, e->n_dns);
    svid_clear(e);
    free(e);
}

static int cmp_cent_id(const void *a, const void *b)
{
    return strcmp((*(cent *const *)a)->id, (*(cent *const *)b)->id);
}

static cent *find(const agent_cache *c, const char *id)
{
    if (c->n_ents == 0) return NULL;
    cent key = {.id = (char *)id}, *kp = &key;
    cent **hit = bsearch(&kp, c->ents, c->n_ents, sizeof *c->ents, cmp_cent_id);
    return hit ? *hit : NULL;
}

static void memo_clear(agent_cache *c)
{
    for (size_t i = 0; i < c->n_memo; i++) {
        free(c->memo[i].key);
        sds_view_unref(c->memo[i].v);
    }
    c->n_memo = 0;
}

/* What workloads may receive changed: drop memoised views, tell the agent. */
static void changed(agent_cache *c)
{
    c->st.generation++;
    memo_clear(c);
    if (c->on_change) c->on_change(c->on_change_arg);
}

/* ---- scheduling ------------------------------------------------------------- */

static void flush_fn(rpc_loop *loop, void *arg);
static void tick_fn(rpc_loop *loop, void *arg);

static void want_flush(agent_cache *c)
{
    if (c->flush || c->stopped || c->hold) return;
    if (!mid_is_ok(rpc_timer_add(c->loop, AGENT_BATCH_DELAY_MS, flush_fn, c, &c->flush))) {
        LOG_WARN("agent cache: cannot arm the batch timer: %s", mid_errmsg());
        c->flush = NULL;
    }
}

/* Re-arms the tick timer for the earliest rotation or retry point. */
static void schedule(agent_cache *c)
{
    int64_t due = INT64_MAX;
    bool flush_now = false;
    int64_t now = time_now_ms();
    for (size_t i = 0; i < c->n_ents; i++) {
        cent *e = c->ents[i];
        if (e->inflight) continue;
        if (e->want) {
            if (e->retry_at_ms <= now) flush_now = true;
            else if (e->retry_at_ms < due) due = e->retry_at_ms;
        } else if (e->chain_pem && e->rotate_at_ms < due) {
            due = e->rotate_at_ms;
        }
    }
    if (flush_now) want_flush(c);
    if (c->stopped) return;
    if (c->tick && c->tick_due_ms == due) return;
    if (c->tick) {
        rpc_timer_cancel(c->loop, c->tick);
        c->tick = NULL;
    }
    if (due == INT64_MAX) return;
    int64_t delay = due > now ? due - now : 0;
    if (!mid_is_ok(rpc_timer_add(c->loop, delay, tick_fn, c, &c->tick))) {
        LOG_WARN("agent cache: cannot arm the rotation timer: %s", mid_errmsg());
        c->tick = NULL;
        return;
    }
    c->tick_due_ms = due;
}

static void tick_fn(rpc_loop *loop, void *arg)
{
    (void)loop;
    agent_cache *c = arg;
    c->tick = NULL;
    int64_t now = time_now_ms();
    for (size_t i = 0; i < c->n_ents; i++) {
        cent *e = c->ents[i];
        if (!e->want && !e->inflight && e->chain_pem && e->rotate_at_ms <= now) {
            LOG_INFO("agent cache: rotating %s (serial %s)", e->spiffe_id, e->serial);
            e->want = true;
            e->fails = 0;
            e->retry_at_ms = 0;
        }
    }
    schedule(c);
}

/* ---- issuing ---------------------------------------------------------------- */

static void batch_free(batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free(b->items[i].id);
        EVP_PKEY_free(b->items[i].key);
    }
    free(b);
}

static void batch_unlink(agent_cache *c, batch *b)
{
    for (batch **p = &c->batches; *p; p = &(*p)->next) {
        if (*p == b) {
            *p = b->next;
            return;
        }
    }
}

static void item_failed(agent_cache *c, cent *e, int code, const char *msg)
{
    e->fails++;
    e->retry_at_ms = time_now_ms() + backoff_ms(e->fails);
    c->st.sign_errors++;
    LOG_WARN("agent cache: signing %s (entry %s) failed: code %d: %s; retry #%d", e->spiffe_id,
             e->id, code, msg ? msg : "", e->fails);
}

/* Appends the lowercase hex of `d` (n bytes) to out (cap >= 2n+1). */
static void hex_of(const unsigned char *d, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[2 * n] = '\0';
}

static bool is_tainted(const agent_cache *c, const char *id)
{
    for (size_t i = 0; i < c->n_tainted; i++)
        if (strcmp(c->tainted[i], id) == 0) return true;
    return false;
}

/* The first tainted authority in an SVID chain (leaf first), or NULL. The
 * chain's authorities are its intermediates (their key ids) and every
 * issuer named by an authority key identifier (which names the root too,
 * although the root is not in the chain). Writes the id into buf. */
static const char *chain_taint(const agent_cache *c, STACK_OF(X509) *sk, char *buf)
{
    if (c->n_tainted == 0) return NULL;
    for (int i = 0; i < sk_X509_num(sk); i++) {
        X509 *x = sk_X509_value(sk, i);
        if (i > 0 && mid_is_ok(ca_x509_key_id_hex(x, buf)) && is_tainted(c, buf)) return buf;
        const ASN1_OCTET_STRING *aki = X509_get0_authority_key_id(x);
        if (aki && aki->length > 0 && aki->length <= CA_KEY_ID_MAX) {
            hex_of(aki->data, (size_t)aki->length, buf);
            if (is_tainted(c, buf)) return buf;
        }
    }
    mid_errclear();
    return NULL;
}

/* Stores a signed chain for `e` with the key that was generated for it.
 * Refused (the current SVID, if any, stays served): a chain that does not
 * verify against the current bundle (MID_E_VERIFY; peers could not verify
 * it either), and a chain through a tainted authority signed before the
 * taint was known (MID_E_STATE; re-issue). */
static mid_result accept_svid(agent_cache *c, cent *e, EVP_PKEY *key,
                              const Meshid__Agent__V1__SignResult *res, uint64_t taint_epoch)
{
    char *chain = NULL, *kpem = NULL;
    size_t klen = 0;
    STACK_OF(X509) *sk = NULL;
    char got_id[SPIFFE_ID_MAX + 1];
    int64_t nb = 0, na = 0;
    mid_result r = MID_OK_RESULT;
    MID_CHECK(r, res->n_svid_chain > 0, MID_E_INVALID, "empty SVID chain");
    MID_TRY(r, node_der_to_pem(res->svid_chain, res->n_svid_chain, &chain));
    MID_TRY(r, ca_x509_stack_from_pem(chain, strlen(chain), "SVID chain", &sk));
    X509 *leaf = sk_X509_value(sk, 0);
    MID_TRY(r, ca_key_matches_cert(key, leaf, "signed SVID"));
    MID_TRY(r, node_pem_spiffe_id(chain, got_id, sizeof got_id));
    MID_CHECK(r, strcmp(got_id, e->spiffe_id) == 0, MID_E_INVALID,
              "server signed '%s' for entry '%s', want '%s'", got_id, e->id, e->spiffe_id);
    MID_TRY(r, ca_x509_validity(leaf, &nb, &na));
    /* Never serve what peers cannot verify: they trust exactly the bundle
     * we deliver. The bundle may be behind (the server signs with an
     * authority whose bundle has not reached us): the caller retries, and
     * a new bundle retries at once. */
    MID_CHECK(r, c->anchors, MID_E_VERIFY, "no trust bundle yet to verify the SVID against");
    {
        STACK_OF(X509) *untrusted = sk_X509_new_null();
        MID_CHECK_MEM(r, untrusted);
        for (int i = 1; i < sk_X509_num(sk); i++) sk_X509_push(untrusted, sk_X509_value(sk, i));
        r = ca_x509_verify(leaf, untrusted, c->anchors, -1, NULL);
        sk_X509_free(untrusted);
        if (!mid_is_ok(r)) {
            r = mid_fail(MID_E_VERIFY, __FILE__, __LINE__,
                         "the SVID does not verify against trust bundle #%llu: %s",
                         (unsigned long long)c->bundle_seq, mid_errmsg());
            goto out;
        }
    }
    {
        char kid[CA_KEY_ID_HEX_MAX];
        const char *t = chain_taint(c, sk, kid);
        MID_CHECK(r, !t || taint_epoch >= c->taint_epoch, MID_E_STATE,
                  "signed through authority %s before it was tainted", t);
        if (t) /* signed after the taint: re-issuing again would loop */
            LOG_WARN("agent cache: the server signed %s through tainted authority %s; serving it",
                     e->spiffe_id, t);
    }
    MID_TRY(r, ca_key_to_pem(key, &kpem, &klen));

    svid_clear(e);
    e->chain_pem = chain;
    chain = NULL;
    e->key_pem = kpem;
    e->key_len = klen;
    kpem = NULL;
    if (!mid_is_ok(ca_x509_serial_hex(leaf, e->serial, sizeof e->serial))) e->serial[0] = '\0';
    e->not_after = na;
    {
        int64_t now = time_now_ms();
        int64_t life = na * 1000 - now;
        if (life < 0) life = 0;
        double f = c->rot_frac + c->rot_jitter * (2.0 * rand_unit() - 1.0);
        e->rotate_at_ms = now + (int64_t)((double)life * f);
    }
    e->want = false;
    e->fails = 0;
    e->retry_at_ms = 0;
out:
    sk_X509_pop_free(sk, X509_free);
    free(chain);
    if (kpem) ca_key_pem_free(kpem, klen);
    return r;
}

static void batch_done(const rpc_status *st, const Meshid__Agent__V1__BatchSignResponse *resp,
                       void *arg)
{
    batch *b = arg;
    agent_cache *c = b->cache;
    if (!c) { /* the cache is gone */
        batch_free(b);
        return;
    }
    batch_unlink(c, b);
    bool any = false;
    bool whole_ok = st->code == RPC_OK && resp && resp->n_results == b->n;
    if (st->code == RPC_OK && !whole_ok)
        LOG_WARN("agent cache: BatchSign answered %zu results for %zu requests",
                 resp ? resp->n_results : 0, b->n);
    for (size_t i = 0; i < b->n; i++) {
        cent *e = find(c, b->items[i].id);
        if (!e) continue; /* removed meanwhile */
        e->inflight = false;
        if (e->gen != b->items[i].gen) continue; /* entry changed meanwhile: still wanted */
        if (!whole_ok) {
            item_failed(c, e, st->code != RPC_OK ? (int)st->code : RPC_INTERNAL,
                        st->code != RPC_OK ? st->message : "malformed response");
            continue;
        }
        const Meshid__Agent__V1__SignResult *res = resp->results[i];
        if (!res->entry_id || strcmp(res->entry_id, e->id) != 0) {
            item_failed(c, e, RPC_INTERNAL, "result out of order");
            continue;
        }
        if (res->code != 0) {
            item_failed(c, e, res->code, res->message);
            continue;
        }
        mid_result ar = accept_svid(c, e, b->items[i].key, res, b->taint_epoch);
        if (!mid_is_ok(ar)) {
            if (ar.err == MID_E_STATE) { /* raced with a taint: again, at once */
                LOG_INFO("agent cache: %s: %s; re-issuing", e->spiffe_id, mid_errmsg());
                e->retry_at_ms = 0;
                continue;
            }
            if (ar.err == MID_E_VERIFY) {
                e->unverified = true;
                c->st.unverified++;
                LOG_WARN("agent cache: not serving the new SVID for %s (%s)", e->spiffe_id,
                         e->chain_pem ? "keeping the current one" : "none served yet");
            }
            item_failed(c, e, RPC_INTERNAL, mid_errmsg());
            continue;
        }
        e->unverified = false;
        c->st.signed_ok++;
        any = true;
        LOG_INFO("agent cache: issued %s serial %s", e->spiffe_id, e->serial);
    }
    batch_free(b);
    if (any) changed(c);
    schedule(c);
}

/* Sends one batch of up to AGENT_BATCH_MAX wanted entries. Returns false
 * when nothing was left to send. */
static bool send_batch(agent_cache *c)
{
    int64_t now = time_now_ms();
    size_t n = 0;
    for (size_t i = 0; i < c->n_ents && n < AGENT_BATCH_MAX; i++) {
        cent *e = c->ents[i];
        if (e->want && !e->inflight && e->retry_at_ms <= now) n++;
    }
    if (n == 0) return false;

    batch *b = calloc(1, sizeof *b + n * sizeof b->items[0]);
    Meshid__Agent__V1__SignRequest *items = calloc(n, sizeof *items);
    Meshid__Agent__V1__SignRequest **ptrs = calloc(n, sizeof *ptrs);
    cent **picked = calloc(n, sizeof *picked);
    bool sent = false;
    if (!b || !items || !ptrs || !picked) {
        LOG_ERROR("agent cache: out of memory building a batch");
        goto out;
    }
    for (size_t i = 0; i < c->n_ents && b->n < n; i++) {
        cent *e = c->ents[i];
        if (!(e->want && !e->inflight && e->retry_at_ms <= now)) continue;
        size_t k = b->n;
        uint8_t *der = NULL;
        size_t der_len = 0;
        EVP_PKEY *key = NULL;
        b->items[k].id = strdup(e->id);
        if (!b->items[k].id || !mid_is_ok(ca_key_generate(CA_KEY_EC_P256, &key)) ||
            !mid_is_ok(node_csr_der(key, &der, &der_len))) {
            LOG_ERROR("agent cache: cannot make a key and CSR for %s: %s", e->spiffe_id,
                      mid_errmsg());
            free(b->items[k].id);
            EVP_PKEY_free(key);
            item_failed(c, e, RPC_INTERNAL, "local key generation failed");
            continue;
        }
        b->items[k].key = key;
        b->items[k].gen = e->gen;
        meshid__agent__v1__sign_request__init(&items[k]);
        items[k].entry_id = e->id;
        items[k].csr.data = der;
        items[k].csr.len = der_len;
        ptrs[k] = &items[k];
        picked[k] = e;
        b->n++;
    }
    if (b->n == 0) goto out;
    Meshid__Agent__V1__BatchSignRequest req = MESHID__AGENT__V1__BATCH_SIGN_REQUEST__INIT;
    req.n_requests = b->n;
    req.requests = ptrs;
    b->cache = c;
    b->taint_epoch = c->taint_epoch;
    mid_result r = c->signer->batch_sign(c->signer_ctx, &req, batch_done, b);
    if (!mid_is_ok(r)) {
        LOG_WARN("agent cache: cannot send BatchSign: %s", mid_errmsg());
        for (size_t k = 0; k < b->n; k++) item_failed(c, picked[k], RPC_UNAVAILABLE, mid_errmsg());
        goto out;
    }
    for (size_t k = 0; k < b->n; k++) picked[k]->inflight = true;
    b->next = c->batches;
    c->batches = b;
    b = NULL;
    c->st.batches++;
    sent = true;
out:
    if (items)
        for (size_t k = 0; k < n; k++) free(items[k].csr.data);
    if (b) batch_free(b);
    free(items);
    free(ptrs);
    free(picked);
    return sent;
}

static void flush_fn(rpc_loop *loop, void *arg)
{
    (void)loop;
    agent_cache *c = arg;
    c->flush = NULL;
    if (c->hold) return; /* agent_cache_hold_issuing(c, false) reschedules */
    while (send_batch(c)) {
    }
    schedule(c);
}

/* ---- bundle ------------------------------------------------------------------ */

/* True when the SVID's chain still verifies against `anchors`. */
static bool chain_ok(const cent *e, STACK_OF(X509) *anchors)
{
    STACK_OF(X509) *sk = NULL, *untrusted = NULL;
    bool ok = false;
    if (!mid_is_ok(ca_x509_stack_from_pem(e->chain_pem, strlen(e->chain_pem), "SVID", &sk)))
        goto out;
    untrusted = sk_X509_new_null();
    if (!untrusted) goto out;
    for (int i = 1; i < sk_X509_num(sk); i++) sk_X509_push(untrusted, sk_X509_value(sk, i));
    ok = mid_is_ok(ca_x509_verify(sk_X509_value(sk, 0), untrusted, anchors, -1, NULL));
out:
    sk_X509_free(untrusted);
    sk_X509_pop_free(sk, X509_free);
    mid_errclear();
    return ok;
}

mid_result agent_cache_set_bundle(agent_cache *c, const ProtobufCBinaryData *certs, size_t n,
                                  uint64_t sequence)
{
    MID_ENSURE(n > 0, MID_E_INVALID, "empty trust bundle");
    MID_ENSURE(n <= AGENT_BUNDLE_CERTS_MAX, MID_E_TOO_LARGE, "trust bundle of %zu certificates",
               n);
    char *pem = NULL;
    STACK_OF(X509) *sk = NULL;
    MID_GUARD(node_der_to_pem(certs, n, &pem));
    if (c->bundle_pem && strcmp(pem, c->bundle_pem) == 0) {
        free(pem);
        if (c->bundle_seq != sequence) {
            /* Same roots, new sequence: views carry the sequence (what SDS
             * and Workload API streams report as delivered), so rebuild
             * them; no client receives anything new. */
            c->bundle_seq = sequence;
            changed(c);
        }
        return mid_ok();
    }
    mid_result r = ca_x509_stack_from_pem(pem, strlen(pem), "trust bundle", &sk);
    if (!mid_is_ok(r)) {
        free(pem);
        return r;
    }
    free(c->bundle_pem);
    sk_X509_pop_free(c->anchors, X509_free);
    c->bundle_pem = pem;
    c->anchors = sk;
    c->bundle_seq = sequence;
    size_t stale = 0;
    for (size_t i = 0; i < c->n_ents; i++) {
        cent *e = c->ents[i];
        if (e->want && e->unverified) { /* may verify against the new roots: retry now */
            e->fails = 0;
            e->retry_at_ms = 0;
        }
        if (!e->chain_pem || e->want) continue;
        if (!chain_ok(e, c->anchors)) {
            e->want = true;
            e->fails = 0;
            e->retry_at_ms = 0;
            stale++;
        }
    }
    LOG_INFO("agent cache: trust bundle #%llu with %zu certificates; %zu SVIDs to re-issue",
             (unsigned long long)sequence, n, stale);
    changed(c);
    schedule(c);
    return mid_ok();
}

static void tainted_free(agent_cache *c)
{
    strv_free(c->tainted, c->n_tainted);
    c->tainted = NULL;
    c->n_tainted = 0;
}

/* A lowercase copy of a well-formed key id (hex, even length, at most
 * CA_KEY_ID_MAX bytes), else NULL. */
static char *norm_key_id(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n % 2 || n > 2 * CA_KEY_ID_MAX) return NULL;
    char *o = malloc(n + 1);
    if (!o) return NULL;
    for (size_t i = 0; i < n; i++) {
        char ch = id[i];
        if (ch >= 'A' && ch <= 'F') ch = (char)(ch - 'A' + 'a');
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) {
            free(o);
            return NULL;
        }
        o[i] = ch;
    }
    o[n] = '\0';
    return o;
}

mid_result agent_cache_set_tainted(agent_cache *c, char *const *ids, size_t n, size_t *reissue)
{
    if (reissue) *reissue = 0;
    MID_ENSURE(n <= AGENT_TAINTED_MAX, MID_E_TOO_LARGE, "%zu tainted authorities (max %d)", n,
               AGENT_TAINTED_MAX);
    char **list = calloc(n ? n : 1, sizeof *list);
    MID_ENSURE_MEM(list);
    size_t m = 0;
    bool added = false;
    for (size_t i = 0; i < n; i++) {
        char *id = norm_key_id(ids[i]);
        if (!id) {
            LOG_WARN("agent cache: ignoring malformed tainted authority id '%.80s'",
                     ids[i] ? ids[i] : "");
            continue;
        }
        if (!is_tainted(c, id)) added = true;
        list[m++] = id;
    }
    tainted_free(c);
    c->tainted = list;
    c->n_tainted = m;
    if (added) c->taint_epoch++;
    size_t k = 0;
    for (size_t i = 0; i < c->n_ents; i++) {
        cent *e = c->ents[i];
        if (!e->chain_pem) continue;
        STACK_OF(X509) *sk = NULL;
        char kid[CA_KEY_ID_HEX_MAX];
        const char *t = NULL;
        if (mid_is_ok(ca_x509_stack_from_pem(e->chain_pem, strlen(e->chain_pem), "SVID", &sk)))
            t = chain_taint(c, sk, kid);
        sk_X509_pop_free(sk, X509_free);
        mid_errclear();
        if (!t) continue;
        if (!e->want || e->retry_at_ms > 0)
            LOG_WARN("agent cache: %s (serial %s) chains to tainted authority %s; re-issuing now",
                     e->spiffe_id, e->serial, t);
        e->want = true;
        e->fails = 0;
        e->retry_at_ms = 0;
        k++;
    }
    c->st.taint_reissues += k;
    if (reissue) *reissue = k;
    schedule(c);
    return mid_ok();
}

void agent_cache_hold_issuing(agent_cache *c, bool hold)
{
    if (c->hold == hold) return;
    c->hold = hold;
    if (hold) {
        if (c->flush) rpc_timer_cancel(c->loop, c->flush);
        c->flush = NULL;
    } else {
        schedule(c);
    }
}

/* ---- entries ----------------------------------------------------------------- */

static mid_result cent_from_proto(const Meshid__Agent__V1__Entry *pe, cent **out)
{
    *out = NULL;
    spiffe_id *sid = NULL;
    MID_ENSURE(pe->id && *pe->id, MID_E_INVALID, "entry without id");
    MID_ENSURE(pe->spiffe_id, MID_E_INVALID, "entry %s without SPIFFE ID", pe->id);
    MID_GUARD(spiffe_id_parse(pe->spiffe_id, strlen(pe->spiffe_id), &sid));
    spiffe_id_free(sid);
    MID_ENSURE(pe->n_selectors > 0 && pe->n_selectors <= ENTRY_SELECTORS_MAX, MID_E_INVALID,
               "entry %s has %zu selectors", pe->id, pe->n_selectors);
    MID_ENSURE(pe->n_dns_names <= ENTRY_DNS_NAMES_MAX, MID_E_INVALID, "entry %s: too many DNS names",
               pe->id);
    mid_result r = MID_OK_RESULT;
    cent *e = calloc(1, sizeof *e);
    MID_ENSURE_MEM(e);
    e->id = strdup(pe->id);
    e->spiffe_id = strdup(pe->spiffe_id);
    e->sels = calloc(pe->n_selectors, sizeof *e->sels);
    e->dns = pe->n_dns_names ? calloc(pe->n_dns_names, sizeof *e->dns) : NULL;
    MID_CHECK(r, e->id && e->spiffe_id && e->sels && (e->dns || !pe->n_dns_names), MID_E_NOMEM,
              "out of memory");
    for (size_t i = 0; i < pe->n_selectors; i++) {
        const Meshid__Agent__V1__Selector *s = pe->selectors[i];
        MID_CHECK(r, s && s->type && s->value, MID_E_INVALID, "entry %s: empty selector", pe->id);
        e->sels[i].type = strdup(s->type);
        e->sels[i].value = strdup(s->value);
        e->n_sels++;
        MID_CHECK(r, e->sels[i].type && e->sels[i].value, MID_E_NOMEM, "out of memory");
        MID_TRY(r, entry_selector_validate(&e->sels[i]));
    }
    for (size_t i = 0; i < pe->n_dns_names; i++) {
        e->dns[i] = strdup(pe->dns_names[i] ? pe->dns_names[i] : "");
        e->n_dns++;
        MID_CHECK_MEM(r, e->dns[i]);
    }
    e->ttl = pe->ttl_seconds;
    e->revision = pe->revision;
    *out = e;
    e = NULL;
out:
    cent_free(e);
    return r;
}

/* True when `a` and `b` ask for different certificates. */
static bool identity_differs(const cent *a, const cent *b)
{
    if (strcmp(a->spiffe_id, b->spiffe_id) != 0 || a->ttl != b->ttl || a->n_dns != b->n_dns)
        return true;
    for (size_t i = 0; i < a->n_dns; i++)
        if (strcmp(a->dns[i], b->dns[i]) != 0) return true;
    return false;
}

static void rebuild_match_tbl(agent_cache *c)
{
    for (size_t i = 0; i < c->n_ents; i++) {
        cent *e = c->ents[i];
        c->match_tbl[i] = (entry){.id = e->id,
                                  .spiffe_id = e->spiffe_id,
                                  .selectors = e->sels,
                                  .n_selectors = e->n_sels,
                                  .dns_names = (const char *const *)e->dns,
                                  .n_dns_names = e->n_dns,
                                  .ttl_seconds = e->ttl};
    }
}

mid_result agent_cache_set_entries(agent_cache *c, Meshid__Agent__V1__Entry *const *entries,
                                   size_t n, uint64_t revision)
{
    MID_ENSURE(n <= AGENT_ENTRIES_MAX, MID_E_TOO_LARGE, "%zu entries (max %d)", n,
               AGENT_ENTRIES_MAX);
    cent **next = calloc(n ? n : 1, sizeof *next);
    entry *tbl = calloc(n ? n : 1, sizeof *tbl);
    if (!next || !tbl) {
        free(next);
        free(tbl);
        MID_BAIL(MID_E_NOMEM, "out of memory");
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        cent *e = NULL;
        if (!entries[i] || !mid_is_ok(cent_from_proto(entries[i], &e))) {
            LOG_WARN("agent cache: skipping entry %s: %s",
                     entries[i] && entries[i]->id ? entries[i]->id : "?", mid_errmsg());
            continue;
        }
        next[m++] = e;
    }
    qsort(next, m, sizeof *next, cmp_cent_id);
    /* drop duplicate ids (keep the first) */
    size_t w = 0;
    for (size_t i = 0; i < m; i++) {
        if (w > 0 && strcmp(next[w - 1]->id, next[i]->id) == 0) {
            LOG_WARN("agent cache: duplicate entry id %s", next[i]->id);
            cent_free(next[i]);
            continue;
        }
        next[w++] = next[i];
    }
    m = w;

    bool any = m != c->n_ents;
    for (size_t i = 0; i < m; i++) {
        cent *ne = next[i], *old = find(c, ne->id);
        if (!old) {
            ne->want = true;
            any = true;
            continue;
        }
        /* Keep the old record (SVID, in-flight state), take the new fields. */
        bool reissue = identity_differs(old, ne);
        if (old->revision != ne->revision) any = true;
        free(old->spiffe_id);
        sels_free(old->sels, old->n_sels);
        strv_free(old->dns, old->n_dns);
        old->spiffe_id = ne->spiffe_id;
        old->sels = ne->sels;
        old->n_sels = ne->n_sels;
        old->dns = ne->dns;
        old->n_dns = ne->n_dns;
        old->ttl = ne->ttl;
        old->revision = ne->revision;
        ne->spiffe_id = NULL;
        ne->sels = NULL;
        ne->n_sels = 0;
        ne->dns = NULL;
        ne->n_dns = 0;
        cent_free(ne);
        next[i] = old;
        if (reissue) {
            LOG_INFO("agent cache: entry %s changed; re-issuing %s", old->id, old->spiffe_id);
            old->gen++;
            old->want = true;
            old->fails = 0;
            old->retry_at_ms = 0;
            any = true;
        }
    }
    /* Free the entries that are gone (batches in flight find them missing). */
    for (size_t i = 0; i < c->n_ents; i++) {
        cent *old = c->ents[i];
        cent key = {.id = old->id}, *kp = &key;
        cent **hit = m > 0 ? bsearch(&kp, next, m, sizeof *next, cmp_cent_id) : NULL;
        bool kept = hit && *hit == old;
        if (!kept) {
            LOG_INFO("agent cache: entry %s (%s) removed", old->id, old->spiffe_id);
            cent_free(old);
            any = true;
        }
    }
    free(c->ents);
    free(c->match_tbl);
    c->ents = next;
    c->n_ents = m;
    c->match_tbl = tbl;
    rebuild_match_tbl(c);
    c->entries_rev = revision;
    if (any) changed(c);
    schedule(c);
    return mid_ok();
}

/* ---- denial reports ------------------------------------------------------------- */

static void denial_free(denial_rec *d)
{
    if (!d) return;
    free(d->reason);
    sels_free(d->sels, d->n_sels);
    free(d);
}

static const char *api_name(agent_api api)
{
    switch (api) {
    case AGENT_API_SDS: return "sds";
    case AGENT_API_WORKLOAD: return "workload";
    default: return "";
    }
}

/* A copy of `in` cut to `max` bytes. */
static char *dup_cut(const char *in, size_t max)
{
    size_t n = strlen(in);
    return strndup(in, n > max ? max : n);
}

static void report_fn(rpc_loop *loop, void *arg);

static void arm_report(agent_cache *c, int64_t delay_ms)
{
    if (c->report_timer || c->report || c->stopped || c->n_dq == 0 ||
        !c->signer->report_denials)
        return;
    if (!mid_is_ok(rpc_timer_add(c->loop, delay_ms, report_fn, c, &c->report_timer))) {
        LOG_WARN("agent cache: cannot arm the denial report timer: %s", mid_errmsg());
        c->report_timer = NULL;
    }
}

/* Delay before the next attempt after `fails` failed ones: the report
 * interval doubling to RETRY_MAX_MS, +-20 %. */
static int64_t report_backoff(const agent_cache *c, int fails)
{
    int64_t d = c->report_ms;
    for (int i = 1; i < fails && d < RETRY_MAX_MS; i++) d *= 2;
    if (d > RETRY_MAX_MS) d = RETRY_MAX_MS;
    return d + (int64_t)((rand_unit() - 0.5) * 0.4 * (double)d);
}

/* Queues a refusal for the server's audit log: coalesced into a queued
 * record of the same workload and cause from the last second, else
 * appended, else (queue full) counted as dropped. */
static void deny_note(agent_cache *c, agent_api api, uid_t uid, gid_t gid, pid_t pid,
                      const entry_selector *sels, size_t n_sels, const char *reason)
{
    int64_t now = time_now_ms();
    for (size_t i = c->n_dq; i > c->inflight; i--) {
        denial_rec *d = c->dq[i - 1];
        if (now - d->time_ms >= AGENT_DENIAL_COALESCE_MS) break;
        if (d->uid == (uint32_t)uid && d->gid == (uint32_t)gid && d->pid == (int32_t)pid &&
            d->api == api && strncmp(d->reason, reason, DENY_REASON_MAX) == 0 &&
            d->count < UINT32_MAX) {
            d->count++;
            return;
        }
    }
    if (c->n_dq == AGENT_DENIALS_QUEUE_MAX) {
        c->st.denials_dropped++;
        c->dropped_unreported++;
        if (c->dropped_unreported == 1)
            LOG_WARN("agent cache: denial report queue full (%d); dropping reports",
                     AGENT_DENIALS_QUEUE_MAX);
        return;
    }
    denial_rec *d = calloc(1, sizeof *d);
    size_t n = n_sels > DENY_SELECTORS_MAX ? DENY_SELECTORS_MAX : n_sels;
    bool ok = d != NULL;
    if (ok) {
        d->reason = dup_cut(reason, DENY_REASON_MAX);
        d->sels = calloc(n ? n : 1, sizeof *d->sels);
        ok = d->reason && d->sels;
    }
    for (size_t i = 0; ok && i < n; i++) {
        d->sels[i].type = dup_cut(sels[i].type, DENY_SEL_TYPE_MAX);
        d->sels[i].value = dup_cut(sels[i].value, DENY_SEL_VALUE_MAX);
        d->n_sels++;
        ok = d->sels[i].type && d->sels[i].value;
    }
    if (!ok) {
        denial_free(d);
        c->st.denials_dropped++;
        c->dropped_unreported++;
        LOG_ERROR("agent cache: out of memory queueing a denial report");
        return;
    }
    d->time_ms = now;
    d->uid = (uint32_t)uid;
    d->gid = (uint32_t)gid;
    d->pid = (int32_t)pid;
    d->api = api;
    d->count = 1;
    c->dq[c->n_dq++] = d;
    arm_report(c, c->report_ms);
}

/* Removes the queue's first n records. */
static void dq_pop(agent_cache *c, size_t n)
{
    for (size_t i = 0; i < n; i++) denial_free(c->dq[i]);
    memmove(c->dq, c->dq + n, (c->n_dq - n) * sizeof *c->dq);
    c->n_dq -= n;
}

static void report_done(const rpc_status *st, const Meshid__Agent__V1__ReportDenialsResponse *resp,
                        void *arg)
{
    report_call *rc = arg;
    agent_cache *c = rc->cache;
    if (!c) { /* the cache stopped; its records stay queued */
        free(rc);
        return;
    }
    c->report = NULL;
    c->inflight = 0;
    size_t done = 0;
    if (st->code == RPC_OK) {
        done = resp->accepted < 0 ? 0 : (size_t)resp->accepted;
        if (done > rc->n) done = rc->n;
        c->st.denials_reported += done;
        if (done < rc->n)
            LOG_WARN("agent cache: server audited %zu of %zu denial reports; re-sending the rest",
                     done, rc->n);
    } else if (st->code == RPC_INVALID_ARGUMENT) {
        /* never accepted as it is: keep the queue moving */
        LOG_ERROR("agent cache: server refused %zu denial reports (%s); dropping them", rc->n,
                  st->message ? st->message : "");
        c->st.denials_dropped += rc->n;
        done = rc->n;
    } else {
        LOG_WARN("agent cache: ReportDenials failed (%d: %s); %zu denial reports kept",
                 (int)st->code, st->message ? st->message : "", c->n_dq);
    }
    if (done == 0) c->dropped_unreported += rc->dropped; /* not named yet */
    dq_pop(c, done);
    if (done < rc->n) {
        c->st.report_errors++;
        c->report_fails++;
        arm_report(c, report_backoff(c, c->report_fails));
    } else {
        c->report_fails = 0;
        arm_report(c, c->report_ms);
    }
    free(rc);
}

/* Sends the queue's head. Returns false when the call could not start. */
static bool send_report(agent_cache *c)
{
    size_t n = c->n_dq < AGENT_DENIALS_BATCH_MAX ? c->n_dq : AGENT_DENIALS_BATCH_MAX;
    size_t n_sels = 0;
    for (size_t i = 0; i < n; i++) n_sels += c->dq[i]->n_sels;
    Meshid__Agent__V1__Denial *ds = calloc(n, sizeof *ds);
    Meshid__Agent__V1__Denial **dp = calloc(n, sizeof *dp);
    Meshid__Agent__V1__Selector *ss = calloc(n_sels ? n_sels : 1, sizeof *ss);
    Meshid__Agent__V1__Selector **sp = calloc(n_sels ? n_sels : 1, sizeof *sp);
    report_call *rc = calloc(1, sizeof *rc);
    char *first_reason = NULL;
    bool sent = false;
    if (!ds || !dp || !ss || !sp || !rc) {
        LOG_ERROR("agent cache: out of memory building a denial report");
        goto out;
    }
    if (c->dropped_unreported > 0) {
        size_t cap = strlen(c->dq[0]->reason) + 96;
        first_reason = malloc(cap);
        if (!first_reason) goto out;
        snprintf(first_reason, cap, "%s; %llu more denials dropped (agent report queue full)",
                 c->dq[0]->reason, (unsigned long long)c->dropped_unreported);
    }
    for (size_t i = 0, k = 0; i < n; i++) {
        const denial_rec *d = c->dq[i];
        meshid__agent__v1__denial__init(&ds[i]);
        ds[i].time_ms = d->time_ms;
        ds[i].uid = d->uid;
        ds[i].gid = d->gid;
        ds[i].pid = d->pid;
        ds[i].reason = i == 0 && first_reason ? first_reason : d->reason;
        ds[i].api = (char *)api_name(d->api);
        ds[i].count = d->count;
        ds[i].selectors = &sp[k];
        ds[i].n_selectors = d->n_sels;
        for (size_t j = 0; j < d->n_sels; j++, k++) {
            meshid__agent__v1__selector__init(&ss[k]);
            ss[k].type = (char *)d->sels[j].type;
            ss[k].value = (char *)d->sels[j].value;
            sp[k] = &ss[k];
        }
        dp[i] = &ds[i];
    }
    Meshid__Agent__V1__ReportDenialsRequest req = MESHID__AGENT__V1__REPORT_DENIALS_REQUEST__INIT;
    req.denials = dp;
    req.n_denials = n;
    rc->cache = c;
    rc->n = n;
    rc->dropped = c->dropped_unreported;
    mid_result r = c->signer->report_denials(c->signer_ctx, &req, report_done, rc);
    if (!mid_is_ok(r)) {
        LOG_DEBUG("agent cache: cannot send ReportDenials: %s", mid_errmsg());
        goto out;
    }
    c->report = rc;
    c->inflight = n;
    c->dropped_unreported = 0;
    c->st.report_calls++;
    rc = NULL;
    sent = true;
out:
    free(first_reason);
    free(ds);
    free(dp);
    free(ss);
    free(sp);
    free(rc);
    return sent;
}

static void report_fn(rpc_loop *loop, void *arg)
{
    (void)loop;
    agent_cache *c = arg;
    c->report_timer = NULL;
    if (c->stopped || c->report || c->n_dq == 0) return;
    if (!send_report(c)) {
        c->st.report_errors++;
        c->report_fails++;
        arm_report(c, report_backoff(c, c->report_fails));
    }
}

/* ---- lifecycle ------------------------------------------------------------------ */

mid_result agent_cache_new(const agent_cache_opts *o, agent_cache **out)
{
    *out = NULL;
    MID_ENSURE(o && o->loop && o->trust_domain && o->signer && o->signer->batch_sign, MID_E_INVALID,
               "agent cache: loop, trust domain and signer required");
    agent_cache *c = calloc(1, sizeof *c);
    MID_ENSURE_MEM(c);
    c->loop = o->loop;
    c->td = strdup(o->trust_domain);
    c->signer = o->signer;
    c->signer_ctx = o->signer_ctx;
    c->on_change = o->on_change;
    c->on_change_arg = o->on_change_arg;
    c->rot_frac = o->rotate_fraction > 0 ? o->rotate_fraction : 0.5;
    c->rot_jitter = o->rotate_jitter < 0 ? 0 : (o->rotate_jitter > 0 ? o->rotate_jitter : 0.1);
    c->report_ms = o->report_interval_ms > 0 ? o->report_interval_ms : AGENT_DENIALS_REPORT_MS;
    for (int i = 0; i < 3; i++) c->tags[i] = (src_tag){c, (agent_api)i};
    c->dq = calloc(AGENT_DENIALS_QUEUE_MAX, sizeof *c->dq);
    if (!c->td || !c->dq) {
        agent_cache_free(c);
        MID_BAIL(MID_E_NOMEM, "out of memory");
    }
    if (o->attestor) {
        c->attestor = o->attestor;
    } else {
        mid_result r = attest_unix_ctx_new(&c->attestor);
        if (!mid_is_ok(r)) {
            agent_cache_free(c);
            return r;
        }
        c->own_attestor = true;
    }
    *out = c;
    return mid_ok();
}

void agent_cache_stop(agent_cache *c)
{
    if (!c) return;
    c->stopped = true;
    if (c->tick) rpc_timer_cancel(c->loop, c->tick);
    if (c->flush) rpc_timer_cancel(c->loop, c->flush);
    c->tick = c->flush = NULL;
    for (batch *b = c->batches; b; b = b->next) b->cache = NULL;
    c->batches = NULL;
    for (size_t i = 0; i < c->n_ents; i++) c->ents[i]->inflight = false;
    if (c->report_timer) rpc_timer_cancel(c->loop, c->report_timer);
    c->report_timer = NULL;
    if (c->report) c->report->cache = NULL;
    c->report = NULL;
    c->inflight = 0;
}

void agent_cache_free(agent_cache *c)
{
    if (!c) return;
    agent_cache_stop(c);
    for (size_t i = 0; i < c->n_ents; i++) cent_free(c->ents[i]);
    free(c->ents);
    free(c->match_tbl);
    memo_clear(c);
    for (size_t i = 0; i < c->n_dq; i++) denial_free(c->dq[i]);
    free(c->dq);
    free(c->bundle_pem);
    sk_X509_pop_free(c->anchors, X509_free);
    tainted_free(c);
    if (c->own_attestor) attest_unix_ctx_free(c->attestor);
    free(c->td);
    free(c);
}

uint64_t agent_cache_bundle_sequence(const agent_cache *c) { return c->bundle_seq; }
uint64_t agent_cache_entries_revision(const agent_cache *c) { return c->entries_rev; }
const char *agent_cache_bundle_pem(const agent_cache *c) { return c->bundle_pem; }

void agent_cache_reissue_all(agent_cache *c)
{
    for (size_t i = 0; i < c->n_ents; i++) {
        cent *e = c->ents[i];
        e->want = true;
        e->fails = 0;
        e->retry_at_ms = 0;
    }
    schedule(c);
}

void agent_cache_get_stats(const agent_cache *c, agent_cache_stats *out)
{
    *out = c->st;
    out->denials_queued = c->n_dq;
    out->entries = c->n_ents;
    out->issued = 0;
    for (size_t i = 0; i < c->n_ents; i++)
        if (c->ents[i]->chain_pem) out->issued++;
}

mid_result agent_cache_svid_info(const agent_cache *c, const char *entry_id,
                                 const char **chain_pem, const char **serial, int64_t *not_after)
{
    const cent *e = find(c, entry_id);
    MID_ENSURE(e && e->chain_pem, MID_E_NOT_FOUND, "no SVID for entry %s", entry_id);
    if (chain_pem) *chain_pem = e->chain_pem;
    if (serial) *serial = e->serial;
    if (not_after) *not_after = e->not_after;
    return mid_ok();
}

/* ---- views --------------------------------------------------------------------- */

/* Default-identity order: SPIFFE ID, then entry id (both byte order). */
static int cmp_cent_order(const void *a, const void *b)
{
    const cent *x = *(cent *const *)a, *y = *(cent *const *)b;
    int d = strcmp(x->spiffe_id, y->spiffe_id);
    return d ? d : strcmp(x->id, y->id);
}

static void format_sels(const entry_selector *s, size_t n, char *out, size_t cap)
{
    size_t w = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && w + 1 < cap; i++) {
        int k = snprintf(out + w, cap - w, "%s%s:%s", i ? " " : "", s[i].type, s[i].value);
        if (k < 0) break;
        w += (size_t)k;
    }
    if (w >= cap && cap > 4) memcpy(out + cap - 4, "...", 4);
}

static mid_result view_sels(agent_cache *c, const entry_selector *sels, size_t n, sds_view **out)
{
    *out = NULL;
    size_t *idx = calloc(c->n_ents ? c->n_ents : 1, sizeof *idx);
    cent **hits = calloc(c->n_ents ? c->n_ents : 1, sizeof *hits);
    char *key = NULL;
    sds_view *v = NULL;
    size_t nm = 0, nh = 0;
    mid_result r = MID_OK_RESULT;
    MID_CHECK(r, idx && hits, MID_E_NOMEM, "out of memory");
    entry_match_all(c->match_tbl, c->n_ents, sels, n, idx, &nm);
    MID_CHECK(r, nm > 0, MID_E_DENIED, "no identity issued for this workload");
    for (size_t i = 0; i < nm; i++)
        if (c->ents[idx[i]]->chain_pem) hits[nh++] = c->ents[idx[i]];
    MID_CHECK(r, nh > 0 && c->bundle_pem, MID_E_NOT_FOUND,
              "the workload's identity is not issued yet");
    qsort(hits, nh, sizeof *hits, cmp_cent_order);

    /* memo key: the ids of the SVIDs served, in order */
    size_t klen = 1;
    for (size_t i = 0; i < nh; i++) klen += strlen(hits[i]->id) + 1;
    key = malloc(klen);
    MID_CHECK_MEM(r, key);
    key[0] = '\0';
    for (size_t i = 0, w = 0; i < nh; i++) {
        size_t l = strlen(hits[i]->id);
        memcpy(key + w, hits[i]->id, l);
        key[w + l] = '\n';
        w += l + 1;
        key[w] = '\0';
    }
    for (size_t i = 0; i < c->n_memo; i++) {
        if (strcmp(c->memo[i].key, key) == 0) {
            *out = sds_view_ref(c->memo[i].v);
            goto out;
        }
    }
    MID_TRY(r, sds_view_new(&v));
    for (size_t i = 0; i < nh; i++) {
        if (sds_view_svid_by_id(v, hits[i]->spiffe_id)) continue; /* first entry wins */
        MID_TRY(r, sds_view_add_svid(v, hits[i]->spiffe_id, hits[i]->chain_pem, hits[i]->key_pem,
                                     hits[i]->not_after));
    }
    MID_TRY(r, sds_view_add_bundle(v, c->td, c->bundle_pem, c->bundle_seq));
    if (c->n_memo == MEMO_MAX) memo_clear(c);
    c->memo[c->n_memo].key = key;
    c->memo[c->n_memo].v = sds_view_ref(v);
    c->n_memo++;
    key = NULL;
    *out = v;
    v = NULL;
out:
    if (v) sds_view_unref(v);
    free(key);
    free(idx);
    free(hits);
    return r;
}

mid_result agent_cache_view_for(agent_cache *c, const char *const *selectors, size_t n,
                                sds_view **out)
{
    *out = NULL;
    MID_ENSURE(n <= 4096, MID_E_TOO_LARGE, "too many selectors");
    entry_selector *s = calloc(n ? n : 1, sizeof *s);
    char **bufs = calloc(n ? n : 1, sizeof *bufs);
    mid_result r = MID_OK_RESULT;
    MID_CHECK(r, s && bufs, MID_E_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        size_t cap = strlen(selectors[i]) + 1;
        bufs[i] = malloc(cap);
        MID_CHECK_MEM(r, bufs[i]);
        MID_TRY(r, entry_selector_parse(selectors[i], bufs[i], cap, &s[i]));
    }
    r = view_sels(c, s, n, out);
out:
    for (size_t i = 0; bufs && i < n; i++) free(bufs[i]);
    free(bufs);
    free(s);
    return r;
}

/* ---- sds_source --------------------------------------------------------------- */

static void workload_free(void *ctx, sds_workload *w)
{
    (void)ctx;
    if (!w) return;
    attest_selectors_free(w->raw);
    free(w->sels);
    free(w);
}

static mid_result src_attest(void *ctx, const rpc_peer *peer, sds_workload **out)
{
    const src_tag *tag = ctx;
    agent_cache *c = tag->c;
    *out = NULL;
    if (!peer || peer->kind != RPC_PEER_UNIX) {
        /* not reported: without peer credentials there is no one to name */
        c->st.denials++;
        LOG_WARN("agent: denied a caller that is not on the Unix socket");
        MID_BAIL(MID_E_DENIED, "workload attestation needs a Unix socket peer");
    }
    attest_peer ap = {.uid = peer->uid, .gid = peer->gid, .pid = peer->pid};
    sds_workload *w = calloc(1, sizeof *w);
    MID_ENSURE_MEM(w);
    w->api = tag->api;
    w->uid = peer->uid;
    w->gid = peer->gid;
    w->pid = peer->pid;
    mid_result r = attest_unix(c->attestor, &ap, &w->raw);
    if (!mid_is_ok(r)) {
        char why[512];
        snprintf(why, sizeof why, "workload attestation failed: %s", mid_errmsg());
        c->st.denials++;
        LOG_WARN("agent: denied workload uid=%lu gid=%lu pid=%ld: %s", (unsigned long)peer->uid,
                 (unsigned long)peer->gid, (long)peer->pid, why);
        deny_note(c, tag->api, peer->uid, peer->gid, peer->pid, NULL, 0, why);
        workload_free(c, w);
        MID_BAIL(MID_E_DENIED, "workload attestation failed (uid %lu)", (unsigned long)peer->uid);
    }
    w->n = attest_selectors_count(w->raw);
    w->sels = calloc(w->n ? w->n : 1, sizeof *w->sels);
    if (!w->sels) {
        workload_free(c, w);
        MID_BAIL(MID_E_NOMEM, "out of memory");
    }
    /* "unix:uid:1000" is {type "unix", value "uid:1000"} (identity/entry.h) */
    for (size_t i = 0; i < w->n; i++) {
        const char *f = attest_selectors_format(w->raw, i);
        const char *colon = strchr(f, ':');
        w->sels[i].type = "unix";
        w->sels[i].value = colon ? colon + 1 : f;
    }
    *out = w;
    return mid_ok();
}

static mid_result src_view(void *ctx, const sds_workload *w, sds_view **out)
{
    agent_cache *c = ((const src_tag *)ctx)->c;
    mid_result r = view_sels(c, w->sels, w->n, out);
    if (r.err == MID_E_DENIED) {
        char sels[SEL_LOG_MAX];
        format_sels(w->sels, w->n, sels, sizeof sels);
        c->st.denials++;
        LOG_WARN("agent: denied workload uid=%lu gid=%lu pid=%ld: no registration entry matches "
                 "selectors [%s]",
                 (unsigned long)w->uid, (unsigned long)w->gid, (long)w->pid, sels);
        deny_note(c, w->api, w->uid, w->gid, w->pid, w->sels, w->n,
                  "no registration entry matches the workload");
        MID_BAIL(MID_E_DENIED, "no identity issued for this workload (uid %lu)",
                 (unsigned long)w->uid);
    }
    return r;
}

static const sds_source_ops source_ops = {
    .attest = src_attest,
    .view = src_view,
    .workload_free = workload_free,
};

sds_source agent_cache_source(agent_cache *c)
{
    return agent_cache_source_for(c, AGENT_API_UNKNOWN);
}

sds_source agent_cache_source_for(agent_cache *c, agent_api api)
{
    if (api != AGENT_API_SDS && api != AGENT_API_WORKLOAD) api = AGENT_API_UNKNOWN;
    return (sds_source){.ops = &source_ops, .ctx = &c->tags[api]};
}
