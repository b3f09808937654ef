/* The per-identity (inbound) part of a sidecar's snapshot: one mTLS
 * listener per endpoint port of the workloads running as the proxy's
 * identity, with the RBAC filters of the policies selecting the workload,
 * and one STATIC cluster per port to the local application. Shapes in
 * docs/xds.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/core/v3/address.pb-c.h"
#include "envoy/config/core/v3/base.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint_components.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/listener/v3/listener_components.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/config/route/v3/route_components.pb-c.h"
#include "envoy/extensions/filters/http/router/v3/router.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "meshcore/policy.h"
#include "meshcore/rbac.h"
#include "meshcore/xds_gen.h"
#include "meshcore/xds_gen_int.h"

typedef Envoy__Config__Listener__V3__Filter filter_msg;
typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager hcm_msg;
typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpFilter http_filter_msg;
typedef Envoy__Config__Core__V3__Address address_msg;
typedef Envoy__Config__Core__V3__SocketAddress sockaddr_msg;

#define WORKLOADS_STACK 16
#define HTTP_FILTERS_MAX 3 /* DENY RBAC, ALLOW RBAC, router */
#define NET_FILTERS_MAX 3  /* DENY RBAC, ALLOW RBAC, tcp_proxy */

static const char *const ALPN_HTTP[] = {"h2", "http/1.1"};

typedef struct {
    xds_inbound_port p;
    size_t order;
} port_row;

static int row_cmp(const void *x, const void *y)
{
    const port_row *a = x, *b = y;
    if (a->p.port != b->p.port) return a->p.port < b->p.port ? -1 : 1;
    return a->order < b->order ? -1 : a->order > b->order;
}

MID_RESULT xds_inbound_ports(const mesh_registry *reg, const char *id, xds_inbound_port **out,
                             size_t *n)
{
    mid_result r = MID_OK_RESULT;
    mesh_workload_ref stack[WORKLOADS_STACK], *w = stack;
    port_row *rows = NULL;
    xds_inbound_port *v = NULL;
    *out = NULL;
    *n = 0;
    size_t nw = mesh_registry_workloads(reg, id, stack, WORKLOADS_STACK);
    MID_CHECK(r, nw > 0, MID_E_NOT_FOUND, "no endpoint in the registry runs as %s", id);
    if (nw > WORKLOADS_STACK) {
        w = malloc(nw * sizeof *w);
        MID_CHECK_MEM(r, w);
        nw = mesh_registry_workloads(reg, id, w, nw);
    }
    size_t total = 0;
    for (size_t i = 0; i < nw; i++) total += w[i].service->n_ports;
    rows = malloc((total ? total : 1) * sizeof *rows);
    MID_CHECK_MEM(r, rows);
    size_t k = 0;
    for (size_t i = 0; i < nw; i++) {
        const mesh_service *s = w[i].service;
        for (size_t pi = 0; pi < s->n_ports; pi++) {
            rows[k].p = (xds_inbound_port){xds_endpoint_port(w[i].endpoint, &s->ports[pi]), s,
                                           &s->ports[pi], w[i].endpoint};
            rows[k].order = k;
            k++;
        }
    }
    qsort(rows, k, sizeof *rows, row_cmp);
    v = malloc((k ? k : 1) * sizeof *v);
    MID_CHECK_MEM(r, v);
    size_t d = 0;
    for (size_t i = 0; i < k; i++) {
        if (d > 0 && v[d - 1].port == rows[i].p.port) continue;
        v[d++] = rows[i].p;
    }
    *out = v;
    *n = d;
    v = NULL;
out:
    free(v);
    free(rows);
    if (w != stack) free(w);
    return r;
}

/* ---- pieces ---------------------------------------------------------------------- */


/* Filter / HttpFilter from one compiled RBAC filter. */
static void rbac_any(const mesh_rbac_filter *rf, Google__Protobuf__Any *any)
{
    google__protobuf__any__init(any);
    any->type_url = (char *)rf->type_url;
    any->value.data = rf->bytes;
    any->value.len = rf->len;
}

/* The listener's transport socket: DownstreamTlsContext requiring a client
 * certificate, certificate and trust bundle over SDS. */
static MID_RESULT downstream_tls(arena *a, const char *sds_cluster, int http,
                                 Envoy__Config__Core__V3__TransportSocket *ts,
                                 Google__Protobuf__Any *any)
{
    xds_sds_tls t;
    xds_sds_tls_init(&t, sds_cluster);
    if (http) {
        t.common.n_alpn_protocols = 2;
        t.common.alpn_protocols = (char **)ALPN_HTTP;
    }
    Google__Protobuf__BoolValue req = GOOGLE__PROTOBUF__BOOL_VALUE__INIT;
    req.value = 1;
    Envoy__Extensions__TransportSockets__Tls__V3__DownstreamTlsContext down =
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__DOWNSTREAM_TLS_CONTEXT__INIT;
    down.common_tls_context = &t.common;
    down.require_client_certificate = &req;
    MID_GUARD(xds_pb_any(a, &down.base, XDS_URL_DOWNSTREAM_TLS, any));
    xds_pb_tls_socket(ts, any);
    return mid_ok();
}

