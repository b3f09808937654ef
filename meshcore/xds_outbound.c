/* The shared (outbound) parts of xDS snapshots: clusters, endpoints,
 * sidecar outbound listeners and routes, proxyless listeners and routes.
 * Built once per registry and proxy flavour by meshcore/xds_gen.c; the
 * shapes are documented in docs/xds.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/core/v3/address.pb-c.h"
#include "envoy/config/core/v3/base.pb-c.h"
#include "envoy/config/core/v3/health_check.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint_components.pb-c.h"
#include "envoy/config/listener/v3/api_listener.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/listener/v3/listener_components.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/config/route/v3/route_components.pb-c.h"
#include "envoy/extensions/filters/http/router/v3/router.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "meshcore/xds_gen.h"
#include "meshcore/xds_gen_int.h"

typedef Envoy__Config__Cluster__V3__Cluster cluster_msg;
typedef Envoy__Config__Endpoint__V3__ClusterLoadAssignment cla_msg;
typedef Envoy__Config__Endpoint__V3__LocalityLbEndpoints locality_msg;
typedef Envoy__Config__Endpoint__V3__LbEndpoint lb_msg;
typedef Envoy__Config__Endpoint__V3__Endpoint endpoint_msg;
typedef Envoy__Config__Core__V3__Address address_msg;
typedef Envoy__Config__Core__V3__SocketAddress sockaddr_msg;
typedef Envoy__Config__Listener__V3__Listener listener_msg;
typedef Envoy__Config__Listener__V3__Filter filter_msg;
typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager hcm_msg;
typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__Rds rds_msg;
typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpFilter http_filter_msg;
typedef Envoy__Config__Route__V3__RouteConfiguration route_config_msg;
typedef Envoy__Config__Route__V3__VirtualHost vhost_msg;
typedef Envoy__Config__Route__V3__Route route_msg;
typedef Envoy__Config__Route__V3__RouteMatch match_msg;
typedef Envoy__Config__Route__V3__RouteAction action_msg;
typedef Envoy__Extensions__TransportSockets__Tls__V3__UpstreamTlsContext upstream_tls_msg;
typedef Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext common_tls_msg;
typedef Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext valctx_msg;
typedef Envoy__Extensions__TransportSockets__Tls__V3__CertificateProviderPluginInstance provider_msg;

/* Most listener chunks a snapshot takes by reference (xds_snapshot allows
 * 64 parts per type; the rest is for the snapshot's own resources). */
#define CHUNKS_MAX 48
#define CHUNK_MIN 32

/* ---- names ----------------------------------------------------------------------- */

static MID_RESULT name_fmt(size_t cap, int n)
{
    MID_ENSURE(n >= 0 && (size_t)n < cap, MID_E_TOO_LARGE, "xDS resource name over %zu bytes",
               cap ? cap - 1 : 0);
    return mid_ok();
}

MID_RESULT xds_name_outbound_cluster(char *buf, size_t cap, uint32_t port, const char *host)
{
    return name_fmt(cap, snprintf(buf, cap, "outbound|%u||%s", (unsigned)port, host));
}

MID_RESULT xds_name_inbound_cluster(char *buf, size_t cap, uint32_t endpoint_port)
{
    return name_fmt(cap, snprintf(buf, cap, "inbound|%u||", (unsigned)endpoint_port));
}

MID_RESULT xds_name_outbound_listener(char *buf, size_t cap, uint32_t port)
{
    return name_fmt(cap, snprintf(buf, cap, XDS_LOCALHOST "_%u", (unsigned)port));
}

/* ---- registry helpers ------------------------------------------------------------ */

uint32_t xds_endpoint_port(const mesh_endpoint *e, const mesh_port *p)
{
    for (size_t i = 0; i < e->n_ports; i++) {
        if (strcmp(e->ports[i].name, p->name) == 0) return e->ports[i].number;
    }
    return p->number;
}

