/* ca/csr.c: CSR intake, and every way a CSR is refused. */
#include <stdlib.h>
#include <string.h>

#include "ca/csr.h"
#include "tests/testlib/ca_fixtures.h"
#include "tests/unit/ca/ca_tests.h"

#define ID "spiffe://example.org/web"

static void accept_csr(const char *spec, int der)
{
    EVP_PKEY *k = cafx_key(spec);
    size_t len = 0;
    unsigned char *csr = cafx_csr(k, NULL, NULL, der, &len);
    X509_REQ *req = NULL;
    assert_ok(ca_csr_intake(csr, len, ID, &req));
    assert_int_equal(EVP_PKEY_eq(X509_REQ_get0_pubkey(req), k), 1);
    X509_REQ_free(req);
    free(csr);
    EVP_PKEY_free(k);
}

static void t_csr_accepts(void **state)
{
    (void)state;
    accept_csr("ec-p256", 0);
    accept_csr("ec-p256", 1);
    accept_csr("ec-p384", 0);
    accept_csr("rsa-2048", 1);
    accept_csr("rsa-2048", 0);
}

static void t_csr_pem_with_blank_around(void **state)
{
    (void)state;
    EVP_PKEY *k = cafx_key("ec-p256");
    size_t len = 0;
    unsigned char *csr = cafx_csr(k, NULL, NULL, 0, &len);
    char *padded = malloc(len + 8);
    memcpy(padded, "\n  ", 3);
    memcpy(padded + 3, csr, len);
    memcpy(padded + 3 + len, "\r\n\n", 3);
    X509_REQ *req = NULL;
    assert_ok(ca_csr_parse((unsigned char *)padded, len + 6, &req));
    X509_REQ_free(req);
    free(padded);
    free(csr);
    EVP_PKEY_free(k);
}

static void t_csr_garbage(void **state)
{
    (void)state;
    X509_REQ *req = NULL;
    static const char *junk[] = {"hello", "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n",
                                 "\x30\x82\xff\xff", "\x30\x00", "-----BEGIN "};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++)
        assert_fails_with(ca_csr_parse((const unsigned char *)junk[i], strlen(junk[i]), &req),
                          MID_E_INVALID, "CSR");
    assert_fails_with(ca_csr_parse((const unsigned char *)"", 0, &req), MID_E_INVALID, "empty");
    assert_fails_with(ca_csr_parse(NULL, 10, &req), MID_E_INVALID, "empty");
    assert_null(req);
}

static void t_csr_truncated_der(void **state)
{
    (void)state;
    EVP_PKEY *k = cafx_key("ec-p256");
    size_t len = 0;
    unsigned char *csr = cafx_csr(k, NULL, NULL, 1, &len);
    X509_REQ *req = NULL;
    for (size_t n = 1; n < len; n++) {
        mid_result r = ca_csr_parse(csr, n, &req);
        if (r.err != MID_E_INVALID) fail_msg("truncated to %zu bytes: %s", n, mid_errname(r.err));
    }
    assert_null(req);
    free(csr);
    EVP_PKEY_free(k);
}

static void t_csr_trailing_data(void **state)
{
    (void)state;
    EVP_PKEY *k = cafx_key("ec-p256");
    size_t len = 0, plen = 0;
    unsigned char *der = cafx_csr(k, NULL, NULL, 1, &len);
    unsigned char *pem = cafx_csr(k, NULL, NULL, 0, &plen);
    X509_REQ *req = NULL;
    unsigned char *more = malloc(len + 1);
    memcpy(more, der, len);
    more[len] = 0;
    assert_fails_with(ca_csr_parse(more, len + 1, &req), MID_E_INVALID, "trailing");
    char *two = malloc(2 * plen + 1);
    memcpy(two, pem, plen);
    memcpy(two + plen, pem, plen + 1);
    assert_fails_with(ca_csr_parse((unsigned char *)two, 2 * plen, &req), MID_E_INVALID,
                      "after the PEM block");
    free(two);
    free(more);
    free(der);
    free(pem);
    EVP_PKEY_free(k);
}

