/* The ADS server: StreamAggregatedResources (SotW) and
 * DeltaAggregatedResources (delta), one proxy per stream.
 *
 * Per stream we keep the proxy's node (for re-resolving), its current
 * snapshot, and per type: the subscription (a sorted name set, each name
 * with the version the client was last sent or holds), the latest nonce and
 * versions, and `evald`, the snapshot type version the state was last
 * evaluated against. A type is looked at again only when its snapshot type
 * version differs from `evald` or its subscription changed, so a push that
 * changed only endpoints costs one string compare per stream for CDS, LDS
 * and RDS. Within a changed SotW named type whose state is that of the
 * stream's previous snapshot, only the names that differ between the two
 * snapshots' resource sets are looked at (shared sets skipped when they are
 * the same object; a replaced shared set diffed once per push cycle for all
 * streams), and an ACK repeating the subscription is recognised without
 * sorting it. Delta wildcard subscriptions keep a reference to the snapshot the
 * client holds (`base`) and diff against it instead of storing a version
 * per resource. Subscribed names are interned once per server.
 *
 * Memory under fan-out: rpc_call_send copies each response into the call's
 * queue, so a push to N proxies would briefly hold N copies. A server-wide
 * budget of queued bytes bounds that: a stream that would go over it waits
 * (its state untouched, so later changes merge) and is evaluated again, all
 * types in push order, when other queues drain (rpc on_drain). Streams that
 * hold the budget without reading for stall_ms are ended.
 * See docs/xds.md, "ADS protocol behaviour". */
#include "meshcore/ads.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "lib/hash.h"
#include "lib/log.h"
#include "lib/quote.h"

typedef Envoy__Service__Discovery__V3__DiscoveryRequest disc_req;
typedef Envoy__Service__Discovery__V3__DiscoveryResponse disc_resp;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryRequest delta_req;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryResponse delta_resp;
typedef Envoy__Service__Discovery__V3__Resource resource_msg;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry irv_entry;
typedef Envoy__Config__Core__V3__Node node_msg;

#define DEFAULT_DEBOUNCE_MS 100
#define DEFAULT_MAX_NAMES 100000
#define DEFAULT_MAX_QUEUED ((size_t)32 << 20)
#define DEFAULT_STALL_MS 30000
#define NONCE_LEN 40
#define CP_ID_MAX 256
#define NODE_MAX (64u << 10) /* bytes of a packed Node we keep per stream */
#define PRINT_MAX 128        /* bytes of client text quoted in logs and statuses */
#define DIFF_CACHE_MAX 64    /* set pairs whose changed names a push cycle remembers */
#define DIFF_CACHE_MIN 64    /* resources (old + new) from which a pair's diff is cached */

/* sub.flags */
#define SUB_HELD 1u   /* SotW: in the last response at `held`; delta: client holds `held` */
#define SUB_ANYVER 2u /* delta: client holds a version that is not ours */
#define SUB_NEW 4u    /* SotW: added since the last evaluation */
#define SUB_ANSWER 8u /* delta: must be answered (subscribed, or unsubscribed under wildcard) */
#define SUB_DROP 16u  /* delta: unsubscribed under wildcard; drop after the answer */
#define SUB_SEEN 32u  /* same_names only; clear otherwise */

typedef struct {
    const char *name; /* interned (one reference) */
    uint64_t held;    /* version as a number (16 hex digits) */
    uint32_t flags;
} sub;

/* A sorted set of distinct names with per-name state. */
typedef struct {
    sub *v;
    size_t n;
} subset;

/* An interned name: streams of one mesh subscribe to the same few thousand
 * names, so each distinct name is stored once per server. */
typedef struct iname iname;
struct iname {
    iname *next;
    uint64_t hash;
    size_t refs;
    char s[];
};

typedef struct {
    bool active;      /* a request for this type arrived */
    bool wildcard;    /* LDS/CDS: everything */
    bool named;       /* SotW: some request named resources (legacy wildcard over) */
    bool dirty;       /* subscription changed since the last evaluation */
    bool wild_answer; /* wildcard just subscribed: answer even when empty */
    bool wild_sent;   /* SotW wildcard: sent_tver is valid */
    subset subs;
    subset irv;          /* delta wildcard: initial_resource_versions, until the first answer */
    xds_snapshot *base;  /* delta wildcard: the snapshot whose content the client holds */
    char evald[XDS_VERSION_LEN + 1];     /* type version at the last evaluation; "" none */
    char sent_tver[XDS_VERSION_LEN + 1]; /* SotW wildcard: type version of the last response */
    char nonce[NONCE_LEN];               /* latest nonce sent; "" none */
    char sent_version[XDS_VERSION_LEN + 1];  /* version that went with `nonce` */
    char acked_version[XDS_VERSION_LEN + 1]; /* last ACKed; "" none */
} tstate;

/* The names that differ between two sealed resource sets (in one only, or
 * in both with different versions), pointing into the sets, which the entry
 * holds references to. Remembered for one push cycle: every stream of a
 * mesh sees the same shared parts replaced by the same new ones. */
typedef struct {
    xds_rset *o, *n;
    const char **v;
    size_t k;
} set_diff;

typedef struct ads_stream ads_stream;
struct ads_stream {
    ads_server *a;
    rpc_call *call;
    ads_stream *prev, *next;
    uint64_t id;
    bool delta;
    node_msg *node; /* the first request's node (malloc'd by protobuf-c); NULL until then */
    uint8_t *node_bytes;
    size_t node_len;
    xds_snapshot *snap;
    tstate ts[XDS_TYPE_COUNT];
    /* queue budget */
    size_t queued;                 /* bytes sent since the queue last drained */
    int64_t busy_since;            /* ms (monotonic) when `queued` became non-zero */
    ads_stream *bprev, *bnext;     /* busy list (queued > 0), oldest first */
    bool waiting, wait_push;       /* in the wait list; waiting since a push */
    ads_stream *wprev, *wnext;     /* wait list, FIFO */
};

struct ads_server {
    rpc_loop *loop;
    MID_RESULT (*resolve)(void *ctx, const node_msg *node, const char *peer, xds_snapshot **out);
    void *ctx;
    int64_t debounce_ms;
    size_t max_names;
    bool full_eds_rds;
    char cp_id[CP_ID_MAX];
    Envoy__Config__Core__V3__ControlPlane cp;
    bool has_cp;
    ads_stream *streams;
    uint64_t next_id;
    uint64_t nonce_seq;
    char nonce_prefix[17];
    rpc_timer *timer;
    bool shut;
    size_t budget;
    int64_t stall_ms;
    size_t queued;
    ads_stream *busy_head, *busy_tail;
    ads_stream *wait_head, *wait_tail;
    rpc_timer *stall_timer;
    atomic_bool async_pending;
    ads_stats st;
    iname **names; /* hash buckets of interned names */
    size_t nbuckets, nnames;
    void (*ack_fn)(void *ctx, uint64_t stream_id, xds_type t, const char *version);
    void *ack_ctx;
    /* Scratch for building responses, reused (loop thread only). */
    size_t cap;
    Google__Protobuf__Any *anys;
    Google__Protobuf__Any **anyp;
    resource_msg *res;
    resource_msg **resp;
    char **removed;
    const xds_resource **found;
    uint8_t *mark;
    /* Push cycle (on_debounce) only: changed names per replaced set. */
    set_diff diffs[DIFF_CACHE_MAX];
    size_t ndiffs;
    const char **chg; /* scratch: changed names of one type */
    size_t nchg, chg_cap;
    size_t *idx;      /* scratch: subscription indexes */
    size_t idx_cap;
};

/* ---- queue budget ------------------------------------------------------------------ */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void busy_unlink(ads_server *a, ads_stream *s)
{
    if (!s->queued) return;
    if (s->bprev) s->bprev->bnext = s->bnext;
    else a->busy_head = s->bnext;
    if (s->bnext) s->bnext->bprev = s->bprev;
    else a->busy_tail = s->bprev;
    s->bprev = s->bnext = NULL;
    a->queued -= s->queued;
    s->queued = 0;
}

