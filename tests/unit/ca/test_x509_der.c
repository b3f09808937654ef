/* ca/der.c's writer and ca/x509.c's directly encoded SVIDs: the bytes are
 * exactly what OpenSSL writes when it builds the same certificate field by
 * field (the builder meshid used before, kept here as the reference), the
 * signature verifies with the issuer's key, and the writer never writes
 * past its buffer. */
#include <openssl/pem.h>
#include <pthread.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ca/der.h"
#include "ca/keys.h"
#include "ca/x509.h"
#include "tests/testlib/ca_fixtures.h"
#include "tests/unit/ca/ca_tests.h"

/* ---- the writer ---------------------------------------------------------------- */

/* One primitive of `n` bytes: its header is 2, 3, 4 or 5 bytes, as DER wants. */
static void t_writer_lengths(void **state)
{
    (void)state;
    static const size_t ns[] = {0, 1, 127, 128, 255, 256, 65535, 65536};
    static const size_t hdr[] = {2, 2, 2, 3, 3, 4, 4, 5};
    unsigned char *v = calloc(1, 70000), *buf = malloc(70010);
    assert_non_null(v);
    assert_non_null(buf);
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        der_writer w;
        der_w_init(&w, buf, 70010);
        der_w_prim(&w, DER_OCTET_STRING, v, ns[i]);
        assert_true(der_w_finish(&w));
        assert_int_equal(w.len, ns[i] + hdr[i]);
        /* the same through open/close: the reserved bytes are given back */
        der_w_init(&w, buf, 70010);
        der_w_open(&w, DER_SEQUENCE);
        der_w_raw(&w, v, ns[i]);
        der_w_close(&w);
        assert_true(der_w_finish(&w));
        assert_int_equal(w.len, ns[i] + hdr[i]);
        der_cursor c;
        der_tlv t;
        der_init(&c, buf, w.len);
        assert_true(der_read(&c, DER_SEQUENCE, &t)); /* our own reader agrees */
        assert_int_equal(t.value_len, ns[i]);
        assert_true(der_at_end(&c));
    }
    free(v);
    free(buf);
}

static void t_writer_nesting(void **state)
{
    (void)state;
    unsigned char buf[64];
    der_writer w;
    der_w_init(&w, buf, sizeof buf);
    der_w_open(&w, DER_SEQUENCE);
    der_w_open(&w, DER_SET);
    der_w_prim(&w, DER_INTEGER, "\x05", 1);
    der_w_close(&w);
    der_w_prim(&w, DER_NULL, NULL, 0);
    der_w_close(&w);
    assert_true(der_w_finish(&w));
    static const unsigned char want[] = {0x30, 0x07, 0x31, 0x03, 0x02, 0x01, 0x05, 0x05, 0x00};
    assert_int_equal(w.len, sizeof want);
    assert_memory_equal(buf, want, sizeof want);

    /* Too deep, unbalanced, closed too often: failed, and stays failed. */
    der_w_init(&w, buf, sizeof buf);
    for (int i = 0; i <= DER_MAX_DEPTH; i++) der_w_open(&w, DER_SEQUENCE);
    assert_false(der_w_finish(&w));
    der_w_init(&w, buf, sizeof buf);
    der_w_open(&w, DER_SEQUENCE);
    assert_false(der_w_finish(&w));
    der_w_init(&w, buf, sizeof buf);
    der_w_close(&w);
    assert_false(der_w_finish(&w));
    der_w_prim(&w, DER_NULL, NULL, 0);
    assert_int_equal(w.len, 0);
    der_w_init(&w, NULL, 10);
    der_w_raw(&w, "x", 1);
    assert_false(der_w_finish(&w));
}

/* Every write that does not fit fails without touching the byte after the
 * buffer. */
static void t_writer_bounds(void **state)
{
    (void)state;
    unsigned char buf[40];
    for (size_t cap = 0; cap < 30; cap++) {
        memset(buf, 0xee, sizeof buf);
        der_writer w;
        der_w_init(&w, buf, cap);
        der_w_open(&w, DER_SEQUENCE);
        der_w_prim(&w, DER_OCTET_STRING, "0123456789", 10);
        der_w_raw(&w, "abcdef", 6);
        der_w_close(&w);
        for (size_t i = cap; i < sizeof buf; i++) assert_int_equal(buf[i], 0xee);
        /* 1 + 4 reserved + 12 + 6 while open; 20 once closed */
        assert_int_equal(der_w_finish(&w), cap >= 23);
        if (der_w_finish(&w)) assert_int_equal(w.len, 20);
    }
}

