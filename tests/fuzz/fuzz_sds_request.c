/* libFuzzer target for the SDS service's request intake (sds/sds_service.c).
 *
 * The bytes are decoded as the runtime decodes a request (rpc_codec_unpack:
 * the same size limit, into an arena with the server's per-message limit)
 * as an envoy DiscoveryRequest (StreamSecrets, FetchSecrets) and as a
 * DeltaDiscoveryRequest (DeltaSecrets). Then what the service does with the
 * decoded fields runs without a network: the type_url and name checks
 * (sds/sds_service_int.h), and for every requested name the pure builders of
 * sds/secrets.h against two fixed views built at start-up (one with two
 * SVIDs and two bundles from a throwaway CA made here, one empty).
 *
 * Aborts when:
 *   - decoding is not a fixed point (decode, pack, decode, pack: equal
 *     bytes), or a smaller arena turns an accepted message into anything but
 *     OK or TOO_LARGE;
 *   - digest and build disagree on whether a name exists, or disagree with
 *     an independent resolver written from the naming rules in secrets.h;
 *   - two digests of the same name differ, a digest is not 64 lower-case hex
 *     digits, names resolving to the same content have different digests;
 *   - a built Secret does not carry the requested name, the right kind of
 *     payload or exactly the view's PEM, or its Any does not unpack back to
 *     a Secret of that name with the Secret type URL;
 *   - sds_printable output is not bounded, printable ASCII.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "envoy/extensions/transport_sockets/tls/v3/common.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "lib/arena.h"
#include "lib/log.h"
#include "lib/result.h"
#include "lib/rpc_int.h"
#include "tests/fuzz/fuzz_decode.h"
#include "sds/sds_service_int.h"
#include "sds/secrets.h"
#include "sds/view.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


typedef Envoy__Service__Discovery__V3__DiscoveryRequest disc_req;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryRequest delta_req;

/* What the server uses: rpc_server_opts defaults (lib/rpc_server.c). */
/* The service's default subscription limit (sds_service_opts.max_names). */
#define MAX_NAMES 128

#define TD "example.org"
#define TD_FED "federated.test"
#define ID_WEB "spiffe://" TD "/ns/default/sa/web"
#define ID_DB "spiffe://" TD "/ns/default/sa/db"

static arena *g_build; /* built secrets */
static sds_view *g_views[2];

/* ---- start-up: a throwaway CA and the views --------------------------------- */

static EVP_PKEY *new_key(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    CHECK(k != NULL);
    return k;
}

static X509 *new_cert(EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key, const char *cn,
                      const char *uri, int is_ca, long serial)
{
    X509 *x = X509_new();
    CHECK(x != NULL);
    CHECK(X509_set_version(x, X509_VERSION_3) == 1);
    CHECK(ASN1_INTEGER_set(X509_get_serialNumber(x), serial) == 1);
    X509_NAME *name = X509_NAME_new();
    CHECK(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1,
                                     0) == 1);
    CHECK(X509_set_subject_name(x, name) == 1);
    CHECK(X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name) == 1);
    X509_NAME_free(name);
    CHECK(X509_gmtime_adj(X509_getm_notBefore(x), -60) != NULL);
    CHECK(X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 365) != NULL);
    CHECK(X509_set_pubkey(x, key) == 1);
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints,
                                              is_ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
    CHECK(ext != NULL && X509_add_ext(x, ext, -1) == 1);
    X509_EXTENSION_free(ext);
    if (uri) {
        char san[256];
        snprintf(san, sizeof san, "URI:%s", uri);
        ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, san);
        CHECK(ext != NULL && X509_add_ext(x, ext, -1) == 1);
        X509_EXTENSION_free(ext);
    }
    CHECK(X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0);
    return x;
}

static char *cert_pem(X509 *x)
{
    BIO *b = BIO_new(BIO_s_mem());
    CHECK(b != NULL && PEM_write_bio_X509(b, x) == 1);
    char *d = NULL;
    long n = BIO_get_mem_data(b, &d);
    char *s = strndup(d, (size_t)n);
    CHECK(s != NULL);
    BIO_free(b);
    return s;
}

