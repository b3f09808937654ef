/* The xDS generator: turns a registry snapshot (meshcore/model.h) and a
 * proxy's identity into the Listeners, RouteConfigurations, Clusters and
 * ClusterLoadAssignments that proxy should hold (an xds_snapshot,
 * meshcore/xds_snapshot.h). docs/xds.md ("What each proxy receives") lists
 * every resource name and shape; in short:
 *
 *   Sidecar (Envoy), identity ID:
 *     CDS  "outbound|PORT||HOST"  EDS cluster per service port and host
 *                                 (mTLS to MESH_INTERNAL services, SDS
 *                                 "default"/"ROOTCA" from the proxy's SDS
 *                                 cluster, SAN = the endpoints' SPIFFE IDs)
 *          "inbound|EPORT||"      STATIC cluster to 127.0.0.1 (local app)
 *     EDS  "outbound|PORT||HOST"  one ClusterLoadAssignment per outbound cluster
 *     LDS  "inbound|EPORT"        0.0.0.0:EPORT, mTLS required, RBAC, local app
 *          "127.0.0.1_PORT"       outbound, HCM with RDS "PORT" or tcp_proxy
 *     RDS  "PORT"                 one virtual host "HOST:PORT" per service
 *   Proxyless gRPC client:
 *     LDS  "HOST:PORT" (and "HOST" for a service with one HTTP port):
 *          api_listener with HCM -> RDS "HOST:PORT"
 *     RDS  "HOST:PORT"            domains [HOST, HOST:PORT] -> outbound cluster
 *     CDS  "outbound|PORT||HOST"  EDS; TLS from certificate-provider
 *                                 instances only when the node names one
 *     EDS  as for sidecars
 *
 * Sharing: everything outbound (CDS, EDS, outbound LDS/RDS) is built once per
 * (registry, proxy flavour) as sealed xds_rset objects and added to every
 * snapshot by reference; only the inbound part depends on the identity, and
 * whole snapshots are cached per (identity, flavour). Another registry object
 * (a new revision always is one) drops every cache.
 */
#ifndef MESHID_MESHCORE_XDS_GEN_H
#define MESHID_MESHCORE_XDS_GEN_H

#include <stddef.h>
#include <stdint.h>

#include "envoy/config/core/v3/base.pb-c.h"
#include "lib/result.h"
#include "meshcore/model.h"
#include "meshcore/xds_snapshot.h"

/* Node metadata keys meshid reads (google.protobuf.Struct, string values). */
#define XDS_META_SPIFFE_ID "SPIFFE_ID"         /* the identity claimed on plaintext */
#define XDS_META_GENERATOR "GENERATOR"         /* "grpc" = proxyless (Istio's key) */
#define XDS_META_CERT_PROVIDER "CERT_PROVIDER" /* proxyless: bootstrap provider instance */
#define XDS_META_SDS_CLUSTER "SDS_CLUSTER"     /* sidecar: bootstrap SDS cluster name */

#define XDS_SDS_CLUSTER_DEFAULT "sds-grpc"
#define XDS_SDS_CERT_NAME "default" /* SDS secret: the workload's certificate */
#define XDS_SDS_ROOT_NAME "ROOTCA"  /* SDS secret: the trust bundle */

#define XDS_NODE_ID_MAX 2048   /* bytes of node.id / node.cluster */
#define XDS_META_VALUE_MAX 253 /* bytes of CERT_PROVIDER / SDS_CLUSTER */

/* Who is asking, as derived from the xDS Node (and the TLS peer). All
 * strings are malloc'd and owned by the struct (xds_proxy_clear). */
