/* Sidecar (Envoy) snapshots decoded back field by field: clusters with
 * SDS mTLS and SAN matchers, endpoints, the inbound mTLS listener with RBAC
 * before the router, outbound listeners and routes (docs/xds.md). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/filters/http/rbac/v3/rbac.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/tls.pb-c.h"
#include "envoy/extensions/upstreams/http/v3/http_protocol_options.pb-c.h"
#include "meshcore/rbac.h"
#include "tests/unit/xds/xds_tests.h"

typedef Envoy__Config__Cluster__V3__Cluster cluster_t;
typedef Envoy__Config__Endpoint__V3__ClusterLoadAssignment cla_t;
typedef Envoy__Config__Listener__V3__Listener listener_t;
typedef Envoy__Config__Route__V3__RouteConfiguration rc_t;
typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager hcm_t;
typedef Envoy__Extensions__TransportSockets__Tls__V3__UpstreamTlsContext up_t;
typedef Envoy__Extensions__TransportSockets__Tls__V3__DownstreamTlsContext down_t;
typedef Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext common_t;
typedef Envoy__Extensions__TransportSockets__Tls__V3__SdsSecretConfig sds_t;
typedef Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy tcp_t;

#define TYPE_URL(x) "type.googleapis.com/" x
#define URL_UP TYPE_URL("envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext")
#define URL_DOWN TYPE_URL("envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext")
#define URL_HCM \
    TYPE_URL("envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager")
#define URL_ROUTER TYPE_URL("envoy.extensions.filters.http.router.v3.Router")
#define URL_TCP TYPE_URL("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy")
#define URL_H2 TYPE_URL("envoy.extensions.upstreams.http.v3.HttpProtocolOptions")

typedef struct {
    mesh_registry *reg;
    xds_gen *gen;
} fx;

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    f->reg = t_bookinfo(1, NULL);
    OK(xds_gen_new(&f->gen));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    xds_gen_free(f->gen);
    mesh_registry_unref(f->reg);
    free(f);
    return 0;
}

static xds_snapshot *snap_for(fx *f, const char *id)
{
    xds_proxy p = t_sidecar(id);
    xds_snapshot *s = NULL;
    mid_result r = xds_gen_snapshot(f->gen, f->reg, &p, &s);
    if (!mid_is_ok(r)) fail_msg("xds_gen_snapshot: %s", mid_errmsg());
    xds_proxy_clear(&p);
    return s;
}

static cluster_t *cluster(const xds_snapshot *s, const char *name)
{
    const xds_resource *r = t_res(s, XDS_CDS, name);
    cluster_t *c = envoy__config__cluster__v3__cluster__unpack(NULL, r->len, r->bytes);
    assert_non_null(c);
    assert_string_equal(c->name, name);
    return c;
}

static void check_sds(const sds_t *sc, const char *name, const char *cluster_name)
{
    assert_non_null(sc);
    assert_string_equal(sc->name, name);
    const Envoy__Config__Core__V3__ConfigSource *cs = sc->sds_config;
    assert_non_null(cs);
    assert_int_equal(cs->config_source_specifier_case,
                     ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_API_CONFIG_SOURCE);
    assert_int_equal(cs->resource_api_version, ENVOY__CONFIG__CORE__V3__API_VERSION__V3);
    const Envoy__Config__Core__V3__ApiConfigSource *api = cs->api_config_source;
    assert_int_equal(api->api_type, ENVOY__CONFIG__CORE__V3__API_CONFIG_SOURCE__API_TYPE__GRPC);
    assert_int_equal(api->transport_api_version, ENVOY__CONFIG__CORE__V3__API_VERSION__V3);
    assert_true(api->set_node_on_first_message_only);
    assert_int_equal(api->n_grpc_services, 1);
    assert_int_equal(api->grpc_services[0]->target_specifier_case,
                     ENVOY__CONFIG__CORE__V3__GRPC_SERVICE__TARGET_SPECIFIER_ENVOY_GRPC);
    assert_string_equal(api->grpc_services[0]->envoy_grpc->cluster_name, cluster_name);
}

/* SDS "default" certificate + combined validation with SDS "ROOTCA". */
static const Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext *
check_sds_common(const common_t *c, const char *sds_cluster)
{
    assert_non_null(c);
    assert_int_equal(c->n_tls_certificate_sds_secret_configs, 1);
    check_sds(c->tls_certificate_sds_secret_configs[0], "default", sds_cluster);
    assert_null(c->tls_certificate_provider_instance);
    assert_int_equal(
        c->validation_context_type_case,
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_COMBINED_VALIDATION_CONTEXT);
    check_sds(c->combined_validation_context->validation_context_sds_secret_config, "ROOTCA",
              sds_cluster);
    assert_non_null(c->combined_validation_context->default_validation_context);
    return c->combined_validation_context->default_validation_context;
}

