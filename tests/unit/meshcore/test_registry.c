/* Unit tests for the registry snapshot of meshcore/model.c: ordering,
 * lookups by host, name and namespace/name, host conflicts, workloads by
 * SPIFFE ID (given or derived from the service account), reference
 * counting, ownership on failure, and build time at 1,000 services x 10
 * endpoints. Run by tests/unit/meshcore/main.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "meshcore/model.h"
#include "meshcore/yaml_load.h"
#include "tests/unit/meshcore/meshcore_tests.h"

static const char registry_yaml[] =
    "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
    "metadata: {name: web, namespace: shop}\n"
    "spec:\n"
    "  hosts: [web.shop.svc, www.example.com]\n"
    "  ports: [{number: 80, name: http}]\n"
    "  endpoints:\n"
    "  - {address: 10.0.0.1, serviceAccount: web}\n"
    "  - {address: 10.0.0.2, serviceAccount: web}\n"
    "  - {address: 10.0.0.3, serviceAccount: \"spiffe://example.org/custom/id\"}\n"
    "  - {address: 10.0.0.4}\n"
    "---\n"
    "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
    "metadata: {name: db, namespace: shop}\n"
    "spec:\n"
    "  hosts: [db.shop.svc]\n"
    "  ports: [{number: 5432, name: tcp}]\n"
    "  endpoints:\n"
    "  - {address: 10.0.1.1, serviceAccount: \"spiffe://example.org/ns/shop/sa/web\"}\n"
    "---\n"
    "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
    "metadata: {name: web}\n"
    "spec:\n"
    "  hosts: [web.default.svc]\n"
    "  ports: [{number: 80, name: http}]\n"
    "---\n"
    "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
    "metadata: {name: api, namespace: a}\n"
    "spec:\n"
    "  hosts: [api.a.svc]\n"
    "  ports: [{number: 80, name: http}]\n"
    "---\n"
    "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
    "metadata: {name: api, namespace: b}\n"
    "spec:\n"
    "  hosts: [api.b.svc]\n"
    "  ports: [{number: 80, name: http}]\n"
    "---\n"
    "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
    "metadata: {name: zz, namespace: shop}\n"
    "---\n"
    "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
    "metadata: {name: aa, namespace: shop}\n"
    "---\n"
    "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
    "metadata: {name: root, namespace: istio-system}\n";

static mid_result registry_from_yaml(const char *yaml, const char *td, mesh_registry **out)
{
    mesh_doc *docs = NULL;
    size_t n = 0;
    mid_result r = parse_yaml_str(yaml, &docs, &n);
    if (!mid_is_ok(r)) fail_msg("%s", mid_errmsg());
    mesh_service **svcs;
    mesh_policy **pols;
    size_t ns, np;
    split_docs(docs, n, &svcs, &ns, &pols, &np);
    return mesh_registry_new(td, 42, svcs, ns, pols, np, out);
}

static void test_registry_lookups(void **state)
{
    (void)state;
    mesh_registry *r = NULL;
    if (!mid_is_ok(registry_from_yaml(registry_yaml, "spiffe://example.org", &r)))
        fail_msg("%s", mid_errmsg());
    assert_int_equal(mesh_registry_revision(r), 42);
    assert_string_equal(mesh_registry_trust_domain(r), "example.org");

    /* Sorted by (namespace, name). */
    static const char *const order[][2] = {
        {"a", "api"}, {"b", "api"}, {"default", "web"}, {"shop", "db"}, {"shop", "web"}};
    assert_int_equal(mesh_registry_n_services(r), 5);
    for (size_t i = 0; i < 5; i++) {
        const mesh_service *s = mesh_registry_service(r, i);
        assert_string_equal(s->namespace_, order[i][0]);
        assert_string_equal(s->name, order[i][1]);
    }
    assert_null(mesh_registry_service(r, 5));
    assert_int_equal(mesh_registry_n_policies(r), 3);
    assert_string_equal(mesh_registry_policy(r, 0)->name, "root");
    assert_string_equal(mesh_registry_policy(r, 1)->name, "aa");
    assert_string_equal(mesh_registry_policy(r, 2)->name, "zz");
    assert_null(mesh_registry_policy(r, 3));

    /* By host, by namespace/name, by bare name. */
    const mesh_service *web = mesh_registry_service(r, 4);
    assert_ptr_equal(mesh_registry_find_service(r, "web.shop.svc"), web);
    assert_ptr_equal(mesh_registry_find_service(r, "www.example.com"), web);
    assert_ptr_equal(mesh_registry_find_service(r, "shop/web"), web);
    assert_ptr_equal(mesh_registry_find_service(r, "db"), mesh_registry_service(r, 3));
    assert_ptr_equal(mesh_registry_find_service(r, "shop/db"), mesh_registry_service(r, 3));
    /* Two "web": the default namespace's wins; two "api" in other namespaces: ambiguous. */
    assert_ptr_equal(mesh_registry_find_service(r, "web"), mesh_registry_service(r, 2));
    assert_null(mesh_registry_find_service(r, "api"));
    assert_ptr_equal(mesh_registry_find_service(r, "b/api"), mesh_registry_service(r, 1));
    assert_null(mesh_registry_find_service(r, "nope"));
    assert_null(mesh_registry_find_service(r, "shop/nope"));
    assert_null(mesh_registry_find_service(r, "sho/web"));
    assert_null(mesh_registry_find_service(r, "shopx/web"));
    assert_null(mesh_registry_find_service(r, "/web"));
    assert_null(mesh_registry_find_service(r, "web.shop"));
    assert_null(mesh_registry_find_service(r, ""));
    assert_null(mesh_registry_find_service(r, NULL));
    mesh_registry_unref(r);
}

