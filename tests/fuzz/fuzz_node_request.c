/* libFuzzer target for the node API's message intake, both ends.
 *
 * Server side (sds/node_service.c): the bytes are decoded as the runtime
 * decodes a request (rpc_codec_unpack, same size and arena limits) as
 * AttestAgentRequest, RenewAgentRequest, BatchSignRequest and
 * AgentSyncRequest; then the checks the handlers make before any store or
 * CA work run here without a network: the length gates, join_token_hash on
 * the presented token, and the CA's CSR intake (ca_csr_intake) on every CSR
 * the server would pass on, next to OpenSSL's d2i gate that AttestAgent
 * applies first.
 *
 * Agent side (sds/agent.c, sync_message): the bytes decoded as an
 * AgentSyncResponse go into a real agent_cache (agent_cache_set_bundle when
 * the bundle is non-empty, then agent_cache_set_entries), as the agent
 * does. Its rpc_loop is never run, so no timer fires and nothing is signed:
 * only the intake runs. The harness converts the proto entries into
 * identity/entry.h entries itself and checks the cache against that.
 *
 * Aborts when:
 *   - decoding is not a fixed point or a tight arena changes the verdict
 *     into anything but TOO_LARGE;
 *   - join_token_hash accepts anything but 64 lower-case hex digits, or its
 *     hash does not verify;
 *   - ca_csr_intake accepts a CSR that OpenSSL's d2i gate refuses, or
 *     accepts one over CA_CSR_MAX;
 *   - the cache keeps a bundle other than the PEM of exactly those DER
 *     certificates, or refuses one node_der_to_pem and OpenSSL both accept;
 *   - the cache holds a different number of entries than the distinct ids of
 *     the entries its contract accepts (id, SPIFFE ID, 1..64 valid selectors,
 *     at most 32 DNS names), its revision is not the message's, or a
 *     workload carrying an accepted entry's selectors is refused as unknown
 *     (it must be "not issued yet": NOT_FOUND).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "ca/ca.h"
#include "ca/csr.h"
#include "ca/x509.h"
#include "identity/entry.h"
#include "identity/join_token.h"
#include "identity/spiffe_id.h"
#include "lib/arena.h"
#include "lib/log.h"
#include "lib/result.h"
#include "lib/rpc_int.h"
#include "tests/fuzz/fuzz_decode.h"
#include "meshid/agent/v1/agent.pb-c.h"
#include "sds/agent_cache.h"
#include "sds/attest_unix.h"
#include "sds/node_client.h"
#include "sds/node_service.h"
#include "storage/store.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


#define TD "example.org"

static rpc_loop *g_loop;
static attest_unix_ctx *g_attestor;

static mid_result no_signing(void *ctx, const Meshid__Agent__V1__BatchSignRequest *req,
                             agent_sign_cb cb, void *arg)
{
    (void)ctx;
    (void)req;
    (void)cb;
    (void)arg;
    abort(); /* the loop never runs, so the batch timer never fires */
}
static const agent_signer_ops signer = {.batch_sign = no_signing};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_LVL_OFF);
    fuzz_decode_init();
    CHECK(mid_is_ok(rpc_loop_new(&g_loop)));
    CHECK(mid_is_ok(attest_unix_ctx_new(&g_attestor)));
    return 0;
}

/* ---- decoding: tests/fuzz/fuzz_decode.h -------------------------------------- */



/* ---- server side ------------------------------------------------------------------ */

/* node_service.c's csr_looks_valid, the gate AttestAgent applies first. */
static bool d2i_gate(const uint8_t *der, size_t len)
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

/* What the CA does with a CSR the server passes on (ca_issue starts with
 * ca_csr_intake). Returns whether it was accepted. */
static bool csr_intake(const ProtobufCBinaryData *csr, const char *id)
{
    ca_csr *c = NULL;
    mid_result r = ca_csr_intake(csr->data, csr->len, id, &c);
    if (!mid_is_ok(r)) {
        CHECK(c == NULL);
        CHECK(r.err != MID_E_OK);
        if (csr->len > CA_CSR_MAX) CHECK(r.err == MID_E_TOO_LARGE);
        return false;
    }
    CHECK(c != NULL && csr->len <= CA_CSR_MAX);
    size_t der_len = 0;
    const unsigned char *der = ca_csr_der(c, &der_len);
    CHECK(der != NULL && der_len > 0 && der_len <= csr->len);
    /* what the CA accepts, OpenSSL decodes and verifies too */
    CHECK(d2i_gate(der, der_len));
    ca_csr_free(c);
    ERR_clear_error();
    return true;
}

