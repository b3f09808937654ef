/* Proxyless gRPC snapshots against each rule of wire-contracts section 8
 * (what @grpc/grpc-js-xds validates): api_listener with an HCM whose RDS
 * uses ADS and whose last filter is the router, routes with prefix "/",
 * EDS clusters with ROUND_ROBIN and no TLS unless a certificate provider is
 * named, localities present and weighted, unique IP literal addresses. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/tls.pb-c.h"
#include "tests/unit/xds/xds_tests.h"

typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager hcm_t;

#define URL_HCM                                   \
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3." \
    "HttpConnectionManager"
#define URL_ROUTER "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
#define URL_UP "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"

static xds_snapshot *proxyless_snap(const mesh_registry *reg, xds_gen *g, const char *cp)
{
    xds_proxy p = t_proxyless(ID_REVIEWS, cp);
    xds_snapshot *s = NULL;
    mid_result r = xds_gen_snapshot(g, reg, &p, &s);
    if (!mid_is_ok(r)) fail_msg("xds_gen_snapshot: %s", mid_errmsg());
    xds_proxy_clear(&p);
    return s;
}

/* Every listener: api_listener = Any(HCM), HCM rds via ADS naming an
 * existing route config, >= 1 filter, unique names, typed_config set,
 * router last and only last. */
static void check_listeners(const xds_snapshot *s)
{
    for (size_t i = 0; i < xds_snapshot_count(s, XDS_LDS); i++) {
        const xds_resource *r = xds_snapshot_at(s, XDS_LDS, i);
        Envoy__Config__Listener__V3__Listener *l =
            envoy__config__listener__v3__listener__unpack(NULL, r->len, r->bytes);
        assert_non_null(l);
        assert_string_equal(l->name, r->name);
        assert_non_null(l->api_listener);
        assert_non_null(l->api_listener->api_listener);
        assert_string_equal(l->api_listener->api_listener->type_url, URL_HCM);
        assert_null(l->address);
        assert_int_equal(l->n_filter_chains, 0);
        const Google__Protobuf__Any *a = l->api_listener->api_listener;
        hcm_t *h = envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__unpack(
            NULL, a->value.len, a->value.data);
        assert_non_null(h);
        assert_int_equal(h->route_specifier_case,
                         ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_RDS);
        assert_non_null(h->rds->config_source);
        assert_int_equal(h->rds->config_source->config_source_specifier_case,
                         ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS);
        assert_non_null(h->rds->config_source->ads);
        assert_non_null(xds_snapshot_find(s, XDS_RDS, h->rds->route_config_name));
        assert_true(h->n_http_filters >= 1);
        for (size_t j = 0; j < h->n_http_filters; j++) {
            assert_non_null(h->http_filters[j]->typed_config);
            for (size_t k = 0; k < j; k++)
                assert_string_not_equal(h->http_filters[j]->name, h->http_filters[k]->name);
            int router = strcmp(h->http_filters[j]->typed_config->type_url, URL_ROUTER) == 0;
            assert_int_equal(router, j + 1 == h->n_http_filters);
        }
        protobuf_c_message_free_unpacked(&h->base, NULL);
        protobuf_c_message_free_unpacked(&l->base, NULL);
    }
}

/* Every route config: virtual host for its name's host, prefix "/" present
 * on the wire, action route -> an existing cluster. */
static void check_routes(const xds_snapshot *s)
{
    for (size_t i = 0; i < xds_snapshot_count(s, XDS_RDS); i++) {
        const xds_resource *r = xds_snapshot_at(s, XDS_RDS, i);
        Envoy__Config__Route__V3__RouteConfiguration *rc =
            envoy__config__route__v3__route_configuration__unpack(NULL, r->len, r->bytes);
        assert_non_null(rc);
        assert_string_equal(rc->name, r->name);
        assert_int_equal(rc->n_virtual_hosts, 1);
        const Envoy__Config__Route__V3__VirtualHost *vh = rc->virtual_hosts[0];
        assert_int_equal(vh->n_domains, 2);
        assert_string_equal(vh->domains[1], r->name); /* HOST:PORT */
        assert_int_equal(strncmp(r->name, vh->domains[0], strlen(vh->domains[0])), 0);
        for (size_t d = 0; d < vh->n_domains; d++) assert_null(strchr(vh->domains[d], '*'));
        assert_int_equal(vh->n_routes, 1);
        const Envoy__Config__Route__V3__RouteMatch *m = vh->routes[0]->match;
        assert_int_equal(m->path_specifier_case,
                         ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PREFIX);
        assert_string_equal(m->prefix, "/");
        assert_int_equal(vh->routes[0]->action_case, ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_ROUTE);
        const char *cl = vh->routes[0]->route->cluster;
        assert_non_null(xds_snapshot_find(s, XDS_CDS, cl));
        assert_non_null(xds_snapshot_find(s, XDS_EDS, cl));
        protobuf_c_message_free_unpacked(&rc->base, NULL);
    }
}

/* Every cluster: EDS via ADS, ROUND_ROBIN, no h2 option (gRPC speaks h2
 * anyway), TLS only with a certificate provider. */