static up_t *upstream_tls(const cluster_t *c)
{
    assert_non_null(c->transport_socket);
    assert_string_equal(c->transport_socket->name, "envoy.transport_sockets.tls");
    const Google__Protobuf__Any *a = c->transport_socket->typed_config;
    assert_non_null(a);
    assert_string_equal(a->type_url, URL_UP);
    up_t *up = envoy__extensions__transport_sockets__tls__v3__upstream_tls_context__unpack(
        NULL, a->value.len, a->value.data);
    assert_non_null(up);
    return up;
}

static void check_eds_cluster(const cluster_t *c, const char *name)
{
    assert_int_equal(c->cluster_discovery_type_case,
                     ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE);
    assert_int_equal(c->type, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS);
    assert_non_null(c->eds_cluster_config);
    const Envoy__Config__Core__V3__ConfigSource *eds = c->eds_cluster_config->eds_config;
    assert_non_null(eds);
    assert_int_equal(eds->config_source_specifier_case,
                     ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS);
    assert_non_null(eds->ads);
    assert_int_equal(eds->resource_api_version, ENVOY__CONFIG__CORE__V3__API_VERSION__V3);
    assert_string_equal(c->eds_cluster_config->service_name, name);
    assert_non_null(c->connect_timeout);
    assert_int_equal(c->connect_timeout->seconds, 5);
    assert_int_equal(c->lb_policy, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__ROUND_ROBIN);
    assert_null(c->load_assignment);
}

static void check_h2(const cluster_t *c, int want)
{
    if (!want) {
        assert_int_equal(c->n_typed_extension_protocol_options, 0);
        return;
    }
    assert_int_equal(c->n_typed_extension_protocol_options, 1);
    const Envoy__Config__Cluster__V3__Cluster__TypedExtensionProtocolOptionsEntry *e =
        c->typed_extension_protocol_options[0];
    assert_string_equal(e->key, "envoy.extensions.upstreams.http.v3.HttpProtocolOptions");
    assert_string_equal(e->value->type_url, URL_H2);
    Envoy__Extensions__Upstreams__Http__V3__HttpProtocolOptions *po =
        envoy__extensions__upstreams__http__v3__http_protocol_options__unpack(
            NULL, e->value->value.len, e->value->value.data);
    assert_non_null(po);
    assert_int_equal(
        po->upstream_protocol_options_case,
        ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__UPSTREAM_PROTOCOL_OPTIONS_EXPLICIT_HTTP_CONFIG);
    assert_non_null(po->explicit_http_config->http2_protocol_options);
    protobuf_c_message_free_unpacked(&po->base, NULL);
}

