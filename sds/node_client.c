/* The node API client: a lazily built mutual-TLS channel and thin call
 * wrappers, plus CSR / PEM helpers. See sds/node_client.h. */
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ca/x509.h"
#include "sds/node_client.h"

struct node_client {
    rpc_loop *loop;
    char *addr, *server_name, *server_id;
    char *ca_pem, *cert_pem, *key_pem;
    size_t key_len;
    rpc_channel *ch; /* NULL until the next call */
};

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

static void free_secret(char *s)
{
    if (!s) return;
    OPENSSL_cleanse(s, strlen(s));
    free(s);
}

mid_result node_client_new(rpc_loop *loop, const node_client_cfg *cfg, node_client **out)
{
    *out = NULL;
    MID_ENSURE(loop && cfg && cfg->server_addr && *cfg->server_addr && cfg->server_spiffe_id,
               MID_E_INVALID, "node client: server address and SPIFFE ID required");
    node_client *nc = calloc(1, sizeof *nc);
    MID_ENSURE_MEM(nc);
    nc->loop = loop;
    nc->addr = strdup(cfg->server_addr);
    nc->server_name = dup_or_null(cfg->server_name);
    nc->server_id = strdup(cfg->server_spiffe_id);
    if (!nc->addr || !nc->server_id || (cfg->server_name && !nc->server_name)) {
        node_client_free(nc);
        MID_BAIL(MID_E_NOMEM, "out of memory");
    }
    *out = nc;
    return mid_ok();
}

void node_client_free(node_client *nc)
{
    if (!nc) return;
    rpc_channel_free(nc->ch);
    free(nc->addr);
    free(nc->server_name);
    free(nc->server_id);
    free(nc->ca_pem);
    free(nc->cert_pem);
    free_secret(nc->key_pem);
    free(nc);
}

static bool same(const char *a, const char *b)
{
    if (!a || !b) return a == b;
    return strcmp(a, b) == 0;
}

mid_result node_client_set_credentials(node_client *nc, const char *ca_pem, const char *cert_pem,
                                       const char *key_pem)
{
    MID_ENSURE(ca_pem && (!cert_pem) == (!key_pem), MID_E_INVALID,
               "node client: trust anchors required, certificate and key together");
    if (same(ca_pem, nc->ca_pem) && same(cert_pem, nc->cert_pem) && same(key_pem, nc->key_pem))
        return mid_ok();
    char *anchors = strdup(ca_pem), *cert = dup_or_null(cert_pem), *key = dup_or_null(key_pem);
    if (!anchors || (cert_pem && !cert) || (key_pem && !key)) {
        free(anchors);
        free(cert);
        free_secret(key);
        MID_BAIL(MID_E_NOMEM, "out of memory");
    }
    free(nc->ca_pem);
    free(nc->cert_pem);
    free_secret(nc->key_pem);
    nc->ca_pem = anchors;
    nc->cert_pem = cert;
    nc->key_pem = key;
    rpc_channel_free(nc->ch);
    nc->ch = NULL;
    return mid_ok();
}

void node_client_reset(node_client *nc)
{
    rpc_channel_free(nc->ch);
    nc->ch = NULL;
}

static mid_result channel(node_client *nc, rpc_channel **out)
{
    MID_ENSURE(nc->ca_pem != NULL, MID_E_STATE, "node client: no trust anchors yet");
    if (!nc->ch) {
        rpc_tls tls = {.ca_pem = nc->ca_pem,
                       .cert_pem = nc->cert_pem,
                       .key_pem = nc->key_pem,
                       .server_name = nc->server_name,
                       .server_spiffe_id = nc->server_id};
        MID_GUARD(rpc_channel_new(nc->loop, nc->addr, &tls, 0, &nc->ch));
    }
    *out = nc->ch;
    return mid_ok();
}

static mid_result unary(node_client *nc, const char *method, const ProtobufCMessage *req,
                        const ProtobufCMessageDescriptor *resp_desc, rpc_unary_cb cb, void *arg)
{
    rpc_channel *ch = NULL;
    MID_GUARD(channel(nc, &ch));
    rpc_call_opts o = {.timeout_ms = NODE_CALL_TIMEOUT_MS};
    return rpc_unary(ch, method, req, resp_desc, &o, cb, arg);
}

mid_result node_client_attest(node_client *nc, const Meshid__Agent__V1__AttestAgentRequest *req,
                              rpc_unary_cb cb, void *arg)
{
    return unary(nc, NODE_M_ATTEST, &req->base,
                 &meshid__agent__v1__attest_agent_response__descriptor, cb, arg);
}

mid_result node_client_renew(node_client *nc, const Meshid__Agent__V1__RenewAgentRequest *req,
                             rpc_unary_cb cb, void *arg)
{
    return unary(nc, NODE_M_RENEW, &req->base, &meshid__agent__v1__renew_agent_response__descriptor,
                 cb, arg);
}

mid_result node_client_batch_sign(node_client *nc, const Meshid__Agent__V1__BatchSignRequest *req,
                                  rpc_unary_cb cb, void *arg)
{
    return unary(nc, NODE_M_BATCH_SIGN, &req->base,
                 &meshid__agent__v1__batch_sign_response__descriptor, cb, arg);
}

