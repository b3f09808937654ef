/* ca/csr.c: CSR intake, and every way a CSR is refused. */
#include <openssl/asn1.h>
#include <openssl/x509v3.h>
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
    ca_csr *req = NULL;
    assert_ok(ca_csr_intake(csr, len, ID, &req));
    assert_int_equal(EVP_PKEY_eq(ca_csr_pubkey(req), k), 1);
    ca_csr_free(req);
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
    ca_csr *req = NULL;
    assert_ok(ca_csr_parse((unsigned char *)padded, len + 6, &req));
    ca_csr_free(req);
    free(padded);
    free(csr);
    EVP_PKEY_free(k);
}

static void t_csr_garbage(void **state)
{
    (void)state;
    ca_csr *req = NULL;
    static const char *junk[] = {"hello", "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n",
                                 "\x30\x82\xff\xff", "\x30\x00", "-----BEGIN ",
                                 "\x30\x80\x30\x80\x00\x00\x00\x00", "\x3f\x81\x01\x00"};
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
    ca_csr *req = NULL;
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
    ca_csr *req = NULL;
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
    ca_csr *req = NULL;
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
    ca_csr *req = NULL;
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
        ca_csr *req = NULL;
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
        ca_csr *req = NULL;
        assert_fails_with(ca_csr_intake(der, len, ID, &req), MID_E_INVALID, "unsupported key");
        free(der);
        EVP_PKEY_free(k);
    }
}

static void t_csr_uri_sans(void **state)
{
    (void)state;
    EVP_PKEY *k = cafx_key("ec-p256");
    ca_csr *req = NULL;
    size_t len = 0;
    unsigned char *csr;

    const char *same[] = {ID, NULL};
    csr = cafx_csr(k, same, "web.example.org", 0, &len);
    assert_ok(ca_csr_intake(csr, len, ID, &req));
    ca_csr_free(req);
    req = NULL;
    free(csr);

    csr = cafx_csr(k, NULL, "only-dns.example.org", 1, &len);
    assert_ok(ca_csr_intake(csr, len, ID, &req));
    ca_csr_free(req);
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

/* ---- hand-made requests: signed bytes we control -------------------------- */

static size_t put_len(unsigned char *o, size_t n)
{
    if (n < 0x80) {
        o[0] = (unsigned char)n;
        return 1;
    }
    if (n < 0x100) {
        o[0] = 0x81, o[1] = (unsigned char)n;
        return 2;
    }
    o[0] = 0x82, o[1] = (unsigned char)(n >> 8), o[2] = (unsigned char)n;
    return 3;
}

/* CertificationRequest { cri, alg, BIT STRING signature of cri by `k` with
 * digest `md` (NULL: none) }: DER, malloc()ed. `cri` and `alg` are whole
 * TLVs, used as given. */
static unsigned char *sign_request(EVP_PKEY *k, const char *md, const unsigned char *cri,
                                   size_t cri_len, const unsigned char *alg, size_t alg_len,
                                   size_t *out_len)
{
    unsigned char sig[1024];
    size_t sig_len = sizeof sig;
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestSignInit_ex(mctx, NULL, md, NULL, NULL, k, NULL), 1);
    assert_int_equal(EVP_DigestSign(mctx, sig, &sig_len, cri, cri_len), 1);
    EVP_MD_CTX_free(mctx);
    unsigned char bits_hdr[4];
    size_t bits_hdr_len = 1 + put_len(bits_hdr + 1, sig_len + 1);
    bits_hdr[0] = 0x03;
    size_t body = cri_len + alg_len + bits_hdr_len + 1 + sig_len;
    unsigned char *out = malloc(body + 4);
    size_t o = 0;
    out[o++] = 0x30;
    o += put_len(out + o, body);
    memcpy(out + o, cri, cri_len), o += cri_len;
    memcpy(out + o, alg, alg_len), o += alg_len;
    memcpy(out + o, bits_hdr, bits_hdr_len), o += bits_hdr_len;
    out[o++] = 0x00;
    memcpy(out + o, sig, sig_len), o += sig_len;
    *out_len = o;
    return out;
}