static void test_registry_workloads(void **state)
{
    (void)state;
    mesh_registry *r = NULL;
    assert_true(mid_is_ok(registry_from_yaml(registry_yaml, "example.org", &r)));
    const mesh_service *db = mesh_registry_find_service(r, "shop/db");
    const mesh_service *web = mesh_registry_find_service(r, "shop/web");

    /* Derived from serviceAccount, and given explicitly on another service:
     * all three, in registry order (db before web). */
    mesh_workload_ref refs[8];
    size_t n = mesh_registry_workloads(r, "spiffe://example.org/ns/shop/sa/web", refs, 8);
    assert_int_equal(n, 3);
    assert_ptr_equal(refs[0].service, db);
    assert_string_equal(refs[0].endpoint->address, "10.0.1.1");
    assert_ptr_equal(refs[1].service, web);
    assert_string_equal(refs[1].endpoint->address, "10.0.0.1");
    assert_string_equal(refs[2].endpoint->address, "10.0.0.2");
    assert_string_equal(web->endpoints[0].spiffe_id, "spiffe://example.org/ns/shop/sa/web");
    assert_string_equal(web->endpoints[0].service_account, "web");
    /* Truncated output still counts them all. */
    memset(refs, 0, sizeof refs);
    assert_int_equal(mesh_registry_workloads(r, "spiffe://example.org/ns/shop/sa/web", refs, 1), 3);
    assert_ptr_equal(refs[0].service, db);
    assert_null(refs[1].service);
    assert_int_equal(mesh_registry_workloads(r, "spiffe://example.org/ns/shop/sa/web", NULL, 0), 3);

    n = mesh_registry_workloads(r, "spiffe://example.org/custom/id", refs, 8);
    assert_int_equal(n, 1);
    assert_string_equal(refs[0].endpoint->address, "10.0.0.3");
    assert_int_equal(mesh_registry_workloads(r, "spiffe://example.org/ns/shop/sa/we", refs, 8), 0);
    assert_int_equal(mesh_registry_workloads(r, "spiffe://example.org/ns/shop/sa/webx", refs, 8), 0);
    assert_int_equal(mesh_registry_workloads(r, "", refs, 8), 0);
    /* The endpoint without identity has none. */
    assert_null(web->endpoints[3].spiffe_id);

    /* The stored JSON of a registry record omits the derived ID. */
    char *json = NULL;
    assert_true(mid_is_ok(mesh_service_to_json(web, &json)));
    assert_null(strstr(json, "spiffe://example.org/ns/shop/sa/web"));
    assert_non_null(strstr(json, "spiffe://example.org/custom/id"));
    free(json);

    /* Reference counting: the snapshot lives until the last unref. */
    mesh_registry *again = mesh_registry_ref(r);
    assert_ptr_equal(again, r);
    mesh_registry_unref(r);
    assert_int_equal(mesh_registry_n_services(again), 5);
    assert_string_equal(mesh_registry_service(again, 0)->name, "api");
    mesh_registry_unref(again);
    mesh_registry_unref(NULL);
    assert_null(mesh_registry_ref(NULL));
}