typedef struct {
    char *node_id;       /* node.id ("" if absent) */
    char *node_cluster;  /* node.cluster ("" if absent) */
    char *spiffe_id;     /* the proxy's identity (a workload SPIFFE ID) */
    int proxyless;       /* gRPC proxyless client: node.user_agent_name starts
                            with "gRPC" or metadata GENERATOR == "grpc" */
    char *cert_provider; /* proxyless only: metadata CERT_PROVIDER (instance name
                            in the client's bootstrap certificate_providers);
                            NULL = plaintext clusters. Always NULL for sidecars. */
    char *sds_cluster;   /* sidecar: metadata SDS_CLUSTER, default "sds-grpc";
                            NULL for proxyless clients */
} xds_proxy;

/* Fills *out from `node` (a decoded envoy.config.core.v3.Node; metadata is
 * a google.protobuf.Struct). Identity rules:
 *   - over TLS (peer_spiffe_id != NULL) the peer's SPIFFE ID is the
 *     identity; node metadata SPIFFE_ID, if present, must equal it
 *     (MID_E_DENIED "node X claims ... but its certificate is ...");
 *   - on plaintext (peer_spiffe_id == NULL): metadata SPIFFE_ID, else node.id
 *     when it is a SPIFFE ID (starts with "spiffe:").
 * No identity -> MID_E_DENIED "node X has no identity: ...". A malformed or
 * non-workload SPIFFE ID (either source), a metadata key above of a non-string
 * type, an empty SDS_CLUSTER/CERT_PROVIDER, or node == NULL -> MID_E_INVALID;
 * node.id/cluster over XDS_NODE_ID_MAX or a metadata value over
 * XDS_META_VALUE_MAX -> MID_E_TOO_LARGE; MID_E_NOMEM. On failure *out is
 * zeroed (nothing to clear). */
MID_RESULT xds_proxy_from_node(const Envoy__Config__Core__V3__Node *node,
                               const char *peer_spiffe_id, xds_proxy *out);

/* Frees the strings of *p and zeroes it. NULL ok. */
void xds_proxy_clear(xds_proxy *p);

/* The generator with its caches. Not thread-safe: one thread at a time
 * (callers serialize, e.g. the ADS server's loop thread). */
typedef struct xds_gen xds_gen;

/* MID_E_NOMEM. */
MID_RESULT xds_gen_new(xds_gen **out);
/* Releases the caches (snapshots handed out stay valid: they hold their own
 * references). NULL ok. */
void xds_gen_free(xds_gen *g);

/* The snapshot for proxy `p` from registry `reg`: sealed, a new reference
 * (xds_snapshot_unref). The generator keeps a reference to `reg` while it
 * caches for it. Errors:
 *   MID_E_NOT_FOUND  a sidecar whose identity runs no endpoint of the
 *                    registry ("no endpoint in the registry runs as ID");
 *   MID_E_INVALID    p without an identity (or a bad p);
 *   MID_E_TOO_LARGE  a resource over XDS_RESOURCE_MAX;
 *   MID_E_NOMEM.
 * Proxyless clients need no registered endpoint (they only call out). */
MID_RESULT xds_gen_snapshot(xds_gen *g, const mesh_registry *reg, const xds_proxy *p,
                            xds_snapshot **out);

/* Counters since xds_gen_new (tests and metrics). */
typedef struct {
    uint64_t shared_builds;   /* outbound parts built (per registry and flavour) */
    uint64_t inbound_builds;  /* per-identity parts built */
    uint64_t snapshot_hits;   /* snapshots served from the cache */
    uint64_t snapshot_builds; /* snapshots assembled */
    uint64_t flushes;         /* caches dropped for a new registry */
} xds_gen_stats;
void xds_gen_get_stats(const xds_gen *g, xds_gen_stats *out);

/* Resource names (NUL-terminated into buf; MID_E_TOO_LARGE if cap is too
 * small). Exposed for the ADS server, `meshid xds dump` and tests. */
MID_RESULT xds_name_outbound_cluster(char *buf, size_t cap, uint32_t port, const char *host);
MID_RESULT xds_name_inbound_cluster(char *buf, size_t cap, uint32_t endpoint_port);

#endif
