/* The agent's side of the node API (proto/meshid/agent/v1/agent.proto): one
 * TLS channel to the server, rebuilt when the agent's certificate or trust
 * anchors change, the five calls, and the small crypto helpers both ends of
 * the agent need (CSRs, DER <-> PEM). Loop thread only.
 */
#ifndef MESHID_SDS_NODE_CLIENT_H
#define MESHID_SDS_NODE_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "lib/result.h"
#include "lib/rpc.h"
#include "meshid/agent/v1/agent.pb-c.h"

#define NODE_M_ATTEST "/meshid.agent.v1.Node/AttestAgent"
#define NODE_M_RENEW "/meshid.agent.v1.Node/RenewAgent"
#define NODE_M_BATCH_SIGN "/meshid.agent.v1.Node/BatchSignX509SVID"
#define NODE_M_SYNC "/meshid.agent.v1.Node/Sync"
#define NODE_M_REPORT_DENIALS "/meshid.agent.v1.Node/ReportDenials"

#define NODE_CALL_TIMEOUT_MS 30000
#define NODE_PEM_MAX (1024 * 1024) /* a bundle or chain as PEM */

typedef struct node_client node_client;

typedef struct {
    const char *server_addr;      /* "host:port"; required */
    const char *server_name;      /* optional TLS name override */
    const char *server_spiffe_id; /* required: the server's URI SAN is pinned */
} node_client_cfg;

/* Creates a client; no connection is made until a call. Strings copied.
 * MID_E_INVALID, MID_E_NOMEM. */
MID_RESULT node_client_new(rpc_loop *loop, const node_client_cfg *cfg, node_client **out);

/* Closes the channel (calls in flight end with CANCELLED) and frees. NULL ok. */
void node_client_free(node_client *nc);

/* Sets the trust anchors (PEM, required) and the client certificate chain
 * and key (PEM, both NULL while bootstrapping). Copies them and drops the
 * current channel if anything differs: calls made afterwards use a new
 * connection, calls and streams in flight on the old one are cancelled. */
MID_RESULT node_client_set_credentials(node_client *nc, const char *ca_pem, const char *cert_pem,
                                       const char *key_pem);

/* Drops the current channel (calls and streams in flight on it are
 * cancelled; their callbacks still run): the next call connects afresh, with
 * a new TLS handshake. For after a call failed to connect: gRPC fails every
 * call on a channel that could not connect at once, without trying again,
 * until its own reconnect backoff (growing to minutes) has passed. */
void node_client_reset(node_client *nc);

/* Unary calls; cb runs exactly once on the loop when this returns OK. */
MID_RESULT node_client_attest(node_client *nc, const Meshid__Agent__V1__AttestAgentRequest *req,
                              rpc_unary_cb cb, void *arg);
MID_RESULT node_client_renew(node_client *nc, const Meshid__Agent__V1__RenewAgentRequest *req,
                             rpc_unary_cb cb, void *arg);
MID_RESULT node_client_batch_sign(node_client *nc,
                                  const Meshid__Agent__V1__BatchSignRequest *req,
                                  rpc_unary_cb cb, void *arg);
MID_RESULT node_client_report_denials(node_client *nc,
                                      const Meshid__Agent__V1__ReportDenialsRequest *req,
                                      rpc_unary_cb cb, void *arg);

/* Opens the Sync stream and sends `first`. on_done always runs once. */
MID_RESULT node_client_sync_open(node_client *nc, const Meshid__Agent__V1__AgentSyncRequest *first,
                                 const rpc_stream_handler *h, void *arg, rpc_stream **out);

/* ---- helpers ---------------------------------------------------------------- */

/* A PKCS#10 CSR (DER, SHA-256, subject O=meshid, no extensions: the server
 * decides the identity) for `key`. *der is malloc()ed. MID_E_CRYPTO. */
MID_RESULT node_csr_der(EVP_PKEY *key, uint8_t **der, size_t *len);

/* Concatenated PEM of DER certificates; *pem malloc()ed, NUL-terminated.
 * MID_E_INVALID for a certificate that does not parse or n == 0,
 * MID_E_TOO_LARGE past NODE_PEM_MAX. */
MID_RESULT node_der_to_pem(const ProtobufCBinaryData *certs, size_t n, char **pem);

/* The SPIFFE ID (single URI SAN) of the first certificate of a PEM text
 * into `out`. MID_E_INVALID when absent or more than one. */
MID_RESULT node_pem_spiffe_id(const char *pem, char *out, size_t cap);

/* notBefore / notAfter of the first certificate of a PEM text. */
MID_RESULT node_pem_validity(const char *pem, int64_t *not_before, int64_t *not_after);

#endif
