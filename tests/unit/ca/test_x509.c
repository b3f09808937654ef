/* ca/x509.c: serials, DNS names, and the root/intermediate builders. */
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ca/codec.h"
#include "ca/x509.h"
#include "tests/testlib/ca_fixtures.h"
#include "tests/unit/ca/ca_tests.h"

static void t_serials(void **state)
{
    (void)state;
    char seen[64][CA_SERIAL_HEX_LEN + 1];
    for (int i = 0; i < 64; i++) {
        ASN1_INTEGER *s = NULL;
        assert_ok(ca_x509_new_serial(&s, seen[i]));
        assert_int_equal(ASN1_STRING_type(s), V_ASN1_INTEGER); /* positive */
        assert_int_equal(ASN1_STRING_length(s), CA_SERIAL_LEN);
        const unsigned char *d = ASN1_STRING_get0_data(s);
        assert_true(d[0] != 0 && d[0] < 0x80);
        char hex[CA_SERIAL_HEX_LEN + 1];
        ca_hex_encode(d, CA_SERIAL_LEN, hex);
        assert_string_equal(hex, seen[i]);
        for (int j = 0; j < i; j++) assert_string_not_equal(seen[i], seen[j]);
        ASN1_INTEGER_free(s);
    }
}

static void t_dns_names(void **state)
{
    (void)state;
    char max[254], over[255], label63[70], label64[70];
    memset(max, 'a', sizeof max - 1);
    max[sizeof max - 1] = '\0';
    for (size_t i = 63; i < 253; i += 64) max[i] = '.'; /* labels of 63 */
    memset(over, 'a', sizeof over - 1);
    over[sizeof over - 1] = '\0';
    for (size_t i = 63; i < 254; i += 64) over[i] = '.';
    memset(label63, 'b', 63);
    memcpy(label63 + 63, ".org", 5);
    memset(label64, 'b', 64);
    memcpy(label64 + 64, ".org", 5);
    const char *good[] = {"a", "web.example.org", "*.example.org", "x-1.y2.Z3", "123.example",
                          max, label63};
    const char *bad[] = {"", "-a.example.org", "a-.example.org", "a..b", "a.b.", ".a", "a_b",
                         "a b", "a.*.b", "*", "*.", "**.a", "caf\xc3\xa9.org", "a/b", over,
                         label64};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) assert_ok(ca_x509_check_dns_name(good[i]));
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mid_result r = ca_x509_check_dns_name(bad[i]);
        if (r.err != MID_E_INVALID) fail_msg("DNS name '%s' accepted", bad[i]);
    }
    assert_fails_with(ca_x509_check_dns_name(NULL), MID_E_INVALID, "empty");
}

/* Exactly these keyUsage bits, critical. */
static void assert_key_usage(X509 *x, uint32_t want)
{
    int crit = -1;
    ASN1_BIT_STRING *ku = X509_get_ext_d2i(x, NID_key_usage, &crit, NULL);
    assert_non_null(ku);
    assert_int_equal(crit, 1);
    ASN1_BIT_STRING_free(ku);
    assert_int_equal(X509_get_key_usage(x), want);
}

static void assert_uri_san(X509 *x, const char *uri)
{
    int crit = -1;
    GENERAL_NAMES *g = X509_get_ext_d2i(x, NID_subject_alt_name, &crit, NULL);
    assert_non_null(g);
    assert_int_equal(crit, 0);
    assert_int_equal(sk_GENERAL_NAME_num(g), 1);
    const GENERAL_NAME *n = sk_GENERAL_NAME_value(g, 0);
    assert_int_equal(n->type, GEN_URI);
    assert_string_equal((const char *)ASN1_STRING_get0_data(n->d.uniformResourceIdentifier), uri);
    GENERAL_NAMES_free(g);
}

