/* sds_view (sds/view.c), plus the fixtures the other sds service tests share
 * (declared in sds_tests.h): throwaway CAs and SVIDs made with OpenSSL, and
 * a fake sds_source whose view the tests swap. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "sds/view.h"
#include "tests/testlib/ca_fixtures.h"
#include "tests/unit/sds/sds_tests.h"

/* ---- shared fixtures --------------------------------------------------------- */

struct sdsfx_ca {
    char td[256];
    EVP_PKEY *key;
    X509 *cert;
    char *pem;
};

static char *cert_pem(X509 *const *certs, size_t n)
{
    BIO *b = BIO_new(BIO_s_mem());
    for (size_t i = 0; i < n; i++) assert_int_equal(PEM_write_bio_X509(b, certs[i]), 1);
    char *data;
    long len = BIO_get_mem_data(b, &data);
    char *s = calloc(1, (size_t)len + 1);
    memcpy(s, data, (size_t)len);
    BIO_free(b);
    return s;
}

static char *key_pem(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL), 1);
    char *data;
    long len = BIO_get_mem_data(b, &data);
    char *s = calloc(1, (size_t)len + 1);
    memcpy(s, data, (size_t)len);
    BIO_free(b);
    return s;
}

sdsfx_ca *sdsfx_ca_new(const char *td)
{
    sdsfx_ca *ca = calloc(1, sizeof *ca);
    snprintf(ca->td, sizeof ca->td, "%s", td);
    char uri[300];
    snprintf(uri, sizeof uri, "spiffe://%s", td);
    ca->key = cafx_key("ec-p256");
    cafx_cert_opts o = {.cn = td, .key = ca->key, .is_ca = 1, .uri = uri};
    ca->cert = cafx_cert(&o);
    ca->pem = cert_pem(&ca->cert, 1);
    return ca;
}

const char *sdsfx_ca_pem(const sdsfx_ca *ca) { return ca->pem; }
const char *sdsfx_ca_td(const sdsfx_ca *ca) { return ca->td; }

void sdsfx_issue(sdsfx_ca *ca, const char *spiffe_id, char **chain, char **key)
{
    EVP_PKEY *k = cafx_key("ec-p256");
    cafx_cert_opts o = {.cn = "svid", .key = k, .issuer = ca->cert, .issuer_key = ca->key,
                        .uri = spiffe_id};
    X509 *leaf = cafx_cert(&o);
    *chain = cert_pem(&leaf, 1);
    *key = key_pem(k);
    X509_free(leaf);
    EVP_PKEY_free(k);
}

void sdsfx_ca_free(sdsfx_ca *ca)
{
    if (!ca) return;
    EVP_PKEY_free(ca->key);
    X509_free(ca->cert);
    free(ca->pem);
    free(ca);
}

sds_view *sdsfx_view(sdsfx_ca *own, const char *id, sdsfx_ca *fed)
{
    sds_view *v;
    assert_true(mid_is_ok(sds_view_new(&v)));
    if (id) {
        char *chain, *key;
        sdsfx_issue(own, id, &chain, &key);
        assert_true(mid_is_ok(sds_view_add_svid(v, id, chain, key, 0)));
        free(chain);
        free(key);
    }
    assert_true(mid_is_ok(sds_view_add_bundle(v, own->td, own->pem, 1)));
    if (fed) assert_true(mid_is_ok(sds_view_add_bundle(v, fed->td, fed->pem, 1)));
    return v;
}

static mid_result fake_attest(void *ctx, const rpc_peer *peer, sds_workload **out)
{
    sdsfx_source *s = ctx;
    (void)peer;
    s->attests++;
    if (s->deny_attest) MID_BAIL(MID_E_DENIED, "no registration entry matches uid %d", (int)peer->uid);
    *out = (sds_workload *)malloc(16); /* opaque token; ASan checks it is freed */
    MID_ENSURE_MEM(*out);
    s->live++;
    return mid_ok();
}

static mid_result fake_view(void *ctx, const sds_workload *w, sds_view **out)
{
    sdsfx_source *s = ctx;
    (void)w;
    s->views++;
    if (s->deny_view) MID_BAIL(MID_E_DENIED, "registration entry removed");
    if (!s->view) MID_BAIL(MID_E_NOT_FOUND, "not issued yet");
    *out = sds_view_ref(s->view);
    return mid_ok();
}

