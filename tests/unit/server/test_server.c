/* sds/server: the node API and the admin API end to end on one loop, with a
 * real store and CA in a temporary data directory. The test plays both the
 * agent (over TLS, with and without its SVID) and the admin (on the Unix
 * socket), and checks what lands in the audit log, ReportDenials included. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ca/ca.h"
#include "identity/join_token.h"
#include "lib/log.h"
#include "lib/rpc.h"
#include "lib/timeutil.h"
#include "meshid/admin/v1/admin.pb-c.h"
#include "meshid/agent/v1/agent.pb-c.h"
#include "sds/admin_client.h"
#include "sds/node_service.h"
#include "lib/workpool.h"
#include "sds/server.h"
#include "storage/store.h"
#include "tests/testlib/rpc_wait.h"
#include "tests/unit/server/server_tests.h"

#define TD "t.test"
#define NODE "/meshid.agent.v1.Node/"
#define ADMIN "/meshid.admin.v1.Admin/"
#define TIMEOUT_MS 20000

typedef struct {
    char dir[64];
    char db[128];
    rpc_loop *loop;
    server *srv;
    char target[64];
    rpc_channel *admin, *anon;
    char *bundle_pem;
    /* the attested agent */
    char agent_id[256];
    char *agent_cert, *agent_key;
    rpc_channel *agent;
    char msg[512]; /* status message of the last unary call */
} fx;

/* ---- helpers ------------------------------------------------------------- */


/* One unary call; returns the code, *resp (may be NULL) owned by caller. */
static rpc_code unary(fx *f, rpc_channel *ch, const char *method, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *desc, void *resp)
{
    return tl_unary(f->loop, ch, method, req, desc, TIMEOUT_MS, f->msg, sizeof f->msg, resp);
}

static void free_msg(void *m)
{
    if (m) protobuf_c_message_free_unpacked(m, NULL);
}

/* A CSR (DER) for a new P-256 key; *key_pem gets the key. uri may be NULL. */
static ProtobufCBinaryData make_csr(const char *uri, char **key_pem)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509_REQ *req = X509_REQ_new();
    X509_REQ_set_pubkey(req, k);
    if (uri) {
        STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
        char san[300];
        snprintf(san, sizeof san, "URI:%s", uri);
        X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
        sk_X509_EXTENSION_push(exts, e);
        X509_REQ_add_extensions(req, exts);
        sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    }
    X509_REQ_sign(req, k, EVP_sha256());
    ProtobufCBinaryData out = {0, NULL};
    int n = i2d_X509_REQ(req, &out.data);
    out.len = (size_t)n;
    if (key_pem) {
        BIO *b = BIO_new(BIO_s_mem());
        PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
        char *d;
        long len = BIO_get_mem_data(b, &d);
        *key_pem = strndup(d, (size_t)len);
        BIO_free(b);
    }
    X509_REQ_free(req);
    EVP_PKEY_free(k);
    return out;
}

static void free_csr(ProtobufCBinaryData *c) { OPENSSL_free(c->data); }

/* DER chain -> PEM text. */
static char *chain_pem(ProtobufCBinaryData *der, size_t n)
{
    BIO *b = BIO_new(BIO_s_mem());
    for (size_t i = 0; i < n; i++) {
        const unsigned char *p = der[i].data;
        X509 *x = d2i_X509(NULL, &p, (long)der[i].len);
        assert_non_null(x);
        PEM_write_bio_X509(b, x);
        X509_free(x);
    }
    char *d;
    long len = BIO_get_mem_data(b, &d);
    char *s = strndup(d, (size_t)len);
    BIO_free(b);
    return s;
}

/* The single URI SAN of a DER certificate. */
static void cert_uri(const ProtobufCBinaryData *der, char *out, size_t cap)
{
    const unsigned char *p = der->data;
    X509 *x = d2i_X509(NULL, &p, (long)der->len);
    assert_non_null(x);
    GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    out[0] = '\0';
    for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type == GEN_URI)
            snprintf(out, cap, "%.*s", ASN1_STRING_length(g->d.uniformResourceIdentifier),
                     (const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier));
    }
    GENERAL_NAMES_free(sans);
    X509_free(x);
}

static rpc_channel *node_channel(fx *f, const char *cert, const char *key)
{
    rpc_tls tls = {.ca_pem = f->bundle_pem, .cert_pem = cert, .key_pem = key,
                   .server_name = "localhost", .server_spiffe_id = "spiffe://" TD "/meshid/server"};
    rpc_channel *ch;
    assert_true(mid_is_ok(rpc_channel_new(f->loop, f->target, &tls, 0, &ch)));
    return ch;
}

static void admin_token(fx *f, const char *sid, char token[JOIN_TOKEN_LEN + 1])
{
    Meshid__Admin__V1__CreateJoinTokenRequest req = MESHID__ADMIN__V1__CREATE_JOIN_TOKEN_REQUEST__INIT;
    if (sid) req.spiffe_id = (char *)sid;
    Meshid__Admin__V1__CreateJoinTokenResponse *resp;
    assert_int_equal(unary(f, f->admin, ADMIN "CreateJoinToken", &req.base,
                           &meshid__admin__v1__create_join_token_response__descriptor, &resp),
                     RPC_OK);
    assert_int_equal(strlen(resp->token), JOIN_TOKEN_LEN);
    assert_true(resp->expires_at > time_now() + 3000);
    snprintf(token, JOIN_TOKEN_LEN + 1, "%s", resp->token);
    free_msg(resp);
}

static rpc_code attest(fx *f, const char *token, ProtobufCBinaryData csr,
                       Meshid__Agent__V1__AttestAgentResponse **resp)
{
    Meshid__Agent__V1__AttestAgentRequest req = MESHID__AGENT__V1__ATTEST_AGENT_REQUEST__INIT;
    req.join_token = (char *)token;
    req.csr = csr;
    req.hostname = "node-1";
    return unary(f, f->anon, NODE "AttestAgent", &req.base,
                 &meshid__agent__v1__attest_agent_response__descriptor, resp);
}

static char *create_entry(fx *f, const char *sid, const char *parent, const char *uid)
{
    Meshid__Agent__V1__Selector sel = MESHID__AGENT__V1__SELECTOR__INIT;
    sel.type = "unix";
    sel.value = (char *)uid;
    Meshid__Agent__V1__Selector *selp = &sel;
    char *dns[] = {"web.t.test"};
    Meshid__Agent__V1__Entry e = MESHID__AGENT__V1__ENTRY__INIT;
    e.spiffe_id = (char *)sid;
    e.parent_id = (char *)parent;
    e.selectors = &selp;
    e.n_selectors = 1;
    e.dns_names = dns;
    e.n_dns_names = 1;
    e.ttl_seconds = 600;
    Meshid__Admin__V1__CreateEntryRequest req = MESHID__ADMIN__V1__CREATE_ENTRY_REQUEST__INIT;
    req.entry = &e;
    Meshid__Admin__V1__CreateEntryResponse *resp;
    assert_int_equal(unary(f, f->admin, ADMIN "CreateEntry", &req.base,
                           &meshid__admin__v1__create_entry_response__descriptor, &resp),
                     RPC_OK);
    assert_non_null(resp->entry);
    assert_string_equal(resp->entry->spiffe_id, sid);
    assert_true(resp->entry->revision > 0);
    char *id = strdup(resp->entry->id);
    free_msg(resp);
    return id;
}

