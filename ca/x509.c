#include "ca/x509.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509v3.h>
#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "ca/codec.h"
#include "ca/der.h"

#define CN_MAX 64 /* ub-common-name, RFC 5280 */

MID_RESULT ca_x509_new_serial(ASN1_INTEGER **out, char hex[CA_SERIAL_HEX_LEN + 1])
{
    unsigned char b[CA_SERIAL_LEN];
    do {
        MID_GUARD_OSSL(RAND_bytes(b, sizeof b), MID_E_CRYPTO, "RAND_bytes failed");
        b[0] &= 0x7f;
    } while (b[0] == 0);
    BIGNUM *bn = BN_bin2bn(b, sizeof b, NULL);
    MID_ENSURE(bn != NULL, MID_E_NOMEM, "out of memory");
    ASN1_INTEGER *i = BN_to_ASN1_INTEGER(bn, NULL);
    BN_free(bn);
    MID_ENSURE(i != NULL, MID_E_NOMEM, "out of memory");
    ca_hex_encode(b, sizeof b, hex);
    *out = i;
    return mid_ok();
}

/* RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING value. */
static mid_result key_id_of_pubkey(X509_PUBKEY *xpk, ASN1_OCTET_STRING **out)
{
    const unsigned char *pk = NULL;
    int pklen = 0;
    MID_GUARD_OSSL(X509_PUBKEY_get0_param(NULL, &pk, &pklen, NULL, xpk), MID_E_CRYPTO,
                   "cannot read the public key");
    unsigned char md[20];
    unsigned int mdlen = 0;
    MID_GUARD_OSSL(EVP_Digest(pk, (size_t)pklen, md, &mdlen, EVP_sha1(), NULL), MID_E_CRYPTO,
                   "SHA-1 failed");
    ASN1_OCTET_STRING *s = ASN1_OCTET_STRING_new();
    MID_ENSURE(s != NULL, MID_E_NOMEM, "out of memory");
    if (ASN1_OCTET_STRING_set(s, md, (int)mdlen) != 1) {
        ASN1_OCTET_STRING_free(s);
        MID_BAIL(MID_E_NOMEM, "out of memory");
    }
    *out = s;
    return mid_ok();
}

MID_RESULT ca_x509_key_id(X509 *x, ASN1_OCTET_STRING **out)
{
    const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(x);
    if (ski != NULL && ASN1_STRING_length(ski) > 0 && ASN1_STRING_length(ski) <= CA_KEY_ID_MAX) {
        *out = ASN1_OCTET_STRING_dup(ski);
        MID_ENSURE(*out != NULL, MID_E_NOMEM, "out of memory");
        return mid_ok();
    }
    return key_id_of_pubkey(X509_get_X509_PUBKEY(x), out);
}

MID_RESULT ca_x509_key_id_hex(X509 *x, char out[CA_KEY_ID_HEX_MAX])
{
    ASN1_OCTET_STRING *kid = NULL;
    MID_GUARD(ca_x509_key_id(x, &kid));
    ca_hex_encode(ASN1_STRING_get0_data(kid), (size_t)ASN1_STRING_length(kid), out);
    ASN1_OCTET_STRING_free(kid);
    return mid_ok();
}

MID_RESULT ca_x509_serial_hex(const X509 *x, char *out, size_t cap)
{
    const ASN1_INTEGER *sn = X509_get0_serialNumber(x);
    int n = ASN1_STRING_length(sn);
    MID_ENSURE(ASN1_STRING_type(sn) == V_ASN1_INTEGER && n > 0 && (size_t)n * 2 < cap,
               MID_E_INVALID, "unusable certificate serial number");
    ca_hex_encode(ASN1_STRING_get0_data(sn), (size_t)n, out);
    return mid_ok();
}

static int64_t tm_to_unix(const ASN1_TIME *t, int *ok)
{
    struct tm tm;
    *ok = ASN1_TIME_to_tm(t, &tm) == 1;
    return *ok ? (int64_t)timegm(&tm) : 0;
}

MID_RESULT ca_x509_validity(const X509 *x, int64_t *not_before, int64_t *not_after)
{
    int ok1 = 0, ok2 = 0;
    int64_t nb = tm_to_unix(X509_get0_notBefore(x), &ok1);
    int64_t na = tm_to_unix(X509_get0_notAfter(x), &ok2);
    MID_ENSURE(ok1 && ok2, MID_E_INVALID, "certificate has an unreadable validity period");
    if (not_before) *not_before = nb;
    if (not_after) *not_after = na;
    return mid_ok();
}

/* ---- building ---------------------------------------------------------------- */

static mid_result set_validity(X509 *x, int64_t nb, int64_t na)
{
    MID_ENSURE(nb < na, MID_E_INVALID, "empty validity period");
    MID_ENSURE(ASN1_TIME_set(X509_getm_notBefore(x), (time_t)nb) != NULL, MID_E_CRYPTO,
               "cannot set notBefore");
    MID_ENSURE(ASN1_TIME_set(X509_getm_notAfter(x), (time_t)na) != NULL, MID_E_CRYPTO,
               "cannot set notAfter");
    return mid_ok();
}

static mid_result add_ext(X509 *x, int nid, void *value, int crit, const char *what)
{
    if (X509_add1_ext_i2d(x, nid, value, crit, X509V3_ADD_DEFAULT) != 1)
        return mid_fail_ossl(MID_E_CRYPTO, __FILE__, __LINE__, "cannot add %s", what);
    return mid_ok();
}