/* Accounts `bytes` just queued on s. */
static void busy_add(ads_server *a, ads_stream *s, size_t bytes)
{
    if (!s->queued) {
        s->busy_since = now_ms();
        s->bprev = a->busy_tail;
        s->bnext = NULL;
        if (a->busy_tail) a->busy_tail->bnext = s;
        else a->busy_head = s;
        a->busy_tail = s;
    }
    if (!bytes) bytes = 1; /* an empty response still occupies the queue */
    s->queued += bytes;
    a->queued += bytes;
}

static void wait_unlink(ads_server *a, ads_stream *s)
{
    if (!s->waiting) return;
    if (s->wprev) s->wprev->wnext = s->wnext;
    else a->wait_head = s->wnext;
    if (s->wnext) s->wnext->wprev = s->wprev;
    else a->wait_tail = s->wprev;
    s->wprev = s->wnext = NULL;
    s->waiting = false;
    a->st.waiting--;
}

static void on_stall_check(rpc_loop *loop, void *arg);

static void stall_timer_arm(ads_server *a)
{
    if (a->stall_timer || a->shut || !a->wait_head) return;
    int64_t step = a->stall_ms / 2 > 10 ? a->stall_ms / 2 : 10;
    if (!mid_is_ok(rpc_timer_add(a->loop, step, on_stall_check, a, &a->stall_timer))) {
        a->stall_timer = NULL;
        LOG_WARN("ads: cannot arm the stall timer: %s", mid_errmsg());
    }
}

/* True when s may queue more now; otherwise s joins the wait list (all
 * its types are evaluated again, in order, when it resumes). */
static bool budget_ok(ads_stream *s, bool push)
{
    ads_server *a = s->a;
    if (s->waiting) {
        s->wait_push |= push;
        return false;
    }
    if (a->queued < a->budget) return true;
    s->waiting = true;
    s->wait_push = push;
    s->wprev = a->wait_tail;
    s->wnext = NULL;
    if (a->wait_tail) a->wait_tail->wnext = s;
    else a->wait_head = s;
    a->wait_tail = s;
    a->st.waiting++;
    a->st.waits++;
    stall_timer_arm(a);
    return false;
}

static void stream_eval_all(ads_stream *s, bool push, const xds_snapshot *old);

/* Lets waiting streams continue while the budget allows. */
static void resume_waiters(ads_server *a)
{
    while (a->wait_head && a->queued < a->budget && !a->shut) {
        ads_stream *s = a->wait_head;
        bool push = s->wait_push;
        wait_unlink(a, s);
        stream_eval_all(s, push, NULL);
    }
}

/* ---- helpers ------------------------------------------------------------------- */

