/* ca_init, ca_open and ca_issue against a real store: the hierarchy on disk
 * and in the store, the X.509-SVID profile field by field, TTL caps,
 * refusals and their audit events, concurrency. */
#include <jansson.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ca/codec.h"
#include "ca/keys.h"
#include "ca/x509.h"
#include "tests/testlib/ca_fixtures.h"
#include "tests/unit/ca/ca_tests.h"

#define ID "spiffe://example.org/ns/default/sa/web"

static int64_t now_s(void) { return (int64_t)time(NULL); }

static void t_init_layout(void **state)
{
    ca_env *e = *state;
    store_authority_row *rows = NULL;
    size_t n = 0;
    assert_ok(store_authority_list(e->st, &rows, &n));
    assert_int_equal(n, 2);
    const store_authority *root = &rows[0].a, *inter = &rows[1].a;
    assert_string_equal(root->kind, "root");
    assert_string_equal(inter->kind, "intermediate");
    for (size_t i = 0; i < 2; i++) {
        const store_authority *a = &rows[i].a;
        assert_string_equal(a->state, "active");
        assert_string_equal(a->trust_domain, "example.org");
        assert_int_equal(a->upstream, 0);
        /* id = hex SKI; key in keys/<id>.key, 0600 */
        STACK_OF(X509) *sk = cafx_pem_certs(a->cert_pem);
        char id[CA_KEY_ID_HEX_MAX], ref[200], path[600];
        assert_ok(ca_x509_key_id_hex(sk_X509_value(sk, 0), id));
        assert_string_equal(a->id, id);
        snprintf(ref, sizeof ref, "keys/%s.key", id);
        assert_string_equal(a->key_ref, ref);
        snprintf(path, sizeof path, "%s/%s", e->dir, ref);
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
        EVP_PKEY *k = NULL;
        assert_ok(ca_key_load(path, &k));
        assert_ok(ca_key_matches_cert(k, sk_X509_value(sk, 0), "stored"));
        EVP_PKEY_free(k);
        sk_X509_pop_free(sk, X509_free);
    }
    assert_null(root->parent_id);
    assert_string_equal(inter->parent_id, root->id);
    assert_int_equal(root->not_after - root->not_before, CA_ROOT_TTL_DEFAULT + 30);
    assert_int_equal(inter->not_after - inter->not_before, CA_INTERMEDIATE_TTL_DEFAULT + 30);
    char keys[600];
    snprintf(keys, sizeof keys, "%s/keys", e->dir);
    struct stat st;
    assert_int_equal(stat(keys, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    assert_int_equal(cafx_count_events(e->st, "ca.init", "ok"), 2);
    assert_string_equal(ca_trust_domain(e->c), "example.org");
    store_authority_list_free(rows, n);
}

static void t_init_refusals(void **state)
{
    ca_env *e = *state;
    ca_init_opts o = {.trust_domain = "example.org", .key_type = CA_KEY_EC_P256};
    assert_fails_with(ca_init(e->st, e->dir, &o), MID_E_EXISTS, "already has");

    ca_env *f = ca_env_new();
    ca_init_opts bad[] = {
        {.trust_domain = "Example.org"},
        {.trust_domain = "example.org/path"},
        {.trust_domain = ""},
        {.trust_domain = "example.org", .root_ttl = -1},
        {.trust_domain = "example.org", .key_type = (ca_key_type)7},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mid_result r = ca_init(f->st, f->dir, &bad[i]);
        if (r.err != MID_E_INVALID) fail_msg("case %zu: %s: %s", i, mid_errname(r.err), mid_errmsg());
    }
    ca *c = NULL;
    assert_fails_with(ca_open(f->st, f->dir, &c), MID_E_NOT_FOUND, "ca init");
    assert_null(c);
    ca_env_free(f);
}

static void t_init_intermediate_clamped(void **state)
{
    (void)state;
    ca_env *e = ca_env_new();
    ca_env_init(e, CA_KEY_EC_P256, 86400, 30 * 86400);
    store_authority_row *rows = NULL;
    size_t n = 0;
    assert_ok(store_authority_list(e->st, &rows, &n));
    assert_int_equal(rows[1].a.not_after, rows[0].a.not_after);
    store_authority_list_free(rows, n);
    ca_env_free(e);
}

/* ---- the SVID profile ---------------------------------------------------------- */

typedef struct {
    STACK_OF(X509) *chain;
    X509 *leaf;
} parsed;

static parsed parse_svid(const ca_svid *s)
{
    parsed p;
    p.chain = cafx_pem_certs(ca_svid_chain_pem(s));
    p.leaf = sk_X509_value(p.chain, 0);
    return p;
}

static void parsed_free(parsed *p) { sk_X509_pop_free(p->chain, X509_free); }

static void assert_verifies_against_bundle(ca_env *e, parsed *p)
{
    char *bundle = NULL;
    assert_ok(ca_bundle_pem(e->c, &bundle));
    STACK_OF(X509) *anchors = cafx_pem_certs(bundle);
    STACK_OF(X509) *untrusted = sk_X509_dup(p->chain);
    (void)sk_X509_shift(untrusted);
    assert_int_equal(cafx_verify(p->leaf, untrusted, anchors), X509_V_OK);
    sk_X509_free(untrusted);
    sk_X509_pop_free(anchors, X509_free);
    free(bundle);
}

static void check_profile(ca_env *e, const ca_svid *s, const char *id, const char *const *dns,
                          size_t n_dns, int rsa, int64_t ttl)
{
    parsed p = parse_svid(s);
    X509 *x = p.leaf, *issuer = sk_X509_value(p.chain, 1);
    assert_int_equal(sk_X509_num(p.chain), 2); /* leaf, intermediate; never the root */
    assert_int_equal(X509_get_version(x), X509_VERSION_3);

    /* 16-byte positive serial, reported in hex */
    const ASN1_INTEGER *sn = X509_get0_serialNumber(x);
    assert_int_equal(ASN1_STRING_type(sn), V_ASN1_INTEGER);
    assert_int_equal(ASN1_STRING_length(sn), 16);
    char hex[33];
    ca_hex_encode(ASN1_STRING_get0_data(sn), 16, hex);
    assert_string_equal(ca_svid_serial(s), hex);

    /* Subject O=meshid; SAN non-critical: exactly one URI (the ID), then DNS */
    char *subj = X509_NAME_oneline(X509_get_subject_name(x), NULL, 0);
    assert_string_equal(subj, "/O=meshid");
    OPENSSL_free(subj);
    int crit = -1;
    GENERAL_NAMES *g = X509_get_ext_d2i(x, NID_subject_alt_name, &crit, NULL);
    assert_non_null(g);
    assert_int_equal(crit, 0);
    int uris = 0;
    size_t dns_seen = 0;
    for (int i = 0; i < sk_GENERAL_NAME_num(g); i++) {
        const GENERAL_NAME *n = sk_GENERAL_NAME_value(g, i);
        const char *v = (const char *)ASN1_STRING_get0_data(n->d.ia5);
        if (n->type == GEN_URI) {
            uris++;
            assert_string_equal(v, id);
        } else {
            assert_int_equal(n->type, GEN_DNS);
            assert_true(dns_seen < n_dns);
            assert_string_equal(v, dns[dns_seen++]);
        }
    }
    assert_int_equal(uris, 1);
    assert_int_equal(dns_seen, n_dns);
    GENERAL_NAMES_free(g);
    assert_string_equal(ca_svid_spiffe_id(s), id);

    /* basicConstraints CA:FALSE, critical */
    BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(x, NID_basic_constraints, &crit, NULL);
    assert_non_null(bc);
    assert_int_equal(crit, 1);
    assert_int_equal(bc->ca, 0);
    BASIC_CONSTRAINTS_free(bc);
    assert_false(X509_get_extension_flags(x) & EXFLAG_CA);

    /* keyUsage critical: digitalSignature (+keyEncipherment for RSA), never CA bits */
    ASN1_BIT_STRING *ku = X509_get_ext_d2i(x, NID_key_usage, &crit, NULL);
    assert_non_null(ku);
    assert_int_equal(crit, 1);
    ASN1_BIT_STRING_free(ku);
    assert_int_equal(X509_get_key_usage(x),
                     rsa ? (KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT) : KU_DIGITAL_SIGNATURE);

    /* EKU: serverAuth and clientAuth */
    EXTENDED_KEY_USAGE *eku = X509_get_ext_d2i(x, NID_ext_key_usage, &crit, NULL);
    assert_non_null(eku);
    assert_int_equal(sk_ASN1_OBJECT_num(eku), 2);
    assert_int_equal(OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, 0)), NID_server_auth);
    assert_int_equal(OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, 1)), NID_client_auth);
    sk_ASN1_OBJECT_pop_free(eku, ASN1_OBJECT_free);

    /* SKI present; AKI = the issuer's SKI */
    assert_non_null(X509_get0_subject_key_id(x));
    assert_non_null(X509_get0_authority_key_id(x));
    assert_int_equal(ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(x),
                                           X509_get0_subject_key_id(issuer)),
                     0);
    assert_int_equal(X509_NAME_cmp(X509_get_issuer_name(x), X509_get_subject_name(issuer)), 0);

    /* SHA-256 signature by the intermediate */
    assert_int_equal(X509_get_signature_nid(x), NID_ecdsa_with_SHA256);
    assert_int_equal(X509_verify(x, X509_get0_pubkey(issuer)), 1);

    /* validity: now - 30 s .. now + ttl */
    int64_t nb = 0, na = 0, now = now_s();
    assert_ok(ca_x509_validity(x, &nb, &na));
    assert_true(nb >= now - 30 - 5 && nb <= now - 30);
    assert_true(na >= now + ttl - 5 && na <= now + ttl);
    assert_int_equal(ca_svid_not_after(s), na);

    assert_verifies_against_bundle(e, &p);

    /* recorded in the store, with the key fingerprint */
    store_cert_row row;
    memset(&row, 0, sizeof row);
    assert_ok(store_cert_get(e->st, ca_svid_serial(s), &row));
    assert_string_equal(row.c.spiffe_id, id);
    assert_int_equal(row.c.not_after, na);
    char fp[CA_FP_HEX_LEN + 1];
    assert_ok(ca_key_fingerprint(X509_get0_pubkey(x), fp));
    assert_string_equal(row.c.key_fp, fp);
    assert_string_equal(row.c.status, "valid");
    store_cert_row_clear(&row);
    parsed_free(&p);
}

