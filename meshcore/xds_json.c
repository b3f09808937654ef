/* Type URL -> descriptor table for xDS JSON (meshcore/xds_json.h). */
#include "meshcore/xds_json.h"

#include <string.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/filters/http/rbac/v3/rbac.pb-c.h"
#include "envoy/extensions/filters/http/router/v3/router.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/extensions/filters/network/rbac/v3/rbac.pb-c.h"
#include "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/tls.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/tls_spiffe_validator_config.pb-c.h"
#include "envoy/extensions/upstreams/http/v3/http_protocol_options.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "lib/pbjson.h"

#define TYPE_PREFIX "type.googleapis.com/"

static const ProtobufCMessageDescriptor *const types[] = {
    /* the four xDS resource types and the delta wrapper */
    &envoy__config__listener__v3__listener__descriptor,
    &envoy__config__route__v3__route_configuration__descriptor,
    &envoy__config__cluster__v3__cluster__descriptor,
    &envoy__config__endpoint__v3__cluster_load_assignment__descriptor,
    &envoy__service__discovery__v3__resource__descriptor,
    /* typed configs inside them */
    &envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor,
    &envoy__extensions__filters__http__router__v3__router__descriptor,
    &envoy__extensions__filters__http__rbac__v3__rbac__descriptor,
    &envoy__extensions__filters__network__rbac__v3__rbac__descriptor,
    &envoy__extensions__filters__network__tcp_proxy__v3__tcp_proxy__descriptor,
    &envoy__extensions__transport_sockets__tls__v3__upstream_tls_context__descriptor,
    &envoy__extensions__transport_sockets__tls__v3__downstream_tls_context__descriptor,
    &envoy__extensions__upstreams__http__v3__http_protocol_options__descriptor,
    &envoy__extensions__transport_sockets__tls__v3__spiffecert_validator_config__descriptor,
    /* SDS */
    &envoy__extensions__transport_sockets__tls__v3__secret__descriptor,
    /* well-known types that may sit in an Any */
    &google__protobuf__struct__descriptor,
    &google__protobuf__value__descriptor,
    &google__protobuf__duration__descriptor,
    &google__protobuf__bool_value__descriptor,
    &google__protobuf__uint32_value__descriptor,
    &google__protobuf__string_value__descriptor,
};

#define N_TYPES (sizeof types / sizeof types[0])

const ProtobufCMessageDescriptor *xds_json_resolve(void *ctx, const char *type_url)
{
    (void)ctx;
    if (type_url == NULL || strncmp(type_url, TYPE_PREFIX, sizeof TYPE_PREFIX - 1) != 0)
        return NULL;
    const char *name = type_url + sizeof TYPE_PREFIX - 1;
    for (size_t i = 0; i < N_TYPES; i++)
        if (strcmp(types[i]->name, name) == 0) return types[i];
    return NULL;
}

size_t xds_json_n_types(void) { return N_TYPES; }

const ProtobufCMessageDescriptor *xds_json_type(size_t i)
{
    return i < N_TYPES ? types[i] : NULL;
}

MID_RESULT xds_json_resource(const char *type_url, const uint8_t *value, size_t len,
                             json_t **out)
{
    *out = NULL;
    MID_ENSURE(type_url != NULL && type_url[0] != '\0', MID_E_INVALID, "resource without a type URL");
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    any.type_url = (char *)type_url;
    any.value.data = (uint8_t *)value;
    any.value.len = len;
    return pbjson_from_message(&any.base, xds_json_resolve, NULL, out);
}