static void t_root_and_intermediate(void **state)
{
    (void)state;
    EVP_PKEY *rk = cafx_key("ec-p256"), *ik = cafx_key("ec-p256");
    int64_t now = (int64_t)time(NULL);
    X509 *root = NULL, *inter = NULL;
    ca_x509_authority_params rp = {.trust_domain = "example.org", .key = rk,
                                   .not_before = now - 30, .not_after = now + 86400};
    assert_ok(ca_x509_build_root(&rp, &root));
    /* Asks for ten days under a one-day root. */
    ca_x509_authority_params ip = {.trust_domain = "example.org", .key = ik,
                                   .not_before = now - 30, .not_after = now + 10 * 86400,
                                   .issuer = root, .issuer_key = rk};
    assert_ok(ca_x509_build_intermediate(&ip, &inter));

    /* Root: self-signed v3, CA:TRUE critical without pathlen, keyCertSign+cRLSign. */
    assert_int_equal(X509_get_version(root), X509_VERSION_3);
    assert_int_equal(X509_check_issued(root, root), X509_V_OK);
    assert_int_equal(X509_verify(root, rk), 1);
    uint32_t fl = X509_get_extension_flags(root);
    assert_true(fl & EXFLAG_CA);
    assert_int_equal(X509_get_pathlen(root), -1);
    int crit = -1;
    BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(root, NID_basic_constraints, &crit, NULL);
    assert_non_null(bc);
    assert_int_equal(crit, 1);
    BASIC_CONSTRAINTS_free(bc);
    assert_key_usage(root, KU_KEY_CERT_SIGN | KU_CRL_SIGN);
    assert_non_null(X509_get0_subject_key_id(root));
    assert_uri_san(root, "spiffe://example.org");
    char *subj = X509_NAME_oneline(X509_get_subject_name(root), NULL, 0);
    assert_string_equal(subj, "/O=meshid/CN=meshid root example.org");
    OPENSSL_free(subj);
    assert_int_equal(X509_get_signature_nid(root), NID_ecdsa_with_SHA256);

    /* Intermediate: pathlen 0, AKI = root SKI, signed by the root, clamped. */
    assert_int_equal(X509_verify(inter, rk), 1);
    assert_int_equal(X509_get_pathlen(inter), 0);
    assert_key_usage(inter, KU_KEY_CERT_SIGN | KU_CRL_SIGN);
    const ASN1_OCTET_STRING *aki = X509_get0_authority_key_id(inter);
    assert_non_null(aki);
    assert_int_equal(ASN1_OCTET_STRING_cmp(aki, X509_get0_subject_key_id(root)), 0);
    assert_uri_san(inter, "spiffe://example.org");
    int64_t rna = 0, ina = 0;
    assert_ok(ca_x509_validity(root, NULL, &rna));
    assert_ok(ca_x509_validity(inter, NULL, &ina));
    assert_int_equal(ina, rna);
    assert_int_equal(rna, now + 86400);

    /* The SKI is RFC 5280 method 1, and the authority id is its hex. */
    const unsigned char *pk = NULL;
    int pklen = 0;
    X509_PUBKEY_get0_param(NULL, &pk, &pklen, NULL, X509_get_X509_PUBKEY(root));
    unsigned char md[20];
    EVP_Digest(pk, (size_t)pklen, md, NULL, EVP_sha1(), NULL);
    char want[41], id[CA_KEY_ID_HEX_MAX];
    ca_hex_encode(md, 20, want);
    assert_ok(ca_x509_key_id_hex(root, id));
    assert_string_equal(id, want);

    STACK_OF(X509) *anchors = sk_X509_new_null();
    sk_X509_push(anchors, root);
    assert_int_equal(cafx_verify(inter, NULL, anchors), X509_V_OK);
    assert_ok(ca_x509_check_signing_ca(inter, "inter"));
    char td[SPIFFE_TD_MAX + 1];
    assert_ok(ca_x509_signing_trust_domain(inter, td));
    assert_string_equal(td, "example.org");
    sk_X509_free(anchors);
    X509_free(root);
    X509_free(inter);
    EVP_PKEY_free(rk);
    EVP_PKEY_free(ik);
}

static void t_long_trust_domain(void **state)
{
    (void)state;
    char td[201];
    memset(td, 'a', 200);
    td[200] = '\0';
    td[100] = '.';
    EVP_PKEY *k = cafx_key("ec-p256");
    int64_t now = (int64_t)time(NULL);
    X509 *root = NULL;
    ca_x509_authority_params rp = {.trust_domain = td, .key = k, .not_before = now,
                                   .not_after = now + 60};
    assert_ok(ca_x509_build_root(&rp, &root));
    char uri[300];
    snprintf(uri, sizeof uri, "spiffe://%s", td);
    assert_uri_san(root, uri); /* the whole name in the SAN; the CN is shortened to 64 */
    X509_NAME_ENTRY *cn = X509_NAME_get_entry(X509_get_subject_name(root),
                                              X509_NAME_get_index_by_NID(X509_get_subject_name(root),
                                                                         NID_commonName, -1));
    assert_int_equal(ASN1_STRING_length(X509_NAME_ENTRY_get_data(cn)), 64);
    X509_free(root);
    EVP_PKEY_free(k);
}

static void t_signing_ca_checks(void **state)
{
    (void)state;
    EVP_PKEY *k = cafx_key("ec-p256");
    X509 *leaf = cafx_cert(&(cafx_cert_opts){.cn = "leaf", .key = k, .uri = "spiffe://x.org/a"});
    X509 *bare = cafx_cert(&(cafx_cert_opts){.cn = "bare", .key = k, .no_ext = 1});
    X509 *two = cafx_cert(&(cafx_cert_opts){.cn = "ca", .key = k, .is_ca = 1,
                                            .uri = "spiffe://x.org/path"});
    char td[SPIFFE_TD_MAX + 1];
    assert_fails_with(ca_x509_check_signing_ca(leaf, "leaf"), MID_E_INVALID, "not a CA");
    assert_fails_with(ca_x509_check_signing_ca(bare, "bare"), MID_E_INVALID, "not a CA");
    assert_fails_with(ca_x509_signing_trust_domain(bare, td), MID_E_NOT_FOUND, "spiffe");
    assert_fails_with(ca_x509_signing_trust_domain(two, td), MID_E_INVALID, "must not have a path");
    X509_free(leaf);
    X509_free(bare);
    X509_free(two);
    EVP_PKEY_free(k);
}

static void t_stack_from_pem(void **state)
{
    (void)state;
    STACK_OF(X509) *sk = NULL;
    const char *junk = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
    assert_fails_with(ca_x509_stack_from_pem("", 0, "f.pem", &sk), MID_E_INVALID, "f.pem");
    assert_fails_with(ca_x509_stack_from_pem("text", 4, "f.pem", &sk), MID_E_INVALID,
                      "no PEM certificate");
    assert_fails_with(ca_x509_stack_from_pem(junk, strlen(junk), "f.pem", &sk), MID_E_INVALID,
                      "f.pem");
    const char *bad = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
    assert_fails_with(ca_x509_stack_from_pem(bad, strlen(bad), "f.pem", &sk), MID_E_INVALID,
                      "does not parse");
    assert_null(sk);
}

int ca_test_x509(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_serials),           cmocka_unit_test(t_dns_names),
        cmocka_unit_test(t_root_and_intermediate), cmocka_unit_test(t_long_trust_domain),
        cmocka_unit_test(t_signing_ca_checks), cmocka_unit_test(t_stack_from_pem),
    };
    return cmocka_run_group_tests_name("ca/x509", tests, NULL, NULL);
}
