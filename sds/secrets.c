/* Envoy Secrets and Workload API responses from a view (see sds/secrets.h). */
#include "sds/secrets.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <openssl/evp.h>

#include "envoy/config/core/v3/base.pb-c.h"
#include "envoy/config/core/v3/extension.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/common.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/tls_spiffe_validator_config.pb-c.h"

typedef Envoy__Config__Core__V3__DataSource data_source;
typedef Envoy__Extensions__TransportSockets__Tls__V3__TlsCertificate tls_cert_msg;
typedef Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext valctx_msg;
typedef Envoy__Extensions__TransportSockets__Tls__V3__SPIFFECertValidatorConfig spiffe_cfg_msg;
typedef Envoy__Extensions__TransportSockets__Tls__V3__SPIFFECertValidatorConfig__TrustDomain
    spiffe_td_msg;
typedef Envoy__Config__Core__V3__TypedExtensionConfig typed_ext_msg;

#define SPIFFE_PREFIX "spiffe://"
#define SPIFFE_PREFIX_LEN 9

/* What a resource name refers to. */
typedef enum { RES_NONE, RES_SVID, RES_BUNDLE, RES_ALL } res_kind;

typedef struct {
    res_kind kind;
    const sds_svid *svid;
    const sds_bundle *bundle;
} res_ref;

static res_ref resolve(const sds_view *v, const char *name)
{
    res_ref r = {RES_NONE, NULL, NULL};
    if (!v || !name || strnlen(name, SDS_NAME_MAX + 1) > SDS_NAME_MAX) return r;
    if (strcmp(name, SDS_NAME_DEFAULT) == 0) {
        r.svid = sds_view_svid(v, 0);
        r.kind = r.svid ? RES_SVID : RES_NONE;
    } else if (strcmp(name, SDS_NAME_ROOTCA) == 0) {
        r.bundle = sds_view_bundle(v, 0);
        r.kind = r.bundle ? RES_BUNDLE : RES_NONE;
    } else if (strcmp(name, SDS_NAME_ALL) == 0) {
        r.kind = sds_view_bundle_count(v) > 0 ? RES_ALL : RES_NONE;
    } else if ((r.svid = sds_view_svid_by_id(v, name)) != NULL) {
        r.kind = RES_SVID;
    } else if (strncmp(name, SPIFFE_PREFIX, SPIFFE_PREFIX_LEN) == 0) {
        /* a bare trust domain never contains '/', so "spiffe://td/x" and
         * "spiffe://td/" find nothing here */
        r.bundle = sds_view_bundle_for(v, name + SPIFFE_PREFIX_LEN);
        r.kind = r.bundle ? RES_BUNDLE : RES_NONE;
    }
    return r;
}

/* ---- digests ------------------------------------------------------------- */

typedef struct {
    EVP_MD_CTX *c;
    bool ok;
} hasher;

static void h_init(hasher *h)
{
    h->c = EVP_MD_CTX_new();
    h->ok = h->c && EVP_DigestInit_ex(h->c, EVP_sha256(), NULL) == 1;
}

/* Adds a string and its terminating NUL, so ("ab","c") != ("a","bc"). */
static void h_str(hasher *h, const char *s)
{
    if (h->ok) h->ok = EVP_DigestUpdate(h->c, s, strlen(s) + 1) == 1;
}

static mid_result h_final(hasher *h, sds_digest *out)
{
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    if (h->ok) h->ok = EVP_DigestFinal_ex(h->c, md, &n) == 1 && n * 2 == SDS_DIGEST_HEX;
    EVP_MD_CTX_free(h->c);
    h->c = NULL;
    out->hex[0] = '\0';
    MID_ENSURE(h->ok, MID_E_CRYPTO, "SHA-256 failed");
    static const char digits[] = "0123456789abcdef";
    for (unsigned i = 0; i < n; i++) {
        out->hex[2 * i] = digits[md[i] >> 4];
        out->hex[2 * i + 1] = digits[md[i] & 15];
    }
    out->hex[SDS_DIGEST_HEX] = '\0';
    return mid_ok();
}

