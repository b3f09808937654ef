#include "ca/keys.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ca/codec.h"
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
    unsigned char md[32];
    unsigned int mdlen = 0;
    int ok = EVP_Digest(der, (size_t)n, md, &mdlen, EVP_sha256(), NULL);
    OPENSSL_free(der);
    MID_GUARD_OSSL(ok, MID_E_CRYPTO, "SHA-256 failed");
    ca_hex_encode(md, sizeof md, out);
    return mid_ok();
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