const char **xds_service_sans(arena *a, const mesh_registry *reg, const mesh_service *s,
                              size_t *n)
{
    const char **v = xds_pb_ptrs(a, s->n_endpoints ? s->n_endpoints : 1);
    if (!v) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < s->n_endpoints; i++) {
        const char *id = s->endpoints[i].spiffe_id;
        if (!id) continue;
        size_t j = 0;
        while (j < k && strcmp(v[j], id) != 0) j++;
        if (j == k) v[k++] = id;
    }
    if (k == 0) {
        /* Istio's default service account: the identity a workload of the
         * namespace runs as when nothing else is known. */
        const char *td = mesh_registry_trust_domain(reg);
        size_t cap = strlen(td) + strlen(s->namespace_) + sizeof "spiffe:///ns//sa/default";
        char *id = arena_alloc(a, cap);
        if (!id) return NULL;
        snprintf(id, cap, "spiffe://%s/ns/%s/sa/default", td, s->namespace_);
        v[k++] = id;
    }
    *n = k;
    return v;
}

static Envoy__Config__Core__V3__HealthStatus health_of(mesh_health h)
{
    switch (h) {
    case MESH_HEALTH_HEALTHY: return ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__HEALTHY;
    case MESH_HEALTH_UNHEALTHY: return ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__UNHEALTHY;
    case MESH_HEALTH_DRAINING: return ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__DRAINING;
    }
    return ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__UNKNOWN;
}


/* ---- EDS ----------------------------------------------------------------------------- */

/* The endpoints of service port p, one locality (present, weight 1,
 * priority 0) holding every endpoint once per (address, port); no locality
 * when there is no endpoint. Fills the CLA except cluster_name. Arrays come
 * from the arena. */
static MID_RESULT cla_fill(arena *a, const mesh_service *s, const mesh_port *p, cla_msg *cla,
                           locality_msg *loc, Envoy__Config__Core__V3__Locality *where,
                           Google__Protobuf__UInt32Value *weight, locality_msg **locp)
{
    envoy__config__endpoint__v3__cluster_load_assignment__init(cla);
    size_t n = s->n_endpoints;
    if (n == 0) return mid_ok();
    lb_msg *lb = arena_alloc(a, n * sizeof *lb);
    lb_msg **lbp = xds_pb_ptrs(a, n);
    endpoint_msg *em = arena_alloc(a, n * sizeof *em);
    address_msg *ad = arena_alloc(a, n * sizeof *ad);
    sockaddr_msg *sa = arena_alloc(a, n * sizeof *sa);
    MID_ENSURE(lb && lbp && em && ad && sa, MID_E_NOMEM, "out of memory building endpoints");
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const mesh_endpoint *e = &s->endpoints[i];
        uint32_t port = xds_endpoint_port(e, p);
        size_t j = 0;
        /* gRPC clients require unique addresses */
        while (j < k && !(sa[j].port_value == port && strcmp(sa[j].address, e->address) == 0)) j++;
        if (j < k) continue;
        xds_pb_sockaddr(&ad[k], &sa[k], e->address, port);
        envoy__config__endpoint__v3__endpoint__init(&em[k]);
        em[k].address = &ad[k];
        envoy__config__endpoint__v3__lb_endpoint__init(&lb[k]);
        lb[k].host_identifier_case = ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT;
        lb[k].endpoint = &em[k];
        lb[k].health_status = health_of(e->health);
        lbp[k] = &lb[k];
        k++;
    }
    envoy__config__core__v3__locality__init(where);
    google__protobuf__uint32_value__init(weight);
    weight->value = 1;
    envoy__config__endpoint__v3__locality_lb_endpoints__init(loc);
    loc->locality = where; /* present though empty: gRPC skips a locality without it */
    loc->n_lb_endpoints = k;
    loc->lb_endpoints = lbp;
    loc->load_balancing_weight = weight;
    loc->priority = 0;
    *locp = loc;
    cla->n_endpoints = 1;
    cla->endpoints = locp;
    return mid_ok();
}

