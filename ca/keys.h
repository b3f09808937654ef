/* Key pairs: generating CA and workload keys, PEM (PKCS#8) load and save with
 * 0600 files, SPKI fingerprints, key/certificate matching, and the policy on
 * which workload keys the CA accepts in a CSR. Keys are OpenSSL EVP_PKEYs;
 * every function that returns one hands the caller a new reference. */
#ifndef MESHID_CA_KEYS_H
#define MESHID_CA_KEYS_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stddef.h>

#include "ca/ca.h"

#define CA_FP_HEX_LEN 64   /* hex SHA-256 */
#define CA_KEY_FILE_MAX (64 * 1024)

/* Generates a new key of type `t` (EC P-256 or RSA-2048). MID_E_INVALID for
 * an unknown type, MID_E_CRYPTO when OpenSSL fails. */
MID_RESULT ca_key_generate(ca_key_type t, EVP_PKEY **out);

/* Encodes the private key as unencrypted PKCS#8 PEM into a new NUL-terminated
 * buffer; `*len` excludes the NUL. The caller must release it with
 * ca_key_pem_free, which wipes it. */
MID_RESULT ca_key_to_pem(const EVP_PKEY *k, char **out, size_t *len);

/* Wipes and frees a buffer from ca_key_to_pem (NULL ok). */
void ca_key_pem_free(char *pem, size_t len);

/* Parses one PEM private key (PKCS#8 or traditional; encrypted keys are
 * refused, never prompted for). `what` names the source in messages.
 * MID_E_INVALID when it is not a readable private key. */
MID_RESULT ca_key_from_pem(const char *pem, size_t len, const char *what, EVP_PKEY **out);

/* Writes the key as PKCS#8 PEM to `path`, atomically and with mode 0600. */
MID_RESULT ca_key_save(const char *path, const EVP_PKEY *k);

/* Reads a PEM private key from `path` (at most CA_KEY_FILE_MAX bytes); the
 * file buffer is wiped after parsing. Errors as fs_read_file and
 * ca_key_from_pem. */
MID_RESULT ca_key_load(const char *path, EVP_PKEY **out);

/* Lowercase hex SHA-256 of the DER SubjectPublicKeyInfo. Encodes the key
 * (i2d_PUBKEY, slow in OpenSSL 3.0): when the SPKI bytes are at hand, use
 * ca_key_fingerprint_spki, which gives the same result for the same key. */
MID_RESULT ca_key_fingerprint(const EVP_PKEY *k, char out[CA_FP_HEX_LEN + 1]);

/* Lowercase hex SHA-256 of `len` bytes of SubjectPublicKeyInfo DER. */
MID_RESULT ca_key_fingerprint_spki(const unsigned char *spki, size_t len,
                                   char out[CA_FP_HEX_LEN + 1]);

/* A workload's public key as read from its SubjectPublicKeyInfo by
 * ca_key_from_spki; the pointers borrow the caller's buffer. */
typedef struct {
    int key_nid;              /* NID_X9_62_id_ecPublicKey or NID_rsaEncryption */
    int curve_nid;            /* EC: NID_X9_62_prime256v1 or NID_secp384r1; RSA: NID_undef */
    int bits;                 /* EC: curve size; RSA: modulus size */
    const unsigned char *der; /* the whole SubjectPublicKeyInfo (DER, as received) */
    size_t der_len;
    const unsigned char *pub; /* subjectPublicKey contents: the EC point or RSAPublicKey */
    size_t pub_len;
} ca_spki;

/* Reads one SubjectPublicKeyInfo (exactly `len` bytes of DER, borrowed) with
 * the ca/der.h reader, applies the workload-key policy of
 * ca_key_check_accepted to it, and only then builds the key with
 * EVP_PKEY_fromdata (no OpenSSL decoder: d2i_PUBKEY costs ~6x more in 3.0).
 * Stricter than d2i_PUBKEY: DER only; EC keys must name their curve
 * (parameters = the curve OID) and give an uncompressed or compressed point
 * of the curve's size (the point must be on the curve, which fromdata
 * checks; P-256 and P-384 have cofactor 1, so that is a full check); RSA
 * keys need NULL parameters and minimal, positive n and e. `info` is filled
 * in; `*out` (may be NULL: policy only) receives a new key owned by the
 * caller. MID_E_INVALID "unsupported key ..." for a key of another kind or
 * size, MID_E_INVALID "malformed public key ..." for bad DER. */
MID_RESULT ca_key_from_spki(const unsigned char *der, size_t len, ca_spki *info,
                            EVP_PKEY **out);

/* MID_E_INVALID (message naming `what`) unless `cert` carries the public half
 * of private key `k`. */
MID_RESULT ca_key_matches_cert(const EVP_PKEY *k, const X509 *cert, const char *what);

/* The workload-key policy: EC on P-256 or P-384 (named curves only), or RSA
 * with a 2048..4096-bit modulus and an odd public exponent >= 3. Anything
 * else is MID_E_INVALID "unsupported key ...". */
MID_RESULT ca_key_check_accepted(const EVP_PKEY *k);

/* Short description such as "ec-p256", "ec-secp521r1", "rsa-2048", "ed25519",
 * written into `out` (always NUL-terminated). */
void ca_key_describe(const EVP_PKEY *k, char *out, size_t cap);

/* True for an RSA key (SVIDs for RSA keys add keyEncipherment). */
int ca_key_is_rsa(const EVP_PKEY *k);

#endif