/* ---- SVIDs against OpenSSL's own encoding ----------------------------------------- */

static mid_result add_ext(X509 *x, int nid, void *value, int crit)
{
    MID_ENSURE(X509_add1_ext_i2d(x, nid, value, crit, X509V3_ADD_DEFAULT) == 1, MID_E_CRYPTO,
               "add ext");
    return mid_ok();
}

/* The TBSCertificate OpenSSL builds for the same fields (the X509-based
 * builder meshid had): serial, validity and key are taken from `ours`. */
static unsigned char *reference_tbs(X509 *ours, X509 *issuer, EVP_PKEY *issuer_key,
                                    const char *uri, const char *const *dns, size_t n_dns,
                                    int *len)
{
    X509 *x = X509_new();
    assert_non_null(x);
    assert_int_equal(X509_set_version(x, X509_VERSION_3), 1);
    assert_int_equal(X509_set_serialNumber(x, X509_get_serialNumber(ours)), 1);
    assert_int_equal(X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "O", MBSTRING_ASC,
                                                (const unsigned char *)"meshid", -1, -1, 0),
                     1);
    assert_int_equal(X509_set_issuer_name(x, X509_get_subject_name(issuer)), 1);
    int64_t nb = 0, na = 0;
    assert_ok(ca_x509_validity(ours, &nb, &na));
    assert_non_null(ASN1_TIME_set(X509_getm_notBefore(x), (time_t)nb));
    assert_non_null(ASN1_TIME_set(X509_getm_notAfter(x), (time_t)na));
    assert_int_equal(X509_set_pubkey(x, X509_get0_pubkey(ours)), 1);

    BASIC_CONSTRAINTS *bc = BASIC_CONSTRAINTS_new();
    bc->ca = 0;
    assert_ok(add_ext(x, NID_basic_constraints, bc, 1));
    BASIC_CONSTRAINTS_free(bc);
    ASN1_BIT_STRING *ku = ASN1_BIT_STRING_new();
    ASN1_BIT_STRING_set_bit(ku, 0, 1);
    if (EVP_PKEY_get_base_id(X509_get0_pubkey(ours)) == EVP_PKEY_RSA)
        ASN1_BIT_STRING_set_bit(ku, 2, 1);
    assert_ok(add_ext(x, NID_key_usage, ku, 1));
    ASN1_BIT_STRING_free(ku);
    EXTENDED_KEY_USAGE *eku = sk_ASN1_OBJECT_new_null();
    sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_server_auth));
    sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_client_auth));
    assert_ok(add_ext(x, NID_ext_key_usage, eku, 0));
    sk_ASN1_OBJECT_free(eku);
    const unsigned char *pk = NULL;
    int pklen = 0;
    X509_PUBKEY_get0_param(NULL, &pk, &pklen, NULL, X509_get_X509_PUBKEY(x));
    unsigned char md[20];
    assert_int_equal(EVP_Digest(pk, (size_t)pklen, md, NULL, EVP_sha1(), NULL), 1);
    ASN1_OCTET_STRING *ski = ASN1_OCTET_STRING_new();
    ASN1_OCTET_STRING_set(ski, md, 20);
    assert_ok(add_ext(x, NID_subject_key_identifier, ski, 0));
    ASN1_OCTET_STRING_free(ski);
    AUTHORITY_KEYID *akid = AUTHORITY_KEYID_new();
    akid->keyid = ASN1_OCTET_STRING_dup(X509_get0_subject_key_id(issuer));
    assert_ok(add_ext(x, NID_authority_key_identifier, akid, 0));
    AUTHORITY_KEYID_free(akid);
    GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
    for (size_t i = 0; i <= n_dns; i++) {
        ASN1_IA5STRING *s = ASN1_IA5STRING_new();
        const char *v = i == 0 ? uri : dns[i - 1];
        ASN1_STRING_set(s, v, (int)strlen(v));
        GENERAL_NAME *g = GENERAL_NAME_new();
        GENERAL_NAME_set0_value(g, i == 0 ? GEN_URI : GEN_DNS, s);
        sk_GENERAL_NAME_push(gens, g);
    }
    assert_ok(add_ext(x, NID_subject_alt_name, gens, 0));
    GENERAL_NAMES_free(gens);
    /* Signing fills the TBS signature field the way X509_sign does. */
    assert_true(X509_sign(x, issuer_key, EVP_sha256()) > 0);
    unsigned char *der = NULL;
    *len = i2d_re_X509_tbs(x, &der);
    assert_true(*len > 0);
    X509_free(x);
    return der;
}

