/* The RBAC compiler: structure of what it emits, equivalence with the
 * evaluator through an independent Envoy RBAC interpreter (rbac_interp.c)
 * over the Istio examples, hand-written policies and random ones, and its
 * failure modes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "envoy/config/rbac/v3/rbac.pb-c.h"
#include "envoy/extensions/filters/http/rbac/v3/rbac.pb-c.h"
#include "envoy/extensions/filters/network/rbac/v3/rbac.pb-c.h"
#include "meshcore/rbac.h"
#include "meshcore/yaml_load.h"
#include "tests/unit/policy/policy_tests.h"
#include "tests/unit/policy/rbac_interp.h"

#define TD "spiffe://cluster.local"
#define STAT_PREFIX "inbound_tcp."
#define MAX_SET 16
#define ISTIO_WITHIN "tests/data/istio-examples/within/"

typedef const mesh_policy *const *cpols;

/* ---- the request matrix ------------------------------------------------------ */

static const char *const PRINCIPALS[] = {
    NULL,
    "",
    TD "/ns/default/sa/bookinfo-productpage",
    TD "/ns/default/sa/bookinfo-ratings-v2",
    TD "/ns/foo/sa/sleep",
    TD "/ns/dev/sa/tester",
    TD "/ns/istio-system/sa/istio-ingressgateway-service-account",
    "spiffe://other.td/ns/foo/sa/sleep",
    "spiffe://other.td/workload/batch",
    TD "/ns/foo-prod/sa/api",
    /* Not valid SPIFFE IDs, but what a matcher must not get wrong: */
    TD "/ns//sa/empty-namespace",
    TD "/ns/dev",
    TD "/ns/a/b/sa/x",
};
#define N_PRINCIPALS (sizeof PRINCIPALS / sizeof PRINCIPALS[0])
static const char *const METHODS[] = {"GET", "POST", "HEAD"};
static const char *const PATHS[] = {"/", "/test/a", "/x/info", "/data"};
static const uint32_t PORTS[] = {80, 8080, 27017};
static const char *const HOSTS[] = {"products.default.svc.cluster.local", "API.example.com:8080",
                                    "api.example.com"};
#define COUNT(x) (sizeof(x) / sizeof((x)[0]))

/* Request i of the matrix (HTTP requests first, then TCP connections);
 * returns 0 past the end. */
static int matrix_request(size_t i, mesh_request *rq)
{
    size_t n_http = N_PRINCIPALS * COUNT(METHODS) * COUNT(PATHS) * COUNT(PORTS) * COUNT(HOSTS);
    if (i < n_http) {
        rq->http = 1;
        rq->host = HOSTS[i % COUNT(HOSTS)];
        i /= COUNT(HOSTS);
        rq->port = PORTS[i % COUNT(PORTS)];
        i /= COUNT(PORTS);
        rq->path = PATHS[i % COUNT(PATHS)];
        i /= COUNT(PATHS);
        rq->method = METHODS[i % COUNT(METHODS)];
        i /= COUNT(METHODS);
        rq->principal = PRINCIPALS[i];
        return 1;
    }
    i -= n_http;
    if (i >= N_PRINCIPALS * COUNT(PORTS)) return 0;
    *rq =
        (mesh_request){PRINCIPALS[i / COUNT(PORTS)], NULL, NULL, PORTS[i % COUNT(PORTS)], NULL, 0};
    return 1;
}

/* Workloads: every label set the examples select, in their namespaces and
 * others. */
static size_t matrix_workloads(arena *a, mesh_workload *w)
{
    size_t n = 0;
    w[n++] = tb_workload(a, "default", "app=products");
    w[n++] = tb_workload(a, "default", "app=details,version=v1");
    w[n++] = tb_workload(a, "default", "app=mongodb");
    w[n++] = tb_workload(a, "default", NULL);
    w[n++] = tb_workload(a, "foo", "app=httpbin");
    w[n++] = tb_workload(a, "foo", "app=httpbin,version=v1");
    w[n++] = tb_workload(a, "foo", NULL);
    w[n++] = tb_workload(a, "dev", "app=products");
    w[n++] = tb_workload(a, MESH_ROOT_NAMESPACE, "app=istio-ingressgateway");
    return n;
}

static const char *rq_str(const mesh_request *rq, char *buf, size_t cap)
{
    (void)snprintf(buf, cap, "%s peer=%s method=%s path=%s port=%u host=%s",
                   rq->http ? "HTTP" : "TCP", rq->principal ? rq->principal : "(none)",
                   rq->method ? rq->method : "-", rq->path ? rq->path : "-", rq->port,
                   rq->host ? rq->host : "-");
    return buf;
}

static int rule_uses_http(const mesh_rule *r)
{
    for (size_t i = 0; i < r->n_to; i++)
        if (r->to[i].n_methods || r->to[i].n_paths || r->to[i].n_hosts) return 1;
    return 0;
}

typedef struct {
    size_t cases;      /* requests whose decisions were compared */
    size_t rule_cases; /* (rule, request) pairs compared */
    size_t mismatches;
} eq_stats;

/* Compiles pols for w (HTTP and TCP), loads both into the interpreter and
 * compares, for every request of the matrix, the evaluator's decision
 * with the interpreter's, and every selected rule's match with the
 * interpreter's match of the RBAC policy of the same name. Counts into
 * st; returns the number of mismatches (each printed). */