static void t_csr_wrong_pem_label(void **state)
{
    (void)state;
    EVP_PKEY *k = cafx_key("ec-p256");
    size_t len = 0;
    unsigned char *pem = cafx_csr(k, NULL, NULL, 0, &len);
    char *s = (char *)pem;
    char *p;
    /* Relabel as CERTIFICATE (same length: "CERTIFICATE REQUEST" -> "X509 CRL" would not). */
    while ((p = strstr(s, "CERTIFICATE REQUEST")) != NULL) memcpy(p, "CERTIFICATE-REQUEST", 19);
    X509_REQ *req = NULL;
    assert_fails_with(ca_csr_parse(pem, len, &req), MID_E_INVALID, "expected 'CERTIFICATE REQUEST'");
    free(pem);
    EVP_PKEY_free(k);
}

static void t_csr_oversized(void **state)
{
    (void)state;
    size_t n = CA_CSR_MAX + 1;
    unsigned char *big = calloc(1, n);
    big[0] = 0x30;
    X509_REQ *req = NULL;
    assert_fails_with(ca_csr_parse(big, n, &req), MID_E_TOO_LARGE, "over the limit");
    free(big);
}

static void t_csr_bad_signature(void **state)
{
    (void)state;
    static const char *specs[] = {"ec-p256", "rsa-2048"};
    for (size_t i = 0; i < 2; i++) {
        EVP_PKEY *k = cafx_key(specs[i]);
        size_t len = 0;
        unsigned char *der = cafx_csr(k, NULL, NULL, 1, &len);
        der[len - 1] ^= 0x01; /* the last byte lies in the signature BIT STRING */
        X509_REQ *req = NULL;
        assert_fails_with(ca_csr_parse(der, len, &req), MID_E_INVALID, "signature");
        free(der);
        EVP_PKEY_free(k);
    }
}

static void t_csr_unsupported_keys(void **state)
{
    (void)state;
    static const char *specs[] = {"ec-p521", "rsa-1024", "ed25519", "ec-p256-explicit"};
    for (size_t i = 0; i < 4; i++) {
        EVP_PKEY *k = cafx_key(specs[i]);
        size_t len = 0;
        unsigned char *der = cafx_csr(k, NULL, NULL, i % 2, &len);
        X509_REQ *req = NULL;
        assert_fails_with(ca_csr_intake(der, len, ID, &req), MID_E_INVALID, "unsupported key");
        free(der);
        EVP_PKEY_free(k);
    }
}

static void t_csr_uri_sans(void **state)
{
    (void)state;
    EVP_PKEY *k = cafx_key("ec-p256");
    X509_REQ *req = NULL;
    size_t len = 0;
    unsigned char *csr;

    const char *same[] = {ID, NULL};
    csr = cafx_csr(k, same, "web.example.org", 0, &len);
    assert_ok(ca_csr_intake(csr, len, ID, &req));
    X509_REQ_free(req);
    req = NULL;
    free(csr);

    csr = cafx_csr(k, NULL, "only-dns.example.org", 1, &len);
    assert_ok(ca_csr_intake(csr, len, ID, &req));
    X509_REQ_free(req);
    req = NULL;
    free(csr);

    const char *const foreign[][3] = {
        {"spiffe://example.org/admin", NULL, NULL},
        {"spiffe://evil.org/web", NULL, NULL},
        {ID, "spiffe://example.org/admin", NULL},
        {"https://example.org/web", NULL, NULL},
        {"spiffe://example.org/web/", NULL, NULL},
    };
    for (size_t i = 0; i < sizeof foreign / sizeof foreign[0]; i++) {
        csr = cafx_csr(k, foreign[i], NULL, (int)(i % 2), &len);
        assert_fails_with(ca_csr_intake(csr, len, ID, &req), MID_E_DENIED, "URI SAN");
        assert_null(req);
        free(csr);
    }
    EVP_PKEY_free(k);
}

int ca_test_csr(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_csr_accepts),          cmocka_unit_test(t_csr_pem_with_blank_around),
        cmocka_unit_test(t_csr_garbage),          cmocka_unit_test(t_csr_truncated_der),
        cmocka_unit_test(t_csr_trailing_data),    cmocka_unit_test(t_csr_wrong_pem_label),
        cmocka_unit_test(t_csr_oversized),        cmocka_unit_test(t_csr_bad_signature),
        cmocka_unit_test(t_csr_unsupported_keys), cmocka_unit_test(t_csr_uri_sans),
    };
    return cmocka_run_group_tests_name("ca/csr", tests, NULL, NULL);
}