typedef struct {
    const char *issuer_key;
    const char *subject_key;
    size_t n_dns;
    int64_t nb_off, na_off; /* from now */
} svid_case;

/* A CA certificate of `issuer_key` as a ca_x509_issuer, and the SPKI of a
 * fresh `subject_key`. */
typedef struct {
    EVP_PKEY *ik, *sk;
    X509 *issuer;
    ca_x509_issuer is;
    unsigned char *spki_der;
    ca_spki info;
} svid_fixture;

static void fixture_init(svid_fixture *f, const char *issuer_key, const char *subject_key,
                         long not_after_off)
{
    memset(f, 0, sizeof *f);
    f->ik = cafx_key(issuer_key);
    f->sk = cafx_key(subject_key);
    cafx_cert_opts io = {.cn = "issuer", .key = f->ik, .is_ca = 1, .uri = "spiffe://example.org",
                         .not_after_off = not_after_off};
    f->issuer = cafx_cert(&io);
    assert_ok(ca_x509_issuer_init(&f->is, f->issuer, f->ik));
    int spki_len = i2d_PUBKEY(f->sk, &f->spki_der);
    assert_true(spki_len > 0);
    assert_ok(ca_key_from_spki(f->spki_der, (size_t)spki_len, &f->info, NULL));
}

static void fixture_clear(svid_fixture *f)
{
    OPENSSL_free(f->spki_der);
    ca_x509_issuer_clear(&f->is);
    X509_free(f->issuer);
    EVP_PKEY_free(f->sk);
    EVP_PKEY_free(f->ik);
}

static void check_case(const svid_case *k)
{
    svid_fixture f;
    fixture_init(&f, k->issuer_key, k->subject_key, 100L * 365 * 86400);
    EVP_PKEY *ik = f.ik;
    X509 *issuer = f.issuer;

    /* DNS names long enough to push the SAN past the one- and two-byte
     * length forms. */
    char names[32][128];
    const char *dns[32];
    for (size_t i = 0; i < k->n_dns; i++) {
        snprintf(names[i], sizeof names[i], "host-%02zu.%s.example.org", i,
                 "a-rather-long-label-to-make-the-extension-grow");
        dns[i] = names[i];
    }
    const char *uri = "spiffe://example.org/ns/default/sa/web";
    int64_t now = (int64_t)time(NULL);
    ca_x509_svid_params p = {.spki = &f.info, .spiffe_id = uri, .dns = dns, .n_dns = k->n_dns,
                             .not_before = now + k->nb_off, .not_after = now + k->na_off,
                             .issuer = &f.is};
    unsigned char *der = NULL;
    size_t der_len = 0;
    char serial[CA_SERIAL_HEX_LEN + 1];
    assert_ok(ca_x509_build_svid(&p, &der, &der_len, serial));

    /* One whole certificate, nothing after it, signed by the issuer. */
    const unsigned char *q = der;
    X509 *x = d2i_X509(NULL, &q, (long)der_len);
    assert_non_null(x);
    assert_ptr_equal(q, der + der_len);
    assert_int_equal(X509_verify(x, ik), 1);
    char got[CA_SERIAL_HEX_LEN + 1];
    assert_ok(ca_x509_serial_hex(x, got, sizeof got));
    assert_string_equal(got, serial);
    int64_t nb = 0, na = 0;
    assert_ok(ca_x509_validity(x, &nb, &na));
    assert_int_equal(nb, now + k->nb_off);
    assert_int_equal(na, now + k->na_off);

    /* Byte for byte what OpenSSL writes for the same certificate. */
    int ref_len = 0;
    unsigned char *ref = reference_tbs(x, issuer, ik, uri, dns, k->n_dns, &ref_len);
    unsigned char *tbs = NULL;
    int tbs_len = i2d_re_X509_tbs(x, &tbs); /* unmodified: the bytes as parsed */
    assert_int_equal(tbs_len, ref_len);
    assert_memory_equal(tbs, ref, (size_t)ref_len);
    /* and the whole certificate re-encodes to itself */
    unsigned char *re = NULL;
    int re_len = i2d_X509(x, &re);
    assert_int_equal((size_t)re_len, der_len);
    assert_memory_equal(re, der, der_len);

    /* PEM from the DER is what PEM_write_bio_X509 writes. */
    char *pem = NULL;
    assert_ok(ca_x509_der_append_pem(der, der_len, &pem));
    BIO *b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_X509(b, x), 1);
    char *mem = NULL;
    long mem_len = BIO_get_mem_data(b, &mem);
    assert_int_equal(strlen(pem), (size_t)mem_len);
    assert_memory_equal(pem, mem, (size_t)mem_len);
    BIO_free(b);

    free(pem);
    OPENSSL_free(re);
    OPENSSL_free(tbs);
    OPENSSL_free(ref);
    X509_free(x);
    free(der);
    fixture_clear(&f);
}