static size_t check_equivalence(const char *label, mesh_policy **pols, size_t n,
                                const mesh_workload *w, eq_stats *st)
{
    arena *a = NULL;
    assert_true(mid_is_ok(arena_new(0, &a)));
    mesh_rbac_filter hf[2], tf[2];
    size_t nh = 9, nt = 9;
    mid_result r = mesh_rbac_http_filters((cpols)pols, n, w, a, hf, &nh);
    if (!mid_is_ok(r)) fail_msg("%s: compile: %s", label, mid_errmsg());
    r = mesh_rbac_network_filters((cpols)pols, n, w, STAT_PREFIX, a, tf, &nt);
    if (!mid_is_ok(r)) fail_msg("%s: compile tcp: %s", label, mid_errmsg());
    assert_true(nh <= 2 && nt <= 2 && nh == nt);
    char err[256] = "";
    rbac_interp *ih = rbac_interp_load(hf, nh, err, sizeof err);
    if (ih == NULL) fail_msg("%s: HTTP filters rejected: %s", label, err);
    rbac_interp *it = rbac_interp_load(tf, nt, err, sizeof err);
    if (it == NULL) fail_msg("%s: TCP filters rejected: %s", label, err);

    size_t bad = 0;
    mesh_request rq;
    char rbuf[512];
    for (size_t i = 0; matrix_request(i, &rq); i++) {
        rbac_interp *ip = rq.http ? ih : it;
        mesh_decision d;
        mesh_policy_evaluate((cpols)pols, n, w, &rq, &d);
        int got = rbac_interp_decide(ip, &rq, err, sizeof err);
        if (got < 0) fail_msg("%s: interpreter: %s", label, err);
        st->cases++;
        if (got != d.allowed) {
            char dbuf[256];
            if (!mid_is_ok(mesh_decision_format(&d, dbuf, sizeof dbuf))) dbuf[0] = '\0';
            print_message("MISMATCH %s workload %s: %s: evaluator %s, RBAC %s\n", label,
                          w->namespace_, rq_str(&rq, rbuf, sizeof rbuf), dbuf,
                          got ? "ALLOW" : "DENY");
            bad++;
        }
        for (size_t k = 0; k < n; k++) {
            const mesh_policy *p = pols[k];
            if (!mesh_policy_selects(p, w)) continue;
            for (size_t j = 0; j < p->n_rules; j++) {
                char name[600];
                (void)snprintf(name, sizeof name, "ns[%s]-policy[%s]-rule[%zu]", p->namespace_,
                               p->name, j);
                int want = mesh_rule_matches(&p->rules[j], p->action, &rq);
                int m = rbac_interp_policy_matches(ip, name, &rq);
                st->rule_cases++;
                if (m < 0) {
                    /* Absent only for ALLOW rules with HTTP fields on TCP. */
                    if (!(!rq.http && p->action == MESH_ACTION_ALLOW &&
                          rule_uses_http(&p->rules[j])) ||
                        want) {
                        print_message("MISSING %s: %s for %s\n", label, name,
                                      rq_str(&rq, rbuf, sizeof rbuf));
                        bad++;
                    }
                } else if (m != want) {
                    print_message("RULE MISMATCH %s: %s: %s: evaluator %d, RBAC %d\n", label, name,
                                  rq_str(&rq, rbuf, sizeof rbuf), want, m);
                    bad++;
                }
            }
        }
        if (bad > 20) break;
    }
    rbac_interp_free(ih);
    rbac_interp_free(it);
    arena_free(a);
    st->mismatches += bad;
    return bad;
}

/* All workloads of the matrix. */
static void check_all_workloads(arena *a, const char *label, mesh_policy **pols, size_t n,
                                eq_stats *st)
{
    mesh_workload w[16];
    size_t nw = matrix_workloads(a, w);
    for (size_t i = 0; i < nw; i++) check_equivalence(label, pols, n, &w[i], st);
}

/* ---- structure ------------------------------------------------------------------ */

static Envoy__Extensions__Filters__Http__Rbac__V3__RBAC *unpack_http(const mesh_rbac_filter *f)
{
    assert_string_equal(f->name, "envoy.filters.http.rbac");
    assert_string_equal(f->type_url,
                        "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC");
    Envoy__Extensions__Filters__Http__Rbac__V3__RBAC *m =
        envoy__extensions__filters__http__rbac__v3__rbac__unpack(NULL, f->len, f->bytes);
    assert_non_null(m);
    assert_non_null(m->rules);
    return m;
}

