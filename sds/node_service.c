/* meshid.agent.v1.Node, server side. See sds/node_service.h and
 * docs/server.md.
 *
 * Every unary call becomes a node_op owned jointly by the call and by the
 * workpool jobs working for it: the call's on_done clears op->call, the last
 * job's done callback answers the call if it is still there, and whichever
 * comes last frees the op. Sync streams live in a list walked by a poll
 * timer, which pushes the complete state when the bundle or the entries
 * changed and closes the streams of agents that were banned.
 * ReportDenials is one job per call that appends the denials in order. */
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca/batch.h"
#include "ca/rotation.h"
#include "identity/join_token.h"
#include "identity/spiffe_id.h"
#include "lib/log.h"
#include "lib/timeutil.h"
#include "sds/node_service.h"

#define M_ATTEST "/meshid.agent.v1.Node/AttestAgent"
#define M_RENEW "/meshid.agent.v1.Node/RenewAgent"
#define M_BATCH "/meshid.agent.v1.Node/BatchSignX509SVID"
#define M_SYNC "/meshid.agent.v1.Node/Sync"
#define M_DENY "/meshid.agent.v1.Node/ReportDenials"

#define MSG_MAX 512
#define CHAIN_MAX_CERTS 16
#define BUNDLE_ARENA_LIMIT (4u << 20)

typedef struct sync_stream {
    struct sync_stream *prev, *next;
    node_service *ns;
    rpc_call *call;
    char *agent;
    uint64_t sent_bundle;
    int64_t sent_rev;
    uint64_t sent_auth_gen;
    bool sent;  /* a state went out at least once */
    bool dirty; /* a push is owed once the send queue drains */
} sync_stream;

/* A CA handle shared by the service and the jobs using it (node_ca_pin). */
struct node_ca_pin {
    ca *c;
    int refs;     /* the service's own (while current) + one per pin */
};

/* The first bundle sequence a root was served at (the activation gate). */
typedef struct {
    char id[CA_AUTHORITY_ID_MAX];
    uint64_t seq;
} root_seen;

struct node_service {
    node_service_opts o;
    char td[SPIFFE_TD_MAX + 1];
    rpc_timer *poll;
    bool shutting_down;
    /* the trust bundle as last loaded */
    char *bundle_pem;
    arena *bundle_arena;
    ProtobufCBinaryData *bundle;
    size_t n_bundle;
    uint64_t bundle_seq;
    int64_t entries_rev;
    sync_stream streams; /* list head */
    node_agent_state *agents; /* every agent that opened a Sync stream */
    size_t n_agents, cap_agents;
    node_ca_pin *cur;    /* the CA handle new jobs use */
    /* the authorities as last loaded: roots served and when, tainted ids */
    root_seen *roots;
    size_t n_roots, cap_roots;
    char **tainted;
    size_t n_tainted;
    char *auth_print;    /* ids and states, to notice any change */
    uint64_t auth_gen;   /* +1 whenever auth_print changes */
};

typedef enum { OP_ATTEST, OP_RENEW, OP_BATCH, OP_DENY } op_kind;

typedef struct node_op node_op;

typedef struct {
    node_op *op;
    char *entry_id;
    unsigned char *csr;
    size_t csr_len;
    int32_t code;
    char msg[MSG_MAX];
    char *chain_pem;
} batch_item;

struct node_op {
    node_service *ns;
    node_ca_pin *pin; /* the CA this op's jobs sign with */
    op_kind kind;
    rpc_call *call; /* NULL once the call is over */
    int jobs;       /* outstanding workpool jobs */
    char *agent;    /* caller (renew, batch) or the attested identity */
    /* attest */
    char token_hash[JOIN_TOKEN_HASH_LEN + 1];
    bool token_malformed;
    char *hostname;
    /* attest, renew */
    unsigned char *csr;
    size_t csr_len;
    rpc_code code;
    char msg[MSG_MAX];
    char *chain_pem;
    /* batch */
    batch_item *items;
    size_t n_items;
    /* denials: audit reason and details of each, built on the loop */
    char **deny_reason;
    char **deny_details;
    size_t n_deny;
    size_t accepted; /* leading denials audited */
};

/* ---- small helpers ------------------------------------------------------- */

rpc_code node_rpc_code(mid_err err)
{
    switch (err) {
    case MID_E_OK: return RPC_OK;
    case MID_E_INVALID:
    case MID_E_TOO_LARGE:
    case MID_E_USAGE: return RPC_INVALID_ARGUMENT;
    case MID_E_NOT_FOUND: return RPC_NOT_FOUND;
    case MID_E_EXISTS: return RPC_ALREADY_EXISTS;
    case MID_E_DENIED: return RPC_PERMISSION_DENIED;
    case MID_E_STATE: return RPC_FAILED_PRECONDITION;
    case MID_E_BUSY: return RPC_UNAVAILABLE;
    default: return RPC_INTERNAL;
    }
}

/* Records this thread's last error as the op's (or an item's) outcome.
 * Internal errors are logged and answered without details. */
static void set_failure(rpc_code *code, char *msg, mid_err err, const char *what)
{
    *code = node_rpc_code(err);
    if (*code == RPC_INTERNAL) {
        LOG_ERROR("node API: %s: %s", what, mid_errmsg());
        snprintf(msg, MSG_MAX, "internal error during %s", what);
    } else {
        snprintf(msg, MSG_MAX, "%s", mid_errmsg());
    }
}

static char *dup_bytes(const void *p, size_t n)
{
    char *d = malloc(n ? n : 1);
    if (d && n) memcpy(d, p, n);
    return d;
}

/* Printable ASCII only, for audit text taken from peers. */
static void sanitize(const char *in, size_t in_len, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < in_len && o + 1 < cap; i++) {
        unsigned char ch = (unsigned char)in[i];
        out[o++] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
    }
    out[o] = '\0';
}

/* Certificates of a PEM text as DER blobs in `a`, in order. */
static mid_result pem_to_der(const char *pem, arena *a, ProtobufCBinaryData **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    mid_result r = MID_OK_RESULT;
    BIO *bio = BIO_new_mem_buf(pem, -1);
    MID_ENSURE_MEM(bio);
    ProtobufCBinaryData *v = arena_calloc(a, CHAIN_MAX_CERTS * sizeof *v);
    MID_CHECK_MEM(r, v);
    size_t k = 0;
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        unsigned char *der = NULL;
        int len = i2d_X509(x, &der);
        X509_free(x);
        MID_CHECK(r, len > 0, MID_E_CRYPTO, "cannot encode a certificate");
        MID_CHECK(r, k < CHAIN_MAX_CERTS, MID_E_TOO_LARGE, "more than %d certificates",
                  CHAIN_MAX_CERTS);
        v[k].data = arena_alloc(a, (size_t)len);
        if (v[k].data) memcpy(v[k].data, der, (size_t)len);
        OPENSSL_free(der);
        MID_CHECK_MEM(r, v[k].data);
        v[k].len = (size_t)len;
        k++;
    }
    ERR_clear_error();
    *out = v;
    *n = k;
out:
    BIO_free(bio);
    return r;
}

/* Parses a DER CSR and checks its self-signature: a cheap gate before a
 * join token is spent on a request the CA would refuse anyway. */
static bool csr_looks_valid(const unsigned char *der, size_t len)
{
    if (len == 0 || len > CA_CSR_MAX) return false;
    const unsigned char *p = der;
    X509_REQ *req = d2i_X509_REQ(NULL, &p, (long)len);
    bool ok = req != NULL && p == der + len;
    if (ok) {
        EVP_PKEY *pub = X509_REQ_get0_pubkey(req);
        ok = pub != NULL && X509_REQ_verify(req, pub) == 1;
    }
    X509_REQ_free(req);
    ERR_clear_error();
    return ok;
}

