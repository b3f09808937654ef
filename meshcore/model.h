/* The mesh's resource model: services with ports and endpoints (the subset of
 * Istio's networking.istio.io ServiceEntry that meshid supports) and
 * authorization policies (the subset of security.istio.io
 * AuthorizationPolicy), as plain data.
 *
 * Produced by the YAML loader (meshcore/yaml_load.h) and by the JSON codec
 * (mesh_*_from_json, used for what the store keeps); consumed by the
 * policy evaluator (meshcore/policy.h), the RBAC compiler (meshcore/rbac.h)
 * and the xDS generator (meshcore/xds_gen.h).
 *
 * Ownership: every string and array below is a separate heap allocation
 * owned by the enclosing object; mesh_service_free / mesh_policy_free /
 * mesh_doc_list_free release a whole tree. Counts are exact (no NULL
 * terminators). Nothing here is thread-safe; a registry snapshot
 * (mesh_registry) is immutable once built and may be read from any thread.
 */
#ifndef MESHID_MESHCORE_MODEL_H
#define MESHID_MESHCORE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "lib/result.h"

/* Limits (refused with MID_E_TOO_LARGE naming the field). */
#define MESH_NAME_MAX 253          /* metadata.name, namespace, host, label key */
#define MESH_LABEL_VALUE_MAX 63
#define MESH_HOSTS_MAX 64          /* hosts per service */
#define MESH_PORTS_MAX 64          /* ports per service */
#define MESH_ENDPOINTS_MAX 4096    /* endpoints per service */
#define MESH_LABELS_MAX 64         /* labels per endpoint / selector */
#define MESH_RULES_MAX 256         /* rules per policy */
#define MESH_VALUES_MAX 256        /* strings per principals/methods/paths/... list */
#define MESH_DOC_BYTES_MAX (4u << 20) /* one YAML file */

/* The namespace a document without metadata.namespace lands in, and the
 * root namespace whose policies apply to every workload (Istio's default
 * root namespace). */
#define MESH_DEFAULT_NAMESPACE "default"
#define MESH_ROOT_NAMESPACE "istio-system"

typedef struct {
    char *key;
    char *value;
} mesh_label;

/* Istio port protocols meshid knows. HTTP, HTTP2 and GRPC get an HTTP
 * connection manager (and RBAC); TCP/TLS/MONGO/HTTPS get a TCP proxy. */
typedef enum {
    MESH_PROTO_HTTP = 0,
    MESH_PROTO_HTTP2,
    MESH_PROTO_GRPC,
    MESH_PROTO_HTTPS,
    MESH_PROTO_TCP,
    MESH_PROTO_TLS,
    MESH_PROTO_MONGO,
} mesh_protocol;

/* "HTTP", "GRPC", ... and back (exact upper case, as Istio spells them). */
const char *mesh_protocol_name(mesh_protocol p);
MID_RESULT mesh_protocol_parse(const char *s, mesh_protocol *out);
/* 1 for HTTP, HTTP2, GRPC (L7: routes and RBAC on HTTP attributes). */
int mesh_protocol_is_http(mesh_protocol p);

typedef struct {
    char *name;           /* port name, unique within the service (required) */
    uint32_t number;      /* 1..65535, unique within the service */
    mesh_protocol protocol;
    uint32_t target_port; /* 0: not given */
} mesh_port;

typedef enum {
    MESH_HEALTH_HEALTHY = 0, /* default */
    MESH_HEALTH_UNHEALTHY,
    MESH_HEALTH_DRAINING,
} mesh_health;

const char *mesh_health_name(mesh_health h); /* "HEALTHY", ... */
MID_RESULT mesh_health_parse(const char *s, mesh_health *out);

/* A port override of one endpoint: service port `name` is reached on
 * `number` at this endpoint (ServiceEntry endpoints[].ports). */
typedef struct {
    char *name;
    uint32_t number;
} mesh_endpoint_port;

typedef struct {
    char *address;               /* IPv4 or IPv6 literal, canonical text form */
    mesh_endpoint_port *ports;   /* overrides; a service port without one uses its number */
    size_t n_ports;
    mesh_label *labels;          /* sorted by key, keys distinct */
    size_t n_labels;
    mesh_health health;
    /* The identity the workload runs as: the SPIFFE ID given, or the one
     * derived from serviceAccount as spiffe://<trust domain>/ns/<ns>/sa/<sa>
     * when the registry is built (NULL until then when only `service_account`
     * was given). */
    char *spiffe_id;
    char *service_account;       /* as written, may be NULL */
} mesh_endpoint;

typedef struct {
    char *namespace_;            /* metadata.namespace (MESH_DEFAULT_NAMESPACE if absent) */
    char *name;                  /* metadata.name */
    char **hosts;                /* >= 1, lowercase DNS names; unique in the registry */
    size_t n_hosts;
    mesh_port *ports;            /* >= 1 */
    size_t n_ports;
    int mesh_internal;           /* location: MESH_INTERNAL (default 1) / MESH_EXTERNAL */
    mesh_endpoint *endpoints;    /* resolution is always STATIC */
    size_t n_endpoints;
} mesh_service;

/* ---- authorization policy ----------------------------------------------- */

typedef enum { MESH_ACTION_ALLOW = 0, MESH_ACTION_DENY } mesh_action;