/* The HCM of an HTTP inbound listener, packed into *any: inline routes "/"
 * to the local cluster, RBAC filters, router last. */
static MID_RESULT inbound_hcm(arena *a, const mesh_rbac_filter *rf, size_t n_rf, uint32_t port,
                              const char *cluster, Google__Protobuf__Any *any)
{
    char stat[32], name[32];
    snprintf(stat, sizeof stat, "inbound_%u", (unsigned)port);
    snprintf(name, sizeof name, "inbound|%u", (unsigned)port);
    http_filter_msg hf[HTTP_FILTERS_MAX], *hfp[HTTP_FILTERS_MAX];
    Google__Protobuf__Any fany[HTTP_FILTERS_MAX];
    size_t nf = 0;
    for (size_t i = 0; i < n_rf && i < 2; i++, nf++) {
        rbac_any(&rf[i], &fany[nf]);
        xds_pb_http_filter(&hf[nf], rf[i].name, &fany[nf]);
        hfp[nf] = &hf[nf];
    }
    Envoy__Extensions__Filters__Http__Router__V3__Router router =
        ENVOY__EXTENSIONS__FILTERS__HTTP__ROUTER__V3__ROUTER__INIT;
    MID_GUARD(xds_pb_any(a, &router.base, XDS_URL_ROUTER, &fany[nf]));
    xds_pb_http_filter(&hf[nf], XDS_ROUTER_FILTER, &fany[nf]);
    hfp[nf] = &hf[nf];
    nf++;

    Envoy__Config__Route__V3__RouteMatch m = ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__INIT;
    m.path_specifier_case = ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PREFIX;
    m.prefix = (char *)"/";
    Google__Protobuf__Duration none = GOOGLE__PROTOBUF__DURATION__INIT;
    Envoy__Config__Route__V3__RouteAction ac = ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__INIT;
    ac.cluster_specifier_case = ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER;
    ac.cluster = (char *)cluster;
    ac.timeout = &none; /* 0: no timeout, for streams */
    Envoy__Config__Route__V3__Route rt = ENVOY__CONFIG__ROUTE__V3__ROUTE__INIT;
    Envoy__Config__Route__V3__Route *rtp = &rt;
    rt.match = &m;
    rt.action_case = ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_ROUTE;
    rt.route = &ac;
    static const char *const any_domain[] = {"*"};
    Envoy__Config__Route__V3__VirtualHost vh = ENVOY__CONFIG__ROUTE__V3__VIRTUAL_HOST__INIT;
    Envoy__Config__Route__V3__VirtualHost *vhp = &vh;
    vh.name = name;
    vh.n_domains = 1;
    vh.domains = (char **)any_domain;
    vh.n_routes = 1;
    vh.routes = &rtp;
    Envoy__Config__Route__V3__RouteConfiguration rc = ENVOY__CONFIG__ROUTE__V3__ROUTE_CONFIGURATION__INIT;
    rc.name = name;
    rc.n_virtual_hosts = 1;
    rc.virtual_hosts = &vhp;

    hcm_msg hcm = ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__INIT;
    hcm.stat_prefix = stat;
    hcm.route_specifier_case =
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_ROUTE_CONFIG;
    hcm.route_config = &rc;
    hcm.n_http_filters = nf;
    hcm.http_filters = hfp;
    return xds_pb_any(a, &hcm.base, XDS_URL_HCM, any);
}

