/* The mesh resource model: freeing, cloning, validation, the canonical JSON
 * codec and the registry snapshot. See meshcore/model.h for the contracts and
 * docs/mesh.md ("Resource files") for the rules each field obeys.
 *
 * Validation messages start with the field path in the shape of the Istio
 * document ("spec.endpoints[1].address", "metadata.name",
 * "spec.endpoints[0].labels[\"app\"]"), followed by ": " and the reason. The
 * YAML loader relies on that prefix to point at the line and column of the
 * offending node, so every message here must keep it.
 */
#include "meshcore/model.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "identity/spiffe_id.h"
#include "lib/quote.h"
#include "meshcore/model_int.h"

#define DNS_LABEL_MAX 63
#define PORT_NAME_MAX 63
#define METHOD_MAX 64
#define HTTP_PATH_MAX 1024
#define JSON_MAX ((size_t)16 << 20) /* one record as JSON */
#define PATH_BUF 512                /* a field path for messages */

/* ---- small string helpers ------------------------------------------------ */

static bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

static bool is_alnum(char c)
{
    return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

/* DNS-1123 label: [a-z0-9]([-a-z0-9]*[a-z0-9])?, 1..63 bytes. */
static bool dns_label_ok(const char *s, size_t n)
{
    if (n == 0 || n > DNS_LABEL_MAX) return false;
    if (!is_lower_alnum(s[0]) || !is_lower_alnum(s[n - 1])) return false;
    for (size_t i = 0; i < n; i++)
        if (!is_lower_alnum(s[i]) && s[i] != '-') return false;
    return true;
}

/* DNS-1123 subdomain: dot-separated labels, 1..253 bytes in all. */
static bool dns_subdomain_ok(const char *s, size_t n)
{
    if (n == 0 || n > MESH_NAME_MAX) return false;
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || s[i] == '.') {
            if (!dns_label_ok(s + start, i - start)) return false;
            start = i + 1;
        }
    }
    return true;
}

/* Kubernetes label "name" part (and non-empty label value):
 * [A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?, at most 63 bytes. */
static bool k8s_name_ok(const char *s, size_t n)
{
    if (n == 0 || n > DNS_LABEL_MAX) return false;
    if (!is_alnum(s[0]) || !is_alnum(s[n - 1])) return false;
    for (size_t i = 0; i < n; i++)
        if (!is_alnum(s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.') return false;
    return true;
}

size_t mesh_path_key(char *out, size_t o, size_t cap, const char *key, size_t klen)
{
    static const char hex[] = "0123456789abcdef";
    if (o + 2 < cap) {
        out[o++] = '[';
        out[o++] = '"';
    }
    for (size_t i = 0; i < klen && o + 7 < cap; i++) {
        unsigned char ch = (unsigned char)key[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') {
            out[o++] = (char)ch;
        } else {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 0xf];
        }
    }
    if (o + 2 < cap) {
        out[o++] = '"';
        out[o++] = ']';
    }
    out[o] = '\0';
    return o;
}

/* The field path segment ["key"] of a NUL-terminated key (see mesh_path_key). */
static void key_segment(const char *key, char *out, size_t cap)
{
    mesh_path_key(out, 0, cap, key, strlen(key));
}

/* "path" + suffix built with printf arguments; truncated silently (paths are
 * only for messages). */
__attribute__((format(printf, 4, 5))) static void path_fmt(char *out, size_t cap, const char *base,
                                                           const char *fmt, ...)
{
    size_t n = strnlen(base, cap - 1);
    memmove(out, base, n);
    out[n] = '\0';
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out + n, cap - n, fmt, ap);
    va_end(ap);
}

/* Fails with "PATH: message". */
__attribute__((format(printf, 4, 5))) static mid_result fail_at(int line, mid_err err,
                                                               const char *path, const char *fmt,
                                                               ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return mid_fail(err, __FILE__, line, "%s: %s", path, msg);
}

#define FAIL(err, path, ...) return fail_at(__LINE__, (err), (path), __VA_ARGS__)

/* ---- enums ---------------------------------------------------------------- */

static const char *const protocol_names[] = {"HTTP", "HTTP2", "GRPC", "HTTPS",
                                             "TCP",  "TLS",   "MONGO"};
#define N_PROTOCOLS (sizeof protocol_names / sizeof protocol_names[0])

const char *mesh_protocol_name(mesh_protocol p)
{
    if ((unsigned)p >= N_PROTOCOLS) return "UNKNOWN";
    return protocol_names[p];
}

MID_RESULT mesh_protocol_parse(const char *s, mesh_protocol *out)
{
    char q[QUOTE_MAX + 8];
    for (size_t i = 0; s != NULL && i < N_PROTOCOLS; i++) {
        if (strcmp(s, protocol_names[i]) == 0) {
            *out = (mesh_protocol)i;
            return mid_ok();
        }
    }
    quote_str(s, q, sizeof q);
    MID_BAIL(MID_E_INVALID,
             "protocol \"%s\" is not supported (supported: HTTP, HTTP2, GRPC, HTTPS, TCP, TLS, "
             "MONGO)",
             q);
}

int mesh_protocol_is_http(mesh_protocol p)
{
    return p == MESH_PROTO_HTTP || p == MESH_PROTO_HTTP2 || p == MESH_PROTO_GRPC;
}

static const char *const health_names[] = {"HEALTHY", "UNHEALTHY", "DRAINING"};
#define N_HEALTH (sizeof health_names / sizeof health_names[0])

const char *mesh_health_name(mesh_health h)
{
    if ((unsigned)h >= N_HEALTH) return "UNKNOWN";
    return health_names[h];
}

MID_RESULT mesh_health_parse(const char *s, mesh_health *out)
{
    char q[QUOTE_MAX + 8];
    for (size_t i = 0; s != NULL && i < N_HEALTH; i++) {
        if (strcmp(s, health_names[i]) == 0) {
            *out = (mesh_health)i;
            return mid_ok();
        }
    }
    quote_str(s, q, sizeof q);
    MID_BAIL(MID_E_INVALID, "health \"%s\" is not supported (supported: HEALTHY, UNHEALTHY, DRAINING)",
             q);
}

/* ---- freeing --------------------------------------------------------------- */