MID_RESULT xds_build_eds(const mesh_registry *reg, xds_rset **out)
{
    mid_result r = MID_OK_RESULT;
    arena *a = NULL;
    xds_rset *set = NULL;
    MID_TRY(r, arena_new(XDS_ARENA_LIMIT, &a));
    MID_TRY(r, xds_rset_new(&set));
    for (size_t i = 0; i < mesh_registry_n_services(reg); i++) {
        const mesh_service *s = mesh_registry_service(reg, i);
        for (size_t pi = 0; pi < s->n_ports; pi++) {
            arena_reset(a);
            cla_msg cla;
            locality_msg loc, *locp = NULL;
            Envoy__Config__Core__V3__Locality where;
            Google__Protobuf__UInt32Value weight;
            MID_TRY(r, cla_fill(a, s, &s->ports[pi], &cla, &loc, &where, &weight, &locp));
            for (size_t h = 0; h < s->n_hosts; h++) {
                char name[XDS_NAME_MAX + 1];
                MID_TRY(r, xds_name_outbound_cluster(name, sizeof name, s->ports[pi].number,
                                                     s->hosts[h]));
                cla.cluster_name = name;
                MID_TRY(r, xds_pb_add(a, set, name, &cla.base));
            }
        }
    }
    xds_rset_seal(set);
    *out = set;
    set = NULL;
out:
    xds_rset_unref(set);
    arena_free(a);
    return r;
}

/* ---- CDS ------------------------------------------------------------------------------ */

/* The cluster's transport socket: Any(UpstreamTlsContext) into *ts. */
static MID_RESULT upstream_tls(arena *a, const char *host, const char *const *sans, size_t n_sans,
                               const char *sds_cluster, const char *cert_provider,
                               Envoy__Config__Core__V3__TransportSocket *ts,
                               Google__Protobuf__Any *any)
{
    upstream_tls_msg up = ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__UPSTREAM_TLS_CONTEXT__INIT;
    if (sds_cluster) {
        xds_sds_tls t;
        xds_sds_tls_init(&t, sds_cluster);
        t.defval.match_typed_subject_alt_names = xds_pb_uri_sans(a, sans, n_sans);
        MID_ENSURE_MEM(t.defval.match_typed_subject_alt_names);
        t.defval.n_match_typed_subject_alt_names = n_sans;
        up.common_tls_context = &t.common;
        up.sni = (char *)host;
        MID_GUARD(xds_pb_any(a, &up.base, XDS_URL_UPSTREAM_TLS, any));
    } else {
        /* gRPC (A29): certificate-provider instances, no SDS; the SAN check
         * uses match_subject_alt_names. */
        provider_msg id = ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__CERTIFICATE_PROVIDER_PLUGIN_INSTANCE__INIT;
        provider_msg ca = ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__CERTIFICATE_PROVIDER_PLUGIN_INSTANCE__INIT;
        valctx_msg vc = ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__CERTIFICATE_VALIDATION_CONTEXT__INIT;
        common_tls_msg common = ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__INIT;
        id.instance_name = (char *)cert_provider;
        ca.instance_name = (char *)cert_provider;
        vc.ca_certificate_provider_instance = &ca;
        vc.match_subject_alt_names = xds_pb_exact_matchers(a, sans, n_sans);
        MID_ENSURE_MEM(vc.match_subject_alt_names);
        vc.n_match_subject_alt_names = n_sans;
        common.tls_certificate_provider_instance = &id;
        common.validation_context_type_case =
            ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_VALIDATION_CONTEXT;
        common.validation_context = &vc;
        up.common_tls_context = &common;
        MID_GUARD(xds_pb_any(a, &up.base, XDS_URL_UPSTREAM_TLS, any));
    }
    xds_pb_tls_socket(ts, any);
    return mid_ok();
}

