#include "ca/csr.h"

#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <string.h>

#include "ca/ca.h"
#include "ca/keys.h"

static int is_blank(unsigned char ch) { return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n'; }

/* Offset of the PEM boundary when the first non-blank bytes are one; -1 for
 * anything else (treated as DER). */
static long pem_start(const unsigned char *d, size_t len)
{
    static const char begin[] = "-----BEGIN ";
    size_t i = 0;
    while (i < len && is_blank(d[i])) i++;
    if (len - i >= sizeof begin - 1 && memcmp(d + i, begin, sizeof begin - 1) == 0)
        return (long)i;
    return -1;
}

static int only_blank(const unsigned char *d, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!is_blank(d[i])) return 0;
    return 1;
}

/* Unwraps the single PEM block into DER owned by the caller (OPENSSL_free). */
static mid_result pem_to_der(const unsigned char *data, size_t len, unsigned char **der,
                             long *der_len)
{
    mid_result r = MID_OK_RESULT;
    char *name = NULL, *header = NULL;
    unsigned char *body = NULL;
    long body_len = 0;
    BIO *b = BIO_new_mem_buf(data, (int)len);
    MID_CHECK_MEM(r, b);
    if (PEM_read_bio(b, &name, &header, &body, &body_len) != 1) {
        r = mid_fail_ossl(MID_E_INVALID, __FILE__, __LINE__, "CSR: malformed PEM");
        goto out;
    }
    MID_CHECK(r, strcmp(name, "CERTIFICATE REQUEST") == 0 ||
                     strcmp(name, "NEW CERTIFICATE REQUEST") == 0,
              MID_E_INVALID, "CSR: PEM block is '%.40s', expected 'CERTIFICATE REQUEST'", name);
    MID_CHECK(r, header == NULL || header[0] == '\0', MID_E_INVALID,
              "CSR: PEM headers (encryption) are not allowed");
    /* Whatever follows the block must be blank: a second object is not ignored
     * silently. */
    {
        char *rest = NULL;
        long rest_len = BIO_get_mem_data(b, &rest);
        MID_CHECK(r, rest_len <= 0 || only_blank((const unsigned char *)rest, (size_t)rest_len),
                  MID_E_INVALID, "CSR: unexpected data after the PEM block");
    }
    *der = body;
    *der_len = body_len;
    body = NULL;
out:
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(body);
    BIO_free(b);
    return r;
}

MID_RESULT ca_csr_parse(const unsigned char *data, size_t len, X509_REQ **out)
{
    mid_result r = MID_OK_RESULT;
    unsigned char *pem_der = NULL;
    X509_REQ *req = NULL;
    MID_CHECK(r, data != NULL && len > 0, MID_E_INVALID, "CSR: empty");
    MID_CHECK(r, len <= CA_CSR_MAX, MID_E_TOO_LARGE, "CSR: %zu bytes is over the limit of %d",
              len, CA_CSR_MAX);

    const unsigned char *der = data;
    long der_len = (long)len;
    long pem_at = pem_start(data, len);
    if (pem_at >= 0) {
        MID_TRY(r, pem_to_der(data + pem_at, len - (size_t)pem_at, &pem_der, &der_len));
        der = pem_der;
    }
    MID_CHECK(r, der_len > 0, MID_E_INVALID, "CSR: empty");
    const unsigned char *p = der;
    req = d2i_X509_REQ(NULL, &p, der_len);
    if (req == NULL) {
        r = mid_fail_ossl(MID_E_INVALID, __FILE__, __LINE__,
                          "CSR: not a DER or PEM PKCS#10 certificate request");
        goto out;
    }
    MID_CHECK(r, p == der + der_len, MID_E_INVALID,
              "CSR: %ld trailing bytes after the request", (long)(der + der_len - p));
    MID_CHECK(r, X509_REQ_get_version(req) == X509_REQ_VERSION_1, MID_E_INVALID,
              "CSR: version %ld is not PKCS#10 v1", X509_REQ_get_version(req));

    EVP_PKEY *pk = X509_REQ_get0_pubkey(req);
    if (pk == NULL) {
        r = mid_fail_ossl(MID_E_INVALID, __FILE__, __LINE__, "CSR: unreadable public key");
        goto out;
    }
    /* Policy before the signature check: no work on keys we would refuse. */
    MID_TRY(r, ca_key_check_accepted(pk));
    if (X509_REQ_verify(req, pk) != 1) {
        r = mid_fail_ossl(MID_E_INVALID, __FILE__, __LINE__,
                          "CSR: signature does not verify with its public key");
        goto out;
    }
    *out = req;
    req = NULL;
out:
    X509_REQ_free(req);
    OPENSSL_free(pem_der);
    return r;
}

MID_RESULT ca_csr_check_uri_sans(X509_REQ *req, const char *spiffe_id)
{
    mid_result r = MID_OK_RESULT;
    STACK_OF(X509_EXTENSION) *exts = NULL;
    GENERAL_NAMES *gens = NULL;
    int has_req = X509_REQ_get_attr_by_NID(req, NID_ext_req, -1) >= 0 ||
                  X509_REQ_get_attr_by_NID(req, NID_ms_ext_req, -1) >= 0;
    if (!has_req) goto out; /* nothing requested */
    exts = X509_REQ_get_extensions(req);
    if (exts == NULL) {
        r = mid_fail_ossl(MID_E_INVALID, __FILE__, __LINE__,
                          "CSR: malformed extension request");
        goto out;
    }
    int crit = -1;
    gens = X509V3_get_d2i(exts, NID_subject_alt_name, &crit, NULL);
    if (gens == NULL) {
        /* -1: no SAN asked for. Otherwise a duplicate or undecodable SAN,
         * which could hide an identity: refuse. */
        if (crit != -1)
            r = mid_fail_ossl(MID_E_INVALID, __FILE__, __LINE__,
                              "CSR: malformed or repeated subjectAltName in the extension request");
        goto out;
    }
    size_t want = strlen(spiffe_id);
    for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type != GEN_URI) continue;
        const ASN1_IA5STRING *u = g->d.uniformResourceIdentifier;
        int n = ASN1_STRING_length(u);
        const unsigned char *s = ASN1_STRING_get0_data(u);
        int same = n >= 0 && (size_t)n == want && memcmp(s, spiffe_id, want) == 0;
        MID_CHECK(r, same, MID_E_DENIED,
                  "CSR asks for URI SAN '%.*s' but the CA issues only %s", n > 200 ? 200 : n,
                  (const char *)s, spiffe_id);
    }
out:
    GENERAL_NAMES_free(gens);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    return r;
}

MID_RESULT ca_csr_intake(const unsigned char *data, size_t len, const char *spiffe_id,
                         X509_REQ **out)
{
    X509_REQ *req = NULL;
    MID_GUARD(ca_csr_parse(data, len, &req));
    if (spiffe_id != NULL) {
        mid_result r = ca_csr_check_uri_sans(req, spiffe_id);
        if (!mid_is_ok(r)) {
            X509_REQ_free(req);
            return r;
        }
    }
    *out = req;
    return mid_ok();
}
