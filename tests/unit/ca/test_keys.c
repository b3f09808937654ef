/* ca/keys.c and ca/codec.c: key generation, PEM, files, fingerprints, the
 * accepted-key policy, and the strict base64 codec. */
#include <openssl/core_names.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ca/codec.h"
#include "ca/keys.h"
#include "tests/testlib/ca_fixtures.h"
#include "tests/unit/ca/ca_tests.h"

static void t_key_type_parse(void **state)
{
    (void)state;
    ca_key_type t;
    assert_ok(ca_key_type_parse("ec-p256", &t));
    assert_int_equal(t, CA_KEY_EC_P256);
    assert_ok(ca_key_type_parse("rsa-2048", &t));
    assert_int_equal(t, CA_KEY_RSA_2048);
    assert_fails_with(ca_key_type_parse("ec-p384", &t), MID_E_INVALID, "unknown key type");
    assert_fails_with(ca_key_type_parse("", &t), MID_E_INVALID, "unknown key type");
    assert_fails_with(ca_key_type_parse(NULL, &t), MID_E_INVALID, "missing key type");
}

static void roundtrip(ca_key_type t, const char *desc)
{
    EVP_PKEY *k = NULL, *back = NULL;
    char *pem = NULL;
    size_t len = 0;
    char d[64];
    assert_ok(ca_key_generate(t, &k));
    ca_key_describe(k, d, sizeof d);
    assert_string_equal(d, desc);
    assert_ok(ca_key_to_pem(k, &pem, &len));
    assert_int_equal(strlen(pem), len);
    assert_non_null(strstr(pem, "-----BEGIN PRIVATE KEY-----")); /* PKCS#8 */
    assert_ok(ca_key_from_pem(pem, len, "test", &back));
    assert_int_equal(EVP_PKEY_eq(k, back), 1);
    ca_key_pem_free(pem, len);
    EVP_PKEY_free(k);
    EVP_PKEY_free(back);
}

static void t_key_generate_roundtrip(void **state)
{
    (void)state;
    roundtrip(CA_KEY_EC_P256, "ec-p256");
    roundtrip(CA_KEY_RSA_2048, "rsa-2048");
    EVP_PKEY *k = NULL;
    assert_fails_with(ca_key_generate((ca_key_type)99, &k), MID_E_INVALID, "unknown key type");
}

static void t_key_save_load_0600(void **state)
{
    (void)state;
    char *dir = cafx_tmpdir(), path[512];
    snprintf(path, sizeof path, "%s/k.key", dir);
    EVP_PKEY *k = cafx_key("ec-p256"), *back = NULL;
    assert_ok(ca_key_save(path, k));
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_ok(ca_key_load(path, &back));
    assert_int_equal(EVP_PKEY_eq(k, back), 1);
    EVP_PKEY_free(back);

    snprintf(path, sizeof path, "%s/missing.key", dir);
    assert_fails_with(ca_key_load(path, &back), MID_E_NOT_FOUND, "missing.key");
    snprintf(path, sizeof path, "%s/garbage.key", dir);
    cafx_write_text(path, "not a key\n");
    assert_fails_with(ca_key_load(path, &back), MID_E_INVALID, "not an unencrypted PEM");

    /* An encrypted key is refused without prompting for a passphrase. */
    BIO *b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PrivateKey(b, k, EVP_aes_256_cbc(), NULL, 0, NULL,
                                              (void *)"secret"), 1);
    char *data = NULL;
    long n = BIO_get_mem_data(b, &data);
    assert_fails_with(ca_key_from_pem(data, (size_t)n, "enc.key", &back), MID_E_INVALID,
                      "enc.key");
    BIO_free(b);
    EVP_PKEY_free(k);
    cafx_rmtree(dir);
    free(dir);
}

