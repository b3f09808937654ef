#include "ca/keys.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/obj_mac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ca/codec.h"
#include "ca/der.h"
#include "lib/fsutil.h"
#include "lib/log.h"

MID_RESULT ca_key_type_parse(const char *s, ca_key_type *out)
{
    MID_ENSURE(s != NULL, MID_E_INVALID, "missing key type (use ec-p256 or rsa-2048)");
    if (strcmp(s, "ec-p256") == 0) {
        *out = CA_KEY_EC_P256;
    } else if (strcmp(s, "rsa-2048") == 0) {
        *out = CA_KEY_RSA_2048;
    } else {
        MID_BAIL(MID_E_INVALID, "unknown key type '%.64s' (use ec-p256 or rsa-2048)", s);
    }
    return mid_ok();
}

MID_RESULT ca_key_generate(ca_key_type t, EVP_PKEY **out)
{
    EVP_PKEY *k = NULL;
    switch (t) {
    case CA_KEY_EC_P256: k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256"); break;
    case CA_KEY_RSA_2048: k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048); break;
    default: MID_BAIL(MID_E_INVALID, "unknown key type %d", (int)t);
    }
    if (k == NULL) return mid_fail_ossl(MID_E_CRYPTO, __FILE__, __LINE__, "key generation failed");
    *out = k;
    return mid_ok();
}

MID_RESULT ca_key_to_pem(const EVP_PKEY *k, char **out, size_t *len)
{
    mid_result r = MID_OK_RESULT;
    BIO *b = BIO_new(BIO_s_secmem()); /* wiped by OpenSSL when freed */
    MID_CHECK_MEM(r, b);
    MID_CHECK_OSSL(r, PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL), MID_E_CRYPTO,
                   "cannot encode private key");
    char *data = NULL;
    long n = BIO_get_mem_data(b, &data);
    MID_CHECK(r, n > 0 && data != NULL, MID_E_CRYPTO, "cannot encode private key");
    char *s = malloc((size_t)n + 1);
    MID_CHECK_MEM(r, s);
    memcpy(s, data, (size_t)n);
    s[n] = '\0';
    *out = s;
    *len = (size_t)n;
out:
    BIO_free(b);
    return r;
}

void ca_key_pem_free(char *pem, size_t len)
{
    if (pem == NULL) return;
    OPENSSL_cleanse(pem, len);
    free(pem);
}

/* Never prompt for a passphrase: an encrypted key is an error, not a tty read. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

MID_RESULT ca_key_from_pem(const char *pem, size_t len, const char *what, EVP_PKEY **out)
{
    MID_ENSURE(len > 0 && len <= CA_KEY_FILE_MAX, MID_E_INVALID, "%s: empty or oversized key",
               what);
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    MID_ENSURE(b != NULL, MID_E_NOMEM, "out of memory");
    EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL);
    BIO_free(b);
    if (k == NULL)
        return mid_fail_ossl(MID_E_INVALID, __FILE__, __LINE__,
                             "%s: not an unencrypted PEM private key", what);
    *out = k;
    return mid_ok();
}

MID_RESULT ca_key_save(const char *path, const EVP_PKEY *k)
{
    char *pem = NULL;
    size_t len = 0;
    MID_GUARD(ca_key_to_pem(k, &pem, &len));
    mid_result r = fs_write_file(path, pem, len, 0600);
    ca_key_pem_free(pem, len);
    return r;
}

MID_RESULT ca_key_load(const char *path, EVP_PKEY **out)
{
    char *buf = NULL;
    size_t len = 0;
    MID_GUARD(fs_read_file(path, CA_KEY_FILE_MAX, &buf, &len));
    struct stat st;
    if (stat(path, &st) == 0 && (st.st_mode & 077) != 0)
        LOG_WARN("%s: key file is accessible to group or others (mode %03o); expected 0600",
                 path, (unsigned)(st.st_mode & 0777));
    mid_result r = ca_key_from_pem(buf, len, path, out);
    OPENSSL_cleanse(buf, len);
    free(buf);
    return r;
}

MID_RESULT ca_key_fingerprint(const EVP_PKEY *k, char out[CA_FP_HEX_LEN + 1])
{
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(k, &der);
    if (n <= 0) return mid_fail_ossl(MID_E_CRYPTO, __FILE__, __LINE__, "cannot encode public key");
    mid_result r = ca_key_fingerprint_spki(der, (size_t)n, out);
    OPENSSL_free(der);
    return r;
}

MID_RESULT ca_key_matches_cert(const EVP_PKEY *k, const X509 *cert, const char *what)
{
    if (X509_check_private_key(cert, k) != 1)
        return mid_fail_ossl(MID_E_INVALID, __FILE__, __LINE__,
                             "%s: the private key does not match the certificate", what);
    return mid_ok();
}

/* The curve's short name ("prime256v1", ...) or "" when not a named curve. */
static void ec_group_name(const EVP_PKEY *k, char *out, size_t cap)
{
    out[0] = '\0';
    char enc[32] = "";
    if (EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_EC_ENCODING, enc, sizeof enc, NULL) ==
            1 &&
        strcmp(enc, OSSL_PKEY_EC_ENCODING_GROUP) != 0)
        return; /* explicit parameters: treated as unnamed */
    if (EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, out, cap, NULL) != 1)
        out[0] = '\0';
}