mid_result sds_secret_digest(const sds_view *v, const char *name, sds_digest *out)
{
    res_ref ref = resolve(v, name);
    hasher h;
    out->hex[0] = '\0';
    switch (ref.kind) {
    case RES_SVID:
        h_init(&h);
        h_str(&h, "svid");
        h_str(&h, ref.svid->digest);
        return h_final(&h, out);
    case RES_BUNDLE:
        h_init(&h);
        h_str(&h, "bundle");
        h_str(&h, ref.bundle->trust_domain);
        h_str(&h, ref.bundle->digest);
        return h_final(&h, out);
    case RES_ALL:
        h_init(&h);
        h_str(&h, "all");
        for (size_t i = 0; i < sds_view_bundle_count(v); i++) {
            h_str(&h, sds_view_bundle(v, i)->trust_domain);
            h_str(&h, sds_view_bundle(v, i)->digest);
        }
        return h_final(&h, out);
    case RES_NONE:
        break;
    }
    MID_BAIL(MID_E_NOT_FOUND, "unknown resource name");
}

/* ---- Secret builders ----------------------------------------------------- */

/* A copy of `init` in the arena, or NULL when the arena is exhausted. */
static void *anew(arena *a, const void *init, size_t size)
{
    void *p = arena_alloc(a, size);
    if (p) memcpy(p, init, size);
    return p;
}
#define ANEW(a, T, INIT) ((T *)anew((a), &(T)INIT, sizeof(T)))

static data_source *inline_pem(arena *a, const char *pem)
{
    data_source *d = ANEW(a, data_source, ENVOY__CONFIG__CORE__V3__DATA_SOURCE__INIT);
    if (!d) return NULL;
    d->specifier_case = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_BYTES;
    d->inline_bytes.data = (uint8_t *)pem;
    d->inline_bytes.len = strlen(pem);
    return d;
}

static mid_result pack_any(arena *a, const ProtobufCMessage *m, const char *type_url,
                           Google__Protobuf__Any **out)
{
    Google__Protobuf__Any *any = ANEW(a, Google__Protobuf__Any, GOOGLE__PROTOBUF__ANY__INIT);
    MID_ENSURE_MEM(any);
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = arena_alloc(a, n);
    MID_ENSURE_MEM(buf);
    size_t w = protobuf_c_message_pack(m, buf);
    MID_ENSURE(w == n, MID_E_INTERNAL, "protobuf pack size mismatch");
    any->type_url = arena_strndup(a, type_url, strlen(type_url));
    MID_ENSURE_MEM(any->type_url);
    any->value.data = buf;
    any->value.len = n;
    *out = any;
    return mid_ok();
}

static mid_result build_spiffe_validator(const sds_view *v, arena *a, typed_ext_msg **out)
{
    size_t n = sds_view_bundle_count(v);
    spiffe_cfg_msg *cfg =
        ANEW(a, spiffe_cfg_msg, ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SPIFFECERT_VALIDATOR_CONFIG__INIT);
    MID_ENSURE_MEM(cfg);
    cfg->trust_domains = arena_alloc(a, n * sizeof *cfg->trust_domains);
    MID_ENSURE_MEM(cfg->trust_domains);
    for (size_t i = 0; i < n; i++) {
        const sds_bundle *b = sds_view_bundle(v, i);
        spiffe_td_msg *td = ANEW(
            a, spiffe_td_msg,
            ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SPIFFECERT_VALIDATOR_CONFIG__TRUST_DOMAIN__INIT);
        MID_ENSURE_MEM(td);
        td->name = (char *)b->trust_domain;
        td->trust_bundle = inline_pem(a, b->roots_pem);
        MID_ENSURE_MEM(td->trust_bundle);
        cfg->trust_domains[i] = td;
    }
    cfg->n_trust_domains = n;
    typed_ext_msg *ext = ANEW(a, typed_ext_msg, ENVOY__CONFIG__CORE__V3__TYPED_EXTENSION_CONFIG__INIT);
    MID_ENSURE_MEM(ext);
    ext->name = SDS_SPIFFE_VALIDATOR_NAME;
    MID_GUARD(pack_any(a, &cfg->base, SDS_SPIFFE_VALIDATOR_TYPE_URL, &ext->typed_config));
    *out = ext;
    return mid_ok();
}