static void attest(const Meshid__Agent__V1__AttestAgentRequest *req)
{
    CHECK(req->join_token && req->hostname);
    size_t tlen = strlen(req->join_token), hlen = strlen(req->hostname);
    if (tlen == 0 || tlen > NODE_JOIN_TOKEN_MAX || hlen > NODE_HOSTNAME_MAX ||
        req->csr.len > CA_CSR_MAX)
        return; /* INVALID_ARGUMENT */
    /* The CA's own reader (which also takes PEM) runs at signing time;
     * csr_intake checks it against the d2i gate on the DER it kept. */
    csr_intake(&req->csr, NULL);
    if (!d2i_gate(req->csr.data, req->csr.len)) return;

    char hash[JOIN_TOKEN_HASH_LEN + 1];
    mid_result r = join_token_hash(req->join_token, hash);
    bool well_formed = tlen == JOIN_TOKEN_LEN;
    for (size_t i = 0; well_formed && i < tlen; i++) {
        char c = req->join_token[i];
        well_formed = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
    }
    CHECK(mid_is_ok(r) == well_formed);
    if (mid_is_ok(r)) {
        CHECK(strlen(hash) == JOIN_TOKEN_HASH_LEN);
        CHECK(join_token_verify(req->join_token, hash));
        spiffe_id *sid = NULL;
        CHECK(mid_is_ok(join_token_agent_id(TD, hash, &sid)));
        CHECK(spiffe_id_is_workload(sid) && spiffe_id_member_of(sid, TD));
        spiffe_id_free(sid);
    } else {
        CHECK(r.err == MID_E_INVALID);
        CHECK(!join_token_verify(req->join_token, hash));
    }
}

static void renew(const Meshid__Agent__V1__RenewAgentRequest *req)
{
    if (req->csr.len == 0 || req->csr.len > CA_CSR_MAX) return;
    csr_intake(&req->csr, "spiffe://" TD "/meshid/agent/join_token/0123456789abcdef");
}

static void batch(const Meshid__Agent__V1__BatchSignRequest *req)
{
    if (req->n_requests > NODE_BATCH_MAX) return;
    for (size_t i = 0; i < req->n_requests; i++) {
        const Meshid__Agent__V1__SignRequest *sr = req->requests[i];
        CHECK(sr != NULL && sr->entry_id != NULL);
        if (sr->entry_id[0] == '\0' || strlen(sr->entry_id) > STORE_ENTRY_ID_MAX) continue;
        if (sr->csr.len == 0 || sr->csr.len > CA_CSR_MAX) continue;
        csr_intake(&sr->csr, "spiffe://" TD "/ns/default/sa/web");
    }
}

/* ---- agent side --------------------------------------------------------------------- */

/* agent_cache.h's contract for one entry ("entries with a bad SPIFFE ID or
 * selector are skipped"), written from the header and identity/entry.h. */
static bool entry_acceptable(const Meshid__Agent__V1__Entry *pe)
{
    if (!pe->id || !pe->id[0] || !pe->spiffe_id) return false;
    spiffe_id *sid = NULL;
    if (!mid_is_ok(spiffe_id_parse(pe->spiffe_id, strlen(pe->spiffe_id), &sid))) return false;
    spiffe_id_free(sid);
    if (pe->n_selectors == 0 || pe->n_selectors > ENTRY_SELECTORS_MAX) return false;
    if (pe->n_dns_names > ENTRY_DNS_NAMES_MAX) return false;
    for (size_t i = 0; i < pe->n_selectors; i++) {
        const Meshid__Agent__V1__Selector *s = pe->selectors[i];
        if (!s || !s->type || !s->value) return false;
        entry_selector es = {.type = s->type, .value = s->value};
        if (!mid_is_ok(entry_selector_validate(&es))) return false;
    }
    return true;
}

/* The entry as identity/entry.h sees it, validated the way the admin API
 * validates what it stores (so a server-sent entry that the cache keeps is
 * checked against the stricter rules: they must not crash either). */
static void entry_model(const Meshid__Agent__V1__Entry *pe)
{
    if (pe->n_selectors > ENTRY_SELECTORS_MAX || pe->n_dns_names > ENTRY_DNS_NAMES_MAX) return;
    entry_selector sels[ENTRY_SELECTORS_MAX];
    const char *dns[ENTRY_DNS_NAMES_MAX];
    for (size_t i = 0; i < pe->n_selectors; i++)
        sels[i] = (entry_selector){.type = pe->selectors[i]->type, .value = pe->selectors[i]->value};
    for (size_t i = 0; i < pe->n_dns_names; i++) dns[i] = pe->dns_names[i];
    entry e = {.id = pe->id, .spiffe_id = pe->spiffe_id, .parent_id = pe->parent_id,
               .selectors = sels, .n_selectors = pe->n_selectors, .dns_names = dns,
               .n_dns_names = pe->n_dns_names, .ttl_seconds = pe->ttl_seconds};
    mid_result r = entry_validate(&e);
    if (mid_is_ok(r)) {
        /* stricter rules imply the cache's (which also want an id) */
        CHECK(entry_acceptable(pe) || pe->id[0] == '\0');
        CHECK(entry_matches(&e, sels, pe->n_selectors) == 1);
    } else {
        CHECK(r.err == MID_E_INVALID || r.err == MID_E_TOO_LARGE);
    }
}

