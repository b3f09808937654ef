/* Protobuf helpers of the xDS generator (see meshcore/xds_gen_int.h). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "envoy/config/core/v3/protocol.pb-c.h"
#include "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.pb-c.h"
#include "envoy/extensions/upstreams/http/v3/http_protocol_options.pb-c.h"
#include "meshcore/xds_gen.h"
#include "meshcore/xds_gen_int.h"

typedef Envoy__Extensions__TransportSockets__Tls__V3__SubjectAltNameMatcher san_matcher;
typedef Envoy__Type__Matcher__V3__StringMatcher string_matcher;

MID_RESULT xds_pb_pack(arena *a, const ProtobufCMessage *m, uint8_t **out, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    MID_ENSURE(n <= XDS_RESOURCE_MAX, MID_E_TOO_LARGE,
               "an xDS %s message would be %zu bytes (limit %u)", m->descriptor->short_name, n,
               XDS_RESOURCE_MAX);
    uint8_t *buf = arena_alloc(a, n ? n : 1);
    MID_ENSURE_MEM(buf);
    size_t w = protobuf_c_message_pack(m, buf);
    MID_ENSURE(w == n, MID_E_INTERNAL, "packed %zu bytes, expected %zu", w, n);
    *out = buf;
    *len = n;
    return mid_ok();
}

MID_RESULT xds_pb_any(arena *a, const ProtobufCMessage *m, const char *type_url,
                      Google__Protobuf__Any *any)
{
    google__protobuf__any__init(any);
    any->type_url = (char *)type_url;
    uint8_t *b = NULL;
    size_t n = 0;
    MID_GUARD(xds_pb_pack(a, m, &b, &n));
    any->value.data = b;
    any->value.len = n;
    return mid_ok();
}

MID_RESULT xds_pb_add(arena *a, xds_rset *r, const char *name, const ProtobufCMessage *m)
{
    uint8_t *b = NULL;
    size_t n = 0;
    MID_GUARD(xds_pb_pack(a, m, &b, &n));
    return xds_rset_add(r, name, b, n);
}

MID_RESULT xds_pb_snap_add(arena *a, xds_snapshot *s, xds_type t, const char *name,
                           const ProtobufCMessage *m)
{
    uint8_t *b = NULL;
    size_t n = 0;
    MID_GUARD(xds_pb_pack(a, m, &b, &n));
    return xds_snapshot_add(s, t, name, b, n);
}

void *xds_pb_ptrs(arena *a, size_t n)
{
    return arena_calloc(a, (n ? n : 1) * sizeof(void *));
}

char *xds_pb_fmt(arena *a, const char *fmt, ...)
{
    char buf[XDS_NAME_MAX + 1];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n > XDS_NAME_MAX) return NULL;
    return arena_strndup(a, buf, (size_t)n);
}

void xds_pb_sockaddr(Envoy__Config__Core__V3__Address *ad, Envoy__Config__Core__V3__SocketAddress *sa,
                     const char *ip, uint32_t port)
{
    envoy__config__core__v3__address__init(ad);
    envoy__config__core__v3__socket_address__init(sa);
    sa->address = (char *)ip;
    sa->port_specifier_case = ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE;
    sa->port_value = port;
    ad->address_case = ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS;
    ad->socket_address = sa;
}

void xds_ads_source_init(xds_ads_source *s)
{
    envoy__config__core__v3__config_source__init(&s->cs);
    envoy__config__core__v3__aggregated_config_source__init(&s->ads);
    s->cs.config_source_specifier_case =
        ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS;
    s->cs.ads = &s->ads;
    s->cs.resource_api_version = ENVOY__CONFIG__CORE__V3__API_VERSION__V3;
}

void xds_sds_source_init(xds_sds_source *s, const char *cluster)
{
    envoy__config__core__v3__config_source__init(&s->cs);
    envoy__config__core__v3__api_config_source__init(&s->api);
    envoy__config__core__v3__grpc_service__init(&s->gs);
    envoy__config__core__v3__grpc_service__envoy_grpc__init(&s->eg);
    s->eg.cluster_name = (char *)cluster;
    s->gs.target_specifier_case = ENVOY__CONFIG__CORE__V3__GRPC_SERVICE__TARGET_SPECIFIER_ENVOY_GRPC;
    s->gs.envoy_grpc = &s->eg;
    s->gsp[0] = &s->gs;
    s->api.api_type = ENVOY__CONFIG__CORE__V3__API_CONFIG_SOURCE__API_TYPE__GRPC;
    s->api.transport_api_version = ENVOY__CONFIG__CORE__V3__API_VERSION__V3;
    s->api.n_grpc_services = 1;
    s->api.grpc_services = s->gsp;
    s->api.set_node_on_first_message_only = 1;
    s->cs.config_source_specifier_case =
        ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_API_CONFIG_SOURCE;
    s->cs.api_config_source = &s->api;
    s->cs.resource_api_version = ENVOY__CONFIG__CORE__V3__API_VERSION__V3;
}

void xds_sds_tls_init(xds_sds_tls *t, const char *sds_cluster)
{
    xds_sds_source_init(&t->src, sds_cluster);
    envoy__extensions__transport_sockets__tls__v3__sds_secret_config__init(&t->cert);
    t->cert.name = (char *)XDS_SDS_CERT_NAME;
    t->cert.sds_config = &t->src.cs;
    t->certs[0] = &t->cert;
    envoy__extensions__transport_sockets__tls__v3__sds_secret_config__init(&t->root);
    t->root.name = (char *)XDS_SDS_ROOT_NAME;
    t->root.sds_config = &t->src.cs;
    envoy__extensions__transport_sockets__tls__v3__certificate_validation_context__init(&t->defval);
    envoy__extensions__transport_sockets__tls__v3__common_tls_context__combined_certificate_validation_context__init(
        &t->combined);
    t->combined.default_validation_context = &t->defval;
    t->combined.validation_context_sds_secret_config = &t->root;
    envoy__extensions__transport_sockets__tls__v3__common_tls_context__init(&t->common);
    t->common.n_tls_certificate_sds_secret_configs = 1;
    t->common.tls_certificate_sds_secret_configs = t->certs;
    t->common.validation_context_type_case =
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_COMBINED_VALIDATION_CONTEXT;
    t->common.combined_validation_context = &t->combined;
}

static string_matcher *exact_matcher(arena *a, const char *s)
{
    string_matcher *m = arena_alloc(a, sizeof *m);
    if (!m) return NULL;
    envoy__type__matcher__v3__string_matcher__init(m);
    m->match_pattern_case = ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT;
    m->exact = (char *)s;
    return m;
}

san_matcher **xds_pb_uri_sans(arena *a, const char *const *ids, size_t n)
{
    san_matcher **v = xds_pb_ptrs(a, n);
    if (!v) return NULL;
    for (size_t i = 0; i < n; i++) {
        san_matcher *m = arena_alloc(a, sizeof *m);
        string_matcher *sm = exact_matcher(a, ids[i]);
        if (!m || !sm) return NULL;
        envoy__extensions__transport_sockets__tls__v3__subject_alt_name_matcher__init(m);
        m->san_type =
            ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__URI;
        m->matcher = sm;
        v[i] = m;
    }
    return v;
}

string_matcher **xds_pb_exact_matchers(arena *a, const char *const *ids, size_t n)
{
    string_matcher **v = xds_pb_ptrs(a, n);
    if (!v) return NULL;
    for (size_t i = 0; i < n; i++) {
        v[i] = exact_matcher(a, ids[i]);
        if (!v[i]) return NULL;
    }
    return v;
}

static MID_RESULT h2_options(arena *a, Google__Protobuf__Any *any)
{
    Envoy__Config__Core__V3__Http2ProtocolOptions h2 = ENVOY__CONFIG__CORE__V3__HTTP2_PROTOCOL_OPTIONS__INIT;
    Envoy__Extensions__Upstreams__Http__V3__HttpProtocolOptions__ExplicitHttpConfig ex =
        ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__EXPLICIT_HTTP_CONFIG__INIT;
    Envoy__Extensions__Upstreams__Http__V3__HttpProtocolOptions po =
        ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__INIT;
    ex.protocol_config_case =
        ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__EXPLICIT_HTTP_CONFIG__PROTOCOL_CONFIG_HTTP2_PROTOCOL_OPTIONS;
    ex.http2_protocol_options = &h2;
    po.upstream_protocol_options_case =
        ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__UPSTREAM_PROTOCOL_OPTIONS_EXPLICIT_HTTP_CONFIG;
    po.explicit_http_config = &ex;
    return xds_pb_any(a, &po.base, XDS_URL_H2_OPTIONS, any);
}

MID_RESULT xds_pb_cluster_h2(arena *a, xds_h2_options *o, Envoy__Config__Cluster__V3__Cluster *c)
{
    MID_GUARD(h2_options(a, &o->any));
    envoy__config__cluster__v3__cluster__typed_extension_protocol_options_entry__init(&o->entry);
    o->entry.key = (char *)XDS_H2_OPTIONS_KEY;
    o->entry.value = &o->any;
    o->entries[0] = &o->entry;
    c->n_typed_extension_protocol_options = 1;
    c->typed_extension_protocol_options = o->entries;
    return mid_ok();
}

void xds_pb_tls_socket(Envoy__Config__Core__V3__TransportSocket *ts, Google__Protobuf__Any *any)
{
    envoy__config__core__v3__transport_socket__init(ts);
    ts->name = (char *)XDS_TLS_SOCKET;
    ts->config_type_case = ENVOY__CONFIG__CORE__V3__TRANSPORT_SOCKET__CONFIG_TYPE_TYPED_CONFIG;
    ts->typed_config = any;
}

void xds_pb_filter(Envoy__Config__Listener__V3__Filter *f, const char *name,
                   Google__Protobuf__Any *any)
{
    envoy__config__listener__v3__filter__init(f);
    f->name = (char *)name;
    f->config_type_case = ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG;
    f->typed_config = any;
}

void xds_pb_http_filter(
    Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpFilter *hf,
    const char *name, Google__Protobuf__Any *any)
{
    envoy__extensions__filters__network__http_connection_manager__v3__http_filter__init(hf);
    hf->name = (char *)name;
    hf->config_type_case =
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_FILTER__CONFIG_TYPE_TYPED_CONFIG;
    hf->typed_config = any;
}

MID_RESULT xds_pb_tcp_proxy_filter(arena *a, const char *stat_prefix, const char *cluster,
                                   Envoy__Config__Listener__V3__Filter *f,
                                   Google__Protobuf__Any *any)
{
    Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy tp =
        ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__INIT;
    tp.stat_prefix = (char *)stat_prefix;
    tp.cluster_specifier_case =
        ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__CLUSTER_SPECIFIER_CLUSTER;
    tp.cluster = (char *)cluster;
    MID_GUARD(xds_pb_any(a, &tp.base, XDS_URL_TCP_PROXY, any));
    xds_pb_filter(f, XDS_TCP_PROXY_FILTER, any);
    return mid_ok();
}

void xds_pb_listener(xds_listener *l, const char *name, const char *ip, uint32_t port,
                     Envoy__Config__Listener__V3__Filter **filters, size_t n_filters,
                     Envoy__Config__Core__V3__TransportSocket *ts,
                     Envoy__Config__Core__V3__TrafficDirection direction)
{
    envoy__config__listener__v3__filter_chain__init(&l->chain);
    l->chain.n_filters = n_filters;
    l->chain.filters = filters;
    l->chain.transport_socket = ts;
    l->chains[0] = &l->chain;
    xds_pb_sockaddr(&l->addr, &l->sockaddr, ip, port);
    envoy__config__listener__v3__listener__init(&l->msg);
    l->msg.name = (char *)name;
    l->msg.address = &l->addr;
    l->msg.n_filter_chains = 1;
    l->msg.filter_chains = l->chains;
    l->msg.traffic_direction = direction;
}