void mesh_strv_free(char **v, size_t n)
{
    if (v == NULL) return;
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

void mesh_labels_free(mesh_label *l, size_t n)
{
    if (l == NULL) return;
    for (size_t i = 0; i < n; i++) {
        free(l[i].key);
        free(l[i].value);
    }
    free(l);
}

static int label_cmp(const void *a, const void *b)
{
    return strcmp(((const mesh_label *)a)->key, ((const mesh_label *)b)->key);
}

void mesh_labels_sort(mesh_label *l, size_t n)
{
    if (n > 1) qsort(l, n, sizeof *l, label_cmp);
}

static void endpoint_clear(mesh_endpoint *e)
{
    free(e->address);
    if (e->ports != NULL)
        for (size_t i = 0; i < e->n_ports; i++) free(e->ports[i].name);
    free(e->ports);
    mesh_labels_free(e->labels, e->n_labels);
    free(e->spiffe_id);
    free(e->service_account);
}

void mesh_service_free(mesh_service *s)
{
    if (s == NULL) return;
    free(s->namespace_);
    free(s->name);
    mesh_strv_free(s->hosts, s->n_hosts);
    if (s->ports != NULL)
        for (size_t i = 0; i < s->n_ports; i++) free(s->ports[i].name);
    free(s->ports);
    if (s->endpoints != NULL)
        for (size_t i = 0; i < s->n_endpoints; i++) endpoint_clear(&s->endpoints[i]);
    free(s->endpoints);
    free(s);
}

static void source_clear(mesh_source *s)
{
    mesh_strv_free(s->principals, s->n_principals);
    mesh_strv_free(s->not_principals, s->n_not_principals);
    mesh_strv_free(s->namespaces, s->n_namespaces);
}

static void operation_clear(mesh_operation *o)
{
    mesh_strv_free(o->methods, o->n_methods);
    mesh_strv_free(o->paths, o->n_paths);
    free(o->ports);
    mesh_strv_free(o->hosts, o->n_hosts);
}

static void rule_clear(mesh_rule *r)
{
    if (r->from != NULL)
        for (size_t i = 0; i < r->n_from; i++) source_clear(&r->from[i]);
    free(r->from);
    if (r->to != NULL)
        for (size_t i = 0; i < r->n_to; i++) operation_clear(&r->to[i]);
    free(r->to);
}

void mesh_policy_free(mesh_policy *p)
{
    if (p == NULL) return;
    free(p->namespace_);
    free(p->name);
    mesh_labels_free(p->selector, p->n_selector);
    if (p->rules != NULL)
        for (size_t i = 0; i < p->n_rules; i++) rule_clear(&p->rules[i]);
    free(p->rules);
    free(p);
}

void mesh_doc_list_free(mesh_doc *docs, size_t n)
{
    if (docs == NULL) return;
    for (size_t i = 0; i < n; i++) {
        free(docs[i].source);
        if (docs[i].kind == MESH_KIND_SERVICE)
            mesh_service_free(docs[i].u.service);
        else
            mesh_policy_free(docs[i].u.policy);
    }
    free(docs);
}

/* ---- cloning --------------------------------------------------------------- */

/* calloc(n, size) that returns a unique non-NULL pointer for n == 0 is not
 * needed: empty arrays are NULL. */
static void *alloc_array(size_t n, size_t size)
{
    if (n == 0) return NULL;
    return calloc(n, size);
}

static mid_result dup_str(const char *s, char **out)
{
    *out = NULL;
    if (s == NULL) return mid_ok();
    *out = strdup(s);
    MID_ENSURE_MEM(*out);
    return mid_ok();
}

/* Copies a string array; on failure *out is NULL and nothing leaks. */
static mid_result dup_strv(char *const *v, size_t n, char ***out)
{
    *out = NULL;
    if (n == 0) return mid_ok();
    char **c = alloc_array(n, sizeof *c);
    MID_ENSURE_MEM(c);
    for (size_t i = 0; i < n; i++) {
        mid_result r = dup_str(v[i], &c[i]);
        if (!mid_is_ok(r)) {
            mesh_strv_free(c, n);
            return r;
        }
    }
    *out = c;
    return mid_ok();
}

static mid_result dup_labels(const mesh_label *l, size_t n, mesh_label **out)
{
    *out = NULL;
    if (n == 0) return mid_ok();
    mesh_label *c = alloc_array(n, sizeof *c);
    MID_ENSURE_MEM(c);
    for (size_t i = 0; i < n; i++) {
        mid_result r = dup_str(l[i].key, &c[i].key);
        if (mid_is_ok(r)) r = dup_str(l[i].value, &c[i].value);
        if (!mid_is_ok(r)) {
            mesh_labels_free(c, n);
            return r;
        }
    }
    *out = c;
    return mid_ok();
}

static mid_result dup_endpoint(const mesh_endpoint *e, mesh_endpoint *c)
{
    mid_result r = MID_OK_RESULT;
    memset(c, 0, sizeof *c);
    c->health = e->health;
    MID_TRY(r, dup_str(e->address, &c->address));
    MID_TRY(r, dup_str(e->spiffe_id, &c->spiffe_id));
    MID_TRY(r, dup_str(e->service_account, &c->service_account));
    MID_TRY(r, dup_labels(e->labels, e->n_labels, &c->labels));
    c->n_labels = e->n_labels;
    if (e->n_ports > 0) {
        c->ports = alloc_array(e->n_ports, sizeof *c->ports);
        MID_CHECK_MEM(r, c->ports);
        c->n_ports = e->n_ports;
        for (size_t i = 0; i < e->n_ports; i++) {
            c->ports[i].number = e->ports[i].number;
            MID_TRY(r, dup_str(e->ports[i].name, &c->ports[i].name));
        }
    }
out:
    /* On failure the caller clears *c (its counts cover what was set). */
    return r;
}

MID_RESULT mesh_service_clone(const mesh_service *s, mesh_service **out)
{
    mid_result r = MID_OK_RESULT;
    *out = NULL;
    mesh_service *c = calloc(1, sizeof *c);
    MID_CHECK_MEM(r, c);
    c->mesh_internal = s->mesh_internal;
    MID_TRY(r, dup_str(s->namespace_, &c->namespace_));
    MID_TRY(r, dup_str(s->name, &c->name));
    MID_TRY(r, dup_strv(s->hosts, s->n_hosts, &c->hosts));
    c->n_hosts = s->n_hosts;
    if (s->n_ports > 0) {
        c->ports = alloc_array(s->n_ports, sizeof *c->ports);
        MID_CHECK_MEM(r, c->ports);
        c->n_ports = s->n_ports;
        for (size_t i = 0; i < s->n_ports; i++) {
            c->ports[i] = s->ports[i];
            c->ports[i].name = NULL;
            MID_TRY(r, dup_str(s->ports[i].name, &c->ports[i].name));
        }
    }
    if (s->n_endpoints > 0) {
        c->endpoints = alloc_array(s->n_endpoints, sizeof *c->endpoints);
        MID_CHECK_MEM(r, c->endpoints);
        c->n_endpoints = s->n_endpoints;
        for (size_t i = 0; i < s->n_endpoints; i++)
            MID_TRY(r, dup_endpoint(&s->endpoints[i], &c->endpoints[i]));
    }
    *out = c;
    c = NULL;
out:
    mesh_service_free(c);
    return r;
}

static mid_result dup_source(const mesh_source *s, mesh_source *c)
{
    memset(c, 0, sizeof *c);
    MID_GUARD(dup_strv(s->principals, s->n_principals, &c->principals));
    c->n_principals = s->n_principals;
    MID_GUARD(dup_strv(s->not_principals, s->n_not_principals, &c->not_principals));
    c->n_not_principals = s->n_not_principals;
    MID_GUARD(dup_strv(s->namespaces, s->n_namespaces, &c->namespaces));
    c->n_namespaces = s->n_namespaces;
    return mid_ok();
}

static mid_result dup_operation(const mesh_operation *o, mesh_operation *c)
{
    memset(c, 0, sizeof *c);
    MID_GUARD(dup_strv(o->methods, o->n_methods, &c->methods));
    c->n_methods = o->n_methods;
    MID_GUARD(dup_strv(o->paths, o->n_paths, &c->paths));
    c->n_paths = o->n_paths;
    MID_GUARD(dup_strv(o->hosts, o->n_hosts, &c->hosts));
    c->n_hosts = o->n_hosts;
    if (o->n_ports > 0) {
        c->ports = alloc_array(o->n_ports, sizeof *c->ports);
        MID_ENSURE_MEM(c->ports);
        memcpy(c->ports, o->ports, o->n_ports * sizeof *c->ports);
        c->n_ports = o->n_ports;
    }
    return mid_ok();
}

static mid_result dup_rule(const mesh_rule *s, mesh_rule *c)
{
    memset(c, 0, sizeof *c);
    if (s->n_from > 0) {
        c->from = alloc_array(s->n_from, sizeof *c->from);
        MID_ENSURE_MEM(c->from);
        c->n_from = s->n_from;
        for (size_t i = 0; i < s->n_from; i++) MID_GUARD(dup_source(&s->from[i], &c->from[i]));
    }
    if (s->n_to > 0) {
        c->to = alloc_array(s->n_to, sizeof *c->to);
        MID_ENSURE_MEM(c->to);
        c->n_to = s->n_to;
        for (size_t i = 0; i < s->n_to; i++) MID_GUARD(dup_operation(&s->to[i], &c->to[i]));
    }
    return mid_ok();
}

MID_RESULT mesh_policy_clone(const mesh_policy *p, mesh_policy **out)
{
    mid_result r = MID_OK_RESULT;
    *out = NULL;
    mesh_policy *c = calloc(1, sizeof *c);
    MID_CHECK_MEM(r, c);
    c->action = p->action;
    MID_TRY(r, dup_str(p->namespace_, &c->namespace_));
    MID_TRY(r, dup_str(p->name, &c->name));
    MID_TRY(r, dup_labels(p->selector, p->n_selector, &c->selector));
    c->n_selector = p->n_selector;
    if (p->n_rules > 0) {
        c->rules = alloc_array(p->n_rules, sizeof *c->rules);
        MID_CHECK_MEM(r, c->rules);
        c->n_rules = p->n_rules;
        for (size_t i = 0; i < p->n_rules; i++) MID_TRY(r, dup_rule(&p->rules[i], &c->rules[i]));
    }
    *out = c;
    c = NULL;
out:
    mesh_policy_free(c);
    return r;
}

/* ---- validation --------------------------------------------------------------- */

/* A required metadata name at `path`: at most MESH_NAME_MAX bytes and of
 * the form `ok` accepts; `what` names that form after "is not a valid". */
static mid_result check_meta_name(const char *path, const char *s,
                                  bool (*ok)(const char *s, size_t n), const char *what)
{
    char q[QUOTE_MAX + 8];
    if (s == NULL) FAIL(MID_E_INVALID, path, "is required");
    size_t n = strnlen(s, MESH_NAME_MAX + 1);
    quote_str(s, q, sizeof q);
    if (n > MESH_NAME_MAX)
        FAIL(MID_E_TOO_LARGE, path, "\"%s\" is longer than %d characters", q, MESH_NAME_MAX);
    if (!ok(s, n)) FAIL(MID_E_INVALID, path, "\"%s\" is not a valid %s", q, what);
    return mid_ok();
}

static mid_result check_namespace(const char *path, const char *s)
{
    return check_meta_name(path, s, dns_label_ok,
                           "namespace (DNS-1123 label: lower case letters, digits and '-', at "
                           "most 63 characters)");
}

static mid_result check_name(const char *path, const char *s)
{
    return check_meta_name(path, s, dns_subdomain_ok,
                           "name (DNS-1123 subdomain: lower case letters, digits, '-' and '.')");
}

/* A label key (Kubernetes qualified name: [prefix/]name) and its value. */
static mid_result check_label(const char *path, const mesh_label *l)
{
    char q[QUOTE_MAX + 8];
    if (l->key == NULL || l->value == NULL) FAIL(MID_E_INVALID, path, "label without key or value");
    size_t kn = strnlen(l->key, MESH_NAME_MAX + DNS_LABEL_MAX + 2);
    quote_str(l->key, q, sizeof q);
    if (kn > MESH_NAME_MAX + DNS_LABEL_MAX + 1)
        FAIL(MID_E_TOO_LARGE, path, "label key \"%s\" is too long", q);
    const char *slash = memchr(l->key, '/', kn);
    const char *name = l->key;
    size_t name_len = kn;
    if (slash != NULL) {
        size_t pn = (size_t)(slash - l->key);
        if (pn > MESH_NAME_MAX)
            FAIL(MID_E_TOO_LARGE, path, "label key prefix of \"%s\" is longer than %d characters", q,
                 MESH_NAME_MAX);
        if (!dns_subdomain_ok(l->key, pn))
            FAIL(MID_E_INVALID, path,
                 "label key \"%s\": the prefix before '/' must be a DNS-1123 subdomain", q);
        name = slash + 1;
        name_len = kn - pn - 1;
    }
    if (name_len > DNS_LABEL_MAX)
        FAIL(MID_E_TOO_LARGE, path, "label key \"%s\": the name is longer than %d characters", q,
             DNS_LABEL_MAX);
    if (!k8s_name_ok(name, name_len))
        FAIL(MID_E_INVALID, path,
             "label key \"%s\" is not valid (letters, digits, '-', '_' and '.', starting and "
             "ending with a letter or digit, optionally prefixed by a DNS subdomain and '/')",
             q);
    size_t vn = strnlen(l->value, MESH_LABEL_VALUE_MAX + 1);
    quote_str(l->value, q, sizeof q);
    if (vn > MESH_LABEL_VALUE_MAX)
        FAIL(MID_E_TOO_LARGE, path, "label value \"%s\" is longer than %d characters", q,
             MESH_LABEL_VALUE_MAX);
    if (vn > 0 && !k8s_name_ok(l->value, vn))
        FAIL(MID_E_INVALID, path,
             "label value \"%s\" is not valid (letters, digits, '-', '_' and '.', starting and "
             "ending with a letter or digit)",
             q);
    return mid_ok();
}

static mid_result check_labels(const char *path, const mesh_label *l, size_t n)
{
    char p[PATH_BUF];
    char seg[PATH_BUF / 2];
    if (n > MESH_LABELS_MAX)
        FAIL(MID_E_TOO_LARGE, path, "%zu labels is over the limit of %d", n, MESH_LABELS_MAX);
    if (n > 0 && l == NULL) FAIL(MID_E_INVALID, path, "labels missing");
    for (size_t i = 0; i < n; i++) {
        key_segment(l[i].key ? l[i].key : "", seg, sizeof seg);
        path_fmt(p, sizeof p, path, "%s", seg);
        MID_GUARD(check_label(p, &l[i]));
        if (i > 0) {
            int c = strcmp(l[i - 1].key, l[i].key);
            if (c == 0) FAIL(MID_E_INVALID, p, "duplicate label key");
            if (c > 0) FAIL(MID_E_INVALID, p, "labels are not sorted by key");
        }
    }
    return mid_ok();
}

/* Lower-case DNS name, no wildcard. */
static mid_result check_host(const char *path, const char *h)
{
    char q[QUOTE_MAX + 8];
    if (h == NULL) FAIL(MID_E_INVALID, path, "host missing");
    size_t n = strnlen(h, MESH_NAME_MAX + 1);
    quote_str(h, q, sizeof q);
    if (n > MESH_NAME_MAX)
        FAIL(MID_E_TOO_LARGE, path, "host \"%s\" is longer than %d characters", q, MESH_NAME_MAX);
    if (memchr(h, '*', n) != NULL)
        FAIL(MID_E_INVALID, path,
             "host \"%s\": wildcard hosts are not supported (name each host exactly)", q);
    for (size_t i = 0; i < n; i++)
        if (h[i] >= 'A' && h[i] <= 'Z')
            FAIL(MID_E_INVALID, path, "host \"%s\" must be lower case", q);
    if (!dns_subdomain_ok(h, n))
        FAIL(MID_E_INVALID, path,
             "host \"%s\" is not a valid DNS name (lower case letters, digits, '-' and '.')", q);
    return mid_ok();
}

static bool port_name_ok(const char *s)
{
    size_t n = strnlen(s, PORT_NAME_MAX + 1);
    if (n == 0 || n > PORT_NAME_MAX || !is_alnum(s[0])) return false;
    for (size_t i = 0; i < n; i++)
        if (!is_alnum(s[i]) && s[i] != '-' && s[i] != '_') return false;
    return true;
}

static mid_result check_port_number(const char *path, uint32_t n)
{
    if (n < 1 || n > 65535) FAIL(MID_E_INVALID, path, "port %u is not in 1..65535", n);
    return mid_ok();
}

static mid_result check_ports(const mesh_service *s)
{
    char p[PATH_BUF];
    char q[QUOTE_MAX + 8];
    if (s->n_ports == 0 || s->ports == NULL)
        FAIL(MID_E_INVALID, "spec.ports", "at least one port is required");
    if (s->n_ports > MESH_PORTS_MAX)
        FAIL(MID_E_TOO_LARGE, "spec.ports", "%zu ports is over the limit of %d", s->n_ports,
             MESH_PORTS_MAX);
    for (size_t i = 0; i < s->n_ports; i++) {
        const mesh_port *pt = &s->ports[i];
        snprintf(p, sizeof p, "spec.ports[%zu].name", i);
        if (pt->name == NULL) FAIL(MID_E_INVALID, p, "is required");
        quote_str(pt->name, q, sizeof q);
        if (!port_name_ok(pt->name))
            FAIL(MID_E_INVALID, p,
                 "port name \"%s\" is not valid (letters, digits, '-' and '_', starting with a "
                 "letter or digit, at most %d characters)",
                 q, PORT_NAME_MAX);
        snprintf(p, sizeof p, "spec.ports[%zu].number", i);
        MID_GUARD(check_port_number(p, pt->number));
        snprintf(p, sizeof p, "spec.ports[%zu].protocol", i);
        if ((unsigned)pt->protocol >= N_PROTOCOLS) FAIL(MID_E_INVALID, p, "unknown protocol");
        if (pt->target_port != 0) {
            snprintf(p, sizeof p, "spec.ports[%zu].targetPort", i);
            MID_GUARD(check_port_number(p, pt->target_port));
        }
        for (size_t j = 0; j < i; j++) {
            if (s->ports[j].number == pt->number) {
                snprintf(p, sizeof p, "spec.ports[%zu].number", i);
                FAIL(MID_E_INVALID, p, "port %u is already used by spec.ports[%zu]", pt->number, j);
            }
            if (strcmp(s->ports[j].name, pt->name) == 0) {
                snprintf(p, sizeof p, "spec.ports[%zu].name", i);
                FAIL(MID_E_INVALID, p, "port name \"%s\" is already used by spec.ports[%zu]", q, j);
            }
        }
    }
    return mid_ok();
}

static mid_result check_address(const char *path, const char *a)
{
    char q[QUOTE_MAX + 8];
    if (a == NULL) FAIL(MID_E_INVALID, path, "is required");
    quote_str(a, q, sizeof q);
    if (strncmp(a, "unix://", 7) == 0)
        FAIL(MID_E_INVALID, path,
             "\"%s\" is not an IP address (Unix domain socket endpoints are not supported)", q);
    unsigned char bin[16];
    char canon[INET6_ADDRSTRLEN];
    int family = strchr(a, ':') != NULL ? AF_INET6 : AF_INET;
    if (inet_pton(family, a, bin) != 1)
        FAIL(MID_E_INVALID, path, "\"%s\" is not an IP address (DNS resolution is not supported)",
             q);
    if (inet_ntop(family, bin, canon, sizeof canon) == NULL || strcmp(canon, a) != 0)
        FAIL(MID_E_INVALID, path, "\"%s\" is not in canonical form (write \"%s\")", q, canon);
    return mid_ok();
}

/* The SPIFFE parser's message, behind our field path. */
static mid_result check_spiffe_id(const char *path, const char *id, bool need_workload)
{
    spiffe_id *parsed = NULL;
    mid_result r = spiffe_id_parse(id, strnlen(id, SPIFFE_ID_MAX + 1), &parsed);
    if (!mid_is_ok(r)) FAIL(r.err, path, "%s", mid_errmsg());
    bool workload = spiffe_id_is_workload(parsed);
    spiffe_id_free(parsed);
    if (need_workload && !workload) {
        char q[QUOTE_MAX + 8];
        quote_str(id, q, sizeof q);
        FAIL(MID_E_INVALID, path, "\"%s\" names a trust domain, not a workload", q);
    }
    return mid_ok();
}

static mid_result check_endpoint(const mesh_service *s, size_t idx)
{
    const mesh_endpoint *e = &s->endpoints[idx];
    char base[64];
    char p[PATH_BUF];
    char seg[PATH_BUF / 2];
    char q[QUOTE_MAX + 8];
    snprintf(base, sizeof base, "spec.endpoints[%zu]", idx);
    path_fmt(p, sizeof p, base, ".address");
    MID_GUARD(check_address(p, e->address));
    path_fmt(p, sizeof p, base, ".ports");
    if (e->n_ports > MESH_PORTS_MAX)
        FAIL(MID_E_TOO_LARGE, p, "%zu ports is over the limit of %d", e->n_ports, MESH_PORTS_MAX);
    if (e->n_ports > 0 && e->ports == NULL) FAIL(MID_E_INVALID, p, "ports missing");
    for (size_t i = 0; i < e->n_ports; i++) {
        const mesh_endpoint_port *ep = &e->ports[i];
        key_segment(ep->name ? ep->name : "", seg, sizeof seg);
        path_fmt(p, sizeof p, base, ".ports%s", seg);
        if (ep->name == NULL) FAIL(MID_E_INVALID, p, "port name missing");
        quote_str(ep->name, q, sizeof q);
        bool known = false;
        for (size_t j = 0; j < s->n_ports && !known; j++) known = strcmp(s->ports[j].name, ep->name) == 0;
        if (!known) FAIL(MID_E_INVALID, p, "\"%s\" is not the name of a port of this service", q);
        MID_GUARD(check_port_number(p, ep->number));
        for (size_t j = 0; j < i; j++)
            if (strcmp(e->ports[j].name, ep->name) == 0)
                FAIL(MID_E_INVALID, p, "port \"%s\" is given twice", q);
    }
    path_fmt(p, sizeof p, base, ".labels");
    MID_GUARD(check_labels(p, e->labels, e->n_labels));
    path_fmt(p, sizeof p, base, ".health");
    if ((unsigned)e->health >= N_HEALTH) FAIL(MID_E_INVALID, p, "unknown health");
    path_fmt(p, sizeof p, base, ".serviceAccount");
    if (e->spiffe_id != NULL) MID_GUARD(check_spiffe_id(p, e->spiffe_id, true));
    if (e->service_account != NULL) {
        size_t n = strnlen(e->service_account, MESH_NAME_MAX + 1);
        quote_str(e->service_account, q, sizeof q);
        if (!dns_label_ok(e->service_account, n))
            FAIL(MID_E_INVALID, p,
                 "\"%s\" is neither a service account name (DNS-1123 label) nor a SPIFFE ID "
                 "(spiffe://...)",
                 q);
    }
    return mid_ok();
}

MID_RESULT mesh_service_validate(const mesh_service *s)
{
    char p[PATH_BUF];
    MID_ENSURE(s != NULL, MID_E_INVALID, "service missing");
    MID_GUARD(check_namespace("metadata.namespace", s->namespace_));
    MID_GUARD(check_name("metadata.name", s->name));
    if (s->n_hosts == 0 || s->hosts == NULL)
        FAIL(MID_E_INVALID, "spec.hosts", "at least one host is required");
    if (s->n_hosts > MESH_HOSTS_MAX)
        FAIL(MID_E_TOO_LARGE, "spec.hosts", "%zu hosts is over the limit of %d", s->n_hosts,
             MESH_HOSTS_MAX);
    for (size_t i = 0; i < s->n_hosts; i++) {
        snprintf(p, sizeof p, "spec.hosts[%zu]", i);
        MID_GUARD(check_host(p, s->hosts[i]));
        for (size_t j = 0; j < i; j++)
            if (strcmp(s->hosts[i], s->hosts[j]) == 0)
                FAIL(MID_E_INVALID, p, "host is listed twice");
    }
    MID_GUARD(check_ports(s));
    if (s->n_endpoints > MESH_ENDPOINTS_MAX)
        FAIL(MID_E_TOO_LARGE, "spec.endpoints", "%zu endpoints is over the limit of %d",
             s->n_endpoints, MESH_ENDPOINTS_MAX);
    if (s->n_endpoints > 0 && s->endpoints == NULL)
        FAIL(MID_E_INVALID, "spec.endpoints", "endpoints missing");
    for (size_t i = 0; i < s->n_endpoints; i++) MID_GUARD(check_endpoint(s, i));
    return mid_ok();
}

/* Splits off one leading or trailing '*' (Istio's prefix/suffix match).
 * Returns false when a '*' is left anywhere else. */
static bool strip_wildcard(const char *v, size_t n, const char **core, size_t *core_len, bool *wild)
{
    *core = v;
    *core_len = n;
    *wild = false;
    if (n > 0 && v[0] == '*') {
        (*core)++;
        (*core_len)--;
        *wild = true;
    } else if (n > 0 && v[n - 1] == '*') {
        (*core_len)--;
        *wild = true;
    }
    return memchr(*core, '*', *core_len) == NULL;
}

static mid_result check_principal(const char *path, const char *v)
{
    char q[QUOTE_MAX + 8];
    size_t n = strnlen(v, SPIFFE_ID_MAX + 2);
    quote_str(v, q, sizeof q);
    if (n > SPIFFE_ID_MAX + 1)
        FAIL(MID_E_TOO_LARGE, path, "principal \"%s\" is longer than %d characters", q,
             SPIFFE_ID_MAX);
    if (n == 0) FAIL(MID_E_INVALID, path, "empty principal");
    if (strcmp(v, "*") == 0) return mid_ok();
    const char *core;
    size_t clen;
    bool wild;
    if (!strip_wildcard(v, n, &core, &clen, &wild))
        FAIL(MID_E_INVALID, path,
             "principal \"%s\": '*' is only allowed alone, as a prefix or as a suffix", q);
    bool full = clen >= 9 && memcmp(core, "spiffe://", 9) == 0;
    if (!full && memchr(core, '/', clen) == NULL)
        FAIL(MID_E_INVALID, path,
             "principal \"%s\" must be \"<trust-domain>/<path>\", a full \"spiffe://...\" ID or "
             "\"*\"",
             q);
    if (!wild) {
        if (full) return check_spiffe_id(path, v, true);
        char id[SPIFFE_ID_MAX + 16];
        snprintf(id, sizeof id, "spiffe://%s", v);
        return check_spiffe_id(path, id, true);
    }
    for (size_t i = full ? 9 : 0; i < clen; i++) {
        char c = core[i];
        if (!is_alnum(c) && c != '.' && c != '-' && c != '_' && c != '/')
            FAIL(MID_E_INVALID, path,
                 "principal \"%s\" contains a character that cannot appear in a SPIFFE ID", q);
    }
    return mid_ok();
}

static mid_result check_namespace_pattern(const char *path, const char *v)
{
    char q[QUOTE_MAX + 8];
    size_t n = strnlen(v, DNS_LABEL_MAX + 2);
    quote_str(v, q, sizeof q);
    if (n > DNS_LABEL_MAX + 1)
        FAIL(MID_E_TOO_LARGE, path, "namespace \"%s\" is longer than %d characters", q,
             DNS_LABEL_MAX);
    if (strcmp(v, "*") == 0) return mid_ok();
    const char *core;
    size_t clen;
    bool wild;
    bool ok = strip_wildcard(v, n, &core, &clen, &wild) && clen > 0;
    for (size_t i = 0; ok && i < clen; i++) ok = is_lower_alnum(core[i]) || core[i] == '-';
    if (ok && !wild) ok = dns_label_ok(v, n);
    if (!ok)
        FAIL(MID_E_INVALID, path,
             "namespace \"%s\" is not a DNS-1123 label (optionally with '*' as prefix or "
             "suffix, or \"*\")",
             q);
    return mid_ok();
}

static mid_result check_method(const char *path, const char *v)
{
    char q[QUOTE_MAX + 8];
    size_t n = strnlen(v, METHOD_MAX + 1);
    quote_str(v, q, sizeof q);
    if (n > METHOD_MAX)
        FAIL(MID_E_TOO_LARGE, path, "method \"%s\" is longer than %d characters", q, METHOD_MAX);
    bool ok = n > 0 && v[0] >= 'A' && v[0] <= 'Z';
    for (size_t i = 0; ok && i < n; i++)
        ok = (v[i] >= 'A' && v[i] <= 'Z') || (v[i] >= '0' && v[i] <= '9') || v[i] == '-' ||
             v[i] == '_';
    if (!ok) FAIL(MID_E_INVALID, path, "method \"%s\" must be an upper-case token such as GET", q);
    return mid_ok();
}

static mid_result check_http_path(const char *path, const char *v)
{
    char q[QUOTE_MAX + 8];
    size_t n = strnlen(v, HTTP_PATH_MAX + 1);
    quote_str(v, q, sizeof q);
    if (n > HTTP_PATH_MAX)
        FAIL(MID_E_TOO_LARGE, path, "path \"%s\" is longer than %d characters", q, HTTP_PATH_MAX);
    if (strcmp(v, "*") == 0) return mid_ok();
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] <= 0x20 || (unsigned char)v[i] >= 0x7f)
            FAIL(MID_E_INVALID, path, "path \"%s\" contains a space or a non-printable character",
                 q);
    const char *core;
    size_t clen;
    bool wild;
    if (!strip_wildcard(v, n, &core, &clen, &wild))
        FAIL(MID_E_INVALID, path,
             "path \"%s\": '*' is only allowed alone, as a prefix or as a suffix", q);
    bool suffix_form = wild && v[0] == '*';
    if (!suffix_form && (clen == 0 || core[0] != '/'))
        FAIL(MID_E_INVALID, path, "path \"%s\" must start with '/' (or be a '*' wildcard form)", q);
    if (suffix_form && clen == 0) FAIL(MID_E_INVALID, path, "path \"%s\" is empty", q);
    return mid_ok();
}