static int push_ia5_name(GENERAL_NAMES *gens, int type, const char *v)
{
    ASN1_IA5STRING *s = ASN1_IA5STRING_new();
    GENERAL_NAME *g = GENERAL_NAME_new();
    if (s == NULL || g == NULL || ASN1_STRING_set(s, v, (int)strlen(v)) != 1) {
        ASN1_IA5STRING_free(s);
        GENERAL_NAME_free(g);
        return 0;
    }
    GENERAL_NAME_set0_value(g, type, s);
    if (sk_GENERAL_NAME_push(gens, g) <= 0) {
        GENERAL_NAME_free(g);
        return 0;
    }
    return 1;
}

static mid_result add_san(X509 *x, const char *uri, const char *const *dns, size_t n_dns)
{
    mid_result r = MID_OK_RESULT;
    GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
    MID_CHECK_MEM(r, gens);
    MID_CHECK(r, push_ia5_name(gens, GEN_URI, uri), MID_E_NOMEM, "out of memory");
    for (size_t i = 0; i < n_dns; i++)
        MID_CHECK(r, push_ia5_name(gens, GEN_DNS, dns[i]), MID_E_NOMEM, "out of memory");
    /* Non-critical: every certificate we build has a non-empty subject. */
    MID_TRY(r, add_ext(x, NID_subject_alt_name, gens, 0, "subjectAltName"));
out:
    GENERAL_NAMES_free(gens);
    return r;
}

static mid_result add_basic_constraints(X509 *x, int is_ca, int pathlen)
{
    mid_result r = MID_OK_RESULT;
    BASIC_CONSTRAINTS *bc = BASIC_CONSTRAINTS_new();
    MID_CHECK_MEM(r, bc);
    bc->ca = is_ca ? 0xff : 0;
    if (is_ca && pathlen >= 0) {
        bc->pathlen = ASN1_INTEGER_new();
        MID_CHECK_MEM(r, bc->pathlen);
        MID_CHECK(r, ASN1_INTEGER_set(bc->pathlen, pathlen) == 1, MID_E_NOMEM, "out of memory");
    }
    MID_TRY(r, add_ext(x, NID_basic_constraints, bc, 1, "basicConstraints"));
out:
    BASIC_CONSTRAINTS_free(bc);
    return r;
}

/* Bit numbers of KeyUsage (RFC 5280 4.2.1.3). */
enum { KU_BIT_DIGITAL_SIGNATURE = 0, KU_BIT_KEY_ENCIPHERMENT = 2, KU_BIT_KEY_CERT_SIGN = 5,
       KU_BIT_CRL_SIGN = 6 };

static mid_result add_key_usage(X509 *x, const int *bits, size_t n)
{
    mid_result r = MID_OK_RESULT;
    ASN1_BIT_STRING *ku = ASN1_BIT_STRING_new();
    MID_CHECK_MEM(r, ku);
    for (size_t i = 0; i < n; i++)
        MID_CHECK(r, ASN1_BIT_STRING_set_bit(ku, bits[i], 1) == 1, MID_E_NOMEM, "out of memory");
    MID_TRY(r, add_ext(x, NID_key_usage, ku, 1, "keyUsage"));
out:
    ASN1_BIT_STRING_free(ku);
    return r;
}

static mid_result add_ski(X509 *x)
{
    ASN1_OCTET_STRING *kid = NULL;
    MID_GUARD(key_id_of_pubkey(X509_get_X509_PUBKEY(x), &kid));
    mid_result r = add_ext(x, NID_subject_key_identifier, kid, 0, "subjectKeyIdentifier");
    ASN1_OCTET_STRING_free(kid);
    return r;
}

static mid_result add_aki(X509 *x, const ASN1_OCTET_STRING *issuer_kid)
{
    mid_result r = MID_OK_RESULT;
    AUTHORITY_KEYID *akid = AUTHORITY_KEYID_new();
    MID_CHECK_MEM(r, akid);
    akid->keyid = ASN1_OCTET_STRING_dup(issuer_kid);
    MID_CHECK_MEM(r, akid->keyid);
    MID_TRY(r, add_ext(x, NID_authority_key_identifier, akid, 0, "authorityKeyIdentifier"));
out:
    AUTHORITY_KEYID_free(akid);
    return r;
}

/* A fresh EVP_MD_CTX per call: the only shared object is the key, which
 * OpenSSL signs with without modifying. */
static mid_result sign_sha256(X509 *x, EVP_PKEY *key)
{
    mid_result r = MID_OK_RESULT;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    MID_CHECK_MEM(r, md);
    MID_CHECK_OSSL(r, EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key), MID_E_CRYPTO,
                   "cannot start signing");
    MID_CHECK_OSSL(r, X509_sign_ctx(x, md) > 0 ? 1 : 0, MID_E_CRYPTO,
                   "signing the certificate failed");
out:
    EVP_MD_CTX_free(md);
    return r;
}

static mid_result new_cert(X509 **out, char serial_hex[CA_SERIAL_HEX_LEN + 1])
{
    ASN1_INTEGER *serial = NULL;
    MID_GUARD(ca_x509_new_serial(&serial, serial_hex));
    X509 *x = X509_new();
    int ok = x != NULL && X509_set_version(x, X509_VERSION_3) == 1 &&
             X509_set_serialNumber(x, serial) == 1;
    ASN1_INTEGER_free(serial);
    if (!ok) {
        X509_free(x);
        MID_BAIL(MID_E_NOMEM, "out of memory");
    }
    *out = x;
    return mid_ok();
}