/* The certificationRequestInfo TLV inside a DER request (borrowed). */
static const unsigned char *cri_of(const unsigned char *der, size_t len, size_t *cri_len)
{
    const unsigned char *p = der;
    long l = 0;
    int tag = 0, cls = 0;
    assert_int_equal(ASN1_get_object(&p, &l, &tag, &cls, (long)len) & 0x80, 0);
    const unsigned char *start = p;
    assert_int_equal(ASN1_get_object(&p, &l, &tag, &cls, (long)(der + len - p)) & 0x80, 0);
    *cri_len = (size_t)(p - start) + (size_t)l;
    return start;
}

static const unsigned char ALG_ECDSA_SHA256[] = {0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48,
                                                 0xce, 0x3d, 0x04, 0x03, 0x02};
static const unsigned char ALG_ECDSA_SHA384[] = {0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48,
                                                 0xce, 0x3d, 0x04, 0x03, 0x03};
static const unsigned char ALG_ECDSA_SHA512[] = {0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48,
                                                 0xce, 0x3d, 0x04, 0x03, 0x04};
static const unsigned char ALG_RSA_SHA1[] = {0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
                                             0xf7, 0x0d, 0x01, 0x01, 0x05, 0x05, 0x00};
static const unsigned char ALG_RSA_SHA256[] = {0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
                                               0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00};
static const unsigned char ALG_RSA_SHA384[] = {0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
                                               0xf7, 0x0d, 0x01, 0x01, 0x0c, 0x05, 0x00};
static const unsigned char ALG_RSA_SHA512[] = {0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
                                               0xf7, 0x0d, 0x01, 0x01, 0x0d, 0x05, 0x00};

/* A fixture CSR for `k` re-signed with `md` under the identifier `alg`. */
static unsigned char *resigned(EVP_PKEY *k, const char *md, const unsigned char *alg,
                               size_t alg_len, size_t *len)
{
    size_t dlen = 0, cri_len = 0;
    unsigned char *der = cafx_csr(k, NULL, NULL, 1, &dlen);
    const unsigned char *cri = cri_of(der, dlen, &cri_len);
    unsigned char *out = sign_request(k, md, cri, cri_len, alg, alg_len, len);
    free(der);
    return out;
}