static MID_RESULT inbound_listener(arena *a, const mesh_policy *const *pols, size_t n_pols,
                                   const xds_inbound_port *ip, const char *sds_cluster,
                                   xds_snapshot *s)
{
    char name[32], stat[32], cluster[XDS_NAME_MAX + 1];
    snprintf(name, sizeof name, "inbound|%u", (unsigned)ip->port);
    snprintf(stat, sizeof stat, "inbound_%u", (unsigned)ip->port);
    MID_GUARD(xds_name_inbound_cluster(cluster, sizeof cluster, ip->port));
    int http = mesh_protocol_is_http(ip->sp->protocol);
    mesh_workload w = {ip->svc->namespace_, ip->ep->labels, ip->ep->n_labels};
    mesh_rbac_filter rf[2];
    size_t n_rf = 0;
    if (http) {
        MID_GUARD(mesh_rbac_http_filters(pols, n_pols, &w, a, rf, &n_rf));
    } else {
        MID_GUARD(mesh_rbac_network_filters(pols, n_pols, &w, stat, a, rf, &n_rf));
    }
    MID_ENSURE(n_rf <= 2, MID_E_INTERNAL, "RBAC compiler returned %zu filters", n_rf);

    filter_msg f[NET_FILTERS_MAX], *fp[NET_FILTERS_MAX];
    Google__Protobuf__Any fany[NET_FILTERS_MAX];
    size_t nf = 0;
    if (http) {
        MID_GUARD(inbound_hcm(a, rf, n_rf, ip->port, cluster, &fany[0]));
        xds_pb_filter(&f[0], XDS_HCM_FILTER, &fany[0]);
        fp[0] = &f[0];
        nf = 1;
    } else {
        for (size_t i = 0; i < n_rf; i++, nf++) {
            rbac_any(&rf[i], &fany[nf]);
            xds_pb_filter(&f[nf], rf[i].name, &fany[nf]);
            fp[nf] = &f[nf];
        }
        MID_GUARD(xds_pb_tcp_proxy_filter(a, stat, cluster, &f[nf], &fany[nf]));
        fp[nf] = &f[nf];
        nf++;
    }

    Envoy__Config__Core__V3__TransportSocket ts;
    Google__Protobuf__Any tls_any;
    MID_GUARD(downstream_tls(a, sds_cluster, http, &ts, &tls_any));
    xds_listener l;
    xds_pb_listener(&l, name, XDS_ANY_ADDR, ip->port, fp, nf, &ts,
                    ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__INBOUND);
    return xds_pb_snap_add(a, s, XDS_LDS, name, &l.msg.base);
}

static MID_RESULT inbound_cluster(arena *a, const xds_inbound_port *ip, xds_snapshot *s)
{
    char name[XDS_NAME_MAX + 1];
    MID_GUARD(xds_name_inbound_cluster(name, sizeof name, ip->port));
    uint32_t app_port = ip->sp->target_port ? ip->sp->target_port : ip->port;
    address_msg ad;
    sockaddr_msg sa;
    xds_pb_sockaddr(&ad, &sa, XDS_LOCALHOST, app_port);
    Envoy__Config__Endpoint__V3__Endpoint em = ENVOY__CONFIG__ENDPOINT__V3__ENDPOINT__INIT;
    em.address = &ad;
    Envoy__Config__Endpoint__V3__LbEndpoint lb = ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__INIT;
    Envoy__Config__Endpoint__V3__LbEndpoint *lbp = &lb;
    lb.host_identifier_case = ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT;
    lb.endpoint = &em;
    Envoy__Config__Core__V3__Locality where = ENVOY__CONFIG__CORE__V3__LOCALITY__INIT;
    Google__Protobuf__UInt32Value weight = GOOGLE__PROTOBUF__UINT32_VALUE__INIT;
    weight.value = 1;
    Envoy__Config__Endpoint__V3__LocalityLbEndpoints loc =
        ENVOY__CONFIG__ENDPOINT__V3__LOCALITY_LB_ENDPOINTS__INIT;
    Envoy__Config__Endpoint__V3__LocalityLbEndpoints *locp = &loc;
    loc.locality = &where;
    loc.n_lb_endpoints = 1;
    loc.lb_endpoints = &lbp;
    loc.load_balancing_weight = &weight;
    Envoy__Config__Endpoint__V3__ClusterLoadAssignment cla =
        ENVOY__CONFIG__ENDPOINT__V3__CLUSTER_LOAD_ASSIGNMENT__INIT;
    cla.cluster_name = name;
    cla.n_endpoints = 1;
    cla.endpoints = &locp;

    Google__Protobuf__Duration ct = GOOGLE__PROTOBUF__DURATION__INIT;
    ct.seconds = XDS_CONNECT_TIMEOUT_S;
    Envoy__Config__Cluster__V3__Cluster c = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__INIT;
    c.name = name;
    /* STATIC is 0: the oneof case makes it explicit on the wire */
    c.cluster_discovery_type_case = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE;
    c.type = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STATIC;
    c.connect_timeout = &ct;
    c.lb_policy = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__ROUND_ROBIN;
    c.load_assignment = &cla;
    xds_h2_options h2;
    if (ip->sp->protocol == MESH_PROTO_HTTP2 || ip->sp->protocol == MESH_PROTO_GRPC)
        MID_GUARD(xds_pb_cluster_h2(a, &h2, &c));
    return xds_pb_snap_add(a, s, XDS_CDS, name, &c.base);
}

MID_RESULT xds_build_inbound(const mesh_registry *reg, const mesh_policy *const *pols,
                             size_t n_pols, const xds_inbound_port *ports, size_t n_ports,
                             const char *sds_cluster, xds_snapshot *s)
{
    (void)reg;
    mid_result r = MID_OK_RESULT;
    arena *a = NULL;
    MID_TRY(r, arena_new(XDS_ARENA_LIMIT, &a));
    for (size_t i = 0; i < n_ports; i++) {
        arena_reset(a);
        MID_TRY(r, inbound_listener(a, pols, n_pols, &ports[i], sds_cluster, s));
        MID_TRY(r, inbound_cluster(a, &ports[i], s));
    }
out:
    arena_free(a);
    return r;
}
