/* Test-only helpers for the ca/ unit tests: temporary data directories and
 * stores, keys and CSRs of every kind, and a small independent certificate
 * builder (so tests do not check ca/x509.c with ca/x509.c). Every function
 * aborts the test process on an unexpected failure: fixtures are not what
 * is under test. */
#ifndef MESHID_TESTS_TESTLIB_CA_FIXTURES_H
#define MESHID_TESTS_TESTLIB_CA_FIXTURES_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stddef.h>

#include "storage/store.h"

/* A fresh directory under $TMPDIR (or /tmp); free() the result after
 * cafx_rmtree. */
char *cafx_tmpdir(void);
/* rm -rf `dir`. */
void cafx_rmtree(const char *dir);

/* Opens (creates) <dir>/meshid.db. */
store *cafx_store_open(const char *dir);
/* "<dir>/meshid.db" into out. */
void cafx_db_path(const char *dir, char *out, size_t cap);

/* Key by spec: "ec-p256", "ec-p384", "ec-p521", "rsa-1024", "rsa-2048",
 * "rsa-3072", "rsa-4096", "ed25519", "ec-p256-explicit" (P-256 encoded with
 * explicit curve parameters). */
EVP_PKEY *cafx_key(const char *spec);

/* A CSR for `k` signed with SHA-256 (no digest for Ed25519), optionally
 * asking for URI SANs (NULL-terminated list, may be NULL) and one DNS SAN.
 * Returns PEM (NUL-terminated) or DER bytes, malloc()ed, length in *len. */
unsigned char *cafx_csr(EVP_PKEY *k, const char *const *uris, const char *dns, int der,
                      size_t *len);

/* Independent certificate builder. */
typedef struct {
    const char *cn;
    EVP_PKEY *key;        /* subject key */
    X509 *issuer;         /* NULL: self-signed */
    EVP_PKEY *issuer_key; /* NULL: self-signed with `key` */
    int is_ca;            /* basicConstraints CA:TRUE + keyUsage keyCertSign,cRLSign */
    int no_ext;           /* no extensions at all */
    const char *uri;      /* URI SAN, may be NULL */
    long not_before_off;  /* seconds from now (default -60) */
    long not_after_off;   /* seconds from now (0: one day) */
} cafx_cert_opts;
X509 *cafx_cert(const cafx_cert_opts *o);

/* Writes certificates (PEM, concatenated) / a PKCS#8 key to `path`. */
void cafx_write_certs(const char *path, X509 *const *certs, size_t n);
void cafx_write_key(const char *path, EVP_PKEY *k);
/* Writes raw bytes. */
void cafx_write_text(const char *path, const char *text);

/* All certificates of a PEM text (at least one). */
STACK_OF(X509) *cafx_pem_certs(const char *pem);

/* X509_verify_cert(leaf, untrusted, anchors) with X509_V_FLAG_X509_STRICT;
 * returns the X509_V_* result (X509_V_OK on success). */
int cafx_verify(X509 *leaf, STACK_OF(X509) *untrusted, STACK_OF(X509) *anchors);

/* Counts audit events named `event` with outcome `outcome` (NULL: any). */
long cafx_count_events(store *st, const char *event, const char *outcome);

/* Runs one SQL statement on the database file (for tampering tests); the
 * store must be closed. Returns sqlite3_exec's code. */
int cafx_sql(const char *db_path, const char *sql);

#endif