MID_RESULT node_entry_to_proto(arena *a, const store_entry *e, Meshid__Agent__V1__Entry *out)
{
    meshid__agent__v1__entry__init(out);
    out->id = arena_strndup(a, e->id, strlen(e->id));
    out->spiffe_id = arena_strndup(a, e->spiffe_id, strlen(e->spiffe_id));
    out->parent_id = arena_strndup(a, e->parent_id, strlen(e->parent_id));
    MID_ENSURE(out->id && out->spiffe_id && out->parent_id, MID_E_NOMEM, "out of memory");
    out->ttl_seconds = e->ttl_seconds;
    out->revision = e->revision > 0 ? (uint64_t)e->revision : 0;
    if (e->n_selectors) {
        out->selectors = arena_calloc(a, e->n_selectors * sizeof *out->selectors);
        Meshid__Agent__V1__Selector *sel = arena_calloc(a, e->n_selectors * sizeof *sel);
        MID_ENSURE(out->selectors && sel, MID_E_NOMEM, "out of memory");
        for (size_t i = 0; i < e->n_selectors; i++) {
            meshid__agent__v1__selector__init(&sel[i]);
            sel[i].type = arena_strndup(a, e->selectors[i].type, strlen(e->selectors[i].type));
            sel[i].value = arena_strndup(a, e->selectors[i].value, strlen(e->selectors[i].value));
            MID_ENSURE(sel[i].type && sel[i].value, MID_E_NOMEM, "out of memory");
            out->selectors[i] = &sel[i];
        }
        out->n_selectors = e->n_selectors;
    }
    if (e->n_dns_names) {
        out->dns_names = arena_calloc(a, e->n_dns_names * sizeof *out->dns_names);
        MID_ENSURE(out->dns_names, MID_E_NOMEM, "out of memory");
        for (size_t i = 0; i < e->n_dns_names; i++) {
            out->dns_names[i] = arena_strndup(a, e->dns_names[i], strlen(e->dns_names[i]));
            MID_ENSURE(out->dns_names[i], MID_E_NOMEM, "out of memory");
        }
        out->n_dns_names = e->n_dns_names;
    }
    return mid_ok();
}

/* ---- trust bundle -------------------------------------------------------- */

static mid_result bundle_sequence(ca *c, uint64_t *seq)
{
    char *doc = NULL;
    MID_GUARD(ca_bundle_spiffe(c, &doc));
    json_error_t jerr;
    json_t *o = json_loads(doc, 0, &jerr);
    free(doc);
    json_t *s = o ? json_object_get(o, "spiffe_sequence") : NULL;
    json_int_t v = json_is_integer(s) ? json_integer_value(s) : -1;
    json_decref(o);
    MID_ENSURE(v >= 0, MID_E_INTERNAL, "SPIFFE bundle without a sequence number");
    *seq = (uint64_t)v;
    return mid_ok();
}

/* Reloads the bundle; *changed tells whether it differs from the last. */
static mid_result bundle_refresh(node_service *ns, bool *changed)
{
    *changed = false;
    char *pem = NULL;
    uint64_t seq = 0;
    arena *a = NULL;
    mid_result r = MID_OK_RESULT;
    MID_TRY(r, ca_bundle_pem(ns->cur->c, &pem));
    MID_TRY(r, bundle_sequence(ns->cur->c, &seq));
    if (ns->bundle_pem && seq == ns->bundle_seq && strcmp(pem, ns->bundle_pem) == 0) goto out;
    ProtobufCBinaryData *der = NULL;
    size_t n = 0;
    MID_TRY(r, arena_new(BUNDLE_ARENA_LIMIT, &a));
    MID_TRY(r, pem_to_der(pem, a, &der, &n));
    free(ns->bundle_pem);
    arena_free(ns->bundle_arena);
    ns->bundle_pem = pem;
    ns->bundle_arena = a;
    ns->bundle = der;
    ns->n_bundle = n;
    ns->bundle_seq = seq;
    pem = NULL;
    a = NULL;
    *changed = true;
out:
    free(pem);
    arena_free(a);
    return r;
}

/* Whether a root in `state` is in the trust bundle (ca_state_is_trusted). */
static bool root_trusted(const char *state)
{
    return strcmp(state, "revoked") != 0 && strcmp(state, "removed") != 0;
}

static root_seen *root_find(const node_service *ns, const char *id)
{
    for (size_t i = 0; i < ns->n_roots; i++)
        if (strcmp(ns->roots[i].id, id) == 0) return &ns->roots[i];
    return NULL;
}

/* Reloads what the authorities table says beyond the bundle: every root now
 * served gets the current bundle sequence unless it was served before (so at
 * start every root counts as spread at the current sequence), the tainted
 * ids, and *changed when any id or state differs from the last load. */
static mid_result authorities_refresh(node_service *ns, bool *changed)
{
    *changed = false;
    store_authority_row *rows = NULL;
    size_t n = 0, n_t = 0, plen = 1;
    char **tainted = NULL, *print = NULL;
    mid_result r = MID_OK_RESULT;
    MID_TRY(r, store_authority_list(ns->o.st, &rows, &n));
    for (size_t i = 0; i < n; i++) plen += strlen(rows[i].a.id) + strlen(rows[i].a.state) + 2;
    print = malloc(plen);
    tainted = calloc(n ? n : 1, sizeof *tainted);
    MID_CHECK(r, print && tainted, MID_E_NOMEM, "out of memory");
    print[0] = '\0';
    for (size_t i = 0, o = 0; i < n; i++) {
        const store_authority *a = &rows[i].a;
        o += (size_t)snprintf(print + o, plen - o, "%s=%s;", a->id, a->state);
        if (strcmp(a->state, "tainted") == 0) {
            MID_CHECK(r, (tainted[n_t] = strdup(a->id)) != NULL, MID_E_NOMEM, "out of memory");
            n_t++;
        }
        if (strcmp(a->kind, "root") != 0 || !root_trusted(a->state) || root_find(ns, a->id))
            continue;
        if (ns->n_roots == ns->cap_roots) {
            size_t cap = ns->cap_roots ? 2 * ns->cap_roots : 8;
            root_seen *v = realloc(ns->roots, cap * sizeof *v);
            MID_CHECK(r, v != NULL, MID_E_NOMEM, "out of memory");
            ns->roots = v;
            ns->cap_roots = cap;
        }
        root_seen *rs = &ns->roots[ns->n_roots++];
        snprintf(rs->id, sizeof rs->id, "%s", a->id);
        rs->seq = ns->bundle_seq;
    }
    if (ns->auth_print == NULL || strcmp(ns->auth_print, print) != 0) {
        free(ns->auth_print);
        ns->auth_print = print;
        print = NULL;
        for (size_t i = 0; i < ns->n_tainted; i++) free(ns->tainted[i]);
        free(ns->tainted);
        ns->tainted = tainted;
        ns->n_tainted = n_t;
        tainted = NULL;
        n_t = 0;
        ns->auth_gen++;
        *changed = true;
    }
out:
    for (size_t i = 0; tainted && i < n_t; i++) free(tainted[i]);
    free(tainted);
    free(print);
    store_authority_list_free(rows, n);
    return r;
}

/* Bundle, then authorities (the roots take the new bundle's sequence). */
static mid_result state_refresh(node_service *ns, bool *changed)
{
    bool b = false, a = false;
    mid_result r = bundle_refresh(ns, &b);
    if (mid_is_ok(r)) r = authorities_refresh(ns, &a);
    *changed = a || b;
    return r;
}

const char *node_service_bundle_pem(const node_service *ns, uint64_t *seq)
{
    if (seq) *seq = ns->bundle_seq;
    return ns->bundle_pem;
}

/* ---- caller checks ------------------------------------------------------- */

/* The caller must present an SVID of a known agent that is not banned.
 * Returns RPC_OK and the agent's ID (in the call's arena), or the status
 * to end the call with and its message. */
static rpc_code check_agent(rpc_call *call, node_service *ns, const char **agent, char *msg)
{
    const rpc_peer *p = rpc_call_peer(call);
    *agent = NULL;
    if (p->kind != RPC_PEER_TLS || p->spiffe_id == NULL) {
        snprintf(msg, MSG_MAX, "this method needs the agent's X.509-SVID as client certificate");
        return RPC_UNAUTHENTICATED;
    }
    store_agent_row row = {0};
    mid_result r = store_agent_get(ns->o.st, p->spiffe_id, &row);
    if (r.err == MID_E_NOT_FOUND) {
        snprintf(msg, MSG_MAX, "%s is not an attested agent", p->spiffe_id);
        return RPC_PERMISSION_DENIED;
    }
    if (!mid_is_ok(r)) {
        LOG_ERROR("node API: reading agent %s: %s", p->spiffe_id, mid_errmsg());
        snprintf(msg, MSG_MAX, "cannot read the agent record");
        return RPC_UNAVAILABLE;
    }
    int banned = row.a.banned;
    store_agent_row_clear(&row);
    if (banned) {
        snprintf(msg, MSG_MAX, "agent %s was evicted; attest again with a new join token",
                 p->spiffe_id);
        return RPC_PERMISSION_DENIED;
    }
    *agent = p->spiffe_id;
    return RPC_OK;
}

