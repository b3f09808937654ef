/* sds_view: an immutable snapshot of what one workload may receive.
 *
 * PEM comes in from the agent cache; we parse it once with OpenSSL and keep
 * canonical forms of everything the services send: the certificates re-encoded
 * as PEM and DER (so junk between PEM blocks never reaches a client), the key
 * as unencrypted PKCS#8 PEM and DER, and SHA-256 digests that change iff the
 * material does. After construction the view is only read, from any thread;
 * the reference count is atomic. */
#include "sds/view.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "identity/spiffe_id.h"

/* Hard limits: a view is built from our own cache, but it still holds only
 * bounded amounts (every byte of it may be sent on every stream). */
#define VIEW_MAX_SVIDS 64
#define VIEW_MAX_BUNDLES 256
#define VIEW_MAX_PEM_BYTES ((size_t)1 << 20) /* per chain, key or roots text */
#define VIEW_MAX_CERTS 64                    /* per chain or roots */

struct sds_view {
    atomic_uint refs;
    sds_svid svids[VIEW_MAX_SVIDS];
    size_t n_svids;
    sds_bundle *bundles; /* grown by doubling up to VIEW_MAX_BUNDLES */
    size_t n_bundles, cap_bundles;
};

/* ---- helpers ------------------------------------------------------------- */

static char *hex_digest(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    char *hex = NULL;
    if (!c) return NULL;
    if (EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1) goto out;
    if (alen && EVP_DigestUpdate(c, a, alen) != 1) goto out;
    if (blen && EVP_DigestUpdate(c, b, blen) != 1) goto out;
    if (EVP_DigestFinal_ex(c, md, &mdlen) != 1) goto out;
    hex = malloc(mdlen * 2 + 1);
    if (!hex) goto out;
    static const char digits[] = "0123456789abcdef";
    for (unsigned i = 0; i < mdlen; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[2 * mdlen] = '\0';
out:
    EVP_MD_CTX_free(c);
    return hex;
}

/* Copies a memory BIO's contents into a NUL-terminated heap string. */
static char *bio_string(BIO *b)
{
    char *data = NULL;
    long n = BIO_get_mem_data(b, &data);
    if (n < 0) return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s) return NULL;
    if (n) memcpy(s, data, (size_t)n);
    s[n] = '\0';
    return s;
}

static uint8_t *bio_bytes(BIO *b, size_t *len)
{
    char *data = NULL;
    long n = BIO_get_mem_data(b, &data);
    if (n <= 0) return NULL;
    uint8_t *p = malloc((size_t)n);
    if (!p) return NULL;
    memcpy(p, data, (size_t)n);
    *len = (size_t)n;
    return p;
}

/* Parses every certificate of `pem` (at least one, at most VIEW_MAX_CERTS)
 * and writes canonical PEM and concatenated DER. Anything that is not a
 * certificate PEM block makes the input invalid, except text outside blocks. */
static mid_result certs_from_pem(const char *pem, const char *what, char **pem_out,
                                 uint8_t **der_out, size_t *der_len)
{
    mid_result r = MID_OK_RESULT;
    BIO *in = NULL, *pem_b = NULL, *der_b = NULL;
    X509 *x = NULL;
    size_t n = 0;
    *pem_out = NULL;
    *der_out = NULL;
    *der_len = 0;
    MID_CHECK(r, pem != NULL, MID_E_INVALID, "%s: no PEM given", what);
    size_t len = strlen(pem);
    MID_CHECK(r, len <= VIEW_MAX_PEM_BYTES, MID_E_TOO_LARGE, "%s: PEM over %zu bytes", what,
              VIEW_MAX_PEM_BYTES);
    in = BIO_new_mem_buf(pem, (int)len);
    pem_b = BIO_new(BIO_s_mem());
    der_b = BIO_new(BIO_s_mem());
    MID_CHECK(r, in && pem_b && der_b, MID_E_NOMEM, "out of memory");
    ERR_clear_error();
    for (;;) {
        x = PEM_read_bio_X509(in, NULL, NULL, NULL);
        if (!x) break;
        MID_CHECK(r, ++n <= VIEW_MAX_CERTS, MID_E_TOO_LARGE, "%s: more than %d certificates",
                  what, VIEW_MAX_CERTS);
        MID_CHECK_OSSL(r, PEM_write_bio_X509(pem_b, x), MID_E_CRYPTO, "%s: PEM encode", what);
        MID_CHECK(r, i2d_X509_bio(der_b, x) == 1, MID_E_CRYPTO, "%s: DER encode", what);
        X509_free(x);
        x = NULL;
    }
    /* PEM_read_bio_X509 fails at end of input with PEM_R_NO_START_LINE; any
     * other error means a damaged block. */
    unsigned long e = ERR_peek_last_error();
    bool clean_end = e == 0 || (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE);
    ERR_clear_error();
    MID_CHECK(r, clean_end, MID_E_INVALID, "%s: damaged certificate PEM", what);
    MID_CHECK(r, n > 0, MID_E_INVALID, "%s: no certificate in PEM", what);
    *pem_out = bio_string(pem_b);
    *der_out = bio_bytes(der_b, der_len);
    MID_CHECK(r, *pem_out && *der_out, MID_E_NOMEM, "out of memory");
out:
    if (!mid_is_ok(r)) {
        free(*pem_out);
        free(*der_out);
        *pem_out = NULL;
        *der_out = NULL;
        *der_len = 0;
    }
    X509_free(x);
    BIO_free(in);
    BIO_free(pem_b);
    BIO_free(der_b);
    return r;
}