/* Istio's layout: DENY filter first, then ALLOW; names ns[..]-policy[..]-rule[i]. */
static void test_layout(void **state)
{
    arena *a = *state;
    mesh_workload w = tb_workload(a, "foo", "app=httpbin");
    mesh_rbac_filter f[2];
    size_t n = 9;
    /* No policy: no filter. */
    assert_true(mid_is_ok(mesh_rbac_http_filters(NULL, 0, &w, a, f, &n)));
    assert_int_equal(n, 0);

    mesh_policy *pols[3];
    pols[0] = tb_policy(a, "foo", "allow-sleep", "ALLOW", NULL);
    tb_source(a, tb_rule(a, pols[0]), "principals=cluster.local/ns/foo/sa/sleep");
    tb_operation(a, tb_rule(a, pols[0]), "ports=9000");
    pols[1] = tb_policy(a, "foo", "deny-method-get", "DENY", "app=httpbin");
    tb_operation(a, tb_rule(a, pols[1]), "methods=GET");
    pols[2] = tb_policy(a, "bar", "elsewhere", "DENY", NULL); /* not selected */
    (void)tb_rule(a, pols[2]);
    assert_true(mid_is_ok(mesh_rbac_http_filters((cpols)pols, 3, &w, a, f, &n)));
    assert_int_equal(n, 2);

    Envoy__Extensions__Filters__Http__Rbac__V3__RBAC *deny = unpack_http(&f[0]);
    assert_int_equal(deny->rules->action, ENVOY__CONFIG__RBAC__V3__RBAC__ACTION__DENY);
    assert_int_equal(deny->rules->n_policies, 1);
    assert_string_equal(deny->rules->policies[0]->key, "ns[foo]-policy[deny-method-get]-rule[0]");
    const Envoy__Config__Rbac__V3__Policy *pol = deny->rules->policies[0]->value;
    assert_int_equal(pol->n_principals, 1);
    assert_int_equal(pol->principals[0]->identifier_case,
                     ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_ANY);
    assert_int_equal(pol->n_permissions, 1);
    const Envoy__Config__Rbac__V3__Permission *perm = pol->permissions[0];
    assert_int_equal(perm->rule_case, ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_HEADER);
    assert_string_equal(perm->header->name, ":method");
    assert_string_equal(perm->header->string_match->exact, "GET");
    envoy__extensions__filters__http__rbac__v3__rbac__free_unpacked(deny, NULL);

    Envoy__Extensions__Filters__Http__Rbac__V3__RBAC *allow = unpack_http(&f[1]);
    assert_int_equal(allow->rules->action, ENVOY__CONFIG__RBAC__V3__RBAC__ACTION__ALLOW);
    assert_int_equal(allow->rules->n_policies, 2);
    assert_string_equal(allow->rules->policies[0]->key, "ns[foo]-policy[allow-sleep]-rule[0]");
    assert_string_equal(allow->rules->policies[1]->key, "ns[foo]-policy[allow-sleep]-rule[1]");
    pol = allow->rules->policies[0]->value;
    const Envoy__Config__Rbac__V3__Principal *pr = pol->principals[0];
    assert_int_equal(pr->identifier_case,
                     ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_AUTHENTICATED);
    assert_string_equal(pr->authenticated->principal_name->exact, TD "/ns/foo/sa/sleep");
    assert_int_equal(pol->permissions[0]->rule_case, ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_ANY);
    pol = allow->rules->policies[1]->value;
    assert_int_equal(pol->permissions[0]->rule_case,
                     ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_DESTINATION_PORT);
    assert_int_equal(pol->permissions[0]->destination_port, 9000);
    envoy__extensions__filters__http__rbac__v3__rbac__free_unpacked(allow, NULL);

    /* allow-nothing: an ALLOW filter with no policies (Envoy denies all). */
    mesh_policy *nothing = tb_policy(a, "foo", "allow-nothing", "ALLOW", NULL);
    assert_true(mid_is_ok(mesh_rbac_http_filters((cpols)&nothing, 1, &w, a, f, &n)));
    assert_int_equal(n, 1);
    Envoy__Extensions__Filters__Http__Rbac__V3__RBAC *an = unpack_http(&f[0]);
    assert_int_equal(an->rules->action, ENVOY__CONFIG__RBAC__V3__RBAC__ACTION__ALLOW);
    assert_int_equal(an->rules->n_policies, 0);
    envoy__extensions__filters__http__rbac__v3__rbac__free_unpacked(an, NULL);
}