static void test_registry_conflicts(void **state)
{
    (void)state;
    mesh_registry *r = (mesh_registry *)(uintptr_t)1;
    /* Two services claim one host: refused naming both (the records are freed). */
    mid_result res = registry_from_yaml(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
        "metadata: {name: one, namespace: x}\n"
        "spec: {hosts: [a.example, shared.example], ports: [{number: 1, name: t}]}\n"
        "---\n"
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
        "metadata: {name: two, namespace: y}\n"
        "spec: {hosts: [shared.example], ports: [{number: 1, name: t}]}\n",
        "example.org", &r);
    assert_int_equal(res.err, MID_E_INVALID);
    assert_null(r);
    assert_msg_has("host \"shared.example\" is claimed by two services: x/one and y/two");

    /* Bad trust domain. */
    res = registry_from_yaml(registry_yaml, "Example.org", &r);
    assert_int_equal(res.err, MID_E_INVALID);
    assert_null(r);
    res = mesh_registry_new(NULL, 1, NULL, 0, NULL, 0, &r);
    assert_int_equal(res.err, MID_E_INVALID);

    /* The same service twice (records built by hand, not through YAML). */
    mesh_doc *docs = NULL;
    size_t n = 0;
    assert_true(mid_is_ok(parse_yaml_str("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
                                         "metadata: {name: one}\n"
                                         "spec: {hosts: [a.example], ports: [{number: 1, name: t}]}\n",
                                         &docs, &n)));
    mesh_service **svcs = calloc(2, sizeof *svcs);
    assert_non_null(svcs);
    svcs[0] = docs[0].u.service;
    assert_true(mid_is_ok(mesh_service_clone(svcs[0], &svcs[1])));
    free(svcs[1]->hosts[0]);
    svcs[1]->hosts[0] = strdup("b.example");
    free(docs[0].source);
    free(docs);
    res = mesh_registry_new("example.org", 1, svcs, 2, NULL, 0, &r);
    assert_int_equal(res.err, MID_E_INVALID);
    assert_msg_has("service default/one is defined twice");

    /* A NULL record is refused (and the others still freed). */
    svcs = calloc(2, sizeof *svcs);
    assert_non_null(svcs);
    assert_true(mid_is_ok(mesh_service_from_json(
        "{\"namespace\":\"a\",\"name\":\"b\",\"hosts\":[\"b.a\"],"
        "\"ports\":[{\"name\":\"t\",\"number\":1,\"protocol\":\"TCP\"}]}",
        &svcs[0])));
    res = mesh_registry_new("example.org", 1, svcs, 2, NULL, 0, &r);
    assert_int_equal(res.err, MID_E_INVALID);

    /* An empty registry is fine. */
    assert_true(mid_is_ok(mesh_registry_new("example.org", 7, NULL, 0, NULL, 0, &r)));
    assert_int_equal(mesh_registry_n_services(r), 0);
    assert_null(mesh_registry_find_service(r, "x"));
    assert_int_equal(mesh_registry_workloads(r, "spiffe://example.org/x", NULL, 0), 0);
    mesh_registry_unref(r);
}

/* 1,000 services x 10 endpoints, inserted in reverse order: the build is
 * O(n log n) and lookups are logarithmic. */
static void test_registry_scale(void **state)
{
    (void)state;
    enum { N_SVC = 1000, N_EP = 10 };
    mesh_service **svcs = calloc(N_SVC, sizeof *svcs);
    assert_non_null(svcs);
    for (int i = 0; i < N_SVC; i++) {
        char json[4096];
        int o = snprintf(json, sizeof json,
                         "{\"namespace\":\"ns%d\",\"name\":\"svc%04d\",\"hosts\":[\"svc%04d.ns%d.svc\"],"
                         "\"ports\":[{\"name\":\"http\",\"number\":80,\"protocol\":\"HTTP\"}],"
                         "\"endpoints\":[",
                         i % 10, N_SVC - i, N_SVC - i, i % 10);
        for (int e = 0; e < N_EP; e++)
            o += snprintf(json + o, sizeof json - (size_t)o,
                          "%s{\"address\":\"10.%d.%d.%d\",\"serviceAccount\":\"sa%d\"}", e ? "," : "",
                          i / 256, i % 256, e + 1, e % 3);
        snprintf(json + o, sizeof json - (size_t)o, "]}");
        if (!mid_is_ok(mesh_service_from_json(json, &svcs[i]))) fail_msg("%s", mid_errmsg());
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    mesh_registry *r = NULL;
    if (!mid_is_ok(mesh_registry_new("example.org", 1, svcs, N_SVC, NULL, 0, &r)))
        fail_msg("%s", mid_errmsg());
    size_t found = 0;
    for (int i = 1; i <= N_SVC; i++) {
        char host[64];
        snprintf(host, sizeof host, "svc%04d.ns%d.svc", i, (N_SVC - i) % 10);
        const mesh_service *s = mesh_registry_find_service(r, host);
        found += s != NULL && strcmp(s->hosts[0], host) == 0;
    }
    size_t wl = mesh_registry_workloads(r, "spiffe://example.org/ns/ns3/sa/sa1", NULL, 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    print_message("registry: 1000 services x 10 endpoints built and searched in %.1f ms\n", ms);
    assert_int_equal(found, N_SVC);
    /* 100 services in ns3, each with endpoints 2, 5, 8 on sa1. */
    assert_int_equal(wl, 300);
    for (size_t i = 1; i < mesh_registry_n_services(r); i++) {
        const mesh_service *a = mesh_registry_service(r, i - 1);
        const mesh_service *b = mesh_registry_service(r, i);
        int c = strcmp(a->namespace_, b->namespace_);
        assert_true(c < 0 || (c == 0 && strcmp(a->name, b->name) < 0));
    }
    assert_true(ms < 2000.0); /* generous: ASan build on a busy 2-core machine */
    mesh_registry_unref(r);
}

int run_registry_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry_lookups),
        cmocka_unit_test(test_registry_workloads),
        cmocka_unit_test(test_registry_conflicts),
        cmocka_unit_test(test_registry_scale),
    };
    return cmocka_run_group_tests_name("meshcore_registry", tests, NULL, NULL);
}