int ca_key_is_rsa(const EVP_PKEY *k) { return EVP_PKEY_get_base_id(k) == EVP_PKEY_RSA; }

void ca_key_describe(const EVP_PKEY *k, char *out, size_t cap)
{
    char group[64];
    switch (EVP_PKEY_get_base_id(k)) {
    case EVP_PKEY_EC:
        ec_group_name(k, group, sizeof group);
        if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0)
            snprintf(out, cap, "ec-p256");
        else if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0)
            snprintf(out, cap, "ec-p384");
        else if (group[0] != '\0')
            snprintf(out, cap, "ec-%s", group);
        else
            snprintf(out, cap, "ec-explicit-parameters");
        break;
    case EVP_PKEY_RSA: snprintf(out, cap, "rsa-%d", EVP_PKEY_get_bits(k)); break;
    case EVP_PKEY_RSA_PSS: snprintf(out, cap, "rsa-pss-%d", EVP_PKEY_get_bits(k)); break;
    case EVP_PKEY_ED25519: snprintf(out, cap, "ed25519"); break;
    case EVP_PKEY_ED448: snprintf(out, cap, "ed448"); break;
    default: {
        const char *name = EVP_PKEY_get0_type_name(k);
        snprintf(out, cap, "%s", name != NULL ? name : "unknown");
    }
    }
}

static mid_result check_rsa_exponent(const EVP_PKEY *k)
{
    BIGNUM *e = NULL;
    MID_ENSURE(EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_E, &e) == 1, MID_E_INVALID,
               "unsupported key: RSA key without a public exponent");
    int ok = BN_is_odd(e) && BN_num_bits(e) >= 2 && BN_num_bits(e) <= 256;
    BN_free(e);
    MID_ENSURE(ok, MID_E_INVALID, "unsupported key: RSA public exponent must be odd and >= 3");
    return mid_ok();
}

MID_RESULT ca_key_check_accepted(const EVP_PKEY *k)
{
    char desc[80];
    ca_key_describe(k, desc, sizeof desc);
    switch (EVP_PKEY_get_base_id(k)) {
    case EVP_PKEY_EC:
        MID_ENSURE(strcmp(desc, "ec-p256") == 0 || strcmp(desc, "ec-p384") == 0, MID_E_INVALID,
                   "unsupported key %s (accepted: EC P-256, EC P-384, RSA 2048-4096)", desc);
        return mid_ok();
    case EVP_PKEY_RSA: {
        int bits = EVP_PKEY_get_bits(k);
        MID_ENSURE(bits >= 2048 && bits <= 4096, MID_E_INVALID,
                   "unsupported key %s (accepted: EC P-256, EC P-384, RSA 2048-4096)", desc);
        return check_rsa_exponent(k);
    }
    default:
        MID_BAIL(MID_E_INVALID, "unsupported key %s (accepted: EC P-256, EC P-384, RSA 2048-4096)",
                 desc);
    }
}

