#include "tests/testlib/ca_fixtures.h"

#include <ftw.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/fsutil.h"

static void die(const char *what)
{
    fprintf(stderr, "fixture failure: %s\n", what);
    abort();
}

char *cafx_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char tmpl[512];
    snprintf(tmpl, sizeof tmpl, "%s/meshid-ca-test-XXXXXX", base ? base : "/tmp");
    if (mkdtemp(tmpl) == NULL) die("mkdtemp");
    return strdup(tmpl);
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void cafx_rmtree(const char *dir)
{
    if (dir != NULL) (void)nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

void cafx_db_path(const char *dir, char *out, size_t cap)
{
    snprintf(out, cap, "%s/meshid.db", dir);
}

store *cafx_store_open(const char *dir)
{
    char path[1024];
    cafx_db_path(dir, path, sizeof path);
    store *st = NULL;
    if (!mid_is_ok(store_open(path, NULL, &st))) die(mid_errmsg());
    return st;
}

/* P-256 written with explicit curve parameters instead of the curve's OID. */
static EVP_PKEY *explicit_p256(void)
{
    char group[] = "P-256", enc[] = "explicit";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("group", group, 0),
                           OSSL_PARAM_construct_utf8_string("encoding", enc, 0),
                           OSSL_PARAM_construct_end()};
    EVP_PKEY *k = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (ctx == NULL || EVP_PKEY_keygen_init(ctx) != 1 || EVP_PKEY_CTX_set_params(ctx, params) != 1 ||
        EVP_PKEY_generate(ctx, &k) != 1)
        k = NULL;
    EVP_PKEY_CTX_free(ctx);
    return k;
}

EVP_PKEY *cafx_key(const char *spec)
{
    EVP_PKEY *k = NULL;
    if (strcmp(spec, "ec-p256") == 0) k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    else if (strcmp(spec, "ec-p384") == 0) k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    else if (strcmp(spec, "ec-p521") == 0) k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-521");
    else if (strcmp(spec, "rsa-1024") == 0) k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    else if (strcmp(spec, "rsa-2048") == 0) k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    else if (strcmp(spec, "rsa-3072") == 0) k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)3072);
    else if (strcmp(spec, "rsa-4096") == 0) k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)4096);
    else if (strcmp(spec, "ed25519") == 0) k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    else if (strcmp(spec, "ec-p256-explicit") == 0) k = explicit_p256();
    if (k == NULL) die(spec);
    return k;
}

static const EVP_MD *md_for(EVP_PKEY *k)
{
    int id = EVP_PKEY_get_base_id(k);
    return id == EVP_PKEY_ED25519 || id == EVP_PKEY_ED448 ? NULL : EVP_sha256();
}

static unsigned char *bio_take(BIO *b, size_t *len)
{
    char *data = NULL;
    long n = BIO_get_mem_data(b, &data);
    if (n < 0) die("BIO_get_mem_data");
    unsigned char *out = malloc((size_t)n + 1);
    if (out == NULL) die("malloc");
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
    *len = (size_t)n;
    return out;
}

unsigned char *cafx_csr(EVP_PKEY *k, const char *const *uris, const char *dns, int der,
                      size_t *len)
{
    X509_REQ *req = X509_REQ_new();
    X509_NAME *name = X509_NAME_new();
    if (!req || !name || X509_REQ_set_version(req, X509_REQ_VERSION_1) != 1 ||
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"workload",
                                   -1, -1, 0) != 1 ||
        X509_REQ_set_subject_name(req, name) != 1 || X509_REQ_set_pubkey(req, k) != 1)
        die("csr setup");
    if ((uris != NULL && uris[0] != NULL) || dns != NULL) {
        GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
        for (size_t i = 0; uris != NULL && uris[i] != NULL; i++) {
            ASN1_IA5STRING *s = ASN1_IA5STRING_new();
            GENERAL_NAME *g = GENERAL_NAME_new();
            ASN1_STRING_set(s, uris[i], -1);
            GENERAL_NAME_set0_value(g, GEN_URI, s);
            sk_GENERAL_NAME_push(gens, g);
        }
        if (dns != NULL) {
            ASN1_IA5STRING *s = ASN1_IA5STRING_new();
            GENERAL_NAME *g = GENERAL_NAME_new();
            ASN1_STRING_set(s, dns, -1);
            GENERAL_NAME_set0_value(g, GEN_DNS, s);
            sk_GENERAL_NAME_push(gens, g);
        }
        STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
        X509_EXTENSION *ext = X509V3_EXT_i2d(NID_subject_alt_name, 0, gens);
        sk_X509_EXTENSION_push(exts, ext);
        if (X509_REQ_add_extensions(req, exts) != 1) die("csr extensions");
        sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
        GENERAL_NAMES_free(gens);
    }
    if (X509_REQ_sign(req, k, md_for(k)) <= 0) die("csr sign");
    BIO *b = BIO_new(BIO_s_mem());
    if (der ? i2d_X509_REQ_bio(b, req) != 1 : PEM_write_bio_X509_REQ(b, req) != 1)
        die("csr encode");
    unsigned char *out = bio_take(b, len);
    BIO_free(b);
    X509_NAME_free(name);
    X509_REQ_free(req);
    return out;
}

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer != NULL ? issuer : x, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (e == NULL || X509_add_ext(x, e, -1) != 1) die(value);
    X509_EXTENSION_free(e);
}