/* The wildcard and namespace translations. */
static void test_matchers(void **state)
{
    arena *a = *state;
    mesh_workload w = tb_workload(a, "foo", NULL);
    mesh_policy *p = tb_policy(a, "foo", "m", "ALLOW", NULL);
    mesh_rule *r = tb_rule(a, p);
    tb_source(a, r, "principals=*,cluster.local/ns/a/*,*/sa/b,spiffe://td/x");
    tb_source(a, r, "namespaces=dev.1,*;notPrincipals=*");
    tb_operation(a, r, "paths=/test/*,*/info,*,/x;hosts=*.Example.com");
    mesh_rbac_filter f[2];
    size_t n;
    assert_true(mid_is_ok(mesh_rbac_http_filters((cpols)&p, 1, &w, a, f, &n)));
    assert_int_equal(n, 1);
    Envoy__Extensions__Filters__Http__Rbac__V3__RBAC *m = unpack_http(&f[0]);
    const Envoy__Config__Rbac__V3__Policy *pol = m->rules->policies[0]->value;
    assert_int_equal(pol->n_principals, 2);
    const Envoy__Config__Rbac__V3__Principal *or0 = pol->principals[0];
    assert_int_equal(or0->identifier_case, ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_OR_IDS);
    assert_int_equal(or0->or_ids->n_ids, 4);
    assert_string_equal(or0->or_ids->ids[0]->authenticated->principal_name->safe_regex->regex,
                        ".+");
    assert_string_equal(or0->or_ids->ids[1]->authenticated->principal_name->prefix, TD "/ns/a/");
    assert_string_equal(or0->or_ids->ids[2]->authenticated->principal_name->safe_regex->regex,
                        "spiffe://.*/sa/b");
    assert_string_equal(or0->or_ids->ids[3]->authenticated->principal_name->exact, "spiffe://td/x");
    const Envoy__Config__Rbac__V3__Principal *and1 = pol->principals[1];
    assert_int_equal(and1->identifier_case, ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_AND_IDS);
    assert_int_equal(and1->and_ids->n_ids, 2);
    assert_int_equal(and1->and_ids->ids[0]->identifier_case,
                     ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_NOT_ID);
    const Envoy__Config__Rbac__V3__Principal *ns = and1->and_ids->ids[1];
    assert_string_equal(ns->or_ids->ids[0]->authenticated->principal_name->safe_regex->regex,
                        "spiffe://[^/]+/ns/dev\\.1/.*");
    assert_string_equal(ns->or_ids->ids[1]->authenticated->principal_name->safe_regex->regex,
                        "spiffe://[^/]+/ns/[^/]+/.*");
    const Envoy__Config__Rbac__V3__Permission *op = pol->permissions[0];
    assert_int_equal(op->rule_case, ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_AND_RULES);
    const Envoy__Config__Rbac__V3__Permission *paths = op->and_rules->rules[0];
    assert_string_equal(paths->or_rules->rules[0]->url_path->path->prefix, "/test/");
    assert_string_equal(paths->or_rules->rules[1]->url_path->path->suffix, "/info");
    assert_string_equal(paths->or_rules->rules[2]->url_path->path->safe_regex->regex, ".*");
    assert_string_equal(paths->or_rules->rules[3]->url_path->path->exact, "/x");
    const Envoy__Config__Rbac__V3__Permission *host = op->and_rules->rules[1];
    assert_string_equal(host->header->name, ":authority");
    assert_string_equal(host->header->string_match->safe_regex->regex,
                        "(?i).*\\.Example\\.com(:[0-9]+)?");
    envoy__extensions__filters__http__rbac__v3__rbac__free_unpacked(m, NULL);
}

/* The network filter: stat_prefix set, HTTP-only ALLOW rules dropped,
 * HTTP fields of DENY rules left out. */
static void test_network_filter(void **state)
{
    arena *a = *state;
    mesh_workload w = tb_workload(a, "default", "app=mongodb");
    mesh_policy *pols[2];
    pols[0] = tb_policy(a, "default", "mongo", "ALLOW", "app=mongodb");
    mesh_rule *r = tb_rule(a, pols[0]);
    tb_operation(a, r, "methods=GET;ports=27017");
    tb_operation(a, tb_rule(a, pols[0]), "ports=27017");
    pols[1] = tb_policy(a, "default", "deny-get", "DENY", NULL);
    tb_operation(a, tb_rule(a, pols[1]), "methods=GET;ports=80");
    mesh_rbac_filter f[2];
    size_t n;
    assert_true(mid_is_ok(mesh_rbac_network_filters((cpols)pols, 2, &w, "tcp.", a, f, &n)));
    assert_int_equal(n, 2);
    assert_string_equal(f[0].name, "envoy.filters.network.rbac");
    assert_string_equal(f[0].type_url,
                        "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC");
    Envoy__Extensions__Filters__Network__Rbac__V3__RBAC *d =
        envoy__extensions__filters__network__rbac__v3__rbac__unpack(NULL, f[0].len, f[0].bytes);
    assert_non_null(d);
    assert_string_equal(d->stat_prefix, "tcp.");
    assert_int_equal(d->rules->action, ENVOY__CONFIG__RBAC__V3__RBAC__ACTION__DENY);
    const Envoy__Config__Rbac__V3__Permission *perm = d->rules->policies[0]->value->permissions[0];
    assert_int_equal(perm->rule_case, ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_DESTINATION_PORT);
    envoy__extensions__filters__network__rbac__v3__rbac__free_unpacked(d, NULL);
    Envoy__Extensions__Filters__Network__Rbac__V3__RBAC *al =
        envoy__extensions__filters__network__rbac__v3__rbac__unpack(NULL, f[1].len, f[1].bytes);
    assert_non_null(al);
    assert_int_equal(al->rules->n_policies, 1);
    assert_string_equal(al->rules->policies[0]->key, "ns[default]-policy[mongo]-rule[1]");
    envoy__extensions__filters__network__rbac__v3__rbac__free_unpacked(al, NULL);
}

/* ---- equivalence ------------------------------------------------------------- */

/* Every Istio example alone, and all of them together (two sets: two
 * examples share the name foo/httpbin). */
static void test_equivalence_istio_examples(void **state)
{
    arena *a = *state;
    mesh_policy *ex[MAX_SET];
    const char *names[MAX_SET];
    size_t n = tb_istio_examples(a, ex, names, MAX_SET);
    assert_int_equal(n, 11);
    eq_stats st = {0};
    for (size_t i = 0; i < n; i++) check_all_workloads(a, names[i], &ex[i], 1, &st);
    mesh_policy *set[MAX_SET];
    for (int variant = 0; variant < 2; variant++) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            int dup = strcmp(names[i], variant ? "ap-deny-ns-dev-post.yaml"
                                               : "ap-deny-post-port-8080.yaml") == 0;
            if (!dup) set[k++] = ex[i];
        }
        check_all_workloads(a, variant ? "all examples (B)" : "all examples (A)", set, k, &st);
    }
    print_message("istio examples: %zu requests and %zu rule matches compared, %zu mismatches\n",
                  st.cases, st.rule_cases, st.mismatches);
    assert_int_equal(st.mismatches, 0);
    assert_true(st.cases > 1000);
}