static void test_outbound_clusters(void **state)
{
    fx *f = *state;
    xds_snapshot *s = snap_for(f, ID_RATINGS);

    cluster_t *c = cluster(s, "outbound|9080||" H_REVIEWS);
    check_eds_cluster(c, "outbound|9080||" H_REVIEWS);
    check_h2(c, 0);
    up_t *up = upstream_tls(c);
    assert_string_equal(up->sni, H_REVIEWS);
    const Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext *dv =
        check_sds_common(up->common_tls_context, "sds-grpc");
    /* the distinct endpoint identities, in endpoint order */
    assert_int_equal(dv->n_match_typed_subject_alt_names, 2);
    const char *want[] = {ID_REVIEWS, ID_REVIEWS_V2};
    for (size_t i = 0; i < 2; i++) {
        const Envoy__Extensions__TransportSockets__Tls__V3__SubjectAltNameMatcher *m =
            dv->match_typed_subject_alt_names[i];
        assert_int_equal(m->san_type,
                         ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__URI);
        assert_int_equal(m->matcher->match_pattern_case,
                         ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT);
        assert_string_equal(m->matcher->exact, want[i]);
    }
    assert_int_equal(dv->n_match_subject_alt_names, 0);
    protobuf_c_message_free_unpacked(&up->base, NULL);
    protobuf_c_message_free_unpacked(&c->base, NULL);

    /* a GRPC port: h2 upstream */
    c = cluster(s, "outbound|9090||" H_REVIEWS);
    check_eds_cluster(c, "outbound|9090||" H_REVIEWS);
    check_h2(c, 1);
    protobuf_c_message_free_unpacked(&c->base, NULL);
    c = cluster(s, "outbound|8000||" H_NOEPS); /* HTTP2 */
    check_h2(c, 1);
    /* no endpoint: Istio's default service account of the namespace */
    up = upstream_tls(c);
    dv = check_sds_common(up->common_tls_context, "sds-grpc");
    assert_int_equal(dv->n_match_typed_subject_alt_names, 1);
    assert_string_equal(dv->match_typed_subject_alt_names[0]->matcher->exact,
                        "spiffe://" TD "/ns/bookinfo/sa/default");
    protobuf_c_message_free_unpacked(&up->base, NULL);
    protobuf_c_message_free_unpacked(&c->base, NULL);

    /* MESH_EXTERNAL: no TLS from the mesh */
    c = cluster(s, "outbound|443||" H_EXT);
    check_eds_cluster(c, "outbound|443||" H_EXT);
    assert_null(c->transport_socket);
    protobuf_c_message_free_unpacked(&c->base, NULL);

    /* 3 + 1 + 1 + 1 outbound, 1 inbound */
    assert_int_equal(xds_snapshot_count(s, XDS_CDS), 7);
    assert_null(xds_snapshot_find(s, XDS_CDS, "outbound|9080||" H_EXT));
    xds_snapshot_unref(s);
}

static void test_sds_cluster_from_metadata(void **state)
{
    fx *f = *state;
    xds_proxy p = t_sidecar(ID_RATINGS);
    free(p.sds_cluster);
    p.sds_cluster = strdup("my-sds");
    xds_snapshot *s = NULL;
    OK(xds_gen_snapshot(f->gen, f->reg, &p, &s));
    cluster_t *c = cluster(s, "outbound|9080||" H_REVIEWS);
    up_t *up = upstream_tls(c);
    (void)check_sds_common(up->common_tls_context, "my-sds");
    protobuf_c_message_free_unpacked(&up->base, NULL);
    protobuf_c_message_free_unpacked(&c->base, NULL);
    xds_snapshot_unref(s);
    xds_proxy_clear(&p);
}

static cla_t *cla(const xds_snapshot *s, const char *name)
{
    const xds_resource *r = t_res(s, XDS_EDS, name);
    cla_t *c = envoy__config__endpoint__v3__cluster_load_assignment__unpack(NULL, r->len, r->bytes);
    assert_non_null(c);
    assert_string_equal(c->cluster_name, name);
    return c;
}

static void check_lb(const Envoy__Config__Endpoint__V3__LbEndpoint *lb, const char *ip,
                     uint32_t port, Envoy__Config__Core__V3__HealthStatus h)
{
    assert_int_equal(lb->host_identifier_case,
                     ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT);
    const Envoy__Config__Core__V3__SocketAddress *sa = lb->endpoint->address->socket_address;
    assert_non_null(sa);
    assert_string_equal(sa->address, ip);
    assert_int_equal(sa->port_specifier_case,
                     ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE);
    assert_int_equal(sa->port_value, port);
    assert_int_equal(lb->health_status, h);
}

