/* A fake meshid node API server for the agent tests: TLS on 127.0.0.1 with
 * optional client certificates, a throwaway root CA made here with OpenSSL
 * (independent of ca/), AttestAgent with one-time tokens, RenewAgent,
 * BatchSignX509SVID that records every CSR, Sync pushing the state, and
 * ReportDenials recording what the agent reported. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "lib/fsutil.h"
#include "meshid/agent/v1/agent.pb-c.h"
#include "tests/unit/agent/agent_tests.h"

#define M_ATTEST "/meshid.agent.v1.Node/AttestAgent"
#define M_RENEW "/meshid.agent.v1.Node/RenewAgent"
#define M_SIGN "/meshid.agent.v1.Node/BatchSignX509SVID"
#define M_SYNC "/meshid.agent.v1.Node/Sync"
#define M_DENY "/meshid.agent.v1.Node/ReportDenials"
#define MAX_SYNCS 8
#define MAX_TOKENS 8

struct fake_server {
    rpc_loop *loop;
    int port;
    EVP_PKEY *ca_key;
    X509 *ca;
    char *ca_pem;
    unsigned char *ca_der;
    int ca_der_len;
    rpc_server *srv;
    char *srv_cert, *srv_key;
    char *srv_cert_expired; /* same key and names, notAfter a minute ago */
    long serial;
    bool down;
    int64_t agent_ttl;
    char tokens[MAX_TOKENS][64];
    size_t n_tokens;
    fake_entry entries[FAKE_MAX_ENTRIES];
    size_t n_entries;
    uint64_t rev;
    rpc_call *syncs[MAX_SYNCS];
    fake_counts c;
    struct {
        unsigned char *d;
        size_t len;
    } csrs[FAKE_MAX_CSRS], reqs[FAKE_MAX_CSRS];
    size_t n_csrs, n_reqs;
    fake_denial denials[FAKE_MAX_DENIALS];
    size_t n_denials;
    int deny_limit;
    /* extra authorities: roots[0] is `ca`; each signs SVIDs of the entries
     * naming it, and is in the Sync bundle when in_bundle */
    X509 *roots[FAKE_MAX_ROOTS];
    EVP_PKEY *root_keys[FAKE_MAX_ROOTS];
    bool in_bundle[FAKE_MAX_ROOTS];
    size_t n_roots;
    uint64_t bundle_seq;
    char tainted[128];
};

/* ---- certificates ---------------------------------------------------------- */

static char *pem_of_cert(X509 *x)
{
    BIO *b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_X509(b, x), 1);
    char *d;
    long n = BIO_get_mem_data(b, &d);
    char *s = calloc(1, (size_t)n + 1);
    memcpy(s, d, (size_t)n);
    BIO_free(b);
    return s;
}

static char *pem_of_key(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL), 1);
    char *d;
    long n = BIO_get_mem_data(b, &d);
    char *s = calloc(1, (size_t)n + 1);
    memcpy(s, d, (size_t)n);
    BIO_free(b);
    return s;
}

static void ext(X509 *x, X509 *issuer, int nid, const char *v)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nid, v);
    assert_non_null(e);
    assert_int_equal(X509_add_ext(x, e, -1), 1);
    X509_EXTENSION_free(e);
}

static EVP_PKEY *new_key(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    assert_non_null(k);
    return k;
}

/* A certificate for `pub` signed by `issuer` with `issuer_key` (self-signed
 * when issuer is NULL). */