static void t_key_fingerprint(void **state)
{
    (void)state;
    EVP_PKEY *a = cafx_key("ec-p256"), *b = cafx_key("ec-p256");
    char fa[CA_FP_HEX_LEN + 1], fa2[CA_FP_HEX_LEN + 1], fb[CA_FP_HEX_LEN + 1];
    assert_ok(ca_key_fingerprint(a, fa));
    assert_ok(ca_key_fingerprint(a, fa2));
    assert_ok(ca_key_fingerprint(b, fb));
    assert_int_equal(strlen(fa), 64);
    assert_string_equal(fa, fa2);
    assert_string_not_equal(fa, fb);
    /* SHA-256 over the DER SubjectPublicKeyInfo, lowercase hex. */
    unsigned char *der = NULL, md[32];
    int n = i2d_PUBKEY(a, &der);
    assert_true(n > 0);
    assert_int_equal(EVP_Digest(der, (size_t)n, md, NULL, EVP_sha256(), NULL), 1);
    char hex[65];
    ca_hex_encode(md, 32, hex);
    assert_string_equal(fa, hex);
    OPENSSL_free(der);
    EVP_PKEY_free(a);
    EVP_PKEY_free(b);
}

static void t_key_matches_cert(void **state)
{
    (void)state;
    EVP_PKEY *a = cafx_key("ec-p256"), *b = cafx_key("ec-p256");
    X509 *x = cafx_cert(&(cafx_cert_opts){.cn = "a", .key = a, .is_ca = 1});
    assert_ok(ca_key_matches_cert(a, x, "a"));
    assert_fails_with(ca_key_matches_cert(b, x, "pair b"), MID_E_INVALID, "does not match");
    X509_free(x);
    EVP_PKEY_free(a);
    EVP_PKEY_free(b);
}

static void expect_policy(const char *spec, int accepted)
{
    EVP_PKEY *k = cafx_key(spec);
    if (accepted)
        assert_ok(ca_key_check_accepted(k));
    else
        assert_fails_with(ca_key_check_accepted(k), MID_E_INVALID, "unsupported key");
    EVP_PKEY_free(k);
}

static void t_key_policy(void **state)
{
    (void)state;
    expect_policy("ec-p256", 1);
    expect_policy("ec-p384", 1);
    expect_policy("rsa-2048", 1);
    expect_policy("rsa-3072", 1);
    expect_policy("rsa-4096", 1);
    expect_policy("ec-p521", 0);
    expect_policy("rsa-1024", 0);
    expect_policy("ed25519", 0);
    expect_policy("ec-p256-explicit", 0);
}