static void t_issue_generated_ec(void **state)
{
    ca_env *e = *state;
    const char *dns[] = {"web.example.org", "*.web.svc"};
    ca_issue_req req = {.spiffe_id = ID, .dns = dns, .n_dns = 2, .actor = "test"};
    ca_svid *s = NULL;
    assert_ok(ca_issue(e->c, &req, &s));
    check_profile(e, s, ID, dns, 2, 0, CA_SVID_TTL_DEFAULT);
    /* the generated key comes back as PKCS#8 and matches the leaf */
    const char *kp = ca_svid_key_pem(s);
    assert_non_null(kp);
    assert_non_null(strstr(kp, "-----BEGIN PRIVATE KEY-----"));
    EVP_PKEY *k = NULL;
    assert_ok(ca_key_from_pem(kp, strlen(kp), "svid", &k));
    parsed p = parse_svid(s);
    assert_ok(ca_key_matches_cert(k, p.leaf, "svid"));
    parsed_free(&p);
    EVP_PKEY_free(k);

    /* audit: one svid.issue with the promised details */
    assert_int_equal(cafx_count_events(e->st, "svid.issue", "ok"), 1);
    int64_t seq = 0;
    uint8_t h[STORE_HASH_LEN];
    assert_ok(store_audit_head(e->st, &seq, h));
    store_audit_row row;
    memset(&row, 0, sizeof row);
    assert_ok(store_audit_get(e->st, seq, &row));
    assert_string_equal(row.ev.event, "svid.issue");
    assert_string_equal(row.ev.spiffe_id, ID);
    assert_string_equal(row.ev.serial, ca_svid_serial(s));
    assert_string_equal(row.ev.actor, "test");
    json_t *d = json_loads(row.ev.details, 0, NULL);
    assert_non_null(d);
    assert_true(json_is_string(json_object_get(d, "authority_id")));
    assert_true(json_is_string(json_object_get(d, "not_after")));
    assert_int_equal(json_integer_value(json_object_get(d, "ttl")), CA_SVID_TTL_DEFAULT);
    assert_int_equal(json_array_size(json_object_get(d, "dns")), 2);
    assert_int_equal(strlen(json_string_value(json_object_get(d, "key_fp"))), 64);
    assert_true(json_is_false(json_object_get(d, "csr")));
    /* printed by hand, byte for byte what jansson would have written */
    char *canon = json_dumps(d, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(row.ev.details, canon);
    free(canon);
    json_decref(d);
    store_audit_row_clear(&row);
    ca_svid_free(s);
}

static void t_issue_csr_ec_and_rsa(void **state)
{
    ca_env *e = *state;
    static const char *specs[] = {"ec-p256", "ec-p384", "rsa-2048"};
    for (size_t i = 0; i < 3; i++) {
        EVP_PKEY *k = cafx_key(specs[i]);
        size_t len = 0;
        const char *uris[] = {ID, NULL};
        unsigned char *csr = cafx_csr(k, i == 0 ? uris : NULL, NULL, (int)(i % 2), &len);
        ca_issue_req req = {.spiffe_id = ID, .csr = csr, .csr_len = len, .ttl = 600};
        ca_svid *s = NULL;
        assert_ok(ca_issue(e->c, &req, &s));
        assert_null(ca_svid_key_pem(s));
        check_profile(e, s, ID, NULL, 0, i == 2, 600);
        parsed p = parse_svid(s);
        assert_int_equal(EVP_PKEY_eq(X509_get0_pubkey(p.leaf), k), 1);
        /* The certificate carries the CSR's SubjectPublicKeyInfo byte for
         * byte (copied, not re-encoded from a key), and the stored
         * fingerprint is the old definition's: SHA-256 of i2d_PUBKEY. */
        unsigned char *want = NULL, *got = NULL;
        int want_len = i2d_PUBKEY(k, &want);
        int got_len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(p.leaf), &got);
        assert_true(want_len > 0);
        assert_int_equal(got_len, want_len);
        assert_memory_equal(got, want, (size_t)want_len);
        char fp[CA_FP_HEX_LEN + 1];
        assert_ok(ca_key_fingerprint(k, fp));
        store_cert_row row;
        memset(&row, 0, sizeof row);
        assert_ok(store_cert_get(e->st, ca_svid_serial(s), &row));
        assert_string_equal(row.c.key_fp, fp);
        store_cert_row_clear(&row);
        OPENSSL_free(want);
        OPENSSL_free(got);
        parsed_free(&p);
        ca_svid_free(s);
        free(csr);
        EVP_PKEY_free(k);
    }
}