static mid_result check_host_pattern(const char *path, const char *v)
{
    char q[QUOTE_MAX + 8];
    size_t n = strnlen(v, MESH_NAME_MAX + 2);
    quote_str(v, q, sizeof q);
    if (n > MESH_NAME_MAX + 1)
        FAIL(MID_E_TOO_LARGE, path, "host \"%s\" is longer than %d characters", q, MESH_NAME_MAX);
    if (strcmp(v, "*") == 0) return mid_ok();
    const char *core;
    size_t clen;
    bool wild;
    bool ok = strip_wildcard(v, n, &core, &clen, &wild) && clen > 0;
    for (size_t i = 0; ok && i < clen; i++) ok = is_alnum(core[i]) || core[i] == '-' || core[i] == '.';
    if (!ok)
        FAIL(MID_E_INVALID, path,
             "host \"%s\" is not a DNS name (letters, digits, '-' and '.', optionally with '*' as "
             "prefix or suffix)",
             q);
    return mid_ok();
}

typedef mid_result (*value_check)(const char *path, const char *v);

static mid_result check_values(const char *path, char *const *v, size_t n, value_check fn)
{
    char p[PATH_BUF];
    if (n > MESH_VALUES_MAX)
        FAIL(MID_E_TOO_LARGE, path, "%zu values is over the limit of %d", n, MESH_VALUES_MAX);
    if (n > 0 && v == NULL) FAIL(MID_E_INVALID, path, "values missing");
    for (size_t i = 0; i < n; i++) {
        path_fmt(p, sizeof p, path, "[%zu]", i);
        if (v[i] == NULL) FAIL(MID_E_INVALID, p, "value missing");
        MID_GUARD(fn(p, v[i]));
    }
    return mid_ok();
}