/* O=meshid, and CN=<role> <td> when role is non-NULL (the trust domain is
 * shortened to fit the 64-character CN limit; the URI SAN carries it whole). */
static mid_result make_name(const char *role, const char *td, X509_NAME **out)
{
    X509_NAME *n = X509_NAME_new();
    MID_ENSURE(n != NULL, MID_E_NOMEM, "out of memory");
    int ok = X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC, (const unsigned char *)"meshid", -1,
                                        -1, 0) == 1;
    if (ok && role != NULL) {
        char cn[CN_MAX + 1];
        snprintf(cn, sizeof cn, "%s %s", role, td);
        ok = X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1,
                                        0) == 1;
    }
    if (!ok) {
        X509_NAME_free(n);
        return mid_fail_ossl(MID_E_CRYPTO, __FILE__, __LINE__, "cannot build a subject name");
    }
    *out = n;
    return mid_ok();
}

enum { AUTH_INTERMEDIATE = 0, AUTH_ROOT = 1, AUTH_CROSS = 2 };

static mid_result build_authority(const ca_x509_authority_params *p, int kind, X509 **out)
{
    int is_root = kind == AUTH_ROOT;              /* self-signed */
    int root_subject = kind != AUTH_INTERMEDIATE; /* a root's subject, no pathlen */
    mid_result r = MID_OK_RESULT;
    X509 *x = NULL;
    X509_NAME *name = NULL;
    ASN1_OCTET_STRING *issuer_kid = NULL;
    char serial_hex[CA_SERIAL_HEX_LEN + 1];
    char uri[sizeof "spiffe://" + SPIFFE_TD_MAX];
    int64_t nb = p->not_before, na = p->not_after;

    MID_CHECK(r, p->trust_domain != NULL && p->key != NULL, MID_E_INTERNAL, "missing parameters");
    MID_CHECK(r, is_root || (p->issuer != NULL && p->issuer_key != NULL), MID_E_INTERNAL,
              "intermediate or cross-certificate without an issuer");
    MID_TRY(r, new_cert(&x, serial_hex));
    MID_TRY(r, make_name(root_subject ? "meshid root" : "meshid intermediate", p->trust_domain,
                         &name));
    MID_CHECK_OSSL(r, X509_set_subject_name(x, name), MID_E_CRYPTO, "cannot set subject");
    MID_CHECK_OSSL(r, X509_set_issuer_name(x, is_root ? name : X509_get_subject_name(p->issuer)),
                   MID_E_CRYPTO, "cannot set issuer");
    if (!is_root) {
        /* A certificate never outlives its issuer. */
        int64_t inb = 0, ina = 0;
        MID_TRY(r, ca_x509_validity(p->issuer, &inb, &ina));
        if (na > ina) na = ina;
        if (nb < inb) nb = inb;
    }
    MID_TRY(r, set_validity(x, nb, na));
    MID_CHECK_OSSL(r, X509_set_pubkey(x, p->key), MID_E_CRYPTO, "cannot set the public key");
    MID_TRY(r, add_basic_constraints(x, 1, root_subject ? -1 : 0));
    static const int ca_bits[] = {KU_BIT_KEY_CERT_SIGN, KU_BIT_CRL_SIGN};
    MID_TRY(r, add_key_usage(x, ca_bits, 2));
    MID_TRY(r, add_ski(x));
    if (!is_root) {
        MID_TRY(r, ca_x509_key_id(p->issuer, &issuer_kid));
        MID_TRY(r, add_aki(x, issuer_kid));
    }
    snprintf(uri, sizeof uri, "spiffe://%s", p->trust_domain);
    MID_TRY(r, add_san(x, uri, NULL, 0));
    MID_TRY(r, sign_sha256(x, is_root ? p->key : p->issuer_key));
    *out = x;
    x = NULL;
out:
    X509_free(x);
    X509_NAME_free(name);
    ASN1_OCTET_STRING_free(issuer_kid);
    return r;
}

MID_RESULT ca_x509_build_root(const ca_x509_authority_params *p, X509 **out)
{
    return build_authority(p, AUTH_ROOT, out);
}

MID_RESULT ca_x509_build_cross(const ca_x509_authority_params *p, X509 **out)
{
    return build_authority(p, AUTH_CROSS, out);
}

MID_RESULT ca_x509_build_intermediate(const ca_x509_authority_params *p, X509 **out)
{
    return build_authority(p, AUTH_INTERMEDIATE, out);
}

/* ---- X.509-SVIDs, encoded directly ------------------------------------------------
 *
 * An SVID is a fixed template (docs/ca.md, "X.509-SVID profile") with a few
 * variable fields, so it is written as DER with ca/der.h's writer and signed
 * over the TBSCertificate bytes: no X509 object is built, encoded and freed
 * for every certificate. The bytes are those OpenSSL wrote when it built
 * the same certificate field by field (tests/unit/ca/test_x509_der.c
 * compares them). */

/* Name: O=meshid (UTF8String, OpenSSL's default for MBSTRING_ASC). */
static const unsigned char SUBJECT_O_MESHID[] = {0x30, 0x11, 0x31, 0x0f, 0x30, 0x0d, 0x06, 0x03,
                                                 0x55, 0x04, 0x0a, 0x0c, 0x06, 'm',  'e',  's',
                                                 'h',  'i',  'd'};