static int str_lists_equal(char *const *x, size_t nx, char *const *y, size_t ny)
{
    if (nx != ny) return 0;
    for (size_t i = 0; i < nx; i++)
        if (strcmp(x[i], y[i]) != 0) return 0;
    return 1;
}

/* Field-by-field equality of two policies (labels in order). */
static int policies_equal(const mesh_policy *x, const mesh_policy *y)
{
    if (strcmp(x->namespace_, y->namespace_) != 0 || strcmp(x->name, y->name) != 0 ||
        x->action != y->action || x->n_selector != y->n_selector || x->n_rules != y->n_rules)
        return 0;
    for (size_t i = 0; i < x->n_selector; i++)
        if (strcmp(x->selector[i].key, y->selector[i].key) != 0 ||
            strcmp(x->selector[i].value, y->selector[i].value) != 0)
            return 0;
    for (size_t i = 0; i < x->n_rules; i++) {
        const mesh_rule *a = &x->rules[i], *b = &y->rules[i];
        if (a->n_from != b->n_from || a->n_to != b->n_to) return 0;
        for (size_t j = 0; j < a->n_from; j++) {
            const mesh_source *s = &a->from[j], *t = &b->from[j];
            if (!str_lists_equal(s->principals, s->n_principals, t->principals, t->n_principals) ||
                !str_lists_equal(s->not_principals, s->n_not_principals, t->not_principals,
                                 t->n_not_principals) ||
                !str_lists_equal(s->namespaces, s->n_namespaces, t->namespaces, t->n_namespaces))
                return 0;
        }
        for (size_t j = 0; j < a->n_to; j++) {
            const mesh_operation *o = &a->to[j], *q = &b->to[j];
            if (!str_lists_equal(o->methods, o->n_methods, q->methods, q->n_methods) ||
                !str_lists_equal(o->paths, o->n_paths, q->paths, q->n_paths) ||
                !str_lists_equal(o->hosts, o->n_hosts, q->hosts, q->n_hosts) ||
                o->n_ports != q->n_ports)
                return 0;
            for (size_t k = 0; k < o->n_ports; k++)
                if (o->ports[k] != q->ports[k]) return 0;
        }
    }
    return 1;
}

/* The same examples read by the YAML loader from tests/data: each equals
 * its C twin, and its compiled RBAC agrees with the evaluator. */
static void test_equivalence_istio_yaml(void **state)
{
    arena *a = *state;
    mesh_policy *ex[MAX_SET];
    const char *names[MAX_SET];
    size_t n = tb_istio_examples(a, ex, names, MAX_SET);
    eq_stats st = {0};
    for (size_t i = 0; i < n; i++) {
        char path[256];
        (void)snprintf(path, sizeof path, ISTIO_WITHIN "%s", names[i]);
        mesh_doc *docs = NULL;
        size_t nd = 0;
        if (!mid_is_ok(mesh_yaml_load_path(path, &docs, &nd)))
            fail_msg("%s: %s (run from the repository root)", path, mid_errmsg());
        assert_int_equal(nd, 1);
        assert_int_equal(docs[0].kind, MESH_KIND_POLICY);
        mesh_policy *p = docs[0].u.policy;
        if (!policies_equal(p, ex[i])) {
            mesh_doc_list_free(docs, nd);
            fail_msg("%s: the loaded policy differs from its C twin", names[i]);
        }
        check_all_workloads(a, path, &p, 1, &st);
        mesh_doc_list_free(docs, nd);
    }
    print_message("istio examples from YAML: %zu requests compared\n", st.cases);
    assert_int_equal(st.mismatches, 0);
    assert_true(st.cases > 1000);
}

/* Policies exercising every field and wildcard form. */
static void test_equivalence_handwritten(void **state)
{
    arena *a = *state;
    mesh_policy *p[8];
    size_t n = 0;
    p[n] = tb_policy(a, MESH_ROOT_NAMESPACE, "global", "DENY", NULL);
    mesh_rule *r = tb_rule(a, p[n++]);
    tb_source(a, r, "namespaces=*-prod;notPrincipals=cluster.local/ns/foo-prod/*");
    r = tb_rule(a, p[n - 1]);
    tb_operation(a, r, "hosts=*.example.com;methods=POST");
    p[n] = tb_policy(a, "default", "hosts", "ALLOW", "app=products");
    r = tb_rule(a, p[n++]);
    tb_operation(a, r, "hosts=products.*,API.EXAMPLE.COM");
    tb_operation(a, r, "paths=*;ports=27017");
    r = tb_rule(a, p[n - 1]);
    tb_source(a, r, "principals=spiffe://other.td/*,*/sa/sleep");
    tb_source(a, r, "namespaces=dev,istio-*");
    p[n] = tb_policy(a, "foo", "mixed", "ALLOW", NULL);
    r = tb_rule(a, p[n++]);
    tb_source(a, r, "principals=*");
    tb_operation(a, r, "ports=80,8080");
    tb_operation(a, r, "methods=HEAD");
    r = tb_rule(a, p[n - 1]);
    tb_source(a, r, "");
    tb_operation(a, r, "");
    p[n] = tb_policy(a, "foo", "deny-plain", "DENY", "app=httpbin");
    r = tb_rule(a, p[n++]);
    tb_source(a, r, "notPrincipals=*");
    tb_operation(a, r, "paths=/data,/test/*");
    p[n] = tb_policy(a, "default", "odd-values", "DENY", NULL);
    r = tb_rule(a, p[n++]);
    tb_source(a, r, "namespaces=,a/b,**");
    r = tb_rule(a, p[n - 1]);
    tb_source(a, r, "principals=,spiffe://,*//cluster.local/ns/dev/sa/tester,*(a)|b,x[y]*");
    r = tb_rule(a, p[n - 1]);
    tb_operation(a, r, "paths=(x)|.*,[a]");

    eq_stats st = {0};
    for (size_t i = 0; i < n; i++) check_all_workloads(a, p[i]->name, &p[i], 1, &st);
    check_all_workloads(a, "handwritten set", p, n, &st);
    print_message("handwritten: %zu requests and %zu rule matches compared\n", st.cases,
                  st.rule_cases);
    assert_int_equal(st.mismatches, 0);
    assert_true(st.cases > 1000);
}