mid_result node_client_report_denials(node_client *nc,
                                      const Meshid__Agent__V1__ReportDenialsRequest *req,
                                      rpc_unary_cb cb, void *arg)
{
    return unary(nc, NODE_M_REPORT_DENIALS, &req->base,
                 &meshid__agent__v1__report_denials_response__descriptor, cb, arg);
}

mid_result node_client_sync_open(node_client *nc, const Meshid__Agent__V1__AgentSyncRequest *first,
                                 const rpc_stream_handler *h, void *arg, rpc_stream **out)
{
    rpc_channel *ch = NULL;
    MID_GUARD(channel(nc, &ch));
    return rpc_stream_open(ch, NODE_M_SYNC, RPC_BIDI, &first->base,
                           &meshid__agent__v1__agent_sync_response__descriptor, NULL, h, arg, out);
}

/* ---- helpers ---------------------------------------------------------------- */

mid_result node_csr_der(EVP_PKEY *key, uint8_t **der, size_t *len)
{
    *der = NULL;
    *len = 0;
    mid_result r = MID_OK_RESULT;
    X509_REQ *req = X509_REQ_new();
    unsigned char *buf = NULL;
    MID_CHECK_MEM(r, req);
    MID_CHECK_OSSL(r, X509_REQ_set_version(req, 0), MID_E_CRYPTO, "CSR version");
    X509_NAME *name = X509_REQ_get_subject_name(req);
    MID_CHECK_OSSL(r,
                   X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                                              (const unsigned char *)"meshid", -1, -1, 0),
                   MID_E_CRYPTO, "CSR subject");
    MID_CHECK_OSSL(r, X509_REQ_set_pubkey(req, key), MID_E_CRYPTO, "CSR key");
    MID_CHECK(r, X509_REQ_sign(req, key, EVP_sha256()) > 0, MID_E_CRYPTO, "CSR signature");
    int n = i2d_X509_REQ(req, &buf);
    MID_CHECK(r, n > 0, MID_E_CRYPTO, "CSR encoding");
    *der = malloc((size_t)n);
    MID_CHECK_MEM(r, *der);
    memcpy(*der, buf, (size_t)n);
    *len = (size_t)n;
out:
    OPENSSL_free(buf);
    X509_REQ_free(req);
    ERR_clear_error();
    return r;
}

mid_result node_der_to_pem(const ProtobufCBinaryData *certs, size_t n, char **pem)
{
    *pem = NULL;
    MID_ENSURE(n > 0, MID_E_INVALID, "no certificates");
    char *acc = NULL;
    mid_result r = MID_OK_RESULT;
    for (size_t i = 0; i < n; i++) {
        const unsigned char *p = certs[i].data;
        MID_CHECK(r, certs[i].len > 0 && certs[i].len <= NODE_PEM_MAX, MID_E_INVALID,
                  "certificate %zu: bad length %zu", i, certs[i].len);
        X509 *x = d2i_X509(NULL, &p, (long)certs[i].len);
        if (x != NULL && p != certs[i].data + certs[i].len) { /* trailing bytes */
            X509_free(x);
            x = NULL;
        }
        MID_CHECK(r, x != NULL, MID_E_INVALID, "certificate %zu does not parse", i);
        r = ca_x509_append_pem(x, &acc);
        X509_free(x);
        if (!mid_is_ok(r)) goto out;
        MID_CHECK(r, strlen(acc) <= NODE_PEM_MAX, MID_E_TOO_LARGE, "certificates over %d bytes",
                  NODE_PEM_MAX);
    }
    *pem = acc;
    acc = NULL;
out:
    free(acc);
    ERR_clear_error();
    return r;
}

static mid_result first_cert(const char *pem, X509 **out)
{
    *out = NULL;
    BIO *b = BIO_new_mem_buf(pem, -1);
    MID_ENSURE_MEM(b);
    *out = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    ERR_clear_error();
    MID_ENSURE(*out != NULL, MID_E_INVALID, "no certificate in PEM text");
    return mid_ok();
}

mid_result node_pem_spiffe_id(const char *pem, char *out, size_t cap)
{
    X509 *x = NULL;
    MID_GUARD(first_cert(pem, &x));
    mid_result r = MID_OK_RESULT;
    GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    int nuri = 0;
    for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(sans, i);
        if (gn->type != GEN_URI) continue;
        nuri++;
        const ASN1_IA5STRING *u = gn->d.uniformResourceIdentifier;
        int len = ASN1_STRING_length(u);
        MID_CHECK(r, len > 0 && (size_t)len < cap, MID_E_INVALID, "URI SAN length %d", len);
        memcpy(out, ASN1_STRING_get0_data(u), (size_t)len);
        out[len] = '\0';
        MID_CHECK(r, strlen(out) == (size_t)len, MID_E_INVALID, "URI SAN contains NUL");
    }
    MID_CHECK(r, nuri == 1, MID_E_INVALID, "certificate has %d URI SANs, want 1", nuri);
out:
    GENERAL_NAMES_free(sans);
    X509_free(x);
    return r;
}

mid_result node_pem_validity(const char *pem, int64_t *not_before, int64_t *not_after)
{
    X509 *x = NULL;
    MID_GUARD(first_cert(pem, &x));
    mid_result r = ca_x509_validity(x, not_before, not_after);
    X509_free(x);
    return r;
}