/* Client-supplied text made safe for logs and statuses (truncated). */
static const char *printable(const char *s, char *buf, size_t cap)
{
    return quote_printable(s, PRINT_MAX, buf, cap);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Exactly XDS_VERSION_LEN hex digits -> number. */
static bool ver_parse(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    for (size_t i = 0; i < XDS_VERSION_LEN; i++) {
        int h = s ? hexval(s[i]) : -1;
        if (h < 0) return false;
        v = (v << 4) | (uint64_t)h;
    }
    if (s[XDS_VERSION_LEN] != '\0') return false;
    *out = v;
    return true;
}

static uint64_t res_ver(const xds_resource *r)
{
    uint64_t v = 0;
    if (!ver_parse(r->version, &v)) LOG_ERROR("ads: resource with a malformed version");
    return v;
}

static const char *peer_id(const ads_stream *s)
{
    const rpc_peer *p = rpc_call_peer(s->call);
    return p && p->kind == RPC_PEER_TLS ? p->spiffe_id : NULL;
}

static const char *node_id(const ads_stream *s)
{
    return s->node && s->node->id ? s->node->id : "";
}

static void next_nonce(ads_server *a, char out[NONCE_LEN])
{
    snprintf(out, NONCE_LEN, "%s-%" PRIx64, a->nonce_prefix, ++a->nonce_seq);
}

static bool wildcard_type(xds_type t)
{
    return t == XDS_CDS || t == XDS_LDS;
}

static void stream_abort(ads_stream *s, rpc_code code, const char *msg)
{
    if (rpc_call_is_closed(s->call)) return;
    s->a->st.aborted++;
    rpc_call_abort(s->call, code, msg);
}

static void abort_nomem(ads_stream *s)
{
    char p[PRINT_MAX * 4 + 8];
    LOG_WARN("ads: out of memory serving node '%s'", printable(node_id(s), p, sizeof p));
    stream_abort(s, RPC_RESOURCE_EXHAUSTED, "out of memory");
}

/* Sends or ends the stream per the runtime's answer; true when queued. */
static bool stream_send(ads_stream *s, const ProtobufCMessage *m)
{
    size_t bytes = protobuf_c_message_get_packed_size(m);
    if (mid_is_ok(rpc_call_send(s->call, m))) {
        busy_add(s->a, s, bytes);
        return true;
    }
    char p[PRINT_MAX * 4 + 8];
    switch (mid_errcode()) {
    case MID_E_BUSY:
        LOG_WARN("ads: stream %" PRIu64 " (node '%s') is not reading; ending it", s->id,
                 printable(node_id(s), p, sizeof p));
        stream_abort(s, RPC_RESOURCE_EXHAUSTED, "client is not reading");
        break;
    case MID_E_TOO_LARGE:
        LOG_WARN("ads: response for node '%s' over the message size limit: %s",
                 printable(node_id(s), p, sizeof p), mid_errmsg());
        stream_abort(s, RPC_RESOURCE_EXHAUSTED, "response over the message size limit");
        break;
    case MID_E_STATE:
        break; /* the client is gone; on_done follows */
    default:
        stream_abort(s, RPC_INTERNAL, "cannot send response");
        break;
    }
    return false;
}

static MID_RESULT scratch_reserve(ads_server *a, size_t n)
{
    if (n <= a->cap) return mid_ok();
    size_t cap = a->cap ? a->cap : 64;
    while (cap < n) cap *= 2;
#define GROW(field)                                                           \
    do {                                                                      \
        void *p_ = realloc(a->field, cap * sizeof *a->field);                 \
        MID_ENSURE_MEM(p_);                                                   \
        a->field = p_;                                                        \
    } while (0)
    GROW(anys);
    GROW(anyp);
    GROW(res);
    GROW(resp);
    GROW(removed);
    GROW(found);
    GROW(mark);
#undef GROW
    a->cap = cap;
    return mid_ok();
}

/* The k-th Any of the scratch, wrapping resource r (no copy). */
static Google__Protobuf__Any *any_of(ads_server *a, size_t k, xds_type t, const xds_resource *r)
{
    Google__Protobuf__Any *any = &a->anys[k];
    *any = (Google__Protobuf__Any)GOOGLE__PROTOBUF__ANY__INIT;
    any->type_url = (char *)xds_type_url(t);
    any->value.data = (uint8_t *)r->bytes;
    any->value.len = r->len;
    a->anyp[k] = any;
    return any;
}

/* ---- name sets -------------------------------------------------------------------- */

static iname *iname_of(const char *s)
{
    return (iname *)(void *)(s - offsetof(iname, s));
}

/* A reference to the interned copy of `name`; NULL when out of memory. */
static const char *intern(ads_server *a, const char *name)
{
    uint64_t h = hash_str(name);
    if (a->nbuckets) {
        for (iname *e = a->names[h & (a->nbuckets - 1)]; e; e = e->next) {
            if (e->hash == h && strcmp(e->s, name) == 0) {
                e->refs++;
                return e->s;
            }
        }
    }
    if (a->nnames >= a->nbuckets) { /* grow: load factor <= 1 */
        size_t nb = a->nbuckets ? a->nbuckets * 2 : 1024;
        iname **b = calloc(nb, sizeof *b);
        if (!b) return NULL;
        for (size_t i = 0; i < a->nbuckets; i++) {
            for (iname *e = a->names[i], *next; e; e = next) {
                next = e->next;
                e->next = b[e->hash & (nb - 1)];
                b[e->hash & (nb - 1)] = e;
            }
        }
        free(a->names);
        a->names = b;
        a->nbuckets = nb;
    }
    size_t len = strlen(name);
    iname *e = malloc(sizeof *e + len + 1);
    if (!e) return NULL;
    memcpy(e->s, name, len + 1);
    e->hash = h;
    e->refs = 1;
    e->next = a->names[h & (a->nbuckets - 1)];
    a->names[h & (a->nbuckets - 1)] = e;
    a->nnames++;
    return e->s;
}

static void release(ads_server *a, const char *s)
{
    iname *e = iname_of(s);
    if (--e->refs) return;
    iname **pp = &a->names[e->hash & (a->nbuckets - 1)];
    while (*pp != e) pp = &(*pp)->next;
    *pp = e->next;
    a->nnames--;
    free(e);
}

static int cmp_strp(const void *x, const void *y)
{
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

static int cmp_key_sub(const void *key, const void *elem)
{
    return strcmp((const char *)key, ((const sub *)elem)->name);
}

static sub *subset_find(const subset *ss, const char *name)
{
    return ss->n ? bsearch(name, ss->v, ss->n, sizeof *ss->v, cmp_key_sub) : NULL;
}

static void subset_free(ads_server *a, subset *ss)
{
    for (size_t i = 0; i < ss->n; i++) release(a, ss->v[i].name);
    free(ss->v);
    *ss = (subset){0};
}

/* Replaces *ss by the distinct names of `names` (sorted in place), keeping
 * the state of names already in the set; names that are new get `newflags`.
 * `names` may point at the set's own names. *changed: the name set differs.
 * MID_E_NOMEM leaves the set unchanged. */
static MID_RESULT subset_replace(ads_server *a, subset *ss, const char **names, size_t n,
                                 uint32_t newflags, bool *changed)
{
    if (n > 1) qsort(names, n, sizeof *names, cmp_strp);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (m == 0 || strcmp(names[m - 1], names[i]) != 0) names[m++] = names[i];
    *changed = false;
    if (m == ss->n) {
        size_t i = 0;
        while (i < m && strcmp(ss->v[i].name, names[i]) == 0) i++;
        if (i == m) return mid_ok();
    }
    *changed = true;
    sub *v = malloc((m ? m : 1) * sizeof *v);
    MID_ENSURE_MEM(v);
    /* The old set stays untouched until every new name is interned. */
    size_t j = 0;
    for (size_t i = 0; i < m; i++) {
        while (j < ss->n && strcmp(ss->v[j].name, names[i]) < 0) j++;
        if (j < ss->n && strcmp(ss->v[j].name, names[i]) == 0) {
            v[i] = ss->v[j]; /* shares the old reference; see below */
            continue;
        }
        v[i] = (sub){.name = intern(a, names[i]), .flags = newflags};
        if (!v[i].name) {
            for (size_t k = 0; k < i; k++)
                if (!subset_find(ss, v[k].name)) release(a, v[k].name);
            free(v);
            MID_BAIL(MID_E_NOMEM, "out of memory");
        }
    }
    /* Old names that stay hand their reference to v; the others go. */
    const subset nv = {.v = v, .n = m};
    for (size_t k = 0; k < ss->n; k++)
        if (!subset_find(&nv, ss->v[k].name)) release(a, ss->v[k].name);
    free(ss->v);
    ss->v = v;
    ss->n = m;
    return mid_ok();
}

/* Drops the names flagged SUB_DROP. */
static void subset_drop_flagged(ads_server *a, subset *ss)
{
    size_t m = 0;
    for (size_t i = 0; i < ss->n; i++) {
        if (ss->v[i].flags & SUB_DROP) release(a, ss->v[i].name);
        else ss->v[m++] = ss->v[i];
    }
    ss->n = m;
}

/* ---- resolve ----------------------------------------------------------------------- */

/* Asks the resolver for the stream's snapshot. False when the stream was
 * ended; *changed: a different snapshot object than before. */
static bool stream_resolve(ads_stream *s, bool *changed)
{
    ads_server *a = s->a;
    xds_snapshot *n = NULL;
    a->st.resolves++;
    *changed = false;
    /* On a TLS port the certificate is the identity: a call that came in
     * without one (the node API's port lets such calls in) must not fall
     * back to the node's self-asserted metadata. */
    const rpc_peer *peer = rpc_call_peer(s->call);
    if (peer && peer->kind == RPC_PEER_TLS && peer->spiffe_id == NULL) {
        stream_abort(s, RPC_UNAUTHENTICATED,
                     "xDS on a TLS port needs a client certificate (the proxy's SVID)");
        return false;
    }
    mid_result r = a->resolve(a->ctx, s->node, peer_id(s), &n);
    if (!mid_is_ok(r)) {
        char msg[512], p[PRINT_MAX * 4 + 8];
        snprintf(msg, sizeof msg, "%s", mid_errmsg());
        rpc_code code;
        switch (r.err) {
        case MID_E_DENIED: code = RPC_PERMISSION_DENIED; break;
        case MID_E_INVALID: code = RPC_INVALID_ARGUMENT; break;
        case MID_E_NOT_FOUND: code = RPC_FAILED_PRECONDITION; break;
        case MID_E_NOMEM:
            code = RPC_RESOURCE_EXHAUSTED;
            snprintf(msg, sizeof msg, "out of memory");
            break;
        default:
            LOG_WARN("ads: cannot resolve node '%s': %s", printable(node_id(s), p, sizeof p), msg);
            code = RPC_UNAVAILABLE;
            snprintf(msg, sizeof msg, "cannot build the proxy's configuration");
            break;
        }
        LOG_INFO("ads: ending stream %" PRIu64 " of node '%s': %s", s->id,
                 printable(node_id(s), p, sizeof p), msg);
        stream_abort(s, code, msg);
        return false;
    }
    if (!n || xds_snapshot_version(n, XDS_CDS)[0] == '\0') {
        xds_snapshot_unref(n);
        LOG_ERROR("ads: resolver returned no sealed snapshot");
        stream_abort(s, RPC_INTERNAL, "internal error");
        return false;
    }
    if (n == s->snap) {
        xds_snapshot_unref(n);
        return true;
    }
    xds_snapshot_unref(s->snap);
    s->snap = n;
    *changed = true;
    return true;
}

/* Checks the request's type; false (stream ended) when not served. */
static bool type_ok(ads_stream *s, const char *url, xds_type *t)
{
    if (mid_is_ok(xds_type_from_url(url, t))) return true;
    char msg[512];
    snprintf(msg, sizeof msg, "%s", mid_errmsg());
    stream_abort(s, RPC_INVALID_ARGUMENT, msg);
    return false;
}

/* First request: requires a node, keeps it and resolves the snapshot.
 * Later requests: a node, when present, must be the same. False when the
 * stream was ended. */
static bool node_ok(ads_stream *s, const node_msg *node)
{
    size_t len = node ? protobuf_c_message_get_packed_size(&node->base) : 0;
    if (node && len > NODE_MAX) {
        stream_abort(s, RPC_INVALID_ARGUMENT, "node too large");
        return false;
    }
    if (s->node) {
        if (!node) return true;
        uint8_t *buf = malloc(len ? len : 1);
        if (!buf) {
            abort_nomem(s);
            return false;
        }
        protobuf_c_message_pack(&node->base, buf);
        bool same = len == s->node_len && memcmp(buf, s->node_bytes, len) == 0;
        free(buf);
        if (!same) stream_abort(s, RPC_INVALID_ARGUMENT, "node changed within the stream");
        return same;
    }
    if (!node) {
        stream_abort(s, RPC_INVALID_ARGUMENT, "the first request of a stream must carry a node");
        return false;
    }
    s->node_bytes = malloc(len ? len : 1);
    if (!s->node_bytes) {
        abort_nomem(s);
        return false;
    }
    protobuf_c_message_pack(&node->base, s->node_bytes);
    s->node_len = len;
    s->node = envoy__config__core__v3__node__unpack(NULL, len, s->node_bytes);
    if (!s->node) {
        abort_nomem(s);
        return false;
    }
    bool changed;
    return stream_resolve(s, &changed);
}

/* Checks client-supplied names; false (stream ended) when one is too long. */
static bool names_ok(ads_stream *s, char **names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strnlen(names[i], ADS_NAME_MAX + 1) > ADS_NAME_MAX) {
            stream_abort(s, RPC_INVALID_ARGUMENT, "resource name too long");
            return false;
        }
    }
    return true;
}

static bool count_ok(ads_stream *s, xds_type t, size_t n)
{
    if (n <= s->a->max_names) return true;
    char msg[128];
    snprintf(msg, sizeof msg, "too many %s resource names (max %zu)", xds_type_short(t),
             s->a->max_names);
    stream_abort(s, RPC_INVALID_ARGUMENT, msg);
    return false;
}