MID_RESULT ca_key_fingerprint_spki(const unsigned char *spki, size_t len,
                                   char out[CA_FP_HEX_LEN + 1])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    MID_GUARD_OSSL(EVP_Digest(spki, len, md, &mdlen, EVP_sha256(), NULL), MID_E_CRYPTO,
                   "SHA-256 failed");
    ca_hex_encode(md, sizeof md, out);
    return mid_ok();
}

/* ---- SubjectPublicKeyInfo without OpenSSL's decoders ---------------------- */

/* Contents octets of the OIDs we accept. */
static const unsigned char OID_EC_PUBKEY[] = {0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01};
static const unsigned char OID_P256[] = {0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
static const unsigned char OID_P384[] = {0x2b, 0x81, 0x04, 0x00, 0x22};
static const unsigned char OID_RSA[] = {0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01};

#define ACCEPTED_KEYS "(accepted: EC P-256, EC P-384, RSA 2048-4096)"

static mid_result spki_malformed(const der_cursor *c, const char *where)
{
    MID_BAIL(MID_E_INVALID, "malformed public key (%s: %s)", where,
             c->why != NULL ? c->why : "unexpected content");
}

/* The short name ca_key_describe would give a key of an algorithm we refuse. */
static void refused_alg_desc(const der_tlv *oid, char *out, size_t cap)
{
    switch (der_oid_nid(oid)) {
    case NID_ED25519: snprintf(out, cap, "ed25519"); break;
    case NID_ED448: snprintf(out, cap, "ed448"); break;
    case NID_X25519: snprintf(out, cap, "x25519"); break;
    case NID_X448: snprintf(out, cap, "x448"); break;
    case NID_rsassaPss: snprintf(out, cap, "rsa-pss"); break;
    case NID_dsa: snprintf(out, cap, "dsa"); break;
    default: der_oid_text(oid, out, cap);
    }
}

/* Algorithm parameters (after the id-ecPublicKey OID) and point of an EC key. */
static mid_result spki_ec(der_cursor *alg, ca_spki *info)
{
    der_tlv curve;
    uint8_t tag = der_peek_tag(alg);
    MID_ENSURE(tag != DER_SEQUENCE, MID_E_INVALID,
               "unsupported key ec-explicit-parameters " ACCEPTED_KEYS);
    MID_ENSURE(tag == DER_OID, MID_E_INVALID,
               "unsupported key: EC key without a named curve " ACCEPTED_KEYS);
    if (!der_read_oid(alg, &curve)) return spki_malformed(alg, "EC curve");
    if (!der_at_end(alg)) return spki_malformed(alg, "EC algorithm parameters");
    size_t flen = 0;
    if (DER_OID_IS(&curve, OID_P256)) {
        info->curve_nid = NID_X9_62_prime256v1;
        info->bits = 256;
        flen = 32;
    } else if (DER_OID_IS(&curve, OID_P384)) {
        info->curve_nid = NID_secp384r1;
        info->bits = 384;
        flen = 48;
    } else {
        char name[80];
        der_oid_text(&curve, name, sizeof name);
        MID_BAIL(MID_E_INVALID, "unsupported key ec-%s " ACCEPTED_KEYS, name);
    }
    /* Uncompressed (04 X Y) or compressed (02/03 X). Not the point at
     * infinity (one 00 octet), which EVP_PKEY_fromdata would take, nor the
     * hybrid form. */
    const unsigned char *pt = info->pub;
    size_t n = info->pub_len;
    int shape_ok = n > 0 && ((pt[0] == 0x04 && n == 1 + 2 * flen) ||
                             ((pt[0] == 0x02 || pt[0] == 0x03) && n == 1 + flen));
    MID_ENSURE(shape_ok, MID_E_INVALID,
               "malformed public key (not an encoded point of %d bits)", info->bits);
    return mid_ok();
}

static int bit_length(const unsigned char *mag, size_t n)
{
    if (n == 0 || (n == 1 && mag[0] == 0)) return 0;
    int top = 0;
    for (unsigned v = mag[0]; v != 0; v >>= 1) top++;
    return (int)((n - 1) * 8) + top;
}

/* NULL parameters and the RSAPublicKey of an RSA key; n and e point into it. */
static mid_result spki_rsa(der_cursor *alg, ca_spki *info, const unsigned char **n,
                           size_t *n_len, const unsigned char **e, size_t *e_len)
{
    der_tlv t;
    der_cursor key, seq;
    if (!der_read(alg, DER_NULL, &t) || t.value_len != 0 || !der_at_end(alg))
        return spki_malformed(alg, "RSA parameters must be NULL");
    der_init(&key, info->pub, info->pub_len);
    if (!der_read_enter(&key, DER_SEQUENCE, &seq, NULL)) return spki_malformed(&key, "RSAPublicKey");
    if (!der_at_end(&key)) return spki_malformed(&key, "data after the RSAPublicKey");
    if (!der_read_uint(&seq, n, n_len)) return spki_malformed(&seq, "RSA modulus");
    if (!der_read_uint(&seq, e, e_len)) return spki_malformed(&seq, "RSA exponent");
    if (!der_at_end(&seq)) return spki_malformed(&seq, "data after the RSA exponent");
    info->bits = bit_length(*n, *n_len);
    MID_ENSURE(info->bits >= 2048 && info->bits <= 4096, MID_E_INVALID,
               "unsupported key rsa-%d " ACCEPTED_KEYS, info->bits);
    int ebits = bit_length(*e, *e_len);
    MID_ENSURE((*e)[*e_len - 1] & 1 && ebits >= 2 && ebits <= 256, MID_E_INVALID,
               "unsupported key: RSA public exponent must be odd and >= 3");
    return mid_ok();
}

static mid_result fromdata(const char *type, OSSL_PARAM *params, EVP_PKEY **out)
{
    EVP_PKEY *k = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    int ok = ctx != NULL && EVP_PKEY_fromdata_init(ctx) == 1 &&
             EVP_PKEY_fromdata(ctx, &k, EVP_PKEY_PUBLIC_KEY, params) == 1;
    EVP_PKEY_CTX_free(ctx);
    if (!ok) {
        EVP_PKEY_free(k);
        return mid_fail_ossl(MID_E_INVALID, __FILE__, __LINE__,
                             "malformed public key (OpenSSL refuses the %s key)", type);
    }
    *out = k;
    return mid_ok();
}

/* Curve templates: one parameters-only EC key per accepted curve, built once
 * and never modified or freed. Building a P-256 key from scratch
 * (EVP_PKEY_fromdata) spends ~10 us of its ~13 us creating the EC_GROUP
 * (Montgomery constants); duplicating a template copies them instead (~3 us
 * with the point). This is the one process-wide object of ca/: immutable
 * after pthread_once, shared read-only like OpenSSL's own method caches
 * (EVP_PKEY_dup only reads its source), so no context needs to carry it. */
static EVP_PKEY *ec_templates[2]; /* [0] prime256v1, [1] secp384r1 */
static pthread_once_t ec_templates_once = PTHREAD_ONCE_INIT;

static EVP_PKEY *ec_params_key(const char *group_name)
{
    char group[16];
    snprintf(group, sizeof group, "%s", group_name);
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0),
                           OSSL_PARAM_construct_end()};
    EVP_PKEY *k = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &k, EVP_PKEY_KEY_PARAMETERS, params) != 1)
        k = NULL;
    EVP_PKEY_CTX_free(ctx);
    return k;
}