static void t_issue_generated_rsa(void **state)
{
    ca_env *e = *state;
    ca_issue_req req = {.spiffe_id = ID, .key_type = CA_KEY_RSA_2048};
    ca_svid *s = NULL;
    assert_ok(ca_issue(e->c, &req, &s));
    check_profile(e, s, ID, NULL, 0, 1, CA_SVID_TTL_DEFAULT);
    ca_svid_free(s);
}

static void t_issue_ttl_cap(void **state)
{
    ca_env *e = *state;
    ca_svid *s = NULL;
    ca_issue_req req = {.spiffe_id = ID, .ttl = 30 * 86400};
    assert_ok(ca_issue(e->c, &req, &s));
    int64_t now = now_s();
    assert_true(ca_svid_not_after(s) <= now + CA_SVID_TTL_MAX &&
                ca_svid_not_after(s) >= now + CA_SVID_TTL_MAX - 5);
    ca_svid_free(s);
    req.ttl = 60;
    assert_ok(ca_issue(e->c, &req, &s));
    assert_true(ca_svid_not_after(s) <= now_s() + 60 && ca_svid_not_after(s) >= now + 55);
    ca_svid_free(s);
}

static void t_issue_clamped_by_issuer(void **state)
{
    (void)state;
    ca_env *e = ca_env_new();
    ca_env_init(e, CA_KEY_EC_P256, 0, 7200); /* intermediate lives two hours */
    store_authority_row *rows = NULL;
    size_t n = 0;
    assert_ok(store_authority_list(e->st, &rows, &n));
    int64_t inter_na = rows[1].a.not_after;
    store_authority_list_free(rows, n);
    ca_svid *s = NULL;
    ca_issue_req req = {.spiffe_id = ID, .ttl = CA_SVID_TTL_MAX};
    assert_ok(ca_issue(e->c, &req, &s));
    assert_int_equal(ca_svid_not_after(s), inter_na);
    ca_svid_free(s);
    ca_env_free(e);

    /* ... and by the root above it when the root ends first */
    e = ca_env_new();
    ca_env_init(e, CA_KEY_EC_P256, 3600, 7200);
    assert_ok(store_authority_list(e->st, &rows, &n));
    int64_t root_na = rows[0].a.not_after;
    store_authority_list_free(rows, n);
    assert_ok(ca_issue(e->c, &req, &s));
    assert_int_equal(ca_svid_not_after(s), root_na);
    ca_svid_free(s);
    ca_env_free(e);
}