/* ---- ACK / NACK ------------------------------------------------------------------- */

static void record_ack(ads_stream *s, xds_type t)
{
    tstate *ts = &s->ts[t];
    s->a->st.acks++;
    memcpy(ts->acked_version, ts->sent_version, sizeof ts->acked_version);
    if (s->a->ack_fn) s->a->ack_fn(s->a->ack_ctx, s->id, t, ts->acked_version);
}

static void record_nack(ads_stream *s, xds_type t, const Google__Rpc__Status *err)
{
    tstate *ts = &s->ts[t];
    char p[PRINT_MAX * 4 + 8], q[PRINT_MAX * 4 + 8];
    s->a->st.nacks++;
    LOG_WARN("ads: node '%s' rejected %s version %s (code %d): %s; keeping %s",
             printable(node_id(s), q, sizeof q), xds_type_short(t), ts->sent_version, (int)err->code,
             printable(err->message, p, sizeof p),
             ts->acked_version[0] ? ts->acked_version : "(nothing accepted yet)");
}

/* Sends response m of type t (SotW or delta) carrying `nonce` and the type
 * version tv; once it is queued, records both as the stream's last sent for
 * t and counts it (as a push when a notify, not a request, caused it). */
static void send_resp(ads_stream *s, xds_type t, const ProtobufCMessage *m,
                      const char nonce[NONCE_LEN], const char *tv, bool push)
{
    if (!stream_send(s, m)) return;
    tstate *ts = &s->ts[t];
    memcpy(ts->nonce, nonce, NONCE_LEN);
    snprintf(ts->sent_version, sizeof ts->sent_version, "%s", tv);
    s->a->st.responses++;
    if (push) s->a->st.pushes++;
}

/* ---- SotW --------------------------------------------------------------------------- */

static void sotw_send_resp(ads_stream *s, xds_type t, size_t n, bool push)
{
    ads_server *a = s->a;
    const char *tv = xds_snapshot_version(s->snap, t);
    char nonce[NONCE_LEN];
    next_nonce(a, nonce);
    disc_resp resp = ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_RESPONSE__INIT;
    resp.version_info = (char *)tv;
    resp.type_url = (char *)xds_type_url(t);
    resp.nonce = nonce;
    resp.resources = a->anyp;
    resp.n_resources = n;
    if (a->has_cp) resp.control_plane = &a->cp;
    send_resp(s, t, &resp.base, nonce, tv, push);
}

static void sotw_eval_wildcard(ads_stream *s, xds_type t, bool push)
{
    ads_server *a = s->a;
    tstate *ts = &s->ts[t];
    const char *tv = xds_snapshot_version(s->snap, t);
    if (!ts->dirty && ts->wild_sent && strcmp(ts->sent_tver, tv) == 0) return;
    size_t n = xds_snapshot_count(s->snap, t);
    if (!mid_is_ok(scratch_reserve(a, n))) {
        abort_nomem(s);
        return;
    }
    for (size_t i = 0; i < n; i++) any_of(a, i, t, xds_snapshot_at(s->snap, t, i));
    sotw_send_resp(s, t, n, push);
    if (rpc_call_is_closed(s->call)) return;
    ts->wild_sent = true;
    memcpy(ts->sent_tver, tv, sizeof ts->sent_tver);
    /* The client now holds everything: so in particular every named one. */
    for (size_t i = 0; i < ts->subs.n; i++) {
        sub *u = &ts->subs.v[i];
        const xds_resource *r = xds_snapshot_find(s->snap, t, u->name);
        u->flags &= ~(uint32_t)SUB_HELD;
        if (r) {
            u->flags |= SUB_HELD;
            u->held = res_ver(r);
        }
    }
}

static void sotw_eval_named(ads_stream *s, xds_type t, bool push)
{
    ads_server *a = s->a;
    tstate *ts = &s->ts[t];
    bool complete = wildcard_type(t) || a->full_eds_rds;
    if (!mid_is_ok(scratch_reserve(a, ts->subs.n))) {
        abort_nomem(s);
        return;
    }
    bool send = false;
    for (size_t i = 0; i < ts->subs.n; i++) {
        sub *u = &ts->subs.v[i];
        const xds_resource *r = xds_snapshot_find(s->snap, t, u->name);
        a->found[i] = r;
        bool differs = r ? (!(u->flags & SUB_HELD) || (u->flags & SUB_NEW) || u->held != res_ver(r))
                         : (u->flags & SUB_HELD) != 0;
        a->mark[i] = differs && r; /* partial responses carry these */
        /* A deleted LDS/CDS resource changes the complete set; a deleted
         * EDS/RDS resource is dropped through its parent. */
        if (differs && (r || wildcard_type(t))) send = true;
    }
    size_t n = 0;
    if (send) {
        for (size_t i = 0; i < ts->subs.n; i++) {
            if (!a->found[i] || (!complete && !a->mark[i])) continue;
            a->mark[i] = 1;
            any_of(a, n++, t, a->found[i]);
        }
        sotw_send_resp(s, t, n, push);
        if (rpc_call_is_closed(s->call)) return;
    }
    for (size_t i = 0; i < ts->subs.n; i++) {
        sub *u = &ts->subs.v[i];
        if (!a->found[i]) u->flags &= ~(uint32_t)SUB_HELD; /* sent again if it comes back */
        else if (send && a->mark[i]) {
            u->flags |= SUB_HELD;
            u->held = res_ver(a->found[i]);
        }
    }
}

/* ---- changed names between two snapshots ------------------------------------------ */

static bool chg_push(ads_server *a, const char *name)
{
    if (a->nchg == a->chg_cap) {
        size_t cap = a->chg_cap ? a->chg_cap * 2 : 64;
        const char **v = realloc(a->chg, cap * sizeof *v);
        if (!v) return false;
        a->chg = v;
        a->chg_cap = cap;
    }
    a->chg[a->nchg++] = name;
    return true;
}

/* Appends to a->chg the names that differ between the sealed sets o and n
 * (a sorted merge). False when out of memory. */
static bool diff_sets(ads_server *a, const xds_rset *o, const xds_rset *n)
{
    size_t no = xds_rset_count(o), nn = xds_rset_count(n), i = 0, j = 0;
    while (i < no || j < nn) {
        const xds_resource *x = i < no ? xds_rset_at(o, i) : NULL;
        const xds_resource *y = j < nn ? xds_rset_at(n, j) : NULL;
        int c = !x ? 1 : !y ? -1 : strcmp(x->name, y->name);
        bool ok = true;
        if (c < 0) {
            ok = chg_push(a, x->name);
            i++;
        } else if (c > 0) {
            ok = chg_push(a, y->name);
            j++;
        } else {
            if (memcmp(x->version, y->version, XDS_VERSION_LEN) != 0) ok = chg_push(a, y->name);
            i++;
            j++;
        }
        if (!ok) return false;
    }
    return true;
}

/* Appends the changed names of the pair (o, n), from the push cycle's
 * cache when the sets are large (shared parts). False when out of memory. */
static bool diff_pair(ads_server *a, xds_rset *o, xds_rset *n)
{
    if (o == n) return true;
    size_t no = xds_rset_count(o), nn = xds_rset_count(n);
    if (no + nn == 0) return true;
    if (no + nn < DIFF_CACHE_MIN) return diff_sets(a, o, n);
    for (size_t i = 0; i < a->ndiffs; i++) {
        const set_diff *d = &a->diffs[i];
        if (d->o != o || d->n != n) continue;
        for (size_t k = 0; k < d->k; k++)
            if (!chg_push(a, d->v[k])) return false;
        return true;
    }
    size_t start = a->nchg;
    if (!diff_sets(a, o, n)) return false;
    if (a->ndiffs == DIFF_CACHE_MAX) return true; /* not remembered: computed again */
    size_t k = a->nchg - start;
    const char **v = malloc((k ? k : 1) * sizeof *v);
    if (!v) return true;
    if (k) memcpy(v, a->chg + start, k * sizeof *v);
    a->diffs[a->ndiffs++] = (set_diff){.o = xds_rset_ref(o), .n = xds_rset_ref(n), .v = v, .k = k};
    return true;
}

static void diffs_clear(ads_server *a)
{
    for (size_t i = 0; i < a->ndiffs; i++) {
        xds_rset_unref(a->diffs[i].o);
        xds_rset_unref(a->diffs[i].n);
        free(a->diffs[i].v);
    }
    a->ndiffs = 0;
}

