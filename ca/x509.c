#include "ca/x509.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "ca/codec.h"

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

static mid_result add_eku_server_client(X509 *x)
{
    mid_result r = MID_OK_RESULT;
    EXTENDED_KEY_USAGE *eku = sk_ASN1_OBJECT_new_null();
    MID_CHECK_MEM(r, eku);
    MID_CHECK(r, sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_server_auth)) > 0, MID_E_NOMEM,
              "out of memory");
    MID_CHECK(r, sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_client_auth)) > 0, MID_E_NOMEM,
              "out of memory");
    MID_TRY(r, add_ext(x, NID_ext_key_usage, eku, 0, "extendedKeyUsage"));
out:
    sk_ASN1_OBJECT_pop_free(eku, ASN1_OBJECT_free); /* static objects: free is a no-op */
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

/* The certificate's subjectPublicKeyInfo from a parsed SPKI: the same
 * algorithm, parameters (curve OID, or NULL for RSA) and key bits, without
 * building or encoding an EVP_PKEY. The certificate then has no cached
 * EVP_PKEY; X509_get0_pubkey decodes one on demand (never needed here). */
static mid_result set_spki(X509 *x, const ca_spki *k)
{
    MID_ENSURE(k->key_nid == NID_X9_62_id_ecPublicKey || k->key_nid == NID_rsaEncryption,
               MID_E_INTERNAL, "unexpected key type");
    MID_ENSURE(k->pub_len > 0 && k->pub_len <= INT_MAX, MID_E_INTERNAL, "bad public key length");
    int ec = k->key_nid == NID_X9_62_id_ecPublicKey;
    ASN1_OBJECT *alg = OBJ_nid2obj(k->key_nid);       /* static objects: no free needed */
    ASN1_OBJECT *curve = ec ? OBJ_nid2obj(k->curve_nid) : NULL;
    MID_ENSURE(alg != NULL && (!ec || curve != NULL), MID_E_INTERNAL, "unknown key OID");
    unsigned char *bits = OPENSSL_memdup(k->pub, k->pub_len);
    MID_ENSURE(bits != NULL, MID_E_NOMEM, "out of memory");
    if (X509_PUBKEY_set0_param(X509_get_X509_PUBKEY(x), alg, ec ? V_ASN1_OBJECT : V_ASN1_NULL,
                               curve, bits, (int)k->pub_len) != 1) {
        OPENSSL_free(bits);
        return mid_fail_ossl(MID_E_CRYPTO, __FILE__, __LINE__, "cannot set the public key");
    }
    return mid_ok();
}

MID_RESULT ca_x509_build_svid(const ca_x509_svid_params *p, X509 **out,
                              char serial_hex[CA_SERIAL_HEX_LEN + 1])
{
    mid_result r = MID_OK_RESULT;
    X509 *x = NULL;
    MID_CHECK(r, (p->pubkey != NULL) != (p->spki != NULL) && p->spiffe_id != NULL &&
                     p->issuer_name != NULL && p->issuer_key_id != NULL && p->issuer_key != NULL,
              MID_E_INTERNAL, "missing parameters");
    MID_TRY(r, new_cert(&x, serial_hex));
    /* Subject O=meshid written into the certificate's own (empty) name, as
     * make_name would build it, without building and copying a second one. */
    MID_CHECK_OSSL(r, X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "O", MBSTRING_ASC,
                                                 (const unsigned char *)"meshid", -1, -1, 0),
                   MID_E_CRYPTO, "cannot set subject");
    MID_CHECK_OSSL(r, X509_set_issuer_name(x, p->issuer_name), MID_E_CRYPTO,
                   "cannot set issuer");
    MID_TRY(r, set_validity(x, p->not_before, p->not_after));
    if (p->spki != NULL)
        MID_TRY(r, set_spki(x, p->spki));
    else
        MID_CHECK_OSSL(r, X509_set_pubkey(x, p->pubkey), MID_E_CRYPTO,
                       "cannot set the public key");
    MID_TRY(r, add_basic_constraints(x, 0, -1));
    static const int ec_bits[] = {KU_BIT_DIGITAL_SIGNATURE};
    static const int rsa_bits[] = {KU_BIT_DIGITAL_SIGNATURE, KU_BIT_KEY_ENCIPHERMENT};
    int is_rsa = p->spki != NULL ? p->spki->key_nid == NID_rsaEncryption
                                 : EVP_PKEY_get_base_id(p->pubkey) == EVP_PKEY_RSA;
    if (is_rsa)
        MID_TRY(r, add_key_usage(x, rsa_bits, 2));
    else
        MID_TRY(r, add_key_usage(x, ec_bits, 1));
    MID_TRY(r, add_eku_server_client(x));
    MID_TRY(r, add_ski(x));
    MID_TRY(r, add_aki(x, p->issuer_key_id));
    MID_TRY(r, add_san(x, p->spiffe_id, p->dns, p->n_dns));
    MID_TRY(r, sign_sha256(x, p->issuer_key));
    *out = x;
    x = NULL;
out:
    X509_free(x);
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

/* PEM by hand: i2d_X509 and base64 in 64-character lines, byte for byte
 * what PEM_write_bio_X509 writes, without a BIO and its buffer copies. */
MID_RESULT ca_x509_append_pem(X509 *x, char **pem)
{
    static const char begin[] = "-----BEGIN CERTIFICATE-----\n";
    static const char end[] = "-----END CERTIFICATE-----\n";
    unsigned char *der = NULL;
    int n = i2d_X509(x, &der);
    if (n <= 0) return mid_fail_ossl(MID_E_CRYPTO, __FILE__, __LINE__, "cannot encode certificate");
    size_t lines = ((size_t)n + 47) / 48;
    size_t body = ((size_t)n + 2) / 3 * 4 + lines; /* base64 plus one newline a line */
    size_t add = sizeof begin - 1 + body + sizeof end - 1;
    size_t old = *pem != NULL ? strlen(*pem) : 0;
    char *s = realloc(*pem, old + add + 1);
    if (s == NULL) {
        OPENSSL_free(der);
        MID_BAIL(MID_E_NOMEM, "out of memory");
    }
    *pem = s;
    char *o = s + old;
    memcpy(o, begin, sizeof begin - 1);
    o += sizeof begin - 1;
    for (size_t at = 0; at < (size_t)n; at += 48) {
        size_t chunk = (size_t)n - at < 48 ? (size_t)n - at : 48;
        o += EVP_EncodeBlock((unsigned char *)o, der + at, (int)chunk);
        *o++ = '\n';
    }
    memcpy(o, end, sizeof end);
    OPENSSL_free(der);
    return mid_ok();
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