static void svid_clear(sds_svid *s)
{
    free((char *)s->spiffe_id);
    free((char *)s->chain_pem);
    if (s->key_pem) {
        OPENSSL_cleanse((char *)s->key_pem, strlen(s->key_pem));
        free((char *)s->key_pem);
    }
    free((uint8_t *)s->chain_der);
    if (s->key_der) {
        OPENSSL_cleanse((uint8_t *)s->key_der, s->key_der_len);
        free((uint8_t *)s->key_der);
    }
    free((char *)s->digest);
    memset(s, 0, sizeof *s);
}

static void bundle_clear(sds_bundle *b)
{
    free((char *)b->trust_domain);
    free((char *)b->roots_pem);
    free((uint8_t *)b->roots_der);
    free((char *)b->digest);
    memset(b, 0, sizeof *b);
}

static bool shared(const sds_view *v) { return atomic_load(&v->refs) != 1; }

/* ---- construction -------------------------------------------------------- */

mid_result sds_view_new(sds_view **out)
{
    *out = NULL;
    sds_view *v = calloc(1, sizeof *v);
    MID_ENSURE_MEM(v);
    atomic_init(&v->refs, 1);
    *out = v;
    return mid_ok();
}

mid_result sds_view_add_svid(sds_view *v, const char *id_str, const char *chain_pem,
                             const char *key_pem, int64_t not_after)
{
    mid_result r = MID_OK_RESULT;
    sds_svid s = {0};
    spiffe_id *id = NULL;
    BIO *kin = NULL, *kpem = NULL, *kder = NULL;
    EVP_PKEY *key = NULL;
    X509 *leaf = NULL;
    uint8_t *chain_der = NULL;
    char *canon_chain = NULL;
    size_t chain_len = 0;

    MID_CHECK(r, v && id_str && chain_pem && key_pem, MID_E_INVALID, "sds_view_add_svid: NULL argument");
    MID_CHECK(r, !shared(v), MID_E_STATE, "sds_view_add_svid: view already shared");
    MID_CHECK(r, v->n_svids < VIEW_MAX_SVIDS, MID_E_TOO_LARGE, "more than %d SVIDs in a view",
              VIEW_MAX_SVIDS);
    MID_TRY(r, spiffe_id_parse(id_str, strlen(id_str), &id));
    MID_CHECK(r, spiffe_id_is_workload(id), MID_E_INVALID, "SVID ID '%s' has no path", id_str);

    MID_TRY(r, certs_from_pem(chain_pem, "SVID chain", &canon_chain, &chain_der, &chain_len));
    const uint8_t *p = chain_der;
    leaf = d2i_X509(NULL, &p, (long)chain_len);
    MID_CHECK(r, leaf != NULL, MID_E_CRYPTO, "SVID chain: re-parse of leaf failed");

    size_t klen = strlen(key_pem);
    MID_CHECK(r, klen <= VIEW_MAX_PEM_BYTES, MID_E_TOO_LARGE, "SVID key PEM too large");
    kin = BIO_new_mem_buf(key_pem, (int)klen);
    kpem = BIO_new(BIO_s_mem());
    kder = BIO_new(BIO_s_mem());
    MID_CHECK(r, kin && kpem && kder, MID_E_NOMEM, "out of memory");
    key = PEM_read_bio_PrivateKey(kin, NULL, NULL, NULL);
    ERR_clear_error();
    MID_CHECK(r, key != NULL, MID_E_INVALID, "SVID key: not an unencrypted PEM private key");
    MID_CHECK(r, X509_check_private_key(leaf, key) == 1, MID_E_INVALID,
              "SVID key does not match the leaf certificate of '%s'", id_str);
    ERR_clear_error();
    MID_CHECK_OSSL(r, PEM_write_bio_PKCS8PrivateKey(kpem, key, NULL, NULL, 0, NULL, NULL),
                   MID_E_CRYPTO, "SVID key: PKCS#8 PEM encode");
    MID_CHECK_OSSL(r, i2d_PKCS8PrivateKey_bio(kder, key, NULL, NULL, 0, NULL, NULL), MID_E_CRYPTO,
                   "SVID key: PKCS#8 DER encode");

    s.spiffe_id = strdup(id_str);
    s.chain_pem = canon_chain;
    canon_chain = NULL;
    s.chain_der = chain_der;
    s.chain_der_len = chain_len;
    chain_der = NULL;
    s.key_pem = bio_string(kpem);
    s.key_der = bio_bytes(kder, &s.key_der_len);
    s.not_after = not_after;
    MID_CHECK(r, s.spiffe_id && s.key_pem && s.key_der, MID_E_NOMEM, "out of memory");
    s.digest = hex_digest(s.chain_der, s.chain_der_len, s.key_der, s.key_der_len);
    MID_CHECK(r, s.digest != NULL, MID_E_CRYPTO, "SVID digest failed");
    v->svids[v->n_svids++] = s;
    memset(&s, 0, sizeof s);
out:
    svid_clear(&s);
    free(canon_chain);
    free(chain_der);
    spiffe_id_free(id);
    X509_free(leaf);
    EVP_PKEY_free(key);
    BIO_free(kin);
    if (kpem) {
        char *d = NULL;
        long n = BIO_get_mem_data(kpem, &d);
        if (n > 0) OPENSSL_cleanse(d, (size_t)n);
    }
    if (kder) {
        char *d = NULL;
        long n = BIO_get_mem_data(kder, &d);
        if (n > 0) OPENSSL_cleanse(d, (size_t)n);
    }
    BIO_free(kpem);
    BIO_free(kder);
    return r;
}

