/* Unit tests for meshcore/bootstrap.c: the Envoy bootstrap's structure (what
 * Envoy and meshid's xDS server rely on), its options and its refusals. The
 * schema itself is checked against Envoy's official protos by
 * tests/interop/test_envoy_bootstrap.sh. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "meshcore/bootstrap.h"
#include "tests/unit/bootstrap/bootstrap_tests.h"

#define SOCK "/run/meshid/agent.sock"
#define SERVER_ID "spiffe://example.org/meshid/server"
#define WORKLOAD_ID "spiffe://example.org/ns/default/sa/web"

static mesh_bootstrap_opts base_opts(void)
{
    return (mesh_bootstrap_opts){.node_id = "n1", .agent_socket = SOCK,
                                 .server_spiffe_id = SERVER_ID};
}

/* Generates and parses; the caller json_decref()s. */
static json_t *gen(const mesh_bootstrap_opts *o)
{
    char *text = NULL;
    mid_result r = mesh_bootstrap_json(o, &text);
    if (!mid_is_ok(r)) fail_msg("mesh_bootstrap_json failed: %s", mid_errmsg());
    assert_non_null(text);
    size_t n = strlen(text);
    assert_true(n > 2 && text[n - 1] == '\n' && text[n - 2] == '}');
    assert_non_null(strstr(text, "\n  \"node\"")); /* pretty-printed, 2 spaces */
    json_error_t err;
    json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &err);
    if (root == NULL) fail_msg("output is not JSON: %s\n%s", err.text, text);
    free(text);
    return root;
}

/* json_t at a path like "a.b.0.c" (numbers index arrays); NULL if absent. */
static json_t *at(json_t *v, const char *path)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", path);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ".", &save); tok && v; tok = strtok_r(NULL, ".", &save)) {
        if (json_is_array(v)) {
            char *end = NULL;
            long i = strtol(tok, &end, 10);
            v = (*end == '\0') ? json_array_get(v, (size_t)i) : NULL;
        } else {
            v = json_object_get(v, tok);
        }
    }
    return v;
}

static void str_at(json_t *root, const char *path, const char *want)
{
    json_t *v = at(root, path);
    if (!json_is_string(v)) fail_msg("%s: not a string", path);
    if (strcmp(json_string_value(v), want) != 0)
        fail_msg("%s = \"%s\", want \"%s\"", path, json_string_value(v), want);
}

static void int_at(json_t *root, const char *path, json_int_t want)
{
    json_t *v = at(root, path);
    if (!json_is_integer(v)) fail_msg("%s: not an integer", path);
    if (json_integer_value(v) != want)
        fail_msg("%s = %lld, want %lld", path, (long long)json_integer_value(v), (long long)want);
}

static void empty_obj_at(json_t *root, const char *path)
{
    json_t *v = at(root, path);
    if (!json_is_object(v) || json_object_size(v) != 0) fail_msg("%s: not {}", path);
}

/* Every object that is a typed_config (or a typed_extension_protocol_options
 * value) names its type; counts them. */