static void t_svid_matches_openssl(void **state)
{
    (void)state;
    static const svid_case cases[] = {
        {"ec-p256", "ec-p256", 0, -30, 3600},
        {"ec-p256", "ec-p384", 1, -30, 3600},
        {"ec-p256", "rsa-2048", 2, -30, 86400},      /* keyEncipherment too */
        {"rsa-2048", "ec-p256", 0, -30, 3600},       /* sha256WithRSAEncryption */
        {"ec-p384", "ec-p256", 0, -30, 3600},        /* ecdsa-with-SHA256 with P-384 */
        {"ec-p256", "ec-p256", 3, -30, 3600},        /* SAN over 127 bytes */
        {"ec-p256", "ec-p256", 32, -30, 3600},       /* over 255 bytes, CA_MAX_DNS */
        {"ec-p256", "rsa-4096", 0, -30, 7 * 86400},  /* a certificate over 1 KiB */
        /* notAfter after 2049: GeneralizedTime, as ASN1_TIME_set chooses */
        {"ec-p256", "ec-p256", 0, -30, 40L * 365 * 86400},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_case(&cases[i]);
}

static void t_svid_refusals(void **state)
{
    (void)state;
    EVP_PKEY *ik = cafx_key("ec-p256");
    cafx_cert_opts io = {.cn = "issuer", .key = ik, .is_ca = 1, .uri = "spiffe://example.org"};
    X509 *issuer = cafx_cert(&io);
    ca_x509_issuer is;
    assert_ok(ca_x509_issuer_init(&is, issuer, ik));
    unsigned char *spki_der = NULL;
    int spki_len = i2d_PUBKEY(ik, &spki_der);
    ca_spki info;
    assert_ok(ca_key_from_spki(spki_der, (size_t)spki_len, &info, NULL));
    unsigned char *der = NULL;
    size_t len = 0;
    char serial[CA_SERIAL_HEX_LEN + 1];
    ca_x509_svid_params p = {.spki = &info, .spiffe_id = "spiffe://example.org/w",
                             .not_before = 100, .not_after = 100, .issuer = &is};
    assert_fails_with(ca_x509_build_svid(&p, &der, &len, serial), MID_E_INVALID,
                      "empty validity");
    p.not_after = 253402300800; /* year 10000 */
    assert_fails_with(ca_x509_build_svid(&p, &der, &len, serial), MID_E_INVALID,
                      "cannot be encoded");
    p.not_after = 200;
    p.spki = NULL;
    assert_fails_with(ca_x509_build_svid(&p, &der, &len, serial), MID_E_INTERNAL, "missing");
    p.spki = &info;
    p.n_dns = 1; /* and no list */
    assert_fails_with(ca_x509_build_svid(&p, &der, &len, serial), MID_E_INTERNAL, "missing");
    assert_null(der);
    ca_x509_issuer_clear(&is);

    /* Only EC and RSA authorities can sign SVIDs. */
    EVP_PKEY *ed = cafx_key("ed25519");
    cafx_cert_opts eo = {.cn = "ed", .key = ed, .is_ca = 1, .uri = "spiffe://example.org"};
    X509 *edc = cafx_cert(&eo);
    assert_fails_with(ca_x509_issuer_init(&is, edc, ed), MID_E_INVALID, "EC or RSA");
    assert_null(is.name_der);
    assert_fails_with(ca_x509_der_append_pem(NULL, 0, &(char *){NULL}), MID_E_INVALID,
                      "no certificate");
    X509_free(edc);
    EVP_PKEY_free(ed);
    OPENSSL_free(spki_der);
    X509_free(issuer);
    EVP_PKEY_free(ik);
}

/* ---- signing contexts kept by the issuer ---------------------------------------- */

typedef struct {
    const ca_x509_issuer *is;
    EVP_PKEY *ik;
    const ca_spki *spki;
    int n, bad;
} sign_worker;

/* Builds w->n SVIDs; counts those whose signature does not verify or, for
 * RSA (deterministic), differs from a one-shot EVP_DigestSign over the same
 * TBS with the issuer key. */
static void *sign_worker_main(void *arg)
{
    sign_worker *w = arg;
    int64_t now = (int64_t)time(NULL);
    for (int i = 0; i < w->n; i++) {
        ca_x509_svid_params p = {.spki = w->spki, .spiffe_id = "spiffe://example.org/w",
                                 .not_before = now, .not_after = now + 3600, .issuer = w->is};
        unsigned char *der = NULL;
        size_t der_len = 0;
        char serial[CA_SERIAL_HEX_LEN + 1];
        if (!mid_is_ok(ca_x509_build_svid(&p, &der, &der_len, serial))) {
            w->bad++;
            continue;
        }
        const unsigned char *q = der;
        X509 *x = d2i_X509(NULL, &q, (long)der_len);
        if (x == NULL || X509_verify(x, w->ik) != 1) w->bad++;
        if (x != NULL && EVP_PKEY_get_base_id(w->ik) == EVP_PKEY_RSA) {
            unsigned char *tbs = NULL, ref[512];
            size_t ref_len = sizeof ref;
            int tbs_len = i2d_re_X509_tbs(x, &tbs);
            EVP_MD_CTX *md = EVP_MD_CTX_new();
            const ASN1_BIT_STRING *sig = NULL;
            X509_get0_signature(&sig, NULL, x);
            if (md == NULL || tbs_len <= 0 ||
                EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, w->ik) != 1 ||
                EVP_DigestSign(md, ref, &ref_len, tbs, (size_t)tbs_len) != 1 ||
                (size_t)ASN1_STRING_length(sig) != ref_len ||
                memcmp(ASN1_STRING_get0_data(sig), ref, ref_len) != 0)
                w->bad++;
            EVP_MD_CTX_free(md);
            OPENSSL_free(tbs);
        }
        X509_free(x);
        free(der);
    }
    return NULL;
}