static const unsigned char VERSION_V3[] = {0xa0, 0x03, 0x02, 0x01, 0x02};
/* basicConstraints, critical, CA:FALSE (the DEFAULT, so an empty SEQUENCE). */
static const unsigned char EXT_BC_LEAF[] = {0x30, 0x0c, 0x06, 0x03, 0x55, 0x1d, 0x13, 0x01,
                                            0x01, 0xff, 0x04, 0x02, 0x30, 0x00};
/* keyUsage, critical: digitalSignature; digitalSignature + keyEncipherment. */
static const unsigned char EXT_KU_EC[] = {0x30, 0x0e, 0x06, 0x03, 0x55, 0x1d, 0x0f, 0x01,
                                          0x01, 0xff, 0x04, 0x04, 0x03, 0x02, 0x07, 0x80};
static const unsigned char EXT_KU_RSA[] = {0x30, 0x0e, 0x06, 0x03, 0x55, 0x1d, 0x0f, 0x01,
                                           0x01, 0xff, 0x04, 0x04, 0x03, 0x02, 0x05, 0xa0};
/* extendedKeyUsage: serverAuth, clientAuth. */
static const unsigned char EXT_EKU[] = {0x30, 0x1d, 0x06, 0x03, 0x55, 0x1d, 0x25, 0x04,
                                        0x16, 0x30, 0x14, 0x06, 0x08, 0x2b, 0x06, 0x01,
                                        0x05, 0x05, 0x07, 0x03, 0x01, 0x06, 0x08, 0x2b,
                                        0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02};
static const unsigned char OID_SKI[] = {0x06, 0x03, 0x55, 0x1d, 0x0e};
static const unsigned char OID_AKI[] = {0x06, 0x03, 0x55, 0x1d, 0x23};
static const unsigned char OID_SAN[] = {0x06, 0x03, 0x55, 0x1d, 0x11};
/* AlgorithmIdentifiers: ecdsa-with-SHA256 (no parameters, RFC 5758) and
 * sha256WithRSAEncryption (NULL parameters, RFC 4055). */
static const unsigned char ALG_ECDSA_SHA256[] = {0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48,
                                                 0xce, 0x3d, 0x04, 0x03, 0x02};
static const unsigned char ALG_RSA_SHA256[] = {0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
                                               0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00};

enum { TAG_UTCTIME = 0x17, TAG_GENTIME = 0x18, TAG_CTX3 = 0xa3, TAG_GN_DNS = 0x82,
       TAG_GN_URI = 0x86, TAG_KEYID = 0x80 };

/* Signing contexts of one issuer key, initialized for SHA-256 signatures
 * and kept for the next certificate: EVP_PKEY_sign may be called any number
 * of times after one EVP_PKEY_sign_init, and setting a context up (provider
 * method fetches under OpenSSL's global locks, a new provider key context)
 * cost ~3 us alone and ~5-7 us per certificate with 32 signing threads,
 * about a third of an ECDSA P-256 signature. */
#define SIGN_POOL_MAX 64

struct ca_sign_pool {
    pthread_mutex_t mu;
    size_t n;
    EVP_PKEY_CTX *free[SIGN_POOL_MAX];
};

static void sign_pool_free(ca_sign_pool *p)
{
    if (p == NULL) return;
    for (size_t i = 0; i < p->n; i++) EVP_PKEY_CTX_free(p->free[i]);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

/* A context ready to sign with is->key, from the pool or new. */
static mid_result sign_ctx_take(const ca_x509_issuer *is, EVP_PKEY_CTX **out)
{
    mid_result r = MID_OK_RESULT;
    ca_sign_pool *p = is->pool;
    EVP_PKEY_CTX *ctx = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->n > 0) ctx = p->free[--p->n];
    pthread_mutex_unlock(&p->mu);
    if (ctx != NULL) {
        *out = ctx;
        return r;
    }
    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, is->key, NULL);
    MID_CHECK_OSSL(r, ctx != NULL ? 1 : 0, MID_E_CRYPTO, "cannot start signing");
    MID_CHECK_OSSL(r, EVP_PKEY_sign_init(ctx), MID_E_CRYPTO, "cannot start signing");
    if (EVP_PKEY_get_base_id(is->key) == EVP_PKEY_RSA)
        MID_CHECK_OSSL(r, EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING), MID_E_CRYPTO,
                       "cannot select PKCS #1 v1.5 signatures");
    /* with the digest named, RSA signs its DigestInfo, ECDSA checks the size */
    MID_CHECK_OSSL(r, EVP_PKEY_CTX_set_signature_md(ctx, is->sha256), MID_E_CRYPTO,
                   "cannot select SHA-256 signatures");
    *out = ctx;
    ctx = NULL;
out:
    EVP_PKEY_CTX_free(ctx);
    return r;
}