/* One `from[].source`. Each list may be empty (= not constrained). Values
 * keep Istio's forms: principals are "<trust domain>/<path>" or a full
 * "spiffe://..." ID, with "*" wildcards as a prefix, a suffix or alone;
 * namespaces likewise allow "*" as prefix/suffix/alone. */
typedef struct {
    char **principals;     size_t n_principals;
    char **not_principals; size_t n_not_principals;
    char **namespaces;     size_t n_namespaces;
} mesh_source;

/* One `to[].operation`. paths and hosts allow "*" prefix/suffix wildcards;
 * methods are matched exactly; ports are 1..65535. */
typedef struct {
    char **methods;  size_t n_methods;
    char **paths;    size_t n_paths;
    uint32_t *ports; size_t n_ports;
    char **hosts;    size_t n_hosts;
} mesh_operation;

/* A rule matches when (from is empty or any source matches) and (to is
 * empty or any operation matches). An empty rule `{}` always matches. */
typedef struct {
    mesh_source *from;   size_t n_from;
    mesh_operation *to;  size_t n_to;
} mesh_rule;

typedef struct {
    char *namespace_;
    char *name;
    mesh_label *selector;  /* spec.selector.matchLabels, sorted; 0 = all workloads of the namespace */
    size_t n_selector;
    mesh_action action;    /* default ALLOW */
    mesh_rule *rules;      /* 0 rules: an ALLOW policy matches nothing ("allow-nothing"),
                              a DENY policy denies nothing */
    size_t n_rules;
} mesh_policy;

/* ---- documents ---------------------------------------------------------------- */

typedef enum { MESH_KIND_SERVICE = 0, MESH_KIND_POLICY } mesh_kind;

/* Where a document came from, for messages: "FILE:LINE". */
typedef struct {
    mesh_kind kind;
    char *source;          /* "dir/file.yaml:12" of the document start; may be NULL */
    union {
        mesh_service *service;
        mesh_policy *policy;
    } u;
} mesh_doc;

void mesh_service_free(mesh_service *s);
void mesh_policy_free(mesh_policy *p);
void mesh_doc_list_free(mesh_doc *docs, size_t n);

/* Deep copies. MID_E_NOMEM. */
MID_RESULT mesh_service_clone(const mesh_service *s, mesh_service **out);
MID_RESULT mesh_policy_clone(const mesh_policy *p, mesh_policy **out);

/* Checks everything the YAML loader checks that does not depend on the
 * YAML text (names, hosts, ports, addresses, SPIFFE IDs, limits), so that
 * records built by the CLI or read back from the store obey the same rules.
 * MID_E_INVALID / MID_E_TOO_LARGE with a message naming the field, e.g.
 * "spec.endpoints[1].address: \"10.0.0\" is not an IP address". */
MID_RESULT mesh_service_validate(const mesh_service *s);
MID_RESULT mesh_policy_validate(const mesh_policy *p);

/* Canonical JSON (jansson-encoded, keys sorted, compact) of the record in
 * the shape of the Istio `spec` it came from, plus "namespace" and "name";
 * this is what the store keeps. *out is malloc'd, caller frees.
 * from_json validates (as above). MID_E_INVALID, MID_E_NOMEM. */
MID_RESULT mesh_service_to_json(const mesh_service *s, char **out);
MID_RESULT mesh_service_from_json(const char *json, mesh_service **out);
MID_RESULT mesh_policy_to_json(const mesh_policy *p, char **out);
MID_RESULT mesh_policy_from_json(const char *json, mesh_policy **out);

/* ---- the registry snapshot ---------------------------------------------------- */

/* An immutable, reference-counted view of every service and policy at one
 * store revision, with derived indexes (host -> service, endpoints by
 * SPIFFE ID). Built from owned records; readable from any thread. */
typedef struct mesh_registry mesh_registry;

/* Takes ownership of `services` and `policies` (arrays of pointers and the
 * records; on failure too). Fills each endpoint's spiffe_id from its
 * service account for `trust_domain`. MID_E_INVALID when two services claim
 * one host (message names both), MID_E_NOMEM. */
MID_RESULT mesh_registry_new(const char *trust_domain, int64_t revision,
                             mesh_service **services, size_t n_services,
                             mesh_policy **policies, size_t n_policies,
                             mesh_registry **out);
mesh_registry *mesh_registry_ref(mesh_registry *r);
void mesh_registry_unref(mesh_registry *r); /* NULL ok */

int64_t mesh_registry_revision(const mesh_registry *r);
const char *mesh_registry_trust_domain(const mesh_registry *r);
size_t mesh_registry_n_services(const mesh_registry *r);
/* Services sorted by (namespace, name). */
const mesh_service *mesh_registry_service(const mesh_registry *r, size_t i);
size_t mesh_registry_n_policies(const mesh_registry *r);
/* Policies sorted by (namespace, name). */
const mesh_policy *mesh_registry_policy(const mesh_registry *r, size_t i);
/* The service owning `host` (exact), or "name" / "namespace/name"; NULL if none. */
const mesh_service *mesh_registry_find_service(const mesh_registry *r, const char *name_or_host);

/* Every endpoint whose spiffe_id is `id`, with its service, in registry
 * order: fills at most `max` pairs, returns how many exist. */
typedef struct {
    const mesh_service *service;
    const mesh_endpoint *endpoint;
} mesh_workload_ref;
size_t mesh_registry_workloads(const mesh_registry *r, const char *spiffe_id,
                               mesh_workload_ref *out, size_t max);

#endif
