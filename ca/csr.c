#include "ca/csr.h"

#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca/ca.h"
#include "ca/der.h"
#include "ca/keys.h"

/* Extension request attributes we keep (PKCS#9 and Microsoft's). */
#define CSR_MAX_EXT_REQ 4

struct ca_csr {
    EVP_PKEY *pkey;
    ca_spki spki;                          /* points into der[] */
    size_t n_ext_req;
    der_tlv ext_req[CSR_MAX_EXT_REQ];      /* their Extensions SEQUENCEs, in der[] */
    size_t der_len;
    unsigned char der[];
};

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

/* ---- reading the structure ---------------------------------------------------- */

static mid_result malformed(const der_cursor *c, const char *where)
{
    MID_BAIL(MID_E_INVALID, "CSR: not a DER or PEM PKCS#10 certificate request (%s: %s)", where,
             c->why != NULL ? c->why : "unexpected content");
}

static mid_result malformed_why(const char *where, const char *why)
{
    MID_BAIL(MID_E_INVALID, "CSR: not a DER or PEM PKCS#10 certificate request (%s: %s)", where,
             why);
}

/* Contents octets of the OIDs we look for. */
static const unsigned char OID_EXT_REQ[] = {0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e};
static const unsigned char OID_MS_EXT_REQ[] = {0x2b, 0x06, 0x01, 0x04, 0x01,
                                               0x82, 0x37, 0x02, 0x01, 0x0e};

/* The signature algorithms we accept, with the key they need. */
static const struct {
    unsigned char oid[9];
    size_t oid_len;
    int key_nid;
    const char *md;
} SIG_ALGS[] = {
    {{0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02}, 8, NID_X9_62_id_ecPublicKey, "SHA256"},
    {{0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03}, 8, NID_X9_62_id_ecPublicKey, "SHA384"},
    {{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b}, 9, NID_rsaEncryption, "SHA256"},
    {{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c}, 9, NID_rsaEncryption, "SHA384"},
    {{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d}, 9, NID_rsaEncryption, "SHA512"},
};
#define SIG_ALGS_ACCEPTED                                                                      \
    "(accepted: ecdsa-with-SHA256, ecdsa-with-SHA384, sha256WithRSAEncryption, "             \
    "sha384WithRSAEncryption, sha512WithRSAEncryption)"

/* What the parse found, pointing into the DER. */
typedef struct {
    der_tlv cri;       /* certificationRequestInfo, whole: the signed bytes */
    der_tlv spki;      /* subjectPKInfo, whole */
    der_tlv sig_oid;   /* signatureAlgorithm.algorithm */
    int sig_has_params;
    const unsigned char *sig;
    size_t sig_len;
    size_t n_ext_req;
    der_tlv ext_req[CSR_MAX_EXT_REQ];
} csr_view;

/* Strict UTF-8 (RFC 3629: shortest form, no surrogates, at most U+10FFFF). */
static int utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t more;
        unsigned long v;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            more = 1;
            v = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            more = 2;
            v = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            more = 3;
            v = c & 0x07;
        } else {
            return 0;
        }
        if (n - i - 1 < more) return 0;
        for (size_t k = 1; k <= more; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return 0;
            v = (v << 6) | (s[i + k] & 0x3f);
        }
        if ((more == 2 && v < 0x800) || (more == 3 && v < 0x10000) || v > 0x10ffff ||
            (v >= 0xd800 && v <= 0xdfff))
            return 0;
        i += 1 + more;
    }
    return 1;
}

/* BMPString (2 octets) or UniversalString (4 octets) code points: whole
 * units, no surrogates, at most U+10FFFF. */
static int wide_valid(const unsigned char *s, size_t n, size_t unit)
{
    if (n % unit != 0) return 0;
    for (size_t i = 0; i < n; i += unit) {
        unsigned long v = 0;
        for (size_t k = 0; k < unit; k++) v = (v << 8) | s[i + k];
        if (v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) return 0;
    }
    return 1;
}

/* The subject is not used (the CA decides the certificate's subject) but it
 * is signed data, so it must be what d2i_X509_REQ would accept: a Name whose
 * attribute values are directory strings (the types OpenSSL canonicalises,
 * with valid contents). Returns NULL or what is wrong. */