static void t_codec_b64(void **state)
{
    (void)state;
    static const struct { const char *in, *std, *url; } v[] = {
        {"", "", ""},         {"f", "Zg==", "Zg"},         {"fo", "Zm8=", "Zm8"},
        {"foo", "Zm9v", "Zm9v"}, {"foob", "Zm9vYg==", "Zm9vYg"}, {"\xfb\xff", "+/8=", "-_8"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char *s = NULL;
        assert_ok(ca_b64_encode((const unsigned char *)v[i].in, strlen(v[i].in), &s));
        assert_string_equal(s, v[i].std);
        free(s);
        assert_ok(ca_b64url_encode((const unsigned char *)v[i].in, strlen(v[i].in), &s));
        assert_string_equal(s, v[i].url);
        free(s);
        if (v[i].std[0] == '\0') continue;
        unsigned char *d = NULL;
        size_t dl = 0;
        assert_ok(ca_b64_decode(v[i].std, strlen(v[i].std), 100, "t", &d, &dl));
        assert_int_equal(dl, strlen(v[i].in));
        assert_memory_equal(d, v[i].in, dl);
        free(d);
    }
    static const char *bad[] = {"", "Zg=", "Zg", "Z===", "====", "Zh==", "Zm9=", "Zg==Zg==",
                                "Zm 9", "Zm-v", "Zm_v", "Z=9v"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        unsigned char *d = NULL;
        size_t dl = 0;
        mid_result r = ca_b64_decode(bad[i], strlen(bad[i]), 100, "t", &d, &dl);
        if (r.err != MID_E_INVALID) fail_msg("'%s' decoded", bad[i]);
    }
    unsigned char *d = NULL;
    size_t dl = 0;
    assert_fails_with(ca_b64_decode("Zm9vYg==", 8, 3, "t", &d, &dl), MID_E_TOO_LARGE, "limit");
}

/* The SubjectPublicKeyInfo DER of `k` (OPENSSL_free). */
static unsigned char *spki_of(EVP_PKEY *k, size_t *len)
{
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(k, &der);
    assert_true(n > 0);
    *len = (size_t)n;
    return der;
}

/* ca_key_from_spki against the EVP_PKEY path: same policy verdicts, the same
 * key, and the same fingerprint as ca_key_fingerprint (i2d_PUBKEY). */
static void t_key_spki_policy(void **state)
{
    (void)state;
    static const struct { const char *spec; int ok; const char *needle; int nid, curve, bits; } v[] = {
        {"ec-p256", 1, NULL, NID_X9_62_id_ecPublicKey, NID_X9_62_prime256v1, 256},
        {"ec-p384", 1, NULL, NID_X9_62_id_ecPublicKey, NID_secp384r1, 384},
        {"rsa-2048", 1, NULL, NID_rsaEncryption, NID_undef, 2048},
        {"ec-p521", 0, "unsupported key ec-secp521r1", 0, 0, 0},
        {"rsa-1024", 0, "unsupported key rsa-1024", 0, 0, 0},
        {"ed25519", 0, "unsupported key ed25519", 0, 0, 0},
        {"ec-p256-explicit", 0, "unsupported key ec-explicit-parameters", 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        EVP_PKEY *k = cafx_key(v[i].spec), *got = NULL;
        size_t len = 0;
        unsigned char *der = spki_of(k, &len);
        ca_spki info;
        mid_result r = ca_key_from_spki(der, len, &info, &got);
        assert_int_equal(mid_is_ok(r), mid_is_ok(ca_key_check_accepted(k)));
        if (v[i].ok) {
            assert_ok(r);
            assert_int_equal(EVP_PKEY_eq(got, k), 1);
            assert_int_equal(info.key_nid, v[i].nid);
            assert_int_equal(info.curve_nid, v[i].curve);
            assert_int_equal(info.bits, v[i].bits);
            assert_ptr_equal(info.der, der);
            assert_int_equal(info.der_len, len);
            char f_old[CA_FP_HEX_LEN + 1], f_new[CA_FP_HEX_LEN + 1];
            assert_ok(ca_key_fingerprint(k, f_old));
            assert_ok(ca_key_fingerprint_spki(info.der, info.der_len, f_new));
            assert_string_equal(f_old, f_new);
        } else {
            assert_fails_with(r, MID_E_INVALID, v[i].needle);
            assert_null(got);
        }
        EVP_PKEY_free(got);
        OPENSSL_free(der);
        EVP_PKEY_free(k);
    }
}

static void expect_spki_refused(const unsigned char *der, size_t len, const char *needle)
{
    ca_spki info;
    EVP_PKEY *got = NULL;
    assert_fails_with(ca_key_from_spki(der, len, &info, &got), MID_E_INVALID, needle);
    assert_null(got);
}

/* EC points: EVP_PKEY_fromdata/EC_KEY_oct2key check that a point is on the
 * curve; the shape check refuses the point at infinity (which OpenSSL
 * would take) and the hybrid form. */
static void t_key_spki_ec_points(void **state)
{
    (void)state;
    EVP_PKEY *k = cafx_key("ec-p256"), *got = NULL;
    size_t len = 0;
    unsigned char *der = spki_of(k, &len);
    assert_int_equal(len, 91); /* 30 59 | 30 13 <alg> | 03 42 00 04 X Y */
    assert_int_equal(der[26], 0x04);
    ca_spki info;

    unsigned char *m = malloc(len + 1);
    memcpy(m, der, len);
    m[len - 1] ^= 0x01; /* y changed: off the curve */
    expect_spki_refused(m, len, "not a point of the curve");
    memcpy(m, der, len);
    m[26] = (unsigned char)(0x06 | (der[len - 1] & 1)); /* hybrid form */
    expect_spki_refused(m, len, "not an encoded point");
    memcpy(m, der, len);
    m[len] = 0;
    expect_spki_refused(m, len + 1, "data after the SubjectPublicKeyInfo");
    expect_spki_refused(der, len - 1, "length runs past the end");
    /* the point at infinity: 30 19 | 30 13 <alg> | 03 02 00 00 */
    unsigned char inf[27];
    memcpy(inf, der, 23);
    inf[1] = 0x19;
    inf[23] = 0x03, inf[24] = 0x02, inf[25] = 0x00, inf[26] = 0x00;
    expect_spki_refused(inf, sizeof inf, "not an encoded point");
    /* BER: a long-form length where the short form fits */
    unsigned char ber[92];
    ber[0] = 0x30, ber[1] = 0x81, ber[2] = 0x59;
    memcpy(ber + 3, der + 2, len - 2);
    expect_spki_refused(ber, sizeof ber, "non-minimal length");

    /* the compressed form is accepted, as by d2i_PUBKEY, and is the same key */
    EVP_PKEY *c = EVP_PKEY_dup(k);
    assert_int_equal(EVP_PKEY_set_utf8_string_param(c, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT,
                                                    "compressed"),
                     1);
    size_t clen = 0;
    unsigned char *cder = spki_of(c, &clen);
    assert_int_equal(clen, 59);
    assert_ok(ca_key_from_spki(cder, clen, &info, &got));
    assert_int_equal(EVP_PKEY_eq(got, k), 1);
    char f_old[CA_FP_HEX_LEN + 1], f_new[CA_FP_HEX_LEN + 1];
    const unsigned char *p = cder;
    EVP_PKEY *decoded = d2i_PUBKEY(NULL, &p, (long)clen);
    assert_non_null(decoded);
    assert_ok(ca_key_fingerprint(decoded, f_old));
    assert_ok(ca_key_fingerprint_spki(cder, clen, f_new));
    assert_string_equal(f_old, f_new);
    EVP_PKEY_free(decoded);
    EVP_PKEY_free(got);
    OPENSSL_free(cder);
    EVP_PKEY_free(c);
    free(m);
    OPENSSL_free(der);
    EVP_PKEY_free(k);
}

/* An RSA public key with modulus `bits_of` (taken from a real key) and
 * exponent `e`, as SPKI DER. */
static unsigned char *rsa_spki(EVP_PKEY *bits_of, unsigned long e, size_t *len)
{
    BIGNUM *n = NULL, *be = BN_new();
    assert_int_equal(EVP_PKEY_get_bn_param(bits_of, OSSL_PKEY_PARAM_RSA_N, &n), 1);
    assert_int_equal(BN_set_word(be, e), 1);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n);
    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be);
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    EVP_PKEY *k = NULL;
    assert_int_equal(EVP_PKEY_fromdata_init(ctx), 1);
    assert_int_equal(EVP_PKEY_fromdata(ctx, &k, EVP_PKEY_PUBLIC_KEY, params), 1);
    unsigned char *der = spki_of(k, len);
    EVP_PKEY_free(k);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(be);
    return der;
}