static void test_endpoints(void **state)
{
    fx *f = *state;
    xds_snapshot *s = snap_for(f, ID_RATINGS);
    cla_t *c = cla(s, "outbound|9090||" H_REVIEWS);
    assert_int_equal(c->n_endpoints, 1);
    const Envoy__Config__Endpoint__V3__LocalityLbEndpoints *l = c->endpoints[0];
    assert_non_null(l->locality);
    assert_non_null(l->load_balancing_weight);
    assert_int_equal(l->load_balancing_weight->value, 1);
    assert_int_equal(l->priority, 0);
    assert_int_equal(l->n_lb_endpoints, 3);
    check_lb(l->lb_endpoints[0], "10.0.0.1", 9090, ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__HEALTHY);
    /* the port override applies to the named port only */
    check_lb(l->lb_endpoints[1], "10.0.0.2", 9999, ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__UNHEALTHY);
    check_lb(l->lb_endpoints[2], "10.0.0.3", 9090, ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__DRAINING);
    protobuf_c_message_free_unpacked(&c->base, NULL);
    c = cla(s, "outbound|9080||" H_REVIEWS);
    check_lb(c->endpoints[0]->lb_endpoints[1], "10.0.0.2", 9080,
             ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__UNHEALTHY);
    protobuf_c_message_free_unpacked(&c->base, NULL);
    /* no endpoints: an empty assignment */
    c = cla(s, "outbound|8000||" H_NOEPS);
    assert_int_equal(c->n_endpoints, 0);
    protobuf_c_message_free_unpacked(&c->base, NULL);
    /* one assignment per outbound cluster, none for inbound ones */
    assert_int_equal(xds_snapshot_count(s, XDS_EDS), 6);
    assert_null(xds_snapshot_find(s, XDS_EDS, "inbound|9080||"));
    xds_snapshot_unref(s);
}

static listener_t *listener(const xds_snapshot *s, const char *name)
{
    const xds_resource *r = t_res(s, XDS_LDS, name);
    listener_t *l = envoy__config__listener__v3__listener__unpack(NULL, r->len, r->bytes);
    assert_non_null(l);
    assert_string_equal(l->name, name);
    return l;
}

static void check_bind(const listener_t *l, const char *ip, uint32_t port)
{
    assert_non_null(l->address);
    assert_string_equal(l->address->socket_address->address, ip);
    assert_int_equal(l->address->socket_address->port_value, port);
    assert_null(l->api_listener);
}

static hcm_t *hcm_of(const Envoy__Config__Listener__V3__Filter *f)
{
    assert_string_equal(f->name, "envoy.filters.network.http_connection_manager");
    assert_int_equal(f->config_type_case, ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG);
    assert_string_equal(f->typed_config->type_url, URL_HCM);
    hcm_t *h = envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__unpack(
        NULL, f->typed_config->value.len, f->typed_config->value.data);
    assert_non_null(h);
    assert_true(h->stat_prefix[0] != '\0');
    return h;
}

static void check_router_last(const hcm_t *h)
{
    assert_true(h->n_http_filters >= 1);
    for (size_t i = 0; i < h->n_http_filters; i++) {
        const Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpFilter *hf =
            h->http_filters[i];
        assert_non_null(hf->typed_config);
        int router = strcmp(hf->name, "envoy.filters.http.router") == 0;
        assert_int_equal(router, i + 1 == h->n_http_filters);
        if (router) assert_string_equal(hf->typed_config->type_url, URL_ROUTER);
    }
}

static void test_inbound_listener_http(void **state)
{
    fx *f = *state;
    xds_snapshot *s = snap_for(f, ID_RATINGS);
    listener_t *l = listener(s, "inbound|9080");
    check_bind(l, "0.0.0.0", 9080);
    assert_int_equal(l->traffic_direction, ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__INBOUND);
    assert_int_equal(l->n_filter_chains, 1);
    const Envoy__Config__Listener__V3__FilterChain *fc = l->filter_chains[0];

    /* mTLS: client certificate required, SDS default + ROOTCA */
    assert_non_null(fc->transport_socket);
    assert_string_equal(fc->transport_socket->name, "envoy.transport_sockets.tls");
    assert_string_equal(fc->transport_socket->typed_config->type_url, URL_DOWN);
    down_t *d = envoy__extensions__transport_sockets__tls__v3__downstream_tls_context__unpack(
        NULL, fc->transport_socket->typed_config->value.len,
        fc->transport_socket->typed_config->value.data);
    assert_non_null(d);
    assert_non_null(d->require_client_certificate);
    assert_true(d->require_client_certificate->value);
    (void)check_sds_common(d->common_tls_context, "sds-grpc");
    protobuf_c_message_free_unpacked(&d->base, NULL);

    /* HCM: inline route "/" -> inbound cluster, RBAC first, router last */
    assert_int_equal(fc->n_filters, 1);
    hcm_t *h = hcm_of(fc->filters[0]);
    assert_int_equal(h->route_specifier_case,
                     ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_ROUTE_CONFIG);
    const Envoy__Config__Route__V3__VirtualHost *vh = h->route_config->virtual_hosts[0];
    assert_string_equal(vh->domains[0], "*");
    assert_string_equal(vh->routes[0]->match->prefix, "/");
    assert_string_equal(vh->routes[0]->route->cluster, "inbound|9080||");
    check_router_last(h);
    /* the ratings-viewer ALLOW policy selects this workload */
    assert_int_equal(h->n_http_filters, 2);
    assert_string_equal(h->http_filters[0]->name, MESH_RBAC_HTTP_FILTER);
    assert_string_equal(h->http_filters[0]->typed_config->type_url, MESH_RBAC_HTTP_TYPE_URL);
    Envoy__Extensions__Filters__Http__Rbac__V3__RBAC *rb =
        envoy__extensions__filters__http__rbac__v3__rbac__unpack(
            NULL, h->http_filters[0]->typed_config->value.len,
            h->http_filters[0]->typed_config->value.data);
    assert_non_null(rb);
    assert_non_null(rb->rules);
    protobuf_c_message_free_unpacked(&rb->base, NULL);
    protobuf_c_message_free_unpacked(&h->base, NULL);
    protobuf_c_message_free_unpacked(&l->base, NULL);

    /* the local app cluster */
    cluster_t *c = cluster(s, "inbound|9080||");
    assert_int_equal(c->cluster_discovery_type_case,
                     ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE);
    assert_int_equal(c->type, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STATIC);
    assert_null(c->transport_socket);
    assert_non_null(c->load_assignment);
    assert_string_equal(c->load_assignment->cluster_name, "inbound|9080||");
    check_lb(c->load_assignment->endpoints[0]->lb_endpoints[0], "127.0.0.1", 9080,
             ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__UNKNOWN);
    protobuf_c_message_free_unpacked(&c->base, NULL);
    xds_snapshot_unref(s);
}

