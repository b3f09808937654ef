/* Trust bundles: the roots of the store that are not revoked or removed, as
 * PEM and as a SPIFFE bundle (RFC 7517 JWK Set, X509-SVID.md section 6).
 * Read from the store on every call, so rotations show without reopening. */
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <stdlib.h>
#include <string.h>

#include "ca/ca.h"
#include "ca/ca_int.h"
#include "ca/codec.h"
#include "ca/keys.h"
#include "ca/x509.h"
#include "lib/log.h"

#define BUNDLE_REFRESH_HINT 300 /* seconds */

MID_RESULT ca_bundle_pem(ca *c, char **out)
{
    mid_result r = MID_OK_RESULT;
    STACK_OF(X509) *anchors = NULL;
    char *pem = NULL;
    MID_CHECK(r, c != NULL && out != NULL, MID_E_INVALID, "missing arguments");
    MID_TRY(r, ca_anchors_load(c->st, &anchors, NULL));
    pem = strdup("");
    MID_CHECK_MEM(r, pem);
    for (int i = 0; i < sk_X509_num(anchors); i++)
        MID_TRY(r, ca_x509_append_pem(sk_X509_value(anchors, i), &pem));
    *out = pem;
    pem = NULL;
out:
    free(pem);
    sk_X509_pop_free(anchors, X509_free);
    return r;
}

/* Sets member `name` to the unpadded base64url of `len` bytes. */
static mid_result set_b64url(json_t *o, const char *name, const unsigned char *b, size_t len)
{
    char *s = NULL;
    MID_GUARD(ca_b64url_encode(b, len, &s));
    int rc = json_object_set_new(o, name, json_string(s));
    free(s);
    MID_ENSURE(rc == 0, MID_E_NOMEM, "out of memory");
    return mid_ok();
}

/* A BIGNUM parameter of the key, big-endian, left-padded to `width` bytes
 * (0: minimal length, as RSA n and e are written). */
static mid_result set_bn_param(json_t *o, const char *member, const EVP_PKEY *pk,
                               const char *param, int width)
{
    BIGNUM *bn = NULL;
    MID_ENSURE(EVP_PKEY_get_bn_param(pk, param, &bn) == 1, MID_E_CRYPTO,
               "cannot read public key parameter %s", param);
    int n = width > 0 ? width : BN_num_bytes(bn);
    unsigned char *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf == NULL || BN_bn2binpad(bn, buf, n) != n) {
        free(buf);
        BN_free(bn);
        MID_BAIL(MID_E_CRYPTO, "cannot encode public key parameter %s", param);
    }
    BN_free(bn);
    mid_result r = set_b64url(o, member, buf, (size_t)n);
    free(buf);
    return r;
}

/* The JWK public parameters of `pk`; MID_E_NOT_FOUND for a key type a JWK
 * cannot express here (the caller leaves that anchor out). */
static mid_result jwk_key_params(json_t *k, const EVP_PKEY *pk)
{
    char desc[64];
    ca_key_describe(pk, desc, sizeof desc);
    switch (EVP_PKEY_get_base_id(pk)) {
    case EVP_PKEY_EC: {
        const char *crv = strcmp(desc, "ec-p256") == 0   ? "P-256"
                          : strcmp(desc, "ec-p384") == 0 ? "P-384"
                          : strcmp(desc, "ec-secp521r1") == 0 ? "P-521"
                                                               : NULL;
        MID_ENSURE(crv != NULL, MID_E_NOT_FOUND, "no JWK curve for %s", desc);
        int width = (EVP_PKEY_get_bits(pk) + 7) / 8;
        MID_ENSURE(json_object_set_new(k, "kty", json_string("EC")) == 0 &&
                       json_object_set_new(k, "crv", json_string(crv)) == 0,
                   MID_E_NOMEM, "out of memory");
        MID_GUARD(set_bn_param(k, "x", pk, OSSL_PKEY_PARAM_EC_PUB_X, width));
        MID_GUARD(set_bn_param(k, "y", pk, OSSL_PKEY_PARAM_EC_PUB_Y, width));
        return mid_ok();
    }
    case EVP_PKEY_RSA:
        MID_ENSURE(json_object_set_new(k, "kty", json_string("RSA")) == 0, MID_E_NOMEM,
                   "out of memory");
        MID_GUARD(set_bn_param(k, "n", pk, OSSL_PKEY_PARAM_RSA_N, 0));
        MID_GUARD(set_bn_param(k, "e", pk, OSSL_PKEY_PARAM_RSA_E, 0));
        return mid_ok();
    case EVP_PKEY_ED25519:
    case EVP_PKEY_ED448: {
        unsigned char raw[64];
        size_t len = sizeof raw;
        MID_ENSURE(EVP_PKEY_get_raw_public_key(pk, raw, &len) == 1, MID_E_CRYPTO,
                   "cannot read %s public key", desc);
        MID_ENSURE(json_object_set_new(k, "kty", json_string("OKP")) == 0 &&
                       json_object_set_new(k, "crv", json_string(EVP_PKEY_get_base_id(pk) ==
                                                                         EVP_PKEY_ED25519
                                                                     ? "Ed25519"
                                                                     : "Ed448")) == 0,
                   MID_E_NOMEM, "out of memory");
        return set_b64url(k, "x", raw, len);
    }
    default: MID_BAIL(MID_E_NOT_FOUND, "no JWK form for %s keys", desc);
    }
}