MID_RESULT xds_build_clusters(const mesh_registry *reg, const char *sds_cluster,
                              const char *cert_provider, xds_rset **out)
{
    mid_result r = MID_OK_RESULT;
    arena *a = NULL;
    xds_rset *set = NULL;
    MID_TRY(r, arena_new(XDS_ARENA_LIMIT, &a));
    MID_TRY(r, xds_rset_new(&set));
    for (size_t i = 0; i < mesh_registry_n_services(reg); i++) {
        const mesh_service *s = mesh_registry_service(reg, i);
        arena_reset(a);
        size_t n_sans = 0;
        const char **sans = xds_service_sans(a, reg, s, &n_sans);
        MID_CHECK(r, sans != NULL, MID_E_NOMEM, "out of memory building clusters");
        int tls = s->mesh_internal && (sds_cluster || cert_provider);
        for (size_t h = 0; h < s->n_hosts; h++) {
            Envoy__Config__Core__V3__TransportSocket ts;
            Google__Protobuf__Any tls_any;
            if (tls) {
                MID_TRY(r, upstream_tls(a, s->hosts[h], sans, n_sans, sds_cluster, cert_provider,
                                        &ts, &tls_any));
            }
            for (size_t pi = 0; pi < s->n_ports; pi++) {
                const mesh_port *p = &s->ports[pi];
                char name[XDS_NAME_MAX + 1];
                MID_TRY(r, xds_name_outbound_cluster(name, sizeof name, p->number, s->hosts[h]));
                cluster_msg c = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__INIT;
                Envoy__Config__Cluster__V3__Cluster__EdsClusterConfig ecc =
                    ENVOY__CONFIG__CLUSTER__V3__CLUSTER__EDS_CLUSTER_CONFIG__INIT;
                Google__Protobuf__Duration ct = GOOGLE__PROTOBUF__DURATION__INIT;
                xds_ads_source eds;
                xds_ads_source_init(&eds);
                ecc.eds_config = &eds.cs;
                ecc.service_name = name;
                ct.seconds = XDS_CONNECT_TIMEOUT_S;
                c.name = name;
                c.cluster_discovery_type_case =
                    ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE;
                c.type = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS;
                c.eds_cluster_config = &ecc;
                c.connect_timeout = &ct;
                c.lb_policy = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__ROUND_ROBIN;
                if (tls) c.transport_socket = &ts;
                xds_h2_options h2;
                if (sds_cluster &&
                    (p->protocol == MESH_PROTO_HTTP2 || p->protocol == MESH_PROTO_GRPC))
                    MID_TRY(r, xds_pb_cluster_h2(a, &h2, &c));
                MID_TRY(r, xds_pb_add(a, set, name, &c.base));
            }
        }
    }
    xds_rset_seal(set);
    *out = set;
    set = NULL;
out:
    xds_rset_unref(set);
    arena_free(a);
    return r;
}

/* ---- shared listener pieces -------------------------------------------------------- */

/* HCM{stat_prefix, rds{ads, route_name}, http_filters [router]} packed into *any. */
static MID_RESULT hcm_rds_any(arena *a, const char *stat_prefix, const char *route_name,
                              Google__Protobuf__Any *any)
{
    Envoy__Extensions__Filters__Http__Router__V3__Router router =
        ENVOY__EXTENSIONS__FILTERS__HTTP__ROUTER__V3__ROUTER__INIT;
    Google__Protobuf__Any router_any;
    MID_GUARD(xds_pb_any(a, &router.base, XDS_URL_ROUTER, &router_any));
    http_filter_msg hf;
    http_filter_msg *hfp = &hf;
    xds_pb_http_filter(&hf, XDS_ROUTER_FILTER, &router_any);
    xds_ads_source src;
    xds_ads_source_init(&src);
    rds_msg rds = ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__RDS__INIT;
    rds.config_source = &src.cs;
    rds.route_config_name = (char *)route_name;
    hcm_msg hcm = ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__INIT;
    hcm.stat_prefix = (char *)stat_prefix;
    hcm.route_specifier_case =
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_RDS;
    hcm.rds = &rds;
    hcm.n_http_filters = 1;
    hcm.http_filters = &hfp;
    return xds_pb_any(a, &hcm.base, XDS_URL_HCM, any);
}

/* One virtual host "HOST:PORT", domains [HOST, HOST:PORT], one route prefix
 * "/" -> `cluster` (timeout 0 = none, for streams, when with_timeout). All
 * storage in the arena; NULL on exhaustion. */
