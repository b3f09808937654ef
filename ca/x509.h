/* Certificate building and inspection for the CA: the self-signed root, the
 * intermediate signing authority and X.509-SVID leaves (profile in
 * docs/ca.md), serials, key identifiers, PEM stacks, chain verification.
 *
 * The SVID builder reads only what its params point to, and never the
 * issuer's X509, so many threads may build SVIDs from one loaded authority. */
#ifndef MESHID_CA_X509_H
#define MESHID_CA_X509_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdint.h>

#include "ca/keys.h"
#include "identity/spiffe_id.h"
#include "lib/result.h"

#define CA_SERIAL_LEN 16                        /* bytes: 128 random bits, top bit clear */
#define CA_SERIAL_HEX_LEN (2 * CA_SERIAL_LEN)
#define CA_KEY_ID_MAX 64                        /* bytes of a key identifier we accept */
#define CA_KEY_ID_HEX_MAX (2 * CA_KEY_ID_MAX + 1)
#define CA_CLOCK_SKEW 30                        /* seconds SVID notBefore is backdated */
#define CA_CERT_FILE_MAX (1024 * 1024)          /* a PEM certificate file */

/* A fresh random serial: 16 bytes from RAND_bytes, the top bit cleared so the
 * INTEGER is positive and the first byte non-zero so its DER is always 16
 * bytes. `hex` receives the 32 lowercase hex digits. */
MID_RESULT ca_x509_new_serial(ASN1_INTEGER **out, char hex[CA_SERIAL_HEX_LEN + 1]);

/* Parameters of a root or intermediate (signing) certificate. */
typedef struct {
    const char *trust_domain; /* validated bare name: URI SAN spiffe://<td> */
    EVP_PKEY *key;            /* the authority's key (public half is certified) */
    int64_t not_before;       /* Unix seconds */
    int64_t not_after;
    X509 *issuer;             /* NULL for a self-signed root */
    EVP_PKEY *issuer_key;     /* NULL for a self-signed root (signs with `key`) */
} ca_x509_authority_params;

/* Self-signed root: v3, subject O=meshid, CN=meshid root <td>; critical
 * basicConstraints CA:TRUE; critical keyUsage keyCertSign+cRLSign; SKI; URI
 * SAN spiffe://<td>; SHA-256. *out is owned by the caller. */
MID_RESULT ca_x509_build_root(const ca_x509_authority_params *p, X509 **out);

/* Intermediate under p->issuer: as the root plus pathlen 0 and AKI; subject
 * CN=meshid intermediate <td>. not_after is clamped to the issuer's. */
MID_RESULT ca_x509_build_intermediate(const ca_x509_authority_params *p, X509 **out);

/* Cross-certificate for a new root: p->key is the new root's key (its public
 * half is certified), p->issuer / p->issuer_key the previous root. Subject
 * and SKI as the new root's (O=meshid, CN=meshid root <td>), no pathlen,
 * AKI of the issuer, validity clamped to the issuer's; signed by the previous
 * root, so certificates under the new root also verify with only the previous
 * root trusted. */
MID_RESULT ca_x509_build_cross(const ca_x509_authority_params *p, X509 **out);

typedef struct ca_sign_pool ca_sign_pool;

/* What every SVID of one signing authority shares, encoded once by
 * ca_x509_issuer_init (ca_open): the issuer Name, the authorityKeyIdentifier
 * extension and the signature AlgorithmIdentifier of its key. Read-only
 * afterwards, so any number of threads may build SVIDs from one (the pool
 * of prepared signing contexts has its own lock). */
typedef struct {
    unsigned char *name_der;       /* the issuer's subject, DER */
    size_t name_len;
    unsigned char *aki_der;        /* a whole Extension: AKI keyIdentifier = the issuer's key id */
    size_t aki_len;
    const unsigned char *sig_alg;  /* static: ecdsa-with-SHA256 or sha256WithRSAEncryption */
    size_t sig_alg_len;
    EVP_MD *sha256;                /* fetched once */
    EVP_PKEY *key;                 /* borrowed: the issuer's private key */
    ca_sign_pool *pool;            /* signing contexts for `key`, ready for reuse */
} ca_x509_issuer;

/* Fills `is` from the signing certificate and its key (borrowed: it must
 * outlive `is`). MID_E_INVALID for a key that is neither EC nor RSA. On
 * failure `is` holds nothing. */
MID_RESULT ca_x509_issuer_init(ca_x509_issuer *is, X509 *cert, EVP_PKEY *key);
void ca_x509_issuer_clear(ca_x509_issuer *is);