static void t_csr_signature_algorithms(void **state)
{
    (void)state;
    EVP_PKEY *ec = cafx_key("ec-p256"), *rsa = cafx_key("rsa-2048");
    static const struct { int rsa; const char *md; const unsigned char *alg; size_t alg_len; const char *refusal; } v[] = {
        {0, "SHA256", ALG_ECDSA_SHA256, sizeof ALG_ECDSA_SHA256, NULL},
        {0, "SHA384", ALG_ECDSA_SHA384, sizeof ALG_ECDSA_SHA384, NULL},
        {1, "SHA256", ALG_RSA_SHA256, sizeof ALG_RSA_SHA256, NULL},
        {1, "SHA384", ALG_RSA_SHA384, sizeof ALG_RSA_SHA384, NULL},
        {1, "SHA512", ALG_RSA_SHA512, sizeof ALG_RSA_SHA512, NULL},
        {0, "SHA512", ALG_ECDSA_SHA512, sizeof ALG_ECDSA_SHA512,
         "signature algorithm ecdsa-with-SHA512 is not accepted"},
        {1, "SHA1", ALG_RSA_SHA1, sizeof ALG_RSA_SHA1,
         "signature algorithm sha1WithRSAEncryption is not accepted"},
        /* an ECDSA signature labelled as RSA */
        {0, "SHA256", ALG_RSA_SHA256, sizeof ALG_RSA_SHA256, "does not suit its EC key"},
        /* the right label with the wrong digest */
        {0, "SHA384", ALG_ECDSA_SHA256, sizeof ALG_ECDSA_SHA256, "signature does not verify"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        size_t len = 0;
        unsigned char *der = resigned(v[i].rsa ? rsa : ec, v[i].md, v[i].alg, v[i].alg_len, &len);
        ca_csr *req = NULL;
        if (v[i].refusal == NULL) {
            assert_ok(ca_csr_intake(der, len, ID, &req));
            assert_int_equal(EVP_PKEY_eq(ca_csr_pubkey(req), v[i].rsa ? rsa : ec), 1);
            ca_csr_free(req);
        } else {
            assert_fails_with(ca_csr_intake(der, len, ID, &req), MID_E_INVALID, v[i].refusal);
            assert_null(req);
        }
        free(der);
    }
    EVP_PKEY_free(ec);
    EVP_PKEY_free(rsa);
}

/* Validly signed requests whose signed part is changed: another version, no
 * attributes at all (accepted, as by OpenSSL), BER lengths. */
static void t_csr_signed_variants(void **state)
{
    (void)state;
    EVP_PKEY *k = cafx_key("ec-p256");
    size_t dlen = 0, cri_len = 0, len = 0;
    unsigned char *der = cafx_csr(k, NULL, NULL, 1, &dlen);
    const unsigned char *cri = cri_of(der, dlen, &cri_len);
    unsigned char *m = malloc(cri_len + 4);
    ca_csr *req = NULL;
    unsigned char *out;

    /* the contents of the certificationRequestInfo SEQUENCE */
    size_t hdr = cri[1] < 0x80 ? 2 : 2 + (size_t)(cri[1] & 0x7f);
    const unsigned char *body = cri + hdr;
    size_t body_len = cri_len - hdr;

    /* version 1 (v2): 02 01 01 */
    assert_true(body[0] == 0x02 && body[1] == 0x01 && body[2] == 0x00);
    m[0] = 0x30;
    size_t h = 1 + put_len(m + 1, body_len);
    memcpy(m + h, body, body_len);
    m[h + 2] = 0x01;
    out = sign_request(k, "SHA256", m, h + body_len, ALG_ECDSA_SHA256, sizeof ALG_ECDSA_SHA256,
                       &len);
    assert_fails_with(ca_csr_parse(out, len, &req), MID_E_INVALID, "version 1 is not PKCS#10 v1");
    free(out);

    /* attributes omitted: the fixture ends with an empty [0] (a0 00) */
    assert_true(body[body_len - 2] == 0xa0 && body[body_len - 1] == 0x00);
    h = 1 + put_len(m + 1, body_len - 2);
    memcpy(m + h, body, body_len - 2);
    out = sign_request(k, "SHA256", m, h + body_len - 2, ALG_ECDSA_SHA256,
                       sizeof ALG_ECDSA_SHA256, &len);
    assert_ok(ca_csr_intake(out, len, ID, &req));
    ca_csr_free(req);
    req = NULL;
    free(out);

    /* a long-form length where the short form fits (BER, not DER) */
    free(m);
    m = malloc(cri_len + 4);
    m[0] = 0x30;
    if (body_len < 0x80) {
        m[1] = 0x81, m[2] = (unsigned char)body_len, h = 3;
    } else {
        m[1] = 0x82, m[2] = 0x00, m[3] = (unsigned char)body_len, h = 4;
    }
    memcpy(m + h, body, body_len);
    out = sign_request(k, "SHA256", m, h + body_len, ALG_ECDSA_SHA256, sizeof ALG_ECDSA_SHA256,
                       &len);
    assert_fails_with(ca_csr_parse(out, len, &req), MID_E_INVALID, "non-minimal length");
    free(out);
    assert_null(req);
    free(m);
    free(der);
    EVP_PKEY_free(k);
}

/* A CSR whose extension request attribute(s) are given as DER Extensions:
 * `pkcs9` under extensionRequest, `ms` under Microsoft's msExtReq (either
 * may be NULL). */
static unsigned char *csr_with_ext_reqs(EVP_PKEY *k, const char *pkcs9_uri, const char *ms_uri,
                                        size_t *len)
{
    X509_REQ *req = X509_REQ_new();
    X509_NAME *name = X509_NAME_new();
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"w", -1, -1, 0);
    assert_int_equal(X509_REQ_set_subject_name(req, name), 1);
    assert_int_equal(X509_REQ_set_pubkey(req, k), 1);
    const char *uris[2] = {pkcs9_uri, ms_uri};
    const int nids[2] = {NID_ext_req, NID_ms_ext_req};
    for (int i = 0; i < 2; i++) {
        if (uris[i] == NULL) continue;
        GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
        GENERAL_NAME *g = GENERAL_NAME_new();
        ASN1_IA5STRING *s = ASN1_IA5STRING_new();
        ASN1_STRING_set(s, uris[i], -1);
        GENERAL_NAME_set0_value(g, GEN_URI, s);
        sk_GENERAL_NAME_push(gens, g);
        STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
        sk_X509_EXTENSION_push(exts, X509V3_EXT_i2d(NID_subject_alt_name, 0, gens));
        unsigned char *ed = NULL;
        int el = i2d_X509_EXTENSIONS(exts, &ed);
        assert_true(el > 0);
        assert_int_equal(X509_REQ_add1_attr_by_NID(req, nids[i], V_ASN1_SEQUENCE, ed, el), 1);
        OPENSSL_free(ed);
        sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
        GENERAL_NAMES_free(gens);
    }
    assert_true(X509_REQ_sign(req, k, EVP_sha256()) > 0);
    unsigned char *der = NULL;
    int n = i2d_X509_REQ(req, &der);
    assert_true(n > 0);
    unsigned char *out = malloc((size_t)n);
    memcpy(out, der, (size_t)n);
    *len = (size_t)n;
    OPENSSL_free(der);
    X509_NAME_free(name);
    X509_REQ_free(req);
    return out;
}