/* ---- fixture -------------------------------------------------------------- */

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/meshid-server-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->db, sizeof f->db, "%s/meshid.db", f->dir);
    store *st;
    assert_true(mid_is_ok(store_open(f->db, NULL, &st)));
    ca_init_opts io = {.trust_domain = TD, .key_type = CA_KEY_EC_P256, .actor = "test"};
    assert_true(mid_is_ok(ca_init(st, f->dir, &io)));
    store_close(st);

    assert_true(mid_is_ok(rpc_loop_new(&f->loop)));
    server_opts o = {.data_dir = f->dir, .listen = "127.0.0.1:0", .workers = 2,
                     .sync_poll_ms = 100};
    mid_result r = server_start(&o, f->loop, &f->srv);
    if (!mid_is_ok(r)) fail_msg("server_start: %s", mid_errmsg());
    assert_string_equal(server_trust_domain(f->srv), TD);
    snprintf(f->target, sizeof f->target, "127.0.0.1:%d", server_port(f->srv));
    f->bundle_pem = strdup(server_bundle_pem(f->srv));
    struct stat sb;
    assert_int_equal(stat(server_admin_path(f->srv), &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    char t[4200];
    snprintf(t, sizeof t, "unix:%s", server_admin_path(f->srv));
    assert_true(mid_is_ok(rpc_channel_new(f->loop, t, NULL, 0, &f->admin)));
    f->anon = node_channel(f, NULL, NULL);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    server_stop(f->srv);
    rpc_loop_free(f->loop);
    server_free(f->srv);
    free(f->bundle_pem);
    free(f->agent_cert);
    if (f->agent_key) free(f->agent_key);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* Attests with a fresh token and opens the agent's mutual-TLS channel. */
static void attest_agent(fx *f)
{
    char token[JOIN_TOKEN_LEN + 1];
    admin_token(f, NULL, token);
    ProtobufCBinaryData csr = make_csr(NULL, &f->agent_key);
    Meshid__Agent__V1__AttestAgentResponse *resp;
    assert_int_equal(attest(f, token, csr, &resp), RPC_OK);
    free_csr(&csr);
    static const char prefix[] = "spiffe://" TD "/meshid/agent/join_token/";
    assert_true(strncmp(resp->agent_spiffe_id, prefix, strlen(prefix)) == 0);
    assert_true(resp->n_svid_chain >= 2);
    assert_true(resp->n_bundle >= 1);
    assert_true(resp->bundle_sequence > 0);
    char uri[256];
    cert_uri(&resp->svid_chain[0], uri, sizeof uri);
    assert_string_equal(uri, resp->agent_spiffe_id);
    snprintf(f->agent_id, sizeof f->agent_id, "%s", resp->agent_spiffe_id);
    f->agent_cert = chain_pem(resp->svid_chain, resp->n_svid_chain);
    free_msg(resp);
    f->agent = node_channel(f, f->agent_cert, f->agent_key);
}

/* ---- audit helpers --------------------------------------------------------- */

typedef struct {
    const char *reason_has;
    int n;
} audit_count;

static int count_cb(void *ctx, const store_audit_event *ev)
{
    audit_count *c = ctx;
    if (!c->reason_has || (ev->reason && strstr(ev->reason, c->reason_has))) c->n++;
    return 0;
}

static int audit_events(fx *f, const char *event, const char *outcome, const char *reason_has)
{
    store *st;
    assert_true(mid_is_ok(store_open(f->db, NULL, &st)));
    store_audit_filter flt = {.event = event, .outcome = outcome};
    audit_count c = {reason_has, 0};
    assert_true(mid_is_ok(store_audit_query(st, &flt, count_cb, &c)));
    store_close(st);
    return c.n;
}

/* ---- tests ----------------------------------------------------------------- */

static void test_attest(void **state)
{
    fx *f = *state;
    char token[JOIN_TOKEN_LEN + 1];
    admin_token(f, NULL, token);

    /* a bad CSR is refused before the token is spent */
    ProtobufCBinaryData junk = {5, (uint8_t *)"junk!"};
    assert_int_equal(attest(f, token, junk, NULL), RPC_INVALID_ARGUMENT);

    ProtobufCBinaryData csr = make_csr(NULL, NULL);
    Meshid__Agent__V1__AttestAgentResponse *resp;
    assert_int_equal(attest(f, token, csr, &resp), RPC_OK);
    free_msg(resp);

    /* reuse, unknown, malformed */
    assert_int_equal(attest(f, token, csr, NULL), RPC_PERMISSION_DENIED);
    assert_non_null(strstr(f->msg, "already used"));
    char other[JOIN_TOKEN_LEN + 1], hash[JOIN_TOKEN_HASH_LEN + 1];
    assert_true(mid_is_ok(join_token_generate(other, hash)));
    assert_int_equal(attest(f, other, csr, NULL), RPC_PERMISSION_DENIED);
    assert_non_null(strstr(f->msg, "unknown"));
    assert_int_equal(attest(f, "not-a-token", csr, NULL), RPC_PERMISSION_DENIED);

    /* expired: written straight into the store */
    store *st;
    assert_true(mid_is_ok(store_open(f->db, NULL, &st)));
    store_join_token t = {.token_hash = hash, .expires_at = time_now() - 10,
                          .created_at = time_now() - 100};
    assert_true(mid_is_ok(store_join_token_create(st, &t, NULL)));
    store_close(st);
    assert_int_equal(attest(f, other, csr, NULL), RPC_PERMISSION_DENIED);
    assert_non_null(strstr(f->msg, "expired"));

    /* a token bound to an identity */
    char bound[JOIN_TOKEN_LEN + 1];
    admin_token(f, "spiffe://" TD "/nodes/rack1", bound);
    assert_int_equal(attest(f, bound, csr, &resp), RPC_OK);
    assert_string_equal(resp->agent_spiffe_id, "spiffe://" TD "/nodes/rack1");
    free_msg(resp);
    free_csr(&csr);

    /* an admin token request for a foreign trust domain is refused */
    Meshid__Admin__V1__CreateJoinTokenRequest bad = MESHID__ADMIN__V1__CREATE_JOIN_TOKEN_REQUEST__INIT;
    bad.spiffe_id = "spiffe://other.test/x";
    assert_int_equal(unary(f, f->admin, ADMIN "CreateJoinToken", &bad.base,
                           &meshid__admin__v1__create_join_token_response__descriptor, NULL),
                     RPC_INVALID_ARGUMENT);

    assert_int_equal(audit_events(f, "agent.attest", "ok", NULL), 2);
    assert_int_equal(audit_events(f, "agent.attest", "denied", "already used"), 1);
    assert_int_equal(audit_events(f, "agent.attest", "denied", "expired"), 1);
    assert_int_equal(audit_events(f, "agent.attest", "denied", "unknown"), 1);
    assert_int_equal(audit_events(f, "join_token.create", "ok", NULL), 2);
}

static void test_renew_and_sign(void **state)
{
    fx *f = *state;
    attest_agent(f);
    ProtobufCBinaryData csr = make_csr(NULL, NULL);

    /* without a client certificate: UNAUTHENTICATED */
    Meshid__Agent__V1__RenewAgentRequest rr = MESHID__AGENT__V1__RENEW_AGENT_REQUEST__INIT;
    rr.csr = csr;
    assert_int_equal(unary(f, f->anon, NODE "RenewAgent", &rr.base,
                           &meshid__agent__v1__renew_agent_response__descriptor, NULL),
                     RPC_UNAUTHENTICATED);
    Meshid__Agent__V1__BatchSignRequest empty = MESHID__AGENT__V1__BATCH_SIGN_REQUEST__INIT;
    assert_int_equal(unary(f, f->anon, NODE "BatchSignX509SVID", &empty.base,
                           &meshid__agent__v1__batch_sign_response__descriptor, NULL),
                     RPC_UNAUTHENTICATED);

    /* with the agent's SVID */
    Meshid__Agent__V1__RenewAgentResponse *renewed;
    assert_int_equal(unary(f, f->agent, NODE "RenewAgent", &rr.base,
                           &meshid__agent__v1__renew_agent_response__descriptor, &renewed),
                     RPC_OK);
    char uri[256];
    cert_uri(&renewed->svid_chain[0], uri, sizeof uri);
    assert_string_equal(uri, f->agent_id);
    free_msg(renewed);
    assert_int_equal(audit_events(f, "agent.renew", "ok", NULL), 1);

    char *mine = create_entry(f, "spiffe://" TD "/web", f->agent_id, "uid:1000");
    char *theirs = create_entry(f, "spiffe://" TD "/db", "spiffe://" TD "/meshid/agent/other",
                                "uid:1001");
    ProtobufCBinaryData asks_other = make_csr("spiffe://" TD "/admin", NULL);
    Meshid__Agent__V1__SignRequest s[4] = {
        MESHID__AGENT__V1__SIGN_REQUEST__INIT, MESHID__AGENT__V1__SIGN_REQUEST__INIT,
        MESHID__AGENT__V1__SIGN_REQUEST__INIT, MESHID__AGENT__V1__SIGN_REQUEST__INIT};
    s[0].entry_id = mine;
    s[0].csr = csr;
    s[1].entry_id = theirs;
    s[1].csr = csr;
    s[2].entry_id = mine;
    s[2].csr = asks_other;
    s[3].entry_id = "0123456789abcdef";
    s[3].csr = csr;
    Meshid__Agent__V1__SignRequest *sp[4] = {&s[0], &s[1], &s[2], &s[3]};
    Meshid__Agent__V1__BatchSignRequest br = MESHID__AGENT__V1__BATCH_SIGN_REQUEST__INIT;
    br.requests = sp;
    br.n_requests = 4;
    Meshid__Agent__V1__BatchSignResponse *bresp;
    assert_int_equal(unary(f, f->agent, NODE "BatchSignX509SVID", &br.base,
                           &meshid__agent__v1__batch_sign_response__descriptor, &bresp),
                     RPC_OK);
    assert_int_equal(bresp->n_results, 4);
    assert_int_equal(bresp->results[0]->code, RPC_OK);
    assert_string_equal(bresp->results[0]->entry_id, mine);
    cert_uri(&bresp->results[0]->svid_chain[0], uri, sizeof uri);
    assert_string_equal(uri, "spiffe://" TD "/web");
    assert_int_equal(bresp->results[1]->code, RPC_PERMISSION_DENIED);
    assert_non_null(strstr(bresp->results[1]->message, "is not parented to"));
    assert_int_equal(bresp->n_results > 2 ? bresp->results[1]->n_svid_chain : 1, 0);
    assert_int_not_equal(bresp->results[2]->code, RPC_OK); /* CSR asked for another URI */
    assert_int_equal(bresp->results[3]->code, RPC_NOT_FOUND);
    free_msg(bresp);
    assert_int_equal(audit_events(f, "svid.refuse", "denied", "is not parented to"), 1);

    /* over the batch cap */
    Meshid__Agent__V1__SignRequest **many = calloc(NODE_BATCH_MAX + 1, sizeof *many);
    for (int i = 0; i <= NODE_BATCH_MAX; i++) many[i] = &s[0];
    br.requests = many;
    br.n_requests = NODE_BATCH_MAX + 1;
    assert_int_equal(unary(f, f->agent, NODE "BatchSignX509SVID", &br.base,
                           &meshid__agent__v1__batch_sign_response__descriptor, NULL),
                     RPC_INVALID_ARGUMENT);
    free(many);

    /* A batch of 50, as an agent sends after a restart: split over the
     * workers, one store write per chunk; the refused items (another
     * agent's entry, an unknown one) do not fail their chunk. */
    enum { BIG = 50 };
    int issued_before = audit_events(f, "svid.issue", "ok", NULL);
    int refused_before = audit_events(f, "svid.refuse", "denied", NULL);
    Meshid__Agent__V1__SignRequest *big[BIG];
    for (int i = 0; i < BIG; i++) big[i] = i == 10 ? &s[1] : i == 37 ? &s[3] : &s[0];
    br.requests = big;
    br.n_requests = BIG;
    assert_int_equal(unary(f, f->agent, NODE "BatchSignX509SVID", &br.base,
                           &meshid__agent__v1__batch_sign_response__descriptor, &bresp),
                     RPC_OK);
    assert_int_equal(bresp->n_results, BIG);
    char serials[BIG][64];
    for (int i = 0; i < BIG; i++) {
        if (i == 10) {
            assert_int_equal(bresp->results[i]->code, RPC_PERMISSION_DENIED);
            continue;
        }
        if (i == 37) {
            assert_int_equal(bresp->results[i]->code, RPC_NOT_FOUND);
            continue;
        }
        assert_int_equal(bresp->results[i]->code, RPC_OK);
        assert_string_equal(bresp->results[i]->entry_id, mine);
        cert_uri(&bresp->results[i]->svid_chain[0], uri, sizeof uri);
        assert_string_equal(uri, "spiffe://" TD "/web");
        /* every SVID is its own certificate */
        const unsigned char *p = bresp->results[i]->svid_chain[0].data;
        X509 *x = d2i_X509(NULL, &p, (long)bresp->results[i]->svid_chain[0].len);
        assert_non_null(x);
        BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
        char *hex = BN_bn2hex(bn);
        snprintf(serials[i], sizeof serials[i], "%s", hex);
        for (int j = 0; j < i; j++)
            if (j != 10 && j != 37) assert_string_not_equal(serials[j], serials[i]);
        OPENSSL_free(hex);
        BN_free(bn);
        X509_free(x);
    }
    free_msg(bresp);
    assert_int_equal(audit_events(f, "svid.issue", "ok", NULL), issued_before + BIG - 2);
    assert_int_equal(audit_events(f, "svid.refuse", "denied", NULL), refused_before + 2);

    /* admin reads */
    Meshid__Admin__V1__ListEntriesRequest lr = MESHID__ADMIN__V1__LIST_ENTRIES_REQUEST__INIT;
    lr.parent_id = f->agent_id;
    Meshid__Admin__V1__ListEntriesResponse *lresp;
    assert_int_equal(unary(f, f->admin, ADMIN "ListEntries", &lr.base,
                           &meshid__admin__v1__list_entries_response__descriptor, &lresp),
                     RPC_OK);
    assert_int_equal(lresp->n_entries, 1);
    assert_string_equal(lresp->entries[0]->selectors[0]->value, "uid:1000");
    free_msg(lresp);
    Meshid__Admin__V1__GetEntryRequest gr = MESHID__ADMIN__V1__GET_ENTRY_REQUEST__INIT;
    gr.id = "ffff";
    assert_int_equal(unary(f, f->admin, ADMIN "GetEntry", &gr.base,
                           &meshid__admin__v1__get_entry_response__descriptor, NULL),
                     RPC_NOT_FOUND);
    Meshid__Admin__V1__DeleteEntryRequest dr = MESHID__ADMIN__V1__DELETE_ENTRY_REQUEST__INIT;
    dr.id = theirs;
    assert_int_equal(unary(f, f->admin, ADMIN "DeleteEntry", &dr.base,
                           &meshid__admin__v1__delete_entry_response__descriptor, NULL),
                     RPC_OK);
    assert_int_equal(unary(f, f->admin, ADMIN "DeleteEntry", &dr.base,
                           &meshid__admin__v1__delete_entry_response__descriptor, NULL),
                     RPC_NOT_FOUND);
    /* a bad selector */
    Meshid__Agent__V1__Selector sel = MESHID__AGENT__V1__SELECTOR__INIT;
    sel.type = "unix";
    sel.value = "uid:01000";
    Meshid__Agent__V1__Selector *selp = &sel;
    Meshid__Agent__V1__Entry e = MESHID__AGENT__V1__ENTRY__INIT;
    e.spiffe_id = "spiffe://" TD "/x";
    e.parent_id = f->agent_id;
    e.selectors = &selp;
    e.n_selectors = 1;
    Meshid__Admin__V1__CreateEntryRequest cr = MESHID__ADMIN__V1__CREATE_ENTRY_REQUEST__INIT;
    cr.entry = &e;
    assert_int_equal(unary(f, f->admin, ADMIN "CreateEntry", &cr.base,
                           &meshid__admin__v1__create_entry_response__descriptor, NULL),
                     RPC_INVALID_ARGUMENT);

    free(mine);
    free(theirs);
    free_csr(&csr);
    free_csr(&asks_other);
}

/* ---- Sync and eviction ------------------------------------------------------- */

typedef struct {
    fx *f;
    int msgs;
    size_t last_entries;
    uint64_t last_rev, last_seq;
    size_t last_bundle, last_tainted;
    char tainted0[160];
    bool done;
    rpc_code code;
    char msg[256];
    int want_msgs; /* stop the loop when reached */
    bool waiting;  /* in wait_msgs: neither want_msgs nor the end reached */
} sync_watch;

static void sync_msg(rpc_stream *s, const ProtobufCMessage *m, void *arg)
{
    (void)s;
    sync_watch *w = arg;
    const Meshid__Agent__V1__AgentSyncResponse *r = (const Meshid__Agent__V1__AgentSyncResponse *)m;
    w->msgs++;
    w->last_entries = r->n_entries;
    w->last_rev = r->entries_revision;
    w->last_seq = r->bundle_sequence;
    w->last_bundle = r->n_bundle;
    w->last_tainted = r->n_tainted_authority_ids;
    snprintf(w->tainted0, sizeof w->tainted0, "%s",
             r->n_tainted_authority_ids ? r->tainted_authority_ids[0] : "");
    if (w->msgs >= w->want_msgs) {
        w->waiting = false;
        rpc_loop_stop(w->f->loop);
    }
}

static void sync_end(rpc_stream *s, const rpc_status *st, void *arg)
{
    (void)s;
    sync_watch *w = arg;
    w->done = true;
    w->code = st->code;
    snprintf(w->msg, sizeof w->msg, "%s", st->message ? st->message : "");
    w->waiting = false;
    rpc_loop_stop(w->f->loop);
}

static const rpc_stream_handler sync_h = {sync_msg, sync_end};

static void wait_msgs(fx *f, sync_watch *w, int n)
{
    w->want_msgs = n;
    w->waiting = true;
    tl_run_while(f->loop, &w->waiting, TIMEOUT_MS);
}

static void test_sync_and_evict(void **state)
{
    fx *f = *state;
    attest_agent(f);
    char *first = create_entry(f, "spiffe://" TD "/web", f->agent_id, "uid:1000");

    /* without a certificate */
    sync_watch anon = {.f = f};
    rpc_stream *as;
    assert_true(mid_is_ok(rpc_stream_open(f->anon, NODE "Sync", RPC_BIDI, NULL,
                                          &meshid__agent__v1__agent_sync_response__descriptor,
                                          NULL, &sync_h, &anon, &as)));
    wait_msgs(f, &anon, 1);
    assert_true(anon.done);
    assert_int_equal(anon.code, RPC_UNAUTHENTICATED);

    sync_watch w = {.f = f};
    rpc_stream *s;
    Meshid__Agent__V1__AgentSyncRequest hello = MESHID__AGENT__V1__AGENT_SYNC_REQUEST__INIT;
    assert_true(mid_is_ok(rpc_stream_open(f->agent, NODE "Sync", RPC_BIDI, &hello.base,
                                          &meshid__agent__v1__agent_sync_response__descriptor,
                                          NULL, &sync_h, &w, &s)));
    wait_msgs(f, &w, 1);
    assert_false(w.done);
    assert_int_equal(w.last_entries, 1);
    assert_true(w.last_seq > 0);
    uint64_t rev = w.last_rev;

    /* an ack is recorded */
    Meshid__Agent__V1__AgentSyncRequest ack = MESHID__AGENT__V1__AGENT_SYNC_REQUEST__INIT;
    ack.bundle_sequence_ack = w.last_seq;
    ack.entries_revision_ack = w.last_rev;
    assert_true(mid_is_ok(rpc_stream_send(s, &ack.base)));

    /* a new entry for this agent is pushed */
    char *second = create_entry(f, "spiffe://" TD "/api", f->agent_id, "uid:1001");
    wait_msgs(f, &w, 2);
    assert_int_equal(w.last_entries, 2);
    assert_true(w.last_rev > rev);

    /* eviction: the stream is closed, calls are refused */
    Meshid__Admin__V1__EvictAgentRequest er = MESHID__ADMIN__V1__EVICT_AGENT_REQUEST__INIT;
    er.spiffe_id = f->agent_id;
    Meshid__Admin__V1__EvictAgentResponse *eresp;
    assert_int_equal(unary(f, f->admin, ADMIN "EvictAgent", &er.base,
                           &meshid__admin__v1__evict_agent_response__descriptor, &eresp),
                     RPC_OK);
    assert_true(eresp->agent->banned);
    free_msg(eresp);
    if (!w.done) wait_msgs(f, &w, 1000);
    assert_true(w.done);
    assert_int_equal(w.code, RPC_PERMISSION_DENIED);
    assert_non_null(strstr(w.msg, "evicted"));

    ProtobufCBinaryData csr = make_csr(NULL, NULL);
    Meshid__Agent__V1__RenewAgentRequest rr = MESHID__AGENT__V1__RENEW_AGENT_REQUEST__INIT;
    rr.csr = csr;
    assert_int_equal(unary(f, f->agent, NODE "RenewAgent", &rr.base,
                           &meshid__agent__v1__renew_agent_response__descriptor, NULL),
                     RPC_PERMISSION_DENIED);
    free_csr(&csr);

    Meshid__Admin__V1__ListAgentsRequest lr = MESHID__ADMIN__V1__LIST_AGENTS_REQUEST__INIT;
    Meshid__Admin__V1__ListAgentsResponse *lresp;
    assert_int_equal(unary(f, f->admin, ADMIN "ListAgents", &lr.base,
                           &meshid__admin__v1__list_agents_response__descriptor, &lresp),
                     RPC_OK);
    assert_int_equal(lresp->n_agents, 1);
    assert_true(lresp->agents[0]->banned);
    assert_string_equal(lresp->agents[0]->hostname, "node-1");
    free_msg(lresp);
    assert_int_equal(audit_events(f, "agent.evict", "ok", NULL), 1);
    er.spiffe_id = "spiffe://" TD "/nobody";
    assert_int_equal(unary(f, f->admin, ADMIN "EvictAgent", &er.base,
                           &meshid__admin__v1__evict_agent_response__descriptor, NULL),
                     RPC_NOT_FOUND);

    /* the whole log still verifies */
    store *st;
    assert_true(mid_is_ok(store_open(f->db, NULL, &st)));
    store_audit_verdict v;
    assert_true(mid_is_ok(store_audit_verify(st, &v)));
    assert_int_equal(v.ok, 1);
    store_close(st);
    free(first);
    free(second);
}

/* ---- ReportDenials ---------------------------------------------------------- */

typedef struct {
    char actor[512];
    char reason[512];
    char details[2048];
    char first_details[2048];
    int n;
} deny_seen;

static int deny_cb(void *ctx, const store_audit_event *ev)
{
    deny_seen *d = ctx;
    if (d->n++ == 0)
        snprintf(d->first_details, sizeof d->first_details, "%s", ev->details ? ev->details : "");
    snprintf(d->actor, sizeof d->actor, "%s", ev->actor);
    snprintf(d->reason, sizeof d->reason, "%s", ev->reason ? ev->reason : "");
    snprintf(d->details, sizeof d->details, "%s", ev->details ? ev->details : "");
    return 0;
}

/* Every workload.deny event; the last one's fields in *out. */
static void deny_events(fx *f, deny_seen *out)
{
    memset(out, 0, sizeof *out);
    store *st;
    assert_true(mid_is_ok(store_open(f->db, NULL, &st)));
    store_audit_filter flt = {.event = "workload.deny"};
    assert_true(mid_is_ok(store_audit_query(st, &flt, deny_cb, out)));
    store_close(st);
}

static rpc_code report(fx *f, rpc_channel *ch, Meshid__Agent__V1__Denial **d, size_t n,
                       int32_t *accepted)
{
    Meshid__Agent__V1__ReportDenialsRequest req = MESHID__AGENT__V1__REPORT_DENIALS_REQUEST__INIT;
    req.denials = d;
    req.n_denials = n;
    Meshid__Agent__V1__ReportDenialsResponse *resp = NULL;
    rpc_code code = unary(f, ch, NODE "ReportDenials", &req.base,
                          &meshid__agent__v1__report_denials_response__descriptor, &resp);
    if (accepted) *accepted = resp ? resp->accepted : -1;
    free_msg(resp);
    return code;
}

static void test_report_denials(void **state)
{
    fx *f = *state;
    attest_agent(f);
    Meshid__Agent__V1__Selector s1 = MESHID__AGENT__V1__SELECTOR__INIT,
                                s2 = MESHID__AGENT__V1__SELECTOR__INIT;
    s1.type = "unix";
    s1.value = "uid:41003";
    s2.type = "unix";
    s2.value = "gid:41003";
    Meshid__Agent__V1__Selector *sels[] = {&s1, &s2};
    Meshid__Agent__V1__Denial d1 = MESHID__AGENT__V1__DENIAL__INIT,
                              d2 = MESHID__AGENT__V1__DENIAL__INIT;
    d1.time_ms = 1700000000123;
    d1.uid = 41003;
    d1.gid = 41003;
    d1.pid = 4242;
    d1.selectors = sels;
    d1.n_selectors = 2;
    d1.reason = "no registration entry matches the workload";
    d1.api = "workload";
    d1.count = 3;
    d2.time_ms = 1700000001000;
    d2.uid = 1000;
    d2.gid = 1000;
    d2.pid = 77;
    d2.reason = "workload attestation failed: \x01gone";
    d2.api = "sds";
    Meshid__Agent__V1__Denial *two[] = {&d1, &d2};
    deny_seen seen;

    /* callers that are not an agent: no certificate, a workload's SVID */
    assert_int_equal(report(f, f->anon, two, 2, NULL), RPC_UNAUTHENTICATED);
    char *mine = create_entry(f, "spiffe://" TD "/web", f->agent_id, "uid:1000");
    char *wl_key = NULL;
    ProtobufCBinaryData csr = make_csr(NULL, &wl_key);
    Meshid__Agent__V1__SignRequest sr = MESHID__AGENT__V1__SIGN_REQUEST__INIT;
    sr.entry_id = mine;
    sr.csr = csr;
    Meshid__Agent__V1__SignRequest *srp = &sr;
    Meshid__Agent__V1__BatchSignRequest br = MESHID__AGENT__V1__BATCH_SIGN_REQUEST__INIT;
    br.requests = &srp;
    br.n_requests = 1;
    Meshid__Agent__V1__BatchSignResponse *bresp;
    assert_int_equal(unary(f, f->agent, NODE "BatchSignX509SVID", &br.base,
                           &meshid__agent__v1__batch_sign_response__descriptor, &bresp),
                     RPC_OK);
    assert_int_equal(bresp->results[0]->code, RPC_OK);
    char *wl_cert = chain_pem(bresp->results[0]->svid_chain, bresp->results[0]->n_svid_chain);
    free_msg(bresp);
    rpc_channel *wl = node_channel(f, wl_cert, wl_key);
    assert_int_equal(report(f, wl, two, 2, NULL), RPC_PERMISSION_DENIED);
    assert_non_null(strstr(f->msg, "not an attested agent"));
    deny_events(f, &seen);
    assert_int_equal(seen.n, 0);

    /* the agent: each denial is one event, actor the agent */
    int32_t accepted = -1;
    assert_int_equal(report(f, f->agent, two, 2, &accepted), RPC_OK);
    assert_int_equal(accepted, 2);
    deny_events(f, &seen);
    assert_int_equal(seen.n, 2);
    assert_int_equal(audit_events(f, "workload.deny", "denied", "no registration entry"), 1);
    char actor[300];
    snprintf(actor, sizeof actor, "agent:%s", f->agent_id);
    assert_string_equal(seen.actor, actor);
    assert_string_equal(seen.reason, "workload attestation failed: ?gone"); /* made printable */
    assert_non_null(strstr(seen.details, "\"uid\":1000"));
    assert_non_null(strstr(seen.details, "\"api\":\"sds\""));
    assert_non_null(strstr(seen.details, "\"count\":1"));
    assert_non_null(strstr(seen.details, "\"selectors\":[]"));
    /* the first, in request order, with its selectors, count and time */
    assert_non_null(strstr(seen.first_details, "\"uid\":41003"));
    assert_non_null(strstr(seen.first_details, "\"gid\":41003"));
    assert_non_null(strstr(seen.first_details, "\"pid\":4242"));
    assert_non_null(strstr(seen.first_details, "\"selectors\":[\"unix:uid:41003\",\"unix:gid:41003\"]"));
    assert_non_null(strstr(seen.first_details, "\"api\":\"workload\""));
    assert_non_null(strstr(seen.first_details, "\"count\":3"));
    assert_non_null(strstr(seen.first_details, "\"time\":\"2023-11-14T22:13:20.123Z\""));

    /* an empty report is fine */
    assert_int_equal(report(f, f->agent, NULL, 0, &accepted), RPC_OK);
    assert_int_equal(accepted, 0);

    /* oversized: too many denials, too many selectors, an over-long reason */
    Meshid__Agent__V1__Denial **many = calloc(NODE_DENIALS_MAX + 1, sizeof *many);
    for (int i = 0; i <= NODE_DENIALS_MAX; i++) many[i] = &d1;
    assert_int_equal(report(f, f->agent, many, NODE_DENIALS_MAX + 1, NULL), RPC_INVALID_ARGUMENT);
    assert_non_null(strstr(f->msg, "at most"));
    free(many);
    Meshid__Agent__V1__Selector **lots = calloc(NODE_DENIAL_SELECTORS_MAX + 1, sizeof *lots);
    for (int i = 0; i <= NODE_DENIAL_SELECTORS_MAX; i++) lots[i] = &s1;
    Meshid__Agent__V1__Denial big = d1;
    big.selectors = lots;
    big.n_selectors = NODE_DENIAL_SELECTORS_MAX + 1;
    Meshid__Agent__V1__Denial *bigp = &big;
    assert_int_equal(report(f, f->agent, &bigp, 1, NULL), RPC_INVALID_ARGUMENT);
    free(lots);
    char *long_reason = malloc(NODE_DENIAL_REASON_MAX + 2);
    memset(long_reason, 'r', NODE_DENIAL_REASON_MAX + 1);
    long_reason[NODE_DENIAL_REASON_MAX + 1] = '\0';
    big = d1;
    big.reason = long_reason;
    assert_int_equal(report(f, f->agent, &bigp, 1, NULL), RPC_INVALID_ARGUMENT);
    free(long_reason);
    deny_events(f, &seen);
    assert_int_equal(seen.n, 2);

    /* an evicted agent is refused */
    Meshid__Admin__V1__EvictAgentRequest er = MESHID__ADMIN__V1__EVICT_AGENT_REQUEST__INIT;
    er.spiffe_id = f->agent_id;
    assert_int_equal(unary(f, f->admin, ADMIN "EvictAgent", &er.base,
                           &meshid__admin__v1__evict_agent_response__descriptor, NULL),
                     RPC_OK);
    assert_int_equal(report(f, f->agent, two, 2, NULL), RPC_PERMISSION_DENIED);
    assert_int_equal(audit_events(f, "workload.deny", NULL, NULL), 2);

    /* the log still verifies */
    store *st;
    assert_true(mid_is_ok(store_open(f->db, NULL, &st)));
    store_audit_verdict v;
    assert_true(mid_is_ok(store_audit_verify(st, &v)));
    assert_int_equal(v.ok, 1);
    store_close(st);
    free(mine);
    free(wl_cert);
    free(wl_key);
    free_csr(&csr);
}

/* ---- admin access by uid ------------------------------------------------------ */

int server_tests_admin_child(const char *sock)
{
    Meshid__Admin__V1__ListAgentsRequest req = MESHID__ADMIN__V1__LIST_AGENTS_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    mid_result r = admin_call(sock, "ListAgents", &req.base,
                              &meshid__admin__v1__list_agents_response__descriptor, &resp);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    if (mid_is_ok(r)) return 0;
    fprintf(stderr, "child: %s\n", mid_errmsg());
    return r.err == MID_E_DENIED ? 7 : r.err == MID_E_IO ? 14 : 1;
}

typedef struct {
    const char *sock;
    int status;
} child_run;

/* Runs the child (another uid) from a thread so the loop keeps serving. */
static void *run_child(void *arg)
{
    child_run *c = arg;
    pid_t pid = fork();
    if (pid == 0) {
        if (setgid(65534) != 0 || setuid(65534) != 0) _exit(99);
        execl("/proc/self/exe", "unit_server", "--admin-child", c->sock, (char *)NULL);
        _exit(98);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    __atomic_store_n(&c->status, WIFEXITED(st) ? WEXITSTATUS(st) : -1, __ATOMIC_RELEASE);
    return NULL;
}

typedef struct {
    fx *f;
    child_run c;
    bool done;
} child_wait;

static void poll_child(rpc_loop *loop, void *arg)
{
    child_wait *w = arg;
    if (__atomic_load_n(&w->c.status, __ATOMIC_ACQUIRE) >= 0) {
        w->done = true;
        rpc_loop_stop(loop);
        return;
    }
    rpc_timer *t;
    assert_true(mid_is_ok(rpc_timer_add(loop, 20, poll_child, w, &t)));
}

static int child_status(fx *f)
{
    child_wait w = {.f = f, .c = {server_admin_path(f->srv), -2}};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, run_child, &w.c), 0);
    /* status is written by the thread; poll it from the loop */
    rpc_timer *t;
    assert_true(mid_is_ok(rpc_timer_add(f->loop, 20, poll_child, &w, &t)));
    while (!w.done) assert_true(mid_is_ok(rpc_loop_run(f->loop)));
    pthread_join(th, NULL);
    return w.c.status;
}

static void test_admin_other_uid(void **state)
{
    fx *f = *state;
    if (geteuid() != 0) skip();
    /* the socket's mode keeps uid 65534 out */
    assert_int_equal(child_status(f), 14);
    /* with the mode loosened, the server still refuses the peer's uid */
    assert_int_equal(chmod(server_admin_path(f->srv), 0666), 0);
    assert_int_equal(chmod(f->dir, 0755), 0);
    char run[128];
    snprintf(run, sizeof run, "%s/run", f->dir);
    assert_int_equal(chmod(run, 0755), 0);
    assert_int_equal(child_status(f), 7);
    /* and root still gets in */
    Meshid__Admin__V1__ListAgentsRequest lr = MESHID__ADMIN__V1__LIST_AGENTS_REQUEST__INIT;
    assert_int_equal(unary(f, f->admin, ADMIN "ListAgents", &lr.base,
                           &meshid__admin__v1__list_agents_response__descriptor, NULL),
                     RPC_OK);
}

/* ---- authority rotation ------------------------------------------------------ */

/* wait_msgs, but returns at once when n messages already arrived (a push may
 * come in while a unary call runs the loop). */
static void wait_at_least(fx *f, sync_watch *w, int n)
{
    if (w->msgs < n && !w->done) wait_msgs(f, w, n);
}

static void pump_stop(rpc_loop *loop, void *arg)
{
    bool *b = arg;
    *b = false;
    rpc_loop_stop(loop);
}

/* Runs the loop for about `ms`. */
static void pump(fx *f, int64_t ms)
{
    bool waiting = true;
    rpc_timer *t;
    assert_true(mid_is_ok(rpc_timer_add(f->loop, ms, pump_stop, &waiting, &t)));
    while (waiting) assert_true(mid_is_ok(rpc_loop_run(f->loop)));
}

static Meshid__Admin__V1__PrepareAuthorityResponse *prepare(fx *f, bool root)
{
    Meshid__Admin__V1__PrepareAuthorityRequest req =
        MESHID__ADMIN__V1__PREPARE_AUTHORITY_REQUEST__INIT;
    req.root = root;
    Meshid__Admin__V1__PrepareAuthorityResponse *resp;
    rpc_code c = unary(f, f->admin, ADMIN "PrepareAuthority", &req.base,
                       &meshid__admin__v1__prepare_authority_response__descriptor, &resp);
    if (c != RPC_OK) fail_msg("PrepareAuthority: %d %s", c, f->msg);
    return resp;
}

static rpc_code activate(fx *f, const char *id, bool force, int64_t timeout,
                         Meshid__Admin__V1__ActivateAuthorityResponse **resp)
{
    Meshid__Admin__V1__ActivateAuthorityRequest req =
        MESHID__ADMIN__V1__ACTIVATE_AUTHORITY_REQUEST__INIT;
    req.id = (char *)id;
    req.force = force;
    req.timeout_seconds = timeout;
    return unary(f, f->admin, ADMIN "ActivateAuthority", &req.base,
                 &meshid__admin__v1__activate_authority_response__descriptor, resp);
}

static Meshid__Admin__V1__AuthorityStatusResponse *status(fx *f)
{
    Meshid__Admin__V1__AuthorityStatusRequest req =
        MESHID__ADMIN__V1__AUTHORITY_STATUS_REQUEST__INIT;
    Meshid__Admin__V1__AuthorityStatusResponse *resp;
    assert_int_equal(unary(f, f->admin, ADMIN "AuthorityStatus", &req.base,
                           &meshid__admin__v1__authority_status_response__descriptor, &resp),
                     RPC_OK);
    return resp;
}

static const char *state_in(const Meshid__Admin__V1__AuthorityStatusResponse *st, const char *id)
{
    for (size_t i = 0; i < st->n_authorities; i++)
        if (strcmp(st->authorities[i]->id, id) == 0) return st->authorities[i]->state;
    return "";
}

static void send_acks(rpc_stream *s, uint64_t seq, uint64_t sds)
{
    Meshid__Agent__V1__AgentSyncRequest ack = MESHID__AGENT__V1__AGENT_SYNC_REQUEST__INIT;
    ack.bundle_sequence_ack = seq;
    ack.sds_bundle_sequence_ack = sds;
    assert_true(mid_is_ok(rpc_stream_send(s, &ack.base)));
}

/* The subject key identifier of a DER certificate, lowercase hex (= authority id). */
static void cert_ski(const ProtobufCBinaryData *der, char *out, size_t cap)
{
    const unsigned char *p = der->data;
    X509 *x = d2i_X509(NULL, &p, (long)der->len);
    assert_non_null(x);
    const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(x);
    assert_non_null(ski);
    size_t o = 0;
    out[0] = '\0';
    for (int i = 0; i < ASN1_STRING_length(ski) && o + 3 < cap; i++)
        o += (size_t)snprintf(out + o, cap - o, "%02x", ASN1_STRING_get0_data(ski)[i]);
    X509_free(x);
}

/* BatchSign one SVID for `entry`; out: the SKI of the intermediate in its chain. */
static void sign_issuer(fx *f, const char *entry, char *ski, size_t cap)
{
    ProtobufCBinaryData csr = make_csr(NULL, NULL);
    Meshid__Agent__V1__SignRequest sr = MESHID__AGENT__V1__SIGN_REQUEST__INIT;
    sr.entry_id = (char *)entry;
    sr.csr = csr;
    Meshid__Agent__V1__SignRequest *sp = &sr;
    Meshid__Agent__V1__BatchSignRequest br = MESHID__AGENT__V1__BATCH_SIGN_REQUEST__INIT;
    br.requests = &sp;
    br.n_requests = 1;
    Meshid__Agent__V1__BatchSignResponse *resp;
    assert_int_equal(unary(f, f->agent, NODE "BatchSignX509SVID", &br.base,
                           &meshid__agent__v1__batch_sign_response__descriptor, &resp),
                     RPC_OK);
    assert_int_equal(resp->results[0]->code, RPC_OK);
    assert_true(resp->results[0]->n_svid_chain >= 2);
    cert_ski(&resp->results[0]->svid_chain[1], ski, cap);
    free_msg(resp);
    free_csr(&csr);
}

/* prepare root -> Sync pushes 2 roots; activation waits for the agent's SDS
 * ack, names it while it lags, proceeds once it acked; the server then signs
 * with the new intermediate; force; taint reaches Sync; a disconnected agent
 * does not block. */
static void test_rotation_gate(void **state)
{
    fx *f = *state;
    attest_agent(f);
    char *entry = create_entry(f, "spiffe://" TD "/web", f->agent_id, "uid:1000");
    sync_watch w = {.f = f};
    rpc_stream *s;
    Meshid__Agent__V1__AgentSyncRequest hello = MESHID__AGENT__V1__AGENT_SYNC_REQUEST__INIT;
    assert_true(mid_is_ok(rpc_stream_open(f->agent, NODE "Sync", RPC_BIDI, &hello.base,
                                          &meshid__agent__v1__agent_sync_response__descriptor,
                                          NULL, &sync_h, &w, &s)));
    wait_msgs(f, &w, 1);
    assert_int_equal(w.last_bundle, 1);
    uint64_t seq0 = w.last_seq;
    send_acks(s, seq0, seq0);

    /* prepare a new root: pushed at once with both roots and a higher sequence */
    Meshid__Admin__V1__PrepareAuthorityResponse *p1 = prepare(f, true);
    assert_true(p1->root_is_new);
    wait_at_least(f, &w, 2);
    assert_int_equal(w.last_bundle, 2);
    assert_true(w.last_seq > seq0);
    uint64_t seq1 = w.last_seq;

    /* not acknowledged yet: refused, naming the agent; nothing changed */
    assert_int_equal(activate(f, p1->intermediate_id, false, 1, NULL), RPC_FAILED_PRECONDITION);
    assert_non_null(strstr(f->msg, "not acknowledged by"));
    assert_non_null(strstr(f->msg, f->agent_id));
    Meshid__Admin__V1__AuthorityStatusResponse *st = status(f);
    assert_string_equal(state_in(st, p1->intermediate_id), "prepared");
    assert_int_equal(st->n_agents, 1);
    assert_true(st->agents[0]->connected);
    assert_int_equal(st->bundle_sequence, seq1);
    char old_signer[160];
    snprintf(old_signer, sizeof old_signer, "%s", st->signer_id);
    free_msg(st);

    /* acknowledged by the agent but not yet by its SDS clients: still refused */
    send_acks(s, seq1, seq0);
    assert_int_equal(activate(f, p1->intermediate_id, false, 1, NULL), RPC_FAILED_PRECONDITION);
    send_acks(s, seq1, seq1);
    Meshid__Admin__V1__ActivateAuthorityResponse *ar;
    assert_int_equal(activate(f, p1->intermediate_id, false, 5, &ar), RPC_OK);
    assert_false(ar->forced);
    assert_string_equal(ar->root_id, p1->root_id);
    free_msg(ar);

    /* the server follows the new signer (poll within ~1 s) */
    char ski[160] = "";
    for (int i = 0; i < 50; i++) {
        sign_issuer(f, entry, ski, sizeof ski);
        if (strcmp(ski, p1->intermediate_id) == 0) break;
        pump(f, 100);
    }
    assert_string_equal(ski, p1->intermediate_id);
    st = status(f);
    assert_string_equal(st->signer_id, p1->intermediate_id);
    assert_string_equal(state_in(st, old_signer), "old");
    free_msg(st);

    /* force: proceeds after the timeout, audited */
    Meshid__Admin__V1__PrepareAuthorityResponse *p2 = prepare(f, true);
    assert_int_equal(activate(f, p2->intermediate_id, true, 1, &ar), RPC_OK);
    assert_true(ar->forced);
    assert_true(ar->n_not_acknowledged >= 1);
    assert_string_equal(ar->not_acknowledged[0], f->agent_id);
    free_msg(ar);
    assert_int_equal(audit_events(f, "ca.activate.force", "ok", NULL), 1);

    /* taint the old intermediate: the next Sync names it */
    Meshid__Admin__V1__TaintAuthorityRequest tr = MESHID__ADMIN__V1__TAINT_AUTHORITY_REQUEST__INIT;
    tr.id = old_signer;
    assert_int_equal(unary(f, f->admin, ADMIN "TaintAuthority", &tr.base,
                           &meshid__admin__v1__taint_authority_response__descriptor, NULL),
                     RPC_OK);
    for (int i = 0; i < 50 && w.last_tainted == 0; i++) pump(f, 100);
    assert_int_equal(w.last_tainted, 1);
    assert_string_equal(w.tainted0, old_signer);
    /* unknown and active ids are refused with a clear error */
    tr.id = "ffffffffffff";
    assert_int_equal(unary(f, f->admin, ADMIN "TaintAuthority", &tr.base,
                           &meshid__admin__v1__taint_authority_response__descriptor, NULL),
                     RPC_NOT_FOUND);
    assert_int_equal(activate(f, p2->intermediate_id, false, 1, NULL), RPC_FAILED_PRECONDITION);
    assert_non_null(strstr(f->msg, "already active"));

    /* a disconnected agent does not block */
    Meshid__Admin__V1__PrepareAuthorityResponse *p3 = prepare(f, true);
    rpc_stream_cancel(s);
    for (int i = 0; i < 50; i++) {
        st = status(f);
        bool connected = st->agents[0]->connected;
        free_msg(st);
        if (!connected) break;
        pump(f, 100);
    }
    assert_int_equal(activate(f, p3->intermediate_id, false, 1, &ar), RPC_OK);
    assert_false(ar->forced);
    free_msg(ar);
    /* three root rotations: new intermediate and root active, the old pair old */
    assert_int_equal(audit_events(f, "ca.activate", "ok", NULL), 3 * 4);

    free_msg(p1);
    free_msg(p2);
    free_msg(p3);
    free(entry);
}

/* An old intermediate is retired (old -> removed) once nothing it signed is
 * live, with a short grace. */
static void test_rotation_retire(void **state)
{
    (void)state;
    fx *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/meshid-server-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->db, sizeof f->db, "%s/meshid.db", f->dir);
    store *stp;
    assert_true(mid_is_ok(store_open(f->db, NULL, &stp)));
    ca_init_opts io = {.trust_domain = TD, .key_type = CA_KEY_EC_P256, .actor = "test"};
    assert_true(mid_is_ok(ca_init(stp, f->dir, &io)));
    store_close(stp);
    assert_true(mid_is_ok(rpc_loop_new(&f->loop)));
    server_opts o = {.data_dir = f->dir, .listen = "127.0.0.1:0", .workers = 2,
                     .sync_poll_ms = 100, .server_svid_ttl = 3, .retire_grace = 1,
                     .rotation_check_ms = 200};
    if (!mid_is_ok(server_start(&o, f->loop, &f->srv))) fail_msg("server_start: %s", mid_errmsg());
    char t[4200];
    snprintf(t, sizeof t, "unix:%s", server_admin_path(f->srv));
    assert_true(mid_is_ok(rpc_channel_new(f->loop, t, NULL, 0, &f->admin)));
    Meshid__Admin__V1__AuthorityStatusResponse *st = status(f);
    char old[160];
    snprintf(old, sizeof old, "%s", st->signer_id);
    free_msg(st);
    Meshid__Admin__V1__PrepareAuthorityResponse *p = prepare(f, false);
    assert_false(p->root_is_new);
    Meshid__Admin__V1__ActivateAuthorityResponse *ar;
    assert_int_equal(activate(f, p->intermediate_id, false, 1, &ar), RPC_OK); /* no agents */
    free_msg(ar);
    const char *now_state = "";
    char buf[32] = "";
    for (int i = 0; i < 120; i++) {
        st = status(f);
        snprintf(buf, sizeof buf, "%s", state_in(st, old));
        free_msg(st);
        now_state = buf;
        if (strcmp(now_state, "removed") == 0) break;
        pump(f, 100);
    }
    assert_string_equal(now_state, "removed");
    assert_true(audit_events(f, "ca.retire", "ok", NULL) >= 1);
    free_msg(p);
    fx *ff = f;
    teardown((void **)&ff);
}