static int check_anys(json_t *v, int is_any)
{
    int n = 0;
    if (json_is_object(v)) {
        if (is_any) {
            json_t *t = json_object_get(v, "@type");
            if (!json_is_string(t) ||
                strncmp(json_string_value(t), "type.googleapis.com/", 20) != 0)
                fail_msg("an Any without a proper @type");
            n++;
        }
        const char *k;
        json_t *c;
        json_object_foreach(v, k, c) {
            if (strcmp(k, "typed_extension_protocol_options") == 0) {
                const char *k2;
                json_t *c2;
                json_object_foreach(c, k2, c2) n += check_anys(c2, 1);
            } else {
                n += check_anys(c, strcmp(k, "typed_config") == 0);
            }
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *c;
        json_array_foreach(v, i, c) n += check_anys(c, 0);
    }
    return n;
}

static void sds_config_at(json_t *root, const char *path)
{
    char p[400];
    snprintf(p, sizeof p, "%s.api_config_source.api_type", path);
    str_at(root, p, "GRPC");
    snprintf(p, sizeof p, "%s.api_config_source.transport_api_version", path);
    str_at(root, p, "V3");
    snprintf(p, sizeof p, "%s.api_config_source.grpc_services.0.envoy_grpc.cluster_name", path);
    str_at(root, p, "sds-grpc");
    snprintf(p, sizeof p, "%s.api_config_source.set_node_on_first_message_only", path);
    assert_true(json_is_true(at(root, p)));
    snprintf(p, sizeof p, "%s.resource_api_version", path);
    str_at(root, p, "V3");
}

static void test_defaults(void **state)
{
    (void)state;
    mesh_bootstrap_opts o = base_opts();
    json_t *b = gen(&o);
    assert_int_equal(json_object_size(b), 4);
    str_at(b, "node.id", "n1");
    str_at(b, "node.cluster", "meshid");
    str_at(b, "node.metadata.SDS_CLUSTER", "sds-grpc");
    assert_null(at(b, "node.metadata.SPIFFE_ID"));
    assert_null(at(b, "node.metadata.SERVICE"));

    /* the SDS cluster: static, h2, a pipe to the agent */
    assert_int_equal(json_array_size(at(b, "static_resources.clusters")), 2);
    const char *sds = "static_resources.clusters.0";
    char p[300];
    snprintf(p, sizeof p, "%s.name", sds);
    str_at(b, p, "sds-grpc");
    snprintf(p, sizeof p, "%s.type", sds);
    str_at(b, p, "STATIC");
    snprintf(p, sizeof p, "%s.connect_timeout", sds);
    str_at(b, p, "1s");
    snprintf(p, sizeof p, "%s.load_assignment.cluster_name", sds);
    str_at(b, p, "sds-grpc");
    snprintf(p, sizeof p, "%s.load_assignment.endpoints.0.lb_endpoints.0.endpoint.address.pipe.path",
             sds);
    str_at(b, p, SOCK);
    json_t *h2 = at(b, "static_resources.clusters.0.typed_extension_protocol_options");
    h2 = json_object_get(h2, "envoy.extensions.upstreams.http.v3.HttpProtocolOptions");
    assert_non_null(h2);
    str_at(h2, "@type", "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions");
    empty_obj_at(h2, "explicit_http_config.http2_protocol_options");
    assert_null(at(b, "static_resources.clusters.0.transport_socket"));

    /* the ADS cluster: the server over mutual TLS with SDS certificates */
    const char *x = "static_resources.clusters.1";
    snprintf(p, sizeof p, "%s.name", x);
    str_at(b, p, "xds-grpc");
    snprintf(p, sizeof p, "%s.type", x);
    str_at(b, p, "STATIC");
    snprintf(p, sizeof p, "%s.load_assignment.endpoints.0.lb_endpoints.0.endpoint.address", x);
    json_t *sa = at(at(b, p), "socket_address");
    str_at(sa, "address", "127.0.0.1");
    int_at(sa, "port_value", 15012);
    assert_non_null(at(b, "static_resources.clusters.1.typed_extension_protocol_options"));
    json_t *ts = at(b, "static_resources.clusters.1.transport_socket");
    str_at(ts, "name", "envoy.transport_sockets.tls");
    json_t *tls = at(ts, "typed_config");
    str_at(tls, "@type", "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext");
    assert_null(at(tls, "sni")); /* an IP: no SNI */
    json_t *ctc = at(tls, "common_tls_context");
    str_at(ctc, "alpn_protocols.0", "h2");
    assert_int_equal(json_array_size(at(ctc, "tls_certificate_sds_secret_configs")), 1);
    str_at(ctc, "tls_certificate_sds_secret_configs.0.name", "default");
    sds_config_at(ctc, "tls_certificate_sds_secret_configs.0.sds_config");
    json_t *cvc = at(ctc, "combined_validation_context");
    json_t *san = at(cvc, "default_validation_context.match_typed_subject_alt_names");
    assert_int_equal(json_array_size(san), 1);
    str_at(san, "0.san_type", "URI");
    str_at(san, "0.matcher.exact", SERVER_ID);
    str_at(cvc, "validation_context_sds_secret_config.name", "ROOTCA");
    sds_config_at(cvc, "validation_context_sds_secret_config.sds_config");

    /* ADS, with CDS and LDS through it */
    json_t *dyn = at(b, "dynamic_resources");
    str_at(dyn, "ads_config.api_type", "GRPC");
    str_at(dyn, "ads_config.transport_api_version", "V3");
    str_at(dyn, "ads_config.grpc_services.0.envoy_grpc.cluster_name", "xds-grpc");
    assert_true(json_is_true(at(dyn, "ads_config.set_node_on_first_message_only")));
    const char *cfg[] = {"cds_config", "lds_config"};
    for (size_t i = 0; i < 2; i++) {
        json_t *c = at(dyn, cfg[i]);
        empty_obj_at(c, "ads");
        str_at(c, "resource_api_version", "V3");
        str_at(c, "initial_fetch_timeout", "0s");
    }
    str_at(b, "admin.address.socket_address.address", "127.0.0.1");
    int_at(b, "admin.address.socket_address.port_value", 15000);

    assert_int_equal(check_anys(b, 0), 3); /* 2 protocol options + the TLS context */
    json_decref(b);
}

static void test_options(void **state)
{
    (void)state;
    mesh_bootstrap_opts o = base_opts();
    o.service = "reviews";
    o.spiffe_id = WORKLOAD_ID;
    o.xds_host = "meshid.example.org";
    o.xds_port = 443;
    o.admin_port = 19000;
    o.delta = 1;
    json_t *b = gen(&o);
    str_at(b, "node.cluster", "reviews");
    str_at(b, "node.metadata.SERVICE", "reviews");
    str_at(b, "node.metadata.SPIFFE_ID", WORKLOAD_ID);
    str_at(b, "static_resources.clusters.1.type", "STRICT_DNS");
    json_t *sa = at(b, "static_resources.clusters.1.load_assignment.endpoints.0.lb_endpoints.0"
                       ".endpoint.address.socket_address");
    str_at(sa, "address", "meshid.example.org");
    int_at(sa, "port_value", 443);
    str_at(b, "static_resources.clusters.1.transport_socket.typed_config.sni", "meshid.example.org");
    str_at(b, "dynamic_resources.ads_config.api_type", "DELTA_GRPC");
    int_at(b, "admin.address.socket_address.port_value", 19000);
    json_decref(b);

    /* explicit cluster wins over the service; IPv6 literal is STATIC */
    o.node_cluster = "front";
    o.xds_host = "::1";
    b = gen(&o);
    str_at(b, "node.cluster", "front");
    str_at(b, "static_resources.clusters.1.type", "STATIC");
    assert_null(at(b, "static_resources.clusters.1.transport_socket.typed_config.sni"));
    json_decref(b);
}

static void bad(const mesh_bootstrap_opts *o, mid_err want, const char *needle)
{
    char *text = (char *)"untouched";
    mid_result r = mesh_bootstrap_json(o, &text);
    if (mid_is_ok(r)) fail_msg("accepted; wanted an error with \"%s\"", needle);
    assert_null(text);
    assert_int_equal(r.err, want);
    if (strstr(mid_errmsg(), needle) == NULL)
        fail_msg("message \"%s\" lacks \"%s\"", mid_errmsg(), needle);
}

static void test_refusals(void **state)
{
    (void)state;
    mesh_bootstrap_opts o = base_opts();
    o.node_id = NULL;
    bad(&o, MID_E_INVALID, "node id is required");
    o.node_id = "";
    bad(&o, MID_E_INVALID, "node id must not be empty");
    o.node_id = "n\xff";
    bad(&o, MID_E_INVALID, "node id is not valid UTF-8");
    static char big[MESH_BOOTSTRAP_NODE_MAX + 2];
    memset(big, 'a', sizeof big - 1);
    o.node_id = big;
    bad(&o, MID_E_TOO_LARGE, "node id is 2049 bytes");

    o = base_opts();
    o.agent_socket = "run/agent.sock";
    bad(&o, MID_E_INVALID, "must be an absolute path");
    o.agent_socket = NULL;
    bad(&o, MID_E_INVALID, "agent socket path is required");
    char longsock[MESH_BOOTSTRAP_PIPE_MAX + 2];
    memset(longsock, 'x', sizeof longsock - 1);
    longsock[0] = '/';
    longsock[sizeof longsock - 1] = '\0';
    o.agent_socket = longsock;
    bad(&o, MID_E_TOO_LARGE, "agent socket is 108 bytes");

    o = base_opts();
    o.spiffe_id = "spiffe://example.org";
    bad(&o, MID_E_INVALID, "is a trust domain, not a workload ID");
    o.spiffe_id = "https://example.org/x";
    bad(&o, MID_E_INVALID, "node SPIFFE ID");
    o = base_opts();
    o.server_spiffe_id = NULL;
    bad(&o, MID_E_INVALID, "server's SPIFFE ID is required");
    o.server_spiffe_id = "spiffe://Example.org/meshid/server";
    bad(&o, MID_E_INVALID, "server SPIFFE ID");

    o = base_opts();
    o.xds_host = "meshid server";
    bad(&o, MID_E_INVALID, "neither an IP address nor a DNS name");
    o.xds_host = "1.2.3.4:80";
    bad(&o, MID_E_INVALID, "neither an IP address nor a DNS name");
    o.xds_host = "a\"b";
    bad(&o, MID_E_INVALID, "neither an IP address nor a DNS name");
    o = base_opts();
    o.xds_port = 65536;
    bad(&o, MID_E_INVALID, "xds port 65536");
    o = base_opts();
    o.admin_port = 70000;
    bad(&o, MID_E_INVALID, "admin port 70000");
    o = base_opts();
    o.service = "";
    bad(&o, MID_E_INVALID, "service must not be empty");
}

int run_bootstrap_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests_name("meshcore/bootstrap", tests, NULL, NULL);
}