static void ec_templates_init(void)
{
    ec_templates[0] = ec_params_key("prime256v1");
    ec_templates[1] = ec_params_key("secp384r1");
}

static mid_result build_ec(const ca_spki *info, EVP_PKEY **out)
{
    pthread_once(&ec_templates_once, ec_templates_init);
    EVP_PKEY *tmpl = ec_templates[info->curve_nid == NID_secp384r1 ? 1 : 0];
    if (tmpl == NULL)
        return mid_fail_ossl(MID_E_CRYPTO, __FILE__, __LINE__, "cannot set up the EC curve");
    EVP_PKEY *k = EVP_PKEY_dup(tmpl);
    if (k == NULL) return mid_fail_ossl(MID_E_NOMEM, __FILE__, __LINE__, "cannot copy an EC key");
    /* EC_KEY_oct2key underneath decodes with EC_POINT_oct2point, which
     * refuses a point off the curve (unit test t_key_spki_ec_points). */
    if (EVP_PKEY_set1_encoded_public_key(k, info->pub, info->pub_len) != 1) {
        EVP_PKEY_free(k);
        return mid_fail_ossl(MID_E_INVALID, __FILE__, __LINE__,
                             "malformed public key (not a point of the curve)");
    }
    *out = k;
    return mid_ok();
}