static void check_clusters(const xds_snapshot *s, const char *cp)
{
    for (size_t i = 0; i < xds_snapshot_count(s, XDS_CDS); i++) {
        const xds_resource *r = xds_snapshot_at(s, XDS_CDS, i);
        Envoy__Config__Cluster__V3__Cluster *c =
            envoy__config__cluster__v3__cluster__unpack(NULL, r->len, r->bytes);
        assert_non_null(c);
        assert_int_equal(c->type, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS);
        assert_int_equal(c->eds_cluster_config->eds_config->config_source_specifier_case,
                         ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS);
        assert_string_equal(c->eds_cluster_config->service_name, r->name);
        assert_int_equal(c->lb_policy, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__ROUND_ROBIN);
        assert_int_equal(c->n_typed_extension_protocol_options, 0);
        int external = strstr(r->name, H_EXT) != NULL;
        if (!cp || external) {
            assert_null(c->transport_socket);
        } else {
            assert_non_null(c->transport_socket);
            const Google__Protobuf__Any *a = c->transport_socket->typed_config;
            assert_string_equal(a->type_url, URL_UP);
            Envoy__Extensions__TransportSockets__Tls__V3__UpstreamTlsContext *up =
                envoy__extensions__transport_sockets__tls__v3__upstream_tls_context__unpack(
                    NULL, a->value.len, a->value.data);
            const Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext *ct =
                up->common_tls_context;
            /* A29: provider instances, no SDS, a plain validation_context */
            assert_string_equal(ct->tls_certificate_provider_instance->instance_name, cp);
            assert_int_equal(ct->n_tls_certificate_sds_secret_configs, 0);
            assert_int_equal(
                ct->validation_context_type_case,
                ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_VALIDATION_CONTEXT);
            const Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext *vc =
                ct->validation_context;
            assert_string_equal(vc->ca_certificate_provider_instance->instance_name, cp);
            assert_true(vc->n_match_subject_alt_names >= 1);
            for (size_t k = 0; k < vc->n_match_subject_alt_names; k++) {
                assert_int_equal(vc->match_subject_alt_names[k]->match_pattern_case,
                                 ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT);
                assert_int_equal(strncmp(vc->match_subject_alt_names[k]->exact,
                                         "spiffe://" TD "/", sizeof("spiffe://" TD "/") - 1), 0);
            }
            assert_int_equal(vc->n_match_typed_subject_alt_names, 0);
            assert_null(vc->custom_validator_config);
            assert_null(vc->crl);
            if (strstr(r->name, H_REVIEWS)) {
                assert_int_equal(vc->n_match_subject_alt_names, 2);
                assert_string_equal(vc->match_subject_alt_names[0]->exact, ID_REVIEWS);
                assert_string_equal(vc->match_subject_alt_names[1]->exact, ID_REVIEWS_V2);
            }
            protobuf_c_message_free_unpacked(&up->base, NULL);
        }
        protobuf_c_message_free_unpacked(&c->base, NULL);
    }
}

/* Every assignment: localities present with weight > 0, priority 0, IP
 * literal addresses with ports, unique. */
static void check_endpoints(const xds_snapshot *s)
{
    for (size_t i = 0; i < xds_snapshot_count(s, XDS_EDS); i++) {
        const xds_resource *r = xds_snapshot_at(s, XDS_EDS, i);
        Envoy__Config__Endpoint__V3__ClusterLoadAssignment *c =
            envoy__config__endpoint__v3__cluster_load_assignment__unpack(NULL, r->len, r->bytes);
        assert_non_null(c);
        assert_string_equal(c->cluster_name, r->name);
        for (size_t l = 0; l < c->n_endpoints; l++) {
            const Envoy__Config__Endpoint__V3__LocalityLbEndpoints *le = c->endpoints[l];
            assert_non_null(le->locality);
            assert_non_null(le->load_balancing_weight);
            assert_true(le->load_balancing_weight->value > 0);
            assert_int_equal(le->priority, 0);
            for (size_t e = 0; e < le->n_lb_endpoints; e++) {
                const Envoy__Config__Core__V3__SocketAddress *sa =
                    le->lb_endpoints[e]->endpoint->address->socket_address;
                unsigned char buf[16];
                assert_true(inet_pton(AF_INET, sa->address, buf) == 1 ||
                            inet_pton(AF_INET6, sa->address, buf) == 1);
                assert_true(sa->port_value > 0);
                for (size_t k = 0; k < e; k++) {
                    const Envoy__Config__Core__V3__SocketAddress *o =
                        le->lb_endpoints[k]->endpoint->address->socket_address;
                    assert_false(strcmp(o->address, sa->address) == 0 &&
                                 o->port_value == sa->port_value);
                }
            }
        }
        protobuf_c_message_free_unpacked(&c->base, NULL);
    }
}