/* last_seen: best effort, never delays an answer. */
typedef struct {
    store *st;
    char agent[];
} touch_job;

static void touch_work(void *arg)
{
    touch_job *t = arg;
    if (!mid_is_ok(store_agent_touch(t->st, t->agent, time_now())))
        LOG_DEBUG("node API: last_seen of %s: %s", t->agent, mid_errmsg());
}

static void touch_done(void *arg, bool ran)
{
    (void)ran;
    free(arg);
}

static void touch_agent(node_service *ns, const char *agent)
{
    size_t n = strlen(agent);
    touch_job *t = malloc(sizeof *t + n + 1);
    if (!t) return;
    t->st = ns->o.st;
    memcpy(t->agent, agent, n + 1);
    if (!mid_is_ok(workpool_submit(ns->o.wp, touch_work, touch_done, t))) free(t);
}

/* ---- unary ops ------------------------------------------------------------ */

static void op_free(node_op *op)
{
    node_ca_pin_release(op->pin);
    free(op->agent);
    free(op->hostname);
    free(op->csr);
    free(op->chain_pem);
    for (size_t i = 0; i < op->n_items; i++) {
        free(op->items[i].entry_id);
        free(op->items[i].csr);
        free(op->items[i].chain_pem);
    }
    free(op->items);
    for (size_t i = 0; i < op->n_deny; i++) {
        free(op->deny_reason[i]);
        free(op->deny_details[i]);
    }
    free(op->deny_reason);
    free(op->deny_details);
    free(op);
}

static void op_call_done(rpc_call *call, bool cancelled, void *ctx)
{
    (void)cancelled;
    (void)ctx;
    node_op *op = rpc_call_user(call);
    if (!op) return;
    op->call = NULL;
    if (op->jobs == 0) op_free(op);
}

static node_op *op_new(node_service *ns, rpc_call *call, op_kind kind)
{
    node_op *op = calloc(1, sizeof *op);
    if (!op) return NULL;
    op->ns = ns;
    op->pin = node_service_ca_pin(ns);
    op->call = call;
    op->kind = kind;
    op->code = RPC_OK;
    rpc_call_set_user(call, op);
    return op;
}

static void finish(rpc_call *call, rpc_code code, const char *msg)
{
    if (!mid_is_ok(rpc_call_finish(call, code, msg)))
        LOG_DEBUG("node API: finish %s: %s", rpc_call_method(call), mid_errmsg());
}

/* Sends a response, or INTERNAL when it cannot be sent. */
static void reply(rpc_call *call, const ProtobufCMessage *m)
{
    if (!mid_is_ok(rpc_call_send(call, m))) {
        LOG_WARN("node API: cannot answer %s: %s", rpc_call_method(call), mid_errmsg());
        rpc_call_abort(call, RPC_INTERNAL, "cannot send the response");
        return;
    }
    finish(call, RPC_OK, NULL);
}

/* Called by a job's done: false when the op is orphaned (and now freed). */
static bool op_job_done(node_op *op)
{
    op->jobs--;
    if (op->call) return true;
    if (op->jobs == 0) op_free(op);
    return false;
}

static bool submit(node_op *op, workpool_work_fn work, workpool_done_fn done, void *arg)
{
    mid_result r = workpool_submit(op->ns->o.wp, work, done, arg);
    if (!mid_is_ok(r)) return false;
    op->jobs++;
    return true;
}

static void audit(store *st, const char *actor, const char *event, const char *subject,
                  const char *outcome, const char *reason, const char *details)
{
    store_audit_event ev = {.actor = actor, .event = event, .spiffe_id = subject,
                            .outcome = outcome, .reason = reason, .details = details};
    if (!mid_is_ok(store_audit_append(st, &ev, NULL)))
        LOG_ERROR("node API: cannot audit %s (%s): %s", event, reason ? reason : "",
                  mid_errmsg());
}

static char *json_details(json_t *o)
{
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(o);
    return s;
}

/* ---- AttestAgent ---------------------------------------------------------- */

static void attest_work(void *arg)
{
    node_op *op = arg;
    node_service *ns = op->ns;
    char actor[64], hostname[NODE_HOSTNAME_MAX + 1];
    snprintf(actor, sizeof actor, "join_token:%.16s",
             op->token_malformed ? "malformed" : op->token_hash);
    sanitize(op->hostname, strlen(op->hostname), hostname, sizeof hostname);
    char *details = json_details(json_pack("{s:s}", "hostname", hostname));
    store_join_token_row tok = {0};
    spiffe_id *sid = NULL;
    ca_svid *svid = NULL;
    const char *what = "attestation";

    if (op->token_malformed) {
        op->code = RPC_PERMISSION_DENIED;
        snprintf(op->msg, MSG_MAX, "malformed join token");
        goto denied;
    }
    store_audit_event use = {.actor = actor, .event = "join_token.use", .outcome = "ok",
                             .details = details};
    mid_result r = store_join_token_consume(ns->o.st, op->token_hash, time_now(), &use, &tok);
    if (!mid_is_ok(r)) {
        set_failure(&op->code, op->msg, r.err, "join token check");
        if (op->code == RPC_PERMISSION_DENIED) goto denied;
        goto error;
    }
    const char *id = tok.t.agent_spiffe_id;
    if (id == NULL || id[0] == '\0') {
        r = join_token_agent_id(ns->td, op->token_hash, &sid);
        if (!mid_is_ok(r)) {
            set_failure(&op->code, op->msg, r.err, "agent ID");
            goto error;
        }
        id = spiffe_id_str(sid);
    }
    op->agent = strdup(id);
    if (!op->agent) {
        op->code = RPC_INTERNAL;
        snprintf(op->msg, MSG_MAX, "out of memory");
        goto error;
    }
    ca_issue_req req = {.spiffe_id = id, .csr = op->csr, .csr_len = op->csr_len,
                        .ttl = ns->o.agent_svid_ttl, .actor = actor};
    what = "signing the agent SVID";
    r = ca_issue(op->pin->c, &req, &svid);
    if (!mid_is_ok(r)) {
        set_failure(&op->code, op->msg, r.err, what);
        if (op->code == RPC_INTERNAL) goto error;
        goto denied;
    }
    store_agent a = {.spiffe_id = id, .serial = ca_svid_serial(svid),
                     .not_after = ca_svid_not_after(svid), .hostname = hostname};
    store_audit_event ev = {.actor = actor, .event = "agent.attest", .spiffe_id = id,
                            .serial = ca_svid_serial(svid), .outcome = "ok", .details = details};
    what = "recording the agent";
    r = store_agent_upsert(ns->o.st, &a, &ev);
    if (!mid_is_ok(r)) {
        set_failure(&op->code, op->msg, r.err, what);
        goto error;
    }
    op->chain_pem = strdup(ca_svid_chain_pem(svid));
    if (!op->chain_pem) {
        op->code = RPC_INTERNAL;
        snprintf(op->msg, MSG_MAX, "out of memory");
    }
    goto out;
denied:
    audit(ns->o.st, actor, "agent.attest", op->agent, "denied", op->msg, details);
    goto out;
error:
    audit(ns->o.st, actor, "agent.attest", op->agent, "error", op->msg, details);
out:
    (void)what;
    ca_svid_free(svid);
    spiffe_id_free(sid);
    store_join_token_row_clear(&tok);
    free(details);
}

static void attest_done(void *arg, bool ran)
{
    node_op *op = arg;
    if (!op_job_done(op)) return;
    node_service *ns = op->ns;
    rpc_call *call = op->call;
    if (!ran) {
        finish(call, RPC_UNAVAILABLE, "server shutting down");
        return;
    }
    if (op->code != RPC_OK) {
        finish(call, op->code, op->msg);
        return;
    }
    arena *a = rpc_call_arena(call);
    Meshid__Agent__V1__AttestAgentResponse resp = MESHID__AGENT__V1__ATTEST_AGENT_RESPONSE__INIT;
    resp.agent_spiffe_id = op->agent;
    if (!mid_is_ok(pem_to_der(op->chain_pem, a, &resp.svid_chain, &resp.n_svid_chain))) {
        finish(call, RPC_INTERNAL, "cannot encode the SVID");
        return;
    }
    resp.bundle = ns->bundle;
    resp.n_bundle = ns->n_bundle;
    resp.bundle_sequence = ns->bundle_seq;
    reply(call, &resp.base);
}