/* xorshift64*: deterministic random policies. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

static size_t rng_below(uint64_t *s, size_t n)
{
    return (size_t)(rng_next(s) % n);
}

/* "key=v1,v2" with 1..3 values from pool, appended to buf. */
static void rand_field(uint64_t *s, char *buf, size_t cap, const char *key, const char *const *pool,
                       size_t n_pool)
{
    size_t len = strlen(buf);
    (void)snprintf(buf + len, cap - len, "%s%s=", len ? ";" : "", key);
    size_t k = 1 + rng_below(s, 3);
    for (size_t i = 0; i < k; i++) {
        len = strlen(buf);
        (void)snprintf(buf + len, cap - len, "%s%s", i ? "," : "", pool[rng_below(s, n_pool)]);
    }
}

static mesh_policy *rand_policy(arena *a, uint64_t *s, const char *name)
{
    static const char *const NS[] = {"default", "foo", MESH_ROOT_NAMESPACE, "dev"};
    static const char *const SEL[] = {NULL, "app=products", "app=httpbin", "version=v1"};
    static const char *const PRIN[] = {"cluster.local/ns/foo/sa/sleep",
                                       "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
                                       "*",
                                       "cluster.local/*",
                                       "*/sa/sleep",
                                       "other.td/*",
                                       "cluster.local/ns/dev/*",
                                       "*sleep",
                                       "cluster.local/ns/default/sa/bookinfo-ratings-v2"};
    static const char *const NSV[] = {"foo",    "dev",          "*",      "foo*",
                                      "*-prod", "istio-system", "default"};
    static const char *const METH[] = {"GET", "POST", "HEAD", "PUT"};
    static const char *const PATH[] = {"/", "/test/*", "*/info", "/data", "*", "/x*"};
    static const char *const PORT[] = {"80", "8080", "27017", "9000"};
    static const char *const HOST[] = {"api.example.com", "*.example.com", "products.*", "*",
                                       "PRODUCTS.default.svc.cluster.local"};
    mesh_policy *p = tb_policy(a, NS[rng_below(s, COUNT(NS))], name,
                               rng_below(s, 2) ? "DENY" : "ALLOW", SEL[rng_below(s, COUNT(SEL))]);
    size_t nr = rng_below(s, 4);
    for (size_t i = 0; i < nr; i++) {
        mesh_rule *r = tb_rule(a, p);
        size_t nf = rng_below(s, 3), nt = rng_below(s, 3);
        for (size_t j = 0; j < nf; j++) {
            char spec[512] = "";
            if (rng_below(s, 2)) rand_field(s, spec, sizeof spec, "principals", PRIN, COUNT(PRIN));
            if (rng_below(s, 4) == 0)
                rand_field(s, spec, sizeof spec, "notPrincipals", PRIN, COUNT(PRIN));
            if (rng_below(s, 3) == 0)
                rand_field(s, spec, sizeof spec, "namespaces", NSV, COUNT(NSV));
            tb_source(a, r, spec);
        }
        for (size_t j = 0; j < nt; j++) {
            char spec[512] = "";
            if (rng_below(s, 2)) rand_field(s, spec, sizeof spec, "methods", METH, COUNT(METH));
            if (rng_below(s, 3) == 0) rand_field(s, spec, sizeof spec, "paths", PATH, COUNT(PATH));
            if (rng_below(s, 3) == 0) rand_field(s, spec, sizeof spec, "ports", PORT, COUNT(PORT));
            if (rng_below(s, 4) == 0) rand_field(s, spec, sizeof spec, "hosts", HOST, COUNT(HOST));
            tb_operation(a, r, spec);
        }
    }
    return p;
}

static void test_equivalence_random(void **state)
{
    arena *a = *state;
    const uint64_t seed0 = 0x6d65736869640001ULL;
    uint64_t s = seed0;
    eq_stats st = {0};
    mesh_workload w[16];
    for (int set = 0; set < 250; set++) {
        arena_reset(a);
        size_t nw = matrix_workloads(a, w);
        mesh_policy *p[4];
        size_t n = 1 + rng_below(&s, 4);
        for (size_t i = 0; i < n; i++) {
            char name[16];
            (void)snprintf(name, sizeof name, "r%d-%zu", set, i);
            p[i] = rand_policy(a, &s, name);
        }
        char label[64];
        (void)snprintf(label, sizeof label, "random set %d (seed %llx)", set,
                       (unsigned long long)seed0);
        for (size_t i = 0; i < nw; i += 1 + rng_below(&s, 3))
            check_equivalence(label, p, n, &w[i], &st);
    }
    print_message("random: %zu requests and %zu rule matches compared\n", st.cases, st.rule_cases);
    assert_int_equal(st.mismatches, 0);
    assert_true(st.cases > 1000);
}