static void fake_free(void *ctx, sds_workload *w)
{
    sdsfx_source *s = ctx;
    s->live--;
    free(w);
}

const sds_source_ops sdsfx_source_ops = {fake_attest, fake_view, fake_free};

void sdsfx_set_view(sdsfx_source *s, sds_view *v)
{
    sds_view_unref(s->view);
    s->view = v;
}

/* ---- view tests ---------------------------------------------------------- */

typedef struct {
    sdsfx_ca *ca, *other;
    char *chain, *key;
} vfx;

static int vsetup(void **state)
{
    vfx *f = calloc(1, sizeof *f);
    f->ca = sdsfx_ca_new("example.org");
    f->other = sdsfx_ca_new("other.org");
    sdsfx_issue(f->ca, "spiffe://example.org/web", &f->chain, &f->key);
    *state = f;
    return 0;
}

static int vteardown(void **state)
{
    vfx *f = *state;
    sdsfx_ca_free(f->ca);
    sdsfx_ca_free(f->other);
    free(f->chain);
    free(f->key);
    free(f);
    return 0;
}

static void test_view_svid_der_and_digest(void **state)
{
    vfx *f = *state;
    sds_view *v;
    assert_true(mid_is_ok(sds_view_new(&v)));
    /* leaf + CA as a chain, with junk text around the PEM blocks */
    size_t cap = strlen(f->chain) + strlen(f->ca->pem) + 32;
    char *chain = malloc(cap);
    snprintf(chain, cap, "leaf:\n%s# ca\n%s", f->chain, f->ca->pem);
    assert_true(mid_is_ok(sds_view_add_svid(v, "spiffe://example.org/web", chain, f->key, 1234)));
    assert_int_equal(sds_view_svid_count(v), 1);
    const sds_svid *s = sds_view_svid(v, 0);
    assert_string_equal(s->spiffe_id, "spiffe://example.org/web");
    assert_int_equal(s->not_after, 1234);
    assert_non_null(strstr(s->key_pem, "-----BEGIN PRIVATE KEY-----")); /* PKCS#8 */
    assert_null(strstr(s->chain_pem, "leaf:"));                          /* canonical PEM */
    assert_int_equal(strlen(s->digest), 64);
    /* DER: two certificates back to back, the first is the leaf */
    const uint8_t *p = s->chain_der, *end = s->chain_der + s->chain_der_len;
    X509 *leaf = d2i_X509(NULL, &p, end - p);
    assert_non_null(leaf);
    X509 *ca = d2i_X509(NULL, &p, end - p);
    assert_non_null(ca);
    assert_ptr_equal(p, end);
    assert_int_equal(X509_cmp(ca, f->ca->cert), 0);
    X509_free(leaf);
    X509_free(ca);
    /* PKCS#8 DER key */
    p = s->key_der;
    PKCS8_PRIV_KEY_INFO *p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, (long)s->key_der_len);
    assert_non_null(p8);
    PKCS8_PRIV_KEY_INFO_free(p8);
    assert_ptr_equal(sds_view_svid_by_id(v, "spiffe://example.org/web"), s);
    assert_null(sds_view_svid_by_id(v, "spiffe://example.org/other"));
    assert_null(sds_view_svid(v, 1));

    /* the same material gives the same digest; a new key and cert another */
    sds_view *v2;
    assert_true(mid_is_ok(sds_view_new(&v2)));
    assert_true(mid_is_ok(sds_view_add_svid(v2, "spiffe://example.org/web", chain, f->key, 0)));
    assert_string_equal(sds_view_svid(v2, 0)->digest, s->digest);
    char *c3, *k3;
    sdsfx_issue(f->ca, "spiffe://example.org/db", &c3, &k3);
    assert_true(mid_is_ok(sds_view_add_svid(v2, "spiffe://example.org/db", c3, k3, 0)));
    assert_string_not_equal(sds_view_svid(v2, 1)->digest, s->digest);
    free(c3);
    free(k3);
    free(chain);
    sds_view_unref(v2);
    sds_view_unref(v);
}

