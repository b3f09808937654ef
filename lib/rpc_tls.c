/* TLS for the gRPC runtime: credentials from PEM, and the peer's SPIFFE ID
 * read from its certificate (exactly one URI SAN, scheme spiffe). Full
 * SPIFFE ID validation is identity/'s job; here we only make sure that what
 * we hand on is a single, bounded, NUL-free spiffe:// URI. */
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "lib/rpc_int.h"

#define RPC_MAX_PEM (64 * 1024)
#define SPIFFE_PREFIX "spiffe://"

/* A TLS port's material, read by gRPC on its own threads at each handshake
 * through the config fetcher below; rpc_server_set_tls swaps it under mu. */
struct rpc_tls_cfg {
    rpc_tls_cfg *next;
    pthread_mutex_t mu;
    char *ca, *cert, *key;
    uint64_t gen;    /* bumped by every update */
    uint64_t served; /* generation gRPC last loaded */
};

static void cfg_clear_pem(rpc_tls_cfg *c)
{
    free(c->ca);
    free(c->cert);
    if (c->key) OPENSSL_clear_free(c->key, strlen(c->key));
    c->ca = c->cert = c->key = NULL;
}

static mid_result cfg_update_one(rpc_tls_cfg *c, const rpc_tls *tls)
{
    MID_ENSURE(tls->ca_pem && tls->cert_pem && tls->key_pem, MID_E_INVALID,
               "server TLS needs a CA bundle, a certificate and a key");
    char *ca = strdup(tls->ca_pem), *cert = strdup(tls->cert_pem), *key = strdup(tls->key_pem);
    if (!ca || !cert || !key) {
        free(ca);
        free(cert);
        if (key) OPENSSL_clear_free(key, strlen(key));
        MID_BAIL(MID_E_NOMEM, "out of memory");
    }
    pthread_mutex_lock(&c->mu);
    cfg_clear_pem(c);
    c->ca = ca;
    c->cert = cert;
    c->key = key;
    c->gen++;
    pthread_mutex_unlock(&c->mu);
    return mid_ok();
}

mid_result rpc_tls_cfg_update(rpc_tls_cfg *list, const rpc_tls *tls)
{
    for (rpc_tls_cfg *c = list; c; c = c->next) MID_GUARD(cfg_update_one(c, tls));
    return mid_ok();
}

void rpc_tls_cfg_push(rpc_tls_cfg **list, rpc_tls_cfg *c)
{
    c->next = *list;
    *list = c;
}

void rpc_tls_cfg_free(rpc_tls_cfg *c)
{
    while (c) {
        rpc_tls_cfg *n = c->next;
        cfg_clear_pem(c);
        pthread_mutex_destroy(&c->mu);
        free(c);
        c = n;
    }
}

/* Runs on gRPC threads (server start and every handshake). */
static grpc_ssl_certificate_config_reload_status fetch_cfg(void *user,
                                                           grpc_ssl_server_certificate_config **cfg)
{
    rpc_tls_cfg *c = user;
    grpc_ssl_certificate_config_reload_status st = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;
    pthread_mutex_lock(&c->mu);
    if (c->served != c->gen) {
        grpc_ssl_pem_key_cert_pair pair = {c->key, c->cert};
        *cfg = grpc_ssl_server_certificate_config_create(c->ca, &pair, 1);
        if (*cfg) {
            c->served = c->gen;
            st = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW;
        } else {
            st = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_FAIL;
        }
    }
    pthread_mutex_unlock(&c->mu);
    return st;
}

grpc_server_credentials *rpc_tls_server_creds(const rpc_tls *tls, rpc_tls_cfg **cfg_out)
{
    *cfg_out = NULL;
    rpc_tls_cfg *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    pthread_mutex_init(&c->mu, NULL);
    if (!mid_is_ok(cfg_update_one(c, tls))) {
        rpc_tls_cfg_free(c);
        return NULL;
    }
    grpc_ssl_server_credentials_options *o =
        grpc_ssl_server_credentials_create_options_using_config_fetcher(
            tls->client_cert_optional ? GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY
                                      : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY,
            fetch_cfg, c);
    grpc_server_credentials *creds = o ? grpc_ssl_server_credentials_create_with_options(o) : NULL;
    if (!creds) {
        rpc_tls_cfg_free(c);
        return NULL;
    }
    *cfg_out = c;
    return creds;
}