static void attest_start(rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    node_service *ns = ctx;
    const Meshid__Agent__V1__AttestAgentRequest *req =
        (const Meshid__Agent__V1__AttestAgentRequest *)m;
    size_t tlen = strlen(req->join_token), hlen = strlen(req->hostname);
    if (tlen == 0 || tlen > NODE_JOIN_TOKEN_MAX) {
        finish(call, RPC_INVALID_ARGUMENT, "a join token is required");
        return;
    }
    if (hlen > NODE_HOSTNAME_MAX) {
        finish(call, RPC_INVALID_ARGUMENT, "hostname is too long");
        return;
    }
    if (req->csr.len > CA_CSR_MAX) {
        finish(call, RPC_INVALID_ARGUMENT, "CSR is too large");
        return;
    }
    if (!csr_looks_valid(req->csr.data, req->csr.len)) {
        finish(call, RPC_INVALID_ARGUMENT, "malformed CSR: want a signed PKCS#10 request in DER");
        return;
    }
    node_op *op = op_new(ns, call, OP_ATTEST);
    if (!op) {
        finish(call, RPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    op->token_malformed = !mid_is_ok(join_token_hash(req->join_token, op->token_hash));
    op->hostname = dup_bytes(req->hostname, hlen + 1);
    op->csr = (unsigned char *)dup_bytes(req->csr.data, req->csr.len);
    op->csr_len = req->csr.len;
    if (!op->hostname || !op->csr) {
        finish(call, RPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    if (!submit(op, attest_work, attest_done, op))
        finish(call, RPC_UNAVAILABLE, "server busy, retry later");
}

/* ---- RenewAgent ----------------------------------------------------------- */

static void renew_work(void *arg)
{
    node_op *op = arg;
    node_service *ns = op->ns;
    char actor[SPIFFE_ID_MAX + 16];
    snprintf(actor, sizeof actor, "agent:%s", op->agent);
    ca_svid *svid = NULL;
    ca_issue_req req = {.spiffe_id = op->agent, .csr = op->csr, .csr_len = op->csr_len,
                        .ttl = ns->o.agent_svid_ttl, .actor = actor};
    mid_result r = ca_issue(op->pin->c, &req, &svid);
    if (!mid_is_ok(r)) {
        set_failure(&op->code, op->msg, r.err, "signing the agent SVID");
        return;
    }
    store_audit_event ev = {.actor = actor, .event = "agent.renew", .spiffe_id = op->agent,
                            .serial = ca_svid_serial(svid), .outcome = "ok"};
    r = store_agent_renew(ns->o.st, op->agent, ca_svid_serial(svid), ca_svid_not_after(svid),
                          time_now(), &ev);
    if (r.err == MID_E_DENIED || r.err == MID_E_NOT_FOUND) {
        op->code = RPC_PERMISSION_DENIED;
        snprintf(op->msg, MSG_MAX, "%s", mid_errmsg());
        audit(ns->o.st, actor, "agent.renew", op->agent, "denied", op->msg, NULL);
    } else if (!mid_is_ok(r)) {
        set_failure(&op->code, op->msg, r.err, "recording the renewal");
    } else {
        op->chain_pem = strdup(ca_svid_chain_pem(svid));
        if (!op->chain_pem) {
            op->code = RPC_INTERNAL;
            snprintf(op->msg, MSG_MAX, "out of memory");
        }
    }
    ca_svid_free(svid);
}

static void renew_done(void *arg, bool ran)
{
    node_op *op = arg;
    if (!op_job_done(op)) return;
    node_service *ns = op->ns;
    rpc_call *call = op->call;
    if (!ran || op->code != RPC_OK) {
        finish(call, ran ? op->code : RPC_UNAVAILABLE, ran ? op->msg : "server shutting down");
        return;
    }
    Meshid__Agent__V1__RenewAgentResponse resp = MESHID__AGENT__V1__RENEW_AGENT_RESPONSE__INIT;
    if (!mid_is_ok(pem_to_der(op->chain_pem, rpc_call_arena(call), &resp.svid_chain,
                              &resp.n_svid_chain))) {
        finish(call, RPC_INTERNAL, "cannot encode the SVID");
        return;
    }
    resp.bundle = ns->bundle;
    resp.n_bundle = ns->n_bundle;
    resp.bundle_sequence = ns->bundle_seq;
    reply(call, &resp.base);
}

static void renew_start(rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    node_service *ns = ctx;
    const Meshid__Agent__V1__RenewAgentRequest *req =
        (const Meshid__Agent__V1__RenewAgentRequest *)m;
    char msg[MSG_MAX];
    const char *agent;
    rpc_code code = check_agent(call, ns, &agent, msg);
    if (code != RPC_OK) {
        finish(call, code, msg);
        return;
    }
    touch_agent(ns, agent);
    if (req->csr.len == 0 || req->csr.len > CA_CSR_MAX) {
        finish(call, RPC_INVALID_ARGUMENT, "a CSR (PKCS#10 DER) is required");
        return;
    }
    node_op *op = op_new(ns, call, OP_RENEW);
    if (!op) {
        finish(call, RPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    op->agent = strdup(agent);
    op->csr = (unsigned char *)dup_bytes(req->csr.data, req->csr.len);
    op->csr_len = req->csr.len;
    if (!op->agent || !op->csr) {
        finish(call, RPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    if (!submit(op, renew_work, renew_done, op))
        finish(call, RPC_UNAVAILABLE, "server busy, retry later");
}

/* ---- BatchSignX509SVID ---------------------------------------------------- */

/* The audit actor of a workload SVID: the agent that asked, the entry that
 * authorised it and the selectors the entry required, so that the event
 * alone answers "on whose authority" (ca_issue_req has no details field of
 * its own; see docs/server.md). Cut to the audit text limit. */
static void batch_actor(const char *agent, const store_entry *e, char *out, size_t cap)
{
    size_t o = 0;
    int n = snprintf(out, cap, "agent:%s entry:%s selectors:", agent, e->id);
    if (n < 0 || (size_t)n >= cap) {
        out[cap - 1] = '\0';
        return;
    }
    o = (size_t)n;
    for (size_t i = 0; i < e->n_selectors; i++) {
        n = snprintf(out + o, cap - o, "%s%s:%s", i ? "," : "", e->selectors[i].type,
                     e->selectors[i].value);
        if (n < 0 || (size_t)n >= cap - o) {
            if (cap > 4) memcpy(out + cap - 4, "...", 4);
            return;
        }
        o += (size_t)n;
    }
}

/* One workpool job of a batch: a slice of the items, signed on one worker
 * and recorded with a few store requests (ca_issue_batch), so a batch uses
 * every core and shares the durable writes of the slice (group commit). */
typedef struct {
    node_op *op;
    size_t *idx; /* the items of op->items this job answers */
    size_t n;
} batch_chunk;

/* Per item of a chunk while it runs: the entry that authorises it and the
 * audit actor built from it. */
typedef struct {
    store_entry_row row;
    char *actor;
} item_ctx;

/* Looks up the item's entry and checks it belongs to the calling agent;
 * false (item answered and, for a refusal, audited) when it cannot be
 * signed. On true, x->row and x->actor are set. */
static bool item_check(batch_item *it, item_ctx *x)
{
    node_op *op = it->op;
    node_service *ns = op->ns;
    char refuse_actor[SPIFFE_ID_MAX + 16];
    snprintf(refuse_actor, sizeof refuse_actor, "agent:%s", op->agent);
    store_entry_row row = {0};
    char eid[STORE_ENTRY_ID_MAX + 1];
    sanitize(it->entry_id, strlen(it->entry_id), eid, sizeof eid);

    mid_result r = store_entry_get(ns->o.st, it->entry_id, &row);
    if (!mid_is_ok(r)) {
        it->code = r.err == MID_E_NOT_FOUND || r.err == MID_E_INVALID ? RPC_NOT_FOUND : RPC_INTERNAL;
        snprintf(it->msg, MSG_MAX, "entry %s %s", eid,
                 it->code == RPC_NOT_FOUND ? "does not exist" : "cannot be read");
        if (it->code == RPC_NOT_FOUND) {
            char *d = json_details(json_pack("{s:s}", "entry_id", eid));
            audit(ns->o.st, refuse_actor, "svid.refuse", NULL, "denied", it->msg, d);
            free(d);
        } else {
            LOG_ERROR("node API: entry %s: %s", eid, mid_errmsg());
        }
        goto out;
    }
    if (strcmp(row.e.parent_id, op->agent) != 0) {
        it->code = RPC_PERMISSION_DENIED;
        snprintf(it->msg, MSG_MAX, "entry %s is not parented to %s", eid, op->agent);
        char *d = json_details(json_pack("{s:s, s:s}", "entry_id", eid, "parent_id",
                                         row.e.parent_id));
        audit(ns->o.st, refuse_actor, "svid.refuse", row.e.spiffe_id, "denied", it->msg, d);
        free(d);
        goto out;
    }
    x->actor = malloc(STORE_AUDIT_TEXT_MAX);
    if (!x->actor) {
        it->code = RPC_RESOURCE_EXHAUSTED;
        snprintf(it->msg, MSG_MAX, "out of memory");
        goto out;
    }
    batch_actor(op->agent, &row.e, x->actor, STORE_AUDIT_TEXT_MAX);
    x->row = row;
    return true;
out:
    store_entry_row_clear(&row);
    return false;
}

/* Answers one signed (or refused) item from ca_issue_batch's outcome. */
static void item_answer(batch_item *it, ca_svid *svid, mid_result r, const char *msg)
{
    if (!mid_is_ok(r)) {
        /* set_failure reads the message from the thread's last error */
        mid_result e = mid_fail(r.err, __FILE__, __LINE__, "%s", msg);
        (void)e;
        set_failure((rpc_code *)&it->code, it->msg, r.err, "signing");
        return;
    }
    it->chain_pem = strdup(ca_svid_chain_pem(svid));
    if (!it->chain_pem) {
        it->code = RPC_RESOURCE_EXHAUSTED;
        snprintf(it->msg, MSG_MAX, "out of memory");
    }
}

static void chunk_work(void *arg)
{
    batch_chunk *ch = arg;
    node_op *op = ch->op;
    size_t n = ch->n, k = 0;
    item_ctx *x = calloc(n, sizeof *x);
    ca_issue_req *req = calloc(n, sizeof *req);
    size_t *at = calloc(n, sizeof *at); /* req[j] is item ch->idx[at[j]] */
    ca_svid **out = calloc(n, sizeof *out);
    mid_result *res = calloc(n, sizeof *res);
    ca_batch_msg *msgs = calloc(n, sizeof *msgs);
    if (!x || !req || !at || !out || !res || !msgs) {
        for (size_t i = 0; i < n; i++) {
            op->items[ch->idx[i]].code = RPC_RESOURCE_EXHAUSTED;
            snprintf(op->items[ch->idx[i]].msg, MSG_MAX, "out of memory");
        }
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        batch_item *it = &op->items[ch->idx[i]];
        if (!item_check(it, &x[i])) continue;
        req[k] = (ca_issue_req){.spiffe_id = x[i].row.e.spiffe_id, .csr = it->csr,
                                .csr_len = it->csr_len, .ttl = x[i].row.e.ttl_seconds,
                                .dns = x[i].row.e.dns_names, .n_dns = x[i].row.e.n_dns_names,
                                .actor = x[i].actor};
        at[k++] = i;
    }
    if (k > 0) {
        /* Per-item outcomes are in res[]; the summary adds nothing. */
        mid_result all = ca_issue_batch_msgs(op->pin->c, req, k, out, res, msgs);
        (void)all;
        for (size_t j = 0; j < k; j++) {
            item_answer(&op->items[ch->idx[at[j]]], out[j], res[j], msgs[j].msg);
            ca_svid_free(out[j]);
        }
    }
out:
    for (size_t i = 0; x && i < n; i++) {
        free(x[i].actor);
        store_entry_row_clear(&x[i].row);
    }
    free(x);
    free(req);
    free(at);
    free(out);
    free(res);
    free(msgs);
}

static void batch_reply(node_op *op)
{
    rpc_call *call = op->call;
    arena *a = rpc_call_arena(call);
    Meshid__Agent__V1__BatchSignResponse resp = MESHID__AGENT__V1__BATCH_SIGN_RESPONSE__INIT;
    resp.results = arena_calloc(a, op->n_items * sizeof *resp.results);
    Meshid__Agent__V1__SignResult *res = arena_calloc(a, op->n_items * sizeof *res);
    if (op->n_items && (!resp.results || !res)) {
        finish(call, RPC_RESOURCE_EXHAUSTED, "response too large");
        return;
    }
    for (size_t i = 0; i < op->n_items; i++) {
        batch_item *it = &op->items[i];
        meshid__agent__v1__sign_result__init(&res[i]);
        res[i].entry_id = it->entry_id;
        res[i].code = it->code;
        if (it->code == RPC_OK &&
            !mid_is_ok(pem_to_der(it->chain_pem, a, &res[i].svid_chain, &res[i].n_svid_chain))) {
            res[i].code = RPC_INTERNAL;
            snprintf(it->msg, MSG_MAX, "cannot encode the SVID");
        }
        res[i].message = res[i].code == RPC_OK ? (char *)"" : it->msg;
        resp.results[i] = &res[i];
    }
    resp.n_results = op->n_items;
    reply(call, &resp.base);
}

static void chunk_done(void *arg, bool ran)
{
    batch_chunk *ch = arg;
    node_op *op = ch->op;
    for (size_t i = 0; !ran && i < ch->n; i++) {
        batch_item *it = &op->items[ch->idx[i]];
        it->code = RPC_UNAVAILABLE;
        snprintf(it->msg, MSG_MAX, "server shutting down");
    }
    free(ch->idx);
    free(ch);
    if (!op_job_done(op)) return;
    if (op->jobs == 0) batch_reply(op);
}

/* Splits the items still unanswered (code RPC_OK) into one chunk per core
 * (never more than the pool's threads), at most CA_BATCH_MAX each, and
 * queues them. One per core, not one per worker: a pool has many workers
 * per core (sds/server.h, SERVER_WORKERS_PER_CORE) so that other requests
 * keep the cores busy while a chunk waits for its commit; more, smaller
 * chunks of one batch would only add store requests. A chunk that cannot
 * be queued answers its items "server busy". */
static void batch_submit_chunks(node_op *op)
{
    size_t todo = 0;
    for (size_t i = 0; i < op->n_items; i++) todo += op->items[i].code == RPC_OK;
    if (todo == 0) return;
    size_t threads = workpool_online_cores();
    if (threads > workpool_threads(op->ns->o.wp)) threads = workpool_threads(op->ns->o.wp);
    size_t chunks = threads < todo ? threads : todo;
    if (chunks == 0) chunks = 1;
    if ((todo + chunks - 1) / chunks > CA_BATCH_MAX)
        chunks = (todo + CA_BATCH_MAX - 1) / CA_BATCH_MAX;
    size_t next = 0; /* next item to place */
    for (size_t c = 0; c < chunks; c++) {
        /* spread the remainder over the first chunks */
        size_t want = todo / chunks + (c < todo % chunks), got = 0;
        batch_chunk *ch = calloc(1, sizeof *ch);
        size_t *idx = calloc(want, sizeof *idx);
        bool queued = false;
        if (ch != NULL && idx != NULL) {
            for (; next < op->n_items && got < want; next++)
                if (op->items[next].code == RPC_OK) idx[got++] = next;
            *ch = (batch_chunk){.op = op, .idx = idx, .n = got};
            queued = submit(op, chunk_work, chunk_done, ch);
        }
        if (queued) continue;
        /* Answer this chunk's items here: the ones placed, or (out of
         * memory) the next `want` unanswered ones. */
        for (; idx == NULL && next < op->n_items && got < want; next++)
            if (op->items[next].code == RPC_OK) {
                op->items[next].code = RPC_RESOURCE_EXHAUSTED;
                snprintf(op->items[next].msg, MSG_MAX, "out of memory");
                got++;
            }
        for (size_t i = 0; idx != NULL && i < got; i++) {
            batch_item *it = &op->items[idx[i]];
            it->code = ch ? RPC_UNAVAILABLE : RPC_RESOURCE_EXHAUSTED;
            snprintf(it->msg, MSG_MAX, ch ? "server busy, retry later" : "out of memory");
        }
        free(idx);
        free(ch);
    }
}

static void batch_start(rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    node_service *ns = ctx;
    const Meshid__Agent__V1__BatchSignRequest *req =
        (const Meshid__Agent__V1__BatchSignRequest *)m;
    char msg[MSG_MAX];
    const char *agent;
    rpc_code code = check_agent(call, ns, &agent, msg);
    if (code != RPC_OK) {
        finish(call, code, msg);
        return;
    }
    touch_agent(ns, agent);
    if (req->n_requests > NODE_BATCH_MAX) {
        snprintf(msg, sizeof msg, "%zu requests in one batch; at most %d", req->n_requests,
                 NODE_BATCH_MAX);
        finish(call, RPC_INVALID_ARGUMENT, msg);
        return;
    }
    node_op *op = op_new(ns, call, OP_BATCH);
    if (!op) {
        finish(call, RPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    op->agent = strdup(agent);
    op->items = calloc(req->n_requests ? req->n_requests : 1, sizeof *op->items);
    if (!op->agent || !op->items) {
        finish(call, RPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    op->n_items = req->n_requests;
    for (size_t i = 0; i < req->n_requests; i++) {
        const Meshid__Agent__V1__SignRequest *sr = req->requests[i];
        batch_item *it = &op->items[i];
        it->op = op;
        it->entry_id = strdup(sr->entry_id);
        it->csr = (unsigned char *)dup_bytes(sr->csr.data, sr->csr.len);
        it->csr_len = sr->csr.len;
        if (!it->entry_id || !it->csr) {
            finish(call, RPC_RESOURCE_EXHAUSTED, "out of memory");
            return; /* no job queued yet: the call's on_done frees the op */
        }
        if (sr->entry_id[0] == '\0' || strlen(sr->entry_id) > STORE_ENTRY_ID_MAX) {
            it->code = RPC_INVALID_ARGUMENT;
            snprintf(it->msg, MSG_MAX, "request %zu: bad entry_id", i);
        } else if (sr->csr.len == 0 || sr->csr.len > CA_CSR_MAX) {
            it->code = RPC_INVALID_ARGUMENT;
            snprintf(it->msg, MSG_MAX, "request %zu: a CSR of 1..%d bytes is required", i,
                     CA_CSR_MAX);
        }
    }
    batch_submit_chunks(op);
    if (op->jobs == 0) batch_reply(op);
}

/* ---- ReportDenials -------------------------------------------------------- */

/* Checks one reported denial against the limits of node_service.h; false
 * with `msg` set when it is out of them. */
static bool denial_ok(const Meshid__Agent__V1__Denial *d, size_t i, char *msg)
{
    if (d->time_ms < 0) {
        snprintf(msg, MSG_MAX, "denial %zu: negative time_ms", i);
        return false;
    }
    if (strlen(d->reason) > NODE_DENIAL_REASON_MAX || strlen(d->api) > NODE_DENIAL_API_MAX) {
        snprintf(msg, MSG_MAX, "denial %zu: reason over %d or api over %d bytes", i,
                 NODE_DENIAL_REASON_MAX, NODE_DENIAL_API_MAX);
        return false;
    }
    if (d->n_selectors > NODE_DENIAL_SELECTORS_MAX) {
        snprintf(msg, MSG_MAX, "denial %zu: %zu selectors; at most %d", i, d->n_selectors,
                 NODE_DENIAL_SELECTORS_MAX);
        return false;
    }
    for (size_t k = 0; k < d->n_selectors; k++) {
        const Meshid__Agent__V1__Selector *s = d->selectors[k];
        if (strlen(s->type) > NODE_DENIAL_SELECTOR_TYPE_MAX ||
            strlen(s->value) > NODE_DENIAL_SELECTOR_VALUE_MAX) {
            snprintf(msg, MSG_MAX, "denial %zu: selector %zu over %d/%d bytes", i, k,
                     NODE_DENIAL_SELECTOR_TYPE_MAX, NODE_DENIAL_SELECTOR_VALUE_MAX);
            return false;
        }
    }
    return true;
}

/* The audit reason and details (JSON) of one denial, peer text made
 * printable. False when out of memory. */
static bool denial_audit_text(const Meshid__Agent__V1__Denial *d, char **reason, char **details)
{
    char buf[NODE_DENIAL_REASON_MAX + 1];
    char sel[NODE_DENIAL_SELECTOR_TYPE_MAX + NODE_DENIAL_SELECTOR_VALUE_MAX + 2];
    char api[NODE_DENIAL_API_MAX + 1], ts[TIME_RFC3339_LEN];
    *reason = NULL;
    *details = NULL;
    sanitize(d->reason, strlen(d->reason), buf, sizeof buf);
    *reason = strdup(buf[0] ? buf : "refused by the agent");
    json_t *sels = json_array();
    for (size_t k = 0; sels && k < d->n_selectors; k++) {
        const Meshid__Agent__V1__Selector *s = d->selectors[k];
        size_t tl = strlen(s->type), vl = strlen(s->value);
        char raw[sizeof sel];
        memcpy(raw, s->type, tl);
        raw[tl] = ':';
        memcpy(raw + tl + 1, s->value, vl);
        sanitize(raw, tl + 1 + vl, sel, sizeof sel);
        if (json_array_append_new(sels, json_string(sel)) != 0) {
            json_decref(sels);
            sels = NULL;
        }
    }
    sanitize(d->api, strlen(d->api), api, sizeof api);
    time_format_rfc3339_ms(d->time_ms, ts);
    if (sels)
        *details = json_details(json_pack("{s:I, s:I, s:I, s:o, s:s, s:s, s:I}", "uid",
                                          (json_int_t)d->uid, "gid", (json_int_t)d->gid, "pid",
                                          (json_int_t)d->pid, "selectors", sels, "api", api,
                                          "time", ts, "count",
                                          (json_int_t)(d->count ? d->count : 1)));
    return *reason && *details;
}

/* Appends the denials in order and stops at the first failure: what is
 * durable is always a prefix, so the agent can re-send the rest. */
static void deny_work(void *arg)
{
    node_op *op = arg;
    char actor[SPIFFE_ID_MAX + 16];
    snprintf(actor, sizeof actor, "agent:%s", op->agent);
    for (size_t i = 0; i < op->n_deny; i++) {
        store_audit_event ev = {.actor = actor, .event = "workload.deny", .outcome = "denied",
                                .reason = op->deny_reason[i], .details = op->deny_details[i]};
        mid_result r = store_audit_append(op->ns->o.st, &ev, NULL);
        if (!mid_is_ok(r)) {
            set_failure(&op->code, op->msg, r.err, "auditing a denial");
            return;
        }
        op->accepted++;
    }
}

static void deny_done(void *arg, bool ran)
{
    node_op *op = arg;
    if (!op_job_done(op)) return;
    rpc_call *call = op->call;
    if (!ran) {
        finish(call, RPC_UNAVAILABLE, "server shutting down");
        return;
    }
    if (op->accepted == 0 && op->code != RPC_OK) {
        finish(call, op->code == RPC_INTERNAL ? RPC_UNAVAILABLE : op->code, op->msg);
        return;
    }
    if (op->code != RPC_OK)
        LOG_WARN("node API: %zu of %zu denials from %s audited: %s", op->accepted, op->n_deny,
                 op->agent, op->msg);
    Meshid__Agent__V1__ReportDenialsResponse resp =
        MESHID__AGENT__V1__REPORT_DENIALS_RESPONSE__INIT;
    resp.accepted = (int32_t)op->accepted;
    reply(call, &resp.base);
}

static void deny_start(rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    node_service *ns = ctx;
    const Meshid__Agent__V1__ReportDenialsRequest *req =
        (const Meshid__Agent__V1__ReportDenialsRequest *)m;
    char msg[MSG_MAX];
    const char *agent;
    rpc_code code = check_agent(call, ns, &agent, msg);
    if (code != RPC_OK) {
        finish(call, code, msg);
        return;
    }
    touch_agent(ns, agent);
    if (req->n_denials > NODE_DENIALS_MAX) {
        snprintf(msg, sizeof msg, "%zu denials in one call; at most %d", req->n_denials,
                 NODE_DENIALS_MAX);
        finish(call, RPC_INVALID_ARGUMENT, msg);
        return;
    }
    for (size_t i = 0; i < req->n_denials; i++) {
        if (!denial_ok(req->denials[i], i, msg)) {
            finish(call, RPC_INVALID_ARGUMENT, msg);
            return;
        }
    }
    if (req->n_denials == 0) {
        Meshid__Agent__V1__ReportDenialsResponse resp =
            MESHID__AGENT__V1__REPORT_DENIALS_RESPONSE__INIT;
        reply(call, &resp.base);
        return;
    }
    node_op *op = op_new(ns, call, OP_DENY);
    if (!op) {
        finish(call, RPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    op->agent = strdup(agent);
    op->deny_reason = calloc(req->n_denials, sizeof *op->deny_reason);
    op->deny_details = calloc(req->n_denials, sizeof *op->deny_details);
    if (!op->agent || !op->deny_reason || !op->deny_details) {
        finish(call, RPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    for (size_t i = 0; i < req->n_denials; i++) {
        op->n_deny++;
        if (!denial_audit_text(req->denials[i], &op->deny_reason[i], &op->deny_details[i])) {
            finish(call, RPC_RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
    }
    if (!submit(op, deny_work, deny_done, op))
        finish(call, RPC_UNAVAILABLE, "server busy, retry later");
}

/* ---- Sync ------------------------------------------------------------------ */

static node_agent_state *agent_state(node_service *ns, const char *agent)
{
    for (size_t i = 0; i < ns->n_agents; i++)
        if (strcmp(ns->agents[i].agent, agent) == 0) return &ns->agents[i];
    if (ns->n_agents == ns->cap_agents) {
        size_t cap = ns->cap_agents ? 2 * ns->cap_agents : 16;
        node_agent_state *v = realloc(ns->agents, cap * sizeof *v);
        if (!v) return NULL;
        ns->agents = v;
        ns->cap_agents = cap;
    }
    char *dup = strdup(agent);
    if (!dup) return NULL;
    ns->agents[ns->n_agents] = (node_agent_state){.agent = dup};
    return &ns->agents[ns->n_agents++];
}

bool node_service_agent_acks(const node_service *ns, const char *agent_id,
                             uint64_t *bundle_seq_ack, uint64_t *entries_rev_ack)
{
    for (size_t i = 0; i < ns->n_agents; i++) {
        const node_agent_state *a = &ns->agents[i];
        if (strcmp(a->agent, agent_id) == 0 && a->acked) {
            if (bundle_seq_ack) *bundle_seq_ack = a->bundle_ack;
            if (entries_rev_ack) *entries_rev_ack = a->rev_ack;
            return true;
        }
    }
    return false;
}

size_t node_service_agents(const node_service *ns, const node_agent_state **out)
{
    *out = ns->agents;
    return ns->n_agents;
}

/* Sends the complete state now, or marks the stream dirty while a previous
 * state is still queued (each state replaces the last: no need to queue two). */
static void sync_push(sync_stream *s)
{
    node_service *ns = s->ns;
    if (!s->call || rpc_call_is_closed(s->call)) return;
    if (rpc_call_queued(s->call) > 0) {
        s->dirty = true;
        return;
    }
    s->dirty = false;
    store_entry_row *rows = NULL;
    size_t n = 0;
    int64_t rev = 0;
    arena *a = NULL;
    mid_result r = store_entry_list(ns->o.st, s->agent, &rows, &n, &rev);
    if (!mid_is_ok(r)) {
        LOG_WARN("node API: Sync of %s: cannot list entries: %s", s->agent, mid_errmsg());
        s->dirty = true; /* retried at the next poll */
        return;
    }
    Meshid__Agent__V1__AgentSyncResponse resp = MESHID__AGENT__V1__AGENT_SYNC_RESPONSE__INIT;
    resp.bundle = ns->bundle;
    resp.n_bundle = ns->n_bundle;
    resp.bundle_sequence = ns->bundle_seq;
    resp.entries_revision = rev > 0 ? (uint64_t)rev : 0;
    resp.tainted_authority_ids = ns->tainted;
    resp.n_tainted_authority_ids = ns->n_tainted;
    r = arena_new(0, &a);
    if (mid_is_ok(r) && n > 0) {
        resp.entries = arena_calloc(a, n * sizeof *resp.entries);
        Meshid__Agent__V1__Entry *ev = arena_calloc(a, n * sizeof *ev);
        if (!resp.entries || !ev) r = mid_fail(MID_E_NOMEM, __FILE__, __LINE__, "out of memory");
        for (size_t i = 0; mid_is_ok(r) && i < n; i++) {
            r = node_entry_to_proto(a, &rows[i].e, &ev[i]);
            resp.entries[i] = &ev[i];
        }
        resp.n_entries = n;
    }
    if (mid_is_ok(r)) r = rpc_call_send(s->call, &resp.base);
    if (mid_is_ok(r)) {
        s->sent = true;
        s->sent_bundle = ns->bundle_seq;
        s->sent_rev = rev;
        s->sent_auth_gen = ns->auth_gen;
    } else if (r.err == MID_E_BUSY) {
        s->dirty = true;
    } else {
        LOG_WARN("node API: Sync of %s: %s", s->agent, mid_errmsg());
        rpc_call_abort(s->call, RPC_INTERNAL, "cannot send the agent's state");
    }
    arena_free(a);
    store_entry_list_free(rows, n);
}

static void sync_start(rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    (void)m;
    node_service *ns = ctx;
    char msg[MSG_MAX];
    const char *agent;
    rpc_code code = check_agent(call, ns, &agent, msg);
    if (code != RPC_OK) {
        finish(call, code, msg);
        return;
    }
    touch_agent(ns, agent);
    sync_stream *s = calloc(1, sizeof *s);
    char *dup = strdup(agent);
    node_agent_state *st = agent_state(ns, agent);
    if (!s || !dup || !st) {
        free(s);
        free(dup);
        finish(call, RPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    st->streams++;
    st->last_seen_ms = time_now_ms();
    s->ns = ns;
    s->call = call;
    s->agent = dup;
    s->next = ns->streams.next;
    s->prev = &ns->streams;
    ns->streams.next->prev = s;
    ns->streams.next = s;
    rpc_call_set_user(call, s);
    /* The bundle goes out first, before the agent can ask for any SVID on
     * this connection: a returning agent trusts new roots before it can be
     * handed a certificate chained to one. */
    sync_push(s);
}

static void sync_message(rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    node_service *ns = ctx;
    sync_stream *s = rpc_call_user(call);
    if (!s) return;
    if (!m) { /* the agent half-closed: we are done too */
        finish(call, RPC_OK, NULL);
        return;
    }
    const Meshid__Agent__V1__AgentSyncRequest *req =
        (const Meshid__Agent__V1__AgentSyncRequest *)m;
    node_agent_state *st = agent_state(ns, s->agent);
    if (!st) return;
    st->acked = true;
    st->bundle_ack = req->bundle_sequence_ack;
    st->rev_ack = req->entries_revision_ack;
    st->sds_ack = req->sds_bundle_sequence_ack;
    st->last_seen_ms = time_now_ms();
}

static void sync_drain(rpc_call *call, void *ctx)
{
    (void)ctx;
    sync_stream *s = rpc_call_user(call);
    if (s && s->dirty) sync_push(s);
}

static void stream_unlink(node_service *ns, sync_stream *s)
{
    s->prev->next = s->next;
    s->next->prev = s->prev;
    node_agent_state *st = agent_state(ns, s->agent);
    if (st && st->streams > 0) {
        st->streams--;
        st->last_seen_ms = time_now_ms();
    }
    free(s->agent);
    free(s);
}

static void sync_done(rpc_call *call, bool cancelled, void *ctx)
{
    (void)cancelled;
    node_service *ns = ctx;
    sync_stream *s = rpc_call_user(call);
    if (!s) return;
    stream_unlink(ns, s);
}

static void close_agent_streams(node_service *ns, const char *agent, const char *why)
{
    for (sync_stream *s = ns->streams.next; s != &ns->streams; s = s->next) {
        if (strcmp(s->agent, agent) == 0 && s->call && !rpc_call_is_closed(s->call))
            rpc_call_abort(s->call, RPC_PERMISSION_DENIED, why);
    }
}

void node_service_agent_evicted(node_service *ns, const char *agent_id)
{
    char msg[MSG_MAX];
    snprintf(msg, sizeof msg, "agent %s was evicted", agent_id);
    close_agent_streams(ns, agent_id, msg);
}

/* Reloads bundle, authorities and entries revision, then walks every stream
 * (ban first) and pushes to those whose state is behind. */
static void refresh_and_push(node_service *ns)
{
    bool changed = false;
    if (!mid_is_ok(state_refresh(ns, &changed)))
        LOG_WARN("node API: cannot reload the trust bundle: %s", mid_errmsg());
    int64_t rev = ns->entries_rev;
    if (!mid_is_ok(store_entries_revision(ns->o.st, &rev)))
        LOG_WARN("node API: cannot read the entries revision: %s", mid_errmsg());
    ns->entries_rev = rev;
    for (sync_stream *s = ns->streams.next; s != &ns->streams; s = s->next) {
        if (!s->call || rpc_call_is_closed(s->call)) continue;
        store_agent_row row = {0};
        mid_result r = store_agent_get(ns->o.st, s->agent, &row);
        int gone = r.err == MID_E_NOT_FOUND || (mid_is_ok(r) && row.a.banned);
        store_agent_row_clear(&row);
        if (gone) {
            node_service_agent_evicted(ns, s->agent);
            continue;
        }
        if (s->dirty || !s->sent || s->sent_bundle != ns->bundle_seq || s->sent_rev != rev ||
            s->sent_auth_gen != ns->auth_gen)
            sync_push(s);
    }
}

void node_service_refresh(node_service *ns)
{
    if (!ns || ns->shutting_down) return;
    refresh_and_push(ns);
}

/* The poll: bundle, authorities and entries revision, then every stream. */
static void poll_tick(rpc_loop *loop, void *arg)
{
    node_service *ns = arg;
    ns->poll = NULL;
    if (ns->shutting_down) return;
    refresh_and_push(ns);
    if (ns->o.on_poll) ns->o.on_poll(ns->o.on_poll_ctx);
    if (!mid_is_ok(rpc_timer_add(loop, ns->o.sync_poll_ms, poll_tick, ns, &ns->poll)))
        LOG_ERROR("node API: cannot re-arm the Sync poll: %s", mid_errmsg());
}

/* ---- the activation gate and the CA handle --------------------------------- */

uint64_t node_service_root_sequence(const node_service *ns, const char *root_id)
{
    const root_seen *r = root_find(ns, root_id);
    return r ? r->seq : 0;
}

mid_result node_service_gate_check(node_service *ns, const char *root_id, char *pending,
                                   size_t cap, size_t *n_pending)
{
    size_t n = 0, listed = 0, connected = 0, used = 0;
    if (n_pending) *n_pending = 0;
    if (pending && cap) pending[0] = '\0';
    refresh_and_push(ns); /* a root prepared a moment ago is served now */
    const root_seen *rs = root_find(ns, root_id);
    MID_ENSURE(rs != NULL, MID_E_STATE, "root %.16s is not in the trust bundle", root_id);
    for (size_t i = 0; i < ns->n_agents; i++) {
        const node_agent_state *a = &ns->agents[i];
        if (a->streams == 0) continue; /* gets the bundle first when it reconnects */
        connected++;
        if (a->acked && a->sds_ack >= rs->seq) continue;
        n++;
        if (pending && listed < NODE_GATE_LIST_MAX && used + 8 < cap) {
            int w = snprintf(pending + used, cap - used, "%s%s", listed ? ", " : "", a->agent);
            if (w > 0 && (size_t)w < cap - used) {
                used += (size_t)w;
                listed++;
            } else {
                pending[used] = '\0';
            }
        }
    }
    if (n_pending) *n_pending = n;
    if (n == 0) return mid_ok();
    if (pending && n > listed && used + 24 < cap)
        snprintf(pending + used, cap - used, " (+%zu more)", n - listed);
    MID_BAIL(MID_E_STATE,
             "not acknowledged by: %s: %zu of %zu connected agents have not acknowledged bundle "
             "sequence %llu (the first with root %.16s)",
             pending ? pending : "?", n, connected, (unsigned long long)rs->seq, root_id);
}

node_ca_pin *node_service_ca_pin(node_service *ns)
{
    ns->cur->refs++;
    return ns->cur;
}

ca *node_ca_pin_ca(const node_ca_pin *p) { return p->c; }

void node_ca_pin_release(node_ca_pin *p)
{
    if (!p || --p->refs > 0) return;
    ca_close(p->c);
    free(p);
}

ca *node_service_ca(const node_service *ns) { return ns->cur->c; }

mid_result node_service_set_ca(node_service *ns, ca *c)
{
    node_ca_pin *p = calloc(1, sizeof *p);
    if (!p) {
        ca_close(c);
        MID_BAIL(MID_E_NOMEM, "out of memory");
    }
    p->c = c;
    p->refs = 1;
    node_ca_pin *old = ns->cur;
    ns->cur = p;
    node_ca_pin_release(old); /* closed now, or by the last job using it */
    return mid_ok();
}

/* ---- lifecycle --------------------------------------------------------------- */

static const rpc_handler attest_h = {.on_start = attest_start, .on_done = op_call_done};
static const rpc_handler renew_h = {.on_start = renew_start, .on_done = op_call_done};
static const rpc_handler batch_h = {.on_start = batch_start, .on_done = op_call_done};
static const rpc_handler deny_h = {.on_start = deny_start, .on_done = op_call_done};
static const rpc_handler sync_h = {.on_start = sync_start, .on_message = sync_message,
                                   .on_drain = sync_drain, .on_done = sync_done};

mid_result node_service_new(const node_service_opts *o, node_service **out)
{
    *out = NULL;
    MID_ENSURE(o && o->st && o->ca && o->wp && o->loop, MID_E_INVALID,
               "node service needs a store, a CA, a workpool and a loop");
    MID_ENSURE(o->agent_svid_ttl >= 0 && o->sync_poll_ms >= 0, MID_E_INVALID,
               "negative TTL or poll interval");
    node_service *ns = calloc(1, sizeof *ns);
    MID_ENSURE_MEM(ns);
    ns->cur = calloc(1, sizeof *ns->cur);
    if (!ns->cur) {
        free(ns);
        MID_BAIL(MID_E_NOMEM, "out of memory");
    }
    ns->cur->c = o->ca;
    ns->cur->refs = 1;
    ns->o = *o;
    ns->o.ca = NULL; /* the current handle is ns->cur */
    if (!ns->o.sync_poll_ms) ns->o.sync_poll_ms = NODE_SYNC_POLL_MS;
    snprintf(ns->td, sizeof ns->td, "%s", ca_trust_domain(o->ca));
    ns->streams.next = ns->streams.prev = &ns->streams;
    bool changed;
    mid_result r = state_refresh(ns, &changed);
    if (mid_is_ok(r)) r = store_entries_revision(o->st, &ns->entries_rev);
    if (!mid_is_ok(r)) {
        ns->cur->c = NULL; /* not taken on failure */
        node_service_free(ns);
        return r;
    }
    *out = ns;
    return mid_ok();
}

mid_result node_service_register(node_service *ns, rpc_server *srv)
{
    MID_GUARD(rpc_server_register(srv, M_ATTEST, RPC_UNARY,
                                  &meshid__agent__v1__attest_agent_request__descriptor, &attest_h,
                                  ns));
    MID_GUARD(rpc_server_register(srv, M_RENEW, RPC_UNARY,
                                  &meshid__agent__v1__renew_agent_request__descriptor, &renew_h,
                                  ns));
    MID_GUARD(rpc_server_register(srv, M_BATCH, RPC_UNARY,
                                  &meshid__agent__v1__batch_sign_request__descriptor, &batch_h,
                                  ns));
    MID_GUARD(rpc_server_register(srv, M_DENY, RPC_UNARY,
                                  &meshid__agent__v1__report_denials_request__descriptor, &deny_h,
                                  ns));
    MID_GUARD(rpc_server_register(srv, M_SYNC, RPC_BIDI,
                                  &meshid__agent__v1__agent_sync_request__descriptor, &sync_h, ns));
    if (!ns->poll)
        MID_GUARD(rpc_timer_add(ns->o.loop, ns->o.sync_poll_ms, poll_tick, ns, &ns->poll));
    return mid_ok();
}

void node_service_shutdown(node_service *ns)
{
    if (!ns) return;
    ns->shutting_down = true;
    if (ns->poll) rpc_timer_cancel(ns->o.loop, ns->poll);
    ns->poll = NULL;
}

void node_service_free(node_service *ns)
{
    if (!ns) return;
    /* streams still listed here were never ended by the loop (it was not
     * freed): detach them so a late on_done cannot reach freed memory */
    while (ns->streams.next != &ns->streams) {
        sync_stream *s = ns->streams.next;
        if (s->call) rpc_call_set_user(s->call, NULL);
        stream_unlink(ns, s);
    }
    for (size_t i = 0; i < ns->n_agents; i++) free(ns->agents[i].agent);
    free(ns->agents);
    free(ns->roots);
    for (size_t i = 0; i < ns->n_tainted; i++) free(ns->tainted[i]);
    free(ns->tainted);
    free(ns->auth_print);
    node_ca_pin_release(ns->cur);
    free(ns->bundle_pem);
    arena_free(ns->bundle_arena);
    free(ns);
}
