/* Private to the xDS generator (meshcore/xds_gen.c, xds_outbound.c,
 * xds_inbound.c, xds_proto.c): resource builders and protobuf helpers.
 *
 * Building style: fixed-shape messages live on the builder's stack (or in a
 * caller-provided struct such as xds_sds_tls), variable-length arrays and
 * packed Any payloads come from an arena; every resource is packed and copied
 * into an xds_rset (or a snapshot), after which the arena is reset.
 */
#ifndef MESHID_MESHCORE_XDS_GEN_INT_H
#define MESHID_MESHCORE_XDS_GEN_INT_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/core/v3/address.pb-c.h"
#include "envoy/config/core/v3/base.pb-c.h"
#include "envoy/config/core/v3/config_source.pb-c.h"
#include "envoy/config/core/v3/grpc_service.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/listener/v3/listener_components.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/common.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/tls.pb-c.h"
#include "envoy/type/matcher/v3/string.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "lib/arena.h"
#include "lib/result.h"
#include "meshcore/model.h"
#include "meshcore/xds_snapshot.h"

/* Extension names and type URLs. */
#define XDS_TLS_SOCKET "envoy.transport_sockets.tls"
#define XDS_HCM_FILTER "envoy.filters.network.http_connection_manager"
#define XDS_TCP_PROXY_FILTER "envoy.filters.network.tcp_proxy"
#define XDS_ROUTER_FILTER "envoy.filters.http.router"
#define XDS_H2_OPTIONS_KEY "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
#define XDS_TYPE_PREFIX "type.googleapis.com/"
#define XDS_URL_HCM                                                                         \
    XDS_TYPE_PREFIX                                                                        \
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
#define XDS_URL_ROUTER XDS_TYPE_PREFIX "envoy.extensions.filters.http.router.v3.Router"
#define XDS_URL_TCP_PROXY XDS_TYPE_PREFIX "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
#define XDS_URL_H2_OPTIONS XDS_TYPE_PREFIX XDS_H2_OPTIONS_KEY
#define XDS_URL_UPSTREAM_TLS \
    XDS_TYPE_PREFIX "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
#define XDS_URL_DOWNSTREAM_TLS \
    XDS_TYPE_PREFIX "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"

#define XDS_CONNECT_TIMEOUT_S 5
/* Arena bytes for building one resource: several times XDS_RESOURCE_MAX, so
 * that an oversized resource is refused as such (MID_E_TOO_LARGE) rather
 * than as an exhausted arena. */
#define XDS_ARENA_LIMIT ((size_t)64 << 20)
#define XDS_NAME_MAX 320 /* a resource name: a host (<= 253) plus decoration */
#define XDS_LOCALHOST "127.0.0.1"
#define XDS_ANY_ADDR "0.0.0.0"

/* ---- protobuf helpers (xds_proto.c) ---------------------------------------- */

/* Packs m into the arena. MID_E_TOO_LARGE over XDS_RESOURCE_MAX, MID_E_NOMEM. */
MID_RESULT xds_pb_pack(arena *a, const ProtobufCMessage *m, uint8_t **out, size_t *len);

/* Fills *any with type_url (static, not copied) and m packed into the arena.
 * Errors as xds_pb_pack. */
MID_RESULT xds_pb_any(arena *a, const ProtobufCMessage *m, const char *type_url,
                      Google__Protobuf__Any *any);

/* Packs m and adds it under `name` to r (or, if r is NULL, to snapshot s as
 * type t). Errors as xds_pb_pack and xds_rset_add. */
MID_RESULT xds_pb_add(arena *a, xds_rset *r, const char *name, const ProtobufCMessage *m);
MID_RESULT xds_pb_snap_add(arena *a, xds_snapshot *s, xds_type t, const char *name,
                           const ProtobufCMessage *m);

/* n zeroed pointers from the arena (n may be 0). NULL on exhaustion. */
void *xds_pb_ptrs(arena *a, size_t n);

/* A formatted string in the arena; NULL on exhaustion or when it would be
 * longer than XDS_NAME_MAX. */
