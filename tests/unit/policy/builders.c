/* Test-only builders of policies and workloads, and the Istio example
 * documents written with them. See policy_tests.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tests/unit/policy/policy_tests.h"

#define RULES_CAP 16
#define ITEMS_CAP 8
#define LIST_CAP 32

int tb_setup(void **state)
{
    arena *a = NULL;
    if (!mid_is_ok(arena_new(0, &a))) return -1;
    *state = a;
    return 0;
}

int tb_teardown(void **state)
{
    arena_free(*state);
    return 0;
}

static void *tb_alloc(arena *a, size_t n)
{
    void *p = arena_calloc(a, n);
    assert_non_null(p);
    return p;
}

static char *tb_strndup(arena *a, const char *s, size_t n)
{
    char *p = arena_strndup(a, s, n);
    assert_non_null(p);
    return p;
}

/* Splits s[0..len) at `sep` into arena strings; *n = count. */
static char **tb_split(arena *a, const char *s, size_t len, char sep, size_t *n)
{
    char **out = tb_alloc(a, LIST_CAP * sizeof(char *));
    *n = 0;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || s[i] == sep) {
            assert_true(*n < LIST_CAP);
            out[(*n)++] = tb_strndup(a, s + start, i - start);
            start = i + 1;
        }
    }
    return out;
}

static mesh_label *tb_labels(arena *a, const char *spec, size_t *n)
{
    *n = 0;
    if (spec == NULL || spec[0] == '\0') return NULL;
    size_t k;
    char **kv = tb_split(a, spec, strlen(spec), ',', &k);
    mesh_label *l = tb_alloc(a, k * sizeof *l);
    for (size_t i = 0; i < k; i++) {
        char *eq = strchr(kv[i], '=');
        assert_non_null(eq);
        l[i].key = tb_strndup(a, kv[i], (size_t)(eq - kv[i]));
        l[i].value = tb_strndup(a, eq + 1, strlen(eq + 1));
    }
    *n = k;
    return l;
}

mesh_policy *tb_policy(arena *a, const char *ns, const char *name, const char *action,
                       const char *selector)
{
    mesh_policy *p = tb_alloc(a, sizeof *p);
    p->namespace_ = tb_strndup(a, ns, strlen(ns));
    p->name = tb_strndup(a, name, strlen(name));
    assert_true(strcmp(action, "ALLOW") == 0 || strcmp(action, "DENY") == 0);
    p->action = strcmp(action, "DENY") == 0 ? MESH_ACTION_DENY : MESH_ACTION_ALLOW;
    p->selector = tb_labels(a, selector, &p->n_selector);
    p->rules = tb_alloc(a, RULES_CAP * sizeof(mesh_rule));
    return p;
}

mesh_rule *tb_rule(arena *a, mesh_policy *p)
{
    (void)a;
    assert_true(p->n_rules < RULES_CAP);
    return &p->rules[p->n_rules++];
}

/* Calls f(key, values, n) for every "key=v1,v2" field of a ';' spec. */
typedef void (*field_fn)(arena *a, void *target, const char *key, char **vals, size_t n);

static void tb_fields(arena *a, const char *spec, void *target, field_fn f)
{
    size_t nf;
    char **fields = tb_split(a, spec, strlen(spec), ';', &nf);
    for (size_t i = 0; i < nf; i++) {
        if (fields[i][0] == '\0') continue;
        char *eq = strchr(fields[i], '=');
        assert_non_null(eq);
        *eq = '\0';
        size_t n;
        char **vals = tb_split(a, eq + 1, strlen(eq + 1), ',', &n);
        f(a, target, fields[i], vals, n);
    }
}

static void source_field(arena *a, void *target, const char *key, char **vals, size_t n)
{
    (void)a;
    mesh_source *s = target;
    if (strcmp(key, "principals") == 0) {
        s->principals = vals;
        s->n_principals = n;
    } else if (strcmp(key, "notPrincipals") == 0) {
        s->not_principals = vals;
        s->n_not_principals = n;
    } else if (strcmp(key, "namespaces") == 0) {
        s->namespaces = vals;
        s->n_namespaces = n;
    } else {
        fail_msg("unknown source field %s", key);
    }
}

static void operation_field(arena *a, void *target, const char *key, char **vals, size_t n)
{
    mesh_operation *o = target;
    if (strcmp(key, "methods") == 0) {
        o->methods = vals;
        o->n_methods = n;
    } else if (strcmp(key, "paths") == 0) {
        o->paths = vals;
        o->n_paths = n;
    } else if (strcmp(key, "hosts") == 0) {
        o->hosts = vals;
        o->n_hosts = n;
    } else if (strcmp(key, "ports") == 0) {
        o->ports = tb_alloc(a, n * sizeof(uint32_t));
        for (size_t i = 0; i < n; i++) {
            char *end;
            long v = strtol(vals[i], &end, 10);
            assert_true(*end == '\0' && v > 0 && v <= 65535);
            o->ports[i] = (uint32_t)v;
        }
        o->n_ports = n;
    } else {
        fail_msg("unknown operation field %s", key);
    }
}