/* Back to the pool (a full pool frees it). */
static void sign_ctx_give(const ca_x509_issuer *is, EVP_PKEY_CTX *ctx)
{
    ca_sign_pool *p = is->pool;
    pthread_mutex_lock(&p->mu);
    if (p->n < SIGN_POOL_MAX) {
        p->free[p->n++] = ctx;
        ctx = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    EVP_PKEY_CTX_free(ctx);
}

void ca_x509_issuer_clear(ca_x509_issuer *is)
{
    if (is == NULL) return;
    sign_pool_free(is->pool);
    OPENSSL_free(is->name_der);
    free(is->aki_der);
    EVP_MD_free(is->sha256);
    memset(is, 0, sizeof *is);
}

MID_RESULT ca_x509_issuer_init(ca_x509_issuer *is, X509 *cert, EVP_PKEY *key)
{
    mid_result r = MID_OK_RESULT;
    ASN1_OCTET_STRING *kid = NULL;
    memset(is, 0, sizeof *is);
    switch (EVP_PKEY_get_base_id(key)) {
    case EVP_PKEY_EC:
        is->sig_alg = ALG_ECDSA_SHA256;
        is->sig_alg_len = sizeof ALG_ECDSA_SHA256;
        break;
    case EVP_PKEY_RSA:
        is->sig_alg = ALG_RSA_SHA256;
        is->sig_alg_len = sizeof ALG_RSA_SHA256;
        break;
    default:
        MID_CHECK(r, 0, MID_E_INVALID,
                  "the signing key must be EC or RSA to issue X.509-SVIDs (it is %s)",
                  EVP_PKEY_get0_type_name(key) != NULL ? EVP_PKEY_get0_type_name(key) : "?");
    }
    int n = i2d_X509_NAME(X509_get_subject_name(cert), &is->name_der);
    MID_CHECK_OSSL(r, n > 0 ? 1 : 0, MID_E_CRYPTO, "cannot encode the issuer name");
    is->name_len = (size_t)n;

    /* authorityKeyIdentifier: SEQUENCE { [0] keyIdentifier } of the
     * issuer's key id. */
    MID_TRY(r, ca_x509_key_id(cert, &kid));
    size_t klen = (size_t)ASN1_STRING_length(kid);
    is->aki_der = malloc(klen + 32);
    MID_CHECK_MEM(r, is->aki_der);
    der_writer w;
    der_w_init(&w, is->aki_der, klen + 32);
    der_w_open(&w, DER_SEQUENCE);
    der_w_raw(&w, OID_AKI, sizeof OID_AKI);
    der_w_open(&w, DER_OCTET_STRING);
    der_w_open(&w, DER_SEQUENCE);
    der_w_prim(&w, TAG_KEYID, ASN1_STRING_get0_data(kid), klen);
    der_w_close(&w);
    der_w_close(&w);
    der_w_close(&w);
    MID_CHECK(r, der_w_finish(&w), MID_E_INTERNAL, "cannot encode the authority key id");
    is->aki_len = w.len;

    /* Fetched once: hashing with a fetched digest skips the by-name
     * lookup EVP_sha256() costs on every call. */
    is->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    MID_CHECK_OSSL(r, is->sha256 != NULL ? 1 : 0, MID_E_CRYPTO, "SHA-256 is not available");
    is->key = key;
    is->pool = calloc(1, sizeof *is->pool);
    MID_CHECK_MEM(r, is->pool);
    if (pthread_mutex_init(&is->pool->mu, NULL) != 0) {
        free(is->pool);
        is->pool = NULL;
        MID_CHECK(r, 0, MID_E_NOMEM, "cannot create a mutex");
    }
out:
    ASN1_OCTET_STRING_free(kid);
    if (!mid_is_ok(r)) ca_x509_issuer_clear(is);
    return r;
}

/* UTCTime for 1950..2049, GeneralizedTime otherwise, as ASN1_TIME_set
 * chooses (RFC 5280 4.1.2.5). */
static mid_result put_time(der_writer *w, int64_t t)
{
    struct tm tm;
    time_t tt = (time_t)t;
    MID_ENSURE((int64_t)tt == t && gmtime_r(&tt, &tm) != NULL, MID_E_INVALID,
               "time %lld cannot be encoded", (long long)t);
    long year = (long)tm.tm_year + 1900;
    MID_ENSURE(year >= 0 && year <= 9999, MID_E_INVALID, "time %lld cannot be encoded",
               (long long)t);
    char s[20];
    int n;
    if (year >= 1950 && year < 2050)
        n = snprintf(s, sizeof s, "%02ld%02d%02d%02d%02d%02dZ", year % 100, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    else
        n = snprintf(s, sizeof s, "%04ld%02d%02d%02d%02d%02dZ", year, tm.tm_mon + 1, tm.tm_mday,
                     tm.tm_hour, tm.tm_min, tm.tm_sec);
    MID_ENSURE(n == 13 || n == 15, MID_E_INTERNAL, "time encoding");
    der_w_prim(w, n == 13 ? TAG_UTCTIME : TAG_GENTIME, s, (size_t)n);
    return mid_ok();
}

/* subjectKeyIdentifier: RFC 5280 4.2.1.2 method 1, as key_id_of_pubkey. */
static mid_result put_ski(der_writer *w, const ca_spki *k, const EVP_MD *sha1)
{
    unsigned char md[20];
    unsigned int mdlen = 0;
    MID_GUARD_OSSL(EVP_Digest(k->pub, k->pub_len, md, &mdlen, sha1, NULL), MID_E_CRYPTO,
                   "SHA-1 failed");
    der_w_open(w, DER_SEQUENCE);
    der_w_raw(w, OID_SKI, sizeof OID_SKI);
    der_w_open(w, DER_OCTET_STRING);
    der_w_prim(w, DER_OCTET_STRING, md, mdlen);
    der_w_close(w);
    der_w_close(w);
    return mid_ok();
}

static void put_san(der_writer *w, const char *uri, const char *const *dns, size_t n_dns)
{
    der_w_open(w, DER_SEQUENCE);
    der_w_raw(w, OID_SAN, sizeof OID_SAN);
    der_w_open(w, DER_OCTET_STRING);
    der_w_open(w, DER_SEQUENCE);
    der_w_prim(w, TAG_GN_URI, uri, strlen(uri));
    for (size_t i = 0; i < n_dns; i++) der_w_prim(w, TAG_GN_DNS, dns[i], strlen(dns[i]));
    der_w_close(w);
    der_w_close(w);
    der_w_close(w);
}

/* SHA-1 for key identifiers, fetched once per process (immutable after
 * pthread_once, like the curve templates of ca/keys.c). */
static EVP_MD *sha1_md;
static pthread_once_t sha1_once = PTHREAD_ONCE_INIT;
static void sha1_init(void) { sha1_md = EVP_MD_fetch(NULL, "SHA1", NULL); }

static mid_result sign_tbs(const ca_x509_issuer *is, const unsigned char *tbs, size_t tbs_len,
                           unsigned char *sig, size_t *sig_len)
{
    mid_result r = MID_OK_RESULT;
    EVP_PKEY_CTX *ctx = NULL;
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    MID_CHECK_OSSL(r, EVP_Digest(tbs, tbs_len, digest, &digest_len, is->sha256, NULL),
                   MID_E_CRYPTO, "cannot hash the certificate");
    MID_TRY(r, sign_ctx_take(is, &ctx));
    MID_CHECK_OSSL(r, EVP_PKEY_sign(ctx, sig, sig_len, digest, digest_len), MID_E_CRYPTO,
                   "signing the certificate failed");
    sign_ctx_give(is, ctx);
    ctx = NULL;
out:
    EVP_PKEY_CTX_free(ctx); /* not reused after a failure */
    return r;
}

MID_RESULT ca_x509_build_svid(const ca_x509_svid_params *p, unsigned char **der, size_t *der_len,
                              char serial_hex[CA_SERIAL_HEX_LEN + 1])
{
    mid_result r = MID_OK_RESULT;
    unsigned char *buf = NULL;
    const ca_x509_issuer *is = p->issuer;
    MID_CHECK(r, p->spki != NULL && p->spiffe_id != NULL && is != NULL && is->key != NULL &&
                     (p->n_dns == 0 || p->dns != NULL),
              MID_E_INTERNAL, "missing parameters");
    MID_CHECK(r, p->not_before < p->not_after, MID_E_INVALID, "empty validity period");
    pthread_once(&sha1_once, sha1_init);
    MID_CHECK_OSSL(r, sha1_md != NULL ? 1 : 0, MID_E_CRYPTO, "SHA-1 is not available");

    unsigned char serial[CA_SERIAL_LEN];
    do {
        MID_CHECK_OSSL(r, RAND_bytes(serial, sizeof serial), MID_E_CRYPTO, "RAND_bytes failed");
        serial[0] &= 0x7f;
    } while (serial[0] == 0);

    /* Room for everything: the fixed parts, the variable ones, the largest
     * signature and the headers around them. */
    int sig_max = EVP_PKEY_get_size(is->key);
    MID_CHECK(r, sig_max > 0, MID_E_CRYPTO, "unusable signing key");
    size_t cap = 512 + is->name_len + is->aki_len + p->spki->der_len + strlen(p->spiffe_id) +
                 (size_t)sig_max;
    for (size_t i = 0; i < p->n_dns; i++) cap += strlen(p->dns[i]) + 4;
    buf = malloc(cap);
    MID_CHECK_MEM(r, buf);

    der_writer w;
    der_w_init(&w, buf, cap);
    der_w_open(&w, DER_SEQUENCE); /* Certificate */
    size_t tbs_at = w.len;
    der_w_open(&w, DER_SEQUENCE); /* TBSCertificate */
    der_w_raw(&w, VERSION_V3, sizeof VERSION_V3);
    der_w_prim(&w, DER_INTEGER, serial, sizeof serial);
    der_w_raw(&w, is->sig_alg, is->sig_alg_len);
    der_w_raw(&w, is->name_der, is->name_len);
    der_w_open(&w, DER_SEQUENCE); /* Validity */
    MID_TRY(r, put_time(&w, p->not_before));
    MID_TRY(r, put_time(&w, p->not_after));
    der_w_close(&w);
    der_w_raw(&w, SUBJECT_O_MESHID, sizeof SUBJECT_O_MESHID);
    der_w_raw(&w, p->spki->der, p->spki->der_len);
    der_w_open(&w, TAG_CTX3);
    der_w_open(&w, DER_SEQUENCE); /* Extensions, in the order of docs/ca.md */
    der_w_raw(&w, EXT_BC_LEAF, sizeof EXT_BC_LEAF);
    if (p->spki->key_nid == NID_rsaEncryption)
        der_w_raw(&w, EXT_KU_RSA, sizeof EXT_KU_RSA);
    else
        der_w_raw(&w, EXT_KU_EC, sizeof EXT_KU_EC);
    der_w_raw(&w, EXT_EKU, sizeof EXT_EKU);
    MID_TRY(r, put_ski(&w, p->spki, sha1_md));
    der_w_raw(&w, is->aki_der, is->aki_len);
    put_san(&w, p->spiffe_id, p->dns, p->n_dns);
    der_w_close(&w);
    der_w_close(&w);
    der_w_close(&w); /* TBSCertificate */
    MID_CHECK(r, !w.failed, MID_E_INTERNAL, "certificate larger than expected");

    /* The signature goes at the end of the buffer, out of the writer's way. */
    size_t tbs_len = w.len - tbs_at;
    size_t sig_len = (size_t)sig_max;
    MID_CHECK(r, cap - w.len > (size_t)sig_max + 64, MID_E_INTERNAL, "no room for the signature");
    unsigned char *sig = buf + cap - (size_t)sig_max;
    MID_TRY(r, sign_tbs(is, buf + tbs_at, tbs_len, sig, &sig_len));
    der_w_raw(&w, is->sig_alg, is->sig_alg_len);
    der_w_open(&w, DER_BIT_STRING);
    der_w_raw(&w, "", 1); /* no unused bits */
    der_w_raw(&w, sig, sig_len);
    der_w_close(&w);
    der_w_close(&w); /* Certificate */
    MID_CHECK(r, der_w_finish(&w), MID_E_INTERNAL, "certificate larger than expected");

    ca_hex_encode(serial, sizeof serial, serial_hex);
    *der = buf;
    *der_len = w.len;
    buf = NULL;
out:
    free(buf);
    return r;
}

/* ---- inspection --------------------------------------------------------------- */

static int is_ldh(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '-';
}

MID_RESULT ca_x509_check_dns_name(const char *name)
{
    MID_ENSURE(name != NULL && name[0] != '\0', MID_E_INVALID, "empty DNS name");
    size_t len = strnlen(name, 254);
    MID_ENSURE(len <= 253, MID_E_INVALID, "DNS name '%.40s...' is longer than 253 characters",
               name);
    const char *p = name;
    if (p[0] == '*' && p[1] == '.') p += 2; /* one leading wildcard label */
    size_t label = 0;
    for (;; p++) {
        if (*p == '.' || *p == '\0') {
            MID_ENSURE(label > 0, MID_E_INVALID, "DNS name '%s' has an empty label", name);
            MID_ENSURE(label <= 63, MID_E_INVALID,
                       "DNS name '%s' has a label longer than 63 characters", name);
            MID_ENSURE(p[-1] != '-' && p[-(ptrdiff_t)label] != '-', MID_E_INVALID,
                       "DNS name '%s' has a label starting or ending with '-'", name);
            if (*p == '\0') break;
            label = 0;
            continue;
        }
        MID_ENSURE(is_ldh(*p), MID_E_INVALID,
                   "DNS name '%.253s' has a character outside letters, digits, '-' and '.'",
                   name);
        label++;
    }
    return mid_ok();
}

/* PEM by hand: base64 in 64-character lines, byte for byte what
 * PEM_write_bio_X509 writes, without a BIO and its buffer copies. */
MID_RESULT ca_x509_der_append_pem(const unsigned char *der, size_t n, char **pem)
{
    static const char begin[] = "-----BEGIN CERTIFICATE-----\n";
    static const char end[] = "-----END CERTIFICATE-----\n";
    MID_ENSURE(der != NULL && n > 0 && n <= CA_CERT_FILE_MAX, MID_E_INVALID,
               "no certificate to encode");
    size_t lines = (n + 47) / 48;
    size_t body = (n + 2) / 3 * 4 + lines; /* base64 plus one newline a line */
    size_t add = sizeof begin - 1 + body + sizeof end - 1;
    size_t old = *pem != NULL ? strlen(*pem) : 0;
    char *s = realloc(*pem, old + add + 1);
    MID_ENSURE(s != NULL, MID_E_NOMEM, "out of memory");
    *pem = s;
    char *o = s + old;
    memcpy(o, begin, sizeof begin - 1);
    o += sizeof begin - 1;
    for (size_t at = 0; at < n; at += 48) {
        size_t chunk = n - at < 48 ? n - at : 48;
        o += EVP_EncodeBlock((unsigned char *)o, der + at, (int)chunk);
        *o++ = '\n';
    }
    memcpy(o, end, sizeof end);
    return mid_ok();
}

MID_RESULT ca_x509_append_pem(X509 *x, char **pem)
{
    unsigned char *der = NULL;
    int n = i2d_X509(x, &der);
    if (n <= 0) return mid_fail_ossl(MID_E_CRYPTO, __FILE__, __LINE__, "cannot encode certificate");
    mid_result r = ca_x509_der_append_pem(der, (size_t)n, pem);
    OPENSSL_free(der);
    return r;
}

MID_RESULT ca_x509_stack_from_pem(const char *pem, size_t len, const char *what,
                                  STACK_OF(X509) **out)
{
    mid_result r = MID_OK_RESULT;
    STACK_OF(X509) *sk = sk_X509_new_null();
    BIO *b = NULL;
    char *name = NULL, *header = NULL;
    unsigned char *body = NULL;
    MID_CHECK_MEM(r, sk);
    MID_CHECK(r, len <= CA_CERT_FILE_MAX, MID_E_TOO_LARGE, "%s: over %d bytes", what,
              CA_CERT_FILE_MAX);
    b = BIO_new_mem_buf(pem, (int)len);
    MID_CHECK_MEM(r, b);
    for (;;) {
        long body_len = 0;
        ERR_clear_error();
        if (PEM_read_bio(b, &name, &header, &body, &body_len) != 1) {
            unsigned long e = ERR_peek_last_error();
            /* No further BEGIN line: the normal end, once we have a certificate. */
            if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE &&
                sk_X509_num(sk) > 0) {
                ERR_clear_error();
                break;
            }
            r = mid_fail_ossl(MID_E_INVALID, __FILE__, __LINE__,
                              sk_X509_num(sk) == 0 ? "%s: no PEM certificate found"
                                                   : "%s: malformed PEM",
                              what);
            goto out;
        }
        MID_CHECK(r, strcmp(name, "CERTIFICATE") == 0, MID_E_INVALID,
                  "%s: unexpected PEM block '%.40s' (only CERTIFICATE blocks belong here)", what,
                  name);
        const unsigned char *p = body;
        X509 *x = d2i_X509(NULL, &p, body_len);
        if (x == NULL || p != body + body_len) {
            X509_free(x);
            r = mid_fail_ossl(MID_E_INVALID, __FILE__, __LINE__,
                              "%s: certificate %d does not parse", what, sk_X509_num(sk) + 1);
            goto out;
        }
        if (sk_X509_push(sk, x) <= 0) {
            X509_free(x);
            MID_CHECK(r, 0, MID_E_NOMEM, "out of memory");
        }
        OPENSSL_free(name);
        OPENSSL_free(header);
        OPENSSL_free(body);
        name = header = NULL;
        body = NULL;
    }
    *out = sk;
    sk = NULL;
out:
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(body);
    BIO_free(b);
    sk_X509_pop_free(sk, X509_free);
    return r;
}

MID_RESULT ca_x509_signing_trust_domain(X509 *x, char td[SPIFFE_TD_MAX + 1])
{
    mid_result r = MID_OK_RESULT;
    spiffe_id *id = NULL;
    int crit = -1;
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, &crit, NULL);
    if (gens == NULL) {
        MID_CHECK(r, crit == -1, MID_E_INVALID, "malformed or repeated subjectAltName");
        MID_CHECK(r, 0, MID_E_NOT_FOUND, "no subjectAltName with a spiffe:// URI");
    }
    int found = 0;
    for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type != GEN_URI) continue;
        const char *s = (const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
        size_t n = (size_t)ASN1_STRING_length(g->d.uniformResourceIdentifier);
        if (n < 7 || strncasecmp(s, "spiffe:", 7) != 0) continue;
        MID_CHECK(r, !found, MID_E_INVALID, "more than one spiffe:// URI SAN");
        found = 1;
        MID_TRY(r, spiffe_id_parse(s, n, &id));
        MID_CHECK(r, !spiffe_id_is_workload(id), MID_E_INVALID,
                  "URI SAN %s of a signing certificate must not have a path", spiffe_id_str(id));
        snprintf(td, SPIFFE_TD_MAX + 1, "%s", spiffe_id_trust_domain(id));
    }
    MID_CHECK(r, found, MID_E_NOT_FOUND, "no spiffe:// URI SAN");