/* Runs on a gRPC thread during the handshake: no shared state. */
static int verify_server_id(const char *target, const char *peer_pem, void *userdata)
{
    (void)target;
    const char *want = userdata;
    arena *a = NULL;
    if (!peer_pem || !mid_is_ok(arena_new(RPC_MAX_SPIFFE_ID * 2, &a))) return 1;
    const char *got = NULL;
    int bad = !mid_is_ok(rpc_tls_spiffe_id(peer_pem, strlen(peer_pem), a, &got)) ||
              strcmp(got, want) != 0;
    arena_free(a);
    return bad;
}

grpc_channel_credentials *rpc_tls_client_creds(const rpc_tls *tls)
{
    if (!tls->ca_pem) return NULL;
    grpc_ssl_pem_key_cert_pair pair = {tls->key_pem, tls->cert_pem};
    grpc_ssl_verify_peer_options vo;
    memset(&vo, 0, sizeof vo);
    if (tls->server_spiffe_id) {
        char *want = strdup(tls->server_spiffe_id);
        if (!want) return NULL;
        vo.verify_peer_callback = verify_server_id;
        vo.verify_peer_callback_userdata = want;
        vo.verify_peer_destruct = free;
    }
    return grpc_ssl_credentials_create_ex(tls->ca_pem, tls->cert_pem && tls->key_pem ? &pair : NULL,
                                          tls->server_spiffe_id ? &vo : NULL, NULL);
}

mid_result rpc_tls_spiffe_id(const char *pem, size_t len, arena *a, const char **out)
{
    *out = NULL;
    mid_result r = MID_OK_RESULT;
    BIO *bio = NULL;
    X509 *x = NULL;
    GENERAL_NAMES *sans = NULL;
    MID_CHECK(r, len > 0 && len <= RPC_MAX_PEM, MID_E_TOO_LARGE, "peer certificate size %zu", len);
    bio = BIO_new_mem_buf(pem, (int)len);
    MID_CHECK_MEM(r, bio);
    x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    MID_CHECK(r, x != NULL, MID_E_DENIED, "peer certificate does not parse");
    sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    MID_CHECK(r, sans != NULL, MID_E_DENIED, "peer certificate has no SAN");
    const ASN1_IA5STRING *uri = NULL;
    int nuri = 0;
    for (int i = 0; i < sk_GENERAL_NAME_num(sans); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(sans, i);
        if (gn->type == GEN_URI) {
            uri = gn->d.uniformResourceIdentifier;
            nuri++;
        }
    }
    MID_CHECK(r, nuri == 1, MID_E_DENIED, "peer certificate has %d URI SANs, want 1", nuri);
    const char *s = (const char *)ASN1_STRING_get0_data(uri);
    int n = ASN1_STRING_length(uri);
    MID_CHECK(r, n > (int)strlen(SPIFFE_PREFIX) && n <= RPC_MAX_SPIFFE_ID, MID_E_DENIED,
              "peer URI SAN length %d", n);
    MID_CHECK(r, memchr(s, '\0', (size_t)n) == NULL, MID_E_DENIED, "peer URI SAN contains NUL");
    MID_CHECK(r, strncmp(s, SPIFFE_PREFIX, strlen(SPIFFE_PREFIX)) == 0, MID_E_DENIED,
              "peer URI SAN is not a SPIFFE ID");
    *out = arena_strndup(a, s, (size_t)n);
    MID_CHECK_MEM(r, *out);
out:
    GENERAL_NAMES_free(sans);
    X509_free(x);
    BIO_free(bio);
    ERR_clear_error();
    return r;
}

mid_result rpc_tls_call_peer(grpc_call *gc, arena *a, bool *is_tls, const char **out)
{
    *out = NULL;
    *is_tls = false;
    grpc_auth_context *ctx = grpc_call_auth_context(gc);
    if (!ctx) return mid_ok();
    grpc_auth_property_iterator it =
        grpc_auth_context_find_properties_by_name(ctx, GRPC_TRANSPORT_SECURITY_TYPE_PROPERTY_NAME);
    const grpc_auth_property *p = grpc_auth_property_iterator_next(&it);
    *is_tls = p && p->value_length == strlen(GRPC_SSL_TRANSPORT_SECURITY_TYPE) &&
              memcmp(p->value, GRPC_SSL_TRANSPORT_SECURITY_TYPE, p->value_length) == 0;
    it = grpc_auth_context_find_properties_by_name(ctx, GRPC_X509_PEM_CERT_PROPERTY_NAME);
    p = grpc_auth_property_iterator_next(&it);
    mid_result r = mid_ok();
    if (p) r = rpc_tls_spiffe_id(p->value, p->value_length, a, out);
    grpc_auth_context_release(ctx);
    return r;
}