static void t_csr_every_extension_request(void **state)
{
    (void)state;
    EVP_PKEY *k = cafx_key("ec-p256");
    static const struct { const char *pkcs9, *ms; int ok; } v[] = {
        {ID, NULL, 1},
        {NULL, ID, 1},
        {ID, ID, 1},
        {NULL, "spiffe://example.org/admin", 0},
        {ID, "spiffe://example.org/admin", 0},
        {"spiffe://example.org/admin", ID, 0},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        size_t len = 0;
        unsigned char *der = csr_with_ext_reqs(k, v[i].pkcs9, v[i].ms, &len);
        ca_csr *req = NULL;
        if (v[i].ok) {
            assert_ok(ca_csr_intake(der, len, ID, &req));
            ca_csr_free(req);
        } else {
            assert_fails_with(ca_csr_intake(der, len, ID, &req), MID_E_DENIED, "URI SAN");
            assert_null(req);
        }
        /* without an identity to check, every one parses */
        assert_ok(ca_csr_intake(der, len, NULL, &req));
        ca_csr_free(req);
        free(der);
    }
    EVP_PKEY_free(k);
}

/* The request's SubjectPublicKeyInfo is kept byte for byte: what goes into
 * the certificate and the fingerprint. */
static void t_csr_spki_kept(void **state)
{
    (void)state;
    static const char *specs[] = {"ec-p256", "ec-p384", "rsa-2048"};
    for (size_t i = 0; i < 3; i++) {
        EVP_PKEY *k = cafx_key(specs[i]);
        size_t len = 0;
        unsigned char *csr = cafx_csr(k, NULL, NULL, (int)(i % 2), &len);
        ca_csr *req = NULL;
        assert_ok(ca_csr_intake(csr, len, ID, &req));
        unsigned char *want = NULL;
        int n = i2d_PUBKEY(k, &want);
        const ca_spki *spki = ca_csr_spki(req);
        assert_int_equal(spki->der_len, (size_t)n);
        assert_memory_equal(spki->der, want, (size_t)n);
        char f_old[CA_FP_HEX_LEN + 1], f_new[CA_FP_HEX_LEN + 1];
        assert_ok(ca_key_fingerprint(k, f_old));
        assert_ok(ca_key_fingerprint_spki(spki->der, spki->der_len, f_new));
        assert_string_equal(f_old, f_new);
        OPENSSL_free(want);
        ca_csr_free(req);
        free(csr);
        EVP_PKEY_free(k);
    }
}

int ca_test_csr(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_csr_accepts),          cmocka_unit_test(t_csr_pem_with_blank_around),
        cmocka_unit_test(t_csr_garbage),          cmocka_unit_test(t_csr_truncated_der),
        cmocka_unit_test(t_csr_trailing_data),    cmocka_unit_test(t_csr_wrong_pem_label),
        cmocka_unit_test(t_csr_oversized),        cmocka_unit_test(t_csr_bad_signature),
        cmocka_unit_test(t_csr_unsupported_keys), cmocka_unit_test(t_csr_uri_sans),
        cmocka_unit_test(t_csr_signature_algorithms), cmocka_unit_test(t_csr_signed_variants),
        cmocka_unit_test(t_csr_every_extension_request), cmocka_unit_test(t_csr_spki_kept),
    };
    return cmocka_run_group_tests_name("ca/csr", tests, NULL, NULL);
}