static mid_result build_rsa(const unsigned char *n, size_t n_len, const unsigned char *e,
                            size_t e_len, EVP_PKEY **out)
{
    mid_result r = MID_OK_RESULT;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    BIGNUM *bn = BN_bin2bn(n, (int)n_len, NULL), *be = BN_bin2bn(e, (int)e_len, NULL);
    MID_CHECK(r, bld != NULL && bn != NULL && be != NULL, MID_E_NOMEM, "out of memory");
    MID_CHECK(r, OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) == 1 &&
                     OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) == 1 &&
                     (params = OSSL_PARAM_BLD_to_param(bld)) != NULL,
              MID_E_NOMEM, "out of memory");
    MID_TRY(r, fromdata("RSA", params, out));
out:
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    return r;
}

MID_RESULT ca_key_from_spki(const unsigned char *der, size_t len, ca_spki *info,
                            EVP_PKEY **out)
{
    der_cursor top, spki, alg;
    der_tlv oid;
    memset(info, 0, sizeof *info);
    info->curve_nid = NID_undef;
    der_init(&top, der, len);
    if (!der_read_enter(&top, DER_SEQUENCE, &spki, NULL))
        return spki_malformed(&top, "SubjectPublicKeyInfo");
    if (!der_at_end(&top)) return spki_malformed(&top, "data after the SubjectPublicKeyInfo");
    if (!der_read_enter(&spki, DER_SEQUENCE, &alg, NULL)) return spki_malformed(&spki, "algorithm");
    if (!der_read_oid(&alg, &oid)) return spki_malformed(&alg, "algorithm");
    if (!der_read_bits(&spki, &info->pub, &info->pub_len))
        return spki_malformed(&spki, "subjectPublicKey");
    if (!der_at_end(&spki)) return spki_malformed(&spki, "data after the subjectPublicKey");
    info->der = der;
    info->der_len = len;

    const unsigned char *n = NULL, *e = NULL;
    size_t n_len = 0, e_len = 0;
    if (DER_OID_IS(&oid, OID_EC_PUBKEY)) {
        info->key_nid = NID_X9_62_id_ecPublicKey;
        MID_GUARD(spki_ec(&alg, info));
    } else if (DER_OID_IS(&oid, OID_RSA)) {
        info->key_nid = NID_rsaEncryption;
        MID_GUARD(spki_rsa(&alg, info, &n, &n_len, &e, &e_len));
    } else {
        char desc[80];
        refused_alg_desc(&oid, desc, sizeof desc);
        MID_BAIL(MID_E_INVALID, "unsupported key %s " ACCEPTED_KEYS, desc);
    }
    if (out == NULL) return mid_ok();
    return info->key_nid == NID_rsaEncryption ? build_rsa(n, n_len, e, e_len, out)
                                              : build_ec(info, out);
}
