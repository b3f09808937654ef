/* The SDS server: StreamSecrets (SotW), DeltaSecrets and FetchSecrets.
 *
 * Per stream we keep only the subscription: for each name the digest of the
 * content we last sent (empty = nothing sent), plus the latest nonce. Every
 * evaluation (after a request, or on sds_service_notify) asks the source for
 * the current view and sends exactly the subscribed secrets whose digest
 * differs from what we sent; unchanged content is never resent, and a NACK
 * does not make us resend the rejected version. See docs/sds.md. */
#include "sds/sds_service.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "lib/arena.h"
#include "lib/log.h"
#include "lib/quote.h"
#include "sds/secrets.h"
#include "sds/sds_service_int.h"

typedef Envoy__Service__Discovery__V3__DiscoveryRequest disc_req;
typedef Envoy__Service__Discovery__V3__DiscoveryResponse disc_resp;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryRequest delta_req;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryResponse delta_resp;
typedef Envoy__Service__Discovery__V3__Resource resource_msg;

#define DEFAULT_MAX_NAMES 128
#define NONCE_LEN 40
#define VERSION_LEN 24
#define PRINT_MAX SDS_PRINT_MAX /* bytes of a client-supplied name quoted in logs/status */

/* One subscribed resource name. */
typedef struct {
    char *name;
    sds_digest sent;     /* content we last sent (delta: the client's version); "" none */
    sds_digest acked;    /* content the client has ACKed (or declared held); "" none */
    uint64_t sent_in;    /* stream response counter of the response that last carried it */
    bool must_answer;    /* delta: explicitly subscribed, not answered yet */
    bool logged_unknown; /* "unknown name" already logged for this subscription */
} sub;

typedef struct sds_stream sds_stream;
struct sds_stream {
    sds_service *svc;
    rpc_call *call;
    sds_stream *prev, *next;
    sds_workload *wl;
    bool delta;
    bool got_request; /* first request seen (delta: initial_resource_versions) */
    sub *subs;
    size_t n_subs;
    uint64_t version;                 /* SotW: counter of responses sent */
    char nonce[NONCE_LEN];            /* latest nonce sent; "" none */
    char sent_version[VERSION_LEN];   /* SotW: version that went with `nonce` */
    char acked_version[VERSION_LEN];  /* SotW: last version the client ACKed */
    bool nack_since_ack;              /* a NACK (any nonce) since the last ACK */
    uint64_t acked_seq;               /* newest bundle sequence whose validation
                                       * contexts the client has ACKed */
};

struct sds_service {
    sds_source src;
    size_t max_names;
    sds_stream *streams; /* open streams, doubly linked */
    uint64_t nonce_seq;
    char nonce_prefix[17]; /* random per service: nonces never repeat across restarts */
    sds_service_stats st;
    void (*on_ack)(void *arg); /* the ACKed bundle minimum may have changed */
    void *on_ack_arg;
};

/* ---- small helpers -------------------------------------------------------- */

/* Client-supplied text made safe for logs and status messages. */
const char *sds_printable(const char *s, char *buf, size_t cap)
{
    return quote_printable(s, PRINT_MAX, buf, cap);
}

static void next_nonce(sds_service *svc, char out[NONCE_LEN])
{
    snprintf(out, NONCE_LEN, "%s-%" PRIx64, svc->nonce_prefix, ++svc->nonce_seq);
}

bool sds_type_url_ok(const char *t)
{
    /* Empty is accepted: on a dedicated SDS stream the type is implied by
     * the service (only ADS needs it). Anything else must be exact. */
    return t == NULL || t[0] == '\0' || strcmp(t, SDS_SECRET_TYPE_URL) == 0;
}

static void stream_abort(sds_stream *s, rpc_code code, const char *msg)
{
    if (rpc_call_is_closed(s->call)) return;
    s->svc->st.aborted++;
    rpc_call_abort(s->call, code, msg);
}

