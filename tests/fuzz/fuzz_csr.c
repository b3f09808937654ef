/* libFuzzer target for ca/csr.c, the CA's intake of untrusted PKCS#10 bytes.
 *
 * Feeds the raw bytes (exactly `size` of them, so ASan catches any
 * over-read) to ca_csr_intake with and without a SPIFFE ID and checks,
 * aborting on any violation:
 *   - a rejection is MID_E_INVALID, MID_E_TOO_LARGE (exactly when over
 *     CA_CSR_MAX) or MID_E_DENIED, with a non-empty bounded message, and
 *     leaves no request behind;
 *   - DENIED only comes from the URI SAN check: the same bytes parse without
 *     an ID to check against;
 *   - an accepted request has a key the policy accepts and a verifying
 *     self-signature, and its DER re-encoding is accepted again (PEM and DER
 *     paths agree).
 */
#include <openssl/err.h>
#include <openssl/x509.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca/ca.h"
#include "ca/csr.h"
#include "ca/keys.h"
#include "lib/result.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ID "spiffe://example.org/ns/default/sa/web"

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "invariant failed at %s:%d: %s\n", __FILE__, __LINE__, #cond);   \
            abort();                                                                         \
        }                                                                                    \
    } while (0)

static void check_refusal(mid_result r, const X509_REQ *req, size_t size)
{
    CHECK(req == NULL);
    CHECK(r.err == MID_E_INVALID || r.err == MID_E_TOO_LARGE || r.err == MID_E_DENIED ||
          r.err == MID_E_NOMEM);
    CHECK((r.err == MID_E_TOO_LARGE) == (size > CA_CSR_MAX));
    size_t n = strnlen(mid_errmsg(), 2048);
    CHECK(n > 0 && n < 1024);
}

static void check_accepted(X509_REQ *req)
{
    EVP_PKEY *pk = X509_REQ_get0_pubkey(req);
    CHECK(pk != NULL);
    CHECK(mid_is_ok(ca_key_check_accepted(pk)));
    CHECK(X509_REQ_verify(req, pk) == 1);
    unsigned char *der = NULL;
    int n = i2d_X509_REQ(req, &der);
    CHECK(n > 0);
    X509_REQ *again = NULL;
    mid_result r = ca_csr_parse(der, (size_t)n, &again);
    CHECK(mid_is_ok(r) && again != NULL);
    X509_REQ_free(again);
    OPENSSL_free(der);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    X509_REQ *with_id = NULL, *without = NULL;
    mid_result r1 = ca_csr_intake(data, size, ID, &with_id);
    if (mid_is_ok(r1)) {
        CHECK(with_id != NULL);
        check_accepted(with_id);
    } else {
        check_refusal(r1, with_id, size);
    }
    mid_result r2 = ca_csr_intake(data, size, NULL, &without);
    if (mid_is_ok(r2)) {
        CHECK(without != NULL);
        CHECK(r2.err != MID_E_DENIED);
        check_accepted(without);
        /* With an ID, the only new reason to refuse is the identity check
         * (or a malformed extension request, which that check decodes). */
        CHECK(mid_is_ok(r1) || r1.err == MID_E_DENIED || r1.err == MID_E_INVALID);
    } else {
        check_refusal(r2, without, size);
        CHECK(r2.err != MID_E_DENIED);
        CHECK(!mid_is_ok(r1)); /* what fails to parse can't pass with a SAN check */
    }
    X509_REQ_free(with_id);
    X509_REQ_free(without);
    ERR_clear_error();
    return 0;
}