static void test_proxyless_plaintext(void **state)
{
    (void)state;
    mesh_registry *reg = t_bookinfo(1, NULL);
    xds_gen *g = NULL;
    OK(xds_gen_new(&g));
    xds_snapshot *s = proxyless_snap(reg, g, NULL);
    check_listeners(s);
    check_routes(s);
    check_clusters(s, NULL);
    check_endpoints(s);
    /* listeners: HOST:PORT for HTTP-ish ports; bare HOST only for a service
     * with one HTTP port; none for TCP ports */
    (void)t_res(s, XDS_LDS, H_REVIEWS ":9080");
    (void)t_res(s, XDS_LDS, H_REVIEWS ":9090");
    assert_null(xds_snapshot_find(s, XDS_LDS, H_REVIEWS ":3306"));
    assert_null(xds_snapshot_find(s, XDS_LDS, H_REVIEWS));
    (void)t_res(s, XDS_LDS, H_RATINGS ":9080");
    (void)t_res(s, XDS_LDS, H_RATINGS);
    (void)t_res(s, XDS_LDS, H_NOEPS ":8000");
    assert_null(xds_snapshot_find(s, XDS_LDS, H_EXT ":443"));
    assert_int_equal(xds_snapshot_count(s, XDS_LDS), 6);
    assert_int_equal(xds_snapshot_count(s, XDS_RDS), 4);
    /* no sidecar resources */
    assert_null(xds_snapshot_find(s, XDS_LDS, "inbound|9080"));
    assert_null(xds_snapshot_find(s, XDS_CDS, "inbound|9080||"));
    assert_int_equal(xds_snapshot_count(s, XDS_CDS), 6);
    xds_snapshot_unref(s);
    xds_gen_free(g);
    mesh_registry_unref(reg);
}

static void test_proxyless_cert_provider(void **state)
{
    (void)state;
    mesh_registry *reg = t_bookinfo(1, NULL);
    xds_gen *g = NULL;
    OK(xds_gen_new(&g));
    xds_snapshot *s = proxyless_snap(reg, g, "default");
    check_listeners(s);
    check_routes(s);
    check_clusters(s, "default");
    check_endpoints(s);
    xds_snapshot_unref(s);
    xds_gen_free(g);
    mesh_registry_unref(reg);
}

static void test_duplicate_addresses_collapse(void **state)
{
    (void)state;
    static const t_port ports[] = {{"grpc", 50051, MESH_PROTO_GRPC, 0}};
    static const t_endpoint eps[] = {
        {"127.0.0.1", "echo", NULL, MESH_HEALTH_HEALTHY, NULL, 0, NULL, NULL},
        {"127.0.0.1", "echo", NULL, MESH_HEALTH_HEALTHY, NULL, 0, NULL, NULL},
        {"127.0.0.1", "echo", NULL, MESH_HEALTH_HEALTHY, "grpc", 50052, NULL, NULL},
        {"::1", "echo", NULL, MESH_HEALTH_HEALTHY, NULL, 0, NULL, NULL},
    };
    mesh_service *svc = t_service("default", "echo", "echo.default.svc", 1, ports, 1, eps, 4);
    mesh_registry *reg = t_registry(1, &svc, 1, NULL, 0);
    xds_gen *g = NULL;
    OK(xds_gen_new(&g));
    xds_snapshot *s = proxyless_snap(reg, g, NULL);
    check_endpoints(s);
    const xds_resource *r = t_res(s, XDS_EDS, "outbound|50051||echo.default.svc");
    Envoy__Config__Endpoint__V3__ClusterLoadAssignment *c =
        envoy__config__endpoint__v3__cluster_load_assignment__unpack(NULL, r->len, r->bytes);
    assert_int_equal(c->endpoints[0]->n_lb_endpoints, 3);
    protobuf_c_message_free_unpacked(&c->base, NULL);
    /* single gRPC port: xds:///echo.default.svc works too */
    (void)t_res(s, XDS_LDS, "echo.default.svc");
    xds_snapshot_unref(s);
    xds_gen_free(g);
    mesh_registry_unref(reg);
}

static void test_route_prefix_on_the_wire(void **state)
{
    (void)state;
    /* the raw bytes must contain RouteMatch field 1 = "/" (0x0a 0x01 '/'),
     * which an empty-string oneof would lose (wire-contracts 0.1 #1) */
    mesh_registry *reg = t_bookinfo(1, NULL);
    xds_gen *g = NULL;
    OK(xds_gen_new(&g));
    xds_snapshot *s = proxyless_snap(reg, g, NULL);
    const xds_resource *r = t_res(s, XDS_RDS, H_RATINGS ":9080");
    static const uint8_t want[] = {0x0a, 0x03, 0x0a, 0x01, '/'}; /* match{prefix "/"} */
    int found = 0;
    for (size_t i = 0; i + sizeof want <= r->len; i++)
        if (memcmp(r->bytes + i, want, sizeof want) == 0) found = 1;
    assert_true(found);
    xds_snapshot_unref(s);
    xds_gen_free(g);
    mesh_registry_unref(reg);
}

int run_xds_proxyless_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_proxyless_plaintext),
        cmocka_unit_test(test_proxyless_cert_provider),
        cmocka_unit_test(test_duplicate_addresses_collapse),
        cmocka_unit_test(test_route_prefix_on_the_wire),
    };
    return cmocka_run_group_tests_name("xds_proxyless", tests, NULL, NULL);
}