static vhost_msg *vhost_new(arena *a, const char *host, uint32_t port, const char *cluster,
                            int with_timeout)
{
    vhost_msg *vh = arena_alloc(a, sizeof *vh);
    route_msg *rt = arena_alloc(a, sizeof *rt);
    route_msg **rtp = xds_pb_ptrs(a, 1);
    match_msg *m = arena_alloc(a, sizeof *m);
    action_msg *ac = arena_alloc(a, sizeof *ac);
    Google__Protobuf__Duration *to = arena_alloc(a, sizeof *to);
    char **domains = xds_pb_ptrs(a, 2);
    char *hp = xds_pb_fmt(a, "%s:%u", host, (unsigned)port);
    char *cl = arena_strndup(a, cluster, strlen(cluster));
    if (!vh || !rt || !rtp || !m || !ac || !to || !domains || !hp || !cl) return NULL;
    envoy__config__route__v3__route_match__init(m);
    m->path_specifier_case = ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PREFIX;
    m->prefix = (char *)"/"; /* not "": see wire-contracts 0.1 #1 */
    envoy__config__route__v3__route_action__init(ac);
    ac->cluster_specifier_case = ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER;
    ac->cluster = cl;
    google__protobuf__duration__init(to);
    if (with_timeout) ac->timeout = to;
    envoy__config__route__v3__route__init(rt);
    rt->match = m;
    rt->action_case = ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_ROUTE;
    rt->route = ac;
    rtp[0] = rt;
    domains[0] = (char *)host;
    domains[1] = hp;
    envoy__config__route__v3__virtual_host__init(vh);
    vh->name = hp;
    vh->n_domains = 2;
    vh->domains = domains;
    vh->n_routes = 1;
    vh->routes = rtp;
    return vh;
}

/* ---- sidecar outbound listeners and routes ----------------------------------------- */

/* The first (service, port) of each distinct port number, registry order. */
typedef struct {
    uint32_t port;
    size_t order;
    const mesh_service *svc;
    const mesh_port *sp;
} port_owner;

static int owner_cmp(const void *x, const void *y)
{
    const port_owner *a = x, *b = y;
    if (a->port != b->port) return a->port < b->port ? -1 : 1;
    return a->order < b->order ? -1 : a->order > b->order;
}

/* Distinct port numbers, ascending, each with its first owner. *out malloc'd. */
static MID_RESULT port_owners(const mesh_registry *reg, port_owner **out, size_t *n)
{
    size_t total = 0;
    for (size_t i = 0; i < mesh_registry_n_services(reg); i++)
        total += mesh_registry_service(reg, i)->n_ports;
    port_owner *v = malloc((total ? total : 1) * sizeof *v);
    MID_ENSURE_MEM(v);
    size_t k = 0;
    for (size_t i = 0; i < mesh_registry_n_services(reg); i++) {
        const mesh_service *s = mesh_registry_service(reg, i);
        for (size_t pi = 0; pi < s->n_ports; pi++) {
            v[k] = (port_owner){s->ports[pi].number, k, s, &s->ports[pi]};
            k++;
        }
    }
    qsort(v, k, sizeof *v, owner_cmp);
    size_t d = 0;
    for (size_t i = 0; i < k; i++) {
        if (d > 0 && v[d - 1].port == v[i].port) continue;
        v[d++] = v[i];
    }
    *out = v;
    *n = d;
    return mid_ok();
}

static MID_RESULT outbound_listener(arena *a, const port_owner *o, xds_rset *set)
{
    char name[XDS_NAME_MAX + 1], stat[32], route[16];
    MID_GUARD(xds_name_outbound_listener(name, sizeof name, o->port));
    snprintf(stat, sizeof stat, "outbound_%u", (unsigned)o->port);
    snprintf(route, sizeof route, "%u", (unsigned)o->port);
    Google__Protobuf__Any any;
    filter_msg f;
    if (mesh_protocol_is_http(o->sp->protocol)) {
        MID_GUARD(hcm_rds_any(a, stat, route, &any));
        xds_pb_filter(&f, XDS_HCM_FILTER, &any);
    } else {
        char cluster[XDS_NAME_MAX + 1];
        MID_GUARD(xds_name_outbound_cluster(cluster, sizeof cluster, o->port, o->svc->hosts[0]));
        MID_GUARD(xds_pb_tcp_proxy_filter(a, stat, cluster, &f, &any));
    }
    filter_msg *fp = &f;
    xds_listener l;
    xds_pb_listener(&l, name, XDS_LOCALHOST, o->port, &fp, 1, NULL,
                    ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__OUTBOUND);
    return xds_pb_add(a, set, name, &l.msg.base);
}

