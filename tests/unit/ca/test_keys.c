/* ca/keys.c and ca/codec.c: key generation, PEM, files, fingerprints, the
 * accepted-key policy, and the strict base64 codec. */
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

int ca_test_keys(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_key_type_parse),   cmocka_unit_test(t_key_generate_roundtrip),
        cmocka_unit_test(t_key_save_load_0600), cmocka_unit_test(t_key_fingerprint),
        cmocka_unit_test(t_key_matches_cert), cmocka_unit_test(t_key_policy),
        cmocka_unit_test(t_codec_b64),
    };
    return cmocka_run_group_tests_name("ca/keys", tests, NULL, NULL);
}