static char *key_pem(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    CHECK(b != NULL && PEM_write_bio_PKCS8PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) == 1);
    char *d = NULL;
    long n = BIO_get_mem_data(b, &d);
    char *s = strndup(d, (size_t)n);
    CHECK(s != NULL);
    BIO_free(b);
    return s;
}

static void build_views(void)
{
    EVP_PKEY *ca_key = new_key(), *web_key = new_key(), *db_key = new_key(), *fed_key = new_key();
    X509 *ca = new_cert(ca_key, NULL, NULL, "meshid test CA", "spiffe://" TD, 1, 1);
    X509 *web = new_cert(web_key, ca, ca_key, "web", ID_WEB, 0, 2);
    X509 *db = new_cert(db_key, ca, ca_key, "db", ID_DB, 0, 3);
    X509 *fed = new_cert(fed_key, NULL, NULL, "federated CA", "spiffe://" TD_FED, 1, 4);
    char *ca_pem = cert_pem(ca), *web_pem = cert_pem(web), *db_pem = cert_pem(db),
         *fed_pem = cert_pem(fed);
    char *web_k = key_pem(web_key), *db_k = key_pem(db_key);

    sds_view *v = NULL;
    CHECK(mid_is_ok(sds_view_new(&v)));
    CHECK(mid_is_ok(sds_view_add_svid(v, ID_WEB, web_pem, web_k, 0)));
    CHECK(mid_is_ok(sds_view_add_svid(v, ID_DB, db_pem, db_k, 0)));
    CHECK(mid_is_ok(sds_view_add_bundle(v, TD, ca_pem, 1)));
    CHECK(mid_is_ok(sds_view_add_bundle(v, TD_FED, fed_pem, 7)));
    g_views[0] = v;
    CHECK(mid_is_ok(sds_view_new(&g_views[1]))); /* nothing issued yet */

    free(ca_pem);
    free(web_pem);
    free(db_pem);
    free(fed_pem);
    free(web_k);
    free(db_k);
    X509_free(ca);
    X509_free(web);
    X509_free(db);
    X509_free(fed);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(web_key);
    EVP_PKEY_free(db_key);
    EVP_PKEY_free(fed_key);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_LVL_OFF);
    fuzz_decode_init();
    CHECK(mid_is_ok(arena_new(0, &g_build)));
    build_views();
    return 0;
}

/* ---- decoding ---------------------------------------------------------------- */



/* ---- the service's checks and the builders ------------------------------------- */

static void check_printable(const char *s)
{
    char buf[SDS_PRINT_BUF];
    const char *p = sds_printable(s, buf, sizeof buf);
    CHECK(p == buf);
    size_t n = strnlen(buf, sizeof buf);
    CHECK(n < sizeof buf);
    for (size_t i = 0; i < n; i++) CHECK(buf[i] >= 0x20 && buf[i] < 0x7f);
    if (s && strlen(s) <= SDS_PRINT_MAX) CHECK(strstr(buf, "...") == NULL || strstr(s, "...") != NULL);
    /* tiny buffers are still terminated */
    char tiny[3];
    sds_printable(s, tiny, sizeof tiny);
    CHECK(strnlen(tiny, sizeof tiny) < sizeof tiny);
}

typedef enum { REF_NONE, REF_SVID, REF_BUNDLE, REF_ALL } ref_kind;

/* secrets.h's naming rules, read independently of secrets.c. */
static ref_kind ref_resolve(const sds_view *v, const char *name, const sds_svid **svid,
                            const sds_bundle **bundle)
{
    *svid = NULL;
    *bundle = NULL;
    if (strlen(name) > SDS_NAME_MAX) return REF_NONE;
    if (strcmp(name, "default") == 0) {
        if (sds_view_svid_count(v) == 0) return REF_NONE;
        *svid = sds_view_svid(v, 0);
        return REF_SVID;
    }
    if (strcmp(name, "ROOTCA") == 0) {
        if (sds_view_bundle_count(v) == 0) return REF_NONE;
        *bundle = sds_view_bundle(v, 0);
        return REF_BUNDLE;
    }
    if (strcmp(name, "ALL") == 0) return sds_view_bundle_count(v) ? REF_ALL : REF_NONE;
    for (size_t i = 0; i < sds_view_svid_count(v); i++) {
        if (strcmp(sds_view_svid(v, i)->spiffe_id, name) == 0) {
            *svid = sds_view_svid(v, i);
            return REF_SVID;
        }
    }
    for (size_t i = 0; i < sds_view_bundle_count(v); i++) {
        const sds_bundle *b = sds_view_bundle(v, i);
        if (strncmp(name, "spiffe://", 9) == 0 && strcmp(name + 9, b->trust_domain) == 0) {
            *bundle = b;
            return REF_BUNDLE;
        }
    }
    return REF_NONE;
}