static const char *name_value_problem(const der_tlv *v)
{
    switch (v->tag) {
    case 0x12: /* NumericString */
    case 0x13: /* PrintableString */
    case 0x14: /* T61String */
    case 0x16: /* IA5String */
        return NULL;
    case 0x0c: return utf8_valid(v->value, v->value_len) ? NULL : "invalid UTF8String";
    case 0x1e: return wide_valid(v->value, v->value_len, 2) ? NULL : "invalid BMPString";
    case 0x1c: return wide_valid(v->value, v->value_len, 4) ? NULL : "invalid UniversalString";
    default: return "unsupported string type";
    }
}

static mid_result read_subject(der_cursor *cri)
{
    der_cursor name, rdn, atv;
    der_tlv t;
    if (!der_read_enter(cri, DER_SEQUENCE, &name, NULL)) return malformed(cri, "subject");
    while (!der_at_end(&name)) {
        if (!der_read_enter(&name, DER_SET, &rdn, NULL)) return malformed(&name, "subject");
        if (der_at_end(&rdn)) return malformed_why("subject", "empty RelativeDistinguishedName");
        while (!der_at_end(&rdn)) {
            if (!der_read_enter(&rdn, DER_SEQUENCE, &atv, NULL))
                return malformed(&rdn, "subject attribute");
            if (!der_read_oid(&atv, &t)) return malformed(&atv, "subject attribute type");
            if (!der_read_any(&atv, &t)) return malformed(&atv, "subject attribute value");
            const char *why = name_value_problem(&t);
            if (why != NULL) return malformed_why("subject attribute value", why);
            if (!der_at_end(&atv)) return malformed(&atv, "subject attribute");
        }
    }
    return mid_ok();
}

/* One value of an attribute other than an extension request: anything
 * d2i_X509_REQ would store as ASN1_ANY. Returns NULL or what is wrong. */
static const char *any_value_problem(const der_tlv *v)
{
    const unsigned char *s = v->value;
    size_t n = v->value_len;
    if ((v->tag & 0xc0) != 0) return NULL; /* not universal: kept as it is */
    if (v->tag == DER_SEQUENCE || v->tag == DER_SET) return NULL;
    if (v->tag & 0x20) return "constructed string (BER, not DER)";
    switch (v->tag) {
    case 0x01: return n == 1 ? NULL : "malformed BOOLEAN";
    case DER_NULL: return n == 0 ? NULL : "malformed NULL";
    case DER_OID: return der_oid_well_formed(s, n) ? NULL : "malformed OBJECT IDENTIFIER";
    case DER_INTEGER:
    case 0x0a: /* ENUMERATED */
        return n > 0 && !(n > 1 && ((s[0] == 0 && !(s[1] & 0x80)) ||
                                    (s[0] == 0xff && (s[1] & 0x80))))
                   ? NULL
                   : "malformed INTEGER";
    case DER_BIT_STRING: return n > 0 && s[0] == 0 ? NULL : "BIT STRING with unused bits";
    case DER_OCTET_STRING:
    case 0x0c: /* UTF8String: stored as received */
    case 0x12:
    case 0x13:
    case 0x14:
    case 0x16: return NULL;
    case 0x1e: return n % 2 == 0 ? NULL : "malformed BMPString";
    case 0x1c: return n % 4 == 0 ? NULL : "malformed UniversalString";
    default: return "unsupported value type";
    }
}

/* attributes [0] IMPLICIT SET OF Attribute. Optional here as in OpenSSL
 * (some clients omit it when empty). Extension requests are kept for
 * ca_csr_check_uri_sans; they must have exactly one value, a SEQUENCE. */
static mid_result read_attributes(der_cursor *cri, csr_view *v)
{
    der_cursor attrs, attr, values;
    der_tlv type, val;
    if (der_peek_tag(cri) != DER_CTX0_CONSTRUCTED) return mid_ok();
    if (!der_read_enter(cri, DER_CTX0_CONSTRUCTED, &attrs, NULL))
        return malformed(cri, "attributes");
    while (!der_at_end(&attrs)) {
        if (!der_read_enter(&attrs, DER_SEQUENCE, &attr, NULL)) return malformed(&attrs, "attribute");
        if (!der_read_oid(&attr, &type)) return malformed(&attr, "attribute type");
        if (!der_read_enter(&attr, DER_SET, &values, NULL)) return malformed(&attr, "attribute values");
        if (!der_at_end(&attr)) return malformed_why("attribute", "data after the values");
        if (der_at_end(&values)) return malformed_why("attribute values", "empty SET");
        int ext_req = DER_OID_IS(&type, OID_EXT_REQ) || DER_OID_IS(&type, OID_MS_EXT_REQ);
        if (ext_req) {
            if (!der_read(&values, DER_SEQUENCE, &val)) return malformed(&values, "extension request");
            if (!der_at_end(&values))
                return malformed_why("extension request", "more than one value");
            if (v->n_ext_req == CSR_MAX_EXT_REQ)
                return malformed_why("attributes", "too many extension requests");
            v->ext_req[v->n_ext_req++] = val;
            continue;
        }
        while (!der_at_end(&values)) {
            if (!der_read_any(&values, &val)) return malformed(&values, "attribute value");
            const char *why = any_value_problem(&val);
            if (why != NULL) return malformed_why("attribute value", why);
        }
    }
    return mid_ok();
}