static void test_inbound_ports_of_reviews(void **state)
{
    fx *f = *state;
    xds_snapshot *s = snap_for(f, ID_REVIEWS);
    /* 9080, 9090, 3306 and the 9999 override of the second endpoint */
    const char *in[] = {"inbound|3306", "inbound|9080", "inbound|9090", "inbound|9999"};
    for (size_t i = 0; i < 4; i++) {
        listener_t *l = listener(s, in[i]);
        assert_int_equal(l->traffic_direction, ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__INBOUND);
        protobuf_c_message_free_unpacked(&l->base, NULL);
    }
    /* TCP inbound: tcp_proxy to the local cluster, no HTTP filters; no
     * policy selects reviews, so no RBAC filter either */
    listener_t *l = listener(s, "inbound|3306");
    const Envoy__Config__Listener__V3__FilterChain *fc = l->filter_chains[0];
    assert_non_null(fc->transport_socket);
    const Envoy__Config__Listener__V3__Filter *last = fc->filters[fc->n_filters - 1];
    assert_string_equal(last->name, "envoy.filters.network.tcp_proxy");
    assert_string_equal(last->typed_config->type_url, URL_TCP);
    tcp_t *tp = envoy__extensions__filters__network__tcp_proxy__v3__tcp_proxy__unpack(
        NULL, last->typed_config->value.len, last->typed_config->value.data);
    assert_string_equal(tp->cluster, "inbound|3306||");
    assert_string_equal(tp->stat_prefix, "inbound_3306");
    protobuf_c_message_free_unpacked(&tp->base, NULL);
    protobuf_c_message_free_unpacked(&l->base, NULL);
    /* no ALLOW policy selects reviews: its HCM has the router only */
    l = listener(s, "inbound|9090");
    hcm_t *h = hcm_of(l->filter_chains[0]->filters[0]);
    assert_int_equal(h->n_http_filters, 1);
    check_router_last(h);
    protobuf_c_message_free_unpacked(&h->base, NULL);
    protobuf_c_message_free_unpacked(&l->base, NULL);
    /* gRPC to the local app: target port, h2 */
    cluster_t *c = cluster(s, "inbound|9090||");
    check_lb(c->load_assignment->endpoints[0]->lb_endpoints[0], "127.0.0.1", 19090,
             ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__UNKNOWN);
    check_h2(c, 1);
    protobuf_c_message_free_unpacked(&c->base, NULL);
    /* outbound listeners on inbound ports are left out: only 443 remains */
    assert_null(xds_snapshot_find(s, XDS_LDS, "127.0.0.1_9080"));
    assert_null(xds_snapshot_find(s, XDS_LDS, "127.0.0.1_9090"));
    assert_null(xds_snapshot_find(s, XDS_LDS, "127.0.0.1_3306"));
    (void)t_res(s, XDS_LDS, "127.0.0.1_443");
    (void)t_res(s, XDS_LDS, "127.0.0.1_8000");
    assert_int_equal(xds_snapshot_count(s, XDS_LDS), 6);
    xds_snapshot_unref(s);
}

