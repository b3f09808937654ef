/* ca_bundle_pem and ca_bundle_spiffe: the anchors, the JWK Set members the
 * SPIFFE bundle format requires, and the sequence moving with the anchors. */
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <stdlib.h>
#include <string.h>

#include "ca/codec.h"
#include "tests/testlib/ca_fixtures.h"
#include "tests/unit/ca/ca_tests.h"

/* base64url without padding -> bytes (test-side decoder via the std one). */
static unsigned char *b64url_decode(const char *s, size_t *len)
{
    size_t n = strlen(s);
    char *std = malloc(n + 4);
    for (size_t i = 0; i < n; i++) std[i] = s[i] == '-' ? '+' : s[i] == '_' ? '/' : s[i];
    while (n % 4) std[n++] = '=';
    unsigned char *out = NULL;
    assert_ok(ca_b64_decode(std, n, 4096, "t", &out, len));
    free(std);
    return out;
}

static X509 *stored_root(store *st)
{
    store_authority_row *rows = NULL;
    size_t n = 0;
    assert_ok(store_authority_list(st, &rows, &n));
    STACK_OF(X509) *sk = cafx_pem_certs(rows[0].a.cert_pem);
    X509 *root = sk_X509_shift(sk);
    sk_X509_pop_free(sk, X509_free);
    store_authority_list_free(rows, n);
    return root;
}

static void assert_bn_member(json_t *k, const char *member, EVP_PKEY *pk, const char *param,
                             int width)
{
    BIGNUM *bn = NULL;
    assert_int_equal(EVP_PKEY_get_bn_param(pk, param, &bn), 1);
    size_t len = 0;
    unsigned char *got = b64url_decode(json_string_value(json_object_get(k, member)), &len);
    int n = width ? width : BN_num_bytes(bn);
    assert_int_equal(len, (size_t)n);
    unsigned char *want = malloc((size_t)n);
    BN_bn2binpad(bn, want, n);
    assert_memory_equal(got, want, (size_t)n);
    free(want);
    free(got);
    BN_free(bn);
}

static json_t *load_bundle(ca *c)
{
    char *text = NULL;
    assert_ok(ca_bundle_spiffe(c, &text));
    json_t *doc = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
    assert_non_null(doc);
    free(text);
    return doc;
}

static void check_jwk(json_t *k, X509 *root, int rsa)
{
    EVP_PKEY *pk = X509_get0_pubkey(root);
    assert_string_equal(json_string_value(json_object_get(k, "use")), "x509-svid");
    assert_null(json_object_get(k, "kid"));
    if (rsa) {
        assert_int_equal(json_object_size(k), 5); /* kty n e use x5c */
        assert_string_equal(json_string_value(json_object_get(k, "kty")), "RSA");
        assert_bn_member(k, "n", pk, OSSL_PKEY_PARAM_RSA_N, 0);
        assert_string_equal(json_string_value(json_object_get(k, "e")), "AQAB");
    } else {
        assert_int_equal(json_object_size(k), 6); /* kty crv x y use x5c */
        assert_string_equal(json_string_value(json_object_get(k, "kty")), "EC");
        assert_string_equal(json_string_value(json_object_get(k, "crv")), "P-256");
        assert_bn_member(k, "x", pk, OSSL_PKEY_PARAM_EC_PUB_X, 32);
        assert_bn_member(k, "y", pk, OSSL_PKEY_PARAM_EC_PUB_Y, 32);
    }
    json_t *x5c = json_object_get(k, "x5c");
    assert_int_equal(json_array_size(x5c), 1);
    const char *b64 = json_string_value(json_array_get(x5c, 0));
    unsigned char *der = NULL, *want = NULL;
    size_t len = 0;
    assert_ok(ca_b64_decode(b64, strlen(b64), 65536, "x5c", &der, &len));
    int n = i2d_X509(root, &want);
    assert_int_equal(len, (size_t)n);
    assert_memory_equal(der, want, len);
    free(der);
    OPENSSL_free(want);
}