/* The comparison can fail: an interpreter fed filters whose action was
 * flipped disagrees with the evaluator. */
static void test_equivalence_detects_a_wrong_compile(void **state)
{
    arena *a = *state;
    mesh_workload w = tb_workload(a, "foo", "app=httpbin");
    mesh_policy *p = tb_policy(a, "foo", "deny-method-get", "DENY", "app=httpbin");
    tb_operation(a, tb_rule(a, p), "methods=GET");
    mesh_rbac_filter f[2];
    size_t n;
    assert_true(mid_is_ok(mesh_rbac_http_filters((cpols)&p, 1, &w, a, f, &n)));
    /* Re-encode with action ALLOW. */
    Envoy__Extensions__Filters__Http__Rbac__V3__RBAC *m = unpack_http(&f[0]);
    m->rules->action = ENVOY__CONFIG__RBAC__V3__RBAC__ACTION__ALLOW;
    size_t len = envoy__extensions__filters__http__rbac__v3__rbac__get_packed_size(m);
    uint8_t *buf = arena_alloc(a, len);
    assert_non_null(buf);
    envoy__extensions__filters__http__rbac__v3__rbac__pack(m, buf);
    envoy__extensions__filters__http__rbac__v3__rbac__free_unpacked(m, NULL);
    mesh_rbac_filter bad = f[0];
    bad.bytes = buf;
    bad.len = len;
    char err[256];
    rbac_interp *it = rbac_interp_load(&bad, 1, err, sizeof err);
    assert_non_null(it);
    mesh_request rq = {NULL, "POST", "/", 80, "h", 1};
    mesh_decision d;
    mesh_policy_evaluate((cpols)&p, 1, &w, &rq, &d);
    assert_true(d.allowed);
    assert_int_equal(rbac_interp_decide(it, &rq, err, sizeof err), 0);
    rbac_interp_free(it);

    /* The interpreter refuses what Envoy would refuse. */
    uint8_t garbage[] = {0x0a, 0x05, 0x01};
    mesh_rbac_filter g = {"envoy.filters.http.rbac", f[0].type_url, garbage, sizeof garbage};
    assert_null(rbac_interp_load(&g, 1, err, sizeof err));
    mesh_rbac_filter wrong_type = f[0];
    wrong_type.type_url = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC";
    assert_null(rbac_interp_load(&wrong_type, 1, err, sizeof err));
    /* A Permission with no rule set (Envoy: "rule is required"). */
    Envoy__Config__Rbac__V3__Permission perm = ENVOY__CONFIG__RBAC__V3__PERMISSION__INIT;
    Envoy__Config__Rbac__V3__Principal prin = ENVOY__CONFIG__RBAC__V3__PRINCIPAL__INIT;
    prin.identifier_case = ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_ANY;
    prin.any = 1;
    Envoy__Config__Rbac__V3__Permission *perms[1] = {&perm};
    Envoy__Config__Rbac__V3__Principal *prins[1] = {&prin};
    Envoy__Config__Rbac__V3__Policy pol = ENVOY__CONFIG__RBAC__V3__POLICY__INIT;
    pol.n_permissions = 1;
    pol.permissions = perms;
    pol.n_principals = 1;
    pol.principals = prins;
    Envoy__Config__Rbac__V3__RBAC__PoliciesEntry e =
        ENVOY__CONFIG__RBAC__V3__RBAC__POLICIES_ENTRY__INIT;
    e.key = "x";
    e.value = &pol;
    Envoy__Config__Rbac__V3__RBAC__PoliciesEntry *es[1] = {&e};
    Envoy__Config__Rbac__V3__RBAC rules = ENVOY__CONFIG__RBAC__V3__RBAC__INIT;
    rules.n_policies = 1;
    rules.policies = es;
    Envoy__Extensions__Filters__Http__Rbac__V3__RBAC cfg =
        ENVOY__EXTENSIONS__FILTERS__HTTP__RBAC__V3__RBAC__INIT;
    cfg.rules = &rules;
    uint8_t out[256];
    size_t olen = envoy__extensions__filters__http__rbac__v3__rbac__pack(&cfg, out);
    mesh_rbac_filter unset = {"envoy.filters.http.rbac", f[0].type_url, out, olen};
    assert_null(rbac_interp_load(&unset, 1, err, sizeof err));
    assert_non_null(strstr(err, "no rule set"));
}

/* ---- failure modes ----------------------------------------------------------------- */