char *xds_pb_fmt(arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Address{socket_address{ip, port_value}} wired in place (ip borrowed). */
void xds_pb_sockaddr(Envoy__Config__Core__V3__Address *ad, Envoy__Config__Core__V3__SocketAddress *sa,
                     const char *ip, uint32_t port);

/* ConfigSource{ads {}, resource_api_version V3}; wired in place, never fails. */
typedef struct {
    Envoy__Config__Core__V3__ConfigSource cs;
    Envoy__Config__Core__V3__AggregatedConfigSource ads;
} xds_ads_source;
void xds_ads_source_init(xds_ads_source *s);

/* ConfigSource{api_config_source{GRPC, V3, [envoy_grpc{cluster}],
 * set_node_on_first_message_only}, resource_api_version V3} (Istio's SDS
 * config). `cluster` is borrowed. Wired in place: do not move *s. */
typedef struct {
    Envoy__Config__Core__V3__ConfigSource cs;
    Envoy__Config__Core__V3__ApiConfigSource api;
    Envoy__Config__Core__V3__GrpcService gs;
    Envoy__Config__Core__V3__GrpcService *gsp[1];
    Envoy__Config__Core__V3__GrpcService__EnvoyGrpc eg;
} xds_sds_source;
void xds_sds_source_init(xds_sds_source *s, const char *cluster);

/* CommonTlsContext{tls_certificate_sds_secret_configs [default],
 * combined_validation_context{default_validation_context {} (callers may add
 * SAN matchers to `defval`), validation_context_sds_secret_config ROOTCA}}
 * with both secrets from the SDS cluster `sds_cluster` (borrowed). */
typedef struct {
    xds_sds_source src;
    Envoy__Extensions__TransportSockets__Tls__V3__SdsSecretConfig cert;
    Envoy__Extensions__TransportSockets__Tls__V3__SdsSecretConfig *certs[1];
    Envoy__Extensions__TransportSockets__Tls__V3__SdsSecretConfig root;
    Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext defval;
    Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext__CombinedCertificateValidationContext
        combined;
    Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext common;
} xds_sds_tls;
void xds_sds_tls_init(xds_sds_tls *t, const char *sds_cluster);

/* SAN matchers (URI, exact) for the n IDs, for
 * CertificateValidationContext.match_typed_subject_alt_names; and plain
 * StringMatchers (exact) for match_subject_alt_names. NULL on exhaustion. */
Envoy__Extensions__TransportSockets__Tls__V3__SubjectAltNameMatcher **
xds_pb_uri_sans(arena *a, const char *const *ids, size_t n);
Envoy__Type__Matcher__V3__StringMatcher **xds_pb_exact_matchers(arena *a, const char *const *ids,
                                                                size_t n);

/* Cluster.typed_extension_protocol_options {XDS_H2_OPTIONS_KEY:
 * HttpProtocolOptions{explicit_http_config{http2_protocol_options {}}}}, for
 * a cluster whose upstream speaks HTTP/2: the payload is packed into the
 * arena, the map entry wired in place in *o and set on *c (replacing any
 * options there); do not move *o while c is in use. Errors as xds_pb_any. */
typedef struct {
    Envoy__Config__Cluster__V3__Cluster__TypedExtensionProtocolOptionsEntry entry;
    Envoy__Config__Cluster__V3__Cluster__TypedExtensionProtocolOptionsEntry *entries[1];
    Google__Protobuf__Any any;
} xds_h2_options;
MID_RESULT xds_pb_cluster_h2(arena *a, xds_h2_options *o, Envoy__Config__Cluster__V3__Cluster *c);

/* TransportSocket{name envoy.transport_sockets.tls, typed_config *any}:
 * wired in place (any borrowed, typically a packed Up/DownstreamTlsContext);
 * never fails. */
void xds_pb_tls_socket(Envoy__Config__Core__V3__TransportSocket *ts, Google__Protobuf__Any *any);

/* Listener Filter / HCM HttpFilter {name, typed_config *any}, wired in place
 * (name and any borrowed); never fail. */
void xds_pb_filter(Envoy__Config__Listener__V3__Filter *f, const char *name,
                   Google__Protobuf__Any *any);
void xds_pb_http_filter(
    Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpFilter *hf,
    const char *name, Google__Protobuf__Any *any);

/* Listener{name, address{ip:port}, filter_chains [{filters,
 * transport_socket}], traffic_direction}: one filter chain, the sidecar's
 * listener shape. Wired in place in *l from borrowed name, ip, filters and
 * ts (NULL: plaintext); do not move *l while it is in use. Never fails. */
typedef struct {
    Envoy__Config__Listener__V3__Listener msg;
    Envoy__Config__Listener__V3__FilterChain chain;
    Envoy__Config__Listener__V3__FilterChain *chains[1];
    Envoy__Config__Core__V3__Address addr;
    Envoy__Config__Core__V3__SocketAddress sockaddr;
} xds_listener;
void xds_pb_listener(xds_listener *l, const char *name, const char *ip, uint32_t port,
                     Envoy__Config__Listener__V3__Filter **filters, size_t n_filters,
                     Envoy__Config__Core__V3__TransportSocket *ts,
                     Envoy__Config__Core__V3__TrafficDirection direction);

/* The network filter TcpProxy{stat_prefix, cluster} (both borrowed) as
 * Filter *f, its payload packed into *any from the arena. Errors as
 * xds_pb_any. */
MID_RESULT xds_pb_tcp_proxy_filter(arena *a, const char *stat_prefix, const char *cluster,
                                   Envoy__Config__Listener__V3__Filter *f,
                                   Google__Protobuf__Any *any);

/* ---- registry helpers (xds_outbound.c) ----------------------------------------- */

/* The port a service port is reached on at an endpoint: the endpoint's
 * override for the port name, else the service port number. */
uint32_t xds_endpoint_port(const mesh_endpoint *e, const mesh_port *p);

/* The distinct SPIFFE IDs of s's endpoints in registry order, or, when there
 * is none, "spiffe://TD/ns/NS/sa/default". Pointers into the registry or into
 * the arena. NULL on exhaustion. */
const char **xds_service_sans(arena *a, const mesh_registry *reg, const mesh_service *s,
                              size_t *n);

/* ---- shared (outbound) parts (xds_outbound.c) ----------------------------------- */

/* Every ClusterLoadAssignment "outbound|PORT||HOST" (sealed). */
MID_RESULT xds_build_eds(const mesh_registry *reg, xds_rset **out);

/* Every outbound cluster (sealed). Sidecar: sds_cluster != NULL (h2 options
 * for HTTP2/GRPC ports, SDS mTLS to MESH_INTERNAL services). Proxyless:
 * sds_cluster == NULL; cert_provider NULL = plaintext, else TLS from that
 * certificate-provider instance. */
MID_RESULT xds_build_clusters(const mesh_registry *reg, const char *sds_cluster,
                              const char *cert_provider, xds_rset **out);

/* Sidecar outbound listeners "127.0.0.1_PORT", one per distinct port number,
 * split into sealed chunks of consecutive ports: ports[] ascending (n_ports,
 * malloc'd), chunks[i] holds ports[i*chunk .. (i+1)*chunk). */
typedef struct {
    uint32_t *ports;
    size_t n_ports;
    xds_rset **chunks;
    size_t n_chunks;
    size_t chunk;
} xds_listener_chunks;
MID_RESULT xds_build_sidecar_listeners(const mesh_registry *reg, xds_listener_chunks *out);
void xds_listener_chunks_clear(xds_listener_chunks *c);

/* Sidecar route configurations "PORT" (sealed). */
MID_RESULT xds_build_sidecar_routes(const mesh_registry *reg, xds_rset **out);

/* Proxyless listeners "HOST:PORT" (+ "HOST") and routes "HOST:PORT" (sealed). */
MID_RESULT xds_build_proxyless(const mesh_registry *reg, xds_rset **lds, xds_rset **rds);

/* "127.0.0.1_PORT". */
MID_RESULT xds_name_outbound_listener(char *buf, size_t cap, uint32_t port);

/* ---- inbound (xds_inbound.c) --------------------------------------------------- */

/* One inbound port of a proxy: endpoint port -> (service, port, endpoint). */
typedef struct {
    uint32_t port;
    const mesh_service *svc;
    const mesh_port *sp;
    const mesh_endpoint *ep;
} xds_inbound_port;

/* The inbound ports of identity `id`, ascending, one per endpoint port (the
 * first (service, port) in registry order wins a port). *out is malloc'd
 * (NULL when *n == 0). MID_E_NOT_FOUND when no endpoint runs as id,
 * MID_E_NOMEM. */
MID_RESULT xds_inbound_ports(const mesh_registry *reg, const char *id, xds_inbound_port **out,
                             size_t *n);

/* Adds the inbound listeners "inbound|PORT" (LDS) and local-app clusters
 * "inbound|PORT||" (CDS) for `ports` to the unsealed snapshot s. `pols`
 * are the registry's policies. Errors of the builders and RBAC compiler. */
MID_RESULT xds_build_inbound(const mesh_registry *reg, const mesh_policy *const *pols,
                             size_t n_pols, const xds_inbound_port *ports, size_t n_ports,
                             const char *sds_cluster, xds_snapshot *s);

#endif