static mid_result check_rule(const mesh_rule *r, size_t idx)
{
    char base[96];
    char p[PATH_BUF];
    snprintf(base, sizeof base, "spec.rules[%zu].from", idx);
    if (r->n_from > MESH_VALUES_MAX)
        FAIL(MID_E_TOO_LARGE, base, "%zu sources is over the limit of %d", r->n_from,
             MESH_VALUES_MAX);
    if (r->n_from > 0 && r->from == NULL) FAIL(MID_E_INVALID, base, "sources missing");
    for (size_t i = 0; i < r->n_from; i++) {
        const mesh_source *s = &r->from[i];
        snprintf(base, sizeof base, "spec.rules[%zu].from[%zu].source", idx, i);
        path_fmt(p, sizeof p, base, ".principals");
        MID_GUARD(check_values(p, s->principals, s->n_principals, check_principal));
        path_fmt(p, sizeof p, base, ".notPrincipals");
        MID_GUARD(check_values(p, s->not_principals, s->n_not_principals, check_principal));
        path_fmt(p, sizeof p, base, ".namespaces");
        MID_GUARD(check_values(p, s->namespaces, s->n_namespaces, check_namespace_pattern));
    }
    snprintf(base, sizeof base, "spec.rules[%zu].to", idx);
    if (r->n_to > MESH_VALUES_MAX)
        FAIL(MID_E_TOO_LARGE, base, "%zu operations is over the limit of %d", r->n_to,
             MESH_VALUES_MAX);
    if (r->n_to > 0 && r->to == NULL) FAIL(MID_E_INVALID, base, "operations missing");
    for (size_t i = 0; i < r->n_to; i++) {
        const mesh_operation *o = &r->to[i];
        snprintf(base, sizeof base, "spec.rules[%zu].to[%zu].operation", idx, i);
        path_fmt(p, sizeof p, base, ".methods");
        MID_GUARD(check_values(p, o->methods, o->n_methods, check_method));
        path_fmt(p, sizeof p, base, ".paths");
        MID_GUARD(check_values(p, o->paths, o->n_paths, check_http_path));
        path_fmt(p, sizeof p, base, ".hosts");
        MID_GUARD(check_values(p, o->hosts, o->n_hosts, check_host_pattern));
        path_fmt(p, sizeof p, base, ".ports");
        if (o->n_ports > MESH_VALUES_MAX)
            FAIL(MID_E_TOO_LARGE, p, "%zu values is over the limit of %d", o->n_ports,
                 MESH_VALUES_MAX);
        if (o->n_ports > 0 && o->ports == NULL) FAIL(MID_E_INVALID, p, "values missing");
        for (size_t j = 0; j < o->n_ports; j++) {
            path_fmt(p, sizeof p, base, ".ports[%zu]", j);
            MID_GUARD(check_port_number(p, o->ports[j]));
        }
    }
    return mid_ok();
}