static void test_bad_arguments(void **state)
{
    arena *a = *state;
    mesh_workload w = tb_workload(a, "foo", NULL);
    mesh_policy *p = tb_policy(a, "foo", "p", "ALLOW", NULL);
    (void)tb_rule(a, p);
    mesh_rbac_filter f[2];
    size_t n;
    assert_int_equal(mesh_rbac_http_filters((cpols)&p, 1, &w, NULL, f, &n).err, MID_E_INVALID);
    assert_int_equal(mesh_rbac_http_filters((cpols)&p, 1, NULL, a, f, &n).err, MID_E_INVALID);
    assert_int_equal(mesh_rbac_http_filters(NULL, 1, &w, a, f, &n).err, MID_E_INVALID);
    assert_int_equal(mesh_rbac_http_filters((cpols)&p, 1, &w, a, NULL, &n).err, MID_E_INVALID);
    assert_int_equal(mesh_rbac_http_filters((cpols)&p, 1, &w, a, f, NULL).err, MID_E_INVALID);
    assert_int_equal(mesh_rbac_network_filters((cpols)&p, 1, &w, NULL, a, f, &n).err,
                     MID_E_INVALID);
    assert_int_equal(mesh_rbac_network_filters((cpols)&p, 1, &w, "", a, f, &n).err, MID_E_INVALID);
    /* A NULL policy, an unnamed one, an action outside the enum. */
    mesh_policy *with_null[2] = {p, NULL};
    assert_int_equal(mesh_rbac_http_filters((cpols)with_null, 2, &w, a, f, &n).err, MID_E_INVALID);
    mesh_policy *weird = tb_policy(a, "foo", "weird", "DENY", NULL);
    weird->action = (mesh_action)5;
    assert_int_equal(mesh_rbac_http_filters((cpols)&weird, 1, &w, a, f, &n).err, MID_E_INVALID);
    assert_non_null(strstr(mid_errmsg(), "unknown action"));
    weird->action = MESH_ACTION_DENY;
    weird->name = NULL;
    assert_int_equal(mesh_rbac_http_filters((cpols)&weird, 1, &w, a, f, &n).err, MID_E_INVALID);
    /* Two policies with one name would collide in the RBAC map. */
    mesh_policy *twice[2] = {p, tb_policy(a, "foo", "p", "ALLOW", NULL)};
    assert_int_equal(mesh_rbac_http_filters((cpols)twice, 2, &w, a, f, &n).err, MID_E_INVALID);
    assert_non_null(strstr(mid_errmsg(), "foo/p"));
    mid_errclear();
}

/* Every arena limit below what a compile needs fails with MID_E_NOMEM,
 * never crashes or leaks; at the limit it succeeds. */
static void test_arena_exhaustion(void **state)
{
    arena *big = *state;
    mesh_policy *ex[MAX_SET];
    const char *names[MAX_SET];
    size_t n = tb_istio_examples(big, ex, names, MAX_SET);
    mesh_policy *set[MAX_SET];
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], "ap-deny-post-port-8080.yaml") != 0) set[k++] = ex[i];
    mesh_workload w = tb_workload(big, "foo", "app=httpbin");

    for (int tcp = 0; tcp < 2; tcp++) {
        arena *a = NULL;
        assert_true(mid_is_ok(arena_new(0, &a)));
        mesh_rbac_filter f[2];
        size_t nf;
        mid_result r = tcp ? mesh_rbac_network_filters((cpols)set, k, &w, STAT_PREFIX, a, f, &nf)
                           : mesh_rbac_http_filters((cpols)set, k, &w, a, f, &nf);
        assert_true(mid_is_ok(r));
        assert_int_equal(nf, 2);
        size_t need = arena_used(a);
        arena_free(a);
        size_t fails = 0;
        for (size_t limit = 1; limit < need; limit += 1 + limit / 64) {
            assert_true(mid_is_ok(arena_new(limit, &a)));
            r = tcp ? mesh_rbac_network_filters((cpols)set, k, &w, STAT_PREFIX, a, f, &nf)
                    : mesh_rbac_http_filters((cpols)set, k, &w, a, f, &nf);
            assert_int_equal(r.err, MID_E_NOMEM);
            assert_true(arena_exhausted(a));
            fails++;
            arena_free(a);
        }
        assert_true(fails > 50);
        assert_true(mid_is_ok(arena_new(need, &a)));
        r = tcp ? mesh_rbac_network_filters((cpols)set, k, &w, STAT_PREFIX, a, f, &nf)
                : mesh_rbac_http_filters((cpols)set, k, &w, a, f, &nf);
        assert_true(mid_is_ok(r));
        arena_free(a);
    }
    mid_errclear();
}

int run_rbac_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_layout, tb_setup, tb_teardown),
        cmocka_unit_test_setup_teardown(test_matchers, tb_setup, tb_teardown),
        cmocka_unit_test_setup_teardown(test_network_filter, tb_setup, tb_teardown),
        cmocka_unit_test_setup_teardown(test_equivalence_istio_examples, tb_setup, tb_teardown),
        cmocka_unit_test_setup_teardown(test_equivalence_istio_yaml, tb_setup, tb_teardown),
        cmocka_unit_test_setup_teardown(test_equivalence_handwritten, tb_setup, tb_teardown),
        cmocka_unit_test_setup_teardown(test_equivalence_random, tb_setup, tb_teardown),
        cmocka_unit_test_setup_teardown(test_equivalence_detects_a_wrong_compile, tb_setup, tb_teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, tb_setup, tb_teardown),
        cmocka_unit_test_setup_teardown(test_arena_exhaustion, tb_setup, tb_teardown),
    };
    return cmocka_run_group_tests_name("rbac", tests, NULL, NULL);
}