void tb_source(arena *a, mesh_rule *r, const char *spec)
{
    if (r->from == NULL) r->from = tb_alloc(a, ITEMS_CAP * sizeof(mesh_source));
    assert_true(r->n_from < ITEMS_CAP);
    tb_fields(a, spec, &r->from[r->n_from++], source_field);
}

void tb_operation(arena *a, mesh_rule *r, const char *spec)
{
    if (r->to == NULL) r->to = tb_alloc(a, ITEMS_CAP * sizeof(mesh_operation));
    assert_true(r->n_to < ITEMS_CAP);
    tb_fields(a, spec, &r->to[r->n_to++], operation_field);
}

mesh_workload tb_workload(arena *a, const char *ns, const char *labels)
{
    mesh_workload w = {0};
    w.namespace_ = tb_strndup(a, ns, strlen(ns));
    size_t n;
    w.labels = tb_labels(a, labels, &n);
    w.n_labels = n;
    return w;
}

/* ---- the Istio examples (istio-examples/within/ap-*.yaml) -------------------- */

size_t tb_istio_examples(arena *a, mesh_policy **out, const char **names, size_t max)
{
    size_t n = 0;
    mesh_policy *p;
    mesh_rule *r;
    assert_true(max >= 11);

    /* ap-allow-nothing-empty-spec.yaml: default/allow-nothing, spec {} */
    names[n] = "ap-allow-nothing-empty-spec.yaml";
    out[n++] = tb_policy(a, "default", "allow-nothing", "ALLOW", NULL);

    /* ap-allow-read.yaml */
    names[n] = "ap-allow-read.yaml";
    p = out[n++] = tb_policy(a, "default", "allow-read", "ALLOW", "app=products");
    tb_operation(a, tb_rule(a, p), "methods=GET,HEAD");

    /* ap-deny-all.yaml: no namespace (default), rules: [{}] */
    names[n] = "ap-deny-all.yaml";
    p = out[n++] = tb_policy(a, MESH_DEFAULT_NAMESPACE, "deny-all", "DENY", NULL);
    (void)tb_rule(a, p);

    /* ap-deny-method-get.yaml */
    names[n] = "ap-deny-method-get.yaml";
    p = out[n++] = tb_policy(a, "foo", "deny-method-get", "DENY", "app=httpbin");
    tb_operation(a, tb_rule(a, p), "methods=GET");

    /* ap-deny-ns-dev-post.yaml */
    names[n] = "ap-deny-ns-dev-post.yaml";
    p = out[n++] = tb_policy(a, "foo", "httpbin", "DENY", NULL);
    r = tb_rule(a, p);
    tb_source(a, r, "namespaces=dev");
    tb_operation(a, r, "methods=POST");

    /* ap-deny-post-port-8080.yaml (same name as the previous one) */
    names[n] = "ap-deny-post-port-8080.yaml";
    p = out[n++] = tb_policy(a, "foo", "httpbin", "DENY", NULL);
    tb_operation(a, tb_rule(a, p), "methods=POST;ports=8080");

    /* ap-details-viewer-principal-get.yaml */
    names[n] = "ap-details-viewer-principal-get.yaml";
    p = out[n++] = tb_policy(a, "default", "details-viewer", "ALLOW", "app=details");
    r = tb_rule(a, p);
    tb_source(a, r, "principals=cluster.local/ns/default/sa/bookinfo-productpage");
    tb_operation(a, r, "methods=GET");

    /* ap-mongodb-principal-port.yaml */
    names[n] = "ap-mongodb-principal-port.yaml";
    p = out[n++] = tb_policy(a, "default", "mongodb-policy", "ALLOW", "app=mongodb");
    r = tb_rule(a, p);
    tb_source(a, r, "principals=cluster.local/ns/default/sa/bookinfo-ratings-v2");
    tb_operation(a, r, "ports=27017");

    /* ap-ns-isolation-except-ingress.yaml */
    names[n] = "ap-ns-isolation-except-ingress.yaml";
    p = out[n++] = tb_policy(a, "foo", "ns-isolation-except-ingress", "ALLOW", NULL);
    r = tb_rule(a, p);
    tb_source(a, r, "namespaces=foo");
    tb_source(a, r,
              "principals=cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account");

    /* ap-require-mtls-not-principals.yaml */
    names[n] = "ap-require-mtls-not-principals.yaml";
    p = out[n++] = tb_policy(a, "foo", "require-mtls", "DENY", NULL);
    tb_source(a, tb_rule(a, p), "notPrincipals=*");

    /* ap-tester-path-wildcards.yaml */
    names[n] = "ap-tester-path-wildcards.yaml";
    p = out[n++] = tb_policy(a, "default", "tester", "ALLOW", "app=products");
    tb_operation(a, tb_rule(a, p), "paths=/test/*,*/info");

    return n;
}