MID_RESULT mesh_policy_validate(const mesh_policy *p)
{
    MID_ENSURE(p != NULL, MID_E_INVALID, "policy missing");
    MID_GUARD(check_namespace("metadata.namespace", p->namespace_));
    MID_GUARD(check_name("metadata.name", p->name));
    MID_GUARD(check_labels("spec.selector.matchLabels", p->selector, p->n_selector));
    if (p->action != MESH_ACTION_ALLOW && p->action != MESH_ACTION_DENY)
        FAIL(MID_E_INVALID, "spec.action", "unknown action");
    if (p->n_rules > MESH_RULES_MAX)
        FAIL(MID_E_TOO_LARGE, "spec.rules", "%zu rules is over the limit of %d", p->n_rules,
             MESH_RULES_MAX);
    if (p->n_rules > 0 && p->rules == NULL) FAIL(MID_E_INVALID, "spec.rules", "rules missing");
    for (size_t i = 0; i < p->n_rules; i++) MID_GUARD(check_rule(&p->rules[i], i));
    return mid_ok();
}

/* ---- JSON encoding -------------------------------------------------------------- */

/* Adds `v` under `k`, consuming v; false when v is NULL or adding fails. */
static bool put(json_t *o, const char *k, json_t *v)
{
    return v != NULL && json_object_set_new(o, k, v) == 0;
}

static bool push(json_t *a, json_t *v) { return v != NULL && json_array_append_new(a, v) == 0; }