/* One refusal: the error and its message survive the audit, and exactly one
 * svid.refuse event with outcome "denied" and the reason is added. */
static void expect_refusal(ca_env *e, const ca_issue_req *req, mid_err err, const char *needle)
{
    long before = cafx_count_events(e->st, "svid.refuse", "denied");
    ca_svid *s = NULL;
    mid_result r = ca_issue(e->c, req, &s);
    assert_null(s);
    if (r.err != err || strstr(mid_errmsg(), needle) == NULL)
        fail_msg("expected %s '%s', got %s: %s", mid_errname(err), needle, mid_errname(r.err),
                 mid_errmsg());
    assert_int_equal(mid_errcode(), err);
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", mid_errmsg());
    assert_int_equal(cafx_count_events(e->st, "svid.refuse", "denied"), before + 1);
    int64_t seq = 0;
    uint8_t h[STORE_HASH_LEN];
    assert_ok(store_audit_head(e->st, &seq, h));
    store_audit_row row;
    memset(&row, 0, sizeof row);
    assert_ok(store_audit_get(e->st, seq, &row));
    assert_string_equal(row.ev.event, "svid.refuse");
    assert_string_equal(row.ev.outcome, "denied");
    assert_non_null(strstr(row.ev.reason, needle));
    if (req->spiffe_id != NULL && strchr(req->spiffe_id, '\x01') != NULL)
        assert_string_equal(row.ev.spiffe_id, "spiffe://example.org/??"); /* sanitized */
    else if (req->spiffe_id != NULL)
        assert_string_equal(row.ev.spiffe_id, req->spiffe_id);
    else
        assert_null(row.ev.spiffe_id);
    store_audit_row_clear(&row);
}