/* Parameters of an X.509-SVID leaf. */
typedef struct {
    /* The workload's SubjectPublicKeyInfo, as ca_key_from_spki read it: its
     * DER goes into the certificate as it is (for a CSR: the bytes
     * received), its key bits give the SKI, its algorithm the keyUsage. */
    const ca_spki *spki;
    const char *spiffe_id;        /* validated workload ID */
    const char *const *dns;       /* validated DNS names, may be NULL */
    size_t n_dns;
    int64_t not_before;
    int64_t not_after;
    const ca_x509_issuer *issuer; /* signs, SHA-256 */
} ca_x509_svid_params;

/* Builds and signs one SVID (profile in docs/ca.md) as DER, written
 * directly (no X509 object): *der (malloc, the caller frees) holds *der_len
 * bytes; `serial_hex` receives its serial. MID_E_INVALID for an empty
 * validity period or a time that cannot be encoded, MID_E_CRYPTO on OpenSSL
 * failure. */
MID_RESULT ca_x509_build_svid(const ca_x509_svid_params *p, unsigned char **der, size_t *der_len,
                              char serial_hex[CA_SERIAL_HEX_LEN + 1]);

/* Checks one DNS SAN: 1..253 characters, dot-separated labels of 1..63
 * letters, digits and hyphens, no label starting or ending with '-', no
 * trailing dot; a leading "*." wildcard label is allowed. MID_E_INVALID. */
MID_RESULT ca_x509_check_dns_name(const char *name);

/* The certificate's key identifier: its SKI extension, or when absent the
 * SHA-1 of the subjectPublicKey bits (RFC 5280 4.2.1.2 method 1). New object
 * owned by the caller. */
MID_RESULT ca_x509_key_id(X509 *x, ASN1_OCTET_STRING **out);

/* ca_x509_key_id as lowercase hex: the authority id used in the store. */
MID_RESULT ca_x509_key_id_hex(X509 *x, char out[CA_KEY_ID_HEX_MAX]);

/* The serial number as lowercase hex (no leading zeros beyond the DER
 * content) into `out`; MID_E_INVALID for a negative or oversized serial. */
MID_RESULT ca_x509_serial_hex(const X509 *x, char *out, size_t cap);

/* notBefore / notAfter as Unix seconds. */
MID_RESULT ca_x509_validity(const X509 *x, int64_t *not_before, int64_t *not_after);

/* PEM of one certificate appended to a new or growing string: `*pem` is
 * NULL or a malloc()ed NUL-terminated string, replaced by a longer one. */
MID_RESULT ca_x509_append_pem(X509 *x, char **pem);

/* ca_x509_append_pem for a certificate given as DER (1..CA_CERT_FILE_MAX
 * bytes, not checked to be one: MID_E_INVALID only for an empty or
 * oversized buffer). */
MID_RESULT ca_x509_der_append_pem(const unsigned char *der, size_t len, char **pem);

/* All certificates in a PEM text, in order (at least one; anything that is
 * not a CERTIFICATE block, or a block that does not parse, is MID_E_INVALID
 * naming `what`). New stack owned by the caller (sk_X509_pop_free). */
MID_RESULT ca_x509_stack_from_pem(const char *pem, size_t len, const char *what,
                                  STACK_OF(X509) **out);

/* The trust domain a signing certificate is for: its single spiffe:// URI SAN,
 * which must have no path. MID_E_NOT_FOUND when it has none, MID_E_INVALID
 * for more than one or a malformed one. */
MID_RESULT ca_x509_signing_trust_domain(X509 *x, char td[SPIFFE_TD_MAX + 1]);

/* MID_E_INVALID (naming `what`) unless `x` is a CA certificate meshid can sign
 * with: basicConstraints CA:TRUE and keyUsage with keyCertSign. */
MID_RESULT ca_x509_check_signing_ca(X509 *x, const char *what);

/* Verifies `leaf` with X509_verify_cert against `anchors` (trusted) with
 * `untrusted` intermediates (may be NULL). `at` is the verification time
 * (Unix seconds), 0 for now, -1 to skip validity-period checks. On success
 * the built chain (leaf first, anchor last) is returned in *chain if non-NULL.
 * MID_E_VERIFY with OpenSSL's reason otherwise. */
MID_RESULT ca_x509_verify(X509 *leaf, STACK_OF(X509) *untrusted, STACK_OF(X509) *anchors,
                          int64_t at, STACK_OF(X509) **chain);

#endif