/* CertificationRequest ::= SEQUENCE { certificationRequestInfo,
 * signatureAlgorithm AlgorithmIdentifier, signature BIT STRING }, exactly
 * `len` bytes. */
static mid_result read_request(const unsigned char *der, size_t len, csr_view *v)
{
    der_cursor top, req, cri, alg;
    der_tlv t;
    const unsigned char *mag = NULL;
    size_t mag_len = 0;
    der_init(&top, der, len);
    if (!der_read_enter(&top, DER_SEQUENCE, &req, NULL)) return malformed(&top, "request");
    MID_ENSURE(der_at_end(&top), MID_E_INVALID, "CSR: %zu trailing bytes after the request",
               der_remaining(&top));

    if (!der_read_enter(&req, DER_SEQUENCE, &cri, &v->cri))
        return malformed(&req, "certificationRequestInfo");
    if (!der_read_uint(&cri, &mag, &mag_len)) return malformed(&cri, "version");
    if (mag_len != 1 || mag[0] != 0) {
        long ver = 0;
        for (size_t i = 0; i < mag_len && i < 4; i++) ver = (ver << 8) | mag[i];
        MID_BAIL(MID_E_INVALID, "CSR: version %s%ld is not PKCS#10 v1", mag_len > 4 ? ">" : "",
                 ver);
    }
    MID_GUARD(read_subject(&cri));
    if (!der_read(&cri, DER_SEQUENCE, &v->spki)) return malformed(&cri, "subjectPKInfo");
    MID_GUARD(read_attributes(&cri, v));
    if (!der_at_end(&cri))
        return malformed_why("certificationRequestInfo", "data after the attributes");

    if (!der_read_enter(&req, DER_SEQUENCE, &alg, NULL)) return malformed(&req, "signatureAlgorithm");
    if (!der_read_oid(&alg, &v->sig_oid)) return malformed(&alg, "signatureAlgorithm");
    if (!der_at_end(&alg)) {
        if (!der_read(&alg, DER_NULL, &t) || t.value_len != 0 || !der_at_end(&alg))
            return malformed_why("signatureAlgorithm", "parameters other than NULL");
        v->sig_has_params = 1;
    }
    if (!der_read_bits(&req, &v->sig, &v->sig_len)) return malformed(&req, "signature");
    if (v->sig_len == 0) return malformed_why("signature", "empty");
    if (!der_at_end(&req)) return malformed_why("request", "data after the signature");
    return mid_ok();
}

/* The digest for the request's signature algorithm, which must suit its key. */
static mid_result sig_digest(const csr_view *v, const ca_spki *key, const char **md)
{
    char name[80];
    for (size_t i = 0; i < sizeof SIG_ALGS / sizeof SIG_ALGS[0]; i++) {
        if (!der_oid_is(&v->sig_oid, SIG_ALGS[i].oid, SIG_ALGS[i].oid_len)) continue;
        if (SIG_ALGS[i].key_nid != key->key_nid) {
            der_oid_text(&v->sig_oid, name, sizeof name);
            MID_BAIL(MID_E_INVALID, "CSR: signature algorithm %s does not suit its %s key", name,
                     key->key_nid == NID_rsaEncryption ? "RSA" : "EC");
        }
        /* RFC 5758: ECDSA identifiers have no parameters; RSA ones NULL (or,
         * tolerated as by OpenSSL, none). */
        MID_ENSURE(!v->sig_has_params || key->key_nid == NID_rsaEncryption, MID_E_INVALID,
                   "CSR: not a DER or PEM PKCS#10 certificate request (signatureAlgorithm: "
                   "ECDSA with parameters)");
        *md = SIG_ALGS[i].md;
        return mid_ok();
    }
    der_oid_text(&v->sig_oid, name, sizeof name);
    MID_BAIL(MID_E_INVALID, "CSR: signature algorithm %s is not accepted " SIG_ALGS_ACCEPTED,
             name);
}