static int cmp_size(const void *x, const void *y)
{
    size_t p = *(const size_t *)x, q = *(const size_t *)y;
    return p < q ? -1 : p > q;
}

/* The subscription indexes (into a->idx[0..*k), ascending, distinct) of the
 * names that differ between old's and the current snapshot's sets of type t,
 * and scratch for *k resources. False when the set layouts differ, too many
 * names changed for this to pay, or out of memory. */
static bool changed_subs(ads_stream *s, xds_type t, const xds_snapshot *old, size_t *k)
{
    ads_server *a = s->a;
    tstate *ts = &s->ts[t];
    size_t nsets = xds_snapshot_set_count(s->snap, t);
    if (nsets == 0 || nsets != xds_snapshot_set_count(old, t)) return false;
    a->nchg = 0;
    for (size_t i = 0; i < nsets; i++)
        if (!diff_pair(a, xds_snapshot_set(old, t, i), xds_snapshot_set(s->snap, t, i))) return false;
    if (a->nchg > ts->subs.n / 4 + 8) return false; /* the full pass is as cheap */
    if (a->nchg > a->idx_cap) {
        size_t *v = realloc(a->idx, a->nchg * sizeof *v);
        if (!v) return false;
        a->idx = v;
        a->idx_cap = a->nchg;
    }
    size_t m = 0;
    for (size_t i = 0; i < a->nchg; i++) {
        const sub *u = subset_find(&ts->subs, a->chg[i]);
        if (u) a->idx[m++] = (size_t)(u - ts->subs.v);
    }
    if (m > 1) qsort(a->idx, m, sizeof *a->idx, cmp_size);
    size_t d = 0; /* distinct, in subscription (name) order */
    for (size_t i = 0; i < m; i++)
        if (d == 0 || a->idx[d - 1] != a->idx[i]) a->idx[d++] = a->idx[i];
    *k = d;
    return mid_is_ok(scratch_reserve(a, d));
}

/* sotw_eval_named for a stream whose state of type t is exactly what its
 * evaluation against `old` left (no subscription change since): only names
 * that differ between old's and the current snapshot's sets of t can need
 * sending, and sets both hold (the same object) are skipped. False (nothing
 * done) when this does not apply: complete-set types, a different set
 * layout, many changed names, out of memory; the caller then evaluates
 * every name. */
static bool sotw_eval_changed(ads_stream *s, xds_type t, bool push, const xds_snapshot *old)
{
    ads_server *a = s->a;
    tstate *ts = &s->ts[t];
    if (wildcard_type(t) || a->full_eds_rds) return false; /* complete responses */
    size_t k = 0;
    if (!changed_subs(s, t, old, &k)) return false;
    size_t n = 0;
    for (size_t i = 0; i < k; i++) {
        const sub *u = &ts->subs.v[a->idx[i]];
        const xds_resource *r = xds_snapshot_find(s->snap, t, u->name);
        a->found[i] = r;
        /* As in sotw_eval_named; without a deleted-resource send (the
         * parent drops it) and without SUB_NEW (the subscription is clean). */
        a->mark[i] = r && (!(u->flags & SUB_HELD) || u->held != res_ver(r));
        if (a->mark[i]) any_of(a, n++, t, r);
    }
    if (n) {
        sotw_send_resp(s, t, n, push);
        if (rpc_call_is_closed(s->call)) return true;
    }
    for (size_t i = 0; i < k; i++) {
        sub *u = &ts->subs.v[a->idx[i]];
        if (!a->found[i]) u->flags &= ~(uint32_t)SUB_HELD;
        else if (a->mark[i]) {
            u->flags |= SUB_HELD;
            u->held = res_ver(a->found[i]);
        }
    }
    return true;
}

/* Sends type t if something the stream subscribes changed (or the
 * subscription did). `old`, when not NULL, is the snapshot the stream held
 * before this push; when the type's state is that of its evaluation against
 * `old`, only what changed between the two is looked at. */
static void sotw_eval(ads_stream *s, xds_type t, bool push, const xds_snapshot *old)
{
    tstate *ts = &s->ts[t];
    if (!ts->active || !s->snap || rpc_call_is_closed(s->call)) return;
    const char *tv = xds_snapshot_version(s->snap, t);
    if (!ts->dirty && ts->evald[0] && strcmp(ts->evald, tv) == 0) return;
    if (!budget_ok(s, push)) return; /* state untouched: evaluated again on resume */
    bool clean = !ts->dirty && old && ts->evald[0] && strcmp(ts->evald, xds_snapshot_version(old, t)) == 0;
    if (ts->wildcard) sotw_eval_wildcard(s, t, push);
    else if (!clean || !sotw_eval_changed(s, t, push, old)) sotw_eval_named(s, t, push);
    if (rpc_call_is_closed(s->call)) return;
    if (ts->dirty) /* SUB_NEW is only set along with `dirty` */
        for (size_t i = 0; i < ts->subs.n; i++) ts->subs.v[i].flags &= ~(uint32_t)SUB_NEW;
    ts->dirty = false;
    memcpy(ts->evald, tv, sizeof ts->evald);
}

/* True when the n names (none NULL) are exactly the set's names: the same
 * sequence (a client repeating its sorted subscription: n compares), or
 * each found once (any order: n lookups). No allocation, no sort: an ACK
 * repeating the subscription costs that much and no more. */
static bool same_names(subset *ss, char **names, size_t n)
{
    if (n != ss->n) return false;
    size_t i = 0;
    while (i < n && strcmp(names[i], ss->v[i].name) == 0) i++;
    if (i == n) return true;
    bool same = true;
    for (size_t j = i; j < n && same; j++) {
        sub *u = subset_find(ss, names[j]);
        /* a name outside the set, "*", or one given twice (so another is missing) */
        if (!u || (u->flags & SUB_SEEN) || (size_t)(u - ss->v) < i) same = false;
        else u->flags |= SUB_SEEN;
    }
    for (size_t j = i; j < n; j++) ss->v[j].flags &= ~(uint32_t)SUB_SEEN;
    return same;
}

/* Applies a SotW subscription (the complete set). False when ended. */
static bool sotw_subscribe(ads_stream *s, xds_type t, const disc_req *req)
{
    tstate *ts = &s->ts[t];
    size_t n = req->n_resource_names;
    if (!count_ok(s, t, n) || !names_ok(s, req->resource_names, n)) return false;
    if (n > 0 && same_names(&ts->subs, req->resource_names, n)) {
        /* What subset_replace would find: no change, no "*" (not in a set). */
        ts->named = true;
        if (ts->wildcard || !ts->active) ts->dirty = true;
        ts->wildcard = false;
        return true;
    }
    const char **names = malloc((n ? n : 1) * sizeof *names);
    if (!names) {
        abort_nomem(s);
        return false;
    }
    size_t m = 0;
    bool star = false;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(req->resource_names[i], "*") == 0) star = true;
        else names[m++] = req->resource_names[i];
    }
    bool wild = false;
    if (wildcard_type(t)) wild = star || (n == 0 && !ts->named);
    if (n > 0) ts->named = true;
    bool changed = false;
    mid_result r = subset_replace(s->a, &ts->subs, names, m, SUB_NEW, &changed);
    free(names);
    if (!mid_is_ok(r)) {
        abort_nomem(s);
        return false;
    }
    if (changed || wild != ts->wildcard || !ts->active) ts->dirty = true;
    ts->wildcard = wild;
    return true;
}

static void sotw_request(ads_stream *s, const disc_req *req)
{
    xds_type t;
    if (!type_ok(s, req->type_url, &t) || !node_ok(s, req->node)) return;
    tstate *ts = &s->ts[t];
    const char *rn = req->response_nonce ? req->response_nonce : "";
    if (ts->nonce[0]) {
        if (strcmp(rn, ts->nonce) != 0) {
            /* Superseded by a response the client has not seen yet: that
             * response's ACK will carry the current subscription. */
            char p[PRINT_MAX * 4 + 8];
            s->a->st.stale++;
            LOG_DEBUG("ads: ignoring %s request with stale nonce '%s'", xds_type_short(t),
                      printable(rn, p, sizeof p));
            return;
        }
        if (req->error_detail) record_nack(s, t, req->error_detail);
        else record_ack(s, t);
    }
    if (!sotw_subscribe(s, t, req)) return;
    ts->active = true;
    sotw_eval(s, t, false, NULL);
}