X509 *cafx_cert(const cafx_cert_opts *o)
{
    static long serial = 1000;
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    time_t now = time(NULL);
    X509_set_version(x, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)o->cn, -1, -1, 0);
    X509_set_subject_name(x, name);
    X509_set_issuer_name(x, o->issuer != NULL ? X509_get_subject_name(o->issuer) : name);
    X509_NAME_free(name);
    ASN1_TIME_set(X509_getm_notBefore(x), now + (o->not_before_off ? o->not_before_off : -60));
    ASN1_TIME_set(X509_getm_notAfter(x), now + (o->not_after_off ? o->not_after_off : 86400));
    X509_set_pubkey(x, o->key);
    if (!o->no_ext) {
        if (o->is_ca) {
            add_ext(x, o->issuer, NID_basic_constraints, "critical,CA:TRUE");
            add_ext(x, o->issuer, NID_key_usage, "critical,keyCertSign,cRLSign");
        } else {
            add_ext(x, o->issuer, NID_basic_constraints, "critical,CA:FALSE");
            add_ext(x, o->issuer, NID_key_usage, "critical,digitalSignature");
        }
        add_ext(x, o->issuer, NID_subject_key_identifier, "hash");
        if (o->issuer != NULL) add_ext(x, o->issuer, NID_authority_key_identifier, "keyid:always");
        if (o->uri != NULL) {
            char san[600];
            snprintf(san, sizeof san, "URI:%s", o->uri);
            add_ext(x, o->issuer, NID_subject_alt_name, san);
        }
    }
    EVP_PKEY *signer = o->issuer_key != NULL ? o->issuer_key : o->key;
    if (X509_sign(x, signer, md_for(signer)) <= 0) die("cert sign");
    return x;
}

void cafx_write_certs(const char *path, X509 *const *certs, size_t n)
{
    BIO *b = BIO_new(BIO_s_mem());
    for (size_t i = 0; i < n; i++)
        if (PEM_write_bio_X509(b, certs[i]) != 1) die("PEM_write_bio_X509");
    size_t len = 0;
    unsigned char *data = bio_take(b, &len);
    BIO_free(b);
    if (!mid_is_ok(fs_write_file(path, data, len, 0644))) die(mid_errmsg());
    free(data);
}

void cafx_write_key(const char *path, EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    if (PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) != 1) die("PEM key");
    size_t len = 0;
    unsigned char *data = bio_take(b, &len);
    BIO_free(b);
    if (!mid_is_ok(fs_write_file(path, data, len, 0600))) die(mid_errmsg());
    free(data);
}

void cafx_write_text(const char *path, const char *text)
{
    if (!mid_is_ok(fs_write_file(path, text, strlen(text), 0644))) die(mid_errmsg());
}

STACK_OF(X509) *cafx_pem_certs(const char *pem)
{
    STACK_OF(X509) *sk = sk_X509_new_null();
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x;
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) sk_X509_push(sk, x);
    ERR_clear_error();
    BIO_free(b);
    if (sk_X509_num(sk) == 0) die("no certificates in PEM");
    return sk;
}

int cafx_verify(X509 *leaf, STACK_OF(X509) *untrusted, STACK_OF(X509) *anchors)
{
    X509_STORE *st = X509_STORE_new();
    for (int i = 0; i < sk_X509_num(anchors); i++) X509_STORE_add_cert(st, sk_X509_value(anchors, i));
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    X509_STORE_CTX_init(ctx, st, leaf, untrusted);
    X509_STORE_CTX_set_flags(ctx, X509_V_FLAG_X509_STRICT);
    int rc = X509_verify_cert(ctx);
    int err = rc == 1 ? X509_V_OK : X509_STORE_CTX_get_error(ctx);
    if (rc != 1 && err == X509_V_OK) err = -1;
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(st);
    ERR_clear_error();
    return err;
}

typedef struct {
    const char *outcome;
    long n;
} cafx_count_ctx;

static int count_cb(void *ctx, const store_audit_event *row)
{
    cafx_count_ctx *c = ctx;
    if (c->outcome == NULL || strcmp(row->outcome, c->outcome) == 0) c->n++;
    return 0;
}

long cafx_count_events(store *st, const char *event, const char *outcome)
{
    store_audit_filter f = {.event = event};
    cafx_count_ctx c = {.outcome = outcome};
    if (!mid_is_ok(store_audit_query(st, &f, count_cb, &c))) die(mid_errmsg());
    return c.n;
}

int cafx_sql(const char *db_path, const char *sql)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open(db_path, &db);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    sqlite3_close(db);
    return rc;
}