void xds_listener_chunks_clear(xds_listener_chunks *c)
{
    for (size_t i = 0; i < c->n_chunks; i++) xds_rset_unref(c->chunks[i]);
    free(c->chunks);
    free(c->ports);
    memset(c, 0, sizeof *c);
}

MID_RESULT xds_build_sidecar_listeners(const mesh_registry *reg, xds_listener_chunks *out)
{
    mid_result r = MID_OK_RESULT;
    arena *a = NULL;
    port_owner *po = NULL;
    size_t n = 0;
    xds_listener_chunks c = {0};
    MID_TRY(r, arena_new(XDS_ARENA_LIMIT, &a));
    MID_TRY(r, port_owners(reg, &po, &n));
    c.chunk = (n + CHUNKS_MAX - 1) / CHUNKS_MAX;
    if (c.chunk < CHUNK_MIN) c.chunk = CHUNK_MIN;
    size_t want = (n + c.chunk - 1) / c.chunk;
    c.ports = malloc((n ? n : 1) * sizeof *c.ports);
    c.chunks = calloc(want ? want : 1, sizeof *c.chunks);
    MID_CHECK_MEM(r, c.ports);
    MID_CHECK_MEM(r, c.chunks);
    c.n_ports = n;
    for (size_t i = 0; i < n; i++) c.ports[i] = po[i].port;
    for (size_t ci = 0; ci < want; ci++) {
        MID_TRY(r, xds_rset_new(&c.chunks[ci]));
        c.n_chunks++;
        for (size_t i = ci * c.chunk; i < n && i < (ci + 1) * c.chunk; i++) {
            arena_reset(a);
            MID_TRY(r, outbound_listener(a, &po[i], c.chunks[ci]));
        }
        xds_rset_seal(c.chunks[ci]);
    }
    *out = c;
    memset(&c, 0, sizeof c);
out:
    xds_listener_chunks_clear(&c);
    free(po);
    arena_free(a);
    return r;
}

MID_RESULT xds_build_sidecar_routes(const mesh_registry *reg, xds_rset **out)
{
    mid_result r = MID_OK_RESULT;
    arena *a = NULL;
    port_owner *po = NULL;
    size_t n = 0;
    xds_rset *set = NULL;
    MID_TRY(r, arena_new(XDS_ARENA_LIMIT, &a));
    MID_TRY(r, xds_rset_new(&set));
    MID_TRY(r, port_owners(reg, &po, &n));
    size_t nsvc = mesh_registry_n_services(reg);
    for (size_t i = 0; i < n; i++) {
        /* A port number whose first service speaks TCP gets a tcp_proxy
         * listener and no routes (docs/xds.md). */
        if (!mesh_protocol_is_http(po[i].sp->protocol)) continue;
        arena_reset(a);
        size_t nvh = 0, cap = 0;
        vhost_msg **vhs = NULL;
        for (size_t si = 0; si < nsvc; si++) {
            const mesh_service *s = mesh_registry_service(reg, si);
            for (size_t pi = 0; pi < s->n_ports; pi++) {
                const mesh_port *p = &s->ports[pi];
                if (p->number != po[i].port || !mesh_protocol_is_http(p->protocol)) continue;
                for (size_t h = 0; h < s->n_hosts; h++) {
                    if (nvh == cap) {
                        size_t ncap = cap ? 2 * cap : 16;
                        vhost_msg **nv = xds_pb_ptrs(a, ncap);
                        MID_CHECK(r, nv != NULL, MID_E_NOMEM, "out of memory building routes");
                        if (nvh) memcpy(nv, vhs, nvh * sizeof *nv);
                        vhs = nv;
                        cap = ncap;
                    }
                    char cluster[XDS_NAME_MAX + 1];
                    MID_TRY(r, xds_name_outbound_cluster(cluster, sizeof cluster, p->number,
                                                         s->hosts[h]));
                    vhs[nvh] = vhost_new(a, s->hosts[h], p->number, cluster, 1);
                    MID_CHECK(r, vhs[nvh] != NULL, MID_E_NOMEM, "out of memory building routes");
                    nvh++;
                }
            }
        }
        char name[16];
        snprintf(name, sizeof name, "%u", (unsigned)po[i].port);
        route_config_msg rc = ENVOY__CONFIG__ROUTE__V3__ROUTE_CONFIGURATION__INIT;
        rc.name = name;
        rc.n_virtual_hosts = nvh;
        rc.virtual_hosts = vhs;
        MID_TRY(r, xds_pb_add(a, set, name, &rc.base));
    }
    xds_rset_seal(set);
    *out = set;
    set = NULL;
out:
    xds_rset_unref(set);
    free(po);
    arena_free(a);
    return r;
}