static void sync_response(const Meshid__Agent__V1__AgentSyncResponse *m)
{
    agent_cache *c = NULL;
    agent_cache_opts o = {.loop = g_loop, .trust_domain = TD, .signer = &signer,
                          .attestor = g_attestor};
    CHECK(mid_is_ok(agent_cache_new(&o, &c)));

    if (m->n_bundle > 0) {
        char *pem = NULL;
        mid_result rp = node_der_to_pem(m->bundle, m->n_bundle, &pem);
        mid_result rb = agent_cache_set_bundle(c, m->bundle, m->n_bundle, m->bundle_sequence);
        if (mid_is_ok(rb)) {
            CHECK(mid_is_ok(rp) && m->n_bundle <= AGENT_BUNDLE_CERTS_MAX);
            CHECK(strcmp(agent_cache_bundle_pem(c), pem) == 0);
            CHECK(agent_cache_bundle_sequence(c) == m->bundle_sequence);
        } else {
            CHECK(agent_cache_bundle_pem(c) == NULL); /* unchanged */
            if (mid_is_ok(rp) && m->n_bundle <= AGENT_BUNDLE_CERTS_MAX) {
                STACK_OF(X509) *sk = NULL;
                CHECK(!mid_is_ok(ca_x509_stack_from_pem(pem, strlen(pem), "bundle", &sk)));
            }
        }
        free(pem);
        ERR_clear_error();
    }

    /* the distinct ids of the entries the cache must keep */
    size_t want = 0;
    for (size_t i = 0; i < m->n_entries; i++) {
        const Meshid__Agent__V1__Entry *pe = m->entries[i];
        CHECK(pe != NULL);
        entry_model(pe);
        if (!entry_acceptable(pe)) continue;
        bool dup = false;
        for (size_t k = 0; k < i && !dup; k++)
            dup = entry_acceptable(m->entries[k]) && strcmp(m->entries[k]->id, pe->id) == 0;
        if (!dup) want++;
    }
    mid_result r = agent_cache_set_entries(c, m->entries, m->n_entries, m->entries_revision);
    CHECK(mid_is_ok(r)); /* far below AGENT_ENTRIES_MAX */
    agent_cache_stats st;
    agent_cache_get_stats(c, &st);
    CHECK(st.entries == want);
    CHECK(st.issued == 0);
    CHECK(agent_cache_entries_revision(c) == m->entries_revision);

    /* a workload with an accepted entry's selectors: matched, not issued */
    for (size_t i = 0; i < m->n_entries && i < 4; i++) {
        const Meshid__Agent__V1__Entry *pe = m->entries[i];
        if (!entry_acceptable(pe)) continue;
        bool unique = true; /* of entries sharing an id, the cache keeps one */
        for (size_t k = 0; k < m->n_entries && unique; k++)
            unique = k == i || !entry_acceptable(m->entries[k]) ||
                     strcmp(m->entries[k]->id, pe->id) != 0;
        if (!unique) continue;
        char **text = calloc(pe->n_selectors, sizeof *text);
        CHECK(text != NULL);
        bool formatted = true;
        for (size_t k = 0; k < pe->n_selectors; k++) {
            entry_selector es = {.type = pe->selectors[k]->type, .value = pe->selectors[k]->value};
            size_t cap = strlen(es.type) + strlen(es.value) + 2;
            text[k] = malloc(cap);
            CHECK(text[k] != NULL);
            if (!mid_is_ok(entry_selector_format(&es, text[k], cap))) formatted = false;
        }
        CHECK(formatted);
        sds_view *v = NULL;
        mid_result rv = agent_cache_view_for(c, (const char *const *)text, pe->n_selectors, &v);
        CHECK(!mid_is_ok(rv) && v == NULL);
        CHECK(rv.err == MID_E_NOT_FOUND);
        for (size_t k = 0; k < pe->n_selectors; k++) free(text[k]);
        free(text);
    }
    agent_cache_free(c);
    mid_errclear();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const ProtobufCMessage *m;
    if ((m = decode(&meshid__agent__v1__attest_agent_request__descriptor, data, size)))
        attest((const Meshid__Agent__V1__AttestAgentRequest *)m);
    arena_reset(g_msg);
    if ((m = decode(&meshid__agent__v1__renew_agent_request__descriptor, data, size)))
        renew((const Meshid__Agent__V1__RenewAgentRequest *)m);
    arena_reset(g_msg);
    if ((m = decode(&meshid__agent__v1__batch_sign_request__descriptor, data, size)))
        batch((const Meshid__Agent__V1__BatchSignRequest *)m);
    arena_reset(g_msg);
    (void)decode(&meshid__agent__v1__agent_sync_request__descriptor, data, size);
    arena_reset(g_msg); /* two integers: the server only records them */
    if ((m = decode(&meshid__agent__v1__agent_sync_response__descriptor, data, size)))
        sync_response((const Meshid__Agent__V1__AgentSyncResponse *)m);
    arena_reset(g_msg);
    ERR_clear_error();
    return 0;
}
