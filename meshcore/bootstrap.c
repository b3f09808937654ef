/* The Envoy bootstrap (meshcore/bootstrap.h). Built as a jansson tree with
 * json_pack: every 'o' argument is stolen even when packing fails, so a
 * failed allocation anywhere surfaces as one NULL at the top. */
#include "meshcore/bootstrap.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "identity/spiffe_id.h"

#define TYPE_PREFIX "type.googleapis.com/"
#define TLS_SOCKET_NAME "envoy.transport_sockets.tls"
#define HTTP_OPTIONS_KEY "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
#define HTTP_OPTIONS_TYPE TYPE_PREFIX HTTP_OPTIONS_KEY
#define UPSTREAM_TLS_TYPE TYPE_PREFIX "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
#define SDS_CERT_NAME "default"
#define SDS_ROOT_NAME "ROOTCA"
#define CONNECT_TIMEOUT "1s"

static mid_result check_text(const char *what, const char *s, size_t max)
{
    size_t n = strlen(s);
    MID_ENSURE(n > 0, MID_E_INVALID, "%s must not be empty", what);
    MID_ENSURE(n <= max, MID_E_TOO_LARGE, "%s is %zu bytes, over the limit of %zu", what, n, max);
    json_t *probe = json_stringn(s, n); /* NULL: not UTF-8 (or out of memory) */
    MID_ENSURE(probe != NULL, MID_E_INVALID, "%s is not valid UTF-8", what);
    json_decref(probe);
    return mid_ok();
}

static mid_result check_spiffe(const char *what, const char *s, int workload)
{
    spiffe_id *id = NULL;
    mid_result r = spiffe_id_parse(s, strlen(s), &id);
    if (!mid_is_ok(r)) return mid_fail(r.err, __FILE__, __LINE__, "%s: %s", what, mid_errmsg());
    bool ok = !workload || spiffe_id_is_workload(id);
    spiffe_id_free(id);
    MID_ENSURE(ok, MID_E_INVALID, "%s '%s' is a trust domain, not a workload ID", what, s);
    return mid_ok();
}

/* 1: IPv4 or IPv6 literal, 0: a DNS name; MID_E_INVALID otherwise. */
static mid_result classify_host(const char *h, int *is_ip)
{
    MID_GUARD(check_text("xds host", h, MESH_BOOTSTRAP_HOST_MAX));
    unsigned char buf[16];
    if (inet_pton(AF_INET, h, buf) == 1 || inet_pton(AF_INET6, h, buf) == 1) {
        *is_ip = 1;
        return mid_ok();
    }
    for (const char *p = h; *p; p++) {
        char c = *p;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '-';
        MID_ENSURE(ok, MID_E_INVALID, "xds host '%s' is neither an IP address nor a DNS name", h);
    }
    *is_ip = 0;
    return mid_ok();
}

static mid_result check_opts(const mesh_bootstrap_opts *o, int *xds_is_ip)
{
    MID_ENSURE(o != NULL && o->node_id != NULL, MID_E_INVALID, "the node id is required");
    MID_GUARD(check_text("node id", o->node_id, MESH_BOOTSTRAP_NODE_MAX));
    if (o->node_cluster) MID_GUARD(check_text("node cluster", o->node_cluster, MESH_BOOTSTRAP_NODE_MAX));
    if (o->service) MID_GUARD(check_text("service", o->service, MESH_BOOTSTRAP_NODE_MAX));
    if (o->spiffe_id) MID_GUARD(check_spiffe("node SPIFFE ID", o->spiffe_id, 1));
    MID_ENSURE(o->server_spiffe_id != NULL, MID_E_INVALID, "the server's SPIFFE ID is required");
    MID_GUARD(check_spiffe("server SPIFFE ID", o->server_spiffe_id, 0));
    MID_ENSURE(o->agent_socket != NULL, MID_E_INVALID, "the agent socket path is required");
    MID_GUARD(check_text("agent socket", o->agent_socket, MESH_BOOTSTRAP_PIPE_MAX));
    MID_ENSURE(o->agent_socket[0] == '/', MID_E_INVALID,
               "agent socket '%s' must be an absolute path (Envoy's working directory is not ours)",
               o->agent_socket);
    MID_ENSURE(o->xds_port <= 65535, MID_E_INVALID, "xds port %u is over 65535", o->xds_port);
    MID_ENSURE(o->admin_port <= 65535, MID_E_INVALID, "admin port %u is over 65535", o->admin_port);
    return classify_host(o->xds_host ? o->xds_host : MESH_BOOTSTRAP_XDS_HOST_DEFAULT, xds_is_ip);
}

/* ConfigSource for the SDS secrets: the agent over "sds-grpc", SotW. */
static json_t *sds_config(void)
{
    return json_pack("{s:{s:s, s:s, s:[{s:{s:s}}], s:b}, s:s}",
                     "api_config_source",
                     "api_type", "GRPC",
                     "transport_api_version", "V3",
                     "grpc_services", "envoy_grpc", "cluster_name", MESH_BOOTSTRAP_SDS_CLUSTER,
                     "set_node_on_first_message_only", 1,
                     "resource_api_version", "V3");
}

/* typed_extension_protocol_options making a cluster speak HTTP/2 (gRPC). */
static json_t *h2_options(void)
{
    return json_pack("{s:{s:s, s:{s:{}}}}", HTTP_OPTIONS_KEY,
                     "@type", HTTP_OPTIONS_TYPE,
                     "explicit_http_config", "http2_protocol_options");
}