/* One x509-svid JWK: key parameters, use, and x5c with the DER certificate.
 * No kid (the SPIFFE bundle format forbids it for x509-svid keys). */
static mid_result jwk_for_anchor(X509 *x, json_t **out)
{
    mid_result r = MID_OK_RESULT;
    unsigned char *der = NULL;
    char *b64 = NULL;
    json_t *k = json_object();
    json_t *x5c = json_array();
    MID_CHECK(r, k != NULL && x5c != NULL, MID_E_NOMEM, "out of memory");
    EVP_PKEY *pk = X509_get0_pubkey(x);
    MID_CHECK(r, pk != NULL, MID_E_CRYPTO, "trust anchor with an unreadable public key");
    MID_TRY(r, jwk_key_params(k, pk));
    int n = i2d_X509(x, &der);
    MID_CHECK(r, n > 0, MID_E_CRYPTO, "cannot encode trust anchor");
    MID_TRY(r, ca_b64_encode(der, (size_t)n, &b64));
    MID_CHECK(r, json_array_append_new(x5c, json_string(b64)) == 0 &&
                     json_object_set_new(k, "use", json_string("x509-svid")) == 0 &&
                     json_object_set(k, "x5c", x5c) == 0,
              MID_E_NOMEM, "out of memory");
    *out = k;
    k = NULL;
out:
    json_decref(k);
    json_decref(x5c);
    OPENSSL_free(der);
    free(b64);
    return r;
}

MID_RESULT ca_bundle_spiffe(ca *c, char **out)
{
    mid_result r = MID_OK_RESULT;
    STACK_OF(X509) *anchors = NULL;
    int64_t seq = 0;
    json_t *doc = NULL, *keys = json_array();
    MID_CHECK(r, c != NULL && out != NULL, MID_E_INVALID, "missing arguments");
    MID_CHECK_MEM(r, keys);
    MID_TRY(r, ca_anchors_load(c->st, &anchors, &seq));
    for (int i = 0; i < sk_X509_num(anchors); i++) {
        json_t *k = NULL;
        mid_result kr = jwk_for_anchor(sk_X509_value(anchors, i), &k);
        if (kr.err == MID_E_NOT_FOUND) {
            LOG_WARN("trust anchor left out of the SPIFFE bundle: %s", mid_errmsg());
            continue;
        }
        MID_TRY(r, kr);
        MID_CHECK(r, json_array_append_new(keys, k) == 0, MID_E_NOMEM, "out of memory");
    }
    doc = json_pack("{s:O, s:I, s:i}", "keys", keys, "spiffe_sequence", (json_int_t)seq,
                    "spiffe_refresh_hint", BUNDLE_REFRESH_HINT);
    MID_CHECK(r, doc != NULL, MID_E_NOMEM, "out of memory");
    *out = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    MID_CHECK(r, *out != NULL, MID_E_NOMEM, "out of memory");
out:
    json_decref(doc);
    json_decref(keys);
    sk_X509_pop_free(anchors, X509_free);
    return r;
}