/* ---- delta ------------------------------------------------------------------------- */

/* The version the client holds of `name` (from its subscription, the
 * snapshot it holds under wildcard, or its initial versions). */
static bool delta_held(const ads_stream *s, xds_type t, const char *name, const sub *u, uint64_t *v)
{
    const tstate *ts = &s->ts[t];
    if (u && (u->flags & (SUB_HELD | SUB_ANYVER))) {
        *v = u->held;
        return (u->flags & SUB_HELD) != 0;
    }
    if (ts->base) {
        const xds_resource *r = xds_snapshot_find(ts->base, t, name);
        if (r) {
            *v = res_ver(r);
            return true;
        }
        return false;
    }
    const sub *i = subset_find(&ts->irv, name);
    if (i && (i->flags & SUB_HELD)) {
        *v = i->held;
        return true;
    }
    return false;
}

static void delta_send_resp(ads_stream *s, xds_type t, size_t na, size_t nr, bool push)
{
    ads_server *a = s->a;
    const char *tv = xds_snapshot_version(s->snap, t);
    char nonce[NONCE_LEN];
    next_nonce(a, nonce);
    delta_resp resp = ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_RESPONSE__INIT;
    resp.system_version_info = (char *)tv;
    resp.type_url = (char *)xds_type_url(t);
    resp.nonce = nonce;
    resp.resources = a->resp;
    resp.n_resources = na;
    resp.removed_resources = a->removed;
    resp.n_removed_resources = nr;
    send_resp(s, t, &resp.base, nonce, tv, push);
}

static void delta_add(ads_server *a, size_t k, xds_type t, const xds_resource *r)
{
    resource_msg *m = &a->res[k];
    *m = (resource_msg)ENVOY__SERVICE__DISCOVERY__V3__RESOURCE__INIT;
    m->name = (char *)r->name;
    m->version = (char *)r->version;
    m->resource = any_of(a, k, t, r);
    a->resp[k] = m;
}

/* delta_eval's named (non-wildcard) pass for a stream whose state of type
 * t is what its evaluation against `old` left: only the names that differ
 * between the two snapshots' sets are looked at. False (nothing done) when
 * that does not apply (see changed_subs). */
static bool delta_eval_changed(ads_stream *s, xds_type t, bool push, const xds_snapshot *old)
{
    ads_server *a = s->a;
    tstate *ts = &s->ts[t];
    size_t k = 0;
    if (!changed_subs(s, t, old, &k)) return false;
    size_t na = 0, nr = 0;
    for (size_t i = 0; i < k; i++) {
        const sub *u = &ts->subs.v[a->idx[i]];
        const xds_resource *r = xds_snapshot_find(s->snap, t, u->name);
        a->found[i] = r;
        if (r) {
            if (!(u->flags & SUB_HELD) || u->held != res_ver(r)) delta_add(a, na++, t, r);
        } else if (u->flags & (SUB_HELD | SUB_ANYVER | SUB_ANSWER)) {
            a->removed[nr++] = (char *)u->name;
        }
    }
    if (na + nr > 0) {
        delta_send_resp(s, t, na, nr, push);
        if (rpc_call_is_closed(s->call)) return true;
    }
    for (size_t i = 0; i < k; i++) {
        sub *u = &ts->subs.v[a->idx[i]];
        u->flags &= ~(uint32_t)(SUB_HELD | SUB_ANYVER | SUB_ANSWER);
        if (a->found[i]) {
            u->flags |= SUB_HELD;
            u->held = res_ver(a->found[i]);
        }
    }
    return true;
}

/* `old` as sotw_eval. */
static void delta_eval(ads_stream *s, xds_type t, bool push, const xds_snapshot *old)
{
    ads_server *a = s->a;
    tstate *ts = &s->ts[t];
    if (!ts->active || !s->snap || rpc_call_is_closed(s->call)) return;
    const char *tv = xds_snapshot_version(s->snap, t);
    if (!ts->dirty && ts->evald[0] && strcmp(ts->evald, tv) == 0) return;
    if (!budget_ok(s, push)) return; /* state untouched: evaluated again on resume */
    /* Named, clean (the state its evaluation against `old` left: no
     * subscription change, nothing to answer, no initial versions). */
    if (!ts->wildcard && !ts->dirty && old && ts->evald[0] && ts->irv.n == 0 &&
        strcmp(ts->evald, xds_snapshot_version(old, t)) == 0 && delta_eval_changed(s, t, push, old)) {
        if (rpc_call_is_closed(s->call)) return;
        memcpy(ts->evald, tv, sizeof ts->evald);
        return;
    }
    size_t cnt = xds_snapshot_count(s->snap, t);
    size_t held_cnt = ts->base ? xds_snapshot_count(ts->base, t) : ts->irv.n;
    if (!mid_is_ok(scratch_reserve(a, cnt + held_cnt + ts->subs.n + 1))) {
        abort_nomem(s);
        return;
    }
    size_t na = 0, nr = 0;
    if (ts->wildcard) {
        for (size_t i = 0; i < cnt; i++) {
            const xds_resource *r = xds_snapshot_at(s->snap, t, i);
            const sub *u = ts->subs.n ? subset_find(&ts->subs, r->name) : NULL;
            uint64_t hv;
            /* A fresh subscription clears SUB_HELD, so it is answered; one
             * the client declared held (initial versions) is not resent. */
            bool must = u && (u->flags & SUB_ANSWER) && !(u->flags & SUB_HELD);
            if (!must && delta_held(s, t, r->name, u, &hv) && hv == res_ver(r)) continue;
            delta_add(a, na++, t, r);
        }
        /* Held before, gone now; named ones are handled below. */
        for (size_t i = 0; i < held_cnt; i++) {
            const char *name = ts->base ? xds_snapshot_at(ts->base, t, i)->name : ts->irv.v[i].name;
            if (xds_snapshot_find(s->snap, t, name) || subset_find(&ts->subs, name)) continue;
            a->removed[nr++] = (char *)name;
        }
        for (size_t i = 0; i < ts->subs.n; i++) {
            const sub *u = &ts->subs.v[i];
            if ((u->flags & (SUB_ANSWER | SUB_HELD | SUB_ANYVER)) &&
                !xds_snapshot_find(s->snap, t, u->name))
                a->removed[nr++] = (char *)u->name;
        }
    } else {
        for (size_t i = 0; i < ts->subs.n; i++) {
            const sub *u = &ts->subs.v[i];
            const xds_resource *r = xds_snapshot_find(s->snap, t, u->name);
            a->found[i] = r;
            if (r) {
                if (!(u->flags & SUB_HELD) || u->held != res_ver(r)) delta_add(a, na++, t, r);
            } else if (u->flags & (SUB_HELD | SUB_ANYVER | SUB_ANSWER)) {
                a->removed[nr++] = (char *)u->name;
            }
        }
    }
    if (na + nr > 0 || (ts->wildcard && ts->wild_answer)) {
        delta_send_resp(s, t, na, nr, push);
        if (rpc_call_is_closed(s->call)) return;
    }
    /* The client now holds exactly the current version of everything it
     * subscribes (a NACK does not make us resend the same content). */
    for (size_t i = 0; i < ts->subs.n; i++) {
        sub *u = &ts->subs.v[i];
        const xds_resource *r = ts->wildcard ? xds_snapshot_find(s->snap, t, u->name) : a->found[i];
        u->flags &= ~(uint32_t)(SUB_HELD | SUB_ANYVER | SUB_ANSWER);
        if (r) {
            u->flags |= SUB_HELD;
            u->held = res_ver(r);
        }
    }
    subset_drop_flagged(a, &ts->subs);
    if (ts->wildcard) {
        xds_snapshot_unref(ts->base);
        ts->base = xds_snapshot_ref(s->snap);
    }
    subset_free(a, &ts->irv);
    ts->wild_answer = false;
    ts->dirty = false;
    memcpy(ts->evald, tv, sizeof ts->evald);
}

static int cmp_key_strp(const void *key, const void *elem)
{
    return strcmp((const char *)key, *(const char *const *)elem);
}

/* Applies subscribe/unsubscribe (and, on the type's first request,
 * initial_resource_versions). False when the stream was ended. */