mid_result sds_secret_build(const sds_view *v, const char *name, arena *a, sds_secret_msg **out)
{
    *out = NULL;
    res_ref ref = resolve(v, name);
    MID_ENSURE(ref.kind != RES_NONE, MID_E_NOT_FOUND, "unknown resource name");
    sds_secret_msg *s = ANEW(a, sds_secret_msg, ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__INIT);
    MID_ENSURE_MEM(s);
    s->name = (char *)name;
    if (ref.kind == RES_SVID) {
        tls_cert_msg *tc =
            ANEW(a, tls_cert_msg, ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__TLS_CERTIFICATE__INIT);
        MID_ENSURE_MEM(tc);
        tc->certificate_chain = inline_pem(a, ref.svid->chain_pem);
        tc->private_key = inline_pem(a, ref.svid->key_pem);
        MID_ENSURE_MEM(tc->certificate_chain);
        MID_ENSURE_MEM(tc->private_key);
        s->type_case = ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE;
        s->tls_certificate = tc;
    } else {
        valctx_msg *vc = ANEW(a, valctx_msg,
                              ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__CERTIFICATE_VALIDATION_CONTEXT__INIT);
        MID_ENSURE_MEM(vc);
        if (ref.kind == RES_BUNDLE) {
            vc->trusted_ca = inline_pem(a, ref.bundle->roots_pem);
            MID_ENSURE_MEM(vc->trusted_ca);
        } else {
            MID_GUARD(build_spiffe_validator(v, a, &vc->custom_validator_config));
        }
        s->type_case = ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_VALIDATION_CONTEXT;
        s->validation_context = vc;
    }
    *out = s;
    return mid_ok();
}

mid_result sds_secret_any(const sds_view *v, const char *name, arena *a, Google__Protobuf__Any **out)
{
    sds_secret_msg *s;
    *out = NULL;
    MID_GUARD(sds_secret_build(v, name, a, &s));
    return pack_any(a, &s->base, SDS_SECRET_TYPE_URL, out);
}

/* ---- Workload API ------------------------------------------------------ */

/* The bare trust domain of a validated SPIFFE ID, or NULL (copied to a). */
static const char *td_of(arena *a, const char *id)
{
    if (strncmp(id, SPIFFE_PREFIX, SPIFFE_PREFIX_LEN) != 0) return NULL;
    const char *td = id + SPIFFE_PREFIX_LEN;
    return arena_strndup(a, td, strcspn(td, "/"));
}

static char *td_key(arena *a, const char *td)
{
    size_t n = strlen(td);
    char *k = arena_alloc(a, SPIFFE_PREFIX_LEN + n + 1);
    if (!k) return NULL;
    memcpy(k, SPIFFE_PREFIX, SPIFFE_PREFIX_LEN);
    memcpy(k + SPIFFE_PREFIX_LEN, td, n + 1);
    return k;
}

/* True when some SVID of the view belongs to trust domain `td`. */
static bool td_is_own(const sds_view *v, const char *td)
{
    size_t n = strlen(td);
    for (size_t i = 0; i < sds_view_svid_count(v); i++) {
        const char *id = sds_view_svid(v, i)->spiffe_id + SPIFFE_PREFIX_LEN;
        if (strncmp(id, td, n) == 0 && (id[n] == '/' || id[n] == '\0')) return true;
    }
    return false;
}