/* workers = 0: SERVER_WORKERS_PER_CORE per core (capped), so that more
 * requests than cores can be signed or waiting for their commit at once;
 * workers = N: exactly N. */
static void test_default_workers(void **state)
{
    (void)state;
    char dir[] = "/tmp/meshid-server-workers-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char db[sizeof dir + 16];
    snprintf(db, sizeof db, "%s/meshid.db", dir);
    store *st;
    assert_true(mid_is_ok(store_open(db, NULL, &st)));
    ca_init_opts io = {.trust_domain = TD, .key_type = CA_KEY_EC_P256, .actor = "test"};
    assert_true(mid_is_ok(ca_init(st, dir, &io)));
    store_close(st);
    unsigned cores = workpool_online_cores();
    unsigned want = cores * SERVER_WORKERS_PER_CORE;
    if (want > WORKPOOL_THREADS_MAX) want = WORKPOOL_THREADS_MAX;
    unsigned asked[] = {0, 3};
    unsigned expect[] = {want, 3};
    for (size_t i = 0; i < 2; i++) {
        rpc_loop *loop;
        assert_true(mid_is_ok(rpc_loop_new(&loop)));
        server_opts o = {.data_dir = dir, .listen = "127.0.0.1:0", .workers = asked[i]};
        server *s = NULL;
        if (!mid_is_ok(server_start(&o, loop, &s))) fail_msg("server_start: %s", mid_errmsg());
        assert_int_equal(server_workers(s), expect[i]);
        if (asked[i] == 0) assert_true(server_workers(s) > cores || cores >= WORKPOOL_THREADS_MAX);
        server_stop(s);
        rpc_loop_free(loop);
        server_free(s);
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_no_trust_domain(void **state)
{
    (void)state;
    char dir[] = "/tmp/meshid-server-empty-XXXXXX";
    assert_non_null(mkdtemp(dir));
    rpc_loop *loop;
    assert_true(mid_is_ok(rpc_loop_new(&loop)));
    server_opts o = {.data_dir = dir, .listen = "127.0.0.1:0"};
    server *s = NULL;
    mid_result r = server_start(&o, loop, &s);
    assert_int_equal(r.err, MID_E_NOT_FOUND);
    assert_non_null(strstr(mid_errmsg(), "meshid ca init"));
    assert_null(s);
    rpc_loop_free(loop);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int run_server_tests(void)
{
    log_set_level(LOG_LVL_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_attest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_renew_and_sign, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_and_evict, setup, teardown),
        cmocka_unit_test_setup_teardown(test_report_denials, setup, teardown),
        cmocka_unit_test_setup_teardown(test_admin_other_uid, setup, teardown),
        cmocka_unit_test(test_no_trust_domain),
        cmocka_unit_test(test_default_workers),
        cmocka_unit_test_setup_teardown(test_rotation_gate, setup, teardown),
        cmocka_unit_test(test_rotation_retire),
    };
    return cmocka_run_group_tests_name("server", tests, NULL, NULL);
}