static bool delta_subscribe(ads_stream *s, xds_type t, const delta_req *req)
{
    tstate *ts = &s->ts[t];
    size_t nsub = req->n_resource_names_subscribe, nun = req->n_resource_names_unsubscribe;
    if (!count_ok(s, t, nsub) || !count_ok(s, t, nun) ||
        !count_ok(s, t, req->n_initial_resource_versions) ||
        !names_ok(s, req->resource_names_subscribe, nsub) ||
        !names_ok(s, req->resource_names_unsubscribe, nun))
        return false;
    bool first = !ts->active;
    bool star_sub = false, star_un = false;
    for (size_t i = 0; i < nsub; i++) star_sub |= strcmp(req->resource_names_subscribe[i], "*") == 0;
    for (size_t i = 0; i < nun; i++) star_un |= strcmp(req->resource_names_unsubscribe[i], "*") == 0;
    bool wild = ts->wildcard;
    if (wildcard_type(t)) {
        if (star_un) wild = false;
        if (star_sub || (first && nsub == 0 && nun == 0)) wild = true;
    }
    if (wild && !ts->wildcard) {
        ts->wild_answer = true;
        ts->dirty = true;
    }
    if (!wild && ts->wildcard) {
        xds_snapshot_unref(ts->base);
        ts->base = NULL;
    }
    ts->wildcard = wild;

    const char **unsorted = malloc((nun ? nun : 1) * sizeof *unsorted);
    const char **names = malloc((ts->subs.n + nsub + 1) * sizeof *names);
    if (!unsorted || !names) {
        free(unsorted);
        free(names);
        abort_nomem(s);
        return false;
    }
    for (size_t i = 0; i < nun; i++) unsorted[i] = req->resource_names_unsubscribe[i];
    if (nun > 1) qsort(unsorted, nun, sizeof *unsorted, cmp_strp);
    size_t m = 0, kept_unsub = 0;
    for (size_t i = 0; i < ts->subs.n; i++) {
        sub *u = &ts->subs.v[i];
        bool un = nun && bsearch(u->name, unsorted, nun, sizeof *unsorted, cmp_key_strp);
        if (un && !wild) continue;
        if (un) { /* under wildcard the client still needs an answer for it */
            u->flags = (u->flags | SUB_ANSWER | SUB_DROP) & ~(uint32_t)(SUB_HELD | SUB_ANYVER);
            kept_unsub++;
        }
        names[m++] = u->name;
    }
    for (size_t i = 0; i < nsub; i++)
        if (strcmp(req->resource_names_subscribe[i], "*") != 0)
            names[m++] = req->resource_names_subscribe[i];
    free(unsorted);
    bool changed = false;
    mid_result r = subset_replace(s->a, &ts->subs, names, m, 0, &changed);
    free(names);
    if (!mid_is_ok(r)) {
        abort_nomem(s);
        return false;
    }
    if (!count_ok(s, t, ts->subs.n)) return false;
    if (changed || kept_unsub) ts->dirty = true;
    for (size_t i = 0; i < nsub; i++) {
        sub *u = subset_find(&ts->subs, req->resource_names_subscribe[i]);
        if (!u) continue; /* "*" */
        u->flags = (u->flags | SUB_ANSWER) & ~(uint32_t)SUB_DROP;
        u->flags &= ~(uint32_t)(SUB_HELD | SUB_ANYVER); /* answered even if held */
        ts->dirty = true;
    }
    if (first && req->n_initial_resource_versions) {
        /* Held already: not resent when the version matches ours. */
        const char **irv_names = malloc(req->n_initial_resource_versions * sizeof *irv_names);
        size_t k = 0;
        if (!irv_names) {
            abort_nomem(s);
            return false;
        }
        for (size_t i = 0; i < req->n_initial_resource_versions; i++) {
            const irv_entry *e = req->initial_resource_versions[i];
            if (!e || !e->key || !e->value || strnlen(e->key, ADS_NAME_MAX + 1) > ADS_NAME_MAX) continue;
            uint64_t v = 0;
            bool ours = ver_parse(e->value, &v);
            sub *u = subset_find(&ts->subs, e->key);
            if (u) {
                u->held = v;
                u->flags = (u->flags & ~(uint32_t)(SUB_HELD | SUB_ANYVER)) | (ours ? SUB_HELD : SUB_ANYVER);
            } else if (wild) {
                irv_names[k++] = e->key;
            }
        }
        if (k) {
            r = subset_replace(s->a, &ts->irv, irv_names, k, 0, &changed);
            if (mid_is_ok(r)) {
                for (size_t i = 0; i < req->n_initial_resource_versions; i++) {
                    const irv_entry *e = req->initial_resource_versions[i];
                    sub *u = e && e->key ? subset_find(&ts->irv, e->key) : NULL;
                    uint64_t v = 0;
                    if (!u) continue;
                    /* never equal to ours when the version is not ours */
                    u->flags = ver_parse(e->value, &v) ? SUB_HELD : SUB_ANYVER;
                    u->held = v;
                }
            }
        }
        free(irv_names);
        if (!mid_is_ok(r)) {
            abort_nomem(s);
            return false;
        }
        ts->dirty = true;
    }
    if (first) ts->dirty = true;
    return true;
}

static void delta_request(ads_stream *s, const delta_req *req)
{
    xds_type t;
    if (!type_ok(s, req->type_url, &t) || !node_ok(s, req->node)) return;
    tstate *ts = &s->ts[t];
    const char *rn = req->response_nonce ? req->response_nonce : "";
    if (rn[0]) {
        if (!ts->nonce[0] || strcmp(rn, ts->nonce) != 0) {
            /* the ACK/NACK part is moot; subscription changes still apply */
            char p[PRINT_MAX * 4 + 8];
            s->a->st.stale++;
            LOG_DEBUG("ads: delta %s request with stale nonce '%s'", xds_type_short(t),
                      printable(rn, p, sizeof p));
        } else if (req->error_detail) {
            record_nack(s, t, req->error_detail);
        } else {
            record_ack(s, t);
        }
    }
    if (!delta_subscribe(s, t, req)) return;
    ts->active = true;
    delta_eval(s, t, false, NULL);
}

/* ---- stream lifecycle ----------------------------------------------------------------- */