mid_result sds_x509_svid_response(const sds_view *v, arena *a, X509SVIDResponse **out)
{
    *out = NULL;
    size_t ns = sds_view_svid_count(v), nb = sds_view_bundle_count(v);
    MID_ENSURE(ns > 0, MID_E_NOT_FOUND, "no identity issued");
    X509SVIDResponse *resp = ANEW(a, X509SVIDResponse, X509_SVIDRESPONSE__INIT);
    MID_ENSURE_MEM(resp);
    resp->svids = arena_alloc(a, ns * sizeof *resp->svids);
    MID_ENSURE_MEM(resp->svids);
    for (size_t i = 0; i < ns; i++) {
        const sds_svid *s = sds_view_svid(v, i);
        X509SVID *m = ANEW(a, X509SVID, X509_SVID__INIT);
        MID_ENSURE_MEM(m);
        m->spiffe_id = (char *)s->spiffe_id;
        m->x509_svid.data = (uint8_t *)s->chain_der;
        m->x509_svid.len = s->chain_der_len;
        m->x509_svid_key.data = (uint8_t *)s->key_der;
        m->x509_svid_key.len = s->key_der_len;
        const char *td = td_of(a, s->spiffe_id);
        MID_ENSURE_MEM(td);
        const sds_bundle *b = sds_view_bundle_for(v, td);
        if (b) {
            m->bundle.data = (uint8_t *)b->roots_der;
            m->bundle.len = b->roots_der_len;
        }
        resp->svids[i] = m;
    }
    resp->n_svids = ns;
    resp->federated_bundles = arena_alloc(a, nb * sizeof *resp->federated_bundles);
    MID_ENSURE_MEM(resp->federated_bundles);
    for (size_t i = 0; i < nb; i++) {
        const sds_bundle *b = sds_view_bundle(v, i);
        if (td_is_own(v, b->trust_domain)) continue;
        X509SVIDResponse__FederatedBundlesEntry *e =
            ANEW(a, X509SVIDResponse__FederatedBundlesEntry, X509_SVIDRESPONSE__FEDERATED_BUNDLES_ENTRY__INIT);
        MID_ENSURE_MEM(e);
        e->key = td_key(a, b->trust_domain);
        MID_ENSURE_MEM(e->key);
        e->value.data = (uint8_t *)b->roots_der;
        e->value.len = b->roots_der_len;
        resp->federated_bundles[resp->n_federated_bundles++] = e;
    }
    *out = resp;
    return mid_ok();
}

mid_result sds_x509_bundles_response(const sds_view *v, arena *a, X509BundlesResponse **out)
{
    *out = NULL;
    size_t nb = sds_view_bundle_count(v);
    X509BundlesResponse *resp = ANEW(a, X509BundlesResponse, X509_BUNDLES_RESPONSE__INIT);
    MID_ENSURE_MEM(resp);
    resp->bundles = arena_alloc(a, nb * sizeof *resp->bundles);
    MID_ENSURE_MEM(resp->bundles);
    for (size_t i = 0; i < nb; i++) {
        const sds_bundle *b = sds_view_bundle(v, i);
        X509BundlesResponse__BundlesEntry *e =
            ANEW(a, X509BundlesResponse__BundlesEntry, X509_BUNDLES_RESPONSE__BUNDLES_ENTRY__INIT);
        MID_ENSURE_MEM(e);
        e->key = td_key(a, b->trust_domain);
        MID_ENSURE_MEM(e->key);
        e->value.data = (uint8_t *)b->roots_der;
        e->value.len = b->roots_der_len;
        resp->bundles[i] = e;
    }
    resp->n_bundles = nb;
    *out = resp;
    return mid_ok();
}

static void h_bundles(hasher *h, const sds_view *v)
{
    for (size_t i = 0; i < sds_view_bundle_count(v); i++) {
        h_str(h, sds_view_bundle(v, i)->trust_domain);
        h_str(h, sds_view_bundle(v, i)->digest);
    }
}

mid_result sds_x509_svid_digest(const sds_view *v, sds_digest *out)
{
    hasher h;
    h_init(&h);
    h_str(&h, "x509-svid");
    for (size_t i = 0; i < sds_view_svid_count(v); i++) {
        h_str(&h, sds_view_svid(v, i)->spiffe_id);
        h_str(&h, sds_view_svid(v, i)->digest);
    }
    h_str(&h, "bundles");
    h_bundles(&h, v);
    return h_final(&h, out);
}

mid_result sds_x509_bundles_digest(const sds_view *v, sds_digest *out)
{
    hasher h;
    h_init(&h);
    h_str(&h, "x509-bundles");
    h_bundles(&h, v);
    return h_final(&h, out);
}