/* Sends or aborts per the runtime's answer; true when the message was queued. */
static bool stream_send(sds_stream *s, const ProtobufCMessage *m)
{
    mid_result r = rpc_call_send(s->call, m);
    if (mid_is_ok(r)) return true;
    switch (mid_errcode()) {
    case MID_E_BUSY:
        LOG_WARN("sds: %s: client is not reading, ending the stream", rpc_call_method(s->call));
        stream_abort(s, RPC_RESOURCE_EXHAUSTED, "client is not reading");
        break;
    case MID_E_TOO_LARGE:
        LOG_WARN("sds: response over the message size limit: %s", mid_errmsg());
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

/* Asks the source for the view. On DENIED or failure the stream is ended and
 * false returned; on NOT_FOUND (attested, not issued yet) false with *v NULL
 * and the stream kept: the next notify tries again. */
static bool stream_view(sds_stream *s, sds_view **v)
{
    *v = NULL;
    mid_result r = s->svc->src.ops->view(s->svc->src.ctx, s->wl, v);
    if (mid_is_ok(r)) return true;
    if (mid_errcode() == MID_E_NOT_FOUND) {
        LOG_DEBUG("sds: workload not issued yet; waiting");
    } else if (mid_errcode() == MID_E_DENIED) {
        stream_abort(s, RPC_PERMISSION_DENIED, mid_errmsg());
    } else {
        LOG_WARN("sds: view failed: %s", mid_errmsg());
        stream_abort(s, RPC_UNAVAILABLE, "identity source unavailable");
    }
    *v = NULL;
    return false;
}

static sub *find_sub(sds_stream *s, const char *name)
{
    for (size_t i = 0; i < s->n_subs; i++)
        if (s->subs[i].name && strcmp(s->subs[i].name, name) == 0) return &s->subs[i];
    return NULL;
}

static void subs_free(sub *subs, size_t n)
{
    for (size_t i = 0; i < n; i++) free(subs[i].name);
    free(subs);
}

bool sds_name_len_ok(const char *name)
{
    return strnlen(name, SDS_NAME_MAX + 1) <= SDS_NAME_MAX;
}

/* Checks a client-supplied name; false (stream aborted) when unacceptable. */
static bool name_ok(sds_stream *s, const char *name)
{
    if (sds_name_len_ok(name)) return true;
    stream_abort(s, RPC_INVALID_ARGUMENT, "resource name too long");
    return false;
}

static void note_unknown(sds_stream *s, sub *u)
{
    if (u->logged_unknown) return;
    u->logged_unknown = true;
    s->svc->st.unknown_names++;
    char p[PRINT_MAX * 4 + 8];
    LOG_INFO("sds: %s: resource '%s' is not available to this workload (yet)",
             s->delta ? "DeltaSecrets" : "StreamSecrets", sds_printable(u->name, p, sizeof p));
}

/* ---- bundle ACK tracking -------------------------------------------------- */

/* True for the names that yield a validation context (trust bundles):
 * ROOTCA, ALL and a trust-domain name ("spiffe://<td>", no path). */
static bool is_vc_name(const char *name)
{
    if (strcmp(name, SDS_NAME_ROOTCA) == 0 || strcmp(name, SDS_NAME_ALL) == 0) return true;
    return strncmp(name, "spiffe://", 9) == 0 && strchr(name + 9, '/') == NULL;
}

/* The bundle sequence a view was built from: its own trust domain's. */
static uint64_t view_seq(const sds_view *v)
{
    return sds_view_bundle_count(v) > 0 ? sds_view_bundle(v, 0)->sequence : 0;
}

/* A stream counts for sds_service_bundle_acked once a validation context
 * it subscribes has been sent to (or declared held by) its client: one
 * still waiting for a first bundle does not hold the minimum back. */
static bool stream_got_vc(const sds_stream *s)
{
    if (!s->wl) return false;
    for (size_t i = 0; i < s->n_subs; i++) {
        const sub *u = &s->subs[i];
        if (u->name && is_vc_name(u->name) && (u->sent.hex[0] || u->acked.hex[0])) return true;
    }
    return false;
}

/* ... and is still open (an aborted stream no longer counts). */
static bool stream_holds_vc(const sds_stream *s)
{
    return !rpc_call_is_closed(s->call) && stream_got_vc(s);
}

static void ack_changed(sds_service *svc)
{
    if (svc->on_ack) svc->on_ack(svc->on_ack_arg);
}

/* The client ACKed our latest response. Without a NACK since the previous
 * ACK every response in between was accepted too (clients answer each
 * response in order), so everything sent is held; after a NACK only what
 * the latest response carried is known to be held. */
static void record_ack(sds_stream *s)
{
    for (size_t i = 0; i < s->n_subs; i++) {
        sub *u = &s->subs[i];
        if (!s->nack_since_ack || u->sent_in == s->version) u->acked = u->sent;
    }
    s->nack_since_ack = false;
}

/* After an evaluation against view `v` (cur[i] = digest of sub i, "" when
 * the view cannot serve it): when the client has ACKed exactly the current
 * content of every validation context it subscribes, it holds view_seq(v). */
static void note_vc_state(sds_stream *s, const sds_view *v, const sds_digest *cur)
{
    bool any = false;
    for (size_t i = 0; i < s->n_subs; i++) {
        const sub *u = &s->subs[i];
        if (!is_vc_name(u->name) || !cur[i].hex[0]) continue;
        if (strcmp(u->acked.hex, cur[i].hex) != 0) return;
        any = true;
    }
    uint64_t seq = view_seq(v);
    if (any && seq > s->acked_seq) {
        s->acked_seq = seq;
        ack_changed(s->svc);
    }
}

/* ---- SotW ---------------------------------------------------------------- */

static void sotw_evaluate(sds_stream *s, bool push)
{
    if (rpc_call_is_closed(s->call) || s->n_subs == 0) return;
    sds_view *v;
    if (!stream_view(s, &v)) return;
    arena *a = NULL;
    sds_digest *cur = NULL;
    size_t *idx = NULL;
    if (!mid_is_ok(arena_new(0, &a))) goto nomem;
    cur = arena_alloc(a, s->n_subs * sizeof *cur);
    idx = arena_alloc(a, s->n_subs * sizeof *idx);
    disc_resp resp = ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_RESPONSE__INIT;
    resp.resources = arena_alloc(a, s->n_subs * sizeof *resp.resources);
    if (!cur || !idx || !resp.resources) goto nomem;
    size_t n = 0;
    for (size_t i = 0; i < s->n_subs; i++) {
        sub *u = &s->subs[i];
        if (!mid_is_ok(sds_secret_digest(v, u->name, &cur[i]))) {
            if (mid_errcode() != MID_E_NOT_FOUND) goto nomem;
            cur[i].hex[0] = '\0';
            if (u->sent.hex[0]) {
                char p[PRINT_MAX * 4 + 8];
                LOG_INFO("sds: resource '%s' disappeared from the workload's view",
                         sds_printable(u->name, p, sizeof p));
                u->sent.hex[0] = '\0'; /* send it again if it comes back */
                u->logged_unknown = false;
            }
            note_unknown(s, u);
            continue;
        }
        u->logged_unknown = false;
        if (strcmp(cur[i].hex, u->sent.hex) == 0) continue;
        if (!mid_is_ok(sds_secret_any(v, u->name, a, &resp.resources[n]))) goto nomem;
        idx[n++] = i;
    }
    if (n > 0) {
        char version[VERSION_LEN], nonce[NONCE_LEN];
        snprintf(version, sizeof version, "%" PRIu64, s->version + 1);
        next_nonce(s->svc, nonce);
        resp.version_info = version;
        resp.type_url = SDS_SECRET_TYPE_URL;
        resp.nonce = nonce;
        resp.n_resources = n;
        if (stream_send(s, &resp.base)) {
            s->version++;
            memcpy(s->nonce, nonce, sizeof nonce);
            memcpy(s->sent_version, version, sizeof version);
            for (size_t k = 0; k < n; k++) {
                s->subs[idx[k]].sent = cur[idx[k]];
                s->subs[idx[k]].sent_in = s->version;
            }
            s->svc->st.responses++;
            if (push) s->svc->st.pushes++;
        }
    }
    note_vc_state(s, v, cur);
    arena_free(a);
    sds_view_unref(v);
    return;
nomem:
    LOG_WARN("sds: cannot build response: %s", mid_errmsg());
    arena_free(a);
    sds_view_unref(v);
    stream_abort(s, RPC_INTERNAL, "cannot build response");
}

/* Replaces the subscription with `names` (the complete desired set), keeping
 * the state of names that stay. False when the stream was aborted. */
static bool sotw_set_names(sds_stream *s, char **names, size_t n)
{
    size_t max = s->svc->max_names;
    sub *nsubs = calloc(n ? n : 1, sizeof *nsubs);
    size_t nn = 0;
    if (!nsubs) goto nomem;
    for (size_t i = 0; i < n; i++) {
        if (!name_ok(s, names[i])) goto fail;
        bool dup = false;
        for (size_t k = 0; k < nn && !dup; k++) dup = strcmp(nsubs[k].name, names[i]) == 0;
        if (dup) continue;
        if (nn == max) {
            stream_abort(s, RPC_INVALID_ARGUMENT, "too many resource names");
            goto fail;
        }
        sub *old = find_sub(s, names[i]);
        if (old) {
            nsubs[nn] = *old;
            old->name = NULL; /* moved */
        } else {
            nsubs[nn].name = strdup(names[i]);
            if (!nsubs[nn].name) goto nomem;
        }
        nn++;
    }
    subs_free(s->subs, s->n_subs);
    s->subs = nsubs;
    s->n_subs = nn;
    return true;
nomem:
    stream_abort(s, RPC_INTERNAL, "out of memory");
fail:
    /* names moved out of the old list are lost; the stream is over anyway */
    subs_free(nsubs, nn);
    subs_free(s->subs, s->n_subs);
    s->subs = NULL;
    s->n_subs = 0;
    return false;
}

static void sotw_request(sds_stream *s, const disc_req *req)
{
    sds_service *svc = s->svc;
    char p[PRINT_MAX * 4 + 8];
    if (!sds_type_url_ok(req->type_url)) {
        char msg[PRINT_MAX * 4 + 64];
        snprintf(msg, sizeof msg, "unsupported type_url '%s'", sds_printable(req->type_url, p, sizeof p));
        stream_abort(s, RPC_INVALID_ARGUMENT, msg);
        return;
    }
    const char *rn = req->response_nonce ? req->response_nonce : "";
    if (rn[0]) {
        if (strcmp(rn, s->nonce) != 0) {
            /* Superseded by a response the client has not seen yet (or
             * garbage): its answer is already on the way. A rejection
             * still means that content is not held. */
            svc->st.stale++;
            if (req->error_detail) s->nack_since_ack = true;
            LOG_DEBUG("sds: ignoring request with stale nonce '%s'", sds_printable(rn, p, sizeof p));
            return;
        }
        if (req->error_detail) {
            svc->st.nacks++;
            s->nack_since_ack = true;
            LOG_WARN("sds: client rejected version %s (code %d): %s; keeping version %s",
                     s->sent_version, (int)req->error_detail->code,
                     sds_printable(req->error_detail->message, p, sizeof p),
                     s->acked_version[0] ? s->acked_version : "(none)");
        } else {
            svc->st.acks++;
            memcpy(s->acked_version, s->sent_version, sizeof s->acked_version);
            record_ack(s);
        }
    }
    s->got_request = true;
    if (!sotw_set_names(s, req->resource_names, req->n_resource_names)) return;
    sotw_evaluate(s, false);
}

/* ---- delta --------------------------------------------------------------- */

static void delta_evaluate(sds_stream *s, bool push)
{
    if (rpc_call_is_closed(s->call) || s->n_subs == 0) return;
    sds_view *v;
    if (!stream_view(s, &v)) return;
    arena *a = NULL;
    sds_digest *cur = NULL;
    size_t *added = NULL, *removed = NULL;
    if (!mid_is_ok(arena_new(0, &a))) goto nomem;
    delta_resp resp = ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_RESPONSE__INIT;
    cur = arena_alloc(a, s->n_subs * sizeof *cur);
    added = arena_alloc(a, s->n_subs * sizeof *added);
    removed = arena_alloc(a, s->n_subs * sizeof *removed);
    resp.resources = arena_alloc(a, s->n_subs * sizeof *resp.resources);
    resp.removed_resources = arena_alloc(a, s->n_subs * sizeof *resp.removed_resources);
    if (!cur || !added || !removed || !resp.resources || !resp.removed_resources) goto nomem;
    size_t na = 0, nr = 0;
    for (size_t i = 0; i < s->n_subs; i++) {
        sub *u = &s->subs[i];
        if (!mid_is_ok(sds_secret_digest(v, u->name, &cur[i]))) {
            if (mid_errcode() != MID_E_NOT_FOUND) goto nomem;
            cur[i].hex[0] = '\0';
            note_unknown(s, u);
            /* The client holds it (or asked and waits for an answer): say
             * it does not exist. Only once. */
            if (u->sent.hex[0] || u->must_answer) {
                resp.removed_resources[nr] = u->name;
                removed[nr++] = i;
            }
            continue;
        }
        u->logged_unknown = false;
        if (strcmp(cur[i].hex, u->sent.hex) == 0) {
            u->must_answer = false; /* the client already has this version */
            continue;
        }
        resource_msg *res = arena_alloc(a, sizeof *res);
        if (!res) goto nomem;
        *res = (resource_msg)ENVOY__SERVICE__DISCOVERY__V3__RESOURCE__INIT;
        res->name = u->name;
        res->version = cur[i].hex;
        if (!mid_is_ok(sds_secret_any(v, u->name, a, &res->resource))) goto nomem;
        resp.resources[na] = res;
        added[na++] = i;
    }
    if (na + nr > 0) {
        char nonce[NONCE_LEN], sysver[VERSION_LEN];
        next_nonce(s->svc, nonce);
        snprintf(sysver, sizeof sysver, "%" PRIu64, s->version + 1);
        resp.system_version_info = sysver;
        resp.type_url = SDS_SECRET_TYPE_URL;
        resp.nonce = nonce;
        resp.n_resources = na;
        resp.n_removed_resources = nr;
        if (stream_send(s, &resp.base)) {
            s->version++;
            memcpy(s->nonce, nonce, sizeof nonce);
            for (size_t k = 0; k < na; k++) {
                s->subs[added[k]].sent = cur[added[k]];
                s->subs[added[k]].sent_in = s->version;
                s->subs[added[k]].must_answer = false;
            }
            for (size_t k = 0; k < nr; k++) {
                s->subs[removed[k]].sent.hex[0] = '\0';
                s->subs[removed[k]].sent_in = s->version;
                s->subs[removed[k]].must_answer = false;
            }
            s->svc->st.responses++;
            if (push) s->svc->st.pushes++;
        }
    }
    note_vc_state(s, v, cur);
    arena_free(a);
    sds_view_unref(v);
    return;
nomem:
    LOG_WARN("sds: cannot build delta response: %s", mid_errmsg());
    arena_free(a);
    sds_view_unref(v);
    stream_abort(s, RPC_INTERNAL, "cannot build response");
}

static void remove_sub(sds_stream *s, const char *name)
{
    sub *u = find_sub(s, name);
    if (!u) return;
    free(u->name);
    *u = s->subs[--s->n_subs];
}

static bool add_sub(sds_stream *s, const char *name)
{
    sub *u = find_sub(s, name);
    if (!u) {
        if (s->n_subs >= s->svc->max_names) {
            stream_abort(s, RPC_INVALID_ARGUMENT, "too many resource names");
            return false;
        }
        sub *ns = realloc(s->subs, (s->n_subs + 1) * sizeof *ns);
        char *dup = strdup(name);
        if (ns) s->subs = ns;
        if (!ns || !dup) {
            free(dup);
            stream_abort(s, RPC_INTERNAL, "out of memory");
            return false;
        }
        u = &s->subs[s->n_subs++];
        memset(u, 0, sizeof *u);
        u->name = dup;
    }
    /* An explicit subscribe is always answered, even for a name we think
     * the client holds (xDS delta rules). */
    u->sent.hex[0] = '\0';
    u->must_answer = true;
    return true;
}

static void delta_request(sds_stream *s, const delta_req *req)
{
    sds_service *svc = s->svc;
    char p[PRINT_MAX * 4 + 8];
    if (!sds_type_url_ok(req->type_url)) {
        char msg[PRINT_MAX * 4 + 64];
        snprintf(msg, sizeof msg, "unsupported type_url '%s'", sds_printable(req->type_url, p, sizeof p));
        stream_abort(s, RPC_INVALID_ARGUMENT, msg);
        return;
    }
    const char *rn = req->response_nonce ? req->response_nonce : "";
    if (rn[0]) {
        if (strcmp(rn, s->nonce) != 0) {
            /* the ACK/NACK part is moot; subscription changes still apply */
            svc->st.stale++;
            if (req->error_detail) s->nack_since_ack = true;
            LOG_DEBUG("sds: delta request with stale nonce '%s'", sds_printable(rn, p, sizeof p));
        } else if (req->error_detail) {
            svc->st.nacks++;
            s->nack_since_ack = true;
            LOG_WARN("sds: client rejected delta response %s (code %d): %s", s->nonce,
                     (int)req->error_detail->code, sds_printable(req->error_detail->message, p, sizeof p));
        } else {
            svc->st.acks++;
            record_ack(s);
        }
    }
    for (size_t i = 0; i < req->n_resource_names_unsubscribe; i++)
        remove_sub(s, req->resource_names_unsubscribe[i]);
    for (size_t i = 0; i < req->n_resource_names_subscribe; i++) {
        const char *name = req->resource_names_subscribe[i];
        if (!name_ok(s, name)) return;
        if (strcmp(name, "*") == 0) {
            LOG_INFO("sds: ignoring wildcard subscription (SDS has no wildcard)");
            continue;
        }
        if (!add_sub(s, name)) return;
    }
    /* initial_resource_versions: only on the first request of a stream. A
     * subscribed resource the client already holds at our current version
     * is not resent. Versions are our content digests, stable across
     * reconnects and agent restarts. */
    if (!s->got_request) {
        for (size_t i = 0; i < req->n_initial_resource_versions; i++) {
            const Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry *e =
                req->initial_resource_versions[i];
            if (!e || !e->key || !e->value) continue;
            sub *u = find_sub(s, e->key);
            if (!u) continue;
            if (strlen(e->value) == SDS_DIGEST_HEX) {
                memcpy(u->sent.hex, e->value, SDS_DIGEST_HEX + 1);
                u->acked = u->sent; /* the client holds it */
            } else {
                memcpy(u->sent.hex, "?", 2); /* held, version not ours: differs from any digest */
            }
        }
    }
    s->got_request = true;
    delta_evaluate(s, false);
}

/* ---- stream lifecycle ------------------------------------------------------- */

static void link_stream(sds_service *svc, sds_stream *s)
{
    s->next = svc->streams;
    if (svc->streams) svc->streams->prev = s;
    svc->streams = s;
    svc->st.streams++;
}

static void unlink_stream(sds_service *svc, sds_stream *s)
{
    if (s->prev) s->prev->next = s->next;
    else svc->streams = s->next;
    if (s->next) s->next->prev = s->prev;
    svc->st.streams--;
}

static void stream_start(rpc_call *call, bool delta, sds_service *svc)
{
    sds_stream *s = calloc(1, sizeof *s);
    if (!s) {
        rpc_call_abort(call, RPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    s->svc = svc;
    s->call = call;
    s->delta = delta;
    rpc_call_set_user(call, s);
    link_stream(svc, s);
    if (!mid_is_ok(svc->src.ops->attest(svc->src.ctx, rpc_call_peer(call), &s->wl))) {
        s->wl = NULL;
        stream_abort(s, mid_errcode() == MID_E_DENIED ? RPC_PERMISSION_DENIED : RPC_UNAVAILABLE,
                     mid_errcode() == MID_E_DENIED ? mid_errmsg() : "attestation failed");
    }
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
    sds_stream *s = rpc_call_user(call);
    if (!s || rpc_call_is_closed(call)) return;
    if (!m) { /* the client half-closed: nothing more to subscribe, end cleanly */
        if (!mid_is_ok(rpc_call_finish(call, RPC_OK, NULL))) LOG_DEBUG("sds: finish: %s", mid_errmsg());
        return;
    }
    if (!s->wl) return; /* attestation failed; the abort is on its way */
    bool held = stream_holds_vc(s);
    if (s->delta) delta_request(s, (const delta_req *)m);
    else sotw_request(s, (const disc_req *)m);
    /* starting to count, unsubscribing or being aborted moves the minimum */
    if (held != stream_holds_vc(s)) ack_changed(s->svc);
}

static void on_stream_done(rpc_call *call, bool cancelled, void *ctx)
{
    (void)cancelled;
    sds_service *svc = ctx;
    sds_stream *s = rpc_call_user(call);
    if (!s) return;
    bool held = stream_got_vc(s);
    unlink_stream(svc, s);
    if (s->wl) svc->src.ops->workload_free(svc->src.ctx, s->wl);
    subs_free(s->subs, s->n_subs);
    free(s);
    rpc_call_set_user(call, NULL);
    if (held) ack_changed(svc);
}

/* ---- FetchSecrets (unary) ------------------------------------------------- */

static void on_fetch_start(rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    sds_service *svc = ctx;
    const disc_req *req = (const disc_req *)m;
    sds_workload *wl = NULL;
    sds_view *v = NULL;
    arena *a = NULL;
    char p[PRINT_MAX * 4 + 8], msg[PRINT_MAX * 4 + 64];
    rpc_code code = RPC_OK;
    const char *why = NULL;

    if (!sds_type_url_ok(req->type_url)) {
        snprintf(msg, sizeof msg, "unsupported type_url '%s'", sds_printable(req->type_url, p, sizeof p));
        code = RPC_INVALID_ARGUMENT;
        why = msg;
        goto out;
    }
    if (req->n_resource_names > svc->max_names) {
        code = RPC_INVALID_ARGUMENT;
        why = "too many resource names";
        goto out;
    }
    if (!mid_is_ok(svc->src.ops->attest(svc->src.ctx, rpc_call_peer(call), &wl))) {
        wl = NULL;
        bool denied = mid_errcode() == MID_E_DENIED;
        code = denied ? RPC_PERMISSION_DENIED : RPC_UNAVAILABLE;
        why = denied ? mid_errmsg() : "attestation failed";
        goto out;
    }
    if (!mid_is_ok(svc->src.ops->view(svc->src.ctx, wl, &v))) {
        v = NULL;
        mid_err e = mid_errcode();
        code = e == MID_E_DENIED ? RPC_PERMISSION_DENIED : RPC_UNAVAILABLE;
        why = e == MID_E_DENIED ? mid_errmsg()
              : e == MID_E_NOT_FOUND ? "no identity issued yet; retry later"
                                     : "identity source unavailable";
        goto out;
    }
    if (!mid_is_ok(arena_new(0, &a))) {
        code = RPC_RESOURCE_EXHAUSTED;
        why = "out of memory";
        goto out;
    }
    disc_resp resp = ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_RESPONSE__INIT;
    resp.resources = arena_alloc(a, (req->n_resource_names + 1) * sizeof *resp.resources);
    char *vin = arena_alloc(a, req->n_resource_names * (SDS_DIGEST_HEX + 1) + 1);
    if (!resp.resources || !vin) {
        code = RPC_RESOURCE_EXHAUSTED;
        why = "out of memory";
        goto out;
    }
    size_t vlen = 0, n = 0;
    for (size_t i = 0; i < req->n_resource_names; i++) {
        const char *name = req->resource_names[i];
        bool dup = false;
        for (size_t k = 0; k < i && !dup; k++) dup = strcmp(req->resource_names[k], name) == 0;
        if (dup) continue;
        sds_digest d;
        if (!sds_name_len_ok(name) ||
            !mid_is_ok(sds_secret_digest(v, name, &d))) {
            snprintf(msg, sizeof msg, "unknown resource name %s", sds_printable(name, p, sizeof p));
            code = RPC_INVALID_ARGUMENT;
            why = msg;
            svc->st.unknown_names++;
            goto out;
        }
        if (!mid_is_ok(sds_secret_any(v, name, a, &resp.resources[n++]))) {
            code = RPC_INTERNAL;
            why = "cannot build response";
            goto out;
        }
        memcpy(vin + vlen, d.hex, SDS_DIGEST_HEX);
        vlen += SDS_DIGEST_HEX;
        vin[vlen++] = ',';
    }
    vin[vlen] = '\0';
    /* The version is derived from the contents (stateless: equal answers
     * get equal versions): the first 16 hex digits of a SHA-256 over the
     * resources' digests. */
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (EVP_Digest(vin, vlen, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen < 8) {
        code = RPC_INTERNAL;
        why = "cannot compute version";
        goto out;
    }
    char version[VERSION_LEN], nonce[NONCE_LEN];
    for (size_t i = 0; i < 8; i++) snprintf(version + 2 * i, 3, "%02x", md[i]);
    next_nonce(svc, nonce);
    resp.version_info = version;
    resp.type_url = SDS_SECRET_TYPE_URL;
    resp.nonce = nonce;
    resp.n_resources = n;
    if (!mid_is_ok(rpc_call_send(call, &resp.base))) {
        code = mid_errcode() == MID_E_TOO_LARGE ? RPC_RESOURCE_EXHAUSTED : RPC_INTERNAL;
        why = "cannot send response";
        goto out;
    }
    svc->st.responses++;
out:
    if (code == RPC_OK) {
        if (!mid_is_ok(rpc_call_finish(call, RPC_OK, NULL))) LOG_DEBUG("sds: fetch finish: %s", mid_errmsg());
    } else {
        rpc_call_abort(call, code, why);
    }
    arena_free(a);
    sds_view_unref(v);
    if (wl) svc->src.ops->workload_free(svc->src.ctx, wl);
}

/* ---- public ---------------------------------------------------------------- */

static const rpc_handler sotw_h = {.on_start = on_sotw_start, .on_message = on_stream_message,
                                   .on_done = on_stream_done};
static const rpc_handler delta_h = {.on_start = on_delta_start, .on_message = on_stream_message,
                                    .on_done = on_stream_done};
static const rpc_handler fetch_h = {.on_start = on_fetch_start};

mid_result sds_service_new(rpc_server *srv, sds_source src, const sds_service_opts *opts,
                           sds_service **out)
{
    *out = NULL;
    MID_ENSURE(srv && src.ops && src.ops->attest && src.ops->view && src.ops->workload_free,
               MID_E_INVALID, "sds_service_new: incomplete arguments");
    sds_service *svc = calloc(1, sizeof *svc);
    MID_ENSURE_MEM(svc);
    svc->src = src;
    svc->max_names = opts && opts->max_names ? opts->max_names : DEFAULT_MAX_NAMES;
    uint8_t rnd[8];
    if (RAND_bytes(rnd, sizeof rnd) != 1) {
        free(svc);
        MID_BAIL(MID_E_CRYPTO, "RAND_bytes failed");
    }
    for (size_t i = 0; i < sizeof rnd; i++)
        snprintf(svc->nonce_prefix + 2 * i, 3, "%02x", rnd[i]);
    mid_result r = rpc_server_register(srv, SDS_M_STREAM, RPC_BIDI,
                                       &envoy__service__discovery__v3__discovery_request__descriptor,
                                       &sotw_h, svc);
    if (mid_is_ok(r))
        r = rpc_server_register(srv, SDS_M_DELTA, RPC_BIDI,
                                &envoy__service__discovery__v3__delta_discovery_request__descriptor,
                                &delta_h, svc);
    if (mid_is_ok(r))
        r = rpc_server_register(srv, SDS_M_FETCH, RPC_UNARY,
                                &envoy__service__discovery__v3__discovery_request__descriptor,
                                &fetch_h, svc);
    if (!mid_is_ok(r)) {
        free(svc); /* registration happens before start: nothing can call us yet */
        return r;
    }
    *out = svc;
    return mid_ok();
}

void sds_service_notify(sds_service *svc)
{
    if (!svc) return;
    for (sds_stream *s = svc->streams, *next; s; s = next) {
        next = s->next; /* abort never frees synchronously, but do not rely on it */
        if (!s->wl || !s->got_request) continue;
        bool held = stream_holds_vc(s);
        if (s->delta) delta_evaluate(s, true);
        else sotw_evaluate(s, true);
        if (held != stream_holds_vc(s)) ack_changed(svc);
    }
}

size_t sds_service_bundle_acked(const sds_service *svc, uint64_t *min_seq)
{
    uint64_t m = UINT64_MAX;
    size_t n = 0;
    for (const sds_stream *s = svc->streams; s; s = s->next) {
        if (!stream_holds_vc(s)) continue;
        n++;
        if (s->acked_seq < m) m = s->acked_seq;
    }
    *min_seq = m;
    return n;
}

void sds_service_on_bundle_ack(sds_service *svc, void (*fn)(void *arg), void *arg)
{
    svc->on_ack = fn;
    svc->on_ack_arg = arg;
}

void sds_service_stats_get(const sds_service *svc, sds_service_stats *out)
{
    *out = svc->st;
}

void sds_service_free(sds_service *svc)
{
    if (!svc) return;
    if (svc->streams)
        LOG_ERROR("sds: sds_service_free with %" PRIu64 " open streams (call it after rpc_loop_free)",
                  svc->st.streams);
    free(svc);
}
