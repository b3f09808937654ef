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

/* Lowercase hex SHA-256 of the DER SubjectPublicKeyInfo. */
MID_RESULT ca_key_fingerprint(const EVP_PKEY *k, char out[CA_FP_HEX_LEN + 1]);

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
