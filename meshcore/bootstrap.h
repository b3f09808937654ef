/* The Envoy bootstrap meshid hands to a sidecar (`meshid envoy bootstrap`):
 * an envoy.config.bootstrap.v3.Bootstrap in Envoy's v3 JSON form, shaped
 * like Istio's envoy_bootstrap.json (wire-contracts §14.3):
 *
 *   node            id, cluster, metadata {SPIFFE_ID?, SERVICE?, SDS_CLUSTER}
 *   static_resources.clusters
 *     "sds-grpc"    STATIC, HTTP/2, a Unix pipe to the local agent's socket
 *                   (the agent serves SDS "default" and "ROOTCA")
 *     "xds-grpc"    the server's TLS ADS port, HTTP/2 (ALPN h2), mutual TLS
 *                   with the certificate and trust bundle from "sds-grpc",
 *                   the server's certificate must carry server_spiffe_id
 *   dynamic_resources  ADS (GRPC or DELTA_GRPC) on "xds-grpc"; CDS and LDS
 *                   through ADS with initial_fetch_timeout 0s
 *   admin           127.0.0.1:admin_port
 *
 * so that `envoy -c FILE` joins the mesh unchanged. docs/xds.md describes the
 * result; tests/interop/test_envoy_bootstrap.sh checks it against Envoy's
 * official protos.
 */
#ifndef MESHID_MESHCORE_BOOTSTRAP_H
#define MESHID_MESHCORE_BOOTSTRAP_H

#include <stdint.h>

#include "lib/result.h"

#define MESH_BOOTSTRAP_XDS_HOST_DEFAULT "127.0.0.1"
#define MESH_BOOTSTRAP_XDS_PORT_DEFAULT 15012
#define MESH_BOOTSTRAP_ADMIN_PORT_DEFAULT 15000
#define MESH_BOOTSTRAP_SDS_CLUSTER "sds-grpc"
#define MESH_BOOTSTRAP_XDS_CLUSTER "xds-grpc"
#define MESH_BOOTSTRAP_NODE_MAX 2048   /* bytes of node id / cluster / service */
#define MESH_BOOTSTRAP_HOST_MAX 253    /* bytes of xds_host */
#define MESH_BOOTSTRAP_PIPE_MAX 107    /* bytes of the agent socket path (sun_path) */

typedef struct {
    const char *node_id;          /* required: node.id */
    const char *node_cluster;     /* node.cluster; NULL: service, else "meshid" */
    const char *service;          /* optional: node.metadata.SERVICE */
    const char *spiffe_id;        /* optional: node.metadata.SPIFFE_ID (a workload ID) */
    const char *agent_socket;     /* required: absolute path of the local agent's socket */
    const char *xds_host;         /* the server's TLS ADS host; NULL: 127.0.0.1. An IP
                                     literal gives a STATIC cluster, a name STRICT_DNS
                                     (and SNI = the name) */
    uint32_t xds_port;            /* 0: 15012 */
    const char *server_spiffe_id; /* required: the ADS server's certificate must carry it
                                     (spiffe://TD/meshid/server) */
    uint32_t admin_port;          /* 0: 15000 */
    int delta;                    /* ADS api_type DELTA_GRPC instead of GRPC */
} mesh_bootstrap_opts;

/* Writes the bootstrap as pretty-printed JSON (2-space indent, trailing
 * newline) into *out, malloc'd and owned by the caller (free()); *out is NULL
 * on failure. Errors: MID_E_INVALID with a message naming the option for a
 * missing or empty node id, a relative agent socket, a malformed SPIFFE ID
 * (either one; the node's must be a workload ID), a host with characters
 * outside [A-Za-z0-9.-:] or a port over 65535; MID_E_TOO_LARGE for a string
 * over its limit above; MID_E_NOMEM. */
MID_RESULT mesh_bootstrap_json(const mesh_bootstrap_opts *o, char **out);

#endif