/* Many certificates from one issuer on several threads at once: each takes
 * a prepared signing context from the issuer's pool and gives it back, so
 * most signatures come from a reused context; every one must verify (and,
 * for RSA, be the exact PKCS #1 v1.5 signature). */
static void t_svid_signing_contexts_reused(void **state)
{
    (void)state;
    static const char *const keys[] = {"ec-p256", "rsa-2048", "ec-p384"};
    enum { THREADS = 4 };
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        svid_fixture f;
        fixture_init(&f, keys[k], "ec-p256", 86400);
        sign_worker w[THREADS];
        pthread_t th[THREADS];
        for (int i = 0; i < THREADS; i++) {
            w[i] = (sign_worker){.is = &f.is, .ik = f.ik, .spki = &f.info, .n = 25};
            assert_int_equal(pthread_create(&th[i], NULL, sign_worker_main, &w[i]), 0);
        }
        for (int i = 0; i < THREADS; i++) {
            assert_int_equal(pthread_join(th[i], NULL), 0);
            assert_int_equal(w[i].bad, 0);
        }
        /* and once more on this thread, after the pool has filled */
        sign_worker one = {.is = &f.is, .ik = f.ik, .spki = &f.info, .n = 3};
        sign_worker_main(&one);
        assert_int_equal(one.bad, 0);
        fixture_clear(&f);
    }
}

int ca_test_x509_der(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_writer_lengths),      cmocka_unit_test(t_writer_nesting),
        cmocka_unit_test(t_writer_bounds),       cmocka_unit_test(t_svid_matches_openssl),
        cmocka_unit_test(t_svid_refusals),       cmocka_unit_test(t_svid_signing_contexts_reused),
    };
    return cmocka_run_group_tests_name("ca/x509 DER", tests, NULL, NULL);
}