static void test_outbound_listeners_and_routes(void **state)
{
    fx *f = *state;
    xds_snapshot *s = snap_for(f, ID_RATINGS);
    /* ratings listens on 9080: no outbound listener there */
    assert_null(xds_snapshot_find(s, XDS_LDS, "127.0.0.1_9080"));
    listener_t *l = listener(s, "127.0.0.1_9090");
    check_bind(l, "127.0.0.1", 9090);
    assert_int_equal(l->traffic_direction, ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__OUTBOUND);
    assert_null(l->filter_chains[0]->transport_socket);
    hcm_t *h = hcm_of(l->filter_chains[0]->filters[0]);
    assert_int_equal(h->route_specifier_case,
                     ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_RDS);
    assert_int_equal(h->rds->config_source->config_source_specifier_case,
                     ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS);
    assert_string_equal(h->rds->route_config_name, "9090");
    check_router_last(h);
    protobuf_c_message_free_unpacked(&h->base, NULL);
    protobuf_c_message_free_unpacked(&l->base, NULL);

    /* TCP ports: tcp_proxy to the (first) service's cluster */
    l = listener(s, "127.0.0.1_3306");
    check_bind(l, "127.0.0.1", 3306);
    const Envoy__Config__Listener__V3__Filter *fl = l->filter_chains[0]->filters[0];
    assert_string_equal(fl->name, "envoy.filters.network.tcp_proxy");
    tcp_t *tp = envoy__extensions__filters__network__tcp_proxy__v3__tcp_proxy__unpack(
        NULL, fl->typed_config->value.len, fl->typed_config->value.data);
    assert_string_equal(tp->cluster, "outbound|3306||" H_REVIEWS);
    protobuf_c_message_free_unpacked(&tp->base, NULL);
    protobuf_c_message_free_unpacked(&l->base, NULL);
    l = listener(s, "127.0.0.1_443");
    assert_string_equal(l->filter_chains[0]->filters[0]->name, "envoy.filters.network.tcp_proxy");
    protobuf_c_message_free_unpacked(&l->base, NULL);
    /* inbound|9080 + outbound 443, 3306, 8000, 9090 */
    assert_int_equal(xds_snapshot_count(s, XDS_LDS), 5);

    /* routes: one config per HTTP port, one virtual host per host */
    const xds_resource *r = t_res(s, XDS_RDS, "9080");
    rc_t *rc = envoy__config__route__v3__route_configuration__unpack(NULL, r->len, r->bytes);
    assert_non_null(rc);
    assert_string_equal(rc->name, "9080");
    assert_int_equal(rc->n_virtual_hosts, 2);
    const char *hosts[] = {H_RATINGS, H_REVIEWS};
    for (size_t i = 0; i < 2; i++) {
        const Envoy__Config__Route__V3__VirtualHost *vh = NULL;
        char hp[300], cl[300];
        snprintf(hp, sizeof hp, "%s:9080", hosts[i]);
        snprintf(cl, sizeof cl, "outbound|9080||%s", hosts[i]);
        for (size_t j = 0; j < rc->n_virtual_hosts; j++)
            if (strcmp(rc->virtual_hosts[j]->name, hp) == 0) vh = rc->virtual_hosts[j];
        assert_non_null(vh);
        assert_int_equal(vh->n_domains, 2);
        assert_string_equal(vh->domains[0], hosts[i]);
        assert_string_equal(vh->domains[1], hp);
        assert_int_equal(vh->n_routes, 1);
        assert_int_equal(vh->routes[0]->match->path_specifier_case,
                         ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PREFIX);
        assert_string_equal(vh->routes[0]->match->prefix, "/");
        assert_int_equal(vh->routes[0]->action_case, ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_ROUTE);
        assert_string_equal(vh->routes[0]->route->cluster, cl);
        assert_non_null(vh->routes[0]->route->timeout); /* 0 = no timeout */
        assert_int_equal(vh->routes[0]->route->timeout->seconds, 0);
    }
    protobuf_c_message_free_unpacked(&rc->base, NULL);
    (void)t_res(s, XDS_RDS, "9090");
    (void)t_res(s, XDS_RDS, "8000");
    assert_null(xds_snapshot_find(s, XDS_RDS, "3306"));
    assert_null(xds_snapshot_find(s, XDS_RDS, "443"));
    xds_snapshot_unref(s);
}