static json_t *load_assignment(const char *cluster, json_t *address)
{
    return json_pack("{s:s, s:[{s:[{s:{s:o}}]}]}", "cluster_name", cluster,
                     "endpoints", "lb_endpoints", "endpoint", "address", address);
}

static json_t *sds_cluster(const char *socket)
{
    json_t *addr = json_pack("{s:{s:s}}", "pipe", "path", socket);
    return json_pack("{s:s, s:s, s:s, s:o, s:o}",
                     "name", MESH_BOOTSTRAP_SDS_CLUSTER,
                     "type", "STATIC",
                     "connect_timeout", CONNECT_TIMEOUT,
                     "load_assignment", load_assignment(MESH_BOOTSTRAP_SDS_CLUSTER, addr),
                     "typed_extension_protocol_options", h2_options());
}

static json_t *upstream_tls(const char *sni, const char *server_id)
{
    json_t *common = json_pack(
        "{s:[s], s:[{s:s, s:o}], s:{s:{s:[{s:s, s:{s:s}}]}, s:{s:s, s:o}}}",
        "alpn_protocols", "h2",
        "tls_certificate_sds_secret_configs", "name", SDS_CERT_NAME, "sds_config", sds_config(),
        "combined_validation_context",
        "default_validation_context", "match_typed_subject_alt_names",
        "san_type", "URI", "matcher", "exact", server_id,
        "validation_context_sds_secret_config", "name", SDS_ROOT_NAME, "sds_config", sds_config());
    return json_pack("{s:s, s:s*, s:o}", "@type", UPSTREAM_TLS_TYPE, "sni", sni,
                     "common_tls_context", common);
}

static json_t *xds_cluster(const mesh_bootstrap_opts *o, const char *host, uint32_t port, int is_ip)
{
    json_t *addr = json_pack("{s:{s:s, s:I}}", "socket_address", "address", host, "port_value",
                             (json_int_t)port);
    json_t *c = json_pack("{s:s, s:s, s:s, s:o, s:o, s:{s:s, s:o}}",
                          "name", MESH_BOOTSTRAP_XDS_CLUSTER,
                          "type", is_ip ? "STATIC" : "STRICT_DNS",
                          "connect_timeout", CONNECT_TIMEOUT,
                          "load_assignment", load_assignment(MESH_BOOTSTRAP_XDS_CLUSTER, addr),
                          "typed_extension_protocol_options", h2_options(),
                          "transport_socket", "name", TLS_SOCKET_NAME, "typed_config",
                          upstream_tls(is_ip ? NULL : host, o->server_spiffe_id));
    return c;
}

static json_t *node(const mesh_bootstrap_opts *o)
{
    const char *cluster = o->node_cluster ? o->node_cluster : o->service ? o->service : "meshid";
    return json_pack("{s:s, s:s, s:{s:s*, s:s*, s:s}}", "id", o->node_id, "cluster", cluster,
                     "metadata", "SPIFFE_ID", o->spiffe_id, "SERVICE", o->service,
                     "SDS_CLUSTER", MESH_BOOTSTRAP_SDS_CLUSTER);
}

static json_t *ads_config_source(void)
{
    return json_pack("{s:{}, s:s, s:s}", "ads", "resource_api_version", "V3",
                     "initial_fetch_timeout", "0s");
}

MID_RESULT mesh_bootstrap_json(const mesh_bootstrap_opts *o, char **out)
{
    *out = NULL;
    int is_ip = 0;
    MID_GUARD(check_opts(o, &is_ip));
    const char *host = o->xds_host ? o->xds_host : MESH_BOOTSTRAP_XDS_HOST_DEFAULT;
    uint32_t port = o->xds_port ? o->xds_port : MESH_BOOTSTRAP_XDS_PORT_DEFAULT;
    uint32_t admin = o->admin_port ? o->admin_port : MESH_BOOTSTRAP_ADMIN_PORT_DEFAULT;

    json_t *root = json_pack(
        "{s:o, s:{s:[o, o]}, s:{s:{s:s, s:s, s:[{s:{s:s}}], s:b}, s:o, s:o}, s:{s:{s:{s:s, s:I}}}}",
        "node", node(o),
        "static_resources", "clusters", sds_cluster(o->agent_socket),
        xds_cluster(o, host, port, is_ip),
        "dynamic_resources",
        "ads_config", "api_type", o->delta ? "DELTA_GRPC" : "GRPC",
        "transport_api_version", "V3",
        "grpc_services", "envoy_grpc", "cluster_name", MESH_BOOTSTRAP_XDS_CLUSTER,
        "set_node_on_first_message_only", 1,
        "cds_config", ads_config_source(),
        "lds_config", ads_config_source(),
        "admin", "address", "socket_address", "address", "127.0.0.1", "port_value",
        (json_int_t)admin);
    MID_ENSURE_MEM(root);
    char *text = json_dumps(root, JSON_INDENT(2));
    json_decref(root);
    MID_ENSURE_MEM(text);
    size_t n = strlen(text);
    char *full = realloc(text, n + 2);
    if (full == NULL) {
        free(text);
        MID_BAIL(MID_E_NOMEM, "out of memory");
    }
    full[n] = '\n';
    full[n + 1] = '\0';
    *out = full;
    return mid_ok();
}