static bool is_hex64(const char *s)
{
    if (strlen(s) != SDS_DIGEST_HEX) return false;
    for (size_t i = 0; i < SDS_DIGEST_HEX; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
    return true;
}

static bool inline_is(const Envoy__Config__Core__V3__DataSource *d, const char *pem)
{
    return d && d->specifier_case == ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_BYTES &&
           d->inline_bytes.len == strlen(pem) && memcmp(d->inline_bytes.data, pem, strlen(pem)) == 0;
}

static void check_secret(const sds_view *v, const sds_secret_msg *s, const char *name,
                         ref_kind kind, const sds_svid *svid, const sds_bundle *bundle)
{
    CHECK(s != NULL && strcmp(s->name, name) == 0);
    if (kind == REF_SVID) {
        CHECK(s->type_case ==
              ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE);
        CHECK(inline_is(s->tls_certificate->certificate_chain, svid->chain_pem));
        CHECK(inline_is(s->tls_certificate->private_key, svid->key_pem));
    } else {
        CHECK(s->type_case ==
              ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_VALIDATION_CONTEXT);
        const Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext *vc =
            s->validation_context;
        if (kind == REF_BUNDLE) {
            CHECK(inline_is(vc->trusted_ca, bundle->roots_pem));
            CHECK(vc->custom_validator_config == NULL);
        } else {
            CHECK(vc->trusted_ca == NULL && vc->custom_validator_config != NULL);
            CHECK(strcmp(vc->custom_validator_config->name, SDS_SPIFFE_VALIDATOR_NAME) == 0);
            const Google__Protobuf__Any *cfg = vc->custom_validator_config->typed_config;
            CHECK(cfg && strcmp(cfg->type_url, SDS_SPIFFE_VALIDATOR_TYPE_URL) == 0);
            (void)v;
        }
    }
}

/* Everything the service does with one requested name, on one view. */
static void check_name_on(const sds_view *v, const char *name)
{
    const sds_svid *svid;
    const sds_bundle *bundle;
    ref_kind kind = ref_resolve(v, name, &svid, &bundle);

    sds_digest d1, d2;
    mid_result r1 = sds_secret_digest(v, name, &d1);
    mid_result r2 = sds_secret_digest(v, name, &d2);
    CHECK(r1.err == r2.err);
    CHECK(mid_is_ok(r1) == (kind != REF_NONE));
    if (!mid_is_ok(r1)) {
        CHECK(r1.err == MID_E_NOT_FOUND);
        CHECK(d1.hex[0] == '\0');
    } else {
        CHECK(is_hex64(d1.hex) && strcmp(d1.hex, d2.hex) == 0);
        /* the name is not part of the digest: the same content, the same digest */
        sds_digest same;
        if (kind == REF_SVID) {
            CHECK(mid_is_ok(sds_secret_digest(v, svid->spiffe_id, &same)));
            CHECK(strcmp(same.hex, d1.hex) == 0);
        } else if (kind == REF_BUNDLE) {
            char n2[9 + 256];
            snprintf(n2, sizeof n2, "spiffe://%s", bundle->trust_domain);
            CHECK(mid_is_ok(sds_secret_digest(v, n2, &same)));
            CHECK(strcmp(same.hex, d1.hex) == 0);
        }
    }

    sds_secret_msg *s = NULL;
    mid_result rb = sds_secret_build(v, name, g_build, &s);
    CHECK(mid_is_ok(rb) == mid_is_ok(r1));
    if (!mid_is_ok(rb)) {
        CHECK(rb.err == MID_E_NOT_FOUND && s == NULL);
        return;
    }
    check_secret(v, s, name, kind, svid, bundle);

    Google__Protobuf__Any *any = NULL;
    CHECK(mid_is_ok(sds_secret_any(v, name, g_build, &any)));
    CHECK(strcmp(any->type_url, SDS_SECRET_TYPE_URL) == 0);
    CHECK(protobuf_c_message_get_packed_size(&s->base) == any->value.len);
    ProtobufCMessage *back = NULL;
    CHECK(rpc_codec_unpack(any->value.data, any->value.len,
                           &envoy__extensions__transport_sockets__tls__v3__secret__descriptor,
                           MAX_MSG, g_again, &back) == RPC_UNPACK_OK);
    check_secret(v, (const sds_secret_msg *)back, name, kind, svid, bundle);
    arena_reset(g_again);
}

static void check_name(const char *name)
{
    check_printable(name);
    if (!sds_name_len_ok(name)) {
        /* the service ends the stream; the builders refuse it as well */
        CHECK(strlen(name) > SDS_NAME_MAX);
        sds_digest d;
        CHECK(sds_secret_digest(g_views[0], name, &d).err == MID_E_NOT_FOUND);
        return;
    }
    CHECK(strlen(name) <= SDS_NAME_MAX);
    for (size_t i = 0; i < sizeof g_views / sizeof g_views[0]; i++) check_name_on(g_views[i], name);
}

static void check_type_url(const char *t)
{
    bool ok = sds_type_url_ok(t);
    CHECK(ok == (t == NULL || t[0] == '\0' || strcmp(t, SDS_SECRET_TYPE_URL) == 0));
    check_printable(t);
}

/* The distinct names of a list in order, up to the subscription limit, as
 * sotw_set_names and FetchSecrets walk them. */
static void check_names(char *const *names, size_t n)
{
    size_t distinct = 0;
    for (size_t i = 0; i < n && distinct < MAX_NAMES; i++) {
        CHECK(names[i] != NULL);
        bool dup = false;
        for (size_t k = 0; k < i && !dup; k++) dup = strcmp(names[k], names[i]) == 0;
        if (dup) continue;
        distinct++;
        check_name(names[i]);
        arena_reset(g_build);
    }
}

static void sotw(const disc_req *req)
{
    check_type_url(req->type_url);
    if (!sds_type_url_ok(req->type_url)) return; /* INVALID_ARGUMENT */
    check_printable(req->response_nonce);
    check_printable(req->version_info);
    if (req->error_detail) check_printable(req->error_detail->message);
    check_names(req->resource_names, req->n_resource_names);
}

static void delta(const delta_req *req)
{
    check_type_url(req->type_url);
    if (!sds_type_url_ok(req->type_url)) return;
    check_printable(req->response_nonce);
    if (req->error_detail) check_printable(req->error_detail->message);
    for (size_t i = 0; i < req->n_resource_names_unsubscribe; i++)
        CHECK(req->resource_names_unsubscribe[i] != NULL);
    size_t distinct = 0;
    for (size_t i = 0; i < req->n_resource_names_subscribe && distinct < MAX_NAMES; i++) {
        const char *name = req->resource_names_subscribe[i];
        CHECK(name != NULL);
        if (!sds_name_len_ok(name)) break; /* the stream ends here */
        if (strcmp(name, "*") == 0) continue;
        distinct++;
        check_name(name);
        arena_reset(g_build);
    }
    for (size_t i = 0; i < req->n_initial_resource_versions; i++) {
        const Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry
            *e = req->initial_resource_versions[i];
        CHECK(e != NULL && e->key != NULL && e->value != NULL);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const ProtobufCMessage *m =
        decode(&envoy__service__discovery__v3__discovery_request__descriptor, data, size);
    if (m) sotw((const disc_req *)m);
    arena_reset(g_msg);
    m = decode(&envoy__service__discovery__v3__delta_discovery_request__descriptor, data, size);
    if (m) delta((const delta_req *)m);
    arena_reset(g_msg);
    arena_reset(g_build);
    ERR_clear_error();
    return 0;
}