static void t_issue_refusals(void **state)
{
    ca_env *e = *state;
    ca_issue_req req = {.spiffe_id = "spiffe://other.org/web"};
    expect_refusal(e, &req, MID_E_DENIED, "not in trust domain example.org");
    req.spiffe_id = "spiffe://example.org";
    expect_refusal(e, &req, MID_E_INVALID, "has no path");
    req.spiffe_id = "https://example.org/web";
    expect_refusal(e, &req, MID_E_INVALID, "");
    req.spiffe_id = "spiffe://example.org/a/../b";
    expect_refusal(e, &req, MID_E_INVALID, "");
    req.spiffe_id = NULL;
    expect_refusal(e, &req, MID_E_INVALID, "no SPIFFE ID");
    req.spiffe_id = "spiffe://example.org/\x01\xff";
    expect_refusal(e, &req, MID_E_INVALID, "");

    req.spiffe_id = ID;
    req.ttl = -5;
    expect_refusal(e, &req, MID_E_INVALID, "negative TTL");
    req.ttl = 0;

    const char *bad_dns[] = {"bad_name.example.org"};
    req.dns = bad_dns;
    req.n_dns = 1;
    expect_refusal(e, &req, MID_E_INVALID, "bad_name");
    const char *many[CA_MAX_DNS + 1];
    for (size_t i = 0; i <= CA_MAX_DNS; i++) many[i] = "a.example.org";
    req.dns = many;
    req.n_dns = CA_MAX_DNS + 1;
    expect_refusal(e, &req, MID_E_TOO_LARGE, "DNS names");
    req.dns = NULL;
    req.n_dns = 0;

    req.csr = (const unsigned char *)"garbage";
    req.csr_len = 7;
    expect_refusal(e, &req, MID_E_INVALID, "CSR");
    unsigned char *big = calloc(1, CA_CSR_MAX + 1);
    req.csr = big;
    req.csr_len = CA_CSR_MAX + 1;
    expect_refusal(e, &req, MID_E_TOO_LARGE, "over the limit");
    free(big);

    EVP_PKEY *k = cafx_key("ec-p256");
    size_t len = 0;
    const char *foreign[] = {"spiffe://example.org/admin", NULL};
    unsigned char *csr = cafx_csr(k, foreign, NULL, 0, &len);
    req.csr = csr;
    req.csr_len = len;
    expect_refusal(e, &req, MID_E_DENIED, "spiffe://example.org/admin");
    free(csr);
    csr = cafx_csr(k, NULL, NULL, 1, &len);
    csr[len - 1] ^= 0x01;
    req.csr = csr;
    req.csr_len = len;
    expect_refusal(e, &req, MID_E_INVALID, "signature");
    free(csr);
    EVP_PKEY_free(k);
    k = cafx_key("ec-p521");
    csr = cafx_csr(k, NULL, NULL, 1, &len);
    req.csr = csr;
    req.csr_len = len;
    expect_refusal(e, &req, MID_E_INVALID, "unsupported key");
    free(csr);
    EVP_PKEY_free(k);

    /* Nothing was issued, and the log still verifies. */
    assert_int_equal(cafx_count_events(e->st, "svid.issue", NULL), 0);
    store_audit_verdict v;
    assert_ok(store_audit_verify(e->st, &v));
    assert_int_equal(v.ok, 1);
}