static void t_bundle_pem(void **state)
{
    ca_env *e = *state;
    char *pem = NULL;
    assert_ok(ca_bundle_pem(e->c, &pem));
    STACK_OF(X509) *sk = cafx_pem_certs(pem);
    assert_int_equal(sk_X509_num(sk), 1);
    X509 *root = stored_root(e->st);
    assert_int_equal(X509_cmp(root, sk_X509_value(sk, 0)), 0);
    X509_free(root);
    sk_X509_pop_free(sk, X509_free);
    free(pem);
}

static void t_bundle_spiffe_ec(void **state)
{
    ca_env *e = *state;
    json_t *doc = load_bundle(e->c);
    json_t *keys = json_object_get(doc, "keys");
    assert_int_equal(json_array_size(keys), 1);
    X509 *root = stored_root(e->st);
    check_jwk(json_array_get(keys, 0), root, 0);
    assert_true(json_is_integer(json_object_get(doc, "spiffe_sequence")));
    assert_true(json_integer_value(json_object_get(doc, "spiffe_sequence")) > 0);
    assert_int_equal(json_integer_value(json_object_get(doc, "spiffe_refresh_hint")), 300);
    X509_free(root);
    json_decref(doc);
}

static void t_bundle_spiffe_rsa(void **state)
{
    (void)state;
    ca_env *e = ca_env_new();
    ca_env_init(e, CA_KEY_RSA_2048, 0, 0);
    json_t *doc = load_bundle(e->c);
    X509 *root = stored_root(e->st);
    check_jwk(json_array_get(json_object_get(doc, "keys"), 0), root, 1);
    X509_free(root);
    json_decref(doc);
    /* RSA authorities sign SVIDs with SHA-256 too */
    ca_issue_req req = {.spiffe_id = "spiffe://example.org/w"};
    ca_svid *s = NULL;
    assert_ok(ca_issue(e->c, &req, &s));
    STACK_OF(X509) *sk = cafx_pem_certs(ca_svid_chain_pem(s));
    assert_int_equal(X509_get_signature_nid(sk_X509_value(sk, 0)), NID_sha256WithRSAEncryption);
    sk_X509_pop_free(sk, X509_free);
    ca_svid_free(s);
    ca_env_free(e);
}

static void t_bundle_sequence_moves(void **state)
{
    ca_env *e = *state;
    json_t *doc = load_bundle(e->c);
    json_int_t seq1 = json_integer_value(json_object_get(doc, "spiffe_sequence"));
    json_decref(doc);
    X509 *root = stored_root(e->st);
    char id[200];
    store_authority_row *rows = NULL;
    size_t n = 0;
    assert_ok(store_authority_list(e->st, &rows, &n));
    snprintf(id, sizeof id, "%s", rows[0].a.id);
    store_authority_list_free(rows, n);
    store_audit_event ev = {.actor = "test", .event = "ca.revoke", .outcome = "ok"};
    assert_ok(store_authority_set_state(e->st, id, "active", "revoked", &ev));
    doc = load_bundle(e->c);
    assert_int_equal(json_array_size(json_object_get(doc, "keys")), 0); /* still present */
    assert_true(json_integer_value(json_object_get(doc, "spiffe_sequence")) > seq1);
    json_decref(doc);
    char *pem = NULL;
    assert_ok(ca_bundle_pem(e->c, &pem));
    assert_string_equal(pem, "");
    free(pem);
    X509_free(root);
}

int ca_test_bundle(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(t_bundle_pem, ca_env_setup, ca_env_teardown),
        cmocka_unit_test_setup_teardown(t_bundle_spiffe_ec, ca_env_setup, ca_env_teardown),
        cmocka_unit_test(t_bundle_spiffe_rsa),
        cmocka_unit_test_setup_teardown(t_bundle_sequence_moves, ca_env_setup, ca_env_teardown),
    };
    return cmocka_run_group_tests_name("ca/bundle", tests, NULL, NULL);
}