static void stream_start(rpc_call *call, bool delta, ads_server *a)
{
    if (a->shut) {
        rpc_call_abort(call, RPC_UNAVAILABLE, "server shutting down");
        return;
    }
    ads_stream *s = calloc(1, sizeof *s);
    if (!s) {
        rpc_call_abort(call, RPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    s->a = a;
    s->call = call;
    s->delta = delta;
    s->id = ++a->next_id;
    rpc_call_set_user(call, s);
    s->next = a->streams;
    if (a->streams) a->streams->prev = s;
    a->streams = s;
    a->st.streams++;
}

static void on_sotw_start(rpc_call *call, const ProtobufCMessage *req, void *ctx)
{
    (void)req;
    stream_start(call, false, ctx);
}

static void on_delta_start(rpc_call *call, const ProtobufCMessage *req, void *ctx)
{
    (void)req;
    stream_start(call, true, ctx);
}

static void on_stream_message(rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    (void)ctx;
    ads_stream *s = rpc_call_user(call);
    if (!s || rpc_call_is_closed(call)) return;
    if (!m) { /* the client half-closed: nothing more to subscribe */
        if (!mid_is_ok(rpc_call_finish(call, RPC_OK, NULL))) LOG_DEBUG("ads: finish: %s", mid_errmsg());
        return;
    }
    if (s->delta) delta_request(s, (const delta_req *)m);
    else sotw_request(s, (const disc_req *)m);
}

static void on_stream_drain(rpc_call *call, void *ctx)
{
    ads_server *a = ctx;
    ads_stream *s = rpc_call_user(call);
    if (!s) return;
    busy_unlink(a, s);
    resume_waiters(a);
}

static void stream_free(ads_stream *s)
{
    for (int t = 0; t < XDS_TYPE_COUNT; t++) {
        subset_free(s->a, &s->ts[t].subs);
        subset_free(s->a, &s->ts[t].irv);
        xds_snapshot_unref(s->ts[t].base);
    }
    xds_snapshot_unref(s->snap);
    if (s->node) envoy__config__core__v3__node__free_unpacked(s->node, NULL);
    free(s->node_bytes);
    free(s);
}

static void on_stream_done(rpc_call *call, bool cancelled, void *ctx)
{
    (void)cancelled;
    ads_server *a = ctx;
    ads_stream *s = rpc_call_user(call);
    if (!s) return;
    if (s->prev) s->prev->next = s->next;
    else a->streams = s->next;
    if (s->next) s->next->prev = s->prev;
    a->st.streams--;
    rpc_call_set_user(call, NULL);
    busy_unlink(a, s);
    wait_unlink(a, s);
    stream_free(s);
    resume_waiters(a);
}

/* ---- push ----------------------------------------------------------------------------- */

static void on_debounce(rpc_loop *loop, void *arg)
{
    (void)loop;
    ads_server *a = arg;
    a->timer = NULL;
    if (a->shut) return;
    for (ads_stream *s = a->streams, *next; s; s = next) {
        next = s->next; /* aborting never frees synchronously, but do not rely on it */
        if (!s->node || !s->snap || rpc_call_is_closed(s->call)) continue;
        bool changed;
        /* Kept until the stream is evaluated: its sets are what changed
         * names are computed against. */
        xds_snapshot *old = xds_snapshot_ref(s->snap);
        if (stream_resolve(s, &changed) && changed) stream_eval_all(s, true, old);
        xds_snapshot_unref(old);
    }
    diffs_clear(a);
}

/* Every type of s, in push order CDS, EDS, LDS, RDS; `old` as sotw_eval. */
static void stream_eval_all(ads_stream *s, bool push, const xds_snapshot *old)
{
    for (int t = 0; t < XDS_TYPE_COUNT; t++) {
        if (s->delta) delta_eval(s, (xds_type)t, push, old);
        else sotw_eval(s, (xds_type)t, push, old);
    }
}

/* Streams wait for the budget: end the ones that hold it without reading. */
static void on_stall_check(rpc_loop *loop, void *arg)
{
    (void)loop;
    ads_server *a = arg;
    a->stall_timer = NULL;
    if (a->shut) return;
    int64_t now = now_ms();
    for (ads_stream *s = a->busy_head, *next; s && now - s->busy_since >= a->stall_ms; s = next) {
        next = s->bnext;
        if (rpc_call_is_closed(s->call)) continue; /* on_done releases it */
        char p[PRINT_MAX * 4 + 8];
        LOG_WARN("ads: stream %" PRIu64 " (node '%s') has not read for %" PRId64 " ms; ending it",
                 s->id, printable(node_id(s), p, sizeof p), now - s->busy_since);
        stream_abort(s, RPC_RESOURCE_EXHAUSTED, "client is not reading");
    }
    stall_timer_arm(a);
}

/* ---- public ----------------------------------------------------------------------------- */

static const rpc_handler sotw_h = {.on_start = on_sotw_start, .on_message = on_stream_message,
                                   .on_drain = on_stream_drain, .on_done = on_stream_done};
static const rpc_handler delta_h = {.on_start = on_delta_start, .on_message = on_stream_message,
                                    .on_drain = on_stream_drain, .on_done = on_stream_done};

MID_RESULT ads_server_new(rpc_loop *loop, const ads_opts *o, ads_server **out)
{
    *out = NULL;
    MID_ENSURE(loop && o && o->resolve, MID_E_INVALID, "ads_server_new: incomplete arguments");
    MID_ENSURE(!o->control_plane_id || strlen(o->control_plane_id) < CP_ID_MAX, MID_E_INVALID,
               "control plane identifier too long");
    MID_ENSURE(o->debounce_ms >= 0 && o->stall_ms >= 0, MID_E_INVALID, "negative time");
    ads_server *a = calloc(1, sizeof *a);
    MID_ENSURE_MEM(a);
    a->loop = loop;
    a->resolve = o->resolve;
    a->ctx = o->ctx;
    a->debounce_ms = o->debounce_ms ? o->debounce_ms : DEFAULT_DEBOUNCE_MS;
    a->max_names = o->max_names ? o->max_names : DEFAULT_MAX_NAMES;
    a->full_eds_rds = o->sotw_full_eds_rds;
    a->budget = o->max_queued_bytes ? o->max_queued_bytes : DEFAULT_MAX_QUEUED;
    a->stall_ms = o->stall_ms > 0 ? o->stall_ms : DEFAULT_STALL_MS;
    atomic_init(&a->async_pending, false);
    a->cp = (Envoy__Config__Core__V3__ControlPlane)ENVOY__CONFIG__CORE__V3__CONTROL_PLANE__INIT;
    if (o->control_plane_id && o->control_plane_id[0]) {
        snprintf(a->cp_id, sizeof a->cp_id, "%s", o->control_plane_id);
        a->cp.identifier = a->cp_id;
        a->has_cp = true;
    }
    uint8_t rnd[8];
    if (RAND_bytes(rnd, sizeof rnd) != 1) {
        free(a);
        MID_BAIL(MID_E_CRYPTO, "RAND_bytes failed");
    }
    for (size_t i = 0; i < sizeof rnd; i++) snprintf(a->nonce_prefix + 2 * i, 3, "%02x", rnd[i]);
    *out = a;
    return mid_ok();
}

MID_RESULT ads_server_register(ads_server *a, rpc_server *srv)
{
    MID_ENSURE(a && srv, MID_E_INVALID, "ads_server_register: missing argument");
    MID_GUARD(rpc_server_register(srv, ADS_M_STREAM, RPC_BIDI,
                                  &envoy__service__discovery__v3__discovery_request__descriptor,
                                  &sotw_h, a));
    return rpc_server_register(srv, ADS_M_DELTA, RPC_BIDI,
                               &envoy__service__discovery__v3__delta_discovery_request__descriptor,
                               &delta_h, a);
}

void ads_server_notify(ads_server *a)
{
    if (!a || a->shut || a->timer) return;
    if (!mid_is_ok(rpc_timer_add(a->loop, a->debounce_ms, on_debounce, a, &a->timer))) {
        a->timer = NULL;
        LOG_WARN("ads: cannot arm the push timer: %s; pushing now", mid_errmsg());
        on_debounce(a->loop, a);
    }
}

static void on_async_notify(rpc_loop *loop, void *arg)
{
    (void)loop;
    ads_server *a = arg;
    atomic_store(&a->async_pending, false);
    ads_server_notify(a);
}

void ads_server_notify_async(ads_server *a)
{
    if (!a || atomic_exchange(&a->async_pending, true)) return; /* one post is enough */
    if (!mid_is_ok(rpc_loop_wake_post(a->loop, on_async_notify, a))) {
        atomic_store(&a->async_pending, false);
        LOG_WARN("ads: cannot post a notify: %s", mid_errmsg());
    }
}

void ads_server_stats(const ads_server *a, ads_stats *out)
{
    *out = a->st;
    out->names = a->nnames;
    out->queued_bytes = a->queued;
}

void ads_server_set_ack_hook(ads_server *a,
                             void (*fn)(void *ctx, uint64_t stream_id, xds_type t, const char *version),
                             void *ctx)
{
    a->ack_fn = fn;
    a->ack_ctx = ctx;
}

void ads_server_shutdown(ads_server *a)
{
    if (!a || a->shut) return;
    a->shut = true;
    if (a->timer) rpc_timer_cancel(a->loop, a->timer);
    a->timer = NULL;
    if (a->stall_timer) rpc_timer_cancel(a->loop, a->stall_timer);
    a->stall_timer = NULL;
    for (ads_stream *s = a->streams; s; s = s->next)
        if (!rpc_call_is_closed(s->call)) rpc_call_abort(s->call, RPC_UNAVAILABLE, "server shutting down");
}

void ads_server_free(ads_server *a)
{
    if (!a) return;
    if (a->streams)
        LOG_ERROR("ads: ads_server_free with %" PRIu64 " open streams (call it after rpc_loop_free)",
                  a->st.streams);
    if (a->nnames) LOG_ERROR("ads: %zu interned names leaked", a->nnames);
    for (size_t i = 0; i < a->nbuckets; i++) {
        for (iname *e = a->names[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(a->names);
    free(a->anys);
    free(a->anyp);
    free(a->res);
    free(a->resp);
    free(a->removed);
    free(a->found);
    free(a->mark);
    diffs_clear(a);
    free(a->chg);
    free(a->idx);
    free(a);
}
