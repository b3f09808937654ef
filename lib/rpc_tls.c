/* TLS for the gRPC runtime: credentials from PEM, and the peer's SPIFFE ID
 * read from its certificate (exactly one URI SAN, scheme spiffe). Full
 * SPIFFE ID validation is identity/'s job; here we only make sure that what
 * we hand on is a single, bounded, NUL-free spiffe:// URI. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "lib/rpc_int.h"

#define RPC_MAX_PEM (64 * 1024)
#define SPIFFE_PREFIX "spiffe://"

grpc_server_credentials *rpc_tls_server_creds(const rpc_tls *tls)
{
    if (!tls->ca_pem || !tls->cert_pem || !tls->key_pem) return NULL;
    grpc_ssl_pem_key_cert_pair pair = {tls->key_pem, tls->cert_pem};
    return grpc_ssl_server_credentials_create_ex(
        tls->ca_pem, &pair, 1, GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY, NULL);
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

mid_result rpc_tls_call_peer(grpc_call *gc, arena *a, const char **out)
{
    *out = NULL;
    grpc_auth_context *ctx = grpc_call_auth_context(gc);
    if (!ctx) return mid_ok();
    grpc_auth_property_iterator it =
        grpc_auth_context_find_properties_by_name(ctx, GRPC_X509_PEM_CERT_PROPERTY_NAME);
    const grpc_auth_property *p = grpc_auth_property_iterator_next(&it);
    mid_result r = mid_ok();
    if (p) r = rpc_tls_spiffe_id(p->value, p->value_length, a, out);
    grpc_auth_context_release(ctx);
    return r;
}