/* ---- proxyless ------------------------------------------------------------------------ */

static MID_RESULT api_listener_add(arena *a, xds_rset *lds, const char *name, const char *route)
{
    Google__Protobuf__Any hcm;
    MID_GUARD(hcm_rds_any(a, route, route, &hcm));
    Envoy__Config__Listener__V3__ApiListener api = ENVOY__CONFIG__LISTENER__V3__API_LISTENER__INIT;
    api.api_listener = &hcm;
    listener_msg l = ENVOY__CONFIG__LISTENER__V3__LISTENER__INIT;
    l.name = (char *)name;
    l.api_listener = &api;
    return xds_pb_add(a, lds, name, &l.base);
}

static size_t http_ports(const mesh_service *s, const mesh_port **first)
{
    size_t n = 0;
    for (size_t pi = 0; pi < s->n_ports; pi++) {
        if (!mesh_protocol_is_http(s->ports[pi].protocol)) continue;
        if (n++ == 0) *first = &s->ports[pi];
    }
    return n;
}

MID_RESULT xds_build_proxyless(const mesh_registry *reg, xds_rset **lds_out, xds_rset **rds_out)
{
    mid_result r = MID_OK_RESULT;
    arena *a = NULL;
    xds_rset *lds = NULL, *rds = NULL;
    MID_TRY(r, arena_new(XDS_ARENA_LIMIT, &a));
    MID_TRY(r, xds_rset_new(&lds));
    MID_TRY(r, xds_rset_new(&rds));
    for (size_t i = 0; i < mesh_registry_n_services(reg); i++) {
        const mesh_service *s = mesh_registry_service(reg, i);
        const mesh_port *only = NULL;
        size_t nhttp = http_ports(s, &only);
        for (size_t h = 0; h < s->n_hosts; h++) {
            for (size_t pi = 0; pi < s->n_ports; pi++) {
                const mesh_port *p = &s->ports[pi];
                if (!mesh_protocol_is_http(p->protocol)) continue;
                arena_reset(a);
                char name[XDS_NAME_MAX + 1], cluster[XDS_NAME_MAX + 1];
                int w = snprintf(name, sizeof name, "%s:%u", s->hosts[h], (unsigned)p->number);
                MID_CHECK(r, w > 0 && (size_t)w < sizeof name, MID_E_TOO_LARGE,
                          "xDS resource name over %d bytes", XDS_NAME_MAX);
                MID_TRY(r, xds_name_outbound_cluster(cluster, sizeof cluster, p->number,
                                                     s->hosts[h]));
                MID_TRY(r, api_listener_add(a, lds, name, name));
                /* xds:///HOST without a port works when the choice is clear */
                if (nhttp == 1) MID_TRY(r, api_listener_add(a, lds, s->hosts[h], name));
                vhost_msg *vh = vhost_new(a, s->hosts[h], p->number, cluster, 0);
                MID_CHECK(r, vh != NULL, MID_E_NOMEM, "out of memory building routes");
                route_config_msg rc = ENVOY__CONFIG__ROUTE__V3__ROUTE_CONFIGURATION__INIT;
                rc.name = name;
                rc.n_virtual_hosts = 1;
                rc.virtual_hosts = &vh;
                MID_TRY(r, xds_pb_add(a, rds, name, &rc.base));
            }
        }
    }
    xds_rset_seal(lds);
    xds_rset_seal(rds);
    *lds_out = lds;
    *rds_out = rds;
    lds = rds = NULL;
out:
    xds_rset_unref(lds);
    xds_rset_unref(rds);
    arena_free(a);
    return r;
}
