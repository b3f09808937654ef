/* libFuzzer target for ca/csr.c, the CA's intake of untrusted PKCS#10 bytes
 * (its own DER reader, ca/der.c, and ca_key_from_spki in ca/keys.c).
 *
 * Feeds the raw bytes (exactly `size` of them, so ASan catches any
 * over-read) to ca_csr_intake with and without a SPIFFE ID and checks,
 * aborting on any violation:
 *   - a rejection is MID_E_INVALID, MID_E_TOO_LARGE (exactly when over
 *     CA_CSR_MAX) or MID_E_DENIED, with a non-empty bounded message, and
 *     leaves no request behind;
 *   - DENIED only comes from the URI SAN check: the same bytes parse without
 *     an ID to check against;
 *   - differential against OpenSSL's own decoder: whatever our parser
 *     accepts, d2i_X509_REQ accepts too (the same bytes, nothing left over,
 *     version 1), X509_REQ_verify succeeds, the old key policy
 *     (ca_key_check_accepted) agrees, the SPKI we kept is byte for byte the
 *     one d2i decoded (and the i2d_PUBKEY of its key, so the fingerprints
 *     agree), the keys are equal, and OpenSSL's extension request reading
 *     finds no URI SAN we would have refused.
 * We are deliberately stricter than d2i (DER only, SHA-2 signatures, named
 * curves...), so the converse is not checked.
 */
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
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

static void check_refusal(mid_result r, const ca_csr *req, size_t size)
{
    CHECK(req == NULL);
    CHECK(r.err == MID_E_INVALID || r.err == MID_E_TOO_LARGE || r.err == MID_E_DENIED ||
          r.err == MID_E_NOMEM);
    CHECK((r.err == MID_E_TOO_LARGE) == (size > CA_CSR_MAX));
    size_t n = strnlen(mid_errmsg(), 2048);
    CHECK(n > 0 && n < 1024);
}

/* Does OpenSSL's reading of the extension request (X509_REQ_get_extensions,
 * which the CA used before) show a URI SAN other than `id`? */
static int openssl_sees_foreign_uri(X509_REQ *req, const char *id)
{
    STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
    int foreign = 0;
    GENERAL_NAMES *gens = exts != NULL ? X509V3_get_d2i(exts, NID_subject_alt_name, NULL, NULL)
                                       : NULL;
    for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type != GEN_URI) continue;
        const ASN1_IA5STRING *u = g->d.uniformResourceIdentifier;
        if ((size_t)ASN1_STRING_length(u) != strlen(id) ||
            memcmp(ASN1_STRING_get0_data(u), id, strlen(id)) != 0)
            foreign = 1;
    }
    GENERAL_NAMES_free(gens);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    return foreign;
}

static void check_accepted(const ca_csr *csr, int id_checked)
{
    EVP_PKEY *pk = ca_csr_pubkey(csr);
    CHECK(pk != NULL);
    CHECK(mid_is_ok(ca_key_check_accepted(pk)));
    const ca_spki *spki = ca_csr_spki(csr);
    CHECK(spki != NULL && spki->der != NULL && spki->der_len > 0);

    /* OpenSSL's decoder accepts the same DER */
    size_t der_len = 0;
    const unsigned char *der = ca_csr_der(csr, &der_len);
    const unsigned char *p = der;
    X509_REQ *req = d2i_X509_REQ(NULL, &p, (long)der_len);
    CHECK(req != NULL);
    CHECK(p == der + der_len);
    CHECK(X509_REQ_get_version(req) == X509_REQ_VERSION_1);
    EVP_PKEY *dpk = X509_REQ_get0_pubkey(req);
    CHECK(dpk != NULL);
    CHECK(X509_REQ_verify(req, dpk) == 1);
    CHECK(mid_is_ok(ca_key_check_accepted(dpk)));
    CHECK(EVP_PKEY_eq(pk, dpk) == 1);

    /* the SPKI we copy into certificates is the one d2i saw, and the
     * fingerprint is the old definition's (i2d_PUBKEY of the decoded key) */
    unsigned char *enc = NULL;
    int n = i2d_X509_PUBKEY(X509_REQ_get_X509_PUBKEY(req), &enc);
    CHECK(n > 0 && (size_t)n == spki->der_len && memcmp(enc, spki->der, (size_t)n) == 0);
    OPENSSL_free(enc);
    enc = NULL;
    n = i2d_PUBKEY(dpk, &enc);
    CHECK(n > 0 && (size_t)n == spki->der_len && memcmp(enc, spki->der, (size_t)n) == 0);
    OPENSSL_free(enc);
    char f_old[CA_FP_HEX_LEN + 1], f_new[CA_FP_HEX_LEN + 1];
    CHECK(mid_is_ok(ca_key_fingerprint(dpk, f_old)));
    CHECK(mid_is_ok(ca_key_fingerprint_spki(spki->der, spki->der_len, f_new)));
    CHECK(strcmp(f_old, f_new) == 0);

    /* DER proper: OpenSSL's re-encoding gives back exactly the input */
    enc = NULL;
    n = i2d_X509_REQ(req, &enc);
    CHECK(n > 0 && (size_t)n == der_len && memcmp(enc, der, der_len) == 0);
    OPENSSL_free(enc);

    /* what passed our URI SAN check passes OpenSSL's reading of it */
    if (id_checked) CHECK(!openssl_sees_foreign_uri(req, ID));
    X509_REQ_free(req);

    /* parsing our own DER copy again gives the same verdict */
    ca_csr *again = NULL;
    mid_result r = ca_csr_parse(der, der_len, &again);
    CHECK(mid_is_ok(r) && again != NULL);
    ca_csr_free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ca_csr *with_id = NULL, *without = NULL;
    mid_result r1 = ca_csr_intake(data, size, ID, &with_id);
    if (mid_is_ok(r1)) {
        CHECK(with_id != NULL);
        check_accepted(with_id, 1);
    } else {
        check_refusal(r1, with_id, size);
    }
    mid_result r2 = ca_csr_intake(data, size, NULL, &without);
    if (mid_is_ok(r2)) {
        CHECK(without != NULL);
        CHECK(r2.err != MID_E_DENIED);
        check_accepted(without, 0);
        /* With an ID, the only new reason to refuse is the identity check
         * (or a malformed extension request, which that check decodes). */
        CHECK(mid_is_ok(r1) || r1.err == MID_E_DENIED || r1.err == MID_E_INVALID);
    } else {
        check_refusal(r2, without, size);
        CHECK(r2.err != MID_E_DENIED);
        CHECK(!mid_is_ok(r1)); /* what fails to parse can't pass with a SAN check */
    }
    ca_csr_free(with_id);
    ca_csr_free(without);
    ERR_clear_error();
    return 0;
}