mid_result sds_view_add_bundle(sds_view *v, const char *trust_domain, const char *roots_pem,
                               uint64_t sequence)
{
    mid_result r = MID_OK_RESULT;
    sds_bundle b = {0};
    char td[SPIFFE_TD_MAX + 1];
    uint8_t *der = NULL;
    char *pem = NULL;
    size_t der_len = 0;

    MID_CHECK(r, v && trust_domain && roots_pem, MID_E_INVALID, "sds_view_add_bundle: NULL argument");
    MID_CHECK(r, !shared(v), MID_E_STATE, "sds_view_add_bundle: view already shared");
    MID_TRY(r, spiffe_trust_domain_parse(trust_domain, td));
    MID_CHECK(r, strcmp(td, trust_domain) == 0, MID_E_INVALID,
              "bundle trust domain '%s' must be a bare name", trust_domain);
    MID_CHECK(r, sds_view_bundle_for(v, td) == NULL, MID_E_EXISTS,
              "a bundle for trust domain '%s' is already in the view", td);
    MID_CHECK(r, v->n_bundles < VIEW_MAX_BUNDLES, MID_E_TOO_LARGE,
              "more than %d bundles in a view", VIEW_MAX_BUNDLES);
    MID_TRY(r, certs_from_pem(roots_pem, "bundle roots", &pem, &der, &der_len));
    if (v->n_bundles == v->cap_bundles) {
        size_t cap = v->cap_bundles ? v->cap_bundles * 2 : 4;
        sds_bundle *nb = realloc(v->bundles, cap * sizeof *nb);
        MID_CHECK_MEM(r, nb);
        v->bundles = nb;
        v->cap_bundles = cap;
    }
    b.trust_domain = strdup(td);
    b.roots_pem = pem;
    b.roots_der = der;
    b.roots_der_len = der_len;
    pem = NULL;
    der = NULL;
    b.sequence = sequence;
    MID_CHECK_MEM(r, b.trust_domain);
    b.digest = hex_digest(b.roots_der, b.roots_der_len, NULL, 0);
    MID_CHECK(r, b.digest != NULL, MID_E_CRYPTO, "bundle digest failed");
    v->bundles[v->n_bundles++] = b;
    memset(&b, 0, sizeof b);
out:
    bundle_clear(&b);
    free(pem);
    free(der);
    return r;
}

/* ---- reference counting -------------------------------------------------- */

sds_view *sds_view_ref(sds_view *v)
{
    if (v) atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
    return v;
}

void sds_view_unref(sds_view *v)
{
    if (!v) return;
    /* acq_rel: the thread freeing the view sees every other thread's reads done */
    if (atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) != 1) return;
    for (size_t i = 0; i < v->n_svids; i++) svid_clear(&v->svids[i]);
    for (size_t i = 0; i < v->n_bundles; i++) bundle_clear(&v->bundles[i]);
    free(v->bundles);
    free(v);
}

/* ---- reading ------------------------------------------------------------- */

size_t sds_view_svid_count(const sds_view *v) { return v ? v->n_svids : 0; }

const sds_svid *sds_view_svid(const sds_view *v, size_t i)
{
    return v && i < v->n_svids ? &v->svids[i] : NULL;
}

const sds_svid *sds_view_svid_by_id(const sds_view *v, const char *id_str)
{
    if (!v || !id_str) return NULL;
    for (size_t i = 0; i < v->n_svids; i++)
        if (strcmp(v->svids[i].spiffe_id, id_str) == 0) return &v->svids[i];
    return NULL;
}

size_t sds_view_bundle_count(const sds_view *v) { return v ? v->n_bundles : 0; }

const sds_bundle *sds_view_bundle(const sds_view *v, size_t i)
{
    return v && i < v->n_bundles ? &v->bundles[i] : NULL;
}

const sds_bundle *sds_view_bundle_for(const sds_view *v, const char *td)
{
    if (!v || !td) return NULL;
    for (size_t i = 0; i < v->n_bundles; i++)
        if (strcmp(v->bundles[i].trust_domain, td) == 0) return &v->bundles[i];
    return NULL;
}
