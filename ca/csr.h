/* CSR intake: the one place where a workload's PKCS#10 request, untrusted
 * bytes from the network, becomes an X509_REQ the CA will sign for. Also the
 * entry point of the fuzz target tests/fuzz/fuzz_csr.c. */
#ifndef MESHID_CA_CSR_H
#define MESHID_CA_CSR_H

#include <openssl/x509.h>
#include <stddef.h>

#include "lib/result.h"

/* Parses a CSR given as PEM ("CERTIFICATE REQUEST" or "NEW CERTIFICATE
 * REQUEST") or DER, detected from the first bytes. At most CA_CSR_MAX bytes
 * (MID_E_TOO_LARGE). The DER must be one complete PKCS#10 v1 structure with
 * nothing after it; the self-signature must verify; the key must pass
 * ca_key_check_accepted. On success *out is a new X509_REQ owned by the
 * caller. MID_E_INVALID with a message for every refusal. */
MID_RESULT ca_csr_parse(const unsigned char *data, size_t len, X509_REQ **out);

/* Refuses (MID_E_DENIED) a CSR whose extension request carries any URI SAN
 * other than `spiffe_id`; the CA, not the requester, decides the identity.
 * Other SAN types are ignored (the CA's request decides DNS SANs). A
 * malformed extension request is MID_E_INVALID. */
MID_RESULT ca_csr_check_uri_sans(X509_REQ *req, const char *spiffe_id);

/* ca_csr_parse followed by ca_csr_check_uri_sans; `spiffe_id` may be NULL to
 * skip the SAN check. */
MID_RESULT ca_csr_intake(const unsigned char *data, size_t len, const char *spiffe_id,
                         X509_REQ **out);

#endif