out:
    spiffe_id_free(id);
    GENERAL_NAMES_free(gens);
    return r;
}

MID_RESULT ca_x509_check_signing_ca(X509 *x, const char *what)
{
    uint32_t flags = X509_get_extension_flags(x);
    MID_ENSURE(!(flags & EXFLAG_INVALID), MID_E_INVALID, "%s: certificate has invalid extensions",
               what);
    MID_ENSURE((flags & EXFLAG_BCONS) && (flags & EXFLAG_CA), MID_E_INVALID,
               "%s: not a CA certificate (basicConstraints CA:TRUE is missing)", what);
    MID_ENSURE((flags & EXFLAG_KUSAGE) && (X509_get_key_usage(x) & KU_KEY_CERT_SIGN), MID_E_INVALID,
               "%s: not a CA certificate (keyUsage keyCertSign is missing)", what);
    return mid_ok();
}

MID_RESULT ca_x509_verify(X509 *leaf, STACK_OF(X509) *untrusted, STACK_OF(X509) *anchors,
                          int64_t at, STACK_OF(X509) **chain)
{
    mid_result r = MID_OK_RESULT;
    X509_STORE *st = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    MID_CHECK(r, st != NULL && ctx != NULL, MID_E_NOMEM, "out of memory");
    MID_CHECK(r, anchors != NULL && sk_X509_num(anchors) > 0, MID_E_VERIFY, "no trust anchors");
    for (int i = 0; i < sk_X509_num(anchors); i++)
        MID_CHECK_OSSL(r, X509_STORE_add_cert(st, sk_X509_value(anchors, i)), MID_E_CRYPTO,
                       "cannot load trust anchor");
    MID_CHECK_OSSL(r, X509_STORE_CTX_init(ctx, st, leaf, untrusted), MID_E_CRYPTO,
                   "cannot start verification");
    if (at > 0)
        X509_STORE_CTX_set_time(ctx, 0, (time_t)at);
    else if (at < 0)
        X509_STORE_CTX_set_flags(ctx, X509_V_FLAG_NO_CHECK_TIME);
    if (X509_verify_cert(ctx) != 1) {
        int e = X509_STORE_CTX_get_error(ctx);
        ERR_clear_error();
        MID_CHECK(r, 0, MID_E_VERIFY, "certificate chain does not verify: %s (depth %d)",
                  X509_verify_cert_error_string(e), X509_STORE_CTX_get_error_depth(ctx));
    }
    if (chain != NULL) {
        *chain = X509_STORE_CTX_get1_chain(ctx);
        MID_CHECK_MEM(r, *chain);
    }
out:
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(st);
    return r;
}