static json_t *strv_json(char *const *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a != NULL && i < n; i++) {
        if (!push(a, json_string(v[i]))) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

static json_t *labels_json(const mesh_label *l, size_t n)
{
    json_t *o = json_object();
    for (size_t i = 0; o != NULL && i < n; i++) {
        if (!put(o, l[i].key, json_string(l[i].value))) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

/* Puts a string list under `k` unless it is empty. */
static bool put_strv(json_t *o, const char *k, char *const *v, size_t n)
{
    return n == 0 || put(o, k, strv_json(v, n));
}

static json_t *endpoint_json(const mesh_endpoint *e)
{
    json_t *o = json_object();
    bool ok = o != NULL && put(o, "address", json_string(e->address));
    if (ok && e->n_ports > 0) {
        json_t *ports = json_object();
        ok = put(o, "ports", ports);
        for (size_t i = 0; ok && i < e->n_ports; i++)
            ok = put(ports, e->ports[i].name, json_integer(e->ports[i].number));
    }
    if (ok && e->n_labels > 0) ok = put(o, "labels", labels_json(e->labels, e->n_labels));
    if (ok && e->service_account != NULL)
        ok = put(o, "serviceAccount", json_string(e->service_account));
    /* A spiffe_id next to a service account was derived by the registry. */
    if (ok && e->spiffe_id != NULL && e->service_account == NULL)
        ok = put(o, "spiffeId", json_string(e->spiffe_id));
    if (ok && e->health != MESH_HEALTH_HEALTHY)
        ok = put(o, "health", json_string(mesh_health_name(e->health)));
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *service_json(const mesh_service *s)
{
    json_t *o = json_object();
    bool ok = o != NULL && put(o, "namespace", json_string(s->namespace_)) &&
              put(o, "name", json_string(s->name)) &&
              put(o, "hosts", strv_json(s->hosts, s->n_hosts)) &&
              put(o, "location", json_string(s->mesh_internal ? "MESH_INTERNAL" : "MESH_EXTERNAL")) &&
              put(o, "resolution", json_string("STATIC"));
    json_t *ports = ok ? json_array() : NULL;
    ok = ok && put(o, "ports", ports);
    for (size_t i = 0; ok && i < s->n_ports; i++) {
        const mesh_port *p = &s->ports[i];
        json_t *po = json_object();
        ok = push(ports, po) && put(po, "name", json_string(p->name)) &&
             put(po, "number", json_integer(p->number)) &&
             put(po, "protocol", json_string(mesh_protocol_name(p->protocol)));
        if (ok && p->target_port != 0) ok = put(po, "targetPort", json_integer(p->target_port));
    }
    json_t *eps = ok ? json_array() : NULL;
    ok = ok && put(o, "endpoints", eps);
    for (size_t i = 0; ok && i < s->n_endpoints; i++) ok = push(eps, endpoint_json(&s->endpoints[i]));
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static mid_result dump_json(json_t *o, char **out)
{
    MID_ENSURE_MEM(o);
    *out = json_dumps(o, JSON_SORT_KEYS | JSON_COMPACT);
    json_decref(o);
    MID_ENSURE_MEM(*out);
    return mid_ok();
}

MID_RESULT mesh_service_to_json(const mesh_service *s, char **out)
{
    *out = NULL;
    MID_GUARD(mesh_service_validate(s));
    return dump_json(service_json(s), out);
}

static json_t *rule_json(const mesh_rule *r)
{
    json_t *o = json_object();
    bool ok = o != NULL;
    if (ok && r->n_from > 0) {
        json_t *from = json_array();
        ok = put(o, "from", from);
        for (size_t i = 0; ok && i < r->n_from; i++) {
            const mesh_source *s = &r->from[i];
            json_t *so = json_object();
            ok = push(from, so) && put_strv(so, "principals", s->principals, s->n_principals) &&
                 put_strv(so, "notPrincipals", s->not_principals, s->n_not_principals) &&
                 put_strv(so, "namespaces", s->namespaces, s->n_namespaces);
        }
    }
    if (ok && r->n_to > 0) {
        json_t *to = json_array();
        ok = put(o, "to", to);
        for (size_t i = 0; ok && i < r->n_to; i++) {
            const mesh_operation *op = &r->to[i];
            json_t *oo = json_object();
            ok = push(to, oo) && put_strv(oo, "methods", op->methods, op->n_methods) &&
                 put_strv(oo, "paths", op->paths, op->n_paths) &&
                 put_strv(oo, "hosts", op->hosts, op->n_hosts);
            if (ok && op->n_ports > 0) {
                json_t *ports = json_array();
                ok = put(oo, "ports", ports);
                for (size_t j = 0; ok && j < op->n_ports; j++)
                    ok = push(ports, json_integer(op->ports[j]));
            }
        }
    }
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *policy_json(const mesh_policy *p)
{
    json_t *o = json_object();
    bool ok = o != NULL && put(o, "namespace", json_string(p->namespace_)) &&
              put(o, "name", json_string(p->name)) &&
              put(o, "action", json_string(p->action == MESH_ACTION_DENY ? "DENY" : "ALLOW"));
    if (ok && p->n_selector > 0) ok = put(o, "selector", labels_json(p->selector, p->n_selector));
    json_t *rules = ok ? json_array() : NULL;
    ok = ok && put(o, "rules", rules);
    for (size_t i = 0; ok && i < p->n_rules; i++) ok = push(rules, rule_json(&p->rules[i]));
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

MID_RESULT mesh_policy_to_json(const mesh_policy *p, char **out)
{
    *out = NULL;
    MID_GUARD(mesh_policy_validate(p));
    return dump_json(policy_json(p), out);
}

/* ---- JSON decoding -------------------------------------------------------------- */

/* Every key of object `o` must be in `allowed` (NULL-terminated). */
static mid_result j_keys(const json_t *o, const char *path, const char *const *allowed)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)o, k, v) {
        (void)v;
        bool known = false;
        for (size_t i = 0; allowed[i] != NULL && !known; i++) known = strcmp(k, allowed[i]) == 0;
        if (!known) {
            char q[QUOTE_MAX + 8];
            quote_str(k, q, sizeof q);
            FAIL(MID_E_INVALID, path, "unknown field \"%s\"", q);
        }
    }
    return mid_ok();
}

static mid_result j_string_value(const json_t *v, const char *path, char **out)
{
    *out = NULL;
    if (!json_is_string(v)) FAIL(MID_E_INVALID, path, "must be a string");
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (strlen(s) != n) FAIL(MID_E_INVALID, path, "contains a NUL character");
    return dup_str(s, out);
}

/* Optional string member (absent: *out stays NULL). */
static mid_result j_str(const json_t *o, const char *key, const char *path, bool required,
                        char **out)
{
    *out = NULL;
    const json_t *v = json_object_get(o, key);
    if (v == NULL) {
        if (required) FAIL(MID_E_INVALID, path, "is required");
        return mid_ok();
    }
    return j_string_value(v, path, out);
}

static mid_result j_uint(const json_t *v, const char *path, uint32_t *out)
{
    if (!json_is_integer(v)) FAIL(MID_E_INVALID, path, "must be an integer");
    json_int_t n = json_integer_value(v);
    if (n < 1 || n > 65535) FAIL(MID_E_INVALID, path, "%lld is not in 1..65535", (long long)n);
    *out = (uint32_t)n;
    return mid_ok();
}

/* Optional array of strings under `key`. On failure *out is NULL. */
static mid_result j_strv(const json_t *o, const char *key, const char *path, char ***out,
                         size_t *n)
{
    char p[PATH_BUF];
    *out = NULL;
    *n = 0;
    const json_t *a = json_object_get(o, key);
    if (a == NULL) return mid_ok();
    if (!json_is_array(a)) FAIL(MID_E_INVALID, path, "must be an array of strings");
    size_t len = json_array_size(a);
    if (len > MESH_VALUES_MAX)
        FAIL(MID_E_TOO_LARGE, path, "%zu values is over the limit of %d", len, MESH_VALUES_MAX);
    if (len == 0) return mid_ok();
    char **v = alloc_array(len, sizeof *v);
    MID_ENSURE_MEM(v);
    for (size_t i = 0; i < len; i++) {
        path_fmt(p, sizeof p, path, "[%zu]", i);
        mid_result r = j_string_value(json_array_get(a, i), p, &v[i]);
        if (!mid_is_ok(r)) {
            mesh_strv_free(v, len);
            return r;
        }
    }
    *out = v;
    *n = len;
    return mid_ok();
}

/* Optional object of string values under `key`, sorted by key. */
static mid_result j_labels(const json_t *o, const char *key, const char *path, mesh_label **out,
                           size_t *n)
{
    char p[PATH_BUF];
    char seg[PATH_BUF / 2];
    *out = NULL;
    *n = 0;
    const json_t *m = json_object_get(o, key);
    if (m == NULL) return mid_ok();
    if (!json_is_object(m)) FAIL(MID_E_INVALID, path, "must be an object of strings");
    size_t len = json_object_size(m);
    if (len > MESH_LABELS_MAX)
        FAIL(MID_E_TOO_LARGE, path, "%zu labels is over the limit of %d", len, MESH_LABELS_MAX);
    if (len == 0) return mid_ok();
    mesh_label *l = alloc_array(len, sizeof *l);
    MID_ENSURE_MEM(l);
    size_t i = 0;
    const char *k;
    json_t *v;
    mid_result r = MID_OK_RESULT;
    json_object_foreach((json_t *)m, k, v) {
        key_segment(k, seg, sizeof seg);
        path_fmt(p, sizeof p, path, "%s", seg);
        r = dup_str(k, &l[i].key);
        if (mid_is_ok(r)) r = j_string_value(v, p, &l[i].value);
        i++;
        if (!mid_is_ok(r)) break;
    }
    if (!mid_is_ok(r)) {
        mesh_labels_free(l, len);
        return r;
    }
    mesh_labels_sort(l, len);
    *out = l;
    *n = len;
    return mid_ok();
}

static mid_result j_array(const json_t *o, const char *key, const char *path, size_t max,
                          bool required, const json_t **out, size_t *n)
{
    *out = json_object_get(o, key);
    *n = 0;
    if (*out == NULL) {
        if (required) FAIL(MID_E_INVALID, path, "is required");
        return mid_ok();
    }
    if (!json_is_array(*out)) FAIL(MID_E_INVALID, path, "must be an array");
    *n = json_array_size(*out);
    if (*n > max) FAIL(MID_E_TOO_LARGE, path, "%zu entries is over the limit of %zu", *n, max);
    return mid_ok();
}

static mid_result j_object_at(const json_t *a, size_t i, const char *path, const json_t **out)
{
    *out = json_array_get(a, i);
    if (!json_is_object(*out)) FAIL(MID_E_INVALID, path, "must be an object");
    return mid_ok();
}

/* Decodes one record-list item from its JSON object at `path`. */
typedef mid_result (*j_item_fn)(const json_t *o, const char *path, void *item);

/* Decodes the n objects of array `a` (as j_array returned them) into
 * items[0..n), `size` bytes apart (zeroed, owned by the record): item i by
 * fn from the object at "PATH[i]". Stops at the first failure; the record's
 * free function then releases what was decoded. */
static mid_result j_objects(const json_t *a, size_t n, const char *path, void *items, size_t size,
                            j_item_fn fn)
{
    char p[PATH_BUF];
    for (size_t i = 0; i < n; i++) {
        const json_t *o;
        path_fmt(p, sizeof p, path, "[%zu]", i);
        MID_GUARD(j_object_at(a, i, p, &o));
        MID_GUARD(fn(o, p, (char *)items + i * size));
    }
    return mid_ok();
}

static mid_result j_load(const char *json, const char *what, json_t **out)
{
    *out = NULL;
    MID_ENSURE(json != NULL, MID_E_INVALID, "%s JSON missing", what);
    size_t n = strnlen(json, JSON_MAX + 1);
    MID_ENSURE(n <= JSON_MAX, MID_E_TOO_LARGE, "%s JSON is over the limit of %zu bytes", what,
               JSON_MAX);
    json_error_t err;
    json_t *o = json_loadb(json, n, JSON_REJECT_DUPLICATES, &err);
    MID_ENSURE(o != NULL, MID_E_INVALID, "%s JSON: line %d column %d: %s", what, err.line,
               err.column, err.text);
    if (!json_is_object(o)) {
        json_decref(o);
        MID_BAIL(MID_E_INVALID, "%s JSON: must be an object", what);
    }
    *out = o;
    return mid_ok();
}

static mid_result endpoint_from_json(const json_t *o, const char *path, void *item)
{
    static const char *const keys[] = {"address", "ports", "labels", "serviceAccount",
                                       "spiffeId", "health", NULL};
    mesh_endpoint *e = item;
    char p[PATH_BUF];
    char seg[PATH_BUF / 2];
    MID_GUARD(j_keys(o, path, keys));
    path_fmt(p, sizeof p, path, ".address");
    MID_GUARD(j_str(o, "address", p, true, &e->address));
    path_fmt(p, sizeof p, path, ".serviceAccount");
    MID_GUARD(j_str(o, "serviceAccount", p, false, &e->service_account));
    path_fmt(p, sizeof p, path, ".spiffeId");
    MID_GUARD(j_str(o, "spiffeId", p, false, &e->spiffe_id));
    if (e->spiffe_id != NULL && e->service_account != NULL)
        FAIL(MID_E_INVALID, p, "serviceAccount and spiffeId exclude each other");
    path_fmt(p, sizeof p, path, ".labels");
    MID_GUARD(j_labels(o, "labels", p, &e->labels, &e->n_labels));
    const json_t *h = json_object_get(o, "health");
    if (h != NULL) {
        path_fmt(p, sizeof p, path, ".health");
        if (!json_is_string(h)) FAIL(MID_E_INVALID, p, "must be a string");
        mid_result r = mesh_health_parse(json_string_value(h), &e->health);
        if (!mid_is_ok(r)) FAIL(r.err, p, "%s", mid_errmsg());
    }
    const json_t *ports = json_object_get(o, "ports");
    if (ports != NULL) {
        path_fmt(p, sizeof p, path, ".ports");
        if (!json_is_object(ports)) FAIL(MID_E_INVALID, p, "must be an object of port numbers");
        size_t n = json_object_size(ports);
        if (n > MESH_PORTS_MAX)
            FAIL(MID_E_TOO_LARGE, p, "%zu ports is over the limit of %d", n, MESH_PORTS_MAX);
        if (n > 0) {
            e->ports = alloc_array(n, sizeof *e->ports);
            MID_ENSURE_MEM(e->ports);
            e->n_ports = n;
        }
        size_t i = 0;
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)ports, k, v) {
            key_segment(k, seg, sizeof seg);
            path_fmt(p, sizeof p, path, ".ports%s", seg);
            MID_GUARD(dup_str(k, &e->ports[i].name));
            MID_GUARD(j_uint(v, p, &e->ports[i].number));
            i++;
        }
    }
    return mid_ok();
}

static mid_result service_fill(const json_t *o, mesh_service *s)
{
    static const char *const keys[] = {"namespace", "name",       "hosts",     "ports",
                                       "location",  "resolution", "endpoints", NULL};
    static const char *const port_keys[] = {"name", "number", "protocol", "targetPort", NULL};
    char p[PATH_BUF];
    const json_t *a;
    size_t n;
    MID_GUARD(j_keys(o, "service JSON", keys));
    MID_GUARD(j_str(o, "namespace", "namespace", true, &s->namespace_));
    MID_GUARD(j_str(o, "name", "name", true, &s->name));
    MID_GUARD(j_array(o, "hosts", "hosts", MESH_HOSTS_MAX, true, &a, &n));
    MID_GUARD(j_strv(o, "hosts", "hosts", &s->hosts, &s->n_hosts));
    char *loc = NULL;
    MID_GUARD(j_str(o, "location", "location", false, &loc));
    s->mesh_internal = loc == NULL || strcmp(loc, "MESH_INTERNAL") == 0;
    bool loc_ok = loc == NULL || s->mesh_internal || strcmp(loc, "MESH_EXTERNAL") == 0;
    free(loc);
    if (!loc_ok) FAIL(MID_E_INVALID, "location", "must be MESH_INTERNAL or MESH_EXTERNAL");
    char *res = NULL;
    MID_GUARD(j_str(o, "resolution", "resolution", false, &res));
    bool res_ok = res == NULL || strcmp(res, "STATIC") == 0;
    free(res);
    if (!res_ok) FAIL(MID_E_INVALID, "resolution", "only STATIC is supported");

    MID_GUARD(j_array(o, "ports", "ports", MESH_PORTS_MAX, true, &a, &n));
    if (n > 0) {
        s->ports = alloc_array(n, sizeof *s->ports);
        MID_ENSURE_MEM(s->ports);
        s->n_ports = n;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *po;
        mesh_port *pt = &s->ports[i];
        snprintf(p, sizeof p, "ports[%zu]", i);
        MID_GUARD(j_object_at(a, i, p, &po));
        MID_GUARD(j_keys(po, p, port_keys));
        snprintf(p, sizeof p, "ports[%zu].name", i);
        MID_GUARD(j_str(po, "name", p, true, &pt->name));
        snprintf(p, sizeof p, "ports[%zu].number", i);
        const json_t *num = json_object_get(po, "number");
        if (num == NULL) FAIL(MID_E_INVALID, p, "is required");
        MID_GUARD(j_uint(num, p, &pt->number));
        snprintf(p, sizeof p, "ports[%zu].targetPort", i);
        const json_t *tp = json_object_get(po, "targetPort");
        if (tp != NULL) MID_GUARD(j_uint(tp, p, &pt->target_port));
        snprintf(p, sizeof p, "ports[%zu].protocol", i);
        const json_t *proto = json_object_get(po, "protocol");
        if (!json_is_string(proto)) FAIL(MID_E_INVALID, p, "is required (a string)");
        mid_result r = mesh_protocol_parse(json_string_value(proto), &pt->protocol);
        if (!mid_is_ok(r)) FAIL(r.err, p, "%s", mid_errmsg());
    }

    MID_GUARD(j_array(o, "endpoints", "endpoints", MESH_ENDPOINTS_MAX, false, &a, &n));
    if (n > 0) {
        s->endpoints = alloc_array(n, sizeof *s->endpoints);
        MID_ENSURE_MEM(s->endpoints);
        s->n_endpoints = n;
    }
    return j_objects(a, n, "endpoints", s->endpoints, sizeof *s->endpoints, endpoint_from_json);
}

MID_RESULT mesh_service_from_json(const char *json, mesh_service **out)
{
    mid_result r = MID_OK_RESULT;
    *out = NULL;
    json_t *o = NULL;
    mesh_service *s = NULL;
    MID_TRY(r, j_load(json, "service", &o));
    s = calloc(1, sizeof *s);
    MID_CHECK_MEM(r, s);
    MID_TRY(r, service_fill(o, s));
    MID_TRY(r, mesh_service_validate(s));
    *out = s;
    s = NULL;
out:
    json_decref(o);
    mesh_service_free(s);
    return r;
}

static mid_result source_from_json(const json_t *o, const char *path, void *item)
{
    static const char *const keys[] = {"principals", "notPrincipals", "namespaces", NULL};
    mesh_source *s = item;
    char p[PATH_BUF];
    MID_GUARD(j_keys(o, path, keys));
    path_fmt(p, sizeof p, path, ".principals");
    MID_GUARD(j_strv(o, "principals", p, &s->principals, &s->n_principals));
    path_fmt(p, sizeof p, path, ".notPrincipals");
    MID_GUARD(j_strv(o, "notPrincipals", p, &s->not_principals, &s->n_not_principals));
    path_fmt(p, sizeof p, path, ".namespaces");
    MID_GUARD(j_strv(o, "namespaces", p, &s->namespaces, &s->n_namespaces));
    return mid_ok();
}

static mid_result operation_from_json(const json_t *o, const char *path, void *item)
{
    static const char *const keys[] = {"methods", "paths", "ports", "hosts", NULL};
    mesh_operation *op = item;
    char p[PATH_BUF];
    MID_GUARD(j_keys(o, path, keys));
    path_fmt(p, sizeof p, path, ".methods");
    MID_GUARD(j_strv(o, "methods", p, &op->methods, &op->n_methods));
    path_fmt(p, sizeof p, path, ".paths");
    MID_GUARD(j_strv(o, "paths", p, &op->paths, &op->n_paths));
    path_fmt(p, sizeof p, path, ".hosts");
    MID_GUARD(j_strv(o, "hosts", p, &op->hosts, &op->n_hosts));
    const json_t *a;
    size_t n;
    path_fmt(p, sizeof p, path, ".ports");
    MID_GUARD(j_array(o, "ports", p, MESH_VALUES_MAX, false, &a, &n));
    if (n > 0) {
        op->ports = alloc_array(n, sizeof *op->ports);
        MID_ENSURE_MEM(op->ports);
        op->n_ports = n;
    }
    for (size_t i = 0; i < n; i++) {
        path_fmt(p, sizeof p, path, ".ports[%zu]", i);
        MID_GUARD(j_uint(json_array_get(a, i), p, &op->ports[i]));
    }
    return mid_ok();
}

static mid_result rule_from_json(const json_t *o, const char *path, void *item)
{
    static const char *const keys[] = {"from", "to", NULL};
    mesh_rule *rule = item;
    char p[PATH_BUF];
    const json_t *a;
    size_t n;
    MID_GUARD(j_keys(o, path, keys));
    path_fmt(p, sizeof p, path, ".from");
    MID_GUARD(j_array(o, "from", p, MESH_VALUES_MAX, false, &a, &n));
    if (n > 0) {
        rule->from = alloc_array(n, sizeof *rule->from);
        MID_ENSURE_MEM(rule->from);
        rule->n_from = n;
    }
    MID_GUARD(j_objects(a, n, p, rule->from, sizeof *rule->from, source_from_json));
    path_fmt(p, sizeof p, path, ".to");
    MID_GUARD(j_array(o, "to", p, MESH_VALUES_MAX, false, &a, &n));
    if (n > 0) {
        rule->to = alloc_array(n, sizeof *rule->to);
        MID_ENSURE_MEM(rule->to);
        rule->n_to = n;
    }
    MID_GUARD(j_objects(a, n, p, rule->to, sizeof *rule->to, operation_from_json));
    return mid_ok();
}

static mid_result policy_fill(const json_t *o, mesh_policy *pol)
{
    static const char *const keys[] = {"namespace", "name", "selector", "action", "rules", NULL};
    MID_GUARD(j_keys(o, "policy JSON", keys));
    MID_GUARD(j_str(o, "namespace", "namespace", true, &pol->namespace_));
    MID_GUARD(j_str(o, "name", "name", true, &pol->name));
    MID_GUARD(j_labels(o, "selector", "selector", &pol->selector, &pol->n_selector));
    char *action = NULL;
    MID_GUARD(j_str(o, "action", "action", false, &action));
    bool ok = action == NULL || strcmp(action, "ALLOW") == 0 || strcmp(action, "DENY") == 0;
    pol->action = action != NULL && strcmp(action, "DENY") == 0 ? MESH_ACTION_DENY
                                                                : MESH_ACTION_ALLOW;
    free(action);
    if (!ok) FAIL(MID_E_INVALID, "action", "must be ALLOW or DENY");
    const json_t *a;
    size_t n;
    MID_GUARD(j_array(o, "rules", "rules", MESH_RULES_MAX, false, &a, &n));
    if (n > 0) {
        pol->rules = alloc_array(n, sizeof *pol->rules);
        MID_ENSURE_MEM(pol->rules);
        pol->n_rules = n;
    }
    return j_objects(a, n, "rules", pol->rules, sizeof *pol->rules, rule_from_json);
}

MID_RESULT mesh_policy_from_json(const char *json, mesh_policy **out)
{
    mid_result r = MID_OK_RESULT;
    *out = NULL;
    json_t *o = NULL;
    mesh_policy *pol = NULL;
    MID_TRY(r, j_load(json, "policy", &o));
    pol = calloc(1, sizeof *pol);
    MID_CHECK_MEM(r, pol);
    MID_TRY(r, policy_fill(o, pol));
    MID_TRY(r, mesh_policy_validate(pol));
    *out = pol;
    pol = NULL;
out:
    json_decref(o);
    mesh_policy_free(pol);
    return r;
}

/* ---- registry --------------------------------------------------------------------- */

typedef struct {
    const char *host;
    const mesh_service *svc;
    size_t order; /* index of the service in registry order */
} host_ent;

typedef struct {
    const char *id;
    const mesh_service *svc;
    const mesh_endpoint *ep;
    size_t order; /* running index in registry order */
} wl_ent;

struct mesh_registry {
    atomic_size_t refs;
    char trust_domain[SPIFFE_TD_MAX + 1];
    int64_t revision;
    mesh_service **services;
    size_t n_services;
    mesh_policy **policies;
    size_t n_policies;
    host_ent *hosts; /* sorted by (host, order) */
    size_t n_hosts;
    const mesh_service **by_name; /* sorted by (name, namespace) */
    wl_ent *wl;                   /* sorted by (id, order) */
    size_t n_wl;
};

static int nsname_cmp(const char *ns_a, const char *name_a, const char *ns_b, const char *name_b)
{
    int c = strcmp(ns_a, ns_b);
    return c != 0 ? c : strcmp(name_a, name_b);
}

static int service_cmp(const void *a, const void *b)
{
    const mesh_service *x = *(mesh_service *const *)a;
    const mesh_service *y = *(mesh_service *const *)b;
    return nsname_cmp(x->namespace_, x->name, y->namespace_, y->name);
}

static int policy_cmp(const void *a, const void *b)
{
    const mesh_policy *x = *(mesh_policy *const *)a;
    const mesh_policy *y = *(mesh_policy *const *)b;
    return nsname_cmp(x->namespace_, x->name, y->namespace_, y->name);
}

static int by_name_cmp(const void *a, const void *b)
{
    const mesh_service *x = *(const mesh_service *const *)a;
    const mesh_service *y = *(const mesh_service *const *)b;
    int c = strcmp(x->name, y->name);
    return c != 0 ? c : strcmp(x->namespace_, y->namespace_);
}

static int host_cmp(const void *a, const void *b)
{
    const host_ent *x = a;
    const host_ent *y = b;
    int c = strcmp(x->host, y->host);
    if (c != 0) return c;
    return x->order < y->order ? -1 : x->order > y->order;
}

static int wl_cmp(const void *a, const void *b)
{
    const wl_ent *x = a;
    const wl_ent *y = b;
    int c = strcmp(x->id, y->id);
    if (c != 0) return c;
    return x->order < y->order ? -1 : x->order > y->order;
}

static void registry_free(mesh_registry *r)
{
    for (size_t i = 0; i < r->n_services; i++) mesh_service_free(r->services[i]);
    free(r->services);
    for (size_t i = 0; i < r->n_policies; i++) mesh_policy_free(r->policies[i]);
    free(r->policies);
    free(r->hosts);
    free(r->by_name);
    free(r->wl);
    free(r);
}

/* Fills endpoint spiffe_ids from service accounts, checks the records are
 * complete enough to index, and sorts them. */
static mid_result registry_prepare(mesh_registry *r)
{
    for (size_t i = 0; i < r->n_services; i++) {
        mesh_service *s = r->services[i];
        MID_ENSURE(s != NULL && s->namespace_ != NULL && s->name != NULL &&
                       (s->n_hosts == 0 || s->hosts != NULL) &&
                       (s->n_endpoints == 0 || s->endpoints != NULL),
                   MID_E_INVALID, "registry: service %zu is incomplete", i);
        for (size_t h = 0; h < s->n_hosts; h++)
            MID_ENSURE(s->hosts[h] != NULL, MID_E_INVALID, "registry: service %s/%s has a NULL host",
                       s->namespace_, s->name);
        for (size_t e = 0; e < s->n_endpoints; e++) {
            mesh_endpoint *ep = &s->endpoints[e];
            if (ep->spiffe_id != NULL || ep->service_account == NULL) continue;
            char path[PATH_BUF];
            int n = snprintf(path, sizeof path, "/ns/%s/sa/%s", s->namespace_, ep->service_account);
            MID_ENSURE(n > 0 && (size_t)n < sizeof path, MID_E_TOO_LARGE,
                       "service %s/%s: endpoints[%zu]: SPIFFE ID path too long", s->namespace_,
                       s->name, e);
            spiffe_id *id = NULL;
            mid_result res = spiffe_id_from_parts(r->trust_domain, path, &id);
            if (!mid_is_ok(res))
                MID_BAIL(res.err, "service %s/%s: endpoints[%zu].serviceAccount: %s", s->namespace_,
                         s->name, e, mid_errmsg());
            ep->spiffe_id = strdup(spiffe_id_str(id));
            spiffe_id_free(id);
            MID_ENSURE_MEM(ep->spiffe_id);
        }
    }
    for (size_t i = 0; i < r->n_policies; i++) {
        mesh_policy *p = r->policies[i];
        MID_ENSURE(p != NULL && p->namespace_ != NULL && p->name != NULL, MID_E_INVALID,
                   "registry: policy %zu is incomplete", i);
    }
    if (r->n_services > 1) qsort(r->services, r->n_services, sizeof *r->services, service_cmp);
    if (r->n_policies > 1) qsort(r->policies, r->n_policies, sizeof *r->policies, policy_cmp);
    for (size_t i = 1; i < r->n_services; i++)
        MID_ENSURE(service_cmp(&r->services[i - 1], &r->services[i]) != 0, MID_E_INVALID,
                   "service %s/%s is defined twice", r->services[i]->namespace_,
                   r->services[i]->name);
    for (size_t i = 1; i < r->n_policies; i++)
        MID_ENSURE(policy_cmp(&r->policies[i - 1], &r->policies[i]) != 0, MID_E_INVALID,
                   "authorization policy %s/%s is defined twice", r->policies[i]->namespace_,
                   r->policies[i]->name);
    return mid_ok();
}

static mid_result registry_index(mesh_registry *r)
{
    size_t n_hosts = 0, n_wl = 0;
    for (size_t i = 0; i < r->n_services; i++) {
        n_hosts += r->services[i]->n_hosts;
        for (size_t e = 0; e < r->services[i]->n_endpoints; e++)
            n_wl += r->services[i]->endpoints[e].spiffe_id != NULL;
    }
    if (n_hosts > 0) {
        r->hosts = calloc(n_hosts, sizeof *r->hosts);
        MID_ENSURE_MEM(r->hosts);
    }
    if (n_wl > 0) {
        r->wl = calloc(n_wl, sizeof *r->wl);
        MID_ENSURE_MEM(r->wl);
    }
    if (r->n_services > 0) {
        r->by_name = calloc(r->n_services, sizeof *r->by_name);
        MID_ENSURE_MEM(r->by_name);
    }
    size_t order = 0;
    for (size_t i = 0; i < r->n_services; i++) {
        const mesh_service *s = r->services[i];
        r->by_name[i] = s;
        for (size_t h = 0; h < s->n_hosts; h++)
            r->hosts[r->n_hosts++] = (host_ent){s->hosts[h], s, i};
        for (size_t e = 0; e < s->n_endpoints; e++) {
            const mesh_endpoint *ep = &s->endpoints[e];
            if (ep->spiffe_id != NULL) r->wl[r->n_wl++] = (wl_ent){ep->spiffe_id, s, ep, order};
            order++;
        }
    }
    if (r->n_hosts > 1) qsort(r->hosts, r->n_hosts, sizeof *r->hosts, host_cmp);
    if (r->n_wl > 1) qsort(r->wl, r->n_wl, sizeof *r->wl, wl_cmp);
    if (r->n_services > 1) qsort(r->by_name, r->n_services, sizeof *r->by_name, by_name_cmp);
    for (size_t i = 1; i < r->n_hosts; i++) {
        const host_ent *a = &r->hosts[i - 1];
        const host_ent *b = &r->hosts[i];
        if (strcmp(a->host, b->host) != 0) continue;
        char q[QUOTE_MAX + 8];
        quote_str(b->host, q, sizeof q);
        if (a->svc == b->svc)
            MID_BAIL(MID_E_INVALID, "service %s/%s lists host \"%s\" twice", a->svc->namespace_,
                     a->svc->name, q);
        MID_BAIL(MID_E_INVALID, "host \"%s\" is claimed by two services: %s/%s and %s/%s", q,
                 a->svc->namespace_, a->svc->name, b->svc->namespace_, b->svc->name);
    }
    return mid_ok();
}

MID_RESULT mesh_registry_new(const char *trust_domain, int64_t revision,
                             mesh_service **services, size_t n_services,
                             mesh_policy **policies, size_t n_policies,
                             mesh_registry **out)
{
    mid_result r = MID_OK_RESULT;
    *out = NULL;
    mesh_registry *reg = calloc(1, sizeof *reg);
    if (reg == NULL) {
        for (size_t i = 0; i < n_services; i++) mesh_service_free(services ? services[i] : NULL);
        free(services);
        for (size_t i = 0; i < n_policies; i++) mesh_policy_free(policies ? policies[i] : NULL);
        free(policies);
        MID_BAIL(MID_E_NOMEM, "out of memory");
    }
    atomic_init(&reg->refs, 1);
    reg->revision = revision;
    reg->services = services;
    reg->n_services = services != NULL ? n_services : 0;
    reg->policies = policies;
    reg->n_policies = policies != NULL ? n_policies : 0;
    MID_CHECK(r, trust_domain != NULL, MID_E_INVALID, "registry: trust domain missing");
    MID_TRY(r, spiffe_trust_domain_parse(trust_domain, reg->trust_domain));
    MID_TRY(r, registry_prepare(reg));
    MID_TRY(r, registry_index(reg));
    *out = reg;
    reg = NULL;
out:
    if (reg != NULL) registry_free(reg);
    return r;
}

mesh_registry *mesh_registry_ref(mesh_registry *r)
{
    if (r != NULL) atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
    return r;
}

void mesh_registry_unref(mesh_registry *r)
{
    if (r == NULL) return;
    if (atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) == 1) registry_free(r);
}

int64_t mesh_registry_revision(const mesh_registry *r) { return r->revision; }

const char *mesh_registry_trust_domain(const mesh_registry *r) { return r->trust_domain; }

size_t mesh_registry_n_services(const mesh_registry *r) { return r->n_services; }

const mesh_service *mesh_registry_service(const mesh_registry *r, size_t i)
{
    return i < r->n_services ? r->services[i] : NULL;
}

size_t mesh_registry_n_policies(const mesh_registry *r) { return r->n_policies; }

const mesh_policy *mesh_registry_policy(const mesh_registry *r, size_t i)
{
    return i < r->n_policies ? r->policies[i] : NULL;
}

static const mesh_service *find_host(const mesh_registry *r, const char *host)
{
    size_t lo = 0, hi = r->n_hosts;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(r->hosts[mid].host, host);
        if (c == 0) return r->hosts[mid].svc;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static const mesh_service *find_nsname(const mesh_registry *r, const char *ns, size_t ns_len,
                                       const char *name)
{
    size_t lo = 0, hi = r->n_services;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const mesh_service *s = r->services[mid];
        int c = strncmp(s->namespace_, ns, ns_len);
        if (c == 0 && s->namespace_[ns_len] != '\0') c = 1;
        if (c == 0) c = strcmp(s->name, name);
        if (c == 0) return s;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* A bare name: the only service of that name, or the one in the default
 * namespace when several namespaces have one; else NULL (ambiguous). */
static const mesh_service *find_bare_name(const mesh_registry *r, const char *name)
{
    size_t lo = 0, hi = r->n_services;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(r->by_name[mid]->name, name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t end = lo;
    while (end < r->n_services && strcmp(r->by_name[end]->name, name) == 0) end++;
    if (end == lo) return NULL;
    if (end - lo == 1) return r->by_name[lo];
    for (size_t i = lo; i < end; i++)
        if (strcmp(r->by_name[i]->namespace_, MESH_DEFAULT_NAMESPACE) == 0) return r->by_name[i];
    return NULL;
}

const mesh_service *mesh_registry_find_service(const mesh_registry *r, const char *name_or_host)
{
    if (r == NULL || name_or_host == NULL) return NULL;
    const mesh_service *s = find_host(r, name_or_host);
    if (s != NULL) return s;
    const char *slash = strchr(name_or_host, '/');
    if (slash != NULL)
        return find_nsname(r, name_or_host, (size_t)(slash - name_or_host), slash + 1);
    return find_bare_name(r, name_or_host);
}

size_t mesh_registry_workloads(const mesh_registry *r, const char *id,
                               mesh_workload_ref *out, size_t max)
{
    if (r == NULL || id == NULL) return 0;
    size_t lo = 0, hi = r->n_wl;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(r->wl[mid].id, id) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t n = 0;
    for (size_t i = lo; i < r->n_wl && strcmp(r->wl[i].id, id) == 0; i++, n++) {
        if (out != NULL && n < max) out[n] = (mesh_workload_ref){r->wl[i].svc, r->wl[i].ep};
    }
    return n;
}