static X509 *make_cert_by(fake_server *f, X509 *issuer, EVP_PKEY *issuer_key, EVP_PKEY *pub,
                          const char *san, bool is_ca, int64_t ttl, int64_t backdate)
{
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), f->serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), -backdate);
    X509_gmtime_adj(X509_getm_notAfter(x), (long)ttl);
    X509_set_pubkey(x, pub);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC, (const unsigned char *)"fake", -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n);
    ext(x, issuer, NID_basic_constraints, is_ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
    ext(x, issuer, NID_key_usage,
        is_ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature,keyEncipherment");
    ext(x, issuer, NID_subject_key_identifier, "hash");
    if (issuer) ext(x, issuer, NID_authority_key_identifier, "keyid:always");
    ext(x, issuer, NID_subject_alt_name, san);
    assert_true(X509_sign(x, issuer_key, EVP_sha256()) > 0);
    return x;
}

/* A certificate for `pub` signed by the fake CA (self-signed when ca NULL). */
static X509 *make_cert(fake_server *f, EVP_PKEY *pub, const char *san, bool is_ca, int64_t ttl,
                       int64_t backdate)
{
    return make_cert_by(f, f->ca, f->ca_key, pub, san, is_ca, ttl, backdate);
}

static ProtobufCBinaryData der_of(X509 *x)
{
    ProtobufCBinaryData b = {0, NULL};
    unsigned char *p = NULL;
    int n = i2d_X509(x, &p);
    assert_true(n > 0);
    b.data = malloc((size_t)n);
    memcpy(b.data, p, (size_t)n);
    b.len = (size_t)n;
    OPENSSL_free(p);
    return b;
}

/* ---- helpers ----------------------------------------------------------------- */

static void record_req(fake_server *f, const ProtobufCMessage *m)
{
    if (f->n_reqs >= FAKE_MAX_CSRS) return;
    size_t n = protobuf_c_message_get_packed_size(m);
    unsigned char *d = malloc(n ? n : 1);
    protobuf_c_message_pack(m, d);
    f->reqs[f->n_reqs].d = d;
    f->reqs[f->n_reqs].len = n;
    f->n_reqs++;
}

static EVP_PKEY *csr_key(fake_server *f, const ProtobufCBinaryData *csr, bool record)
{
    const unsigned char *p = csr->data;
    X509_REQ *req = d2i_X509_REQ(NULL, &p, (long)csr->len);
    if (!req) return NULL;
    EVP_PKEY *k = X509_REQ_get_pubkey(req);
    if (!k || X509_REQ_verify(req, k) != 1) {
        EVP_PKEY_free(k);
        X509_REQ_free(req);
        ERR_clear_error();
        return NULL;
    }
    if (record && f->n_csrs < FAKE_MAX_CSRS) {
        unsigned char *spki = NULL;
        int n = i2d_PUBKEY(k, &spki);
        f->csrs[f->n_csrs].d = malloc((size_t)n);
        memcpy(f->csrs[f->n_csrs].d, spki, (size_t)n);
        f->csrs[f->n_csrs].len = (size_t)n;
        f->n_csrs++;
        OPENSSL_free(spki);
    }
    X509_REQ_free(req);
    return k;
}

static bool is_agent(fake_server *f, rpc_call *call)
{
    const rpc_peer *p = rpc_call_peer(call);
    if (p->spiffe_id && strcmp(p->spiffe_id, FAKE_AGENT_ID) == 0) return true;
    f->c.unauthenticated++;
    return false;
}

static void free_bins(ProtobufCBinaryData *b, size_t n)
{
    for (size_t i = 0; i < n; i++) free(b[i].data);
}

/* ---- AttestAgent / RenewAgent -------------------------------------------------- */

static void agent_svid(fake_server *f, rpc_call *call, const ProtobufCBinaryData *csr, bool attest)
{
    EVP_PKEY *k = csr_key(f, csr, false);
    if (!k) {
        mid_result r = rpc_call_finish(call, RPC_INVALID_ARGUMENT, "bad CSR");
        (void)r;
        return;
    }
    X509 *x = make_cert(f, k, "URI:" FAKE_AGENT_ID, false, f->agent_ttl, 0);
    EVP_PKEY_free(k);
    ProtobufCBinaryData chain = der_of(x), bundle = der_of(f->ca);
    X509_free(x);
    if (attest) {
        Meshid__Agent__V1__AttestAgentResponse resp = MESHID__AGENT__V1__ATTEST_AGENT_RESPONSE__INIT;
        resp.agent_spiffe_id = (char *)FAKE_AGENT_ID;
        resp.n_svid_chain = 1;
        resp.svid_chain = &chain;
        resp.n_bundle = 1;
        resp.bundle = &bundle;
        resp.bundle_sequence = 1;
        assert_true(mid_is_ok(rpc_call_send(call, &resp.base)));
    } else {
        Meshid__Agent__V1__RenewAgentResponse resp = MESHID__AGENT__V1__RENEW_AGENT_RESPONSE__INIT;
        resp.n_svid_chain = 1;
        resp.svid_chain = &chain;
        resp.n_bundle = 1;
        resp.bundle = &bundle;
        resp.bundle_sequence = 1;
        assert_true(mid_is_ok(rpc_call_send(call, &resp.base)));
    }
    assert_true(mid_is_ok(rpc_call_finish(call, RPC_OK, NULL)));
    free(chain.data);
    free(bundle.data);
}

static void attest_start(rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    fake_server *f = ctx;
    const Meshid__Agent__V1__AttestAgentRequest *req = (const void *)m;
    record_req(f, m);
    if (f->down) {
        rpc_call_abort(call, RPC_UNAVAILABLE, "down");
        return;
    }
    for (size_t i = 0; i < f->n_tokens; i++) {
        if (f->tokens[i][0] && strcmp(f->tokens[i], req->join_token) == 0) {
            f->tokens[i][0] = '\0'; /* single use */
            f->c.attests++;
            agent_svid(f, call, &req->csr, true);
            return;
        }
    }
    f->c.attest_refused++;
    rpc_call_abort(call, RPC_UNAUTHENTICATED, "unknown or used join token");
}

static void renew_start(rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    fake_server *f = ctx;
    const Meshid__Agent__V1__RenewAgentRequest *req = (const void *)m;
    record_req(f, m);
    if (f->down) {
        rpc_call_abort(call, RPC_UNAVAILABLE, "down");
        return;
    }
    if (!is_agent(f, call)) {
        rpc_call_abort(call, RPC_UNAUTHENTICATED, "agent certificate required");
        return;
    }
    f->c.renews++;
    agent_svid(f, call, &req->csr, false);
}

/* ---- BatchSign ---------------------------------------------------------------- */

static fake_entry *entry_by_id(fake_server *f, const char *id)
{
    for (size_t i = 0; i < f->n_entries; i++)
        if (strcmp(f->entries[i].id, id) == 0) return &f->entries[i];
    return NULL;
}

static void sign_start(rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    fake_server *f = ctx;
    const Meshid__Agent__V1__BatchSignRequest *req = (const void *)m;
    record_req(f, m);
    if (f->down) {
        rpc_call_abort(call, RPC_UNAVAILABLE, "down");
        return;
    }
    if (!is_agent(f, call)) {
        rpc_call_abort(call, RPC_UNAUTHENTICATED, "agent certificate required");
        return;
    }
    f->c.batches++;
    size_t n = req->n_requests;
    Meshid__Agent__V1__SignResult *res = calloc(n ? n : 1, sizeof *res);
    Meshid__Agent__V1__SignResult **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    ProtobufCBinaryData *chains = calloc(n ? n : 1, sizeof *chains);
    for (size_t i = 0; i < n; i++) {
        const Meshid__Agent__V1__SignRequest *sr = req->requests[i];
        meshid__agent__v1__sign_result__init(&res[i]);
        ptrs[i] = &res[i];
        res[i].entry_id = sr->entry_id;
        fake_entry *e = entry_by_id(f, sr->entry_id);
        EVP_PKEY *k = csr_key(f, &sr->csr, true);
        if (!e || !k || e->fail_code) {
            res[i].code = !e ? RPC_NOT_FOUND : !k ? RPC_INVALID_ARGUMENT : e->fail_code;
            res[i].message = (char *)"refused by the fake";
            EVP_PKEY_free(k);
            continue;
        }
        char san[300];
        if (e->dns[0]) snprintf(san, sizeof san, "URI:%s,DNS:%s", e->spiffe_id, e->dns);
        else snprintf(san, sizeof san, "URI:%s", e->spiffe_id);
        /* backdated like the real CA (CA_CLOCK_SKEW) */
        size_t ri = (size_t)e->root < f->n_roots ? (size_t)e->root : 0;
        X509 *x = make_cert_by(f, f->roots[ri], f->root_keys[ri], k, san, false,
                               e->ttl ? e->ttl : 3600, 30);
        EVP_PKEY_free(k);
        chains[i] = der_of(x);
        X509_free(x);
        res[i].n_svid_chain = 1;
        res[i].svid_chain = &chains[i];
        f->c.signs++;
    }
    Meshid__Agent__V1__BatchSignResponse resp = MESHID__AGENT__V1__BATCH_SIGN_RESPONSE__INIT;
    resp.n_results = n;
    resp.results = ptrs;
    assert_true(mid_is_ok(rpc_call_send(call, &resp.base)));
    assert_true(mid_is_ok(rpc_call_finish(call, RPC_OK, NULL)));
    free_bins(chains, n);
    free(chains);
    free(ptrs);
    free(res);
}

/* ---- ReportDenials ------------------------------------------------------------- */

static void deny_start(rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    fake_server *f = ctx;
    const Meshid__Agent__V1__ReportDenialsRequest *req = (const void *)m;
    if (f->down) {
        f->c.report_failures++;
        rpc_call_abort(call, RPC_UNAVAILABLE, "down");
        return;
    }
    if (!is_agent(f, call)) {
        f->c.report_failures++;
        rpc_call_abort(call, RPC_UNAUTHENTICATED, "agent certificate required");
        return;
    }
    if (req->n_denials > 100) {
        f->c.report_failures++;
        rpc_call_abort(call, RPC_INVALID_ARGUMENT, "too many denials");
        return;
    }
    size_t n = req->n_denials;
    if (f->deny_limit >= 0 && n > (size_t)f->deny_limit) n = (size_t)f->deny_limit;
    for (size_t i = 0; i < n; i++) {
        const Meshid__Agent__V1__Denial *d = req->denials[i];
        if (strstr(d->reason, "dropped")) f->c.drop_notes++;
        if (f->n_denials == FAKE_MAX_DENIALS) continue;
        fake_denial *o = &f->denials[f->n_denials++];
        o->uid = d->uid;
        o->gid = d->gid;
        o->pid = d->pid;
        o->count = d->count;
        o->time_ms = d->time_ms;
        snprintf(o->api, sizeof o->api, "%s", d->api);
        snprintf(o->reason, sizeof o->reason, "%s", d->reason);
        size_t w = 0;
        o->selectors[0] = '\0';
        for (size_t k = 0; k < d->n_selectors && w < sizeof o->selectors; k++) {
            int len = snprintf(o->selectors + w, sizeof o->selectors - w, "%s%s:%s", k ? " " : "",
                               d->selectors[k]->type, d->selectors[k]->value);
            if (len < 0) break;
            w += (size_t)len;
        }
    }
    f->c.reports++;
    f->c.denials += (int)n;
    Meshid__Agent__V1__ReportDenialsResponse resp = MESHID__AGENT__V1__REPORT_DENIALS_RESPONSE__INIT;
    resp.accepted = (int32_t)n;
    assert_true(mid_is_ok(rpc_call_send(call, &resp.base)));
    assert_true(mid_is_ok(rpc_call_finish(call, RPC_OK, NULL)));
}

/* ---- Sync ------------------------------------------------------------------------ */

static void send_state(fake_server *f, rpc_call *call)
{
    Meshid__Agent__V1__Entry *es = calloc(f->n_entries + 1, sizeof *es);
    Meshid__Agent__V1__Entry **ep = calloc(f->n_entries + 1, sizeof *ep);
    Meshid__Agent__V1__Selector *ss = calloc(f->n_entries + 1, sizeof *ss);
    Meshid__Agent__V1__Selector **sp = calloc(f->n_entries + 1, sizeof *sp);
    char **dns = calloc(f->n_entries + 1, sizeof *dns);
    for (size_t i = 0; i < f->n_entries; i++) {
        fake_entry *e = &f->entries[i];
        meshid__agent__v1__entry__init(&es[i]);
        meshid__agent__v1__selector__init(&ss[i]);
        ss[i].type = (char *)"unix";
        ss[i].value = e->selector;
        sp[i] = &ss[i];
        es[i].id = e->id;
        es[i].spiffe_id = e->spiffe_id;
        es[i].parent_id = (char *)FAKE_AGENT_ID;
        es[i].n_selectors = 1;
        es[i].selectors = &sp[i];
        es[i].ttl_seconds = e->ttl;
        es[i].revision = e->revision;
        if (e->dns[0]) {
            dns[i] = e->dns;
            es[i].n_dns_names = 1;
            es[i].dns_names = &dns[i];
        }
        ep[i] = &es[i];
    }
    ProtobufCBinaryData bundle[FAKE_MAX_ROOTS];
    size_t nb = 0;
    for (size_t i = 0; i < f->n_roots; i++)
        if (f->in_bundle[i]) bundle[nb++] = der_of(f->roots[i]);
    char *tainted = f->tainted;
    Meshid__Agent__V1__AgentSyncResponse resp = MESHID__AGENT__V1__AGENT_SYNC_RESPONSE__INIT;
    resp.n_bundle = nb;
    resp.bundle = bundle;
    resp.bundle_sequence = f->bundle_seq;
    resp.n_entries = f->n_entries;
    resp.entries = ep;
    resp.entries_revision = f->rev;
    if (tainted[0]) {
        resp.n_tainted_authority_ids = 1;
        resp.tainted_authority_ids = &tainted;
    }
    mid_result r = rpc_call_send(call, &resp.base);
    (void)r;
    free_bins(bundle, nb);
    free(es);
    free(ep);
    free(ss);
    free(sp);
    free(dns);
}

static void sync_start(rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    (void)m;
    fake_server *f = ctx;
    if (f->down) {
        rpc_call_abort(call, RPC_UNAVAILABLE, "down");
        return;
    }
    if (!is_agent(f, call)) {
        rpc_call_abort(call, RPC_UNAUTHENTICATED, "agent certificate required");
        return;
    }
    for (size_t i = 0; i < MAX_SYNCS; i++) {
        if (!f->syncs[i]) {
            f->syncs[i] = call;
            rpc_call_set_user(call, f);
            f->c.syncs_open++;
            f->c.syncs_total++;
            return;
        }
    }
    rpc_call_abort(call, RPC_RESOURCE_EXHAUSTED, "too many streams");
}

static void sync_msg(rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    fake_server *f = ctx;
    if (!m) {
        mid_result r = rpc_call_finish(call, RPC_OK, NULL);
        (void)r;
        return;
    }
    const Meshid__Agent__V1__AgentSyncRequest *req = (const void *)m;
    if (req->bundle_sequence_ack || req->entries_revision_ack) {
        f->c.acks++;
        f->c.last_bundle_ack = req->bundle_sequence_ack;
        f->c.last_rev_ack = req->entries_revision_ack;
    }
    f->c.sync_reqs++;
    f->c.last_sds_ack = req->sds_bundle_sequence_ack;
    if (req->sds_bundle_sequence_ack > req->bundle_sequence_ack) f->c.sds_ack_above++;
    /* answer the opening message of a stream with the state */
    if (rpc_call_user(call) == f) {
        rpc_call_set_user(call, NULL);
        send_state(f, call);
    }
}

static void sync_done(rpc_call *call, bool cancelled, void *ctx)
{
    (void)cancelled;
    fake_server *f = ctx;
    for (size_t i = 0; i < MAX_SYNCS; i++) {
        if (f->syncs[i] == call) {
            f->syncs[i] = NULL;
            f->c.syncs_open--;
        }
    }
}

static const rpc_handler h_attest = {.on_start = attest_start};
static const rpc_handler h_renew = {.on_start = renew_start};
static const rpc_handler h_sign = {.on_start = sign_start};
static const rpc_handler h_deny = {.on_start = deny_start};
static const rpc_handler h_sync = {.on_start = sync_start, .on_message = sync_msg,
                                   .on_done = sync_done};

/* ---- API ---------------------------------------------------------------------------- */

fake_server *fake_new(rpc_loop *loop)
{
    fake_server *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->loop = loop;
    f->serial = 1;
    f->agent_ttl = 3600;
    f->rev = 1;
    f->deny_limit = -1;
    f->ca_key = new_key();
    f->ca = make_cert(f, f->ca_key, "URI:spiffe://" FAKE_TD, true, 86400, 60);
    f->ca_pem = pem_of_cert(f->ca);
    f->roots[0] = f->ca;
    f->root_keys[0] = f->ca_key;
    f->in_bundle[0] = true;
    f->n_roots = 1;
    f->bundle_seq = 1;
    EVP_PKEY *sk = new_key();
    X509 *sx = make_cert(f, sk, "URI:spiffe://" FAKE_TD "/meshid/server,DNS:localhost,IP:127.0.0.1",
                         false, 86400, 60);
    f->srv_cert = pem_of_cert(sx);
    f->srv_key = pem_of_key(sk);
    X509_free(sx);
    sx = make_cert(f, sk, "URI:spiffe://" FAKE_TD "/meshid/server,DNS:localhost,IP:127.0.0.1", false,
                   -60, 120);
    f->srv_cert_expired = pem_of_cert(sx);
    X509_free(sx);
    EVP_PKEY_free(sk);

    rpc_server *srv = NULL;
    assert_true(mid_is_ok(rpc_server_new(loop, NULL, &srv)));
    assert_true(mid_is_ok(rpc_server_register(srv, M_ATTEST, RPC_UNARY,
                                              &meshid__agent__v1__attest_agent_request__descriptor,
                                              &h_attest, f)));
    assert_true(mid_is_ok(rpc_server_register(srv, M_RENEW, RPC_UNARY,
                                              &meshid__agent__v1__renew_agent_request__descriptor,
                                              &h_renew, f)));
    assert_true(mid_is_ok(rpc_server_register(srv, M_SIGN, RPC_UNARY,
                                              &meshid__agent__v1__batch_sign_request__descriptor,
                                              &h_sign, f)));
    assert_true(mid_is_ok(rpc_server_register(srv, M_DENY, RPC_UNARY,
                                              &meshid__agent__v1__report_denials_request__descriptor,
                                              &h_deny, f)));
    assert_true(mid_is_ok(rpc_server_register(srv, M_SYNC, RPC_BIDI,
                                              &meshid__agent__v1__agent_sync_request__descriptor,
                                              &h_sync, f)));
    rpc_tls tls = {.ca_pem = f->ca_pem,
                   .cert_pem = f->srv_cert,
                   .key_pem = f->srv_key,
                   .client_cert_optional = true};
    assert_true(mid_is_ok(rpc_server_add_tcp(srv, "127.0.0.1:0", &tls, &f->port)));
    assert_true(mid_is_ok(rpc_server_start(srv)));
    f->srv = srv;
    return f;
}

void fake_free(fake_server *f)
{
    if (!f) return;
    for (size_t i = 0; i < f->n_csrs; i++) free(f->csrs[i].d);
    for (size_t i = 0; i < f->n_reqs; i++) free(f->reqs[i].d);
    for (size_t i = 1; i < f->n_roots; i++) {
        X509_free(f->roots[i]);
        EVP_PKEY_free(f->root_keys[i]);
    }
    X509_free(f->ca);
    EVP_PKEY_free(f->ca_key);
    free(f->ca_pem);
    free(f->srv_cert);
    free(f->srv_cert_expired);
    free(f->srv_key);
    free(f);
}

int fake_port(const fake_server *f) { return f->port; }
const char *fake_root_pem(const fake_server *f) { return f->ca_pem; }

void fake_add_token(fake_server *f, const char *token)
{
    assert_true(f->n_tokens < MAX_TOKENS);
    snprintf(f->tokens[f->n_tokens++], sizeof f->tokens[0], "%s", token);
}

fake_entry *fake_entries(fake_server *f, size_t *n)
{
    *n = f->n_entries;
    return f->entries;
}

fake_entry *fake_add_entry(fake_server *f, const char *id, const char *spiffe_id,
                           const char *selector, int64_t ttl)
{
    assert_true(f->n_entries < FAKE_MAX_ENTRIES);
    fake_entry *e = &f->entries[f->n_entries++];
    memset(e, 0, sizeof *e);
    snprintf(e->id, sizeof e->id, "%s", id);
    snprintf(e->spiffe_id, sizeof e->spiffe_id, "%s", spiffe_id);
    snprintf(e->selector, sizeof e->selector, "%s", selector);
    e->ttl = ttl;
    e->revision = 1;
    return e;
}

void fake_remove_entry(fake_server *f, const char *id)
{
    for (size_t i = 0; i < f->n_entries; i++) {
        if (strcmp(f->entries[i].id, id) == 0) {
            memmove(&f->entries[i], &f->entries[i + 1],
                    (f->n_entries - i - 1) * sizeof f->entries[0]);
            f->n_entries--;
            return;
        }
    }
}

void fake_push(fake_server *f)
{
    f->rev++;
    for (size_t i = 0; i < MAX_SYNCS; i++)
        if (f->syncs[i]) send_state(f, f->syncs[i]);
}

void fake_set_tls_expired(fake_server *f, bool expired)
{
    rpc_tls tls = {.ca_pem = f->ca_pem,
                   .cert_pem = expired ? f->srv_cert_expired : f->srv_cert,
                   .key_pem = f->srv_key};
    assert_true(mid_is_ok(rpc_server_set_tls(f->srv, &tls)));
}

void fake_set_down(fake_server *f, bool down)
{
    f->down = down;
    if (!down) return;
    for (size_t i = 0; i < MAX_SYNCS; i++)
        if (f->syncs[i]) rpc_call_abort(f->syncs[i], RPC_UNAVAILABLE, "server going down");
}

void fake_set_agent_ttl(fake_server *f, int64_t ttl) { f->agent_ttl = ttl; }

int fake_add_root(fake_server *f, bool in_bundle)
{
    assert_true(f->n_roots < FAKE_MAX_ROOTS);
    size_t i = f->n_roots++;
    f->root_keys[i] = new_key();
    f->roots[i] = make_cert_by(f, NULL, f->root_keys[i], f->root_keys[i], "URI:spiffe://" FAKE_TD,
                               true, 86400, 60);
    f->in_bundle[i] = in_bundle;
    if (in_bundle) f->bundle_seq++;
    return (int)i;
}

void fake_set_root_in_bundle(fake_server *f, int root, bool in_bundle)
{
    assert_true(root >= 0 && (size_t)root < f->n_roots);
    if (f->in_bundle[root] == in_bundle) return;
    f->in_bundle[root] = in_bundle;
    f->bundle_seq++;
}

uint64_t fake_bundle_sequence(const fake_server *f) { return f->bundle_seq; }

void fake_root_id(const fake_server *f, int root, char *hex, size_t cap)
{
    assert_true(root >= 0 && (size_t)root < f->n_roots);
    const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(f->roots[root]);
    assert_non_null(ski);
    assert_true(cap > (size_t)ski->length * 2);
    for (int i = 0; i < ski->length; i++) snprintf(hex + 2 * i, 3, "%02x", ski->data[i]);
}

void fake_set_tainted(fake_server *f, const char *id)
{
    snprintf(f->tainted, sizeof f->tainted, "%s", id ? id : "");
}

void fake_seed_identity(fake_server *f, const char *data_dir, int64_t ttl)
{
    char dir[4096], p[4200];
    snprintf(dir, sizeof dir, "%s/agent", data_dir);
    assert_true(mid_is_ok(fs_mkdir_p(dir, 0700)));
    EVP_PKEY *k = new_key();
    X509 *x = make_cert(f, k, "URI:" FAKE_AGENT_ID, false, ttl, 0);
    char *cert = pem_of_cert(x), *key = pem_of_key(k);
    snprintf(p, sizeof p, "%s/svid.pem", dir);
    assert_true(mid_is_ok(fs_write_file(p, cert, strlen(cert), 0644)));
    snprintf(p, sizeof p, "%s/svid.key", dir);
    assert_true(mid_is_ok(fs_write_file(p, key, strlen(key), 0600)));
    snprintf(p, sizeof p, "%s/bundle.pem", dir);
    assert_true(mid_is_ok(fs_write_file(p, f->ca_pem, strlen(f->ca_pem), 0644)));
    free(cert);
    free(key);
    X509_free(x);
    EVP_PKEY_free(k);
}

const fake_counts *fake_get_counts(const fake_server *f) { return &f->c; }

const fake_denial *fake_denials(const fake_server *f, size_t *n)
{
    *n = f->n_denials;
    return f->denials;
}

void fake_set_denial_accept_limit(fake_server *f, int limit) { f->deny_limit = limit; }

size_t fake_csr_count(const fake_server *f) { return f->n_csrs; }

const unsigned char *fake_csr_spki(const fake_server *f, size_t i, size_t *len)
{
    *len = f->csrs[i].len;
    return f->csrs[i].d;
}

bool fake_requests_contain(const fake_server *f, const unsigned char *needle, size_t len)
{
    for (size_t i = 0; i < f->n_reqs; i++) {
        if (f->reqs[i].len < len) continue;
        for (size_t j = 0; j + len <= f->reqs[i].len; j++)
            if (memcmp(f->reqs[i].d + j, needle, len) == 0) return true;
    }
    return false;
}

/* ---- loop helpers --------------------------------------------------------------------- */

typedef struct {
    bool (*pred)(void *);
    void *arg;
    int64_t deadline;
    bool result;
} waiter;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void wait_tick(rpc_loop *loop, void *arg)
{
    waiter *w = arg;
    if ((w->pred && w->pred(w->arg)) || mono_ms() >= w->deadline) {
        w->result = w->pred ? w->pred(w->arg) : true;
        rpc_loop_stop(loop);
        return;
    }
    assert_true(mid_is_ok(rpc_timer_add(loop, 10, wait_tick, w, NULL)));
}

bool run_until(rpc_loop *loop, bool (*pred)(void *), void *arg, int64_t timeout_ms)
{
    waiter w = {.pred = pred, .arg = arg, .deadline = mono_ms() + timeout_ms};
    assert_true(mid_is_ok(rpc_timer_add(loop, 0, wait_tick, &w, NULL)));
    assert_true(mid_is_ok(rpc_loop_run(loop)));
    return w.result;
}

void run_for(rpc_loop *loop, int64_t ms)
{
    (void)run_until(loop, NULL, NULL, ms);
}

char *test_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char tmpl[4096];
    snprintf(tmpl, sizeof tmpl, "%s/meshid-agent-XXXXXX", base && *base ? base : "/tmp");
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    return strdup(d);
}

void test_rmtree(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}