typedef struct {
    ca *c;
    int ok;
    char serials[8][CA_SERIAL_HEX_LEN + 1];
} worker;

static void *issue_worker(void *arg)
{
    worker *w = arg;
    w->ok = 1;
    for (int i = 0; i < 8; i++) {
        ca_issue_req req = {.spiffe_id = ID, .ttl = 300};
        ca_svid *s = NULL;
        if (!mid_is_ok(ca_issue(w->c, &req, &s))) {
            w->ok = 0;
            return NULL;
        }
        snprintf(w->serials[i], sizeof w->serials[i], "%s", ca_svid_serial(s));
        ca_svid_free(s);
    }
    return NULL;
}

static void t_issue_concurrent(void **state)
{
    ca_env *e = *state;
    enum { N = 8 };
    pthread_t th[N];
    worker w[N];
    memset(w, 0, sizeof w);
    for (int i = 0; i < N; i++) {
        w[i].c = e->c;
        assert_int_equal(pthread_create(&th[i], NULL, issue_worker, &w[i]), 0);
    }
    for (int i = 0; i < N; i++) assert_int_equal(pthread_join(th[i], NULL), 0);
    for (int i = 0; i < N; i++) assert_true(w[i].ok);
    for (int i = 0; i < N * 8; i++)
        for (int j = 0; j < i; j++)
            assert_string_not_equal(w[i / 8].serials[i % 8], w[j / 8].serials[j % 8]);
    assert_int_equal(cafx_count_events(e->st, "svid.issue", "ok"), N * 8);
}

static void t_open_checks_key(void **state)
{
    ca_env *e = *state;
    /* Swap the intermediate's key file for another key: open must refuse. */
    store_authority_row *rows = NULL;
    size_t n = 0;
    assert_ok(store_authority_list(e->st, &rows, &n));
    char path[600];
    snprintf(path, sizeof path, "%s/%s", e->dir, rows[1].a.key_ref);
    store_authority_list_free(rows, n);
    EVP_PKEY *k = cafx_key("ec-p256");
    cafx_write_key(path, k);
    EVP_PKEY_free(k);
    ca *c = NULL;
    assert_fails_with(ca_open(e->st, e->dir, &c), MID_E_INVALID, "does not match");
    assert_int_equal(unlink(path), 0);
    assert_fails_with(ca_open(e->st, e->dir, &c), MID_E_NOT_FOUND, "no such file");
    assert_null(c);
    ca_close(NULL);
}

int ca_test_issue(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(t_init_layout, ca_env_setup, ca_env_teardown),
        cmocka_unit_test_setup_teardown(t_init_refusals, ca_env_setup, ca_env_teardown),
        cmocka_unit_test(t_init_intermediate_clamped),
        cmocka_unit_test_setup_teardown(t_issue_generated_ec, ca_env_setup, ca_env_teardown),
        cmocka_unit_test_setup_teardown(t_issue_csr_ec_and_rsa, ca_env_setup, ca_env_teardown),
        cmocka_unit_test_setup_teardown(t_issue_generated_rsa, ca_env_setup, ca_env_teardown),
        cmocka_unit_test_setup_teardown(t_issue_ttl_cap, ca_env_setup, ca_env_teardown),
        cmocka_unit_test(t_issue_clamped_by_issuer),
        cmocka_unit_test_setup_teardown(t_issue_refusals, ca_env_setup, ca_env_teardown),
        cmocka_unit_test_setup_teardown(t_issue_concurrent, ca_env_setup, ca_env_teardown),
        cmocka_unit_test_setup_teardown(t_open_checks_key, ca_env_setup, ca_env_teardown),
    };
    return cmocka_run_group_tests_name("ca/issue", tests, NULL, NULL);
}