static void test_unregistered_identity(void **state)
{
    fx *f = *state;
    xds_proxy p = t_sidecar("spiffe://" TD "/ns/bookinfo/sa/nobody");
    xds_snapshot *s = (xds_snapshot *)&p; /* must be reset */
    FAILS(xds_gen_snapshot(f->gen, f->reg, &p, &s), MID_E_NOT_FOUND);
    assert_null(s);
    assert_non_null(strstr(mid_errmsg(), "no endpoint in the registry runs as"));
    assert_non_null(strstr(mid_errmsg(), "sa/nobody"));
    xds_proxy_clear(&p);
    /* the external endpoint has no identity at all */
    p = t_sidecar(ID_REVIEWS);
    free(p.spiffe_id);
    p.spiffe_id = NULL;
    FAILS(xds_gen_snapshot(f->gen, f->reg, &p, &s), MID_E_INVALID);
    FAILS(xds_gen_snapshot(f->gen, f->reg, NULL, &s), MID_E_INVALID);
    xds_proxy_clear(&p);
}

static void test_oversized_route_config(void **state)
{
    (void)state;
    /* 200 services x 64 long hosts on one HTTP port: route config "80"
     * would be several MB, over XDS_RESOURCE_MAX */
    enum { NS = 200 };
    static const t_port ports[] = {{"http", 80, MESH_PROTO_HTTP, 0}};
    mesh_service *svcs[NS];
    char pad[120];
    memset(pad, 'x', sizeof pad - 1);
    pad[60] = '.'; /* DNS labels are at most 63 bytes */
    pad[sizeof pad - 1] = '\0';
    for (size_t i = 0; i < NS; i++) {
        char host[250], name[32];
        snprintf(name, sizeof name, "s%zu", i);
        snprintf(host, sizeof host, "h0.s%zu.%s.example", i, pad);
        t_endpoint ep = {"10.1.0.1", "s", NULL, MESH_HEALTH_HEALTHY, NULL, 0, NULL, NULL};
        svcs[i] = t_service("big", name, host, 1, ports, 1, &ep, 1);
        for (size_t h = 1; h < MESH_HOSTS_MAX; h++) {
            snprintf(host, sizeof host, "h%zu.s%zu.%s.example", h, i, pad);
            t_add_host(svcs[i], host);
        }
    }
    mesh_registry *reg = t_registry(1, svcs, NS, NULL, 0);
    xds_gen *g = NULL;
    OK(xds_gen_new(&g));
    xds_proxy p = t_sidecar("spiffe://" TD "/ns/big/sa/s");
    xds_snapshot *s = NULL;
    FAILS(xds_gen_snapshot(g, reg, &p, &s), MID_E_TOO_LARGE);
    assert_non_null(strstr(mid_errmsg(), "RouteConfiguration"));
    assert_null(s);
    /* again: the half-built shared parts were not kept (nor leaked) */
    FAILS(xds_gen_snapshot(g, reg, &p, &s), MID_E_TOO_LARGE);
    /* proxyless clients get one route config per host: fine */
    xds_proxy q = t_proxyless("spiffe://" TD "/ns/big/sa/s", NULL);
    OK(xds_gen_snapshot(g, reg, &q, &s));
    assert_int_equal(xds_snapshot_count(s, XDS_RDS), NS * MESH_HOSTS_MAX);
    xds_snapshot_unref(s);
    xds_proxy_clear(&q);
    xds_proxy_clear(&p);
    xds_gen_free(g);
    mesh_registry_unref(reg);
}

int run_xds_sidecar_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_outbound_clusters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sds_cluster_from_metadata, setup, teardown),
        cmocka_unit_test_setup_teardown(test_endpoints, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inbound_listener_http, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inbound_ports_of_reviews, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outbound_listeners_and_routes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unregistered_identity, setup, teardown),
        cmocka_unit_test(test_oversized_route_config),
    };
    return cmocka_run_group_tests_name("xds_sidecar", tests, NULL, NULL);
}