static mid_result verify_signature(const csr_view *v, EVP_PKEY *pkey, const char *md_name)
{
    mid_result r = MID_OK_RESULT;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    MID_CHECK_MEM(r, md);
    MID_CHECK_OSSL(r, EVP_DigestVerifyInit_ex(md, NULL, md_name, NULL, NULL, pkey, NULL),
                   MID_E_CRYPTO, "CSR: cannot start the signature check");
    MID_CHECK_OSSL(r, EVP_DigestVerify(md, v->sig, v->sig_len, v->cri.tlv, v->cri.tlv_len),
                   MID_E_INVALID, "CSR: signature does not verify with its public key");
out:
    EVP_MD_CTX_free(md);
    return r;
}

/* ---- the API --------------------------------------------------------------------- */

void ca_csr_free(ca_csr *csr)
{
    if (csr == NULL) return;
    EVP_PKEY_free(csr->pkey);
    free(csr);
}

EVP_PKEY *ca_csr_pubkey(const ca_csr *csr) { return csr->pkey; }

const ca_spki *ca_csr_spki(const ca_csr *csr) { return &csr->spki; }

const unsigned char *ca_csr_der(const ca_csr *csr, size_t *len)
{
    *len = csr->der_len;
    return csr->der;
}

MID_RESULT ca_csr_parse(const unsigned char *data, size_t len, ca_csr **out)
{
    mid_result r = MID_OK_RESULT;
    unsigned char *pem_der = NULL;
    ca_csr *csr = NULL;
    csr_view v;
    memset(&v, 0, sizeof v);
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

    /* Our own copy, so that the request outlives the caller's buffer; the
     * view and the SPKI point into it. */
    csr = calloc(1, sizeof *csr + (size_t)der_len);
    MID_CHECK_MEM(r, csr);
    csr->der_len = (size_t)der_len;
    memcpy(csr->der, der, (size_t)der_len);
    MID_TRY(r, read_request(csr->der, csr->der_len, &v));

    /* The key policy comes first (ca_key_from_spki checks it before building
     * the key): no work on keys we would refuse. */
    r = ca_key_from_spki(v.spki.tlv, v.spki.tlv_len, &csr->spki, &csr->pkey);
    if (!mid_is_ok(r)) {
        /* say where the key came from; keep the code and the origin */
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", mid_errmsg());
        const char *file = mid_errfile();
        int line = mid_errline();
        r = mid_fail(r.err, file, line, "CSR: %s", msg);
        goto out;
    }
    const char *md_name = NULL;
    MID_TRY(r, sig_digest(&v, &csr->spki, &md_name));
    MID_TRY(r, verify_signature(&v, csr->pkey, md_name));
    csr->n_ext_req = v.n_ext_req;
    memcpy(csr->ext_req, v.ext_req, sizeof v.ext_req);
    *out = csr;
    csr = NULL;
out:
    ca_csr_free(csr);
    OPENSSL_free(pem_der);
    return r;
}

/* Refuses a URI SAN other than `spiffe_id` in one Extensions SEQUENCE. */
static mid_result check_ext_req(const der_tlv *ext_req, const char *spiffe_id)
{
    mid_result r = MID_OK_RESULT;
    GENERAL_NAMES *gens = NULL;
    const unsigned char *p = ext_req->tlv;
    STACK_OF(X509_EXTENSION) *exts = d2i_X509_EXTENSIONS(NULL, &p, (long)ext_req->tlv_len);
    if (exts == NULL || p != ext_req->tlv + ext_req->tlv_len) {
        r = mid_fail_ossl(MID_E_INVALID, __FILE__, __LINE__, "CSR: malformed extension request");
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

MID_RESULT ca_csr_check_uri_sans(const ca_csr *csr, const char *spiffe_id)
{
    for (size_t i = 0; i < csr->n_ext_req; i++) MID_GUARD(check_ext_req(&csr->ext_req[i], spiffe_id));
    return mid_ok();
}

MID_RESULT ca_csr_intake(const unsigned char *data, size_t len, const char *spiffe_id,
                         ca_csr **out)
{
    ca_csr *csr = NULL;
    MID_GUARD(ca_csr_parse(data, len, &csr));
    if (spiffe_id != NULL) {
        mid_result r = ca_csr_check_uri_sans(csr, spiffe_id);
        if (!mid_is_ok(r)) {
            ca_csr_free(csr);
            return r;
        }
    }
    *out = csr;
    return mid_ok();
}