static void t_key_spki_rsa(void **state)
{
    (void)state;
    EVP_PKEY *k = cafx_key("rsa-2048");
    size_t len = 0;
    unsigned char *der = rsa_spki(k, 65537, &len);
    ca_spki info;
    EVP_PKEY *got = NULL;
    assert_ok(ca_key_from_spki(der, len, &info, &got));
    assert_int_equal(EVP_PKEY_eq(got, k), 1);
    EVP_PKEY_free(got);
    OPENSSL_free(der);
    static const unsigned long bad_e[] = {65536, 1};
    for (size_t i = 0; i < 2; i++) {
        der = rsa_spki(k, bad_e[i], &len);
        expect_spki_refused(der, len, "exponent must be odd and >= 3");
        OPENSSL_free(der);
    }
    /* parameters absent instead of NULL: 30 82 01 22 | 30 0d 06 09 <rsa> 05 00 | 03 ... */
    der = spki_of(k, &len);
    assert_int_equal(der[17], 0x05);
    unsigned char *m = malloc(len);
    memcpy(m, der, 17);
    memcpy(m + 17, der + 19, len - 19);
    m[3] = (unsigned char)(m[3] - 2);
    m[5] = 0x0b;
    expect_spki_refused(m, len - 2, "RSA parameters must be NULL");
    free(m);
    OPENSSL_free(der);
    EVP_PKEY_free(k);
}

int ca_test_keys(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_key_type_parse),   cmocka_unit_test(t_key_generate_roundtrip),
        cmocka_unit_test(t_key_save_load_0600), cmocka_unit_test(t_key_fingerprint),
        cmocka_unit_test(t_key_matches_cert), cmocka_unit_test(t_key_policy),
        cmocka_unit_test(t_codec_b64),        cmocka_unit_test(t_key_spki_policy),
        cmocka_unit_test(t_key_spki_ec_points), cmocka_unit_test(t_key_spki_rsa),
    };
    return cmocka_run_group_tests_name("ca/keys", tests, NULL, NULL);
}
