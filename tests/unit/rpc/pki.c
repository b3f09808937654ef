/* A throwaway CA with server and client certificates, made with OpenSSL. */
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "tests/unit/rpc/rpc_tests.h"

static char *bio_string(BIO *b)
{
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *s = malloc((size_t)n + 1);
    if (s) {
        memcpy(s, data, (size_t)n);
        s[n] = '\0';
    }
    BIO_free(b);
    return s;
}

static char *key_pem(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
    return bio_string(b);
}

static char *cert_pem(X509 *x)
{
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, x);
    return bio_string(b);
}

static bool add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (!e) return false;
    bool ok = X509_add_ext(x, e, -1) == 1;
    X509_EXTENSION_free(e);
    return ok;
}

static X509 *make_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key,
                       const char *san, long serial)
{
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
    bool ok;
    if (!issuer) {
        ok = add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE") &&
             add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        ok = add_ext(x, issuer, NID_basic_constraints, "critical,CA:FALSE") &&
             add_ext(x, issuer, NID_key_usage, "critical,digitalSignature") &&
             add_ext(x, issuer, NID_ext_key_usage, "serverAuth,clientAuth") &&
             (!san || add_ext(x, issuer, NID_subject_alt_name, san));
    }
    if (!ok || X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) <= 0) {
        X509_free(x);
        return NULL;
    }
    return x;
}

static bool leaf(test_pki *p, X509 *ca, EVP_PKEY *cakey, const char *cn, const char *san,
                 long serial, char **cert, char **key)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    if (!k) return false;
    X509 *x = make_cert(cn, k, ca, cakey, san, serial);
    (void)p;
    if (x) {
        *cert = cert_pem(x);
        *key = key_pem(k);
    }
    X509_free(x);
    EVP_PKEY_free(k);
    return *cert && *key;
}

bool test_pki_make(test_pki *p)
{
    memset(p, 0, sizeof *p);
    EVP_PKEY *cakey = EVP_EC_gen("P-256");
    X509 *ca = cakey ? make_cert("test CA", cakey, NULL, NULL, NULL, 1) : NULL;
    bool ok = ca != NULL;
    if (ok) p->ca_pem = cert_pem(ca);
    ok = ok && leaf(p, ca, cakey, "localhost", "DNS:localhost,IP:127.0.0.1", 2, &p->server_cert,
                    &p->server_key);
    ok = ok && leaf(p, ca, cakey, "client", "URI:spiffe://test.example/client", 3, &p->client_cert,
                    &p->client_key);
    ok = ok && leaf(p, ca, cakey, "nouri", "DNS:nouri.test.example", 4, &p->nouri_cert,
                    &p->nouri_key);
    X509_free(ca);
    EVP_PKEY_free(cakey);
    return ok;
}

void test_pki_free(test_pki *p)
{
    free(p->ca_pem);
    free(p->server_cert);
    free(p->server_key);
    free(p->client_cert);
    free(p->client_key);
    free(p->nouri_cert);
    free(p->nouri_key);
    memset(p, 0, sizeof *p);
}