static void test_view_rejects_bad_input(void **state)
{
    vfx *f = *state;
    sds_view *v;
    assert_true(mid_is_ok(sds_view_new(&v)));
    /* a key that is not the leaf's */
    char *c2, *k2;
    sdsfx_issue(f->ca, "spiffe://example.org/web", &c2, &k2);
    assert_false(mid_is_ok(sds_view_add_svid(v, "spiffe://example.org/web", f->chain, k2, 0)));
    assert_int_equal(mid_errcode(), MID_E_INVALID);
    /* no certificate, damaged PEM, garbage key, bad IDs */
    assert_false(mid_is_ok(sds_view_add_svid(v, "spiffe://example.org/web", "hello", f->key, 0)));
    assert_int_equal(mid_errcode(), MID_E_INVALID);
    char *broken = strdup(f->chain);
    broken[strlen(broken) / 2] = '*';
    assert_false(mid_is_ok(sds_view_add_svid(v, "spiffe://example.org/web", broken, f->key, 0)));
    free(broken);
    assert_false(mid_is_ok(sds_view_add_svid(v, "spiffe://example.org/web", f->chain, "key", 0)));
    assert_false(mid_is_ok(sds_view_add_svid(v, "spiffe://example.org", f->chain, f->key, 0)));
    assert_false(mid_is_ok(sds_view_add_svid(v, "http://example.org/web", f->chain, f->key, 0)));
    assert_false(mid_is_ok(sds_view_add_svid(v, NULL, f->chain, f->key, 0)));
    assert_int_equal(sds_view_svid_count(v), 0);
    /* bundles: bad trust domain, duplicate, no certificate */
    assert_false(mid_is_ok(sds_view_add_bundle(v, "Example.org", f->ca->pem, 1)));
    assert_false(mid_is_ok(sds_view_add_bundle(v, "spiffe://example.org", f->ca->pem, 1)));
    assert_true(mid_is_ok(sds_view_add_bundle(v, "example.org", f->ca->pem, 1)));
    assert_false(mid_is_ok(sds_view_add_bundle(v, "example.org", f->other->pem, 2)));
    assert_int_equal(mid_errcode(), MID_E_EXISTS);
    assert_false(mid_is_ok(sds_view_add_bundle(v, "other.org", "", 1)));
    assert_int_equal(sds_view_bundle_count(v), 1);
    /* once shared, no more additions */
    sds_view_ref(v);
    assert_false(mid_is_ok(sds_view_add_bundle(v, "other.org", f->other->pem, 1)));
    assert_int_equal(mid_errcode(), MID_E_STATE);
    sds_view_unref(v);
    free(c2);
    free(k2);
    sds_view_unref(v);
}

static void test_view_bundles_and_refs(void **state)
{
    vfx *f = *state;
    sds_view *v = sdsfx_view(f->ca, "spiffe://example.org/web", f->other);
    assert_int_equal(sds_view_bundle_count(v), 2);
    const sds_bundle *b = sds_view_bundle(v, 0);
    assert_string_equal(b->trust_domain, "example.org");
    assert_ptr_equal(sds_view_bundle_for(v, "other.org"), sds_view_bundle(v, 1));
    assert_null(sds_view_bundle_for(v, "nope.org"));
    assert_null(sds_view_bundle(v, 2));
    const uint8_t *p = b->roots_der;
    X509 *x = d2i_X509(NULL, &p, (long)b->roots_der_len);
    assert_int_equal(X509_cmp(x, f->ca->cert), 0);
    X509_free(x);
    assert_string_not_equal(b->digest, sds_view_bundle(v, 1)->digest);
    /* references: the last unref frees (ASan would report a leak or a
     * use-after-free otherwise) */
    assert_ptr_equal(sds_view_ref(v), v);
    sds_view_unref(v);
    assert_string_equal(sds_view_bundle(v, 0)->trust_domain, "example.org");
    sds_view_unref(v);
    sds_view_unref(NULL);
    assert_int_equal(sds_view_svid_count(NULL), 0);
}

int run_view_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_view_svid_der_and_digest),
        cmocka_unit_test(test_view_rejects_bad_input),
        cmocka_unit_test(test_view_bundles_and_refs),
    };
    return cmocka_run_group_tests_name("sds_view", tests, vsetup, vteardown);
}
