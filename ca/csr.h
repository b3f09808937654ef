/* CSR intake: the one place where a workload's PKCS#10 request, untrusted
 * bytes from the network, becomes a `ca_csr` the CA will sign for. Also the
 * entry point of the fuzz target tests/fuzz/fuzz_csr.c.
 *
 * The request is read with the length-checked DER reader of ca/der.h, not
 * d2i_X509_REQ: in OpenSSL 3.0 decoding the request's public key goes
 * through the generic decoder and costs several times the signature check
 * (openssl issues #17950, #19119). Only what issuance needs is kept: the
 * SubjectPublicKeyInfo (raw DER, copied into the certificate and hashed for
 * the fingerprint), the key itself for the signature check, and the
 * extension requests for the URI SAN check. */
#ifndef MESHID_CA_CSR_H
#define MESHID_CA_CSR_H

#include <openssl/evp.h>
#include <stddef.h>

#include "ca/keys.h"
#include "lib/result.h"

typedef struct ca_csr ca_csr;

/* Parses a CSR given as PEM ("CERTIFICATE REQUEST" or "NEW CERTIFICATE
 * REQUEST") or DER, detected from the first bytes. At most CA_CSR_MAX bytes
 * (MID_E_TOO_LARGE). The DER must be one complete PKCS#10 v1 structure with
 * nothing after it (DER proper: definite, minimal lengths); the key must
 * pass the workload-key policy (ca_key_from_spki, checked before the
 * signature); the signature algorithm must be ecdsa-with-SHA256/384 or
 * sha256/384/512WithRSAEncryption matching the key, and the self-signature
 * must verify over the certificationRequestInfo as received. On success
 * *out is a new ca_csr owned by the caller (ca_csr_free); it keeps its own
 * copy of the DER. MID_E_INVALID with a message for every refusal. */
MID_RESULT ca_csr_parse(const unsigned char *data, size_t len, ca_csr **out);

/* Refuses (MID_E_DENIED) a CSR whose extension request carries any URI SAN
 * other than `spiffe_id`; the CA, not the requester, decides the identity.
 * Every extension request attribute is checked (PKCS#9 extensionRequest
 * and Microsoft's msExtReq). Other SAN types are ignored (the CA's request
 * decides DNS SANs). A malformed extension request or a duplicated or
 * undecodable subjectAltName is MID_E_INVALID. */
MID_RESULT ca_csr_check_uri_sans(const ca_csr *csr, const char *spiffe_id);

/* ca_csr_parse followed by ca_csr_check_uri_sans; `spiffe_id` may be NULL to
 * skip the SAN check. */
MID_RESULT ca_csr_intake(const unsigned char *data, size_t len, const char *spiffe_id,
                         ca_csr **out);

void ca_csr_free(ca_csr *csr);

/* The requester's public key, borrowed: valid until ca_csr_free. */
EVP_PKEY *ca_csr_pubkey(const ca_csr *csr);

/* The requester's SubjectPublicKeyInfo (raw DER and what it says), borrowed
 * from the csr: what ca_x509_build_svid copies into the certificate. */
const ca_spki *ca_csr_spki(const ca_csr *csr);

/* The request's DER (after PEM unwrapping), borrowed. */
const unsigned char *ca_csr_der(const ca_csr *csr, size_t *len);

#endif
